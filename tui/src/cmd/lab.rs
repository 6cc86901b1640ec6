//! `skymap lab`: a real mini-cluster in network namespaces (root). `up`
//! starts it in the background and returns once it runs, like `kind create
//! cluster`; `status` says where the relay is and how each part is doing;
//! `apply` changes policies while it runs; `down` stops it from any shell.
//! `__run` (the supervisor) and `__pod` (one pod's program) are what `up`
//! starts; they are not for people.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use skymap_lab::run::{self, LabError, Phase, UpOptions};
use skymap_lab::scenario::Scenario;
use skymap_lab::workload::{PodSpec, run_pod};

/// The scenario `lab up` runs when given none: the story of DESIGN.md.
const DEFAULT_SCENARIO: &str = include_str!("../../../lab/scenarios/default.yaml");
/// Where the built-in scenario is written for the supervisor to read.
const DEFAULT_SCENARIO_FILE: &str = "/run/skymap/default-scenario.yaml";

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LabCommand {
    /// Build the lab and start it in the background; returns once it runs.
    Up {
        /// A scenario file (YAML); the built-in story when omitted.
        scenario: Option<PathBuf>,
        /// The lab's name (1-8 lowercase letters and digits); default: from
        /// the scenario's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop the lab and remove everything it created.
    Down {
        /// Which lab (default: the only one running).
        name: Option<String>,
    },
    /// The relay's address and the state of each part.
    Status {
        /// Which lab (default: the only one running).
        name: Option<String>,
        /// Print only the relay's URL (for scripts: `skymap --relay $(skymap lab status --url)`).
        #[arg(long)]
        url: bool,
    },
    /// Apply NetworkPolicies (a YAML file, one or more documents) to the
    /// running lab; same-named ones are replaced.
    Apply {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// The lab's supervisor (started by `up`).
    #[command(name = "__run", hide = true)]
    Run {
        #[arg(long)]
        name: String,
        #[arg(long)]
        scenario: PathBuf,
    },
    /// One pod's program (started by the supervisor inside the pod).
    #[command(name = "__pod", hide = true)]
    Pod {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        counters: PathBuf,
    },
}

pub fn run(args: LabArgs) -> ExitCode {
    let result = match args.command {
        LabCommand::Up { scenario, name } => up(scenario, name),
        LabCommand::Down { name } => down(name),
        LabCommand::Status { name, url } => status(name, url),
        LabCommand::Apply { file, name } => apply(&file, name),
        LabCommand::Run { name, scenario } => std::env::current_exe()
            .map_err(|e| LabError::Other(format!("finding this program: {e}")))
            .and_then(|program| run::supervise(&name, &scenario, &program)),
        LabCommand::Pod { spec, counters } => pod(&spec, counters),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skymap lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(scenario: Option<PathBuf>, name: Option<String>) -> Result<(), LabError> {
    // Before anything is written: a clear word rather than EACCES.
    skymap_lab::net::check_root()?;
    let path = match scenario {
        Some(path) => path,
        None => {
            let path = PathBuf::from(DEFAULT_SCENARIO_FILE);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| LabError::Other(format!("{}: {e}", dir.display())))?;
            }
            std::fs::write(&path, DEFAULT_SCENARIO)
                .map_err(|e| LabError::Other(format!("{}: {e}", path.display())))?;
            path
        }
    };
    let name = match name {
        Some(name) => name,
        None => run::default_name(&Scenario::load(&path)?),
    };
    let program = std::env::current_exe()
        .map_err(|e| LabError::Other(format!("finding this program: {e}")))?;
    let state = run::up(
        &UpOptions {
            name: name.clone(),
            scenario: path,
            program,
        },
        &mut |line| eprintln!("  {line}"),
    )?;
    println!("lab {name} is running: relay {}", state.relay.detail);
    println!(
        "  open the explorer:  skymap --relay {}",
        state.relay.detail
    );
    println!("  change policies:    skymap lab apply lab/scenarios/allow-dns.yaml");
    println!("  stop it:            skymap lab down {name}");
    Ok(())
}

fn down(name: Option<String>) -> Result<(), LabError> {
    let name = run::pick(name.as_deref())?;
    let forced = run::down(&name)?;
    if forced.is_empty() {
        println!("lab {name} is down; nothing is left");
    } else {
        println!("lab {name} is down; removed what its supervisor left:");
        for what in forced {
            println!("  {what}");
        }
    }
    Ok(())
}

fn status(name: Option<String>, url_only: bool) -> Result<(), LabError> {
    let name = run::pick(name.as_deref())?;
    let state = run::read_state(&name)?;
    if url_only {
        println!("{}", state.relay.detail);
        return Ok(());
    }
    let up_for = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(state.started);
    let alive = run::alive;
    let word = |pid: u32| if alive(pid) { "running" } else { "DOWN" };
    let phase = match state.phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
        Phase::Failed => "FAILED",
    };
    println!(
        "lab {name}: {phase} for {} (scenario {})",
        humantime::format_duration(Duration::from_secs(up_for)),
        state.scenario.display()
    );
    if !alive(state.supervisor) {
        println!(
            "  supervisor {} is gone: `skymap lab down {name}` removes what is left",
            state.supervisor
        );
    }
    let connected = connected(&state.relay.detail);
    println!(
        "relay     {}  {} (pid {}, restarts {})",
        state.relay.detail,
        word(state.relay.pid),
        state.relay.pid,
        state.relay.restarts
    );
    for probe in &state.probes {
        let seen = match &connected {
            Some(nodes) if nodes.contains(&probe.name) => "connected",
            Some(_) => "not connected",
            None => "relay unreachable",
        };
        println!(
            "node      {:<10} probe {} (pid {}, restarts {}), {seen}",
            probe.name,
            word(probe.pid),
            probe.pid,
            probe.restarts
        );
    }
    let running = state.pods.iter().filter(|p| alive(p.pid)).count();
    println!("pods      {running}/{} running", state.pods.len());
    for pod in state.pods.iter().filter(|p| !alive(p.pid)) {
        println!("  {} is DOWN", pod.name);
    }
    println!("policies  {}", state.policies.join(", "));
    println!("explorer  skymap --relay {}", state.relay.detail);
    Ok(())
}

/// The nodes the relay at `url` lists as connected; `None` when it does not answer.
fn connected(url: &str) -> Option<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(run::connected_nodes(url)).ok()
}

fn apply(file: &std::path::Path, name: Option<String>) -> Result<(), LabError> {
    let name = run::pick(name.as_deref())?;
    let policies = run::apply(&name, file)?;
    println!(
        "applied {} to lab {name}; in force: {}",
        file.display(),
        policies.join(", ")
    );
    Ok(())
}

fn pod(spec: &std::path::Path, counters: PathBuf) -> Result<(), LabError> {
    let spec = PodSpec::load(spec).map_err(|e| LabError::Other(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| LabError::Other(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| LabError::Other(e.to_string()))?;
        let stop = async move {
            term.recv().await;
        };
        run_pod(spec, counters, stop)
            .await
            .map(|_| ())
            .map_err(|e| LabError::Other(e.to_string()))
    })
}
