//! Choosing the theme at startup: a named builtin or a theme file, else the
//! user's patch file from the XDG config directory over the default.

use std::path::{Path, PathBuf};

use crate::builtin::{BUILTIN_NAMES, builtin, default_theme};
use crate::error::{ThemeError, suggest};
use crate::parse::patch;
use crate::theme::Theme;

/// Where the user's theme patch lives: `$XDG_CONFIG_HOME/skymap/theme.toml`,
/// else `$HOME/.config/skymap/theme.toml`.
pub fn user_theme_path(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    let config = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(config.join("skymap").join("theme.toml"))
}

/// The theme to use.
///
/// `Some(name)` is a builtin, or, if it ends in `.toml` or contains a `/`, a
/// theme file read as a patch over the default. `None` is the user's patch
/// file over the default when it exists, else the default (`dark`).
pub fn load(
    name: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Theme, ThemeError> {
    match name {
        Some(name) if name.ends_with(".toml") || name.contains('/') => {
            let path = Path::new(name);
            let text = std::fs::read_to_string(path).map_err(|source| ThemeError::Io {
                path: display_path(path, env),
                source,
            })?;
            patch(&default_theme(), &text, &display_path(path, env))
        }
        Some(name) => builtin(name).ok_or_else(|| ThemeError::UnknownTheme {
            name: name.to_owned(),
            suggestion: suggest(name, BUILTIN_NAMES.iter().copied()),
        }),
        None => {
            let Some(path) = user_theme_path(env) else {
                return Ok(default_theme());
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => patch(&default_theme(), &text, &display_path(&path, env)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(default_theme()),
                Err(source) => Err(ThemeError::Io {
                    path: display_path(&path, env),
                    source,
                }),
            }
        }
    }
}

/// The path as the user would type it: `~/...` under their home directory.
fn display_path(path: &Path, env: &impl Fn(&str) -> Option<String>) -> String {
    let home = env("HOME").filter(|home| !home.is_empty());
    match home.and_then(|home| path.strip_prefix(home).ok().map(Path::to_path_buf)) {
        Some(rest) => Path::new("~").join(rest).display().to_string(),
        None => path.display().to_string(),
    }
}
