//! One pod's program: the servers and client its spec asks for, run until
//! stop, with the counters written to a file every second and once more,
//! marked complete, after everything has drained.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::MissedTickBehavior;

use super::{
    ClientPlan, CounterSnapshot, Counters, HttpBehaviour, WorkloadError, Zone, ZoneRecords,
    run_client, serve_dns, serve_http, write_snapshot_atomically,
};

/// How often a client waiting for its start file looks for it.
const GATE_POLL: Duration = Duration::from_millis(20);

/// How often the counters file is rewritten (and a zone file re-read).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// What one pod runs; any part may be absent. JSON, e.g.
/// `{"http": {"bind": "10.0.1.5", "port": 8080, "behaviour": {"error_ratio": 0.1}}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    #[serde(default)]
    pub http: Option<HttpServerSpec>,
    #[serde(default)]
    pub dns: Option<DnsServerSpec>,
    #[serde(default)]
    pub client: Option<ClientPlan>,
    /// The client starts once this file exists: the lab creates it when
    /// every pod listens, so no first call finds its server still starting.
    #[serde(default)]
    pub start_clients_after: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerSpec {
    pub bind: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub behaviour: HttpBehaviour,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsServerSpec {
    pub bind: IpAddr,
    #[serde(default = "dns_port")]
    pub port: u16,
    pub zone: ZoneSource,
}

fn dns_port() -> u16 {
    53
}

/// Where the DNS server's zone comes from: `{"inline": {...}}` or
/// `{"file": "/path/zone.json"}`. A file is re-read every second and a
/// changed one replaces the zone (if it parses; otherwise the old zone stays
/// and the error is counted). Write it atomically (temp file + rename).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneSource {
    Inline(ZoneRecords),
    File(PathBuf),
}

impl PodSpec {
    /// Parses a spec; `origin` (a file name) locates any error.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, WorkloadError> {
        let spec: PodSpec =
            serde_json::from_str(text).map_err(|e| WorkloadError::parse(origin, &e))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            context: format!("reading pod spec {}", path.display()),
            source,
        })?;
        Self::from_json(&text, path)
    }

    pub fn validate(&self) -> Result<(), WorkloadError> {
        if let Some(http) = &self.http {
            http.behaviour.validate()?;
        }
        if let Some(client) = &self.client {
            client.validate()?;
        }
        Ok(())
    }
}

/// A zone read from a file, with the text last seen so a change is noticed.
struct ZoneFile {
    path: PathBuf,
    last_text: String,
    zone: Zone,
}

impl ZoneFile {
    async fn reload_if_changed(&mut self, counters: &Counters) {
        // Unreadable for a moment (being replaced by hand): keep the zone.
        let Ok(text) = tokio::fs::read_to_string(&self.path).await else {
            return;
        };
        if text == self.last_text {
            return;
        }
        match ZoneRecords::from_json(&text, &self.path) {
            Ok(records) => {
                self.zone.replace(records);
                counters.dns_server(|c| c.zone_reloads += 1);
            }
            Err(_) => counters.dns_server(|c| c.zone_reload_errors += 1),
        }
        self.last_text = text;
    }
}

/// Runs one pod until `stop` completes. Binds everything first (so a pod
/// that cannot listen fails at once), writes the counters to
/// `counters_path` at start and every second, and at stop: stops the client
/// and lets it drain, then stops the servers and lets them drain (so the
/// pod's own in-flight calls still get answers), then writes the final
/// snapshot with `complete: true` and returns it.
pub async fn run_pod(
    spec: PodSpec,
    counters_path: PathBuf,
    stop: impl Future<Output = ()>,
) -> Result<CounterSnapshot, WorkloadError> {
    spec.validate()?;
    let counters = Counters::new();

    let http = match spec.http {
        Some(http) => {
            let addr = SocketAddr::new(http.bind, http.port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| WorkloadError::Io {
                    context: format!("listening for HTTP on {addr}"),
                    source,
                })?;
            Some((listener, http.behaviour))
        }
        None => None,
    };
    let mut zone_file = None;
    let dns = match spec.dns {
        Some(dns) => {
            let zone = match dns.zone {
                ZoneSource::Inline(records) => Zone::new(records),
                ZoneSource::File(path) => {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| WorkloadError::Io {
                            context: format!("reading zone file {}", path.display()),
                            source,
                        })?;
                    let zone = Zone::new(ZoneRecords::from_json(&text, &path)?);
                    zone_file = Some(ZoneFile {
                        path,
                        last_text: text,
                        zone: zone.clone(),
                    });
                    zone
                }
            };
            let addr = SocketAddr::new(dns.bind, dns.port);
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| WorkloadError::Io {
                    context: format!("binding DNS on {addr}"),
                    source,
                })?;
            Some((socket, zone))
        }
        None => None,
    };
    // The first write also proves the counters path is usable.
    write_snapshot(&counters_path, counters.snapshot()).await?;

    let (client_stop, client_stopped) = watch::channel(false);
    let (server_stop, server_stopped) = watch::channel(false);
    let mut clients = JoinSet::new();
    let mut servers = JoinSet::new();
    if let Some(plan) = spec.client {
        let (counters, gate) = (counters.clone(), spec.start_clients_after);
        clients.spawn(async move {
            if let Some(gate) = gate {
                let mut stop = client_stopped.clone();
                while !gate.exists() {
                    tokio::select! {
                        _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                        () = tokio::time::sleep(GATE_POLL) => {}
                    }
                }
            }
            run_client(plan, counters, stopped(client_stopped)).await
        });
    }
    if let Some((listener, behaviour)) = http {
        let stop = stopped(server_stopped.clone());
        servers.spawn(serve_http(listener, behaviour, counters.clone(), stop));
    }
    if let Some((socket, zone)) = dns {
        let (counters, stop) = (counters.clone(), stopped(server_stopped));
        servers.spawn(async move {
            serve_dns(socket, zone, counters, stop).await;
            Ok(())
        });
    }

    let mut ticker = tokio::time::interval(SNAPSHOT_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker.tick().await; // the first tick is immediate; the start was just written
    let mut failure = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            // Workloads end by themselves only when something went wrong.
            Some(ended) = clients.join_next(), if !clients.is_empty() => {
                failure = task_failure(ended).or(failure);
                break;
            }
            Some(ended) = servers.join_next(), if !servers.is_empty() => {
                failure = task_failure(ended).or(failure);
                break;
            }
            _ = ticker.tick() => {
                if let Some(zone_file) = &mut zone_file {
                    zone_file.reload_if_changed(&counters).await;
                }
                // A failed periodic write is retried a second later; only
                // the final one must succeed.
                let _ = write_snapshot(&counters_path, counters.snapshot()).await;
            }
        }
    }
    client_stop.send_replace(true);
    while let Some(ended) = clients.join_next().await {
        failure = failure.or(task_failure(ended));
    }
    server_stop.send_replace(true);
    while let Some(ended) = servers.join_next().await {
        failure = failure.or(task_failure(ended));
    }
    let mut snapshot = counters.snapshot();
    snapshot.complete = failure.is_none();
    write_snapshot(&counters_path, snapshot.clone()).await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(snapshot),
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn task_failure(ended: Result<Result<(), WorkloadError>, JoinError>) -> Option<WorkloadError> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(join_error) => Some(WorkloadError::Task(join_error.to_string())),
    }
}

async fn write_snapshot(path: &Path, snapshot: CounterSnapshot) -> Result<(), WorkloadError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_snapshot_atomically(&path, &snapshot))
        .await
        .map_err(|e| WorkloadError::Task(e.to_string()))?
}
