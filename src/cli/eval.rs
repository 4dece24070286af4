//! `muscle eval SPEC.json`: one evaluation through the same queue, workers and engine as the
//! server, on a private SQLite database, with a progress bar on a terminal.
//!
//! Exit codes: 0 done and the gate passed (or no gate), 1 the gate failed, 2 invalid input,
//! 3 runtime failure.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::app::{App, Settings};
use crate::config::{EvalArgs, QueueArgs};
use crate::dataset::parse_jsonl;
use crate::evaluation::InstanceView;
use crate::models::Resolver;
use crate::spec::{DatasetRef, EvaluationSpec, parse_body};
use crate::store::{
    self, InstanceFilter, JobKind, JobStatus, NewDataset, NewJob, PageRequest, Store, plan_shards,
};
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

pub async fn run(args: EvalArgs) -> ExitCode {
    let source = args.spec.display().to_string();
    let bytes = match std::fs::read(&args.spec) {
        Ok(bytes) => bytes,
        Err(e) => return print_invalid(&source, &[FieldError::field("(file)", e.to_string())]),
    };
    let spec: EvaluationSpec = match parse_body(&bytes) {
        Ok(spec) => spec,
        Err(errors) => return print_invalid(&source, &errors),
    };
    let resolver = Resolver::cli(&args.common.model_dir);
    if let Err(errors) = spec.check(&resolver) {
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

enum Failure {
    Invalid(String, Vec<FieldError>),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Runtime(error)
    }
}

async fn execute(args: &EvalArgs, mut spec: EvaluationSpec) -> Result<ExitCode, Failure> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let url = format!("sqlite://{}", scratch.path().join("eval.db").display());
    let queue = QueueArgs {
        lease_seconds: 60,
        max_attempts: 1,
        poll_ms: 50,
        shard_size: spec.options.shard_size.unwrap_or(500),
    };
    let mut settings = Settings::from_common(&args.common, &queue, 1)?;
    settings.database_url = url;
    settings.allow_model_paths = true;
    let app = App::build(settings).await?;
    let store = app.store();

    let (dataset_source, rows) = load_dataset(args, &spec).await?;
    if rows.kind != spec.task.dataset_kind() {
        return Err(Failure::Invalid(
            dataset_source,
            vec![FieldError::field(
                "task.type",
                format!(
                    "is {} but the dataset holds {} rows",
                    spec.task.dataset_kind().as_str(),
                    rows.kind.as_str()
                ),
            )],
        ));
    }
    let dataset = store
        .insert_dataset(
            &NewDataset {
                name: dataset_source,
                kind: rows.kind,
                sha256: rows.sha256.clone(),
            },
            &rows.rows,
        )
        .await
        .context("storing the dataset")?;
    spec.dataset = DatasetRef::Id(dataset.id.clone());
    let total = dataset.rows;
    let job = store
        .create_job(NewJob {
            kind: JobKind::Evaluation,
            name: spec.name.clone(),
            spec: serde_json::to_value(&spec).context("spec")?,
            total,
            shards: plan_shards(total, i64::from(queue.shard_size.max(1))),
            max_attempts: 1,
            idempotency: None,
        })
        .await
        .context("queueing the evaluation")?
        .value;

    let stop = tokio_util::sync::CancellationToken::new();
    let runner = {
        let stop = stop.clone();
        tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }))
    };
    let finished = follow(store.as_ref(), &job.id, total).await;
    stop.cancel();
    let _ = runner.await;
    let finished = finished?;
    if finished.status != JobStatus::Succeeded {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the evaluation {}: {}",
            finished.status.as_str(),
            finished.error.unwrap_or_default()
        )));
    }
    let report = finished.report.context("the finished job has no report")?;
    let text = serde_json::to_string_pretty(&report).context("report")? + "\n";
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing the report")?,
    }
    if let Some(path) = &args.instances {
        write_instances(store.as_ref(), &job.id, path).await?;
    }
    let passed = report["gate"]["passed"].as_bool().unwrap_or(false);
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn load_dataset(
    args: &EvalArgs,
    spec: &EvaluationSpec,
) -> Result<(String, crate::dataset::ParsedDataset), Failure> {
    match &spec.dataset {
        DatasetRef::Path { path } => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::Invalid(
                    args.spec.display().to_string(),
                    vec![FieldError::field("dataset.path", format!("{path}: {e}"))],
                )
            })?;
            let parsed =
                parse_jsonl(&bytes).map_err(|errors| Failure::Invalid(path.clone(), errors))?;
            Ok((path.clone(), parsed))
        }
        DatasetRef::Id(id) => {
            // An uploaded dataset lives in the server's database.
            let url = args.common.database_url();
            let server = store::connect(&url)
                .await
                .with_context(|| format!("opening {}", store::redact(&url)))?;
            let Some(dataset) = server
                .get_dataset(id)
                .await
                .context("reading the dataset")?
            else {
                return Err(Failure::Invalid(
                    args.spec.display().to_string(),
                    vec![FieldError::field(
                        "dataset",
                        format!("no dataset with id {id:?} in {}", store::redact(&url)),
                    )],
                ));
            };
            let rows = server
                .dataset_rows(id, 0, dataset.rows)
                .await
                .context("reading the dataset rows")?;
            Ok((
                dataset.name,
                crate::dataset::ParsedDataset {
                    kind: dataset.kind,
                    rows,
                    sha256: dataset.sha256,
                },
            ))
        }
    }
}

/// Waits for the job to finish, drawing a progress bar when stderr is a terminal.
async fn follow(store: &dyn Store, id: &str, total: i64) -> anyhow::Result<store::Job> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total.max(0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} instances ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let bar = Arc::new(bar);
    loop {
        let job = store
            .get_job(JobKind::Evaluation, id)
            .await?
            .context("the job vanished")?;
        if let Some(bar) = bar.as_ref() {
            bar.set_position(job.progress_done.max(0) as u64);
        }
        if job.status.is_finished() {
            if let Some(bar) = bar.as_ref() {
                bar.finish_and_clear();
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn write_instances(
    store: &dyn Store,
    job_id: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut cursor = None;
    loop {
        let filter = InstanceFilter {
            page: PageRequest {
                limit: 1000,
                cursor,
            },
            ..Default::default()
        };
        let page = store.list_instances(job_id, &filter).await?;
        for record in page.items {
            serde_json::to_writer(&mut out, &InstanceView::of(record))?;
            out.write_all(b"\n")?;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.flush()?;
    Ok(())
}
