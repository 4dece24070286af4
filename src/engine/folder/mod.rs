//! The files of model and adapter folders, read without loading any weights: which files hold a
//! model's weights, their safetensors headers, and adapter_config.json. The catalog, the
//! submission checks and the engine all read folders through here, so a folder means the same to
//! each (and an index cannot name a shard outside its folder for any of them).

mod adapter_config;
mod header;

use std::path::{Component, Path, PathBuf};

use super::error::{EngineError, Result};

pub use adapter_config::{AdapterConfig, TargetModules};
pub use header::{SafetensorsHeader, TensorHeader, count_parameters};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// The safetensors files of a model folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(WEIGHTS_INDEX);
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::config(&index, format!("not JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| EngineError::config(&index, "no weight_map object"))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        // Shards are files of this folder: an absolute name or `..` would read elsewhere.
        let outside = files.iter().any(|f| {
            let p = Path::new(f.as_str());
            p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_)))
        });
        if outside {
            return Err(EngineError::config(
                &index,
                "weight_map names a shard by an absolute path or through '..': not a file of the model folder",
            ));
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.exists()) {
            return Err(EngineError::config(
                &index,
                format!("lists shard {} which does not exist", missing.display()),
            ));
        }
        return Ok(files);
    }
    let single = dir.join(WEIGHTS);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(EngineError::config(
        dir,
        "no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)",
    ))
}

/// Every file the engine reads of a model folder: configs, tokenizer, and the weights (the
/// shards an index names included).
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        WEIGHTS_INDEX,
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    files.extend(safetensors_files(dir)?);
    Ok(files)
}

/// The files the engine reads of an adapter folder.
pub fn adapter_files(dir: &Path) -> [PathBuf; 2] {
    [ADAPTER_CONFIG, ADAPTER_WEIGHTS].map(|f| dir.join(f))
}
