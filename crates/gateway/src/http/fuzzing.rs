//! Entry points for the fuzz targets in `fuzz/` (built only with the
//! `fuzzing` feature): the HTTP-layer parsers that read bytes a visitor
//! sends, reachable without a running server.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;

use super::comfy::files::read_upload;

/// What an upload form parsed into, for the target's invariants.
#[derive(Debug)]
pub struct ParsedUpload {
    pub kind: &'static str,
    pub subfolder: String,
    pub file_name: String,
    pub len: usize,
    pub overwrite: bool,
}

/// Reads `body` as `POST /upload/image` would, with `content_type` as its
/// header and `limit` bytes allowed for the file. A refusal comes back as
/// the status its response would carry (never a 5xx: that is a bug).
pub fn upload_form(
    content_type: &str,
    body: Vec<u8>,
    limit: u64,
) -> Result<ParsedUpload, StatusCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let request = Request::builder()
            .method("POST")
            .uri("/upload/image")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("a valid request");
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|rejection| rejection.into_response().status())?;
        let upload = read_upload(&mut multipart, limit)
            .await
            .map_err(|e| e.into_response().status())?;
        Ok(ParsedUpload {
            kind: upload.kind.as_str(),
            subfolder: upload.subfolder.as_str().to_owned(),
            file_name: upload.file_name,
            len: upload.bytes.len(),
            overwrite: upload.overwrite,
        })
    })
}
