//! A recording played into the explorer without a relay process: the relay's
//! own engine aggregates the flows in 5-second steps, and after each step the
//! app gets the graph as a relay would have sent it. Used by
//! `skymap snapshot --file/--demo` and by the app's tests, so a frame drawn
//! from a recording is the frame the live explorer would have shown at that
//! moment.

use std::sync::Arc;

use skymap_proto::jsonl::Record;
use skymap_proto::v1::{Flow, FlowBatch, Zoom};
use skymap_relay::engine::{Engine, EngineConfig};
use skymap_relay::metadata::Metadata;

use crate::app::App;
use crate::app::series::SLOT_NS;
use crate::live::{ConnState, Event};

/// The recording shipped for `skymap demo`: 150 s of the lab's demo scenario
/// in the DNS story, captured with `lab/capture-demo.sh`.
pub const DEMO_RECORDING: &str = include_str!("../../tests/fixtures/demo.jsonl");

/// What [`play`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Played {
    /// Flows given to the app (those up to the cut-off time).
    pub flows: u64,
    /// Recorded time of the first flow and of the moment shown.
    pub start_ns: i64,
    pub shown_ns: i64,
}

/// Feeds `flows` (sorted by time, as recordings are) up to `at_ns` after the
/// first one (all of them with `None`) into `app`, with graph updates every
/// 5 seconds of recorded time and a final one at the cut-off.
pub fn play(app: &mut App, flows: impl IntoIterator<Item = Flow>, at_ns: Option<i64>) -> Played {
    let zoom = app.zoom.to_wire();
    let config = EngineConfig {
        history_capacity: 10_000,
        pod_graph: zoom == Zoom::Pod,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Arc::new(Metadata::empty()));
    app.apply(Event::State(ConnState::Connected {
        since: tokio::time::Instant::now(),
    }));

    let mut played = Played {
        flows: 0,
        start_ns: 0,
        shown_ns: 0,
    };
    let mut start: Option<i64> = None;
    let mut next_step = i64::MIN;
    let mut batch = FlowBatch::default();
    let mut last_ns = 0;
    let mut nodes = std::collections::BTreeSet::new();
    for flow in flows {
        let origin = *start.get_or_insert(flow.time_ns);
        if at_ns.is_some_and(|at| flow.time_ns > origin.saturating_add(at)) {
            break;
        }
        if next_step == i64::MIN {
            next_step = (flow.time_ns.div_euclid(SLOT_NS) + 1) * SLOT_NS;
        }
        while flow.time_ns >= next_step {
            flush(&mut engine, &mut batch);
            step(app, &mut engine, zoom, next_step);
            next_step += SLOT_NS;
        }
        let node = if flow.node_name.is_empty() {
            "unknown"
        } else {
            flow.node_name.as_str()
        };
        if batch.node_name != node {
            flush(&mut engine, &mut batch);
            batch.node_name = node.to_string();
            if nodes.insert(batch.node_name.clone()) {
                engine.node_connected(&batch.node_name, flow.time_ns);
            }
        }
        last_ns = flow.time_ns;
        batch.flows.push(flow.clone());
        app.apply(Event::Flow(flow));
        played.flows += 1;
    }
    flush(&mut engine, &mut batch);
    let shown = match (start, at_ns) {
        (Some(origin), Some(at)) => origin.saturating_add(at),
        _ => last_ns,
    };
    step(app, &mut engine, zoom, shown);
    played.start_ns = start.unwrap_or(0);
    played.shown_ns = shown;
    played
}

fn flush(engine: &mut Engine, batch: &mut FlowBatch) {
    if !batch.flows.is_empty() {
        let node = batch.node_name.clone();
        let full = std::mem::take(batch);
        engine.ingest_batch(full, None);
        batch.node_name = node;
    }
}

fn step(app: &mut App, engine: &mut Engine, zoom: Zoom, now_ns: i64) {
    engine.advance(now_ns);
    app.apply(Event::Graph(engine.graph_snapshot(zoom, &[])));
    app.apply(Event::Status(engine.status()));
}

/// The demo recording's flows, in order; lines that do not parse (there are
/// none in the shipped file) are skipped.
pub fn demo_flows() -> impl Iterator<Item = Flow> {
    DEMO_RECORDING
        .lines()
        .filter_map(|line| match skymap_proto::jsonl::parse_line(line) {
            Ok(Record::Flow(flow)) => Some(flow),
            _ => None,
        })
}

/// The scenario the demo recording was captured from.
const DEMO_SCENARIO: &str = include_str!("../../lab/scenarios/demo.yaml");

/// The demo cluster's Kubernetes objects as the lab's relay saw them while
/// the recording was made (before the fix: the policies that drop the
/// frontend's DNS), so `w` in `skymap demo` explains the drops as a live
/// relay would.
pub fn demo_metadata() -> Result<Metadata, String> {
    let scenario = skymap_lab::scenario::Scenario::from_yaml_str(DEMO_SCENARIO, "demo.yaml")
        .map_err(|e| e.to_string())?;
    let objects = skymap_lab::parts::metadata("demo", &scenario.plan(), scenario.policies());
    let (metadata, _) =
        Metadata::from_json_str(&objects.to_string(), "demo.yaml").map_err(|e| e.to_string())?;
    Ok(metadata)
}
