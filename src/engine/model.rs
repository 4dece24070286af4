//! A loaded model: decoder (LoRA merged) + tokenizer; and `describe` without loading weights.

use std::path::Path;

use super::config::ModelConfig;
use super::decoder::Decoder;
use super::error::{EngineError, Result};
use super::lora::LoraAdapter;
use super::tokenize::TokenizerInfo;
use super::types::{ModelInfo, ModelSpec};
use super::weights::{WeightLoader, safetensors_files};

pub struct LoadedModel {
    pub spec: ModelSpec,
    pub decoder: Decoder,
    pub tokenizer: TokenizerInfo,
}

impl LoadedModel {
    /// Loads the base folder, merges the adapter if any, and reads the tokenizer.
    pub fn load(spec: &ModelSpec, fused: bool) -> Result<Self> {
        let _span = tracing::info_span!("load_model", base = %spec.base.display()).entered();
        let device = spec.device.device()?;
        let cfg = ModelConfig::from_dir(&spec.base)?;
        let tokenizer = TokenizerInfo::load(&spec.base, &cfg)?;
        let adapter = spec
            .adapter
            .as_deref()
            .map(|a| LoraAdapter::load(a, &device))
            .transpose()?;
        let mut loader =
            WeightLoader::open(&spec.base, spec.dtype.candle(), &device, adapter.as_ref())?;
        let mut decoder = Decoder::load(&cfg, &mut loader)?;
        decoder.fused = fused;
        tracing::info!(parameters = decoder.parameters, "model loaded");
        Ok(Self {
            spec: spec.clone(),
            decoder,
            tokenizer,
        })
    }

    /// Bytes held by the weights (for the cache budget).
    pub fn bytes(&self) -> u64 {
        self.decoder.weight_bytes()
    }
}

/// Architecture, parameter count, dtype, vocabulary and tokenizer hash of a base folder, read from
/// config.json, the safetensors headers and tokenizer.json (no tensor data is read).
pub fn describe(dir: &Path) -> Result<ModelInfo> {
    let cfg = ModelConfig::from_dir(dir)?;
    let files = safetensors_files(dir)?;
    // SAFETY: read-only mapping; only the headers are inspected.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| EngineError::config(dir, format!("cannot map safetensors: {e}")))?;
    let tensors = st.tensors();
    let parameters = tensors
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
        .sum();
    let dtype = cfg.torch_dtype.clone().unwrap_or_else(|| {
        tensors
            .first()
            .map(|(_, v)| format!("{:?}", v.dtype()).to_lowercase())
            .unwrap_or_default()
    });
    let tokenizer = TokenizerInfo::load(dir, &cfg)?;
    Ok(ModelInfo {
        architecture: cfg.architecture.hf_name().to_string(),
        parameters,
        dtype,
        vocab_size: cfg.vocab_size,
        tokenizer_sha256: tokenizer.sha256,
    })
}
