use crate::metrics::{
    Flip, NoiseFloorInput, Report, ReportOptions, SamplingSettings, TaskKind, classify,
    compute_report_with_changes,
};
use crate::spec::{EvaluationSpec, TaskSpec};
use crate::store::{InstanceFilter, InstanceVerdict, PageRequest, Store, StoreResult};

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
        max_slices: spec.options.max_slices as usize,
        noise_floor: None,
        partial,
        gate: spec.gate.clone(),
        sampling: spec.task.sampling().map(|s| SamplingSettings {
            samples: s.samples,
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
        }),
    }
}

/// The report over every instance stored for the job so far.
pub async fn build_report(
    store: &Store,
    job_id: &str,
    spec: &EvaluationSpec,
    partial: bool,
    warnings: &[String],
) -> StoreResult<Report> {
    Ok(
        build_report_with_verdicts(store, job_id, spec, partial, warnings)
            .await?
            .0,
    )
}

/// The report, and with sampling each instance's reliable change, by dataset index.
pub async fn build_report_with_verdicts(
    store: &Store,
    job_id: &str,
    spec: &EvaluationSpec,
    partial: bool,
    warnings: &[String],
) -> StoreResult<(Report, Vec<InstanceVerdict>)> {
    let kind = task_kind(&spec.task);
    let mut outcomes = Vec::new();
    let mut indices = Vec::new();
    let mut noise = NoiseFloorInput {
        self_flips: 0,
        n: 0,
    };
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
            let outcome = record.outcome();
            if let Some(rerun) = record.old.rerun_score {
                noise.n += 1;
                if classify(kind, outcome.old.score, rerun) == Flip::Negative {
                    noise.self_flips += 1;
                }
            }
            outcomes.push(outcome);
            indices.push(record.idx);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut options = report_options(spec, partial);
    if spec.options.noise_floor {
        options.noise_floor = Some(noise);
    }
    // The bootstrap alone is up to 100,000 resamples: never on an async thread.
    let computed =
        tokio::task::spawn_blocking(move || compute_report_with_changes(kind, &outcomes, &options));
    let (mut report, changes) = match computed.await {
        Ok(computed) => computed,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    };
    report.warnings.extend(warnings.iter().cloned());
    let verdicts = indices
        .into_iter()
        .zip(changes)
        .filter_map(|(idx, change)| {
            change.map(|change| InstanceVerdict {
                idx,
                q_value: change.q_value,
                verdict: change.verdict,
            })
        })
        .collect();
    Ok((report, verdicts))
}
