//! adapter_config.json, as PEFT writes it.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ADAPTER_CONFIG;
use crate::engine::error::{EngineError, Result};

/// The fields of adapter_config.json that anything here reads. Each is optional so that a folder
/// is described with what it has; `lora::LoraSettings` checks what the engine needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: Option<String>,
    pub base_model_name_or_path: Option<String>,
    pub r: Option<u64>,
    pub lora_alpha: Option<f64>,
    pub use_rslora: Option<bool>,
    pub target_modules: Option<TargetModules>,
    /// Per-module ranks, in the file's order (PEFT takes the first pattern that matches).
    #[serde(default, deserialize_with = "in_order")]
    pub rank_pattern: Vec<(String, u64)>,
    #[serde(default, deserialize_with = "in_order")]
    pub alpha_pattern: Vec<(String, f64)>,
    pub use_dora: Option<bool>,
    pub bias: Option<String>,
    pub modules_to_save: Option<Vec<String>>,
    pub fan_in_fan_out: Option<bool>,
}

/// PEFT's `target_modules`: module names, or one regular expression.
// Names match a module or a module's last components; a regex must match the whole name;
// "all-linear" is every linear layer but the output head (see `lora::ModuleFilter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a list of module names or a regular expression")]
pub enum TargetModules {
    Names(Vec<String>),
    Regex(String),
}

impl AdapterConfig {
    /// Reads `<dir>/adapter_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            let message = if e.is_data() {
                e.to_string()
            } else {
                format!("not JSON: {e}")
            };
            EngineError::adapter(&path, message)
        })
    }
}

/// A JSON object (or null) as its `(key, value)` pairs in the order written.
fn in_order<'de, D, T>(deserializer: D) -> std::result::Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Pairs<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Pairs<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    deserializer.deserialize_any(Pairs(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_keep_the_file_order_and_target_modules_round_trip() {
        let text = r#"{"r": 4, "target_modules": "all-linear", "alpha_pattern": null,
            "rank_pattern": {"z_proj": 2, "a_proj": 3}}"#;
        let cfg: AdapterConfig = serde_json::from_str(text).unwrap();
        assert_eq!(
            cfg.rank_pattern,
            [("z_proj".into(), 2), ("a_proj".into(), 3)]
        );
        assert!(cfg.alpha_pattern.is_empty());
        assert_eq!(
            serde_json::to_string(&cfg.target_modules).unwrap(),
            r#""all-linear""#
        );
        let names: TargetModules = serde_json::from_str(r#"["q_proj", "v_proj"]"#).unwrap();
        assert_eq!(
            names,
            TargetModules::Names(vec!["q_proj".into(), "v_proj".into()])
        );
    }
}
