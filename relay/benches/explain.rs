//! What explaining drops costs the relay, on the lab's large scenario (39
//! pods, 30 workloads, 4 NetworkPolicies): every pod-to-pod pair on TCP/8080
//! and UDP/53 as a NETFILTER_DROP, judged against the policies.
//!
//! Prints, per flow:
//! - `name (uncached)`: `PolicyNamer::fill`, which every policy drop meets at
//!   ingest, when the (source, destination, port) is new;
//! - `name (cached)`: the same for a (source, destination, port) seen before,
//!   which is what a drop storm costs;
//! - `explain`: `explain_flow`, the answer to one `Observer/Explain` call
//!   (policies, what they allow, the suggested policy as YAML).
//!
//! Run: `cargo bench -p skymap-relay --bench explain`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use skymap_lab::parts;
use skymap_lab::scenario::Scenario;
use skymap_proto::names::ip_to_bytes;
use skymap_proto::v1::{Endpoint, Flow, Layer4, Protocol, Verdict};
use skymap_relay::explain::{PolicyNamer, explain_flow};
use skymap_relay::metadata::Metadata;

fn dropped(src: Ipv4Addr, dst: Ipv4Addr, protocol: Protocol, port: u32) -> Flow {
    let endpoint = |ip: Ipv4Addr, port: u32| Endpoint {
        ip: ip_to_bytes(IpAddr::V4(ip)),
        port,
        ..Endpoint::default()
    };
    Flow {
        verdict: Verdict::Dropped as i32,
        drop_reason: "NETFILTER_DROP".to_owned(),
        source: Some(endpoint(src, 40000)),
        destination: Some(endpoint(dst, port)),
        l4: Some(Layer4 {
            protocol: protocol as i32,
            ..Layer4::default()
        }),
        ..Flow::default()
    }
}

/// Nanoseconds per call of `work` over `flows`, best of five rounds.
fn per_flow(flows: &[Flow], mut work: impl FnMut(&Flow)) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for flow in flows {
                work(flow);
            }
            start.elapsed().as_nanos() as f64 / flows.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lab/scenarios/large.yaml");
    let scenario = match Scenario::load(&path) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("explain bench: {e}");
            std::process::exit(1);
        }
    };
    let plan = scenario.plan();
    let objects = parts::metadata("bench", &plan, scenario.policies());
    let metadata = match Metadata::from_json_str(&objects.to_string(), "large.yaml") {
        Ok((metadata, _)) => metadata,
        Err(e) => {
            eprintln!("explain bench: {e}");
            std::process::exit(1);
        }
    };
    let mut flows = Vec::new();
    for src in &plan.pods {
        for dst in &plan.pods {
            flows.push(dropped(src.ip, dst.ip, Protocol::Tcp, 8080));
            flows.push(dropped(src.ip, dst.ip, Protocol::Udp, 53));
        }
    }
    let mut namer = PolicyNamer::default();
    let mut named = 0usize;
    let uncached = per_flow(&flows, |flow| {
        namer.clear();
        let mut flow = flow.clone();
        namer.fill(&metadata, &mut flow);
        named += usize::from(!flow.policy_reason.is_empty());
    });
    let cached = per_flow(&flows, |flow| {
        let mut flow = flow.clone();
        namer.fill(&metadata, &mut flow);
        black_box(&flow);
    });
    let clone_only = per_flow(&flows, |flow| {
        black_box(flow.clone());
    });
    let explain = per_flow(&flows, |flow| {
        black_box(explain_flow(&metadata, flow));
    });
    println!(
        "{} pods, {} policies, {} flows, {} denied by a policy",
        plan.pods.len(),
        scenario.policies().len(),
        flows.len(),
        named / 5
    );
    println!(
        "name (uncached)  {:>8.2} us/flow",
        (uncached - clone_only) / 1e3
    );
    println!(
        "name (cached)    {:>8.2} us/flow",
        (cached - clone_only) / 1e3
    );
    println!("explain          {:>8.2} us/flow", explain / 1e3);
}
