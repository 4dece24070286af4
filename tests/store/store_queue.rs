//! The store and queue story, run on SQLite always and on Postgres when
//! MUSCLE_TEST_DATABASE_URL is set.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use muscle::dataset::Item;
use muscle::domain::*;
use muscle::store::*;
use serde_json::json;

use super::helpers::test_databases;

const LEASE: Duration = Duration::from_secs(30);

/// Runs one scenario on every available backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            for db in test_databases().await {
                eprintln!("{} on {}", stringify!($name), db.backend);
                let store = db.store().await;
                scenarios::$name(store).await;
                db.cleanup().await;
            }
        }
    )*};
}

on_every_backend!(
    datasets_round_trip,
    idempotency_key_returns_the_same_job,
    claim_runs_work_then_finalize_and_finishes_the_job,
    concurrent_workers_never_claim_the_same_shard,
    expired_lease_is_reclaimed_and_the_zombie_is_fenced,
    attempts_are_bounded,
    failures_retry_then_fail_the_job,
    cancel_queued_running_and_finished_jobs,
    release_does_not_count_an_attempt,
    job_pages_are_stable_while_jobs_arrive,
    instances_are_stored_once_and_filtered,
);

fn new_job(total: i64, shard_size: u32, max_attempts: u32) -> NewJob {
    NewJob {
        kind: JobKind::Evaluation,
        name: Some("story".into()),
        spec: Document::of(&json!({"task": {"type": "multiple_choice"}})),
        total,
        shards: plan_shards(total, NonZeroU32::new(shard_size).unwrap()),
        max_attempts: NonZeroU32::new(max_attempts).unwrap(),
        idempotency: None,
        callback: None,
        output: None,
    }
}

fn instance(idx: i64, flip: &str, slices: &[&str]) -> InstanceRecord {
    InstanceRecord {
        idx,
        id: format!("q{idx}"),
        flip: flip.parse().unwrap(),
        gold: Some(idx % 2),
        tags: [("topic".to_string(), "physics".to_string())].into(),
        old: serde_json::from_value(json!({"prediction": 1, "correct": true, "scores": [-2.0, -1.0], "output": null, "score": 1.0})).unwrap(),
        new: serde_json::from_value(json!({"prediction": 0, "correct": false, "scores": [-1.0, -2.0], "output": null, "score": 0.0})).unwrap(),
        slices: slices.iter().map(|s| s.to_string()).collect(),
        sampled: None,
    }
}

mod scenarios {
    use super::*;

    pub async fn datasets_round_trip(store: Arc<Store>) {
        let rows: Vec<DatasetRow> = (0..1203)
            .map(|i| {
                let item = Item::MultipleChoice {
                    prompt: format!("p{i}"),
                    choices: vec!["a".into(), "b".into()],
                    answer: (i % 2) as usize,
                    tags: Default::default(),
                };
                DatasetRow::new(i, format!("r{i}"), &item)
            })
            .collect();
        let meta = NewDataset {
            name: "piqa".into(),
            kind: DatasetKind::MultipleChoice,
            sha256: "ab".repeat(32),
        };
        let stored = store
            .insert_dataset(&meta, &mut rows.iter().cloned())
            .await
            .unwrap();
        assert_eq!(stored.rows, 1203);
        let fetched = store.get_dataset(&stored.id).await.unwrap().unwrap();
        assert_eq!(fetched.name, "piqa");
        assert_eq!(fetched.kind, DatasetKind::MultipleChoice);
        assert_eq!(fetched.created_at, stored.created_at);
        let slice = store.dataset_rows(&stored.id, 500, 503).await.unwrap();
        assert_eq!(slice, rows[500..503].to_vec());
        assert!(store.get_dataset("missing").await.unwrap().is_none());

        let second = store
            .insert_dataset(&meta, &mut rows[..1].iter().cloned())
            .await
            .unwrap();
        let page = store
            .list_datasets(PageRequest {
                limit: 1,
                cursor: None,
            })
            .await
            .unwrap();
        assert_eq!(page.items[0].id, second.id, "newest first");
        let page2 = store
            .list_datasets(PageRequest {
                limit: 1,
                cursor: page.next_cursor,
            })
            .await
            .unwrap();
        assert_eq!(page2.items[0].id, stored.id);
        assert!(page2.next_cursor.is_none());
    }

    pub async fn idempotency_key_returns_the_same_job(store: Arc<Store>) {
        let keyed = |hash: &str| {
            let mut job = new_job(10, 5, 3);
            job.idempotency = Some(Idempotency {
                key: "deploy-42".into(),
                request_hash: hash.into(),
            });
            job
        };
        let first = store.create_job(keyed("h1")).await.unwrap();
        assert!(first.created);
        let again = store.create_job(keyed("h1")).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.value.id, first.value.id);
        assert!(matches!(
            store.create_job(keyed("h2")).await,
            Err(StoreError::IdempotencyMismatch)
        ));
        // Concurrent requests with one key create one job.
        let mut handles = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut job = new_job(10, 5, 3);
                job.idempotency = Some(Idempotency {
                    key: "race".into(),
                    request_hash: "h".into(),
                });
                store.create_job(job).await.unwrap()
            }));
        }
        let mut ids = HashSet::new();
        let mut created = 0;
        for handle in handles {
            let result = handle.await.unwrap();
            ids.insert(result.value.id);
            created += usize::from(result.created);
        }
        assert_eq!(ids.len(), 1);
        assert_eq!(created, 1);
    }

    pub async fn claim_runs_work_then_finalize_and_finishes_the_job(store: Arc<Store>) {
        let job = store.create_job(new_job(7, 5, 3)).await.unwrap().value;
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.progress_total, 7);

        let a = store.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(
            (a.shard_kind, a.start, a.end, a.fence.attempt),
            (ShardKind::Work, 0, 5, 1)
        );
        assert_eq!(
            a.spec,
            Document::of(&json!({"task": {"type": "multiple_choice"}}))
        );
        let running = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running.status, JobStatus::Running);
        assert!(running.started_at.is_some());

        let b = store.claim("w2", LEASE).await.unwrap().unwrap();
        assert_eq!((b.start, b.end), (5, 7));
        // The finalize shard waits for both work shards.
        assert!(store.claim("w3", LEASE).await.unwrap().is_none());

        let rows: Vec<_> = (0..5).map(|i| instance(i, "both_correct", &[])).collect();
        assert_eq!(
            store.write_instances(&a.fence, &rows, 5).await.unwrap(),
            LeaseState::Held
        );
        let done = Completion {
            report: None,
            summary: None,
            result: None,
            verdicts: Vec::new(),
        };
        assert_eq!(
            store.complete_shard(&a.fence, &done).await.unwrap(),
            LeaseState::Held
        );
        let progress = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(progress.progress_done, 5);
        assert!(store.claim("w3", LEASE).await.unwrap().is_none());

        assert_eq!(
            store.heartbeat(&b.fence, 2, LEASE).await.unwrap(),
            LeaseState::Held
        );
        let progress = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(progress.progress_done, 7);
        store.complete_shard(&b.fence, &done).await.unwrap();

        let finalize = store.claim("w3", LEASE).await.unwrap().unwrap();
        assert_eq!(finalize.shard_kind, ShardKind::Finalize);
        let report = Document::of(&json!({"n": 7, "partial": false}));
        let completion = Completion {
            report: Some(report.clone()),
            summary: None,
            result: None,
            verdicts: Vec::new(),
        };
        store
            .complete_shard(&finalize.fence, &completion)
            .await
            .unwrap();
        let finished = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(finished.status, JobStatus::Succeeded);
        assert_eq!(finished.report, Some(report));
        assert!(finished.finished_at.is_some());
        assert!(store.claim("w1", LEASE).await.unwrap().is_none());
        // A training job and an evaluation job never share ids' namespaces by kind.
        assert!(
            store
                .get_job(JobKind::Training, &job.id)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn concurrent_workers_never_claim_the_same_shard(store: Arc<Store>) {
        for _ in 0..3 {
            store.create_job(new_job(40, 2, 3)).await.unwrap();
        }
        let mut handles = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut claimed = Vec::new();
                while let Some(claim) = store.claim(&format!("w{w}"), LEASE).await.unwrap() {
                    claimed.push((claim.fence.job_id.clone(), claim.fence.shard));
                    if claim.shard_kind == ShardKind::Work {
                        let done = Completion {
                            report: None,
                            summary: None,
                            result: None,
                            verdicts: Vec::new(),
                        };
                        store.complete_shard(&claim.fence, &done).await.unwrap();
                    } else {
                        let done = Completion {
                            report: Some(Document::of(&json!({}))),
                            summary: None,
                            result: None,
                            verdicts: Vec::new(),
                        };
                        store.complete_shard(&claim.fence, &done).await.unwrap();
                    }
                }
                claimed
            }));
        }
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().cloned().collect();
        assert_eq!(unique.len(), all.len(), "a shard was claimed twice");
        assert_eq!(
            all.len(),
            3 * 21,
            "every work shard and finalize shard ran once"
        );
    }

    pub async fn expired_lease_is_reclaimed_and_the_zombie_is_fenced(store: Arc<Store>) {
        let job = store.create_job(new_job(3, 10, 3)).await.unwrap().value;
        let zombie = store
            .claim("w1", Duration::from_millis(500))
            .await
            .unwrap()
            .unwrap();
        assert!(
            store.claim("w2", LEASE).await.unwrap().is_none(),
            "lease still held"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        let fresh = store.claim("w2", LEASE).await.unwrap().unwrap();
        assert_eq!(fresh.fence.shard, zombie.fence.shard);
        assert_eq!(fresh.fence.attempt, 2);

        let stale_row = vec![instance(0, "negative", &[])];
        assert_eq!(
            store
                .write_instances(&zombie.fence, &stale_row, 1)
                .await
                .unwrap(),
            LeaseState::Lost
        );
        assert!(
            store
                .instance_indices(&job.id, 0, 3)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.heartbeat(&zombie.fence, 1, LEASE).await.unwrap(),
            LeaseState::Lost
        );
        let done = Completion {
            report: None,
            summary: None,
            result: None,
            verdicts: Vec::new(),
        };
        assert_eq!(
            store.complete_shard(&zombie.fence, &done).await.unwrap(),
            LeaseState::Lost
        );
        assert_eq!(
            store
                .fail_shard(&zombie.fence, "boom", false)
                .await
                .unwrap(),
            LeaseState::Lost
        );
        let job_now = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            job_now.status,
            JobStatus::Running,
            "the zombie's failure changed nothing"
        );

        let rows: Vec<_> = (0..3).map(|i| instance(i, "both_wrong", &[])).collect();
        assert_eq!(
            store.write_instances(&fresh.fence, &rows, 3).await.unwrap(),
            LeaseState::Held
        );
        assert_eq!(
            store.complete_shard(&fresh.fence, &done).await.unwrap(),
            LeaseState::Held
        );
    }

    pub async fn attempts_are_bounded(store: Arc<Store>) {
        let job = store.create_job(new_job(3, 10, 2)).await.unwrap().value;
        for attempt in 1..=2 {
            let claim = store
                .claim("w", Duration::from_millis(30))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claim.fence.attempt, attempt);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(store.claim("w", LEASE).await.unwrap().is_none());
        let failed = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        let error = failed.error.unwrap();
        assert!(
            error.contains("shard 0") && error.contains("2 attempts"),
            "{error}"
        );
    }

    pub async fn failures_retry_then_fail_the_job(store: Arc<Store>) {
        let job = store.create_job(new_job(4, 2, 2)).await.unwrap().value;
        let first = store.claim("w", LEASE).await.unwrap().unwrap();
        store
            .fail_shard(&first.fence, "CUDA out of memory", true)
            .await
            .unwrap();
        let retry = store.claim("w", LEASE).await.unwrap().unwrap();
        assert_eq!(retry.fence.shard, first.fence.shard);
        assert_eq!(retry.fence.attempt, 2);
        // Out of attempts: the job fails and its other shards are cancelled.
        store
            .fail_shard(&retry.fence, "CUDA out of memory", true)
            .await
            .unwrap();
        let failed = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("shard 0 failed: CUDA out of memory")
        );
        assert!(store.claim("w", LEASE).await.unwrap().is_none());

        let other = store.create_job(new_job(4, 2, 5)).await.unwrap().value;
        let claim = store.claim("w", LEASE).await.unwrap().unwrap();
        store
            .fail_shard(&claim.fence, "model folder vanished", false)
            .await
            .unwrap();
        let failed = store
            .get_job(JobKind::Evaluation, &other.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        assert!(store.claim("w", LEASE).await.unwrap().is_none());
    }

    pub async fn cancel_queued_running_and_finished_jobs(store: Arc<Store>) {
        let queued = store.create_job(new_job(4, 2, 3)).await.unwrap().value;
        let cancelled = store
            .cancel_job(JobKind::Evaluation, &queued.id)
            .await
            .unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert!(cancelled.finished_at.is_some());
        assert!(store.claim("w", LEASE).await.unwrap().is_none());
        match store.cancel_job(JobKind::Evaluation, &queued.id).await {
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("has finished (cancelled)"))
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(
            store.cancel_job(JobKind::Evaluation, "nope").await,
            Err(StoreError::NotFound(_))
        ));

        let running = store.create_job(new_job(4, 2, 3)).await.unwrap().value;
        let claim = store.claim("w", LEASE).await.unwrap().unwrap();
        store
            .cancel_job(JobKind::Evaluation, &running.id)
            .await
            .unwrap();
        assert_eq!(
            store.heartbeat(&claim.fence, 1, LEASE).await.unwrap(),
            LeaseState::Cancelled
        );
        let rows = vec![instance(0, "tie", &[])];
        assert_eq!(
            store.write_instances(&claim.fence, &rows, 1).await.unwrap(),
            LeaseState::Cancelled
        );
        assert!(store.claim("w", LEASE).await.unwrap().is_none());
        let job = store
            .get_job(JobKind::Evaluation, &running.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.status, JobStatus::Cancelled);
    }

    pub async fn release_does_not_count_an_attempt(store: Arc<Store>) {
        let job = store.create_job(new_job(2, 10, 1)).await.unwrap().value;
        let claim = store.claim("w", LEASE).await.unwrap().unwrap();
        store
            .save_checkpoint(&claim.fence, &Document::of(&json!({"epoch": 2})))
            .await
            .unwrap();
        assert_eq!(
            store.release_shard(&claim.fence).await.unwrap(),
            LeaseState::Held
        );
        let again = store
            .claim("w", LEASE)
            .await
            .unwrap()
            .expect("released work is claimable");
        assert_eq!(again.fence.attempt, 2, "the fencing token still moves on");
        assert_eq!(again.checkpoint, Some(Document::of(&json!({"epoch": 2}))));
        assert_eq!(
            store.release_shard(&claim.fence).await.unwrap(),
            LeaseState::Lost
        );
        let job = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.status, JobStatus::Running);
    }

    pub async fn job_pages_are_stable_while_jobs_arrive(store: Arc<Store>) {
        let mut ids = Vec::new();
        for _ in 0..25 {
            ids.push(store.create_job(new_job(1, 1, 1)).await.unwrap().value.id);
        }
        ids.reverse();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list_jobs(JobFilter {
                    kind: JobKind::Evaluation,
                    status: Some(JobStatus::Queued),
                    name: Some("story".into()),
                    page: PageRequest {
                        limit: 10,
                        cursor: cursor.clone(),
                    },
                })
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|j| j.id.clone()));
            // New jobs arriving between pages do not shift the pages already handed out.
            store.create_job(new_job(1, 1, 1)).await.unwrap();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ids);
        let none = store
            .list_jobs(JobFilter {
                kind: JobKind::Evaluation,
                status: Some(JobStatus::Failed),
                name: None,
                page: PageRequest {
                    limit: 10,
                    cursor: None,
                },
            })
            .await
            .unwrap();
        assert!(none.items.is_empty() && none.next_cursor.is_none());
    }

    pub async fn instances_are_stored_once_and_filtered(store: Arc<Store>) {
        let job = store.create_job(new_job(6, 6, 3)).await.unwrap().value;
        let first = store
            .claim("w1", Duration::from_millis(40))
            .await
            .unwrap()
            .unwrap();
        let rows: Vec<_> = (0..3)
            .map(|i| {
                instance(
                    i,
                    if i == 1 { "negative" } else { "both_correct" },
                    &["answer=1", "topic=physics"],
                )
            })
            .collect();
        store.write_instances(&first.fence, &rows, 3).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The worker died; the next attempt skips what is stored and rewrites nothing twice.
        let second = store.claim("w2", LEASE).await.unwrap().unwrap();
        assert_eq!(second.done, 3);
        assert_eq!(
            store.instance_indices(&job.id, 0, 6).await.unwrap(),
            vec![0, 1, 2]
        );
        let rows: Vec<_> = (0..6)
            .map(|i| {
                instance(
                    i,
                    if i % 2 == 1 { "negative" } else { "positive" },
                    &[if i < 3 { "answer=1" } else { "answer=0" }],
                )
            })
            .collect();
        store
            .write_instances(&second.fence, &rows, 6)
            .await
            .unwrap();

        let all = store
            .list_instances(
                &job.id,
                &InstanceFilter {
                    page: PageRequest {
                        limit: 100,
                        cursor: None,
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.items.len(), 6);
        assert_eq!(
            all.items[1],
            InstanceRecord {
                slices: vec![],
                sampled: None,
                ..rows[1].clone()
            }
        );

        let negatives = store
            .list_instances(
                &job.id,
                &InstanceFilter {
                    flip: Some(muscle::metrics::Flip::Negative),
                    verdict: None,
                    slice: Some("answer=1".into()),
                    page: PageRequest {
                        limit: 100,
                        cursor: None,
                    },
                },
            )
            .await
            .unwrap();
        let ids: Vec<_> = negatives.items.iter().map(|r| r.idx).collect();
        assert_eq!(ids, vec![1]);

        let mut cursor = None;
        let mut paged = Vec::new();
        loop {
            let page = store
                .list_instances(
                    &job.id,
                    &InstanceFilter {
                        page: PageRequest { limit: 4, cursor },
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            paged.extend(page.items.iter().map(|r| r.idx));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, vec![0, 1, 2, 3, 4, 5]);
        let job_now = store
            .get_job(JobKind::Evaluation, &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job_now.progress_done, 6);
    }
}
