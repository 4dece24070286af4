//! Writing a PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors with PEFT
//! key names and metadata {"format": "pt"}, which `PeftModel.from_pretrained` loads.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::json;

use super::adapter::TrainableLora;

pub use crate::engine::folder::{ADAPTER_CONFIG as CONFIG, ADAPTER_WEIGHTS as WEIGHTS};

/// adapter_config.json for an adapter of this shape.
pub fn adapter_config(lora: &TrainableLora, base_model: &str) -> serde_json::Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "init_lora_weights": true,
    })
}

/// Writes `tensors` (f32) to a safetensors file with metadata {"format": "pt"}.
pub fn write_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), String> {
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    let mut data = Vec::with_capacity(keys.len());
    for key in keys {
        let t = tensors[key]
            .to_dtype(DType::F32)
            .map_err(|e| e.to_string())?;
        let values = t
            .flatten_all()
            .and_then(|f| f.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.push((key.clone(), t.dims().to_vec(), bytes));
    }
    let views = data
        .iter()
        .map(|(k, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    // Not serialize_to_file: its temporary file leaves the weights mode 0600, beside a config
    // readable under the umask like any file written here. (Folders are renamed into place
    // whole, so the file itself need not be.)
    let bytes = safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| e.to_string())?;
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes the adapter folder `dir` (created; must not exist yet).
pub fn write_adapter(
    dir: &Path,
    lora: &TrainableLora,
    tensors: &HashMap<String, Tensor>,
    base_model: &str,
) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let config = serde_json::to_string_pretty(&adapter_config(lora, base_model))
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join(CONFIG), config + "\n")
        .map_err(|e| format!("writing {}: {e}", dir.join(CONFIG).display()))?;
    write_safetensors(tensors, &dir.join(WEIGHTS))
}
