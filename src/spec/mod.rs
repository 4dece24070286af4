//! Job specifications: the bodies of POST /v1/evaluations and POST /v1/trainings (and the SPEC
//! files of `muscle eval` / `muscle train`), with defaults filled in and every field checked.

mod evaluation;
mod training;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::{FolderKind, Resolver};
use crate::validation::{Errors, FieldError};

pub use evaluation::*;
pub use training::*;

/// `{"model": NAME, "adapter": NAME or null, "dtype": "f32|f16|bf16"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// A Hugging Face model folder under MUSCLE_MODEL_DIR.
    pub model: String,
    /// A PEFT LoRA adapter folder under MUSCLE_MODEL_DIR, merged into the model at load.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Compute dtype; defaults to f32 on CPU and bf16 on CUDA.
    #[serde(default)]
    pub dtype: Option<Dtype>,
}

impl ModelRef {
    /// Checks that the model and adapter folders exist under the resolver's root.
    pub fn check(&self, field: &str, resolver: &Resolver, errors: &mut Errors) {
        if let Err(message) = resolver.resolve(&self.model, FolderKind::Model) {
            errors.add(format!("{field}.model"), message);
        }
        if let Some(adapter) = &self.adapter
            && let Err(message) = resolver.resolve(adapter, FolderKind::Adapter)
        {
            errors.add(format!("{field}.adapter"), message);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

/// An uploaded dataset's id, or (CLI only) `{"path": "file.jsonl"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DatasetRef {
    Id(String),
    Path { path: String },
}

/// Parses a JSON body into `T`, naming the field at fault when it does not fit.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Vec<FieldError>> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let field = if path == "." || path == "?" {
            "(body)".to_string()
        } else {
            path
        };
        vec![FieldError::field(field, inner.to_string())]
    })
}

pub(crate) fn check_name(name: &Option<String>, errors: &mut Errors) {
    if let Some(name) = name
        && (name.is_empty() || name.chars().count() > 200)
    {
        errors.add("name", "must be 1 to 200 characters");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_nested_field() {
        let errors = parse_body::<ModelRef>(br#"{"model": "m", "dtype": "f8"}"#).unwrap_err();
        assert_eq!(errors[0].field, "dtype");
        assert!(errors[0].message.contains("f8"), "{}", errors[0].message);
        let errors = parse_body::<ModelRef>(br#"{"model": "m", "adaptor": "x"}"#).unwrap_err();
        assert!(errors[0].message.contains("adaptor"));
        let errors = parse_body::<ModelRef>(b"{").unwrap_err();
        assert_eq!(errors[0].field, "(body)");
    }

    #[test]
    fn dataset_refs_are_ids_or_paths() {
        assert_eq!(
            serde_json::from_str::<DatasetRef>(r#""abc""#).unwrap(),
            DatasetRef::Id("abc".into())
        );
        assert_eq!(
            serde_json::from_str::<DatasetRef>(r#"{"path": "a.jsonl"}"#).unwrap(),
            DatasetRef::Path {
                path: "a.jsonl".into()
            }
        );
    }
}
