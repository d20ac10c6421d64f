//! The built-in GPU simulator behind `comfyume sim-backend`.
//!
//! A CPU-only server that speaks the ComfyUI backend protocol (the same HTTP
//! routes, at the plain path and under `/api`, and the same `/ws` frames)
//! and really runs its catalogue: image nodes transform pixels, the
//! text-to-image nodes paint a deterministic procedural picture with a
//! step-by-step "sampler", and SaveImage writes PNGs that `/view` serves.
//! The gateway's real dispatch path can so be exercised in tests and demos
//! without a GPU.
//!
//! The map:
//! - `server`: the routes; `ws`: the WebSocket and its `Hub`;
//!   `files`: input/output/temp, `/view`, `/upload/image`.
//! - `validate`: `POST /prompt` checks; `queue`: the queue and history;
//!   `executor`: the worker that runs prompts; `run`: one prompt's progress,
//!   previews and interrupts; `graph`: execution order and cache signatures.
//! - `nodes`: what each node does; `pixels`: image operations; `paint`: the
//!   procedural "model"; `png`: PNG files.
//! - `catalogue`: `/object_info`; `models`: the model lists;
//!   `stats`: `/system_stats`, feature flags;
//!   `options`: the test knobs ([`SimOptions`]).
//!
//! The simulator reports itself honestly: its version string, device and
//! feature flags say "simulator", never a real ComfyUI or GPU.

mod catalogue;
mod executor;
mod files;
mod graph;
mod models;
mod nodes;
mod options;
mod paint;
mod pixels;
mod png;
mod queue;
mod run;
mod server;
mod stats;
mod validate;
mod ws;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use options::SimOptions;

/// Everything the simulator's handlers and its worker share.
struct SimState {
    /// The process's command line, reported by `/system_stats` like stock's `argv`.
    argv: Vec<String>,
    /// Flips to `true` when the server shuts down. Graceful shutdown waits
    /// only for HTTP requests; an upgraded WebSocket would outlive it, so
    /// each socket (and the worker) watches this and stops itself.
    closing: watch::Sender<bool>,
    options: SimOptions,
    dirs: files::Dirs,
    hub: Arc<ws::Hub>,
    queue: queue::Queue,
    interrupt: run::Interrupt,
    /// `POST /free {"free_memory": true}`: the worker drops its cache.
    free_memory: AtomicBool,
    /// The catalogue validation checks prompts against.
    catalogue: Map<String, Value>,
    /// Until then, every request gets 503 (the slow-start knob).
    ready_at: Instant,
}

impl SimState {
    fn new(options: SimOptions, dirs: files::Dirs) -> Self {
        let hub = Arc::new(ws::Hub::default());
        SimState {
            argv: std::env::args().collect(),
            closing: watch::Sender::new(false),
            ready_at: Instant::now() + options.startup_delay,
            options,
            dirs,
            queue: queue::Queue::new(hub.clone()),
            hub,
            interrupt: run::Interrupt::default(),
            free_memory: AtomicBool::new(false),
            catalogue: catalogue::object_info(&[]),
        }
    }
}

/// The `/object_info` body with no uploads: every node the simulator
/// offers, keyed by class.
pub fn catalogue() -> Map<String, Value> {
    catalogue::object_info(&[])
}

/// Serves the simulator with default options; see [`run_with`].
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, SimOptions::default(), shutdown).await
}

/// Serves the simulator on `listener` until `shutdown` completes, then
/// interrupts the running prompt, closes open WebSockets, waits for
/// in-flight HTTP requests, and removes its data folder if it made one.
pub async fn run_with(
    listener: TcpListener,
    options: SimOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let dirs = files::Dirs::create(options.data_dir.as_deref())?;
    let state = Arc::new(SimState::new(options, dirs));
    let worker = tokio::spawn(executor::run(state.clone()));
    let app = server::router(state.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, data = %state.dirs.root.display(), "GPU simulator listening");
    }
    let stopping = state.clone();
    // Frames go out as they are produced (no Nagle delay on small writes).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop(&stopping);
        })
        .await;
    // Also when serving failed before any shutdown was asked for.
    stop(&state);
    // The worker returns once the running node sees the interrupt.
    let _ = worker.await;
    served
}

fn stop(state: &SimState) {
    // Sockets go first, so no client hears the shutdown's interrupt as if
    // someone had pressed Stop: to them the GPU simply went away.
    state.hub.drop_all();
    state.closing.send_replace(true);
    state.interrupt.raise();
}

/// Resolves once the server is closing.
async fn until_closing(closing: &mut watch::Receiver<bool>) {
    // Fails only if the sender is dropped, and the receiver's owner holds the state.
    let _ = closing.wait_for(|closing| *closing).await;
}
