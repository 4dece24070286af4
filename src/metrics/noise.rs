//! Noise floor: flips between two runs of the same (old) model are not regressions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::intervals::Interval;
use super::rates::ratio;

/// The old model run twice (e.g. another batch size or order) on `n` instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoiseFloorInput {
    /// Instances right in the first run and wrong in the second (the re-run's negative flips).
    pub self_flips: u64,
    pub n: u64,
}

/// The report's `noise_floor` object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NoiseFloor {
    /// self_flips / n of the re-run.
    pub self_flip_rate: f64,
    /// True when the Wilson 95% lower bound of nfr is above `self_flip_rate`, i.e. the new
    /// model's negative flips are unlikely to be run-to-run noise alone; null when nfr is null.
    pub nfr_exceeds_noise: Option<bool>,
}

/// The noise floor, or an explanation of why the input cannot give one.
pub(crate) fn noise_floor(
    input: NoiseFloorInput,
    nfr_interval: Option<Interval>,
) -> Result<NoiseFloor, String> {
    if input.self_flips > input.n {
        return Err(format!(
            "noise floor ignored: self_flips ({}) exceeds n ({})",
            input.self_flips, input.n
        ));
    }
    let self_flip_rate =
        ratio(input.self_flips, input.n).ok_or("noise floor ignored: its n is 0")?;
    Ok(NoiseFloor {
        self_flip_rate,
        nfr_exceeds_noise: nfr_interval.map(|iv| iv.lower > self_flip_rate),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeds_when_the_lower_bound_is_above_the_rate() {
        let iv = Interval {
            lower: 0.05,
            upper: 0.09,
        };
        let nf = noise_floor(
            NoiseFloorInput {
                self_flips: 4,
                n: 100,
            },
            Some(iv),
        )
        .unwrap();
        assert_eq!(
            nf,
            NoiseFloor {
                self_flip_rate: 0.04,
                nfr_exceeds_noise: Some(true)
            }
        );
        let nf = noise_floor(
            NoiseFloorInput {
                self_flips: 5,
                n: 100,
            },
            Some(iv),
        )
        .unwrap();
        assert_eq!(nf.nfr_exceeds_noise, Some(false));
        let nf = noise_floor(
            NoiseFloorInput {
                self_flips: 5,
                n: 100,
            },
            None,
        )
        .unwrap();
        assert_eq!(nf.nfr_exceeds_noise, None);
    }

    #[test]
    fn invalid_inputs_are_explained() {
        assert!(
            noise_floor(
                NoiseFloorInput {
                    self_flips: 0,
                    n: 0
                },
                None
            )
            .is_err()
        );
        assert!(
            noise_floor(
                NoiseFloorInput {
                    self_flips: 3,
                    n: 2
                },
                None
            )
            .is_err()
        );
    }
}
