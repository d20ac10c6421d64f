//! The built-in GPU simulator behind `comfyume sim-backend`.
//!
//! A CPU-only server that speaks the ComfyUI backend protocol (the same HTTP
//! routes, at the plain path and under `/api`, and the same `/ws` frames), so
//! the gateway's real dispatch path can be exercised in tests and demos
//! without a GPU. This module owns the simulator's server lifecycle and its
//! state ([`SimState`]); the node catalogue is in `catalogue`, the routes and
//! the WebSocket in `server`, and the host facts of `/system_stats` in `stats`.
//!
//! The simulator reports itself honestly: its version string, device and
//! feature flags say "simulator", never a real ComfyUI or GPU.

mod catalogue;
mod server;
mod stats;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything the simulator's handlers share, behind one `Arc` in the router
/// state so that execution (queue, history, files) can be added as fields.
struct SimState {
    /// The process's command line, reported by `/system_stats` like stock's `argv`.
    argv: Vec<String>,
    /// Flips to `true` when the server shuts down. Graceful shutdown waits
    /// only for HTTP requests; an upgraded WebSocket would outlive it, so
    /// each socket watches this and closes itself.
    closing: watch::Sender<bool>,
}

impl SimState {
    fn new() -> Self {
        SimState {
            argv: std::env::args().collect(),
            closing: watch::Sender::new(false),
        }
    }
}

/// The `/object_info` body: every node the simulator offers, keyed by class.
pub fn catalogue() -> Map<String, Value> {
    // The simulator keeps no input folder, so LoadImage offers no files.
    catalogue::object_info(&[])
}

/// The simulator's routes with fresh state, for in-process tests.
pub fn router() -> axum::Router {
    server::router(Arc::new(SimState::new()))
}

/// Serves the simulator on `listener` until `shutdown` completes, then closes
/// open WebSockets and waits for in-flight HTTP requests to finish.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(SimState::new());
    let app = server::router(state.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "GPU simulator listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.closing.send_replace(true);
        })
        .await
}
