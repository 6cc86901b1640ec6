//! `ColorDepth`: how many colours the terminal can show, detected from the
//! environment, and how one colour degrades to fit.

use crate::color::{Color, indexed_rgb, nearest_ansi, nearest_indexed};

/// How many colours the terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColorDepth {
    /// No colour at all (`NO_COLOR`, `--color never`, `TERM=dumb`).
    None,
    /// The 16 ANSI colours.
    Ansi16,
    /// The xterm 256-colour palette.
    Ansi256,
    /// 24-bit colour.
    TrueColor,
}

/// Guesses the colour depth from environment variables, read through `env`
/// so callers (and tests) choose where they come from.
///
/// `NO_COLOR` (set and non-empty) wins; then `COLORTERM=truecolor|24bit`;
/// then `TERM`: `dumb` has no colour, `*256color*` has 256; anything else
/// gets the 16 colours every terminal has.
pub fn detect_depth(env: &impl Fn(&str) -> Option<String>) -> ColorDepth {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    if set("NO_COLOR").is_some() {
        return ColorDepth::None;
    }
    if let Some(colorterm) = set("COLORTERM") {
        let colorterm = colorterm.to_ascii_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" {
            return ColorDepth::TrueColor;
        }
    }
    match set("TERM") {
        Some(term) if term == "dumb" => ColorDepth::None,
        Some(term) if term.contains("256color") => ColorDepth::Ansi256,
        _ => ColorDepth::Ansi16,
    }
}

impl Color {
    /// This colour as the nearest one a terminal of `depth` can show; `None`
    /// when it can show no colour.
    pub fn degrade(self, depth: ColorDepth) -> Option<Color> {
        let color = match (depth, self) {
            (ColorDepth::None, _) => return None,
            (ColorDepth::TrueColor, color) | (_, color @ (Color::Default | Color::Ansi(_))) => {
                color
            }
            (ColorDepth::Ansi256, Color::Indexed(index)) => Color::Indexed(index),
            (ColorDepth::Ansi256, Color::Rgb(r, g, b)) => {
                Color::Indexed(nearest_indexed((r, g, b)))
            }
            (ColorDepth::Ansi16, Color::Indexed(index)) if index < 16 => Color::Ansi(index),
            (ColorDepth::Ansi16, Color::Indexed(index)) => {
                Color::Ansi(nearest_ansi(indexed_rgb(index)))
            }
            // Straight from the 24-bit value rather than via the 256-colour
            // approximation, so rounding happens once.
            (ColorDepth::Ansi16, Color::Rgb(r, g, b)) => Color::Ansi(nearest_ansi((r, g, b))),
        };
        Some(color)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(vars: &[(&str, &str)]) -> ColorDepth {
        detect_depth(&|name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn detect_depth_table() {
        let cases: &[(&[(&str, &str)], ColorDepth)] = &[
            (&[], ColorDepth::Ansi16),
            (&[("TERM", "xterm")], ColorDepth::Ansi16),
            (&[("TERM", "xterm-256color")], ColorDepth::Ansi256),
            (&[("TERM", "screen-256color-bce")], ColorDepth::Ansi256),
            (&[("TERM", "dumb")], ColorDepth::None),
            (
                &[("COLORTERM", "truecolor"), ("TERM", "xterm")],
                ColorDepth::TrueColor,
            ),
            (&[("COLORTERM", "24bit")], ColorDepth::TrueColor),
            (&[("COLORTERM", "TrueColor")], ColorDepth::TrueColor),
            (
                &[("COLORTERM", "yes"), ("TERM", "xterm-256color")],
                ColorDepth::Ansi256,
            ),
            (
                &[("NO_COLOR", "1"), ("COLORTERM", "truecolor")],
                ColorDepth::None,
            ),
            (
                &[("NO_COLOR", ""), ("COLORTERM", "truecolor")],
                ColorDepth::TrueColor,
            ),
            (&[("NO_COLOR", ""), ("TERM", "")], ColorDepth::Ansi16),
        ];
        for (vars, want) in cases {
            assert_eq!(detect(vars), *want, "{vars:?}");
        }
    }

    #[test]
    fn degrade_single_colours() {
        let red = Color::Rgb(255, 0, 0);
        assert_eq!(red.degrade(ColorDepth::TrueColor), Some(red));
        assert_eq!(red.degrade(ColorDepth::Ansi256), Some(Color::Indexed(196)));
        assert_eq!(red.degrade(ColorDepth::Ansi16), Some(Color::Ansi(9)));
        assert_eq!(red.degrade(ColorDepth::None), None);
        let grey = Color::Rgb(0x80, 0x80, 0x80);
        assert_eq!(grey.degrade(ColorDepth::Ansi256), Some(Color::Indexed(244)));
        assert_eq!(grey.degrade(ColorDepth::Ansi16), Some(Color::Ansi(8)));
        assert_eq!(
            Color::Indexed(196).degrade(ColorDepth::Ansi16),
            Some(Color::Ansi(9))
        );
        assert_eq!(
            Color::Indexed(4).degrade(ColorDepth::Ansi16),
            Some(Color::Ansi(4))
        );
        assert_eq!(
            Color::Indexed(160).degrade(ColorDepth::Ansi16),
            Some(Color::Ansi(1))
        );
        assert_eq!(
            Color::Ansi(3).degrade(ColorDepth::Ansi256),
            Some(Color::Ansi(3))
        );
        assert_eq!(
            Color::Default.degrade(ColorDepth::Ansi16),
            Some(Color::Default)
        );
        assert_eq!(Color::Default.degrade(ColorDepth::None), None);
    }
}
