//! Token-budget batching: requests sorted by length (longest first), packed while
//! `batch_size * longest <= max_batch_tokens` and `batch_size <= max_batch_size`.

/// Batch limits; the two knobs are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Upper bound on padded tokens per batch (rows * longest row). A single longer request
    /// still runs alone.
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 4096,
            max_batch_size: 32,
        }
    }
}

/// Groups request indices into batches; `lengths[i]` is request i's padded length.
/// Deterministic: ties in length keep the caller's order.
pub fn plan(lengths: &[usize], cfg: BatchConfig) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let max_size = cfg.max_batch_size.max(1);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let l = lengths[i].max(1);
        let new_longest = longest.max(l);
        if !current.is_empty()
            && (current.len() + 1 > max_size
                || (current.len() + 1) * new_longest > cfg.max_batch_tokens)
        {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(l);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_both_limits_and_covers_everything() {
        let lens = [5, 1, 9, 3, 3, 7, 2];
        let b = plan(
            &lens,
            BatchConfig {
                max_batch_tokens: 20,
                max_batch_size: 3,
            },
        );
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..lens.len()).collect::<Vec<_>>());
        for batch in &b {
            let longest = batch.iter().map(|&i| lens[i]).max().unwrap();
            assert!(batch.len() <= 3);
            assert!(batch.len() == 1 || batch.len() * longest <= 20);
        }
        assert_eq!(b[0][0], 2, "longest first");
    }
}
