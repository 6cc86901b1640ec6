//! The explorer's building blocks; the binary is `main.rs`.
//!
//! - [`map`]: the service-map layout engine (layers, ordering, orthogonal routing)
//!   and its character-grid canvas.

pub mod map;
