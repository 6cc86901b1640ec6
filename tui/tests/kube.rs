//! `skymap --context`: finding the relay through a mock API server (tower-test),
//! kubeconfig errors from real files, the local forwarding loop against a real
//! in-process relay, and the binary's one-line errors.
//!
//! The WebSocket port-forward itself needs a real API server and kubelet, so
//! it is not exercised here: the forwarding loop is tested with a `Forward`
//! that opens a TCP connection to the relay instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use skymap_proto::v1::StatusRequest;
use skymap_relay::server::{self, RelayConfig};
use skymap_tui::conn;
use skymap_tui::kube::{Cluster, Forward, KubeError, LastError, RelayPod, Target, listen};
use tokio::net::TcpStream;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A cluster whose API server is `routes`: each request is answered by the
/// route whose path it has (404 otherwise). Returns the cluster and a task
/// yielding every request seen ("GET path?query"), once the cluster is dropped.
fn mock_cluster(
    routes: Vec<(&'static str, u16, Value)>,
) -> (Cluster, tokio::task::JoinHandle<Vec<String>>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let cluster = Cluster::new(client, "prod", "https://api.prod.example:6443", "skymap");
    (cluster, tokio::spawn(answer(handle, routes)))
}

async fn answer(mut handle: Handle, routes: Vec<(&'static str, u16, Value)>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some((request, respond)) = handle.next_request().await {
        let uri = request.uri();
        seen.push(format!(
            "{} {}",
            request.method(),
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
        ));
        let (code, body) = routes
            .iter()
            .find(|(path, _, _)| *path == uri.path())
            .map(|(_, code, body)| (*code, body.clone()))
            .unwrap_or_else(|| (404, status(404, "NotFound", "not found")));
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response");
        respond.send_response(response);
    }
    seen
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

const SERVICE: &str = "/api/v1/namespaces/skymap/services/skymap-relay";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/skymap/endpointslices";
const PODS: &str = "/api/v1/namespaces/skymap/pods";
const SLICES_QUERY: &str = "labelSelector=kubernetes.io%2Fservice-name%3Dskymap-relay";

/// As the manifests publish it: metrics first, gRPC by a named targetPort.
fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "skymap-relay", "namespace": "skymap"},
        "spec": {
            "selector": {"app.kubernetes.io/name": "skymap-relay"},
            "ports": [
                {"name": "metrics", "port": 9965, "targetPort": 9965},
                {"name": "grpc", "port": 4245, "targetPort": "grpc"}
            ]
        }
    })
}

fn pod(name: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "skymap"},
        "spec": {"containers": [{
            "name": "relay",
            "ports": [
                {"name": "metrics", "containerPort": 9965},
                {"name": "grpc", "containerPort": 14245}
            ]
        }]},
        "status": {"conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}
        ]}
    })
}

fn pods(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

fn endpoint(pod: &str, ready: bool) -> Value {
    json!({"addresses": ["10.0.0.9"], "conditions": {"ready": ready},
           "targetRef": {"kind": "Pod", "name": pod, "namespace": "skymap"}})
}

fn slices(endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {},
        "items": [{
            "metadata": {"name": "skymap-relay-x7k2p"},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "metrics", "port": 9965}, {"name": "grpc", "port": 14245}]
        }]
    })
}

fn no_slices() -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
           "metadata": {}, "items": []})
}

/// Runs `find_relay` on the routes; the result and the requests made.
async fn find(
    routes: Vec<(&'static str, u16, Value)>,
) -> (Result<RelayPod, KubeError>, Vec<String>) {
    let (cluster, requests) = mock_cluster(routes);
    let found = cluster.find_relay().await;
    drop(cluster);
    (found, requests.await.expect("mock API server"))
}

#[tokio::test]
async fn endpoint_slices_pick_the_ready_pod_and_the_grpc_port() {
    let (found, requests) = find(vec![
        (SERVICE, 200, service()),
        (
            SLICES,
            200,
            slices(vec![
                endpoint("skymap-relay-a", false),
                endpoint("skymap-relay-d", true),
                endpoint("skymap-relay-c", true),
            ]),
        ),
    ])
    .await;
    assert_eq!(
        found.expect("found"),
        RelayPod {
            name: "skymap-relay-c".into(),
            port: 14245
        }
    );
    // Slices decide: no pod list.
    assert_eq!(
        requests,
        [
            format!("GET {SERVICE}"),
            format!("GET {SLICES}?&{SLICES_QUERY}")
        ]
    );
}

#[tokio::test]
async fn without_slices_the_selector_finds_the_pod_and_its_named_target_port() {
    let (found, requests) = find(vec![
        (SERVICE, 200, service()),
        (SLICES, 200, no_slices()),
        (
            PODS,
            200,
            pods(vec![
                pod("skymap-relay-a", false),
                pod("skymap-relay-b", true),
            ]),
        ),
    ])
    .await;
    assert_eq!(
        found.expect("found"),
        RelayPod {
            name: "skymap-relay-b".into(),
            port: 14245
        }
    );
    assert_eq!(
        requests.last().map(String::as_str),
        Some(
            "GET /api/v1/namespaces/skymap/pods?&labelSelector=app.kubernetes.io%2Fname%3Dskymap-relay"
        )
    );
}

#[tokio::test]
async fn numeric_target_port_and_forbidden_slices_fall_back_to_pods() {
    let mut service = service();
    service["spec"]["ports"] = json!([{"port": 4245, "targetPort": 4300}]);
    let (found, _) = find(vec![
        (SERVICE, 200, service),
        (
            SLICES,
            403,
            status(403, "Forbidden", "endpointslices is forbidden"),
        ),
        (PODS, 200, pods(vec![pod("skymap-relay-b", true)])),
    ])
    .await;
    assert_eq!(
        found.expect("found"),
        RelayPod {
            name: "skymap-relay-b".into(),
            port: 4300
        }
    );
}

#[tokio::test]
async fn a_missing_service_says_how_to_install_skymap() {
    let (found, requests) = find(vec![]).await;
    assert_eq!(
        found.expect_err("no service").to_string(),
        "Service skymap-relay not found in namespace skymap (context prod): is skymap \
         installed? kubectl apply -f deploy/ (or -n NAMESPACE if it is elsewhere)"
    );
    assert_eq!(requests, [format!("GET {SERVICE}")]);
}

#[tokio::test]
async fn no_ready_pod_is_reported_with_what_was_found() {
    let (found, _) = find(vec![
        (SERVICE, 200, service()),
        (
            SLICES,
            200,
            slices(vec![
                endpoint("skymap-relay-a", false),
                endpoint("skymap-relay-b", false),
            ]),
        ),
    ])
    .await;
    assert_eq!(
        found.expect_err("none ready").to_string(),
        "no Ready pod behind Service skymap-relay in namespace skymap (context prod): \
         its EndpointSlices list 2 pods, none ready (kubectl -n skymap get pods)"
    );

    let (found, _) = find(vec![
        (SERVICE, 200, service()),
        (SLICES, 200, no_slices()),
        (PODS, 200, pods(vec![pod("skymap-relay-a", false)])),
    ])
    .await;
    assert_eq!(
        found.expect_err("none ready").to_string(),
        "no Ready pod behind Service skymap-relay in namespace skymap (context prod): \
         1 pod matches its selector app.kubernetes.io/name=skymap-relay, none Ready \
         (kubectl -n skymap get pods)"
    );
}

#[tokio::test]
async fn a_named_target_port_the_pod_lacks_is_an_error() {
    let mut service = service();
    service["spec"]["ports"][1]["targetPort"] = json!("relay-grpc");
    let (found, _) = find(vec![
        (SERVICE, 200, service),
        (SLICES, 200, no_slices()),
        (PODS, 200, pods(vec![pod("skymap-relay-b", true)])),
    ])
    .await;
    assert_eq!(
        found.expect_err("no such port").to_string(),
        "Service skymap-relay in namespace skymap (context prod): targetPort \"relay-grpc\" \
         is not a container port of pod skymap-relay-b"
    );
}

#[tokio::test]
async fn forbidden_names_the_verb_and_the_resource() {
    let (found, _) = find(vec![(
        SERVICE,
        403,
        status(403, "Forbidden", "services \"skymap-relay\" is forbidden"),
    )])
    .await;
    assert_eq!(
        found.expect_err("forbidden").to_string(),
        "context prod is forbidden to get services in namespace skymap (403 Forbidden); \
         skymap --context needs: get services, list endpointslices and pods, create \
         pods/portforward"
    );

    let (cluster, requests) = mock_cluster(vec![(
        "/api/v1/namespaces/skymap/pods/skymap-relay-c/portforward",
        403,
        status(403, "Forbidden", "pods \"skymap-relay-c\" is forbidden"),
    )]);
    let pod = RelayPod {
        name: "skymap-relay-c".into(),
        port: 14245,
    };
    let opened = cluster.open(&pod, &LastError::default()).await;
    let message = opened.expect_err("forbidden").to_string();
    assert!(
        message.starts_with(
            "context prod is forbidden to create pods/portforward in namespace skymap (403 Forbidden)"
        ),
        "{message}"
    );
    drop(cluster);
    assert_eq!(
        requests.await.expect("mock API server"),
        ["GET /api/v1/namespaces/skymap/pods/skymap-relay-c/portforward?&ports=14245"]
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skymap-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// A kubeconfig with contexts dev and prod (current), both at `server`.
fn kubeconfig(name: &str, server: &str) -> PathBuf {
    let path = scratch(name);
    let text = format!(
        "apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: lab
  cluster:
    server: {server}
contexts:
- name: dev
  context: {{cluster: lab, user: me}}
- name: prod
  context: {{cluster: lab, user: me, namespace: shop}}
users:
- name: me
  user: {{token: t0ken}}
"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn target(context: &str, kubeconfig: PathBuf) -> Target {
    Target {
        context: context.into(),
        kubeconfig: Some(kubeconfig),
        namespace: "skymap".into(),
    }
}

#[tokio::test]
async fn kubeconfig_errors_name_the_file_and_the_contexts() {
    let path = kubeconfig("two-contexts.yaml", "https://127.0.0.1:1");
    let err = Cluster::from_kubeconfig(&target("staging", path.clone()))
        .await
        .expect_err("unknown context");
    assert_eq!(
        err.to_string(),
        format!(
            "no context \"staging\" in the kubeconfig {}; it has contexts: dev, prod (current)",
            path.display()
        )
    );

    let err = Cluster::from_kubeconfig(&target("", path.clone()))
        .await
        .expect_err("empty context");
    assert_eq!(
        err.to_string(),
        format!(
            "--context needs a context name; the kubeconfig {} has contexts: dev, prod (current)",
            path.display()
        )
    );

    let missing = scratch("nope.yaml");
    let err = Cluster::from_kubeconfig(&target("prod", missing.clone()))
        .await
        .expect_err("missing file");
    assert_eq!(
        err.to_string(),
        format!(
            "no kubeconfig at {}: pass --kubeconfig FILE or set KUBECONFIG",
            missing.display()
        )
    );

    let broken = scratch("broken.yaml");
    std::fs::write(&broken, "contexts: [\n").expect("write");
    let err = Cluster::from_kubeconfig(&target("prod", broken.clone()))
        .await
        .expect_err("not YAML")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read the kubeconfig {}: ",
            broken.display()
        )),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}

#[tokio::test]
async fn an_unreachable_api_server_is_named() {
    // Nothing listens on port 1.
    let path = kubeconfig("unreachable.yaml", "https://127.0.0.1:1");
    let cluster = Cluster::from_kubeconfig(&target("prod", path))
        .await
        .expect("the kubeconfig is fine");
    let err = cluster
        .find_relay()
        .await
        .expect_err("unreachable")
        .to_string();
    assert!(
        err.starts_with(
            "cannot reach the Kubernetes API server https://127.0.0.1:1 (context prod): "
        ),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// Opens a plain TCP connection to a relay for each local connection,
/// failing the first `fail_first` opens as a pod that went away would.
struct ToRelay {
    addr: std::net::SocketAddr,
    fail_first: usize,
    opens: AtomicUsize,
}

impl Forward for ToRelay {
    type Stream = TcpStream;

    async fn open(&self, _errors: &LastError) -> Result<TcpStream, KubeError> {
        if self.opens.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(KubeError::NoReadyPod {
                namespace: "skymap".into(),
                context: "prod".into(),
                detail: "the pod went away".into(),
            });
        }
        TcpStream::connect(self.addr)
            .await
            .map_err(KubeError::Listen)
    }
}

#[tokio::test]
async fn the_local_forward_carries_grpc_to_the_relay_and_retries_with_a_fresh_open() {
    let mut config = RelayConfig::default();
    config.engine.history_capacity = 4321;
    let relay = server::start("127.0.0.1:0", config).await.expect("relay");

    let forward = listen(
        ToRelay {
            addr: relay.addr,
            fail_first: 1,
            opens: AtomicUsize::new(0),
        },
        LastError::default(),
    )
    .await
    .expect("listen");
    assert!(forward.addr().ip().is_loopback());
    assert_eq!(
        forward.url(),
        format!("http://127.0.0.1:{}", forward.addr().port())
    );

    // The first open fails: the client sees its connection closed, and the
    // reason is kept for the command's error.
    let first = async {
        let mut client = conn::observer(&forward.url())
            .await
            .map_err(|e| e.to_string())?;
        client
            .get_status(StatusRequest {})
            .await
            .map_err(|e| e.to_string())
    };
    assert!(first.await.is_err());
    assert_eq!(
        forward.last_error().as_deref(),
        Some(
            "no Ready pod behind Service skymap-relay in namespace skymap (context prod): \
             the pod went away"
        )
    );

    // A new connection opens afresh and reaches the relay.
    let mut client = conn::observer(&forward.url()).await.expect("connects");
    let status = client
        .get_status(StatusRequest {})
        .await
        .expect("status through the forward")
        .into_inner();
    assert_eq!(status.history_capacity, 4321);
    drop(client);
    drop(forward);
    relay.shutdown().await.expect("relay stops");
}

fn skymap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skymap"));
    cmd.env_remove("SKYMAP_RELAY").env_remove("KUBECONFIG");
    cmd
}

#[test]
fn the_binary_reports_cluster_errors_in_one_line() {
    let path = kubeconfig("cli.yaml", "https://127.0.0.1:1");
    let out = skymap()
        .args(["status", "--context", "staging", "--kubeconfig"])
        .arg(&path)
        .output()
        .expect("skymap runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "skymap: no context \"staging\" in the kubeconfig {}; it has contexts: dev, prod \
             (current)\n",
            path.display()
        )
    );

    let out = skymap()
        .args([
            "observe",
            "--context",
            "prod",
            "--relay-namespace",
            "kube-system",
            "--kubeconfig",
        ])
        .arg(&path)
        .output()
        .expect("skymap runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "skymap: cannot reach the Kubernetes API server https://127.0.0.1:1 (context prod): "
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn context_flags_conflict_with_relay_and_need_a_context() {
    let out = skymap()
        .args(["status", "--relay", "127.0.0.1:1", "--context", "prod"])
        .output()
        .expect("skymap runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it cannot be used with --relay"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = skymap()
        .args(["status", "-n", "skymap-system"])
        .output()
        .expect("skymap runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--context <NAME>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SKYMAP_RELAY in the environment does not stand in the way of --context.
    let path = kubeconfig("env.yaml", "https://127.0.0.1:1");
    let out = skymap()
        .env("SKYMAP_RELAY", "127.0.0.1:4245")
        .args(["status", "--context", "staging", "--kubeconfig"])
        .arg(&path)
        .output()
        .expect("skymap runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("skymap: no context \"staging\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
