//! Release gates: bounds on report values that decide pass or fail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::counts::Counts;
use super::generative::Generative;
use super::intervals::Intervals;
use super::rates::Metrics;
use super::report::Report;
use super::sampled_report::SampledReport;

/// One bound on one report value; `min` and `max` are inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateCheck {
    /// A name from [`known_gate_metrics`].
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// What is wrong with `gate[index].field`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("gate[{index}].{field}: {message}")]
pub struct GateError {
    pub index: usize,
    pub field: String,
    pub message: String,
}

/// One evaluated check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GateCheckResult {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The report's value; null when it is undefined (then the check fails).
    pub value: Option<f64>,
    pub passed: bool,
}

/// The report's `gate` object; passes when every check passes (so with no checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GateResult {
    pub passed: bool,
    pub checks: Vec<GateCheckResult>,
}

impl Default for GateResult {
    fn default() -> Self {
        GateResult {
            passed: true,
            checks: Vec::new(),
        }
    }
}

impl GateResult {
    /// One line for people: `gate failed: nfr 0.159 > 0.05; 1 of 2 checks failed`.
    pub fn verdict(&self) -> String {
        let n = self.checks.len();
        if n == 0 {
            return "gate passed: no checks".into();
        }
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(GateCheckResult::describe_failure)
            .collect();
        if failed.is_empty() {
            return format!("gate passed: {n} of {n} checks passed");
        }
        let k = failed.len();
        format!(
            "gate failed: {}; {k} of {n} checks failed",
            failed.join("; ")
        )
    }
}

impl GateCheckResult {
    fn describe_failure(&self) -> String {
        let bound = match (self.min, self.max) {
            (Some(min), Some(max)) => format!("outside [{}, {}]", short(min), short(max)),
            (Some(min), None) => format!("< {}", short(min)),
            (None, Some(max)) => format!("> {}", short(max)),
            (None, None) => "has no bound".into(),
        };
        match self.value {
            Some(v) => format!("{} {} {bound}", self.metric, short(v)),
            None => format!("{} undefined (the check needs a value)", self.metric),
        }
    }
}

/// At most four significant digits, without trailing zeros.
fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Every name a gate check may use, built from the report's own name lists. `acc_old`/`acc_new`
/// are aliases of `old.accuracy`/`new.accuracy`.
pub fn known_gate_metrics() -> &'static [String] {
    static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut names: Vec<String> = Metrics::NAMES.iter().map(|s| s.to_string()).collect();
        names.extend(["acc_old", "acc_new", "old.accuracy", "new.accuracy", "n"].map(String::from));
        for name in Intervals::NAMES {
            names.push(format!("intervals.{name}.lower"));
            names.push(format!("intervals.{name}.upper"));
        }
        names.extend(
            [
                "mcnemar.p_value",
                "mcnemar.discordant",
                "noise_floor.self_flip_rate",
            ]
            .map(String::from),
        );
        names.extend(Generative::NAMES.iter().map(|n| format!("generative.{n}")));
        names.extend(Counts::NAMES.iter().map(|n| format!("counts.{n}")));
        names.extend(SampledReport::NAMES.iter().map(|n| format!("sampled.{n}")));
        names
    });
    &NAMES
}

pub fn is_known_gate_metric(name: &str) -> bool {
    known_gate_metrics().iter().any(|known| known == name)
}

/// Checks names and bounds: unknown metric, neither `min` nor `max`, a non-finite bound,
/// `min > max`. Every problem is reported at once.
pub fn validate_gate(checks: &[GateCheck]) -> Result<(), Vec<GateError>> {
    let mut errors = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        let mut error = |field: &str, message: String| {
            errors.push(GateError {
                index,
                field: field.to_owned(),
                message,
            })
        };
        if !is_known_gate_metric(&check.metric) {
            error(
                "metric",
                format!(
                    "unknown metric {:?}; known: {}",
                    check.metric,
                    known_gate_metrics().join(", ")
                ),
            );
        }
        if check.min.is_none() && check.max.is_none() {
            error("min", "give min, max or both".to_owned());
        }
        for (field, bound) in [("min", check.min), ("max", check.max)] {
            if bound.is_some_and(|b| !b.is_finite()) {
                error(field, "must be a finite number".to_owned());
            }
        }
        if let (Some(min), Some(max)) = (check.min, check.max)
            && min > max
        {
            error("min", format!("min ({min}) is greater than max ({max})"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The value a gate metric names in `report`; `None` when the name is unknown or the value is null.
pub fn gate_value(report: &Report, metric: &str) -> Option<f64> {
    if let Some(rest) = metric.strip_prefix("intervals.") {
        let (name, bound) = rest.rsplit_once('.')?;
        let interval = report.intervals.get(name)?;
        return match bound {
            "lower" => Some(interval.lower),
            "upper" => Some(interval.upper),
            _ => None,
        };
    }
    if let Some(name) = metric.strip_prefix("generative.") {
        return report.generative.get(name);
    }
    if let Some(name) = metric.strip_prefix("sampled.") {
        return report.sampled.as_ref()?.get(name);
    }
    if let Some(name) = metric.strip_prefix("counts.") {
        return report.counts.get(name).map(|c| c as f64);
    }
    match metric {
        "acc_old" | "old.accuracy" => report.old.accuracy,
        "acc_new" | "new.accuracy" => report.new.accuracy,
        "n" => Some(report.n as f64),
        "mcnemar.p_value" => Some(report.mcnemar.p_value),
        "mcnemar.discordant" => Some(report.mcnemar.discordant as f64),
        "noise_floor.self_flip_rate" => report.noise_floor.map(|nf| nf.self_flip_rate),
        _ => report.metrics.get(metric),
    }
}

/// Evaluates every check against `report`. Bounds are inclusive. A null value (undefined
/// metric, or an unknown name) fails its check: a gate never passes on missing evidence.
pub fn evaluate_gate(report: &Report, checks: &[GateCheck]) -> GateResult {
    let checks: Vec<GateCheckResult> = checks
        .iter()
        .map(|check| {
            let value = gate_value(report, &check.metric);
            let passed = value.is_some_and(|v| {
                check.min.is_none_or(|min| v >= min) && check.max.is_none_or(|max| v <= max)
            });
            GateCheckResult {
                metric: check.metric.clone(),
                min: check.min,
                max: check.max,
                value,
                passed,
            }
        })
        .collect();
    GateResult {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Interval;
    use crate::metrics::noise::NoiseFloor;
    use crate::metrics::report::{ReportOptions, compute_report};

    fn check(metric: &str, min: Option<f64>, max: Option<f64>) -> GateCheck {
        GateCheck {
            metric: metric.to_owned(),
            min,
            max,
        }
    }

    /// The names the API has published: a renamed report field must not drop one silently.
    const PUBLISHED: &[&str] = &[
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
        "acc_old",
        "acc_new",
        "old.accuracy",
        "new.accuracy",
        "n",
        "intervals.nfr.lower",
        "intervals.nfr.upper",
        "intervals.pfr.lower",
        "intervals.pfr.upper",
        "intervals.nfi.lower",
        "intervals.nfi.upper",
        "intervals.pfi.lower",
        "intervals.pfi.upper",
        "intervals.btc.lower",
        "intervals.btc.upper",
        "intervals.bec.lower",
        "intervals.bec.upper",
        "intervals.nfr_mc.lower",
        "intervals.nfr_mc.upper",
        "intervals.agreement.lower",
        "intervals.agreement.upper",
        "intervals.acc_old.lower",
        "intervals.acc_old.upper",
        "intervals.acc_new.lower",
        "intervals.acc_new.upper",
        "intervals.delta_accuracy.lower",
        "intervals.delta_accuracy.upper",
        "mcnemar.p_value",
        "mcnemar.discordant",
        "noise_floor.self_flip_rate",
        "generative.m_g",
        "generative.m_r",
        "generative.output_similarity",
        "generative.identical_outputs",
        "counts.negative_flips",
        "counts.positive_flips",
        "counts.both_correct",
        "counts.both_wrong",
        "counts.ties",
        "sampled.expected_nfr",
        "sampled.expected_pfr",
        "sampled.reliably_worse",
        "sampled.reliably_better",
        "sampled.no_reliable_change",
        "sampled.greedy_flips_reliable",
        "sampled.reliable_missed_by_greedy",
    ];

    #[test]
    fn known_list_matches_the_report_names() {
        assert_eq!(known_gate_metrics().to_vec(), PUBLISHED.to_vec());
    }

    #[test]
    fn every_known_name_resolves_on_a_full_report() {
        let iv = Some(Interval {
            lower: 0.1,
            upper: 0.2,
        });
        let mut report = compute_report(
            crate::metrics::TaskKind::MultipleChoice,
            &[],
            &ReportOptions::default(),
        );
        report.old.accuracy = Some(0.5);
        report.new.accuracy = Some(0.5);
        report.metrics = Metrics {
            nfr: Some(0.1),
            pfr: Some(0.1),
            nfi: Some(0.1),
            pfi: Some(0.1),
            btc: Some(0.1),
            bec: Some(0.1),
            nfr_rel: Some(0.1),
            nfr_mc: Some(0.1),
            agreement: Some(0.1),
            delta_accuracy: Some(0.1),
        };
        report.intervals = Intervals {
            nfr: iv,
            pfr: iv,
            nfi: iv,
            pfi: iv,
            btc: iv,
            bec: iv,
            nfr_mc: iv,
            agreement: iv,
            acc_old: iv,
            acc_new: iv,
            delta_accuracy: iv,
        };
        report.noise_floor = Some(NoiseFloor {
            self_flip_rate: 0.01,
            nfr_exceeds_noise: Some(true),
        });
        report.generative = Generative {
            m_g: Some(0.3),
            m_r: Some(0.3),
            output_similarity: Some(0.3),
            identical_outputs: Some(0.3),
        };
        report.sampled = Some(crate::metrics::SampledReport {
            samples: 10,
            temperature: 0.7,
            top_p: 0.95,
            top_k: None,
            n: 4,
            expected_nfr: Some(0.1),
            expected_pfr: Some(0.1),
            intervals: Default::default(),
            reliably_worse: 1,
            reliably_better: 1,
            no_reliable_change: 2,
            greedy_flips: 2,
            greedy_flips_reliable: 1,
            reliable_missed_by_greedy: 1,
        });
        for name in known_gate_metrics() {
            assert!(gate_value(&report, name).is_some(), "{name}");
        }
        assert_eq!(gate_value(&report, "intervals.nfr.upper"), Some(0.2));
        assert_eq!(gate_value(&report, "intervals.nfr.middle"), None);
        assert_eq!(gate_value(&report, "bogus"), None);
    }

    #[test]
    fn validation_reports_every_problem() {
        let checks = [
            check("nfr", None, Some(0.05)),
            check("nfrr", Some(0.0), None),
            check("btc", None, None),
            check("pfr", Some(f64::NAN), Some(f64::INFINITY)),
            check("intervals.nfr.upper", Some(0.5), Some(0.1)),
        ];
        let errors = validate_gate(&checks).unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (1, "metric"),
                (2, "min"),
                (3, "min"),
                (3, "max"),
                (4, "min")
            ]
        );
        assert!(errors[0].message.contains("nfrr") && errors[0].message.contains("btc"));
        assert_eq!(errors[1].to_string(), "gate[2].min: give min, max or both");
        assert_eq!(validate_gate(&checks[..1]), Ok(()));
        assert_eq!(validate_gate(&[]), Ok(()));
    }

    #[test]
    fn gate_check_json() {
        let c: GateCheck = serde_json::from_str(r#"{"metric":"nfr","max":0.05}"#).unwrap();
        assert_eq!(c, check("nfr", None, Some(0.05)));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"metric":"nfr","max":0.05}"#
        );
        assert!(serde_json::from_str::<GateCheck>(r#"{"metric":"nfr","maximum":0.05}"#).is_err());
    }

    #[test]
    fn the_verdict_names_each_failed_check() {
        let check = |metric: &str, min, max, value, passed| GateCheckResult {
            metric: metric.into(),
            min,
            max,
            value,
            passed,
        };
        let gate = GateResult {
            passed: false,
            checks: vec![
                check("nfr", None, Some(0.05), Some(0.15902), false),
                check("btc", Some(0.9), None, Some(0.95), true),
                check("nfi", Some(0.1), None, None, false),
            ],
        };
        assert_eq!(
            gate.verdict(),
            "gate failed: nfr 0.159 > 0.05; nfi undefined (the check needs a value); 2 of 3 checks failed"
        );
        let gate = GateResult {
            passed: true,
            checks: vec![check(
                "counts.negative_flips",
                None,
                Some(300.0),
                Some(235.0),
                true,
            )],
        };
        assert_eq!(gate.verdict(), "gate passed: 1 of 1 checks passed");
        assert_eq!(GateResult::default().verdict(), "gate passed: no checks");
        assert_eq!(short(1234.6), "1235");
        assert_eq!(short(0.000123456), "0.0001235");
    }
}
