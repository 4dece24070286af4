//! The engine's error type: every failure of loading, scoring or the engine thread.

use std::path::PathBuf;

/// Errors of the model engine. Messages name the file, tensor, key or feature at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unsupported architecture {name:?} (supported: {supported})")]
    UnsupportedArchitecture { name: String, supported: String },
    #[error("missing tensor {name} in the weights of {path}")]
    MissingTensor { name: String, path: PathBuf },
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("adapter {path}: {message}")]
    Adapter { path: PathBuf, message: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("model needs {needed} bytes, more than the cache budget of {budget} bytes")]
    OverBudget { needed: u64, budget: u64 },
    #[error("internal error in the engine: {0}")]
    Panicked(String),
    #[error("cancelled")]
    Cancelled,
    #[error("the engine thread has stopped")]
    EngineStopped,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn adapter(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Adapter {
            path: path.into(),
            message: message.into(),
        }
    }
}
