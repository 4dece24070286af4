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

/// What a field holding the NUL character is told: no database stores it in text.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Dotted paths (as `FieldError::field` names them) of the strings and keys in `value` that
/// hold a NUL character.
pub fn nul_paths(value: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) if s.contains('\0') => out.push(display(path)),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), out);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if key.contains('\0') {
                        out.push(display(&child));
                    } else {
                        walk(item, &child, out);
                    }
                }
            }
            _ => {}
        }
    }
    fn display(path: &str) -> String {
        if path.is_empty() {
            "(body)".into()
        } else {
            path.replace('\0', "\\u0000")
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
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
