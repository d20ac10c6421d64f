//! `GET /comfyume/export.zip` (and under `/api`): the logged-in
//! participant's take-home zip of their workflows and outputs, streamed
//! as it is written ([`crate::workspace::Workspace::export_zip`]). A
//! bounded number are written at once, room-wide; past that the answer
//! is 503 with a `Retry-After`, and a download that stops reading for a
//! minute is ended, so no one holds a place for long.

use std::io::{self, Write};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::http::session::CurrentUser;

/// Exports written at once (each reads files on a blocking thread).
pub const MAX_EXPORTS: usize = 4;

/// How much of the zip is handed to the connection at a time, and how
/// many such pieces may wait for a slow client.
const CHUNK_BYTES: usize = 256 * 1024;
const CHUNKS_WAITING: usize = 4;

pub async fn download(CurrentUser(user): CurrentUser, State(state): State<AppState>) -> Response {
    let Ok(permit) = state.exports.clone().try_acquire_owned() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "Many participants are downloading their work right now; try again in half a minute.",
        )
            .into_response();
    };
    let workspace = state.workspaces.user(&user.name);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_WAITING);
    let span = tracing::info_span!("export", user = %user.name);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _in_span = span.enter();
        let _permit = permit;
        let mut out = ChunkSender {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
            runtime,
        };
        let written = workspace
            .export_zip(&mut out)
            .and_then(|s| out.flush().map(|()| s));
        match written {
            Ok(summary) => tracing::info!(
                workflows = summary.workflows,
                outputs = summary.outputs,
                bytes = summary.bytes,
                "export downloaded"
            ),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::info!("export abandoned by the browser");
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed");
                // Ends the download as failed rather than as a short zip.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let file = format!("attachment; filename=\"comfyume-{}.zip\"", user.name);
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, file),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A download that takes no data for this long is ended.
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);

/// A `Write` that hands the zip to the response in chunks; a closed or
/// stalled connection is a broken pipe, which ends the export.
struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    runtime: tokio::runtime::Handle,
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        // On a blocking thread: waiting on the runtime's channel is fine.
        self.runtime
            .block_on(self.tx.send_timeout(Ok(chunk), STALLED))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the download was closed or stopped reading",
                )
            })
    }
}
