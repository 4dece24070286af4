//! The names of job kinds, statuses, shard kinds and dataset kinds. Each is stored and answered
//! as its snake_case name: serde and strum derive the same spelling.

use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumString, IntoStaticStr};
use utoipa::ToSchema;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    IntoStaticStr,
    EnumString,
    EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DatasetKind {
    MultipleChoice,
    Generation,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    IntoStaticStr,
    EnumString,
    EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    Evaluation,
    Training,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    IntoStaticStr,
    EnumString,
    EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a shard does: `work` shards cover a range of instances; the one `finalize` shard of a
/// job becomes claimable once every work shard has succeeded, and finishes the job.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    IntoStaticStr,
    EnumString,
    EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ShardKind {
    Work,
    Finalize,
}

/// Which model of an evaluation: the one in use, or its update. Its name is the spec's field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum SideName {
    Old,
    New,
}

impl SideName {
    pub const BOTH: [SideName; 2] = [SideName::Old, SideName::New];
}

macro_rules! as_str {
    ($($name:ty),*) => {$(
        impl $name {
            /// The stored and answered name.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    )*};
}
as_str!(DatasetKind, JobKind, JobStatus, ShardKind, SideName);

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::str::FromStr;

    use serde::de::DeserializeOwned;
    use strum::IntoEnumIterator;

    use super::*;

    fn round_trips<T>(as_str: fn(T) -> &'static str)
    where
        T: IntoEnumIterator + FromStr + Serialize + DeserializeOwned + PartialEq + Debug + Copy,
        <T as FromStr>::Err: Debug,
    {
        for value in T::iter() {
            let name = as_str(value);
            assert_eq!(
                serde_json::to_value(value).unwrap(),
                name,
                "serde and strum agree"
            );
            assert_eq!(name.parse::<T>().unwrap(), value);
            assert_eq!(serde_json::from_value::<T>(name.into()).unwrap(), value);
        }
    }

    #[test]
    fn every_name_round_trips_through_the_store_and_the_api() {
        round_trips(DatasetKind::as_str);
        round_trips(JobKind::as_str);
        round_trips(JobStatus::as_str);
        round_trips(ShardKind::as_str);
        assert!("done".parse::<JobStatus>().is_err());
        assert_eq!(JobStatus::Cancelled.as_str(), "cancelled");
        assert_eq!(DatasetKind::MultipleChoice.as_str(), "multiple_choice");
    }
}
