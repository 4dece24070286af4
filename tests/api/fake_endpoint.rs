//! A small OpenAI-compatible server that misbehaves as remote servers do (429 with
//! Retry-After, 500s, requests that hang) or answers every prompt with "4"; it records what it
//! was sent. Used by the endpoint client's tests and by the dashboard's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use muscle::endpoint::{EndpointPolicy, Endpoints};
use serde_json::{Value, json};

use crate::helpers::Options;

pub const KEY: &str = "sk-test-secret-7f3a";
pub const KEY_VAR: &str = "MUSCLE_ENDPOINT_KEY_TEST";

/// What the server does with the next POST /v1/completions.
#[derive(Debug, Clone, Copy)]
pub enum Act {
    /// A status with a body naming the key and the server's address (which must not leak).
    Status(u16, Option<u64>),
    /// Never answers.
    Hang,
    /// Answers "4" to every prompt (a seeded draw: "4" or "5" by the seed's parity), after a
    /// pause.
    Answer(Duration),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
pub struct Script {
    pub acts: Mutex<VecDeque<Act>>,
    /// What to do once `acts` is spent.
    then: Mutex<Option<Act>>,
    pub seen: Mutex<Vec<Seen>>,
    in_flight: Mutex<(usize, usize)>,
    address: Mutex<String>,
}

pub struct FakeServer {
    pub script: Arc<Script>,
    pub address: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(acts: Vec<Act>, then: Act) -> Self {
        let script = Arc::new(Script::default());
        *script.acts.lock().unwrap() = acts.into();
        *script.then.lock().unwrap() = Some(then);
        let router = axum::Router::new()
            .route("/v1/models", get(models))
            .route(
                "/moved/v1/models",
                get(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/v1/models")]) }),
            )
            .route("/v1/completions", post(completions))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        *script.address.lock().unwrap() = address.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            script,
            address,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    pub fn most_in_flight(&self) -> usize {
        self.script.in_flight.lock().unwrap().1
    }

    /// An app whose policy allows this server, with the test key set.
    pub fn options(&self) -> Options {
        Options {
            endpoints: self.endpoints(),
            ..Options::default()
        }
    }

    /// A policy that allows this server, with the test key set.
    pub fn endpoints(&self) -> Arc<Endpoints> {
        Arc::new(Endpoints::new(
            EndpointPolicy::new(
                std::slice::from_ref(&self.address),
                [(KEY_VAR.to_string(), KEY.to_string())],
            )
            .unwrap(),
        ))
    }

    pub fn side(&self, extra: Value) -> Value {
        let mut endpoint = json!({
            "url": format!("http://{}/v1", self.address),
            "model": "served-model",
            "tokenizer": "models/llama-gqa",
            "api_key_env": KEY_VAR,
        });
        for (key, value) in extra.as_object().unwrap() {
            endpoint[key] = value.clone();
        }
        json!({ "endpoint": endpoint })
    }
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": "served-model", "object": "model", "owned_by": "test", "max_model_len": 256},
        {"id": "other-model", "object": "model"},
    ]}))
}

async fn completions(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    script.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body: body.clone(),
    });
    let act = script
        .acts
        .lock()
        .unwrap()
        .pop_front()
        .or(*script.then.lock().unwrap())
        .unwrap();
    match act {
        Act::Status(code, retry_after) => {
            let address = script.address.lock().unwrap().clone();
            let mut response = (
                StatusCode::from_u16(code).unwrap(),
                format!("overloaded: key {KEY} at http://{address}/v1"),
            )
                .into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
            }
            response
        }
        Act::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Act::Answer(pause) => {
            {
                let mut flight = script.in_flight.lock().unwrap();
                flight.0 += 1;
                flight.1 = flight.1.max(flight.0);
            }
            tokio::time::sleep(pause).await;
            script.in_flight.lock().unwrap().0 -= 1;
            let prompts = match &body["prompt"] {
                Value::Array(items) if items.first().is_some_and(Value::is_array) => items.len(),
                _ => 1,
            };
            // A seeded draw answers by its seed's parity, so draws differ as a server's do.
            let text = match body["seed"].as_i64() {
                Some(seed) if seed % 2 == 1 => "5",
                _ => "4",
            };
            let choices: Vec<Value> = (0..prompts)
                .map(|index| json!({"index": index, "text": text, "finish_reason": "stop"}))
                .collect();
            let mut response = Json(json!({
                "object": "text_completion",
                "model": "served-model",
                "system_fingerprint": "fp-test",
                "choices": choices,
            }))
            .into_response();
            response
                .headers_mut()
                .insert("server", "fake-vllm/0".parse().unwrap());
            response
        }
    }
}
