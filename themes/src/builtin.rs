//! The shipped themes (`themes/*.toml`, compiled in) and their lookup.

use crate::parse::parse;
use crate::theme::Theme;

/// Names of the builtin themes; the first is the default.
pub(crate) const BUILTIN_NAMES: [&str; 3] = ["dark", "light", "high-contrast"];

const SOURCES: [(&str, &str); 3] = [
    ("dark", include_str!("../dark.toml")),
    ("light", include_str!("../light.toml")),
    ("high-contrast", include_str!("../high-contrast.toml")),
];

/// Names of the builtin themes; the first, `dark`, is the default.
pub fn builtin_names() -> &'static [&'static str] {
    &BUILTIN_NAMES
}

/// A builtin theme by name.
pub fn builtin(name: &str) -> Option<Theme> {
    let (file, text) = SOURCES.iter().find(|(n, _)| *n == name)?;
    // The shipped files are checked by the tests, so this only fails if a
    // broken file was shipped; there is nothing better to show than no theme.
    parse(text, &format!("themes/{file}.toml")).ok()
}

/// The default theme.
pub fn default_theme() -> Theme {
    builtin(BUILTIN_NAMES[0]).unwrap_or_else(|| Theme::new(BUILTIN_NAMES[0]))
}
