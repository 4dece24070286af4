//! `muscle train SPEC.json`: one training run (and, with `evaluate`, its two evaluations)
//! through the same queue, workers and engine as the server, on a private SQLite database.
//!
//! Exit codes: 0 done (and the gate of the evaluation with the trained adapter passed, or no
//! gate), 1 that gate failed, 2 invalid input, 3 runtime failure.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::common::{
    Failure, GATE_FAILED, check_device, load_dataset, private_app, read_spec, refuse_callback,
    store_dataset, wait, with_workers, write_json,
};
use crate::config::TrainArgs;
use crate::domain::{DatasetKind, JobKind, JobStatus};
use crate::metrics::Report;
use crate::models::Resolver;
use crate::spec::{DatasetRef, TrainingSpec, refused_dtypes};
use crate::store::Store;
use crate::train::job::{StoredTraining, check_vocabularies, training_job};
use crate::train::result::TrainingResult;
use crate::train::view::EvaluationsView;
use crate::validation::FieldError;

pub async fn run(args: TrainArgs) -> ExitCode {
    let device = match check_device(&args.common) {
        Ok(device) => device,
        Err(failure) => return failure.report(),
    };
    let mut spec: TrainingSpec = match read_spec(&args.spec) {
        Ok(spec) => spec,
        Err(failure) => return failure.report(),
    };
    let resolver = Resolver::cli(&args.common.model_dir);
    spec.normalize();
    let mut errors = spec.check(&resolver).err().unwrap_or_default();
    errors.extend(check_vocabularies(&spec, &resolver));
    errors.extend(refuse_callback(&spec.callback));
    errors.extend(refused_dtypes(
        [("old", spec.old.as_ref()), ("new", Some(&spec.new))],
        device,
    ));
    if !errors.is_empty() {
        return Failure::Invalid(args.spec.display().to_string(), errors).report();
    }
    execute(&args, spec).await.unwrap_or_else(Failure::report)
}

async fn execute(args: &TrainArgs, mut spec: TrainingSpec) -> Result<ExitCode, Failure> {
    let (app, _scratch) = private_app(&args.common).await?;
    let store = app.store();

    let (name, parsed) = load_dataset(&args.common, &args.spec, &spec.dataset, "dataset").await?;
    let (id, rows) = store_dataset(store.as_ref(), name, &parsed).await?;
    spec.dataset = DatasetRef::Id(id);
    if rows < 2 {
        return Err(Failure::Invalid(
            args.spec.display().to_string(),
            vec![FieldError::field(
                "dataset",
                "needs at least 2 rows to split into training and validation",
            )],
        ));
    }
    if let Some(evaluate) = spec.evaluate.as_mut() {
        let (name, parsed) = load_dataset(
            &args.common,
            &args.spec,
            &evaluate.dataset,
            "evaluate.dataset",
        )
        .await?;
        let want: DatasetKind = evaluate.task.dataset_kind();
        if parsed.kind != want {
            return Err(Failure::Invalid(
                name,
                vec![FieldError::field(
                    "evaluate.task.type",
                    format!(
                        "is {} but the dataset holds {} rows",
                        want.as_str(),
                        parsed.kind.as_str()
                    ),
                )],
            ));
        }
        let (id, _) = store_dataset(store.as_ref(), name, &parsed).await?;
        evaluate.dataset = DatasetRef::Id(id);
    }
    let job = training_job(&StoredTraining::new(spec, rows), app.planning());
    let job = store
        .create_job(job)
        .await
        .context("queueing the training")?
        .value;

    let (result, code) = with_workers(app, follow(store.as_ref(), &job.id)).await?;
    write_json(args.out.as_deref(), &result)?;
    Ok(code)
}

/// Waits for the training and its evaluations; the result JSON and the exit code.
async fn follow(store: &Store, id: &str) -> Result<(Value, ExitCode), Failure> {
    let finished = wait(store, JobKind::Training, id, "steps").await?;
    if finished.status != JobStatus::Succeeded {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the training {}: {}",
            finished.status.as_str(),
            finished.error.unwrap_or_default()
        )));
    }
    let result: TrainingResult = finished
        .read_result()?
        .context("the finished training has no result")?;
    let mut code = ExitCode::SUCCESS;
    // Written as the result with its evaluations read when they finished.
    let mut out = serde_json::to_value(&result).context("the result")?;
    if let Some(queued) = &result.evaluations {
        for (pair, queued) in queued {
            let job = wait(store, JobKind::Evaluation, &queued.id, "instances").await?;
            if job.status != JobStatus::Succeeded {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "the evaluation {} {}: {}",
                    pair.key(),
                    job.status.as_str(),
                    job.error.unwrap_or_default()
                )));
            }
            let report: Report = job
                .read_report()?
                .context("the finished evaluation has no report")?;
            say!("{}: {}", pair.key(), report.gate.verdict());
            if pair.judges_the_adapter() && !report.gate.passed {
                code = ExitCode::from(GATE_FAILED);
            }
        }
        let view = EvaluationsView::read(store, queued)
            .await
            .context("reading the evaluations")?;
        out["evaluations"] = serde_json::to_value(view).context("the evaluations")?;
    }
    Ok((out, code))
}
