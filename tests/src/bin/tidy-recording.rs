//! Tidies a recording captured from the lab into a fixture: sorts it by flow
//! time (`skymap record` writes flows as the relay received them, a little
//! out of order across nodes, and the explorer's offline player wants time
//! order) and, given the scenario, names the NetworkPolicy behind each
//! NETFILTER_DROP (`policy_reason`), as the lab's policy evaluator judges
//! it. The relay does not read policies yet, so a live lab's drops carry
//! only the kernel's reason.
//!
//! `tidy-recording [--scenario FILE] < captured.jsonl > tests/fixtures/demo.jsonl`

use std::io::{self, BufReader, BufWriter};
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use skymap_lab::policy::{self, FlowQuery, Protocol};
use skymap_lab::scenario::Scenario;
use skymap_proto::jsonl::FlowReader;
use skymap_proto::names::ip_from_bytes;
use skymap_proto::v1::{Flow, Verdict};

fn v4(bytes: &[u8]) -> Option<Ipv4Addr> {
    match ip_from_bytes(bytes)? {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// The policies that deny `flow` in `scenario`, "ns/name,ns/name".
fn denied_by(scenario: &Scenario, cluster: &policy::Cluster, flow: &Flow) -> Option<String> {
    let (source, destination) = (flow.source.as_ref()?, flow.destination.as_ref()?);
    let protocol = match flow.l4.as_ref()?.protocol {
        p if p == skymap_proto::v1::Protocol::Tcp as i32 => Protocol::Tcp,
        p if p == skymap_proto::v1::Protocol::Udp as i32 => Protocol::Udp,
        _ => return None,
    };
    let query = FlowQuery {
        src_ip: v4(&source.ip)?,
        dst_ip: v4(&destination.ip)?,
        protocol,
        dst_port: u16::try_from(destination.port).ok()?,
    };
    let decision = policy::evaluate(cluster, scenario.policies(), &query);
    let (_, policies) = decision.denied()?;
    Some(
        policies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--scenario" => match Scenario::load(path) {
            Ok(scenario) => Some(scenario),
            Err(e) => {
                eprintln!("tidy-recording: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("usage: tidy-recording [--scenario FILE] < IN > OUT");
            return ExitCode::FAILURE;
        }
    };
    let mut reader = FlowReader::new(BufReader::new(io::stdin().lock()), "standard input");
    let mut flows: Vec<Flow> = reader.by_ref().collect();
    for error in &reader.into_report().errors {
        eprintln!("tidy-recording: skipped {error}");
    }
    // Stable: flows of one instant keep the order the relay gave them.
    flows.sort_by_key(|flow| flow.time_ns);
    let mut named = 0;
    if let Some(scenario) = &scenario {
        let cluster = scenario.plan().cluster();
        for flow in flows.iter_mut().filter(|f| {
            f.verdict == Verdict::Dropped as i32
                && f.drop_reason == "NETFILTER_DROP"
                && f.policy_reason.is_empty()
        }) {
            if let Some(policies) = denied_by(scenario, &cluster, flow) {
                flow.policy_reason = policies;
                named += 1;
            }
        }
    }
    if let Err(e) =
        skymap_tests::synth::write_flows(&mut BufWriter::new(io::stdout().lock()), &flows)
    {
        eprintln!("tidy-recording: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "tidy-recording: {} flows, {named} drops named with their policy",
        flows.len()
    );
    ExitCode::SUCCESS
}
