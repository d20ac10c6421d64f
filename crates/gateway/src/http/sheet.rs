//! The credential sheet: numbered participant accounts created from the
//! dashboard, answered as a page that prints one card per participant
//! (the address to open, the user name, the password) on A4 or Letter.
//! The passwords exist only in this answer: the database keeps hashes.

use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::app::AppState;
use crate::auth::CredentialRow;
use crate::http::admin::Admin;
use crate::http::error::ApiError;
use crate::markup::escape_html;
use comfyume_domain::Role;

#[derive(serde::Deserialize)]
pub struct SheetForm {
    prefix: String,
    count: u32,
    /// The address participants open (the dashboard fills in its own).
    url: String,
    #[serde(default)]
    paper: Paper,
}

#[derive(serde::Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Paper {
    #[default]
    A4,
    Letter,
}

/// `POST /admin/accounts` (a form): creates `count` accounts named
/// `<prefix>001`… and answers their printable sheet; all or none, as
/// `POST /admin/api/users`.
pub async fn create(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Form(form): Form<SheetForm>,
) -> Result<Response, ApiError> {
    let url = form.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 200 {
        return Err(ApiError::json_error(
            StatusCode::BAD_REQUEST,
            "the address participants open must start with http:// or https://",
        ));
    }
    let rows = state
        .accounts
        .create_numbered(&form.prefix, form.count)
        .await?;
    let names: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
    state
        .room
        .accounts_created(&actor, &names, Role::Participant)
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Html(page(&rows, url, form.paper)),
    )
        .into_response())
}

/// Cards per page: 2 across, 5 down, on either paper.
fn page(rows: &[CredentialRow], url: &str, paper: Paper) -> String {
    let size = match paper {
        Paper::A4 => "A4",
        Paper::Letter => "letter",
    };
    let url = escape_html(url);
    let cards: String = rows
        .iter()
        .map(|r| {
            format!(
                "<div class=card><h2>ComfyUI workshop</h2><dl>\
                 <dt>Open</dt><dd class=url>{url}</dd>\
                 <dt>User name</dt><dd class=user>{}</dd>\
                 <dt>Password</dt><dd class=password>{}</dd></dl></div>",
                escape_html(&r.user),
                escape_html(&r.password)
            )
        })
        .collect();
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <title>ComfyUME · credentials ({n})</title><link rel=icon href=\"data:,\">\
         <style>@page {{ size: {size}; margin: 12mm; }}\
         body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #111; }}\
         .note {{ margin: 12px; }} @media print {{ .note {{ display: none; }} }}\
         .cards {{ display: grid; grid-template-columns: 1fr 1fr; gap: 0; }}\
         .card {{ border: 1px dashed #888; padding: 10mm 8mm; height: 50mm; box-sizing: border-box;\
                 break-inside: avoid; page-break-inside: avoid; }}\
         .card h2 {{ font-size: 15px; margin: 0 0 4mm; }}\
         dl {{ display: grid; grid-template-columns: auto 1fr; gap: 1mm 4mm; margin: 0; }}\
         dt {{ color: #555; }} dd {{ margin: 0; font-family: ui-monospace, monospace; font-size: 15px; }}\
         </style></head><body>\
         <p class=note>{n} accounts created. Print this page ({size}) and cut the cards; \
         the passwords are shown only now.</p><div class=cards>{cards}</div></body></html>",
        n = rows.len()
    )
}
