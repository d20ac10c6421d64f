//! The room wall over HTTP: a participant shares one of their outputs
//! (`POST /api/comfyume/wall`), everyone logged in sees the wall (`/wall`,
//! its items and images), and an instructor hides an item.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::admin::Admin;
use crate::http::error::ApiError;
use crate::http::session::{CurrentUser, PageUser};
use crate::store::WallItem;
use comfyume_domain::Role;

/// What `/view` names: the output to share.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    filename: String,
    #[serde(default)]
    subfolder: String,
    #[serde(rename = "type", default = "output")]
    kind: String,
}

fn output() -> String {
    "output".into()
}

fn item_json(i: &WallItem) -> Value {
    json!({
        "id": i.id,
        "author": i.author.as_str(),
        "file_name": i.file_name,
        "shared_at": i.shared_at,
        "hidden": i.hidden,
        "url": format!("/wall/images/{}", i.id),
    })
}

/// `POST /api/comfyume/wall`: shares the caller's own file.
pub async fn share(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Json(body): Json<Share>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let item = state
        .room
        .share(
            &user,
            Some(&body.filename),
            Some(&body.kind),
            Some(&body.subfolder),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(item_json(&item))))
}

/// `GET /api/comfyume/wall`: the wall, newest first (instructors also see
/// what they hid, marked).
pub async fn items(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let instructor = user.role == Role::Admin;
    let items: Vec<Value> = state
        .room
        .wall(instructor)
        .await?
        .iter()
        .map(item_json)
        .collect();
    Ok(Json(json!({"items": items, "can_hide": instructor})))
}

/// `GET /wall/images/{id}`.
pub async fn image(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (item, source) = state.room.wall_image(id, user.role == Role::Admin).await?;
    let serve_as =
        crate::workspace::view_serve_as(&format!("{}.{}", item.id, item.ext), Some("image"));
    super::comfy::serve_file(&source, &serve_as).await
}

/// `GET /wall`: the projector page.
pub async fn page(PageUser(_): PageUser) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("pages/wall.html")),
    )
}

/// `POST /admin/api/wall/{id}/{hide|show}`.
pub async fn hide(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path((id, action)): Path<(i64, String)>,
) -> Result<Json<Value>, ApiError> {
    let hidden = match action.as_str() {
        "hide" => true,
        "show" => false,
        _ => {
            return Err(ApiError::json_error(
                StatusCode::NOT_FOUND,
                "actions on a wall item are hide and show",
            ));
        }
    };
    let entry = state.room.set_wall_hidden(&actor, id, hidden).await?;
    Ok(Json(
        json!({"audit": {"action": entry.action, "target": entry.target}}),
    ))
}
