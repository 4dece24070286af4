//! `muscle compare OLD NEW`: two recorded lm-eval runs through the same queue, report and gate
//! as an evaluation, on a private database.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::common::{Failure, cli_submitter, private_app};
use super::eval::run_evaluation;
use crate::config::CompareArgs;
use crate::kinds::submit::{self, Rejected};
use crate::lmeval::{SamplesKind, parse_samples, recorded_rows};
use crate::metrics::GateCheck;
use crate::models::Resolver;
use crate::spec::{
    EvalOptions, EvaluationSpec, GenerationMetric, McScore, PredictionsRef, Side, TaskSpec,
    check_gate,
};
use crate::store::{NewPredictions, Store};
use crate::validation::{Errors, FieldError};

pub async fn run(args: CompareArgs) -> ExitCode {
    execute(&args).await.unwrap_or_else(Failure::report)
}

async fn store_run(store: &Store, path: &Path) -> Result<(String, SamplesKind), Failure> {
    let body = std::fs::read(path).map_err(|e| {
        Failure::Invalid(
            path.display().to_string(),
            vec![FieldError::field("(file)", e.to_string())],
        )
    })?;
    let file = parse_samples(&body)
        .map_err(|errors| Failure::Invalid(path.display().to_string(), errors))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "samples".into());
    let kind = file.kind;
    let stored = store
        .insert_predictions(
            &NewPredictions {
                name,
                format: "lm-eval".into(),
                task: None,
                kind: kind.dataset_kind(),
                filters: file.filters.clone(),
                metrics: file.metrics.clone(),
                model: None,
                sha256: hex::encode(Sha256::digest(&body)),
            },
            &recorded_rows(&file),
        )
        .await
        .context("storing the recorded run")?;
    Ok((stored.id, kind))
}

fn task(args: &CompareArgs, kind: SamplesKind) -> Result<TaskSpec, Failure> {
    let bad = |message: String| {
        Failure::Invalid(
            "muscle compare".into(),
            vec![FieldError::field("--metric", message)],
        )
    };
    Ok(match kind {
        SamplesKind::MultipleChoice => TaskSpec::MultipleChoice {
            delimiter: " ".into(),
            score: match args.metric.as_deref() {
                None | Some("acc") => McScore::Acc,
                Some("acc_norm") => McScore::AccNorm,
                Some(other) => {
                    return Err(bad(format!(
                        "{other:?}: multiple choice compares acc or acc_norm"
                    )));
                }
            },
        },
        SamplesKind::Generation => TaskSpec::Generation {
            max_new_tokens: 64,
            stop: Vec::new(),
            metric: match args.metric.as_deref() {
                None | Some("exact_match") => GenerationMetric::ExactMatch,
                Some("rouge1") => GenerationMetric::Rouge1,
                Some("rougeL") => GenerationMetric::RougeL,
                Some(other) => {
                    return Err(bad(format!(
                        "{other:?}: generation compares exact_match, rouge1 or rougeL"
                    )));
                }
            },
            tolerance: 0.0,
            ignore_case: false,
            ignore_punctuation: false,
            ignore_whitespace: false,
            filter: args.filter.clone(),
            extract: None,
            exact_match: None,
            no_repeat_ngram_size: 0,
            preset: None,
            sampling: None,
        },
    })
}

async fn execute(args: &CompareArgs) -> Result<ExitCode, Failure> {
    let gate: Vec<GateCheck> = serde_json::from_str(&args.gate).map_err(|e| {
        Failure::Invalid(
            "muscle compare".into(),
            vec![FieldError::field(
                "--gate",
                format!("is not a JSON list of checks: {e}"),
            )],
        )
    })?;
    let mut gate_errors = Errors::default();
    check_gate(&gate, "--gate", &mut gate_errors);
    if !gate_errors.is_empty() {
        return Err(Failure::Invalid("muscle compare".into(), gate_errors.0));
    }
    let (app, _scratch) = private_app(&args.common).await?;
    let store = app.store();
    let (old, old_kind) = store_run(store.as_ref(), &args.old).await?;
    let (new, new_kind) = store_run(store.as_ref(), &args.new).await?;
    if old_kind != new_kind {
        return Err(Failure::Invalid(
            args.new.display().to_string(),
            vec![FieldError::field(
                "(file)",
                format!(
                    "holds {} results but {} holds {} results",
                    new_kind.as_str(),
                    args.old.display(),
                    old_kind.as_str()
                ),
            )],
        ));
    }
    let spec = EvaluationSpec {
        name: Some(format!("{} vs {}", args.old.display(), args.new.display())),
        old: Side::Predictions(PredictionsRef {
            predictions: old.clone(),
        }),
        new: Side::Predictions(PredictionsRef {
            predictions: new.clone(),
        }),
        dataset: None,
        task: task(args, old_kind)?,
        options: EvalOptions {
            slice_by: args.slice_by.clone(),
            ..EvalOptions::default()
        },
        gate,
        callback: None,
    };
    let resolver =
        Resolver::cli(&args.common.model_dir).with_trained_dir(args.common.trained_dir());
    let submitter = cli_submitter(&app, &store, &resolver, None);
    let runs = [(old, args.old.as_path()), (new, args.new.as_path())];
    let job = submit::evaluation(&submitter, spec)
        .await
        .map_err(|e| match e {
            Rejected::Invalid(errors) => {
                Failure::Invalid("muscle compare".into(), in_cli_terms(errors, &runs))
            }
            other => Failure::rejected("muscle compare".into(), other),
        })?;
    run_evaluation(app, job, args.out.as_deref(), args.instances.as_deref()).await
}

/// The submission's errors as the command's user wrote it: `--filter` for `task.filter`, each
/// run by its file rather than its id in the private database, and one error where both files
/// have the same fault.
fn in_cli_terms(errors: Vec<FieldError>, runs: &[(String, &Path); 2]) -> Vec<FieldError> {
    // (the error with both runs' ids replaced by "each run", the error as shown)
    let mut out: Vec<(String, FieldError)> = Vec::new();
    for mut error in errors {
        if error.field == "task.filter" {
            error.field = "--filter".into();
            error.message = error
                .message
                .replace("name one in task.filter", "name one with --filter");
        }
        let mut generic = error.message.clone();
        for (id, path) in runs {
            let named = format!("recorded run {id}");
            generic = generic.replace(&named, "each run");
            error.message = error.message.replace(&named, &path.display().to_string());
        }
        match out
            .iter_mut()
            .find(|(seen, shown)| *seen == generic && shown.field == error.field)
        {
            Some((_, shown)) => shown.message = generic,
            None => out.push((generic, error)),
        }
    }
    out.into_iter().map(|(_, error)| error).collect()
}
