//! Reading theme files: [`parse`] for complete themes (the builtins, or a
//! file naming every role) and [`patch`] for a user's partial theme over a
//! base. Both keep TOML spans so every error names its line and key.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::builtin::{BUILTIN_NAMES, builtin};
use crate::color::{COLOR_SYNTAX, Color};
use crate::error::{ThemeError, suggest};
use crate::role::Role;
use crate::style::Style;
use crate::theme::Theme;

const STYLE_FIELDS: [&str; 7] = ["fg", "bg", "bold", "italic", "underline", "reversed", "dim"];

/// Reads a complete theme: every role must be given. `source` names the text
/// in errors (usually its path).
pub fn parse(text: &str, source: &str) -> Result<Theme, ThemeError> {
    read(text, source, None)
}

/// Reads a user theme as a patch: the roles and fields it gives replace those
/// of `base` (or of the builtin named by a top-level `base = "..."`), the
/// rest stay as they were. A role given as a bare colour replaces only `fg`.
pub fn patch(base: &Theme, text: &str, source: &str) -> Result<Theme, ThemeError> {
    read(text, source, Some(base))
}

type Entry<'a, 'i> = (
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
);

/// Table entries in file order, so the first error reported is the first
/// one in the file rather than the first alphabetically.
fn entries<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

fn read(text: &str, source: &str, base: Option<&Theme>) -> Result<Theme, ThemeError> {
    let doc = Doc { text, file: source };
    let root = DeTable::parse(text).map_err(|err| doc.toml_error(&err))?;

    let mut name = None;
    let mut base_name = None;
    let mut roles = None;
    for (key, value) in entries(root.get_ref()) {
        match (key.get_ref().as_ref(), base) {
            ("name", _) => name = Some(doc.string(value, "name")?),
            ("base", Some(_)) => base_name = Some((doc.string(value, "base")?, value.span())),
            ("roles", _) => roles = Some((key, value)),
            (other, _) => {
                let mut expected = if base.is_some() {
                    "name, base, roles"
                } else {
                    "name, roles"
                }
                .to_owned();
                if Role::from_name(other).is_some() {
                    expected.push_str("; styles go under [roles], as in [roles.dropped]");
                }
                return Err(doc.unknown_field(key, "at the top level".to_owned(), expected));
            }
        }
    }

    let mut theme = match (base, base_name) {
        (None, _) => Theme::new("custom"),
        (Some(base), None) => base.clone(),
        (Some(_), Some((wanted, span))) => builtin(&wanted).ok_or_else(|| ThemeError::Value {
            file: doc.file.to_owned(),
            line: doc.line(span),
            key: "base".to_owned(),
            message: format!(
                "unknown builtin theme {wanted:?}{} (built-in themes: {})",
                crate::error::did_you_mean(suggest(&wanted, BUILTIN_NAMES.iter().copied())),
                BUILTIN_NAMES.join(", ")
            ),
        })?,
    };
    if let Some(name) = name {
        theme.name = name;
    }

    let mut seen = vec![false; Role::ALL.len()];
    if let Some((roles_key, roles)) = roles {
        let Some(table) = roles.get_ref().as_table() else {
            return Err(doc.value_error(
                roles_key.span(),
                "roles",
                format!(
                    "expected a table of roles, found {}",
                    describe(roles.get_ref())
                ),
            ));
        };
        for (key, value) in entries(table) {
            let name = key.get_ref().as_ref();
            let Some(role) = Role::from_name(name) else {
                return Err(ThemeError::UnknownRole {
                    file: doc.file.to_owned(),
                    line: doc.line(key.span()),
                    name: name.to_owned(),
                    suggestion: suggest(name, Role::ALL.iter().map(|r| r.name())),
                });
            };
            let style = doc.style(role, key, value, theme.style(role))?;
            theme.set_style(role, style);
            seen[role.index()] = true;
        }
    }
    let missing = Role::ALL.iter().find(|role| !seen[role.index()]);
    if let (None, Some(role)) = (base, missing) {
        return Err(ThemeError::MissingRole {
            file: doc.file.to_owned(),
            role: role.name(),
        });
    }
    Ok(theme)
}

/// The text being read, for turning spans into line numbers.
struct Doc<'a> {
    text: &'a str,
    file: &'a str,
}

impl Doc<'_> {
    /// 1-based line and column (in chars) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, column)
    }

    fn line(&self, span: Range<usize>) -> usize {
        self.position(span.start).0
    }

    fn toml_error(&self, err: &toml::de::Error) -> ThemeError {
        let (line, column) = self.position(err.span().map_or(0, |span| span.start));
        let message = err.message().trim().lines().collect::<Vec<_>>().join("; ");
        ThemeError::Toml {
            file: self.file.to_owned(),
            line,
            column,
            message,
        }
    }

    fn value_error(&self, span: Range<usize>, key: &str, message: String) -> ThemeError {
        ThemeError::Value {
            file: self.file.to_owned(),
            line: self.line(span),
            key: key.to_owned(),
            message,
        }
    }

    fn unknown_field(
        &self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        place: String,
        expected: String,
    ) -> ThemeError {
        ThemeError::UnknownField {
            file: self.file.to_owned(),
            line: self.line(key.span()),
            field: key.get_ref().to_string(),
            place,
            expected,
        }
    }

    fn string(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<String, ThemeError> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text.to_string()),
            other => Err(self.value_error(
                value.span(),
                key,
                format!("expected a string, found {}", describe(other)),
            )),
        }
    }

    /// `current` with the fields of one `roles.<role>` entry applied.
    fn style(
        &self,
        role: Role,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        mut current: Style,
    ) -> Result<Style, ThemeError> {
        let path = format!("roles.{}", role.name());
        let table = match value.get_ref() {
            DeValue::String(_) | DeValue::Integer(_) => {
                current.fg = Some(self.color(value, &path)?);
                return Ok(current);
            }
            DeValue::Table(table) => table,
            other => {
                return Err(self.value_error(
                    key.span(),
                    &path,
                    format!(
                        "expected a colour or a table like {{ fg = \"red\", bold = true }}, found {}",
                        describe(other)
                    ),
                ));
            }
        };
        for (field, value) in entries(table) {
            let field_path = format!("{path}.{}", field.get_ref());
            match field.get_ref().as_ref() {
                "fg" => current.fg = Some(self.color(value, &field_path)?),
                "bg" => current.bg = Some(self.color(value, &field_path)?),
                "bold" => current.bold = self.flag(value, &field_path)?,
                "italic" => current.italic = self.flag(value, &field_path)?,
                "underline" => current.underline = self.flag(value, &field_path)?,
                "reversed" => current.reversed = self.flag(value, &field_path)?,
                "dim" => current.dim = self.flag(value, &field_path)?,
                _ => {
                    return Err(self.unknown_field(
                        field,
                        format!("in {path}"),
                        STYLE_FIELDS.join(", "),
                    ));
                }
            }
        }
        Ok(current)
    }

    fn color(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<Color, ThemeError> {
        let color = match value.get_ref() {
            DeValue::String(text) => text.parse().ok(),
            DeValue::Integer(int) => i64::from_str_radix(int.as_str(), int.radix())
                .ok()
                .and_then(|n| u8::try_from(n).ok())
                .map(Color::Indexed),
            _ => None,
        };
        color.ok_or_else(|| {
            let message = format!(
                "{} is not a colour ({COLOR_SYNTAX})",
                describe(value.get_ref())
            );
            self.value_error(value.span(), key, message)
        })
    }

    fn flag(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<bool, ThemeError> {
        match value.get_ref() {
            DeValue::Boolean(flag) => Ok(*flag),
            other => Err(self.value_error(
                value.span(),
                key,
                format!("expected true or false, found {}", describe(other)),
            )),
        }
    }
}

/// A short rendering of a value for error messages.
fn describe(value: &DeValue<'_>) -> String {
    const MAX: usize = 40;
    match value {
        DeValue::String(text) if text.chars().count() > MAX => {
            let head: String = text.chars().take(MAX).collect();
            format!("{head:?}…")
        }
        DeValue::String(text) => format!("{text:?}"),
        DeValue::Integer(int) => {
            let prefix = match int.radix() {
                2 => "0b",
                8 => "0o",
                16 => "0x",
                _ => "",
            };
            format!("{prefix}{}", int.as_str())
        }
        DeValue::Float(float) => float.as_str().to_owned(),
        DeValue::Boolean(flag) => flag.to_string(),
        DeValue::Datetime(_) => "a date-time".to_owned(),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}
