//! `skymap explain` as a user runs it, against a relay in this process that
//! knows the lab's story cluster and its policies (frontend's egress denies
//! DNS): the text for people, the YAML for `kubectl apply -f -`, JSON for
//! scripts, and the errors.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use skymap_lab::parts;
use skymap_lab::scenario::{Scenario, policies_from_yaml_str};
use skymap_proto::names::ip_to_bytes;
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    Endpoint, Flow, FlowBatch, GetFlowsRequest, Layer4, Protocol, Verdict, get_flows_response,
};
use skymap_relay::server::{self, RelayConfig, RelayHandle};

fn skymap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skymap"));
    cmd.env_remove("SKYMAP_RELAY");
    cmd
}

/// Runs `skymap explain ARGS` off the async runtime: (success, exit code,
/// stdout, stderr).
async fn explain(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    let output: Output = tokio::task::spawn_blocking(move || {
        skymap()
            .arg("explain")
            .args(&args)
            .output()
            .expect("skymap runs")
    })
    .await
    .expect("the command ran");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The lab's default scenario, and the pods of a workload there.
struct Story {
    scenario: Scenario,
}

impl Story {
    fn load() -> Story {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lab/scenarios/default.yaml");
        Story {
            scenario: Scenario::load(&path).expect("default.yaml"),
        }
    }

    /// (IP, pod name) of replica `index` of `workload`.
    fn pod(&self, workload: &str, index: usize) -> (Ipv4Addr, String) {
        self.scenario
            .plan()
            .pods
            .iter()
            .filter(|p| p.workload == workload)
            .nth(index)
            .map(|p| (p.ip, p.name.clone()))
            .expect("the pod is in the plan")
    }
}

fn flow(
    time_ns: i64,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: Protocol,
    port: u32,
    reason: &str,
) -> Flow {
    let endpoint = |ip: Ipv4Addr, port: u32| Endpoint {
        ip: ip_to_bytes(IpAddr::V4(ip)),
        port,
        ..Endpoint::default()
    };
    Flow {
        time_ns,
        node_name: "node-1".to_owned(),
        verdict: if reason.is_empty() {
            Verdict::Forwarded
        } else {
            Verdict::Dropped
        } as i32,
        drop_reason: reason.to_owned(),
        source: Some(endpoint(src, 40000)),
        destination: Some(endpoint(dst, port)),
        l4: Some(Layer4 {
            protocol: protocol as i32,
            ..Layer4::default()
        }),
        packets: 1,
        bytes: 60,
        ..Flow::default()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// How many flows the relay's history holds.
async fn history(url: &str) -> usize {
    let mut client = ObserverClient::connect(url.to_owned())
        .await
        .expect("connects");
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: u64::MAX,
            ..GetFlowsRequest::default()
        })
        .await
        .expect("GetFlows")
        .into_inner();
    let mut count = 0;
    while let Some(response) = stream.message().await.expect("flows") {
        if matches!(
            response.response,
            Some(get_flows_response::Response::Flow(_))
        ) {
            count += 1;
        }
    }
    count
}

/// A relay with the story's metadata and policies, fed:
/// - frontend-0 -> kube-dns-0 UDP/53, NETFILTER_DROP, 3 times;
/// - frontend-0 -> kube-dns-1 UDP/53, NETFILTER_DROP, twice (the same fix);
/// - frontend-0 -> catalog TCP/8080, NO_SOCKET, once (the newest drop);
/// - frontend-0 -> catalog TCP/8080 forwarded, 4 times (not explained).
async fn story_relay(dir: &std::path::Path) -> (RelayHandle, String, Story) {
    let story = Story::load();
    let metadata = parts::metadata("t", &story.scenario.plan(), story.scenario.policies());
    std::fs::create_dir_all(dir).expect("temp dir");
    let file = dir.join("metadata.json");
    std::fs::write(&file, metadata.to_string()).expect("write metadata");
    let relay = server::start(
        "127.0.0.1:0",
        RelayConfig {
            metadata_file: Some(file),
            ..RelayConfig::default()
        },
    )
    .await
    .expect("relay starts");
    let url = format!("http://{}", relay.addr);

    let (frontend, _) = story.pod("frontend", 0);
    let (dns0, _) = story.pod("kube-dns", 0);
    let (dns1, _) = story.pod("kube-dns", 1);
    let (catalog, _) = story.pod("catalog", 0);
    // A minute ago, a second apart.
    let t = |i: i64| now_ns() - 60_000_000_000 + i * 1_000_000_000;
    let flows = vec![
        flow(t(0), frontend, catalog, Protocol::Tcp, 8080, ""),
        flow(t(1), frontend, dns0, Protocol::Udp, 53, "NETFILTER_DROP"),
        flow(t(2), frontend, dns0, Protocol::Udp, 53, "NETFILTER_DROP"),
        flow(t(3), frontend, catalog, Protocol::Tcp, 8080, ""),
        flow(t(4), frontend, dns1, Protocol::Udp, 53, "NETFILTER_DROP"),
        flow(t(5), frontend, dns0, Protocol::Udp, 53, "NETFILTER_DROP"),
        flow(t(6), frontend, dns1, Protocol::Udp, 53, "NETFILTER_DROP"),
        flow(t(7), frontend, catalog, Protocol::Tcp, 8080, ""),
        flow(t(8), frontend, catalog, Protocol::Tcp, 8080, "NO_SOCKET"),
        flow(t(9), frontend, catalog, Protocol::Tcp, 8080, ""),
    ];
    let total = flows.len();
    let mut ingest = IngestClient::connect(url.clone()).await.expect("connects");
    let batch = FlowBatch {
        node_name: "node-1".to_owned(),
        seq: 1,
        flows,
        ..FlowBatch::default()
    };
    let summary = ingest
        .stream(tokio_stream::iter([batch]))
        .await
        .expect("the relay takes the batch")
        .into_inner();
    assert_eq!(summary.flows, total as u64);
    // The relay aggregates asynchronously: wait until every flow is in.
    for _ in 0..100 {
        if history(&url).await == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history(&url).await, total, "every flow is in the history");
    (relay, url, story)
}

const DENIED: &str = "egress of shop/frontend is limited by policy frontend-egress, which allows \
                      only app in (catalog, cart) on TCP/8080; nothing allows UDP/53 to \
                      kube-system/kube-dns";
const FIX: &str = "frontend-egress-to-kube-dns-udp-53";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_drops_as_text_yaml_and_json() {
    let dir = std::env::temp_dir().join(format!("skymap-explain-cli-{}", std::process::id()));
    let (relay, url, story) = story_relay(&dir).await;
    let (_, frontend) = story.pod("frontend", 0);
    let (_, dns0) = story.pod("kube-dns", 0);
    let (_, dns1) = story.pod("kube-dns", 1);
    let (_, catalog) = story.pod("catalog", 0);

    // Text: three groups, the newest first, each with its explanation.
    let (code, text, stderr) = explain(&["--relay", &url]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let headers: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(headers.len(), 3, "{text}");
    assert!(
        headers[0].starts_with(&format!(
            "shop/{frontend} -> shop/{catalog} TCP/8080 NO_SOCKET: 1 flow, last seen "
        )),
        "{text}"
    );
    assert!(
        headers[1].starts_with(&format!(
            "shop/{frontend} -> kube-system/{dns1} UDP/53 NETFILTER_DROP: 2 flows, last seen "
        )),
        "{text}"
    );
    assert!(
        headers[2].starts_with(&format!(
            "shop/{frontend} -> kube-system/{dns0} UDP/53 NETFILTER_DROP: 3 flows, last seen "
        )),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| *l == format!("  {DENIED}")).count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| *l == "  denied by: shop/frontend-egress")
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains(
            "  To allow it, apply (kubectl apply -f -):\n    apiVersion: networking.k8s.io/v1\n"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches(&format!("\n      name: {FIX}\n")).count(),
        1,
        "the fix is printed once: {text}"
    );
    assert!(
        text.contains(&format!(
            "\n  To allow it, apply the same as above: shop/{FIX}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("\n  NO_SOCKET: the packet reached the destination, but nothing listens"),
        "{text}"
    );
    assert!(!text.contains("left out"), "{text}");

    // --max: the rest is counted, not explained.
    let (code, text, stderr) = explain(&["--relay", &url, "--max", "1"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.starts_with(&format!("shop/{frontend} -> shop/{catalog} ")),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\n2 more groups of drops left out: show more with --max, or narrow with filters\n"
        ),
        "{text}"
    );

    // YAML: the fix once, though two groups suggest it, ready for kubectl.
    let (code, yaml, stderr) = explain(&["--relay", &url, "-o", "yaml"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let policies = policies_from_yaml_str(&yaml, "explain.yaml").expect("NetworkPolicies");
    let names: Vec<(Option<&str>, Option<&str>)> = policies
        .iter()
        .map(|p| (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()))
        .collect();
    assert_eq!(names, [(Some("shop"), Some(FIX))]);
    assert!(stderr.is_empty(), "{stderr}");

    // JSON: one object per group, for scripts.
    let (code, json, stderr) = explain(&["--relay", &url, "-o", "json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let groups: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let summary: Vec<(&str, &str, u64, &str, u64)> = groups
        .iter()
        .map(|g| {
            (
                g["destination"]["pod"].as_str().unwrap_or(""),
                g["protocol"].as_str().unwrap_or(""),
                g["port"].as_u64().unwrap_or(0),
                g["kind"].as_str().unwrap_or(""),
                g["flows"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (catalog.as_str(), "TCP", 8080, "reason", 1),
            (dns1.as_str(), "UDP", 53, "policy", 2),
            (dns0.as_str(), "UDP", 53, "policy", 3),
        ]
    );
    assert_eq!(groups[1]["summary"], DENIED);
    assert_eq!(
        groups[1]["policies"],
        serde_json::json!(["shop/frontend-egress"])
    );
    assert_eq!(groups[1]["source"]["namespace"], "shop");
    assert_eq!(groups[1]["source"]["pod"], frontend.as_str());
    assert_eq!(groups[1]["drop_reason"], "NETFILTER_DROP");
    assert_eq!(groups[0]["suggested_policy_yaml"], "");

    // Filters narrow what is explained; --since too.
    let (code, json, stderr) = explain(&[
        "--relay",
        &url,
        "--to-namespace",
        "kube-system",
        "--since",
        "5m",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let flows: Vec<u64> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["flows"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(flows, [2, 3]);

    // Nothing dropped matches: said on stderr, exit code 1.
    let (code, stdout, stderr) = explain(&["--relay", &url, "--to-port", "9999"]).await;
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr,
        "skymap: no dropped flow matches the filters in the relay's history\n"
    );
    let (code, _, stderr) = explain(&["--relay", &url, "--since", "2s"]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr == "skymap: no dropped flow matches the filters since 2s\n",
        "{stderr}"
    );

    relay.shutdown().await.expect("shuts down");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_no_relay_get_clear_errors() {
    for (args, words) in [
        (vec!["--max", "0"], "--max"),
        (vec!["--last", "0"], "--last"),
        (vec!["-o", "xml"], "xml"),
        (vec!["--since", "yesterday"], "--since \"yesterday\""),
        (
            vec!["--verdict", "FORWARDED"],
            "skymap explain explains DROPPED flows",
        ),
        (vec!["--to-port", "http"], "--to-port"),
        (vec!["--relay", "relay:http"], "not a number"),
        (
            vec!["--relay", "127.0.0.1:1"],
            "cannot reach the relay at http://127.0.0.1:1",
        ),
        (
            vec!["--relay", "127.0.0.1:1", "--context", "kind"],
            "cannot be used with --relay",
        ),
    ] {
        let (code, stdout, stderr) = explain(&args).await;
        assert_ne!(code, Some(0), "{args:?} should fail");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

/// The explorer's `w` on an edge whose drops have left its own log: the
/// newest dropped flow of the edge comes from the relay's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_finds_an_edges_drop_in_the_relays_history() {
    let dir = std::env::temp_dir().join(format!("skymap-explain-edge-{}", std::process::id()));
    let (relay, url, story) = story_relay(&dir).await;
    let edge = |to: &str| skymap_proto::v1::FlowFilter {
        source_workload: vec!["shop/frontend".to_owned()],
        destination_workload: vec![to.to_owned()],
        verdict: vec![Verdict::Dropped as i32],
        ..skymap_proto::v1::FlowFilter::default()
    };
    let (flow, answer) =
        skymap_tui::actions::explain_newest(&url, edge("kube-system/kube-dns")).await;
    let flow = flow.expect("the relay has the edge's drops");
    // The newest of the five: frontend -> kube-dns-1.
    let (dns1, _) = story.pod("kube-dns", 1);
    assert_eq!(
        flow.destination.as_ref().map(|d| d.ip.to_vec()),
        Some(ip_to_bytes(IpAddr::V4(dns1)).to_vec())
    );
    let answer = answer.expect("explained");
    assert_eq!(
        (answer.kind.as_str(), answer.summary.as_str()),
        ("policy", DENIED)
    );

    let (none, answer) = skymap_tui::actions::explain_newest(&url, edge("users/loadgen")).await;
    assert!(none.is_none());
    assert_eq!(
        answer,
        Err("the relay's history has no dropped flow on this edge any more".to_owned())
    );
    relay.shutdown().await.expect("shuts down");
    let _ = std::fs::remove_dir_all(&dir);
}
