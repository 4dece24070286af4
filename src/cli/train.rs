//! `muscle train SPEC.json`: one training run (and, with `evaluate`, its two evaluations)
//! through the same queue, workers and engine as the server, on a private SQLite database.
//!
//! Exit codes: 0 done (and the gate of the evaluation with the trained adapter passed, or no
//! gate), 1 that gate failed, 2 invalid input, 3 runtime failure.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::common::{
    Failure, GATE_FAILED, check_settings, cli_submitter, load_dataset, private_app, read_spec,
    store_dataset, wait, with_workers, write_json,
};
use crate::config::TrainArgs;
use crate::domain::{JobKind, JobStatus};
use crate::engine::DeviceSpec;
use crate::kinds::submit;
use crate::metrics::Report;
use crate::models::Resolver;
use crate::spec::TrainingSpec;
use crate::store::Store;
use crate::train::result::TrainingResult;
use crate::train::view::EvaluationsView;

pub async fn run(args: TrainArgs) -> ExitCode {
    let device = match check_settings(&args.common) {
        Ok(device) => device,
        Err(failure) => return failure.report(),
    };
    let spec: TrainingSpec = match read_spec(&args.spec) {
        Ok(spec) => spec,
        Err(failure) => return failure.report(),
    };
    execute(&args, device, spec)
        .await
        .unwrap_or_else(Failure::report)
}

async fn execute(
    args: &TrainArgs,
    device: DeviceSpec,
    mut spec: TrainingSpec,
) -> Result<ExitCode, Failure> {
    let (app, _scratch) = private_app(&args.common).await?;
    let store = app.store();
    // The files (or the server's datasets) the spec names go into the private database first.
    let (name, parsed) = load_dataset(&args.common, &args.spec, &spec.dataset, "dataset").await?;
    spec.dataset = store_dataset(&store, name, &parsed).await?;
    if let Some(evaluate) = spec.evaluate.as_mut() {
        let field = "evaluate.dataset";
        let (name, parsed) =
            load_dataset(&args.common, &args.spec, &evaluate.dataset, field).await?;
        evaluate.dataset = store_dataset(&store, name, &parsed).await?;
    }
    let resolver =
        Resolver::cli(&args.common.model_dir).with_trained_dir(args.common.trained_dir());
    let submitter = cli_submitter(&app, &store, &resolver, Some(device));
    let job = submit::training(&submitter, spec)
        .await
        .map_err(|e| Failure::rejected(args.spec.display().to_string(), e))?;
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
        let view = EvaluationsView::queued(queued)
            .read(store)
            .await
            .context("reading the evaluations")?;
        out["evaluations"] = serde_json::to_value(view).context("the evaluations")?;
    }
    Ok((out, code))
}
