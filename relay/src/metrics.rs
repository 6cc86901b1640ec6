//! The relay's Prometheus page on `--metrics-listen`: what it reports and
//! how the engine's figures become metric families. The page is built at
//! scrape time: the HTTP task asks the aggregator for a [`RelayMetrics`]
//! (one `Command::GetMetrics`) and renders it, so nothing is counted twice
//! and ingest pays only for [`FlowCounts::count`].
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `skymap_flows_processed_total` | counter | `verdict` |
//! | `skymap_drop_total` | counter | `reason`, `protocol` |
//! | `skymap_lost_events_total` | counter | `node`, `stage` |
//! | `skymap_nodes_connected` | gauge | |
//! | `skymap_relay_watchers` | gauge | |
//! | `skymap_edge_latency_seconds` | histogram | `source`, `destination` |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use skymap_proto::metrics::{self, Exposition, Histogram, Kind, MetricsError, MetricsSource};
use skymap_proto::names::{protocol_name, verdict_name};
use skymap_proto::v1::{Flow, LossCounter, NodeState, StatusResponse, Verdict};
use tokio::sync::{mpsc, oneshot, watch};

use crate::aggregator::Command;
use crate::graph::{EdgeData, NodeData};

/// Upper bounds of the latency histogram buckets, in nanoseconds:
/// 1 ms to 10 s, as Hubble's and most HTTP histograms use.
pub const LATENCY_BOUNDS_NS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Distinct drop reasons counted by name; beyond it they count as
/// [`OTHER_REASON`], so a probe inventing reasons cannot grow the page
/// without limit.
pub const MAX_DROP_REASONS: usize = 512;
pub const OTHER_REASON: &str = "OTHER";

/// `Verdict` numbers 0..=7 and `Protocol` numbers 0..=5, which validation
/// guarantees before a flow is counted.
const VERDICTS: usize = 8;
const PROTOCOLS: usize = 6;

/// Flow records accepted since the relay started, by verdict, and the
/// dropped ones by reason and protocol. Counts every accepted record, as
/// `flows_total` in the status does (a flow seen at both ends counts twice
/// here, once on the graph).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowCounts {
    verdicts: [u64; VERDICTS],
    /// Reason → drops by protocol number.
    drops: BTreeMap<String, [u64; PROTOCOLS]>,
}

impl FlowCounts {
    /// Counts one validated flow.
    pub fn count(&mut self, flow: &Flow) {
        if let Some(slot) = index(flow.verdict).and_then(|v| self.verdicts.get_mut(v)) {
            *slot += 1;
        }
        if flow.verdict != Verdict::Dropped as i32 {
            return;
        }
        let mut reason = if flow.drop_reason.is_empty() {
            "UNKNOWN"
        } else {
            flow.drop_reason.as_str()
        };
        if !self.drops.contains_key(reason) {
            if self.drops.len() >= MAX_DROP_REASONS {
                reason = OTHER_REASON;
            }
            self.drops.entry(reason.to_string()).or_default();
        }
        let protocol = flow.l4.map_or(0, |l4| l4.protocol);
        if let Some(slot) = self
            .drops
            .get_mut(reason)
            .zip(index(protocol))
            .and_then(|(per_protocol, p)| per_protocol.get_mut(p))
        {
            *slot += 1;
        }
    }

    /// (verdict number, count) for every verdict, zeros included, so that
    /// `rate()` sees a series from the start.
    pub fn verdicts(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        (0i32..).zip(self.verdicts.iter().copied())
    }

    /// (reason, protocol number, count) for every pair seen.
    pub fn drops(&self) -> impl Iterator<Item = (&str, i32, u64)> + '_ {
        self.drops.iter().flat_map(|(reason, per_protocol)| {
            (0i32..)
                .zip(per_protocol.iter().copied())
                .filter(|(_, count)| *count > 0)
                .map(move |(protocol, count)| (reason.as_str(), protocol, count))
        })
    }
}

fn index(value: i32) -> Option<usize> {
    usize::try_from(value).ok()
}

/// Latency between two graph nodes at workload zoom, all their edges
/// (ports, protocols) together.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLatency {
    /// `namespace/workload`, or the node's id for the rest (`world`,
    /// `host:NODE`, `service:NAMESPACE/NAME`).
    pub source: String,
    pub destination: String,
    pub histogram: Histogram,
}

/// Everything the page shows, taken from the engine in one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayMetrics {
    pub flows: FlowCounts,
    /// Per node and stage, as `GetStatus` reports them.
    pub losses: Vec<LossCounter>,
    pub nodes_connected: u64,
    /// Graph watchers and flow followers; the aggregator fills it in.
    pub watchers: u64,
    /// Sorted by (source, destination).
    pub edge_latency: Vec<EdgeLatency>,
}

impl RelayMetrics {
    /// From the engine's status, its flow counts and its workload-zoom edges.
    pub fn collect<'a>(
        status: &StatusResponse,
        flows: &FlowCounts,
        edges: impl Iterator<Item = (&'a NodeData, &'a NodeData, &'a EdgeData)>,
    ) -> Self {
        let mut latency: BTreeMap<(&str, &str), Histogram> = BTreeMap::new();
        for (source, destination, edge) in edges {
            let Some(edge_latency) = edge.stats.latency.as_deref() else {
                continue;
            };
            let histogram = latency
                .entry((endpoint_label(source), endpoint_label(destination)))
                .or_insert_with(|| Histogram {
                    buckets: LATENCY_BOUNDS_NS
                        .iter()
                        .map(|&ns| (seconds(u128::from(ns)), 0))
                        .collect(),
                    count: 0,
                    sum: 0.0,
                });
            let counts = edge_latency.cumulative_counts(&LATENCY_BOUNDS_NS);
            for ((_, total), count) in histogram.buckets.iter_mut().zip(counts) {
                *total += count;
            }
            histogram.count += edge_latency.count();
            histogram.sum += seconds(edge_latency.sum_ns());
        }
        Self {
            flows: flows.clone(),
            losses: status.losses.clone(),
            nodes_connected: status
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Connected as i32)
                .count() as u64,
            watchers: u64::from(status.watchers),
            edge_latency: latency
                .into_iter()
                .map(|((source, destination), histogram)| EdgeLatency {
                    source: source.to_string(),
                    destination: destination.to_string(),
                    histogram,
                })
                .collect(),
        }
    }

    /// The page, in the text exposition format.
    pub fn render(&self) -> String {
        let mut page = Exposition::new();
        let flows = "skymap_flows_processed_total";
        page.family(
            flows,
            Kind::Counter,
            "Flow records the relay accepted from probes, by verdict.",
        );
        for (verdict, count) in self.flows.verdicts() {
            page.sample(flows, &[("verdict", verdict_name(verdict))], count);
        }

        let drops = "skymap_drop_total";
        page.family(
            drops,
            Kind::Counter,
            "Dropped flow records, by the kernel's (or policy's) drop reason and protocol.",
        );
        for (reason, protocol, count) in self.flows.drops() {
            let labels = [("reason", reason), ("protocol", protocol_name(protocol))];
            page.sample(drops, &labels, count);
        }

        let lost = "skymap_lost_events_total";
        page.family(
            lost,
            Kind::Counter,
            "Events lost on the way to the relay, by node and stage (probe-*, kernel-*, relay-*).",
        );
        for loss in &self.losses {
            let labels = [
                ("node", loss.node_name.as_str()),
                ("stage", loss.stage.as_str()),
            ];
            page.sample(lost, &labels, loss.count);
        }

        let nodes = "skymap_nodes_connected";
        page.family(
            nodes,
            Kind::Gauge,
            "Nodes whose probe is streaming to the relay.",
        );
        page.sample(nodes, &[], self.nodes_connected);

        let watchers = "skymap_relay_watchers";
        page.family(
            watchers,
            Kind::Gauge,
            "Clients watching the graph or following flows.",
        );
        page.sample(watchers, &[], self.watchers);

        let latency = "skymap_edge_latency_seconds";
        page.family(
            latency,
            Kind::Histogram,
            "Request to response latency (HTTP, DNS) between workloads.",
        );
        for edge in &self.edge_latency {
            let labels = [
                ("source", edge.source.as_str()),
                ("destination", edge.destination.as_str()),
            ];
            page.histogram(latency, &labels, &edge.histogram);
        }
        page.finish()
    }
}

/// A workload node as `namespace/workload`; other nodes by their id.
fn endpoint_label(node: &NodeData) -> &str {
    node.node
        .id
        .strip_prefix("workload:")
        .unwrap_or(&node.node.id)
}

fn seconds(ns: u128) -> f64 {
    ns as f64 / 1e9
}

/// Renders the page at each scrape with figures from the aggregator.
#[derive(Debug, Clone)]
struct Scraper {
    commands: mpsc::Sender<Command>,
}

impl MetricsSource for Scraper {
    async fn render(&self) -> Result<String, String> {
        let stopping = || "the relay is shutting down".to_string();
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::GetMetrics { reply })
            .await
            .map_err(|_| stopping())?;
        let metrics = answer.await.map_err(|_| stopping())?;
        Ok(metrics.render())
    }
}

/// Binds `listen` and serves the page until `stop` turns true; returns the
/// bound address.
pub async fn start(
    listen: &str,
    commands: mpsc::Sender<Command>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, MetricsError> {
    let (listener, addr) = metrics::bind(listen).await?;
    let source = Arc::new(Scraper { commands });
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = metrics::serve(listener, source, shutdown).await {
            tracing::error!("metrics server on {addr}: {e}");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;
    use skymap_proto::v1::{Layer4, Protocol};

    fn flow(verdict: Verdict, reason: &str, protocol: Protocol) -> Flow {
        Flow {
            verdict: verdict as i32,
            drop_reason: reason.to_string(),
            l4: Some(Layer4 {
                protocol: protocol as i32,
                ..Layer4::default()
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn counts_verdicts_and_drops_by_reason_and_protocol() {
        let mut counts = FlowCounts::default();
        for f in [
            flow(Verdict::Forwarded, "", Protocol::Tcp),
            flow(Verdict::Forwarded, "", Protocol::Udp),
            flow(Verdict::Dropped, "NETFILTER_DROP", Protocol::Udp),
            flow(Verdict::Dropped, "NETFILTER_DROP", Protocol::Udp),
            flow(Verdict::Dropped, "NETFILTER_DROP", Protocol::Tcp),
            flow(Verdict::Dropped, "", Protocol::Icmpv4),
        ] {
            counts.count(&f);
        }
        let verdicts: Vec<(i32, u64)> = counts.verdicts().collect();
        assert_eq!(
            verdicts,
            vec![
                (0, 0),
                (1, 2),
                (2, 4),
                (3, 0),
                (4, 0),
                (5, 0),
                (6, 0),
                (7, 0)
            ]
        );
        let drops: Vec<(&str, i32, u64)> = counts.drops().collect();
        assert_eq!(
            drops,
            vec![
                ("NETFILTER_DROP", Protocol::Tcp as i32, 1),
                ("NETFILTER_DROP", Protocol::Udp as i32, 2),
                ("UNKNOWN", Protocol::Icmpv4 as i32, 1),
            ]
        );
    }

    #[test]
    fn reasons_beyond_the_cap_count_as_other() {
        let mut counts = FlowCounts::default();
        for i in 0..MAX_DROP_REASONS + 3 {
            counts.count(&flow(Verdict::Dropped, &format!("R{i}"), Protocol::Tcp));
        }
        counts.count(&flow(Verdict::Dropped, "R0", Protocol::Tcp));
        let drops: Vec<(&str, i32, u64)> = counts.drops().collect();
        assert_eq!(drops.len(), MAX_DROP_REASONS + 1);
        assert!(drops.contains(&(OTHER_REASON, Protocol::Tcp as i32, 3)));
        assert!(drops.contains(&("R0", Protocol::Tcp as i32, 2)));
    }

    #[test]
    fn latency_buckets_are_cumulative_at_the_bounds() {
        let mut latency = Latency::default();
        for ms in [3, 3, 40, 700, 20_000] {
            latency.record(ms * 1_000_000);
        }
        assert_eq!(
            latency.cumulative_counts(&LATENCY_BOUNDS_NS),
            vec![0, 0, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]
        );
        assert_eq!(latency.sum_ns(), 20_746_000_000);

        // A value on a bound counts below it when min and max pin it down.
        let mut exact = Latency::default();
        exact.record(1_000_000);
        assert_eq!(exact.cumulative_counts(&LATENCY_BOUNDS_NS[..2]), vec![1, 1]);
    }
}
