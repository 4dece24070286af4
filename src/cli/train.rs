//! `muscle train SPEC.json`: one training run (and, with `evaluate`, its two evaluations)
//! through the same queue, workers and engine as the server, on a private SQLite database.
//!
//! Exit codes: 0 done (and the gate of the evaluation with the trained adapter passed, or no
//! gate), 1 that gate failed, 2 invalid input, 3 runtime failure.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::app::{App, Settings};
use crate::config::{QueueArgs, TrainArgs};
use crate::dataset::{ParsedDataset, parse_jsonl};
use crate::models::Resolver;
use crate::spec::{DatasetRef, TrainingSpec, parse_body};
use crate::store::{self, DatasetKind, Job, JobKind, JobStatus, NewDataset, NewJob, Store};
use crate::train::job::{check_vocabularies, training_job};
use crate::validation::FieldError;

const INVALID: u8 = 2;
const FAILED: u8 = 3;

fn print_invalid(source: &str, errors: &[FieldError]) -> ExitCode {
    for error in errors {
        match error.line {
            Some(line) => eprintln!("{source}: line {line}: {}: {}", error.field, error.message),
            None => eprintln!("{source}: {}: {}", error.field, error.message),
        }
    }
    ExitCode::from(INVALID)
}

enum Failure {
    Invalid(String, Vec<FieldError>),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Runtime(error)
    }
}

pub async fn run(args: TrainArgs) -> ExitCode {
    let source = args.spec.display().to_string();
    let bytes = match std::fs::read(&args.spec) {
        Ok(bytes) => bytes,
        Err(e) => return print_invalid(&source, &[FieldError::field("(file)", e.to_string())]),
    };
    let spec: TrainingSpec = match parse_body(&bytes) {
        Ok(spec) => spec,
        Err(errors) => return print_invalid(&source, &errors),
    };
    let resolver = Resolver::cli(&args.common.model_dir);
    let mut errors = spec.check(&resolver).err().unwrap_or_default();
    errors.extend(check_vocabularies(&spec, &resolver));
    if !errors.is_empty() {
        return print_invalid(&source, &errors);
    }
    match execute(&args, spec).await {
        Ok(code) => code,
        Err(Failure::Invalid(source, errors)) => print_invalid(&source, &errors),
        Err(Failure::Runtime(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(FAILED)
        }
    }
}

async fn load_dataset(
    args: &TrainArgs,
    dataset: &DatasetRef,
    field: &str,
) -> Result<(String, ParsedDataset), Failure> {
    let invalid = |message: String| {
        Failure::Invalid(
            args.spec.display().to_string(),
            vec![FieldError::field(field, message)],
        )
    };
    match dataset {
        DatasetRef::Path { path } => {
            let bytes = std::fs::read(path).map_err(|e| invalid(format!("{path}: {e}")))?;
            let parsed =
                parse_jsonl(&bytes).map_err(|errors| Failure::Invalid(path.clone(), errors))?;
            Ok((path.clone(), parsed))
        }
        DatasetRef::Id(id) => {
            let url = args.common.database_url();
            let server = store::connect(&url)
                .await
                .with_context(|| format!("opening {}", store::redact(&url)))?;
            let Some(found) = server
                .get_dataset(id)
                .await
                .context("reading the dataset")?
            else {
                return Err(invalid(format!(
                    "no dataset with id {id:?} in {}",
                    store::redact(&url)
                )));
            };
            let rows = server
                .dataset_rows(id, 0, found.rows)
                .await
                .context("reading the dataset rows")?;
            Ok((
                found.name,
                ParsedDataset {
                    kind: found.kind,
                    rows,
                    sha256: found.sha256,
                },
            ))
        }
    }
}

/// Stores the dataset in the private database and returns its id and row count.
async fn store_dataset(
    store: &dyn Store,
    name: String,
    parsed: &ParsedDataset,
) -> anyhow::Result<(String, i64)> {
    let dataset = store
        .insert_dataset(
            &NewDataset {
                name,
                kind: parsed.kind,
                sha256: parsed.sha256.clone(),
            },
            &parsed.rows,
        )
        .await
        .context("storing the dataset")?;
    Ok((dataset.id, dataset.rows))
}

async fn wait(store: &dyn Store, kind: JobKind, id: &str) -> anyhow::Result<Job> {
    loop {
        let job = store.get_job(kind, id).await?.context("the job vanished")?;
        if job.status.is_finished() {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn execute(args: &TrainArgs, mut spec: TrainingSpec) -> Result<ExitCode, Failure> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let queue = QueueArgs {
        lease_seconds: 60,
        max_attempts: 1,
        poll_ms: 50,
        shard_size: 500,
    };
    let mut settings = Settings::from_common(&args.common, &queue, 1)?;
    settings.database_url = format!("sqlite://{}", scratch.path().join("train.db").display());
    settings.data_dir = scratch.path().to_path_buf();
    settings.allow_model_paths = true;
    let app = App::build(settings).await?;
    let store = app.store();

    let (name, parsed) = load_dataset(args, &spec.dataset, "dataset").await?;
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
        let (name, parsed) = load_dataset(args, &evaluate.dataset, "evaluate.dataset").await?;
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
    let (stored, total, shards) = training_job(&spec, rows);
    let job = store
        .create_job(NewJob {
            kind: JobKind::Training,
            name: spec.name.clone(),
            spec: stored,
            total,
            shards,
            max_attempts: 1,
            idempotency: None,
        })
        .await
        .context("queueing the training")?
        .value;

    let stop = tokio_util::sync::CancellationToken::new();
    let runner = {
        let stop = stop.clone();
        tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }))
    };
    let outcome = follow(store.as_ref(), &job.id).await;
    stop.cancel();
    let _ = runner.await;
    let (result, code) = outcome?;
    let text = serde_json::to_string_pretty(&result).context("result")? + "\n";
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing the result")?,
    }
    Ok(code)
}

/// Waits for the training and its evaluations; the result JSON and the exit code.
async fn follow(store: &dyn Store, id: &str) -> Result<(Value, ExitCode), Failure> {
    let finished = wait(store, JobKind::Training, id).await?;
    if finished.status != JobStatus::Succeeded {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the training {}: {}",
            finished.status.as_str(),
            finished.error.unwrap_or_default()
        )));
    }
    let mut result = finished
        .result
        .context("the finished training has no result")?;
    let mut code = ExitCode::SUCCESS;
    if let Some(evaluations) = result["evaluations"].as_object().cloned() {
        for (key, entry) in &evaluations {
            let Some(eval_id) = entry["id"].as_str() else {
                continue;
            };
            let job = wait(store, JobKind::Evaluation, eval_id).await?;
            if job.status != JobStatus::Succeeded {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "the evaluation {key} {}: {}",
                    job.status.as_str(),
                    job.error.unwrap_or_default()
                )));
            }
            let trained = key == "old_vs_compat" || key == "before_vs_after";
            let passed = job
                .report
                .as_ref()
                .and_then(|r| r["gate"]["passed"].as_bool())
                .unwrap_or(false);
            if trained && !passed {
                code = ExitCode::from(1);
            }
        }
        result["evaluations"] = crate::train::view::evaluations_view(store, &result["evaluations"])
            .await
            .context("reading the evaluations")?;
    }
    Ok((result, code))
}
