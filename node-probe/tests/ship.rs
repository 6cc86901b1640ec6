//! The shipper against a real relay on loopback that is away at first: the
//! queue keeps the newest flows, counts what it pushed out, and everything
//! kept or lost is accounted for once the relay is there. A quiet probe
//! still shows connected, and losses reported over several batches add up.

use std::time::{Duration, Instant};

use skymap_node_probe::ship::{LOSS_SEND_BUFFER, Shipper};
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{Flow, NodeState, NodeStatus, StatusRequest};
use skymap_relay::server::{self, RelayConfig};

fn flows(count: usize, first: i64) -> Vec<Flow> {
    (0..count)
        .map(|i| Flow {
            time_ns: first + i as i64,
            node_name: "node-a".to_string(),
            ..Flow::default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_comes_late_gets_the_newest_flows_and_the_count_of_the_rest() {
    // Find a free port, then leave it free: nothing listens there yet.
    let addr = {
        let relay = server::start("127.0.0.1:0", RelayConfig::default())
            .await
            .expect("relay");
        let addr = relay.addr;
        relay.shutdown().await.expect("shutdown");
        addr
    };
    let shipper = Shipper::spawn(format!("http://{addr}"), "node-a".to_string(), 100);
    let now = 1_795_672_800_000_000_000;
    shipper.send(flows(150, now));
    shipper.add_losses([("kernel-ringbuf", 7)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!shipper.status().connected);
    assert_eq!(shipper.status().queued, 100, "the newest 100 kept");

    let relay = server::start(&addr.to_string(), RelayConfig::default())
        .await
        .expect("the relay comes up on the same address");
    let mut observer = ObserverClient::connect(format!("http://{addr}"))
        .await
        .expect("observer");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = observer
            .get_status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if status.flows_total >= 100 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.flows_total, 100, "{status:?}");
    let node = status
        .nodes
        .iter()
        .find(|n| n.name == "node-a")
        .expect("the node reported");
    let loss = |stage: &str| {
        node.losses
            .iter()
            .filter(|l| l.stage == stage)
            .map(|l| l.count)
            .sum::<u64>()
    };
    assert_eq!(loss(LOSS_SEND_BUFFER), 50, "{:?}", node.losses);
    assert_eq!(loss("kernel-ringbuf"), 7, "{:?}", node.losses);
    assert!(shipper.status().connected);
    assert_eq!(shipper.status().sent, 100);
    drop(shipper);
    relay.shutdown().await.expect("shutdown");
}

/// Polls the relay's status until `done` holds for node-a (or 10 s pass).
async fn node_a_when(addr: std::net::SocketAddr, done: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    let mut observer = ObserverClient::connect(format!("http://{addr}"))
        .await
        .expect("observer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = observer
            .get_status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let node = status.nodes.into_iter().find(|n| n.name == "node-a");
        match node {
            Some(node) if done(&node) || Instant::now() > deadline => return node,
            None if Instant::now() > deadline => panic!("node-a never reported"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_probe_shows_connected_and_its_losses_add_up_across_batches() {
    let relay = server::start("127.0.0.1:0", RelayConfig::default())
        .await
        .expect("relay");
    let shipper = Shipper::spawn(format!("http://{}", relay.addr), "node-a".to_string(), 100);
    let node = node_a_when(relay.addr, |n| n.state == NodeState::Connected as i32).await;
    assert_eq!(node.state, NodeState::Connected as i32, "{node:?}");
    assert_eq!(node.flows_total, 0);

    let ringbuf = |n: &NodeStatus| {
        n.losses
            .iter()
            .filter(|l| l.stage == "kernel-ringbuf")
            .map(|l| l.count)
            .sum::<u64>()
    };
    shipper.add_losses([("kernel-ringbuf", 3)]);
    node_a_when(relay.addr, |n| ringbuf(n) == 3).await;
    shipper.add_losses([("kernel-ringbuf", 4)]);
    let node = node_a_when(relay.addr, |n| ringbuf(n) == 7).await;
    assert_eq!(ringbuf(&node), 7, "{:?}", node.losses);
    drop(shipper);
    relay.shutdown().await.expect("shutdown");
}
