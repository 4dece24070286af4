//! The train/validation split and the per-epoch order, both fixed by the seed.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Rows held out for validation: `round(rows * fraction)`, at least 1, leaving at least 1 to
/// train on (the same arithmetic as the step count the API reports).
pub fn validation_count(rows: usize, fraction: f64) -> usize {
    let validation = ((rows as f64) * fraction).round() as usize;
    validation.max(1).min(rows.saturating_sub(1))
}

/// (train indices, validation indices), each sorted, from a seeded shuffle of `0..rows`.
pub fn split(rows: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let v = validation_count(rows, fraction);
    let mut validation = order[..v].to_vec();
    let mut train = order[v..].to_vec();
    validation.sort_unstable();
    train.sort_unstable();
    (train, validation)
}

/// The order training examples are visited in during `epoch` (0-based): reproducible, so a run
/// resumed from an epoch checkpoint sees the same batches as an uninterrupted one.
pub fn epoch_order(train: &[usize], seed: u64, epoch: u32) -> Vec<usize> {
    let mut order = train.to_vec();
    let stream = seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(epoch) + 1);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(stream));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_fixed_by_the_seed_and_covers_every_row() {
        let (t1, v1) = split(100, 0.2, 7);
        let (t2, v2) = split(100, 0.2, 7);
        assert_eq!((&t1, &v1), (&t2, &v2));
        assert_eq!((t1.len(), v1.len()), (80, 20));
        let mut all: Vec<usize> = t1.iter().chain(&v1).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        let (_, v3) = split(100, 0.2, 8);
        assert_ne!(v1, v3, "another seed, another split");
        assert_eq!(validation_count(6, 0.2), 1);
        assert_eq!(validation_count(2, 0.9), 1);
        assert_eq!(epoch_order(&t1, 7, 3), epoch_order(&t1, 7, 3));
        assert_ne!(epoch_order(&t1, 7, 3), epoch_order(&t1, 7, 4));
    }
}
