//! Engine and training tests: the engine against reference numbers from transformers + PEFT +
//! lm-evaluation-harness, on tiny handmade models, and LoRA training on every family.

mod helpers;

mod engine_reference;
mod engine_synthetic;
mod sampling;
mod train_engine;
mod train_families;
mod train_gradients;
