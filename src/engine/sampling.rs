//! Sampled decoding as transformers' `generate(do_sample=True)` draws: the logits divided by the
//! temperature (TemperatureLogitsWarper), then the top k kept (TopKLogitsWarper, when set), then
//! the smallest set of most probable tokens whose probability reaches top_p (TopPLogitsWarper,
//! at least one token), then a draw from the softmax of what is left. The warpers compute in f32
//! as torch does on f32 logits, so the tokens they remove are the ones transformers removes.
//!
//! Each draw has a random stream of its own, seeded from what identifies it (the job's seed, the
//! side, the instance and the sample's index) and from nothing else, so the same job draws the
//! same tokens whatever the batch, shard or worker.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How tokens are drawn at each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Greater than 0.
    pub temperature: f64,
    /// None (or 0): every token stays a candidate.
    pub top_k: Option<usize>,
    /// In (0, 1]; 1 keeps every token.
    pub top_p: f64,
}

/// The distribution a draw is made from: `logits` (after any banned tokens were set to -inf)
/// warped by `params`; removed tokens have probability 0.
pub fn warped_probs(logits: &[f32], params: &SamplingParams) -> Vec<f64> {
    let temperature = params.temperature as f32;
    let mut scores: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
    if let Some(k) = params.top_k.filter(|&k| k > 0 && k < scores.len()) {
        keep_top_k(&mut scores, k);
    }
    if params.top_p < 1.0 {
        keep_top_p(&mut scores, params.top_p);
    }
    softmax(&scores)
}

/// TopKLogitsWarper: every score below the k-th largest is removed (ties with it stay).
fn keep_top_k(scores: &mut [f32], k: usize) {
    let mut values = scores.to_vec();
    let (_, &mut kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    for s in scores.iter_mut().filter(|s| **s < kth) {
        *s = f32::NEG_INFINITY;
    }
}

/// Most probable tokens ordered first when top-p looks for its cut; more (at least twice as
/// many) until the cut is among them.
const TOP_P_FIRST_CANDIDATES: usize = 256;

/// TopPLogitsWarper: in ascending order of (score, token id), tokens are removed while the
/// cumulative probability (softmax in f32, summed in f64 and compared in f32, as torch's CPU
/// cumsum does) stays at or below 1 - top_p; the most probable token stays. The cumulative sum
/// at a token is the total less the mass ordered above it, and it only grows, so the kept
/// tokens are found from the top: only the most probable few are sorted, not the vocabulary.
fn keep_top_p(scores: &mut [f32], top_p: f64) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let probs: Vec<f32> = exps.iter().map(|e| e / sum).collect();
    let total: f64 = probs.iter().map(|&p| f64::from(p)).sum();
    // torch compares with the Python float 1 - top_p cast to f32.
    let threshold = (1.0 - top_p) as f32;
    let mut order: Vec<(f32, u32)> = (0..).zip(scores.iter()).map(|(i, &s)| (s, i)).collect();
    let descending = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1));
    let mut candidates = TOP_P_FIRST_CANDIDATES.min(order.len());
    let kept = loop {
        if candidates < order.len() {
            order.select_nth_unstable_by(candidates - 1, descending);
        }
        order[..candidates].sort_unstable_by(descending);
        let mut above = 0f64;
        let mut kept = candidates;
        for (rank, &(_, token)) in order[..candidates].iter().enumerate() {
            if rank > 0 && ((total - above) as f32) <= threshold {
                kept = rank;
                break;
            }
            above += f64::from(probs[token as usize]);
        }
        if kept < candidates || candidates == order.len() {
            break kept;
        }
        // Each token not yet ordered is at most as probable as the last one, so at least this
        // many more are needed; a flat distribution (random weights) goes to the full sort at
        // once rather than doubling its way there.
        let lowest = f64::from(probs[order[candidates - 1].1 as usize]);
        let missing = f64::from(1.0 - threshold) - above;
        let at_least = if lowest > 0.0 {
            (missing / lowest).ceil().max(0.0) as usize
        } else {
            order.len()
        };
        candidates = (candidates * 2).max(candidates.saturating_add(at_least));
        if candidates > order.len() / 2 {
            candidates = order.len();
        }
    };
    let mut keep = vec![false; scores.len()];
    for &(_, token) in &order[..kept] {
        keep[token as usize] = true;
    }
    for (score, keep) in scores.iter_mut().zip(keep) {
        if !keep {
            *score = f32::NEG_INFINITY;
        }
    }
}

fn softmax(scores: &[f32]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = scores.iter().map(|&s| (s as f64 - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// The token whose cumulative probability (in vocabulary order) first exceeds a uniform draw
/// from `rng`; never a token of probability 0.
pub fn draw(probs: &[f64], rng: &mut ChaCha8Rng) -> u32 {
    let u: f64 = rng.random();
    let mut cumulative = 0.0;
    let mut last = 0;
    for (token, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        cumulative += p;
        last = token;
        if cumulative > u {
            return token as u32;
        }
    }
    // Rounding left the total a hair below u: the last token that can be drawn.
    last as u32
}

/// The random stream of one draw: sample `index` of `instance` on `side` in a job seeded `seed`.
pub fn draw_stream(seed: u64, side: &str, instance: &str, index: u32) -> ChaCha8Rng {
    let mut hash = Sha256::new();
    for part in [
        &seed.to_le_bytes()[..],
        side.as_bytes(),
        instance.as_bytes(),
        &index.to_le_bytes()[..],
    ] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    ChaCha8Rng::from_seed(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_k: Option<usize>, top_p: f64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
        }
    }

    /// TopPLogitsWarper as written: the whole vocabulary sorted ascending, the cumulative sum
    /// from the bottom.
    fn top_p_by_full_sort(scores: &[f32], top_p: f64) -> Vec<bool> {
        let mut sorted: Vec<(f32, u32)> = (0..).zip(scores.iter()).map(|(i, &s)| (s, i)).collect();
        sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let max = sorted[sorted.len() - 1].0;
        let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
        let threshold = (1.0 - top_p) as f32;
        let mut kept = vec![true; scores.len()];
        let mut cumulative = 0f64;
        for &(score, token) in &sorted[..sorted.len() - 1] {
            cumulative += f64::from((score - max).exp() / sum);
            if cumulative as f32 > threshold {
                break;
            }
            kept[token as usize] = false;
        }
        kept
    }

    #[test]
    fn top_p_from_the_top_keeps_what_the_full_sort_keeps() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            let vocab = [5, 300, 2000][case % 3];
            // Flat, peaked and tied logits (ties are broken by token id, as the sort does).
            let spread = [0.1, 3.0, 12.0][case / 3 % 3];
            let mut logits: Vec<f32> = (0..vocab)
                .map(|_| (rng.random::<f32>() * spread * 4.0).round() / 4.0)
                .collect();
            logits[case % vocab] = f32::NEG_INFINITY;
            let top_p = [0.1, 0.5, 0.9, 0.95, 0.999][case % 5];
            let mut scores = logits.clone();
            keep_top_p(&mut scores, top_p);
            let kept: Vec<bool> = scores.iter().map(|s| s.is_finite()).collect();
            assert_eq!(kept, top_p_by_full_sort(&logits, top_p), "case {case}");
        }
    }

    #[test]
    fn temperature_one_without_filters_is_the_softmax() {
        let probs = warped_probs(&[1.0, 2.0, 3.0], &params(1.0, None, 1.0));
        let total: f64 = [1f64, 2.0, 3.0].iter().map(|x| x.exp()).sum();
        for (p, x) in probs.iter().zip([1f64, 2.0, 3.0]) {
            assert!((p - x.exp() / total).abs() < 1e-12);
        }
    }

    #[test]
    fn top_k_keeps_ties_and_top_p_keeps_at_least_one_token() {
        let probs = warped_probs(&[1.0, 3.0, 3.0, 0.0], &params(1.0, Some(1), 1.0));
        assert_eq!(probs.iter().filter(|&&p| p > 0.0).count(), 2);
        let probs = warped_probs(&[0.0, 10.0, 0.0], &params(1.0, None, 0.01));
        assert_eq!(probs, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn top_p_removes_the_tail_whose_mass_stays_below_one_minus_p() {
        // probabilities 0.1, 0.2, 0.3, 0.4 (logits are their logs)
        let logits: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        let kept = |top_p| {
            warped_probs(&logits, &params(1.0, None, top_p))
                .iter()
                .map(|&p| p > 0.0)
                .collect::<Vec<_>>()
        };
        // 1 - 0.75 = 0.25: 0.1 and 0.1 + 0.2 = 0.3 > 0.25, so only the first goes.
        assert_eq!(kept(0.75), [false, true, true, true]);
        assert_eq!(kept(0.65), [false, false, true, true]);
        assert_eq!(kept(0.3), [false, false, false, true]);
    }

    #[test]
    fn draws_depend_on_what_identifies_them_alone() {
        let probs = warped_probs(&[0.5, 0.1, 0.9, 0.2, 0.4], &params(1.3, None, 1.0));
        let sequence = |side, instance, index| {
            let mut rng = draw_stream(7, side, instance, index);
            (0..20).map(|_| draw(&probs, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(sequence("new", "q1", 0), sequence("new", "q1", 0));
        assert_ne!(sequence("new", "q1", 0), sequence("new", "q1", 1));
        assert_ne!(sequence("new", "q1", 0), sequence("old", "q1", 0));
        assert_ne!(sequence("new", "q1", 0), sequence("new", "q2", 0));
        assert_ne!(
            draw_stream(7, "ab", "c", 0).random::<u64>(),
            draw_stream(7, "a", "bc", 0).random::<u64>()
        );
    }

    #[test]
    fn a_removed_token_is_never_drawn() {
        let probs = vec![0.0, 0.5, 0.0, 0.5, 0.0];
        let mut rng = draw_stream(1, "old", "x", 0);
        for _ in 0..1000 {
            let token = draw(&probs, &mut rng);
            assert!(token == 1 || token == 3);
        }
    }
}
