//! What MUSCLE_MODEL_DIR (and MUSCLE_TRAINED_DIR) hold: model folders and adapter folders,
//! described from their files without loading any weights.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::engine::folder::{ADAPTER_CONFIG, AdapterConfig, TargetModules, count_parameters};
use crate::models::Resolver;
use crate::train::output::TRAINED_ROOT;

/// How deep under the root folders are looked for (`org/family/model`).
pub const MAX_DEPTH: usize = 3;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: Option<String>,
    /// The engine's family for this architecture (`llama`, `qwen3`, `phi`, `phi3`, `gemma`),
    /// null when the engine does not run it.
    pub family: Option<String>,
    /// Whether evaluations and trainings can use this model.
    pub supported: bool,
    /// Parameters counted from the safetensors headers.
    pub parameters: Option<u64>,
    /// Storage dtype of the weights (`F32`, `BF16`, ...).
    pub dtype: Option<String>,
    pub vocab_size: Option<u64>,
    pub tokenizer_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdapterInfo {
    pub name: String,
    pub base_model_name_or_path: Option<String>,
    pub r: Option<u64>,
    pub lora_alpha: Option<f64>,
    /// As adapter_config.json has it: a list of module names, a regex, or null.
    pub target_modules: Option<TargetModules>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Catalog {
    pub models: Vec<ModelInfo>,
    pub adapters: Vec<AdapterInfo>,
}

/// What `GET /v1/models` lists: the folders under MUSCLE_MODEL_DIR and, where MUSCLE_TRAINED_DIR
/// is set, those under it as `trained/...` (which then hides MUSCLE_MODEL_DIR's own `trained/`).
pub fn list(resolver: &Resolver) -> Catalog {
    let mut catalog = scan(resolver.root());
    let Some(trained_dir) = resolver.trained_dir() else {
        return catalog;
    };
    let prefix = format!("{TRAINED_ROOT}/");
    catalog.models.retain(|m| !m.name.starts_with(&prefix));
    catalog.adapters.retain(|a| !a.name.starts_with(&prefix));
    let trained = scan(trained_dir);
    catalog
        .models
        .extend(trained.models.into_iter().map(|mut m| {
            m.name = format!("{prefix}{}", m.name);
            m
        }));
    catalog
        .adapters
        .extend(trained.adapters.into_iter().map(|mut a| {
            a.name = format!("{prefix}{}", a.name);
            a
        }));
    catalog.models.sort_by(|a, b| a.name.cmp(&b.name));
    catalog.adapters.sort_by(|a, b| a.name.cmp(&b.name));
    catalog
}

/// Lists the folders under `root`; unreadable entries are skipped, never fatal.
pub fn scan(root: &Path) -> Catalog {
    let mut catalog = Catalog::default();
    let Ok(real_root) = root.canonicalize() else {
        return catalog;
    };
    walk(&real_root, &real_root, 0, &mut catalog);
    catalog.models.sort_by(|a, b| a.name.cmp(&b.name));
    catalog.adapters.sort_by(|a, b| a.name.cmp(&b.name));
    catalog
}

fn walk(root: &Path, dir: &Path, depth: usize, catalog: &mut Catalog) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // Hidden folders are never listed: a training installs its adapter through `.JOBID.partial`.
    let mut folders: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| e.path())
        .collect();
    folders.sort();
    for folder in folders {
        let Ok(real) = folder.canonicalize() else {
            continue;
        };
        if !real.is_dir() || !real.starts_with(root) {
            continue;
        }
        let name = folder
            .strip_prefix(root)
            .unwrap_or(&folder)
            .to_string_lossy()
            .into_owned();
        if real.join("config.json").is_file() {
            catalog.models.push(describe_model(&real, name));
        } else if real.join(ADAPTER_CONFIG).is_file() {
            catalog.adapters.push(describe_adapter(&real, name));
        } else if depth + 1 < MAX_DEPTH {
            walk(root, &real, depth + 1, catalog);
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub fn describe_model(folder: &Path, name: String) -> ModelInfo {
    let config = read_json(&folder.join("config.json")).unwrap_or(Value::Null);
    let (parameters, dtype) = count_parameters(folder).ok().unzip();
    let architecture = config["architectures"][0].as_str();
    let family = crate::engine::families::resolve(architecture, config["model_type"].as_str())
        .ok()
        .map(|(_, f)| f.name().to_string());
    ModelInfo {
        name,
        architecture: architecture.map(String::from),
        supported: family.is_some(),
        family,
        parameters,
        dtype: dtype.flatten(),
        vocab_size: config["vocab_size"].as_u64(),
        tokenizer_sha256: std::fs::read(folder.join("tokenizer.json"))
            .ok()
            .map(|bytes| hex::encode(Sha256::digest(bytes))),
    }
}

fn describe_adapter(folder: &Path, name: String) -> AdapterInfo {
    let config = AdapterConfig::read(folder).unwrap_or_default();
    AdapterInfo {
        name,
        base_model_name_or_path: config.base_model_name_or_path,
        r: config.r,
        lora_alpha: config.lora_alpha,
        target_modules: config.target_modules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, header: &Value) {
        let header = serde_json::to_vec(header).unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn models_and_adapters_are_described_from_their_files() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("org/tiny");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(
            model.join("config.json"),
            r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 300}"#,
        )
        .unwrap();
        std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(
            model.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s1.safetensors"}}"#,
        )
        .unwrap();
        write_safetensors(
            &model.join("s1.safetensors"),
            &serde_json::json!({"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]}, "c": {"dtype": "BF16", "shape": [5], "data_offsets": [24, 34]}}),
        );
        write_safetensors(
            &model.join("s2.safetensors"),
            &serde_json::json!({"b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}),
        );
        let adapter = root.path().join("lora");
        std::fs::create_dir_all(&adapter).unwrap();
        std::fs::write(
            adapter.join("adapter_config.json"),
            r#"{"base_model_name_or_path": "org/tiny", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}"#,
        )
        .unwrap();

        let catalog = scan(root.path());
        assert_eq!(catalog.models.len(), 1);
        let info = &catalog.models[0];
        assert_eq!(info.name, "org/tiny");
        assert_eq!(info.architecture.as_deref(), Some("LlamaForCausalLM"));
        assert_eq!(
            (info.family.as_deref(), info.supported),
            (Some("llama"), true)
        );
        assert_eq!(info.parameters, Some(12 + 5 + 4));
        assert_eq!(info.dtype.as_deref(), Some("BF16"));
        assert_eq!(info.vocab_size, Some(300));
        assert_eq!(
            info.tokenizer_sha256.as_deref(),
            Some("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
        );
        assert_eq!(catalog.adapters[0].name, "lora");
        assert_eq!(catalog.adapters[0].r, Some(8));
    }

    #[test]
    fn an_index_naming_a_shard_outside_the_folder_is_not_read() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("escape");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        write_safetensors(
            &root.path().join("outside.safetensors"),
            &serde_json::json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}),
        );
        std::fs::write(
            model.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "../outside.safetensors"}}"#,
        )
        .unwrap();
        let info = &scan(root.path()).models[0];
        assert_eq!((info.parameters, info.dtype.as_deref()), (None, None));
    }

    #[test]
    fn hidden_folders_are_not_listed() {
        let root = tempfile::tempdir().unwrap();
        for folder in ["trained/.0190-job.partial", ".cache/lora", "trained/shown"] {
            let adapter = root.path().join(folder);
            std::fs::create_dir_all(&adapter).unwrap();
            std::fs::write(adapter.join("adapter_config.json"), r#"{"r": 4}"#).unwrap();
        }
        let names: Vec<String> = scan(root.path())
            .adapters
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["trained/shown"]);
    }

    #[test]
    fn a_missing_root_is_an_empty_catalog() {
        let catalog = scan(Path::new("/nonexistent/models"));
        assert!(catalog.models.is_empty() && catalog.adapters.is_empty());
    }

    #[test]
    fn a_trained_dir_is_listed_under_trained_in_place_of_the_models_own() {
        let models = tempfile::tempdir().unwrap();
        let trained = tempfile::tempdir().unwrap();
        for folder in [
            models.path().join("trained/shadowed"),
            models.path().join("lora"),
            trained.path().join("team/compat"),
        ] {
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("adapter_config.json"), r#"{"r": 4}"#).unwrap();
        }
        let resolver =
            Resolver::server(models.path()).with_trained_dir(Some(trained.path().to_path_buf()));
        let names: Vec<String> = list(&resolver)
            .adapters
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["lora", "trained/team/compat"]);
        let without: Vec<String> = list(&Resolver::server(models.path()))
            .adapters
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(without, ["lora", "trained/shadowed"]);
    }
}
