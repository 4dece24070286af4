//! How lm-evaluation-harness scores generation tasks: an answer extracted by a regex filter,
//! exact_match after its normalisations, greedy decoding without repeated n-grams, and the
//! presets of the tasks the MUSCLE paper used.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validation::Errors;

/// lm-eval's `regex` filter followed by `take_first`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// Searched in the output (every match, as Python's `re.findall`).
    pub regex: String,
    /// Which match to take: 0 the first, -1 the last.
    #[serde(default)]
    pub group_select: i64,
    /// The answer when nothing matches.
    #[serde(default = "invalid")]
    pub fallback: String,
}

fn invalid() -> String {
    "[invalid]".into()
}

/// exact_match as lm-eval computes it: each regex removed from both texts, then case,
/// punctuation and whitespace as asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExactMatchRules {
    pub ignore_case: bool,
    pub ignore_punctuation: bool,
    pub ignore_whitespace: bool,
    pub regexes_to_ignore: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// lm-eval's gsm8k: stop at "Question:", "</s>", "<|im_end|>"; the strict-match answer
    /// (`#### N`), or flexible-extract's last number with `"filter": "flexible-extract"`;
    /// exact_match ignoring case, ",", "$", everything up to "#### " and a final ".".
    Gsm8k,
    /// The paper's SAMSum: ROUGE-1, greedy with no_repeat_ngram_size 2, stop at "Dialogue:",
    /// "Summary:", "</s>" or a blank line.
    Samsum,
}

pub const GSM8K_STRICT: &str = r"#### (\-?[0-9\.\,]+)";
pub const GSM8K_FLEXIBLE: &str = r"(-?[$0-9.,]{2,})|(-?[0-9]+)";

impl Preset {
    pub fn stop(self) -> Vec<String> {
        let stops: &[&str] = match self {
            Self::Gsm8k => &["Question:", "</s>", "<|im_end|>"],
            Self::Samsum => &["Dialogue:", "Summary:", "</s>", "\n\n"],
        };
        stops.iter().map(|s| s.to_string()).collect()
    }

    pub fn extract(self, filter: Option<&str>) -> Option<Extract> {
        match (self, filter) {
            (Self::Gsm8k, Some("flexible-extract")) => Some(Extract {
                regex: GSM8K_FLEXIBLE.into(),
                group_select: -1,
                fallback: invalid(),
            }),
            (Self::Gsm8k, _) => Some(Extract {
                regex: GSM8K_STRICT.into(),
                group_select: 0,
                fallback: invalid(),
            }),
            (Self::Samsum, _) => None,
        }
    }

    pub fn exact_match(self) -> ExactMatchRules {
        match self {
            Self::Gsm8k => ExactMatchRules {
                ignore_case: true,
                ignore_punctuation: false,
                ignore_whitespace: false,
                regexes_to_ignore: [",", r"\$", "(?s).*#### ", r"\.$"]
                    .map(String::from)
                    .to_vec(),
            },
            Self::Samsum => ExactMatchRules::default(),
        }
    }

    pub fn no_repeat_ngram_size(self) -> u32 {
        match self {
            Self::Gsm8k => 0,
            Self::Samsum => 2,
        }
    }
}

pub(crate) fn check_regex(pattern: &str, field: &str, errors: &mut Errors) {
    if let Err(e) = regex::Regex::new(pattern) {
        errors.add(field, format!("is not a regular expression: {e}"));
    }
}
