//! `describe`: what a model folder the engine runs is, read without loading its weights.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::error::Result;
use super::folder::count_parameters;
use super::tokenize::TokenizerInfo;

/// What `describe` reads of a model folder the engine runs, without loading the weights. (The
/// catalog's `models::ModelInfo` lists any folder, with what can be read of it.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    pub architecture: String,
    pub parameters: u64,
    /// config.json's torch_dtype, else the dtype of the stored tensors.
    pub dtype: String,
    pub vocab_size: usize,
    pub tokenizer_sha256: String,
}

/// Architecture, parameter count, dtype, vocabulary and tokenizer hash of a base folder, read from
/// config.json, the safetensors headers and tokenizer.json (no tensor data is read).
pub fn describe(dir: &Path) -> Result<ModelDescription> {
    let cfg = ModelConfig::from_dir(dir)?;
    let (parameters, stored) = count_parameters(dir)?;
    let dtype = cfg
        .torch_dtype
        .clone()
        .unwrap_or_else(|| stored.unwrap_or_default().to_lowercase());
    let tokenizer = TokenizerInfo::load(dir, &cfg)?;
    Ok(ModelDescription {
        architecture: cfg.architecture.clone(),
        parameters,
        dtype,
        vocab_size: cfg.vocab_size,
        tokenizer_sha256: tokenizer.sha256,
    })
}
