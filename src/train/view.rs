//! The evaluations of a finished training as GET /v1/trainings/{id} shows them: each one's
//! status and headline numbers, read from the evaluation jobs at request time, and the change
//! in nfr and accuracy between them.

use serde_json::{Map, Value, json};

use crate::store::{JobKind, Store, StoreResult};

/// Headline numbers of an evaluation report.
pub fn headline(report: &Value) -> Value {
    json!({
        "n": report["n"],
        "accuracy_old": report["old"]["accuracy"],
        "accuracy_new": report["new"]["accuracy"],
        "nfr": report["metrics"]["nfr"],
        "negative_flips": report["counts"]["negative_flips"],
        "positive_flips": report["counts"]["positive_flips"],
        "mcnemar_p": report["mcnemar"]["p_value"],
        "gate_passed": report["gate"]["passed"],
    })
}

/// `evaluations` of a training result (`{"key": {"id"}}`) with status and numbers filled in.
pub async fn evaluations_view(store: &dyn Store, evaluations: &Value) -> StoreResult<Value> {
    let Some(entries) = evaluations.as_object() else {
        return Ok(evaluations.clone());
    };
    let mut out = Map::new();
    for (key, entry) in entries {
        let Some(id) = entry["id"].as_str() else {
            continue;
        };
        let mut view = json!({"id": id, "status": "missing"});
        if let Some(job) = store.get_job(JobKind::Evaluation, id).await? {
            view["status"] = json!(job.status.as_str());
            if let Some(report) = &job.report {
                view["headline"] = headline(report);
            }
            if let Some(error) = &job.error {
                view["error"] = json!(error);
            }
        }
        out.insert(key.clone(), view);
    }
    if let (Some(before), Some(after)) = (out.get("old_vs_new"), out.get("old_vs_compat")) {
        let (b, a) = (before["headline"].clone(), after["headline"].clone());
        if let (Some(nb), Some(na)) = (b["nfr"].as_f64(), a["nfr"].as_f64()) {
            let relative = if nb > 0.0 {
                json!((na - nb) / nb)
            } else {
                Value::Null
            };
            out.insert(
                "nfr_change".into(),
                json!({"absolute": na - nb, "relative": relative}),
            );
        }
        if let (Some(ab), Some(aa)) = (b["accuracy_new"].as_f64(), a["accuracy_new"].as_f64()) {
            out.insert("accuracy_change".into(), json!(aa - ab));
        }
    }
    Ok(Value::Object(out))
}
