//! skymap's colour themes: TOML files mapping semantic roles (dropped,
//! forwarded, selection, ...) to styles, and the code that loads them and
//! degrades truecolor to what the terminal can show.
//!
//! - `dark.toml`, `light.toml`, `high-contrast.toml` (crate root): the
//!   builtin themes, compiled in; `builtin` finds them.
//! - `color`: [`Color`], its theme-file syntax, palette conversions.
//! - `style`: [`Style`], colours plus bold/italic/underline/reversed/dim.
//! - `role`: [`Role`], the semantic names the explorer draws with.
//! - `theme`: [`Theme`], one style per role; `degrade` and `to_toml`.
//! - `depth`: [`ColorDepth`] and [`detect_depth`] from the environment.
//! - `parse`: [`parse`] (complete theme) and [`patch`] (user overrides).
//! - `load`: [`load`] and [`user_theme_path`], the startup choice.
//! - `error`: [`ThemeError`], naming file, line and key.
//!
//! The explorer maps these types to its terminal library; this crate does not
//! depend on one.

mod builtin;
mod color;
mod depth;
mod error;
mod load;
mod parse;
mod role;
mod style;
mod theme;

pub use builtin::{builtin, builtin_names, default_theme};
pub use color::{ANSI_NAMES, Color, ParseColorError, indexed_rgb, nearest_ansi, nearest_indexed};
pub use depth::{ColorDepth, detect_depth};
pub use error::ThemeError;
pub use load::{load, user_theme_path};
pub use parse::{parse, patch};
pub use role::Role;
pub use style::Style;
pub use theme::Theme;
