//! The `skymap-relay` binary's command line: bad flags get a clear error and
//! a failure status, not a panic; a port already taken is named. (Building
//! this test also builds the binary, which `skymap lab` starts.)

use std::process::Command;

fn relay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skymap-relay"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the relay binary runs")
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let out = relay(&["--history", "lots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--history"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = relay(&["--listen", &addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
