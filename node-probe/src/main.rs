//! `skymap-probe`: runs on every node, turns the kernel's view of the node's
//! traffic into flow records and streams them to the relay.
//!
//! The loop: check privileges, load and attach the programs, then read the
//! ring buffer, assemble flows and hand them to the shipper, which never
//! blocks the reader. Every two seconds it attaches to interfaces that
//! appeared, detaches from ones that left, and reports the losses counted in
//! the kernel, while decoding and while assembling. Ctrl-C or SIGTERM detach
//! everything before exiting.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use color_eyre::eyre::{Result, WrapErr, eyre};
use skymap_node_probe::assemble::{Assembler, Attachment, Interface, Limits};
use skymap_node_probe::clock::{boot_to_unix_ns, monotonic_ns};
use skymap_node_probe::cpu::{CgroupLayout, CpuSampler};
use skymap_node_probe::loader::{LoadOptions, Probe};
use skymap_node_probe::metrics::{self, ProbeMetrics};
use skymap_node_probe::netns;
use skymap_node_probe::preflight::{self, Facts};
use skymap_node_probe::reasons::DropReasons;
use skymap_node_probe::ship::{CpuSender, Shipper, check_target};
use skymap_proto::tls::ClientTls;
use tokio::signal::unix::{SignalKind, signal};

/// skymap-probe: eBPF flows, drops and latency from this node, streamed to the relay.
#[derive(Debug, Parser)]
#[command(name = "skymap-probe", version)]
struct Args {
    /// Relay address: http://HOST:PORT, or https://HOST:PORT for TLS (with --tls-ca).
    #[arg(long, env = "SKYMAP_RELAY", default_value = "http://127.0.0.1:4245")]
    relay: String,
    #[command(flatten)]
    tls: ClientTls,
    /// This node's name, as the relay and Kubernetes know it (default: the hostname).
    #[arg(long, env = "SKYMAP_NODE")]
    node: Option<String>,
    /// Interfaces to watch, by name or glob (repeatable); default every interface but lo.
    #[arg(long = "iface", value_name = "GLOB")]
    ifaces: Vec<String>,
    /// Also watch the interfaces (matching --iface) inside this network namespace (repeatable),
    /// e.g. /run/netns/NAME or /proc/PID/ns/net.
    #[arg(long = "netns", value_name = "PATH")]
    netns: Vec<PathBuf>,
    /// Ring buffer size in bytes: a power of two from 4096 to 1073741824.
    #[arg(long, default_value_t = 1 << 22, value_parser = ring_bytes)]
    ring_bytes: u32,
    /// How often long flows report their counters.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    flush: Duration,
    /// Flows kept while the relay is away (oldest dropped and counted beyond it).
    #[arg(long, default_value_t = 100_000)]
    buffer: usize,
    /// Do not copy DNS and HTTP payload snippets (no L7 records, no request latency).
    #[arg(long)]
    no_payloads: bool,
    /// Network namespaces of pods without a pod cgroup, whose processes' CPU is
    /// reported per namespace (repeatable; a glob in the last path component,
    /// e.g. '/run/netns/lab-*'). The --netns namespaces are sampled too.
    #[arg(long = "pod-netns", value_name = "GLOB")]
    pod_netns: Vec<String>,
    /// Where pod cgroups are looked for, relative to the root of the cgroup
    /// hierarchy with CPU figures (e.g. a kind node's 'kubelet.slice').
    #[arg(long, value_name = "PATH")]
    cgroup_root: Option<PathBuf>,
    /// Do not sample CPU per pod.
    #[arg(long)]
    no_cpu: bool,
    /// Serve Prometheus metrics (GET /metrics) and GET /healthz over HTTP on
    /// this address, e.g. 0.0.0.0:9966. Off unless given.
    #[arg(long, value_name = "ADDR", env = "SKYMAP_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

/// How often interfaces are rescanned and losses reported.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// How often CPU per pod is sampled.
const CPU_INTERVAL: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    if let Err(e) = color_eyre::install() {
        eprintln!("skymap-probe: {e}");
    }
    let args = Args::parse();
    // Unreadable TLS files would otherwise only show up as retries.
    if let Err(e) = check_target(&args.relay, &args.tls) {
        eprintln!("skymap-probe: {e}");
        return ExitCode::FAILURE;
    }
    // Before anything is loaded: one message with everything missing.
    if let Err(e) = preflight::check(&Facts::gather()) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skymap-probe: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skymap-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The kernel takes only a power-of-two number of pages; aya would round
/// anything else up silently, and overflow near 4 GiB.
fn ring_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes.is_power_of_two() && (4096..=1 << 30).contains(&bytes) {
        Ok(bytes)
    } else {
        Err("not a power of two from 4096 to 1073741824".to_string())
    }
}

async fn run(args: Args) -> Result<()> {
    // Before anything that takes time: a signal arriving before the handlers
    // exist would kill the process instead of detaching cleanly.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let node = match &args.node {
        Some(node) => node.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .wrap_err("no --node given and the hostname is unreadable")?,
    };
    // Before loading: a taken port is a quick, clear failure.
    let (figures, published) = tokio::sync::watch::channel(ProbeMetrics::default());
    if let Some(listen) = &args.metrics_listen {
        let addr = metrics::start(listen, published).await?;
        eprintln!("skymap-probe: metrics on http://{addr}/metrics");
    }
    let reasons = DropReasons::from_kernel()?;
    let mut probe = Probe::load(&LoadOptions {
        ring_bytes: args.ring_bytes,
        flush_ns: u64::try_from(args.flush.as_nanos()).unwrap_or(u64::MAX),
        payloads: !args.no_payloads,
    })?;
    let mut assembler = Assembler::new(&node, reasons, boot_to_unix_ns()?, Limits::default());
    let shipper = Shipper::spawn_with_tls(
        args.relay.clone(),
        args.tls.clone(),
        node.clone(),
        args.buffer,
    );
    if !args.no_cpu {
        start_cpu_sampler(&args, shipper.cpu_sender())?;
    }
    let mut watched = Watched::default();
    watched.rescan(&args, &mut probe, &mut assembler);
    if watched.attached.is_empty() {
        return Err(eyre!(
            "no interface matches {:?}{}",
            globs(&args),
            if args.netns.is_empty() {
                ""
            } else {
                " (here or in the --netns namespaces)"
            }
        ));
    }
    eprintln!(
        "skymap-probe: node {node}, watching {}, sending to {}",
        watched
            .attached
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        args.relay
    );

    let mut tick = tokio::time::interval(HOUSEKEEPING);
    let mut losses = Losses::default();
    let mut flows = Vec::new();
    loop {
        tokio::select! {
            batch = probe.read() => {
                let batch = batch?;
                for event in &batch.events {
                    assembler.push_into(event, &mut flows);
                }
                shipper.send(std::mem::take(&mut flows));
                shipper.add_losses([("probe-decode", batch.undecodable)]);
                figures.send_modify(|m| m.events += batch.events.len() as u64 + batch.undecodable);
            }
            _ = tick.tick() => {
                watched.rescan(&args, &mut probe, &mut assembler);
                assembler.expire(monotonic_ns()?);
                let increments = losses.since_last(&probe, &assembler);
                shipper.add_losses(increments.iter().map(|(stage, n)| (stage.as_str(), *n)));
                let (ship, losses) = (shipper.status(), shipper.losses());
                figures.send_modify(|m| {
                    m.flows_sent = ship.sent;
                    m.relay_connected = ship.connected;
                    m.losses = losses;
                    m.interfaces_attached = watched.attached.len() as u64;
                });
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    // Detach first, then give the relay a moment for what is queued.
    drop(probe);
    shipper.flush(Duration::from_secs(2)).await;
    Ok(())
}

/// Samples CPU per pod every [`CPU_INTERVAL`] on a thread of its own (it
/// reads files and may enter namespaces, which must not hold up the ring
/// buffer reader); the thread ends with the process.
fn start_cpu_sampler(args: &Args, sink: CpuSender) -> Result<()> {
    let layout = CgroupLayout::detect();
    if layout.is_none() && args.pod_netns.is_empty() && args.netns.is_empty() {
        eprintln!(
            "skymap-probe: no cgroup hierarchy with CPU figures and no --pod-netns: CPU per pod is not reported"
        );
    }
    let mut sampler = CpuSampler::new(layout, args.cgroup_root.clone().unwrap_or_default());
    let globs = args.pod_netns.clone();
    let fixed = args.netns.clone();
    let boot_to_unix = boot_to_unix_ns()?;
    std::thread::Builder::new()
        .name("cpu-sampler".into())
        .spawn(move || {
            loop {
                let mut netns = fixed.clone();
                netns.extend(globs.iter().flat_map(|glob| expand_path_glob(glob)));
                if let Ok(mono) = monotonic_ns() {
                    let unix = i64::try_from(mono)
                        .unwrap_or(i64::MAX)
                        .saturating_add(boot_to_unix);
                    sink.send(sampler.sample(&netns, mono, unix));
                }
                std::thread::sleep(CPU_INTERVAL);
            }
        })
        .wrap_err("cannot start the CPU sampler thread")?;
    Ok(())
}

/// The paths matching `glob`, whose last component may hold `*` and `?`.
fn expand_path_glob(glob: &str) -> Vec<PathBuf> {
    let path = Path::new(glob);
    let (Some(dir), Some(pattern)) = (path.parent(), path.file_name().and_then(|p| p.to_str()))
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| netns::glob_match(pattern, n))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn globs(args: &Args) -> Vec<String> {
    if args.ifaces.is_empty() {
        vec!["* (but lo)".to_string()]
    } else {
        args.ifaces.clone()
    }
}

fn wanted(args: &Args, name: &str) -> bool {
    if args.ifaces.is_empty() {
        return name != "lo";
    }
    args.ifaces.iter().any(|glob| netns::glob_match(glob, name))
}

/// Where an interface sits, by its name: the host side of a pod's veth
/// (`veth*`, `lxc*`, `cali*`) wherever it is found, since a node's
/// namespace watched through --netns (a kind node, a lab node) holds those
/// too; any other interface is `otherwise` (an uplink in the probe's own
/// namespace, the pod's own interface in a --netns one).
fn attachment_of(name: &str, otherwise: Attachment) -> Attachment {
    if ["veth", "lxc", "cali"].iter().any(|p| name.starts_with(p)) {
        Attachment::HostVeth
    } else {
        otherwise
    }
}

/// What is attached, keyed as [`Probe::attached`] names it.
#[derive(Debug, Default)]
struct Watched {
    attached: BTreeMap<String, (u32, u32)>,
    failed: BTreeSet<String>,
}

impl Watched {
    /// Attaches to new matching interfaces and forgets vanished ones.
    fn rescan(&mut self, args: &Args, probe: &mut Probe, assembler: &mut Assembler) {
        let mut present = BTreeSet::new();
        let host_ino = netns_ino(Path::new("/proc/self/ns/net"));
        for name in netns::interfaces() {
            if !wanted(args, &name) {
                continue;
            }
            present.insert(name.clone());
            let attachment = attachment_of(&name, Attachment::Uplink);
            let ifindex = nix::net::if_::if_nametoindex(name.as_str()).unwrap_or(0);
            self.attach(
                name.clone(),
                (host_ino, ifindex),
                attachment,
                assembler,
                |p| p.attach(&name),
                probe,
            );
        }
        for path in &args.netns {
            let ino = netns_ino(path);
            let names = netns::run_in(path, || {
                netns::interfaces()
                    .into_iter()
                    .filter(|n| wanted(args, n))
                    .map(|n| {
                        let index = nix::net::if_::if_nametoindex(n.as_str()).unwrap_or(0);
                        (n, index)
                    })
                    .collect::<Vec<_>>()
            });
            let Ok(names) = names else {
                continue;
            };
            for (name, ifindex) in names {
                let key = format!("{}:{name}", path.display());
                present.insert(key.clone());
                let attachment = attachment_of(&name, Attachment::InPod);
                self.attach(
                    key,
                    (ino, ifindex),
                    attachment,
                    assembler,
                    |p| p.attach_in(path, &name),
                    probe,
                );
            }
        }
        assembler.set_drop_scope(drop_scope(args, present.iter().any(|k| !k.contains(':'))));
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((ino, ifindex)) = self.attached.remove(&key) {
                probe.detach(&key);
                assembler.remove_interface(ino, ifindex);
                eprintln!("skymap-probe: {key} is gone");
            }
        }
    }

    fn attach(
        &mut self,
        key: String,
        (ino, ifindex): (u32, u32),
        attachment: Attachment,
        assembler: &mut Assembler,
        attach: impl FnOnce(&mut Probe) -> Result<(), skymap_node_probe::loader::LoadError>,
        probe: &mut Probe,
    ) {
        if self.attached.contains_key(&key) {
            return;
        }
        match attach(probe) {
            Ok(()) => {
                let name = key.rsplit(':').next().unwrap_or(&key).to_string();
                assembler.set_interface(ino, ifindex, Interface { name, attachment });
                self.failed.remove(&key);
                self.attached.insert(key, (ino, ifindex));
            }
            // Said once per interface, not every rescan.
            Err(e) => {
                if self.failed.insert(key.clone()) {
                    eprintln!("skymap-probe: cannot watch {key}: {e}");
                }
            }
        }
    }
}

/// Where this probe's drops may come from. With no --netns or --pod-netns
/// the probe has the kernel to itself: every drop is the node's. With them it
/// may share the kernel with other probes (a lab, a test), so it keeps to its
/// namespaces, and to the host's only when it watches host interfaces.
fn drop_scope(args: &Args, host_interfaces: bool) -> Option<std::collections::HashSet<u32>> {
    if args.netns.is_empty() && args.pod_netns.is_empty() {
        return None;
    }
    let mut scope: std::collections::HashSet<u32> =
        args.netns.iter().map(|p| netns_ino(p)).collect();
    scope.extend(
        args.pod_netns
            .iter()
            .flat_map(|glob| expand_path_glob(glob))
            .map(|p| netns_ino(&p)),
    );
    if host_interfaces {
        scope.insert(netns_ino(Path::new("/proc/self/ns/net")));
    }
    scope.remove(&0);
    Some(scope)
}

fn netns_ino(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0, |m| m.ino() as u32)
}

/// Loss counters are cumulative where they are counted; the shipper adds up
/// increments.
#[derive(Debug, Default)]
struct Losses {
    last: BTreeMap<String, u64>,
}

impl Losses {
    fn since_last(&mut self, probe: &Probe, assembler: &Assembler) -> Vec<(String, u64)> {
        let mut now: Vec<(String, u64)> = Vec::new();
        if let Ok(counters) = probe.counters() {
            let get = |name: &str| {
                counters
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, v)| *v)
            };
            now.push(("kernel-ringbuf".to_string(), get("ringbuf-full")));
            now.push(("kernel-flow-table".to_string(), get("flow-table-full")));
        }
        now.extend(
            assembler
                .stats()
                .loss_counters()
                .into_iter()
                .map(|loss| (loss.stage, loss.count)),
        );
        now.into_iter()
            .map(|(stage, total)| {
                let previous = self.last.insert(stage.clone(), total).unwrap_or(0);
                (stage, total.saturating_sub(previous))
            })
            .collect()
    }
}
