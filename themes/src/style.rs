//! `Style`: what a role looks like (colours plus text attributes).

use crate::color::Color;

/// The look of one role. `None` colours mean "leave as is", so a role drawn
/// on top of another (a verdict inside the selected row) keeps the
/// background it sits on; `Some(Color::Default)` asks for the terminal's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Style {
    pub fg: Option<Color>,
    pub bg: Option<Color>,
    pub bold: bool,
    pub italic: bool,
    pub underline: bool,
    pub reversed: bool,
    pub dim: bool,
}

impl Style {
    /// A style with only a foreground colour.
    pub fn fg(color: Color) -> Style {
        Style {
            fg: Some(color),
            ..Style::default()
        }
    }
}
