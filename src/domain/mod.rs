//! The vocabulary every layer speaks: what jobs, shards and datasets are. The store imports it;
//! it imports nothing of the crate's above the metrics.

mod instance;
mod shards;
mod vocabulary;

pub use instance::{InstanceRecord, InstanceSampled, SampledOutput, SideResult, Tags};
pub use shards::{DEFAULT_SHARD_SIZE, JobPlanning, NewShard, plan_shards};
pub use vocabulary::{DatasetKind, JobKind, JobStatus, ShardKind, SideName};
