//! Short histories for the details pane: per edge, the request (or flow) rate
//! the relay reported in each 5-second slot, and per caller → callee pair the
//! latencies of the flows that went by, so the pane can draw a sparkline and
//! a p50/p95/p99 chart over the last five minutes.
//!
//! Rates come from the graph (exact, whatever the flow stream lost); latency
//! percentiles over time need individual samples, which only the flow stream
//! carries, so they are as complete as that stream.

use std::collections::{HashMap, VecDeque};

use skymap_proto::names::sanitize;
use skymap_proto::v1::Flow;

use super::model::shown_rate;
use crate::state::{Node, NodeKind, ServiceGraph};

/// Width of one slot.
pub const SLOT_NS: i64 = 5_000_000_000;
/// Slots kept: five minutes.
pub const SLOTS: usize = 60;
/// Latency samples kept per pair and slot; enough for stable percentiles.
const SAMPLES_PER_SLOT: usize = 512;

/// A value per slot, newest last, at most [`SLOTS`] of them.
#[derive(Debug, Default, Clone)]
struct Ring<T> {
    slots: VecDeque<(i64, T)>,
}

impl<T: Default> Ring<T> {
    /// The entry for `slot`, created when new; slots older than the window
    /// fall off. A slot older than the newest kept one is not stored
    /// (returns `None`): late data does not rewrite history.
    fn at(&mut self, slot: i64) -> Option<&mut T> {
        match self.slots.back() {
            Some(&(newest, _)) if newest == slot => {}
            Some(&(newest, _)) if newest > slot => return None,
            _ => {
                self.slots.push_back((slot, T::default()));
                while self
                    .slots
                    .front()
                    .is_some_and(|&(s, _)| s <= slot - SLOTS as i64)
                {
                    self.slots.pop_front();
                }
            }
        }
        self.slots.back_mut().map(|(_, value)| value)
    }
}

/// Latency percentiles of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyPoint {
    pub slot: i64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
}

/// Rate and latency history; see the module docs.
#[derive(Debug, Default)]
pub struct Series {
    rates: HashMap<String, Ring<f64>>,
    latency: HashMap<(String, String), Ring<Vec<u32>>>,
}

impl Series {
    /// Records every edge's current rate in the slot of the graph's time.
    /// Edges that left the graph keep their history until it ages out.
    pub fn sample_graph(&mut self, graph: &ServiceGraph) {
        let slot = graph.time_ns().div_euclid(SLOT_NS);
        for edge in graph.edges() {
            let rate = shown_rate(edge);
            let ring = match self.rates.get_mut(&edge.id) {
                Some(ring) => ring,
                None => self.rates.entry(edge.id.clone()).or_default(),
            };
            if let Some(value) = ring.at(slot) {
                *value = rate;
            }
        }
        self.rates.retain(|_, ring| {
            ring.slots
                .back()
                .is_some_and(|&(s, _)| s > slot - SLOTS as i64)
        });
    }

    /// Keeps the latency of a flow that carries one (an HTTP or DNS response).
    pub fn observe_flow(&mut self, flow: &Flow) {
        let Some(latency) = flow
            .l7
            .as_ref()
            .map(|l7| l7.latency_ns)
            .filter(|&ns| ns > 0)
        else {
            return;
        };
        // The response travels server → client; the caller is its destination.
        let (client, server) = if flow.is_reply {
            (&flow.destination, &flow.source)
        } else {
            (&flow.source, &flow.destination)
        };
        let key = (flow_key(client.as_ref()), flow_key(server.as_ref()));
        let slot = flow.time_ns.div_euclid(SLOT_NS);
        let micros = u32::try_from(latency / 1_000).unwrap_or(u32::MAX);
        let ring = self.latency.entry(key).or_default();
        if let Some(samples) = ring.at(slot)
            && samples.len() < SAMPLES_PER_SLOT
        {
            samples.push(micros);
        }
    }

    /// The summed rate of `edges` per slot, oldest first, over the window
    /// ending at `now_ns`; slots with no sample are 0.
    pub fn rates<'a>(&self, edges: impl IntoIterator<Item = &'a str>, now_ns: i64) -> Vec<f64> {
        let newest = now_ns.div_euclid(SLOT_NS);
        let oldest = newest - SLOTS as i64 + 1;
        let mut sums = vec![0.0; SLOTS];
        for id in edges {
            let Some(ring) = self.rates.get(id) else {
                continue;
            };
            for &(slot, rate) in &ring.slots {
                if (oldest..=newest).contains(&slot) {
                    sums[(slot - oldest) as usize] += rate;
                }
            }
        }
        sums
    }

    /// Latency percentiles per slot for calls from any of `clients` (any
    /// caller when `None`) to any of `servers`, oldest first, only slots
    /// with samples. Keys are as [`node_key`] makes them, or `NS/` for a
    /// whole namespace (see [`key_matches`]).
    pub fn latency(&self, clients: Option<&[String]>, servers: &[String]) -> Vec<LatencyPoint> {
        let mut by_slot: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
        for ((client, server), ring) in &self.latency {
            let any = |wanted: &[String], key: &str| wanted.iter().any(|w| key_matches(w, key));
            if clients.is_some_and(|c| !any(c, client)) || !any(servers, server) {
                continue;
            }
            for (slot, samples) in &ring.slots {
                by_slot.entry(*slot).or_default().extend_from_slice(samples);
            }
        }
        by_slot
            .into_iter()
            .filter(|(_, samples)| !samples.is_empty())
            .map(|(slot, mut samples)| {
                samples.sort_unstable();
                let at = |q: f64| {
                    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
                    u64::from(samples[rank - 1])
                };
                LatencyPoint {
                    slot,
                    p50_us: at(0.50),
                    p95_us: at(0.95),
                    p99_us: at(0.99),
                }
            })
            .collect()
    }
}

/// Whether flow key `key` belongs to `wanted`: the same key, or any key in
/// the namespace when `wanted` is `NS/` (a node at namespace zoom).
pub fn key_matches(wanted: &str, key: &str) -> bool {
    match wanted.strip_suffix('/') {
        Some(namespace) => key
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.starts_with('/')),
        None => wanted == key,
    }
}

/// The flow key of a graph node: [`node_key`] of its namespace and name, or
/// `NS/` (every workload in it, see [`key_matches`]) for a namespace at
/// namespace zoom.
pub fn graph_key(node: &Node) -> String {
    if node.kind == NodeKind::Namespace {
        format!("{}/", node.name)
    } else {
        node_key(&node.namespace, &node.name)
    }
}

/// The key a graph node's flows are filed under: `ns/name` for workloads and
/// pods, the bare name (`world`, a node name) otherwise.
pub fn node_key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The same key for one end of a flow: its workload (or pod) in its
/// namespace, else its reserved identity. Sanitized, like the graph's names.
pub(crate) fn flow_key(endpoint: Option<&skymap_proto::v1::Endpoint>) -> String {
    let Some(endpoint) = endpoint else {
        return String::new();
    };
    let workload = endpoint.workload.as_ref().map_or("", |w| w.name.as_str());
    let name = if workload.is_empty() {
        &endpoint.pod_name
    } else {
        workload
    };
    if !endpoint.namespace.is_empty() && !name.is_empty() {
        return node_key(&sanitize(&endpoint.namespace), &sanitize(name));
    }
    sanitize(&endpoint.reserved).into_owned()
}

#[cfg(test)]
mod tests {
    use skymap_proto::v1::{Endpoint, Layer7, Workload};

    use super::*;

    fn endpoint(ns: &str, workload: &str) -> Endpoint {
        Endpoint {
            namespace: ns.to_string(),
            pod_name: format!("{workload}-0"),
            workload: Some(Workload {
                name: workload.to_string(),
                kind: "Deployment".to_string(),
            }),
            ..Endpoint::default()
        }
    }

    fn response(time_ns: i64, latency_ms: u64) -> Flow {
        Flow {
            time_ns,
            is_reply: true,
            // A reply travels server -> client.
            source: Some(endpoint("shop", "catalog")),
            destination: Some(endpoint("shop", "frontend")),
            l7: Some(Layer7 {
                latency_ns: latency_ms * 1_000_000,
                ..Layer7::default()
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn namespace_keys_match_their_workloads_only() {
        assert!(key_matches("shop/", "shop/frontend"));
        assert!(!key_matches("shop/", "shopping/frontend"));
        assert!(!key_matches("shop/", "shop"));
        assert!(key_matches("shop/frontend", "shop/frontend"));
        assert!(!key_matches("shop/frontend", "shop/frontend-v2"));
    }

    #[test]
    fn latency_percentiles_per_slot_and_by_caller() {
        let mut series = Series::default();
        for ms in 1..=100 {
            series.observe_flow(&response(7 * SLOT_NS + 1, ms));
        }
        // A later slot, slower.
        series.observe_flow(&response(8 * SLOT_NS, 400));
        // No latency: ignored.
        series.observe_flow(&response(8 * SLOT_NS, 0));

        let servers = vec!["shop/catalog".to_string()];
        let points = series.latency(Some(&["shop/frontend".to_string()]), &servers);
        assert_eq!(
            points,
            vec![
                LatencyPoint {
                    slot: 7,
                    p50_us: 50_000,
                    p95_us: 95_000,
                    p99_us: 99_000
                },
                LatencyPoint {
                    slot: 8,
                    p50_us: 400_000,
                    p95_us: 400_000,
                    p99_us: 400_000
                },
            ]
        );
        assert_eq!(series.latency(None, &["shop/".to_string()]).len(), 2);
        assert!(
            series
                .latency(Some(&["shop/cart".to_string()]), &servers)
                .is_empty()
        );
    }

    #[test]
    fn late_samples_do_not_rewrite_history_and_old_slots_age_out() {
        let mut ring: Ring<u32> = Ring::default();
        *ring.at(10).expect("new slot") = 1;
        assert!(ring.at(9).is_none(), "older than the newest slot");
        *ring.at(10 + SLOTS as i64).expect("a window later") = 2;
        assert_eq!(ring.slots.len(), 1, "slot 10 fell out of the window");
    }
}
