//! `Theme`: a style for every role, degraded to the terminal's colour depth
//! and written back out as a theme file.

use std::fmt::Write as _;

use crate::color::Color;
use crate::depth::ColorDepth;
use crate::role::Role;
use crate::style::Style;

const ROLE_COUNT: usize = Role::ALL.len();

/// A complete theme: one style per role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theme {
    /// Shown to the user; the builtin's name, or whatever a file calls itself.
    pub name: String,
    styles: [Style; ROLE_COUNT],
}

impl Theme {
    /// A theme with every role unstyled.
    pub fn new(name: impl Into<String>) -> Theme {
        Theme {
            name: name.into(),
            styles: [Style::default(); ROLE_COUNT],
        }
    }

    pub fn style(&self, role: Role) -> Style {
        self.styles[role.index()]
    }

    pub fn set_style(&mut self, role: Role, style: Style) {
        self.styles[role.index()] = style;
    }

    /// This theme as a terminal of `depth` can show it.
    ///
    /// Colours are mapped to the nearest one available. Without colour, the
    /// attributes stay and `selection` becomes reverse video so the cursor
    /// is still visible.
    pub fn degrade(&self, depth: ColorDepth) -> Theme {
        let mut out = self.clone();
        for &role in Role::ALL {
            let style = &mut out.styles[role.index()];
            style.fg = style.fg.and_then(|c| c.degrade(depth));
            style.bg = style.bg.and_then(|c| c.degrade(depth));
            let collapsed = style.bg.is_some() && style.fg == style.bg;
            if collapsed {
                // Two nearby colours became one: text on its own colour is
                // invisible, so fall back to the background it sits on.
                style.bg = None;
            }
            if role == Role::Selection && (depth == ColorDepth::None || collapsed) {
                style.reversed = true;
            }
        }
        out
    }

    /// The theme as a complete theme file that [`crate::parse`] reads back
    /// unchanged; a starting point for users writing their own.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "name = {}\n\n[roles]", toml_string(&self.name));
        for &role in Role::ALL {
            let _ = writeln!(out, "{} = {}", role.name(), style_toml(self.style(role)));
        }
        out
    }
}

fn style_toml(style: Style) -> String {
    let mut fields = Vec::new();
    for (key, color) in [("fg", style.fg), ("bg", style.bg)] {
        match color {
            Some(Color::Indexed(index)) => fields.push(format!("{key} = {index}")),
            Some(color) => fields.push(format!("{key} = \"{color}\"")),
            None => {}
        }
    }
    let flags = [
        ("bold", style.bold),
        ("italic", style.italic),
        ("underline", style.underline),
        ("reversed", style.reversed),
        ("dim", style.dim),
    ];
    fields.extend(
        flags
            .iter()
            .filter(|(_, on)| *on)
            .map(|(key, _)| format!("{key} = true")),
    );
    if fields.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", fields.join(", "))
    }
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_theme_is_unstyled_and_set_style_touches_one_role() {
        let mut theme = Theme::new("t");
        assert!(
            Role::ALL
                .iter()
                .all(|&r| theme.style(r) == Style::default())
        );
        theme.set_style(Role::Dropped, Style::fg(Color::Ansi(1)));
        assert_eq!(theme.style(Role::Dropped).fg, Some(Color::Ansi(1)));
        assert_eq!(theme.style(Role::Error), Style::default());
    }

    #[test]
    fn degrade_collapsed_colours_drop_the_background() {
        let mut theme = Theme::new("t");
        let near = Style {
            fg: Some(Color::Rgb(250, 0, 0)),
            bg: Some(Color::Rgb(255, 10, 10)),
            ..Style::default()
        };
        theme.set_style(Role::Selection, near);
        theme.set_style(Role::Flash, near);
        let plain = theme.degrade(ColorDepth::Ansi16);
        let selection = plain.style(Role::Selection);
        assert_eq!(
            (selection.fg, selection.bg, selection.reversed),
            (Some(Color::Ansi(9)), None, true)
        );
        let flash = plain.style(Role::Flash);
        assert_eq!(
            (flash.fg, flash.bg, flash.reversed),
            (Some(Color::Ansi(9)), None, false)
        );
        // At full depth nothing collapses.
        assert_eq!(theme.degrade(ColorDepth::TrueColor), theme);
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000Ad\"");
    }
}
