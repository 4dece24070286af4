//! The training loop: micro-batches, gradient accumulation, clipping, AdamW, the schedule,
//! validation each epoch and the best epoch's adapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::history::{EpochEnd, HistoryEntry, TrainStep};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::adapter::{LoraShape, TrainableLora};
use super::data::{Batch, Example, example};
use super::head_loss::{TeacherStates, head_cross_entropy, head_loss};
use super::loss::{LossConfig, LossValue};
use super::optim::{Accumulator, AdamW, clip_global_norm};
use super::schedule::learning_rate;
use super::split::{epoch_order, split};
use crate::dataset::Item;
use crate::engine::autograd::GradSink;
use crate::engine::decoder::{AttnMask, Decoder, Step, positions_and_mask};
use crate::engine::lora::LoraAdapter;
use crate::engine::tokenize::TokenizerInfo;
use crate::engine::{Bos, DeviceSpec, LoadedModel, ModelSpec, WeightDtype};
use crate::spec::{Hyperparameters, Objective, TaskSpec, TrainingSpec};

#[derive(Debug)]
pub enum TrainError {
    /// The input cannot be trained on (another attempt fails the same way).
    Invalid(String),
    /// A runtime failure (a device error; another attempt may succeed).
    Runtime(String),
    /// Asked to stop between steps.
    Stopped,
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) | Self::Runtime(m) => f.write_str(m),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

impl From<crate::engine::EngineError> for TrainError {
    fn from(e: crate::engine::EngineError) -> Self {
        Self::Runtime(e.to_string())
    }
}

/// Model folders resolved on this host, and the rows to train on.
pub struct TrainInputs {
    pub spec: TrainingSpec,
    pub new_base: PathBuf,
    pub new_adapter: Option<PathBuf>,
    /// (base, adapter) of the old task model: the compatibility objective's teacher.
    pub old: Option<(PathBuf, Option<PathBuf>)>,
    pub device: DeviceSpec,
    pub rows: Vec<Item>,
}

/// Where a run stands: what an epoch checkpoint stores besides the tensors.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub epochs_done: u32,
    pub step: u64,
    pub history: Vec<HistoryEntry>,
    pub best_epoch: Option<u32>,
    pub best_validation_ce: Option<f64>,
    /// Epochs this run was resumed from (one entry per reclaimed attempt).
    pub resumed_from: Vec<u32>,
}

pub struct Trainer {
    pub spec: TrainingSpec,
    pub student: Decoder,
    pub tokenizer: Arc<TokenizerInfo>,
    pub lora: TrainableLora,
    pub keys: Vec<String>,
    teachers: Option<(Decoder, Decoder)>,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub optimizer: AdamW,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pad: u32,
    pub state: RunState,
    /// The best epoch's adapter (PEFT keys).
    pub best_tensors: Option<HashMap<String, Tensor>>,
    /// Sequence tokens (padding excluded) run through training forward passes.
    pub tokens_seen: u64,
    /// Where the student's recomputed blocks leave their LoRA gradients.
    gradients: Arc<GradSink>,
}

/// The hooks a run calls between steps.
pub trait Hooks {
    /// True when the run must stop now.
    fn stopped(&self) -> bool;
    /// `step` optimizer steps are done.
    fn on_step(&mut self, step: u64);
    /// An epoch finished (state, history and best updated): save a checkpoint.
    fn on_epoch(&mut self, trainer: &Trainer) -> Result<(), TrainError>;
}

fn load(
    base: &Path,
    adapter: Option<&PathBuf>,
    device: DeviceSpec,
    fused: bool,
) -> Result<LoadedModel, TrainError> {
    let spec = ModelSpec {
        base: base.to_path_buf(),
        adapter: adapter.cloned(),
        dtype: WeightDtype::F32,
        device,
    };
    LoadedModel::load(&spec, fused)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", base.display())))
}

/// The delimiter between prompt and choice: the evaluation's, else " ".
fn delimiter(spec: &TrainingSpec) -> String {
    match spec.evaluate.as_ref().map(|e| &e.task) {
        Some(TaskSpec::MultipleChoice { delimiter, .. }) => delimiter.clone(),
        _ => " ".into(),
    }
}

/// BOS as the evaluation adds it (none without one).
fn bos(spec: &TrainingSpec) -> Bos {
    spec.evaluate
        .as_ref()
        .map_or(Bos::Never, |e| e.options.add_bos.engine())
}

impl Trainer {
    pub fn new(inputs: TrainInputs) -> Result<Self, TrainError> {
        let spec = inputs.spec;
        let h = spec.hyperparameters.clone();
        if spec.objective == Objective::Compatibility {
            let (old_base, _) = inputs.old.as_ref().ok_or_else(|| {
                TrainError::Invalid("the compatibility objective needs `old`".into())
            })?;
            super::pair::check_same_vocabulary(old_base, &inputs.new_base)
                .map_err(TrainError::Invalid)?;
        }
        let student = load(&inputs.new_base, None, inputs.device, false)?;
        // Teachers on the student's base share its tensors (their adapters applied unmerged),
        // so the MUSCLE setting holds the new base once.
        let teacher = |base: &Path, adapter: Option<&PathBuf>| -> Result<Decoder, TrainError> {
            let mut decoder = if base == inputs.new_base.as_path() {
                match adapter {
                    None => student.decoder.clone(),
                    Some(a) => {
                        let spec = ModelSpec {
                            adapter: Some(a.clone()),
                            ..student.spec.clone()
                        };
                        LoadedModel::with_adapter(&student, &spec)
                            .map_err(|e| TrainError::Invalid(format!("{}: {e}", a.display())))?
                            .decoder
                    }
                }
            } else {
                load(base, adapter, inputs.device, true)?.decoder
            };
            decoder.fused = true;
            Ok(decoder)
        };
        let teachers = match (&inputs.old, spec.objective) {
            (Some((base, adapter)), Objective::Compatibility) => Some((
                teacher(base, adapter.as_ref())?,
                teacher(&inputs.new_base, inputs.new_adapter.as_ref())?,
            )),
            _ => None,
        };
        let start = inputs
            .new_adapter
            .as_ref()
            .map(|p| LoraAdapter::load(p, &student.decoder.device))
            .transpose()
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        let lora = TrainableLora::new(
            &student.decoder,
            &LoraShape {
                r: h.rank as usize,
                alpha: h.alpha,
                dropout: h.dropout,
                target_modules: h.target_modules.as_deref(),
                seed: h.seed,
            },
            start.as_ref(),
        )
        .map_err(TrainError::Invalid)?;
        let LoadedModel {
            mut decoder,
            tokenizer,
            ..
        } = student;
        lora.attach(&mut decoder)?;
        decoder.training = true;
        decoder.fused = true;
        let gradients = Arc::new(GradSink::default());
        decoder.recompute = Some(gradients.clone());
        decoder.tape_budget = tape_budget(&decoder);
        let delimiter = delimiter(&spec);
        let bos = bos(&spec);
        let examples = inputs
            .rows
            .iter()
            .enumerate()
            .map(|(i, item)| {
                example(
                    &tokenizer,
                    item,
                    &delimiter,
                    bos,
                    h.loss_tokens,
                    h.max_seq_len as usize,
                )
                .map_err(|e| TrainError::Invalid(format!("dataset row {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if examples.len() < 2 {
            return Err(TrainError::Invalid(
                "the dataset needs at least 2 rows to split into training and validation".into(),
            ));
        }
        let (train_idx, val_idx) = split(examples.len(), h.validation_fraction, h.seed);
        let train: Vec<Example> = train_idx.iter().map(|&i| examples[i].clone()).collect();
        let validation: Vec<Example> = val_idx.iter().map(|&i| examples[i].clone()).collect();
        let per_step = (h.batch_size as usize) * (h.grad_accum as usize);
        let steps_per_epoch = train.len().div_ceil(per_step) as u64;
        let total_steps = steps_per_epoch * u64::from(h.epochs);
        let vars: Vec<(String, &Var)> = lora.vars();
        let keys: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
        let optimizer = AdamW::new(
            &vars.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            h.weight_decay,
        )?;
        let pad = tokenizer.eos.first().copied().unwrap_or(0);
        Ok(Self {
            spec,
            student: decoder,
            tokenizer,
            lora,
            keys,
            teachers,
            train,
            validation,
            optimizer,
            steps_per_epoch,
            total_steps,
            pad,
            state: RunState::default(),
            best_tensors: None,
            tokens_seen: 0,
            gradients,
        })
    }

    pub fn hyperparameters(&self) -> &Hyperparameters {
        &self.spec.hyperparameters
    }

    /// Positions and masks of a right-padded batch; the masks carry each example's length.
    fn step_inputs(
        &self,
        batch: &Batch,
        examples: &[&Example],
    ) -> Result<(Tensor, AttnMask), TrainError> {
        let (positions, mut mask) = positions_and_mask(
            batch.t,
            0,
            &vec![0; examples.len()],
            self.student.sliding_window,
            &self.student.device,
        )?;
        mask.seq_lens = examples.iter().map(|e| e.ids.len()).collect();
        Ok((positions, mask))
    }

    /// The loss of one micro-batch, with the student's gradient graph.
    fn batch_loss(&self, examples: &[&Example]) -> Result<(LossValue, usize), TrainError> {
        let batch = Batch::new(examples, self.pad, &self.student.device)?;
        let (positions, mask) = self.step_inputs(&batch, examples)?;
        let step = Step {
            ids: &batch.ids,
            positions: &positions,
            mask: &mask,
        };
        let student = self.student.hidden_at(&step, &batch.rows, None)?;
        let h = self.hyperparameters();
        let config = LossConfig {
            temperature: h.temperature,
            mask: h.mask,
            ce_weight: h.ce_weight,
        };
        let value = match &self.teachers {
            Some((old, new)) => {
                let h_old = old.hidden_at(&step, &batch.rows, None)?;
                let h_new = new.hidden_at(&step, &batch.rows, None)?;
                let states = (
                    TeacherStates {
                        decoder: old,
                        hidden: &h_old,
                    },
                    TeacherStates {
                        decoder: new,
                        hidden: &h_new,
                    },
                );
                head_loss(
                    &self.student,
                    &student,
                    Some(states),
                    &batch.targets,
                    config,
                )?
            }
            None => head_loss(&self.student, &student, None, &batch.targets, config)?,
        };
        Ok((value, batch.tokens()))
    }

    /// The loss of one micro-batch and the gradients of every variable (those of recomputed
    /// blocks included).
    pub fn loss_and_gradients(
        &self,
        examples: &[&Example],
    ) -> Result<(LossValue, GradStore), TrainError> {
        self.gradients.clear();
        let (value, _) = self.batch_loss(examples)?;
        let mut grads = value.total.backward()?;
        self.gradients.drain_into(&mut grads)?;
        Ok((value, grads))
    }

    /// One optimizer step over `indices` (training examples), in micro-batches of batch_size.
    pub fn optimizer_step(&mut self, indices: &[usize]) -> Result<TrainStep, TrainError> {
        let h = self.hyperparameters().clone();
        let vars: Vec<&Var> = self.lora.vars().into_iter().map(|(_, v)| v).collect();
        let mut acc = Accumulator::new(vars.len());
        let (mut loss_sum, mut ce_sum, mut distil_sum, mut share_sum) = (0.0, 0.0, 0.0, 0.0);
        let mut tokens = 0u64;
        for (micro, chunk) in indices.chunks(h.batch_size as usize).enumerate() {
            self.student.dropout_seed = dropout_seed(h.seed, self.state.step, micro);
            let examples: Vec<&Example> = chunk.iter().map(|&i| &self.train[i]).collect();
            tokens += examples.iter().map(|e| e.ids.len() as u64).sum::<u64>();
            let (value, grads) = self.loss_and_gradients(&examples)?;
            loss_sum += f64::from(value.total.to_scalar::<f32>()?);
            ce_sum += value.ce;
            distil_sum += value.distil.unwrap_or(0.0);
            share_sum += value.old_share.unwrap_or(0.0);
            acc.add(&vars, &grads)?;
        }
        let n = acc.micro_batches.max(1) as f64;
        let mut grads = acc.mean(&vars)?;
        let norm = clip_global_norm(&mut grads, h.max_grad_norm)?;
        let lr = learning_rate(
            h.learning_rate,
            self.state.step,
            u64::from(h.warmup_steps),
            self.total_steps,
        );
        self.optimizer.step(&vars, &grads, lr)?;
        drop(vars);
        self.state.step += 1;
        self.tokens_seen += tokens;
        let teachers = self.teachers.is_some();
        Ok(TrainStep {
            epoch: self.state.epochs_done + 1,
            step: self.state.step,
            loss: loss_sum / n,
            ce: ce_sum / n,
            lr,
            grad_norm: norm,
            distil: teachers.then_some(distil_sum / n),
            old_share: teachers.then_some(share_sum / n),
        })
    }

    /// Mean cross-entropy per loss token over the validation examples (no dropout).
    pub fn validation_ce(&mut self) -> Result<f64, TrainError> {
        self.student.training = false;
        let result = (|| {
            let (mut sum, mut tokens) = (0.0, 0usize);
            let bs = self.hyperparameters().batch_size as usize;
            for chunk in self.validation.chunks(bs) {
                let examples: Vec<&Example> = chunk.iter().collect();
                let batch = Batch::new(&examples, self.pad, &self.student.device)?;
                let (positions, mask) = self.step_inputs(&batch, &examples)?;
                let step = Step {
                    ids: &batch.ids,
                    positions: &positions,
                    mask: &mask,
                };
                let hidden = self.student.hidden_at(&step, &batch.rows, None)?;
                let ce = head_cross_entropy(&self.student, &hidden, &batch.targets)?;
                sum += ce * batch.tokens() as f64;
                tokens += batch.tokens();
            }
            Ok::<f64, TrainError>(sum / tokens.max(1) as f64)
        })();
        self.student.training = true;
        result
    }

    /// Runs the remaining epochs.
    pub fn run(&mut self, hooks: &mut dyn Hooks) -> Result<(), TrainError> {
        let h = self.hyperparameters().clone();
        let per_step = (h.batch_size as usize) * (h.grad_accum as usize);
        let log_every = (self.total_steps / 200).max(1);
        let train_idx: Vec<usize> = (0..self.train.len()).collect();
        for epoch in self.state.epochs_done..h.epochs {
            let order = epoch_order(&train_idx, h.seed, epoch);
            let (mut epoch_loss, mut steps) = (0.0, 0usize);
            let groups: Vec<&[usize]> = order.chunks(per_step).collect();
            for (i, group) in groups.iter().enumerate() {
                if hooks.stopped() {
                    return Err(TrainError::Stopped);
                }
                let entry = self.optimizer_step(group)?;
                epoch_loss += entry.loss;
                steps += 1;
                if self.state.step.is_multiple_of(log_every) || i + 1 == groups.len() {
                    self.state.history.push(HistoryEntry::Train(entry));
                }
                hooks.on_step(self.state.step);
            }
            let ce = self.validation_ce()?;
            self.state.epochs_done = epoch + 1;
            self.state.history.push(HistoryEntry::Validation(EpochEnd {
                epoch: epoch + 1,
                step: self.state.step,
                train_loss: epoch_loss / steps.max(1) as f64,
                validation_ce: ce,
            }));
            if self.state.best_validation_ce.is_none_or(|best| ce < best) {
                self.state.best_validation_ce = Some(ce);
                self.state.best_epoch = Some(epoch + 1);
                self.best_tensors = Some(self.lora.tensors());
            }
            hooks.on_epoch(self)?;
        }
        Ok(())
    }
}

/// The dropout seed of one micro-batch: a function of the run's seed and the step, so a resumed
/// run draws the masks the uninterrupted one would have.
fn dropout_seed(seed: u64, step: u64, micro_batch: usize) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    rng.set_word_pos(u128::from(micro_batch as u64) * 16);
    rng.next_u64()
}

/// Hooks that never stop and save nothing (tests, benchmarks).
pub struct NoHooks;

impl Hooks for NoHooks {
    fn stopped(&self) -> bool {
        false
    }
    fn on_step(&mut self, _step: u64) {}
    fn on_epoch(&mut self, _trainer: &Trainer) -> Result<(), TrainError> {
        Ok(())
    }
}

/// Bytes of block tapes the student's forward pass keeps for its backward (the rest of the
/// blocks run again there): half its weights, so that with the blocks' inputs and the loss's
/// chunks of logits the peak stays under twice the weights.
fn tape_budget(decoder: &Decoder) -> usize {
    usize::try_from(decoder.weight_bytes() / 2).unwrap_or(usize::MAX)
}
