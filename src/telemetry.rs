//! Logging: human-readable lines on stderr, filtered by `COMFYUME_LOG`
//! (or `RUST_LOG`), e.g. `COMFYUME_LOG=debug`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("COMFYUME_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}
