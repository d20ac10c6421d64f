//! `comfyume-worker`: the sidecar alone, for GPU images that need nothing
//! of the gateway. Same flags as `comfyume worker`.

use std::process::ExitCode;

use clap::Parser;
use comfyume_worker::WorkerArgs;
use tokio::net::TcpListener;

/// The ComfyUME worker: one job = one streamed HTTP request, beside a
/// stock ComfyUI on a serverless or load-balanced GPU.
#[derive(Parser)]
#[command(name = "comfyume-worker", version)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse().args;
    let filter = std::env::var("COMFYUME_LOG").unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("comfyume-worker: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("ComfyUME worker listening on http://{addr}"),
        Err(e) => eprintln!("comfyume-worker: listening, address unknown: {e}"),
    }
    match comfyume_worker::run(listener, args, comfyume_worker::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("comfyume-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
