//! The explorer's state: everything the views read, built from what the relay
//! streams. This is the one place where `skymap.v1` messages become domain
//! types (sanitized on the way in), so the views never see wire types or raw
//! network strings. No terminal code lives here.
//!
//! - [`graph`]: the live service graph ([`ServiceGraph`]) and edge health.
//! - [`tree`]: the namespace → workload tree beside the map.
//! - [`flows`]: the bounded log of recent flows for the flows view.
//! - [`drops`]: dropped flows grouped by path and reason.
//! - [`dns`]: DNS queries by name and type, and search-path expansions.

pub mod dns;
pub mod drops;
pub mod flows;
pub mod graph;
pub mod tree;

pub use dns::{DnsRow, DnsSummary, SearchPathGroup};
pub use drops::{DropRow, DropSummary};
pub use flows::FlowLog;
pub use graph::{
    Cpu, Edge, Health, Latency, Node, NodeKind, Rates, ServiceGraph, Zoom, error_ratio, health,
};
pub use tree::{NamespaceFilter, NamespaceTree, TreeRow};

use skymap_proto::names::{ip_from_bytes, sanitize};
use skymap_proto::v1::Endpoint;

/// A short, sanitized name for one end of a flow: `ns/workload`, `ns/pod`,
/// the IP address, the reserved identity (`world`, `host`), or `unknown`.
pub(crate) fn endpoint_label(endpoint: Option<&Endpoint>) -> String {
    let Some(endpoint) = endpoint else {
        return "unknown".to_string();
    };
    let workload = endpoint.workload.as_ref().map_or("", |w| w.name.as_str());
    let name = if workload.is_empty() {
        endpoint.pod_name.as_str()
    } else {
        workload
    };
    if !endpoint.namespace.is_empty() && !name.is_empty() {
        return format!("{}/{}", sanitize(&endpoint.namespace), sanitize(name));
    }
    if let Some(ip) = ip_from_bytes(&endpoint.ip) {
        return ip.to_string();
    }
    if !endpoint.reserved.is_empty() {
        return sanitize(&endpoint.reserved).into_owned();
    }
    "unknown".to_string()
}
