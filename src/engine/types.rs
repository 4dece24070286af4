//! Requests, results and model identities shared by the engine's public API.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::batching::BatchConfig;
use super::error::{EngineError, Result};

/// Precision the weights are held and computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    F16,
    Bf16,
}

impl WeightDtype {
    pub fn candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }

    /// Accepts "f32"/"float32", "f16"/"float16", "bf16"/"bfloat16".
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(EngineError::InvalidRequest(format!(
                "unknown dtype {other:?}"
            ))),
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(i) => Device::new_cuda(i).map_err(|e| {
                EngineError::InvalidRequest(format!("CUDA device {i} unavailable: {e}"))
            }),
        }
    }
}

/// A model: a base HF folder plus an optional PEFT LoRA adapter folder. Also the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    pub base: PathBuf,
    pub adapter: Option<PathBuf>,
    pub dtype: WeightDtype,
    pub device: DeviceSpec,
}

impl ModelSpec {
    pub fn cpu_f32(base: impl Into<PathBuf>, adapter: Option<PathBuf>) -> Self {
        Self {
            base: base.into(),
            adapter,
            dtype: WeightDtype::F32,
            device: DeviceSpec::Cpu,
        }
    }
}

/// Set it to stop a run between batches; the run then ends with `EngineError::Cancelled`.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether a sequence starts with the tokenizer's BOS token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bos {
    /// What the tokenizer's post-processor adds (lm-evaluation-harness 0.4.10+ with
    /// `add_bos_token` unset): Llama-style templates prepend BOS, GPT-2-style ones add nothing.
    Auto,
    /// Always the BOS id first.
    Always,
    /// No special tokens.
    #[default]
    Never,
}

/// Options of a scoring or generation run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// BOS handling; in every mode a text that already starts with the BOS token gets no second.
    pub bos: Bos,
    /// Batch limits; the engine's defaults when None.
    pub batch: Option<BatchConfig>,
    /// Checked between batches.
    pub cancel: Option<CancelFlag>,
    /// Multiple choice: compute the shared prompt once per instance and reuse its KV cache for
    /// the choices (the default); false scores every choice as a full sequence.
    pub prefix_sharing: bool,
    /// Told of every forward batch: its sequences and the tokens they hold (no padding).
    pub observer: Option<BatchObserver>,
}

/// A callback for each forward batch (rows, tokens); feeds the service's metrics.
#[derive(Clone)]
pub struct BatchObserver(pub std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchObserver")
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            bos: Bos::default(),
            batch: None,
            cancel: None,
            prefix_sharing: true,
            observer: None,
        }
    }
}

impl RunOptions {
    /// `EngineError::Cancelled` once the run's cancel flag is set.
    pub(crate) fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.is_cancelled() => Err(EngineError::Cancelled),
            _ => Ok(()),
        }
    }

    pub(crate) fn observe(&self, rows: usize, tokens: usize) {
        if let Some(observer) = &self.observer {
            (observer.0)(rows, tokens);
        }
    }
}

/// One loglikelihood request: log P(continuation | context).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlRequest {
    pub context: String,
    pub continuation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlResult {
    /// Sum of the continuation tokens' log-probabilities.
    pub logprob: f64,
    /// Whether every continuation token is the argmax of its prediction.
    pub is_greedy: bool,
    pub context_ids: Vec<u32>,
    pub continuation_ids: Vec<u32>,
}

/// A multiple-choice instance: one request per choice, continuation = delimiter + choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McItem {
    pub prompt: String,
    pub choices: Vec<String>,
    /// Defaults to " ".
    pub delimiter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McResult {
    /// Per-choice summed log-probabilities.
    pub logprobs: Vec<f64>,
    pub is_greedy: Vec<bool>,
    /// argmax of logprobs (ties to the lowest index).
    pub acc_pred: usize,
    /// argmax of logprob / number of Unicode chars of the choice (an empty choice counts 1).
    pub acc_norm_pred: usize,
}

impl McResult {
    pub fn from_scores(choices: &[String], logprobs: Vec<f64>, is_greedy: Vec<bool>) -> Self {
        let argmax = |xs: &[f64]| {
            let mut best = 0;
            for (i, &x) in xs.iter().enumerate() {
                if x > xs[best] {
                    best = i;
                }
            }
            best
        };
        let normed: Vec<f64> = logprobs
            .iter()
            .zip(choices)
            .map(|(lp, c)| lp / c.chars().count().max(1) as f64)
            .collect();
        Self {
            acc_pred: argmax(&logprobs),
            acc_norm_pred: argmax(&normed),
            logprobs,
            is_greedy,
        }
    }
}

/// A generation request: the greedy output, and sampled ones when `sampling` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenItem {
    pub prompt: String,
    pub max_new_tokens: usize,
    /// Generation stops at the first of these; the output is cut before it.
    #[serde(default)]
    pub stop: Vec<String>,
    /// No n-gram of this size occurs twice in prompt + output (0: off), as transformers'
    /// NoRepeatNGramLogitsProcessor bans the tokens that would repeat one.
    #[serde(default)]
    pub no_repeat_ngram_size: usize,
    /// Outputs drawn after the greedy one, with the same stop strings and n-gram rule.
    #[serde(default)]
    pub sampling: Option<SampleRequest>,
}

/// `samples` outputs drawn with `params`; draw k's random stream is
/// `sampling::draw_stream(seed, side, instance, k)`, so it depends on nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRequest {
    pub params: crate::engine::sampling::SamplingParams,
    pub samples: u32,
    pub seed: u64,
    pub side: String,
    pub instance: String,
}

/// One generated output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Decoded output (special tokens skipped), cut before the first stop string.
    pub text: String,
    /// Generated ids, including the EOS id when generation ended on it (as transformers returns).
    pub output_ids: Vec<u32>,
    pub finish: FinishReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenResult {
    /// Decoded output (special tokens skipped), cut before the first stop string.
    pub text: String,
    pub prompt_ids: Vec<u32>,
    /// Generated ids, including the EOS id when generation ended on it (as transformers returns).
    pub output_ids: Vec<u32>,
    pub finish: FinishReason,
    /// The sampled outputs, in draw order (empty without `GenItem::sampling`).
    #[serde(default)]
    pub samples: Vec<Generation>,
}
