//! Cross-crate tests live in `tests/tests/`. The library holds what the
//! fixture generators share: `synth` (seeded randomness, pods, flow records).
//! The demo recording is captured from the lab (`lab/capture-demo.sh`), and
//! `tidy-recording` turns a capture into the fixture.

pub mod synth;
