//! Safetensors headers: a `u64` LE length, then a JSON object
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::safetensors_files;
use crate::engine::error::{EngineError, Result};

/// A header larger than this is not a real one.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// One tensor as the header describes it.
#[derive(Debug, Clone)]
pub struct TensorHeader {
    pub name: String,
    /// As the header spells it (`F32`, `BF16`, ...): the engine reads only some.
    pub dtype: Option<String>,
    pub shape: Vec<usize>,
    /// Where the data lies, in bytes from `SafetensorsHeader::data_start`.
    pub data_offsets: [u64; 2],
}

#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    /// In the order the header lists them, `__metadata__` left out.
    pub tensors: Vec<TensorHeader>,
    /// Absolute byte offset of the data section.
    pub data_start: u64,
    pub file_size: u64,
}

impl SafetensorsHeader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        Self::read(path, &file)
    }

    /// Reads the header of `file` (found at `path`, which errors name).
    pub fn read(path: &Path, file: &File) -> Result<Self> {
        let bad = |m: String| EngineError::config(path, m);
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0)
            .map_err(|e| EngineError::io(path, e))?;
        let n = u64::from_le_bytes(n);
        let file_size = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        if n > file_size.saturating_sub(8) || n > MAX_HEADER_BYTES {
            return Err(bad(format!("not a safetensors file (header length {n})")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| EngineError::io(path, e))?;
        let v: Value = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("safetensors header is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("safetensors header is not an object".into()))?;
        let mut tensors = Vec::with_capacity(obj.len());
        for (name, t) in obj {
            if name == "__metadata__" {
                continue;
            }
            let shape = t
                .get("shape")
                .and_then(|s| Vec::<usize>::deserialize(s).ok())
                .ok_or_else(|| bad(format!("tensor {name} has no shape")))?;
            let data_offsets = t
                .get("data_offsets")
                .and_then(|s| <[u64; 2]>::deserialize(s).ok())
                .ok_or_else(|| bad(format!("tensor {name} has no data_offsets")))?;
            tensors.push(TensorHeader {
                name: name.clone(),
                dtype: t.get("dtype").and_then(Value::as_str).map(String::from),
                shape,
                data_offsets,
            });
        }
        Ok(Self {
            tensors,
            data_start: 8 + n,
            file_size,
        })
    }
}

/// The parameters of a model folder (every tensor of every shard) and the dtype of the first
/// tensor that names one, from the headers alone.
pub fn count_parameters(dir: &Path) -> Result<(u64, Option<String>)> {
    let mut total = 0u64;
    let mut dtype = None;
    for path in safetensors_files(dir)? {
        for t in SafetensorsHeader::open(&path)?.tensors {
            total += t.shape.iter().map(|&d| d as u64).product::<u64>();
            dtype = dtype.or(t.dtype);
        }
    }
    Ok((total, dtype))
}
