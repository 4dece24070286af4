//! The model engine: loads Hugging Face model folders of the families in `families` (+ PEFT LoRA
//! adapters), scores and generates like lm-evaluation-harness, on its own thread behind
//! `EngineHandle`.

pub mod autograd;
pub mod backward;
pub mod batching;
pub mod cache;
pub mod config;
pub mod decoder;
#[cfg(feature = "test-support")]
pub mod describe;
pub mod error;
pub mod families;
pub mod folder;
pub mod generate;
pub mod handle;
pub mod layers;
pub mod lora;
pub mod model;
pub mod sampling;
pub mod scoring;
pub mod threads;
pub mod tokenize;
pub mod types;
pub mod weights;

pub use batching::BatchConfig;
pub use cache::{CacheStats, ModelCache};
#[cfg(feature = "test-support")]
pub use describe::{ModelDescription, describe};
pub use error::{EngineError, Result};
#[cfg(feature = "test-support")]
pub use handle::Progress;
pub use handle::{EngineConfig, EngineHandle};
pub use model::LoadedModel;
pub use types::{
    BatchObserver, Bos, CancelFlag, DeviceSpec, FinishReason, GenItem, GenResult, LlRequest,
    LlResult, McItem, McResult, ModelSpec, RunOptions, SampleRequest, WeightDtype,
};
