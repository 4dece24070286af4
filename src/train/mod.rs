//! LoRA training on the engine's decoder: task adapters (cross-entropy) and MUSCLE
//! compatibility adapters (distilled from the old and new task models), through the queue.

pub mod adapter;
pub mod checkpoint;
pub mod data;
pub mod finalize;
pub mod head_loss;
pub mod history;
pub mod job;
pub mod loss;
pub mod optim;
pub mod output;
pub mod pair;
pub mod peft;
pub mod pretrain;
pub mod result;
pub mod schedule;
pub mod split;
pub mod trainer;
pub mod view;
pub mod work;

pub use finalize::finalize;
pub use history::{EpochEnd, HistoryEntry, TrainStep};
pub use trainer::{Hooks, NoHooks, RunState, TrainError, TrainInputs, Trainer};
pub use work::{TrainRuntime, run_work};
