//! The explorer and the text output of skymap's commands; the binary is
//! `main.rs`.
//!
//! - [`app`]: the explorer's state and what keys do to it (no terminal).
//! - [`ui`]: drawing the explorer with ratatui; [`term`] runs it in a terminal.
//! - [`actions`]: what the explorer's runner does for `w`: ask the relay to
//!   explain a drop, copy to the clipboard (OSC 52), save a file.
//! - [`output`]: flows and graphs as text, JSON and dot for the commands.
//! - [`conn`]: the relay's address and a connection with a clear error, for
//!   the commands and the explorer alike.
//! - [`kube`]: `--context`: the relay found through a kubeconfig and
//!   port-forwarded to 127.0.0.1.
//! - [`live`]: the reconnecting link to a relay; everything it says is an
//!   [`live::Event`].
//! - [`map`]: the service-map layout engine (layers, ordering, orthogonal routing)
//!   and its character-grid canvas.
//! - [`state`]: the explorer's model of what the relay sent (graph, namespace
//!   tree, recent flows, drops, DNS); the only place proto types become
//!   domain types.

pub mod actions;
pub mod app;
pub mod conn;
pub mod kube;
pub mod live;
pub mod map;
pub mod offline;
pub mod output;
pub mod state;
pub mod term;
pub mod ui;
