//! Learning rate: linear warm-up, then linear decay to zero at the last step.

/// The learning rate of optimizer step `step` (0-based) of `total`: `(step + 1) / warmup` of the
/// peak during warm-up (no step at rate 0), then `(total - step) / (total - warmup)` of it, so
/// the last step still moves by `1 / (total - warmup)` of the peak.
pub fn learning_rate(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay = total.saturating_sub(warmup).max(1);
    peak * (total.saturating_sub(step) as f64 / decay as f64).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::learning_rate;

    #[test]
    fn warm_up_then_linear_decay() {
        let lr = |s| learning_rate(1.0, s, 4, 10);
        let got: Vec<f64> = (0..10).map(lr).collect();
        let want = [
            0.25,
            0.5,
            0.75,
            1.0,
            1.0,
            5.0 / 6.0,
            4.0 / 6.0,
            0.5,
            2.0 / 6.0,
            1.0 / 6.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(learning_rate(2e-4, 0, 0, 5), 2e-4);
        assert!((learning_rate(2e-4, 4, 0, 5) - 2e-4 / 5.0).abs() < 1e-18);
        // Warm-up longer than training: still rising at the end.
        assert!((learning_rate(1.0, 2, 50, 3) - 3.0 / 50.0).abs() < 1e-12);
    }
}
