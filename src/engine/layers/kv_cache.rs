//! Per-layer key/value cache for incremental decoding.
//!
//! Each layer keeps one buffer for keys and one for values, `[b, kv_heads, capacity, head_dim]`,
//! of which the first `len` positions hold data. A step writes its keys and values in place after
//! them and attends through a view of the filled part, so decoding copies only the new positions
//! instead of the whole cache every step (as concatenation would). The buffers grow, with one
//! copy, only when a step does not fit the capacity reserved by the first step.

use candle_core::Tensor;

use crate::engine::error::Result;

/// One layer's keys (after RoPE) and values.
#[derive(Debug, Default)]
pub struct LayerKv {
    buffers: Option<(Tensor, Tensor)>,
    len: usize,
    /// Positions to allocate beyond the first step's when the buffers are created.
    reserve: usize,
}

impl LayerKv {
    /// Writes `k` and `v` (`[b, kv_heads, t, head_dim]`) after the cached positions and returns
    /// views of every cached position, these included.
    pub fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let needed = self.len + t;
        match &self.buffers {
            Some((bk, _)) if bk.dim(2)? >= needed => {}
            Some((ok, ov)) => {
                // Past the reserved capacity (or none was reserved): grow to exactly what is
                // needed, one copy.
                let (ok, ov) = (ok.narrow(2, 0, self.len)?, ov.narrow(2, 0, self.len)?);
                self.buffers = Some((Tensor::cat(&[&ok, &k], 2)?, Tensor::cat(&[&ov, &v], 2)?));
                self.len = needed;
                return self.filled();
            }
            None if self.reserve == 0 => {
                // Nothing to reserve: the step's own tensors are the buffers.
                self.buffers = Some((k.contiguous()?, v.contiguous()?));
                self.len = t;
                return self.filled();
            }
            None => {
                self.buffers = Some((
                    allocate(&k, needed + self.reserve)?,
                    allocate(&v, needed + self.reserve)?,
                ));
            }
        }
        let (bk, bv) = self.buffers.as_ref().expect("buffers were just set");
        bk.slice_set(&k.contiguous()?, 2, self.len)?;
        bv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        self.filled()
    }

    fn filled(&self) -> Result<(Tensor, Tensor)> {
        let (k, v) = self
            .buffers
            .as_ref()
            .expect("filled is called on a written cache");
        Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?))
    }
}

/// A zeroed `[b, kv_heads, capacity, head_dim]` buffer shaped and typed like `x`.
fn allocate(x: &Tensor, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = x.dims4()?;
    Ok(Tensor::zeros((b, h, capacity, d), x.dtype(), x.device())?)
}

/// Keys and values of every layer. Not `Clone`: steps write into the buffers in place, so two
/// caches must never share them (`select_batch` makes an independent one).
#[derive(Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    /// Positions each layer reserves beyond the first step's (see `with_capacity`).
    reserve: usize,
}

impl KvCache {
    /// A cache whose first step allocates room for `extra` more positions, so that a decode of
    /// up to `extra` tokens after it never copies the cache.
    pub fn with_capacity(extra: usize) -> Self {
        Self {
            layers: Vec::new(),
            reserve: extra,
        }
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `n` layers (a fresh cache starts with none).
    pub(crate) fn ensure_layers(&mut self, n: usize) {
        if self.layers.len() != n {
            self.layers = (0..n)
                .map(|_| LayerKv {
                    reserve: self.reserve,
                    ..LayerKv::default()
                })
                .collect();
        }
    }

    /// A new cache of rows `rows` of this one's batch axis (row i of the result = row `rows[i]`):
    /// a batch of prompts becomes the cache of their choices, one row per choice.
    pub fn select_batch(&self, rows: &[u32]) -> Result<KvCache> {
        self.select_batch_reserving(rows, 0)
    }

    /// [`Self::select_batch`], with room for `extra` more positions in the new buffers, so a
    /// decode of up to `extra` tokens after it never copies the cache (a prompt's cache becomes
    /// that of its sampled continuations).
    pub fn select_batch_reserving(&self, rows: &[u32], extra: usize) -> Result<KvCache> {
        let mut out = KvCache::default();
        let Some((k0, _)) = self.layers.iter().find_map(|l| l.buffers.as_ref()) else {
            return Ok(out);
        };
        let idx = Tensor::from_slice(rows, rows.len(), k0.device())?;
        for layer in &self.layers {
            let selected = if layer.buffers.is_some() {
                let (k, v) = layer.filled()?;
                let (k, v) = (k.index_select(&idx, 0)?, v.index_select(&idx, 0)?);
                let len = k.dim(2)?;
                let buffers = if extra == 0 {
                    (k.contiguous()?, v.contiguous()?)
                } else {
                    let (bk, bv) = (allocate(&k, len + extra)?, allocate(&v, len + extra)?);
                    bk.slice_set(&k.contiguous()?, 2, 0)?;
                    bv.slice_set(&v.contiguous()?, 2, 0)?;
                    (bk, bv)
                };
                LayerKv {
                    len,
                    buffers: Some(buffers),
                    reserve: 0,
                }
            } else {
                LayerKv::default()
            };
            out.layers.push(selected);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn steps(b: usize, t: usize, start: f32) -> Tensor {
        let n = b * 2 * t * 3;
        Tensor::arange(start, start + n as f32, &Device::Cpu)
            .unwrap()
            .reshape((b, 2, t, 3))
            .unwrap()
    }

    #[test]
    fn appends_in_place_and_grows_only_past_its_capacity() {
        for reserve in [0, 2, 16] {
            let mut layer = LayerKv {
                reserve,
                ..LayerKv::default()
            };
            let parts = [
                steps(2, 4, 0.0),
                steps(2, 1, 100.0),
                steps(2, 1, 200.0),
                steps(2, 3, 300.0),
            ];
            let mut all: Vec<Tensor> = Vec::new();
            for p in &parts {
                all.push(p.clone());
                let (k, v) = layer.append(p.clone(), (p * 2.0).unwrap()).unwrap();
                let want = Tensor::cat(&all, 2).unwrap();
                assert_eq!(flat(&k), flat(&want));
                assert_eq!(flat(&v), flat(&(want * 2.0).unwrap()));
            }
            assert_eq!(layer.len, 9);
        }
    }

    #[test]
    fn a_reserved_cache_keeps_its_buffers_while_it_fits() {
        let mut layer = LayerKv {
            reserve: 4,
            ..LayerKv::default()
        };
        layer.append(steps(1, 3, 0.0), steps(1, 3, 0.0)).unwrap();
        let first = layer.buffers.as_ref().unwrap().0.clone();
        for i in 0..4 {
            let s = steps(1, 1, 50.0 + i as f32);
            layer.append(s.clone(), s).unwrap();
            assert_eq!(layer.buffers.as_ref().unwrap().0.id(), first.id());
        }
        let s = steps(1, 1, 90.0);
        layer.append(s.clone(), s).unwrap();
        assert_ne!(layer.buffers.as_ref().unwrap().0.id(), first.id());
    }

    #[test]
    fn selected_rows_are_independent_of_the_source() {
        let mut cache = KvCache::with_capacity(0);
        cache.ensure_layers(1);
        cache.layers[0]
            .append(steps(2, 3, 0.0), steps(2, 3, 0.0))
            .unwrap();
        let before: Vec<f32> = flat(&cache.layers[0].filled().unwrap().0);
        let mut picked = cache.select_batch(&[1, 1, 0]).unwrap();
        let s = steps(3, 2, 500.0);
        let (k, _) = picked.layers[0].append(s.clone(), s).unwrap();
        assert_eq!(k.dims(), &[3, 2, 5, 3]);
        let row0: Vec<f32> = flat(&k.get(2).unwrap().narrow(1, 0, 3).unwrap());
        let src0: Vec<f32> = flat(&steps(2, 3, 0.0).get(0).unwrap());
        assert_eq!(row0, src0);
        let after: Vec<f32> = flat(&cache.layers[0].filled().unwrap().0);
        assert_eq!(before, after);
        assert_eq!(picked.len(), 5);
    }
}
