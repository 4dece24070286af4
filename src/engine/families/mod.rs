//! One file per model family: its config fields, tensor names and PEFT target names, wiring the
//! shared layers into a `Decoder`. `REGISTRY` maps config.json's `architectures[0]` (or
//! `model_type`) to the family; adding a family is a file here and a line in `REGISTRY`.

mod common;
mod gemma;
mod llama;
mod phi;
mod phi3;
mod qwen3;

use super::config::ModelConfig;
use super::decoder::Parts;
use super::error::{EngineError, Result};
use super::weights::WeightLoader;

/// A model family: the transformers classes it loads and how their weights become a decoder.
pub trait Family: Sync + std::fmt::Debug {
    /// A short name for listings (`llama`, `phi`, `gemma`, ...).
    fn name(&self) -> &'static str;
    /// transformers' class names (config.json `architectures[0]`), each with its `model_type`.
    fn architectures(&self) -> &'static [(&'static str, &'static str)];
    /// Reads the family's config fields and tensors.
    fn load(&self, cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Parts>;
}

pub static REGISTRY: &[&dyn Family] = &[
    &llama::Llama,
    &qwen3::Qwen3,
    &phi::Phi,
    &phi3::Phi3,
    &gemma::Gemma,
];

/// Every supported transformers class name, in registry order.
pub fn supported_architectures() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .flat_map(|f| f.architectures().iter().map(|(a, _)| *a))
        .collect()
}

/// The family of a config: by class name when given, else by `model_type`.
pub fn resolve(
    architecture: Option<&str>,
    model_type: Option<&str>,
) -> Result<(String, &'static dyn Family)> {
    let found = REGISTRY.iter().find_map(|f| {
        f.architectures()
            .iter()
            .find(|(a, t)| match architecture {
                Some(name) => *a == name,
                None => Some(*t) == model_type,
            })
            .map(|(a, _)| (a.to_string(), *f))
    });
    found.ok_or_else(|| EngineError::UnsupportedArchitecture {
        name: architecture
            .map(str::to_string)
            .or(model_type.map(|t| format!("model_type {t}")))
            .unwrap_or_default(),
        supported: supported_architectures().join(", "),
    })
}
