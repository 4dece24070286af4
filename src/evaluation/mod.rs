//! Evaluation jobs between the store and the metrics: per-instance results as stored, and the
//! report built from them.

mod finalize;
mod inputs;
pub mod markdown;
mod outcome;
mod report;
mod run;

pub use finalize::{finalize, pair_warnings};
pub use inputs::{InstanceInput, inputs_of};
pub use outcome::{InstanceView, SideResult, outcome_of};
pub use report::{build_report, report_options, task_kind};
pub use run::{EvalRuntime, run_shard};
