//! Kubernetes metadata: which pod, service or node an IP address belongs to.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// What kind of object owns an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    Pod,
    /// A service's ClusterIP (traffic observed before DNAT).
    Service,
    /// A Kubernetes node's own address.
    Host,
}

/// The workload that owns a pod (Deployment, StatefulSet, DaemonSet, Job, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadRef {
    pub name: String,
    pub kind: String,
}

/// Everything the relay knows about one address, shared by every flow that
/// refers to it. A metadata reload makes new values; flows keep the ones that
/// were current when they were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub kind: EndpointKind,
    /// Empty for hosts.
    pub namespace: String,
    /// Pod name, service name or node name.
    pub name: String,
    /// "key=value", sorted.
    pub labels: Vec<String>,
    /// For pods.
    pub workload: Option<WorkloadRef>,
    /// For pods (where they run) and hosts (themselves).
    pub node_name: String,
    /// For pods: names of the services in the pod's namespace that select it, sorted.
    pub services: Vec<String>,
}

/// A consistent picture of the cluster's addresses.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    endpoints: HashMap<IpAddr, Arc<EndpointInfo>>,
    /// Namespace name → its labels ("key=value", sorted).
    namespaces: HashMap<String, Vec<String>>,
}

impl Metadata {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn lookup(&self, ip: &IpAddr) -> Option<&Arc<EndpointInfo>> {
        self.endpoints.get(ip)
    }

    pub fn insert(&mut self, ip: IpAddr, info: EndpointInfo) {
        self.endpoints.insert(ip, Arc::new(info));
    }

    pub fn set_namespace(&mut self, name: String, labels: Vec<String>) {
        self.namespaces.insert(name, labels);
    }

    pub fn namespace_labels(&self, name: &str) -> Option<&[String]> {
        self.namespaces.get(name).map(Vec::as_slice)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}
