//! The lab's figures: how long a packet takes to reach the relay's flow
//! stream and its service graph, and what the probes and the relay cost in
//! CPU, measured on real labs (`skymap lab`), so root only.
//!
//! It brings up the default scenario (the story), samples CPU for a while
//! with one graph watcher attached (as with the explorer open), then follows
//! the relay's flows and watches its graph at the same time to time them;
//! takes that lab down and does the same with `lab/scenarios/large.yaml`.
//! Every lab is taken down again whatever happens (error, panic, Ctrl-C).
//!
//! It runs the `skymap` built beside it (`target/release/skymap`), which
//! starts `skymap-relay` and `skymap-probe` from the same directory, so:
//!
//! ```text
//! cargo build --release -p skymap-tui -p skymap-relay -p skymap-node-probe --bins
//! cargo bench -p skymap-tui --bench lab_figures
//! ```
//!
//! `LAB_FIGURES_LATENCY_SECS` (default 20) sets each latency window and
//! `LAB_FIGURES_CPU_SECS` (default 30) the large scenario's CPU window (the
//! default scenario's is half of it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use skymap_lab::run::{State, read_state};
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    GetFlowsRequest, StatusRequest, StatusResponse, WatchGraphRequest, Zoom, get_flows_response,
};
use tonic::transport::Channel;

/// The `skymap` of this build's profile, built with the bench.
const SKYMAP: &str = env!("CARGO_BIN_EXE_skymap");
const LARGE_SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/scenarios/large.yaml");
const COMMAND: &str = "cargo build --release -p skymap-tui -p skymap-relay -p skymap-node-probe --bins && cargo bench -p skymap-tui --bench lab_figures";
/// Time for the clients to start calling and the probes' first flushes
/// before anything is measured, so start-up work does not count.
const SETTLE: Duration = Duration::from_secs(4);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab_figures: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    if skymap_lab::net::check_root().is_err() {
        bail!("needs root (it builds network namespaces and loads eBPF): run it with sudo");
    }
    let skymap = PathBuf::from(SKYMAP);
    let dir = skymap
        .parent()
        .ok_or_else(|| eyre!("{SKYMAP} has no directory"))?;
    for program in ["skymap", "skymap-relay", "skymap-probe"] {
        if !dir.join(program).is_file() {
            bail!(
                "{} is missing; build the lab's programs first: cargo build --release -p skymap-tui -p skymap-relay -p skymap-node-probe --bins",
                dir.join(program).display()
            );
        }
    }
    let latency_window = Duration::from_secs(env_secs("LAB_FIGURES_LATENCY_SECS", 20)?);
    let cpu_window = Duration::from_secs(env_secs("LAB_FIGURES_CPU_SECS", 30)?);

    let labs = Arc::new(Labs {
        skymap: skymap.clone(),
        current: Mutex::new(None),
    });
    down_on_signals(&labs)?;
    let _guard = DownOnDrop(&labs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .wrap_err("starting the runtime")?;
    let clock_tick = clock_ticks_per_second();
    let load_start = loadavg();
    let suffix = std::process::id() % 1000;

    let mut figures = Vec::new();
    for (scenario, name, cpu) in [
        (None, format!("fig{suffix}"), cpu_window / 2),
        (
            Some(Path::new(LARGE_SCENARIO)),
            format!("figl{suffix}"),
            cpu_window,
        ),
    ] {
        let label = scenario.map_or("default", |_| "large");
        eprintln!("lab {name}: up ({label} scenario)");
        labs.up(scenario, &name)?;
        let state = read_state(&name).wrap_err_with(|| format!("reading lab {name}'s state"))?;
        let url = state.relay.detail.clone();
        let measured = runtime.block_on(async {
            tokio::time::sleep(SETTLE).await;
            eprintln!("lab {name}: CPU for {}s", cpu.as_secs());
            let cpu = measure_cpu(&url, &state, cpu, clock_tick).await?;
            eprintln!("lab {name}: latency for {}s", latency_window.as_secs());
            let latency = measure_latency(&url, latency_window).await?;
            Ok::<_, color_eyre::Report>(Figures {
                scenario: label,
                cpu,
                latency,
            })
        })?;
        labs.down();
        figures.push(measured);
    }
    let load_end = loadavg();
    print_report(&figures, &load_start, &load_end);
    Ok(())
}

fn env_secs(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(secs),
            _ => bail!("{name}={text}: expected a whole number of seconds above 0"),
        },
        Err(_) => Ok(default),
    }
}

// ------------------------------------------------------------------ labs

/// The lab being measured. Whoever gets to it first takes it down: the
/// main thread, the guard's drop (error, panic) or the signal thread; the
/// lock makes the others wait until it is done, so the process never exits
/// with a lab half down.
#[derive(Debug)]
struct Labs {
    skymap: PathBuf,
    current: Mutex<Option<String>>,
}

impl Labs {
    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `skymap lab up`. The lock is held throughout so that a signal
    /// waits for `up`, which removes a half-built lab by itself on Ctrl-C.
    fn up(&self, scenario: Option<&Path>, name: &str) -> Result<()> {
        let mut current = self.lock();
        *current = Some(name.to_string());
        let mut command = Command::new(&self.skymap);
        command.args(["lab", "up", "--name", name]);
        if let Some(scenario) = scenario {
            command.arg(scenario);
        }
        let output = command
            .output()
            .wrap_err_with(|| format!("running {}", self.skymap.display()))?;
        if !output.status.success() {
            // `up` removed what it built.
            *current = None;
            bail!(
                "skymap lab up --name {name} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn down(&self) {
        self.take_down(&mut self.lock());
    }

    /// Takes the lab down and exits, still holding the lock so that the
    /// main thread cannot start another lab in between.
    fn down_and_exit(&self) -> ! {
        let mut current = self.lock();
        self.take_down(&mut current);
        std::process::exit(130)
    }

    fn take_down(&self, current: &mut Option<String>) {
        let Some(name) = current.take() else {
            return;
        };
        eprintln!("lab {name}: down");
        let mut command = Command::new(&self.skymap);
        command.args(["lab", "down", &name]);
        // Its own process group: a second Ctrl-C must not stop the cleanup.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        match command.output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "skymap lab down {name} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!(
                "running skymap lab down {name}: {e}; remove the lab by hand with `skymap lab down {name}`"
            ),
        }
    }
}

#[derive(Debug)]
struct DownOnDrop<'a>(&'a Labs);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        self.0.down();
    }
}

/// On SIGINT or SIGTERM, takes the current lab down and exits.
fn down_on_signals(labs: &Arc<Labs>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .wrap_err("starting the signal thread")?;
    // Registered now, before any lab exists, so no signal is missed.
    let (mut term, mut int) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .wrap_err("installing signal handlers")?;
    let labs = labs.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            eprintln!("lab_figures: interrupted");
            labs.down_and_exit();
        })
        .wrap_err("starting the signal thread")?;
    Ok(())
}

// ------------------------------------------------------------------ figures

#[derive(Debug)]
struct Figures {
    scenario: &'static str,
    cpu: Cpu,
    latency: Latency,
}

#[derive(Debug)]
struct Latency {
    window: Duration,
    /// Receive time minus `flow.time_ns`, one per flow, ns.
    to_relay: Vec<i64>,
    /// Flows the relay told us we missed (slow reader).
    lost: u64,
    /// Receive time of the first graph update after the flow minus
    /// `flow.time_ns`, one per flow, ns.
    to_graph: Vec<i64>,
    /// Receive time minus `edge.last_seen_ns`, one per edge that got newer
    /// records, ns.
    edges: Vec<i64>,
    /// Receive time minus the update's own time, ns.
    updates: Vec<i64>,
}

#[derive(Debug)]
struct Cpu {
    window: Duration,
    pods: usize,
    graph_nodes: u64,
    graph_edges: u64,
    flows_per_s: f64,
    /// Percent of one core, for the relay.
    relay: Share,
    /// Per probe: node name and percent of one core.
    probes: Vec<(String, Share)>,
    /// All pods together.
    pods_cpu: Share,
}

/// Percent of one core, or why it could not be measured.
#[derive(Debug, Clone, Copy)]
enum Share {
    Percent(f64),
    /// The process went away (restarted) during the window.
    Gone,
}

impl Share {
    fn percent(self) -> Option<f64> {
        match self {
            Share::Percent(p) => Some(p),
            Share::Gone => None,
        }
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Share::Percent(p) => write!(f, "{p:.1}%"),
            Share::Gone => f.write_str("restarted"),
        }
    }
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn connect(url: &str) -> Result<ObserverClient<Channel>> {
    ObserverClient::connect(url.to_string())
        .await
        .wrap_err_with(|| format!("connecting to the relay at {url}"))
}

/// Follows the flows and watches the workload graph for `window`, at once.
async fn measure_latency(url: &str, window: Duration) -> Result<Latency> {
    let client = connect(url).await?;
    let deadline = tokio::time::Instant::now() + window;
    let flows = tokio::spawn(follow_flows(client.clone(), deadline));
    let graph = tokio::spawn(watch_graph(client, deadline));
    let (flows, lost) = flows.await.wrap_err("the flow follower")??;
    let graph = graph.await.wrap_err("the graph watcher")??;
    // The relay counts a batch on the graph as it forwards it to followers,
    // so a record is in the first update that arrives after it. When a tick
    // falls between the relay forwarding a flow and this client reading it,
    // the record is taken for the next update's: rarely one interval too much.
    let to_graph = flows
        .iter()
        .filter_map(|&(received, time)| {
            let next = graph.arrivals.partition_point(|&a| a < received);
            graph.arrivals.get(next).map(|a| a - time)
        })
        .collect();
    Ok(Latency {
        window,
        to_relay: flows
            .iter()
            .map(|(received, time)| received - time)
            .collect(),
        lost,
        to_graph,
        edges: graph.ages,
        updates: graph.lags,
    })
}

async fn follow_flows(
    mut client: ObserverClient<Channel>,
    deadline: tokio::time::Instant,
) -> Result<(Vec<(i64, i64)>, u64)> {
    let request = GetFlowsRequest {
        follow: true,
        ..GetFlowsRequest::default()
    };
    let mut stream = client
        .get_flows(request)
        .await
        .wrap_err("GetFlows")?
        .into_inner();
    // (receive time, flow.time_ns)
    let (mut flows, mut lost) = (Vec::new(), 0);
    while let Ok(next) = tokio::time::timeout_at(deadline, stream.message()).await {
        let Some(response) = next.wrap_err("GetFlows")? else {
            bail!("the relay ended the flow stream");
        };
        let now = unix_ns();
        match response.response {
            Some(get_flows_response::Response::Flow(flow)) => flows.push((now, flow.time_ns)),
            Some(get_flows_response::Response::Lost(l)) => lost += l.count,
            None => {}
        }
    }
    Ok((flows, lost))
}

/// What the graph watcher saw, in ns.
#[derive(Debug, Default)]
struct GraphTimes {
    /// When each update arrived, unix time, in order.
    arrivals: Vec<i64>,
    /// Arrival minus `edge.last_seen_ns`, per edge with newer records.
    ages: Vec<i64>,
    /// Arrival minus the update's own time, per update but the first.
    lags: Vec<i64>,
}

async fn watch_graph(
    mut client: ObserverClient<Channel>,
    deadline: tokio::time::Instant,
) -> Result<GraphTimes> {
    let request = WatchGraphRequest {
        zoom: Zoom::Workload as i32,
        namespaces: Vec::new(),
    };
    let mut stream = client
        .watch_graph(request)
        .await
        .wrap_err("WatchGraph")?
        .into_inner();
    // Each edge's newest record so far: an edge counts only when records
    // newer than that arrive, not when it is republished because its rates
    // moved (every 5 s) or in the first snapshot, which is history.
    let mut newest: HashMap<String, i64> = HashMap::new();
    let mut times = GraphTimes::default();
    let mut first = true;
    while let Ok(next) = tokio::time::timeout_at(deadline, stream.message()).await {
        let Some(update) = next.wrap_err("WatchGraph")? else {
            bail!("the relay ended the graph stream");
        };
        let now = unix_ns();
        times.arrivals.push(now);
        if !first {
            times.lags.push(now - update.time_ns);
        }
        for edge in update.edges {
            let previous = newest.insert(edge.id, edge.last_seen_ns);
            let fresher = previous.is_none_or(|seen| edge.last_seen_ns > seen);
            if !first && fresher {
                times.ages.push(now - edge.last_seen_ns);
            }
        }
        first = false;
    }
    Ok(times)
}

/// CPU of the relay, each probe and all pods over `window`, with one graph
/// watcher attached.
async fn measure_cpu(url: &str, state: &State, window: Duration, tick: f64) -> Result<Cpu> {
    let mut client = connect(url).await?;
    // A watcher that reads and forgets, as the explorer does when idle.
    let mut watcher = client.clone();
    let watch = tokio::spawn(async move {
        let request = WatchGraphRequest {
            zoom: Zoom::Workload as i32,
            namespaces: Vec::new(),
        };
        if let Ok(stream) = watcher.watch_graph(request).await {
            let mut stream = stream.into_inner();
            while let Ok(Some(_)) = stream.message().await {}
        }
    });
    let pods: Vec<u32> = state.pods.iter().map(|p| p.pid).collect();
    let before_status = status(&mut client).await?;
    let started = Instant::now();
    let relay_before = cpu_ticks(state.relay.pid);
    let probes_before: Vec<Option<u64>> = state.probes.iter().map(|p| cpu_ticks(p.pid)).collect();
    let pods_before = pods_ticks(&pods);
    tokio::time::sleep(window).await;
    let relay_after = cpu_ticks(state.relay.pid);
    let probes_after: Vec<Option<u64>> = state.probes.iter().map(|p| cpu_ticks(p.pid)).collect();
    let pods_after = pods_ticks(&pods);
    let elapsed = started.elapsed().as_secs_f64();
    let after_status = status(&mut client).await?;
    watch.abort();

    let share = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if a >= b => Share::Percent((a - b) as f64 / tick / elapsed * 100.0),
        _ => Share::Gone,
    };
    let flows = after_status
        .flows_total
        .saturating_sub(before_status.flows_total);
    Ok(Cpu {
        window,
        pods: state.pods.len(),
        graph_nodes: after_status.graph_nodes,
        graph_edges: after_status.graph_edges,
        flows_per_s: flows as f64 / elapsed,
        relay: share(relay_before, relay_after),
        probes: state
            .probes
            .iter()
            .zip(probes_before.into_iter().zip(probes_after))
            .map(|(probe, (b, a))| (probe.name.clone(), share(b, a)))
            .collect(),
        pods_cpu: share(pods_before, pods_after),
    })
}

async fn status(client: &mut ObserverClient<Channel>) -> Result<StatusResponse> {
    Ok(client
        .get_status(StatusRequest {})
        .await
        .wrap_err("GetStatus")?
        .into_inner())
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields that
    // count come after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn pods_ticks(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| cpu_ticks(pid)).sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        // What Linux reports to user space on every common architecture.
        .unwrap_or(100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

// ------------------------------------------------------------------ report

/// The value at quantile `q` (nearest rank) of sorted `values`.
fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn ms(ns: Option<i64>) -> String {
    ns.map_or_else(|| "-".into(), |ns| format!("{:.0} ms", ns as f64 / 1e6))
}

struct Summary {
    count: usize,
    p50: Option<i64>,
    p99: Option<i64>,
    max: Option<i64>,
}

fn summarize(values: &[i64]) -> Summary {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    Summary {
        count: sorted.len(),
        p50: quantile(&sorted, 0.50),
        p99: quantile(&sorted, 0.99),
        max: sorted.last().copied(),
    }
}

fn print_report(figures: &[Figures], load_start: &str, load_end: &str) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "skymap lab figures — {cores} CPUs, Linux {}, load average {load_start} at start, {load_end} at end",
        kernel_release()
    );
    println!("command (as root): {COMMAND}");
    println!();
    println!("Latency (flows followed and graph watched together):");
    println!();
    println!(
        "| scenario | window | flows | packet → relay p50 / p99 / max | packet → graph p50 / p99 / max | edge freshness p50 / p99 (updates) |"
    );
    println!("|---|---|---|---|---|---|");
    for f in figures {
        let l = &f.latency;
        let relay = summarize(&l.to_relay);
        let graph = summarize(&l.to_graph);
        let fresh = summarize(&l.edges);
        let lost = if l.lost > 0 {
            format!(" (+{} lost)", l.lost)
        } else {
            String::new()
        };
        println!(
            "| {} | {} s | {}{lost} | {} / {} / {} | {} / {} / {} | {} / {} ({}) |",
            f.scenario,
            l.window.as_secs(),
            relay.count,
            ms(relay.p50),
            ms(relay.p99),
            ms(relay.max),
            ms(graph.p50),
            ms(graph.p99),
            ms(graph.max),
            ms(fresh.p50),
            ms(fresh.p99),
            fresh.count,
        );
    }
    println!();
    println!("CPU (% of one core; one graph watcher attached):");
    println!();
    println!(
        "| scenario | window | pods | graph nodes / edges | flows/s | relay | probes (sum) | per probe | relay + probes | all pods |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in figures {
        let c = &f.cpu;
        let each: Vec<String> = c.probes.iter().map(|(_, s)| s.to_string()).collect();
        let probes = c
            .probes
            .iter()
            .map(|(_, s)| s.percent())
            .sum::<Option<f64>>();
        let total = probes.zip(c.relay.percent()).map(|(p, r)| p + r);
        let percent = |p: Option<f64>| p.map_or_else(|| "restarted".into(), |p| format!("{p:.1}%"));
        println!(
            "| {} | {} s | {} | {} / {} | {:.0} | {} | {} | {} | {} | {} |",
            f.scenario,
            c.window.as_secs(),
            c.pods,
            c.graph_nodes,
            c.graph_edges,
            c.flows_per_s,
            c.relay,
            percent(probes),
            each.join(", "),
            percent(total),
            c.pods_cpu,
        );
    }
    println!();
    for f in figures {
        let lags = summarize(&f.latency.updates);
        println!(
            "{}: the relay's {} graph updates reached the watcher {} (p50) / {} (p99) after their own timestamp",
            f.scenario,
            lags.count,
            ms(lags.p50),
            ms(lags.p99)
        );
    }
    println!(
        "
What the figures include:
- packet → relay: from the kernel seeing the packet (bpf_ktime_get_ns, made
  unix time with the probe's boot-to-unix offset) to this client reading the
  flow from GetFlows(follow). The probe's reader wakes when 1/8 of the ring
  is waiting, else looks every 50 ms (most of the figure at these rates);
  the shipper sends as soon as the reader hands it flows (one batch in
  flight; 200 ms is only its idle heartbeat); the relay forwards a batch to
  followers as it ingests it. A long flow reports its counters at most once
  per flush interval (1 s), stamped with the packet that triggered the flush
  (on the coarse clock, up to a tick early); the packets before it in that
  interval are older than the figure says.
- packet → graph: per flow, from the packet to this client reading the first
  graph update (WatchGraph, workload zoom) after the flow: the above plus the
  wait for the relay's next publication (every 1 s). Server-side records
  whose client end no probe reports are held 2 s more (none in the lab:
  every node has a probe).
- edge freshness: per edge that received newer records, from its newest
  record (edge.last_seen_ns) to this client reading the update: how old the
  freshest news on an edge is when it reaches the screen.
- CPU: utime + stime from /proc/PID/stat over the window; 100% is one core.
  The machine is shared, so other work competes; see the load average."
    );
}
