use crate::metrics::{Report, ReportOptions, TaskKind, compute_report};
use crate::spec::{EvaluationSpec, TaskSpec};
use crate::store::{InstanceFilter, PageRequest, Store, StoreError, StoreResult};

const PAGE: i64 = 5000;

pub fn task_kind(task: &TaskSpec) -> TaskKind {
    match task {
        TaskSpec::MultipleChoice { .. } => TaskKind::MultipleChoice,
        TaskSpec::Generation { tolerance, .. } => TaskKind::Generation {
            tolerance: *tolerance,
        },
    }
}

pub fn report_options(spec: &EvaluationSpec, partial: bool) -> ReportOptions {
    ReportOptions {
        bootstrap_resamples: spec.options.bootstrap_resamples as usize,
        seed: spec.options.seed,
        min_slice_size: spec.options.min_slice_size,
        noise_floor: None,
        partial,
        gate: spec.gate.clone(),
    }
}

/// The report over every instance stored for the job so far.
pub async fn build_report(
    store: &dyn Store,
    job_id: &str,
    spec: &EvaluationSpec,
    partial: bool,
    warnings: &[String],
) -> StoreResult<Report> {
    let mut outcomes = Vec::new();
    let mut cursor = None;
    loop {
        let filter = InstanceFilter {
            page: PageRequest {
                limit: PAGE,
                cursor,
            },
            ..Default::default()
        };
        let page = store.list_instances(job_id, &filter).await?;
        for record in &page.items {
            let outcome = super::outcome_of(record).ok_or_else(|| {
                StoreError::Corrupt(format!("instance {} of job {job_id}", record.id))
            })?;
            outcomes.push(outcome);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut report = compute_report(
        task_kind(&spec.task),
        &outcomes,
        &report_options(spec, partial),
    );
    report.warnings.extend(warnings.iter().cloned());
    Ok(report)
}
