//! Reading TOML into the schema, turning the TOML reader's errors into [`ManifestError`]s.
//!
//! The reader reports a message and a byte span. The span gives the line and column and, through
//! the document's span tree, the field path; the message, whose shapes are serde's standard ones
//! (`unknown field`, `missing field`, `invalid type`), gives the kind.

use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::error::{ErrorKind, Location, ManifestError, ManifestErrors};
use crate::locate::{Step, earlier_key, path_at, render, value_at};
use crate::schema::RawManifest;

/// Parses `text` as TOML and reads it into the schema.
///
/// Errors: the one error that stopped the reading.
pub(crate) fn read(text: &str, file: &Path) -> Result<RawManifest, ManifestErrors> {
    let tree = match DeTable::parse(text) {
        Ok(tree) => tree,
        Err(error) => return Err(ManifestErrors(vec![syntax_error(text, file, &error)])),
    };
    let deserializer = toml::de::Deserializer::from(tree.clone());
    RawManifest::deserialize(deserializer)
        .map_err(|error| ManifestErrors(vec![schema_error(text, file, &tree, &error)]))
}

fn syntax_error(text: &str, file: &Path, error: &toml::de::Error) -> ManifestError {
    let offset = error.span().map_or(0, |span| span.start);
    // The recovered tree names the key the mistake is in, when there is one (a duplicate key, a
    // value cut short: then the error is just past the value, so look one byte back too).
    let (partial, _) = DeTable::parse_recoverable(text);
    let mut path = path_at(partial.get_ref(), offset);
    if path.is_empty() && offset > 0 {
        path = path_at(partial.get_ref(), offset - 1);
    }
    if error.message() == "duplicate key" {
        let key = error
            .span()
            .and_then(|span| text.get(span))
            .unwrap_or_default();
        let earlier = earlier_key(partial.get_ref(), key.trim_matches(['"', '\'']), offset);
        if !earlier.is_empty() {
            path = earlier;
        }
    }
    ManifestError {
        file: file.to_path_buf(),
        location: Some(Location::of_offset(text, offset)),
        field: render(&path),
        kind: ErrorKind::Syntax {
            message: error.message().to_owned(),
        },
    }
}

fn schema_error(
    text: &str,
    file: &Path,
    tree: &toml::Spanned<DeTable<'_>>,
    error: &toml::de::Error,
) -> ManifestError {
    let span = error.span().unwrap_or(0..0);
    // A missing field's span is its table's header, or empty for the top level.
    let mut path = if span.is_empty() {
        Vec::new()
    } else {
        path_at(tree.get_ref(), span.start)
    };
    let message = error.message();
    let kind = if let Some(rest) = message.strip_prefix("missing field ") {
        path.push(Step::Key(quoted(rest).first().cloned().unwrap_or_default()));
        ErrorKind::MissingField
    } else if let Some(rest) = message.strip_prefix("unknown field ") {
        ErrorKind::UnknownField {
            expected: quoted(rest).into_iter().skip(1).collect(),
        }
    } else if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        // Serde names what it found in its own terms (`map`, `sequence`); the tree says what was
        // written.
        let found = match value_at(tree.get_ref(), &span) {
            Some((value_path, value)) => {
                path = value_path;
                describe(value, text.get(span.clone()).unwrap_or_default())
            }
            None => found.to_owned(),
        };
        ErrorKind::WrongType {
            found,
            expected: friendly_expectation(expected),
        }
    } else {
        ErrorKind::Schema {
            message: message.to_owned(),
        }
    };
    ManifestError {
        file: file.to_path_buf(),
        location: Some(Location::of_offset(text, span.start)),
        field: render(&path),
        kind,
    }
}

/// What a value is, as a person would say it: `integer 12`, `a date-time`, `an array of tables`.
fn describe(value: &DeValue<'_>, written: &str) -> String {
    match value {
        DeValue::String(text) => format!("string {text:?}"),
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
            format!("{} `{written}`", value.type_str())
        }
        DeValue::Datetime(_) => format!("date-time `{written}`"),
        DeValue::Array(_) if written.starts_with("[[") => "an array of tables".to_owned(),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// The back-quoted words of a serde message, in order.
fn quoted(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Serde names Rust types (`i64`, `struct RawGrant`, `a sequence`); say what TOML calls them.
fn friendly_expectation(expected: &str) -> String {
    match expected {
        "i64" | "u64" | "i32" | "u32" | "u8" => "an integer".to_owned(),
        "a boolean" | "bool" => "a boolean (`true` or `false`)".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a string" => "a string".to_owned(),
        other if other.starts_with("struct ") || other == "a map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}
