//! Greedy generation over batches of prompts: each batch left-padded, with per-row positions
//! and a KV cache. `RunOptions::cancel` is checked between batches.

use candle_core::{D, DType, Tensor};

use super::batching::{BatchConfig, plan};
use super::decoder::{KvCache, Step, positions_and_mask};
use super::error::{EngineError, Result};
use super::model::LoadedModel;
use super::types::{FinishReason, GenItem, GenResult, RunOptions};

/// The tokens that would complete an n-gram already present in `prompt` + `out`
/// (transformers' `_get_ngrams` / `_calc_banned_ngram_tokens`).
fn banned_ngram_tokens(prompt: &[u32], out: &[u32], n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    let seq: Vec<u32> = prompt.iter().chain(out).copied().collect();
    if seq.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &seq[seq.len() + 1 - n..];
    seq.windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// The first index of the largest logit (torch's argmax).
fn first_argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

struct GenState {
    prompt_ids: Vec<u32>,
    out: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
}

/// Greedy decoding of one left-padded batch with a KV cache.
fn generate_batch(
    model: &LoadedModel,
    items: &[&GenItem],
    prompts: Vec<Vec<u32>>,
) -> Result<Vec<GenResult>> {
    let dec = &model.decoder;
    let tok = &model.tokenizer;
    let b = items.len();
    let t = prompts.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let pad_id = tok.eos.first().copied().unwrap_or(0);
    let left_pad: Vec<usize> = prompts.iter().map(|p| t - p.len()).collect();
    let mut ids = Vec::with_capacity(b * t);
    for p in &prompts {
        ids.extend(std::iter::repeat_n(pad_id, t - p.len()));
        ids.extend(p);
    }
    let mut states: Vec<GenState> = prompts
        .into_iter()
        .zip(items)
        .map(|(p, it)| GenState {
            prompt_ids: p,
            out: Vec::new(),
            text: String::new(),
            finish: (it.max_new_tokens == 0).then_some(FinishReason::Length),
        })
        .collect();
    let sw = dec.sliding_window;
    // Room for every token the batch may generate, so decoding never copies the cache.
    let new_tokens = items.iter().map(|it| it.max_new_tokens).max().unwrap_or(0);
    let mut cache = KvCache::with_capacity(new_tokens);
    // Every row's tokens so far (left-padded), to recompute the cache when LongRoPE switches.
    let mut seqs: Vec<Vec<u32>> = ids.chunks(t).map(<[u32]>::to_vec).collect();
    let mut input = Tensor::from_vec(ids, (b, t), &dec.device)?;
    let mut rows: Vec<u32> = (0..b).map(|i| (i * t + t - 1) as u32).collect();
    let mut past = 0;
    while states.iter().any(|s| s.finish.is_none()) {
        // transformers' Phi-3 drops the cache when a sequence grows past the LongRoPE switch
        // length and recomputes it whole with the long frequencies: so do we.
        let crosses = dec.rope_switch_len.is_some_and(|l| {
            past > 0
                && left_pad
                    .iter()
                    .any(|&pad| past - pad <= l && past + 1 - pad > l)
        });
        if crosses {
            let len = seqs[0].len();
            cache = KvCache::with_capacity(new_tokens.saturating_sub(past + 1 - t));
            input = Tensor::from_vec(seqs.concat(), (b, len), &dec.device)?;
            rows = (0..b).map(|i| (i * len + len - 1) as u32).collect();
            past = 0;
        }
        let tn = input.dim(1)?;
        let (positions, mask) = positions_and_mask(tn, past, &left_pad, sw, &dec.device)?;
        let step = Step {
            ids: &input,
            positions: &positions,
            mask: &mask,
        };
        let logits = dec.logits_at(&step, &rows, Some(&mut cache))?;
        past += tn;
        let next: Vec<u32> = if items.iter().any(|it| it.no_repeat_ngram_size > 0) {
            let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
            rows.into_iter()
                .zip(&states)
                .zip(items)
                .map(|((mut row, s), it)| {
                    for banned in
                        banned_ngram_tokens(&s.prompt_ids, &s.out, it.no_repeat_ngram_size)
                    {
                        if let Some(v) = row.get_mut(banned as usize) {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                    first_argmax(&row)
                })
                .collect()
        } else {
            logits.argmax(D::Minus1)?.to_vec1()?
        };
        for ((s, it), &n) in states.iter_mut().zip(items).zip(&next) {
            if s.finish.is_some() {
                continue;
            }
            s.out.push(n);
            if tok.eos.contains(&n) {
                s.finish = Some(FinishReason::Eos);
                s.text = tok.decode(&s.out[..s.out.len() - 1])?;
                continue;
            }
            s.text = tok.decode(&s.out)?;
            if let Some(cut) = it
                .stop
                .iter()
                .filter(|x| !x.is_empty())
                .filter_map(|x| s.text.find(x.as_str()))
                .min()
            {
                s.text.truncate(cut);
                s.finish = Some(FinishReason::Stop);
            } else if s.out.len() >= it.max_new_tokens {
                s.finish = Some(FinishReason::Length);
            }
        }
        for (seq, &n) in seqs.iter_mut().zip(&next) {
            seq.push(n);
        }
        input = Tensor::from_vec(next, (b, 1), &dec.device)?;
        rows = (0..b as u32).collect();
    }
    Ok(states
        .into_iter()
        .map(|s| GenResult {
            text: s.text,
            prompt_ids: s.prompt_ids,
            output_ids: s.out,
            finish: s.finish.unwrap_or(FinishReason::Length),
        })
        .collect())
}

pub fn generate(
    model: &LoadedModel,
    items: &[GenItem],
    batch: BatchConfig,
    opts: &RunOptions,
) -> Result<Vec<GenResult>> {
    let max_pos = model.decoder.config.max_position_embeddings;
    let prompts = items
        .iter()
        .map(|it| {
            let mut p = model.tokenizer.encode_prompt(&it.prompt, opts.bos)?;
            if it.max_new_tokens >= max_pos {
                return Err(EngineError::InvalidRequest(format!(
                    "max_new_tokens {} does not fit the model's context of {max_pos}",
                    it.max_new_tokens
                )));
            }
            let keep = max_pos - it.max_new_tokens;
            if p.len() > keep {
                p.drain(..p.len() - keep);
            }
            if p.is_empty() {
                p.push(
                    model
                        .tokenizer
                        .bos
                        .or(model.tokenizer.eos.first().copied())
                        .unwrap_or(0),
                );
            }
            Ok(p)
        })
        .collect::<Result<Vec<_>>>()?;
    let lengths: Vec<usize> = prompts
        .iter()
        .zip(items)
        .map(|(p, it)| p.len() + it.max_new_tokens)
        .collect();
    let mut out: Vec<Option<GenResult>> = vec![None; items.len()];
    for idx in plan(&lengths, batch) {
        opts.check_cancel()?;
        let its: Vec<&GenItem> = idx.iter().map(|&i| &items[i]).collect();
        let ps: Vec<Vec<u32>> = idx.iter().map(|&i| prompts[i].clone()).collect();
        let results = generate_batch(model, &its, ps)?;
        opts.observe(
            idx.len(),
            results
                .iter()
                .map(|r| r.prompt_ids.len() + r.output_ids.len())
                .sum(),
        );
        for (&i, r) in idx.iter().zip(results) {
            out[i] = Some(r);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod ngram_tests {
    use super::banned_ngram_tokens;

    #[test]
    fn bans_what_would_repeat_an_ngram_as_transformers_does() {
        // prompt 1 2 3 1, output 2: the bigram ending in 2 is (2, ?): 3 followed 2 before.
        assert_eq!(banned_ngram_tokens(&[1, 2, 3, 1], &[2], 2), vec![3]);
        // trigram (1, 2) -> 3 seen; prefix now (1, 2).
        assert_eq!(banned_ngram_tokens(&[1, 2, 3, 1], &[2], 3), vec![3]);
        assert_eq!(banned_ngram_tokens(&[1, 2], &[], 4), Vec::<u32>::new());
        assert_eq!(banned_ngram_tokens(&[5, 5], &[], 2), vec![5]);
        assert_eq!(banned_ngram_tokens(&[1, 2, 3], &[], 0), Vec::<u32>::new());
    }
}
