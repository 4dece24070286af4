//! Fisher's exact test on a 2x2 table, two-sided as scipy.stats.fisher_exact and R's fisher.test
//! compute it: the probability, with the margins fixed, of every table no more likely than the
//! one observed. Used for a slice's negative flips against the rest's and, per instance, for k
//! of K correct samples of the old model against the new one's.

use statrs::function::gamma::ln_gamma;

/// Tables whose probability is within this relative distance of the observed one's count as
/// "no more likely" (R's and scipy's guard against rounding in ties).
const RELATIVE_TIES: f64 = 1e-7;

/// The two-sided p-value of the table `[[a, b], [c, d]]`.
pub fn fisher_exact(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let row1 = a + b;
    let row2 = c + d;
    let col1 = a + c;
    let total = row1 + row2;
    let ln_choose = |n: u64, k: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
    };
    let ln_all = ln_choose(total, col1);
    // P(X = x): x of the first column's col1 fall in the first row.
    let pmf = |x: u64| (ln_choose(row1, x) + ln_choose(row2, col1 - x) - ln_all).exp();
    let observed = pmf(a);
    let low = col1.saturating_sub(row2);
    let high = col1.min(row1);
    let p: f64 = (low..=high)
        .map(pmf)
        .filter(|&p| p <= observed * (1.0 + RELATIVE_TIES))
        .sum();
    p.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::fisher_exact;

    #[test]
    fn a_table_like_its_margins_expect_is_not_significant() {
        assert_eq!(fisher_exact(5, 5, 5, 5), 1.0);
        assert_eq!(fisher_exact(0, 0, 0, 0), 1.0);
        // The tea-tasting table: 3 of 4 cups right.
        assert!((fisher_exact(3, 1, 1, 3) - 0.4857142857142857).abs() < 1e-12);
    }

    #[test]
    fn the_test_is_symmetric_in_rows_and_columns() {
        let p = fisher_exact(7, 3, 2, 8);
        assert!((fisher_exact(2, 8, 7, 3) - p).abs() < 1e-15);
        assert!((fisher_exact(7, 2, 3, 8) - p).abs() < 1e-15);
    }
}
