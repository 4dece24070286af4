//! What `muscle eval` and `muscle train` share: reading the spec, the dataset (a file, or an
//! uploaded id in the server's database), the private database, exit codes, output.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;

use crate::config::CommonArgs;
use crate::dataset::{ParsedDataset, Rows, parse_dataset};
use crate::domain::JobKind;
use crate::engine::DeviceSpec;
use crate::kinds::submit::{Callbacks, Rejected, Submitter};
use crate::spec::{DatasetRef, parse_body};
use crate::store::{self, Job, NewDataset, Store};
use crate::validation::FieldError;

pub const GATE_FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub const FAILED: u8 = 3;

pub enum Failure {
    /// Bad input: the source (file) and every field or line at fault. Exit code 2.
    Invalid(String, Vec<FieldError>),
    /// Exit code 3.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Runtime(error)
    }
}

impl Failure {
    /// A submission the kind's checks refused, reported against `source` (the spec file, or
    /// the command whose arguments made the spec).
    pub fn rejected(source: String, rejected: Rejected) -> Self {
        match rejected {
            Rejected::Invalid(errors) => Self::Invalid(source, errors),
            Rejected::Store(error) => Self::Runtime(error.into()),
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Runtime(error.into())
    }
}

impl Failure {
    pub fn invalid_field(source: &Path, field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(
            source.display().to_string(),
            vec![FieldError::field(field, message)],
        )
    }

    /// Prints the failure on stderr and returns its exit code.
    pub fn report(self) -> ExitCode {
        match self {
            Self::Invalid(source, errors) => {
                for error in &errors {
                    match error.line {
                        Some(line) => {
                            say!("{source}: line {line}: {}: {}", error.field, error.message)
                        }
                        None => say!("{source}: {}: {}", error.field, error.message),
                    }
                }
                ExitCode::from(INVALID)
            }
            Self::Runtime(error) => {
                say!("error: {error:#}");
                ExitCode::from(FAILED)
            }
        }
    }
}

/// The `--device` (MUSCLE_DEVICE) to run on, and the MUSCLE_ENDPOINT_HOSTS entries; an unknown
/// or unavailable device or a bad entry is invalid input (exit 2), found before any work starts.
pub fn check_settings(common: &CommonArgs) -> Result<DeviceSpec, Failure> {
    let invalid = |source: &str, field: &str, message: String| {
        Failure::Invalid(source.into(), vec![FieldError::field(field, message)])
    };
    crate::endpoint::EndpointPolicy::from_env(&common.endpoint_hosts).map_err(|e| {
        invalid(
            "--endpoint-hosts (MUSCLE_ENDPOINT_HOSTS)",
            "endpoint_hosts",
            e,
        )
    })?;
    crate::app::parse_device(&common.device)
        .map_err(|e| invalid("--device (MUSCLE_DEVICE)", "device", e.to_string()))
}

/// What the CLI lends a submission: its private store, the model folders it may read, one
/// attempt per shard, no callbacks, and the device it runs models on.
pub fn cli_submitter<'a>(
    app: &'a crate::app::App,
    store: &'a Store,
    resolver: &'a crate::models::Resolver,
    device: Option<DeviceSpec>,
) -> Submitter<'a> {
    Submitter {
        store,
        resolver,
        planning: app.planning(),
        callbacks: Callbacks::Refused,
        endpoints: app.endpoints(),
        device,
    }
}

/// Reads and parses a SPEC file.
pub fn read_spec<T: DeserializeOwned>(path: &Path) -> Result<T, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::invalid_field(path, "(file)", e.to_string()))?;
    parse_body(&bytes).map_err(|errors| Failure::Invalid(path.display().to_string(), errors))
}

/// The rows a spec names: a JSONL file, or a dataset uploaded to the server's database.
pub async fn load_dataset(
    common: &CommonArgs,
    spec_path: &Path,
    dataset: &DatasetRef,
    field: &str,
) -> Result<(String, ParsedDataset), Failure> {
    match dataset {
        DatasetRef::Path {
            path,
            format,
            slice_by,
        } => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::invalid_field(spec_path, &format!("{field}.path"), format!("{path}: {e}"))
            })?;
            let parsed = parse_dataset(&bytes.into(), *format, slice_by)
                .map_err(|errors| Failure::Invalid(path.clone(), errors))?;
            Ok((path.clone(), parsed))
        }
        DatasetRef::Id(id) => {
            let url = common.db.database_url();
            let server = store::connect(&url)
                .await
                .with_context(|| format!("opening {}", store::redact(&url)))?;
            let found = match store::lookup_dataset(&server, id)
                .await
                .context("reading the dataset")?
            {
                store::DatasetLookup::Found(found) => found,
                other => {
                    return Err(Failure::invalid_field(
                        spec_path,
                        field,
                        format!(
                            "{} in {}",
                            other.problem(id).unwrap_or_default(),
                            store::redact(&url)
                        ),
                    ));
                }
            };
            let rows = server
                .dataset_rows(&found.id, 0, found.rows)
                .await
                .context("reading the dataset rows")?;
            Ok((
                found.name,
                ParsedDataset {
                    kind: found.kind,
                    rows: Rows::Built(rows),
                    sha256: found.sha256,
                },
            ))
        }
    }
}

/// Stores the dataset in the private database under `name` (once: a file named twice by a spec
/// is one dataset); the reference a spec names it by, its name, which errors then show.
pub async fn store_dataset(
    store: &Store,
    name: String,
    parsed: &ParsedDataset,
) -> anyhow::Result<DatasetRef> {
    if !store.datasets_named(&name, 1).await?.is_empty() {
        return Ok(DatasetRef::Id(name));
    }
    store
        .insert_dataset(
            &NewDataset {
                name: name.clone(),
                kind: parsed.kind,
                sha256: parsed.sha256.clone(),
            },
            &mut parsed.rows.iter(),
        )
        .await
        .context("storing the dataset")?;
    Ok(DatasetRef::Id(name))
}

/// Waits for a job to finish, drawing a progress bar of `unit` when stderr is a terminal.
pub async fn wait(store: &Store, kind: JobKind, id: &str, unit: &str) -> anyhow::Result<Job> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let template = format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{rate}}, eta {{eta}})"
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", human_rate(state.per_sec()));
                    },
                ),
        );
        bar
    });
    loop {
        let job = store.get_job(kind, id).await?.context("the job vanished")?;
        if let Some(bar) = &bar {
            bar.set_length(job.progress_total.max(0) as u64);
            bar.set_position(job.progress_done.max(0) as u64);
        }
        if job.status.is_finished() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A rate for people: three significant digits at most (`298`, `12.4`, `0.31`).
pub fn human_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "0".into();
    }
    if per_sec >= 100.0 {
        format!("{per_sec:.0}")
    } else if per_sec >= 10.0 {
        format!("{per_sec:.1}")
    } else {
        format!("{per_sec:.2}")
    }
}

/// Writes pretty JSON to `out`, or to stdout.
pub fn write_json<T: serde::Serialize + ?Sized>(
    out: Option<&Path>,
    value: &T,
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to standard output")
        }
    }
}

/// An app with one in-process worker on a private SQLite database in a scratch folder (kept
/// alive as long as the returned guard).
pub async fn private_app(
    common: &CommonArgs,
) -> anyhow::Result<(crate::app::App, tempfile::TempDir)> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let queue = crate::config::QueueArgs {
        lease_seconds: 60,
        max_attempts: std::num::NonZeroU32::MIN,
        poll_ms: 50,
        shard_size: crate::domain::DEFAULT_SHARD_SIZE,
    };
    let mut settings = crate::app::Settings::from_common(common, &queue, 1)?;
    settings.database_url = format!("sqlite://{}", scratch.path().join("muscle.db").display());
    settings.data_dir = scratch.path().to_path_buf();
    settings.allow_model_paths = true;
    Ok((crate::app::App::build(settings).await?, scratch))
}

/// Runs the app's workers while `work` runs, then stops them gracefully.
pub async fn with_workers<T>(
    app: crate::app::App,
    work: impl std::future::Future<Output = T>,
) -> T {
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = {
        let stop = stop.clone();
        tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }))
    };
    let output = work.await;
    stop.cancel();
    let _ = runner.await;
    output
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(super::human_rate(297.7053), "298");
        assert_eq!(super::human_rate(12.44), "12.4");
        assert_eq!(super::human_rate(0.3141), "0.31");
        assert_eq!(super::human_rate(f64::INFINITY), "0");
    }
}
