//! lm-evaluation-harness interop: its `--log_samples` files as recorded runs and as datasets.

mod dataset;
mod recorded;
mod samples;

pub use dataset::samples_dataset;
pub use recorded::{RecordedInstance, recorded_rows, rows_of};
pub use samples::{Responses, Sample, SamplesFile, SamplesKind, parse_samples};
