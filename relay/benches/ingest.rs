//! Ingest benchmark: how many flows per second one core aggregates, and how
//! many bytes a retained flow costs.
//!
//! A synthetic cluster: 2,000 pods in 20 namespaces (200 workloads of 10
//! pods), flows over 10,000 distinct workload-level edges: plain TCP (with
//! handshakes, replies and server-side duplicates), HTTP with latency and
//! statuses, DNS with latency and rcodes, and policy/kernel drops. Flows are
//! encoded as `FlowBatch` protobuf messages of 1,000 flows, as probes send them.
//!
//! Prints:
//! - `aggregate`: `Engine::ingest_batch` on decoded batches (decoding untimed);
//! - `decode+aggregate`: prost decoding plus `ingest_batch`;
//! - `history`: heap bytes per retained flow, measured with a counting
//!   allocator as (heap with a 1,000,000-flow history − heap without one) / 1,000,000;
//! - the graph's own heap, and the cost of a delta and a snapshot.
//!
//! Run: `cargo bench -p skymap-relay --bench ingest`. For profiling, the
//! environment variables `INGEST_BENCH_NO_POD`, `INGEST_BENCH_NO_HISTORY`
//! (throughput without the pod zoom / the history) and `INGEST_BENCH_NO_MEMORY`
//! (skip the memory figures) take parts out.

// The counting allocator implements the `unsafe` GlobalAlloc trait; it only
// forwards to the system allocator. Nothing else here uses unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

/// The relay binary's allocator, so the figures are the binary's.
use mimalloc::MiMalloc as System;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    Dns, Endpoint, Flow, FlowBatch, Http, L7Type, Layer4, Layer7, ObservationPoint, Protocol,
    TcpFlag, TrafficDirection, Verdict, Zoom,
};
use skymap_relay::engine::{Engine, EngineConfig};
use skymap_relay::metadata::{EndpointInfo, EndpointKind, Metadata, WorkloadRef};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Counting costs an atomic add per allocation, so it is on only while memory
/// is measured; the throughput figures see the plain system allocator.
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to mimalloc (`System` here) with the caller's arguments and
// only adds bookkeeping on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const NAMESPACES: usize = 20;
const WORKLOADS_PER_NS: usize = 10;
const PODS_PER_WORKLOAD: usize = 10;
const WORKLOADS: usize = NAMESPACES * WORKLOADS_PER_NS;
const NODES: usize = 10;
const EDGES: usize = 10_000;
const BATCH: usize = 1_000;
/// Distinct batches generated; rounds replay them with shifted times.
const BATCHES: usize = 300;
const ROUNDS: usize = 10;
const T0: i64 = 1_700_000_000_000_000_000;
/// One flow per microsecond: a cluster doing 1M flows/s.
const FLOW_SPACING_NS: i64 = 1_000;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn pod_ip(workload: usize, pod: usize) -> [u8; 4] {
    [
        10,
        (workload / 100) as u8 + 1,
        (workload % 100) as u8,
        pod as u8 + 1,
    ]
}

fn names(workload: usize) -> (String, String) {
    (
        format!("ns-{}", workload / WORKLOADS_PER_NS),
        format!("app-{}", workload % WORKLOADS_PER_NS),
    )
}

fn metadata() -> Metadata {
    let mut md = Metadata::empty();
    for w in 0..WORKLOADS {
        let (ns, app) = names(w);
        for p in 0..PODS_PER_WORKLOAD {
            let node = format!("node-{}", (w * PODS_PER_WORKLOAD + p) % NODES);
            md.insert(
                IpAddr::V4(Ipv4Addr::from(pod_ip(w, p))),
                EndpointInfo {
                    kind: EndpointKind::Pod,
                    namespace: ns.clone(),
                    name: format!("{app}-7d9f8b6c5d-{p:05}"),
                    labels: vec![format!("app={app}"), "pod-template-hash=7d9f8b6c5d".into()],
                    workload: Some(WorkloadRef {
                        name: app.clone(),
                        kind: "Deployment".into(),
                    }),
                    node_name: node,
                    services: vec![app.clone()],
                },
            );
        }
    }
    for n in 0..NAMESPACES {
        md.set_namespace(format!("ns-{n}"), vec![format!("team=t{}", n % 4)]);
    }
    md
}

#[derive(Clone, Copy)]
enum Kind {
    Tcp,
    Http,
    Dns,
    Drop,
}

/// The 10,000 workload-level edges: distinct (client, server, port) triples.
fn edges() -> Vec<(usize, usize, u32, Kind)> {
    (0..EDGES)
        .map(|e| {
            let client = e % WORKLOADS;
            let k = e / WORKLOADS;
            let server = (client + 1 + k) % WORKLOADS;
            let (port, kind) = match (e * 7 + k) % 10 {
                0..=4 => (8080 + (k % 5) as u32, Kind::Tcp),
                5 | 6 => (80, Kind::Http),
                7 | 8 => (53, Kind::Dns),
                _ => (5432, Kind::Drop),
            };
            (client, server, port, kind)
        })
        .collect()
}

fn endpoint(ip: [u8; 4], port: u32) -> Option<Endpoint> {
    Some(Endpoint {
        ip: prost::bytes::Bytes::copy_from_slice(&ip),
        port,
        ..Endpoint::default()
    })
}

const PATHS: [&str; 8] = [
    "/",
    "/api/v1/items",
    "/api/v1/cart",
    "/login",
    "/healthz",
    "/metrics",
    "/api/v1/orders",
    "/static/app.js",
];
const DROP_REASONS: [&str; 3] = ["POLICY_DENIED", "NO_SOCKET", "NETFILTER_DROP"];

fn make_flow(rng: &mut Rng, edges: &[(usize, usize, u32, Kind)], time_ns: i64) -> Flow {
    let (client, server, port, kind) = edges[rng.below(edges.len())];
    // A few pod pairs per edge, as connection pools make.
    let client_ip = pod_ip(client, rng.below(2));
    let server_ip = pod_ip(server, rng.below(2));
    let client_port = 32768 + rng.below(28000) as u32;
    let reply = rng.below(10) < 4;
    let mut flow = Flow {
        time_ns,
        verdict: Verdict::Forwarded as i32,
        source: endpoint(client_ip, client_port),
        destination: endpoint(server_ip, port),
        l4: Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Ack as u32 | TcpFlag::Psh as u32,
            ..Layer4::default()
        }),
        observation_point: ObservationPoint::FromEndpoint as i32,
        traffic_direction: TrafficDirection::Egress as i32,
        packets: 1 + rng.below(20) as u64,
        bytes: 60 + rng.below(20_000) as u64,
        ..Flow::default()
    };
    match kind {
        Kind::Tcp => {
            let roll = rng.below(10);
            if roll == 0 {
                flow.l4 = Some(Layer4 {
                    protocol: Protocol::Tcp as i32,
                    tcp_flags: TcpFlag::Syn as u32,
                    ..Layer4::default()
                });
            } else if roll == 1 {
                flow.l4 = Some(Layer4 {
                    protocol: Protocol::Tcp as i32,
                    tcp_flags: TcpFlag::Syn as u32 | TcpFlag::Ack as u32,
                    handshake_ns: 50_000 + rng.below(2_000_000) as u64,
                    ..Layer4::default()
                });
                flow.is_reply = true;
            } else if roll == 2 {
                // The same record seen arriving at the server's node.
                flow.observation_point = ObservationPoint::ToEndpoint as i32;
                flow.traffic_direction = TrafficDirection::Ingress as i32;
            } else {
                flow.is_reply = reply;
            }
        }
        Kind::Http => {
            let path = PATHS[rng.below(PATHS.len())];
            let method = if rng.below(4) == 0 { "POST" } else { "GET" };
            let request = rng.below(2) == 0;
            let code = match rng.below(100) {
                0..=1 => 503,
                2..=6 => 404,
                _ => 200,
            };
            flow.is_reply = !request;
            flow.l7 = Some(Layer7 {
                r#type: if request {
                    L7Type::Request
                } else {
                    L7Type::Response
                } as i32,
                latency_ns: if request {
                    0
                } else {
                    1_000_000 + rng.below(200_000_000) as u64
                },
                record: Some(Record::Http(Http {
                    method: method.into(),
                    url: path.into(),
                    code: if request { 0 } else { code },
                    protocol: "HTTP/1.1".into(),
                })),
            });
        }
        Kind::Dns => {
            let name = rng.below(100);
            let query = rng.below(2) == 0;
            let rcode = if rng.below(10) == 0 { 3 } else { 0 };
            flow.l4 = Some(Layer4 {
                protocol: Protocol::Udp as i32,
                ..Layer4::default()
            });
            flow.is_reply = !query;
            let ips = if query || rcode != 0 {
                Vec::new()
            } else {
                vec![format!("10.96.{}.{}", name / 10, name % 10 + 1)]
            };
            flow.l7 = Some(Layer7 {
                r#type: if query {
                    L7Type::Request
                } else {
                    L7Type::Response
                } as i32,
                latency_ns: if query {
                    0
                } else {
                    100_000 + rng.below(5_000_000) as u64
                },
                record: Some(Record::Dns(Dns {
                    query: format!("svc-{name}.ns-{}.svc.cluster.local.", name % NAMESPACES),
                    qtype: 1,
                    rcode: if query { 0 } else { rcode },
                    ips,
                    id: rng.below(65536) as u32,
                    ttl: if query { 0 } else { 30 },
                })),
            });
        }
        Kind::Drop => {
            flow.verdict = Verdict::Dropped as i32;
            flow.drop_reason = DROP_REASONS[rng.below(DROP_REASONS.len())].into();
            flow.observation_point = ObservationPoint::KernelDrop as i32;
            flow.l4 = Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: TcpFlag::Syn as u32,
                ..Layer4::default()
            });
            flow.packets = 1;
        }
    }
    if flow.is_reply {
        std::mem::swap(&mut flow.source, &mut flow.destination);
        if flow.observation_point == ObservationPoint::FromEndpoint as i32 {
            flow.observation_point = ObservationPoint::ToEndpoint as i32;
        }
    }
    flow
}

/// `BATCHES` encoded batches, round-robin over the nodes.
fn encoded_batches() -> Vec<prost::bytes::Bytes> {
    let edges = edges();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    (0..BATCHES)
        .map(|b| {
            let flows = (0..BATCH)
                .map(|i| {
                    make_flow(
                        &mut rng,
                        &edges,
                        T0 + ((b * BATCH + i) as i64) * FLOW_SPACING_NS,
                    )
                })
                .collect();
            FlowBatch {
                node_name: format!("node-{}", b % NODES),
                seq: (b / NODES) as u64 + 1,
                flows,
                ..FlowBatch::default()
            }
            .encode_to_vec()
            .into()
        })
        .collect()
}

/// Decodes from a `Bytes` buffer as tonic does, so addresses are slices of
/// it rather than copies.
fn decode(bytes: &prost::bytes::Bytes) -> FlowBatch {
    match FlowBatch::decode(bytes.clone()) {
        Ok(batch) => batch,
        Err(error) => panic!("bench batch does not decode: {error}"),
    }
}

/// Shifts a replayed batch's times so every round moves forward like live traffic.
fn shift(batch: &mut FlowBatch, round: usize) {
    let offset = (round * BATCHES * BATCH) as i64 * FLOW_SPACING_NS;
    for flow in &mut batch.flows {
        flow.time_ns += offset;
    }
    batch.seq += (round * BATCHES / NODES) as u64;
}

struct Timings {
    flows: u64,
    decode: Duration,
    aggregate: Duration,
}

/// Feeds `rounds` × `BATCHES` batches; ticks the clock once per simulated
/// second, as the aggregator does (untimed, like its deltas).
fn run(engine: &mut Engine, batches: &[prost::bytes::Bytes], rounds: usize) -> Timings {
    let mut timings = Timings {
        flows: 0,
        decode: Duration::ZERO,
        aggregate: Duration::ZERO,
    };
    let mut fed = 0usize;
    for round in 0..rounds {
        for bytes in batches {
            let started = Instant::now();
            let mut batch = decode(bytes);
            timings.decode += started.elapsed();
            shift(&mut batch, round);
            let last = batch.flows.last().map_or(0, |f| f.time_ns);
            let started = Instant::now();
            let outcome = engine.ingest_batch(batch, None);
            timings.aggregate += started.elapsed();
            timings.flows += outcome.accepted;
            fed += 1;
            if fed.is_multiple_of(1000) {
                engine.advance(last);
                engine.take_deltas();
            }
        }
    }
    timings
}

fn per_second(flows: u64, elapsed: Duration) -> u64 {
    (flows as f64 / elapsed.as_secs_f64()) as u64
}

fn main() {
    let metadata = Arc::new(metadata());
    let batches = encoded_batches();
    let encoded: usize = batches.iter().map(prost::bytes::Bytes::len).sum();
    println!(
        "input: {} flows in {} batches, {} bytes encoded ({} per flow), {} pods, {} edges planned",
        BATCHES * BATCH,
        BATCHES,
        encoded,
        encoded / (BATCHES * BATCH),
        metadata.len(),
        EDGES
    );

    // Throughput, with the default configuration (1M-flow history, pod zoom).
    let config = EngineConfig {
        pod_graph: std::env::var_os("INGEST_BENCH_NO_POD").is_none(),
        history_capacity: if std::env::var_os("INGEST_BENCH_NO_HISTORY").is_some() {
            0
        } else {
            1_000_000
        },
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, metadata.clone());
    run(&mut engine, &batches, 1); // warm-up: creates the graph
    // Rounds are timed apart: the machine is shared, and the median of
    // several rounds says more than one long average.
    let mut rounds: Vec<Timings> = (0..ROUNDS).map(|_| run(&mut engine, &batches, 1)).collect();
    let median = |rounds: &mut Vec<Timings>, rate: fn(&Timings) -> u64| {
        rounds.sort_by_key(rate);
        (
            rate(&rounds[rounds.len() / 2]),
            rate(&rounds[rounds.len() - 1]),
        )
    };
    let (aggregate, aggregate_best) = median(&mut rounds, |t| per_second(t.flows, t.aggregate));
    let (both, both_best) = median(&mut rounds, |t| per_second(t.flows, t.decode + t.aggregate));
    let (decode_only, _) = median(&mut rounds, |t| per_second(t.flows, t.decode));
    let graph = engine.graph_snapshot(Zoom::Workload, &[]);
    println!(
        "aggregate: {aggregate} flows/s (median of {ROUNDS} rounds of {} flows; best {aggregate_best}; {} edges, {} nodes at workload zoom)",
        BATCHES * BATCH,
        graph.edges.len(),
        graph.nodes.len(),
    );
    println!(
        "decode+aggregate: {both} flows/s (best {both_best}; decode alone {decode_only} flows/s)"
    );
    // ingest_batch owns the batch and frees it: how much of its time that is.
    let mut freeing = Duration::ZERO;
    for bytes in &batches {
        let batch = decode(bytes);
        let started = Instant::now();
        drop(batch);
        freeing += started.elapsed();
    }
    println!(
        "of which freeing the decoded batches: {} ns per flow",
        freeing.as_nanos() / (BATCHES * BATCH) as u128
    );
    let pods = engine.graph_snapshot(Zoom::Pod, &[]);
    println!(
        "pod zoom: {} edges; history {} flows; graph-full losses {}",
        pods.edges.len(),
        engine.history_len(),
        engine
            .status()
            .losses
            .iter()
            .filter(|l| l.stage == "relay-graph-full")
            .map(|l| l.count)
            .sum::<u64>()
    );
    let started = Instant::now();
    let deltas = engine.take_deltas();
    let delta_time = started.elapsed();
    let started = Instant::now();
    let snapshot = engine.graph_snapshot(Zoom::Namespace, &[]);
    println!(
        "take_deltas: {:?} ({} workload edges); namespace snapshot: {:?} ({} edges)",
        delta_time,
        deltas.workload.edges.len(),
        started.elapsed(),
        snapshot.edges.len()
    );
    drop((engine, graph, pods, deltas, snapshot));

    if std::env::var_os("INGEST_BENCH_NO_MEMORY").is_some() {
        return;
    }
    // Memory: the same traffic with and without a 1M-flow history.
    COUNTING.store(true, Ordering::Relaxed);
    let heap = |capacity: usize| {
        let before = live_bytes();
        let config = EngineConfig {
            history_capacity: capacity,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, metadata.clone());
        run(&mut engine, &batches, 4);
        let grown = usize::try_from(live_bytes() - before).unwrap_or(0);
        (grown, engine.history_len())
    };
    let (with_history, retained) = heap(1_000_000);
    let (without_history, _) = heap(0);
    println!(
        "history: {} bytes per retained flow ({} flows retained; {} bytes per compact slot)",
        with_history.saturating_sub(without_history) / retained.max(1),
        retained,
        skymap_relay::history::COMPACT_FLOW_BYTES
    );
    println!(
        "graph and caches without history: {} MiB",
        without_history / (1024 * 1024)
    );
}
