//! `run(listener, state, shutdown)`: serves the gateway until `shutdown`
//! resolves. `comfyume serve` and the integration tests both call it.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::app::AppState;

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::http::router(state.clone());
    let closing = async move {
        shutdown.await;
        state.closing.send_replace(true);
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(closing)
    .await
}
