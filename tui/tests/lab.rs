//! `skymap lab` end to end, as root (CI runs it as root): the real binary
//! builds a lab of network namespaces, and what skymap's relay reports is
//! compared with what the lab's workloads counted themselves.
//!
//! - The story: requests, HTTP statuses, connections, DNS queries and
//!   rcodes exactly as the clients counted them; the frontend's lookups
//!   dropped by the kernel (NETFILTER_DROP), every one of them; latency near
//!   the configured one; both ends of a flow seen, yet counted once.
//! - Why, and the fix: `skymap explain` blames the policy the lab enforces
//!   (shop/frontend-egress); its suggested YAML, applied with `lab apply`,
//!   ends the drops, the lookups are answered and the frontend's calls to
//!   its backends appear; `allow-dns.yaml` then applies on top.
//! - Faults: the relay and a probe killed and started again by the
//!   supervisor; nothing lost or counted twice across the relay's restart.
//! - Mistakes: a second `up`, `down` of no lab, a bad scenario file.
//!
//! `skymap-relay` and `skymap-probe` must sit next to `skymap` in the target
//! directory: `cargo test --workspace` builds them; with `-p skymap-tui`
//! alone, build them first (`cargo build -p skymap-relay -p skymap-node-probe
//! --bins`). The tests take turns, one lab at a time, and every lab is taken
//! down by a guard, also when an assertion fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use skymap_lab::run::{Part, State, read_state};
use skymap_lab::scenario::policies_from_yaml_str;
use skymap_lab::workload::{CounterSnapshot, TargetCounters, read_snapshot};
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    Flow, FlowFilter, GetFlowsRequest, GetGraphRequest, GraphEdge, L7Type, NodeState, Protocol,
    StatusRequest, StatusResponse, Verdict, Zoom, get_flows_response,
};

/// One lab at a time: they share two cores, and a test's timing assumptions
/// (flush intervals, drain times) hold only without a second lab's load.
static TURN: Mutex<()> = Mutex::new(());

/// The frontend's configured median latency (lab/scenarios/default.yaml).
const FRONTEND_P50: Duration = Duration::from_millis(15);
/// Long enough for the probes' last records to reach the relay: long flows
/// are flushed every 1 s and batches shipped every 200 ms.
const SETTLE: Duration = Duration::from_secs(3);

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn skymap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skymap"));
    cmd.env_remove("SKYMAP_RELAY");
    cmd
}

/// Runs `cmd`: (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let output = cmd.output().expect("skymap runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A lab name unique to this test run: `t`, the pid, and a letter per test.
fn lab_name(tag: char) -> String {
    format!("t{}{tag}", std::process::id() % 100_000)
}

fn scenario(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lab/scenarios")
        .join(file)
}

/// Fails clearly when the test cannot run at all.
fn check_prerequisites() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    assert!(
        root,
        "these tests build network namespaces: run them as root"
    );
    let dir = Path::new(env!("CARGO_BIN_EXE_skymap"))
        .parent()
        .expect("the binary is in a directory");
    for program in ["skymap-relay", "skymap-probe"] {
        assert!(
            dir.join(program).is_file(),
            "{program} is not in {}: build it with `cargo build -p skymap-relay -p skymap-node-probe --bins`",
            dir.display()
        );
    }
}

/// The lab's network namespaces that exist now.
fn namespaces(name: &str) -> Vec<String> {
    let prefix = format!("skymap-{name}-");
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// A running lab, taken down (and checked to be gone) on drop.
struct Lab {
    name: String,
}

impl Lab {
    fn up(name: &str) -> Lab {
        check_prerequisites();
        // The guard exists before the result is checked: a lab that half
        // started is removed too.
        let lab = Lab {
            name: name.to_string(),
        };
        let (ok, stdout, stderr) = run(skymap().args(["lab", "up", "--name", name]));
        assert!(ok, "lab up {name} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("lab {name} is running: relay http://127.0.0.1:")),
            "{stdout}"
        );
        lab
    }

    fn state(&self) -> State {
        read_state(&self.name).expect("the running lab has a state.json")
    }

    fn url(&self) -> String {
        self.state().relay.detail
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let (ok, stdout, stderr) = run(skymap().args(["lab", "down", &self.name]));
        let left = namespaces(&self.name);
        if std::thread::panicking() {
            if !left.is_empty() {
                eprintln!("lab {} left namespaces behind: {left:?}", self.name);
            }
            return;
        }
        assert!(ok, "lab down {} failed:\n{stdout}\n{stderr}", self.name);
        assert!(
            left.is_empty(),
            "lab down {} left namespaces: {left:?}",
            self.name
        );
        assert!(
            read_state(&self.name).is_err(),
            "lab down {} left its state directory",
            self.name
        );
    }
}

/// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

/// A stopped process, continued on drop, so that a failing test does not
/// leave a pod frozen for `lab down` to wait on.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal(pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.to_string())
            .status();
    }
}

/// Polls `check` every 50 ms until it returns something, failing with
/// `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what} in vain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `future` to its end, failing the test if that takes over 10 s: a
/// relay that stops answering must not hang the test.
fn block_on<F: Future>(what: &str, future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), future).await })
        .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"))
}

/// The relay's graph at workload zoom.
fn graph(url: &str) -> Vec<GraphEdge> {
    block_on("GetGraph", async {
        let mut client = tokio::time::timeout(
            Duration::from_secs(5),
            ObserverClient::connect(url.to_string()),
        )
        .await
        .expect("the relay answers within 5 s")
        .expect("the relay accepts a connection");
        client
            .get_graph(GetGraphRequest {
                zoom: Zoom::Workload as i32,
                namespaces: Vec::new(),
            })
            .await
            .expect("GetGraph")
            .into_inner()
            .edges
    })
}

/// The relay's status; `None` while it does not answer.
fn relay_status(url: &str) -> Option<StatusResponse> {
    block_on("GetStatus", async {
        let mut client = tokio::time::timeout(
            Duration::from_secs(2),
            ObserverClient::connect(url.to_string()),
        )
        .await
        .ok()?
        .ok()?;
        tokio::time::timeout(Duration::from_secs(2), client.get_status(StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(tonic::Response::into_inner)
    })
}

fn find_edge<'a>(
    edges: &'a [GraphEdge],
    from: &str,
    to: &str,
    port: u32,
    protocol: Protocol,
) -> Option<&'a GraphEdge> {
    edges.iter().find(|e| {
        e.source == format!("workload:{from}")
            && e.destination == format!("workload:{to}")
            && e.port == port
            && e.protocol == protocol as i32
    })
}

fn edge<'a>(
    edges: &'a [GraphEdge],
    from: &str,
    to: &str,
    port: u32,
    protocol: Protocol,
) -> &'a GraphEdge {
    find_edge(edges, from, to, port, protocol).unwrap_or_else(|| {
        let ids: Vec<&str> = edges.iter().map(|e| e.id.as_str()).collect();
        panic!("no edge {from} -> {to} {port}/{protocol:?}; the graph has {ids:#?}")
    })
}

const LOADGEN: &str = "users/loadgen";
const FRONTEND: &str = "shop/frontend";
const KUBE_DNS: &str = "kube-system/kube-dns";

fn to_frontend(edges: &[GraphEdge]) -> Option<&GraphEdge> {
    find_edge(edges, LOADGEN, FRONTEND, 8080, Protocol::Tcp)
}

fn loadgen_dns(edges: &[GraphEdge]) -> Option<&GraphEdge> {
    find_edge(edges, LOADGEN, KUBE_DNS, 53, Protocol::Udp)
}

fn frontend_dns(edges: &[GraphEdge]) -> Option<&GraphEdge> {
    find_edge(edges, FRONTEND, KUBE_DNS, 53, Protocol::Udp)
}

/// HTTP statuses by class, 1xx to 5xx, as an edge counts them.
fn edge_classes(edge: &GraphEdge) -> [u64; 5] {
    edge.http.map_or([0; 5], |h| {
        [
            h.info,
            h.success,
            h.redirect,
            h.client_error,
            h.server_error,
        ]
    })
}

/// HTTP statuses by class, as a client counted them.
fn classes(statuses: &BTreeMap<u16, u64>) -> [u64; 5] {
    let mut out = [0; 5];
    for (code, n) in statuses {
        if let Some(class) = (usize::from(*code) / 100).checked_sub(1).filter(|c| *c < 5) {
            out[class] += n;
        }
    }
    out
}

fn rcodes(edge: &GraphEdge) -> BTreeMap<String, u64> {
    edge.dns_rcodes
        .iter()
        .map(|r| (r.name.clone(), r.count))
        .collect()
}

fn verdicts(edge: &GraphEdge, verdict: Verdict) -> u64 {
    edge.verdicts
        .iter()
        .filter(|v| v.verdict == verdict as i32)
        .map(|v| v.count)
        .sum()
}

fn dropped_packets(edge: Option<&GraphEdge>, reason: &str) -> u64 {
    edge.into_iter()
        .flat_map(|e| &e.drops)
        .filter(|d| d.reason == reason)
        .map(|d| d.packets)
        .sum()
}

/// The pods of a workload ("namespace/name") in the lab's state.
fn pods<'a>(state: &'a State, workload: &str) -> Vec<&'a Part> {
    let prefix = format!("{workload}-");
    state
        .pods
        .iter()
        .filter(|p| p.name.starts_with(&prefix))
        .collect()
}

/// Waits for the snapshot a pod writes once it has stopped and drained.
fn wait_complete(pod: &Part) -> CounterSnapshot {
    wait_for(
        &format!("{} to write its final counters", pod.name),
        Duration::from_secs(15),
        || {
            read_snapshot(Path::new(&pod.detail))
                .ok()
                .filter(|s| s.complete)
        },
    )
}

/// Stops a pod the way the supervisor does (SIGTERM: clients drain first)
/// and returns its final counters.
fn stop_pod(pod: &Part) -> CounterSnapshot {
    signal(pod.pid, "TERM");
    wait_complete(pod)
}

fn target<'a>(snapshot: &'a CounterSnapshot, name: &str) -> &'a TargetCounters {
    snapshot
        .client
        .by_target
        .get(name)
        .unwrap_or_else(|| panic!("the client never called {name}"))
}

#[test]
fn the_story_counts_exactly_what_the_workloads_did() {
    let _turn = turn();
    let lab = Lab::up(&lab_name('a'));
    std::thread::sleep(Duration::from_secs(8));
    let state = lab.state();
    let loadgen = pods(&state, LOADGEN);
    let frontends = pods(&state, FRONTEND);
    assert_eq!((loadgen.len(), frontends.len()), (1, 2), "{:?}", state.pods);

    // Freeze the clients: the loadgen first, so that the frontends still
    // answer what it has in flight, then the frontends (clients of kube-dns).
    let loadgen = stop_pod(loadgen[0]);
    // Both at once: each waits out its lookups in flight (up to the DNS timeout).
    for pod in &frontends {
        signal(pod.pid, "TERM");
    }
    let frontend_counters: Vec<CounterSnapshot> =
        frontends.iter().map(|p| wait_complete(p)).collect();
    let frontend = CounterSnapshot::sum(&frontend_counters);
    std::thread::sleep(SETTLE);
    let edges = graph(&lab.url());

    // loadgen -> frontend. Every call ran to its end (no aborts, timeouts or
    // failures, by the counters' identities), so relay and client must agree
    // exactly.
    let calls = target(&loadgen, "frontend.shop");
    assert_eq!(
        (
            calls.calls_failed,
            calls.calls_aborted,
            calls.requests_aborted,
            calls.responses_timed_out,
            calls.responses_failed,
            calls.request_write_errors,
        ),
        (0, 0, 0, 0, 0, 0),
        "every call of the loadgen completed: {calls:#?}"
    );
    assert_eq!(calls.connections_attempted, calls.connections_established);
    assert!(
        calls.requests_sent >= 30,
        "8 s at 5 calls/s, yet only {} requests",
        calls.requests_sent
    );
    let http = edge(&edges, LOADGEN, FRONTEND, 8080, Protocol::Tcp);
    assert_eq!(http.requests, calls.requests_sent, "requests");
    assert_eq!(
        edge_classes(http),
        classes(&calls.responses_by_status),
        "HTTP statuses by class (1xx..5xx): relay vs {:?}",
        calls.responses_by_status
    );
    assert_eq!(
        http.connections, calls.connections_established,
        "connections"
    );
    // Both ends were observed (each node runs a probe), yet the edge counts
    // only the client's records: every counted record is one seen at the
    // source, and connections are not doubled (checked just above).
    assert!(
        http.seen_at_source > 0 && http.seen_at_destination > 0,
        "seen at source {}, at destination {}",
        http.seen_at_source,
        http.seen_at_destination
    );
    assert_eq!(
        http.flows, http.seen_at_source,
        "only the client's end counts"
    );
    assert_eq!(verdicts(http, Verdict::Dropped), 0);
    // The frontend's latency is log-normal with p50 15 ms. From ~40 samples
    // the median's 3-sigma spread is about x0.7..x1.4; the relay measures
    // request to response at the client's veth, which only adds a little
    // network and scheduling time (more on a busy 2-core machine), so:
    // 0.7x to 2x.
    let p50 = Duration::from_nanos(http.latency.expect("HTTP latency").p50_ns);
    assert!(
        p50 >= FRONTEND_P50.mul_f64(0.7) && p50 <= FRONTEND_P50 * 2,
        "p50 {p50:?} is not within 0.7x..2x of the configured {FRONTEND_P50:?}"
    );

    // The frontend's servers saw exactly what the loadgen sent.
    let served = &frontend.http_server;
    assert_eq!(served.requests_received, calls.requests_sent);
    assert_eq!(served.responses_by_status, calls.responses_by_status);

    // loadgen -> kube-dns: every lookup was answered, so queries and rcodes
    // match exactly; "frontend.shop" has fewer dots than ndots, so each
    // lookup tries frontend.shop.users.svc.cluster.local (NXDOMAIN) before
    // frontend.shop.svc.cluster.local (NOERROR).
    let dns = &loadgen.client.total;
    assert_eq!(
        (
            dns.dns_queries_unanswered,
            dns.dns_query_errors,
            dns.dns_queries_aborted,
            dns.dns_send_errors
        ),
        (0, 0, 0, 0),
        "every lookup of the loadgen was answered: {dns:#?}"
    );
    let lookups = edge(&edges, LOADGEN, KUBE_DNS, 53, Protocol::Udp);
    assert_eq!(lookups.dns_queries, dns.dns_queries_sent, "DNS queries");
    assert_eq!(rcodes(lookups), dns.dns_responses_by_rcode, "rcodes");
    assert_eq!(
        dns.dns_responses_by_rcode.get("NXDOMAIN"),
        dns.dns_responses_by_rcode.get("NOERROR"),
        "one NXDOMAIN then one NOERROR per lookup"
    );
    assert_eq!(verdicts(lookups, Verdict::Dropped), 0);
    assert_eq!(lookups.flows, lookups.seen_at_source);

    // shop/frontend -> kube-dns: the egress policy lets nothing but TCP 8080
    // to catalog and cart out, so every query is dropped by the kernel and
    // none is answered. (The edge carries drop reasons only: the relay does
    // not attribute drops to a policy, so shop/frontend-egress is not named.)
    let asked = &frontend.client.total;
    assert!(asked.dns_queries_sent > 0, "the frontends never looked up");
    assert!(
        asked.dns_responses_by_rcode.is_empty(),
        "{:?}",
        asked.dns_responses_by_rcode
    );
    assert_eq!(
        asked.dns_queries_unanswered + asked.dns_queries_aborted,
        asked.dns_queries_sent
    );
    let denied = edge(&edges, FRONTEND, KUBE_DNS, 53, Protocol::Udp);
    assert_eq!(denied.dns_queries, asked.dns_queries_sent, "DNS queries");
    assert_eq!(verdicts(denied, Verdict::Dropped), asked.dns_queries_sent);
    let reasons: Vec<(&str, u64)> = denied
        .drops
        .iter()
        .map(|d| (d.reason.as_str(), d.packets))
        .collect();
    assert_eq!(reasons, [("NETFILTER_DROP", asked.dns_queries_sent)]);
    assert!(denied.dns_rcodes.is_empty(), "{:?}", denied.dns_rcodes);
    assert_eq!(denied.seen_at_destination, 0, "nothing reached kube-dns");
    // Nor did kube-dns receive them: it got the loadgen's queries, no more.
    let kube_dns: Vec<CounterSnapshot> = pods(&state, KUBE_DNS)
        .iter()
        .map(|p| read_snapshot(Path::new(&p.detail)).expect("kube-dns counters"))
        .collect();
    let received: u64 = kube_dns.iter().map(|s| s.dns_server.queries_received).sum();
    assert_eq!(received, dns.dns_queries_sent);
    // Without an address the frontend never called its backends.
    assert_eq!(asked.connections_attempted, 0);
    assert!(find_edge(&edges, FRONTEND, "shop/catalog", 8080, Protocol::Tcp).is_none());
}

#[test]
fn explain_blames_the_policy_and_its_fix_ends_the_drops() {
    let _turn = turn();
    let name = lab_name('b');
    let lab = Lab::up(&name);

    // A second lab of the same name is refused, and this one goes on.
    let (ok, _, stderr) = run(skymap().args(["lab", "up", "--name", &name]));
    assert!(!ok, "a second `lab up --name {name}` succeeded");
    assert!(stderr.contains("already running"), "{stderr}");
    let url = lab.url();
    std::thread::sleep(Duration::from_secs(8));

    // The story on screen before the fix.
    let snapshot = |select: Option<&str>| {
        let mut cmd = skymap();
        cmd.args([
            "snapshot", "--relay", &url, "--width", "160", "--height", "48",
        ]);
        if let Some(select) = select {
            cmd.args(["--select", select]);
        }
        let (ok, stdout, stderr) = run(&mut cmd);
        assert!(ok, "snapshot failed: {stderr}");
        stdout
    };
    let map = snapshot(None);
    assert!(map.contains("DROPPED 53/UDP"), "{map}");
    let box_details = snapshot(Some("frontend"));
    assert!(
        box_details
            .lines()
            .any(|l| l.contains("kube-dns") && l.contains("DROPPED")),
        "the frontend's calls out name kube-dns DROPPED:\n{box_details}"
    );
    let edge_details = snapshot(Some("frontend->kube-dns"));
    assert!(
        edge_details.contains("NETFILTER_DROP"),
        "the edge's details name the drop reason:\n{edge_details}"
    );

    let drops = || dropped_packets(frontend_dns(&graph(&url)), "NETFILTER_DROP");
    let first = drops();
    std::thread::sleep(Duration::from_secs(2));
    let second = drops();
    assert!(
        first > 0 && second > first,
        "drops grow before the fix: {first}, then {second}"
    );

    // Why? `skymap explain` blames the policy the lab enforces...
    let explain = |output: &str| {
        let (ok, stdout, stderr) = run(skymap().args([
            "explain",
            "--relay",
            &url,
            "--from-pod",
            FRONTEND,
            "--to-namespace",
            "kube-system",
            "-o",
            output,
        ]));
        assert!(ok, "skymap explain -o {output} failed: {stderr}");
        stdout
    };
    let groups: Vec<serde_json::Value> = explain("json")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(!groups.is_empty(), "nothing to explain");
    for group in &groups {
        assert_eq!(
            (&group["kind"], &group["drop_reason"], &group["policies"]),
            (
                &serde_json::json!("policy"),
                &serde_json::json!("NETFILTER_DROP"),
                &serde_json::json!(["shop/frontend-egress"])
            ),
            "{group:#}"
        );
    }
    // ... and suggests the policy that allows the lookups.
    let yaml = explain("yaml");
    let suggested = policies_from_yaml_str(&yaml, "explain.yaml").expect("NetworkPolicies");
    let names: Vec<(Option<&str>, Option<&str>)> = suggested
        .iter()
        .map(|p| (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [(Some("shop"), Some("frontend-egress-to-kube-dns-udp-53"))],
        "{yaml}"
    );
    let dir = std::env::temp_dir().join(format!("skymap-lab-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let fix = dir.join("fix.yaml");
    std::fs::write(&fix, &yaml).expect("the fix is written");
    let (ok, stdout, stderr) = run(skymap()
        .args(["lab", "apply"])
        .arg(&fix)
        .args(["--name", &name]));
    assert!(ok, "lab apply of the suggested fix failed: {stderr}");
    assert!(
        stdout.contains("shop/frontend-egress-to-kube-dns-udp-53"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The rules are in force once `lab apply` returns.
    let fixed_ns = unix_ns();

    // The frontend's lookups are answered...
    let answers = FlowFilter {
        destination_pod: vec![FRONTEND.to_string()],
        protocol: vec!["dns".to_string()],
        ..FlowFilter::default()
    };
    wait_for(
        "NOERROR answers to the frontend after the fix",
        Duration::from_secs(15),
        || {
            let noerror = flows_between(&url, answers.clone(), fixed_ns, 0)
                .iter()
                .filter(|f| is_dns_answer(f, 0))
                .count();
            (noerror > 0).then_some(())
        },
    );
    // ... and none is dropped any more. The relay's history must reach 5 s
    // past the fix (and every probe's last records arrive) before an
    // absence of drops means anything.
    let frontend_dns_flows = FlowFilter {
        source_pod: vec![FRONTEND.to_string()],
        destination_port: vec![53],
        ..FlowFilter::default()
    };
    wait_for(
        "the frontend's lookups of 5 s after the fix",
        Duration::from_secs(15),
        || {
            let later = flows_between(
                &url,
                frontend_dns_flows.clone(),
                fixed_ns + 5_000_000_000,
                0,
            );
            (!later.is_empty()).then_some(())
        },
    );
    std::thread::sleep(SETTLE);
    let late_drops: Vec<String> = flows_between(
        &url,
        FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..frontend_dns_flows
        },
        fixed_ns + 2_000_000_000,
        0,
    )
    .iter()
    .map(|f| {
        format!(
            "{:.3} s after the fix: {}",
            (f.time_ns - fixed_ns) as f64 / 1e9,
            f.drop_reason
        )
    })
    .collect();
    assert!(
        late_drops.is_empty(),
        "the frontend's lookups are still dropped after the suggested fix: {late_drops:?}"
    );

    // The hand-written fix applies on top.
    let file = scenario("allow-dns.yaml");
    let (ok, stdout, stderr) = run(skymap()
        .args(["lab", "apply"])
        .arg(&file)
        .args(["--name", &name]));
    assert!(ok, "lab apply failed: {stderr}");
    assert!(stdout.contains("shop/frontend-allow-dns"), "{stdout}");
    assert!(
        lab.state()
            .policies
            .contains(&"shop/frontend-allow-dns".to_string())
    );

    let edges = graph(&url);
    let fixed = frontend_dns(&edges).expect("the frontend -> kube-dns edge");
    let answered = rcodes(fixed).get("NOERROR").copied().unwrap_or(0);
    assert!(
        answered > 0,
        "no NOERROR after the fix: {:?}",
        fixed.dns_rcodes
    );
    for backend in ["shop/catalog", "shop/cart"] {
        let calls = find_edge(&edges, FRONTEND, backend, 8080, Protocol::Tcp);
        assert!(
            calls.is_some_and(|e| e.requests > 0),
            "frontend -> {backend} has no requests after the fix: {calls:?}"
        );
    }
    let after = dropped_packets(Some(fixed), "NETFILTER_DROP");
    std::thread::sleep(Duration::from_secs(3));
    let later = drops();
    assert_eq!(later, after, "drops stopped growing after the fix");
}

/// What the relay counted on the loadgen's two edges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct LoadgenCounts {
    requests: u64,
    connections: u64,
    classes: [u64; 5],
    dns_queries: u64,
    rcodes: BTreeMap<String, u64>,
}

impl LoadgenCounts {
    fn of(edges: &[GraphEdge]) -> LoadgenCounts {
        let http = to_frontend(edges);
        let dns = loadgen_dns(edges);
        LoadgenCounts {
            requests: http.map_or(0, |e| e.requests),
            connections: http.map_or(0, |e| e.connections),
            classes: http.map_or([0; 5], edge_classes),
            dns_queries: dns.map_or(0, |e| e.dns_queries),
            rcodes: dns.map(rcodes).unwrap_or_default(),
        }
    }

    fn plus(mut self, other: &LoadgenCounts) -> LoadgenCounts {
        self.requests += other.requests;
        self.connections += other.connections;
        for (mine, theirs) in self.classes.iter_mut().zip(other.classes) {
            *mine += theirs;
        }
        self.dns_queries += other.dns_queries;
        for (name, n) in &other.rcodes {
            *self.rcodes.entry(name.clone()).or_default() += n;
        }
        self
    }

    /// The same figures from the loadgen's own counters.
    fn from_client(snapshot: &CounterSnapshot) -> LoadgenCounts {
        let calls = target(snapshot, "frontend.shop");
        let total = &snapshot.client.total;
        LoadgenCounts {
            requests: calls.requests_sent,
            connections: calls.connections_established,
            classes: classes(&calls.responses_by_status),
            dns_queries: total.dns_queries_sent,
            rcodes: total.dns_responses_by_rcode.clone(),
        }
    }
}

fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The loadgen's HTTP requests in the relay's history between two times
/// (Unix ns), as seen at either end.
fn http_requests_between(url: &str, since_ns: i64, until_ns: i64) -> usize {
    let requests = FlowFilter {
        source_workload: vec![LOADGEN.to_string()],
        protocol: vec!["http".to_string()],
        reply: vec![false],
        ..FlowFilter::default()
    };
    flows_between(url, requests, since_ns, until_ns).len()
}

/// A DNS response with this rcode.
fn is_dns_answer(flow: &Flow, rcode: u32) -> bool {
    flow.l7.as_ref().is_some_and(|l7| {
        l7.r#type == L7Type::Response as i32
            && matches!(&l7.record, Some(Record::Dns(dns)) if dns.rcode == rcode)
    })
}

/// The flows in the relay's history that pass `filter`, between two times
/// (Unix ns; 0 is unbounded).
fn flows_between(url: &str, filter: FlowFilter, since_ns: i64, until_ns: i64) -> Vec<Flow> {
    block_on("GetFlows", async {
        let mut client = ObserverClient::connect(url.to_string())
            .await
            .expect("the relay accepts a connection");
        let request = GetFlowsRequest {
            number: u64::MAX,
            since_ns,
            until_ns,
            whitelist: vec![filter],
            ..GetFlowsRequest::default()
        };
        let mut stream = client
            .get_flows(request)
            .await
            .expect("GetFlows")
            .into_inner();
        let mut flows = Vec::new();
        while let Some(response) = stream.message().await.expect("the flows") {
            if let Some(get_flows_response::Response::Flow(flow)) = response.response {
                flows.push(flow);
            }
        }
        flows
    })
}

/// How many nodes `skymap lab status` lists as connected.
fn connected_in_status(name: &str) -> usize {
    let (_, stdout, _) = run(skymap().args(["lab", "status", name]));
    stdout
        .lines()
        .filter(|l| l.starts_with("node") && l.ends_with(", connected"))
        .count()
}

fn node_state(url: &str, node: &str) -> Option<NodeState> {
    relay_status(url)?
        .nodes
        .into_iter()
        .find(|n| n.name == node)
        .and_then(|n| NodeState::try_from(n.state).ok())
}

/// The relay killed mid-run and a probe killed: the supervisor starts each
/// again, the probes reconnect, and across the relay's restart nothing is
/// lost or counted twice.
///
/// The accounting, exactly: the loadgen is paused (SIGSTOP) and the old
/// relay read once its counts stop moving; the relay is killed, and the
/// loadgen continued while no relay runs, so its first calls exist only in
/// the probes' buffers; the restarted relay starts with an empty graph. At
/// the end (loadgen stopped and drained), what the old relay counted plus
/// what the new one counted must equal what the loadgen counted: requests,
/// connections, statuses, DNS queries and rcodes. The relay reports no
/// losses at any node or stage, so there is nothing else to account for.
#[test]
fn the_supervisor_restarts_a_killed_relay_and_probe_and_nothing_is_lost() {
    let _turn = turn();
    let name = lab_name('c');
    let lab = Lab::up(&name);
    std::thread::sleep(Duration::from_secs(4));
    let state = lab.state();
    let url = state.relay.detail.clone();
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the relay's URL ends with its port");
    let nodes = state.probes.len();
    let loadgen = pods(&state, LOADGEN)[0].clone();

    let paused = Stopped::stop(loadgen.pid);
    // Its last records reach the relay within a flush and a shipping
    // interval; then the counts stand still.
    std::thread::sleep(Duration::from_millis(1500));
    let old = LoadgenCounts::of(&graph(&url));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        LoadgenCounts::of(&graph(&url)),
        old,
        "the paused loadgen's counts still moved"
    );
    assert!(old.requests > 0, "the loadgen made no requests: {old:?}");

    // (a) Kill the relay. Once its port is closed the probes' streams have
    // broken, so what the loadgen does next is buffered, not lost in a
    // stream to a dead relay.
    signal(state.relay.pid, "KILL");
    let killed = Instant::now();
    let killed_ns = unix_ns();
    wait_for(
        "the killed relay's port to close",
        Duration::from_secs(2),
        || {
            TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(paused);

    // The supervisor starts it again after a second, on the same port.
    // Until then the port is closed; the last time it was seen closed
    // bounds what the probes had to keep for the new relay.
    let mut closed_ns = unix_ns();
    wait_for(
        "the supervisor to restart the relay",
        Duration::from_secs(3),
        || {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(());
            }
            closed_ns = unix_ns();
            None
        },
    );
    let restarted = read_state(&name).expect("the lab's state").relay;
    assert_eq!(
        (restarted.restarts, restarted.detail.as_str()),
        (1, url.as_str()),
        "restarted once, on the same address"
    );
    assert_ne!(restarted.pid, state.relay.pid);
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "restarted after {:?}",
        killed.elapsed()
    );
    wait_for(
        "`lab status` to show every node connected again",
        Duration::from_secs(10),
        || (connected_in_status(&name) == nodes).then_some(()),
    );

    // (c) Calls on the new relay, then the loadgen's final word.
    std::thread::sleep(Duration::from_secs(4));
    let client = stop_pod(&loadgen);
    std::thread::sleep(SETTLE);
    let new = LoadgenCounts::of(&graph(&url));
    assert!(new.requests > 0, "the new relay counted no requests");
    // Some of them were made while no relay listened: the probes kept them.
    let buffered = http_requests_between(&url, killed_ns, closed_ns);
    assert!(
        buffered > 0,
        "the new relay has no request the loadgen made while it was down"
    );
    let calls = target(&client, "frontend.shop");
    assert_eq!(
        (
            calls.calls_failed,
            calls.calls_aborted,
            calls.requests_aborted,
            calls.responses_timed_out,
            calls.responses_failed
        ),
        (0, 0, 0, 0, 0),
        "every call completed: {calls:#?}"
    );
    assert_eq!(
        old.clone().plus(&new),
        LoadgenCounts::from_client(&client),
        "old relay {old:?} + new relay {new:?} = the loadgen's own counts"
    );
    let status = relay_status(&url).expect("the relay's status");
    let losses: Vec<String> = status
        .losses
        .iter()
        .filter(|l| l.count > 0)
        .map(|l| format!("{} {} {}", l.node_name, l.stage, l.count))
        .collect();
    assert!(losses.is_empty(), "losses: {losses:?}");

    // (b) Kill one node's probe: the relay shows the node unavailable, then
    // connected again once the supervisor has started the probe again.
    let probe = state.probes[1].clone();
    assert_eq!(
        node_state(&url, &probe.name),
        Some(NodeState::Connected),
        "{} before the kill",
        probe.name
    );
    signal(probe.pid, "KILL");
    wait_for(
        &format!("the relay to show {} unavailable", probe.name),
        Duration::from_secs(3),
        || (node_state(&url, &probe.name) == Some(NodeState::Unavailable)).then_some(()),
    );
    let again = wait_for(
        &format!("the supervisor to restart {}'s probe", probe.name),
        Duration::from_secs(3),
        || {
            let part = read_state(&name).ok()?.probes.get(1)?.clone();
            (part.restarts == 1 && part.pid != probe.pid).then_some(part)
        },
    );
    assert_eq!(again.name, probe.name);
    wait_for(
        &format!("the relay to show {} connected again", probe.name),
        Duration::from_secs(10),
        || (node_state(&url, &probe.name) == Some(NodeState::Connected)).then_some(()),
    );
}

#[test]
fn mistakes_fail_clearly_and_create_nothing() {
    let _turn = turn();
    check_prerequisites();

    let nobody = lab_name('z');
    let (ok, _, stderr) = run(skymap().args(["lab", "down", &nobody]));
    assert!(!ok, "`lab down {nobody}` of no lab succeeded");
    assert!(
        stderr.contains(&format!("no lab named {nobody} is running")),
        "{stderr}"
    );

    let name = lab_name('y');
    let dir = std::env::temp_dir().join(format!("skymap-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    // A wrong type on line 8, and a call to a service that does not exist
    // (line 9): both are found before anything is built.
    let cases = [
        (
            "bad-type.yaml",
            "replicas: many",
            ":8:",
            "workloads[0].replicas",
        ),
        (
            "bad-call.yaml",
            "calls:\n      - to: nowhere\n        port: 8080\n        rate: 5",
            ":9:",
            "workloads[0].calls[0].to",
        ),
    ];
    for (file, tail, line, field) in cases {
        let path = dir.join(file);
        let text = format!(
            "name: bad\nnodes: 2\nnamespaces:\n  - name: shop\nworkloads:\n  - name: web\n    namespace: shop\n    {tail}\n"
        );
        std::fs::write(&path, text).expect("the scenario is written");
        let (ok, stdout, stderr) = run(skymap()
            .args(["lab", "up"])
            .arg(&path)
            .args(["--name", &name]));
        assert!(!ok, "lab up {file} succeeded:\n{stdout}");
        let at = format!("{}{line}", path.display());
        assert!(
            stderr.contains(&at) && stderr.contains(field),
            "the error names {at} and {field}:\n{stderr}"
        );
        assert_eq!(namespaces(&name), Vec::<String>::new(), "{file}");
        assert!(read_state(&name).is_err(), "{file} left a state directory");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
