//! Connections a hostile client holds open: headers or a body sent a byte
//! at a time, sockets left idle. Each is ended by the server within its
//! configured time (the tests' bounds are hang guards, not timings), and
//! the server keeps answering everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestApp, memory_bytes, session_cookie_of, within};

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

/// The attack that once took 22 GB: four parallel `POST /api/settings` of
/// 96 MB each, at full size, streamed (the test holds one 64 KiB chunk).
/// Each gets its 413 once the route's limit is read, the process grows by
/// far less than one such body would take (the bound is generous: other
/// tests run in this process too), and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_at_full_size_stays_small() {
    const BODY: usize = 96 * 1024 * 1024;
    const BOUND: u64 = 64 * 1024 * 1024;
    let app = TestApp::spawn().await;
    let cookie = session_cookie_of(&app, "alice").await;
    let before = memory_bytes(std::process::id(), "VmRSS");
    let flood = (0..4).map(|_| {
        let cookie = cookie.clone();
        let addr = app.addr;
        async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /api/settings HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\
                 Content-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let (mut read, mut write) = tcp.into_split();
            let send = async move {
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..BODY / chunk.len() {
                    if write.write_all(&chunk).await.is_err() {
                        break; // the server closed: it had heard enough
                    }
                }
            };
            let answer = async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                String::from_utf8_lossy(&seen).into_owned()
            };
            let ((), answer) = tokio::join!(send, answer);
            answer
        }
    });
    let answers = within("the flood", futures_util::future::join_all(flood)).await;
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    let grown = memory_bytes(std::process::id(), "VmRSS").saturating_sub(before);
    assert!(
        grown < BOUND,
        "memory grew by {} MB under the flood",
        grown / (1024 * 1024)
    );
    let r = app
        .client()
        .get(app.at("/api/settings"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the server still answers");
}

/// Connections from everyone are bounded: past `max_connections` a new
/// one is told 503 and closed; once the holders leave, the server serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_told_503() {
    let app = TestApp::spawn_with(|c| c.limits.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // The server has seen the three once it answers on one of them.
    held[0]
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = within("an answer on a held connection", held[0].read(&mut buf))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let mut fourth = TcpStream::connect(app.addr).await.unwrap();
    let answer = until_closed(&mut fourth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After"), "{answer}");

    drop(held);
    // The server notices the closed connections as it reaps them: retry
    // until it does (bounded by `within`).
    within("a connection served again", async {
        loop {
            match reqwest::get(app.at("/health")).await {
                Ok(r) if r.status() == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}
