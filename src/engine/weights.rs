//! Safetensors weights of a model folder (single file or sharded), memory-mapped, with PEFT
//! LoRA factors merged into the linear weights as they are read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::error::{EngineError, Result};
use super::lora::LoraAdapter;

/// The safetensors files of a model folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
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
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.exists()) {
            return Err(EngineError::config(
                &index,
                format!("lists shard {} which does not exist", missing.display()),
            ));
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(EngineError::config(
        dir,
        "no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)",
    ))
}

/// Reads base tensors by name, converting to the model dtype and merging LoRA deltas into linears.
pub struct WeightLoader<'a> {
    vb: VarBuilder<'static>,
    dir: PathBuf,
    pub dtype: DType,
    pub device: Device,
    lora: Option<&'a LoraAdapter>,
    merged: HashSet<String>,
    /// Elements loaded so far (parameter count).
    pub elements: u64,
}

impl<'a> WeightLoader<'a> {
    pub fn open(
        dir: &Path,
        dtype: DType,
        device: &Device,
        lora: Option<&'a LoraAdapter>,
    ) -> Result<Self> {
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; as with every mmap-based loader, they must
        // not be truncated while the model is being loaded. Tensors are copied out at load time.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
            .map_err(|e| EngineError::config(dir, format!("cannot map safetensors: {e}")))?;
        Ok(Self {
            vb,
            dir: dir.to_path_buf(),
            dtype,
            device: device.clone(),
            lora,
            merged: HashSet::new(),
            elements: 0,
        })
    }

    /// Reads tensors from memory instead of a folder: the decoder then holds clones of these
    /// very tensors, so with candle `Var`s behind them, gradients reach every weight (full
    /// pretraining). `dir` only names the source in error messages.
    pub fn from_tensors(
        tensors: std::collections::HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
        dir: &Path,
    ) -> Self {
        Self {
            vb: VarBuilder::from_tensors(tensors, DType::F32, device),
            dir: dir.to_path_buf(),
            dtype,
            device: device.clone(),
            lora: None,
            merged: HashSet::new(),
            elements: 0,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    /// True when the adapter has factors for `module`.
    pub fn has_lora(&self, module: &str) -> bool {
        self.lora.is_some_and(|l| l.factors.contains_key(module))
    }

    /// A tensor in f32, checked against `shape`.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.vb.contains_tensor(name) {
            return Err(EngineError::MissingTensor {
                name: name.to_string(),
                path: self.dir.clone(),
            });
        }
        let t = self.vb.get_unchecked_dtype(name, DType::F32)?;
        if t.dims() != shape {
            return Err(EngineError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        self.elements += t.elem_count() as u64;
        Ok(t)
    }

    /// A plain tensor (norm weight, embedding, bias) in the model dtype.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.tensor_f32(name, shape)?.to_dtype(self.dtype)?)
    }

    /// Adds the adapter's delta for `module` to an f32 weight `[out, in]`, if the adapter has one.
    pub fn merge_lora(&mut self, module: &str, w: Tensor) -> Result<Tensor> {
        let Some(lora) = self.lora else {
            return Ok(w);
        };
        let Some(f) = lora.factors.get(module) else {
            return Ok(w);
        };
        let (out, inp) = w.dims2()?;
        let (_, a_in) = f.a.dims2()?;
        let (b_out, _) = f.b.dims2()?;
        if a_in != inp || b_out != out {
            return Err(EngineError::adapter(
                &lora.path,
                format!(
                    "shape mismatch for {module}: lora_A {:?} and lora_B {:?} do not fit the base weight [{out}, {inp}]",
                    f.a.dims(),
                    f.b.dims()
                ),
            ));
        }
        self.merged.insert(module.to_string());
        Ok((w + f.delta()?)?)
    }

    /// The weight `<module>.weight` `[out, in]` (LoRA merged) and, if asked, `<module>.bias`.
    pub fn linear(
        &mut self,
        module: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<candle_nn::Linear> {
        let w = self.tensor_f32(&format!("{module}.weight"), &[out, inp])?;
        let w = self.merge_lora(module, w)?.to_dtype(self.dtype)?;
        let b = if bias {
            Some(self.tensor(&format!("{module}.bias"), &[out])?)
        } else {
            None
        };
        Ok(candle_nn::Linear::new(w, b))
    }

    /// Fails when an adapter module was not merged into any base weight.
    pub fn finish(&self) -> Result<()> {
        if let Some(lora) = self.lora
            && let Some(m) = lora.factors.keys().find(|m| !self.merged.contains(*m))
        {
            return Err(EngineError::adapter(
                &lora.path,
                format!(
                    "tensor base_model.model.{m}.lora_A.weight maps to no base weight (no linear layer {m} in the model)"
                ),
            ));
        }
        Ok(())
    }
}
