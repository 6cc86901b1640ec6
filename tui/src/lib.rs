//! The explorer's building blocks; the binary is `main.rs`.
//!
//! - [`conn`]: the relay's address and a connection with a clear error, for
//!   the commands and the explorer alike.
//! - [`live`]: the reconnecting link to a relay; everything it says is an
//!   [`live::Event`].
//! - [`map`]: the service-map layout engine (layers, ordering, orthogonal routing)
//!   and its character-grid canvas.
//! - [`state`]: the explorer's model of what the relay sent (graph, namespace
//!   tree, recent flows, drops, DNS); the only place proto types become
//!   domain types.

pub mod conn;
pub mod live;
pub mod map;
pub mod state;
