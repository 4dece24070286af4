//! What the training tests share: learnable multiple-choice rows, and logits at every position.
#![allow(dead_code)]

use std::collections::BTreeMap;

use candle_core::Tensor;
use muscle::dataset::Item;
use muscle::engine::decoder::{Decoder, Step, positions_and_mask};

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
