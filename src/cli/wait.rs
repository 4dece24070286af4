//! `muscle wait ID --server URL`: blocks until a job on a server finishes, with one held
//! request (`?wait=30`) at a time rather than a polling loop, and prints its verdict line.
//!
//! Exit codes: 0 succeeded and the gate passed (or no gate), 1 the gate failed, 2 no such job,
//! 3 failed or cancelled (or the server could not be asked), 4 timed out.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::Value;

use super::common::{FAILED, GATE_FAILED, INVALID};
use crate::config::WaitArgs;
use crate::metrics::GateResult;

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

/// Where a job stands: finished (its JSON), or still queued/running at the deadline.
enum Outcome {
    Finished(Value),
    TimedOut(Value),
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
        let (status, job) = server
            .get(&format!("/v1/{kind}/{id}?wait={hold}"), hold)
            .await?;
        if status != StatusCode::OK {
            return Err(problem(status, &job));
        }
        match job["status"].as_str() {
            Some("queued" | "running") if left == 0 => return Ok(Outcome::TimedOut(job)),
            Some("queued" | "running") => continue,
            Some(_) => return Ok(Outcome::Finished(job)),
            None => bail!("the server's answer has no status: {job}"),
        }
    }
}

fn timed_out(args: &WaitArgs, what: &str, job: &Value) -> ExitCode {
    say!(
        "timed out after {} s: {what} {} is still {} ({} of {} done)",
        args.timeout,
        args.id,
        job["status"],
        job["progress"]["done"],
        job["progress"]["total"]
    );
    ExitCode::from(TIMED_OUT)
}

/// The verdict of a finished evaluation; None when it did not succeed (said on stderr).
fn verdict(what: &str, job: &Value) -> anyhow::Result<Option<GateResult>> {
    if job["status"] != "succeeded" {
        say!(
            "{what} {}: {}",
            job["status"].as_str().unwrap_or("?"),
            job["error"].as_str().unwrap_or("(no error given)")
        );
        return Ok(None);
    }
    let gate: GateResult = serde_json::from_value(job["report"]["gate"].clone())
        .context("the finished evaluation's report has no gate")?;
    Ok(Some(gate))
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
    if training["status"] != "succeeded" {
        say!(
            "training {}: {}",
            training["status"].as_str().unwrap_or("?"),
            training["error"].as_str().unwrap_or("(no error given)")
        );
        return Ok(ExitCode::from(FAILED));
    }
    say!("training succeeded: adapter {}", training["adapter"]);
    // The evaluations it queued: the trained adapter's gate decides, as for `muscle train`.
    let mut code = ExitCode::SUCCESS;
    let evaluations = training["evaluations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (key, entry) in &evaluations {
        let Some(eval_id) = entry["id"].as_str() else {
            continue;
        };
        let job = match follow(&server, "evaluations", eval_id, deadline).await? {
            Outcome::Finished(job) => job,
            Outcome::TimedOut(job) => return Ok(timed_out(args, "evaluation", &job)),
        };
        let Some(gate) = verdict(&format!("{key}:"), &job)? else {
            return Ok(ExitCode::from(FAILED));
        };
        say!("{key}: {}", gate.verdict());
        let trained = key == "old_vs_compat" || key == "before_vs_after";
        if trained && !gate.passed {
            code = ExitCode::from(GATE_FAILED);
        }
    }
    Ok(code)
}
