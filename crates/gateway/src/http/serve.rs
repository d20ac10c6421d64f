//! The server loop: accepts TCP connections and serves the router on each
//! with the bounds a public server needs. A client must send a request's
//! headers within `header_read_timeout_seconds`, and an idle keep-alive
//! connection is closed after the same time (a trickle of bytes or a
//! silent socket holds nothing forever); a whole request, body included,
//! must be read and answered within `request_timeout_seconds` (the
//! router's time-out layer). WebSocket upgrades are served too. At most
//! `max_connections` connections are served at once; one more is told 503
//! and closed, so a flood of idle sockets cannot exhaust file descriptors.
//!
//! On shutdown it stops accepting, lets requests in flight finish (their
//! connections close after the answer), and waits for every connection
//! task it started, for at most [`GRACE`].

use std::future::Future;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::AppState;

/// How long connections may take to finish once shutdown starts.
const GRACE: Duration = Duration::from_secs(10);

/// What a connection over the cap hears: written once, without waiting
/// (a client too slow to take 150 bytes gets nothing, and is closed).
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\n\
Content-Length: 45\r\n\r\nThe server is at its connection limit: retry.";

/// Serves `state`'s router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = super::router(state.clone());
    serve_router(listener, app, state, shutdown).await
}

/// Serves `app` on `listener` with the configured connection bounds until
/// `shutdown` resolves, then lets open connections finish.
pub(super) async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = Duration::from_secs(state.config.limits.header_read_timeout_seconds);
    let max_connections = state.config.limits.max_connections as usize;
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut at_limit = false;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Reap finished connections, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        if connections.len() >= max_connections {
            let _ = tcp.try_write(OVER_CAPACITY);
            // Once per spell at the limit, not once per refused socket.
            if !at_limit {
                tracing::warn!(
                    max_connections,
                    "at the connection limit: refusing new connections"
                );
            }
            at_limit = true;
            continue;
        }
        at_limit = false;
        // Small frames (progress, status) go out at once: with Nagle's
        // algorithm a burst of them waits on the peer's delayed ACK (40 ms).
        let _ = tcp.set_nodelay(true);
        let service =
            tower::ServiceExt::map_request(app.clone(), move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let mut stop = stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopped => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Long-lived sockets close themselves on this; connections finish
    // their request in flight.
    state.closing.send_replace(true);
    stopping.send_replace(true);
    let drained = tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open after the grace period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}
