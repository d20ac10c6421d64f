//! `/upload/image`, `/upload/mask` and `/view`: the user's input, output and
//! temp files, with ComfyUI's naming rules and answers.

use std::collections::HashMap;

use axum::Json;

use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use comfyume_domain::{FileKind, SafeRelPath};

use crate::workspace::preview::{Conversion, MAX_FILE_BYTES, PreviewError};
use crate::workspace::{
    UploadOutcome, ViewTarget, converted_serve_as, parse_upload_subfolder, parse_upload_type,
    upload_overwrite_flag, view_serve_as,
};

/// The multipart form of an upload. `/upload/mask` takes the same fields
/// plus `original_ref`; the frontend's mask editor saves through
/// `/upload/image`, so a mask is stored as the image it is.
#[derive(Default)]
struct UploadForm {
    image: Option<(String, Vec<u8>)>,
    kind: Option<String>,
    subfolder: Option<String>,
    overwrite: Option<String>,
}

/// An upload form read off the wire, its fields parsed.
pub(crate) struct Upload {
    pub kind: FileKind,
    pub subfolder: SafeRelPath,
    /// Checked by the workspace when it stores the file.
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub overwrite: bool,
}

pub async fn upload(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> Result<Json<UploadOutcome>, ApiError> {
    let upload = read_upload(&mut multipart, state.config.limits.max_upload_bytes).await?;
    let outcome = state
        .workspaces
        .user(&user.name)
        .save_upload(
            upload.kind,
            &upload.subfolder,
            &upload.file_name,
            upload.bytes,
            upload.overwrite,
        )
        .await?;
    Ok(Json(outcome))
}

/// Reads an upload form of at most `limit` file bytes. Unknown parts are
/// skipped, as ComfyUI does.
pub(crate) async fn read_upload(multipart: &mut Multipart, limit: u64) -> Result<Upload, ApiError> {
    let mut form = UploadForm::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" => {
                let file_name = field.file_name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
                form.image = Some((file_name, bytes.to_vec()));
            }
            "type" => form.kind = Some(field.text().await.map_err(|e| multipart_error(e, limit))?),
            "subfolder" => {
                form.subfolder = Some(field.text().await.map_err(|e| multipart_error(e, limit))?)
            }
            "overwrite" => {
                form.overwrite = Some(field.text().await.map_err(|e| multipart_error(e, limit))?)
            }
            _ => {}
        }
    }
    let Some((file_name, bytes)) = form.image.filter(|(n, _)| !n.is_empty()) else {
        return Err(ApiError::bad_request(
            "No image file in the upload (expected a multipart part named 'image')",
        ));
    };
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(Upload {
        kind: parse_upload_type(form.kind.as_deref())?,
        subfolder: parse_upload_subfolder(form.subfolder.as_deref())?,
        file_name,
        bytes,
        overwrite: upload_overwrite_flag(form.overwrite.as_deref()),
    })
}

fn multipart_error(e: MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        ApiError::bad_request(format!("Malformed upload: {}", e.body_text()))
    }
}

fn too_large(limit: u64) -> ApiError {
    let mb = limit as f64 / (1024.0 * 1024.0);
    ApiError::Text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The file is too large: uploads are limited to {mb:.1} MB."),
    )
}

pub async fn view(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let get = |k: &str| q.get(k).map(String::as_str);
    let target = state
        .workspaces
        .user(&user.name)
        .resolve_view(get("filename"), get("type"), get("subfolder"))
        .await?;
    if let Some(conversion) = Conversion::from_query(get("preview"), get("channel")) {
        return converted(&target, conversion).await;
    }
    let dest = headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok());
    let serve_as = view_serve_as(&target.file_name, dest);
    super::serve_file(&target.source, &serve_as).await
}

/// Images re-encoded at once: decoding is CPU work, and a room's queue
/// panels asking for thumbnails together must not take every core.
static CONVERSIONS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(2)));

/// `/view` with `preview` or `channel`: the image as ComfyUI converts it.
async fn converted(target: &ViewTarget, conversion: Conversion) -> Result<Response, ApiError> {
    if target.size > MAX_FILE_BYTES {
        return Err(PreviewError::TooLarge { size: target.size }.into());
    }
    // Held until the conversion is over, even if the request goes away.
    let turn = CONVERSIONS
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let bytes = match target.source.read_at_most(MAX_FILE_BYTES).await {
        Ok(bytes) => bytes,
        // Grew since it was found.
        Err(crate::workspace::WorkspaceError::TooLarge(_)) => {
            return Err(PreviewError::TooLarge {
                size: MAX_FILE_BYTES + 1,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let (body, content_type) = tokio::task::spawn_blocking(move || {
        let converted = conversion.apply(&bytes);
        drop(turn);
        converted
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(super::serve_bytes(
        body,
        &converted_serve_as(&target.file_name, content_type),
    ))
}
