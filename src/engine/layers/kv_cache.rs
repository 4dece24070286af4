//! Per-layer key/value cache for incremental decoding.

use candle_core::Tensor;

use crate::engine::error::Result;

/// Keys and values of every layer, `[b, kv_heads, T, head_dim]`, keys after RoPE.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `n` layers (a fresh cache starts with none).
    pub(crate) fn ensure_layers(&mut self, n: usize) {
        if self.layers.len() != n {
            self.layers = vec![None; n];
        }
    }

    /// Replaces the cache by rows `rows` of its batch axis (row i of the result = row `rows[i]`):
    /// a batch of prompts becomes the cache of their choices, one row per choice.
    pub fn select_batch(&mut self, rows: &[u32]) -> Result<()> {
        let Some(dev) = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
        else {
            return Ok(());
        };
        let idx = Tensor::from_slice(rows, rows.len(), &dev)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// Repeats a batch-of-one cache `n` times along the batch axis (shared prompt, many choices).
    pub fn repeat_batch(&mut self, n: usize) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            let rep = |x: &Tensor| -> Result<Tensor> {
                let (_, h, t, d) = x.dims4()?;
                Ok(x.broadcast_as((n, h, t, d))?.contiguous()?)
            };
            *k = rep(k)?;
            *v = rep(v)?;
        }
        Ok(())
    }
}
