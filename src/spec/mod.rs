//! Job specifications: the bodies of POST /v1/evaluations and POST /v1/trainings (and the SPEC
//! files of `muscle eval` / `muscle train`), with defaults filled in and every field checked.

mod endpoint;
mod evaluation;
mod harness;
mod sampling;
mod side;
mod training;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dataset::DatasetFormat;
use crate::engine::config::ModelConfig;
use crate::engine::folder::{AdapterConfig, adapter_files, model_files};
use crate::engine::lora;
use crate::engine::{DeviceSpec, EngineError};
use crate::models::{FolderKind, Resolver};
use crate::validation::{Errors, FieldError};

pub use endpoint::*;
pub use evaluation::*;
pub use harness::{ExactMatchRules, Extract, GSM8K_FLEXIBLE, GSM8K_STRICT, Preset};
pub use sampling::{MAX_SAMPLES, SamplingSpec};
pub use side::{PredictionsRef, Side};
pub use training::*;

/// `{"model": NAME, "adapter": NAME or null, "dtype": "f32|f16|bf16"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// A Hugging Face model folder under MUSCLE_MODEL_DIR.
    pub model: String,
    /// A PEFT LoRA adapter folder under MUSCLE_MODEL_DIR, applied over the model (its base
    /// tensors shared with every other use of the same base).
    #[serde(default)]
    pub adapter: Option<String>,
    /// Compute dtype; defaults to f32 on CPU and bf16 on CUDA. f16 and bf16 are refused on CPU
    /// (no half-precision matrix multiply there: slower than f32 and less exact).
    #[serde(default)]
    pub dtype: Option<Dtype>,
}

impl ModelRef {
    /// Checks that the model and adapter folders exist under the resolver's root, that the
    /// engine runs the model's architecture, and that the adapter fits the model (from the files'
    /// headers: what a worker would otherwise find only when the job runs).
    pub fn check(&self, field: &str, resolver: &Resolver, errors: &mut Errors) {
        let model = match resolver.resolve(&self.model, FolderKind::Model) {
            Ok(folder) => match model_files(&folder)
                .map_err(|e| without_paths(&e))
                .and_then(|files| resolver.files_inside(&self.model, &files))
                .and_then(|()| ModelConfig::from_dir(&folder).map_err(|e| without_paths(&e)))
            {
                Ok(_) => Some(folder),
                Err(message) => {
                    errors.add(format!("{field}.model"), message);
                    None
                }
            },
            Err(message) => {
                errors.add(format!("{field}.model"), message);
                None
            }
        };
        let Some(adapter) = &self.adapter else { return };
        let adapter_folder =
            match resolver
                .resolve(adapter, FolderKind::Adapter)
                .and_then(|folder| {
                    resolver
                        .files_inside(adapter, &adapter_files(&folder))
                        .map(|()| folder)
                }) {
                Ok(folder) => folder,
                Err(message) => {
                    errors.add(format!("{field}.adapter"), message);
                    return;
                }
            };
        let Some(model) = model else { return };
        if let Some(message) = trained_on_another_base(&adapter_folder, &model, resolver) {
            errors.add(format!("{field}.adapter"), message);
        } else if let Err(e) = lora::check_fits_base(&adapter_folder, &model) {
            errors.add(format!("{field}.adapter"), without_paths(&e));
        }
    }
}

/// An engine error's message without the server's file paths.
fn without_paths(e: &EngineError) -> String {
    match e {
        EngineError::Config { message, .. } | EngineError::Adapter { message, .. } => {
            message.clone()
        }
        EngineError::Io { path, source } => format!(
            "cannot read {}: {source}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        other => other.to_string(),
    }
}

/// When the adapter's `base_model_name_or_path` names another model folder under the root,
/// the adapter was trained on that model, not on this one (same shapes or not).
fn trained_on_another_base(adapter: &Path, model: &Path, resolver: &Resolver) -> Option<String> {
    let named = AdapterConfig::read(adapter).ok()?.base_model_name_or_path?;
    let named_folder = resolver.confined(&named).ok()?;
    if !named_folder.join("config.json").is_file() {
        return None;
    }
    let same = named_folder.canonicalize().ok()? == model.canonicalize().ok()?;
    (!same).then(|| {
        format!(
            "the adapter was trained on {named:?} (its base_model_name_or_path), not on this model"
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// Why this dtype is refused on `device`, if it is. Candle has no half-precision matrix
    /// multiply on CPU (each product widens the whole weight to f32 and rounds the result back):
    /// measured 2.6x slower than f32 there, with scores moved by up to 0.75 nats.
    pub fn refused_on(self, device: DeviceSpec) -> Option<String> {
        match (self, device) {
            (Self::F16 | Self::Bf16, DeviceSpec::Cpu) => Some(format!(
                "{} is not run on a CPU device: its CPU kernels are several times slower than \
                 f32 and less exact; use \"f32\" (the CPU default) or a CUDA worker",
                self.as_str()
            )),
            _ => None,
        }
    }
}

/// `<field>.dtype` errors of the model references `(field, model)` that `device` does not run.
pub fn refused_dtypes<'a>(
    models: impl IntoIterator<Item = (&'a str, Option<&'a ModelRef>)>,
    device: DeviceSpec,
) -> Vec<FieldError> {
    models
        .into_iter()
        .filter_map(|(field, model)| {
            let why = model?.dtype?.refused_on(device)?;
            Some(FieldError::field(format!("{field}.dtype"), why))
        })
        .collect()
}

/// An uploaded dataset's id or name, or (CLI only) `{"path": "file.jsonl"}`, optionally with
/// `"format": "lm-eval"` (a samples file) and `"slice_by": [doc fields]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DatasetRef {
    Id(String),
    Path {
        path: String,
        #[serde(default, skip_serializing_if = "is_muscle")]
        format: DatasetFormat,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        slice_by: Vec<String>,
    },
}

fn is_muscle(format: &DatasetFormat) -> bool {
    *format == DatasetFormat::Muscle
}

/// Parses a JSON body into `T`, naming the field at fault when it does not fit. Every field at
/// fault is reported at once: each unknown or invalid field is taken out and the body read
/// again (a required field taken out is then missing, which is not reported twice).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Vec<FieldError>> {
    const MOST_REPORTED: usize = 50;
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| vec![FieldError::field("(body)", e.to_string())])?;
    let nul = crate::validation::nul_paths(&value);
    if !nul.is_empty() {
        return Err(nul
            .into_iter()
            .map(|f| FieldError::field(f, crate::validation::NUL_MESSAGE))
            .collect());
    }
    let oversized = crate::validation::oversized(&value);
    if !oversized.is_empty() {
        return Err(oversized);
    }
    let mut errors: Vec<FieldError> = Vec::new();
    while errors.len() < MOST_REPORTED {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(_) => break,
            Err(error) => error,
        };
        let path = error.path().clone();
        let message = error.into_inner().to_string();
        let field = match path.to_string().as_str() {
            "." | "?" => "(body)".to_string(),
            other => other.to_string(),
        };
        if message.starts_with("missing field")
            && errors
                .iter()
                .any(|e| message.contains(&format!("`{}`", last_key(&e.field))))
        {
            break;
        }
        errors.push(FieldError::field(field, &message));
        if !remove_at(&mut value, &path) {
            break;
        }
    }
    Err(errors)
}

/// The last key of a reported field path (`options.batch_size` -> `batch_size`).
fn last_key(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

/// Removes the key that `path` ends in; false when the path does not lead to one.
fn remove_at(value: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        let next = match segment {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    // shift_remove keeps the other keys in order: they are then read in the order written.
    at.as_object_mut()
        .is_some_and(|o| o.shift_remove(key.as_str()).is_some())
}

pub(crate) fn check_name(name: &Option<String>, errors: &mut Errors) {
    if let Some(name) = name
        && (name.is_empty() || name.chars().count() > 200)
    {
        errors.add("name", "must be 1 to 200 characters");
    }
}

/// The least a model folder of the tests' model roots needs to pass submission: a config.json
/// the engine parses and a weights file (its contents are read only when a job runs).
#[cfg(test)]
pub(crate) fn write_test_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 10}"#,
    )
    .unwrap();
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
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
        // Every field at fault at once, in the order written.
        let errors =
            parse_body::<ModelRef>(br#"{"model": 1, "adaptor": "x", "dtyp": "f32", "dtype": 3}"#)
                .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        // "model" is required: taken out, it is missing, which is not reported a second time.
        assert_eq!(
            fields,
            vec!["model", "adaptor", "dtyp", "dtype"],
            "{errors:?}"
        );
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
                path: "a.jsonl".into(),
                format: DatasetFormat::Muscle,
                slice_by: Vec::new(),
            }
        );
    }
}
