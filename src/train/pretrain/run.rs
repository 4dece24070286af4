//! The pretraining loop: every weight a candle `Var`, random windows of a token stream,
//! next-token cross-entropy over every position, clipping, AdamW with warm-up and linear decay.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::init::init_weights;
use super::shape::BaseShape;
use super::wordlevel::WordLevel;
use crate::engine::config::ModelConfig;
use crate::engine::decoder::{Decoder, Step, positions_and_mask};
use crate::engine::weights::WeightLoader;
use crate::train::loss::cross_entropy;
use crate::train::optim::{AdamW, clip_global_norm};
use crate::train::peft::write_safetensors;
use crate::train::schedule::learning_rate;

#[derive(Debug, Clone)]
pub struct PretrainSettings {
    /// Tokens per training window.
    pub seq_len: usize,
    /// Windows per optimizer step.
    pub batch_size: usize,
    pub steps: u64,
    pub learning_rate: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// Seeds the initial weights and the window sampling.
    pub seed: u64,
}

pub struct Pretrainer {
    pub shape: BaseShape,
    pub settings: PretrainSettings,
    pub decoder: Decoder,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    rng: ChaCha8Rng,
    pub step: u64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Pretrainer {
    pub fn new(shape: BaseShape, settings: PretrainSettings) -> Result<Self, Error> {
        let device = Device::Cpu;
        let init = init_weights(&shape, settings.seed, &device)?;
        let mut vars: Vec<(String, Var)> = Vec::new();
        for (name, _) in shape.tensors() {
            vars.push((name.clone(), Var::from_tensor(&init[&name])?));
        }
        let tensors: HashMap<String, Tensor> = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let cfg = ModelConfig::from_value(&shape.config_json(), Path::new("(pretraining)"))?;
        let mut loader =
            WeightLoader::from_tensors(tensors, DType::F32, &device, Path::new("(pretraining)"));
        let mut decoder = Decoder::load(&cfg, &mut loader)?;
        decoder.fused = false;
        let refs: Vec<&Var> = vars.iter().map(|(_, v)| v).collect();
        let optimizer = AdamW::new(&refs, settings.weight_decay)?;
        let rng = ChaCha8Rng::seed_from_u64(settings.seed ^ 0x9e37_79b9);
        Ok(Self {
            shape,
            settings,
            decoder,
            vars,
            optimizer,
            rng,
            step: 0,
        })
    }

    /// One optimizer step on `batch_size` random windows of `stream`; returns the mean loss.
    pub fn step(&mut self, stream: &[u32]) -> Result<f64, Error> {
        let s = &self.settings;
        let t = s.seq_len;
        if stream.len() <= t + 1 {
            return Err("the token stream is shorter than one window".into());
        }
        let (mut ids, mut targets) = (Vec::with_capacity(s.batch_size * t), Vec::new());
        for _ in 0..s.batch_size {
            let start = self.rng.random_range(0..stream.len() - t - 1);
            ids.extend_from_slice(&stream[start..start + t]);
            targets.extend_from_slice(&stream[start + 1..start + t + 1]);
        }
        let device = self.decoder.device.clone();
        let ids = Tensor::from_vec(ids, (s.batch_size, t), &device)?;
        let (positions, mask) = positions_and_mask(t, 0, &vec![0; s.batch_size], None, &device)?;
        let rows: Vec<u32> = (0..(s.batch_size * t) as u32).collect();
        let step = Step {
            ids: &ids,
            positions: &positions,
            mask: &mask,
        };
        let logits = self.decoder.logits_at(&step, &rows, None)?;
        let y = Tensor::from_vec(targets, rows.len(), &device)?;
        let loss = cross_entropy(&logits, &y)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        let grads = loss.backward()?;
        let refs: Vec<&Var> = self.vars.iter().map(|(_, v)| v).collect();
        let mut g = refs
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        clip_global_norm(&mut g, s.max_grad_norm)?;
        let lr = learning_rate(s.learning_rate, self.step, s.warmup_steps, s.steps);
        self.optimizer.step(&refs, &g, lr)?;
        self.step += 1;
        Ok(value)
    }

    /// Writes a Hugging Face folder: config.json, model.safetensors, tokenizer files.
    pub fn save(&self, dir: &Path, vocab: &WordLevel) -> Result<(), Error> {
        std::fs::create_dir_all(dir)?;
        let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).map(|s| s + "\n");
        std::fs::write(dir.join("config.json"), pretty(&self.shape.config_json())?)?;
        std::fs::write(
            dir.join("generation_config.json"),
            pretty(&serde_json::json!({"bos_token_id": self.shape.bos_token_id,
                "eos_token_id": self.shape.eos_token_id}))?,
        )?;
        std::fs::write(dir.join("tokenizer.json"), pretty(&vocab.tokenizer_json())?)?;
        std::fs::write(
            dir.join("tokenizer_config.json"),
            pretty(&WordLevel::tokenizer_config_json(
                self.shape.max_position_embeddings,
            ))?,
        )?;
        let tensors: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        write_safetensors(&tensors, &dir.join("model.safetensors"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LoadedModel, ModelSpec};

    #[test]
    fn learns_a_repeating_stream_and_saves_a_folder_the_engine_loads() {
        let vocab = WordLevel::from_texts(["a b c d e f g h"]);
        let shape = BaseShape {
            vocab_size: vocab.len(),
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 2,
            intermediate_size: 32,
            max_position_embeddings: 64,
            bos_token_id: 1,
            eos_token_id: 2,
        };
        let settings = PretrainSettings {
            seq_len: 8,
            batch_size: 4,
            steps: 60,
            learning_rate: 1e-2,
            warmup_steps: 5,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 7,
        };
        let stream: Vec<u32> = (0..200).map(|i| 3 + (i % 8) as u32).collect();
        let mut p = Pretrainer::new(shape, settings).unwrap();
        let first = p.step(&stream).unwrap();
        let mut last = first;
        for _ in 1..60 {
            last = p.step(&stream).unwrap();
        }
        assert!(first > 2.0 && last < 0.3, "loss {first} -> {last}");
        let dir = tempfile::tempdir().unwrap();
        p.save(dir.path(), &vocab).unwrap();
        let model = LoadedModel::load(&ModelSpec::cpu_f32(dir.path(), None), true).unwrap();
        let ids = model.tokenizer.encode("a b c d").unwrap();
        assert_eq!(ids, [3, 4, 5, 6]);
        let next = crate::engine::scoring::last_logits(&model.decoder, &ids).unwrap();
        let best = (0..next.len())
            .max_by(|&i, &j| next[i].total_cmp(&next[j]))
            .unwrap();
        assert_eq!(vocab.words[best], "e");
    }
}
