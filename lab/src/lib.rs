//! skymap lab: a small but real cluster built from network namespaces, for
//! the live demo and for truth tests that compare what skymap shows with
//! what the workloads themselves counted.
//!
//! - [`scenario`]: the scenario file (namespaces, workloads, services,
//!   policies), parsed and checked before anything is created.
//! - [`policy`]: Kubernetes NetworkPolicies compiled to nftables rules per node.
//! - [`net`]: nodes and pods as network namespaces, routes and service DNAT.
//! - [`parts`]: what each part of a running lab gets from the plan
//!   (network, Kubernetes metadata, DNS zone, pod programs).
//! - [`run`]: a running lab: `up` (a supervisor in the background), `down`,
//!   `apply`, and the state each lab keeps under /run/skymap/lab.
//! - [`workload`]: the programs pods run (DNS server, HTTP servers, clients),
//!   each counting what it sent and received.

pub mod net;
pub mod parts;
pub mod run;
pub mod scenario;
pub mod workload;

/// NetworkPolicy semantics live in their own crate, shared with the relay.
pub use skymap_policy as policy;
