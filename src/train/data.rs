//! Training examples from dataset rows: token ids and the positions the loss is taken over.
//!
//! Multiple choice: prompt + delimiter + the correct choice; generation: prompt + the first
//! target. Tokenised as the evaluation scores them (lm-evaluation-harness `_encode_pair`), so
//! the adapter is trained on the same token boundaries it is judged on.

use candle_core::{Device, Tensor};

use crate::dataset::Item;
use crate::engine::Bos;
use crate::engine::tokenize::TokenizerInfo;
use crate::spec::LossTokens;

/// One tokenised example: the model predicts `ids[j]` from `ids[..j]` for `j >= loss_from`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// First predicted token that counts in the loss (at least 1).
    pub loss_from: usize,
}

/// The (context, continuation) text pair a row trains on.
pub fn text_pair(item: &Item, delimiter: &str) -> Result<(String, String), String> {
    match item {
        Item::MultipleChoice {
            prompt,
            choices,
            answer,
            ..
        } => {
            let choice = choices
                .get(*answer)
                .ok_or_else(|| format!("answer {answer} is out of range"))?;
            Ok((prompt.clone(), format!("{delimiter}{choice}")))
        }
        Item::Generation {
            prompt, targets, ..
        } => {
            let target = targets
                .first()
                .ok_or_else(|| "a generation row without a target".to_string())?;
            Ok((prompt.clone(), target.clone()))
        }
    }
}

/// Tokenises a row; sequences over `max_len` lose tokens from the left (the answer is kept).
pub fn example(
    tokenizer: &TokenizerInfo,
    item: &Item,
    delimiter: &str,
    bos: Bos,
    loss_tokens: LossTokens,
    max_len: usize,
) -> Result<Example, String> {
    let (context, continuation) = text_pair(item, delimiter)?;
    let (ctx, cont) = tokenizer
        .encode_pair(&context, &continuation, bos)
        .map_err(|e| e.to_string())?;
    if cont.is_empty() {
        return Err("the answer tokenises to nothing".into());
    }
    let mut ids = ctx;
    let answer_from = ids.len();
    ids.extend(cont);
    let dropped = ids.len().saturating_sub(max_len.max(2));
    ids.drain(..dropped);
    let loss_from = match loss_tokens {
        LossTokens::All => 1,
        LossTokens::Answer => answer_from.saturating_sub(dropped).max(1),
    };
    Ok(Example { ids, loss_from })
}

/// A right-padded batch: ids `[b, t]`, the flat logit rows `b * t + j - 1` that predict each
/// loss token, and those tokens. Padding comes after every real token, so under the causal mask
/// no real position attends to it, and it is never a loss position.
pub struct Batch {
    pub ids: Tensor,
    pub t: usize,
    pub rows: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    pub fn new(examples: &[&Example], pad: u32, device: &Device) -> candle_core::Result<Self> {
        let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * t);
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for (k, e) in examples.iter().enumerate() {
            ids.extend(&e.ids);
            ids.extend(std::iter::repeat_n(pad, t - e.ids.len()));
            for j in e.loss_from..e.ids.len() {
                rows.push((k * t + j - 1) as u32);
                targets.push(e.ids[j]);
            }
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (examples.len(), t), device)?,
            t,
            rows,
            targets,
        })
    }

    pub fn tokens(&self) -> usize {
        self.targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_rows_skip_padding_and_context() {
        let a = Example {
            ids: vec![5, 6, 7, 8],
            loss_from: 2,
        };
        let b = Example {
            ids: vec![9, 10],
            loss_from: 1,
        };
        let batch = Batch::new(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(batch.t, 4);
        assert_eq!(batch.rows, vec![1, 2, 4]);
        assert_eq!(batch.targets, vec![7, 8, 10]);
        assert_eq!(
            batch.ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7, 8], vec![9, 10, 0, 0]]
        );
    }
}
