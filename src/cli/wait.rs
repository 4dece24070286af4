//! `muscle wait ID --server URL`: blocks until a job on a server finishes, with one held
//! request (`?wait=30`) at a time rather than a polling loop, and prints its verdict line.
//!
//! Exit codes: 0 succeeded and the gate passed (or no gate), 1 the gate failed, 2 no such job,
//! 3 failed or cancelled (or the server could not be asked), 4 timed out.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::common::{FAILED, GATE_FAILED, INVALID};
use crate::config::WaitArgs;
use crate::domain::JobStatus;
use crate::metrics::GateResult;
use crate::train::view::EvaluationsView;

pub const TIMED_OUT: u8 = 4;

/// The longest hold asked of the server per request.
const HOLD_SECONDS: u64 = 30;

pub async fn run(args: WaitArgs) -> ExitCode {
    match wait(&args).await {
        Ok(code) => code,
        Err(error) => {
            say!("error: {error:#}");
            ExitCode::from(FAILED)
        }
    }
}

struct Server {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Server {
    /// GET `path`: the status and the JSON body (a problem document on errors).
    async fn get(&self, path: &str, hold: u64) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url).timeout(Duration::from_secs(hold + 30));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("asking {url}"))?;
        let status = response.status();
        let body = response
            .json()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        Ok((status, body))
    }
}

fn problem(status: StatusCode, body: &Value) -> anyhow::Error {
    let detail = body["detail"]
        .as_str()
        .or(body["title"].as_str())
        .unwrap_or("");
    anyhow::anyhow!("the server answered {status}: {detail}")
}

/// What `muscle wait` reads of a job as the API answers it: an evaluation or a training.
#[derive(Debug, Deserialize)]
struct Watched {
    status: JobStatus,
    #[serde(default)]
    error: Option<String>,
    progress: Progress,
    /// An evaluation's report (its gate is all that is read).
    #[serde(default)]
    report: Option<GateOf>,
    /// A training's adapter and the evaluations it queued.
    #[serde(default)]
    adapter: Option<String>,
    #[serde(default)]
    evaluations: Option<EvaluationsView>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Progress {
    Instances { done: i64, total: i64 },
    Steps { step: i64, total_steps: i64 },
}

#[derive(Debug, Deserialize)]
struct GateOf {
    gate: GateResult,
}

/// Where a job stands: finished, or still queued/running at the deadline.
enum Outcome {
    Finished(Watched),
    TimedOut(Watched),
}

/// Holds `GET /v1/<kind>/<id>?wait=` requests until the job finishes or the deadline passes.
async fn follow(
    server: &Server,
    kind: &str,
    id: &str,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        let hold = left.min(HOLD_SECONDS);
        let (status, body) = server
            .get(&format!("/v1/{kind}/{id}?wait={hold}"), hold)
            .await?;
        if status != StatusCode::OK {
            return Err(problem(status, &body));
        }
        let job: Watched = serde_json::from_value(body)
            .with_context(|| format!("the server's answer for {kind}/{id}"))?;
        match job.status {
            JobStatus::Queued | JobStatus::Running if left == 0 => {
                return Ok(Outcome::TimedOut(job));
            }
            JobStatus::Queued | JobStatus::Running => continue,
            _ => return Ok(Outcome::Finished(job)),
        }
    }
}

fn timed_out(args: &WaitArgs, what: &str, job: &Watched) -> ExitCode {
    let (done, total) = match job.progress {
        Progress::Instances { done, total } => (done, total),
        Progress::Steps { step, total_steps } => (step, total_steps),
    };
    say!(
        "timed out after {} s: {what} {} is still \"{}\" ({done} of {total} done)",
        args.timeout,
        args.id,
        job.status.as_str(),
    );
    ExitCode::from(TIMED_OUT)
}

/// Says why a job did not succeed; true when it did.
fn succeeded(what: &str, job: &Watched) -> bool {
    if job.status != JobStatus::Succeeded {
        say!(
            "{what} {}: {}",
            job.status.as_str(),
            job.error.as_deref().unwrap_or("(no error given)")
        );
        return false;
    }
    true
}

/// The verdict of a finished evaluation; None when it did not succeed (said on stderr).
fn verdict(what: &str, job: &Watched) -> anyhow::Result<Option<GateResult>> {
    if !succeeded(what, job) {
        return Ok(None);
    }
    let report = job
        .report
        .as_ref()
        .context("the finished evaluation has no report")?;
    Ok(Some(report.gate.clone()))
}

async fn wait(args: &WaitArgs) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let server = Server {
        http: reqwest::Client::new(),
        base: args.server.trim_end_matches('/').to_string(),
        token: args.api_token.clone().filter(|t| !t.is_empty()),
    };
    let id = &args.id;
    let mut kind = "evaluations";
    let (status, body) = server.get(&format!("/v1/evaluations/{id}"), 0).await?;
    if status == StatusCode::NOT_FOUND {
        kind = "trainings";
        let (status, body) = server.get(&format!("/v1/trainings/{id}"), 0).await?;
        if status == StatusCode::NOT_FOUND {
            say!("{}: no evaluation or training {id}", server.base);
            return Ok(ExitCode::from(INVALID));
        }
        if status != StatusCode::OK {
            return Err(problem(status, &body));
        }
    } else if status != StatusCode::OK {
        return Err(problem(status, &body));
    }

    if kind == "evaluations" {
        let job = match follow(&server, kind, id, deadline).await? {
            Outcome::Finished(job) => job,
            Outcome::TimedOut(job) => return Ok(timed_out(args, "evaluation", &job)),
        };
        return Ok(match verdict("evaluation", &job)? {
            None => ExitCode::from(FAILED),
            Some(gate) => {
                say!("{}", gate.verdict());
                if gate.passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(GATE_FAILED)
                }
            }
        });
    }

    let training = match follow(&server, kind, id, deadline).await? {
        Outcome::Finished(job) => job,
        Outcome::TimedOut(job) => return Ok(timed_out(args, "training", &job)),
    };
    if !succeeded("training", &training) {
        return Ok(ExitCode::from(FAILED));
    }
    let adapter = serde_json::to_string(&training.adapter).context("the adapter")?;
    say!("training succeeded: adapter {adapter}");
    // The evaluations it queued: the trained adapter's gate decides, as for `muscle train`.
    let mut code = ExitCode::SUCCESS;
    let pairs = training.evaluations.map(|e| e.pairs).unwrap_or_default();
    for (pair, state) in &pairs {
        let job = match follow(&server, "evaluations", &state.id, deadline).await? {
            Outcome::Finished(job) => job,
            Outcome::TimedOut(job) => return Ok(timed_out(args, "evaluation", &job)),
        };
        let Some(gate) = verdict(&format!("{}:", pair.key()), &job)? else {
            return Ok(ExitCode::from(FAILED));
        };
        say!("{}: {}", pair.key(), gate.verdict());
        if pair.judges_the_adapter() && !gate.passed {
            code = ExitCode::from(GATE_FAILED);
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::result::EvaluationPair;

    #[test]
    fn a_training_document_is_read_with_its_evaluations_and_their_change() {
        let training: Watched = serde_json::from_value(serde_json::json!({
            "status": "succeeded",
            "progress": {"step": 8, "total_steps": 8, "epoch": 2},
            "adapter": "trained/compat",
            "evaluations": {
                "old_vs_new": {"id": "e1", "status": "succeeded"},
                "old_vs_compat": {"id": "e2", "status": "running"},
                "nfr_change": {"absolute": -0.01, "relative": null},
                "accuracy_change": 0.02
            }
        }))
        .unwrap();
        let evaluations = training.evaluations.unwrap();
        let ids: Vec<(EvaluationPair, &str)> = evaluations
            .pairs
            .iter()
            .map(|(pair, state)| (*pair, state.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                (EvaluationPair::OldVsNew, "e1"),
                (EvaluationPair::OldVsCompat, "e2")
            ]
        );
        assert_eq!(evaluations.accuracy_change, Some(0.02));
        assert!(matches!(training.progress, Progress::Steps { step: 8, .. }));
    }
}
