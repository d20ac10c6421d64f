//! `comfyume worker`: the sidecar beside a stock ComfyUI in a GPU container,
//! for serverless platforms and load-balanced GPU pools.
//!
//! Behind a load balancer, two requests of one client may reach two
//! different replicas, so the worker makes **one job = one HTTP request**:
//! `POST /v1/run` carries the prompt, its id and its input files; the same
//! response streams back every ComfyUI event of that prompt, its output
//! files, and how it ended. The protocol (types, frame codec, the gateway's
//! client) lives in `comfyume_protocol::worker`; its document is
//! `docs/worker-protocol.md`.
//!
//! This crate depends on the protocol crate only, never on the gateway: a
//! GPU image builds it alone. The map: `server` (routes, auth, admission),
//! `run` (one job against ComfyUI, through the protocol crate's ComfyUI
//! session).

mod run;
mod server;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;

use comfyume_protocol::Secret;
use tokio::net::TcpListener;

/// The flags of `comfyume worker`.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The ComfyUI this worker drives (normally in the same container).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8188", value_parser = comfyui_url)]
    pub comfyui: String,

    /// Address to serve `/v1/run` and `/v1/health` on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9188")]
    pub listen: SocketAddr,

    /// The bearer token callers of `/v1/run` must present.
    #[arg(
        long,
        env = "COMFYUME_WORKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = token
    )]
    pub token: Secret,

    /// Jobs run at once; one more gets HTTP 429 so the load balancer tries
    /// another replica. ComfyUI runs one prompt at a time, so 1 keeps
    /// a job from waiting in this ComfyUI's own queue.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs: u32,

    /// How long a job waits for a cold ComfyUI to come up before it fails.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_timeout_secs: u64,
}

fn comfyui_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL".into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn token(text: &str) -> Result<Secret, String> {
    if text.trim().is_empty() {
        return Err("the token must not be empty".into());
    }
    Ok(Secret::new(text))
}

/// Serves the worker on `listener` (bound by the caller, normally to
/// `args.listen`) until `shutdown` completes. Jobs already streaming are
/// let finish: the platform's grace period bounds them, and a job cut off
/// by it is retried elsewhere by the gateway.
pub async fn run(
    listener: TcpListener,
    args: WorkerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, args, shutdown).await
}

/// Resolves on SIGINT or SIGTERM: how a terminal, a service manager or a
/// container platform asks a process to stop.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
