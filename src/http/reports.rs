//! Reading an evaluation's results: the instances listing, report.md and instances.csv.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::evaluations::load;
use super::extract::ApiQuery;
use super::jobs::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::domain::InstanceRecord;
use crate::evaluation::{InstanceInput, InstanceView, inputs_of, markdown};
use crate::metrics::{Flip, Verdict};
use crate::spec::EvaluationSpec;
use crate::store::{InstanceFilter, Job, PageRequest, Store, StoreResult};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances))
        .routes(routes!(report_markdown))
        .routes(routes!(instances_csv))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceParams {
    /// Only instances with this outcome.
    pub flip: Option<Flip>,
    /// With sampling, once the evaluation has finished: only instances whose sampled outputs
    /// got reliably worse, reliably better, or did not reliably change.
    pub verdict: Option<Verdict>,
    /// Only instances in this slice (`answer=1`, `topic=physics`), as named in the report.
    pub slice: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{0,18}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstancePage {
    pub items: Vec<InstanceView>,
    pub next_cursor: Option<String>,
}

fn instance_filter(params: InstanceParams) -> ApiResult<InstanceFilter> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    // `?cursor=` is the first page; instance cursors are dataset positions read as i64.
    let cursor = params.cursor.filter(|c| !c.is_empty());
    if let Some(cursor) = &cursor
        && !cursor.parse::<i64>().is_ok_and(|c| c >= 0)
    {
        return Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor this API handed out",
        ));
    }
    Ok(InstanceFilter {
        flip: params.flip,
        verdict: params.verdict,
        slice: params.slice,
        page: PageRequest { limit, cursor },
    })
}

/// Per-instance results, in dataset order, filtered by outcome and slice.
#[utoipa::path(
    get,
    path = "/evaluations/{id}/instances",
    tag = "evaluations",
    params(("id" = String, Path, description = "Evaluation id"), InstanceParams),
    responses(
        (status = 200, body = InstancePage),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_instances(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<InstanceParams>,
) -> ApiResult<Json<InstancePage>> {
    let filter = instance_filter(params)?;
    let job = load(&state, &id).await?;
    let unknown = match &filter.slice {
        Some(slice) => unknown_slice(&state, &job, slice).await?,
        None => None,
    };
    if let Some(Unknown::Surely(refusal)) = unknown {
        return Err(refusal);
    }
    let page = state.store.list_instances(&job.id, &filter).await?;
    // A slice the report omits is known by its instances: none on the first page, none at all.
    if let Some(Unknown::Unless(refusal)) = unknown
        && page.items.is_empty()
        && filter.page.cursor.is_none()
    {
        return Err(refusal);
    }
    let spec: EvaluationSpec = job.read_spec()?;
    let mut inputs = inputs_of(state.store.as_ref(), &spec, &page.items).await?;
    Ok(Json(InstancePage {
        items: page
            .items
            .into_iter()
            .map(|r| {
                let input = inputs.remove(&r.idx);
                InstanceView::of(r, input)
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Known slices a refusal names at most.
const SLICES_NAMED: usize = 20;

/// A slice the report does not list, and its refusal.
enum Unknown {
    /// The report lists every slice: this one does not exist.
    Surely(ApiError),
    /// The report omits slices: this one does not exist unless an instance is in it.
    Unless(ApiError),
}

/// A slice the report does not know is a 422 naming some it does (a typo would otherwise list
/// nothing, silently). Before anything is scored no slice is known, and none is refused.
async fn unknown_slice(state: &AppState, job: &Job, slice: &str) -> ApiResult<Option<Unknown>> {
    let Some(report) = state.reports.report(state.store.as_ref(), job).await? else {
        return Ok(None);
    };
    let known: Vec<&str> = report.slices.iter().map(|s| s.slice.as_str()).collect();
    if known.is_empty() || known.contains(&slice) {
        return Ok(None);
    }
    let omitted = report.slices_omitted;
    let listed = known.len().min(SLICES_NAMED);
    let more = match (known.len() - listed) as u64 + omitted {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let refusal = ApiError::invalid_field(
        "slice",
        format!(
            "no slice {slice:?} in this evaluation (known: {}{more})",
            known[..listed].join(", ")
        ),
    );
    Ok(Some(if omitted > 0 {
        Unknown::Unless(refusal)
    } else {
        Unknown::Surely(refusal)
    }))
}

const FIRST_NEGATIVE_FLIPS: i64 = 10;

/// A Markdown summary for a pull-request comment: verdict, headline table, worst slices, first
/// negative flips.
///
/// Names, prompts, outputs and choices are escaped: they render as the text they are, never as
/// HTML, emphasis, code or links.
#[utoipa::path(
    get,
    path = "/evaluations/{id}/report.md",
    tag = "evaluations",
    params(("id" = String, Path, description = "Evaluation id")),
    responses(
        (status = 200, body = String, content_type = "text/markdown"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn report_markdown(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = load(&state, &id).await?;
    let report = state.reports.report(state.store.as_ref(), &job).await?;
    let flips = state
        .store
        .list_instances(
            &job.id,
            &InstanceFilter {
                flip: Some(Flip::Negative),
                verdict: None,
                slice: None,
                page: PageRequest {
                    limit: FIRST_NEGATIVE_FLIPS,
                    cursor: None,
                },
            },
        )
        .await?;
    let inputs = inputs_of(state.store.as_ref(), &job.read_spec()?, &flips.items).await?;
    let text = markdown::render(&job, report.as_deref(), &flips.items, &inputs);
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        text,
    )
        .into_response())
}

const CSV_PAGE: i64 = 1000;
const CSV_HEADER: [&str; 24] = [
    "index",
    "id",
    "flip",
    "gold",
    "tags",
    "old_prediction",
    "old_correct",
    "old_score",
    "old_output",
    "old_scores",
    "new_prediction",
    "new_correct",
    "new_score",
    "new_output",
    "new_scores",
    "prompt",
    "choices",
    "targets",
    "old_p",
    "new_p",
    "old_samples",
    "new_samples",
    "verdict",
    "q_value",
];

/// Text a spreadsheet will not run: a cell starting with `=`, `+`, `-`, `@`, TAB or CR opens as
/// a formula (`=HYPERLINK(...)`), so it gets a leading `'`, as OWASP advises for CSV exports.
fn inert(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// One instance as CSV cells: numbers as they are, every text neutralised.
fn csv_row(record: &InstanceRecord, input: Option<&InstanceInput>) -> Vec<String> {
    let mut row = vec![
        record.idx.to_string(),
        inert(record.id.clone()),
        record.flip.as_str().to_string(),
        record.gold.map(|g| g.to_string()).unwrap_or_default(),
        inert(json_text(&record.tags)),
    ];
    for side in [&record.old, &record.new] {
        row.push(side.prediction.map(|p| p.to_string()).unwrap_or_default());
        row.push(side.correct.map(|c| c.to_string()).unwrap_or_default());
        row.push(json_text(&side.score));
        row.push(side.output.clone().map(inert).unwrap_or_default());
        row.push(
            side.scores
                .as_ref()
                .map(|s| inert(json_text(s)))
                .unwrap_or_default(),
        );
    }
    let list = |l: Option<&Vec<String>>| {
        l.map(|l| inert(serde_json::to_string(l).unwrap_or_default()))
            .unwrap_or_default()
    };
    row.push(inert(input.map(|i| i.prompt.clone()).unwrap_or_default()));
    row.push(list(input.and_then(|i| i.choices.as_ref())));
    row.push(list(input.and_then(|i| i.targets.as_ref())));
    for side in [&record.old, &record.new] {
        row.push(side.p.map(|p| json_text(&p)).unwrap_or_default());
    }
    for side in [&record.old, &record.new] {
        row.push(if side.samples.is_empty() {
            String::new()
        } else {
            inert(json_text(&side.samples))
        });
    }
    row.push(
        record
            .sampled
            .map(|s| s.verdict.as_str().to_string())
            .unwrap_or_default(),
    );
    row.push(
        record
            .sampled
            .map(|s| json_text(&s.q_value))
            .unwrap_or_default(),
    );
    row
}

fn csv_bytes(rows: impl IntoIterator<Item = Vec<String>>) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.write_record(&row)?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// One page of CSV rows and the cursor of the next.
async fn csv_page(
    store: &Store,
    job: &Job,
    spec: &EvaluationSpec,
    cursor: Option<String>,
) -> StoreResult<(Vec<Vec<String>>, Option<String>)> {
    let filter = InstanceFilter {
        page: PageRequest {
            limit: CSV_PAGE,
            cursor,
        },
        ..Default::default()
    };
    let page = store.list_instances(&job.id, &filter).await?;
    let inputs = inputs_of(store, spec, &page.items).await?;
    let rows = page
        .items
        .iter()
        .map(|r| csv_row(r, inputs.get(&r.idx)))
        .collect();
    Ok((rows, page.next_cursor))
}

/// Every instance row as CSV, streamed page by page.
///
/// A text cell that starts with `=`, `+`, `-`, `@`, TAB or CR is written with a leading `'`, so
/// that a spreadsheet does not run it as a formula; numbers are written as they are.
#[utoipa::path(
    get,
    path = "/evaluations/{id}/instances.csv",
    tag = "evaluations",
    params(("id" = String, Path, description = "Evaluation id")),
    responses(
        (status = 200, body = String, content_type = "text/csv"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn instances_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = load(&state, &id).await?;
    let spec: Arc<EvaluationSpec> = Arc::new(job.read_spec()?);
    let header = csv_bytes([CSV_HEADER.iter().map(|h| h.to_string()).collect()])
        .map_err(ApiError::internal)?;
    let store = state.store.clone();
    // State: None = not started, Some(None) = done, Some(Some(cursor)) = more to read.
    let pages = futures::stream::unfold(Some(None::<String>), move |next| {
        let store = store.clone();
        let job = job.clone();
        let spec = spec.clone();
        async move {
            let cursor = next?;
            match csv_page(&store, &job, &spec, cursor).await {
                Ok((rows, next_cursor)) => {
                    let bytes = csv_bytes(rows).map_err(|e| std::io::Error::other(e.to_string()));
                    Some((bytes, next_cursor.map(Some)))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(header) }).chain(pages);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"instances.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SideResult;

    #[test]
    fn csv_text_cells_cannot_open_as_formulas_and_numbers_stay_numbers() {
        let record = InstanceRecord {
            idx: 3,
            id: "=HYPERLINK(\"https://evil.example\",\"x\")".into(),
            flip: Flip::Negative,
            gold: Some(0),
            tags: [("topic".to_string(), "=1+1".to_string())].into(),
            old: SideResult {
                prediction: Some(0),
                correct: Some(true),
                scores: Some(vec![-1.5, -2.0]),
                output: Some("-2+3".into()),
                answer: None,
                score: -1.5,
                samples: vec![crate::domain::SampledOutput {
                    output: "=1+1".into(),
                    answer: None,
                    score: 1.0,
                }],
                p: Some(1.0),
                ..Default::default()
            },
            new: SideResult {
                prediction: Some(1),
                correct: Some(false),
                scores: None,
                output: Some("\t=cmd|' /C calc'!A0".into()),
                answer: None,
                score: -0.25,
                ..Default::default()
            },
            slices: vec![],
            sampled: Some(crate::domain::InstanceSampled {
                verdict: Verdict::Worse,
                q_value: 0.01,
            }),
        };
        let input = InstanceInput {
            prompt: "@SUM(A1:A9)".into(),
            choices: Some(vec!["+1".into(), "\r=2".into()]),
            targets: None,
        };
        let bytes = csv_bytes([
            CSV_HEADER.iter().map(|h| h.to_string()).collect(),
            csv_row(&record, Some(&input)),
        ])
        .unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let header = reader.headers().unwrap().clone();
        let row = reader.records().next().unwrap().unwrap();
        let cell = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(cell("id"), "'=HYPERLINK(\"https://evil.example\",\"x\")");
        assert_eq!(cell("old_output"), "'-2+3");
        assert_eq!(cell("new_output"), "'\t=cmd|' /C calc'!A0");
        assert_eq!(cell("prompt"), "'@SUM(A1:A9)");
        assert_eq!(cell("choices"), r#"["+1","\r=2"]"#);
        assert_eq!(cell("tags"), r#"{"topic":"=1+1"}"#);
        // Numbers are not text: a negative score is written as the number it is.
        assert_eq!(cell("old_score"), "-1.5");
        assert_eq!(cell("new_score"), "-0.25");
        assert_eq!(cell("old_samples"), r#"[{"output":"=1+1","score":1.0}]"#);
        assert_eq!((cell("old_p"), cell("new_p")), ("1.0", ""));
        assert_eq!((cell("verdict"), cell("q_value")), ("worse", "0.01"));
        assert_eq!(cell("old_scores"), "[-1.5,-2.0]");
        assert_eq!(cell("index"), "3");
        let numeric = ["old_score", "new_score"];
        for (name, value) in header.iter().zip(row.iter()) {
            assert!(
                numeric.contains(&name) || !value.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{name}: {value:?}"
            );
        }
    }
}
