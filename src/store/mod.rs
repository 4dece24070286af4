//! The job store: datasets, jobs, their shards (the queue) and per-instance results.
//!
//! One [`Store`], on SQLite or on Postgres, each backend with its own migrations folder.

mod connect;
mod document;
mod sql;
mod types;

pub use connect::{Backend, connect, redact};
pub use document::Document;
pub use sql::Store;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored document is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
    /// A training still queued or running (the one named, when it was found) writes `output`.
    #[error("{}", output_taken(output, job_id.as_deref()))]
    OutputTaken {
        output: String,
        job_id: Option<String>,
    },
}

fn output_taken(output: &str, job_id: Option<&str>) -> String {
    match job_id {
        Some(id) => format!("training {id} (queued or running) writes {output:?} already"),
        None => format!("a training still queued or running writes {output:?} already"),
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a reference by id or name found: the one thing, nothing, or several of that name.
pub enum Lookup<T> {
    Found(T),
    Missing,
    /// Several carry the name; the count found (at most 10).
    Ambiguous(usize),
}

/// What an evaluation's or training's `dataset` names: an uploaded dataset's id, or the name it
/// was uploaded under when exactly one dataset has that name.
pub type DatasetLookup = Lookup<Dataset>;

impl<T> Lookup<T> {
    /// By id first, else by a name exactly one carries.
    fn pick(by_id: Option<T>, mut named: Vec<T>) -> Self {
        match (by_id, named.len()) {
            (Some(found), _) => Self::Found(found),
            (None, 0) => Self::Missing,
            (None, 1) => Self::Found(named.remove(0)),
            (None, n) => Self::Ambiguous(n),
        }
    }

    /// Why a reference to a `noun` ("dataset", "recorded run") found no single one.
    pub fn problem_with(&self, noun: &str, reference: &str) -> Option<String> {
        match self {
            Self::Found(_) => None,
            Self::Missing => Some(format!("no {noun} with id or name {reference:?}")),
            Self::Ambiguous(n) => Some(format!(
                "{n} {noun}s are named {reference:?}; name one by its id"
            )),
        }
    }
}

impl DatasetLookup {
    /// Why a reference found no single dataset, for the field's error.
    pub fn problem(&self, reference: &str) -> Option<String> {
        self.problem_with("dataset", reference)
    }
}

pub async fn lookup_dataset(store: &Store, id_or_name: &str) -> StoreResult<DatasetLookup> {
    let by_id = store.get_dataset(id_or_name).await?;
    let named = match by_id {
        Some(_) => Vec::new(),
        None => store.datasets_named(id_or_name, 10).await?,
    };
    Ok(Lookup::pick(by_id, named))
}

/// A recorded run by its id, or by the name exactly one was uploaded under.
pub async fn lookup_predictions(
    store: &Store,
    id_or_name: &str,
) -> StoreResult<Lookup<Predictions>> {
    let by_id = store.get_predictions(id_or_name).await?;
    let named = match by_id {
        Some(_) => Vec::new(),
        None => store.predictions_named(id_or_name, 10).await?,
    };
    Ok(Lookup::pick(by_id, named))
}
