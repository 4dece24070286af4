//! Reports not stored yet: computed once per job and progress step from the instances stored
//! so far, however many readers ask at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::OnceCell;

use super::{EvaluationSummary, build_report};
use crate::domain::JobStatus;
use crate::metrics::Report;
use crate::spec::EvaluationSpec;
use crate::store::{Document, Job, Store, StoreResult};

/// Reports not stored yet, computed from the instances stored so far: once per job and
/// progress step however many requests ask at once (the first computes, the others wait for
/// it), off the async threads, and kept until the job's progress moves. A cancelled or failed
/// job's report is stored with the job the first time it is computed.
pub struct PartialReports {
    cache: Mutex<ReportCache>,
    computed: Counter,
}

#[derive(Default)]
struct ReportCache {
    entries: HashMap<String, CachedReport>,
    tick: u64,
}

struct CachedReport {
    /// The job's status and progress when it was computed: a cancelled job's report is
    /// computed again (and stored) even when the running job's at the same progress was cached.
    at: (JobStatus, i64),
    last_used: u64,
    report: Arc<OnceCell<Arc<Report>>>,
}

const CACHED_REPORTS: usize = 256;

impl ReportCache {
    /// The cell of `job_id` at status and progress `at`, made empty when there is none or the
    /// job has moved on; the entry used longest ago makes room.
    fn cell(&mut self, job_id: &str, at: (JobStatus, i64)) -> Arc<OnceCell<Arc<Report>>> {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.entries.get_mut(job_id)
            && entry.at == at
        {
            entry.last_used = tick;
            return entry.report.clone();
        }
        if self.entries.len() >= CACHED_REPORTS && !self.entries.contains_key(job_id) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let report = Arc::new(OnceCell::new());
        self.entries.insert(
            job_id.to_string(),
            CachedReport {
                at,
                last_used: tick,
                report: report.clone(),
            },
        );
        report
    }
}

impl PartialReports {
    pub fn new(computed: Counter) -> Self {
        Self {
            cache: Mutex::default(),
            computed,
        }
    }

    /// The job's stored report (succeeded, and cancelled or failed once computed); a partial
    /// one while it runs; None before any instance is stored.
    pub async fn report(&self, store: &Store, job: &Job) -> StoreResult<Option<Arc<Report>>> {
        if let Some(report) = job.read_report()? {
            return Ok(Some(Arc::new(report)));
        }
        if job.status == JobStatus::Succeeded || job.progress_done == 0 {
            return Ok(None);
        }
        let cell = self.lock().cell(&job.id, (job.status, job.progress_done));
        let report = cell
            .get_or_try_init(|| {
                self.computed.inc();
                compute(store, job)
            })
            .await?
            .clone();
        Ok(Some(report))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn compute(store: &Store, job: &Job) -> StoreResult<Arc<Report>> {
    let spec: EvaluationSpec = job.read_spec()?;
    let report = build_report(store, &job.id, &spec, true, &[]).await?;
    // Stored with the job; a reader is answered even when it cannot be stored now (the report
    // then stays in this process's cache only).
    if matches!(job.status, JobStatus::Cancelled | JobStatus::Failed) {
        let summary = Document::of(&EvaluationSummary::of(&report));
        let stored = Document::of(&report);
        if let Err(error) = store.store_final_report(&job.id, &stored, &summary).await {
            tracing::warn!(job = %job.id, %error, "the final report could not be stored");
        }
    }
    Ok(Arc::new(report))
}
