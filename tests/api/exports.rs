//! report.md and instances.csv of an evaluation whose names, prompts and choices are hostile:
//! through the real server, the Markdown renders as plain text and the CSV opens as text.

use pulldown_cmark::{Event, Options as Markdown, Parser, Tag, TagEnd};
use reqwest::StatusCode;

use super::helpers::*;

const NAME: &str =
    "<img src=https://evil.example/p.png> **Gate: PASSED** `x` [a](https://evil.example)";

const HOSTILE_ROWS: &str = concat!(
    r#"{"id": "=HYPERLINK(\"https://evil.example\")", "prompt": "=cmd|' /C calc'!A0 <b>", "choices": ["+1", "-1"], "answer": 0, "tags": {"topic": "<img src=x>"}}"#,
    "\n",
    r#"{"id": "@q2", "prompt": "-2+3 is **bold**", "choices": ["one", "two"], "answer": 1, "tags": {"topic": "=1+1"}}"#,
    "\n",
    r#"{"id": "q3", "prompt": "\tThe sky is", "choices": ["blue", "green"], "answer": 0, "tags": {"topic": "~~x~~"}}"#,
    "\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_stays_text_in_report_md_and_instances_csv() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(HOSTILE_ROWS).await;
        let mut spec = evaluation_spec(&dataset);
        spec["name"] = NAME.into();
        let location = app.submit_evaluation(&spec).await;
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");

        let csv = app.get(&format!("{location}/instances.csv")).await;
        assert_eq!(csv.status(), StatusCode::OK);
        let csv = csv.bytes().await.unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_ref());
        let header = reader.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        let column = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(
            &rows[0][column("id")],
            "'=HYPERLINK(\"https://evil.example\")"
        );
        assert_eq!(&rows[0][column("prompt")], "'=cmd|' /C calc'!A0 <b>");
        assert_eq!(&rows[1][column("id")], "'@q2");
        assert_eq!(&rows[1][column("prompt")], "'-2+3 is **bold**");
        assert_eq!(&rows[2][column("prompt")], "'\tThe sky is");
        // Log-likelihoods are negative numbers and stay numbers.
        let scores: Vec<f64> = serde_json::from_str(&rows[0][column("old_scores")]).unwrap();
        assert!(scores.iter().all(|s| *s < 0.0), "{scores:?}");
        for row in &rows {
            for (name, cell) in header.iter().zip(row.iter()) {
                assert!(
                    name.ends_with("_score") || !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{name}: {cell:?}"
                );
            }
        }

        let markdown = app.get(&format!("{location}/report.md")).await;
        assert_eq!(markdown.status(), StatusCode::OK);
        let markdown = markdown.text().await.unwrap();
        let mut heading = None;
        let (mut text, mut strong) = (String::new(), Vec::new());
        let mut in_strong = false;
        let options = Markdown::ENABLE_TABLES
            | Markdown::ENABLE_STRIKETHROUGH
            | Markdown::ENABLE_MATH
            | Markdown::ENABLE_GFM;
        for event in Parser::new_ext(&markdown, options) {
            match event {
                Event::Text(t) => {
                    text.push_str(&t);
                    if in_strong {
                        strong.push(t.to_string());
                    }
                }
                Event::Start(Tag::Strong) => in_strong = true,
                Event::End(TagEnd::Strong) => in_strong = false,
                Event::End(TagEnd::Heading(_)) if heading.is_none() => {
                    heading = Some(std::mem::take(&mut text))
                }
                Event::Html(_)
                | Event::InlineHtml(_)
                | Event::Start(
                    Tag::Link { .. }
                    | Tag::Image { .. }
                    | Tag::Emphasis
                    | Tag::Strikethrough
                    | Tag::HtmlBlock,
                ) => panic!("{event:?} from user text in\n{markdown}"),
                Event::Code(code) => assert_eq!(code.as_ref(), "nfr", "{markdown}"),
                _ => {}
            }
        }
        assert_eq!(
            heading.as_deref(),
            Some(format!("Model update compatibility: {NAME}").as_str())
        );
        assert_eq!(strong[0], "Gate: PASSED", "{markdown}");
        assert!(
            strong.iter().all(|s| s == "Gate: PASSED" || s == "fail"),
            "{strong:?}"
        );
        assert!(markdown.contains("topic\\=\\<img src\\=x\\>"), "{markdown}");
        app
    })
    .await;
}
