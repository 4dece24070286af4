//! lm-evaluation-harness interop: its `--log_samples` files as recorded runs and as datasets.

mod samples;

pub use samples::{Responses, Sample, SamplesFile, SamplesKind, parse_samples};
