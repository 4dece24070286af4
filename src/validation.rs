//! What a 422 names: the field (and, for dataset uploads, the line) at fault.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// 1-based line of an uploaded JSONL file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Dotted path of the field at fault (`old.model`, `gate[1].metric`, `answer`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn line(line: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects every problem of one request before answering.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::field(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// Longest string a JSON spec may hold anywhere (names, regexes, stop strings, URLs).
pub const MAX_SPEC_STRING_CHARS: usize = 4096;
/// Most items of any array in a JSON spec (tighter bounds per field come after parsing).
pub const MAX_SPEC_ARRAY_ITEMS: usize = 1000;

/// The strings and arrays of `value` beyond the bounds above, by dotted path.
pub fn oversized(value: &serde_json::Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    walk_sizes(value, "", &mut out);
    out
}

fn walk_sizes(value: &serde_json::Value, path: &str, out: &mut Vec<FieldError>) {
    let field = || {
        if path.is_empty() {
            "(body)".to_string()
        } else {
            path.to_string()
        }
    };
    match value {
        serde_json::Value::String(s) if s.chars().count() > MAX_SPEC_STRING_CHARS => {
            out.push(FieldError::field(
                field(),
                format!("at most {MAX_SPEC_STRING_CHARS} characters"),
            ))
        }
        serde_json::Value::Array(items) if items.len() > MAX_SPEC_ARRAY_ITEMS => out.push(
            FieldError::field(field(), format!("at most {MAX_SPEC_ARRAY_ITEMS} items")),
        ),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_sizes(item, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                if key.chars().count() > MAX_SPEC_STRING_CHARS {
                    out.push(FieldError::field(
                        field(),
                        format!("holds a key of more than {MAX_SPEC_STRING_CHARS} characters"),
                    ));
                } else if path.is_empty() {
                    walk_sizes(item, key, out);
                } else {
                    walk_sizes(item, &format!("{path}.{key}"), out);
                }
            }
        }
        _ => {}
    }
}

/// What a field holding the NUL character is told: no database stores it in text.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Dotted paths (as `FieldError::field` names them) of the strings and keys in `value` that
/// hold a NUL character.
pub fn nul_paths(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_nul(value, "", &mut out);
    out
}

/// As [`nul_paths`], for the fields of a JSON object.
pub fn nul_paths_in(object: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    walk_nul_map(object, "", &mut out);
    out
}

fn walk_nul(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => out.push(nul_display(path)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_nul(item, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => walk_nul_map(map, path, out),
        _ => {}
    }
}

fn walk_nul_map(
    map: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    for (key, item) in map {
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key.contains('\0') {
            out.push(nul_display(&child));
        } else {
            walk_nul(item, &child, out);
        }
    }
}

fn nul_display(path: &str) -> String {
    if path.is_empty() {
        "(body)".into()
    } else {
        path.replace('\0', "\\u0000")
    }
}

/// The lines of a JSON-lines upload as objects, with their 1-based numbers; blank lines are
/// skipped, a line that is not UTF-8, not JSON or not an object is an error naming it.
pub fn json_lines(
    body: &[u8],
) -> impl Iterator<
    Item = (
        usize,
        Result<serde_json::Map<String, serde_json::Value>, FieldError>,
    ),
> + '_ {
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(index, raw)| {
            let line = index + 1;
            let text = match std::str::from_utf8(raw) {
                Ok(text) => text.trim_end_matches('\r'),
                Err(e) => {
                    return Some((
                        line,
                        Err(FieldError::line(
                            line,
                            "(line)",
                            format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
                        )),
                    ));
                }
            };
            if text.trim().is_empty() {
                return None;
            }
            let parsed = match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(object)) => Ok(object),
                Ok(_) => Err(FieldError::line(
                    line,
                    "(line)",
                    "each line must be a JSON object",
                )),
                Err(e) => Err(FieldError::line(
                    line,
                    "(line)",
                    format!("invalid JSON at column {}: {e}", e.column()),
                )),
            };
            Some((line, parsed))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn oversized_strings_and_arrays_are_found_with_their_path() {
        let long = "x".repeat(super::MAX_SPEC_STRING_CHARS + 1);
        let v = serde_json::json!({"name": long, "gate": vec![1; 1001], "task": {"stop": [long, "ok"]}, "ok": "é".repeat(4096)});
        let fields: Vec<String> = super::oversized(&v).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "gate", "task.stop[0]"]);
    }

    #[test]
    fn nul_characters_are_found_with_their_path() {
        let v = serde_json::json!({"name": "a\u{0}b", "old": {"model": "m"}, "gate": [{"metric": "x\u{0}"}], "k\u{0}": 1});
        assert_eq!(
            super::nul_paths(&v),
            vec!["name", "gate[0].metric", "k\\u0000"]
        );
        assert!(super::nul_paths(&serde_json::json!({"a": ["b"]})).is_empty());
    }
}
