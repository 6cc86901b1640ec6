//! The relay's `/metrics` over real HTTP on loopback: flows streamed in over
//! gRPC come out as exact counters, gauges and latency histograms in a page
//! a Prometheus scraper accepts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skymap_proto::metrics::{self, Sample};
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    Endpoint, Flow, FlowBatch, Http, L7Type, Layer4, Layer7, LossCounter, ObservationPoint,
    Protocol, Verdict, WatchGraphRequest, Zoom,
};
use skymap_relay::aggregator::now_ns;
use skymap_relay::server::{self, RelayConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const FRONTEND: [u8; 4] = [10, 244, 1, 10];
const BACKEND: [u8; 4] = [10, 244, 2, 20];
const DNS: [u8; 4] = [10, 244, 3, 30];

const METADATA: &str = r#"{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"frontend-7d9f8c6b5d-abcde","namespace":"default",
   "labels":{"app":"frontend","pod-template-hash":"7d9f8c6b5d"},
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"frontend-7d9f8c6b5d","uid":"u1","controller":true}]},
   "spec":{"nodeName":"node-a","containers":[{"name":"c"}]},
   "status":{"phase":"Running","podIP":"10.244.1.10","podIPs":[{"ip":"10.244.1.10"}]}},
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"backend-0","namespace":"default",
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"backend","uid":"u2","controller":true}]},
   "spec":{"nodeName":"node-b","containers":[{"name":"c"}]},
   "status":{"phase":"Running","podIP":"10.244.2.20","podIPs":[{"ip":"10.244.2.20"}]}}
]}"#;

fn endpoint(ip: [u8; 4], port: u32) -> Option<Endpoint> {
    Some(Endpoint {
        ip: ip.to_vec().into(),
        port,
        ..Default::default()
    })
}

fn l4(protocol: Protocol) -> Option<Layer4> {
    Some(Layer4 {
        protocol: protocol as i32,
        ..Default::default()
    })
}

/// An HTTP 200 reply from the backend arriving at the frontend.
fn response(latency_ms: u64, sport: u32) -> Flow {
    Flow {
        time_ns: now_ns(),
        verdict: Verdict::Forwarded as i32,
        source: endpoint(BACKEND, 8080),
        destination: endpoint(FRONTEND, sport),
        l4: l4(Protocol::Tcp),
        is_reply: true,
        observation_point: ObservationPoint::ToEndpoint as i32,
        l7: Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: latency_ms * 1_000_000,
            record: Some(Record::Http(Http {
                code: 200,
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

fn flow(verdict: Verdict, reason: &str, dst: [u8; 4], port: u32, protocol: Protocol) -> Flow {
    Flow {
        time_ns: now_ns(),
        verdict: verdict as i32,
        drop_reason: reason.to_string(),
        source: endpoint(FRONTEND, 40000),
        destination: endpoint(dst, port),
        l4: l4(protocol),
        observation_point: if verdict == Verdict::Dropped {
            ObservationPoint::KernelDrop
        } else {
            ObservationPoint::FromEndpoint
        } as i32,
        ..Default::default()
    }
}

/// Opens an ingest stream for `node` and sends one batch on it; the stream
/// stays open (the node connected) while the sender lives.
async fn stream(
    url: &str,
    node: &str,
    flows: Vec<Flow>,
    losses: Vec<LossCounter>,
) -> mpsc::Sender<FlowBatch> {
    let mut client = IngestClient::connect(url.to_string())
        .await
        .expect("connect ingest");
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move { client.stream(ReceiverStream::new(rx)).await });
    tx.send(FlowBatch {
        node_name: node.to_string(),
        seq: 1,
        flows,
        losses,
        cpu: Vec::new(),
    })
    .await
    .expect("stream open");
    tx
}

/// (name, labels) → value.
fn index(samples: &[Sample]) -> BTreeMap<(String, Vec<(String, String)>), f64> {
    samples
        .iter()
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            ((s.name.clone(), labels), s.value)
        })
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    (name.to_string(), labels)
}

/// Scrapes until the relay has counted `flows` flows, `nodes` connected
/// nodes and `watchers` watchers: ingest and scrapes reach the aggregator on
/// different channels, so a scrape may come before the last batch.
async fn scrape_settled(addr: SocketAddr, flows: f64, nodes: f64, watchers: f64) -> String {
    let start = Instant::now();
    loop {
        let (status, page) = metrics::get(addr, "/metrics").await.expect("scrape");
        assert_eq!(status, 200, "{page}");
        let samples = metrics::parse(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));
        let total: f64 = samples
            .iter()
            .filter(|s| s.name == "skymap_flows_processed_total")
            .map(|s| s.value)
            .sum();
        let values = index(&samples);
        if total == flows
            && values.get(&key("skymap_nodes_connected", &[])) == Some(&nodes)
            && values.get(&key("skymap_relay_watchers", &[])) == Some(&watchers)
        {
            return page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the relay never settled at {flows} flows, {nodes} nodes, {watchers} watchers:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_page_counts_exactly_what_came_in() {
    let dir = std::env::temp_dir().join(format!("skymap-metrics-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let metadata = dir.join("metadata.json");
    std::fs::write(&metadata, METADATA).expect("metadata");
    let relay = server::start(
        "127.0.0.1:0",
        RelayConfig {
            metadata_file: Some(metadata),
            metrics_listen: Some("127.0.0.1:0".to_string()),
            ..RelayConfig::default()
        },
    )
    .await
    .expect("relay starts");
    let url = format!("http://{}", relay.addr);
    let addr = relay.metrics_addr.expect("metrics served");

    let flows = vec![
        response(3, 41000),
        response(40, 41001),
        response(700, 41002),
        flow(Verdict::Forwarded, "", BACKEND, 8080, Protocol::Tcp),
        flow(Verdict::Dropped, "NETFILTER_DROP", DNS, 53, Protocol::Udp),
        flow(Verdict::Dropped, "NETFILTER_DROP", DNS, 53, Protocol::Udp),
        flow(Verdict::Dropped, "", BACKEND, 9090, Protocol::Tcp),
    ];
    let losses = vec![LossCounter {
        node_name: "node-a".into(),
        stage: "probe-send-buffer".into(),
        count: 5,
    }];
    let _node_a = stream(&url, "node-a", flows, losses).await;
    let _node_b = stream(&url, "node-b", Vec::new(), Vec::new()).await;
    let mut observer = ObserverClient::connect(url.clone())
        .await
        .expect("observer");
    let _watch = observer
        .watch_graph(WatchGraphRequest {
            zoom: Zoom::Workload as i32,
            namespaces: Vec::new(),
        })
        .await
        .expect("watch");

    let page = scrape_settled(addr, 7.0, 2.0, 1.0).await;
    let samples = metrics::parse(&page).expect("valid page");
    let values = index(&samples);
    let value = |name: &str, labels: &[(&str, &str)]| {
        values
            .get(&key(name, labels))
            .copied()
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{page}"))
    };

    for family in [
        "skymap_flows_processed_total counter",
        "skymap_drop_total counter",
        "skymap_lost_events_total counter",
        "skymap_nodes_connected gauge",
        "skymap_relay_watchers gauge",
        "skymap_edge_latency_seconds histogram",
    ] {
        assert!(page.contains(&format!("\n# TYPE {family}\n")), "{family}");
    }

    let flows = "skymap_flows_processed_total";
    assert_eq!(value(flows, &[("verdict", "FORWARDED")]), 4.0);
    assert_eq!(value(flows, &[("verdict", "DROPPED")]), 3.0);
    assert_eq!(value(flows, &[("verdict", "ERROR")]), 0.0);

    let drops: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "skymap_drop_total")
        .collect();
    assert_eq!(drops.len(), 2, "{page}");
    let drop = "skymap_drop_total";
    assert_eq!(
        value(drop, &[("reason", "NETFILTER_DROP"), ("protocol", "UDP")]),
        2.0
    );
    assert_eq!(
        value(drop, &[("reason", "UNKNOWN"), ("protocol", "TCP")]),
        1.0
    );

    let lost = "skymap_lost_events_total";
    assert_eq!(
        value(lost, &[("node", "node-a"), ("stage", "probe-send-buffer")]),
        5.0
    );

    let edge = [
        ("source", "default/frontend"),
        ("destination", "default/backend"),
    ];
    let bucket = |le: &str| {
        let mut labels = edge.to_vec();
        labels.push(("le", le));
        value("skymap_edge_latency_seconds_bucket", &labels)
    };
    let expected = [
        ("0.001", 0.0),
        ("0.0025", 0.0),
        ("0.005", 1.0),
        ("0.01", 1.0),
        ("0.025", 1.0),
        ("0.05", 2.0),
        ("0.1", 2.0),
        ("0.25", 2.0),
        ("0.5", 2.0),
        ("1", 3.0),
        ("2.5", 3.0),
        ("5", 3.0),
        ("10", 3.0),
        ("+Inf", 3.0),
    ];
    for (le, count) in expected {
        assert_eq!(bucket(le), count, "le={le}\n{page}");
    }
    // One observation per response that carried a latency.
    assert_eq!(value("skymap_edge_latency_seconds_count", &edge), 3.0);
    let sum = value("skymap_edge_latency_seconds_sum", &edge);
    assert!((sum - 0.743).abs() < 1e-9, "sum {sum}");
    let series = samples
        .iter()
        .filter(|s| s.name == "skymap_edge_latency_seconds_count")
        .count();
    assert_eq!(
        series, 1,
        "only the edge with latency has a histogram\n{page}"
    );

    assert_eq!(
        metrics::get(addr, "/healthz").await.expect("healthz"),
        (200, "ok\n".to_string())
    );
    relay.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_start() {
    let (_taken, addr) = metrics::bind("127.0.0.1:0").await.expect("bind");
    let err = server::start(
        "127.0.0.1:0",
        RelayConfig {
            metrics_listen: Some(addr.to_string()),
            ..RelayConfig::default()
        },
    )
    .await
    .expect_err("port taken");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot listen on {addr} for metrics (--metrics-listen): "
        )),
        "{err}"
    );
}
