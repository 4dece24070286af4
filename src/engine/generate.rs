//! Generation over batches of prompts: each batch left-padded, with per-row positions and a KV
//! cache; the greedy output and (where asked) sampled draws decode side by side from one pass
//! over the prompts, whose cache each of them continues. `RunOptions::cancel` is checked between batches.

use candle_core::{D, DType, Tensor};

use super::batching::{BatchConfig, plan};
use super::decoder::{KvCache, Step, positions_and_mask};
use super::error::{EngineError, Result};
use super::model::LoadedModel;
use super::sampling::{SamplingParams, draw, draw_stream, warped_probs};
use super::types::{FinishReason, GenItem, GenResult, Generation, RunOptions};
use rand_chacha::ChaCha8Rng;

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

impl GenState {
    fn generation(self) -> Generation {
        Generation {
            text: self.text,
            output_ids: self.out,
            finish: self.finish.unwrap_or(FinishReason::Length),
        }
    }
}

/// How a row picks its next token: the largest logit, or a draw from its own stream.
enum Pick {
    Greedy,
    Sample(SamplingParams, Box<ChaCha8Rng>),
}

/// One sequence being decoded: its request, which of the batch's prompts it continues, and how
/// it picks tokens.
struct Row<'a> {
    item: &'a GenItem,
    prompt: usize,
    pick: Pick,
}

/// Decodes `rows` with a KV cache. The prompts (left-padded) go through the model once; where
/// several rows continue one prompt (the sampled draws of an instance), its cache is copied to
/// each of them, then every row decodes on its own.
fn decode_batch(
    model: &LoadedModel,
    prompts: &[Vec<u32>],
    mut rows: Vec<Row<'_>>,
) -> Result<Vec<Generation>> {
    let dec = &model.decoder;
    let tok = &model.tokenizer;
    let b = prompts.len();
    let t = prompts.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let pad_id = tok.eos.first().copied().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * t);
    for p in prompts {
        ids.extend(std::iter::repeat_n(pad_id, t - p.len()));
        ids.extend(p);
    }
    let mut states: Vec<GenState> = rows
        .iter()
        .map(|row| GenState {
            prompt_ids: prompts[row.prompt].clone(),
            out: Vec::new(),
            text: String::new(),
            finish: (row.item.max_new_tokens == 0).then_some(FinishReason::Length),
        })
        .collect();
    if states.iter().all(|s| s.finish.is_some()) {
        return Ok(states.into_iter().map(GenState::generation).collect());
    }
    let sw = dec.sliding_window;
    // Room for every token the batch may generate, so decoding never copies the cache.
    let new_tokens = rows
        .iter()
        .map(|r| r.item.max_new_tokens)
        .max()
        .unwrap_or(0);
    let prompt_pad: Vec<usize> = prompts.iter().map(|p| t - p.len()).collect();
    let (positions, mask) = positions_and_mask(t, 0, &prompt_pad, sw, &dec.device)?;
    let input = Tensor::from_vec(ids.clone(), (b, t), &dec.device)?;
    let last: Vec<u32> = (0..b).map(|i| (i * t + t - 1) as u32).collect();
    let shared = rows.len() != b || rows.iter().enumerate().any(|(i, r)| r.prompt != i);
    let mut cache = KvCache::with_capacity(if shared { 0 } else { new_tokens });
    let step = Step {
        ids: &input,
        positions: &positions,
        mask: &mask,
    };
    let mut logits = dec.logits_at(&step, &last, Some(&mut cache))?;
    let of_prompt: Vec<u32> = rows.iter().map(|r| r.prompt as u32).collect();
    if shared {
        cache = cache.select_batch_reserving(&of_prompt, new_tokens)?;
        logits =
            logits.index_select(&Tensor::from_slice(&of_prompt, rows.len(), &dec.device)?, 0)?;
    }
    let n = rows.len();
    let left_pad: Vec<usize> = rows.iter().map(|r| prompt_pad[r.prompt]).collect();
    // Every row's tokens so far (left-padded), to recompute the cache when LongRoPE switches.
    let mut seqs: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| ids[r.prompt * t..(r.prompt + 1) * t].to_vec())
        .collect();
    let mut past = t;
    let needs_rows = rows
        .iter()
        .any(|r| r.item.no_repeat_ngram_size > 0 || matches!(r.pick, Pick::Sample(..)));
    loop {
        let next: Vec<u32> = if needs_rows {
            let logit_rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
            logit_rows
                .into_iter()
                .zip(rows.iter_mut())
                .zip(&states)
                .map(|((mut logit_row, row), s)| {
                    if s.finish.is_some() {
                        return pad_id;
                    }
                    for banned in
                        banned_ngram_tokens(&s.prompt_ids, &s.out, row.item.no_repeat_ngram_size)
                    {
                        if let Some(v) = logit_row.get_mut(banned as usize) {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                    match &mut row.pick {
                        Pick::Greedy => first_argmax(&logit_row),
                        Pick::Sample(params, stream) => {
                            draw(&warped_probs(&logit_row, params), stream)
                        }
                    }
                })
                .collect()
        } else {
            logits.argmax(D::Minus1)?.to_vec1()?
        };
        for ((s, row), &n) in states.iter_mut().zip(&rows).zip(&next) {
            if s.finish.is_some() {
                continue;
            }
            let it = row.item;
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
        if states.iter().all(|s| s.finish.is_some()) {
            break;
        }
        for (seq, &token) in seqs.iter_mut().zip(&next) {
            seq.push(token);
        }
        // transformers' Phi-3 drops the cache when a sequence grows past the LongRoPE switch
        // length and recomputes it whole with the long frequencies: so do we.
        let crosses = dec.rope_switch_len.is_some_and(|l| {
            left_pad
                .iter()
                .any(|&pad| past - pad <= l && past + 1 - pad > l)
        });
        let (input, rows_at, tn) = if crosses {
            let len = seqs[0].len();
            cache = KvCache::with_capacity(new_tokens.saturating_sub(past + 1 - t));
            past = 0;
            let at: Vec<u32> = (0..n).map(|i| (i * len + len - 1) as u32).collect();
            (
                Tensor::from_vec(seqs.concat(), (n, len), &dec.device)?,
                at,
                len,
            )
        } else {
            let at: Vec<u32> = (0..n as u32).collect();
            (Tensor::from_vec(next, (n, 1), &dec.device)?, at, 1)
        };
        let (positions, mask) = positions_and_mask(tn, past, &left_pad, sw, &dec.device)?;
        let step = Step {
            ids: &input,
            positions: &positions,
            mask: &mask,
        };
        logits = dec.logits_at(&step, &rows_at, Some(&mut cache))?;
        past += tn;
    }
    Ok(states.into_iter().map(GenState::generation).collect())
}

/// The greedy output of each item, and its sampled outputs after it.
fn generate_batch(
    model: &LoadedModel,
    items: &[&GenItem],
    prompts: Vec<Vec<u32>>,
) -> Result<Vec<GenResult>> {
    // Greedy rows first, in item order, then every item's draws: one prompt pass serves both.
    let mut rows: Vec<Row<'_>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| Row {
            item,
            prompt: i,
            pick: Pick::Greedy,
        })
        .collect();
    for (i, item) in items.iter().enumerate() {
        let Some(request) = &item.sampling else {
            continue;
        };
        for index in 0..request.samples {
            let stream = draw_stream(request.seed, &request.side, &request.instance, index);
            rows.push(Row {
                item,
                prompt: i,
                pick: Pick::Sample(request.params, Box::new(stream)),
            });
        }
    }
    let owners: Vec<usize> = rows[items.len()..].iter().map(|r| r.prompt).collect();
    let mut generations = decode_batch(model, &prompts, rows)?;
    let mut samples: Vec<Vec<Generation>> = vec![Vec::new(); items.len()];
    for (owner, generation) in owners.into_iter().zip(generations.split_off(items.len())) {
        samples[owner].push(generation);
    }
    Ok(generations
        .into_iter()
        .zip(prompts)
        .zip(samples)
        .map(|((g, prompt_ids), samples)| GenResult {
            text: g.text,
            prompt_ids,
            output_ids: g.output_ids,
            finish: g.finish,
            samples,
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
    // A batch's sampled draws decode together after its greedy pass: K rows per instance.
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
                .map(|r| {
                    let sampled: usize = r.samples.iter().map(|g| g.output_ids.len()).sum();
                    r.prompt_ids.len() + r.output_ids.len() + sampled
                })
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
