//! What every key does, the `:` commands, and the help table that lists
//! them (the same table the README shows).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tui_input::{Input, InputRequest};

use super::model::graph_id;
use super::{App, Effect, Pane, Prompt, PromptKind, Selection, View};
use crate::map::FOCUS_OTHERS_ID;
use crate::state::{NamespaceFilter, Zoom};
use crate::ui::map::{Direction, center_on, neighbour};

/// One line of the help screen.
#[derive(Debug, Clone, Copy)]
pub struct KeyHelp {
    pub keys: &'static str,
    pub action: &'static str,
}

/// Every key, in the order the help screen lists them.
pub const HELP: &[KeyHelp] = &[
    KeyHelp {
        keys: "?",
        action: "this help (any key closes it)",
    },
    KeyHelp {
        keys: "q  ctrl-c",
        action: "quit",
    },
    KeyHelp {
        keys: ":",
        action: "commands: map flows drops dns nodes | ns [NAME] | theme NAME | zoom LEVEL | q",
    },
    KeyHelp {
        keys: "/",
        action: "filter like `skymap observe`: verdict:DROPPED ns:shop !dns:x; empty clears",
    },
    KeyHelp {
        keys: "esc",
        action: "back: leave focus, clear the filter, return to the map",
    },
    KeyHelp {
        keys: "tab  shift-tab",
        action: "move focus: tree, main pane, details",
    },
    KeyHelp {
        keys: "enter",
        action: "drill in: a namespace; a box (its neighbours); an edge or drop (its flows)",
    },
    KeyHelp {
        keys: "arrows  hjkl",
        action: "move: between boxes on the map, rows in tables and the tree",
    },
    KeyHelp {
        keys: "HJKL  shift-arrows",
        action: "pan the map",
    },
    KeyHelp {
        keys: "]  [",
        action: "next / previous edge of the selected box",
    },
    KeyHelp {
        keys: "c",
        action: "centre the map on the selection",
    },
    KeyHelp {
        keys: "w",
        action: "why dropped: explain the selected drop; c copies, s saves the fix",
    },
    KeyHelp {
        keys: "f",
        action: "focus: the selected box and its neighbours only (again: all)",
    },
    KeyHelp {
        keys: "x",
        action: "hide / show noise (DNS servers, host endpoints)",
    },
    KeyHelp {
        keys: "+  -",
        action: "zoom in / out: namespaces, workloads, pods",
    },
    KeyHelp {
        keys: "0",
        action: "all namespaces",
    },
    KeyHelp {
        keys: "1 2 3 4 5",
        action: "views: map, flows, drops, dns, nodes",
    },
    KeyHelp {
        keys: "g  G  pgup  pgdn",
        action: "top, bottom, page up / down in tables",
    },
    KeyHelp {
        keys: "p",
        action: "pause / resume (updates queue while paused)",
    },
];

/// Cells one pan step moves.
const PAN: usize = 8;

impl App {
    /// Acts on one key; returns what the runner must do.
    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        let before = self.selection.clone();
        let effect = self.key(key);
        if self.selection != before {
            self.user_selected = true;
        }
        effect
    }

    fn key(&mut self, key: KeyEvent) -> Effect {
        if key.kind == KeyEventKind::Release {
            return Effect::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        self.flash = None;
        if self.prompt.is_some() {
            return self.prompt_key(key);
        }
        if self.help {
            match key.code {
                KeyCode::Down | KeyCode::Char('j') => {
                    self.help_scroll = self.help_scroll.saturating_add(1)
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    self.help_scroll = self.help_scroll.saturating_sub(1)
                }
                _ => self.help = false,
            }
            return Effect::None;
        }
        if self.why.is_some() {
            return self.why_key(key);
        }
        match key.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Char('w') => return self.why(),
            KeyCode::Char('?') => {
                self.help = true;
                self.help_scroll = 0;
            }
            KeyCode::Char(':') => self.open_prompt(PromptKind::Command, String::new()),
            KeyCode::Char('/') => {
                let current = self.filter_text.clone();
                self.open_prompt(PromptKind::Filter, current);
            }
            KeyCode::Char('p') => {
                let paused = !self.is_paused();
                self.set_paused(paused);
            }
            KeyCode::Char('0') => return self.set_namespaces(NamespaceFilter::All),
            KeyCode::Char(c @ '1'..='5') => {
                let index = usize::from(c as u8 - b'1');
                self.view = View::ALL[index];
                self.pane = Pane::Main;
            }
            KeyCode::Char('+') => return self.zoom_step(true),
            KeyCode::Char('-') => return self.zoom_step(false),
            KeyCode::Char('x') => {
                self.hide_noise = !self.hide_noise;
                self.invalidate();
                self.flash(if self.hide_noise {
                    "hiding noise: DNS servers and host endpoints (x shows them)"
                } else {
                    "showing everything"
                });
            }
            KeyCode::Char('f') => self.toggle_focus(),
            KeyCode::Tab => self.pane = next_pane(self.pane, self.view, true),
            KeyCode::BackTab => self.pane = next_pane(self.pane, self.view, false),
            KeyCode::Esc => return self.back(),
            _ => return self.pane_key(key),
        }
        Effect::None
    }

    fn open_prompt(&mut self, kind: PromptKind, value: String) {
        self.prompt = Some(Prompt {
            kind,
            input: Input::new(value),
        });
    }

    fn prompt_key(&mut self, key: KeyEvent) -> Effect {
        let Some(prompt) = &mut self.prompt else {
            return Effect::None;
        };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let request = match key.code {
            KeyCode::Esc => {
                self.prompt = None;
                return Effect::None;
            }
            KeyCode::Enter => {
                let kind = prompt.kind;
                let text = prompt.input.value().to_string();
                self.prompt = None;
                return match kind {
                    PromptKind::Command => self.run_command(&text),
                    PromptKind::Filter => {
                        match self.set_filter(&text) {
                            Ok(()) if text.trim().is_empty() => self.flash("filter cleared"),
                            Ok(()) => {
                                self.flash(format!("filter: {}", self.filter_text));
                                if self.view == View::Map {
                                    self.view = View::Flows;
                                }
                            }
                            Err(e) => self.flash_error(format!("filter: {e}")),
                        }
                        Effect::None
                    }
                };
            }
            KeyCode::Char('w') if ctrl => Some(InputRequest::DeletePrevWord),
            KeyCode::Char('u') if ctrl => Some(InputRequest::DeleteLine),
            KeyCode::Char('a') if ctrl => Some(InputRequest::GoToStart),
            KeyCode::Char('e') if ctrl => Some(InputRequest::GoToEnd),
            KeyCode::Char(c) if !ctrl => Some(InputRequest::InsertChar(c)),
            KeyCode::Backspace => Some(InputRequest::DeletePrevChar),
            KeyCode::Delete => Some(InputRequest::DeleteNextChar),
            KeyCode::Left => Some(InputRequest::GoToPrevChar),
            KeyCode::Right => Some(InputRequest::GoToNextChar),
            KeyCode::Home => Some(InputRequest::GoToStart),
            KeyCode::End => Some(InputRequest::GoToEnd),
            _ => None,
        };
        if let Some(request) = request {
            prompt.input.handle(request);
        }
        Effect::None
    }

    /// Runs a `:` command.
    pub fn run_command(&mut self, text: &str) -> Effect {
        let mut words = text.split_whitespace();
        let Some(command) = words.next() else {
            return Effect::None;
        };
        let argument = words.next();
        let view = View::ALL.iter().copied().find(|v| v.name() == command);
        if let Some(view) = view {
            self.view = view;
            self.pane = Pane::Main;
            return Effect::None;
        }
        match (command, argument) {
            ("q" | "quit" | "q!", _) => Effect::Quit,
            ("help", _) => {
                self.help = true;
                Effect::None
            }
            ("ns" | "namespace", None) => self.set_namespaces(NamespaceFilter::All),
            ("ns" | "namespace", Some("all" | "-A")) => self.set_namespaces(NamespaceFilter::All),
            ("ns" | "namespace", Some(ns)) => {
                let known = self.graph.namespaces();
                if !known.iter().any(|k| k == ns) {
                    self.flash_error(format!(
                        "no namespace {ns:?} in the graph (known: {})",
                        known.join(", ")
                    ));
                    return Effect::None;
                }
                self.set_namespaces(NamespaceFilter::One(ns.to_string()))
            }
            ("theme", Some(name)) => {
                match skymap_themes::load(Some(name), &|k| std::env::var(k).ok()) {
                    Ok(theme) => {
                        self.set_theme(theme);
                        self.flash(format!("theme {name}"));
                    }
                    Err(e) => self.flash_error(e.to_string()),
                }
                Effect::None
            }
            ("theme", None) => {
                self.flash(format!(
                    "theme {} (builtin: {})",
                    self.theme_name(),
                    skymap_themes::builtin_names().join(", ")
                ));
                Effect::None
            }
            ("zoom", Some(level)) => {
                let zoom = match level {
                    "namespace" | "ns" => Zoom::Namespace,
                    "workload" | "wl" => Zoom::Workload,
                    "pod" => Zoom::Pod,
                    other => {
                        self.flash_error(format!(
                            "unknown zoom {other:?}: namespace, workload or pod"
                        ));
                        return Effect::None;
                    }
                };
                self.set_zoom(zoom)
            }
            _ => {
                self.flash_error(format!(
                    "unknown command :{} (try :map :flows :drops :dns :nodes :ns NAME :theme NAME :zoom LEVEL :q)",
                    text.trim()
                ));
                Effect::None
            }
        }
    }

    fn set_namespaces(&mut self, filter: NamespaceFilter) -> Effect {
        self.flash(match &filter {
            NamespaceFilter::All => "all namespaces".to_string(),
            NamespaceFilter::One(ns) => format!("namespace {ns} and its peers"),
        });
        self.namespaces = filter;
        self.center = None;
        self.invalidate();
        Effect::None
    }

    fn zoom_step(&mut self, inward: bool) -> Effect {
        let zoom = match (self.zoom, inward) {
            (Zoom::Namespace, true) | (Zoom::Pod, false) => Zoom::Workload,
            (Zoom::Workload | Zoom::Pod, true) => Zoom::Pod,
            (Zoom::Workload | Zoom::Namespace, false) => Zoom::Namespace,
        };
        self.set_zoom(zoom)
    }

    fn set_zoom(&mut self, zoom: Zoom) -> Effect {
        if zoom == self.zoom {
            return Effect::None;
        }
        self.zoom = zoom;
        self.center = None;
        self.selection = None;
        self.layout = None;
        self.layout_shape = None;
        // The relay replays its recent flows on the new streams; keeping the
        // old copies would count them twice. Edge ids change with the zoom,
        // so their histories go too.
        self.flows.clear();
        self.series = super::series::Series::default();
        self.invalidate();
        self.flash(format!(
            "zoom: {}",
            match zoom {
                Zoom::Namespace => "namespaces",
                Zoom::Workload => "workloads",
                Zoom::Pod => "pods",
            }
        ));
        Effect::Resubscribe(self.subscription())
    }

    fn toggle_focus(&mut self) {
        if self.center.take().is_some() {
            self.flash("showing every node");
        } else if let Some(id) = self.selected_node().map(str::to_string) {
            if id == FOCUS_OTHERS_ID {
                return;
            }
            self.flash("focus: the selection and its neighbours (f or esc: everything)");
            self.center = Some(graph_id(&id).to_string());
        }
        self.invalidate();
    }

    /// `esc`: undo the innermost thing.
    fn back(&mut self) -> Effect {
        if self.center.is_some() {
            self.center = None;
            self.invalidate();
        } else if self.flows_follow_selection && self.view == View::Flows {
            self.flows_follow_selection = false;
        } else if self.filter.is_some() {
            self.filter = None;
            self.filter_text.clear();
            self.flash("filter cleared");
        } else if self.view != View::Map {
            self.view = View::Map;
            self.pane = Pane::Main;
        } else if matches!(self.selection, Some(Selection::Pair(..))) {
            let from = self.selected_node().map(str::to_string);
            self.selection = from.map(Selection::Node);
        } else {
            self.pane = Pane::Main;
        }
        Effect::None
    }

    fn pane_key(&mut self, key: KeyEvent) -> Effect {
        match self.pane {
            Pane::Tree => self.tree_key(key),
            Pane::Details => {
                match key.code {
                    KeyCode::Down | KeyCode::Char('j') => {
                        self.details_scroll = self.details_scroll.saturating_add(1)
                    }
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.details_scroll = self.details_scroll.saturating_sub(1)
                    }
                    KeyCode::Char('g') => self.details_scroll = 0,
                    _ => {}
                }
                Effect::None
            }
            Pane::Main if self.view == View::Map => self.map_key(key),
            Pane::Main => self.table_key(key),
        }
    }

    fn tree_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Down | KeyCode::Char('j') => {
                self.tree.key_down();
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.tree.key_up();
            }
            KeyCode::Left | KeyCode::Char('h') => {
                self.tree.key_left();
            }
            KeyCode::Right | KeyCode::Char('l') => {
                self.tree.key_right();
            }
            KeyCode::Char(' ') => {
                self.tree.toggle_selected();
            }
            KeyCode::Enter => return self.tree_enter(),
            _ => {}
        }
        Effect::None
    }

    fn tree_enter(&mut self) -> Effect {
        let path = self.tree.selected().to_vec();
        match path.as_slice() {
            [ns] => {
                let ns = ns.strip_prefix("namespace:").unwrap_or(ns).to_string();
                self.set_namespaces(NamespaceFilter::One(ns))
            }
            [_, node] => {
                self.selection = Some(Selection::Node(node.clone()));
                self.view = View::Map;
                self.pane = Pane::Main;
                self.center_selection();
                Effect::None
            }
            [_, _, pod] => {
                let pod = pod.strip_prefix("pod-row:").unwrap_or(pod).to_string();
                match self.set_filter(&format!("pod:{pod}")) {
                    Ok(()) => {
                        self.view = View::Flows;
                        self.pane = Pane::Main;
                        self.flash(format!("filter: {}", self.filter_text));
                    }
                    Err(e) => self.flash_error(e),
                }
                Effect::None
            }
            _ => Effect::None,
        }
    }

    fn map_key(&mut self, key: KeyEvent) -> Effect {
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        let pan = |app: &mut App, dx: isize, dy: isize| {
            let x = app.offset.0.saturating_add_signed(dx * PAN as isize);
            let y = app.offset.1.saturating_add_signed(dy * PAN as isize / 2);
            if let Some(layout) = &app.layout {
                app.offset =
                    crate::ui::map::clamp_offset(layout, (x, y), app.map_area.0, app.map_area.1);
            }
        };
        let direction = match key.code {
            KeyCode::Left if shift => {
                pan(self, -1, 0);
                return Effect::None;
            }
            KeyCode::Right if shift => {
                pan(self, 1, 0);
                return Effect::None;
            }
            KeyCode::Up if shift => {
                pan(self, 0, -1);
                return Effect::None;
            }
            KeyCode::Down if shift => {
                pan(self, 0, 1);
                return Effect::None;
            }
            KeyCode::Char('H') => {
                pan(self, -1, 0);
                return Effect::None;
            }
            KeyCode::Char('L') => {
                pan(self, 1, 0);
                return Effect::None;
            }
            KeyCode::Char('K') => {
                pan(self, 0, -1);
                return Effect::None;
            }
            KeyCode::Char('J') => {
                pan(self, 0, 1);
                return Effect::None;
            }
            KeyCode::PageUp => {
                pan(self, 0, -3);
                return Effect::None;
            }
            KeyCode::PageDown => {
                pan(self, 0, 3);
                return Effect::None;
            }
            KeyCode::Left | KeyCode::Char('h') => Direction::Left,
            KeyCode::Right | KeyCode::Char('l') => Direction::Right,
            KeyCode::Up | KeyCode::Char('k') => Direction::Up,
            KeyCode::Down | KeyCode::Char('j') => Direction::Down,
            KeyCode::Char(']') => {
                self.cycle_pair(true);
                return Effect::None;
            }
            KeyCode::Char('[') => {
                self.cycle_pair(false);
                return Effect::None;
            }
            KeyCode::Char('c') => {
                self.center_selection();
                return Effect::None;
            }
            KeyCode::Enter => return self.map_enter(),
            _ => return Effect::None,
        };
        let Some(layout) = &self.layout else {
            return Effect::None;
        };
        let next = match self.selected_node() {
            Some(current) => neighbour(layout, current, direction).map(str::to_string),
            None => crate::ui::map::first_node(layout).map(str::to_string),
        };
        if let Some(id) = next {
            self.selection = Some(Selection::Node(id));
            self.details_scroll = 0;
            self.keep_selection_in_view();
        }
        Effect::None
    }

    fn map_enter(&mut self) -> Effect {
        match self.selection.clone() {
            Some(Selection::Node(id)) if id == FOCUS_OTHERS_ID => {
                self.center = None;
                self.invalidate();
            }
            Some(Selection::Node(_)) => self.toggle_focus(),
            Some(Selection::Pair(..)) => {
                self.flows_follow_selection = true;
                self.view = View::Flows;
            }
            None => {}
        }
        Effect::None
    }

    /// Walks the selected node's pairs: its calls out, then its callers.
    fn cycle_pair(&mut self, forward: bool) {
        let Some(node) = self.selected_node().map(str::to_string) else {
            return;
        };
        let mut pairs: Vec<(String, String)> = self
            .model
            .pairs
            .keys()
            .filter(|(from, _)| *from == node)
            .cloned()
            .collect();
        pairs.extend(
            self.model
                .pairs
                .keys()
                .filter(|(from, to)| *to == node && *from != node)
                .cloned(),
        );
        if pairs.is_empty() {
            self.flash("no edges at this box");
            return;
        }
        let current = match &self.selection {
            Some(Selection::Pair(from, to)) => pairs.iter().position(|(f, t)| f == from && t == to),
            _ => None,
        };
        let next = match (current, forward) {
            (None, true) => 0,
            (None, false) => pairs.len() - 1,
            (Some(i), true) => (i + 1) % pairs.len(),
            (Some(i), false) => (i + pairs.len() - 1) % pairs.len(),
        };
        let (from, to) = pairs[next].clone();
        self.selection = Some(Selection::Pair(from, to));
        self.details_scroll = 0;
    }

    fn center_selection(&mut self) {
        let (Some(layout), Some(id)) = (&self.layout, self.selected_node()) else {
            return;
        };
        self.offset = center_on(layout, id, self.map_area.0, self.map_area.1);
    }

    fn table_key(&mut self, key: KeyEvent) -> Effect {
        let row = &mut self.rows[self.view.index()];
        let page = 10;
        match key.code {
            KeyCode::Down | KeyCode::Char('j') => *row = row.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => *row = row.saturating_sub(1),
            KeyCode::PageDown => *row = row.saturating_add(page),
            KeyCode::PageUp => *row = row.saturating_sub(page),
            KeyCode::Char('g') | KeyCode::Home => *row = 0,
            KeyCode::Char('G') | KeyCode::End => *row = usize::MAX,
            KeyCode::Enter if self.view == View::Drops => return self.drop_enter(),
            _ => {}
        }
        Effect::None
    }

    /// `enter` on a drop row: its pair on the map, with its details.
    fn drop_enter(&mut self) -> Effect {
        let rows = crate::ui::tables::drop_rows(self);
        let index = self.rows[View::Drops.index()].min(rows.len().saturating_sub(1));
        if let Some(row) = rows.get(index) {
            self.selection = Some(Selection::Pair(
                self.model.map_source(&row.source_id),
                row.destination_id.clone(),
            ));
            self.view = View::Map;
            self.pane = Pane::Main;
            self.keep_selection_in_view();
        }
        Effect::None
    }
}

fn next_pane(pane: Pane, view: View, forward: bool) -> Pane {
    let order: &[Pane] = if view == View::Map {
        &[Pane::Tree, Pane::Main, Pane::Details]
    } else {
        &[Pane::Tree, Pane::Main]
    };
    let at = order.iter().position(|&p| p == pane).unwrap_or(0);
    let next = if forward {
        (at + 1) % order.len()
    } else {
        (at + order.len() - 1) % order.len()
    };
    order[next]
}
