//! Cross-crate tests live in `tests/tests/`. The library holds what the
//! fixture generators share: `synth` (seeded randomness, pods, flow records)
//! and `demo` (the recording `skymap demo` replays).

pub mod demo;
pub mod synth;
