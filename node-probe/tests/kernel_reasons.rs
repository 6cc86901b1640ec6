//! Drop reason names from this machine's kernel. The probe needs BTF to load
//! its tp_btf program at all, so a kernel without it fails here too.

use skymap_node_probe::reasons::{DropReasons, TRACEFS_FORMATS};

#[test]
fn the_running_kernel_names_its_drop_reasons() {
    let reasons = DropReasons::from_kernel().expect("BTF or tracefs describes the drop reasons");
    let netfilter = reasons.number("NETFILTER_DROP").expect("NETFILTER_DROP");
    let no_socket = reasons.number("NO_SOCKET").expect("NO_SOCKET");
    assert_ne!(netfilter, no_socket);
    assert_eq!(reasons.name(netfilter), "NETFILTER_DROP");
    assert!(
        reasons.len() > 20,
        "a real kernel has dozens: {}",
        reasons.len()
    );

    // Where tracefs is mounted, it agrees with BTF on every number it prints.
    for path in TRACEFS_FORMATS {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let traced = DropReasons::from_tracefs_format(&text).expect("the format has a table");
        for number in 0..512 {
            let name = traced.name(number);
            if !name.starts_with("REASON_") {
                assert_eq!(reasons.name(number), name, "reason {number} ({path})");
            }
        }
    }
}

/// The probe's own check passes on the machines CI and the lab run on (root,
/// a kernel with BTF and drop reasons); elsewhere it says what is missing.
#[test]
fn preflight_passes_as_root_on_this_kernel() {
    let facts = skymap_node_probe::preflight::Facts::gather();
    if let Err(e) = skymap_node_probe::preflight::check(&facts) {
        panic!("{e} (these tests run as root, as CI does)");
    }
}
