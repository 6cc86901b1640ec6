//! "Why was this dropped?": a dropped flow judged against the NetworkPolicies
//! the relay knows (from the metadata file or the API server), or else the
//! meaning of its kernel drop reason.
//!
//! Also names the responsible policies on dropped flows at ingest
//! (`Flow.policy_reason`), with a small cache per metadata version, so a drop
//! storm costs one evaluation per distinct (source, destination, port).

use std::net::{IpAddr, Ipv4Addr};

use rustc_hash::FxHashMap;
use skymap_policy::explain::explain;
use skymap_policy::reasons::reason_help;
use skymap_policy::{FlowQuery, Protocol, SideDecision, evaluate};
use skymap_proto::v1::{Explanation, Flow, Verdict};

use crate::metadata::Metadata;

/// `Explanation.kind` values.
pub const KIND_POLICY: &str = "policy";
pub const KIND_REASON: &str = "reason";
pub const KIND_NOT_DROPPED: &str = "not-dropped";

/// Explains `flow` with the cluster as `metadata` sees it.
pub fn explain_flow(metadata: &Metadata, flow: &Flow) -> Explanation {
    if flow.verdict != Verdict::Dropped as i32 {
        return Explanation {
            kind: KIND_NOT_DROPPED.to_owned(),
            summary: "this flow was not dropped".to_owned(),
            ..Explanation::default()
        };
    }
    let help = reason_help(&flow.drop_reason);
    let reason = if flow.drop_reason.is_empty() {
        "no reason given".to_owned()
    } else {
        flow.drop_reason.clone()
    };
    let policy_drop = (help.policy || !flow.policy_reason.is_empty())
        .then(|| query_of(flow))
        .flatten()
        .and_then(|query| {
            explain(
                metadata.policy_cluster(),
                metadata.network_policies(),
                &query,
            )
        });
    if let Some(found) = policy_drop {
        let mut details: Vec<String> = found
            .sides
            .iter()
            .skip(1)
            .map(|side| side.summary.clone())
            .collect();
        details.extend(found.sides.iter().flat_map(|side| side.allows.clone()));
        details.extend(found.caveats.iter().map(|c| format!("note: {c}")));
        return Explanation {
            kind: KIND_POLICY.to_owned(),
            summary: found
                .sides
                .first()
                .map(|side| side.summary.clone())
                .unwrap_or_default(),
            details,
            policies: found.policies().map(ToString::to_string).collect(),
            suggested_policy_yaml: found.suggestions_yaml(),
        };
    }
    let mut details = vec![format!("check: {}", help.check)];
    if help.policy {
        details.push(policy_miss(metadata, flow));
    }
    Explanation {
        kind: KIND_REASON.to_owned(),
        summary: format!("{reason}: {}", help.meaning),
        details,
        ..Explanation::default()
    }
}

/// Why a policy-like drop found no policy to blame.
fn policy_miss(metadata: &Metadata, flow: &Flow) -> String {
    if query_of(flow).is_none() {
        "only IPv4 TCP and UDP flows are judged against NetworkPolicies".to_owned()
    } else if metadata.network_policies().is_empty() {
        "the relay knows no NetworkPolicies (give it --kube or a metadata file that lists them)"
            .to_owned()
    } else {
        "no NetworkPolicy the relay knows denies this flow: look for other firewall rules on the node"
            .to_owned()
    }
}

/// The flow as policies see it: IPv4 addresses, TCP or UDP, the destination
/// port.
fn query_of(flow: &Flow) -> Option<FlowQuery> {
    let v4 = |endpoint: Option<&skymap_proto::v1::Endpoint>| -> Option<Ipv4Addr> {
        match skymap_proto::names::ip_from_bytes(&endpoint?.ip)? {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        }
    };
    let src_ip = v4(flow.source.as_ref())?;
    let dst_ip = v4(flow.destination.as_ref())?;
    let l4 = flow.l4.as_ref()?;
    let protocol = match skymap_proto::v1::Protocol::try_from(l4.protocol).ok()? {
        skymap_proto::v1::Protocol::Tcp => Protocol::Tcp,
        skymap_proto::v1::Protocol::Udp => Protocol::Udp,
        _ => return None,
    };
    let dst_port = u16::try_from(flow.destination.as_ref()?.port).ok()?;
    Some(FlowQuery {
        src_ip,
        dst_ip,
        protocol,
        dst_port,
    })
}

/// Names the policies behind policy drops, remembering answers until the
/// metadata changes.
#[derive(Debug, Default)]
pub struct PolicyNamer {
    cache: FxHashMap<FlowQuery, String>,
}

/// Distinct flows remembered before the cache starts over (a port scan must
/// not grow it without bound).
const CACHE_LIMIT: usize = 65_536;

impl PolicyNamer {
    /// Forgets every answer; call when the metadata changes.
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Fills `policy_reason` on a dropped flow whose reason is a policy
    /// verdict and that has none, when known policies deny it.
    pub fn fill(&mut self, metadata: &Metadata, flow: &mut Flow) {
        if flow.verdict != Verdict::Dropped as i32
            || !flow.policy_reason.is_empty()
            || !reason_help(&flow.drop_reason).policy
            || metadata.network_policies().is_empty()
        {
            return;
        }
        let Some(query) = query_of(flow) else { return };
        if let Some(known) = self.cache.get(&query) {
            flow.policy_reason.clone_from(known);
            return;
        }
        let decision = evaluate(
            metadata.policy_cluster(),
            metadata.network_policies(),
            &query,
        );
        let named = [&decision.egress, &decision.ingress]
            .into_iter()
            .filter_map(|side| match side {
                SideDecision::Denied { isolated_by } => Some(isolated_by),
                _ => None,
            })
            .flatten()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        flow.policy_reason.clone_from(&named);
        self.cache.insert(query, named);
    }
}
