//! "Why was this dropped?" in the relay: dropped flows get the policies that
//! deny them at ingest, and `Observer.Explain` gives the reasons and a fix,
//! for the lab's story cluster (frontend's egress denies DNS).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use skymap_lab::parts;
use skymap_lab::scenario::{Scenario, policies_from_yaml_str};
use skymap_proto::names::ip_to_bytes;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{Endpoint, ExplainRequest, Flow, Layer4, Protocol, Verdict};
use skymap_relay::engine::aggregate_flows;
use skymap_relay::metadata::Metadata;
use skymap_relay::server::{self, RelayConfig};

fn story() -> (Scenario, serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lab/scenarios/default.yaml");
    let scenario = Scenario::load(&path).expect("default.yaml");
    let json = parts::metadata("t", &scenario.plan(), scenario.policies());
    (scenario, json)
}

fn ip_of(scenario: &Scenario, workload: &str) -> Ipv4Addr {
    scenario
        .plan()
        .pods
        .iter()
        .find(|p| p.workload == workload)
        .map(|p| p.ip)
        .expect("pod")
}

fn flow(src: Ipv4Addr, dst: Ipv4Addr, protocol: Protocol, port: u32, reason: &str) -> Flow {
    let endpoint = |ip: Ipv4Addr, port: u32| Endpoint {
        ip: ip_to_bytes(IpAddr::V4(ip)),
        port,
        ..Endpoint::default()
    };
    Flow {
        time_ns: 1_700_000_000_000_000_000,
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

#[test]
fn policy_drops_are_named_at_ingest_and_other_drops_are_not() {
    let (scenario, json) = story();
    let (metadata, warnings) =
        Metadata::from_json_str(&json.to_string(), "story.json").expect("metadata");
    assert!(warnings.is_empty(), "{warnings:?}");
    let frontend = ip_of(&scenario, "frontend");
    let dns = ip_of(&scenario, "kube-dns");
    let catalog = ip_of(&scenario, "catalog");
    let flows = vec![
        flow(frontend, dns, Protocol::Udp, 53, "NETFILTER_DROP"),
        // Allowed by the policies: some other rule dropped it.
        flow(frontend, catalog, Protocol::Tcp, 8080, "NETFILTER_DROP"),
        flow(frontend, catalog, Protocol::Tcp, 8080, "NO_SOCKET"),
        flow(frontend, dns, Protocol::Udp, 53, "NETFILTER_DROP"),
    ];
    let engine = aggregate_flows(flows, Arc::new(metadata));
    let reasons: Vec<(String, String)> = engine
        .flows(0, 0, 0, &mut |_| true)
        .into_iter()
        .map(|f| (f.drop_reason, f.policy_reason))
        .collect();
    let named = |reason: &str, policy: &str| (reason.to_owned(), policy.to_owned());
    assert_eq!(
        reasons,
        [
            named("NETFILTER_DROP", "shop/frontend-egress"),
            named("NETFILTER_DROP", ""),
            named("NO_SOCKET", ""),
            named("NETFILTER_DROP", "shop/frontend-egress"),
        ]
    );
}

#[tokio::test]
async fn explain_answers_with_the_policy_and_a_fix_or_the_reason() {
    let (scenario, json) = story();
    let dir = std::env::temp_dir().join(format!("skymap-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("metadata.json");
    std::fs::write(&file, json.to_string()).expect("write metadata");
    let relay = server::start(
        "127.0.0.1:0",
        RelayConfig {
            metadata_file: Some(file),
            ..RelayConfig::default()
        },
    )
    .await
    .expect("relay starts");
    let mut client = ObserverClient::connect(format!("http://{}", relay.addr))
        .await
        .expect("connects");
    let frontend = ip_of(&scenario, "frontend");
    let dns = ip_of(&scenario, "kube-dns");
    let catalog = ip_of(&scenario, "catalog");
    let mut explain = async |flow: Flow| {
        client
            .explain(ExplainRequest { flow: Some(flow) })
            .await
            .map(tonic::Response::into_inner)
    };

    let denied = explain(flow(frontend, dns, Protocol::Udp, 53, "NETFILTER_DROP"))
        .await
        .expect("explained");
    assert_eq!(denied.kind, "policy");
    assert_eq!(denied.policies, ["shop/frontend-egress"]);
    assert_eq!(
        denied.summary,
        "egress of shop/frontend is limited by policy frontend-egress, which allows only \
         app in (catalog, cart) on TCP/8080; nothing allows UDP/53 to kube-system/kube-dns"
    );
    assert_eq!(
        denied.details,
        ["shop/frontend-egress allows to app in (catalog, cart) on TCP/8080"]
    );
    let fix = policies_from_yaml_str(&denied.suggested_policy_yaml, "fix.yaml").expect("YAML");
    assert_eq!(fix.len(), 1);
    assert_eq!(
        fix[0].metadata.name.as_deref(),
        Some("frontend-egress-to-kube-dns-udp-53")
    );

    let refused = explain(flow(frontend, catalog, Protocol::Tcp, 8080, "NO_SOCKET"))
        .await
        .expect("explained");
    assert_eq!(refused.kind, "reason");
    assert!(
        refused
            .summary
            .starts_with("NO_SOCKET: the packet reached the destination, but nothing listens"),
        "{}",
        refused.summary
    );
    assert!(
        refused.details[0].starts_with("check: "),
        "{:?}",
        refused.details
    );
    assert!(refused.suggested_policy_yaml.is_empty());

    let unexplained = explain(flow(
        frontend,
        catalog,
        Protocol::Tcp,
        8080,
        "NETFILTER_DROP",
    ))
    .await
    .expect("explained");
    assert_eq!(unexplained.kind, "reason");
    assert!(
        unexplained
            .details
            .iter()
            .any(|d| d.contains("no NetworkPolicy the relay knows denies")),
        "{:?}",
        unexplained.details
    );

    let forwarded = explain(flow(frontend, catalog, Protocol::Tcp, 8080, ""))
        .await
        .expect("explained");
    assert_eq!(forwarded.kind, "not-dropped");

    let missing = client
        .explain(ExplainRequest { flow: None })
        .await
        .expect_err("a flow is needed");
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);

    relay.shutdown().await.expect("shuts down");
    let _ = std::fs::remove_dir_all(&dir);
}
