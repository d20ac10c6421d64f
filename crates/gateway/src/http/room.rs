//! What a participant sees of the room: where they stand
//! (`GET /comfyume/room`) and the frontend extension that shows it,
//! served from the binary and listed in `/extensions` beside the
//! frontend's own.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;

/// Where the extension is served, and listed.
pub const EXTENSION_PATH: &str = "/extensions/comfyume-room/room.js";

const EXTENSION_JS: &str = include_str!("../../web/room.js");

/// `GET /comfyume/room` (and under `/api`): the caller's standing (see
/// [`crate::room::Room::standing_of`]).
pub async fn standing(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.room.standing_of(&user).await?))
}

/// The participant panel's script. Like the frontend's own files, only for
/// a logged-in browser.
pub async fn extension(CurrentUser(_): CurrentUser) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        EXTENSION_JS,
    )
}
