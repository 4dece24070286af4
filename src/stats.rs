//! Prometheus instruments of one process: HTTP traffic, engine throughput, and queue gauges
//! read from the store at scrape time.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::QueueStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub status: String,
}

pub struct Stats {
    registry: Mutex<Registry>,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram>,
    pub instances_scored: Counter,
    pub tokens_scored: Counter,
    pub batch_sizes: Histogram,
    pub shards_finished: Family<JobLabels, Counter>,
    pub reports_computed: Counter,
    pub readiness_probes: Counter,
    jobs: Family<JobLabels, Gauge>,
    shards: Family<ShardLabels, Gauge>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("muscle");
        let http_requests = Family::<RouteLabels, Counter>::default();
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.5, 14))
        });
        let instances_scored = Counter::default();
        let tokens_scored = Counter::default();
        let batch_sizes = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let shards_finished = Family::<JobLabels, Counter>::default();
        let reports_computed = Counter::default();
        let readiness_probes = Counter::default();
        let jobs = Family::<JobLabels, Gauge>::default();
        let shards = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            http_seconds.clone(),
        );
        registry.register(
            "instances_scored",
            "Instances scored by this process's workers (both models)",
            instances_scored.clone(),
        );
        registry.register(
            "tokens_scored",
            "Tokens run through the models by this process's workers",
            tokens_scored.clone(),
        );
        registry.register(
            "batch_size",
            "Sequences per forward pass",
            batch_sizes.clone(),
        );
        registry.register(
            "shards_finished",
            "Shards this process finished, by job kind and outcome",
            shards_finished.clone(),
        );
        registry.register(
            "reports_computed",
            "Reports the API computed from stored instances (running, cancelled or failed jobs)",
            reports_computed.clone(),
        );
        registry.register(
            "readiness_probes",
            "Database write probes /readyz ran (at most one a second)",
            readiness_probes.clone(),
        );
        registry.register("jobs", "Jobs in the store by kind and status", jobs.clone());
        registry.register(
            "queue_shards",
            "Shards waiting (queued) or held by a worker (running), all hosts",
            shards.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            http_requests,
            http_seconds,
            instances_scored,
            tokens_scored,
            batch_sizes,
            shards_finished,
            reports_computed,
            readiness_probes,
            jobs,
            shards,
        }
    }

    /// Feeds `batch_size` and `tokens_scored` from the engine's forward batches.
    pub fn batch_observer(&self) -> crate::engine::BatchObserver {
        let (tokens, sizes) = (self.tokens_scored.clone(), self.batch_sizes.clone());
        crate::engine::BatchObserver(std::sync::Arc::new(move |rows, n| {
            sizes.observe(rows as f64);
            tokens.inc_by(n as u64);
        }))
    }

    /// The Prometheus text exposition, with the queue gauges set from `queue`.
    pub fn render(&self, queue: &QueueStats) -> String {
        self.jobs.clear();
        for (kind, status, count) in &queue.jobs {
            self.jobs
                .get_or_create(&JobLabels {
                    kind: kind.as_str().into(),
                    status: status.as_str().into(),
                })
                .set(*count);
        }
        for (status, count) in [
            ("queued", queue.queued_shards),
            ("running", queue.running_shards),
        ] {
            self.shards
                .get_or_create(&ShardLabels {
                    status: status.into(),
                })
                .set(count);
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobKind, JobStatus};

    #[test]
    fn renders_queue_gauges_and_counters() {
        let stats = Stats::new();
        stats.instances_scored.inc_by(42);
        let text = stats.render(&QueueStats {
            jobs: vec![(JobKind::Evaluation, JobStatus::Queued, 3)],
            queued_shards: 7,
            running_shards: 1,
        });
        assert!(
            text.contains("muscle_jobs{kind=\"evaluation\",status=\"queued\"} 3"),
            "{text}"
        );
        assert!(text.contains("muscle_queue_shards{status=\"queued\"} 7"));
        assert!(text.contains("muscle_instances_scored_total 42"));
        assert!(text.ends_with("# EOF\n"));
    }
}
