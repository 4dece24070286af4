//! Building and running the service: the API, the workers, or both, on one store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::callback::deliver_callbacks;
use crate::config::{CommonArgs, QueueArgs};
use crate::endpoint::{EndpointPolicy, Endpoints};
use crate::engine::{DeviceSpec, EngineConfig, EngineHandle};
use crate::evaluation::{EvalRuntime, PartialReports};
use crate::http::{self, AppState, HttpOptions};
use crate::kinds::Workers;
use crate::models::Resolver;
use crate::stats::Stats;
use crate::store::{self, Store};
use crate::train::TrainRuntime;
use crate::worker::{self, Executor, WorkerConfig};

/// Everything `App::build` needs; tests fill it directly, `main` from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub model_dir: PathBuf,
    /// MUSCLE_TRAINED_DIR: `trained/...` names live here instead of under `model_dir`.
    pub trained_dir: Option<PathBuf>,
    /// MUSCLE_DATA_DIR: training checkpoints go under `checkpoints/` (shared storage when
    /// workers on several hosts run trainings).
    pub data_dir: PathBuf,
    pub device: DeviceSpec,
    pub model_cache_bytes: u64,
    /// Model references may also be paths (the CLI); the server takes names under the root.
    pub allow_model_paths: bool,
    pub queue: QueueArgs,
    pub workers: usize,
    /// None: workers only, no HTTP listener.
    pub bind: Option<SocketAddr>,
    pub http: HttpOptions,
    /// Which inference servers endpoint sides may reach, and the keys they may use.
    pub endpoints: Arc<Endpoints>,
}

impl Settings {
    pub fn from_common(
        common: &CommonArgs,
        queue: &QueueArgs,
        workers: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            database_url: common.db.database_url(),
            model_dir: common.model_dir.clone(),
            trained_dir: common.trained_dir(),
            data_dir: common.db.data_dir.clone(),
            device: parse_device(&common.device)?,
            model_cache_bytes: common.model_cache_bytes,
            allow_model_paths: false,
            queue: queue.clone(),
            workers,
            bind: None,
            http: HttpOptions::default(),
            endpoints: Arc::new(Endpoints::new(
                EndpointPolicy::from_env(&common.endpoint_hosts).map_err(anyhow::Error::msg)?,
            )),
        })
    }
}

/// `cpu`, `cuda` or `cuda:N`; CUDA needs a binary built with the `cuda` feature.
pub fn parse_device(text: &str) -> anyhow::Result<DeviceSpec> {
    let device = match text.trim() {
        "cpu" => DeviceSpec::Cpu,
        "cuda" => DeviceSpec::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(index)) => DeviceSpec::Cuda(index),
            _ => anyhow::bail!("MUSCLE_DEVICE must be cpu, cuda or cuda:N, not {other:?}"),
        },
    };
    if matches!(device, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
        anyhow::bail!(
            "MUSCLE_DEVICE={text} but this binary was built without the `cuda` feature \
             (build with `cargo build --release --features cuda`)"
        );
    }
    Ok(device)
}

pub struct App {
    listener: Option<TcpListener>,
    router: Option<axum::Router>,
    workers: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    store: Arc<Store>,
    connections: http::ConnectionLimits,
    planning: crate::domain::JobPlanning,
    endpoints: Arc<Endpoints>,
}

impl App {
    /// Connects (applying migrations), binds the listener (port 0 picks a free one) and starts
    /// the workers with the real engine.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, None).await
    }

    /// As `build`, with another executor for the workers (tests of the queue's behaviour).
    pub async fn build_with(
        settings: Settings,
        executor: Option<Arc<dyn Executor>>,
    ) -> anyhow::Result<Self> {
        let store: Arc<Store> = Arc::new(
            store::connect(&settings.database_url)
                .await
                .with_context(|| format!("opening {}", store::redact(&settings.database_url)))?,
        );
        let stats = Arc::new(Stats::new());
        let resolver = if settings.allow_model_paths {
            Resolver::cli(&settings.model_dir)
        } else {
            Resolver::server(&settings.model_dir)
        }
        .with_trained_dir(settings.trained_dir.clone());
        let running = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();

        let mut workers = Vec::new();
        if settings.workers > 0 {
            let executor = match executor {
                Some(executor) => executor,
                None => {
                    let (engine, _thread) = EngineHandle::spawn(EngineConfig {
                        cache_bytes: settings.model_cache_bytes,
                        ..EngineConfig::default()
                    })
                    .context("starting the model engine")?;
                    Arc::new(Workers {
                        resolver: resolver.clone(),
                        evaluation: EvalRuntime {
                            engine,
                            resolver: resolver.clone(),
                            device: settings.device,
                            stats: stats.clone(),
                            endpoints: settings.endpoints.clone(),
                        },
                        training: TrainRuntime {
                            resolver: resolver.clone(),
                            device: settings.device,
                            data_dir: settings.data_dir.clone(),
                            planning: settings.queue.planning(),
                        },
                    })
                }
            };
            let host = hostname();
            let mut folders = vec![
                (settings.model_dir.as_path(), "$MUSCLE_MODEL_DIR"),
                (settings.data_dir.as_path(), "$MUSCLE_DATA_DIR"),
            ];
            if let Some(trained) = &settings.trained_dir {
                folders.push((trained.as_path(), "$MUSCLE_TRAINED_DIR"));
            }
            let redactor = worker::PathRedactor::new(&folders);
            for n in 0..settings.workers {
                let id = format!("{host}-{}-{n}", std::process::id());
                workers.push(tokio::spawn(worker::run_worker(
                    id,
                    store.clone(),
                    executor.clone(),
                    stats.clone(),
                    WorkerConfig {
                        lease: settings.queue.lease(),
                        poll: settings.queue.poll_interval(),
                        redactor: redactor.clone(),
                    },
                    shutdown.clone(),
                    running.clone(),
                )));
            }
        }

        let (listener, router) = match settings.bind {
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding {bind}"))?;
                let state = AppState {
                    store: store.clone(),
                    resolver,
                    stats: stats.clone(),
                    planning: settings.queue.planning(),
                    workers_configured: settings.workers,
                    workers_running: running,
                    reports: Arc::new(PartialReports::new(stats.reports_computed.clone())),
                    readiness: Default::default(),
                    callbacks: settings.http.callbacks.clone(),
                    endpoints: settings.endpoints.clone(),
                };
                // The API sends callbacks: it checked their hosts and secrets at submission.
                // With no host allowed none can be sent (pending ones wait for a server that
                // allows theirs), so no loop polls the database for them.
                if !settings.http.callbacks.hosts().is_empty() {
                    workers.push(tokio::spawn(deliver_callbacks(
                        store.clone(),
                        settings.http.callbacks.clone(),
                        Arc::new(state.clone()),
                        shutdown.clone(),
                    )));
                }
                (Some(listener), Some(http::app(state, &settings.http)))
            }
            None => (None, None),
        };
        Ok(Self {
            listener,
            router,
            workers,
            shutdown,
            store,
            connections: settings.http.connections,
            planning: settings.queue.planning(),
            endpoints: settings.endpoints.clone(),
        })
    }

    pub fn address(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// How this app's jobs are split and retried (MUSCLE_SHARD_SIZE, MUSCLE_MAX_ATTEMPTS).
    pub fn planning(&self) -> crate::domain::JobPlanning {
        self.planning
    }

    /// The inference servers this app's endpoint sides may reach.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Serves until `signal` resolves, then stops claiming, lets running shards reach a batch
    /// boundary and give their lease back, and returns.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: no new claims; running shards stop at a batch boundary");
            trigger.cancel();
        });
        if let (Some(listener), Some(router)) = (self.listener, self.router) {
            tracing::info!(address = %listener.local_addr()?, "listening");
            http::serve(listener, router, self.connections, shutdown.clone()).await;
        } else {
            shutdown.cancelled().await;
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
