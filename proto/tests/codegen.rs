//! The generated code in `src/generated/` is committed so that building skymap
//! needs no code generator. This test regenerates it from `proto/` with protox
//! (no system `protoc`) and fails when the committed files have drifted.
//!
//! After changing a `.proto` file, run
//! `SKYMAP_REGENERATE=1 cargo test -p skymap-proto --test codegen` and commit the result.

use std::path::{Path, PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["skymap/v1/flow.proto", "skymap/v1/relay.proto"];
const GENERATED_RS: &str = "skymap.v1.rs";
const DESCRIPTOR: &str = "skymap_v1_descriptor.bin";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Generates the Rust code and the encoded descriptor set into `out`.
fn generate(out: &Path) {
    let proto_dir = crate_dir().join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    let fds = protox::compile(&files, [&proto_dir]).expect("the .proto files compile");
    // The descriptor served by gRPC reflection carries no source positions, so it
    // does not change when only comments move.
    let mut bare = fds.clone();
    for file in &mut bare.file {
        file.source_code_info = None;
    }
    std::fs::write(out.join(DESCRIPTOR), bare.encode_to_vec()).expect("write descriptor");
    tonic_prost_build::configure()
        .out_dir(out)
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        // Addresses are sliced out of the received buffer instead of copied
        // into a Vec per endpoint: two allocations fewer per flow on ingest.
        .bytes(".skymap.v1.Endpoint.ip")
        .compile_fds(fds)
        .expect("code generation succeeds");
}

#[test]
fn committed_code_matches_proto_files() {
    let committed = crate_dir().join("src/generated");
    let scratch = std::env::temp_dir().join(format!("skymap-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    generate(&scratch);

    let regenerate = std::env::var_os("SKYMAP_REGENERATE").is_some();
    let mut drifted = Vec::new();
    for name in [GENERATED_RS, DESCRIPTOR] {
        let fresh = std::fs::read(scratch.join(name)).expect("generated file");
        let path = committed.join(name);
        if regenerate {
            std::fs::write(&path, &fresh).expect("write committed file");
        } else if std::fs::read(&path).ok().as_deref() != Some(fresh.as_slice()) {
            drifted.push(path.display().to_string());
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        drifted.is_empty(),
        "generated code is out of date with the .proto files: {drifted:?}\n\
         run `SKYMAP_REGENERATE=1 cargo test -p skymap-proto --test codegen` and commit"
    );
}
