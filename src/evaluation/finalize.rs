//! The finalize shard of an evaluation: the final report, computed once from every stored
//! instance and stored with the job.

use sha2::{Digest, Sha256};

use super::EvalRuntime;
use super::{
    EvaluationSummary, alignment_warnings, build_report_with_verdicts, chosen_filter, load_recorded,
};
use crate::endpoint::provenance;
use crate::metrics::{Provenance, SideProvenance};
use crate::models::{FolderKind, Resolver};
use crate::spec::{EvaluationSpec, Side};
use crate::store::{Completion, Document};
use crate::worker::{ShardContext, ShardError, ShardResult};

fn tokenizer_digest(resolver: &Resolver, folder: &str) -> Option<String> {
    let folder = resolver.resolve(folder, FolderKind::Tokenizer).ok()?;
    let bytes = std::fs::read(folder.join("tokenizer.json")).ok()?;
    Some(hex::encode(Sha256::digest(bytes)))
}

/// Warnings the report carries about the pair of models compared.
pub fn pair_warnings(resolver: &Resolver, spec: &EvaluationSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    let old = spec
        .old
        .tokenizer_folder()
        .and_then(|f| tokenizer_digest(resolver, f));
    let new = spec
        .new
        .tokenizer_folder()
        .and_then(|f| tokenizer_digest(resolver, f));
    if let (Some(old), Some(new)) = (old, new)
        && old != new
    {
        warnings.push(
            "old and new tokenizers differ: answers are compared, not token ids, so the \
             evaluation holds, but a compatibility adapter cannot be trained across them"
                .into(),
        );
    }
    warnings
}

/// Where a side's numbers came from; a served side's server is asked now.
async fn side_provenance(runtime: &EvalRuntime, side: &Side) -> SideProvenance {
    match side {
        Side::Model(model) => SideProvenance::Model {
            model: model.model.clone(),
            adapter: model.adapter.clone(),
        },
        Side::Endpoint(e) => SideProvenance::Endpoint(
            provenance(&runtime.endpoints, &runtime.resolver, &e.endpoint).await,
        ),
        Side::Predictions(p) => SideProvenance::Predictions {
            predictions: p.predictions.clone(),
        },
    }
}

/// Warnings about served sides: what their servers may not do as asked.
fn served_warnings(spec: &EvaluationSpec, provenance: &Provenance) -> Vec<String> {
    let mut warnings = Vec::new();
    let no_repeat = spec
        .task
        .generation_rules()
        .is_some_and(|rules| rules.no_repeat_ngram_size > 0);
    for (name, side) in [("old", &provenance.old), ("new", &provenance.new)] {
        let SideProvenance::Endpoint(served) = side else {
            continue;
        };
        if no_repeat {
            warnings.push(format!(
                "{name} is served: no_repeat_ngram_size was sent as lm-evaluation-harness's \
                 local-completions sends it, but OpenAI-compatible servers (vLLM, llama.cpp) \
                 ignore it, so its outputs may repeat n-grams that a local run would not"
            ));
        }
        if let Some(why) = &served.unavailable {
            warnings.push(format!(
                "{name} is served, and its server could not be asked for its provenance when \
                 the report was made: {why}"
            ));
        }
    }
    warnings
}

pub async fn finalize(
    runtime: &EvalRuntime,
    ctx: &ShardContext,
    spec: &EvaluationSpec,
) -> ShardResult {
    let resolver = &runtime.resolver;
    let mut warnings = pair_warnings(resolver, spec);
    let provenance = Provenance {
        old: side_provenance(runtime, &spec.old).await,
        new: side_provenance(runtime, &spec.new).await,
    };
    warnings.extend(served_warnings(spec, &provenance));
    if let (Some(old), Some(new)) = (spec.old.predictions(), spec.new.predictions()) {
        let mut loaded = Vec::new();
        for id in [old, new] {
            let predictions = ctx
                .store
                .get_predictions(id)
                .await?
                .ok_or_else(|| ShardError::fatal(format!("recorded run {id} is gone")))?;
            let filter = chosen_filter(&spec.task, &predictions).map_err(ShardError::fatal)?;
            loaded.push(load_recorded(ctx.store.as_ref(), id, &filter).await?);
        }
        warnings.extend(alignment_warnings(&loaded[0], &loaded[1]));
    }
    let (mut report, verdicts) = build_report_with_verdicts(
        ctx.store.as_ref(),
        &ctx.claim.fence.job_id,
        spec,
        false,
        &warnings,
    )
    .await?;
    report.provenance = Some(provenance);
    Ok(Completion {
        summary: Some(Document::of(&EvaluationSummary::of(&report))),
        report: Some(Document::of(&report)),
        result: None,
        verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_side_with_another_tokenizer_is_warned_of_as_a_folder_is() {
        let root = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("a", "{\"v\": 1}"),
            ("b", "{\"v\": 2}"),
            ("c", "{\"v\": 1}"),
        ] {
            std::fs::create_dir_all(root.path().join(name)).unwrap();
            std::fs::write(root.path().join(name).join("tokenizer.json"), text).unwrap();
        }
        let resolver = Resolver::server(root.path());
        let spec = |tokenizer: &str| -> EvaluationSpec {
            serde_json::from_value(serde_json::json!({
                "old": {"model": "a"},
                "new": {"endpoint": {"url": "http://h:1/v1", "model": "m", "tokenizer": tokenizer}},
                "dataset": "d",
                "task": {"type": "multiple_choice"},
            }))
            .unwrap()
        };
        let warned = pair_warnings(&resolver, &spec("b"));
        assert_eq!(warned.len(), 1);
        assert!(warned[0].contains("tokenizers differ"), "{warned:?}");
        assert!(pair_warnings(&resolver, &spec("c")).is_empty());
    }
}
