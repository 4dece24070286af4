//! The shipped model update (examples/model-update): the folders parse, the adapters apply to
//! their bases, and a quick evaluation on the first test items gives what the regeneration
//! program recorded in `expected.json` (accuracy per model and negative flips old -> new).

use std::path::PathBuf;

use muscle::dataset::Item;

use super::helpers::repo;

/// The regeneration program's own scoring, so the test checks what the program recorded the
/// same way it was computed.
#[path = "../../examples/model_update/score.rs"]
#[allow(dead_code)]
mod score;

fn root() -> PathBuf {
    repo().join("examples/model-update")
}

fn correct(base: &str, adapter: &str, items: &[Item]) -> Vec<bool> {
    score::correct(&root().join(base), Some(&root().join(adapter)), items)
        .expect("the shipped model loads and scores")
}

#[test]
fn shipped_models_reproduce_the_recorded_subset_evaluation() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("expected.json")).unwrap())
            .unwrap();
    let n = expected["items"].as_u64().unwrap() as usize;
    let text = std::fs::read_to_string(root().join("test.jsonl")).unwrap();
    let items: Vec<Item> = text
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), n);
    let old = correct("old-base", "old-task", &items);
    for (name, base) in [
        ("old-task", "old-base"),
        ("new-task", "new-base"),
        ("new-compat", "new-base"),
        ("new-ce-control", "new-base"),
    ] {
        let c = if name == "old-task" {
            old.clone()
        } else {
            correct(base, name, &items)
        };
        let acc = c.iter().filter(|x| **x).count();
        let nf = old.iter().zip(&c).filter(|(o, n)| **o && !**n).count();
        let want = &expected["models"][name];
        let (want_acc, want_nf) = (
            want["correct"].as_u64().unwrap(),
            want["nf"].as_u64().unwrap(),
        );
        // Two instances of slack for float summation order on another CPU.
        assert!(
            acc.abs_diff(want_acc as usize) <= 2 && nf.abs_diff(want_nf as usize) <= 2,
            "{name}: {acc} correct and {nf} negative flips, recorded {want_acc} and {want_nf}"
        );
    }
}
