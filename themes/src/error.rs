//! `ThemeError`: everything that can be wrong with a theme, each naming the
//! file, the line and the key so a user can fix their theme without guessing.

use crate::builtin::BUILTIN_NAMES;

/// Why a theme could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// The file is not valid TOML.
    #[error("{file}:{line}:{column}: invalid TOML: {message}")]
    Toml {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A known key has a value of the wrong kind or an unknown colour.
    #[error("{file}:{line}: {key}: {message}")]
    Value {
        file: String,
        line: usize,
        /// Dotted path, like `roles.dropped.fg`.
        key: String,
        message: String,
    },
    #[error("{file}:{line}: unknown role {name:?}{}", did_you_mean(*suggestion))]
    UnknownRole {
        file: String,
        line: usize,
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("{file}:{line}: unknown field {field:?} {place} (expected {expected})")]
    UnknownField {
        file: String,
        line: usize,
        field: String,
        /// `in roles.error` or `at the top level`.
        place: String,
        expected: String,
    },
    /// A complete theme (not a patch) left a role out.
    #[error("{file}: missing role {role:?} (a complete theme defines every role)")]
    MissingRole { file: String, role: &'static str },
    #[error("unknown theme {name:?}{} (built-in themes: {})", did_you_mean(*suggestion), BUILTIN_NAMES.join(", "))]
    UnknownTheme {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub(crate) fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean {s:?}?)"))
}

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible typo.
pub(crate) fn suggest(
    word: &str,
    candidates: impl IntoIterator<Item = &'static str>,
) -> Option<&'static str> {
    // Long keys are not typos of short names, and this bounds the work.
    if word.len() > 64 {
        return None;
    }
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&word, candidate), candidate))
        .filter(|&(distance, candidate)| distance <= 2.min(candidate.len() / 2))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("droped", "dropped"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        let roles = ["dropped", "error", "ok", "dns"];
        assert_eq!(suggest("droped", roles), Some("dropped"));
        assert_eq!(suggest("Dropped", roles), Some("dropped"));
        assert_eq!(suggest("eror", roles), Some("error"));
        assert_eq!(suggest("zebra", roles), None);
        // Short names need a closer match: "xx" is not a typo of "ok".
        assert_eq!(suggest("xx", roles), None);
        assert_eq!(did_you_mean(Some("dns")), " (did you mean \"dns\"?)");
        assert_eq!(did_you_mean(None), "");
    }
}
