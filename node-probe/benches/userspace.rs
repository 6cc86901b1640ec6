//! `cargo bench -p skymap-node-probe --bench userspace` (no root): how many
//! kernel events per second the probe's userspace turns into flow records
//! on one core.
//!
//! The input is raw ring-buffer records, as bytes, for a mix of traffic at
//! one pod veth: HTTP/1.1 connections (handshake, request and response
//! snippets, close), DNS lookups (query and answer snippets), plain TCP
//! connections, periodic flushes of long flows, and drops. Each round
//! decodes them in batches as `Probe::read` does and feeds the assembler
//! as the binary does, on one thread; the median round is printed.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use skymap_node_probe::assemble::{Assembler, Attachment, Interface, Limits};
use skymap_node_probe::event::{Event, decode};
use skymap_node_probe::reasons::DropReasons;
use skymap_proto::v1::Flow;

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/records/mod.rs"]
mod records;

use common::{machine, median, thousands};
use records::{
    DIR_EGRESS, DIR_INGRESS, DIR_UNKNOWN, EV_DROP, EV_FLOW_CLOSE, EV_FLOW_FLUSH, EV_FLOW_NEW,
    EV_PAYLOAD, EV_TCP_HANDSHAKE, Record, dns, mapped,
};

/// Run as: cargo bench -p skymap-node-probe --bench userspace [-- OPTIONS]
#[derive(Debug, Parser)]
struct Args {
    /// Rounds (the median is printed).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Traffic units per round (23 events each, see the mix).
    #[arg(long, default_value_t = 20_000)]
    units: u32,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Records per `Probe::read` (decode_all reads whatever the ring holds).
const BATCH: usize = 256;
const NETNS: u32 = 4_026_532_100;
const VETH: u32 = 5;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;
const PSH_ACK: u8 = 0x18;
const SERVER: [u8; 4] = [10, 244, 2, 7];
const DATABASE: [u8; 4] = [10, 244, 3, 9];
const RESOLVER: [u8; 4] = [10, 96, 0, 10];
const REQUEST: &[u8] = b"GET /api/v1/orders?customer=8812&page=2 HTTP/1.1\r\n\
Host: orders.shop.svc.cluster.local\r\nUser-Agent: checkout/2.4\r\nAccept: application/json\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Content-Length: 5120\r\nDate: Mon, 02 Mar 2026 10:00:00 GMT\r\nServer: envoy\r\n\r\n{\"orders\":[";
const MIX: &str = "per unit: HTTP/1.1 connection 8 (2 new, handshake, request, response, \
flush, 2 close), DNS lookup 4 (2 new, query, answer), plain TCP connection 6 (2 new, \
handshake, flush, 2 close), long-flow flushes 4, drop 1";

/// The records of one unit of traffic, `ts` its start: what the kernel
/// writes at the client pod's veth (host side: the pod's packets are
/// ingress).
fn unit(n: u32, ts: u64, out: &mut Vec<Vec<u8>>) {
    let client = [10, 244, 1, 2 + (n / 40_000 % 200) as u8];
    let port = 20_000 + (n % 40_000) as u16;
    let at = |i: u64| ts + i * 3_000;
    let mut push = |kind: u8, dir: u8, i: u64, build: &dyn Fn(&mut Record)| {
        let mut r = Record::of(kind);
        r.header(dir, VETH, at(i), NETNS);
        build(&mut r);
        out.push(r.0);
    };
    let up = |r: &mut Record, server: [u8; 4], dport: u16, proto: u8| {
        r.tuple(mapped(client), mapped(server), port, dport, proto);
    };
    let down = |r: &mut Record, server: [u8; 4], sport: u16, proto: u8| {
        r.tuple(mapped(server), mapped(client), sport, port, proto);
    };

    // HTTP/1.1 on 8080.
    push(EV_FLOW_NEW, DIR_INGRESS, 0, &|r| {
        up(r, SERVER, 8080, TCP);
        r.counts(1, 74, SYN, at(0));
    });
    push(EV_FLOW_NEW, DIR_EGRESS, 1, &|r| {
        down(r, SERVER, 8080, TCP);
        r.counts(1, 74, SYN | ACK, at(1));
    });
    push(EV_TCP_HANDSHAKE, DIR_EGRESS, 1, &|r| {
        up(r, SERVER, 8080, TCP);
        r.put(64, &at(0).to_le_bytes())
            .put(72, &at(1).to_le_bytes());
    });
    push(EV_PAYLOAD, DIR_INGRESS, 2, &|r| {
        up(r, SERVER, 8080, TCP);
        r.snippet(REQUEST, REQUEST.len() as u16);
    });
    push(EV_PAYLOAD, DIR_EGRESS, 3, &|r| {
        down(r, SERVER, 8080, TCP);
        r.snippet(RESPONSE, 5_300);
    });
    push(EV_FLOW_FLUSH, DIR_EGRESS, 4, &|r| {
        down(r, SERVER, 8080, TCP);
        r.counts(4, 5_500, PSH_ACK, at(1));
    });
    push(EV_FLOW_CLOSE, DIR_INGRESS, 5, &|r| {
        up(r, SERVER, 8080, TCP);
        r.counts(4, 420, FIN_ACK | PSH_ACK | SYN, at(0));
    });
    push(EV_FLOW_CLOSE, DIR_EGRESS, 6, &|r| {
        down(r, SERVER, 8080, TCP);
        r.counts(1, 66, FIN_ACK | PSH_ACK | SYN, at(1));
    });

    // A DNS lookup.
    let id = (n % 65_536) as u16;
    let name = "orders.shop.svc.cluster.local";
    push(EV_FLOW_NEW, DIR_INGRESS, 7, &|r| {
        up(r, RESOLVER, 53, UDP);
        r.counts(1, 89, 0, at(7));
    });
    push(EV_PAYLOAD, DIR_INGRESS, 7, &|r| {
        up(r, RESOLVER, 53, UDP);
        let query = dns(id, false, 0, name, &[]);
        r.snippet(&query, query.len() as u16);
    });
    push(EV_FLOW_NEW, DIR_EGRESS, 8, &|r| {
        down(r, RESOLVER, 53, UDP);
        r.counts(1, 137, 0, at(8));
    });
    push(EV_PAYLOAD, DIR_EGRESS, 8, &|r| {
        down(r, RESOLVER, 53, UDP);
        let answer = dns(id, true, 0, name, &[(SERVER, 30), ([10, 244, 2, 8], 30)]);
        r.snippet(&answer, answer.len() as u16);
    });

    // A database connection: no snippets.
    push(EV_FLOW_NEW, DIR_INGRESS, 9, &|r| {
        up(r, DATABASE, 5432, TCP);
        r.counts(1, 74, SYN, at(9));
    });
    push(EV_FLOW_NEW, DIR_EGRESS, 10, &|r| {
        down(r, DATABASE, 5432, TCP);
        r.counts(1, 74, SYN | ACK, at(10));
    });
    push(EV_TCP_HANDSHAKE, DIR_EGRESS, 10, &|r| {
        up(r, DATABASE, 5432, TCP);
        r.put(64, &at(9).to_le_bytes())
            .put(72, &at(10).to_le_bytes());
    });
    push(EV_FLOW_FLUSH, DIR_INGRESS, 11, &|r| {
        up(r, DATABASE, 5432, TCP);
        r.counts(12, 2_400, PSH_ACK, at(9));
    });
    push(EV_FLOW_CLOSE, DIR_INGRESS, 12, &|r| {
        up(r, DATABASE, 5432, TCP);
        r.counts(3, 300, FIN_ACK | SYN, at(9));
    });
    push(EV_FLOW_CLOSE, DIR_EGRESS, 13, &|r| {
        down(r, DATABASE, 5432, TCP);
        r.counts(14, 9_100, FIN_ACK | PSH_ACK | SYN, at(10));
    });

    // Long flows elsewhere on the node report their counters.
    for k in 0..4u16 {
        push(EV_FLOW_FLUSH, DIR_INGRESS, 14, &|r| {
            let peer = [10, 244, 4, 1 + k as u8];
            r.tuple(mapped(client), mapped(peer), 40_000 + k, 9092, TCP);
            r.counts(800, 1_100_000, PSH_ACK, ts.saturating_sub(60_000_000_000));
        });
    }

    // A packet to a closed port, freed by the kernel.
    push(EV_DROP, DIR_UNKNOWN, 15, &|r| {
        up(r, SERVER, 9999, TCP);
        r.put(64, &3u32.to_le_bytes()); // NO_SOCKET on most kernels
        r.put(72, &0xffff_ffff_8123_4567u64.to_le_bytes());
    });
}

/// One round's totals: what came out, so none of it can be optimised away.
#[derive(Debug, Default)]
struct Totals {
    events: u64,
    undecodable: u64,
    flows: u64,
    bytes: u64,
}

/// Decodes `records` in batches and, with an assembler, assembles them.
fn round(records: &[Vec<u8>], assembler: Option<&mut Assembler>) -> (f64, Totals) {
    let mut totals = Totals::default();
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut flows: Vec<Flow> = Vec::new();
    let mut assembler = assembler;
    let start = Instant::now();
    for chunk in records.chunks(BATCH) {
        for record in chunk {
            match decode(std::hint::black_box(record)) {
                Ok(event) => batch.push(event),
                Err(_) => totals.undecodable += 1,
            }
        }
        totals.events += batch.len() as u64;
        if let Some(a) = assembler.as_deref_mut() {
            for event in &batch {
                a.push_into(event, &mut flows);
            }
            totals.flows += flows.len() as u64;
            totals.bytes += flows.iter().map(|f| f.bytes).sum::<u64>();
            std::hint::black_box(&flows);
            flows.clear();
        } else {
            std::hint::black_box(&batch);
        }
        batch.clear();
    }
    (start.elapsed().as_secs_f64(), totals)
}

fn assembler(reasons: &DropReasons) -> Assembler {
    let mut a = Assembler::new("bench-node", reasons.clone(), 0, Limits::default());
    let veth = Interface {
        name: "veth1a2b3c".to_string(),
        attachment: Attachment::HostVeth,
    };
    a.set_interface(NETNS, VETH, veth);
    a
}

/// Keeps the measuring thread on one CPU: "per core" means one core, and
/// a migration mid-round would show up as noise.
fn pin_to_one_cpu() -> bool {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return false;
    };
    let Some(cpu) = (0..CpuSet::count())
        .rev()
        .find(|&c| allowed.is_set(c).unwrap_or(false))
    else {
        return false;
    };
    let mut one = CpuSet::new();
    one.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &one).is_ok()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let pinned = pin_to_one_cpu();
    let mut records = Vec::new();
    for n in 0..args.units.max(1) {
        unit(n, 1_000_000_000 + u64::from(n) * 100_000, &mut records);
    }
    // Real names where the kernel has them; the bench needs no root.
    let reasons = DropReasons::from_kernel().unwrap_or_default();

    // One untimed pass warms the caches and the allocator.
    let _ = round(&records, Some(&mut assembler(&reasons)));
    let mut decode_only = Vec::new();
    let mut full = Vec::new();
    let mut last = Totals::default();
    for _ in 0..args.rounds.max(1) {
        let (secs, _) = round(&records, None);
        decode_only.push(secs);
        let (secs, totals) = round(&records, Some(&mut assembler(&reasons)));
        full.push(secs);
        last = totals;
    }
    if last.undecodable > 0 || last.flows == 0 {
        eprintln!(
            "userspace: {} undecodable records, {} flows out: the records or the assembler are wrong",
            last.undecodable, last.flows
        );
        return ExitCode::FAILURE;
    }

    let events = records.len() as f64;
    println!();
    println!("skymap-probe userspace throughput: {}", machine());
    println!(
        "{} round(s) of {} events ({} units), median; one thread{}; {BATCH} records per read.",
        args.rounds.max(1),
        thousands(events),
        thousands(f64::from(args.units.max(1))),
        if pinned { ", pinned to one CPU" } else { "" }
    );
    println!("mix {MIX}");
    println!();
    println!(
        "{:<28} {:>12} {:>10} {:>12}",
        "stage", "events/s", "ns/event", "flows/event"
    );
    for (stage, times, flows) in [
        ("decode", &decode_only, None),
        ("decode + assemble", &full, Some(last.flows as f64 / events)),
    ] {
        let secs = median(times).unwrap_or(f64::NAN);
        println!(
            "{:<28} {:>12} {:>10.1} {:>12}",
            stage,
            thousands(events / secs),
            secs * 1e9 / events,
            flows.map_or("-".to_string(), |f| format!("{f:.3}")),
        );
    }
    println!();
    println!(
        "flows out per round {}, bytes accounted {}",
        thousands(last.flows as f64),
        thousands(last.bytes as f64)
    );
    println!("command: cargo bench -p skymap-node-probe --bench userspace");
    ExitCode::SUCCESS
}
