//! `w`: why was this dropped? Picks the dropped flow behind what is
//! selected (a flow or drop row, an edge or a box on the map), asks the
//! runner to have the relay explain it, and keeps the answer for the
//! overlay, whose keys copy or save the suggested policy.

use crossterm::event::{KeyCode, KeyEvent};
use skymap_proto::names::{protocol_name, sanitize};
use skymap_proto::v1::{Explanation, Flow, FlowFilter, Verdict};

use super::model::graph_id;
use super::series::{self, flow_key};
use super::{App, Effect, Selection, View};
use crate::state::Zoom;

/// The overlay: what is being explained and the relay's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    /// "shop/frontend → kube-system/kube-dns 53/UDP NETFILTER_DROP".
    pub title: String,
    pub answer: Answer,
    pub scroll: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Waiting,
    Ready(Explanation),
    Failed(String),
}

impl App {
    /// `w`: explain the dropped flow behind the selection.
    pub(super) fn why(&mut self) -> Effect {
        if let Some(flow) = self.dropped_flow_in_view() {
            self.why = Some(Why {
                title: flow_title(&flow),
                answer: Answer::Waiting,
                scroll: 0,
            });
            return Effect::Explain(Box::new(flow));
        }
        // The edge's drops may have left the explorer's log: the relay keeps
        // a longer history.
        if let Some(filter) = self.dropped_edge_filter() {
            self.why = Some(Why {
                title: format!(
                    "{} → {} DROPPED",
                    filter.source_workload.concat(),
                    filter.destination_workload.concat()
                ),
                answer: Answer::Waiting,
                scroll: 0,
            });
            return Effect::ExplainNewest(Box::new(filter));
        }
        self.flash_error(
            "nothing dropped here to explain: select a dropped edge, drop or flow (w)",
        );
        Effect::None
    }

    /// For a map edge with drops at workload zoom: the filter for its
    /// dropped flows in the relay's history.
    fn dropped_edge_filter(&self) -> Option<FlowFilter> {
        if self.view != View::Map || self.zoom != Zoom::Workload {
            return None;
        }
        let Some(Selection::Pair(from, to)) = &self.selection else {
            return None;
        };
        let (from_node, to_node) = (
            self.graph.node(graph_id(from))?,
            self.graph.node(graph_id(to))?,
        );
        let dropped = self
            .graph
            .edges_from(&from_node.id)
            .any(|edge| edge.destination == to_node.id && !edge.drops.is_empty());
        dropped.then(|| FlowFilter {
            source_workload: vec![series::graph_key(from_node)],
            destination_workload: vec![series::graph_key(to_node)],
            verdict: vec![Verdict::Dropped as i32],
            ..FlowFilter::default()
        })
    }

    /// The relay's answer to the last `w` (ignored if the overlay closed).
    pub fn explained(&mut self, answer: Result<Explanation, String>) {
        if let Some(why) = &mut self.why {
            why.answer = match answer {
                Ok(explanation) => Answer::Ready(explanation),
                Err(e) => Answer::Failed(e),
            };
        }
    }

    /// The flow the relay's history gave for an edge (see
    /// [`Effect::ExplainNewest`]): the overlay names it.
    pub fn explaining(&mut self, flow: &Flow) {
        if let Some(why) = &mut self.why {
            why.title = flow_title(flow);
        }
    }

    /// Keys while the overlay is open.
    pub(super) fn why_key(&mut self, key: KeyEvent) -> Effect {
        let Some(why) = &mut self.why else {
            return Effect::None;
        };
        let yaml = match &why.answer {
            Answer::Ready(e) if !e.suggested_policy_yaml.is_empty() => {
                Some(clean_lines(&e.suggested_policy_yaml))
            }
            _ => None,
        };
        match key.code {
            KeyCode::Down | KeyCode::Char('j') => why.scroll = why.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => why.scroll = why.scroll.saturating_sub(1),
            KeyCode::Char('g') => why.scroll = 0,
            KeyCode::Char('c') => match yaml {
                Some(text) => return Effect::Copy(text),
                None => self.flash_error("no policy to copy"),
            },
            KeyCode::Char('s') => match yaml {
                Some(text) => {
                    return Effect::Save {
                        file_name: format!("{}.yaml", suggestion_name(&text)),
                        text,
                    };
                }
                None => self.flash_error("no policy to save"),
            },
            KeyCode::Esc | KeyCode::Char('q' | 'w') => self.why = None,
            _ => {}
        }
        Effect::None
    }

    /// The newest dropped flow behind the current view's selection.
    fn dropped_flow_in_view(&self) -> Option<Flow> {
        let dropped = |f: &&Flow| f.verdict == Verdict::Dropped as i32;
        match self.view {
            View::Flows => {
                let flows = self.visible_flows();
                let row = self.rows[View::Flows.index()].min(flows.len().checked_sub(1)?);
                flows
                    .get(row)
                    .filter(|f| f.verdict == Verdict::Dropped as i32)
                    .map(|f| (*f).clone())
            }
            View::Drops => {
                let rows = crate::ui::tables::drop_rows(self);
                let row =
                    rows.get(self.rows[View::Drops.index()].min(rows.len().checked_sub(1)?))?;
                let port = row.port.split('/').next().unwrap_or_default();
                self.flows
                    .iter()
                    .filter(dropped)
                    .find(|f| {
                        flow_key(f.source.as_ref()) == row.source
                            && flow_key(f.destination.as_ref()) == row.destination
                            && f.drop_reason == row.reason
                            && f.destination
                                .as_ref()
                                .is_some_and(|d| d.port.to_string() == port)
                    })
                    .cloned()
            }
            View::Map => {
                let (from, to) = self.selected_keys()?;
                self.flows
                    .iter()
                    .filter(dropped)
                    .find(|f| {
                        let (s, d) = (
                            flow_key(f.source.as_ref()),
                            flow_key(f.destination.as_ref()),
                        );
                        match &to {
                            Some(to) => s == from && d == *to,
                            None => s == from || d == from,
                        }
                    })
                    .cloned()
            }
            View::Dns | View::Nodes => None,
        }
    }
}

/// "shop/frontend → kube-system/kube-dns 53/UDP NETFILTER_DROP".
fn flow_title(flow: &Flow) -> String {
    let end = |e: Option<&skymap_proto::v1::Endpoint>| {
        let key = flow_key(e);
        if !key.is_empty() {
            return key;
        }
        e.and_then(|e| skymap_proto::names::ip_from_bytes(&e.ip))
            .map_or_else(|| "?".to_owned(), |ip| ip.to_string())
    };
    let port = flow.destination.as_ref().map_or(0, |d| d.port);
    let protocol = protocol_name(flow.l4.as_ref().map_or(0, |l4| l4.protocol));
    format!(
        "{} → {} {port}/{protocol} {}",
        end(flow.source.as_ref()),
        end(flow.destination.as_ref()),
        sanitize(&flow.drop_reason)
    )
}

/// `text` with control characters and escape sequences replaced line by
/// line: what is copied or saved came from the relay, and ends up pasted
/// into a terminal or applied to a cluster.
fn clean_lines(text: &str) -> String {
    text.lines().map(|line| sanitize(line) + "\n").collect()
}

/// The first `name:` under `metadata:` of the suggested YAML, made safe for
/// a file name.
fn suggestion_name(yaml: &str) -> String {
    let name = yaml
        .lines()
        .find_map(|line| line.strip_prefix("  name: "))
        .unwrap_or("skymap-allow");
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if safe.is_empty() || safe.starts_with('.') {
        "skymap-allow".to_owned()
    } else {
        safe
    }
}
