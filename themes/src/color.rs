//! `Color`: the colour syntax of theme files (`#rrggbb`, the 16 ANSI names,
//! `0..=255`, `default`) and the palette arithmetic used to degrade truecolor
//! to the xterm 256-colour and 16-colour palettes.

use std::fmt;
use std::str::FromStr;

/// One terminal colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    /// The terminal's own foreground or background.
    Default,
    /// One of the 16 ANSI colours, `0..16` (`8..16` are the bright variants).
    Ansi(u8),
    /// An xterm 256-colour palette index.
    Indexed(u8),
    /// A 24-bit colour.
    Rgb(u8, u8, u8),
}

/// Names of the 16 ANSI colours, in palette order.
pub const ANSI_NAMES: [&str; 16] = [
    "black",
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "white",
    "bright-black",
    "bright-red",
    "bright-green",
    "bright-yellow",
    "bright-blue",
    "bright-magenta",
    "bright-cyan",
    "bright-white",
];

/// What a colour may look like, for error messages.
pub(crate) const COLOR_SYNTAX: &str = "expected #rrggbb, a name like bright-red, or 0-255";

/// The string is not any colour syntax we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a colour ({COLOR_SYNTAX})")]
pub struct ParseColorError(pub String);

impl FromStr for Color {
    type Err = ParseColorError;

    /// Accepts `#rrggbb`, an ANSI name (`red`, `bright-red`), `default`, or a
    /// decimal palette index `0..=255`; names and hex digits in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseColorError(text.to_owned());
        let lower = text.to_ascii_lowercase();
        if lower == "default" {
            return Ok(Color::Default);
        }
        if let Some(hex) = lower.strip_prefix('#') {
            if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
            return Ok(Color::Rgb(channel(0)?, channel(2)?, channel(4)?));
        }
        if let Some(index) = ANSI_NAMES.iter().position(|name| *name == lower) {
            return Ok(Color::Ansi(index as u8));
        }
        if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
            return lower.parse::<u8>().map(Color::Indexed).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl fmt::Display for Color {
    /// Writes the theme-file syntax, so `Display` and `FromStr` round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Color::Default => f.write_str("default"),
            Color::Ansi(index) => match ANSI_NAMES.get(usize::from(index)) {
                Some(name) => f.write_str(name),
                // Out-of-range Ansi values can only be built by hand; write
                // them as the palette index they would draw as.
                None => write!(f, "{index}"),
            },
            Color::Indexed(index) => write!(f, "{index}"),
            Color::Rgb(r, g, b) => write!(f, "#{r:02x}{g:02x}{b:02x}"),
        }
    }
}

/// xterm's default RGB values for the 16 ANSI colours. Terminals let users
/// change these, so they are only a stand-in for "what red usually looks like".
const ANSI_RGB: [(u8, u8, u8); 16] = [
    (0, 0, 0),
    (205, 0, 0),
    (0, 205, 0),
    (205, 205, 0),
    (0, 0, 238),
    (205, 0, 205),
    (0, 205, 205),
    (229, 229, 229),
    (127, 127, 127),
    (255, 0, 0),
    (0, 255, 0),
    (255, 255, 0),
    (92, 92, 255),
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 255),
];

/// The six channel levels of the xterm 6x6x6 colour cube (indices 16..232).
const CUBE_LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];

/// The RGB value xterm draws for a 256-palette index.
pub fn indexed_rgb(index: u8) -> (u8, u8, u8) {
    match index {
        0..16 => ANSI_RGB[usize::from(index)],
        16..232 => {
            let i = index - 16;
            let level = |n: u8| CUBE_LEVELS[usize::from(n)];
            (level(i / 36), level(i / 6 % 6), level(i % 6))
        }
        _ => {
            let grey = 8 + 10 * (index - 232);
            (grey, grey, grey)
        }
    }
}

/// The nearest entry of the 256-colour palette, searching only the colour cube
/// and the grey ramp: indices 0..16 are user-configurable, so they would make
/// the result depend on the terminal's palette.
pub fn nearest_indexed(rgb: (u8, u8, u8)) -> u8 {
    nearest(16..=255, rgb)
}

/// The nearest of the 16 ANSI colours. A clearly coloured input is matched
/// only against the chromatic entries: in a theme the hue carries the meaning
/// (red is "dropped"), and a dim red that turns grey would lose it.
pub fn nearest_ansi(rgb: (u8, u8, u8)) -> u8 {
    let (r, g, b) = rgb;
    let chroma = r.max(g).max(b) - r.min(g).min(b);
    if chroma >= 64 {
        nearest((1..=6).chain(9..=14), rgb)
    } else {
        nearest(0..=15, rgb)
    }
}

fn nearest(candidates: impl IntoIterator<Item = u8>, rgb: (u8, u8, u8)) -> u8 {
    candidates
        .into_iter()
        .min_by_key(|&index| distance(indexed_rgb(index), rgb))
        .unwrap_or(0)
}

/// Squared colour distance with the "redmean" weighting, a cheap correction
/// for the eye's uneven sensitivity to red, green and blue.
fn distance(a: (u8, u8, u8), b: (u8, u8, u8)) -> u32 {
    let mean_red = (u32::from(a.0) + u32::from(b.0)) / 2;
    let dr = u32::from(a.0.abs_diff(b.0));
    let dg = u32::from(a.1.abs_diff(b.1));
    let db = u32::from(a.2.abs_diff(b.2));
    (((512 + mean_red) * dr * dr) >> 8) + 4 * dg * dg + (((767 - mean_red) * db * db) >> 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_syntax() {
        assert_eq!("#FF8000".parse(), Ok(Color::Rgb(255, 128, 0)));
        assert_eq!("#0a0b0c".parse(), Ok(Color::Rgb(10, 11, 12)));
        assert_eq!("red".parse(), Ok(Color::Ansi(1)));
        assert_eq!("Bright-White".parse(), Ok(Color::Ansi(15)));
        assert_eq!("bright-black".parse(), Ok(Color::Ansi(8)));
        assert_eq!("default".parse(), Ok(Color::Default));
        assert_eq!("0".parse(), Ok(Color::Indexed(0)));
        assert_eq!("255".parse(), Ok(Color::Indexed(255)));
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "",
            "#ff00",
            "#ff00000",
            "#gg0000",
            "#",
            "brightred",
            "256",
            "-1",
            " red",
            "#ff 000",
            "１",
        ] {
            let err = bad.parse::<Color>().expect_err(bad);
            assert_eq!(err.0, bad);
        }
    }

    #[test]
    fn display_round_trips() {
        let mut colors = vec![
            Color::Default,
            Color::Rgb(1, 2, 3),
            Color::Rgb(255, 255, 255),
        ];
        colors.extend((0..16).map(Color::Ansi));
        colors.extend((0..=255).map(Color::Indexed));
        for color in colors {
            assert_eq!(color.to_string().parse(), Ok(color), "{color}");
        }
        assert_eq!(Color::Rgb(255, 0, 16).to_string(), "#ff0010");
        assert_eq!(Color::Ansi(12).to_string(), "bright-blue");
    }

    #[test]
    fn palette_values() {
        assert_eq!(indexed_rgb(16), (0, 0, 0));
        assert_eq!(indexed_rgb(196), (255, 0, 0));
        assert_eq!(indexed_rgb(231), (255, 255, 255));
        assert_eq!(indexed_rgb(232), (8, 8, 8));
        assert_eq!(indexed_rgb(255), (238, 238, 238));
    }

    #[test]
    fn nearest_256_uses_cube_and_grey_ramp() {
        assert_eq!(nearest_indexed((255, 0, 0)), 196);
        assert_eq!(nearest_indexed((0, 0, 255)), 21);
        assert_eq!(nearest_indexed((95, 135, 175)), 67);
        // Greys that the cube can only approximate land on the ramp.
        assert_eq!(nearest_indexed((128, 128, 128)), 244);
        assert_eq!(nearest_indexed((18, 18, 18)), 233);
        assert_eq!(nearest_indexed((30, 30, 30)), 234);
        // Pure black and white are cube corners.
        assert_eq!(nearest_indexed((0, 0, 0)), 16);
        assert_eq!(nearest_indexed((255, 255, 255)), 231);
    }

    #[test]
    fn nearest_16_keeps_hue() {
        assert_eq!(nearest_ansi((255, 0, 0)), 9);
        assert_eq!(nearest_ansi((200, 10, 10)), 1);
        assert_eq!(nearest_ansi((0, 0, 0)), 0);
        assert_eq!(nearest_ansi((255, 255, 255)), 15);
        assert_eq!(nearest_ansi((128, 128, 128)), 8);
        // A pinkish red is closer to grey than to red by distance alone, but
        // it must stay red.
        assert_eq!(nearest_ansi((255, 107, 107)), 9);
    }
}
