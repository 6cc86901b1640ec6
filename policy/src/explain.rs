//! "Why was this dropped?" for NetworkPolicies: which policies isolate the
//! side that dropped a flow, what they allow instead, and the smallest
//! NetworkPolicy that would let the flow through.
//!
//! The text names pods the way people do: `namespace/app` from the pod's
//! identifying label (`app.kubernetes.io/name`, `app` or `k8s-app`), falling
//! back to the pod's name. The suggestion selects the pods on both ends by
//! that label, so it covers every replica, and only adds allowances: it
//! selects only pods that some policy already isolates in that direction,
//! or says which pods it would newly isolate.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{
    Cluster, Direction, FlowQuery, Labels, NAMESPACE_NAME_LABEL, Pod, PolicyRef, SideDecision,
    evaluate, isolation, pod_by_ip, rules, selector_matches,
};

/// Labels that name what a pod is, most specific first; the relay names
/// workloads without an owner by them too.
pub const IDENTITY_LABELS: [&str; 3] = ["app.kubernetes.io/name", "app", "k8s-app"];

/// Why policies drop a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// One entry per side that denies the flow: egress first.
    pub sides: Vec<DeniedSide>,
    /// Policies that would allow the flow when applied next to the current
    /// ones (one per denying side).
    pub suggestions: Vec<NetworkPolicy>,
    /// Things to know before applying the suggestions.
    pub caveats: Vec<String>,
}

/// One side (the source's egress or the destination's ingress) that drops
/// the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedSide {
    pub direction: Direction,
    /// The policies isolating that pod in that direction, none of which
    /// allows the flow.
    pub policies: Vec<PolicyRef>,
    /// "egress of shop/frontend is limited by policy frontend-egress, which
    /// allows only ...; nothing allows UDP/53 to kube-system/kube-dns".
    pub summary: String,
    /// One line per policy: what it allows in that direction.
    pub allows: Vec<String>,
}

impl Explanation {
    /// Every responsible policy, egress side first.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyRef> {
        self.sides.iter().flat_map(|side| side.policies.iter())
    }

    /// The suggestions as one YAML document stream for `kubectl apply -f`,
    /// each with a comment saying what it allows.
    pub fn suggestions_yaml(&self) -> String {
        let mut out = String::new();
        for (i, policy) in self.suggestions.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&policy_yaml(policy));
        }
        out
    }
}

/// A policy as YAML for `kubectl apply -f`.
pub fn policy_yaml(policy: &NetworkPolicy) -> String {
    // k8s-openapi objects always serialize (plain strings, maps and numbers).
    serde_yaml_ng::to_string(policy).unwrap_or_default()
}

/// Explains why policies drop `flow`; `None` when they allow it (the drop,
/// if any, had another cause).
pub fn explain(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    flow: &FlowQuery,
) -> Option<Explanation> {
    let decision = evaluate(cluster, policies, flow);
    if decision.is_allowed() {
        return None;
    }
    let src = pod_by_ip(cluster, flow.src_ip);
    let dst = pod_by_ip(cluster, flow.dst_ip);
    let mut explanation = Explanation {
        sides: Vec::new(),
        suggestions: Vec::new(),
        caveats: Vec::new(),
    };
    let sides = [
        (Direction::Egress, &decision.egress, src, dst, flow.dst_ip),
        (Direction::Ingress, &decision.ingress, dst, src, flow.src_ip),
    ];
    for (direction, side, local, remote, remote_ip) in sides {
        let (SideDecision::Denied { isolated_by }, Some(local)) = (side, local) else {
            continue;
        };
        explanation.sides.push(denied_side(
            policies,
            direction,
            isolated_by,
            local,
            remote,
            remote_ip,
            flow,
        ));
        let (suggestion, caveat) =
            suggest(cluster, policies, direction, local, remote, remote_ip, flow);
        explanation.suggestions.push(suggestion);
        explanation.caveats.extend(caveat);
    }
    let mut fixed = policies.to_vec();
    fixed.extend(explanation.suggestions.iter().cloned());
    if !evaluate(cluster, &fixed, flow).is_allowed() {
        // Cannot happen with the selectors built here; say so rather than
        // hand out a fix that does not fix.
        explanation
            .caveats
            .push("the suggested policies do not allow this flow on their own".to_owned());
    }
    Some(explanation)
}

fn denied_side(
    policies: &[NetworkPolicy],
    direction: Direction,
    isolated_by: &[PolicyRef],
    local: &Pod,
    remote: Option<&Pod>,
    remote_ip: Ipv4Addr,
    flow: &FlowQuery,
) -> DeniedSide {
    let mut allows = Vec::new();
    let mut all_rules = Vec::new();
    for policy_ref in isolated_by {
        let Some(spec) = find_spec(policies, policy_ref) else {
            continue;
        };
        let rules = rule_texts(spec, direction, &local.namespace);
        let text = if rules.is_empty() {
            "nothing (it denies all)".to_owned()
        } else {
            rules.join("; ")
        };
        allows.push(format!(
            "{} allows {direction_word} {text}",
            policy_ref,
            direction_word = to_from(direction)
        ));
        all_rules.extend(rules);
    }
    let names = isolated_by
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let which = match (isolated_by.len(), all_rules.is_empty()) {
        (1, true) => "which allows nothing".to_owned(),
        (_, true) => "which allow nothing".to_owned(),
        (1, false) => format!("which allows only {}", all_rules.join("; ")),
        (_, false) => format!("which together allow only {}", all_rules.join("; ")),
    };
    let plural = if isolated_by.len() == 1 {
        "policy"
    } else {
        "policies"
    };
    let remote_text = match remote {
        Some(pod) => pod_text(pod),
        None => format!("{remote_ip} (no pod)"),
    };
    let summary = format!(
        "{} of {} is limited by {plural} {names}, {which}; nothing allows {}/{} {} {remote_text}",
        direction_name(direction),
        pod_text(local),
        flow.protocol,
        flow.dst_port,
        to_from(direction),
    );
    DeniedSide {
        direction,
        policies: isolated_by.to_vec(),
        summary,
        allows,
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

fn to_from(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "to",
        Direction::Ingress => "from",
    }
}

fn find_spec<'a>(
    policies: &'a [NetworkPolicy],
    wanted: &PolicyRef,
) -> Option<&'a NetworkPolicySpec> {
    policies
        .iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(wanted.namespace.as_str())
                && p.metadata.name.as_deref() == Some(wanted.name.as_str())
        })
        .and_then(|p| p.spec.as_ref())
}

/// "app=catalog on TCP/8080" for each rule of `direction`.
fn rule_texts(spec: &NetworkPolicySpec, direction: Direction, namespace: &str) -> Vec<String> {
    rules(spec, direction)
        .into_iter()
        .map(|(peers, ports)| {
            let peers = match peers.filter(|p| !p.is_empty()) {
                None => "anywhere".to_owned(),
                Some(peers) => peers
                    .iter()
                    .map(|peer| peer_text(peer, namespace))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let ports = match ports.filter(|p| !p.is_empty()) {
                None => "any port".to_owned(),
                Some(ports) => ports.iter().map(port_text).collect::<Vec<_>>().join(", "),
            };
            format!("{peers} on {ports}")
        })
        .collect()
}

fn peer_text(peer: &NetworkPolicyPeer, namespace: &str) -> String {
    if let Some(block) = &peer.ip_block {
        let mut text = block.cidr.clone();
        let except: Vec<&str> = block.except.iter().flatten().map(String::as_str).collect();
        if !except.is_empty() {
            let _ = write!(text, " except {}", except.join(", "));
        }
        return text;
    }
    let pods = peer.pod_selector.as_ref().map(selector_text);
    match &peer.namespace_selector {
        None => match pods.as_deref() {
            Some("") | None => format!("any pod in {namespace}"),
            Some(pods) => pods.to_owned(),
        },
        Some(ns_selector) => {
            let namespaces = match single_namespace(ns_selector) {
                Some(name) => name.to_owned(),
                None => match selector_text(ns_selector).as_str() {
                    "" => "any namespace".to_owned(),
                    text => format!("namespaces {text}"),
                },
            };
            match pods.as_deref() {
                Some("") | None => format!("any pod in {namespaces}"),
                Some(pods) if single_namespace(ns_selector).is_some() => {
                    format!("{namespaces}/{pods}")
                }
                Some(pods) => format!("{pods} in {namespaces}"),
            }
        }
    }
}

/// The namespace a selector picks by its name label alone.
fn single_namespace(selector: &LabelSelector) -> Option<&str> {
    let labels = selector.match_labels.as_ref()?;
    let no_expressions = selector
        .match_expressions
        .as_ref()
        .is_none_or(Vec::is_empty);
    if labels.len() == 1 && no_expressions {
        labels.get(NAMESPACE_NAME_LABEL).map(String::as_str)
    } else {
        None
    }
}

/// "app=web,tier in (a, b)"; empty for a selector that selects everything.
pub fn selector_text(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(", ");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            "DoesNotExist" => format!("!{}", req.key),
            other => format!("{} {other} ({values})", req.key),
        });
    }
    parts.join(",")
}

fn port_text(port: &NetworkPolicyPort) -> String {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match (&port.port, port.end_port) {
        (None, _) => format!("any {protocol} port"),
        (Some(IntOrString::Int(p)), Some(end)) => format!("{protocol}/{p}-{end}"),
        (Some(IntOrString::Int(p)), None) => format!("{protocol}/{p}"),
        (Some(IntOrString::String(name)), _) => format!("{protocol}/{name}"),
    }
}

/// The label that says what a pod is, if it has one.
pub fn identity_label(labels: &Labels) -> Option<(&str, &str)> {
    IDENTITY_LABELS
        .iter()
        .find_map(|key| labels.get_key_value(*key))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// "shop/frontend": the namespace and what the pod is.
pub fn pod_text(pod: &Pod) -> String {
    match identity_label(&pod.labels) {
        Some((_, value)) => format!("{}/{value}", pod.namespace),
        None => format!("{}/{}", pod.namespace, pod.name),
    }
}

/// The smallest policy that allows the flow on `direction`'s side, and a
/// caveat when its selector would isolate pods that are not isolated yet.
fn suggest(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    direction: Direction,
    local: &Pod,
    remote: Option<&Pod>,
    remote_ip: Ipv4Addr,
    flow: &FlowQuery,
) -> (NetworkPolicy, Option<String>) {
    let (pod_selector, caveat) = local_selector(cluster, policies, direction, local);
    let peer = match remote {
        Some(remote) => {
            let pods = LabelSelector {
                match_labels: Some(identity_labels(remote)),
                ..LabelSelector::default()
            };
            NetworkPolicyPeer {
                pod_selector: Some(pods),
                namespace_selector: (remote.namespace != local.namespace).then(|| LabelSelector {
                    match_labels: Some(
                        [(NAMESPACE_NAME_LABEL.to_owned(), remote.namespace.clone())].into(),
                    ),
                    ..LabelSelector::default()
                }),
                ip_block: None,
            }
        }
        None => NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: format!("{remote_ip}/32"),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        },
    };
    let ports = Some(vec![NetworkPolicyPort {
        protocol: Some(flow.protocol.to_string()),
        port: Some(IntOrString::Int(i32::from(flow.dst_port))),
        end_port: None,
    }]);
    let remote_name = match remote {
        Some(pod) => short_name(pod),
        None => remote_ip.to_string().replace('.', "-"),
    };
    let local_name = short_name(local);
    let protocol = flow.protocol.to_string().to_lowercase();
    let (name, spec) = match direction {
        Direction::Egress => (
            format!(
                "{local_name}-egress-to-{remote_name}-{protocol}-{}",
                flow.dst_port
            ),
            NetworkPolicySpec {
                pod_selector: Some(pod_selector),
                policy_types: Some(vec!["Egress".to_owned()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![peer]),
                    ports,
                }]),
                ingress: None,
            },
        ),
        Direction::Ingress => (
            format!(
                "{local_name}-ingress-from-{remote_name}-{protocol}-{}",
                flow.dst_port
            ),
            NetworkPolicySpec {
                pod_selector: Some(pod_selector),
                policy_types: Some(vec!["Ingress".to_owned()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![peer]),
                    ports,
                }]),
                egress: None,
            },
        ),
    };
    let policy = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(dns_name(&name)),
            namespace: Some(local.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    };
    (policy, caveat)
}

/// The pod's identifying label, or all its labels when it has none.
fn identity_labels(pod: &Pod) -> std::collections::BTreeMap<String, String> {
    match identity_label(&pod.labels) {
        Some((k, v)) => [(k.to_owned(), v.to_owned())].into(),
        None => pod.labels.clone(),
    }
}

/// A selector for the local pod that selects only pods already isolated in
/// `direction` (so the suggestion takes nothing away from anyone), trying
/// the identifying label first, then all labels; else the narrowest one,
/// with a caveat naming the pods it would newly isolate.
fn local_selector(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    direction: Direction,
    local: &Pod,
) -> (LabelSelector, Option<String>) {
    let candidates = [identity_labels(local), local.labels.clone()];
    let mut newly_isolated = Vec::new();
    for labels in &candidates {
        let selector = LabelSelector {
            match_labels: Some(labels.clone()),
            ..LabelSelector::default()
        };
        newly_isolated = cluster
            .pods
            .iter()
            .filter(|pod| {
                pod.namespace == local.namespace && selector_matches(&selector, &pod.labels)
            })
            .filter(|pod| isolation(cluster, policies, pod, direction).is_empty())
            .map(|pod| pod.name.clone())
            .collect();
        if newly_isolated.is_empty() {
            return (selector, None);
        }
    }
    let selector = LabelSelector {
        match_labels: Some(local.labels.clone()),
        ..LabelSelector::default()
    };
    let caveat = format!(
        "its podSelector also selects {}, which no policy limits for {} yet: applying it would allow them only this",
        newly_isolated.join(", "),
        direction_name(direction),
    );
    (selector, Some(caveat))
}

/// A short name for a pod in a policy name: what it is, or its pod name.
fn short_name(pod: &Pod) -> String {
    identity_label(&pod.labels).map_or_else(|| pod.name.clone(), |(_, v)| v.to_owned())
}

/// `text` made a valid object name: lowercase alphanumerics and '-', at
/// most 63 characters, starting and ending alphanumeric.
fn dns_name(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for c in mapped.chars() {
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(63);
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("allow-flow");
    }
    out
}
