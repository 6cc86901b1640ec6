//! skymap-relay: merges every node's flow stream into a live service graph.
//!
//! - [`metadata`]: IP → pod/service/namespace/labels/workload (by the flow's
//!   time when addresses are reused) and the policy view, from a file in the
//!   shape `kubectl get pods,services,... -A -o json` prints or from [`kube`].
//! - [`kube`]: live metadata from the Kubernetes API (kube-rs reflectors).
//! - [`dedup`]: decides which observation of a flow seen at both ends counts.
//! - [`stats`]: the figures of one edge (counts, drops, statuses, latency, rates).
//! - [`graph`]: the service graph (petgraph) at workload, pod and namespace zoom.
//! - [`history`]: the bounded, compact ring of recent flows.
//! - [`cpu`]: the probes' CPU samples per pod, summed per graph node.
//! - [`engine`]: the synchronous core that ties them together; no I/O, no async,
//!   so `skymap graph --file` and the benchmark use it directly.
//! - [`explain`]: why a flow was dropped (NetworkPolicies or the drop reason).
//! - [`aggregator`]: the one task that owns an [`engine::Engine`] and talks to
//!   ingest and client handlers over channels.
//! - [`server`]: the gRPC services (ingest, observer, health, reflection).
//! - [`metrics`]: the Prometheus page on `--metrics-listen`.
//! - [`tls`]: TLS and mutual TLS on the gRPC port, with certificate reload.

pub mod aggregator;
pub mod cpu;
pub mod dedup;
pub mod engine;
pub mod explain;
pub mod graph;
pub mod history;
pub mod kube;
pub mod metadata;
pub mod metrics;
pub mod server;
pub mod stats;
pub mod tls;
