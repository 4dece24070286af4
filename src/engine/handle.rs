//! The engine thread: one OS thread owns the model cache and does all tensor work; async callers
//! talk to it through `EngineHandle` (a bounded command channel with oneshot replies).
//!
//! Cancellation: set `RunOptions::cancel`; the run stops before its next batch with
//! `EngineError::Cancelled`.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::batching::BatchConfig;
use super::cache::{CacheStats, ModelCache};
use super::error::{EngineError, Result};
use super::types::{GenItem, GenResult, McItem, McResult, ModelSpec, RunOptions};
use super::{generate, scoring};
#[cfg(feature = "test-support")]
use {
    super::describe::{ModelDescription, describe},
    super::types::{LlRequest, LlResult},
    std::path::PathBuf,
};

/// Sender of `(request index, result)` pairs as batches finish.
#[cfg(feature = "test-support")]
pub type Progress<T> = Option<mpsc::UnboundedSender<(usize, T)>>;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Memory budget of the model cache in bytes.
    pub cache_bytes: u64,
    /// Use candle's fused kernels (faster, no gradients).
    pub fused: bool,
    /// Default batch limits when a run gives none.
    pub batch: BatchConfig,
    /// Capacity of the command queue; callers wait when it is full.
    pub queue: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 16 << 30,
            fused: true,
            batch: BatchConfig::default(),
            queue: 64,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    #[cfg(feature = "test-support")]
    Loglikelihood(
        ModelSpec,
        Vec<LlRequest>,
        RunOptions,
        Progress<LlResult>,
        Reply<Vec<LlResult>>,
    ),
    MultipleChoice(ModelSpec, Vec<McItem>, RunOptions, Reply<Vec<McResult>>),
    Generate(ModelSpec, Vec<GenItem>, RunOptions, Reply<Vec<GenResult>>),
    #[cfg(feature = "test-support")]
    Describe(PathBuf, Reply<ModelDescription>),
    Preload(ModelSpec, Reply<()>),
    Stats(Reply<CacheStats>),
}

/// Cheap to clone; all clones talk to the same engine thread, which stops when the last is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

#[cfg(feature = "test-support")]
fn send_progress<T: Clone>(p: &Progress<T>) -> impl FnMut(usize, &T) + '_ {
    move |i, r| {
        if let Some(tx) = p {
            let _ = tx.send((i, r.clone()));
        }
    }
}

/// Runs one command's tensor work on the compute pool, turning a panic inside tensor code into
/// an error so the thread survives.
fn guard<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let on_pool = || super::threads::run_on_compute_pool(f);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(on_pool)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(%msg, "engine command panicked");
        Err(EngineError::Panicked(msg))
    })
}

fn run(mut cache: ModelCache, cfg: EngineConfig, mut rx: mpsc::Receiver<Command>) {
    while let Some(cmd) = rx.blocking_recv() {
        let batch = |o: &RunOptions| o.batch.unwrap_or(cfg.batch);
        match cmd {
            #[cfg(feature = "test-support")]
            Command::Loglikelihood(spec, reqs, opts, p, reply) => {
                let r = guard(|| {
                    cache.get(&spec).and_then(|m| {
                        scoring::loglikelihood(
                            &m,
                            &reqs,
                            batch(&opts),
                            &opts,
                            &mut send_progress(&p),
                        )
                    })
                });
                let _ = reply.send(r);
            }
            Command::MultipleChoice(spec, items, opts, reply) => {
                let r = guard(|| {
                    cache
                        .get(&spec)
                        .and_then(|m| scoring::multiple_choice(&m, &items, batch(&opts), &opts))
                });
                let _ = reply.send(r);
            }
            Command::Generate(spec, items, opts, reply) => {
                let r = guard(|| {
                    cache
                        .get(&spec)
                        .and_then(|m| generate::generate(&m, &items, batch(&opts), &opts))
                });
                let _ = reply.send(r);
            }
            #[cfg(feature = "test-support")]
            Command::Describe(path, reply) => {
                let _ = reply.send(guard(|| describe(&path)));
            }
            Command::Preload(spec, reply) => {
                let _ = reply.send(guard(|| cache.get(&spec).map(|_| ())));
            }
            Command::Stats(reply) => {
                let _ = reply.send(Ok(cache.stats()));
            }
        }
    }
    tracing::info!("engine thread stopped");
}

impl EngineHandle {
    /// Starts the engine thread with the standard model loader.
    pub fn spawn(cfg: EngineConfig) -> Result<(Self, JoinHandle<()>)> {
        let cache = ModelCache::new(cfg.cache_bytes, cfg.fused);
        Self::spawn_with_cache(cfg, cache)
    }

    /// Starts the engine thread around a given cache (tests count loads with a custom loader).
    pub fn spawn_with_cache(
        cfg: EngineConfig,
        cache: ModelCache,
    ) -> Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let join = std::thread::Builder::new()
            .name("muscle-engine".into())
            .spawn(move || run(cache, cfg, rx))
            .map_err(|e| EngineError::io("muscle-engine thread", e))?;
        Ok((Self { tx }, join))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        rx.await.map_err(|_| EngineError::EngineStopped)?
    }

    /// Scores loglikelihood requests; `progress` receives `(index, result)` for each as soon as
    /// its batch finishes.
    #[cfg(feature = "test-support")]
    pub async fn loglikelihood(
        &self,
        model: ModelSpec,
        requests: Vec<LlRequest>,
        opts: RunOptions,
        progress: Progress<LlResult>,
    ) -> Result<Vec<LlResult>> {
        self.call(|r| Command::Loglikelihood(model, requests, opts, progress, r))
            .await
    }

    pub async fn score_multiple_choice(
        &self,
        model: ModelSpec,
        items: Vec<McItem>,
        opts: RunOptions,
    ) -> Result<Vec<McResult>> {
        self.call(|r| Command::MultipleChoice(model, items, opts, r))
            .await
    }

    pub async fn generate(
        &self,
        model: ModelSpec,
        items: Vec<GenItem>,
        opts: RunOptions,
    ) -> Result<Vec<GenResult>> {
        self.call(|r| Command::Generate(model, items, opts, r))
            .await
    }

    /// Architecture, parameters, dtype, vocabulary and tokenizer hash, without loading weights.
    #[cfg(feature = "test-support")]
    pub async fn describe_model(&self, path: PathBuf) -> Result<ModelDescription> {
        self.call(|r| Command::Describe(path, r)).await
    }

    /// Loads (or finds in the cache) a model; surfaces load errors such as a bad adapter early.
    pub async fn preload(&self, model: ModelSpec) -> Result<()> {
        self.call(|r| Command::Preload(model, r)).await
    }

    pub async fn cache_stats(&self) -> Result<CacheStats> {
        self.call(Command::Stats).await
    }
}
