//! The colour theme as ratatui styles: one [`Style`] per [`Role`], already
//! degraded to what the terminal can show.
//!
//! Without colour (`NO_COLOR`, `--color never`, `TERM=dumb`) only attributes
//! are left, so the roles that must still stand out get one here: the
//! selection is reverse video and drops are bold. Verdicts are always written
//! as words by the views, so nothing depends on colour alone.

use ratatui::style::{Color, Modifier, Style};
use skymap_themes::{self as themes, ColorDepth, Role, Theme};

use super::map::{EdgeStyles, MapStyles};
use crate::map::EdgeHealth;

/// Ready-to-use styles for one theme at one colour depth.
#[derive(Debug, Clone)]
pub struct Styles {
    name: String,
    depth: ColorDepth,
    by_role: Vec<Style>,
    map: MapStyles,
}

impl Styles {
    pub fn new(theme: &Theme, depth: ColorDepth) -> Self {
        let degraded = theme.degrade(depth);
        let mut by_role: Vec<Style> = Role::ALL
            .iter()
            .map(|&role| convert(degraded.style(role)))
            .collect();
        if depth == ColorDepth::None {
            let mut emphasise = |role: Role, modifier: Modifier| {
                let style = &mut by_role[role as usize];
                *style = style.add_modifier(modifier);
            };
            emphasise(Role::Selection, Modifier::REVERSED);
            emphasise(Role::Dropped, Modifier::BOLD);
            emphasise(Role::Error, Modifier::BOLD);
            emphasise(Role::BorderFocused, Modifier::BOLD);
            emphasise(Role::Paused, Modifier::REVERSED);
        }
        let map = map_styles(&by_role);
        Self {
            name: theme.name.clone(),
            depth,
            by_role,
            map,
        }
    }

    /// The style of `role`.
    pub fn get(&self, role: Role) -> Style {
        self.by_role[role as usize]
    }

    pub fn map(&self) -> &MapStyles {
        &self.map
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn depth(&self) -> ColorDepth {
        self.depth
    }
}

fn map_styles(by_role: &[Style]) -> MapStyles {
    let role = |r: Role| by_role[r as usize];
    let health = |h: EdgeHealth| match h {
        EdgeHealth::Ok => role(Role::Forwarded),
        EdgeHealth::Warning => role(Role::Warning),
        EdgeHealth::Error => role(Role::Error),
        EdgeHealth::Dropped => role(Role::Dropped),
    };
    let edge = |h: EdgeHealth| {
        let line = health(h);
        EdgeStyles {
            line,
            arrow: line.add_modifier(Modifier::BOLD),
            label: line,
        }
    };
    MapStyles {
        border: role(Role::Border),
        text: role(Role::Workload),
        group: role(Role::Namespace),
        selected: role(Role::Selection),
        ok: edge(EdgeHealth::Ok),
        warning: edge(EdgeHealth::Warning),
        error: edge(EdgeHealth::Error),
        dropped: edge(EdgeHealth::Dropped),
    }
}

fn convert(style: themes::Style) -> Style {
    let mut out = Style::default();
    if let Some(fg) = style.fg {
        out = out.fg(color(fg));
    }
    if let Some(bg) = style.bg {
        out = out.bg(color(bg));
    }
    let flags = [
        (style.bold, Modifier::BOLD),
        (style.italic, Modifier::ITALIC),
        (style.underline, Modifier::UNDERLINED),
        (style.reversed, Modifier::REVERSED),
        (style.dim, Modifier::DIM),
    ];
    for (on, modifier) in flags {
        if on {
            out = out.add_modifier(modifier);
        }
    }
    out
}

fn color(color: themes::Color) -> Color {
    match color {
        themes::Color::Default => Color::Reset,
        themes::Color::Ansi(index) => ANSI[usize::from(index & 15)],
        themes::Color::Indexed(index) => Color::Indexed(index),
        themes::Color::Rgb(r, g, b) => Color::Rgb(r, g, b),
    }
}

/// ratatui's names for the 16 ANSI colours, in palette order.
const ANSI: [Color; 16] = [
    Color::Black,
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::Gray,
    Color::DarkGray,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
    Color::White,
];

#[cfg(test)]
mod tests {
    use skymap_themes::{builtin, builtin_names};

    use super::*;

    fn colours(styles: &Styles) -> Vec<Color> {
        Role::ALL
            .iter()
            .flat_map(|&role| [styles.get(role).fg, styles.get(role).bg])
            .flatten()
            .collect()
    }

    #[test]
    fn every_theme_degrades_to_what_the_terminal_shows() {
        for name in builtin_names() {
            let theme = builtin(name).expect("builtin");
            let true_colour = colours(&Styles::new(&theme, ColorDepth::TrueColor));
            assert!(
                true_colour.iter().any(|c| matches!(c, Color::Rgb(..))),
                "{name} uses truecolor"
            );
            let c256 = colours(&Styles::new(&theme, ColorDepth::Ansi256));
            assert!(
                c256.iter().all(|c| !matches!(c, Color::Rgb(..))),
                "{name} at 256"
            );
            let c16 = colours(&Styles::new(&theme, ColorDepth::Ansi16));
            assert!(
                c16.iter()
                    .all(|c| !matches!(c, Color::Rgb(..) | Color::Indexed(_))),
                "{name} at 16: {c16:?}"
            );
            let none = Styles::new(&theme, ColorDepth::None);
            assert!(colours(&none).is_empty(), "{name} without colour");
            assert!(
                none.get(Role::Selection)
                    .add_modifier
                    .contains(Modifier::REVERSED)
            );
            assert!(
                none.map()
                    .dropped
                    .line
                    .add_modifier
                    .contains(Modifier::BOLD)
            );
        }
    }
}
