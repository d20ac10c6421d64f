//! Logging: human-readable lines on stderr, filtered by `COMFYUME_LOG`
//! (or `RUST_LOG`), e.g. `COMFYUME_LOG=debug`.
//!
//! A job's phases (claim, inputs, submit, follow, each output copied,
//! finish) are debug-level spans with the target [`PHASE`]. When they are
//! enabled (`COMFYUME_LOG=comfyume=debug`, or `…,comfyume::phase=debug`)
//! each one's end is logged with its wall time, inside its job's span:
//! `job{job=… user=… backend=…}:submit{inputs=0}: comfyume::phase: phase ended ms=1.21`.

use std::time::Instant;

use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

/// The target of the job phase spans.
pub const PHASE: &str = "comfyume::phase";

/// A job phase: a debug span of target [`PHASE`].
macro_rules! phase {
    ($name:literal $(, $($field:tt)*)?) => {
        tracing::debug_span!(target: "comfyume::phase", $name $(, $($field)*)?)
    };
}
pub(crate) use phase;

const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=warn";

pub fn init() {
    let filter = std::env::var("COMFYUME_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    install(&filter, false);
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
    install(&filter, true);
}

/// Every event that `filter` lets through, and the end of each phase
/// span it lets through.
fn install(filter: &str, for_tests: bool) {
    let events = if for_tests {
        fmt::layer().with_test_writer().boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(PhaseTimes)
        .with(events.with_filter(EnvFilter::new(filter)))
        .try_init();
}

/// Logs the wall time of each phase span as it closes: a debug event of
/// target [`PHASE`].
struct PhaseTimes;

/// When a phase span opened.
struct Opened(Instant);

impl<S> Layer<S> for PhaseTimes
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != PHASE {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        let ms = format!("{:.2}", opened.elapsed().as_secs_f64() * 1000.0);
        // Inside the closing span itself (kept until every layer has seen
        // it close), so the line shows the job, the phase and its fields.
        tracing::debug!(target: PHASE, parent: &id, %ms, "phase ended");
    }
}
