//! Evaluation jobs between the store and the metrics: per-instance results as stored, and the
//! report built from them.

mod comparison;
mod finalize;
mod inputs;
mod job;
mod listing;
pub mod markdown;
mod partial;
mod recorded;
mod report;
mod run;
mod summary;
mod view;

pub use comparison::{alignment_warnings, prepare_recorded};
pub use finalize::{finalize, pair_warnings};
pub use inputs::{InstanceInput, inputs_of};
pub use job::evaluation_job;
pub use listing::{LISTING_METRIC, parse_listing};
pub use partial::PartialReports;
pub use recorded::{chosen_filter, load_recorded, load_recorded_for, metric_name, recorded_result};
pub use report::{build_report, build_report_with_verdicts, report_options, task_kind};
pub use run::{EvalRuntime, run_shard};
pub use summary::{EvaluationSummary, Verdict};
pub use view::InstanceView;
