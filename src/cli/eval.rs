//! `muscle eval SPEC.json`: one evaluation through the same queue, workers and engine as the
//! server, on a private SQLite database, with a progress bar on a terminal.
//!
//! Exit codes: 0 done and the gate passed (or no gate), 1 the gate failed, 2 invalid input,
//! 3 runtime failure.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::common::{
    Failure, GATE_FAILED, check_settings, cli_submitter, load_dataset, private_app, read_spec,
    store_dataset, wait, with_workers, write_json,
};
use crate::config::EvalArgs;
use crate::domain::{JobKind, JobStatus};
use crate::engine::DeviceSpec;
use crate::evaluation::{InstanceView, inputs_of};
use crate::kinds::submit;
use crate::metrics::Report;
use crate::models::Resolver;
use crate::spec::EvaluationSpec;
use crate::store::{InstanceFilter, Job, NewJob, PageRequest, Store};

pub async fn run(args: EvalArgs) -> ExitCode {
    let device = match check_settings(&args.common) {
        Ok(device) => device,
        Err(failure) => return failure.report(),
    };
    let spec: EvaluationSpec = match read_spec(&args.spec) {
        Ok(spec) => spec,
        Err(failure) => return failure.report(),
    };
    execute(&args, device, spec)
        .await
        .unwrap_or_else(Failure::report)
}

async fn execute(
    args: &EvalArgs,
    device: DeviceSpec,
    mut spec: EvaluationSpec,
) -> Result<ExitCode, Failure> {
    let Some(dataset) = spec.dataset.clone() else {
        return Err(Failure::invalid_field(
            &args.spec,
            "dataset",
            "is required (`muscle compare OLD NEW` compares two recorded runs)",
        ));
    };
    if spec.old.predictions().is_some() || spec.new.predictions().is_some() {
        return Err(Failure::invalid_field(
            &args.spec,
            "old",
            "recorded runs are compared by `muscle compare OLD NEW` or through the server",
        ));
    }
    let (app, _scratch) = private_app(&args.common).await?;
    let store = app.store();
    let (source, rows) = load_dataset(&args.common, &args.spec, &dataset, "dataset").await?;
    spec.dataset = Some(store_dataset(&store, source, &rows).await?);
    let resolver =
        Resolver::cli(&args.common.model_dir).with_trained_dir(args.common.trained_dir());
    let submitter = cli_submitter(&app, &store, &resolver, Some(device));
    let job = submit::evaluation(&submitter, spec)
        .await
        .map_err(|e| Failure::rejected(args.spec.display().to_string(), e))?;
    run_evaluation(app, job, args.out.as_deref(), args.instances.as_deref()).await
}

/// Queues the evaluation on the private app, runs it, writes the report and instances, and
/// says the verdict.
pub(super) async fn run_evaluation(
    app: crate::app::App,
    job: NewJob,
    out: Option<&std::path::Path>,
    instances: Option<&std::path::Path>,
) -> Result<ExitCode, Failure> {
    let store = app.store();
    let job = store
        .create_job(job)
        .await
        .context("queueing the evaluation")?
        .value;

    let finished = with_workers(
        app,
        wait(store.as_ref(), JobKind::Evaluation, &job.id, "instances"),
    )
    .await?;
    if finished.status != JobStatus::Succeeded {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the evaluation {}: {}",
            finished.status.as_str(),
            finished.error.unwrap_or_default()
        )));
    }
    let report: Report = finished
        .read_report()?
        .context("the finished job has no report")?;
    write_json(out, &report)?;
    if let Some(path) = instances {
        write_instances(store.as_ref(), &finished, path).await?;
    }
    let gate = &report.gate;
    // On stderr, so that a pipeline sees why it exits 1 also when the report goes to --out.
    say!("{}", gate.verdict());
    Ok(if gate.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(GATE_FAILED)
    })
}

async fn write_instances(store: &Store, job: &Job, path: &std::path::Path) -> anyhow::Result<()> {
    let spec: EvaluationSpec = job.read_spec()?;
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
        let page = store.list_instances(&job.id, &filter).await?;
        let mut inputs = inputs_of(store, &spec, &page.items).await?;
        for record in page.items {
            let input = inputs.remove(&record.idx);
            serde_json::to_writer(&mut out, &InstanceView::of(record, input))?;
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
