//! The manifests in `deploy/` as Kubernetes would take them: every document
//! parses as its type (k8s-openapi) and writes back the same, so no field is
//! misspelt (serde would drop it silently); and what they grant and run
//! agrees with the code: the probe's capabilities with its preflight check,
//! the relay's role with what it watches, every container flag with the
//! binary's `--help`, ports and addresses with each other, and the
//! `Kustomization` with the files.
//!
//! The `--help` checks run the binaries next to this test's target directory;
//! `cargo build --workspace` (as CI does) builds them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use skymap_node_probe::preflight;

const NAMESPACE: &str = "skymap";

/// (API group, resource) for everything the relay watches.
const WATCHED: [(&str, &str); 6] = [
    ("", "namespaces"),
    ("", "pods"),
    ("", "services"),
    ("", "nodes"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "networkpolicies"),
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A document of a manifest, read as its type.
#[derive(Debug)]
enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    DaemonSet(Box<DaemonSet>),
}

/// Reads `value` as `T` and writes it back: a field `T` does not know
/// (misspelt, or at the wrong level) is lost on the way, and named here.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Box<T>, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(value, &back, "") {
        Some(difference) => Err(difference),
        None => Ok(Box::new(typed)),
    }
}

fn first_difference(original: &Value, typed: &Value, path: &str) -> Option<String> {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (original, typed) {
        (Value::Object(mine), Value::Object(theirs)) => {
            for (key, value) in mine {
                match theirs.get(key) {
                    // `field: null` is the field left out, for Kubernetes too.
                    None if value.is_null() => {}
                    None => {
                        return Some(format!("{}: no such field in this kind", at(key)));
                    }
                    Some(other) => {
                        if let Some(d) = first_difference(value, other, &at(key)) {
                            return Some(d);
                        }
                    }
                }
            }
            theirs
                .keys()
                .find(|key| !mine.contains_key(*key))
                .map(|key| format!("{}: appeared on the way through the type", at(key)))
        }
        (Value::Array(mine), Value::Array(theirs)) if mine.len() == theirs.len() => mine
            .iter()
            .zip(theirs)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]"))),
        _ if original == typed => None,
        _ => Some(format!("{path}: {original} reads back as {typed}")),
    }
}

fn parse_document(value: &Value) -> Result<Object, String> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    macro_rules! as_kind {
        ($($ty:ident),*) => {
            $(
                if (api_version, kind) == (<$ty as Resource>::API_VERSION, <$ty as Resource>::KIND) {
                    return round_trip::<$ty>(value).map(Object::$ty);
                }
            )*
        };
    }
    as_kind!(
        Namespace,
        ServiceAccount,
        ClusterRole,
        ClusterRoleBinding,
        Deployment,
        Service,
        DaemonSet
    );
    Err(format!(
        "{api_version}/{kind} is not a kind deploy/ should hold"
    ))
}

/// The `*.yaml` files of `deploy/`, as `kubectl apply -f deploy/` takes them.
fn manifest_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        .collect();
    files.sort();
    files
}

/// Every document of every manifest, checked: "FILE#INDEX" → object.
fn load() -> Vec<(String, Object)> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(deploy_dir().join(&file)).expect("readable");
        for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let place = format!("deploy/{file} document {index}");
            let value = match Value::deserialize(document) {
                Ok(Value::Null) => continue,
                Ok(value) => value,
                Err(e) => {
                    problems.push(format!("{place}: {e}"));
                    continue;
                }
            };
            match parse_document(&value) {
                Ok(object) => objects.push((place, object)),
                Err(e) => problems.push(format!("{place}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    objects
}

fn find<'a, T>(
    objects: &'a [(String, Object)],
    pick: impl Fn(&'a Object) -> Option<&'a T>,
) -> Vec<&'a T> {
    objects.iter().filter_map(|(_, o)| pick(o)).collect()
}

fn only<'a, T>(found: Vec<&'a T>, what: &str) -> &'a T {
    assert_eq!(found.len(), 1, "exactly one {what} in deploy/");
    found[0]
}

fn pod_spec_of_deployment(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("relay pod spec")
}

fn pod_spec_of_daemonset(d: &DaemonSet) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("probe pod spec")
}

fn relay(objects: &[(String, Object)]) -> &Deployment {
    only(
        find(objects, |o| match o {
            Object::Deployment(d) => Some(d.as_ref()),
            _ => None,
        }),
        "Deployment",
    )
}

fn probe(objects: &[(String, Object)]) -> &DaemonSet {
    only(
        find(objects, |o| match o {
            Object::DaemonSet(d) => Some(d.as_ref()),
            _ => None,
        }),
        "DaemonSet",
    )
}

fn args(container: &Container) -> &[String] {
    container.args.as_deref().unwrap_or_default()
}

/// The value after `flag` in the container's arguments.
fn arg_value<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
    let args = args(container);
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn port_named(container: &Container, name: &str) -> i32 {
    container
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("container {} has no port named {name}", container.name))
        .container_port
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

#[test]
fn every_document_is_its_kind_with_no_unknown_field() {
    let objects = load();
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|(_, o)| match o {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::DaemonSet(_) => "DaemonSet",
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Deployment",
            "Namespace",
            "Service",
            "ServiceAccount"
        ])
    );
    assert_eq!(
        objects.len(),
        8,
        "namespace, 2 service accounts, role, binding, relay, service, probe"
    );
}

#[test]
fn a_misspelt_field_is_named_with_its_path() {
    let text = std::fs::read_to_string(deploy_dir().join("30-probe.yaml")).expect("probe manifest");
    let mut value: Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let container = value["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .expect("a container");
    let context = container
        .remove("securityContext")
        .expect("securityContext");
    container.insert("securityContxt".to_string(), context);
    let err = parse_document(&value).expect_err("unknown field");
    assert_eq!(
        err,
        "spec.template.spec.containers[0].securityContxt: no such field in this kind"
    );
}

#[test]
fn everything_lives_in_the_skymap_namespace() {
    let objects = load();
    let namespace = only(
        find(&objects, |o| match o {
            Object::Namespace(n) => Some(n.as_ref()),
            _ => None,
        }),
        "Namespace",
    );
    assert_eq!(namespace.metadata.name.as_deref(), Some(NAMESPACE));
    for (place, object) in &objects {
        let meta = match object {
            Object::Namespace(_) | Object::ClusterRole(_) | Object::ClusterRoleBinding(_) => {
                continue;
            }
            Object::ServiceAccount(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::DaemonSet(o) => &o.metadata,
        };
        assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{place}");
    }
}

#[test]
fn the_kustomization_lists_exactly_the_manifests() {
    let text =
        std::fs::read_to_string(deploy_dir().join("Kustomization")).expect("deploy/Kustomization");
    let value: Value = serde_yaml_ng::from_str(&text).expect("yaml");
    assert_eq!(value["kind"], "Kustomization");
    let listed: Vec<String> = value["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_string())
        .collect();
    assert_eq!(listed, manifest_files());
}

#[test]
fn the_probe_gets_exactly_the_capabilities_preflight_requires() {
    let objects = load();
    let spec = pod_spec_of_daemonset(probe(&objects));
    assert_eq!(
        spec.host_network,
        Some(true),
        "the probe sees the node's interfaces"
    );
    assert_ne!(
        spec.host_pid,
        Some(true),
        "the probe needs no host PID namespace"
    );
    let container = &spec.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_ne!(security.privileged, Some(true), "not privileged");
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    let mut added = capabilities.add.clone().unwrap_or_default();
    added.sort();
    let mut required: Vec<String> = preflight::REQUIRED
        .iter()
        .map(|c| c.kubernetes_name().to_string())
        .collect();
    required.sort();
    assert_eq!(added, required);
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
    // Kubernetes grants added capabilities to root only (no ambient set).
    assert_eq!(security.run_as_user, Some(0));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "the probe tolerates every taint, so it runs on every node"
    );
}

#[test]
fn the_relay_runs_unprivileged() {
    let objects = load();
    let spec = pod_spec_of_deployment(relay(&objects));
    let pod = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod.run_as_non_root, Some(true));
    let security = spec.containers[0]
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
    assert_eq!(capabilities.add, None);
    assert_eq!(spec.service_account_name.as_deref(), Some("skymap-relay"));
}

#[test]
fn the_relay_may_only_read_what_it_watches() {
    let objects = load();
    let role = only(
        find(&objects, |o| match o {
            Object::ClusterRole(r) => Some(r.as_ref()),
            _ => None,
        }),
        "ClusterRole",
    );
    let mut granted = BTreeSet::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{rule:?}");
        assert_eq!(rule.resource_names, None, "{rule:?}");
        assert_eq!(rule.non_resource_urls, None, "{rule:?}");
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                granted.insert((group.as_str(), resource.as_str()));
            }
        }
    }
    assert_eq!(granted, BTreeSet::from(WATCHED));

    let binding = only(
        find(&objects, |o| match o {
            Object::ClusterRoleBinding(b) => Some(b.as_ref()),
            _ => None,
        }),
        "ClusterRoleBinding",
    );
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, "skymap-relay");
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    let accounts: BTreeSet<&String> = find(&objects, |o| match o {
        Object::ServiceAccount(a) => a.metadata.name.as_ref(),
        _ => None,
    })
    .into_iter()
    .collect();
    let accounts: Vec<&str> = accounts.into_iter().map(String::as_str).collect();
    assert_eq!(accounts, ["skymap-probe", "skymap-relay"]);
}

#[test]
fn ports_addresses_and_probes_agree() {
    let objects = load();
    let deployment = relay(&objects);
    let relay_spec = pod_spec_of_deployment(deployment);
    let relay_container = &relay_spec.containers[0];
    let grpc = port_named(relay_container, "grpc");
    let metrics = port_named(relay_container, "metrics");
    assert_eq!((grpc, metrics), (4245, 9965));
    let listen = arg_value(relay_container, "--metrics-listen").expect("--metrics-listen");
    assert_eq!(port_of(listen), metrics);
    for probe in [
        &relay_container.readiness_probe,
        &relay_container.liveness_probe,
    ] {
        let probe = probe.as_ref().expect("readiness and liveness probes");
        assert_eq!(probe.grpc.as_ref().map(|g| g.port), Some(grpc));
    }

    let service = only(
        find(&objects, |o| match o {
            Object::Service(s) => Some(s.as_ref()),
            _ => None,
        }),
        "Service",
    );
    assert_eq!(service.metadata.name.as_deref(), Some("skymap-relay"));
    let spec = service.spec.as_ref().expect("service spec");
    let ports: BTreeMap<&str, i32> = spec
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|p| (p.name.as_deref().unwrap_or_default(), p.port))
        .collect();
    assert_eq!(ports, BTreeMap::from([("grpc", 4245), ("metrics", 9965)]));
    let pod_labels = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty());
    for (key, value) in &selector {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "the Service selects the relay's pods"
        );
    }
    assert!(
        service
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| !l.is_empty()),
        "labels for a ServiceMonitor to select"
    );

    let probe_spec = pod_spec_of_daemonset(probe(&objects));
    let probe_container = &probe_spec.containers[0];
    let relay_url = arg_value(probe_container, "--relay").expect("--relay");
    let expected = format!(
        "http://{}.{}.svc:{}",
        service.metadata.name.as_deref().unwrap_or_default(),
        NAMESPACE,
        ports["grpc"]
    );
    assert_eq!(relay_url, expected);
    let probe_metrics = port_named(probe_container, "metrics");
    assert_eq!(probe_metrics, 9966);
    let listen = arg_value(probe_container, "--metrics-listen").expect("--metrics-listen");
    assert_eq!(port_of(listen), probe_metrics);
    assert_eq!(arg_value(probe_container, "--node"), Some("$(NODE_NAME)"));
    let node_name = probe_container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(node_name, Some("spec.nodeName"));
}

/// The binary next to this test's target directory (`target/debug/NAME`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace`); this test reads their --help",
        path.display()
    );
    path
}

fn help_words(name: &str) -> BTreeSet<String> {
    let output = Command::new(binary(name))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{name} --help: {e}"));
    assert!(output.status.success(), "{name} --help failed");
    String::from_utf8_lossy(&output.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_container_flag_exists_in_its_binary() {
    let objects = load();
    let containers = pod_spec_of_deployment(relay(&objects))
        .containers
        .iter()
        .chain(&pod_spec_of_daemonset(probe(&objects)).containers);
    let mut checked = 0;
    for container in containers {
        let image = container.image.as_deref().expect("image");
        let repository = image.split(':').next().unwrap_or_default();
        let name = repository.rsplit('/').next().unwrap_or_default();
        let known = help_words(name);
        let env: BTreeSet<&str> = container
            .env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        for arg in args(container) {
            if arg.starts_with("--") {
                let flag = arg.split('=').next().unwrap_or_default();
                assert!(
                    known.contains(flag),
                    "{name}: {flag} is not in `{name} --help`"
                );
                checked += 1;
            }
            if let Some(var) = arg.strip_prefix("$(").and_then(|a| a.strip_suffix(')')) {
                assert!(
                    env.contains(var),
                    "{name}: $({var}) is not in the container's env"
                );
            }
        }
    }
    assert_eq!(
        checked, 5,
        "relay: --kube --metrics-listen; probe: --relay --node --metrics-listen"
    );
}
