//! `/userdata`, `/userdata/{file}`, `/userdata/{file}/move/{dest}` and
//! `/v2/userdata`: the user's saved workflows, subgraphs, keybindings and
//! other frontend files. `{file}` is one path segment in which `%2F` stands
//! for `/` (axum has already decoded it once; the workspace decodes any `%`
//! left, as ComfyUI does).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use crate::workspace::{
    FileInfo, ListFormat, overwrite_flag, parse_userdata_dir, parse_userdata_path, parse_v2_path,
    query_flag, render_listing,
};

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str)
}

pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let dir = parse_userdata_dir(param(&q, "dir"))?;
    let recurse = query_flag(param(&q, "recurse"));
    let format = ListFormat::from_flags(
        query_flag(param(&q, "full_info")),
        query_flag(param(&q, "split")),
    );
    let files = state
        .workspaces
        .user(&user.name)
        .list(&dir, recurse)
        .await?;
    Ok(Json(render_listing(&files, format)))
}

pub async fn list_v2(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let path = parse_v2_path(param(&q, "path"))?;
    let entries = state.workspaces.user(&user.name).list_v2(&path).await?;
    Ok(Json(entries).into_response())
}

pub async fn read(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let file = parse_userdata_path(&file)?;
    let found = state.workspaces.user(&user.name).read(&file).await?;
    super::serve_file(&found.source, &found.serve_as).await
}

pub async fn write(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let file = parse_userdata_path(&file)?;
    let overwrite = overwrite_flag(param(&q, "overwrite"));
    let info = state
        .workspaces
        .user(&user.name)
        .write(&file, body.into(), overwrite)
        .await?;
    Ok(Json(answer(info, query_flag(param(&q, "full_info")))))
}

pub async fn delete(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<StatusCode, ApiError> {
    let file = parse_userdata_path(&file)?;
    state.workspaces.user(&user.name).delete(&file).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rename(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path((src, dest)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let src = parse_userdata_path(&src)?;
    let dest = parse_userdata_path(&dest)?;
    let overwrite = overwrite_flag(param(&q, "overwrite"));
    let info = state
        .workspaces
        .user(&user.name)
        .rename(&src, &dest, overwrite)
        .await?;
    Ok(Json(answer(info, query_flag(param(&q, "full_info")))))
}

/// ComfyUI answers a write or move with the file's info, or only its path.
fn answer(info: FileInfo, full_info: bool) -> Value {
    if full_info {
        serde_json::to_value(info).unwrap_or(Value::Null)
    } else {
        Value::String(info.path)
    }
}
