//! What the engine and training tests share: the fixture locations, tiny handmade model
//! folders, learnable multiple-choice rows, and logits at every position.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use muscle::dataset::Item;
use muscle::engine::decoder::{Decoder, Step, positions_and_mask};

#[path = "../support/files.rs"]
mod files;
pub use files::*;

/// Fixture root: $MUSCLE_ENGINE_FIXTURES, else `tests/fixtures/engine` under the manifest dir.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MUSCLE_ENGINE_FIXTURES") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { repo().join(p) }
        }
        None => fixtures().join("engine"),
    }
}

/// A fresh empty folder under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("muscle-engine-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub const WORDS: &[&str] = &[
    "<unk>",
    "<s>",
    "</s>",
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "a",
    "red",
    "blue",
    "green",
    "is",
    "was",
    "big",
    "small",
    "yes",
    "no",
    "Question:",
    "Answer:",
    "it",
    "and",
    "or",
    "not",
    "very",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
];

pub fn write_tokenizer(dir: &Path) {
    let vocab: serde_json::Map<String, serde_json::Value> = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}}"#,
    )
    .unwrap();
}

pub struct Tiny {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub inter: usize,
    pub tied: bool,
}

impl Default for Tiny {
    fn default() -> Self {
        Self {
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            inter: 48,
            tied: false,
        }
    }
}

/// Deterministic pseudo-random tensor (no RNG dependency).
pub fn det(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5) * 2.0 * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The weights of a tiny Llama with a llama3 RoPE scaling.
pub fn tiny_weights(t: &Tiny) -> HashMap<String, Tensor> {
    let v = WORDS.len();
    let hd = t.hidden / t.heads;
    let mut w = HashMap::new();
    let mut seed = 1;
    let mut put = |name: String, shape: &[usize], scale: f32| {
        seed += 1;
        w.insert(name, det(shape, seed, scale));
    };
    put("model.embed_tokens.weight".into(), &[v, t.hidden], 1.0);
    for i in 0..t.layers {
        let p = format!("model.layers.{i}");
        put(
            format!("{p}.self_attn.q_proj.weight"),
            &[t.heads * hd, t.hidden],
            0.3,
        );
        put(
            format!("{p}.self_attn.k_proj.weight"),
            &[t.kv_heads * hd, t.hidden],
            0.3,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            &[t.kv_heads * hd, t.hidden],
            0.3,
        );
        put(
            format!("{p}.self_attn.o_proj.weight"),
            &[t.hidden, t.heads * hd],
            0.3,
        );
        put(
            format!("{p}.mlp.gate_proj.weight"),
            &[t.inter, t.hidden],
            0.3,
        );
        put(format!("{p}.mlp.up_proj.weight"), &[t.inter, t.hidden], 0.3);
        put(
            format!("{p}.mlp.down_proj.weight"),
            &[t.hidden, t.inter],
            0.3,
        );
        put(format!("{p}.input_layernorm.weight"), &[t.hidden], 0.2);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[t.hidden],
            0.2,
        );
    }
    put("model.norm.weight".into(), &[t.hidden], 0.2);
    if !t.tied {
        put("lm_head.weight".into(), &[v, t.hidden], 0.5);
    }
    // Norm weights around 1.
    for (k, x) in w.iter_mut() {
        if k.ends_with("norm.weight") {
            *x = (x.clone() + 1.0).unwrap();
        }
    }
    w
}

pub fn write_model(dir: &Path, t: &Tiny, weights: &HashMap<String, Tensor>) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": t.hidden, "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads, "num_key_value_heads": t.kv_heads, "intermediate_size": t.inter,
        "rms_norm_eps": 1e-5, "vocab_size": WORDS.len(), "tie_word_embeddings": t.tied,
        "max_position_embeddings": 128, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
        "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 32}
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
    write_tokenizer(dir);
}

/// Writes a PEFT adapter folder.
pub fn write_adapter(dir: &Path, config: serde_json::Value, tensors: &HashMap<String, Tensor>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    candle_core::safetensors::save(tensors, dir.join("adapter_model.safetensors")).unwrap();
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn to_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Multiple-choice rows the fixture tokenizer handles: "what colour is X?" with a fixed answer
/// per entity, learnable from the prompt.
pub fn rows(n: usize) -> Vec<Item> {
    let colours = ["red", "blue", "green"];
    (0..n)
        .map(|i| Item::MultipleChoice {
            prompt: format!("item {} is", i % 7),
            choices: colours.iter().map(|c| c.to_string()).collect(),
            answer: (i % 7) % 3,
            tags: BTreeMap::new(),
        })
        .collect()
}

/// Logits at every position of `ids` (batch of one).
pub fn logits(decoder: &Decoder, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = ids.len();
    let x = Tensor::from_slice(ids, (1, t), &decoder.device).unwrap();
    let (positions, mask) =
        positions_and_mask(t, 0, &[0], decoder.sliding_window, &decoder.device).unwrap();
    let step = Step {
        ids: &x,
        positions: &positions,
        mask: &mask,
    };
    let rows: Vec<u32> = (0..t as u32).collect();
    decoder
        .logits_at(&step, &rows, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
