//! Writes `tests/fixtures/demo.jsonl`, the recording `skymap demo` replays
//! (see `skymap_tests::demo`).
//!
//! `cargo run -p skymap-tests --bin make-demo > tests/fixtures/demo.jsonl`

use std::io::{self, BufWriter};

use skymap_tests::{demo, synth};

fn main() -> io::Result<()> {
    let flows = demo::demo_flows();
    synth::write_flows(&mut BufWriter::new(io::stdout().lock()), &flows)
}
