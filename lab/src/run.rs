//! A running lab: `up` starts a supervisor in the background and returns once
//! the lab runs; the supervisor builds the network, loads the policies,
//! writes the metadata file and the DNS zone, and keeps a relay, one probe
//! per node and one process per pod running until it is told to stop; `down`
//! stops it from any shell and removes whatever is left.
//!
//! Everything a lab owns is recorded under its state directory
//! (`/run/skymap/lab/<name>/`): `state.json` (what runs where), `log` (the
//! supervisor's progress and complaints), `metadata.json`, `zone.json`, the
//! pods' specs and counters, and the policies applied since `up`.
//!
//! The relay and the probes are separate processes (`skymap-relay`,
//! `skymap-probe`), found next to the running binary, so that a test can
//! kill one and watch the supervisor start it again, as Kubernetes would.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

use crate::net::{self, Names};
use crate::parts;
use crate::policy;
use crate::scenario::{self, Plan, Scenario};

/// Where labs keep their state.
pub const STATE_ROOT: &str = "/run/skymap/lab";
/// The nftables table the policies live in, in every node's namespace.
pub const POLICY_TABLE: &str = "skymap_lab";
/// How long `up` waits for the lab to run.
const UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a probe may take to connect to the relay.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long clients get to finish in-flight calls, then servers, at stop.
const DRAIN: Duration = Duration::from_secs(8);
/// The longest one status call to a relay may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// A crashed relay or probe is started again after this.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Why a lab could not be started, stopped or changed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("{0}")]
    Policy(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a lab named {0} is already running; stop it with `skymap lab down {0}` or pick another --name"
    )]
    Running(String),
    #[error("no lab named {0} is running")]
    NotRunning(String),
    #[error("several labs are running ({0}); say which with --name")]
    Ambiguous(String),
    #[error("no lab is running")]
    NoLab,
    #[error(
        "cannot find {program} next to {exe} or on PATH; build it with `cargo build --release` (it is part of this workspace)"
    )]
    Missing { program: String, exe: String },
    #[error("the lab did not start:\n{0}")]
    Failed(String),
    #[error("{0}")]
    Other(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

/// What `state.json` records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub scenario: PathBuf,
    pub phase: Phase,
    /// Why the lab failed, when it did.
    #[serde(default)]
    pub error: String,
    pub supervisor: u32,
    /// Unix seconds.
    pub started: u64,
    pub relay: Part,
    pub probes: Vec<Part>,
    pub pods: Vec<Part>,
    /// "namespace/name" of every policy in force.
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Starting,
    Running,
    Stopping,
    Failed,
}

/// One process of the lab.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Part {
    /// "relay", the node's name, or the pod's "namespace/name".
    pub name: String,
    pub pid: u32,
    /// For the relay, its URL; for a pod, its counters file.
    #[serde(default)]
    pub detail: String,
    /// Times it was started again after it died.
    #[serde(default)]
    pub restarts: u32,
}

/// A lab's directory.
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// Reads a lab's `state.json`.
pub fn read_state(name: &str) -> Result<State, LabError> {
    let path = state_dir(name).join("state.json");
    let text = fs::read_to_string(&path).map_err(|_| LabError::NotRunning(name.to_string()))?;
    serde_json::from_str(&text).map_err(|e| LabError::Other(format!("{}: {e}", path.display())))
}

fn write_state(state: &State) -> Result<(), LabError> {
    let dir = state_dir(&state.name);
    let text = serde_json::to_string_pretty(state).map_err(|e| LabError::Other(e.to_string()))?;
    write_atomically(&dir.join("state.json"), text.as_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, bytes).map_err(io(format!("writing {}", temp.display())))?;
    fs::rename(&temp, path).map_err(io(format!("writing {}", path.display())))
}

/// The labs that have a state directory.
pub fn labs() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The lab a command means: the one named, or the only one there is.
pub fn pick(name: Option<&str>) -> Result<String, LabError> {
    if let Some(name) = name {
        return Ok(name.to_string());
    }
    match labs().as_slice() {
        [] => Err(LabError::NoLab),
        [one] => Ok(one.clone()),
        many => Err(LabError::Ambiguous(many.join(", "))),
    }
}

/// Whether process `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A program of this workspace: next to `exe`, or on PATH.
pub fn find_program(program: &str) -> Result<PathBuf, LabError> {
    let exe = std::env::current_exe().map_err(io("finding this program"))?;
    let mut dirs: Vec<PathBuf> = exe.parent().into_iter().map(Path::to_path_buf).collect();
    // Test binaries live one level down, in target/*/deps.
    if let Some(up) = exe.parent().and_then(Path::parent) {
        dirs.push(up.to_path_buf());
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| LabError::Missing {
            program: program.to_string(),
            exe: exe.display().to_string(),
        })
}

/// Options of `lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub scenario: PathBuf,
    /// The program that implements `lab __run` and `lab __pod` (this one).
    pub program: PathBuf,
}

/// The name a lab gets from its scenario when none is given: lowercase
/// letters and digits, at most 8.
pub fn default_name(scenario: &Scenario) -> String {
    let name: String = scenario
        .name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    if name.is_empty() { "lab".into() } else { name }
}

/// Starts a lab in the background and waits until it runs, passing each
/// progress line to `progress`. A lab of the same name that crashed is
/// cleaned up first; a running one is an error.
pub fn up(options: &UpOptions, progress: &mut dyn FnMut(&str)) -> Result<State, LabError> {
    net::check_root()?;
    // Check everything before anything is created.
    let scenario = Scenario::load(&options.scenario)?;
    Names::new(&options.name)?;
    find_program("skymap-relay")?;
    find_program("skymap-probe")?;
    if let Ok(state) = read_state(&options.name) {
        if alive(state.supervisor) {
            return Err(LabError::Running(options.name.clone()));
        }
        progress(&format!(
            "removing what a crashed lab {} left",
            options.name
        ));
    }
    clean(&options.name);
    let dir = state_dir(&options.name);
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let log = fs::File::create(dir.join("log")).map_err(io("creating the lab's log"))?;
    let scenario_path =
        fs::canonicalize(&options.scenario).map_err(io(options.scenario.display().to_string()))?;
    progress(&format!(
        "lab {}: scenario {} ({} nodes, {} workloads)",
        options.name,
        scenario.name(),
        scenario.nodes().len(),
        scenario.workloads().len()
    ));
    let mut command = Command::new(&options.program);
    command
        .args(["lab", "__run", "--name", &options.name, "--scenario"])
        .arg(&scenario_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("the lab's log"))?)
        .stderr(log);
    // Its own session: the lab outlives this shell's Ctrl-C and hangup.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut supervisor = command
        .spawn()
        .map_err(io("starting the lab's supervisor"))?;

    // Ctrl-C while the lab is being built takes it down again.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    flag_on_stop_signals(&interrupted)?;
    let deadline = Instant::now() + UP_TIMEOUT;
    let mut shown = 0;
    loop {
        shown = show_log(&dir.join("log"), shown, progress);
        if let Ok(state) = read_state(&options.name) {
            match state.phase {
                Phase::Running => return Ok(state),
                Phase::Failed => {
                    let detail = format!("{}\n{}", state.error, log_tails(&dir));
                    // It removes what it built; wait for that.
                    wait_exit(&mut supervisor, DRAIN * 2);
                    clean(&options.name);
                    return Err(LabError::Failed(detail));
                }
                _ => {}
            }
        }
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            progress("interrupted: taking the lab down again");
            signal(supervisor.id(), nix::sys::signal::Signal::SIGTERM);
            wait_exit(&mut supervisor, DRAIN * 2);
            clean(&options.name);
            return Err(LabError::Other("interrupted; the lab was removed".into()));
        }
        if let Ok(Some(status)) = supervisor.try_wait() {
            let tail = log_tails(&dir);
            clean(&options.name);
            return Err(LabError::Failed(format!(
                "the supervisor exited ({status}):\n{tail}"
            )));
        }
        if Instant::now() > deadline {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
            clean(&options.name);
            return Err(LabError::Failed(format!(
                "not running after {}s; see the log above",
                UP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to `timeout` for `child` to exit, then kills it.
fn wait_exit(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The end of the supervisor's log and of its parts' log.
fn log_tails(dir: &Path) -> String {
    let tail = |file: &str| {
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    format!(
        "{}\n-- relay, probes and pods:\n{}",
        tail("log"),
        tail("parts.log")
    )
}

/// Passes the log's lines after the first `from` to `progress`; returns how
/// many there are now.
fn show_log(path: &Path, from: usize, progress: &mut dyn FnMut(&str)) -> usize {
    let Ok(text) = fs::read_to_string(path) else {
        return from;
    };
    // A line still being written waits for its end.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let lines: Vec<&str> = if complete.is_empty() {
        Vec::new()
    } else {
        complete.split('\n').collect()
    };
    for line in lines.iter().skip(from) {
        progress(line);
    }
    lines.len().max(from)
}

/// Stops a lab: asks its supervisor to stop (which drains the workloads and
/// removes the network), then removes whatever is still there. Returns
/// what it had to remove by force.
pub fn down(name: &str) -> Result<Vec<String>, LabError> {
    net::check_root()?;
    let state = read_state(name).ok();
    let exists = state.is_some() || !net::existing(&Names::new(name)?).is_empty();
    if !exists {
        return Err(LabError::NotRunning(name.to_string()));
    }
    if let Some(state) = &state
        && alive(state.supervisor)
    {
        signal(state.supervisor, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + DRAIN * 2 + Duration::from_secs(10);
        while alive(state.supervisor) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(clean(name))
}

/// Kills every process a lab recorded, removes its namespaces and its state
/// directory. Returns what was left and had to go.
fn clean(name: &str) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(state) = read_state(name) {
        let parts = std::iter::once(&state.relay)
            .chain(&state.probes)
            .chain(&state.pods);
        for part in parts.filter(|p| alive(p.pid)) {
            signal(part.pid, nix::sys::signal::Signal::SIGKILL);
            removed.push(format!("process {} ({})", part.pid, part.name));
        }
        if alive(state.supervisor) {
            signal(state.supervisor, nix::sys::signal::Signal::SIGKILL);
        }
    }
    if let Ok(names) = Names::new(name) {
        let namespaces = net::existing(&names);
        removed.extend(namespaces.iter().map(|ns| format!("namespace {ns}")));
        let left = net::teardown(&names);
        removed.extend(
            left.iter()
                .map(|ns| format!("namespace {ns} (could not remove)")),
        );
    }
    let _ = fs::remove_dir_all(state_dir(name));
    removed
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Applies more policies to a running lab: they join (or, by namespace and
/// name, replace) the ones in force, and every node's rules are swapped at
/// once. Returns the names of the policies now in force.
pub fn apply(name: &str, file: &Path) -> Result<Vec<String>, LabError> {
    net::check_root()?;
    let new = scenario::load_policies(file)?;
    let mut state = read_state(name)?;
    if state.phase != Phase::Running {
        return Err(LabError::NotRunning(name.to_string()));
    }
    let scenario = Scenario::load(&state.scenario)?;
    let plan = scenario.plan();
    if let Some(bad) = new.iter().find(|p| {
        !plan
            .namespaces
            .iter()
            .any(|ns| Some(&ns.name) == p.metadata.namespace.as_ref())
    }) {
        return Err(LabError::Policy(format!(
            "{}: policy {} is in namespace {}, which the lab does not have",
            file.display(),
            bad.metadata.name.clone().unwrap_or_default(),
            bad.metadata.namespace.clone().unwrap_or_default()
        )));
    }
    let dir = state_dir(name);
    let mut applied = read_applied(&dir)?;
    for policy in new {
        let key = policy_key(&policy);
        applied.retain(|p| policy_key(p) != key);
        applied.push(policy);
    }
    let in_force = in_force(&scenario, &applied);
    load_policies(&Names::new(name)?, &plan, &in_force)?;
    // The relay re-reads the file, so its explanations follow the policies.
    write_metadata(&dir.join("metadata.json"), name, &plan, &in_force)?;
    let text =
        serde_json::to_string_pretty(&applied).map_err(|e| LabError::Other(e.to_string()))?;
    write_atomically(&dir.join("applied-policies.json"), text.as_bytes())?;
    state.policies = in_force.iter().map(policy_key).collect();
    write_state(&state)?;
    Ok(state.policies)
}

fn write_metadata(
    path: &Path,
    name: &str,
    plan: &Plan,
    policies: &[NetworkPolicy],
) -> Result<(), LabError> {
    let text = serde_json::to_vec_pretty(&parts::metadata(name, plan, policies))
        .map_err(|e| LabError::Other(e.to_string()))?;
    write_atomically(path, &text)
}

fn read_applied(dir: &Path) -> Result<Vec<NetworkPolicy>, LabError> {
    let path = dir.join("applied-policies.json");
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| LabError::Other(format!("{}: {e}", path.display()))),
        Err(_) => Ok(Vec::new()),
    }
}

fn policy_key(policy: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap_or_default(),
        policy.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The scenario's policies, with applied ones replacing same-named ones.
fn in_force(scenario: &Scenario, applied: &[NetworkPolicy]) -> Vec<NetworkPolicy> {
    let mut policies: Vec<NetworkPolicy> = scenario
        .policies()
        .iter()
        .filter(|p| !applied.iter().any(|a| policy_key(a) == policy_key(p)))
        .cloned()
        .collect();
    policies.extend(applied.iter().cloned());
    policies
}

/// Compiles `policies` and loads each node's rules in its namespace.
fn load_policies(names: &Names, plan: &Plan, policies: &[NetworkPolicy]) -> Result<(), LabError> {
    let scripts = policy::compile(&plan.cluster(), policies, POLICY_TABLE)
        .map_err(|e| LabError::Policy(e.to_string()))?;
    for node in &plan.nodes {
        let Some(script) = scripts.get(&node.name) else {
            continue;
        };
        let net_node = net::NodeNet {
            name: node.name.clone(),
            index: node.index,
        };
        net::nft(
            &format!("policies on {}", node.name),
            &names.node(&net_node),
            script,
        )?;
    }
    Ok(())
}

// ------------------------------------------------------------ the supervisor

/// One child the supervisor keeps running.
struct Managed {
    part: Part,
    command: Vec<String>,
    child: Option<Child>,
    died_at: Option<Instant>,
    /// Started again when it dies (the relay and probes, not pods).
    restart: bool,
}

impl Managed {
    fn start(&mut self, log: &fs::File) -> Result<(), LabError> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| LabError::Other("empty command".into()))?;
        let child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("the lab's log"))?)
            .stderr(log.try_clone().map_err(io("the lab's log"))?)
            .spawn()
            .map_err(io(format!("starting {}", self.part.name)))?;
        self.part.pid = child.id();
        self.child = Some(child);
        self.died_at = None;
        Ok(())
    }

    /// Whether it is running; reaps it when it is not.
    fn check(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            _ => {
                if self.child.take().is_some() {
                    self.died_at = Some(Instant::now());
                }
                false
            }
        }
    }

    fn stop(&mut self, signal_to_send: nix::sys::signal::Signal) {
        if self.check() {
            signal(self.part.pid, signal_to_send);
        }
    }

    fn wait(&mut self, deadline: Instant) {
        while self.check() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port on the loopback address, for the relay.
fn free_port() -> Result<u16, LabError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port for the relay"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("finding a free port for the relay"))
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// The supervisor (`skymap lab __run`): builds the lab, runs it until
/// SIGTERM or SIGINT, then takes it down. Its stdout is the lab's log.
pub fn supervise(name: &str, scenario_path: &Path, program: &Path) -> Result<(), LabError> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    flag_on_stop_signals(&stop)?;
    let dir = state_dir(name);
    let mut state = State {
        name: name.to_string(),
        scenario: scenario_path.to_path_buf(),
        supervisor: std::process::id(),
        started: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ..State::default()
    };
    write_state(&state)?;
    let result = build_and_run(name, scenario_path, program, &dir, &mut state, &stop);
    if let Err(e) = &result {
        say(&format!("error: {e}"));
        state.phase = Phase::Failed;
        state.error = e.to_string();
        let _ = write_state(&state);
        // `up` reads the error before the state directory goes.
        std::thread::sleep(Duration::from_millis(500));
    }
    say("removing the network");
    net::teardown(&Names::new(name)?);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn build_and_run(
    name: &str,
    scenario_path: &Path,
    program: &Path,
    dir: &Path,
    state: &mut State,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), LabError> {
    use std::sync::atomic::Ordering;
    let names = Names::new(name)?;
    let scenario = Scenario::load(scenario_path)?;
    let plan = scenario.plan();
    // The relay's, probes' and pods' own output; the supervisor's is `log`.
    let log = fs::File::create(dir.join("parts.log")).map_err(io("the parts' log"))?;

    net::build(&names, &parts::net_plan(&plan), &mut |step| say(step))?;
    let policies = in_force(&scenario, &[]);
    say(&format!(
        "policies: {} compiled to nftables on {} nodes",
        policies.len(),
        plan.nodes.len()
    ));
    load_policies(&names, &plan, &policies)?;
    state.policies = policies.iter().map(policy_key).collect();

    let metadata = dir.join("metadata.json");
    write_metadata(&metadata, name, &plan, &policies)?;
    let zone_file = dir.join("zone.json");
    let zone = parts::zone(&plan).map_err(|e| LabError::Other(e.to_string()))?;
    let zone_text = serde_json::to_vec_pretty(&zone).map_err(|e| LabError::Other(e.to_string()))?;
    write_atomically(&zone_file, &zone_text)?;

    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let relay_program = find_program("skymap-relay")?;
    let mut relay = Managed {
        part: Part {
            name: "relay".into(),
            detail: url.clone(),
            ..Part::default()
        },
        command: vec![
            relay_program.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metadata".into(),
            metadata.display().to_string(),
        ],
        child: None,
        died_at: None,
        restart: true,
    };
    say(&format!("relay: {url}"));
    relay.start(&log)?;
    wait_for_port(port, Duration::from_secs(10))?;

    let probe_program = find_program("skymap-probe")?;
    let mut probes: Vec<Managed> = plan
        .nodes
        .iter()
        .map(|node| {
            let net_node = net::NodeNet {
                name: node.name.clone(),
                index: node.index,
            };
            Managed {
                part: Part {
                    name: node.name.clone(),
                    ..Part::default()
                },
                command: vec![
                    probe_program.display().to_string(),
                    "--relay".into(),
                    url.clone(),
                    "--node".into(),
                    node.name.clone(),
                    "--netns".into(),
                    Names::path(&names.node(&net_node)).display().to_string(),
                    "--iface".into(),
                    // The pods' veths, named so that the probe takes them
                    // for host-side ends (see `Names::pod_link`).
                    "veth*".into(),
                    "--pod-netns".into(),
                    names.pods_glob(&net_node),
                ],
                child: None,
                died_at: None,
                restart: true,
            }
        })
        .collect();
    say(&format!("probes: one per node, {}", probes.len()));
    for probe in &mut probes {
        probe.start(&log)?;
    }
    wait_for_nodes(port, plan.nodes.len(), stop)?;

    // Clients wait for this file, made once every pod listens.
    let start_gate = dir.join("pods").join("go");
    fs::create_dir_all(dir.join("pods")).map_err(io("creating the pods' directory"))?;
    let mut pods = Vec::new();
    for (index, pod) in plan.pods.iter().enumerate() {
        let Some(spec) = parts::pod_spec(&scenario, &plan, index, &zone_file, &start_gate) else {
            continue;
        };
        let spec_file = dir.join("pods").join(format!("{index}.json"));
        let counters = dir.join("pods").join(format!("{index}.counters.json"));
        let text = serde_json::to_vec_pretty(&spec).map_err(|e| LabError::Other(e.to_string()))?;
        write_atomically(&spec_file, &text)?;
        let node = plan
            .nodes
            .iter()
            .find(|n| n.name == pod.node)
            .ok_or_else(|| LabError::Other(format!("pod {} has no node", pod.name)))?;
        let net_node = net::NodeNet {
            name: node.name.clone(),
            index: node.index,
        };
        // Stopped in waves: pure clients, then servers that also call, then
        // pure servers, so every call still finds its server.
        let wave = match (spec.client.is_some(), parts::is_client_only(&spec)) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        pods.push((
            wave,
            Managed {
                part: Part {
                    name: parts::pod_key(pod),
                    detail: counters.display().to_string(),
                    ..Part::default()
                },
                command: vec![
                    "ip".into(),
                    "netns".into(),
                    "exec".into(),
                    names.pod(&net_node, index),
                    program.display().to_string(),
                    "lab".into(),
                    "__pod".into(),
                    "--spec".into(),
                    spec_file.display().to_string(),
                    "--counters".into(),
                    counters.display().to_string(),
                ],
                child: None,
                died_at: None,
                restart: false,
            },
        ));
    }
    pods.sort_by_key(|(wave, _)| *wave);
    say(&format!("pods: {}", pods.len()));
    for (_, pod) in &mut pods {
        pod.start(&log)?;
    }
    wait_for_pods(pods.iter_mut().map(|(_, p)| p), stop)?;
    fs::write(&start_gate, b"").map_err(io("starting the clients"))?;

    let record =
        |state: &mut State, relay: &Managed, probes: &[Managed], pods: &[(u8, Managed)]| {
            state.relay = relay.part.clone();
            state.probes = probes.iter().map(|p| p.part.clone()).collect();
            state.pods = pods.iter().map(|(_, p)| p.part.clone()).collect();
        };
    record(state, &relay, &probes, &pods);
    state.phase = Phase::Running;
    write_state(state)?;
    say(&format!(
        "running; open the explorer with: skymap --relay {url}"
    ));

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let mut changed = false;
        for managed in std::iter::once(&mut relay).chain(probes.iter_mut()) {
            if managed.check() || !managed.restart {
                continue;
            }
            if managed
                .died_at
                .is_some_and(|at| at.elapsed() >= RESTART_AFTER)
            {
                say(&format!("{} exited; starting it again", managed.part.name));
                managed.part.restarts += 1;
                managed.start(&log)?;
                changed = true;
            }
        }
        // A re-read state keeps the policies `apply` wrote.
        if changed {
            if let Ok(current) = read_state(name) {
                state.policies = current.policies;
            }
            record(state, &relay, &probes, &pods);
            write_state(state)?;
        }
    }

    say("stopping: clients first, then servers, probes and the relay");
    state.phase = Phase::Stopping;
    if let Ok(current) = read_state(name) {
        state.policies = current.policies;
    }
    let _ = write_state(state);
    use nix::sys::signal::Signal;
    for wave in (0..3).rev() {
        let group: Vec<&mut Managed> = pods
            .iter_mut()
            .filter(|(w, _)| *w == wave)
            .map(|(_, m)| m)
            .collect();
        let deadline = Instant::now() + DRAIN;
        let mut group = group;
        for pod in &mut group {
            pod.stop(Signal::SIGTERM);
        }
        for pod in &mut group {
            pod.wait(deadline);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for probe in &mut probes {
        probe.stop(Signal::SIGINT);
    }
    for probe in &mut probes {
        probe.wait(deadline);
    }
    relay.stop(Signal::SIGTERM);
    relay.wait(Instant::now() + Duration::from_secs(5));
    Ok(())
}

/// Waits until every pod of `group` has written its first counters, which
/// it does once its sockets are bound.
fn wait_for_pods<'a>(
    group: impl Iterator<Item = &'a mut Managed>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for pod in group {
        while !Path::new(&pod.part.detail).exists() {
            if !pod.check() {
                return Err(LabError::Other(format!(
                    "pod {} exited at start (see parts.log)",
                    pod.part.name
                )));
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline {
                return Err(LabError::Other(format!(
                    "pod {} did not start listening within 20s",
                    pod.part.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn wait_for_port(port: u16, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(LabError::Other(format!(
                "the relay did not listen on port {port} within {}s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until the relay lists `count` nodes as connected.
fn wait_for_nodes(
    port: u16,
    count: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), LabError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let connected = runtime
            .block_on(connected_nodes(&format!("http://127.0.0.1:{port}")))
            .map_or(0, |nodes| nodes.len());
        if connected >= count {
            say(&format!("probes: {connected}/{count} nodes connected"));
            return Ok(());
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LabError::Other("stopped while starting".into()));
        }
        if Instant::now() > deadline {
            return Err(LabError::Other(format!(
                "only {connected} of {count} probes connected to the relay within {}s (see their errors above)",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The nodes the relay at `url` lists as connected. Each call to the relay
/// waits at most [`STATUS_TIMEOUT`], so a stuck relay is an error, not a hang.
pub async fn connected_nodes(url: &str) -> Result<Vec<String>, LabError> {
    use skymap_proto::v1::observer_client::ObserverClient;
    use skymap_proto::v1::{NodeState, StatusRequest};
    let unanswered = || LabError::Other(format!("the relay at {url} did not answer"));
    let mut client = tokio::time::timeout(STATUS_TIMEOUT, ObserverClient::connect(url.to_string()))
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| LabError::Other(e.to_string()))?;
    let status = tokio::time::timeout(STATUS_TIMEOUT, client.get_status(StatusRequest {}))
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| LabError::Other(e.to_string()))?
        .into_inner();
    Ok(status
        .nodes
        .into_iter()
        .filter(|n| n.state == NodeState::Connected as i32)
        .map(|n| n.name)
        .collect())
}

/// Sets `flag` when SIGTERM or SIGINT arrives. Handlers rather than a
/// blocked signal mask, which the lab's children would inherit.
fn flag_on_stop_signals(
    flag: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), LabError> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the signal thread"))?;
    // Registered here, before anything is built, so no signal is missed.
    let (mut term, mut int) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(io("installing signal handlers"))?;
    let flag = flag.clone();
    std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .map_err(io("starting the signal thread"))?;
    Ok(())
}

/// The counters of every pod, read from their files: (pod, snapshot).
pub fn counters(state: &State) -> BTreeMap<String, crate::workload::CounterSnapshot> {
    state
        .pods
        .iter()
        .filter_map(|pod| {
            let snapshot = crate::workload::read_snapshot(Path::new(&pod.detail)).ok()?;
            Some((pod.name.clone(), snapshot))
        })
        .collect()
}
