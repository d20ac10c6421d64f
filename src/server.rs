//! `run(listener, state, shutdown)`: serves the gateway until `shutdown`
//! resolves. `comfyume serve` and the integration tests both call it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::AppState;

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::http::router(state.clone());
    let chores = tokio::spawn(housekeeping(state.clone()));
    let closing = async move {
        shutdown.await;
        state.closing.send_replace(true);
    };
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(closing)
    .await;
    chores.abort();
    served
}

/// Periodic chores, each one a `run_once` the tests can call directly.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        run_housekeeping_once(&state).await;
    }
}

/// Removes expired sessions.
pub async fn run_housekeeping_once(state: &AppState) {
    match state.accounts.sweep_expired_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "expired sessions removed"),
        Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
    }
}
