//! Exact match with optional normalisation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Normalisations applied to both texts before comparing, in this order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExactMatchOptions {
    /// Compare lower-cased text.
    pub ignore_case: bool,
    /// Drop ASCII punctuation (Python's `string.punctuation`).
    pub ignore_punctuation: bool,
    /// Trim both ends and treat each run of whitespace as one space.
    pub ignore_whitespace: bool,
}

fn normalise(text: &str, options: ExactMatchOptions) -> String {
    let mut s = if options.ignore_case {
        text.to_lowercase()
    } else {
        text.to_owned()
    };
    if options.ignore_punctuation {
        s.retain(|c| !c.is_ascii_punctuation());
    }
    if options.ignore_whitespace {
        s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    s
}

/// 1.0 when the normalised texts are equal, else 0.0.
pub fn exact_match(candidate: &str, reference: &str, options: ExactMatchOptions) -> f64 {
    if normalise(candidate, options) == normalise(reference, options) {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: ExactMatchOptions = ExactMatchOptions {
        ignore_case: false,
        ignore_punctuation: false,
        ignore_whitespace: false,
    };

    #[test]
    fn strict_by_default() {
        assert_eq!(exact_match("Paris", "Paris", NONE), 1.0);
        assert_eq!(exact_match("Paris", "paris", NONE), 0.0);
        assert_eq!(exact_match("Paris.", "Paris", NONE), 0.0);
        assert_eq!(exact_match(" Paris", "Paris", NONE), 0.0);
        assert_eq!(ExactMatchOptions::default(), NONE);
    }

    #[test]
    fn each_normalisation() {
        let case = ExactMatchOptions {
            ignore_case: true,
            ..NONE
        };
        assert_eq!(exact_match("PaRis", "paris", case), 1.0);
        let punct = ExactMatchOptions {
            ignore_punctuation: true,
            ..NONE
        };
        assert_eq!(exact_match("\"42\"!", "42", punct), 1.0);
        assert_eq!(exact_match("4,2", "4 2", punct), 0.0);
        let ws = ExactMatchOptions {
            ignore_whitespace: true,
            ..NONE
        };
        assert_eq!(exact_match("  new\t york \n", "new york", ws), 1.0);
        assert_eq!(exact_match("newyork", "new york", ws), 0.0);
        let all = ExactMatchOptions {
            ignore_case: true,
            ignore_punctuation: true,
            ignore_whitespace: true,
        };
        assert_eq!(
            exact_match(" The  answer , is: B ", "the answer is b", all),
            1.0
        );
    }

    #[test]
    fn options_json_defaults() {
        let o: ExactMatchOptions = serde_json::from_str(r#"{"ignore_case":true}"#).unwrap();
        assert_eq!(
            o,
            ExactMatchOptions {
                ignore_case: true,
                ..NONE
            }
        );
    }
}
