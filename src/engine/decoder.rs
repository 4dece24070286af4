//! The decoder every family builds: embeddings, blocks of attention + feed-forward around their
//! norms, a final norm and the output head.
//!
//! Two paths compute the same function: `fused = false` uses only plain differentiable ops (full
//! pretraining, where norm weights train too), `fused = true` uses candle's fused softmax / norm /
//! rope kernels, whose backward reaches their input only (LoRA training). Logits are computed
//! only at the positions the caller asks for.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::autograd::{GradSink, checkpoint, with_backward};
use super::backward::{self, TapeBudget};
use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::layers::attention::Context;
use super::layers::kv_cache::LayerKv;
use super::layers::{Attention, Mlp, Norm, Pass, Proj, Rope};
pub use super::layers::{
    AttnMask, KvCache, LoraPath, MASKED, continuation_positions_and_mask, positions_and_mask,
};
use super::weights::WeightLoader;

/// How a block wires its norms around attention and feed-forward.
#[derive(Debug, Clone)]
pub enum Residual {
    /// `x += attn(n1(x)); x += mlp(n2(x))` (Llama and most others).
    Sequential { attn_norm: Norm, mlp_norm: Norm },
    /// `h = n(x); x = attn(h) + mlp(h) + x` (Phi).
    Parallel { norm: Norm },
    /// `x += n2(attn(n1(x))); x += n4(mlp(n3(x)))` (Gemma 2 and 3).
    Sandwich {
        attn_in: Norm,
        attn_out: Norm,
        mlp_in: Norm,
        mlp_out: Norm,
    },
}

#[derive(Debug, Clone)]
pub struct Block {
    pub residual: Residual,
    pub attn: Attention,
    pub mlp: Mlp,
}

impl Block {
    /// The block's linear layers in PEFT's module order: attention's, then the MLP's.
    fn projs(&self) -> impl Iterator<Item = &Proj> {
        self.attn.projs().into_iter().chain(self.mlp.projs())
    }

    fn projs_mut(&mut self) -> impl Iterator<Item = &mut Proj> {
        self.attn
            .projs_mut()
            .into_iter()
            .chain(self.mlp.projs_mut())
    }

    /// The LoRA factors of the block's layers (the trainable variables while training).
    fn lora_factors(&self) -> Vec<Tensor> {
        self.projs()
            .filter_map(|p| p.lora.as_ref())
            .flat_map(|l| [l.a.clone(), l.b.clone()])
            .collect()
    }

    pub fn forward(&self, x: &Tensor, cx: &Context, slot: Option<&mut LayerKv>) -> Result<Tensor> {
        let fused = cx.fused;
        Ok(match &self.residual {
            Residual::Sequential {
                attn_norm,
                mlp_norm,
            } => {
                let att = self.attn.forward(&attn_norm.forward(x, fused)?, cx, slot)?;
                let x = (x + att)?;
                let ff = self.mlp.forward(&mlp_norm.forward(&x, fused)?, cx.pass)?;
                (x + ff)?
            }
            Residual::Parallel { norm } => {
                let h = norm.forward(x, fused)?;
                let att = self.attn.forward(&h, cx, slot)?;
                ((att + self.mlp.forward(&h, cx.pass)?)? + x)?
            }
            Residual::Sandwich {
                attn_in,
                attn_out,
                mlp_in,
                mlp_out,
            } => {
                let att = self.attn.forward(&attn_in.forward(x, fused)?, cx, slot)?;
                let x = (x + attn_out.forward(&att, fused)?)?;
                let ff = self.mlp.forward(&mlp_in.forward(&x, fused)?, cx.pass)?;
                (x + mlp_out.forward(&ff, fused)?)?
            }
        })
    }

    /// `forward` where the graph keeps only the block's input and output, and the LoRA
    /// gradients go to `sink`: the backward reads the tape the forward kept where `budget`
    /// allows, or else runs the block again (activation checkpointing).
    fn forward_checkpointed(
        &self,
        x: &Tensor,
        cx: &Arc<Context>,
        sink: &Arc<GradSink>,
        budget: &mut TapeBudget,
    ) -> Result<Tensor> {
        if backward::supports(self, cx) {
            let replay = Arc::new(Context {
                pass: cx.pass.replay(),
                ..(**cx).clone()
            });
            let (block, cx) = (self.clone(), replay.clone());
            return Ok(with_backward(
                x,
                sink.clone(),
                |x| {
                    let kept = if budget.allows() {
                        let (tape, y) = backward::Tape::record(self, x, &replay)?;
                        budget.spend(tape.bytes());
                        (Some(tape), y)
                    } else {
                        (None, self.forward(x, &replay, None)?)
                    };
                    Ok(kept)
                },
                move |tape, x, dy| match tape {
                    Some(tape) => tape.backward(&block, x, dy, &cx),
                    None => backward::backward(&block, x, dy, &cx),
                },
            )?);
        }
        let (block, cx) = (self.clone(), cx.clone());
        Ok(checkpoint(
            x,
            self.lora_factors(),
            sink.clone(),
            move |x| {
                block
                    .forward(x, &cx, None)
                    .map_err(candle_core::Error::wrap)
            },
        )?)
    }
}

/// What a family's loader builds; `Decoder::load` adds the loader's bookkeeping.
pub struct Parts {
    pub embed: Tensor,
    /// Embeddings are multiplied by this (Gemma: sqrt(hidden_size), rounded to the model dtype).
    pub embed_scale: Option<f64>,
    pub blocks: Vec<Block>,
    pub final_norm: Norm,
    pub head: Proj,
    /// `tanh(z / c) * c` on the logits (Gemma 2).
    pub final_softcap: Option<f64>,
    /// The rotary tables the blocks' attention layers index.
    pub ropes: Vec<Rope>,
    /// The window of the layers that attend through a sliding window.
    pub sliding_window: Option<usize>,
    /// Module-name suffixes of a block's adaptable linear layers, in PEFT's names.
    pub linear_suffixes: &'static [&'static str],
}

/// Inputs of one forward pass.
pub struct Step<'a> {
    /// Token ids `[b, t]` (u32).
    pub ids: &'a Tensor,
    /// Positions (u32) for RoPE: `[b, t]`, or `[t]` shared by every row.
    pub positions: &'a Tensor,
    pub mask: &'a AttnMask,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    pub config: ModelConfig,
    embed: Tensor,
    embed_scale: Option<f64>,
    blocks: Vec<Block>,
    final_norm: Norm,
    head: Proj,
    final_softcap: Option<f64>,
    ropes: Vec<Rope>,
    /// The window masks must be built with (see `positions_and_mask`).
    pub sliding_window: Option<usize>,
    /// Module-name suffixes of a block's adaptable linear layers (PEFT target names).
    pub linear_suffixes: &'static [&'static str],
    /// LongRoPE: the sequence length beyond which the long frequencies apply.
    pub rope_switch_len: Option<usize>,
    pub dtype: DType,
    pub device: Device,
    /// Number of parameters (elements loaded from the weights).
    pub parameters: u64,
    /// Use candle's fused kernels (gradients to their inputs only) instead of plain ops.
    pub fused: bool,
    /// Training mode: the base layers frozen, dropout on the LoRA paths active.
    pub training: bool,
    /// Training mode: the seed of this pass's dropout masks.
    pub dropout_seed: u64,
    /// Training mode: recompute each block in the backward (activation checkpointing), which
    /// sends the block's LoRA gradients here.
    pub recompute: Option<Arc<GradSink>>,
    /// Training mode: bytes of block tapes (what a block's backward reads) a forward pass may
    /// keep; the blocks past it are run again in the backward. 0 recomputes every block.
    pub tape_budget: usize,
}

impl Decoder {
    /// Builds the decoder of `cfg`'s family from the loader's tensors; fails when the loader's
    /// adapter has a module the model does not.
    pub fn load(cfg: &ModelConfig, w: &mut WeightLoader<'_>) -> Result<Self> {
        let p = cfg.family.load(cfg, w)?;
        w.finish()?;
        Ok(Self {
            config: cfg.clone(),
            embed: p.embed,
            embed_scale: p.embed_scale,
            blocks: p.blocks,
            final_norm: p.final_norm,
            head: p.head,
            final_softcap: p.final_softcap,
            rope_switch_len: p.ropes.iter().find_map(Rope::switch_len),
            ropes: p.ropes,
            sliding_window: p.sliding_window,
            linear_suffixes: p.linear_suffixes,
            dtype: w.dtype,
            device: w.device.clone(),
            parameters: w.elements,
            fused: false,
            training: false,
            dropout_seed: 0,
            recompute: None,
            tape_budget: 0,
        })
    }

    /// How the forward passes run: inference, or training with this pass's dropout seed.
    pub fn pass(&self) -> Pass {
        if self.training {
            Pass::Training {
                seed: self.dropout_seed,
            }
        } else {
            Pass::Inference
        }
    }

    /// The adaptable linear layers: (module name, out_features, in_features), in layer order.
    pub fn linear_modules(&self) -> Result<Vec<(String, usize, usize)>> {
        let mut out = Vec::new();
        for block in &self.blocks {
            for proj in block.projs() {
                let (o, n) = proj.dims()?;
                out.push((proj.name.clone(), o, n));
            }
        }
        Ok(out)
    }

    /// Sets (or with None removes) the unmerged LoRA path of `module`
    /// (e.g. `model.layers.0.self_attn.q_proj`, or `lm_head`), checking the factor shapes.
    pub fn set_lora(&mut self, module: &str, lora: Option<LoraPath>) -> Result<()> {
        if module == self.head.name {
            return self.head.set_lora(lora);
        }
        let proj = self
            .blocks
            .iter_mut()
            .flat_map(Block::projs_mut)
            .find(|p| p.name == module)
            .ok_or_else(|| {
                EngineError::InvalidRequest(format!("{module} is not an adaptable linear layer"))
            })?;
        proj.set_lora(lora)
    }

    /// `(out, in)` of the linear layer `module` (a block's or `lm_head`), if the model has it.
    pub fn proj_dims(&self, module: &str) -> Result<Option<(usize, usize)>> {
        if module == self.head.name {
            return Ok(Some(self.head.dims()?));
        }
        let found = self
            .blocks
            .iter()
            .flat_map(Block::projs)
            .find(|p| p.name == module);
        found.map(Proj::dims).transpose()
    }

    /// Bytes held by the weights.
    pub fn weight_bytes(&self) -> u64 {
        self.parameters * self.dtype.size_in_bytes() as u64
    }

    /// Runs the blocks; returns hidden states `[b, t, hidden]` before the final norm.
    pub fn hidden(&self, step: &Step<'_>, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = step.ids.dims2()?;
        let mut x = self
            .embed
            .index_select(&step.ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let cos_sin = self
            .ropes
            .iter()
            .map(|r| r.cos_sin(step.positions, &step.mask.seq_lens, self.dtype))
            .collect::<Result<Vec<_>>>()?;
        let cx = Arc::new(Context {
            mask: step.mask.clone(),
            cos_sin,
            fused: self.fused,
            pass: self.pass(),
            dtype: self.dtype,
        });
        if let Some(c) = cache.as_deref_mut() {
            c.ensure_layers(self.blocks.len());
        }
        let sink = match (&self.recompute, cx.pass) {
            (Some(sink), Pass::Training { .. }) if cache.is_none() => Some(sink),
            _ => None,
        };
        let mut budget = TapeBudget::new(self.tape_budget);
        for (i, block) in self.blocks.iter().enumerate() {
            x = match sink {
                Some(sink) => block.forward_checkpointed(&x, &cx, sink, &mut budget)?,
                None => {
                    let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
                    block.forward(&x, &cx, slot)?
                }
            };
        }
        Ok(x)
    }

    /// Final norm + output head on hidden states `[n, hidden]`; logits `[n, vocab]` in f32.
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.final_norm.forward(hidden, self.fused)?;
        let logits = self.head.forward(&h, self.pass())?.to_dtype(DType::F32)?;
        Ok(match self.final_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }

    /// Whether `head_backward` covers this head: a frozen linear layer (no LoRA, no
    /// soft-capping) behind an RMS norm, in f32.
    pub fn head_is_frozen_rms(&self) -> bool {
        self.head.lora.is_none()
            && self.final_softcap.is_none()
            && self.dtype == DType::F32
            && backward::norm_supported(&self.final_norm)
    }

    /// `head`'s backward by hand (see `head_is_frozen_rms`): the gradient of `hidden`
    /// (`[n, hidden]`) for the logits' gradient `d_logits` (`[n, vocab]`).
    pub fn head_backward(&self, hidden: &Tensor, d_logits: &Tensor) -> Result<Tensor> {
        let d_normed = d_logits.matmul(&self.head.weight()?)?;
        backward::norm_backward(&self.final_norm, hidden, &d_normed)
    }

    /// Logits `[rows.len(), vocab]` (f32) at flat positions `row = batch_index * t + position`.
    pub fn logits_at(
        &self,
        step: &Step<'_>,
        rows: &[u32],
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.head(&self.hidden_at(step, rows, cache)?)
    }

    /// Hidden states `[rows.len(), hidden]` (before the final norm) at flat positions
    /// `row = batch_index * t + position`: what `head` takes.
    pub fn hidden_at(
        &self,
        step: &Step<'_>,
        rows: &[u32],
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = step.ids.dims2()?;
        let hidden = self.hidden(step, cache)?;
        let flat = hidden.reshape((b * t, self.config.hidden_size))?;
        let idx = Tensor::from_slice(rows, rows.len(), &self.device)?;
        Ok(flat.index_select(&idx, 0)?)
    }
}
