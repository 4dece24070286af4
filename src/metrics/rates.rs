//! The compatibility rates of muscle.md section 2, from pooled counts.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::counts::Tally;

/// Compatibility metrics. Any ratio whose denominator is 0 is `null`, never 0 or NaN.
///
/// For generation with continuous scores, `nfi`, `pfi`, `btc`, `bec`, `nfr_rel` and `nfr_mc`
/// are `null`: they are defined only when every score is exactly 0 or 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metrics {
    /// Negative flip rate NF / N.
    pub nfr: Option<f64>,
    /// Positive flip rate PF / N.
    pub pfr: Option<f64>,
    /// Negative flip impact NF / (NF + BW): share of the new model's errors that are new.
    pub nfi: Option<f64>,
    /// PF / (BC + PF): share of the new model's correct answers that are new.
    pub pfi: Option<f64>,
    /// Backward trust compatibility BC / (BC + NF).
    pub btc: Option<f64>,
    /// Backward error compatibility BW / (NF + BW): share of the new model's errors that the
    /// old model also made. The denominator is the new model's errors, as the paper words it
    /// (one public implementation divides by the old model's errors instead).
    pub bec: Option<f64>,
    /// Relative NFR: nfr / (acc_old * (1 - acc_new)).
    pub nfr_rel: Option<f64>,
    /// Share of instances where the new model is wrong and answers differently from the old.
    pub nfr_mc: Option<f64>,
    /// Share of instances where both models give the same answer (identical output text).
    pub agreement: Option<f64>,
    /// acc_new - acc_old (mean score difference for generation).
    pub delta_accuracy: Option<f64>,
}

impl Metrics {
    /// Names usable as gate metrics.
    pub const NAMES: [&'static str; 10] = [
        "nfr",
        "pfr",
        "nfi",
        "pfi",
        "btc",
        "bec",
        "nfr_rel",
        "nfr_mc",
        "agreement",
        "delta_accuracy",
    ];

    /// The metric called `name`, if that name exists and the metric is defined.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "nfr" => self.nfr,
            "pfr" => self.pfr,
            "nfi" => self.nfi,
            "pfi" => self.pfi,
            "btc" => self.btc,
            "bec" => self.bec,
            "nfr_rel" => self.nfr_rel,
            "nfr_mc" => self.nfr_mc,
            "agreement" => self.agreement,
            "delta_accuracy" => self.delta_accuracy,
            _ => None,
        }
    }

    pub(crate) fn from_tally(tally: &Tally) -> Self {
        let c = &tally.counts;
        let n = tally.n;
        let (nf, pf, bc, bw) = (
            c.negative_flips,
            c.positive_flips,
            c.both_correct,
            c.both_wrong,
        );
        let binary = tally.is_binary();
        let classical = |value: Option<f64>| if binary { value } else { None };
        let acc_old = mean(tally.sum_old, n);
        let acc_new = mean(tally.sum_new, n);
        Metrics {
            nfr: ratio(nf, n),
            pfr: ratio(pf, n),
            nfi: classical(ratio(nf, nf + bw)),
            pfi: classical(ratio(pf, bc + pf)),
            btc: classical(ratio(bc, bc + nf)),
            bec: classical(ratio(bw, nf + bw)),
            // nfr / (acc_old * (1 - acc_new)) = NF * N / ((BC + NF) * (NF + BW)) for binary scores.
            nfr_rel: classical(finite(
                (nf as f64 * n as f64) / ((bc + nf) as f64 * (nf + bw) as f64),
            )),
            nfr_mc: classical(ratio(tally.new_wrong_differs, n)),
            agreement: ratio(tally.same_answer, n),
            delta_accuracy: acc_new.zip(acc_old).and_then(|(a, b)| finite(a - b)),
        }
    }
}

/// `num / den`, or `None` when `den == 0`.
pub(crate) fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// `sum / n`, or `None` when `n == 0` or the result is not finite.
pub(crate) fn mean(sum: f64, n: u64) -> Option<f64> {
    if n == 0 { None } else { finite(sum / n as f64) }
}

/// `Some(x)` when `x` is finite.
pub(crate) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::counts::Counts;

    fn tally(nf: u64, pf: u64, bc: u64, bw: u64) -> Tally {
        let n = nf + pf + bc + bw;
        Tally {
            n,
            counts: Counts {
                negative_flips: nf,
                positive_flips: pf,
                both_correct: bc,
                both_wrong: bw,
                ties: 0,
            },
            sum_old: (bc + nf) as f64,
            sum_new: (bc + pf) as f64,
            all_binary: true,
            same_answer: bc + bw,
            new_wrong_differs: nf,
            ..Tally::default()
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn hand_computed_rates() {
        // NF 2, PF 3, BC 10, BW 5, N 20. acc_old 0.6, acc_new 0.65.
        let m = Metrics::from_tally(&tally(2, 3, 10, 5));
        assert!(close(m.nfr, 0.1));
        assert!(close(m.pfr, 0.15));
        assert!(close(m.nfi, 2.0 / 7.0));
        assert!(close(m.pfi, 3.0 / 13.0));
        assert!(close(m.btc, 10.0 / 12.0));
        assert!(close(m.bec, 5.0 / 7.0));
        assert!(close(m.nfr_rel, 0.1 / (0.6 * 0.35)));
        assert!(close(m.nfr_mc, 0.1));
        assert!(close(m.agreement, 0.75));
        assert!(close(m.delta_accuracy, 0.05));
    }

    #[test]
    fn no_flips() {
        let m = Metrics::from_tally(&tally(0, 0, 7, 3));
        assert_eq!(m.nfr, Some(0.0));
        assert_eq!(m.pfr, Some(0.0));
        assert_eq!(m.nfi, Some(0.0));
        assert_eq!(m.btc, Some(1.0));
        assert_eq!(m.bec, Some(1.0));
        assert_eq!(m.nfr_rel, Some(0.0));
        assert_eq!(m.delta_accuracy, Some(0.0));
    }

    #[test]
    fn all_negative_flips() {
        let m = Metrics::from_tally(&tally(4, 0, 0, 0));
        assert_eq!(m.nfr, Some(1.0));
        assert_eq!(m.nfi, Some(1.0));
        assert_eq!(m.pfi, None);
        assert_eq!(m.btc, Some(0.0));
        assert_eq!(m.bec, Some(0.0));
        assert_eq!(m.nfr_rel, Some(1.0));
        assert_eq!(m.delta_accuracy, Some(-1.0));
    }

    #[test]
    fn zero_denominators_are_null() {
        // All both-correct: nfi, bec have no new errors; nfr_rel has 1 - acc_new = 0.
        let m = Metrics::from_tally(&tally(0, 0, 5, 0));
        assert_eq!((m.nfi, m.bec, m.nfr_rel), (None, None, None));
        assert_eq!((m.pfi, m.btc), (Some(0.0), Some(1.0)));
        // All both-wrong: pfi, btc and nfr_rel (acc_old = 0) are null.
        let m = Metrics::from_tally(&tally(0, 0, 0, 5));
        assert_eq!((m.pfi, m.btc, m.nfr_rel), (None, None, None));
        // Empty: everything is null.
        assert_eq!(Metrics::from_tally(&Tally::default()), Metrics::default());
    }

    #[test]
    fn continuous_scores_null_the_classical_rates() {
        let mut t = tally(2, 3, 10, 5);
        t.all_binary = false;
        let m = Metrics::from_tally(&t);
        assert!(m.nfr.is_some() && m.pfr.is_some() && m.agreement.is_some());
        assert_eq!(
            (m.nfi, m.pfi, m.btc, m.bec, m.nfr_rel, m.nfr_mc),
            (None, None, None, None, None, None)
        );
    }

    #[test]
    fn null_serialises_as_json_null() {
        let json = serde_json::to_value(Metrics::default()).unwrap();
        let obj = json.as_object().unwrap();
        assert_eq!(obj.len(), Metrics::NAMES.len());
        assert!(obj.values().all(|v| v.is_null()));
        for name in Metrics::NAMES {
            assert!(obj.contains_key(name), "{name}");
        }
    }
}
