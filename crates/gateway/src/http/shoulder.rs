//! Looking over a participant's shoulder: an instructor's read-only view
//! of one participant's workspace (workflows, uploads, outputs, and their
//! jobs live from the dashboard's stream). Only `GET` routes exist here,
//! and they read through the same workspace calls as the participant's
//! own routes, so nothing in this view can change their files. Opening
//! the view, and opening one of their workflows, is audited.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::app::AppState;
use crate::http::admin::Admin;
use crate::http::error::ApiError;
use crate::markup::escape_html;
use crate::workspace::{ServeAs, view_serve_as};
use comfyume_domain::{FileKind, SafeRelPath, UserName};

/// The most files of one kind the page lists (newest first).
const LISTED: usize = 200;

fn parse_name(raw: &str) -> Result<UserName, ApiError> {
    UserName::parse(raw).map_err(|e| {
        ApiError::json_error(
            StatusCode::BAD_REQUEST,
            format!("'{raw}' is not a user name: {e}"),
        )
    })
}

/// `GET /admin/participants/{name}`: the page.
pub async fn page(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    state
        .room
        .looked_at(&actor, &name, serde_json::json!({"opened": "workspace"}))
        .await?;
    let workspace = state.workspaces.user(&name);
    let root = SafeRelPath::parse("workflows").expect("a valid literal");
    let workflows = match workspace.list(&root, true).await {
        Ok(files) => files.into_iter().map(|f| f.path).collect(),
        // No workflow saved yet.
        Err(crate::workspace::WorkspaceError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut sections = String::new();
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let file_url = |kind: &str, path: &str| {
        format!(
            "/admin/api/users/{}/file?type={kind}&path={}",
            enc(name.as_str()),
            enc(path)
        )
    };
    let list = |items: Vec<String>| -> String {
        if items.is_empty() {
            "<p class=dim>None.</p>".into()
        } else {
            format!("<ul>{}</ul>", items.concat())
        }
    };
    sections.push_str(&format!(
        "<section><h2>Workflows</h2>{}</section>",
        list(
            workflows
                .iter()
                .take(LISTED)
                .map(|p| {
                    let path = format!("workflows/{p}");
                    format!(
                        "<li><a href=\"{}\" download>{}</a></li>",
                        escape_html(&file_url("userdata", &path)),
                        escape_html(p)
                    )
                })
                .collect()
        )
    ));
    for (kind, title) in [(FileKind::Input, "Uploads"), (FileKind::Output, "Outputs")] {
        let files = workspace.list_files(kind).await?;
        let items = files
            .iter()
            .take(LISTED)
            .map(|entry| {
                let file = entry
                    .strip_suffix(&format!(" [{}]", kind.as_str()))
                    .unwrap_or(entry);
                let url = escape_html(&file_url(kind.as_str(), file));
                format!(
                    "<li class=thumb><a href=\"{url}\" target=_blank><img loading=lazy src=\"{url}\" alt=\"\"><span>{}</span></a></li>",
                    escape_html(file)
                )
            })
            .collect();
        sections.push_str(&format!(
            "<section><h2>{title} <span class=dim>({} files)</span></h2>{}</section>",
            files.len(),
            list(items)
        ));
    }
    let html = include_str!("pages/shoulder.html")
        .replace("{{NAME}}", &escape_html(name.as_str()))
        .replace(
            "{{NAME_JSON}}",
            &serde_json::to_string(name.as_str()).unwrap_or_default(),
        )
        .replace("{{SECTIONS}}", &sections);
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Html(html),
    )
        .into_response())
}

/// `GET /admin/api/users/{name}/file?type=input|output|temp|userdata&path=P`:
/// one of the participant's files, to look at (never to change).
pub async fn file(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let (kind, path) = match (q.get("type"), q.get("path")) {
        (Some(k), Some(p)) => (k.as_str(), p.as_str()),
        _ => {
            return Err(ApiError::json_error(
                StatusCode::BAD_REQUEST,
                "name the file: ?type=input|output|temp|userdata&path=…",
            ));
        }
    };
    let workspace = state.workspaces.user(&name);
    if kind == "userdata" {
        let rel = SafeRelPath::parse(path)
            .map_err(|e| ApiError::json_error(StatusCode::BAD_REQUEST, format!("'{path}': {e}")))?;
        let found = workspace.read(&rel).await?;
        // Opening one of their workflows is looking at their work.
        state
            .room
            .looked_at(&actor, &name, serde_json::json!({"opened": path}))
            .await?;
        let serve_as = ServeAs {
            content_disposition: "attachment".into(),
            ..found.serve_as
        };
        return super::comfy::serve_file(&found.source, &serve_as).await;
    }
    let (subfolder, file_name) = path.rsplit_once('/').unwrap_or(("", path));
    let target = workspace
        .resolve_view(Some(file_name), Some(kind), Some(subfolder))
        .await?;
    let serve_as = view_serve_as(&target.file_name, Some("image"));
    super::comfy::serve_file(&target.source, &serve_as).await
}
