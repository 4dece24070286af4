//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`, merged into the base
//! weights at load time (W' = W + scaling * B @ A, computed in f32).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::error::{EngineError, Result};
use super::folder::{ADAPTER_WEIGHTS, AdapterConfig, TargetModules};
use candle_core::{DType, Device, Tensor};
use regex::Regex;

const KEY_PREFIX: &str = "base_model.model.";

/// Which modules an adapter adapts: its `TargetModules`, compiled.
#[derive(Debug, Clone)]
pub enum ModuleFilter {
    /// Exact module names or name suffixes (matched after a '.').
    List(Vec<String>),
    /// A regex that must match the full module name.
    Regex(Regex),
    /// Every linear layer except the output head.
    AllLinear,
}

impl ModuleFilter {
    pub fn matches(&self, module: &str) -> bool {
        match self {
            Self::List(names) => names
                .iter()
                .any(|n| module == n || module.ends_with(&format!(".{n}"))),
            Self::Regex(re) => re.is_match(module),
            Self::AllLinear => module != "lm_head" && !module.ends_with(".lm_head"),
        }
    }
}

/// One adapted module: factors in f32 and the scaling to apply.
#[derive(Debug, Clone)]
pub struct LoraFactor {
    /// `[r, in_features]`
    pub a: Tensor,
    /// `[out_features, r]`
    pub b: Tensor,
    pub scaling: f64,
}

impl LoraFactor {
    /// scaling * B @ A in f32, shape `[out, in]`.
    pub fn delta(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scaling)?)
    }
}

/// A parsed, validated adapter, keyed by base module path (e.g. `model.layers.0.self_attn.q_proj`).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub path: PathBuf,
    pub factors: BTreeMap<String, LoraFactor>,
}

/// What the engine applies of an adapter_config.json, checked: the rank, scaling and modules.
#[derive(Debug, Clone)]
pub struct LoraSettings {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub target_modules: ModuleFilter,
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
}

/// PEFT's `get_pattern_key`: exact name first, then `(.*\.)?(pattern)$`.
fn pattern_key<'a, T>(patterns: &'a [(String, T)], module: &str) -> Option<&'a T> {
    if let Some((_, v)) = patterns.iter().find(|(k, _)| k == module) {
        return Some(v);
    }
    patterns.iter().find_map(|(k, v)| {
        let re = if k.starts_with('^') {
            Regex::new(k)
        } else {
            Regex::new(&format!(r"^(?:.*\.)?(?:{k})$"))
        };
        re.ok().filter(|re| re.is_match(module)).map(|_| v)
    })
}

impl LoraSettings {
    pub fn scaling(&self, module: &str) -> (usize, f64) {
        let r = pattern_key(&self.rank_pattern, module)
            .copied()
            .unwrap_or(self.r);
        let alpha = pattern_key(&self.alpha_pattern, module)
            .copied()
            .unwrap_or(self.lora_alpha);
        let denom = if self.use_rslora {
            (r as f64).sqrt()
        } else {
            r as f64
        };
        (r, alpha / denom)
    }

    /// Reads `<dir>/adapter_config.json` and checks what the engine supports of it.
    pub fn read(dir: &Path) -> Result<Self> {
        Self::new(&AdapterConfig::read(dir)?, dir)
    }

    /// Refuses what the engine does not support of `cfg` (read from the adapter at `path`).
    pub fn new(cfg: &AdapterConfig, path: &Path) -> Result<Self> {
        let err = |m: String| EngineError::adapter(path, m);
        if let Some(t) = &cfg.peft_type
            && t != "LORA"
        {
            return Err(err(format!("peft_type {t:?} is not supported (only LORA)")));
        }
        if cfg.use_dora == Some(true) {
            return Err(err("use_dora (DoRA) is not supported".into()));
        }
        if let Some(b) = &cfg.bias
            && b != "none"
        {
            return Err(err(format!("bias {b:?} is not supported (only \"none\")")));
        }
        if let Some(m) = &cfg.modules_to_save
            && !m.is_empty()
        {
            return Err(err(format!("modules_to_save {m:?} is not supported")));
        }
        if cfg.fan_in_fan_out == Some(true) {
            return Err(err("fan_in_fan_out is not supported".into()));
        }
        let r = cfg
            .r
            .filter(|r| *r > 0)
            .ok_or_else(|| err("missing or invalid \"r\"".into()))? as usize;
        let target_modules = match &cfg.target_modules {
            Some(TargetModules::Regex(s)) if s == "all-linear" => ModuleFilter::AllLinear,
            Some(TargetModules::Regex(s)) => ModuleFilter::Regex(
                Regex::new(&format!("^(?:{s})$"))
                    .map_err(|e| err(format!("target_modules regex {s:?}: {e}")))?,
            ),
            Some(TargetModules::Names(names)) => ModuleFilter::List(names.clone()),
            None => return Err(err("missing or invalid target_modules: None".into())),
        };
        let rank_pattern = cfg
            .rank_pattern
            .iter()
            .map(|(k, r)| match *r {
                0 => Err(err(format!(
                    "rank_pattern[{k:?}] = {r} is not a positive integer"
                ))),
                r => Ok((k.clone(), r as usize)),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            r,
            lora_alpha: cfg.lora_alpha.unwrap_or(8.0),
            use_rslora: cfg.use_rslora.unwrap_or(false),
            target_modules,
            rank_pattern,
            alpha_pattern: cfg.alpha_pattern.clone(),
        })
    }
}

/// Splits an adapter key into (module path, which factor), refusing what cannot be merged.
fn classify_key(key: &str, path: &Path) -> Result<(String, bool)> {
    let err = |m: String| EngineError::adapter(path, m);
    let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
        return Err(err(format!(
            "tensor {key} maps to no base weight (keys must start with \"{KEY_PREFIX}\")"
        )));
    };
    if key.contains("lora_embedding_") {
        return Err(err(format!(
            "tensor {key}: embedding LoRA is not supported"
        )));
    }
    if key.contains("lora_magnitude_vector") {
        return Err(err(format!(
            "tensor {key}: DoRA (use_dora) is not supported"
        )));
    }
    if key.contains("modules_to_save") {
        return Err(err(format!(
            "tensor {key}: modules_to_save is not supported"
        )));
    }
    for (suffix, is_a) in [(".lora_A.weight", true), (".lora_B.weight", false)] {
        if let Some(module) = rest.strip_suffix(suffix) {
            return Ok((module.to_string(), is_a));
        }
    }
    if key.ends_with(".bias") {
        return Err(err(format!("tensor {key}: LoRA bias is not supported")));
    }
    Err(err(format!("tensor {key} maps to no base weight")))
}

impl LoraAdapter {
    /// Reads and validates an adapter folder. Shapes against the base are checked at merge time.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = LoraSettings::read(dir)?;
        let st_path = dir.join(ADAPTER_WEIGHTS);
        if !st_path.exists() {
            return Err(EngineError::adapter(
                dir,
                "no adapter_model.safetensors (adapter_model.bin is not supported)",
            ));
        }
        let tensors = candle_core::safetensors::load(&st_path, device)
            .map_err(|e| EngineError::adapter(&st_path, format!("cannot read safetensors: {e}")))?;
        Self::from_tensors(&cfg, tensors, dir)
    }

    pub fn from_tensors(
        cfg: &LoraSettings,
        tensors: HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<Self> {
        let mut factors = BTreeMap::new();
        for (module, (a, b)) in pair_by_module(cfg, tensors.into_iter().collect(), path)? {
            let (r, scaling) = cfg.scaling(&module);
            check_rank(&module, a.dims(), b.dims(), r, path)?;
            factors.insert(
                module,
                LoraFactor {
                    a: a.to_dtype(DType::F32)?,
                    b: b.to_dtype(DType::F32)?,
                    scaling,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            factors,
        })
    }
}

/// Pairs the `lora_A` / `lora_B` entries of an adapter file by module, refusing keys that cannot
/// be merged and modules that target_modules does not select.
fn pair_by_module<T>(
    cfg: &LoraSettings,
    mut entries: Vec<(String, T)>,
    path: &Path,
) -> Result<BTreeMap<String, (T, T)>> {
    let err = |m: String| EngineError::adapter(path, m);
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut pairs: BTreeMap<String, (Option<T>, Option<T>)> = BTreeMap::new();
    for (key, t) in entries {
        let (module, is_a) = classify_key(&key, path)?;
        if !cfg.target_modules.matches(&module) {
            return Err(err(format!(
                "tensor {key} targets module {module}, which target_modules does not select"
            )));
        }
        let entry = pairs.entry(module).or_insert((None, None));
        if is_a {
            entry.0 = Some(t);
        } else {
            entry.1 = Some(t);
        }
    }
    if pairs.is_empty() {
        return Err(err("the adapter holds no LoRA tensors".into()));
    }
    pairs
        .into_iter()
        .map(|(module, pair)| match pair {
            (Some(a), Some(b)) => Ok((module, (a, b))),
            _ => Err(err(format!(
                "module {module} lacks its lora_A or lora_B tensor"
            ))),
        })
        .collect()
}

/// lora_A `[r, in]` and lora_B `[out, r]` with the configured rank.
fn check_rank(module: &str, a: &[usize], b: &[usize], r: usize, path: &Path) -> Result<()> {
    let err = |m: String| EngineError::adapter(path, m);
    let (&[ra, _], &[_, rb]) = (a, b) else {
        return Err(err(format!(
            "{module}: lora_A {a:?} and lora_B {b:?} must both be 2-D"
        )));
    };
    if ra != r || rb != r {
        return Err(err(format!(
            "module {module}: lora_A {a:?} / lora_B {b:?} disagree with rank r={r}"
        )));
    }
    Ok(())
}

/// Checks, from the files' headers alone (no tensor data is read), that the adapter in
/// `adapter_dir` loads onto the model in `base_dir`: its config is supported, every factor pair
/// has the configured rank, and every adapted module is a weight of the base whose shape the
/// factors fit. What a worker would otherwise find only when the job runs.
pub fn check_fits_base(adapter_dir: &Path, base_dir: &Path) -> Result<()> {
    let cfg = LoraSettings::read(adapter_dir)?;
    let entries = super::weights::header_shapes(&adapter_dir.join(ADAPTER_WEIGHTS))?;
    let base = super::weights::model_shapes(base_dir)?;
    for (module, (a, b)) in pair_by_module(&cfg, entries, adapter_dir)? {
        let (r, _) = cfg.scaling(&module);
        check_rank(&module, &a, &b, r, adapter_dir)?;
        // A tied head has no lm_head.weight of its own: it is the embedding matrix.
        let weight = base.get(&format!("{module}.weight")).or_else(|| {
            (module == "lm_head")
                .then(|| base.get("model.embed_tokens.weight"))
                .flatten()
        });
        let Some(w) = weight else {
            return Err(EngineError::adapter(
                adapter_dir,
                format!(
                    "tensor base_model.model.{module}.lora_A.weight maps to no base weight (no linear layer {module} in the model)"
                ),
            ));
        };
        if w.len() != 2 || a[1] != w[1] || b[0] != w[0] {
            return Err(EngineError::adapter(
                adapter_dir,
                format!(
                    "shape mismatch for {module}: lora_A {a:?} and lora_B {b:?} do not fit the base weight {w:?}"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> Result<LoraSettings> {
        LoraSettings::new(&serde_json::from_value(v).unwrap(), Path::new("ad"))
    }

    #[test]
    fn target_matching_like_peft() {
        let c = cfg(serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "model.layers.1.mlp.up_proj"]})).unwrap();
        assert!(c.target_modules.matches("model.layers.0.self_attn.q_proj"));
        assert!(c.target_modules.matches("model.layers.1.mlp.up_proj"));
        assert!(!c.target_modules.matches("model.layers.0.mlp.up_proj"));
        assert!(!c.target_modules.matches("model.layers.0.self_attn.xq_proj"));
        let c = cfg(serde_json::json!({"r": 4, "target_modules": ".*\\.(q|v)_proj"})).unwrap();
        assert!(c.target_modules.matches("model.layers.0.self_attn.v_proj"));
        assert!(!c.target_modules.matches("model.layers.0.self_attn.k_proj"));
        let c = cfg(serde_json::json!({"r": 4, "target_modules": "all-linear"})).unwrap();
        assert!(c.target_modules.matches("model.layers.0.mlp.down_proj"));
        assert!(!c.target_modules.matches("lm_head"));
    }

    #[test]
    fn scaling_with_patterns_and_rslora() {
        let c = cfg(
            serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
            "rank_pattern": {"layers.1.self_attn.q_proj": 2}, "alpha_pattern": {"q_proj": 16}}),
        )
        .unwrap();
        assert_eq!(c.scaling("model.layers.0.self_attn.q_proj"), (4, 4.0));
        assert_eq!(c.scaling("model.layers.1.self_attn.q_proj"), (2, 8.0));
        let c = cfg(serde_json::json!({"r": 16, "lora_alpha": 8, "use_rslora": true, "target_modules": ["q_proj"]})).unwrap();
        assert_eq!(c.scaling("model.layers.0.self_attn.q_proj"), (16, 2.0));
    }

    #[test]
    fn refuses_unsupported_features() {
        for (v, needle) in [
            (
                serde_json::json!({"r": 4, "target_modules": ["q_proj"], "use_dora": true}),
                "use_dora",
            ),
            (
                serde_json::json!({"r": 4, "target_modules": ["q_proj"], "bias": "all"}),
                "bias",
            ),
            (
                serde_json::json!({"r": 4, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}),
                "modules_to_save",
            ),
        ] {
            let e = cfg(v).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let e = classify_key(
            "base_model.model.model.embed_tokens.lora_embedding_A",
            Path::new("a"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("embedding LoRA"));
    }
}
