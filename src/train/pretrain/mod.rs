//! Full-parameter pretraining of a small Llama-shaped base model from random weights (next-token
//! cross-entropy, AdamW), written as a Hugging Face folder that the engine and transformers load.
//! Used by the shipped model-update example; the service itself only trains LoRA adapters.

pub mod init;
pub mod run;
pub mod shape;
pub mod wordlevel;

pub use run::{PretrainSettings, Pretrainer};
pub use shape::BaseShape;
pub use wordlevel::WordLevel;
