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

/// Logs for tests, when `TEST_LOG` is set: `TEST_LOG=1` shows info and
/// above, any other value is a filter (`TEST_LOG=comfyume=debug`). Lines go
/// through the test harness's capture, so they show for failing tests (or
/// all, with `--nocapture`).
pub fn init_for_tests() {
    let Ok(filter) = std::env::var("TEST_LOG") else {
        return;
    };
    let filter = if filter == "1" {
        "info".to_string()
    } else {
        filter
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}
