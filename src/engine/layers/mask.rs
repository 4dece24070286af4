//! Positions and additive attention masks of a forward pass: a causal mask for every layer, and a
//! sliding-window one for the layers that have a window (Mistral's all, Gemma 2/3's local ones).

use candle_core::{Device, Tensor};

use crate::engine::error::Result;

/// Large negative additive mask value; finite so fully masked (padding) rows give no NaN.
pub const MASKED: f32 = -1e30;

/// Additive masks `[b or 1, 1, t, past + t]` (f32): 0 where attention is allowed, `MASKED`
/// elsewhere.
#[derive(Debug, Clone)]
pub struct AttnMask {
    pub full: Tensor,
    /// The causal mask restricted to keys less than the window behind the query; None where the
    /// window does not bind (no query is that far from a key it may see), so `full` serves.
    pub windowed: Option<Tensor>,
    /// Per batch row: the length of the sequence the row belongs to (its last position + 1),
    /// which picks the scaling of length-dependent rotary embeddings (LongRoPE). Builders fill in
    /// the last position in the pass; a caller scoring right-padded rows sets the real lengths.
    pub seq_lens: Vec<usize>,
}

impl AttnMask {
    /// The mask of a layer with or without a sliding window.
    pub fn for_layer(&self, windowed: bool) -> &Tensor {
        match (&self.windowed, windowed) {
            (Some(w), true) => w,
            _ => &self.full,
        }
    }
}

/// Both masks, filled key by key with `Some((query position, key position))` where causal
/// attention is allowed and None where it is not.
struct MaskBuilder {
    full: Vec<f32>,
    windowed: Vec<f32>,
    window: Option<usize>,
    binds: bool,
}

impl MaskBuilder {
    fn new(len: usize, window: Option<usize>) -> Self {
        Self {
            full: Vec::with_capacity(len),
            windowed: if window.is_some() {
                Vec::with_capacity(len)
            } else {
                Vec::new()
            },
            window,
            binds: false,
        }
    }

    fn push(&mut self, allowed: Option<(usize, usize)>) {
        self.full.push(if allowed.is_some() { 0.0 } else { MASKED });
        if let Some(w) = self.window {
            let ok = allowed.is_some_and(|(q, k)| q - k < w);
            self.binds |= allowed.is_some() && !ok;
            self.windowed.push(if ok { 0.0 } else { MASKED });
        }
    }

    fn finish(
        self,
        shape: (usize, usize, usize, usize),
        device: &Device,
        seq_lens: Vec<usize>,
    ) -> Result<AttnMask> {
        let windowed = if self.binds {
            Some(Tensor::from_vec(self.windowed, shape, device)?)
        } else {
            None
        };
        Ok(AttnMask {
            full: Tensor::from_vec(self.full, shape, device)?,
            windowed,
            seq_lens,
        })
    }
}

/// Positions and masks for continuations that follow right-padded prompts in the KV cache.
///
/// Row i continues a prompt of `prompt_lens[i]` real tokens stored in a cache of `padded` slots
/// (slots `prompt_lens[i]..padded` are padding); its `t` new tokens sit at positions
/// `prompt_lens[i]..` and attend to the real prompt slots and, causally, to each other. Positions
/// `[b, t]`, masks `[b, 1, t, padded + t]`.
pub fn continuation_positions_and_mask(
    t: usize,
    prompt_lens: &[usize],
    padded: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<(Tensor, AttnMask)> {
    let b = prompt_lens.len();
    let tk = padded + t;
    let mut pos = Vec::with_capacity(b * t);
    let mut m = MaskBuilder::new(b * t * tk, sliding_window);
    for &lp in prompt_lens {
        for qi in 0..t {
            let q_abs = lp + qi;
            pos.push(q_abs as u32);
            for k in 0..tk {
                let k_abs = if k < padded {
                    Some(k).filter(|&k| k < lp)
                } else {
                    Some(lp + k - padded).filter(|&a| a <= q_abs)
                };
                m.push(k_abs.map(|k| (q_abs, k)));
            }
        }
    }
    let seq_lens = prompt_lens.iter().map(|&lp| lp + t).collect();
    Ok((
        Tensor::from_vec(pos, (b, t), device)?,
        m.finish((b, 1, t, tk), device, seq_lens)?,
    ))
}

/// Builds the positions and the attention masks for a batch.
///
/// `left_pad[i]` pad tokens precede row i's real tokens (left padding, as in generation); pass
/// zeros for right-padded batches, whose pad tokens come last and are never attended to by real
/// tokens under the causal mask. `past` is the KV-cache length. `sliding_window` restricts keys
/// to the last `w` positions.
///
/// Without left padding every row shares positions `[t]` and masks `[1, 1, t, past + t]`
/// (broadcast over the batch); otherwise positions are `[b, t]` and the masks `[b, 1, t, past + t]`.
pub fn positions_and_mask(
    t: usize,
    past: usize,
    left_pad: &[usize],
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<(Tensor, AttnMask)> {
    let shared = left_pad.iter().all(|&p| p == 0);
    let pads: &[usize] = if shared { &[0] } else { left_pad };
    let b = pads.len();
    let tk = past + t;
    let mut pos = Vec::with_capacity(b * t);
    let mut m = MaskBuilder::new(b * t * tk, sliding_window);
    for &pad in pads {
        for qi in 0..t {
            let q_abs = past + qi;
            pos.push(q_abs.saturating_sub(pad) as u32);
            for k_abs in 0..tk {
                let ok = k_abs <= q_abs && k_abs >= pad;
                m.push(ok.then_some((q_abs, k_abs)));
            }
        }
    }
    let seq_lens = left_pad
        .iter()
        .map(|&p| (past + t).saturating_sub(p))
        .collect();
    let pos = if shared {
        Tensor::from_vec(pos, t, device)?
    } else {
        Tensor::from_vec(pos, (b, t), device)?
    };
    Ok((pos, m.finish((b, 1, t, tk), device, seq_lens)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Vec<Vec<Vec<f32>>> {
        t.squeeze(1).unwrap().to_vec3().unwrap()
    }

    #[test]
    fn window_binds_only_when_a_key_falls_out_of_it() {
        let dev = Device::Cpu;
        let (_, m) = positions_and_mask(4, 0, &[0], Some(4), &dev).unwrap();
        assert!(m.windowed.is_none());
        let (_, m) = positions_and_mask(5, 0, &[0], Some(4), &dev).unwrap();
        let w = rows(m.windowed.as_ref().unwrap());
        // Query 4 sees keys 1..=4, not key 0; the full mask sees all five.
        assert_eq!(w[0][4][0], MASKED);
        assert_eq!(w[0][4][1], 0.0);
        assert_eq!(rows(&m.full)[0][4][0], 0.0);
        assert_eq!(m.seq_lens, vec![5]);
    }

    #[test]
    fn continuation_masks_skip_prompt_padding() {
        let dev = Device::Cpu;
        let (pos, m) = continuation_positions_and_mask(2, &[3, 1], 3, Some(2), &dev).unwrap();
        assert_eq!(pos.to_vec2::<u32>().unwrap(), vec![vec![3, 4], vec![1, 2]]);
        let f = rows(&m.full);
        // Row 1's prompt has one real token: slots 1 and 2 are padding.
        assert_eq!(f[1][0], vec![0.0, MASKED, MASKED, 0.0, MASKED]);
        let w = rows(m.windowed.as_ref().unwrap());
        // Row 0's query at position 4 with window 2 sees positions 3 and 4 (slots 3 and 4) only.
        assert_eq!(w[0][1], vec![MASKED, MASKED, MASKED, 0.0, 0.0]);
        assert_eq!(m.seq_lens, vec![5, 3]);
    }
}
