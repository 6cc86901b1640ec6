//! The explorer as a value: what the relay said, what the user is looking at,
//! and how keys change either. No terminal and no I/O live here: the runner
//! feeds [`App::apply`] with [`Event`]s and [`App::handle_key`] with keys and
//! acts on the [`Effect`] it gets back; [`crate::ui::draw`] paints it. Tests
//! drive it the same way with ratatui's `TestBackend`.
//!
//! - `model`: the graph cut down to what the map shows, one edge per pair.
//! - `series`: rate and latency histories for the details pane.
//! - `keys`: what every key does, and the `:` commands.
//! - `why`: `w`, the explanation of a dropped flow and its overlay.

mod keys;
pub mod model;
pub mod series;
mod why;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use skymap_proto::filter::{FlowFilterSet, parse_expression};
use skymap_proto::names::sanitize;
use skymap_proto::v1::{Flow, FlowFilter, StatusResponse};
use skymap_themes::{ColorDepth, Theme};
use tui_input::Input;
use tui_tree_widget::TreeState;

use crate::live::{ConnState, Event, Subscription};
use crate::map::{Glyphs, Layout, MapEdge, MapNode, Rect, layout};
use crate::state::{FlowLog, NamespaceFilter, ServiceGraph, Zoom};
use crate::ui::map::{clamp_offset, scroll_into_view, scroll_to_rect};
use crate::ui::style::Styles;
use model::{MapModel, MapOptions};
use series::Series;

pub use keys::{HELP, KeyHelp};
pub use why::{Answer, Why};

/// The main pane's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Map,
    Flows,
    Drops,
    Dns,
    Nodes,
}

impl View {
    pub const ALL: [View; 5] = [View::Map, View::Flows, View::Drops, View::Dns, View::Nodes];

    pub fn name(self) -> &'static str {
        match self {
            View::Map => "map",
            View::Flows => "flows",
            View::Drops => "drops",
            View::Dns => "dns",
            View::Nodes => "nodes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which pane the keys go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Tree,
    Main,
    Details,
}

/// What is selected on the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Node(String),
    /// All edges from one node to another.
    Pair(String, String),
}

/// What the runner must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    Quit,
    /// Reopen the relay streams (zoom or namespace changed).
    Resubscribe(Subscription),
    /// Ask the relay why this flow was dropped; the answer goes to
    /// [`App::explained`].
    Explain(Box<Flow>),
    /// Find the newest flow matching this filter in the relay's history,
    /// then explain it (an edge whose drops left the explorer's log).
    ExplainNewest(Box<FlowFilter>),
    /// Put this text on the clipboard (OSC 52, so it works over SSH).
    Copy(String),
    /// Write this text to a new file in the current directory.
    Save {
        file_name: String,
        text: String,
    },
}

/// A line being typed at the bottom: a `:` command or a `/` filter.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub kind: PromptKind,
    pub input: Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    Command,
    Filter,
}

/// A one-line message at the bottom until the next key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
}

/// How the explorer starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the header names as the source, e.g. `http://127.0.0.1:4245`.
    pub source: String,
    pub glyphs: Glyphs,
    pub theme: Theme,
    pub depth: ColorDepth,
    /// Recent flows kept for the flows, drops and DNS views.
    pub flow_capacity: usize,
}

/// A layout to compute for a map shape.
#[derive(Debug, Clone)]
pub struct LayoutJob {
    pub shape: u64,
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
}

impl LayoutJob {
    pub fn run(&self) -> Layout {
        layout(&self.nodes, &self.edges)
    }
}

/// Events queued while paused, at most this many flows (the rest are
/// counted as lost); graph updates are always kept, they are deltas.
pub const PAUSE_QUEUE_FLOWS: usize = 50_000;
/// Pods remembered per workload for the tree.
const PODS_PER_WORKLOAD: usize = 64;

/// What arrives while paused.
#[derive(Debug, Default)]
struct Paused {
    events: VecDeque<Event>,
    /// Flows among `events`, kept so the bound is checked in constant time.
    flows: usize,
}

/// The whole explorer state.
#[derive(Debug)]
pub struct App {
    pub source: String,
    pub conn: ConnState,
    pub graph: ServiceGraph,
    pub flows: FlowLog,
    pub status: Option<StatusResponse>,
    pub series: Series,
    /// Pod names seen in flows, per `ns/workload`.
    pub pods: BTreeMap<String, BTreeSet<String>>,
    /// Flows the relay or this client lost.
    pub lost: u64,

    pub view: View,
    pub pane: Pane,
    pub namespaces: NamespaceFilter,
    pub zoom: Zoom,
    pub hide_noise: bool,
    /// The map shows only this node and its neighbours.
    pub center: Option<String>,
    pub selection: Option<Selection>,
    pub tree: TreeState<String>,
    /// Namespaces the tree has opened by itself once.
    opened: BTreeSet<String>,
    /// Selected row per table view.
    pub rows: [usize; 5],
    pub details_scroll: u16,
    /// The flows view shows only the selection's flows (after `enter`).
    pub flows_follow_selection: bool,

    pub filter_text: String,
    pub filter: Option<FlowFilterSet>,
    pub prompt: Option<Prompt>,
    pub help: bool,
    pub help_scroll: u16,
    /// The `w` overlay.
    pub why: Option<Why>,
    paused: Option<Paused>,
    pub flash: Option<Flash>,

    pub styles: Styles,
    theme: Theme,
    pub glyphs: Glyphs,

    pub model: MapModel,
    model_stale: bool,
    pub layout: Option<Layout>,
    layout_shape: Option<u64>,
    /// Top-left map cell of the viewport.
    pub offset: (usize, usize),
    /// Size of the map's area in the last frame.
    pub map_area: (usize, usize),
    /// Centre the selection once the map's area is known (a new map).
    center_pending: bool,
    /// The user has picked something; until then the explorer moves the
    /// selection to the first dropped edge that appears.
    user_selected: bool,
}

impl App {
    pub fn new(options: Options) -> Self {
        Self {
            source: sanitize(&options.source).into_owned(),
            conn: ConnState::Connecting,
            graph: ServiceGraph::new(),
            flows: FlowLog::new(options.flow_capacity),
            status: None,
            series: Series::default(),
            pods: BTreeMap::new(),
            lost: 0,
            view: View::Map,
            pane: Pane::Main,
            namespaces: NamespaceFilter::All,
            zoom: Zoom::Workload,
            hide_noise: false,
            center: None,
            selection: None,
            tree: TreeState::default(),
            opened: BTreeSet::new(),
            rows: [0; 5],
            details_scroll: 0,
            flows_follow_selection: false,
            filter_text: String::new(),
            filter: None,
            prompt: None,
            help: false,
            help_scroll: 0,
            why: None,
            paused: None,
            flash: None,
            styles: Styles::new(&options.theme, options.depth),
            theme: options.theme,
            glyphs: options.glyphs,
            model: MapModel::default(),
            model_stale: true,
            layout: None,
            layout_shape: None,
            offset: (0, 0),
            map_area: (0, 0),
            center_pending: false,
            user_selected: false,
        }
    }

    /// What to ask the relay for.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            zoom: self.zoom.to_wire(),
            // The relay sends every namespace; the map cuts, so a namespace's
            // peers elsewhere stay visible.
            namespaces: Vec::new(),
            flows: true,
            last: 2_000,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Folds in one event from the relay link (queued while paused).
    pub fn apply(&mut self, event: Event) {
        if let Some(queue) = &mut self.paused {
            match event {
                // The header keeps telling the truth about the link.
                Event::State(state) => self.conn = state,
                Event::Status(status) => self.status = Some(status),
                Event::Flow(_) if queue.flows >= PAUSE_QUEUE_FLOWS => self.lost += 1,
                Event::Flow(flow) => {
                    queue.flows += 1;
                    queue.events.push_back(Event::Flow(flow));
                }
                other => queue.events.push_back(other),
            }
            return;
        }
        match event {
            Event::State(state) => {
                // On every (re)connection the relay replays its recent flows;
                // what the log held would otherwise appear twice.
                if matches!(state, ConnState::Connected { .. }) {
                    self.flows.clear();
                }
                self.conn = state;
            }
            Event::Graph(update) => {
                self.graph.apply(update);
                self.series.sample_graph(&self.graph);
                self.open_new_namespaces();
                self.model_stale = true;
            }
            Event::Flow(flow) => self.observe_flow(flow),
            Event::Lost(count) => {
                self.flows.record_lost(count);
                self.lost = self.lost.saturating_add(count);
            }
            Event::Status(status) => self.status = Some(status),
        }
    }

    fn observe_flow(&mut self, flow: Flow) {
        self.series.observe_flow(&flow);
        for endpoint in [&flow.source, &flow.destination].into_iter().flatten() {
            let Some(workload) = endpoint.workload.as_ref().filter(|w| !w.name.is_empty()) else {
                continue;
            };
            if endpoint.pod_name.is_empty() || endpoint.namespace.is_empty() {
                continue;
            }
            let key = series::node_key(&sanitize(&endpoint.namespace), &sanitize(&workload.name));
            let pods = self.pods.entry(key).or_default();
            if pods.len() < PODS_PER_WORKLOAD {
                pods.insert(sanitize(&endpoint.pod_name).into_owned());
            }
        }
        self.flows.push(flow);
    }

    /// Namespaces start open in the tree; after that the user decides.
    fn open_new_namespaces(&mut self) {
        for ns in self.graph.namespaces() {
            if self.opened.insert(ns.clone()) {
                self.tree.open(vec![format!("namespace:{ns}")]);
            }
        }
    }

    pub fn set_paused(&mut self, paused: bool) {
        match (paused, self.paused.take()) {
            (true, None) => self.paused = Some(Paused::default()),
            (true, Some(queue)) => self.paused = Some(queue),
            (false, Some(queue)) => {
                for event in queue.events {
                    self.apply(event);
                }
            }
            (false, None) => {}
        }
    }

    /// The map options in force.
    pub fn map_options(&self) -> MapOptions {
        MapOptions {
            namespaces: self.namespaces.clone(),
            hide_noise: self.hide_noise,
            center: self.center.clone(),
        }
    }

    /// Rebuilds the map model when the graph or the options changed, and
    /// returns the layout to compute when the map's shape changed. Cheap
    /// when nothing changed.
    pub fn prepare(&mut self) -> Option<LayoutJob> {
        if self.model_stale {
            self.model = model::build(&self.graph, &self.map_options());
            self.model_stale = false;
            if let Some(layout) = &mut self.layout {
                self.model.restyle(layout);
            }
            self.fix_selection();
            if !self.user_selected {
                self.follow_trouble();
            }
        }
        if self.layout_shape == Some(self.model.shape) {
            return None;
        }
        Some(LayoutJob {
            shape: self.model.shape,
            nodes: self.model.nodes.clone(),
            edges: self.model.edges.clone(),
        })
    }

    /// Takes a computed layout; ignored when the map has changed shape since.
    pub fn finish_layout(&mut self, shape: u64, mut layout: Layout) {
        if shape != self.model.shape {
            return;
        }
        self.model.restyle(&mut layout);
        let first = self.layout.is_none();
        self.layout = Some(layout);
        self.layout_shape = Some(shape);
        if first || self.selection.is_none() {
            self.select_default_node();
        }
        if first {
            self.center_pending = true;
        }
        self.map_area_changed();
    }

    /// A new selection or map waits to be centred in the next frame.
    pub fn wants_centering(&self) -> bool {
        self.center_pending
    }

    /// Brings the selection into view: centred on a new map (once the map's
    /// area is known), else by the smallest scroll.
    pub fn map_area_changed(&mut self) {
        let (w, h) = self.map_area;
        if w == 0 || h == 0 {
            return;
        }
        if self.center_pending
            && let (Some(layout), Some(id)) = (&self.layout, self.selected_node())
        {
            self.offset = crate::ui::map::center_on(layout, id, w, h);
            self.center_pending = false;
            return;
        }
        self.keep_selection_in_view();
    }

    /// [`App::prepare`] and the layout, here and now (tests, snapshots and
    /// small maps).
    pub fn settle(&mut self) {
        if let Some(job) = self.prepare() {
            let layout = job.run();
            self.finish_layout(job.shape, layout);
        }
    }

    /// Marks the model stale (options changed).
    pub(crate) fn invalidate(&mut self) {
        self.model_stale = true;
    }

    /// Drops a selection whose node or pair has left the map.
    fn fix_selection(&mut self) {
        let present = match &self.selection {
            Some(Selection::Node(id)) => self.model.nodes.iter().any(|n| &n.id == id),
            Some(Selection::Pair(from, to)) => self.model.pair(from, to).is_some(),
            None => true,
        };
        if !present {
            self.selection = None;
        }
        if self
            .center
            .as_ref()
            .is_some_and(|c| self.graph.node(c).is_none())
        {
            self.center = None;
            self.model_stale = true;
        }
    }

    /// The caller of the first dropped pair on the map, if any.
    fn first_dropped_caller(&self) -> Option<String> {
        self.model
            .pairs
            .values()
            .find(|p| p.health == crate::map::EdgeHealth::Dropped)
            .map(|p| p.from.clone())
    }

    /// Until the user picks something, the selection goes to the caller of
    /// the first dropped edge as soon as there is one.
    fn follow_trouble(&mut self) {
        if let Some(id) = self.first_dropped_caller()
            && self.selection.as_ref() != Some(&Selection::Node(id.clone()))
        {
            self.selection = Some(Selection::Node(id));
            self.center_pending = true;
        }
    }

    /// Selects the most interesting node: one end of a dropped pair, else
    /// the top-left box.
    fn select_default_node(&mut self) {
        let dropped = self.first_dropped_caller();
        let first = self
            .layout
            .as_ref()
            .and_then(crate::ui::map::first_node)
            .map(str::to_string);
        if let Some(id) = dropped.or(first) {
            self.selection = Some(Selection::Node(id));
        }
    }

    /// Scrolls the map so the selected node is visible.
    pub fn keep_selection_in_view(&mut self) {
        let (w, h) = self.map_area;
        let Some(layout) = &self.layout else { return };
        if w == 0 || h == 0 {
            return;
        }
        match &self.selection {
            Some(Selection::Node(id)) => {
                self.offset = scroll_into_view(layout, id, self.offset, w, h);
            }
            Some(Selection::Pair(from, to)) => {
                // The caller's box, then the edge's label (the callee when
                // the label is off the map), as far as both fit.
                self.offset = scroll_into_view(layout, from, self.offset, w, h);
                let route = layout
                    .routes
                    .iter()
                    .find(|r| r.from == *from && r.to == *to);
                match route.and_then(|r| r.label_at.map(|at| (at, r.label.as_deref()))) {
                    Some(((x, y), label)) => {
                        let label = Rect {
                            x,
                            y,
                            w: label.map_or(1, |l| l.chars().count() + 2),
                            h: 1,
                        };
                        self.offset = scroll_to_rect(layout, label, self.offset, w, h);
                    }
                    None => self.offset = scroll_into_view(layout, to, self.offset, w, h),
                }
            }
            None => self.offset = clamp_offset(layout, self.offset, w, h),
        }
    }

    /// The selected node, or the caller of the selected pair.
    pub fn selected_node(&self) -> Option<&str> {
        match &self.selection {
            Some(Selection::Node(id)) => Some(id),
            Some(Selection::Pair(from, _)) => Some(from),
            None => None,
        }
    }

    /// Applies a `/` filter expression; an empty one clears it.
    pub fn set_filter(&mut self, text: &str) -> Result<(), String> {
        let text = text.trim();
        if text.is_empty() {
            self.filter = None;
            self.filter_text.clear();
            return Ok(());
        }
        let (white, black) = parse_expression(text).map_err(|e| e.to_string())?;
        let set = FlowFilterSet::new(&white, &black).map_err(|e| e.to_string())?;
        self.filter = Some(set);
        self.filter_text = text.to_string();
        Ok(())
    }

    /// Recent flows in scope: the `/` filter and the namespace chosen with
    /// `:ns` (flows from or to it).
    pub fn flows_in_scope(&self) -> impl Iterator<Item = &Flow> {
        self.flows
            .iter()
            .filter(|f| self.filter.as_ref().is_none_or(|set| set.matches(f)))
            .filter(|f| self.in_namespace(f))
    }

    fn in_namespace(&self, flow: &Flow) -> bool {
        let NamespaceFilter::One(ns) = &self.namespaces else {
            return true;
        };
        [&flow.source, &flow.destination]
            .into_iter()
            .flatten()
            .any(|e| sanitize(&e.namespace) == ns.as_str())
    }

    /// Flows for the flows view: [`App::flows_in_scope`], and after `enter`
    /// on the map the selection (flows from or to the selected node, or
    /// along the selected pair).
    pub fn visible_flows(&self) -> Vec<&Flow> {
        let keys = self.selection_keys();
        self.flows_in_scope()
            .filter(|f| match &keys {
                None => true,
                Some((a, None)) => {
                    series::flow_key(f.source.as_ref()) == *a
                        || series::flow_key(f.destination.as_ref()) == *a
                }
                Some((a, Some(b))) => {
                    let (s, d) = (
                        series::flow_key(f.source.as_ref()),
                        series::flow_key(f.destination.as_ref()),
                    );
                    (s == *a && d == *b) || (s == *b && d == *a)
                }
            })
            .collect()
    }

    /// Flow keys of the selection, when the flows view should follow it.
    fn selection_keys(&self) -> Option<(String, Option<String>)> {
        if !self.follow_selection() {
            return None;
        }
        self.selected_keys()
    }

    /// Flow keys of the selected box, or of both ends of the selected edge.
    fn selected_keys(&self) -> Option<(String, Option<String>)> {
        let key = |id: &str| self.graph.node(model::graph_id(id)).map(series::graph_key);
        match &self.selection {
            Some(Selection::Node(id)) => Some((key(id)?, None)),
            Some(Selection::Pair(from, to)) => Some((key(from)?, Some(key(to)?))),
            None => None,
        }
    }

    /// The flows view narrows to the selection only at workload zoom, where
    /// flow and node names agree, and only when the user drilled in.
    fn follow_selection(&self) -> bool {
        self.zoom == Zoom::Workload && self.flows_follow_selection
    }

    pub fn theme_name(&self) -> &str {
        &self.theme.name
    }

    pub(crate) fn set_theme(&mut self, theme: Theme) {
        self.styles = Styles::new(&theme, self.styles.depth());
        self.theme = theme;
    }

    pub fn flash(&mut self, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            error: false,
        });
    }

    pub fn flash_error(&mut self, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            error: true,
        });
    }
}
