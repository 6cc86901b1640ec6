//! The explorer's relay link against a real relay on loopback: snapshot,
//! flows, deltas, status, resubscription, a relay restart on the same port,
//! and an address nobody listens on.

use std::net::SocketAddr;
use std::time::Duration;

use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::{Endpoint, Flow, FlowBatch, GraphUpdate, Layer4, Zoom};
use skymap_relay::server::{self, RelayConfig, RelayHandle};
use skymap_tui::live::{self, Backoff, ConnState, Event, Options, Subscription};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn options() -> Options {
    Options {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
        },
        status_every: Duration::from_millis(100),
        capacity: 256,
        connect_timeout: Duration::from_secs(2),
    }
}

async fn relay_on(listen: &str) -> Result<RelayHandle, server::StartError> {
    let mut config = RelayConfig::default();
    config.aggregator.tick = Duration::from_millis(50);
    server::start(listen, config).await
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The next event that `want` accepts, skipping the others.
async fn wait_for<T>(
    events: &mut mpsc::Receiver<Event>,
    what: &str,
    mut want: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = want(event) {
                    return found;
                }
            }
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

fn full_snapshot(event: Event) -> Option<GraphUpdate> {
    match event {
        Event::Graph(update) if update.full => Some(update),
        _ => None,
    }
}

fn connected(event: Event) -> Option<()> {
    matches!(event, Event::State(ConnState::Connected { .. })).then_some(())
}

fn syn_flow() -> Flow {
    Flow {
        time_ns: skymap_relay::aggregator::now_ns(),
        verdict: 1,
        source: Some(Endpoint {
            ip: vec![10, 0, 0, 1].into(),
            port: 40000,
            ..Default::default()
        }),
        destination: Some(Endpoint {
            ip: vec![10, 0, 0, 2].into(),
            port: 80,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: 1,
            tcp_flags: 2,
            ..Default::default()
        }),
        observation_point: 1,
        packets: 1,
        ..Default::default()
    }
}

async fn ingest_one_flow(url: &str) {
    let mut client = IngestClient::connect(url.to_string())
        .await
        .expect("connect ingest");
    let batch = FlowBatch {
        node_name: "n".to_string(),
        seq: 1,
        flows: vec![syn_flow()],
        ..FlowBatch::default()
    };
    let summary = client
        .stream(tokio_stream::iter([batch]))
        .await
        .expect("relay accepts the batch")
        .into_inner();
    assert_eq!(summary.flows, 1);
}

#[tokio::test]
async fn streams_snapshot_then_flows_deltas_and_status() {
    let relay = relay_on("127.0.0.1:0").await.expect("relay starts");
    let url = url(relay.addr);
    let (handle, mut events) = live::spawn_with(url.clone(), Subscription::default(), options());

    assert!(matches!(
        events.recv().await,
        Some(Event::State(ConnState::Connecting))
    ));
    assert!(matches!(
        events.recv().await,
        Some(Event::State(ConnState::Connected { .. }))
    ));
    let snapshot = wait_for(&mut events, "a full snapshot", full_snapshot).await;
    assert_eq!(snapshot.zoom, Zoom::Workload as i32);
    assert!(snapshot.edges.is_empty(), "{snapshot:?}");

    ingest_one_flow(&url).await;
    let flow = wait_for(&mut events, "the ingested flow", |e| match e {
        Event::Flow(flow) => Some(flow),
        _ => None,
    })
    .await;
    assert_eq!(flow.source.as_ref().map(|e| e.port), Some(40000));
    assert_eq!(flow.destination.as_ref().map(|e| e.port), Some(80));

    let edge = wait_for(&mut events, "a delta with the new edge", |e| match e {
        Event::Graph(update) if !update.full => update.edges.into_iter().next(),
        _ => None,
    })
    .await;
    assert_eq!(edge.port, 80);
    assert_eq!(edge.flows, 1);

    let status = wait_for(&mut events, "a status counting the flow", |e| match e {
        Event::Status(status) if status.flows_total == 1 => Some(status),
        _ => None,
    })
    .await;
    assert_eq!(status.graph_edges, 1);

    // A new zoom reopens the streams and brings a fresh snapshot at that zoom.
    handle.resubscribe(Subscription {
        zoom: Zoom::Namespace,
        ..Subscription::default()
    });
    let snapshot = wait_for(&mut events, "a namespace snapshot", |e| {
        full_snapshot(e).filter(|u| u.zoom == Zoom::Namespace as i32)
    })
    .await;
    assert_eq!(snapshot.edges.len(), 1);

    handle.shutdown();
    let closed = tokio::time::timeout(WAIT, async { while events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "events still open after shutdown");
    relay.shutdown().await.expect("relay stops");
}

#[tokio::test]
async fn reconnects_with_growing_delays_to_a_relay_restarted_on_the_same_port() {
    let relay = relay_on("127.0.0.1:0").await.expect("relay starts");
    let addr = relay.addr;
    let opts = options();
    let (_handle, mut events) = live::spawn_with(url(addr), Subscription::default(), opts.clone());
    wait_for(&mut events, "a first snapshot", full_snapshot).await;

    relay.shutdown().await.expect("relay stops");
    let mut retries = Vec::new();
    while retries.len() < 4 {
        let retry = wait_for(&mut events, "a reconnecting state", |e| match e {
            Event::State(ConnState::Reconnecting {
                attempt,
                retry_at,
                last_error,
            }) => Some((attempt, retry_at, last_error)),
            _ => None,
        })
        .await;
        retries.push(retry);
    }
    let attempts: Vec<u32> = retries.iter().map(|r| r.0).collect();
    // The lost connection had delivered data, so the count starts over.
    assert_eq!(attempts, [1, 2, 3, 4]);
    // The graph stream ending or the status call refused, whichever first.
    let first = &retries[0].2;
    assert!(
        first.contains("closed") || first.contains("shutting down"),
        "{first}"
    );
    assert!(
        retries[1].2.contains("cannot reach the relay"),
        "{}",
        retries[1].2
    );
    for pair in retries.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        let delay = opts.backoff.delay(pair[1].0);
        assert!(gap >= delay, "attempt {}: {gap:?} < {delay:?}", pair[1].0);
    }

    let mut again = None;
    for _ in 0..50 {
        match relay_on(&addr.to_string()).await {
            Ok(relay) => {
                again = Some(relay);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let relay = again.expect("the port can be bound again");
    wait_for(&mut events, "connected again", connected).await;
    let snapshot = wait_for(&mut events, "a fresh snapshot", full_snapshot).await;
    assert!(snapshot.nodes.is_empty() && snapshot.edges.is_empty());
    relay.shutdown().await.expect("relay stops");
}

#[tokio::test]
async fn an_unreachable_relay_is_retried_with_a_readable_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let (_handle, mut events) = live::spawn_with(url, Subscription::default(), options());
    let mut attempts = Vec::new();
    while attempts.len() < 3 {
        let (attempt, error) = wait_for(&mut events, "a reconnecting state", |e| match e {
            Event::State(ConnState::Reconnecting {
                attempt,
                last_error,
                ..
            }) => Some((attempt, last_error)),
            _ => None,
        })
        .await;
        assert!(
            error.starts_with(&format!(
                "cannot reach the relay at http://127.0.0.1:{port}: "
            )),
            "{error}"
        );
        assert!(error.to_lowercase().contains("refused"), "{error}");
        attempts.push(attempt);
    }
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test]
async fn a_malformed_address_is_reported_not_panicked_on() {
    let (_handle, mut events) =
        live::spawn_with("not a url".to_string(), Subscription::default(), options());
    let error = wait_for(&mut events, "a reconnecting state", |e| match e {
        Event::State(ConnState::Reconnecting { last_error, .. }) => Some(last_error),
        _ => None,
    })
    .await;
    assert!(
        error.starts_with("relay address \"not a url\" is not valid"),
        "{error}"
    );
}
