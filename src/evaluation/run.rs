//! A work shard of an evaluation: both models over the shard's instances, in chunks, each
//! chunk's rows stored as soon as both models have scored it.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::report::task_kind;
use super::{chosen_filter, load_recorded_for, recorded_result};
use crate::dataset::Item;
use crate::domain::{InstanceRecord, SideName};
use crate::domain::{SampledOutput, SideResult};
use crate::endpoint::{EndpointError, Endpoints, GenerationRequest, ServedModel, listed_model};
use crate::engine::{
    BatchConfig, CancelFlag, DeviceSpec, EngineError, EngineHandle, GenItem, McItem, McResult,
    ModelSpec, RunOptions, SampleRequest, WeightDtype,
};
use crate::metrics::{
    AnswerFilter, ExactMatchOptions, HarnessExactMatch, InstanceOutcome, classify, rouge_l_f,
    rouge1_f, slice_names,
};
use crate::models::{FolderKind, Resolver};
use crate::spec::{
    Dtype, EndpointSpec, EvaluationSpec, GenerationMetric, GenerationRules, McScore, ModelRef,
    Side, TaskSpec,
};
use crate::stats::Stats;
use crate::store::DatasetRow;
use crate::worker::{ShardContext, ShardError};

/// What a worker host needs to run evaluations.
#[derive(Clone)]
pub struct EvalRuntime {
    pub engine: EngineHandle,
    pub resolver: Resolver,
    pub device: DeviceSpec,
    pub stats: Arc<Stats>,
    /// Servers that endpoint sides reach.
    pub endpoints: Arc<Endpoints>,
}

impl EvalRuntime {
    /// The engine's view of a model reference, resolved under this host's model root.
    pub fn model_spec(&self, model: &ModelRef, field: &str) -> Result<ModelSpec, ShardError> {
        let base = self
            .resolver
            .resolve(&model.model, FolderKind::Model)
            .map_err(|e| ShardError::fatal(format!("{field}.model: {e}")))?;
        let adapter = match &model.adapter {
            Some(name) => Some(
                self.resolver
                    .resolve(name, FolderKind::Adapter)
                    .map_err(|e| ShardError::fatal(format!("{field}.adapter: {e}")))?,
            ),
            None => None,
        };
        if let Some(why) = model.dtype.and_then(|d| d.refused_on(self.device)) {
            return Err(ShardError::fatal(format!("{field}.dtype: {why}")));
        }
        let dtype = match (model.dtype, self.device) {
            (Some(Dtype::F32), _) | (None, DeviceSpec::Cpu) => WeightDtype::F32,
            (Some(Dtype::F16), _) => WeightDtype::F16,
            (Some(Dtype::Bf16), _) | (None, DeviceSpec::Cuda(_)) => WeightDtype::Bf16,
        };
        Ok(ModelSpec {
            base,
            adapter,
            dtype,
            device: self.device,
        })
    }
}

/// Whether another attempt could succeed: bad folders, refused adapters and over-budget models
/// fail the same way again; a candle error (out of memory, a device fault) or a crash may not.
pub(crate) fn engine_failure(ctx: &ShardContext, error: EngineError, what: &str) -> ShardError {
    if let Err(stop) = ctx.check() {
        return stop;
    }
    let message = format!("{what}: {error}");
    match error {
        EngineError::Cancelled => ShardError::Interrupted(crate::worker::Interruption::Cancelled),
        EngineError::Candle(_) | EngineError::Panicked(_) | EngineError::EngineStopped => {
            ShardError::retryable(message)
        }
        _ => ShardError::fatal(message),
    }
}

/// One model's results on a chunk of rows, in row order.
async fn score_side(
    runtime: &EvalRuntime,
    model: &ModelSpec,
    spec: &EvaluationSpec,
    instances: &Instances<'_>,
    cancel: &CancelFlag,
) -> Result<Vec<SideResult>, EngineError> {
    let items = instances.items;
    let options = RunOptions {
        bos: spec.options.add_bos.engine(),
        batch: Some(BatchConfig {
            max_batch_tokens: spec.options.max_batch_tokens as usize,
            max_batch_size: spec.options.batch_size as usize,
        }),
        cancel: Some(cancel.clone()),
        prefix_sharing: true,
        observer: Some(runtime.stats.batch_observer()),
    };
    match &spec.task {
        TaskSpec::MultipleChoice { delimiter, score } => {
            let requests = choice_requests(items, delimiter);
            let results = runtime
                .engine
                .score_multiple_choice(model.clone(), requests, options)
                .await?;
            Ok(choice_results(results, items, *score))
        }
        TaskSpec::Generation { .. } => {
            let rules = spec.task.generation_rules().expect("a generation task");
            let requests: Vec<GenItem> = items
                .iter()
                .zip(instances.ids)
                .map(|(item, id)| GenItem {
                    prompt: item.prompt().to_string(),
                    max_new_tokens: rules.max_new_tokens as usize,
                    stop: rules.stop.clone(),
                    no_repeat_ngram_size: rules.no_repeat_ngram_size as usize,
                    sampling: rules.sampling.map(|sampling| SampleRequest {
                        params: sampling.params(),
                        samples: sampling.samples,
                        seed: sampling.seed,
                        side: instances.side.as_str().to_string(),
                        instance: id.clone(),
                    }),
                })
                .collect();
            let results = runtime
                .engine
                .generate(model.clone(), requests, options)
                .await?;
            let scorer = GenerationScorer::new(&rules)
                .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
            Ok(generated_results(
                &scorer,
                results.into_iter().map(|r| Generated {
                    text: r.text,
                    samples: r.samples.into_iter().map(|g| g.text).collect(),
                }),
                items,
            ))
        }
    }
}

/// The engine's requests for multiple-choice items.
fn choice_requests(items: &[Item], delimiter: &str) -> Vec<McItem> {
    items
        .iter()
        .map(|item| match item {
            Item::MultipleChoice {
                prompt, choices, ..
            } => McItem {
                prompt: prompt.clone(),
                choices: choices.clone(),
                delimiter: Some(delimiter.to_string()),
            },
            Item::Generation { prompt, .. } => McItem {
                prompt: prompt.clone(),
                choices: Vec::new(),
                delimiter: None,
            },
        })
        .collect()
}

/// Each item's result from its choices' scores, wherever they were computed.
fn choice_results(results: Vec<McResult>, items: &[Item], score: McScore) -> Vec<SideResult> {
    results
        .into_iter()
        .zip(items)
        .map(|(result, item)| {
            let prediction = match score {
                McScore::Acc => result.acc_pred,
                McScore::AccNorm => result.acc_norm_pred,
            };
            let correct =
                matches!(item, Item::MultipleChoice { answer, .. } if *answer == prediction);
            SideResult {
                prediction: Some(prediction),
                correct: Some(correct),
                scores: Some(result.logprobs),
                output: None,
                answer: None,
                score: if correct { 1.0 } else { 0.0 },
                ..Default::default()
            }
        })
        .collect()
}

/// One instance's generated text: the greedy output and the sampled ones (if any).
struct Generated {
    text: String,
    samples: Vec<String>,
}

/// Each item's result from its generated text, wherever it was generated.
fn generated_results(
    scorer: &GenerationScorer,
    generated: impl IntoIterator<Item = Generated>,
    items: &[Item],
) -> Vec<SideResult> {
    generated
        .into_iter()
        .zip(items)
        .map(|(generated, item)| {
            let targets: &[String] = match item {
                Item::Generation { targets, .. } => targets,
                Item::MultipleChoice { .. } => &[],
            };
            let (answer, score) = scorer.score(&generated.text, targets);
            let samples: Vec<SampledOutput> = generated
                .samples
                .into_iter()
                .map(|output| {
                    let (answer, score) = scorer.score(&output, targets);
                    SampledOutput {
                        output,
                        answer,
                        score,
                    }
                })
                .collect();
            let p = (!samples.is_empty())
                .then(|| samples.iter().map(|s| s.score).sum::<f64>() / samples.len() as f64);
            SideResult {
                prediction: None,
                correct: Some(score >= 1.0),
                scores: None,
                output: Some(generated.text),
                answer,
                score,
                samples,
                p,
                ..Default::default()
            }
        })
        .collect()
}

/// The rows of a chunk as a side scores them: their parsed items, their instance ids (which
/// seed the sampled draws) and the side.
struct Instances<'a> {
    items: &'a [Item],
    ids: &'a [String],
    side: SideName,
}

/// One served model's results on a chunk of rows, in row order.
async fn score_served(
    runtime: &EvalRuntime,
    served: &ServedModel,
    spec: &EvaluationSpec,
    instances: &Instances<'_>,
    stop: &CancellationToken,
) -> Result<Vec<SideResult>, EndpointError> {
    let items = instances.items;
    let bos = spec.options.add_bos.engine();
    match &spec.task {
        TaskSpec::MultipleChoice { delimiter, score } => {
            let scored = served
                .multiple_choice(&choice_requests(items, delimiter), bos, stop)
                .await?;
            runtime.stats.tokens_scored.inc_by(scored.tokens);
            Ok(choice_results(scored.results, items, *score))
        }
        TaskSpec::Generation { .. } => {
            let rules = spec.task.generation_rules().expect("a generation task");
            let scorer =
                GenerationScorer::new(&rules).map_err(|e| EndpointError::Refused(e.to_string()))?;
            let prompts: Vec<String> = items.iter().map(|i| i.prompt().to_string()).collect();
            let request = GenerationRequest {
                max_new_tokens: rules.max_new_tokens,
                stop_strings: &rules.stop,
                no_repeat_ngram_size: rules.no_repeat_ngram_size,
                bos,
                side: instances.side.as_str(),
            };
            let greedy = served.generate(&prompts, &request, stop).await?;
            runtime.stats.tokens_scored.inc_by(greedy.tokens);
            let mut samples: Vec<Vec<String>> = vec![Vec::new(); prompts.len()];
            if let Some(sampling) = &rules.sampling {
                let keyed: Vec<(String, String)> =
                    instances.ids.iter().cloned().zip(prompts).collect();
                let drawn = served.sample(&keyed, sampling, &request, stop).await?;
                runtime.stats.tokens_scored.inc_by(drawn.tokens);
                samples = drawn.results;
            }
            let generated = greedy
                .results
                .into_iter()
                .zip(samples)
                .map(|(text, samples)| Generated { text, samples });
            Ok(generated_results(&scorer, generated, items))
        }
    }
}

/// A served side's failure as the shard's: a server that kept failing may answer another
/// attempt; one that refused the request will refuse it again.
fn endpoint_failure(ctx: &ShardContext, error: EndpointError, field: &str) -> ShardError {
    if let Err(stop) = ctx.check() {
        return stop;
    }
    match error {
        EndpointError::Cancelled => ShardError::Interrupted(crate::worker::Interruption::Cancelled),
        EndpointError::Unavailable(why) => {
            ShardError::retryable(format!("{field} endpoint: {why}"))
        }
        EndpointError::Refused(why) => ShardError::fatal(format!("{field} endpoint: {why}")),
    }
}

/// Scores generated text as lm-eval does: the answer filter, then the metric against each
/// target (any one counts: the best score).
struct GenerationScorer {
    filter: Option<AnswerFilter>,
    exact: HarnessExactMatch,
    metric: GenerationMetric,
}

impl GenerationScorer {
    fn new(rules: &GenerationRules) -> Result<Self, regex::Error> {
        let e = &rules.exact_match;
        Ok(Self {
            filter: rules
                .extract
                .as_ref()
                .map(|x| AnswerFilter::new(&x.regex, x.group_select, &x.fallback))
                .transpose()?,
            exact: HarnessExactMatch::new(
                &e.regexes_to_ignore,
                ExactMatchOptions {
                    ignore_case: e.ignore_case,
                    ignore_punctuation: e.ignore_punctuation,
                    ignore_whitespace: e.ignore_whitespace,
                },
            )?,
            metric: rules.metric,
        })
    }

    /// (the extracted answer when a filter applies, the score).
    fn score(&self, output: &str, targets: &[String]) -> (Option<String>, f64) {
        let answer = self.filter.as_ref().map(|f| f.apply(output));
        let text = answer.as_deref().unwrap_or(output);
        let score = targets
            .iter()
            .map(|target| match self.metric {
                GenerationMetric::ExactMatch => self.exact.score(text, target),
                GenerationMetric::Rouge1 => rouge1_f(text, target),
                GenerationMetric::RougeL => rouge_l_f(text, target),
            })
            .fold(0.0, f64::max);
        (answer, score)
    }
}

/// The old model again, in reversed order and (run here) another batch size: the noise
/// floor's second run.
#[allow(clippy::too_many_arguments)]
async fn rerun_scores(
    runner: &Runner,
    runtime: &EvalRuntime,
    ctx: &ShardContext,
    spec: &EvaluationSpec,
    rows: &[DatasetRow],
    items: &[Item],
    cancel: &CancelFlag,
) -> Result<Vec<f64>, ShardError> {
    let mut other = spec.clone();
    // The noise floor compares greedy scores: the second run draws no samples.
    if let TaskSpec::Generation { sampling, .. } = &mut other.task {
        *sampling = None;
    }
    let size = spec.options.batch_size;
    other.options.batch_size = if size < 1024 { size * 2 } else { size / 2 };
    let reversed: Vec<Item> = items.iter().rev().cloned().collect();
    let reversed_rows: Vec<DatasetRow> = rows.iter().rev().cloned().collect();
    let mut scores: Vec<f64> = runner
        .results(
            runtime,
            ctx,
            &other,
            &reversed_rows,
            &reversed,
            cancel,
            SideName::Old,
        )
        .await?
        .into_iter()
        .map(|side| side.score)
        .collect();
    scores.reverse();
    Ok(scores)
}

fn record(
    row: &DatasetRow,
    item: &Item,
    spec: &EvaluationSpec,
    old: SideResult,
    new: SideResult,
) -> InstanceRecord {
    let gold = match item {
        Item::MultipleChoice { answer, .. } => Some(*answer),
        Item::Generation { .. } => None,
    };
    let flip = classify(task_kind(&spec.task), old.score, new.score);
    let slices = slice_names(&InstanceOutcome {
        id: row.id.clone(),
        gold,
        tags: item.tags().clone(),
        old: old.outcome(),
        new: new.outcome(),
    });
    InstanceRecord {
        idx: row.idx,
        id: row.id.clone(),
        flip,
        gold: gold.map(|g| g as i64),
        tags: item.tags().clone(),
        old,
        new,
        slices,
        sampled: None,
    }
}

/// How a side's results come: from running its model here, from its server, or from its
/// recorded run.
enum Runner {
    Model(ModelSpec),
    Endpoint(Box<ServedModel>),
    /// A recorded run's id and the filter read; lines are fetched per chunk of rows.
    Recorded {
        predictions: String,
        filter: String,
    },
}

/// A served side ready for this shard: admitted by this worker's policy, its tokenizer read,
/// and its model still listed by the server (whose context length it takes).
async fn served_model(
    runtime: &EvalRuntime,
    ctx: &ShardContext,
    spec: &EndpointSpec,
    field: &str,
) -> Result<ServedModel, ShardError> {
    let client = runtime.endpoints.client(spec, field).map_err(|errors| {
        let problems: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        ShardError::fatal(problems.join("; "))
    })?;
    let tokenizer = runtime
        .endpoints
        .tokenizer(&runtime.resolver, spec)
        .map_err(|e| ShardError::fatal(format!("{field}.endpoint.tokenizer: {e}")))?;
    let (listed, _) = listed_model(&client, &spec.model, &ctx.stop)
        .await
        .map_err(|e| endpoint_failure(ctx, e, field))?;
    let listed = listed.ok_or_else(|| {
        ShardError::fatal(format!(
            "{field} endpoint: the server no longer lists {:?}",
            spec.model
        ))
    })?;
    Ok(ServedModel::new(
        client,
        spec.clone(),
        tokenizer,
        listed.max_model_len,
    ))
}

impl Runner {
    /// Whether the side is a model run for this evaluation (which can be run twice), not a
    /// recorded run.
    fn runs_a_model(&self) -> bool {
        matches!(self, Self::Model(_) | Self::Endpoint(_))
    }

    async fn of(
        runtime: &EvalRuntime,
        ctx: &ShardContext,
        spec: &EvaluationSpec,
        side: SideName,
    ) -> Result<Self, ShardError> {
        let field = side.as_str();
        match spec.side(side) {
            Side::Model(model) => Ok(Self::Model(runtime.model_spec(model, field)?)),
            Side::Endpoint(e) => {
                let served = served_model(runtime, ctx, &e.endpoint, field).await?;
                Ok(Self::Endpoint(Box::new(served)))
            }
            Side::Predictions(p) => {
                let predictions = ctx
                    .store
                    .get_predictions(&p.predictions)
                    .await?
                    .ok_or_else(|| {
                        ShardError::fatal(format!(
                            "{field}: recorded run {} is gone",
                            p.predictions
                        ))
                    })?;
                let filter = chosen_filter(&spec.task, &predictions)
                    .map_err(|e| ShardError::fatal(format!("{field}: {e}")))?;
                Ok(Self::Recorded {
                    predictions: predictions.id,
                    filter,
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn results(
        &self,
        runtime: &EvalRuntime,
        ctx: &ShardContext,
        spec: &EvaluationSpec,
        rows: &[DatasetRow],
        items: &[Item],
        cancel: &CancelFlag,
        side: SideName,
    ) -> Result<Vec<SideResult>, ShardError> {
        let field = side.as_str();
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let instances = Instances {
            items,
            ids: &ids,
            side,
        };
        match self {
            Self::Model(model) => score_side(runtime, model, spec, &instances, cancel)
                .await
                .map_err(|e| engine_failure(ctx, e, &format!("{field} model"))),
            Self::Endpoint(served) => score_served(runtime, served, spec, &instances, &ctx.stop)
                .await
                .map_err(|e| endpoint_failure(ctx, e, field)),
            Self::Recorded {
                predictions,
                filter,
            } => {
                let by_doc =
                    load_recorded_for(ctx.store.as_ref(), predictions, filter, &ids).await?;
                rows.iter()
                    .map(|row| {
                        let recorded = by_doc.get(&row.id).ok_or_else(|| {
                            ShardError::fatal(format!(
                                "{field}: the recorded run has no doc_id {}",
                                row.id
                            ))
                        })?;
                        recorded_result(recorded, &spec.task)
                    })
                    .collect()
            }
        }
    }
}

/// Runs the shard's remaining instances (rows stored by an earlier attempt are skipped).
pub async fn run_shard(
    runtime: &EvalRuntime,
    ctx: &ShardContext,
    spec: &EvaluationSpec,
) -> Result<(), ShardError> {
    let Some(crate::spec::DatasetRef::Id(dataset_id)) = &spec.dataset else {
        return Err(ShardError::fatal("the job names no uploaded dataset"));
    };
    let old = Runner::of(runtime, ctx, spec, SideName::Old).await?;
    let new = Runner::of(runtime, ctx, spec, SideName::New).await?;
    let (start, end) = (ctx.claim.start, ctx.claim.end);
    let stored: HashSet<i64> = ctx
        .store
        .instance_indices(&ctx.claim.fence.job_id, start, end)
        .await?
        .into_iter()
        .collect();
    let rows: Vec<DatasetRow> = ctx
        .store
        .dataset_rows(dataset_id, start, end)
        .await?
        .into_iter()
        .filter(|row| !stored.contains(&row.idx))
        .collect();
    let mut done = stored.len() as i64;
    ctx.set_done(done);

    let cancel = CancelFlag::new();
    let watcher = {
        let cancel = cancel.clone();
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            cancel.cancel();
        })
    };
    let chunk = (spec.options.batch_size as usize * 8).max(32);
    let result = async {
        for rows in rows.chunks(chunk) {
            ctx.check()?;
            let items = rows
                .iter()
                .map(|row| {
                    row.item().map_err(|e| {
                        ShardError::fatal(format!("dataset row {} does not parse: {e}", row.idx))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut old_results = old
                .results(runtime, ctx, spec, rows, &items, &cancel, SideName::Old)
                .await?;
            if spec.options.noise_floor && old.runs_a_model() {
                let rerun = rerun_scores(&old, runtime, ctx, spec, rows, &items, &cancel).await?;
                for (side, score) in old_results.iter_mut().zip(rerun) {
                    side.rerun_score = Some(score);
                }
            }
            let new_results = new
                .results(runtime, ctx, spec, rows, &items, &cancel, SideName::New)
                .await?;
            let records: Vec<InstanceRecord> = rows
                .iter()
                .zip(&items)
                .zip(old_results.into_iter().zip(new_results))
                .map(|((row, item), (o, n))| record(row, item, spec, o, n))
                .collect();
            done += records.len() as i64;
            ctx.write_instances(&records, done).await?;
            runtime
                .stats
                .instances_scored
                .inc_by(2 * records.len() as u64);
        }
        Ok(())
    }
    .await;
    watcher.abort();
    result
}
