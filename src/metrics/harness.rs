//! lm-evaluation-harness's answer handling for generation: the `regex` + `take_first` filter
//! and exact_match with `regexes_to_ignore`, as its Python code computes them.

use regex::Regex;

use super::{ExactMatchOptions, exact_match};

/// A compiled `regex` filter.
#[derive(Debug, Clone)]
pub struct AnswerFilter {
    regex: Regex,
    group_select: i64,
    fallback: String,
}

impl AnswerFilter {
    pub fn new(pattern: &str, group_select: i64, fallback: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            regex: Regex::new(pattern)?,
            group_select,
            fallback: fallback.to_string(),
        })
    }

    /// As `RegexFilter`: every match as `re.findall` lists it (the whole match without groups,
    /// the group with one, the first non-empty group with several), the `group_select`-th
    /// (negative from the end), stripped; the fallback when there is none.
    pub fn apply(&self, text: &str) -> String {
        let groups = self.regex.captures_len() - 1;
        let matches: Vec<Option<String>> = self
            .regex
            .captures_iter(text)
            .map(|caps| match groups {
                0 => Some(caps[0].to_string()),
                1 => Some(caps.get(1).map_or("", |m| m.as_str()).to_string()),
                _ => (1..=groups)
                    .filter_map(|g| caps.get(g).map(|m| m.as_str()))
                    .find(|m| !m.is_empty())
                    .map(str::to_string),
            })
            .collect();
        let n = matches.len() as i64;
        let index = if self.group_select < 0 {
            n + self.group_select
        } else {
            self.group_select
        };
        if !(0..n).contains(&index) {
            return self.fallback.clone();
        }
        match &matches[index as usize] {
            Some(answer) => answer.trim().to_string(),
            None => self.fallback.clone(),
        }
    }
}

/// exact_match with lm-eval's `regexes_to_ignore` (removed from both texts first).
#[derive(Debug, Clone, Default)]
pub struct HarnessExactMatch {
    ignore: Vec<Regex>,
    options: ExactMatchOptions,
}

impl HarnessExactMatch {
    pub fn new(patterns: &[String], options: ExactMatchOptions) -> Result<Self, regex::Error> {
        Ok(Self {
            ignore: patterns
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            options,
        })
    }

    pub fn score(&self, prediction: &str, reference: &str) -> f64 {
        let strip = |text: &str| {
            self.ignore.iter().fold(text.to_string(), |text, regex| {
                regex.replace_all(&text, "").into_owned()
            })
        };
        exact_match(&strip(prediction), &strip(reference), self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_filters_pick_what_lm_eval_picks() {
        let strict = AnswerFilter::new(r"#### (\-?[0-9\.\,]+)", 0, "[invalid]").unwrap();
        assert_eq!(strict.apply("so 3 + 4 = 7.\n#### 7"), "7");
        assert_eq!(strict.apply("the answer is 7"), "[invalid]");
        let flexible = AnswerFilter::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1, "[invalid]").unwrap();
        assert_eq!(flexible.apply("3 + 4 = 7, then $12.50 left"), "$12.50");
        assert_eq!(flexible.apply("3 + 4 = 7"), "7");
        assert_eq!(flexible.apply("no numbers"), "[invalid]");
        let whole = AnswerFilter::new(r"[A-D]", 5, "?").unwrap();
        assert_eq!(whole.apply("A B"), "?");
    }

    #[test]
    fn regexes_to_ignore_apply_to_both_sides_before_the_flags() {
        let em = HarnessExactMatch::new(
            &[
                ",".into(),
                r"\$".into(),
                "(?s).*#### ".into(),
                r"\.$".into(),
            ],
            ExactMatchOptions {
                ignore_case: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(em.score("1,234", "He had 1234 apples.\n#### 1,234"), 1.0);
        assert_eq!(em.score("$18.", "#### 18"), 1.0);
        assert_eq!(em.score("[invalid]", "#### 18"), 0.0);
    }
}
