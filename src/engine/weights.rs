//! Safetensors weights of a model folder (single file or sharded), read tensor by tensor, with
//! PEFT LoRA factors merged into the linear weights as they are read.
//!
//! The files are not memory-mapped: each tensor is read (`pread`) straight into the buffer that
//! becomes its storage, so loading holds the weights once. A mapped file would add every page it
//! touched to the process's resident set for as long as the mapping lives, which doubled the peak
//! memory of a float32 model (weights copied out of a mapping that is itself resident).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::error::{EngineError, Result};
use super::folder::{SafetensorsHeader, safetensors_files};
use super::lora::LoraAdapter;

/// Where a tensor lies in a safetensors file.
#[derive(Debug, Clone)]
struct TensorEntry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    offset: u64,
    len: usize,
}

/// The tensors of a safetensors file as the loader reads them: a dtype it converts from, and data
/// that fits the shape and lies within the file.
fn read_entries(path: &Path, file: &File, index: usize) -> Result<Vec<(String, TensorEntry)>> {
    let bad = |m: String| EngineError::config(path, m);
    let header = SafetensorsHeader::read(path, file)?;
    let mut out = Vec::with_capacity(header.tensors.len());
    for t in header.tensors {
        let name = t.name;
        let dtype = match t.dtype.as_deref() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
            other => {
                return Err(bad(format!(
                    "tensor {name} has unsupported dtype {other:?} (F32, F16, BF16, F64)"
                )));
            }
        };
        let (shape, offs) = (t.shape, t.data_offsets);
        let len = (offs[1].saturating_sub(offs[0])) as usize;
        let expected = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if len != expected || header.data_start + offs[1] > header.file_size {
            return Err(bad(format!(
                "tensor {name}: data_offsets {offs:?} do not fit shape {shape:?} and the file size"
            )));
        }
        out.push((
            name,
            TensorEntry {
                file: index,
                dtype,
                shape,
                offset: header.data_start + offs[0],
                len,
            },
        ));
    }
    Ok(out)
}

/// Names and shapes of the tensors in one safetensors file, from its header.
pub fn header_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    Ok(read_entries(path, &file, 0)?
        .into_iter()
        .map(|(name, e)| (name, e.shape))
        .collect())
}

/// Names and shapes of every tensor of a model folder (all its shards), from the headers.
pub fn model_shapes(dir: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let mut out = HashMap::new();
    for path in safetensors_files(dir)? {
        out.extend(header_shapes(&path)?);
    }
    Ok(out)
}

/// Reads base tensors by name, converting to the model dtype and merging LoRA deltas into linears.
pub struct WeightLoader<'a> {
    files: Vec<(PathBuf, File)>,
    index: HashMap<String, TensorEntry>,
    /// Tensors given in memory instead of files (full pretraining): used as they are.
    memory: HashMap<String, Tensor>,
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
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in safetensors_files(dir)?.into_iter().enumerate() {
            let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            index.extend(read_entries(&path, &file, i)?);
            files.push((path, file));
        }
        Ok(Self {
            files,
            index,
            memory: HashMap::new(),
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
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
        dir: &Path,
    ) -> Self {
        Self {
            files: Vec::new(),
            index: HashMap::new(),
            memory: tensors,
            dir: dir.to_path_buf(),
            dtype,
            device: device.clone(),
            lora: None,
            merged: HashSet::new(),
            elements: 0,
        }
    }

    /// Reads one tensor as f32 on the loader's device. Float32 data is read straight into the
    /// vector that becomes the tensor's storage (no second copy on the CPU).
    fn read_f32(&self, e: &TensorEntry) -> Result<Tensor> {
        let (path, file) = &self.files[e.file];
        let read = |buf: &mut [u8]| {
            file.read_exact_at(buf, e.offset)
                .map_err(|err| EngineError::io(path, err))
        };
        if e.dtype == DType::F32 {
            let mut v = vec![0f32; e.len / 4];
            // SAFETY: a f32 slice viewed as its bytes; every bit pattern is a valid f32.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), e.len) };
            read(bytes)?;
            #[cfg(target_endian = "big")]
            for x in v.iter_mut() {
                *x = f32::from_bits(u32::from_le(x.to_bits()));
            }
            return Ok(Tensor::from_vec(v, e.shape.as_slice(), &self.device)?);
        }
        let mut bytes = vec![0u8; e.len];
        read(&mut bytes)?;
        let t = Tensor::from_raw_buffer(&bytes, e.dtype, &e.shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?.to_device(&self.device)?)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.memory.contains_key(name)
    }

    /// True when the adapter has factors for `module`.
    pub fn has_lora(&self, module: &str) -> bool {
        self.lora.is_some_and(|l| l.factors.contains_key(module))
    }

    /// A tensor in f32, checked against `shape`.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(t) = self.memory.get(name) {
            if t.dims() != shape {
                return Err(EngineError::TensorShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    got: t.dims().to_vec(),
                });
            }
            self.elements += t.elem_count() as u64;
            return Ok(t.to_dtype(DType::F32)?);
        }
        let Some(e) = self.index.get(name) else {
            return Err(EngineError::MissingTensor {
                name: name.to_string(),
                path: self.dir.clone(),
            });
        };
        if e.shape != shape {
            return Err(EngineError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: e.shape.clone(),
            });
        }
        let t = self.read_f32(e)?;
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
