//! Request bodies that trickle in: they hold no upload slot while they do, so other uploads go
//! through, and each is cut off with 408 once it falls below the minimum pace.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::*;

fn paced() -> Options {
    let mut options = Options::api_only();
    options.http.max_concurrent_uploads = 2;
    options.http.body_grace = Duration::from_secs(2);
    options.http.body_min_bytes_per_second = 1024;
    options
}

/// Sends an upload's headers and then one byte a second until the server answers; the answer.
async fn trickle(address: String) -> String {
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/datasets?name=slow HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    for _ in 0..30 {
        if stream.write_all(b"{").await.is_err() {
            break;
        }
        let mut buffer = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        stream.read_to_end(&mut answer),
                    )
                    .await;
                    break;
                }
            }
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_hold_no_upload_slot_and_are_cut_off() {
    on_every_backend(paced, |app| async move {
        let address = app.base.trim_start_matches("http://").to_string();
        let slow: Vec<_> = (0..6)
            .map(|_| tokio::spawn(trickle(address.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Six trickling uploads against two upload slots: a whole one is still taken at once.
        let started = Instant::now();
        let response = app.upload(MC_ROWS).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "an upload waited {:?} behind trickling ones",
            started.elapsed()
        );

        for handle in slow {
            let answer = handle.await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("application/problem+json"), "{answer}");
            assert!(
                answer.contains("MUSCLE_BODY_MIN_BYTES_PER_SECOND"),
                "{answer}"
            );
        }
        app
    })
    .await;
}
