use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

fn compatibility_spec(dataset: &str) -> Value {
    json!({
        "name": "compat",
        "objective": "compatibility",
        "old": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-list"},
        "new": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-all"},
        "dataset": dataset,
        "output": "adapters/new-compat-test",
        "hyperparameters": {"epochs": 2, "batch_size": 2},
        "evaluate": {"dataset": dataset, "task": {"type": "multiple_choice"}, "gate": [{"metric": "btc", "min": 0.5}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trainings_are_queued_listed_and_cancelled() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .post_json("/v1/trainings", &compatibility_spec(&dataset))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["status"], "queued");
        // 6 rows: 1 held out (20%), 5 to train, 3 steps of 2 per epoch, 2 epochs.
        assert_eq!(
            created["progress"],
            json!({"step": 0, "total_steps": 6, "epoch": 1})
        );
        assert_eq!(
            created["spec"]["hyperparameters"]["rank"], 16,
            "defaults are filled in"
        );
        assert_eq!(created["history"], json!([]));

        let fetched: Value = app.get(&location).await.json().await.unwrap();
        assert_eq!(fetched["id"], created["id"]);
        let listed: Value = app
            .get("/v1/trainings?status=queued")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["items"][0]["id"], created["id"]);
        let evaluations: Value = app.get("/v1/evaluations").await.json().await.unwrap();
        assert_eq!(
            evaluations["items"],
            json!([]),
            "trainings are not evaluations"
        );

        let cancelled = app
            .client
            .post(app.url(&format!("{location}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), StatusCode::OK);
        let cancelled: Value = cancelled.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        problem(
            app.client
                .post(app.url(&format!("{location}/cancel")))
                .send()
                .await
                .unwrap(),
            StatusCode::CONFLICT,
        )
        .await;
        problem(
            app.get("/v1/trainings/missing").await,
            StatusCode::NOT_FOUND,
        )
        .await;
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_training_specs_name_every_field() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let mut spec = compatibility_spec(&dataset);
        spec.as_object_mut().unwrap().remove("old");
        spec["output"] = json!("models/llama-gqa");
        spec["hyperparameters"] = json!({"learning_rate": 0, "mask": "muscle"});
        spec["evaluate"]["gate"] = json!([{"metric": "nfr"}]);
        let body = app.refused("/v1/trainings", &spec).await;
        assert_eq!(
            fields(&body),
            vec![
                "old",
                "output",
                "hyperparameters.learning_rate",
                "evaluate.gate[0].min"
            ]
        );
        let mut spec = compatibility_spec(&dataset);
        spec["hyperparameters"]["mask"] = json!("random");
        let body = app.refused("/v1/trainings", &spec).await;
        assert_eq!(fields(&body), vec!["hyperparameters.mask"]);
        let mut spec = compatibility_spec("missing");
        spec["evaluate"]["dataset"] = json!("missing-too");
        let body = app.refused("/v1/trainings", &spec).await;
        assert_eq!(fields(&body), vec!["dataset", "evaluate.dataset"]);
        let listed: Value = app.get("/v1/trainings").await.json().await.unwrap();
        assert_eq!(listed["items"], json!([]));
        app
    })
    .await;
}

/// A model root of its own: the fixture Llama and its adapters, a file, a dangling symbolic
/// link, and hidden folders holding adapters.
fn model_root() -> tempfile::TempDir {
    let root = own_model_root();
    std::fs::write(root.path().join("notes.txt"), "a file").unwrap();
    std::os::unix::fs::symlink(root.path().join("gone"), root.path().join("dangling")).unwrap();
    for hidden in ["trained/.0190-job.partial", ".cache/lora"] {
        copy_dir(
            &model_dir().join("adapters/llama-gqa-lora-all"),
            &root.path().join(hidden),
        );
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_cannot_be_written_or_listed_are_refused_at_submission() {
    let root = model_root();
    let long = format!("trained/{}", "x".repeat(300));
    let cases = [
        ("notes.txt/adapter", "\"notes.txt\" is a file, not a folder"),
        (long.as_str(), "is 300 bytes long"),
        ("dangling", "already exists"),
        (
            "dangling/adapter",
            "\"dangling\" is a symbolic link to nothing",
        ),
        ("trained", "is the folder adapters are written under"),
        ("./trained/", "is the folder adapters are written under"),
        ("adapters/llama-gqa-lora-all", "already exists"),
        (
            "adapters/llama-gqa-lora-all/compat",
            "\"adapters/llama-gqa-lora-all\" is an adapter folder",
        ),
        (
            "models/llama-gqa/compat",
            "\"models/llama-gqa\" is a model folder",
        ),
        ("trained/.compat", "hidden folders are not listed"),
    ];
    on_every_backend(
        || Options {
            model_dir: root.path().to_path_buf(),
            ..Options::api_only()
        },
        |app| {
            async move {
                let dataset = app.upload_ok(MC_ROWS).await;
                for (output, message) in cases {
                    let mut spec = compatibility_spec(&dataset);
                    spec["output"] = json!(output);
                    let problem = app.refused("/v1/trainings", &spec).await;
                    assert_eq!(fields(&problem), vec!["output"], "{output}: {problem}");
                    let said = problem["errors"][0]["message"].as_str().unwrap();
                    assert!(said.contains(message), "{output}: {said}");
                }
                let listed: Value = app.get("/v1/trainings").await.json().await.unwrap();
                assert_eq!(listed["items"], json!([]));

                // Hidden folders holding an adapter (a partial install, a cache) are not listed.
                let models: Value = app.get("/v1/models").await.json().await.unwrap();
                let adapters: Vec<&str> = models["adapters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["name"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    adapters,
                    [
                        "adapters/llama-gqa-lora-all",
                        "adapters/llama-gqa-lora-list"
                    ]
                );
                app
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_trainings_writing_one_output_are_accepted_once() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let spec = compatibility_spec(&dataset);
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
        let mut posts = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (client, url, spec) = (app.client.clone(), app.url("/v1/trainings"), spec.clone());
            let start = start.clone();
            posts.spawn(async move {
                start.wait().await;
                let response = client.post(url).json(&spec).send().await.unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            });
        }
        let answers = posts.join_all().await;
        let accepted: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::ACCEPTED)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(accepted.len(), 1, "{answers:?}");
        let id = accepted[0]["id"].as_str().unwrap();
        for (status, body) in &answers {
            if *status != StatusCode::ACCEPTED {
                assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
                assert_eq!(fields(body), vec!["output"], "{body}");
                let message = body["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains(id), "{message}");
            }
        }
        // The same folder written another way is the same output.
        let mut other = spec.clone();
        other["output"] = json!("./adapters//new-compat-test/");
        let problem = app.refused("/v1/trainings", &other).await;
        assert_eq!(fields(&problem), vec!["output"], "{problem}");

        // A replay of the accepted request (same Idempotency-Key) answers with its job.
        let keyed = |spec: &Value| {
            app.client
                .post(app.url("/v1/trainings"))
                .header("idempotency-key", "train-once")
                .json(spec)
                .send()
        };
        let mut spec = spec;
        spec["output"] = json!("adapters/keyed");
        let first: Value = keyed(&spec).await.unwrap().json().await.unwrap();
        let again = keyed(&spec).await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["id"], first["id"]);

        // A cancelled training frees its output.
        let cancel = app
            .post_json(&format!("/v1/trainings/{id}/cancel"), &json!({}))
            .await;
        assert_eq!(cancel.status(), StatusCode::OK);
        let response = app
            .post_json("/v1/trainings", &compatibility_spec(&dataset))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        app
    })
    .await;
}
