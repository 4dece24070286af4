//! Submitting a job, the same way from the API and from the CLI: the spec's checks, its
//! datasets and recorded runs resolved in the store, and the job planned. What differs between
//! the two front ends is lent by [`Submitter`]: the API checks callbacks against its policy and
//! adds the Idempotency-Key; the CLI stores its dataset files first and refuses callbacks.

use super::{Evaluations, Kind, Trainings};
use crate::callback::{CallbackPolicy, CallbackSpec};
use crate::domain::{DatasetKind, JobPlanning, SideName};
use crate::endpoint::{Endpoints, check_served};
use crate::engine::DeviceSpec;
use crate::evaluation::prepare_recorded;
use crate::models::Resolver;
use crate::spec::{DatasetRef, EvaluationSpec, TrainingSpec, refused_dtypes};
use crate::store::{Dataset, DatasetLookup, NewJob, Store, StoreError, lookup_dataset};
use crate::train::job::{StoredTraining, check_vocabularies};
use crate::validation::FieldError;

/// What a front end lends a submission.
pub struct Submitter<'a> {
    pub store: &'a Store,
    pub resolver: &'a Resolver,
    pub planning: JobPlanning,
    pub callbacks: Callbacks<'a>,
    /// The inference servers endpoint sides may reach.
    pub endpoints: &'a Endpoints,
    /// The device the job will run on, when the front end knows it (the CLI runs its own
    /// jobs): a dtype it does not run is refused at once.
    pub device: Option<DeviceSpec>,
}

/// What a front end says of a spec's `callback`.
pub enum Callbacks<'a> {
    /// The server sends callbacks to the hosts its policy allows.
    Allowed(&'a CallbackPolicy),
    /// The CLI tells its caller by its exit code.
    Refused,
}

impl Callbacks<'_> {
    fn check(&self, callback: &Option<CallbackSpec>) -> Vec<FieldError> {
        match (self, callback) {
            (_, None) => Vec::new(),
            (Self::Allowed(policy), Some(callback)) => callback.check(policy, "callback"),
            (Self::Refused, Some(_)) => vec![FieldError::field(
                "callback",
                "is sent by `muscle serve` when a job it queued ends; the CLI reports by its exit \
                 code",
            )],
        }
    }
}

/// Why a submission was not planned.
#[derive(Debug)]
pub enum Rejected {
    /// Every field at fault.
    Invalid(Vec<FieldError>),
    Store(StoreError),
}

impl From<StoreError> for Rejected {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// An evaluation's job, its dataset stored by id (later uploads under its name change nothing).
pub async fn evaluation(s: &Submitter<'_>, mut spec: EvaluationSpec) -> Result<NewJob, Rejected> {
    let mut errors = spec.check(s.resolver).err().unwrap_or_default();
    errors.extend(s.callbacks.check(&spec.callback));
    if let Some(device) = s.device {
        errors.extend(refused_dtypes(
            [("old", spec.old.model()), ("new", spec.new.model())],
            device,
        ));
    }
    // A server is asked only about a spec that is otherwise sound.
    if errors.is_empty() {
        errors.extend(check_servers(s, &spec).await);
    }
    let recorded = prepare_recorded(s.store, &mut spec, &mut errors).await?;
    let no_recorded_side = spec.old.predictions().is_none() && spec.new.predictions().is_none();
    let dataset = match (recorded, &spec.dataset) {
        (Some(dataset), _) => Some(dataset),
        (None, Some(reference)) if no_recorded_side => {
            let reference = reference.clone();
            let kind = Some(spec.task.dataset_kind());
            resolve_dataset(
                s.store,
                &reference,
                "dataset",
                kind,
                "task.type",
                &mut errors,
            )
            .await?
        }
        (None, None) if no_recorded_side => {
            errors.push(FieldError::field(
                "dataset",
                "is required unless a side is a recorded run ({\"predictions\": ID})",
            ));
            None
        }
        (None, _) => None,
    };
    let dataset = match dataset {
        Some(dataset) if errors.is_empty() => dataset,
        _ => return Err(Rejected::Invalid(errors)),
    };
    spec.dataset = Some(DatasetRef::Id(dataset.id));
    Ok(Evaluations::plan(&spec, dataset.rows, s.planning))
}

/// Each served side's server: allowed, listing the model and, for multiple choice, aligned.
async fn check_servers(s: &Submitter<'_>, spec: &EvaluationSpec) -> Vec<FieldError> {
    let multiple_choice = spec.task.dataset_kind() == DatasetKind::MultipleChoice;
    let mut errors = Vec::new();
    for side in [SideName::Old, SideName::New] {
        if let Some(endpoint) = spec.side(side).endpoint() {
            errors.extend(
                check_served(
                    s.endpoints,
                    s.resolver,
                    endpoint,
                    side.as_str(),
                    multiple_choice,
                    spec.options.add_bos.engine(),
                )
                .await,
            );
        }
    }
    errors
}

/// A training's job, its datasets stored by id.
pub async fn training(s: &Submitter<'_>, mut spec: TrainingSpec) -> Result<NewJob, Rejected> {
    spec.normalize();
    let mut errors = spec.check(s.resolver).err().unwrap_or_default();
    errors.extend(check_vocabularies(&spec, s.resolver));
    errors.extend(s.callbacks.check(&spec.callback));
    if let Some(device) = s.device {
        errors.extend(refused_dtypes(
            [("old", spec.old.as_ref()), ("new", Some(&spec.new))],
            device,
        ));
    }
    let reference = spec.dataset.clone();
    let dataset =
        resolve_dataset(s.store, &reference, "dataset", None, "dataset", &mut errors).await?;
    if let Some(evaluate) = &mut spec.evaluate {
        let kind = Some(evaluate.task.dataset_kind());
        let found = resolve_dataset(
            s.store,
            &evaluate.dataset,
            "evaluate.dataset",
            kind,
            "evaluate.task.type",
            &mut errors,
        )
        .await?;
        if let Some(found) = found {
            evaluate.dataset = DatasetRef::Id(found.id);
        }
    }
    let dataset = match dataset {
        Some(dataset) if errors.is_empty() => dataset,
        _ => return Err(Rejected::Invalid(errors)),
    };
    spec.dataset = DatasetRef::Id(dataset.id);
    if dataset.rows < 2 {
        errors.push(FieldError::field(
            "dataset",
            "needs at least 2 rows to split into training and validation",
        ));
    }
    if !errors.is_empty() {
        return Err(Rejected::Invalid(errors));
    }
    let stored = StoredTraining::new(spec, dataset.rows);
    Ok(Trainings::plan(&stored, dataset.rows, s.planning))
}

/// Looks up the dataset a spec names, checking its kind when one is required.
async fn resolve_dataset(
    store: &Store,
    reference: &DatasetRef,
    field: &str,
    kind: Option<DatasetKind>,
    kind_field: &str,
    errors: &mut Vec<FieldError>,
) -> Result<Option<Dataset>, StoreError> {
    let id = match reference {
        DatasetRef::Id(id) => id,
        DatasetRef::Path { .. } => {
            errors.push(FieldError::field(
                field,
                "file paths are accepted by the muscle CLI only; upload the file with \
                 POST /v1/datasets and pass its id",
            ));
            return Ok(None);
        }
    };
    let dataset = match lookup_dataset(store, id).await? {
        DatasetLookup::Found(dataset) => dataset,
        other => {
            errors.push(FieldError::field(
                field,
                other.problem(id).unwrap_or_default(),
            ));
            return Ok(None);
        }
    };
    if let Some(kind) = kind
        && dataset.kind != kind
    {
        errors.push(FieldError::field(
            kind_field,
            format!(
                "is {} but dataset {id} holds {} rows",
                kind.as_str(),
                dataset.kind.as_str()
            ),
        ));
    }
    Ok(Some(dataset))
}
