//! The finalize shard of an evaluation: the final report, computed once from every stored
//! instance and stored with the job.

use sha2::{Digest, Sha256};

use super::build_report;
use crate::models::{FolderKind, Resolver};
use crate::spec::{EvaluationSpec, ModelRef};
use crate::store::Completion;
use crate::worker::{ShardContext, ShardError, ShardResult};

fn tokenizer_digest(resolver: &Resolver, model: &ModelRef) -> Option<String> {
    let folder = resolver.resolve(&model.model, FolderKind::Model).ok()?;
    let bytes = std::fs::read(folder.join("tokenizer.json")).ok()?;
    Some(hex::encode(Sha256::digest(bytes)))
}

/// Warnings the report carries about the pair of models compared.
pub fn pair_warnings(resolver: &Resolver, spec: &EvaluationSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    let old = tokenizer_digest(resolver, &spec.old);
    let new = tokenizer_digest(resolver, &spec.new);
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

pub async fn finalize(resolver: &Resolver, ctx: &ShardContext) -> ShardResult {
    let spec: EvaluationSpec = serde_json::from_value(ctx.claim.spec.clone())
        .map_err(|e| ShardError::fatal(format!("stored spec does not parse: {e}")))?;
    let warnings = pair_warnings(resolver, &spec);
    let report = build_report(
        ctx.store.as_ref(),
        &ctx.claim.fence.job_id,
        &spec,
        false,
        &warnings,
    )
    .await?;
    let report = serde_json::to_value(report)
        .map_err(|e| ShardError::fatal(format!("report does not serialise: {e}")))?;
    Ok(Completion {
        report: Some(report),
        result: None,
    })
}
