//! Connections a hostile client holds open: headers or a body sent a byte
//! at a time, sockets left idle. Each is ended by the server within its
//! configured time (the tests' bounds are hang guards, not timings), and
//! the server keeps answering everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestApp, session_cookie_of, within};

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.limits.header_read_timeout_seconds = 1;
        c.limits.request_timeout_seconds = 2;
    })
    .await
}

/// Everything the server sends until it closes the connection.
async fn until_closed(tcp: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    within("the server to close the connection", async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_are_cut_off() {
    let app = app().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ... and the rest never comes.
    let answer = until_closed(&mut tcp).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let r = reqwest::get(app.at("/health")).await.unwrap();
    assert_eq!(r.status(), 200, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed() {
    let app = app().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer, then nothing more from us: the server hangs up.
    let answer = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_is_refused() {
    let app = app().await;
    let cookie = session_cookie_of(&app, "alice").await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/settings/Comfy.Theme HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        for _ in 0..30 {
            if tcp.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // The trickle outlasts the limit; what matters is the answer.
    within("the trickle", trickle).await;
    let answer = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    let settings = app.client();
    let r = settings
        .get(app.at("/api/settings"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["Comfy.Theme"],
        serde_json::Value::Null,
        "nothing half-written"
    );
}
