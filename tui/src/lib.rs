//! The explorer's building blocks; the binary is `main.rs`.
//!
//! - [`map`]: the service-map layout engine (layers, ordering, orthogonal routing)
//!   and its character-grid canvas.
//! - [`state`]: the explorer's model of what the relay sent (graph, namespace
//!   tree, recent flows, drops, DNS); the only place proto types become
//!   domain types.

pub mod map;
pub mod state;
