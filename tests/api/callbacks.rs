//! Job-end callbacks: signed, to allowed hosts only, retried until the receiver takes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use muscle::callback::{CallbackPolicy, verify};
use muscle::http::HttpOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

const SECRET_ENV: &str = "MUSCLE_CALLBACK_SECRET_TEST";
const SECRET: &[u8] = b"a secret only the receiver knows";

/// What the receiver was sent: headers and body of each call.
type Calls = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver on a free port that answers 503 to the first `refusals` calls, then 204.
async fn receiver(refusals: usize) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let recorded = calls.clone();
    let app = axum::Router::new().route(
        "/hooks/muscle",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let mut calls = recorded.lock().unwrap();
                calls.push((headers, body.to_vec()));
                if calls.len() <= refusals {
                    AxumStatus::SERVICE_UNAVAILABLE
                } else {
                    AxumStatus::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address.to_string(), calls)
}

fn options(host: &str, workers: usize) -> Options {
    Options {
        workers,
        http: HttpOptions {
            max_body_bytes: 1 << 20,
            callbacks: CallbackPolicy::new(
                &[host.to_string()],
                [(SECRET_ENV.to_string(), SECRET.to_vec())],
            )
            .unwrap(),
            ..Default::default()
        },
        ..Options::default()
    }
}

async fn calls_reaching(calls: &Calls, n: usize) -> Vec<(HeaderMap, Vec<u8>)> {
    for _ in 0..200 {
        if calls.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    calls.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_evaluation_is_posted_signed_and_retried_until_taken() {
    let (host, calls) = receiver(1).await;
    let hook = format!("http://{host}/hooks/muscle");
    on_every_backend(
        || options(&host, 1),
        |app| {
            let calls = calls.clone();
            let hook = hook.clone();
            async move {
                calls.lock().unwrap().clear();
                let dataset = app.upload_ok(MC_ROWS).await;
                let mut spec = evaluation_spec(&dataset);
                spec["callback"] = json!({"url": hook, "secret_env": SECRET_ENV});
                let response = app.post_json("/v1/evaluations", &spec).await;
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                let location = response.headers()["location"].to_str().unwrap().to_string();
                let done = app.wait_finished(&location).await;
                assert_eq!(done["status"], "succeeded", "{done}");
                assert_eq!(done["spec"]["callback"]["secret_env"], SECRET_ENV);

                // Refused once (503), taken on the retry a second later; never sent again.
                let received = calls_reaching(&calls, 2).await;
                assert_eq!(received.len(), 2, "the callback was not retried");
                tokio::time::sleep(Duration::from_millis(1500)).await;
                assert_eq!(calls.lock().unwrap().len(), 2, "sent again after a 2xx");

                let id = done["id"].as_str().unwrap();
                for (n, (headers, body)) in received.iter().enumerate() {
                    let signature = headers["x-muscle-signature"].to_str().unwrap();
                    assert!(verify(SECRET, body, signature), "bad signature {signature}");
                    assert!(!verify(b"another secret", body, signature));
                    assert_eq!(headers["content-type"], "application/json");
                    assert_eq!(headers["x-muscle-event"], "evaluation.succeeded");
                    assert_eq!(
                        headers["x-muscle-delivery"],
                        format!("{id}-{}", n + 1).as_str()
                    );
                    // The body is the evaluation as GET answers it, final report included.
                    let sent: Value = serde_json::from_slice(body).unwrap();
                    assert_eq!(sent, done);
                    assert_eq!(sent["report"]["n"], 6);
                }
                app
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_reported_too() {
    let (host, calls) = receiver(0).await;
    let hook = format!("http://{host}/hooks/muscle");
    on_every_backend(
        || options(&host, 0),
        |app| {
            let calls = calls.clone();
            let hook = hook.clone();
            async move {
                calls.lock().unwrap().clear();
                let dataset = app.upload_ok(MC_ROWS).await;
                let mut spec = evaluation_spec(&dataset);
                spec["callback"] = json!({"url": hook, "secret_env": SECRET_ENV});
                let created: Value = app
                    .post_json("/v1/evaluations", &spec)
                    .await
                    .json()
                    .await
                    .unwrap();
                let id = created["id"].as_str().unwrap();
                // Queued jobs send nothing.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                assert!(calls.lock().unwrap().is_empty());
                let cancel = app
                    .post_json(&format!("/v1/evaluations/{id}/cancel"), &json!({}))
                    .await;
                assert_eq!(cancel.status(), StatusCode::OK);
                let received = calls_reaching(&calls, 1).await;
                assert_eq!(received.len(), 1);
                let (headers, body) = &received[0];
                assert_eq!(headers["x-muscle-event"], "evaluation.cancelled");
                let signature = headers["x-muscle-signature"].to_str().unwrap();
                assert!(verify(SECRET, body, signature));
                let sent: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(sent["status"], "cancelled");
                app
            }
        },
    )
    .await;
}

#[tokio::test]
async fn callbacks_to_other_hosts_or_with_unknown_secrets_are_refused() {
    let (host, calls) = receiver(0).await;
    on_every_backend(
        || options(&host, 0),
        |app| {
            let host = host.clone();
            async move {
                let dataset = app.upload_ok(MC_ROWS).await;
                let mut spec = evaluation_spec(&dataset);
                spec["callback"] = json!({
                    "url": "https://attacker.example/steal",
                    "secret_env": "DATABASE_URL",
                });
                let problem = app.refused("/v1/evaluations", &spec).await;
                assert_eq!(
                    fields(&problem),
                    vec!["callback.url", "callback.secret_env"],
                    "{problem}"
                );
                spec["callback"] = json!({
                    "url": format!("http://{host}/hooks/muscle"),
                    "secret_env": "MUSCLE_CALLBACK_SECRET_UNSET",
                });
                let problem = app.refused("/v1/evaluations", &spec).await;
                assert_eq!(fields(&problem), vec!["callback.secret_env"]);
                spec["callback"] =
                    json!({"url": "http://x/", "secret_env": SECRET_ENV, "token": 1});
                let problem = app.refused("/v1/evaluations", &spec).await;
                assert!(problem.to_string().contains("token"), "{problem}");
                app
            }
        },
    )
    .await;
    assert!(calls.lock().unwrap().is_empty());
}

/// A receiver that accepts connections and never answers; the connections it has taken.
async fn hanging_receiver() -> (String, Arc<Mutex<Vec<tokio::net::TcpStream>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    let holding = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            holding.lock().unwrap().push(stream);
        }
    });
    (address.to_string(), held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_another_jobs_callback() {
    let (hanging, held) = hanging_receiver().await;
    let (healthy, calls) = receiver(0).await;
    on_every_backend(
        || Options {
            workers: 0,
            http: HttpOptions {
                max_body_bytes: 1 << 20,
                callbacks: CallbackPolicy::new(
                    &[hanging.clone(), healthy.clone()],
                    [(SECRET_ENV.to_string(), SECRET.to_vec())],
                )
                .unwrap(),
                ..Default::default()
            },
            ..Options::default()
        },
        |app| {
            let (hanging, healthy) = (hanging.clone(), healthy.clone());
            let (held, calls) = (held.clone(), calls.clone());
            async move {
                held.lock().unwrap().clear();
                calls.lock().unwrap().clear();
                let dataset = app.upload_ok(MC_ROWS).await;
                let submit = |host: String| {
                    let mut spec = evaluation_spec(&dataset);
                    spec["callback"] = json!({"url": format!("http://{host}/hooks/muscle"),
                                              "secret_env": SECRET_ENV});
                    let app = &app;
                    async move {
                        let created: Value = app
                            .post_json("/v1/evaluations", &spec)
                            .await
                            .json()
                            .await
                            .unwrap();
                        created["id"].as_str().unwrap().to_string()
                    }
                };
                let cancel = |id: String| {
                    let app = &app;
                    async move {
                        let path = format!("/v1/evaluations/{id}/cancel");
                        let response = app.post_json(&path, &json!({})).await;
                        assert_eq!(response.status(), StatusCode::OK);
                    }
                };
                // Six jobs end, each calling back a receiver that never answers.
                for _ in 0..6 {
                    let id = submit(hanging.clone()).await;
                    cancel(id).await;
                }
                let pending = submit(healthy.clone()).await;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while held.lock().unwrap().is_empty() {
                    assert!(tokio::time::Instant::now() < deadline, "no hanging call");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }

                // With those attempts hanging, another job's callback still goes out at once.
                let ended = tokio::time::Instant::now();
                cancel(pending.clone()).await;
                while calls.lock().unwrap().is_empty() {
                    assert!(
                        ended.elapsed() < Duration::from_secs(3),
                        "the healthy callback waited behind the hanging ones"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let (headers, _) = calls.lock().unwrap()[0].clone();
                assert_eq!(
                    headers["x-muscle-delivery"],
                    format!("{pending}-1").as_str()
                );
                // The six hanging attempts are in flight side by side, none answered yet.
                assert_eq!(held.lock().unwrap().len(), 6);
                app
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_bad_allowed_host_stops_the_server_from_starting() {
    let output = muscle_exits(
        "serve",
        &[("MUSCLE_CALLBACK_HOSTS", "ci.example.com,[fd00::1:443")],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MUSCLE_CALLBACK_HOSTS") && stderr.contains("[fd00::1:443"),
        "{stderr}"
    );
}
