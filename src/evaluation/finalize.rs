//! The finalize shard of an evaluation: the final report, computed once from every stored
//! instance and stored with the job.

use sha2::{Digest, Sha256};

use super::{EvaluationSummary, alignment_warnings, build_report, chosen_filter, load_recorded};
use crate::models::{FolderKind, Resolver};
use crate::spec::{EvaluationSpec, ModelRef};
use crate::store::{Completion, Document};
use crate::worker::{ShardContext, ShardError, ShardResult};

fn tokenizer_digest(resolver: &Resolver, model: &ModelRef) -> Option<String> {
    let folder = resolver.resolve(&model.model, FolderKind::Model).ok()?;
    let bytes = std::fs::read(folder.join("tokenizer.json")).ok()?;
    Some(hex::encode(Sha256::digest(bytes)))
}

/// Warnings the report carries about the pair of models compared.
pub fn pair_warnings(resolver: &Resolver, spec: &EvaluationSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    let old = spec.old.model().and_then(|m| tokenizer_digest(resolver, m));
    let new = spec.new.model().and_then(|m| tokenizer_digest(resolver, m));
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

pub async fn finalize(
    resolver: &Resolver,
    ctx: &ShardContext,
    spec: &EvaluationSpec,
) -> ShardResult {
    let mut warnings = pair_warnings(resolver, spec);
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
    let report = build_report(
        ctx.store.as_ref(),
        &ctx.claim.fence.job_id,
        spec,
        false,
        &warnings,
    )
    .await?;
    Ok(Completion {
        summary: Some(Document::of(&EvaluationSummary::of(&report))),
        report: Some(Document::of(&report)),
        result: None,
    })
}
