//! `config.json` of a Hugging Face model folder: what every family has (sizes, vocabulary,
//! special ids), the family it belongs to, and the file itself for the family's own fields.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{EngineError, Result};
use super::families::{self, Family};

/// The parsed model configuration.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// transformers' class name (config.json's `architectures[0]`).
    pub architecture: String,
    pub family: &'static dyn Family,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// `torch_dtype` (or `dtype`) as written in the file.
    pub torch_dtype: Option<String>,
    /// The whole file, read by the family for its own fields.
    pub raw: Value,
    pub path: PathBuf,
}

pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Typed reads of config.json fields, with errors naming the file and the key.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub v: &'a Value,
    pub path: &'a Path,
}

impl<'a> Fields<'a> {
    pub fn error(&self, message: impl Into<String>) -> EngineError {
        EngineError::config(self.path, message)
    }

    /// A present, non-null field.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|x| !x.is_null())
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.error(format!("\"{key}\" must be a non-negative integer, not {x}"))
            }),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.error(format!("missing \"{key}\"")))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(format!("\"{key}\" must be a number, not {x}"))),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| self.error(format!("\"{key}\" must be true or false, not {x}"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_str()
                .map(Some)
                .ok_or_else(|| self.error(format!("\"{key}\" must be a string, not {x}"))),
        }
    }

    /// The same reads on a nested object (e.g. `rope_parameters`).
    pub fn nested(&self, v: &'a Value) -> Fields<'a> {
        Fields { v, path: self.path }
    }
}

impl ModelConfig {
    /// Reads `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::config(&path, format!("not JSON: {e}")))?;
        Self::from_value(&v, &path)
    }

    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let f = Fields { v, path };
        let named = v
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        let model_type = f.opt_str("model_type")?;
        if named.is_none() && model_type.is_none() {
            return Err(f.error("no \"architectures\" entry and no \"model_type\""));
        }
        let (architecture, family) = families::resolve(named, model_type)?;
        let hidden_size = f.usize("hidden_size")?;
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        let vocab_size = f.usize("vocab_size")?;
        if hidden_size == 0 || num_hidden_layers == 0 || vocab_size == 0 {
            return Err(f.error("hidden_size, num_hidden_layers and vocab_size must be positive"));
        }
        Ok(Self {
            architecture,
            family,
            hidden_size,
            num_hidden_layers,
            vocab_size,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(4096),
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
            torch_dtype: f
                .opt_str("torch_dtype")?
                .or(f.opt_str("dtype")?)
                .map(str::to_string),
            raw: v.clone(),
            path: path.to_path_buf(),
        })
    }

    pub fn fields(&self) -> Fields<'_> {
        Fields {
            v: &self.raw,
            path: &self.path,
        }
    }
}

/// Reads generation_config.json's eos ids if the file exists.
pub fn generation_eos_ids(dir: &Path) -> Vec<u32> {
    let path = dir.join("generation_config.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| token_ids(v.get("eos_token_id")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
            "rms_norm_eps": 1e-5, "vocab_size": 100
        })
    }

    #[test]
    fn resolves_the_family_by_architecture_or_model_type() {
        let c = ModelConfig::from_value(&base(), Path::new("x")).unwrap();
        assert_eq!(c.architecture, "LlamaForCausalLM");
        let mut v = base();
        v.as_object_mut().unwrap().remove("architectures");
        v["model_type"] = "qwen3".into();
        let c = ModelConfig::from_value(&v, Path::new("x")).unwrap();
        assert_eq!(c.architecture, "Qwen3ForCausalLM");
    }

    #[test]
    fn refuses_unknown_architecture_naming_the_supported_ones() {
        let mut v = base();
        v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        let e = ModelConfig::from_value(&v, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPT2LMHeadModel"), "{e}");
        for name in [
            "LlamaForCausalLM",
            "PhiForCausalLM",
            "Gemma2ForCausalLM",
            "Qwen3ForCausalLM",
        ] {
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn names_the_field_at_fault() {
        let mut v = base();
        v["hidden_size"] = "64".into();
        let e = ModelConfig::from_value(&v, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }
}
