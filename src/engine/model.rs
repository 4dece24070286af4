//! A loaded model: decoder + tokenizer, with an adapter merged into its weights or applied
//! unmerged over a shared base.

use std::sync::Arc;

use super::config::ModelConfig;
use super::decoder::{Decoder, LoraPath};
use super::error::{EngineError, Result};
use super::lora::LoraAdapter;
use super::tokenize::TokenizerInfo;
use super::types::ModelSpec;
use super::weights::WeightLoader;

pub struct LoadedModel {
    pub spec: ModelSpec,
    pub decoder: Decoder,
    pub tokenizer: Arc<TokenizerInfo>,
    /// Bytes this model holds of its own: all its weights, or only the adapter's factors when
    /// it shares a base model's tensors.
    own_bytes: u64,
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
            own_bytes: decoder.weight_bytes(),
            decoder,
            tokenizer: Arc::new(tokenizer),
        })
    }

    /// `base` (a model without adapter) with the adapter of `spec` applied unmerged,
    /// `y = W x + s B (A x)`: every base tensor is shared with `base`, so evaluating the base
    /// against base + adapter, or two adapters of one base, holds the base weights once.
    pub fn with_adapter(base: &LoadedModel, spec: &ModelSpec) -> Result<Self> {
        let dir = spec.adapter.as_deref().ok_or_else(|| {
            EngineError::InvalidRequest("with_adapter needs a spec with an adapter".into())
        })?;
        let adapter = LoraAdapter::load(dir, &base.decoder.device)?;
        let mut decoder = base.decoder.clone();
        let mut own_bytes = 0;
        for (module, f) in &adapter.factors {
            let Some((out, inp)) = decoder.proj_dims(module)? else {
                return Err(EngineError::adapter(
                    dir,
                    format!(
                        "tensor base_model.model.{module}.lora_A.weight maps to no base weight (no linear layer {module} in the model)"
                    ),
                ));
            };
            let (_, a_in) = f.a.dims2()?;
            let (b_out, _) = f.b.dims2()?;
            if a_in != inp || b_out != out {
                return Err(EngineError::adapter(
                    dir,
                    format!(
                        "shape mismatch for {module}: lora_A {:?} and lora_B {:?} do not fit the base weight [{out}, {inp}]",
                        f.a.dims(),
                        f.b.dims()
                    ),
                ));
            }
            own_bytes += ((f.a.elem_count() + f.b.elem_count()) * 4) as u64;
            let path = LoraPath {
                a: f.a.clone(),
                b: f.b.clone(),
                scaling: f.scaling,
                dropout: 0.0,
            };
            decoder.set_lora(module, Some(path))?;
        }
        Ok(Self {
            spec: spec.clone(),
            decoder,
            tokenizer: base.tokenizer.clone(),
            own_bytes,
        })
    }

    /// Bytes this model adds to memory (for the cache budget).
    pub fn bytes(&self) -> u64 {
        self.own_bytes
    }
}
