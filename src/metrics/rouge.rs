//! ROUGE-1 and ROUGE-L F-measures (beta = 1) on whitespace tokens of lower-cased text.
//!
//! Both texts empty (no tokens) score 1.0: identical outputs are fully similar. One side empty
//! scores 0.0. (The Python `rouge-score` package returns 0.0 for both empty.)

use std::collections::HashMap;

fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// F-measure from an overlap size and the two lengths, with the empty-text rule above.
fn f_measure(overlap: usize, candidate_len: usize, reference_len: usize) -> f64 {
    match (candidate_len, reference_len) {
        (0, 0) => 1.0,
        (0, _) | (_, 0) => 0.0,
        _ if overlap == 0 => 0.0,
        _ => {
            let precision = overlap as f64 / candidate_len as f64;
            let recall = overlap as f64 / reference_len as f64;
            2.0 * precision * recall / (precision + recall)
        }
    }
}

/// ROUGE-1 F: unigram overlap with counts clipped to the smaller side.
pub fn rouge1_f(candidate: &str, reference: &str) -> f64 {
    let cand = tokens(candidate);
    let refs = tokens(reference);
    let mut remaining: HashMap<&str, usize> = HashMap::new();
    for t in &refs {
        *remaining.entry(t.as_str()).or_default() += 1;
    }
    let mut overlap = 0;
    for t in &cand {
        if let Some(left) = remaining.get_mut(t.as_str())
            && *left > 0
        {
            *left -= 1;
            overlap += 1;
        }
    }
    f_measure(overlap, cand.len(), refs.len())
}

/// ROUGE-L F: longest common subsequence of tokens.
pub fn rouge_l_f(candidate: &str, reference: &str) -> f64 {
    let cand = tokens(candidate);
    let refs = tokens(reference);
    f_measure(lcs_len(&cand, &refs), cand.len(), refs.len())
}

/// Length of the longest common subsequence, in O(len(a) * len(b)) time and O(len(b)) space.
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rouge1_hand_computed() {
        // Overlap {the, cat} = 2; P = 2/3, R = 2/4, F = 4/7.
        assert!(close(rouge1_f("The cat sat", "the cat on mat"), 4.0 / 7.0));
        // Clipped counts: "the the the" vs "the cat": overlap 1, P = 1/3, R = 1/2, F = 0.4.
        assert!(close(rouge1_f("the the the", "the cat"), 0.4));
        assert!(close(rouge1_f("a b", "b a"), 1.0));
        assert_eq!(rouge1_f("x y", "z"), 0.0);
    }

    #[test]
    fn rouge_l_hand_computed() {
        // LCS("police killed the gunman", "police kill the gunman") = 3: P = R = 3/4.
        assert!(close(
            rouge_l_f("police killed the gunman", "police kill the gunman"),
            0.75
        ));
        // Order matters for L but not for 1.
        assert!(close(rouge_l_f("a b", "b a"), 0.5));
        // LCS("a b c d e", "a c e") = 3: P = 3/5, R = 1, F = 0.75.
        assert!(close(rouge_l_f("a b c d e", "a c e"), 0.75));
        assert!(close(rouge_l_f("Hello   WORLD\n", "hello world"), 1.0));
    }

    #[test]
    fn empty_texts() {
        assert_eq!(rouge1_f("", ""), 1.0);
        assert_eq!(rouge_l_f("  ", "\n"), 1.0);
        assert_eq!(rouge1_f("", "a"), 0.0);
        assert_eq!(rouge_l_f("a", ""), 0.0);
    }
}
