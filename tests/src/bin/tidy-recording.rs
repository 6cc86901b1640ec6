//! Tidies a recording captured from the lab into a fixture: sorts it by flow
//! time (`skymap record` writes flows as the relay received them, a little
//! out of order across nodes, and the explorer's offline player wants time
//! order). The lab's relay names the NetworkPolicy behind each policy drop
//! itself (`policy_reason`), from the policies in the lab's metadata file.
//!
//! `tidy-recording < captured.jsonl > tests/fixtures/demo.jsonl`

use std::io::{self, BufReader, BufWriter};
use std::process::ExitCode;

use skymap_proto::jsonl::FlowReader;
use skymap_proto::v1::Flow;

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: tidy-recording < IN > OUT");
        return ExitCode::FAILURE;
    }
    let mut reader = FlowReader::new(BufReader::new(io::stdin().lock()), "standard input");
    let mut flows: Vec<Flow> = reader.by_ref().collect();
    for error in &reader.into_report().errors {
        eprintln!("tidy-recording: skipped {error}");
    }
    // Stable: flows of one instant keep the order the relay gave them.
    flows.sort_by_key(|flow| flow.time_ns);
    if let Err(e) =
        skymap_tests::synth::write_flows(&mut BufWriter::new(io::stdout().lock()), &flows)
    {
        eprintln!("tidy-recording: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("tidy-recording: {} flows", flows.len());
    ExitCode::SUCCESS
}
