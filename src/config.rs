//! Command line and environment configuration: every flag is also an environment variable.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{DEFAULT_SHARD_SIZE, JobPlanning};

/// Tells whether a model update is safe for its users: negative flips, congruence metrics,
/// a release gate, and MUSCLE compatibility adapters.
#[derive(Debug, Parser)]
#[command(name = "muscle", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API plus in-process workers; migrations are applied at start.
    Serve(ServeArgs),
    /// Run workers only, sharing the queue of a Postgres database with other hosts.
    Worker(WorkerArgs),
    /// Run one evaluation without a server (SPEC is the body of POST /v1/evaluations).
    #[command(
        mut_arg("database_url", |a| a.help(SERVER_DATABASE_HELP)),
        mut_arg("data_dir", |a| a.help(SERVER_DATA_DIR_HELP))
    )]
    Eval(EvalArgs),
    /// Compare two recorded lm-evaluation-harness runs (samples_<task>_*.jsonl files written
    /// with --log_samples) without a server and without re-running them; exit codes as eval.
    // It runs on a private database and reads no other: the database flags are not its own.
    #[command(
        mut_arg("database_url", |a| a.hide(true)),
        mut_arg("data_dir", |a| a.hide(true)),
        mut_arg("device", |a| a.hide(true)),
        mut_arg("model_cache_bytes", |a| a.hide(true)),
        mut_arg("endpoint_hosts", |a| a.hide(true)),
        mut_arg("model_dir", |a| a.hide(true)),
        mut_arg("trained_dir", |a| a.hide(true))
    )]
    Compare(CompareArgs),
    /// Run one training without a server (SPEC is the body of POST /v1/trainings).
    #[command(
        mut_arg("database_url", |a| a.help(SERVER_DATABASE_HELP)),
        mut_arg("data_dir", |a| a.help(SERVER_DATA_DIR_HELP))
    )]
    Train(TrainArgs),
    /// Block until a job on a server finishes and print its verdict (exit 0 passed, 1 gate
    /// failed, 2 no such job, 3 failed or cancelled, 4 timed out).
    Wait(WaitArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

/// `eval` and `train` run on a private database; a server's is read only for a dataset the spec
/// names by id or name.
const SERVER_DATABASE_HELP: &str = "Only when the spec names an uploaded dataset by id or name: \
     the server's database to read it from (sqlite://FILE or postgres://...) [default: the \
     SQLite file in the data directory]. The job itself runs on a private database";
const SERVER_DATA_DIR_HELP: &str = "Only when the spec names an uploaded dataset by id or name: \
     the server's data directory, whose SQLite file holds it";

/// Where the database is, and how to log: what every subcommand that opens the database needs.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: sqlite://FILE or postgres://... [default: a SQLite file in the data directory]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the default SQLite database and training checkpoints (trained adapters are
    /// written under the model directory).
    #[arg(long, env = "MUSCLE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Log format.
    #[arg(long, env = "MUSCLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl DatabaseArgs {
    /// The configured database URL, or a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("muscle.db").display()),
        }
    }
}

/// The database plus what running models needs.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Root that model and adapter names resolve under.
    #[arg(long, env = "MUSCLE_MODEL_DIR", default_value = "./examples")]
    pub model_dir: PathBuf,

    /// Where adapters named `trained/...` are written by trainings and read by evaluations
    /// (default: the model dir's `trained/`). Set it when the model dir is read-only, as in the
    /// Docker deployment (a writable volume).
    #[arg(long, env = "MUSCLE_TRAINED_DIR")]
    pub trained_dir: Option<PathBuf>,

    /// Device for inference and training: cpu, cuda or cuda:N.
    #[arg(long, env = "MUSCLE_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Memory budget of the loaded-model cache in bytes (models stay loaded between jobs).
    #[arg(long, env = "MUSCLE_MODEL_CACHE_BYTES", default_value_t = 16 << 30)]
    pub model_cache_bytes: u64,

    /// Comma-separated inference servers (`host:port`, `[ipv6]:port`) that evaluation sides
    /// `{"endpoint": ...}` may reach; none by default. Their bearer tokens are read at start
    /// from MUSCLE_ENDPOINT_KEY* variables, named by each side's `api_key_env`.
    #[arg(long, env = "MUSCLE_ENDPOINT_HOSTS", value_delimiter = ',')]
    pub endpoint_hosts: Vec<String>,
}

impl CommonArgs {
    /// MUSCLE_TRAINED_DIR, where set and not empty (.env.example leaves it empty).
    pub fn trained_dir(&self) -> Option<PathBuf> {
        self.trained_dir
            .clone()
            .filter(|dir| !dir.as_os_str().is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Seconds a claimed shard stays leased without a heartbeat.
    #[arg(long, env = "MUSCLE_LEASE_SECONDS", default_value_t = 60)]
    pub lease_seconds: u64,

    /// Claims of one shard before its job fails (a lease that expires counts as a claim).
    #[arg(long, env = "MUSCLE_MAX_ATTEMPTS", default_value_t = NonZeroU32::new(3).unwrap())]
    pub max_attempts: NonZeroU32,

    /// Milliseconds an idle worker waits before polling the queue again.
    #[arg(long, env = "MUSCLE_POLL_MS", default_value_t = 500)]
    pub poll_ms: u64,

    /// Instances per shard: the unit of work one worker claims.
    #[arg(long, env = "MUSCLE_SHARD_SIZE", default_value_t = DEFAULT_SHARD_SIZE)]
    pub shard_size: NonZeroU32,
}

impl QueueArgs {
    pub fn planning(&self) -> JobPlanning {
        JobPlanning {
            shard_size: self.shard_size,
            max_attempts: self.max_attempts,
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(1))
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(10))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    /// Address the HTTP API listens on.
    #[arg(long, env = "MUSCLE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// When set (non-empty), every /v1 route requires `Authorization: Bearer <token>`. Visible
    /// ASCII only (no spaces, no surrounding whitespace): another token is refused at start.
    #[arg(long, env = "MUSCLE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Comma-separated origins allowed to call the API from a browser, as browsers send them
    /// (`https://dash.example.com`, `http://localhost:3000`), or `*` alone for any origin
    /// (without credentials; the bearer token still applies). Anything else is refused at start.
    #[arg(long, env = "MUSCLE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// In-process workers (0 = API only).
    #[arg(long, env = "MUSCLE_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Largest accepted request body in bytes (dataset uploads included).
    #[arg(long, env = "MUSCLE_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Requests handled at once; others wait up to 2 s, then get 503 with Retry-After.
    #[arg(long, env = "MUSCLE_MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: usize,

    /// Uploads (datasets, recorded runs) read at once; others wait up to 5 s, then get 503.
    #[arg(long, env = "MUSCLE_MAX_CONCURRENT_UPLOADS", default_value_t = 4)]
    pub max_concurrent_uploads: usize,

    /// Seconds a connection has to send a request's headers (and the longest idle keep-alive).
    #[arg(long, env = "MUSCLE_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_timeout_seconds: u64,

    /// Connections open at once; more are closed when accepted.
    #[arg(long, env = "MUSCLE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds after which a request still running is stopped with 503 (its body read apart).
    #[arg(long, env = "MUSCLE_REQUEST_TIMEOUT_SECONDS", default_value_t = 120)]
    pub request_timeout_seconds: u64,

    /// Seconds any request body may take before its pace counts; read before the request takes
    /// a slot, a body slower than MUSCLE_BODY_MIN_BYTES_PER_SECOND after them is cut off (408).
    #[arg(long, env = "MUSCLE_BODY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub body_timeout_seconds: u64,

    /// Average bytes per second a request body must keep once MUSCLE_BODY_TIMEOUT_SECONDS have
    /// passed.
    #[arg(
        long,
        env = "MUSCLE_BODY_MIN_BYTES_PER_SECOND",
        default_value_t = 65536
    )]
    pub body_min_bytes_per_second: u64,

    /// Comma-separated hosts (`host`, `host:port`, `[ipv6]:port`) a spec's `callback.url` may
    /// name; without a port, the scheme's default (80, 443). None by default; a bad entry stops
    /// the start. Signing secrets are read at start from MUSCLE_CALLBACK_SECRET* variables.
    #[arg(long, env = "MUSCLE_CALLBACK_HOSTS", value_delimiter = ',')]
    pub callback_hosts: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    /// Worker loops in this process.
    #[arg(long, env = "MUSCLE_WORKERS", default_value_t = 1)]
    pub workers: usize,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The evaluation or training id.
    pub id: String,

    /// Base URL of the muscle server.
    #[arg(long, env = "MUSCLE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,

    /// Bearer token, when the server has MUSCLE_API_TOKEN set.
    #[arg(long, env = "MUSCLE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Give up after this many seconds (exit code 4).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The evaluation spec (JSON, the body of POST /v1/evaluations).
    pub spec: PathBuf,

    /// Write the report JSON here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Write every instance row as JSON lines here.
    #[arg(long)]
    pub instances: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The old model's samples file.
    pub old: PathBuf,

    /// The new model's samples file (the same task).
    pub new: PathBuf,

    /// Release gate, as the spec's `gate`: a JSON list like '[{"metric": "nfr", "max": 0.05}]'.
    #[arg(long, default_value = "[]")]
    pub gate: String,

    /// Which lm-eval filter's answers to compare, when the files hold several.
    #[arg(long)]
    pub filter: Option<String>,

    /// The per-sample metric compared: acc or acc_norm (multiple choice), exact_match, rouge1
    /// or rougeL (generation). Default: acc, exact_match.
    #[arg(long)]
    pub metric: Option<String>,

    /// Comma-separated `doc` fields whose values slice the report.
    #[arg(long, value_delimiter = ',')]
    pub slice_by: Vec<String>,

    /// Write the report JSON here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Write every instance row as JSON lines here.
    #[arg(long)]
    pub instances: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The training spec (JSON, the body of POST /v1/trainings).
    pub spec: PathBuf,

    /// Write the training result JSON here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_database_is_a_sqlite_file_in_the_data_dir() {
        let cli = Cli::try_parse_from(["muscle", "migrate", "--data-dir", "/tmp/x"]).unwrap();
        let Command::Migrate(common) = cli.command else {
            panic!("expected migrate")
        };
        if std::env::var_os("DATABASE_URL").is_none() {
            assert_eq!(common.database_url(), "sqlite:///tmp/x/muscle.db");
        }
    }
}
