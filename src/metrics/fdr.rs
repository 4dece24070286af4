//! Benjamini-Hochberg adjusted p-values (q-values): with many slices or instances tested, some
//! look significant by chance; rejecting where q < 0.05 keeps the expected share of false
//! discoveries at 5%. As scipy.stats.false_discovery_control(method="bh") and statsmodels'
//! multipletests(method="fdr_bh").

/// The adjusted p-value of each of `p_values`, in their order.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut smallest_after = f64::INFINITY;
    for (rank, &i) in order.iter().enumerate().rev() {
        smallest_after = smallest_after.min(p_values[i] * m as f64 / (rank + 1) as f64);
        adjusted[i] = smallest_after.clamp(0.0, 1.0);
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::benjamini_hochberg;

    #[test]
    fn adjusted_values_keep_the_order_and_never_fall_below_the_raw_ones() {
        let p = [0.01, 0.04, 0.03, 0.005];
        let q = benjamini_hochberg(&p);
        assert_eq!(q, [0.02, 0.04, 0.04, 0.02]);
        assert!(q.iter().zip(&p).all(|(q, p)| q >= p));
        assert!(benjamini_hochberg(&[]).is_empty());
    }
}
