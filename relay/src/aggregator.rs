//! The aggregator: the one task that owns the [`Engine`].
//!
//! Ingest handlers send it batches, client handlers send it commands, both over
//! channels; nothing else touches the graph or the history, so there are no
//! locks on the hot path. On every tick it advances the clock and publishes
//! graph deltas to watchers.
//!
//! A client never slows ingest: every send to a client is `try_send`. A graph
//! watcher whose channel is full misses the delta and gets a full snapshot once
//! it has room again (degraded, never wrong); a flow follower whose channel is
//! full loses flows, counted and reported to it as `LostFlows`.

use std::sync::Arc;
use std::time::Duration;

use skymap_proto::filter::FlowFilterSet;
use skymap_proto::v1::{
    Explanation, Flow, FlowBatch, GetFlowsResponse, GraphUpdate, LostFlows, StatusResponse, Zoom,
    get_flows_response,
};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use crate::engine::{Engine, filter_update};
use crate::metadata::Metadata;
use crate::metrics::RelayMetrics;

/// Events from ingest handlers.
#[derive(Debug)]
pub enum IngestEvent {
    Connected { node: String },
    Batch(FlowBatch),
    Disconnected { node: String },
}

/// What the flow history returned, and where newer flows will arrive.
#[derive(Debug)]
pub struct FlowsReply {
    pub history: Vec<Flow>,
    pub follow: Option<mpsc::Receiver<Result<GetFlowsResponse, Status>>>,
}

/// Requests from client handlers.
#[derive(Debug)]
pub enum Command {
    GetFlows {
        number: usize,
        since_ns: i64,
        until_ns: i64,
        follow: bool,
        filter: FlowFilterSet,
        reply: oneshot::Sender<FlowsReply>,
    },
    GetGraph {
        zoom: Zoom,
        namespaces: Vec<String>,
        reply: oneshot::Sender<GraphUpdate>,
    },
    WatchGraph {
        zoom: Zoom,
        namespaces: Vec<String>,
        updates: mpsc::Sender<Result<GraphUpdate, Status>>,
    },
    GetStatus {
        reply: oneshot::Sender<StatusResponse>,
    },
    GetMetrics {
        reply: oneshot::Sender<RelayMetrics>,
    },
    Explain {
        flow: Box<Flow>,
        reply: oneshot::Sender<Explanation>,
    },
}

/// Tuning for the aggregator task.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// How often graph deltas are published and the clock advances.
    pub tick: Duration,
    /// Room in each follower's channel before flows are counted as lost.
    pub follower_buffer: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            follower_buffer: 4096,
        }
    }
}

/// Room in each graph watcher's channel: a watcher more than this many updates
/// behind is degraded to snapshots.
pub const WATCHER_BUFFER: usize = 4;

struct Watcher {
    zoom: Zoom,
    namespaces: Vec<String>,
    updates: mpsc::Sender<Result<GraphUpdate, Status>>,
    needs_snapshot: bool,
}

struct Follower {
    filter: FlowFilterSet,
    flows: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    lost: u64,
}

impl Follower {
    /// Sends one flow without waiting; reports earlier losses first.
    fn offer(&mut self, flow: &Flow) {
        if !self.filter.matches(flow) {
            return;
        }
        if self.lost > 0 {
            let lost = response(get_flows_response::Response::Lost(LostFlows {
                count: self.lost,
            }));
            if self.flows.try_send(Ok(lost)).is_err() {
                self.lost += 1;
                return;
            }
            self.lost = 0;
        }
        let item = response(get_flows_response::Response::Flow(flow.clone()));
        if self.flows.try_send(Ok(item)).is_err() {
            self.lost += 1;
        }
    }
}

fn response(inner: get_flows_response::Response) -> GetFlowsResponse {
    GetFlowsResponse {
        response: Some(inner),
    }
}

/// Runs until both input channels are closed or `stop` turns true. Stopping
/// drops every watcher's and follower's channel, which ends their streams, so
/// a relay shuts down promptly even with clients attached.
pub async fn run(
    mut engine: Engine,
    config: AggregatorConfig,
    mut ingest: mpsc::Receiver<IngestEvent>,
    mut commands: mpsc::Receiver<Command>,
    mut metadata: Option<watch::Receiver<Arc<Metadata>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut watchers: Vec<Watcher> = Vec::new();
    let mut followers: Vec<Follower> = Vec::new();
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut ingest_open, mut commands_open) = (true, true);

    while ingest_open || commands_open {
        tokio::select! {
            event = ingest.recv(), if ingest_open => match event {
                Some(event) => handle_ingest(&mut engine, &mut followers, event),
                None => ingest_open = false,
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => handle_command(&mut engine, &config, &mut watchers, &mut followers, command),
                None => commands_open = false,
            },
            changed = next_metadata(&mut metadata) => match changed {
                Some(fresh) => engine.set_metadata(fresh),
                None => metadata = None,
            },
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tick.tick() => {
                engine.advance(now_ns());
                publish(&mut engine, &mut watchers);
                followers.retain(|f| !f.flows.is_closed());
            }
        }
    }
}

async fn next_metadata(rx: &mut Option<watch::Receiver<Arc<Metadata>>>) -> Option<Arc<Metadata>> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

fn handle_ingest(engine: &mut Engine, followers: &mut [Follower], event: IngestEvent) {
    let now = now_ns();
    match event {
        IngestEvent::Connected { node } => engine.node_connected(&node, now),
        IngestEvent::Disconnected { node } => engine.node_disconnected(&node, now),
        IngestEvent::Batch(batch) => {
            if followers.is_empty() {
                engine.ingest_batch(batch, None);
            } else {
                let mut forward = |flow: &Flow| {
                    for follower in followers.iter_mut() {
                        follower.offer(flow);
                    }
                };
                engine.ingest_batch(batch, Some(&mut forward));
            }
        }
    }
}

fn handle_command(
    engine: &mut Engine,
    config: &AggregatorConfig,
    watchers: &mut Vec<Watcher>,
    followers: &mut Vec<Follower>,
    command: Command,
) {
    match command {
        Command::GetFlows {
            number,
            since_ns,
            until_ns,
            follow,
            filter,
            reply,
        } => {
            let wants_history = number > 0 || since_ns > 0;
            let history = if wants_history {
                engine.flows(number, since_ns, until_ns, &mut |f| filter.matches(f))
            } else {
                Vec::new()
            };
            // Registering the follower in the same step as reading the history
            // means no flow falls between the two, and none comes twice.
            let follow = follow.then(|| {
                let (tx, rx) = mpsc::channel(config.follower_buffer);
                followers.push(Follower {
                    filter,
                    flows: tx,
                    lost: 0,
                });
                rx
            });
            let _ = reply.send(FlowsReply { history, follow });
        }
        Command::GetGraph {
            zoom,
            namespaces,
            reply,
        } => {
            let _ = reply.send(engine.graph_snapshot(zoom, &namespaces));
        }
        Command::WatchGraph {
            zoom,
            namespaces,
            updates,
        } => {
            let mut watcher = Watcher {
                zoom,
                namespaces,
                updates,
                needs_snapshot: true,
            };
            send_snapshot(engine, &mut watcher);
            watchers.push(watcher);
        }
        Command::GetStatus { reply } => {
            let mut status = engine.status();
            // Live: "since" times are wall-clock, so the report's time is too.
            status.time_ns = status.time_ns.max(now_ns());
            status.watchers = u32::try_from(watchers.len() + followers.len()).unwrap_or(u32::MAX);
            let _ = reply.send(status);
        }
        Command::GetMetrics { reply } => {
            let mut metrics = engine.metrics();
            metrics.watchers = (watchers.len() + followers.len()) as u64;
            let _ = reply.send(metrics);
        }
        Command::Explain { flow, reply } => {
            let _ = reply.send(crate::explain::explain_flow(engine.metadata(), &flow));
        }
    }
}

fn send_snapshot(engine: &Engine, watcher: &mut Watcher) {
    let snapshot = engine.graph_snapshot(watcher.zoom, &watcher.namespaces);
    watcher.needs_snapshot = watcher.updates.try_send(Ok(snapshot)).is_err();
}

fn publish(engine: &mut Engine, watchers: &mut Vec<Watcher>) {
    watchers.retain(|w| !w.updates.is_closed());
    if watchers.is_empty() {
        // Building deltas costs real time on a big graph; nobody would read them.
        engine.discard_deltas();
        return;
    }
    let deltas = engine.take_deltas();
    for watcher in watchers.iter_mut() {
        if watcher.needs_snapshot {
            send_snapshot(engine, watcher);
            continue;
        }
        let delta = match watcher.zoom {
            Zoom::Workload => &deltas.workload,
            Zoom::Namespace => &deltas.namespace,
            Zoom::Pod => match &deltas.pod {
                Some(pod) => pod,
                None => continue,
            },
        };
        let update = if watcher.namespaces.is_empty() {
            delta.clone()
        } else {
            filter_update(delta, &watcher.namespaces)
        };
        if is_empty_update(&update) {
            continue;
        }
        if watcher.updates.try_send(Ok(update)).is_err() {
            watcher.needs_snapshot = true;
        }
    }
}

fn is_empty_update(update: &GraphUpdate) -> bool {
    update.nodes.is_empty()
        && update.edges.is_empty()
        && update.removed_nodes.is_empty()
        && update.removed_edges.is_empty()
}

/// Wall clock in Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
