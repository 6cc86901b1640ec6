//! The programs lab pods run, each inside its pod's network namespace and
//! each counting exactly what it sent and received, so tests can hold
//! skymap's report against the truth:
//!
//! - [`dns`]: the kube-dns workload, authoritative for `cluster.local`;
//! - [`http`]: an HTTP server with configured latency and error share;
//! - [`client`]: calls services by name at a rate, resolving like glibc;
//! - [`counters`]: the shared counters and their JSON snapshots;
//! - [`pod`]: one pod's whole program, as the hidden CLI subcommand runs it.
//!
//! Everything takes already-bound sockets or plain addresses, so the same
//! code runs on loopback in tests and inside namespaces in the lab.

pub mod client;
pub mod counters;
pub mod dns;
pub mod http;
pub mod pod;
mod rng;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinSet;

pub use client::{Call, ClientPlan, run_client, search_candidates};
pub use counters::{
    ClientCounters, CounterSnapshot, Counters, DnsServerCounters, HttpServerCounters, LatencyStats,
    TargetCounters, read_snapshot, write_snapshot_atomically,
};
pub use dns::{Zone, ZoneRecords, serve_dns};
pub use http::{HttpBehaviour, Latency, LatencySampler, serve_http};
pub use pod::{DnsServerSpec, HttpServerSpec, PodSpec, ZoneSource, run_pod};

/// What can go wrong setting up or running workloads.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding counters as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("workload task ended abnormally: {0}")]
    Task(String),
}

impl WorkloadError {
    /// A JSON error located in a file; serde_json's own " at line L column C"
    /// is dropped from the message since the location leads the error.
    pub(crate) fn parse(path: &Path, error: &serde_json::Error) -> Self {
        let text = error.to_string();
        let message = match text.rsplit_once(" at line ") {
            Some((message, _)) => message.to_owned(),
            None => text,
        };
        WorkloadError::Parse {
            path: path.to_owned(),
            line: error.line(),
            column: error.column(),
            message,
        }
    }
}

/// Durations in JSON as milliseconds (fractions allowed), at most a day.
pub(crate) mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    const MAX_MS: f64 = 86_400_000.0;

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            serializer.serialize_u64(d.as_secs() * 1000 + u64::from(d.subsec_millis()))
        } else {
            serializer.serialize_f64(d.as_secs_f64() * 1000.0)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = f64::deserialize(deserializer)?;
        from_ms(value).map_err(serde::de::Error::custom)
    }

    pub fn from_ms(value: f64) -> Result<Duration, String> {
        if !(0.0..=MAX_MS).contains(&value) {
            return Err(format!("{value} ms is not between 0 and {MAX_MS}"));
        }
        Duration::try_from_secs_f64(value / 1000.0).map_err(|e| format!("{value} ms: {e}"))
    }
}

/// Lets tasks finish for up to `grace`, then cancels the rest and waits
/// until they are gone (their guards count them as aborted).
pub(crate) async fn drain<T: 'static>(tasks: &mut JoinSet<T>, grace: Duration) {
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}
