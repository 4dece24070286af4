use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_and_get_datasets() {
    on_every_backend(Options::default, |app| async move {
        let response = app.upload(MC_ROWS).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let dataset: Value = response.json().await.unwrap();
        assert_eq!(dataset["name"], "test");
        assert_eq!(dataset["rows"], 6);
        assert_eq!(dataset["kind"], "multiple_choice");
        assert_eq!(dataset["sha256"].as_str().unwrap().len(), 64);
        assert!(dataset["created_at"].as_str().unwrap().ends_with('Z'));
        let id = dataset["id"].as_str().unwrap();

        let fetched: Value = app
            .get(&format!("/v1/datasets/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(fetched, dataset);

        let generation = app
            .client
            .post(app.url("/v1/datasets"))
            .header("content-type", "application/jsonl; charset=utf-8")
            .body("{\"prompt\": \"a\", \"target\": \"b\"}\n")
            .send()
            .await
            .unwrap();
        assert_eq!(generation.status(), StatusCode::CREATED);
        let generation: Value = generation.json().await.unwrap();
        assert_eq!(generation["kind"], "generation");
        assert_eq!(
            generation["name"].as_str().unwrap().len(),
            12,
            "default name from sha256"
        );

        let page: Value = app.get("/v1/datasets?limit=1").await.json().await.unwrap();
        assert_eq!(page["items"][0]["id"], generation["id"]);
        let cursor = page["next_cursor"].as_str().unwrap();
        let page: Value = app
            .get(&format!("/v1/datasets?limit=1&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"][0]["id"], dataset["id"]);
        assert_eq!(page["next_cursor"], Value::Null);

        let missing = problem(app.get("/v1/datasets/nope").await, StatusCode::NOT_FOUND).await;
        assert!(missing["detail"].as_str().unwrap().contains("nope"));
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_line_is_listed_and_nothing_is_stored() {
    on_every_backend(Options::default, |app| async move {
        let body = [
            r#"{"id": "a", "prompt": "p", "choices": ["x", "y"], "answer": 1}"#,
            r#"{"id": "a", "prompt": "p", "choices": ["x", "y"], "answer": 0}"#,
            r#"{"prompt": "p", "choices": ["x", "y"], "answer": 5}"#,
            r#"not json"#,
            r#"{"prompt": "p", "target": "t"}"#,
            r#"{"choices": ["x", "y"], "answer": 0}"#,
        ]
        .join("\n");
        let body = problem(app.upload(&body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        let errors: Vec<(u64, String)> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["line"].as_u64().unwrap(),
                    e["field"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            errors,
            vec![
                (2, "id".into()),
                (3, "answer".into()),
                (4, "(line)".into()),
                (5, "target".into()),
                (6, "prompt".into()),
            ]
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was stored")
        );
        let page: Value = app.get("/v1/datasets").await.json().await.unwrap();
        assert_eq!(
            page["items"],
            json!([]),
            "a half-valid dataset is never stored"
        );

        let mut bytes = b"{\"prompt\": \"p\", \"target\": \"t\"}\n{\"prompt\": \"".to_vec();
        bytes.extend_from_slice(b"\xff\xfe\", \"target\": \"t\"}\n");
        let response = app
            .client
            .post(app.url("/v1/datasets"))
            .header("content-type", "application/x-ndjson")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["line"], 2);
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("UTF-8")
        );

        let body = problem(app.upload("\n\n").await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&body), vec!["body"]);

        let response = app
            .client
            .post(app.url("/v1/datasets"))
            .header("content-type", "text/csv")
            .body("a,b\n")
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("application/x-ndjson")
        );

        let too_big = MC_ROWS.repeat(2000);
        assert!(too_big.len() > 1 << 20);
        let refused = app.upload(&too_big).await;
        // The rest of the body is never read: the connection is not kept for another request.
        assert_eq!(refused.headers()["connection"], "close");
        problem(refused, StatusCode::PAYLOAD_TOO_LARGE).await;

        let body = problem(
            app.get("/v1/datasets?limit=0").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["limit"]);
        let body = problem(
            app.get("/v1/datasets?limit=ten").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["limit"]);
        let body = problem(
            app.get("/v1/datasets?cursor=xyz").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["cursor"]);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_are_named_by_unique_name_and_reuploads_return_the_stored_one() {
    on_every_backend(Options::api_only, |app| async move {
        let first = app.upload(MC_ROWS).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let first: Value = first.json().await.unwrap();
        // The same content under the same name: that dataset again, nothing new stored.
        let again = app.upload(MC_ROWS).await;
        assert_eq!(again.status(), StatusCode::OK);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["id"], first["id"]);

        // An evaluation may name the dataset by its (unique) name; the job stores its id.
        let created: Value = app
            .post_json("/v1/evaluations", &evaluation_spec("test"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(created["spec"]["dataset"], first["id"], "{created}");

        // Other content under the same name: a second dataset, and the name is ambiguous.
        let other = app.upload(&MC_ROWS.replace("The cat", "A cat")).await;
        assert_eq!(other.status(), StatusCode::CREATED);
        let body = app
            .refused("/v1/evaluations", &evaluation_spec("test"))
            .await;
        assert_eq!(fields(&body), vec!["dataset"]);
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("2 datasets are named \"test\""),
            "{message}"
        );
        let body = app
            .refused("/v1/evaluations", &evaluation_spec("nosuch"))
            .await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("no dataset with id or name"),
            "{body}"
        );
        app
    })
    .await;
}
