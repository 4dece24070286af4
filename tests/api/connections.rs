//! The listener's own limits: a request's headers must arrive in time, and open connections are
//! bounded.

use std::time::{Duration, Instant};

use muscle::http::ConnectionLimits;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::*;

fn tight() -> Options {
    let mut options = Options::api_only();
    options.http.connections = ConnectionLimits {
        header_read_timeout: Duration::from_secs(3),
        max_connections: 4,
        ..Default::default()
    };
    options
}

/// Reads until the server closes; what it sent, or None when it sent nothing.
async fn until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_connections_are_bounded() {
    on_every_backend(tight, |app| async move {
        let address = app.base.trim_start_matches("http://").to_string();

        // Headers trickling in: closed after the deadline, not held.
        let started = Instant::now();
        let mut slow = TcpStream::connect(&address).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        until_closed(&mut slow).await;
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(900) && held < Duration::from_secs(4),
            "{held:?}"
        );

        // Four idle connections take every slot: a fifth is closed unanswered.
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(&address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fifth = TcpStream::connect(&address).await.unwrap();
        let _ = fifth
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        assert_eq!(until_closed(&mut fifth).await, None);

        // The idle ones time out, their slots come back (asked again until then, not timed).
        let mut served = false;
        for _ in 0..100 {
            if let Ok(response) = app.client.get(app.url("/healthz")).send().await
                && response.status() == StatusCode::OK
            {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(served, "the idle connections' slots never came back");
        drop(idle);
        app
    })
    .await;
}
