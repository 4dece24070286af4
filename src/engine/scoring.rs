//! Loglikelihood and multiple-choice scoring over batches of requests (generation is in
//! `generate`).
//!
//! Batches are right-padded (positions 0.. for every row, so a row's numbers do not depend on its
//! batch). `RunOptions::cancel` is checked between batches.

use candle_core::{D, Tensor};

use super::batching::{BatchConfig, plan};
use super::decoder::{Decoder, KvCache, Step, continuation_positions_and_mask, positions_and_mask};
use super::error::{EngineError, Result};
use super::model::LoadedModel;
#[cfg(feature = "test-support")]
use super::types::LlResult;
use super::types::{Bos, LlRequest, McItem, McResult, RunOptions};

/// A tokenised loglikelihood request: `ids` = context + continuation, the last `n_cont` scored.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub ids: Vec<u32>,
    pub n_cont: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    pub logprob: f64,
    pub is_greedy: bool,
}

/// Left-truncates to the model's context like the harness: keep the last `max_len + 1` tokens.
fn truncate(ids: Vec<u32>, n_cont: usize, max_len: usize) -> TokenRequest {
    let ids = if ids.len() > max_len + 1 {
        ids[ids.len() - (max_len + 1)..].to_vec()
    } else {
        ids
    };
    let n_cont = n_cont.min(ids.len().saturating_sub(1));
    TokenRequest { ids, n_cont }
}

/// Scored positions whose vocabulary-wide logits exist at once: the head runs over this many
/// rows at a time and each chunk is reduced to what scoring keeps before the next, instead of
/// holding logits, log-probabilities and their temporaries for a whole pass (4 x 14 MB for a
/// choice pass of 72 positions on a 49k vocabulary).
const HEAD_ROWS: usize = 32;

/// For each `(row, token)` of `picks`, the log-probability of `token` after row `row` of
/// `hidden` (`[n, hidden]`, before the final norm); and the argmax of each row's logits.
fn log_probs(
    dec: &Decoder,
    hidden: &Tensor,
    picks: &[(usize, u32)],
) -> Result<(Vec<f32>, Vec<u32>)> {
    let n = hidden.dim(0)?;
    let mut picked = vec![0f32; picks.len()];
    let mut argmax = Vec::with_capacity(n);
    for start in (0..n).step_by(HEAD_ROWS) {
        let len = HEAD_ROWS.min(n - start);
        let logits = dec.head(&hidden.narrow(0, start, len)?)?;
        argmax.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        let (at, local): (Vec<usize>, Vec<(u32, u32)>) = picks
            .iter()
            .enumerate()
            .filter(|(_, (row, _))| (start..start + len).contains(row))
            .map(|(k, &(row, tok))| (k, ((row - start) as u32, tok)))
            .unzip();
        if at.is_empty() {
            continue;
        }
        let (rows, tokens): (Vec<u32>, Vec<u32>) = local.into_iter().unzip();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let rows = Tensor::from_slice(&rows, rows.len(), &dec.device)?;
        let tokens = Tensor::from_slice(&tokens, (tokens.len(), 1), &dec.device)?;
        let values: Vec<f32> = logp
            .index_select(&rows, 0)?
            .gather(&tokens, 1)?
            .flatten_all()?
            .to_vec1()?;
        for (k, v) in at.into_iter().zip(values) {
            picked[k] = v;
        }
    }
    Ok((picked, argmax))
}

/// `(row, target)` picks of one target per row.
fn one_per_row(targets: &[u32]) -> Vec<(usize, u32)> {
    targets.iter().copied().enumerate().collect()
}

/// Scores one batch of token requests (right padding, one forward pass).
pub fn score_batch(dec: &Decoder, reqs: &[&TokenRequest]) -> Result<Vec<TokenScore>> {
    let b = reqs.len();
    let t = reqs
        .iter()
        .map(|r| r.ids.len().saturating_sub(1))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = vec![0u32; b * t];
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let l = r.ids.len().saturating_sub(1);
        ids[i * t..i * t + l].copy_from_slice(&r.ids[..l]);
        for p in l - r.n_cont..l {
            rows.push((i * t + p) as u32);
            targets.push(r.ids[p + 1]);
        }
    }
    if rows.is_empty() {
        return Ok(vec![
            TokenScore {
                logprob: 0.0,
                is_greedy: true
            };
            b
        ]);
    }
    let ids = Tensor::from_vec(ids, (b, t), &dec.device)?;
    let (positions, mut mask) =
        positions_and_mask(t, 0, &vec![0; b], dec.sliding_window, &dec.device)?;
    mask.seq_lens = reqs.iter().map(|r| r.ids.len().saturating_sub(1)).collect();
    let step = Step {
        ids: &ids,
        positions: &positions,
        mask: &mask,
    };
    let hidden = dec.hidden_at(&step, &rows, None)?;
    let (picked, argmax) = log_probs(dec, &hidden, &one_per_row(&targets))?;
    let mut out = Vec::with_capacity(b);
    let mut k = 0;
    for r in reqs {
        let mut s = TokenScore {
            logprob: 0.0,
            is_greedy: true,
        };
        for _ in 0..r.n_cont {
            s.logprob += picked[k] as f64;
            s.is_greedy &= argmax[k] == targets[k];
            k += 1;
        }
        out.push(s);
    }
    Ok(out)
}

/// Scores token requests in token-budget batches; `progress(i, score)` after each batch.
pub fn score_tokens(
    dec: &Decoder,
    reqs: &[TokenRequest],
    batch: BatchConfig,
    opts: &RunOptions,
    progress: &mut dyn FnMut(usize, TokenScore),
) -> Result<Vec<TokenScore>> {
    let lengths: Vec<usize> = reqs.iter().map(|r| r.ids.len().saturating_sub(1)).collect();
    let mut out = vec![None; reqs.len()];
    for idx in plan(&lengths, batch) {
        opts.check_cancel()?;
        let batch_reqs: Vec<&TokenRequest> = idx.iter().map(|&i| &reqs[i]).collect();
        opts.observe(idx.len(), idx.iter().map(|&i| lengths[i]).sum());
        let scores = score_batch(dec, &batch_reqs)?;
        for (&i, s) in idx.iter().zip(scores) {
            out[i] = Some(s);
            progress(i, s);
        }
    }
    Ok(out
        .into_iter()
        .map(|s| {
            s.unwrap_or(TokenScore {
                logprob: 0.0,
                is_greedy: true,
            })
        })
        .collect())
}

/// Scores the continuations of several contexts, each context computed once: the contexts run as
/// one right-padded batch that fills the KV cache, whose rows are then repeated, one per
/// continuation, and the continuations run as right-padded batches after them (each attending
/// to its own context's real tokens only), at most `limits.max_batch_size` rows and
/// `limits.max_batch_tokens` padded tokens (context included) each.
/// `groups[g] = (context ids, continuations)`. `on_batch(rows, tokens)` hears of each forward
/// pass (the contexts' pass counts every continuation's first token, scored from it).
pub fn score_shared_prefixes(
    dec: &Decoder,
    groups: &[(&[u32], Vec<&[u32]>)],
    limits: BatchConfig,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<TokenScore>>> {
    if groups.iter().any(|(ctx, _)| ctx.is_empty()) {
        return Err(EngineError::InvalidRequest("empty context".into()));
    }
    let dev = &dec.device;
    let sw = dec.sliding_window;
    let g = groups.len();
    let p = groups.iter().map(|(c, _)| c.len()).max().unwrap_or(1);
    let lens: Vec<usize> = groups.iter().map(|(c, _)| c.len()).collect();
    let mut ids = vec![0u32; g * p];
    for (i, (c, _)) in groups.iter().enumerate() {
        ids[i * p..i * p + c.len()].copy_from_slice(c);
    }
    let ids = Tensor::from_vec(ids, (g, p), dev)?;
    let (positions, mut mask) = positions_and_mask(p, 0, &vec![0; g], sw, dev)?;
    // LongRoPE picks its frequencies by the whole sequence's length: the prompt's keys are
    // those of its continuations' sequences (callers group only continuations on one side).
    mask.seq_lens = groups
        .iter()
        .map(|(c, conts)| c.len() + conts.iter().map(|k| k.len()).max().unwrap_or(1) - 1)
        .collect();
    let mut cache = KvCache::default();
    let step = Step {
        ids: &ids,
        positions: &positions,
        mask: &mask,
    };
    let last: Vec<u32> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| (i * p + l - 1) as u32)
        .collect();
    let first = dec.hidden_at(&step, &last, Some(&mut cache))?;
    on_batch(
        g,
        groups
            .iter()
            .map(|(c, conts)| c.len() + conts.iter().filter(|k| !k.is_empty()).count())
            .sum(),
    );
    // First continuation token of every continuation: read from its context's last position.
    let mut out: Vec<Vec<TokenScore>> = Vec::with_capacity(g);
    let firsts: Vec<(usize, u32)> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, (_, conts))| conts.iter().filter_map(move |c| Some((i, *c.first()?))))
        .collect();
    let (first_picked, first_arg) = log_probs(dec, &first, &firsts)?;
    let mut k = 0;
    for (i, (_, conts)) in groups.iter().enumerate() {
        out.push(
            conts
                .iter()
                .map(|c| match c.first() {
                    Some(&tok) => {
                        let s = TokenScore {
                            logprob: first_picked[k] as f64,
                            is_greedy: first_arg[i] == tok,
                        };
                        k += 1;
                        s
                    }
                    None => TokenScore {
                        logprob: 0.0,
                        is_greedy: true,
                    },
                })
                .collect(),
        );
    }
    // The rest of every continuation, one row per continuation, in batches within the limits.
    let flat: Vec<(usize, usize, &[u32])> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, (_, conts))| conts.iter().enumerate().map(move |(j, c)| (i, j, *c)))
        .filter(|(_, _, c)| c.len() > 1)
        .collect();
    let mut start = 0;
    while start < flat.len() {
        let (mut end, mut t) = (start, 0);
        while end < flat.len() {
            let tt = t.max(flat[end].2.len() - 1);
            let rows = end + 1 - start;
            if end > start
                && (rows > limits.max_batch_size.max(1)
                    || rows * (p + tt) > limits.max_batch_tokens)
            {
                break;
            }
            (t, end) = (tt, end + 1);
        }
        score_continuations(dec, &cache, &lens, p, &flat[start..end], &mut out)?;
        on_batch(
            end - start,
            flat[start..end].iter().map(|(_, _, c)| c.len() - 1).sum(),
        );
        start = end;
    }
    Ok(out)
}

/// One batch of continuation rows `(context index, continuation index, ids)` after the contexts'
/// cache (`p` positions, context `i` of length `lens[i]`), added into `out[i][j]`.
fn score_continuations(
    dec: &Decoder,
    prompts: &KvCache,
    lens: &[usize],
    p: usize,
    flat: &[(usize, usize, &[u32])],
    out: &mut [Vec<TokenScore>],
) -> Result<()> {
    let dev = &dec.device;
    let t = flat
        .iter()
        .map(|(_, _, c)| c.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    if t == 0 {
        return Ok(());
    }
    let n = flat.len();
    let owner_rows: Vec<u32> = flat.iter().map(|&(i, _, _)| i as u32).collect();
    let mut cache = prompts.select_batch(&owner_rows)?;
    let mut ids = vec![0u32; n * t];
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut owner = Vec::new();
    for (r, &(i, j, c)) in flat.iter().enumerate() {
        let l = c.len().saturating_sub(1);
        ids[r * t..r * t + l].copy_from_slice(&c[..l]);
        for (q, &tok) in c.iter().enumerate().skip(1) {
            rows.push((r * t + q - 1) as u32);
            targets.push(tok);
            owner.push((i, j));
        }
    }
    let ids = Tensor::from_vec(ids, (n, t), dev)?;
    let row_lens: Vec<usize> = flat.iter().map(|&(i, _, _)| lens[i]).collect();
    let (positions, mut mask) =
        continuation_positions_and_mask(t, &row_lens, p, dec.sliding_window, dev)?;
    mask.seq_lens = flat
        .iter()
        .map(|&(i, _, c)| lens[i] + c.len() - 1)
        .collect();
    let step = Step {
        ids: &ids,
        positions: &positions,
        mask: &mask,
    };
    let hidden = dec.hidden_at(&step, &rows, Some(&mut cache))?;
    let (picked, argmax) = log_probs(dec, &hidden, &one_per_row(&targets))?;
    for (q, &(i, j)) in owner.iter().enumerate() {
        out[i][j].logprob += picked[q] as f64;
        out[i][j].is_greedy &= argmax[q] == targets[q];
    }
    Ok(())
}

/// Scores the continuations of one shared context (see `score_shared_prefixes`).
pub fn score_shared_prefix(
    dec: &Decoder,
    ctx: &[u32],
    conts: &[&[u32]],
) -> Result<Vec<TokenScore>> {
    let limits = BatchConfig {
        max_batch_size: conts.len(),
        max_batch_tokens: usize::MAX,
    };
    Ok(
        score_shared_prefixes(dec, &[(ctx, conts.to_vec())], limits, &mut |_, _| {})?
            .pop()
            .unwrap_or_default(),
    )
}

fn tokenize_ll(
    model: &LoadedModel,
    r: &LlRequest,
    bos: Bos,
) -> Result<(Vec<u32>, Vec<u32>, TokenRequest)> {
    let (ctx, cont) = model
        .tokenizer
        .encode_pair(&r.context, &r.continuation, bos)?;
    let mut ids = ctx.clone();
    ids.extend(&cont);
    let req = truncate(
        ids,
        cont.len(),
        model.decoder.config.max_position_embeddings,
    );
    Ok((ctx, cont, req))
}

/// Scores loglikelihood requests; `progress(i, result)` as soon as request `i`'s batch is done.
#[cfg(feature = "test-support")]
pub fn loglikelihood(
    model: &LoadedModel,
    reqs: &[LlRequest],
    batch: BatchConfig,
    opts: &RunOptions,
    progress: &mut dyn FnMut(usize, &LlResult),
) -> Result<Vec<LlResult>> {
    let toks = reqs
        .iter()
        .map(|r| tokenize_ll(model, r, opts.bos))
        .collect::<Result<Vec<_>>>()?;
    let token_reqs: Vec<TokenRequest> = toks.iter().map(|t| t.2.clone()).collect();
    let make = |i: usize, s: TokenScore| LlResult {
        logprob: s.logprob,
        is_greedy: s.is_greedy,
        context_ids: toks[i].0.clone(),
        continuation_ids: toks[i].1.clone(),
    };
    let scores = score_tokens(&model.decoder, &token_reqs, batch, opts, &mut |i, s| {
        progress(i, &make(i, s))
    })?;
    Ok(scores
        .into_iter()
        .enumerate()
        .map(|(i, s)| make(i, s))
        .collect())
}

pub fn multiple_choice(
    model: &LoadedModel,
    items: &[McItem],
    batch: BatchConfig,
    opts: &RunOptions,
) -> Result<Vec<McResult>> {
    let mut token_reqs = Vec::new();
    let mut owner = Vec::new();
    let mut pairs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.choices.is_empty() {
            return Err(EngineError::InvalidRequest(format!(
                "item {i} has no choices"
            )));
        }
        let delim = item.delimiter.as_deref().unwrap_or(" ");
        let mut item_pairs = Vec::new();
        for (j, c) in item.choices.iter().enumerate() {
            let r = LlRequest {
                context: item.prompt.clone(),
                continuation: format!("{delim}{c}"),
            };
            let (ctx, cont, req) = tokenize_ll(model, &r, opts.bos)?;
            item_pairs.push((ctx, cont));
            token_reqs.push(req);
            owner.push((i, j));
        }
        pairs.push(item_pairs);
    }
    if opts.prefix_sharing {
        return multiple_choice_shared(model, items, &pairs, batch, opts);
    }
    let mut partial: Vec<Vec<Option<TokenScore>>> = items
        .iter()
        .map(|it| vec![None; it.choices.len()])
        .collect();
    let mut done: Vec<Option<McResult>> = vec![None; items.len()];
    let finish = |i: usize, scores: &[Option<TokenScore>]| -> Option<McResult> {
        let s: Vec<TokenScore> = scores.iter().copied().collect::<Option<_>>()?;
        Some(McResult::from_scores(
            &items[i].choices,
            s.iter().map(|x| x.logprob).collect(),
            s.iter().map(|x| x.is_greedy).collect(),
        ))
    };
    score_tokens(&model.decoder, &token_reqs, batch, opts, &mut |k, s| {
        let (i, j) = owner[k];
        partial[i][j] = Some(s);
        if let Some(r) = finish(i, &partial[i]) {
            done[i] = Some(r);
        }
    })?;
    done.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| EngineError::InvalidRequest(format!("item {i} was not scored")))
        })
        .collect()
}

/// Multiple choice with the prompt computed once per instance. Instances are grouped (longest
/// prompts first) so that a group's continuations stay within the batch limits: at most
/// `max_batch_size` continuation rows (or one instance's choices, whatever their number) and
/// rows x (longest prompt + longest continuation) within `max_batch_tokens`; each group is one
/// prompt batch and one continuation batch. Choices whose context encodes differently (or that
/// need truncation) fall back to full-sequence scoring.
fn multiple_choice_shared(
    model: &LoadedModel,
    items: &[McItem],
    pairs: &[Vec<(Vec<u32>, Vec<u32>)>],
    batch: BatchConfig,
    opts: &RunOptions,
) -> Result<Vec<McResult>> {
    let dec = &model.decoder;
    let max_len = dec.config.max_position_embeddings;
    let mut out: Vec<Option<McResult>> = vec![None; items.len()];
    let finish = |i: usize, scores: &[TokenScore], out: &mut Vec<Option<McResult>>| {
        out[i] = Some(McResult::from_scores(
            &items[i].choices,
            scores.iter().map(|s| s.logprob).collect(),
            scores.iter().map(|s| s.is_greedy).collect(),
        ));
    };
    // A LongRoPE model computes a prompt differently for sequences on either side of its
    // switch length, so a prompt is shared only by continuations on one side.
    let long = |c: &[u32], k: &[u32]| {
        dec.rope_switch_len
            .map(|l| (c.len() + k.len()).saturating_sub(1) > l)
    };
    let shareable = |ps: &[(Vec<u32>, Vec<u32>)]| {
        let ctx = &ps[0].0;
        let side = long(ctx, &ps[0].1);
        ps.iter()
            .all(|(c, k)| c == ctx && c.len() + k.len() <= max_len + 1 && long(c, k) == side)
    };
    let mut order: Vec<usize> = Vec::new();
    for (i, ps) in pairs.iter().enumerate() {
        if shareable(ps) {
            order.push(i);
            continue;
        }
        opts.check_cancel()?;
        let reqs: Vec<TokenRequest> = ps
            .iter()
            .map(|(c, k)| truncate([c.as_slice(), k.as_slice()].concat(), k.len(), max_len))
            .collect();
        let refs: Vec<&TokenRequest> = reqs.iter().collect();
        finish(i, &score_batch(dec, &refs)?, &mut out);
    }
    order.sort_by_key(|&i| (std::cmp::Reverse(pairs[i][0].0.len()), i));
    let max_rows = batch.max_batch_size.max(1);
    let cont_len = |i: usize| pairs[i].iter().map(|(_, k)| k.len()).max().unwrap_or(0);
    let mut start = 0;
    while start < order.len() {
        opts.check_cancel()?;
        let first = order[start];
        if pairs[first].len() > max_rows {
            // More choices than a batch holds: this instance alone, its choices in chunks.
            let ps = &pairs[first];
            let lens: Vec<usize> = ps.iter().map(|(_, k)| k.len().max(1)).collect();
            let mut scores = vec![
                TokenScore {
                    logprob: 0.0,
                    is_greedy: true
                };
                ps.len()
            ];
            for chunk in plan(&lens, batch) {
                let conts: Vec<&[u32]> = chunk.iter().map(|&j| ps[j].1.as_slice()).collect();
                opts.observe(
                    chunk.len(),
                    ps[0].0.len() + conts.iter().map(|c| c.len()).sum::<usize>(),
                );
                for (&j, s) in chunk
                    .iter()
                    .zip(score_shared_prefix(dec, &ps[0].0, &conts)?)
                {
                    scores[j] = s;
                }
            }
            finish(first, &scores, &mut out);
            start += 1;
            continue;
        }
        // Prompts are sorted longest first, so the first prompt is the group's longest. A group
        // is one prompt pass of up to `max_rows` prompts; its continuations then run in
        // batches within the same limits (score_shared_prefixes).
        let p = pairs[first][0].0.len();
        let mut end = start;
        while end < order.len() {
            let i = order[end];
            let prompts = end + 1 - start;
            let widest_choice = max_rows.min(pairs[i].len()) * (p + cont_len(i));
            if end > start
                && (prompts > max_rows
                    || prompts * p > batch.max_batch_tokens
                    || widest_choice > batch.max_batch_tokens)
            {
                break;
            }
            end += 1;
        }
        let groups: Vec<(&[u32], Vec<&[u32]>)> = order[start..end]
            .iter()
            .map(|&i| {
                let ps = &pairs[i];
                (
                    ps[0].0.as_slice(),
                    ps.iter().map(|(_, k)| k.as_slice()).collect(),
                )
            })
            .collect();
        let scores = score_shared_prefixes(dec, &groups, batch, &mut |rows, tokens| {
            opts.observe(rows, tokens)
        })?;
        for (&i, s) in order[start..end].iter().zip(scores) {
            finish(i, &s, &mut out);
        }
        start = end;
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| EngineError::InvalidRequest(format!("item {i} was not scored")))
        })
        .collect()
}

/// Logits (f32) of the next token after `ids`.
#[cfg(feature = "test-support")]
pub fn last_logits(dec: &Decoder, ids: &[u32]) -> Result<Vec<f32>> {
    let t = ids.len();
    if t == 0 {
        return Err(EngineError::InvalidRequest("empty input".into()));
    }
    let ids = Tensor::from_slice(ids, (1, t), &dec.device)?;
    let (positions, mask) = positions_and_mask(t, 0, &[0], dec.sliding_window, &dec.device)?;
    let step = Step {
        ids: &ids,
        positions: &positions,
        mask: &mask,
    };
    Ok(dec
        .logits_at(&step, &[(t - 1) as u32], None)?
        .flatten_all()?
        .to_vec1()?)
}
