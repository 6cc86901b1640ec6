//! `cargo bench -p skymap-node-probe --bench kernel_cost` (root): what the
//! probe's kernel programs cost per packet, and what the whole probe costs
//! the machine next to no probe and next to tcpdump, in one run.
//!
//! Two namespaces joined by a veth pair; a raw socket in one floods 64-byte
//! UDP packets to a socket in the other. Each round runs one configuration
//! for one traffic shape: no probe (baseline), the probe attached to the
//! receiving veth with its ring buffer drained and assembled as the binary
//! does, the same with BPF run-time statistics on (the kernel's run_time_ns
//! and run_cnt per program; they cost two clock reads a run, so the plain
//! probe rounds leave them off), and tcpdump writing the interface to
//! /dev/null. Rounds are interleaved and the median printed: the machine
//! may be shared.
//!
//! Everything it makes is removed on success, error, panic and Ctrl-C.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use skymap_node_probe::assemble::{Assembler, Limits};
use skymap_node_probe::clock::boot_to_unix_ns;
use skymap_node_probe::loader::{Batch, LoadOptions, Probe};
use skymap_node_probe::preflight::{self, Facts};
use skymap_node_probe::reasons::DropReasons;
use skymap_proto::v1::Flow;

#[path = "../common/mod.rs"]
mod common;
mod measure;
mod net;

use common::{machine, median, thousands};
use measure::{CpuTimes, RunStats};
use net::{Captured, FRAME_BYTES, Net, Shape, Tcpdump};

/// Run as: cargo bench -p skymap-node-probe --bench kernel_cost [-- OPTIONS]
#[derive(Debug, Parser)]
struct Args {
    /// Rounds of each configuration (the median is printed).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds measured per round.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Only the new-flow-every-packet shape, or only the long flow.
    #[arg(long, value_parser = ["long", "new"])]
    shape: Option<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The traffic runs this long before the measured window.
const WARMUP: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    Baseline,
    Probe,
    ProbeStats,
    /// The probe attached but paused: each program returns after reading
    /// one config value. Its run time is the floor that any TC program pays
    /// here (the call, and the clock reads of the statistics themselves).
    FloorStats,
    Tcpdump,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Baseline => "no probe",
            Config::Probe => "skymap-probe",
            Config::ProbeStats => "probe + bpf_stats",
            Config::FloorStats => "paused + bpf_stats",
            Config::Tcpdump => "tcpdump -w /dev/null",
        }
    }
}

/// One round's figures, over the measured window unless said otherwise.
#[derive(Debug, Default)]
struct Sample {
    packets: u64,
    pps: f64,
    /// CPU of the bench's own work ([`measure::own_ticks`]) per packet sent.
    own_ns: f64,
    /// Machine CPU (all CPUs, non-idle) per packet sent.
    cpu_ns: f64,
    /// Share of all CPUs busy with something other than the bench.
    others: f64,
    received: f64,
    send_errors: u64,
    /// Probe rounds, whole round: the probe is loaded fresh for each.
    probe: Option<ProbeFigures>,
    /// Stats rounds: run time and count per program over the window.
    programs: BTreeMap<String, RunStats>,
    tcpdump: Option<Captured>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ProbeFigures {
    sent: u64,
    delivered: u64,
    flows: u64,
    ringbuf_full: u64,
    undecodable: u64,
}

/// What the rounds share.
struct Bench {
    net: Net,
    sender: OwnedFd,
    receiver: UdpSocket,
    reasons: DropReasons,
    ksoftirqd: Vec<u32>,
    secs: Duration,
    runtime: tokio::runtime::Runtime,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(missing) = preflight() {
        eprintln!("kernel_cost: {missing}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) if measure::interrupted() => ExitCode::from(130),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernel_cost: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the bench needs that it cannot make itself, in one line.
fn preflight() -> Result<(), String> {
    preflight::check(&Facts::gather()).map_err(|e| e.to_string())?;
    std::process::Command::new("ip")
        .arg("-V")
        .output()
        .map_err(|_| "needs iproute2 (`ip`), which is not installed".to_string())?;
    // Checks BPF_ENABLE_STATS now rather than after the first rounds.
    drop(measure::enable_stats()?);
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    // Before any thread starts, so that all of them leave SIGINT to it.
    measure::watch_ctrl_c()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let net = Net::create()?;
    let bench = Bench {
        sender: net.sender()?,
        receiver: net.receiver()?,
        net,
        reasons: DropReasons::from_kernel().unwrap_or_default(),
        ksoftirqd: measure::ksoftirqd(),
        secs: Duration::from_secs_f64(args.secs.clamp(0.1, 600.0)),
        runtime,
    };
    // Probe::load registers the ring buffer with this runtime's reactor.
    let _entered = bench.runtime.enter();
    let shapes: Vec<Shape> = match args.shape.as_deref() {
        Some("long") => vec![Shape::LongFlow],
        Some("new") => vec![Shape::NewFlows],
        _ => vec![Shape::LongFlow, Shape::NewFlows],
    };
    let tcpdump = Tcpdump::installed();
    let mut configs = vec![
        Config::Baseline,
        Config::Probe,
        Config::ProbeStats,
        Config::FloorStats,
    ];
    if tcpdump {
        configs.push(Config::Tcpdump);
    }
    let stats_were_on = measure::stats_enabled();

    let mut samples: BTreeMap<(usize, Config), Vec<Sample>> = BTreeMap::new();
    'rounds: for round in 1..=args.rounds.max(1) {
        for (s, &shape) in shapes.iter().enumerate() {
            // Each round starts with another configuration, so none is
            // always the one right after loading, or after tcpdump.
            for k in 0..configs.len() {
                let config = configs[(k + round) % configs.len()];
                let Some(sample) = bench.round(shape, config)? else {
                    break 'rounds;
                };
                eprintln!(
                    "round {round}/{}: {:<16} {:<21} {:>10} pkt/s {:>7} CPU ns/pkt \
                     ({} machine, others {:.0}%)",
                    args.rounds.max(1),
                    shape.label(),
                    config.label(),
                    thousands(sample.pps),
                    thousands(sample.own_ns),
                    thousands(sample.cpu_ns),
                    100.0 * sample.others,
                );
                samples.entry((s, config)).or_default().push(sample);
            }
        }
    }
    if measure::interrupted() {
        return Ok(());
    }
    report(args, &shapes, &configs, &samples, tcpdump, stats_were_on);
    Ok(())
}

/// Sets a flag when dropped: the flood threads stop even if the thread
/// measuring them fails or panics (the scope would wait for them forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A point in the measured window.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    cpu: CpuTimes,
    own: u64,
    sent: u64,
    received: u64,
    programs: BTreeMap<String, RunStats>,
}

impl Bench {
    /// One configuration for one shape. `None` when interrupted.
    fn round(&self, shape: Shape, config: Config) -> Result<Option<Sample>, String> {
        let mut drainer = match config {
            Config::Probe | Config::ProbeStats | Config::FloorStats => Some(Drainer::attach(self)?),
            _ => None,
        };
        if let (Config::FloorStats, Some(drainer)) = (config, drainer.as_mut()) {
            drainer
                .probe
                .set_paused(true)
                .map_err(|e| format!("pausing the probe: {e}"))?;
        }
        let stats = matches!(config, Config::ProbeStats | Config::FloorStats)
            .then(measure::enable_stats)
            .transpose()?;
        let tcpdump = (config == Config::Tcpdump)
            .then(|| Tcpdump::start(&self.net.server, &self.net.server_if))
            .transpose()?;
        let (stop_sending, stop_receiving) = (AtomicBool::new(false), AtomicBool::new(false));
        let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut pids = self.ksoftirqd.clone();
        pids.extend(tcpdump.as_ref().map(Tcpdump::pid));
        let snapshot = || -> Result<Snapshot, String> {
            Ok(Snapshot {
                at: Instant::now(),
                cpu: CpuTimes::now()?,
                own: measure::own_ticks(&pids),
                sent: sent.load(Ordering::Relaxed),
                received: received.load(Ordering::Relaxed),
                programs: if stats.is_some() {
                    measure::program_stats()
                } else {
                    BTreeMap::new()
                },
            })
        };

        let (window, send_errors) = std::thread::scope(|scope| {
            let _stop_receiver = StopOnDrop(&stop_receiving);
            let stop_sender = StopOnDrop(&stop_sending);
            let flood = scope.spawn(|| net::flood(&self.sender, shape, &stop_sending, &sent));
            let sink = scope.spawn(|| net::receive(&self.receiver, &stop_receiving, &received));
            let window = self.runtime.block_on(async {
                pump(drainer.as_mut(), Instant::now() + WARMUP).await?;
                let start = snapshot()?;
                pump(drainer.as_mut(), start.at + self.secs).await?;
                Ok::<_, String>((start, snapshot()?))
            });
            drop(stop_sender);
            let send_errors = flood.join().unwrap_or(0);
            // What is still queued for the receiver arrives in this time.
            std::thread::sleep(Duration::from_millis(50));
            stop_receiving.store(true, Ordering::Relaxed);
            let _ = sink.join();
            (window, send_errors)
        });
        let (start, end) = window?;
        drop(stats);
        let captured = tcpdump.map(Tcpdump::stop);
        if measure::interrupted() {
            return Ok(None);
        }
        let probe = drainer
            .as_mut()
            .map(|d| d.finish(sent.load(Ordering::Relaxed)));
        Ok(Some(sample(&start, &end, send_errors, probe, captured)))
    }
}

fn sample(
    start: &Snapshot,
    end: &Snapshot,
    send_errors: u64,
    probe: Option<ProbeFigures>,
    tcpdump: Option<Captured>,
) -> Sample {
    let packets = end.sent.saturating_sub(start.sent);
    let per_packet = |x: f64| x / packets.max(1) as f64;
    let tick = measure::ns_per_tick();
    let busy = end.cpu.busy.saturating_sub(start.cpu.busy) as f64;
    let total = end.cpu.total.saturating_sub(start.cpu.total) as f64;
    let own = end.own.saturating_sub(start.own) as f64;
    let programs = end
        .programs
        .iter()
        .map(|(name, e)| {
            let s = start.programs.get(name).copied().unwrap_or_default();
            let delta = RunStats {
                run_ns: e.run_ns.saturating_sub(s.run_ns),
                runs: e.runs.saturating_sub(s.runs),
            };
            (name.clone(), delta)
        })
        .collect();
    Sample {
        packets,
        pps: packets as f64 / (end.at - start.at).as_secs_f64(),
        own_ns: per_packet(own * tick),
        cpu_ns: per_packet(busy * tick),
        others: if total > 0.0 {
            ((busy - own) / total).max(0.0)
        } else {
            0.0
        },
        received: per_packet(end.received.saturating_sub(start.received) as f64),
        send_errors,
        probe,
        programs,
        tcpdump,
    }
}

/// The probe, attached to the receiving veth, and what the binary does
/// with its events: decode and assemble (the flows are then dropped, not
/// shipped).
struct Drainer {
    probe: Probe,
    assembler: Assembler,
    flows: Vec<Flow>,
    figures: ProbeFigures,
}

impl Drainer {
    fn attach(bench: &Bench) -> Result<Self, String> {
        let mut probe =
            Probe::load(&LoadOptions::default()).map_err(|e| format!("loading the probe: {e}"))?;
        probe
            .attach_in(&Net::path(&bench.net.server), &bench.net.server_if)
            .map_err(|e| format!("attaching the probe: {e}"))?;
        let boot = boot_to_unix_ns().map_err(|e| e.to_string())?;
        Ok(Self {
            probe,
            assembler: Assembler::new("bench", bench.reasons.clone(), boot, Limits::default()),
            flows: Vec::new(),
            figures: ProbeFigures::default(),
        })
    }

    fn take(&mut self, batch: Batch) {
        self.figures.delivered += batch.events.len() as u64;
        self.figures.undecodable += batch.undecodable;
        for event in &batch.events {
            self.assembler.push_into(event, &mut self.flows);
        }
        self.figures.flows += self.flows.len() as u64;
        std::hint::black_box(&self.flows);
        self.flows.clear();
    }

    /// What is left in the ring once the flood stopped, and the counters.
    fn finish(&mut self, sent: u64) -> ProbeFigures {
        let rest = self.probe.drain();
        self.take(rest);
        let counters = self.probe.counters().unwrap_or_default();
        self.figures.ringbuf_full = counters
            .iter()
            .find(|(name, _)| *name == "ringbuf-full")
            .map_or(0, |(_, v)| *v);
        self.figures.sent = sent;
        self.figures
    }
}

/// Drains the probe (if any) until `until`, or until Ctrl-C.
async fn pump(mut drainer: Option<&mut Drainer>, until: Instant) -> Result<(), String> {
    const SLICE: Duration = Duration::from_millis(20);
    loop {
        let now = Instant::now();
        if now >= until || measure::interrupted() {
            return Ok(());
        }
        let slice = (until - now).min(SLICE);
        match drainer.as_deref_mut() {
            Some(d) => {
                if let Ok(batch) = tokio::time::timeout(slice, d.probe.read()).await {
                    d.take(batch.map_err(|e| format!("reading the ring buffer: {e}"))?);
                }
            }
            None => tokio::time::sleep(slice).await,
        }
    }
}

fn report(
    args: &Args,
    shapes: &[Shape],
    configs: &[Config],
    samples: &BTreeMap<(usize, Config), Vec<Sample>>,
    tcpdump: bool,
    stats_were_on: bool,
) {
    let med = |key: (usize, Config), f: &dyn Fn(&Sample) -> f64| {
        samples
            .get(&key)
            .and_then(|v| median(&v.iter().map(f).collect::<Vec<_>>()))
            .unwrap_or(f64::NAN)
    };
    // Against the baseline of the same round, which ran moments before or
    // after under much the same load from elsewhere; then the median.
    let added = |s: usize, config: Config, f: &dyn Fn(&Sample) -> f64| {
        if config == Config::Baseline {
            return "-".to_string();
        }
        let (Some(these), Some(base)) = (
            samples.get(&(s, config)),
            samples.get(&(s, Config::Baseline)),
        ) else {
            return "-".to_string();
        };
        let differences: Vec<f64> = these.iter().zip(base).map(|(x, b)| f(x) - f(b)).collect();
        median(&differences).map_or("-".to_string(), |d| format!("{d:+.0}"))
    };
    println!();
    println!("skymap-probe kernel cost: {}", machine());
    println!(
        "{} round(s) of {:.1} s per configuration, interleaved; medians. \
         {FRAME_BYTES}-byte frames (UDP, 22-byte payload) flooded over a veth pair \
         between two namespaces; the probe on the receiving veth (TC ingress + egress), \
         its ring drained and assembled as the binary does.",
        args.rounds.max(1),
        args.secs
    );
    println!(
        "CPU ns/pkt: the bench's own CPU (its process, tcpdump, ksoftirqd) per packet sent; \
         machine: all non-idle CPU from /proc/stat, which also counts others' load (shown). \
         added: median over rounds of the difference to the same round's baseline."
    );
    if !tcpdump {
        println!("tcpdump: not installed, its rows are skipped (apt-get install tcpdump)");
    }
    if stats_were_on {
        println!("note: BPF run-time statistics were already on, so every probe row pays them");
    }
    println!();
    println!(
        "{:<16} {:<21} {:>9} {:>9} {:>10} {:>7} {:>11} {:>7} {:>7}",
        "shape",
        "configuration",
        "pkt/s",
        "received",
        "CPU ns/pkt",
        "added",
        "machine ns",
        "added",
        "others"
    );
    for (s, shape) in shapes.iter().enumerate() {
        for &config in configs {
            let key = (s, config);
            let own = med(key, &|x| x.own_ns);
            let cpu = med(key, &|x| x.cpu_ns);
            println!(
                "{:<16} {:<21} {:>9} {:>8.1}% {:>10} {:>7} {:>11} {:>7} {:>6.0}%",
                shape.label(),
                config.label(),
                thousands(med(key, &|x| x.pps)),
                100.0 * med(key, &|x| x.received),
                thousands(own),
                added(s, config, &|x| x.own_ns),
                thousands(cpu),
                added(s, config, &|x| x.cpu_ns),
                100.0 * med(key, &|x| x.others),
            );
        }
    }

    println!();
    println!(
        "kernel programs, BPF run-time statistics over the probe + bpf_stats rounds \
         (paused: the same programs returning at once, the floor any TC program pays here; \
         added: all - paused):"
    );
    println!(
        "{:<16} {:<12} {:>9} {:>9} {:>9}",
        "shape", "program", "runs/pkt", "ns/run", "ns/pkt"
    );
    for (s, shape) in shapes.iter().enumerate() {
        let key = (s, Config::ProbeStats);
        let Some(rounds) = samples.get(&key) else {
            continue;
        };
        let mut names: Vec<&String> = rounds.iter().flat_map(|r| r.programs.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let stat = |r: &Sample| r.programs.get(name).copied().unwrap_or_default();
            if rounds.iter().all(|r| stat(r).runs == 0) {
                continue;
            }
            let per_run = med(key, &|r| {
                let s = stat(r);
                s.run_ns as f64 / s.runs.max(1) as f64
            });
            println!(
                "{:<16} {:<12} {:>9.3} {:>9.1} {:>9.1}",
                shape.label(),
                name,
                med(key, &|r| stat(r).runs as f64 / r.packets.max(1) as f64),
                per_run,
                med(key, &|r| stat(r).run_ns as f64 / r.packets.max(1) as f64),
            );
        }
        let total = med(key, &|r| {
            r.programs.values().map(|p| p.run_ns).sum::<u64>() as f64 / r.packets.max(1) as f64
        });
        println!(
            "{:<16} {:<12} {:>9} {:>9} {total:>9.1}",
            shape.label(),
            "all",
            "",
            ""
        );
        let floor_key = (s, Config::FloorStats);
        if samples.contains_key(&floor_key) {
            let floor = med(floor_key, &|r| {
                r.programs.values().map(|p| p.run_ns).sum::<u64>() as f64 / r.packets.max(1) as f64
            });
            println!(
                "{:<16} {:<12} {:>9} {:>9} {floor:>9.1}",
                shape.label(),
                "paused",
                "",
                ""
            );
            println!(
                "{:<16} {:<12} {:>9} {:>9} {:>9.1}",
                shape.label(),
                "added",
                "",
                "",
                total - floor
            );
        }
    }

    println!();
    println!("probe rounds, whole round (the probe is loaded afresh for each):");
    println!(
        "{:<16} {:<21} {:>10} {:>12} {:>12} {:>12}",
        "shape", "configuration", "events/pkt", "delivered", "ringbuf-full", "flows out"
    );
    for (s, shape) in shapes.iter().enumerate() {
        for config in [Config::Probe, Config::ProbeStats] {
            let key = (s, config);
            let probe = |f: &dyn Fn(&ProbeFigures) -> f64| {
                med(key, &|x| x.probe.as_ref().map_or(f64::NAN, f))
            };
            println!(
                "{:<16} {:<21} {:>10.3} {:>12} {:>12} {:>12}",
                shape.label(),
                config.label(),
                probe(&|p| p.delivered as f64 / p.sent.max(1) as f64),
                thousands(probe(&|p| p.delivered as f64)),
                thousands(probe(&|p| p.ringbuf_full as f64)),
                thousands(probe(&|p| p.flows as f64)),
            );
        }
    }

    let all = || samples.values().flatten();
    let errors: u64 = all().map(|s| s.send_errors).sum();
    let undecodable: u64 = all().filter_map(|s| s.probe.map(|p| p.undecodable)).sum();
    let dumped: Vec<String> = all()
        .filter_map(|s| s.tcpdump)
        .map(|c| format!("{}/{}", thousands(c.captured as f64), c.dropped))
        .collect();
    println!();
    println!("send errors {errors}, undecodable records {undecodable}");
    if !dumped.is_empty() {
        println!(
            "tcpdump captured/dropped by kernel, per round: {}",
            dumped.join(", ")
        );
    }
    println!(
        "command: cargo bench -p skymap-node-probe --bench kernel_cost -- --rounds {} --secs {}",
        args.rounds.max(1),
        args.secs
    );
}
