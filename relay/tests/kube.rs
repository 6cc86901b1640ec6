//! The Kubernetes metadata source without a cluster: watcher events fed
//! straight into the reflectors' stores (pod churn, address reuse through the
//! engine, services by EndpointSlice, the policy view, trimming), and the
//! whole source against a mock API server (tower-test) that forbids one kind.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use skymap_policy::{ContainerPort, Labels, Protocol};
use skymap_proto::v1::{
    Endpoint, Flow, FlowBatch, Layer4, ObservationPoint, TcpFlag, Verdict, Zoom,
};
use skymap_relay::engine::{Engine, EngineConfig};
use skymap_relay::kube::{Kind, KindState, KubeStores, KubeWriters, Watched};
use skymap_relay::metadata::{EndpointInfo, Metadata, OWNER_GRACE};
use tokio::sync::watch;

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z, when the tests' replaced pod is deleted.
const T0: i64 = 1_767_225_600 * SECOND;
const T0_TEXT: &str = "2026-01-01T00:00:00Z";

fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("test object parses")
}

/// A running pod with one address, a start time and labels.
fn pod(namespace: &str, name: &str, ip: &str, started: &str, labels: Value) -> Pod {
    object(json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
            "labels": labels, "creationTimestamp": started,
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started},
    }))
}

/// Lists `objects` into a store the way a watcher's first listing does.
fn list<K>(writer: &mut Writer<K>, objects: Vec<K>)
where
    K: kube::Resource<DynamicType = ()> + Watched + Clone,
{
    writer.apply_watcher_event(&Event::Init);
    for object in objects {
        writer.apply_watcher_event(&Event::InitApply(object).modify(K::trim));
    }
    writer.apply_watcher_event(&Event::InitDone);
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn owner_at(md: &Metadata, address: &str, time_ns: i64) -> Option<String> {
    md.lookup_at(&ip(address), time_ns)
        .map(|info| format!("{}/{}", info.namespace, info.name))
}

fn current<'a>(md: &'a Metadata, address: &str) -> Option<&'a EndpointInfo> {
    md.lookup(&ip(address)).map(|info| &**info)
}

/// The cluster of the store-level tests: a client pod, and the pod whose
/// address is reused.
fn churn_stores() -> (KubeStores, KubeWriters) {
    let (stores, mut writers) = KubeStores::new();
    list(
        &mut writers.namespaces,
        vec![object::<Namespace>(json!({"metadata": {"name": "shop"}}))],
    );
    list(
        &mut writers.pods,
        vec![
            pod(
                "shop",
                "client",
                "10.1.0.9",
                "2025-12-31T00:00:00Z",
                json!({"app": "client"}),
            ),
            pod(
                "shop",
                "api-old",
                "10.1.0.5",
                "2025-12-31T23:00:00Z",
                json!({"app": "api"}),
            ),
        ],
    );
    (stores, writers)
}

#[test]
fn a_deleted_pods_address_is_known_for_its_own_time_until_the_grace_ends() {
    let (stores, mut writers) = churn_stores();
    let (before, _) = stores.build(&Metadata::empty(), T0 - 60 * SECOND);
    assert_eq!(
        owner_at(&before, "10.1.0.5", T0 - SECOND).as_deref(),
        Some("shop/api-old")
    );
    assert!(!before.changed_hands(&ip("10.1.0.5")));

    let old = pod(
        "shop",
        "api-old",
        "10.1.0.5",
        "2025-12-31T23:00:00Z",
        json!({"app": "api"}),
    );
    writers.pods.apply_watcher_event(&Event::Delete(old));
    let (after, _) = stores.build(&before, T0);
    assert_eq!(
        current(&after, "10.1.0.5"),
        None,
        "no pod has the address now"
    );
    assert!(after.changed_hands(&ip("10.1.0.5")));
    assert_eq!(
        owner_at(&after, "10.1.0.5", T0 - SECOND).as_deref(),
        Some("shop/api-old")
    );
    // Before it started and after it was deleted, the address was nobody's.
    assert_eq!(owner_at(&after, "10.1.0.5", T0), None);
    assert_eq!(owner_at(&after, "10.1.0.5", T0 - 2 * 3600 * SECOND), None);
    assert_eq!(after.pods(), 1);

    // A rebuild within the grace keeps it; one after forgets it.
    let grace = i64::try_from(OWNER_GRACE.as_nanos()).expect("grace fits");
    let (within, _) = stores.build(&after, T0 + grace - SECOND);
    assert_eq!(within.next_expiry_ns(), Some(T0 + grace));
    assert_eq!(
        owner_at(&within, "10.1.0.5", T0 - SECOND).as_deref(),
        Some("shop/api-old")
    );
    let (later, _) = stores.build(&within, T0 + grace + SECOND);
    assert_eq!(owner_at(&later, "10.1.0.5", T0 - SECOND), None);
    assert!(!later.changed_hands(&ip("10.1.0.5")));
    assert_eq!(later.next_expiry_ns(), None);
}

/// A forwarded TCP request from the client pod to `dst`, seen leaving it.
fn request(dst: &str, time_ns: i64) -> Flow {
    let bytes = |text: &str| match ip(text) {
        IpAddr::V4(v4) => v4.octets().to_vec().into(),
        IpAddr::V6(v6) => v6.octets().to_vec().into(),
    };
    Flow {
        time_ns,
        verdict: Verdict::Forwarded as i32,
        source: Some(Endpoint {
            ip: bytes("10.1.0.9"),
            port: 40_000,
            ..Endpoint::default()
        }),
        destination: Some(Endpoint {
            ip: bytes(dst),
            port: 8080,
            ..Endpoint::default()
        }),
        l4: Some(Layer4 {
            protocol: skymap_proto::v1::Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Ack as u32,
            ..Layer4::default()
        }),
        observation_point: ObservationPoint::FromEndpoint as i32,
        packets: 1,
        bytes: 100,
        ..Flow::default()
    }
}

fn edges(engine: &Engine, zoom: Zoom) -> Vec<(String, u64)> {
    let mut edges: Vec<(String, u64)> = engine
        .graph_snapshot(zoom, &[])
        .edges
        .into_iter()
        .map(|e| (e.id, e.flows))
        .collect();
    edges.sort();
    edges
}

#[test]
fn a_reused_address_belongs_to_the_pod_that_had_it_when_the_flow_was_seen() {
    let (stores, mut writers) = churn_stores();
    let (before, _) = stores.build(&Metadata::empty(), T0 - 60 * SECOND);
    let old = pod(
        "shop",
        "api-old",
        "10.1.0.5",
        "2025-12-31T23:00:00Z",
        json!({"app": "api"}),
    );
    writers.pods.apply_watcher_event(&Event::Delete(old));
    // The new pod got the address 2 s after the old one was deleted; the
    // relay saw the deletion late, 3 s after.
    let new = pod(
        "shop",
        "web-new",
        "10.1.0.5",
        "2026-01-01T00:00:02Z",
        json!({"app": "web"}),
    );
    writers.pods.apply_watcher_event(&Event::Apply(new));
    let (md, _) = stores.build(&before, T0 + 3 * SECOND);
    assert_eq!(
        owner_at(&md, "10.1.0.5", T0 - SECOND).as_deref(),
        Some("shop/api-old")
    );
    assert_eq!(
        owner_at(&md, "10.1.0.5", T0 + 2 * SECOND).as_deref(),
        Some("shop/web-new")
    );
    assert_eq!(
        current(&md, "10.1.0.5").map(|i| i.name.as_str()),
        Some("web-new")
    );

    // Flows of both times arrive after the new pod appeared, interleaved,
    // and twice, so the second round is answered from the engine's caches.
    let mut engine = Engine::new(EngineConfig::default(), Arc::new(md));
    for seq in 1..=2 {
        let flows = vec![
            request("10.1.0.5", T0 - SECOND),
            request("10.1.0.5", T0 + 4 * SECOND),
            request("10.1.0.5", T0 - 2 * SECOND),
        ];
        let batch = FlowBatch {
            node_name: "node-1".into(),
            seq,
            flows,
            ..FlowBatch::default()
        };
        let outcome = engine.ingest_batch(batch, None);
        assert_eq!(outcome.rejected, 0, "{:?}", outcome.errors);
    }
    engine.release_held(i64::MAX);
    assert_eq!(
        edges(&engine, Zoom::Workload),
        [
            (
                "workload:shop/client->workload:shop/api:8080/TCP".to_string(),
                4
            ),
            (
                "workload:shop/client->workload:shop/web:8080/TCP".to_string(),
                2
            ),
        ]
    );
    assert_eq!(
        edges(&engine, Zoom::Pod),
        [
            ("pod:shop/client->pod:shop/api-old:8080/TCP".to_string(), 4),
            ("pod:shop/client->pod:shop/web-new:8080/TCP".to_string(), 2),
        ]
    );
}

/// A service without a selector whose only member is listed in its
/// EndpointSlice, and a pod whose status has no address yet.
#[test]
fn endpoint_slices_make_members_and_lend_addresses() {
    let (stores, mut writers) = KubeStores::new();
    list(
        &mut writers.pods,
        vec![
            pod("shop", "db-0", "10.1.0.7", T0_TEXT, json!({"app": "db"})),
            pod(
                "shop",
                "cache-0",
                "10.1.0.8",
                T0_TEXT,
                json!({"app": "cache"}),
            ),
            object(json!({
                "metadata": {"name": "starting", "namespace": "shop", "labels": {"app": "db"}},
                "status": {"phase": "Pending"},
            })),
        ],
    );
    list(
        &mut writers.services,
        vec![
            object::<Service>(json!({
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "db"}},
            })),
            object(json!({
                "metadata": {"name": "legacy-db", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.0.21"},
            })),
        ],
    );
    let slice = |name: &str, service: &str, endpoints: Value| -> EndpointSlice {
        object(json!({
            "metadata": {
                "name": name, "namespace": "shop",
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
    };
    list(
        &mut writers.endpoint_slices,
        vec![
            slice(
                "legacy-db-x1",
                "legacy-db",
                json!([
                    {"addresses": ["10.1.0.7"], "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "shop"}},
                    // No pod named: matched by address.
                    {"addresses": ["10.1.0.8"]},
                ]),
            ),
            slice(
                "db-y2",
                "db",
                json!([{"addresses": ["10.1.0.30"], "targetRef": {"kind": "Pod", "name": "starting", "namespace": "shop"}}]),
            ),
        ],
    );
    let (md, warnings) = stores.build(&Metadata::empty(), T0);
    assert_eq!(warnings, Vec::<String>::new());
    let services = |address: &str| current(&md, address).map(|i| i.services.clone());
    assert_eq!(
        services("10.1.0.7"),
        Some(vec!["db".into(), "legacy-db".into()])
    );
    assert_eq!(services("10.1.0.8"), Some(vec!["legacy-db".into()]));
    let starting = current(&md, "10.1.0.30").expect("address from the slice");
    assert_eq!(
        (starting.name.as_str(), starting.services.clone()),
        ("starting", vec!["db".to_string()])
    );
    assert_eq!(md.pods(), 3);
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_policy_view_has_nodes_namespaces_pods_and_policies() {
    let (stores, mut writers) = KubeStores::new();
    list(
        &mut writers.namespaces,
        vec![object::<Namespace>(
            json!({"metadata": {"name": "shop", "labels": {"team": "pay"}}}),
        )],
    );
    list(
        &mut writers.nodes,
        vec![object::<Node>(json!({
            "metadata": {"name": "node-1"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "InternalIP", "address": "fd00::2"},
                {"type": "Hostname", "address": "node-1"},
            ]},
        }))],
    );
    let mut api: Pod = object(json!({
        "metadata": {"name": "api-1", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "main", "image": "api:1", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"containerPort": 9000},
                {"name": "sig", "containerPort": 7000, "protocol": "SCTP"},
            ]},
            {"name": "side", "ports": [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]},
        ]},
        "status": {"phase": "Running", "podIPs": [{"ip": "fd00:10::5"}, {"ip": "10.1.0.5"}]},
    }));
    let v6_only = pod("shop", "v6", "fd00:10::6", T0_TEXT, json!({}));
    let host: Pod = object(json!({
        "metadata": {"name": "proxy", "namespace": "shop"},
        "spec": {"hostNetwork": true, "containers": []},
        "status": {"phase": "Running", "podIP": "172.18.0.2"},
    }));
    api.trim();
    list(&mut writers.pods, vec![api, v6_only, host]);
    let policy: NetworkPolicy = object(json!({
        "metadata": {
            "name": "deny-all", "namespace": "shop",
            "annotations": {"note": "x"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }));
    list(&mut writers.network_policies, vec![policy]);

    let (md, _) = stores.build(&Metadata::empty(), T0);
    let cluster = md.policy_cluster();
    assert_eq!(cluster.namespaces.len(), 1);
    assert_eq!(cluster.namespaces[0].name, "shop");
    assert_eq!(cluster.namespaces[0].labels, labels(&[("team", "pay")]));
    assert_eq!(cluster.nodes.len(), 1);
    assert_eq!(cluster.nodes[0].name, "node-1");
    assert_eq!(cluster.nodes[0].addresses, [Ipv4Addr::new(172, 18, 0, 2)]);
    // Only pods with an IPv4 address, host-network ones left out.
    assert_eq!(cluster.pods.len(), 1);
    let api = &cluster.pods[0];
    assert_eq!(
        (api.namespace.as_str(), api.name.as_str()),
        ("shop", "api-1")
    );
    assert_eq!(api.ip, Ipv4Addr::new(10, 1, 0, 5));
    assert_eq!(api.node, "node-1");
    assert_eq!(api.labels, labels(&[("app", "api")]));
    let port = |name: &str, port: u16, protocol: Protocol| ContainerPort {
        name: name.into(),
        port,
        protocol,
    };
    assert_eq!(
        api.ports,
        [
            port("http", 8080, Protocol::Tcp),
            port("dns", 53, Protocol::Udp),
            port("metrics", 9102, Protocol::Tcp),
        ]
    );

    let policies = md.network_policies();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].metadata.name.as_deref(), Some("deny-all"));
    assert_eq!(policies[0].metadata.managed_fields, None);
    assert_eq!(policies[0].metadata.annotations, None);
    let spec = policies[0].spec.as_ref().expect("the spec stays whole");
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
}

#[test]
fn trimming_keeps_only_what_the_relay_reads() {
    let mut pod: Pod = object(json!({
        "metadata": {
            "name": "api-1", "namespace": "shop", "uid": "u1", "labels": {"app": "api"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5d8f", "uid": "r1", "controller": true}],
        },
        "spec": {
            "nodeName": "node-1", "hostNetwork": false, "serviceAccountName": "api",
            "containers": [{"name": "main", "image": "api:1", "env": [{"name": "A", "value": "1"}],
                            "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {
            "phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
            "startTime": T0_TEXT, "hostIP": "172.18.0.2",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }));
    pod.trim();
    let expected: Pod = object(json!({
        "metadata": {
            "name": "api-1", "namespace": "shop", "uid": "u1", "labels": {"app": "api"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5d8f", "uid": "r1", "controller": true}],
        },
        "spec": {
            "nodeName": "node-1", "hostNetwork": false,
            "containers": [{"name": "main", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}], "startTime": T0_TEXT},
    }));
    assert_eq!(pod, expected);

    let mut node: Node = object(json!({
        "metadata": {"name": "node-1", "managedFields": [{"manager": "kubelet"}]},
        "spec": {"podCIDR": "10.1.0.0/24"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
            "images": [{"names": ["registry/big:1"], "sizeBytes": 123456789}],
        },
    }));
    node.trim();
    let expected: Node = object(json!({
        "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]},
    }));
    assert_eq!(node, expected);
}

// --- The whole source against a mock API server ---------------------------

/// The API server's 403 for listing policies at the cluster scope.
const FORBIDDEN: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"networkpolicies.networking.k8s.io is forbidden: User \"system:serviceaccount:skymap:skymap-relay\" cannot list resource \"networkpolicies\" in API group \"networking.k8s.io\" at the cluster scope","reason":"Forbidden","details":{"group":"networking.k8s.io","kind":"networkpolicies"},"code":403}"#;

fn list_json(kind: &str, items: Value) -> Vec<u8> {
    let list = json!({
        "apiVersion": "v1", "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": "100"}, "items": items,
    });
    list.to_string().into_bytes()
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("test response")
}

/// Answers the watchers' list calls; watch calls are left open, as a quiet
/// cluster would. Counts the policy listings on `policy_lists`.
async fn fake_api(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    policy_lists: watch::Sender<usize>,
) {
    let mut open_watches = Vec::new();
    while let Some((request, respond)) = handle.next_request().await {
        let query = request.uri().query().unwrap_or_default();
        if query.contains("watch=true") {
            open_watches.push(respond);
            continue;
        }
        let body = match request.uri().path() {
            "/api/v1/namespaces" => list_json(
                "Namespace",
                json!([{"metadata": {"name": "shop", "labels": {"team": "pay"}}}]),
            ),
            "/api/v1/pods" => list_json(
                "Pod",
                json!([{
                    "metadata": {
                        "name": "api-1", "namespace": "shop", "labels": {"app": "api"},
                        "annotations": {"big": "x".repeat(1000)},
                        "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                    },
                    "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "api:1"}]},
                    "status": {"phase": "Running", "podIP": "10.1.0.5", "startTime": T0_TEXT},
                }]),
            ),
            "/api/v1/services" => list_json(
                "Service",
                json!([{"metadata": {"name": "api", "namespace": "shop"},
                        "spec": {"clusterIP": "10.96.0.5", "selector": {"app": "api"}}}]),
            ),
            "/api/v1/nodes" => list_json(
                "Node",
                json!([{"metadata": {"name": "node-1"},
                        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}}]),
            ),
            "/apis/discovery.k8s.io/v1/endpointslices" => list_json("EndpointSlice", json!([])),
            "/apis/networking.k8s.io/v1/networkpolicies" => {
                respond.send_response(reply(StatusCode::FORBIDDEN, FORBIDDEN.into()));
                policy_lists.send_modify(|n| *n += 1);
                continue;
            }
            other => {
                respond.send_response(reply(StatusCode::NOT_FOUND, format!("no {other}").into()));
                continue;
            }
        };
        respond.send_response(reply(StatusCode::OK, body));
    }
}

/// Log lines, as the relay would print them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_kind_is_reported_once_and_the_others_sync() {
    // The current-thread runtime runs every task on this thread, so they all
    // log here.
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (policy_lists_tx, mut policy_lists) = watch::channel(0);
    tokio::spawn(fake_api(handle, policy_lists_tx));
    let source = skymap_relay::kube::spawn(kube::Client::new(service, "default"));

    let mut status = source.status.clone();
    let status = status
        .wait_for(|s| {
            s.iter()
                .all(|(kind, state)| kind == Kind::NetworkPolicies || *state == KindState::Synced)
                && matches!(s.get(Kind::NetworkPolicies), KindState::Forbidden { .. })
        })
        .await
        .expect("source running")
        .clone();
    assert_eq!(
        *status.get(Kind::NetworkPolicies),
        KindState::Forbidden {
            verb: "list",
            user: Some("system:serviceaccount:skymap:skymap-relay".into()),
        }
    );
    // `skymap status` gets the same, per resource.
    let wire: Vec<(String, String, bool)> = status
        .to_wire()
        .into_iter()
        .map(|k| (k.resource, k.state, k.detail.is_empty()))
        .collect();
    let synced = |resource: &str| (resource.to_string(), "synced".to_string(), true);
    assert_eq!(
        wire,
        [
            synced("namespaces"),
            synced("pods"),
            synced("services"),
            synced("endpointslices.discovery.k8s.io"),
            (
                "networkpolicies.networking.k8s.io".to_string(),
                "forbidden".to_string(),
                false
            ),
            synced("nodes"),
        ]
    );
    assert!(
        status.to_wire()[4]
            .detail
            .contains("grant it in the ClusterRole skymap-relay"),
        "{:?}",
        status.to_wire()
    );
    // The watcher keeps asking (with backoff) ...
    policy_lists
        .wait_for(|n| *n >= 3)
        .await
        .expect("api running");

    let mut metadata = source.metadata.clone();
    let md = metadata
        .wait_for(|md| md.len() == 3 && !md.policy_cluster().namespaces.is_empty())
        .await
        .expect("source running")
        .clone();
    let api = current(&md, "10.1.0.5").expect("the pod");
    assert_eq!(
        (api.name.as_str(), api.services.clone()),
        ("api-1", vec!["api".to_string()])
    );
    assert_eq!(
        current(&md, "10.96.0.5").map(|i| i.name.as_str()),
        Some("api")
    );
    assert_eq!(
        current(&md, "172.18.0.2").map(|i| i.name.as_str()),
        Some("node-1")
    );
    assert!(md.network_policies().is_empty());

    // What the store keeps is trimmed.
    let stored = source.stores.pods.state();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].metadata.managed_fields, None);
    assert_eq!(stored[0].metadata.annotations, None);
    let containers = &stored[0].spec.as_ref().expect("spec").containers;
    assert_eq!(containers[0].image, None);

    // ... but says so once.
    let lines = logs.lines();
    let denials: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("skymap_relay::kube") && l.contains("networkpolicies"))
        .collect();
    assert_eq!(denials.len(), 1, "{lines:#?}");
    assert!(denials[0].contains(" WARN "), "{}", denials[0]);
    assert!(
        denials[0].ends_with(
            "cannot list networkpolicies.networking.k8s.io at the cluster scope: forbidden for \
             system:serviceaccount:skymap:skymap-relay; grant it in the ClusterRole skymap-relay \
             (deploy/10-rbac.yaml) — drops will not be explained"
        ),
        "{}",
        denials[0]
    );
    let synced: Vec<&String> = lines.iter().filter(|l| l.contains("synced")).collect();
    assert_eq!(synced.len(), 5, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("kubernetes: pods synced (1 objects)")),
        "{lines:#?}"
    );
}

#[test]
fn the_relay_refuses_a_missing_context_and_two_metadata_sources() {
    let relay = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_skymap-relay"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("KUBECONFIG", "/nonexistent/skymap/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("NO_COLOR", "1")
            .output()
            .expect("the relay binary runs")
    };
    let out = relay(&["--kube-context", "prod"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kube-context prod: "), "{err}");
    assert!(err.contains("/nonexistent/skymap/kubeconfig"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = relay(&["--kube", "--metadata", "cluster.json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--kube") && err.contains("--metadata"),
        "{err}"
    );
}
