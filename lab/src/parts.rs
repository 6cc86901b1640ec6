//! What each part of a running lab gets from the scenario's [`Plan`]: the
//! network to build, the Kubernetes metadata file the relay reads, the DNS
//! zone, and every pod's program.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use crate::net::{self, NetPlan, NodeNet, PodNet, ServiceNat};
use crate::policy::Protocol;
use crate::scenario::{Latency, Plan, PodPlan, SUFFIX_ALPHABET, Scenario};
use crate::workload::{
    self, Call, ClientPlan, DnsServerSpec, HttpBehaviour, HttpServerSpec, PodSpec, ZoneRecords,
    ZoneSource,
};

/// The network for `plan`.
pub fn net_plan(plan: &Plan) -> NetPlan {
    let node_of = |name: &str| plan.nodes.iter().position(|n| n.name == name).unwrap_or(0);
    NetPlan {
        nodes: plan
            .nodes
            .iter()
            .map(|n| NodeNet {
                name: n.name.clone(),
                index: n.index,
            })
            .collect(),
        pods: plan
            .pods
            .iter()
            .map(|p| PodNet {
                key: pod_key(p),
                node: node_of(&p.node),
                ip: p.ip,
            })
            .collect(),
        services: plan
            .services
            .iter()
            .flat_map(|s| {
                s.ports.iter().map(|port| ServiceNat {
                    ip: s.cluster_ip,
                    port: port.port,
                    protocol: match port.protocol {
                        Protocol::Tcp => net::Protocol::Tcp,
                        Protocol::Udp => net::Protocol::Udp,
                    },
                    endpoints: port.endpoints.iter().map(|e| (e.ip, e.port)).collect(),
                })
            })
            .collect(),
    }
}

/// "namespace/name".
pub fn pod_key(pod: &PodPlan) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}

/// A stable stand-in for what Kubernetes derives from a pod template: the
/// same text always gives the same `len` characters of the suffix alphabet.
fn stable_suffix(text: &str, len: usize) -> String {
    // FNV-1a: tiny, and stable across Rust versions (std's hasher is not).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..len)
        .map(|_| {
            let c = SUFFIX_ALPHABET[(hash % SUFFIX_ALPHABET.len() as u64) as usize];
            hash /= SUFFIX_ALPHABET.len() as u64;
            if hash == 0 {
                hash = 0x9e37_79b9_7f4a_7c15;
            }
            char::from(c)
        })
        .collect()
}

/// A UUID-shaped UID for a pod, stable for the same lab and pod.
pub fn pod_uid(lab: &str, pod: &PodPlan) -> String {
    let mut hex = String::new();
    for part in 0..4 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ part;
        for byte in format!("{lab}/{}", pod_key(pod)).bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hex.push_str(&format!("{:08x}", hash as u32));
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn labels_json(labels: &BTreeMap<String, String>) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// The Kubernetes objects of the lab, in the shape
/// `kubectl get pods,services,namespaces,nodes,networkpolicies -A -o json`
/// prints, which is what the relay's `--metadata` reads. Pods belong to a
/// Deployment through a ReplicaSet, as they would in a cluster. `policies`
/// are the NetworkPolicies in force, so the relay can explain drops.
pub fn metadata(lab: &str, plan: &Plan, policies: &[NetworkPolicy]) -> Value {
    let mut items = Vec::new();
    for ns in &plan.namespaces {
        let mut labels = ns.labels.clone();
        labels.insert("kubernetes.io/metadata.name".into(), ns.name.clone());
        items.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns.name, "labels": labels_json(&labels)},
        }));
    }
    for node in &plan.nodes {
        let fabric = NodeNet {
            name: node.name.clone(),
            index: node.index,
        }
        .fabric_ip();
        items.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name},
            "status": {"addresses": [
                {"type": "InternalIP", "address": fabric.to_string()},
                {"type": "Hostname", "address": node.name},
            ]},
        }));
    }
    for pod in &plan.pods {
        let hash = stable_suffix(&format!("{}/{}", pod.namespace, pod.workload), 10);
        let mut labels = pod.labels.clone();
        labels.insert("pod-template-hash".into(), hash.clone());
        let ports: Vec<Value> = pod
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": p.protocol.to_string()}))
            .collect();
        items.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod.name, "namespace": pod.namespace, "uid": pod_uid(lab, pod),
                "labels": labels_json(&labels),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": true,
                    "name": format!("{}-{hash}", pod.workload), "uid": stable_suffix(&hash, 8),
                }],
            },
            "spec": {"nodeName": pod.node, "containers": [{"name": pod.workload, "ports": ports}]},
            "status": {"phase": "Running", "podIP": pod.ip.to_string(), "podIPs": [{"ip": pod.ip.to_string()}]},
        }));
    }
    for service in &plan.services {
        let scenario_ports: Vec<Value> = service
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"port": p.port, "protocol": p.protocol.to_string()});
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                port
            })
            .collect();
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service.name, "namespace": service.namespace},
            "spec": {
                "clusterIP": service.cluster_ip.to_string(),
                "clusterIPs": [service.cluster_ip.to_string()],
                "selector": labels_json(&selector_of(plan, service.namespace.as_str(), service.name.as_str())),
                "ports": scenario_ports,
            },
        }));
    }
    // k8s-openapi's serializer adds apiVersion and kind, as kubectl prints.
    items.extend(policies.iter().filter_map(|p| serde_json::to_value(p).ok()));
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// A service's selector, recovered from the pods behind it (the plan keeps
/// endpoints, not selectors): the labels all of them share.
fn selector_of(plan: &Plan, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let Some(service) = plan.service(namespace, name) else {
        return BTreeMap::new();
    };
    let mut pods = service
        .ports
        .iter()
        .flat_map(|p| p.endpoints.iter())
        .filter_map(|e| plan.pods.iter().find(|p| p.ip == e.ip));
    let Some(first) = pods.next() else {
        return BTreeMap::new();
    };
    let mut shared = first.labels.clone();
    for pod in pods {
        shared.retain(|k, v| pod.labels.get(k) == Some(v));
    }
    shared
}

/// The cluster DNS zone: every service's name to its ClusterIP.
pub fn zone(plan: &Plan) -> Result<ZoneRecords, workload::WorkloadError> {
    let mut zone = ZoneRecords::new();
    for service in &plan.services {
        zone.insert_service(&service.name, &service.namespace, vec![service.cluster_ip])?;
    }
    Ok(zone)
}

fn behaviour(serve: &crate::scenario::Serve, seed: u64) -> HttpBehaviour {
    HttpBehaviour {
        latency: match serve.latency {
            Latency::Fixed(d) if d.is_zero() => workload::Latency::None,
            Latency::Fixed(d) => workload::Latency::Fixed(d),
            Latency::Percentiles { p50, p99 } => workload::Latency::LogNormal { p50, p99 },
        },
        error_ratio: serve.errors,
        seed,
        ..HttpBehaviour::default()
    }
}

/// What the pod `index` of the plan runs. The DNS server reads its zone
/// from `zone_file`, so services can change while it runs; a client starts
/// once `start_gate` exists.
pub fn pod_spec(
    scenario: &Scenario,
    plan: &Plan,
    index: usize,
    zone_file: &std::path::Path,
    start_gate: &std::path::Path,
) -> Option<PodSpec> {
    let pod = plan.pods.get(index)?;
    let workload = scenario.workloads().get(pod.workload_index)?;
    let http = workload.serve.as_ref().map(|serve| HttpServerSpec {
        bind: pod.ip.into(),
        port: serve.port,
        behaviour: behaviour(serve, index as u64),
    });
    let dns = workload.dns.then(|| DnsServerSpec {
        bind: pod.ip.into(),
        port: crate::scenario::DNS_PORT,
        zone: ZoneSource::File(zone_file.to_path_buf()),
    });
    let client = match (workload.calls.is_empty(), plan.dns) {
        (false, Some(dns)) => Some(ClientPlan::new(
            &pod.namespace,
            SocketAddr::from((dns, crate::scenario::DNS_PORT)),
            workload
                .calls
                .iter()
                .map(|call| Call {
                    // As an application writes it: short within its namespace.
                    name: if call.to.namespace == pod.namespace {
                        call.to.name.clone()
                    } else {
                        call.to.to_string()
                    },
                    port: call.port,
                    path: call.path.clone(),
                    rate_per_s: call.rate,
                })
                .collect(),
        )),
        _ => None,
    };
    Some(PodSpec {
        http,
        dns,
        client,
        start_clients_after: Some(start_gate.to_path_buf()),
    })
}

/// Whether the pod only calls others (it is stopped first, so servers
/// still answer what it has in flight).
pub fn is_client_only(spec: &PodSpec) -> bool {
    spec.client.is_some() && spec.http.is_none() && spec.dns.is_none()
}
