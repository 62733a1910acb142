//! Finds the field path (`service[1].caps[0]`) at a byte offset of a TOML document.
//!
//! The TOML reader reports a byte span with each error but not always the key path, and the path
//! is what a person needs to read first. The document's span-preserving tree gives it back: the
//! path of the most deeply nested key, table header or value whose span holds the offset. A
//! table's span in that tree is its header (`[[service]]`), not its body, so the search visits the
//! whole tree rather than descending only into spans that hold the offset.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A key in a table.
    Key(String),
    /// An element of an array, from 0.
    Index(usize),
}

/// Renders a field path: keys joined by `.`, array elements as `[n]`, keys that are not bare TOML
/// keys quoted.
pub(crate) fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// The field path at `offset` in `root`, or an empty path when no key or value holds it.
pub(crate) fn path_at(root: &DeTable<'_>, offset: usize) -> Vec<Step> {
    let mut best = Vec::new();
    let mut current = Vec::new();
    search_table(root, offset, &mut current, &mut best);
    best
}

/// The shallowest value whose span is exactly `span`, with its path. (An array of tables and its
/// first element share the span of the first `[[header]]`; the array is the one meant.)
pub(crate) fn value_at<'t, 'i>(
    root: &'t DeTable<'i>,
    span: &std::ops::Range<usize>,
) -> Option<(Vec<Step>, &'t DeValue<'i>)> {
    let mut found = None;
    let mut current = Vec::new();
    value_in_table(root, span, &mut current, &mut found);
    found
}

fn value_in_table<'t, 'i>(
    table: &'t DeTable<'i>,
    span: &std::ops::Range<usize>,
    current: &mut Vec<Step>,
    found: &mut Option<(Vec<Step>, &'t DeValue<'i>)>,
) {
    for (key, value) in table.iter() {
        current.push(Step::Key(key.get_ref().to_string()));
        value_in_value(value, span, current, found);
        current.pop();
    }
}

fn value_in_value<'t, 'i>(
    value: &'t Spanned<DeValue<'i>>,
    span: &std::ops::Range<usize>,
    current: &mut Vec<Step>,
    found: &mut Option<(Vec<Step>, &'t DeValue<'i>)>,
) {
    let shallower = found
        .as_ref()
        .is_none_or(|(path, _)| current.len() < path.len());
    if value.span() == *span && shallower {
        *found = Some((current.clone(), value.get_ref()));
    }
    match value.get_ref() {
        DeValue::Table(table) => value_in_table(table, span, current, found),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                current.push(Step::Index(index));
                value_in_value(element, span, current, found);
                current.pop();
            }
        }
        _ => {}
    }
}

/// The path of the last key named `key` that starts before `offset`: for a key given twice, the
/// recovered tree keeps the first, and this finds it.
pub(crate) fn earlier_key(root: &DeTable<'_>, key: &str, offset: usize) -> Vec<Step> {
    let mut best = (0, Vec::new());
    let mut current = Vec::new();
    earlier_in_table(root, key, offset, &mut current, &mut best);
    best.1
}

fn earlier_in_table(
    table: &DeTable<'_>,
    wanted: &str,
    offset: usize,
    current: &mut Vec<Step>,
    best: &mut (usize, Vec<Step>),
) {
    for (key, value) in table.iter() {
        current.push(Step::Key(key.get_ref().to_string()));
        let start = key.span().start;
        if key.get_ref() == wanted && start < offset && (best.1.is_empty() || start >= best.0) {
            *best = (start, current.clone());
        }
        match value.get_ref() {
            DeValue::Table(table) => earlier_in_table(table, wanted, offset, current, best),
            DeValue::Array(array) => {
                for (index, element) in array.iter().enumerate() {
                    if let DeValue::Table(table) = element.get_ref() {
                        current.push(Step::Index(index));
                        earlier_in_table(table, wanted, offset, current, best);
                        current.pop();
                    }
                }
            }
            _ => {}
        }
        current.pop();
    }
}

fn holds(span: std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end
}

fn consider(current: &[Step], best: &mut Vec<Step>) {
    if current.len() > best.len() {
        *best = current.to_vec();
    }
}

fn search_table(table: &DeTable<'_>, offset: usize, current: &mut Vec<Step>, best: &mut Vec<Step>) {
    for (key, value) in table.iter() {
        current.push(Step::Key(key.get_ref().to_string()));
        if holds(key.span(), offset) {
            consider(current, best);
        }
        search_value(value, offset, current, best);
        current.pop();
    }
}

fn search_value(
    value: &Spanned<DeValue<'_>>,
    offset: usize,
    current: &mut Vec<Step>,
    best: &mut Vec<Step>,
) {
    if holds(value.span(), offset) {
        consider(current, best);
    }
    match value.get_ref() {
        DeValue::Table(table) => search_table(table, offset, current, best),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                current.push(Step::Index(index));
                search_value(element, offset, current, best);
                current.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(text: &str, needle: &str) -> String {
        let root = DeTable::parse(text).expect("test documents are valid TOML");
        render(&path_at(root.get_ref(), text.find(needle).expect("needle")))
    }

    #[test]
    fn finds_keys_values_and_headers() {
        let text = "name = \"a\"\n[[service]]\nname = \"x\"\n[[service]]\nname = \"y\"\n\
                    caps = [{ endpoint = \"memmgr\" }, { irq = 33 }]\n[\"odd key\"]\nv = 1\n";
        assert_eq!(path_of(text, "\"a\""), "name");
        assert_eq!(path_of(text, "\"y\""), "service[1].name");
        assert_eq!(path_of(text, "33"), "service[1].caps[1].irq");
        assert_eq!(path_of(text, "endpoint"), "service[1].caps[0].endpoint");
        assert_eq!(path_of(text, "v ="), "\"odd key\".v");
        let second_header = text.rfind("[[service]]").expect("header");
        let root = DeTable::parse(text).expect("valid");
        assert_eq!(
            render(&path_at(root.get_ref(), second_header)),
            "service[1]"
        );
        assert_eq!(render(&path_at(root.get_ref(), text.len())), "");
        assert_eq!(
            render(&earlier_key(root.get_ref(), "name", text.len())),
            "service[1].name"
        );
        assert_eq!(render(&earlier_key(root.get_ref(), "name", 3)), "name");
    }
}
