//! The login page (server-rendered, works without JavaScript) and logout.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{AuthError, LoggedIn};
use crate::http::client_addr::ClientAddr;
use crate::http::error::ApiError;
use crate::http::session::{clear_cookie, cookie_name, session_cookie, session_token};
use crate::markup::escape_html as escape;
use crate::metrics::LoginResult;
use comfyume_domain::Password;

/// Our pages' shared frame (`{{title}}`, `{{main}}`) and their bodies.
const PAGE: &str = include_str!("pages/page.html");
const LOGIN: &str = include_str!("pages/login.html");
const LOGOUT: &str = include_str!("pages/logout.html");

/// Our own pages run no script and load nothing but the favicon: a
/// policy that says so, so an injected tag could do nothing either.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                           form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn our_page(title: &str, main: &str, status: StatusCode) -> Response {
    let html = PAGE.replace("{{title}}", title).replace("{{main}}", main);
    let mut r = (status, Html(html)).into_response();
    let headers = r.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    r
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
    /// The room's shared password: given, this is a first time in a room
    /// that has one (`Accounts::join`).
    #[serde(default)]
    room_password: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, ApiError> {
    let next = safe_next(q.next.as_deref());
    if state.local_user.is_some() {
        return Ok(Redirect::to(next).into_response());
    }
    if let Some(token) = session_token(&headers, cookie_name(&state)) {
        if state.accounts.session_user(token).await?.is_some() {
            return Ok(Redirect::to(next).into_response());
        }
    }
    Ok(render(
        StatusCode::OK,
        next,
        "",
        None,
        state.accounts.room_mode(),
    ))
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let next = safe_next(form.next.as_deref());
    let device = session_token(&headers, DEVICE_COOKIE);
    let joining = form
        .room_password
        .as_deref()
        .filter(|p| !p.is_empty() && state.accounts.room_mode());
    let answer = match joining {
        Some(room_password) => {
            // A name whose folders outlive a removed account stays taken:
            // nobody joins into someone else's files.
            let leftover = match comfyume_domain::UserName::parse(&form.username) {
                Ok(name) => state.workspaces.user(&name).has_files().await,
                Err(_) => Ok(false),
            };
            if leftover.map_err(|e| ApiError::internal(e.to_string()))? {
                Err(AuthError::NameTaken)
            } else {
                state
                    .accounts
                    .join(
                        &form.username,
                        &Password::new(form.password.clone()),
                        &Password::new(room_password),
                        client,
                        device,
                    )
                    .await
            }
        }
        None => {
            state
                .accounts
                .login(
                    &form.username,
                    &Password::new(form.password.clone()),
                    client,
                    device,
                )
                .await
        }
    };
    match answer {
        Ok(LoggedIn {
            user,
            session,
            device,
        }) => {
            tracing::info!(user = %user.name, "login");
            state.metrics.login(LoginResult::Accepted);
            // Workflows the instructor pushed while they were away. A
            // failure leaves them for the next login, and says why.
            if let Err(e) = state.room.deliver_workflows(user.id, &user.name).await {
                tracing::warn!(user = %user.name, error = %e, "could not deliver the room's pushed workflows at login");
            }
            let mut r = Redirect::to(next).into_response();
            set_cookie(&mut r, &session_cookie(&state, session.expose()));
            append_cookie(&mut r, &device_cookie(&state, device.expose()));
            Ok(r)
        }
        Err(
            e @ (AuthError::InvalidCredentials
            | AuthError::NameTaken
            | AuthError::RoomFull
            | AuthError::WrongRoomPassword
            | AuthError::BadName
            | AuthError::OwnPasswordTooShort),
        ) => {
            state.metrics.login(LoginResult::Refused);
            Ok(render(
                StatusCode::UNAUTHORIZED,
                next,
                &form.username,
                Some(&e.to_string()),
                state.accounts.room_mode(),
            ))
        }
        Err(e @ AuthError::RateLimited { retry_after }) => {
            state.metrics.login(LoginResult::RateLimited);
            tracing::warn!(%client, user = %form.username, "login rate limited");
            let mut r = render(
                StatusCode::TOO_MANY_REQUESTS,
                next,
                &form.username,
                Some(&e.to_string()),
                state.accounts.room_mode(),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(r)
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /logout`: asks first. Logging out changes state, so it is a
/// same-origin POST (the origin guard refuses it from other sites); a GET
/// that logged out would let any page log a participant out with an image.
pub async fn logout_page() -> Response {
    our_page("Log out", LOGOUT, StatusCode::OK)
}

/// `POST /logout`: ends the session and goes to the login page.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = session_token(&headers, cookie_name(&state)) {
        state.accounts.logout(token).await?;
    }
    let mut r = Redirect::to("/login").into_response();
    set_cookie(&mut r, &clear_cookie(&state));
    Ok(r)
}

fn set_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

fn append_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The browser's device cookie: sent only to `/login`, kept for 30 days.
const DEVICE_COOKIE: &str = "comfyume_device";

fn device_cookie(state: &AppState, value: &str) -> String {
    let secure = if state.config.auth.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{DEVICE_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        30 * 24 * 3600
    )
}

fn render(
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
    room_mode: bool,
) -> Response {
    let error_html = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let (how, room_field) = if room_mode {
        (
            "With a card from your instructor, use its user name and password. The first time without one, choose a user name (letters, digits, - and _) and a password of your own (8 characters or more), and enter the room's password; next time, your name and your own password are enough.",
            "<label for=\"room_password\">Room password (first time only)</label>\n    <input id=\"room_password\" name=\"room_password\" type=\"password\" autocomplete=\"off\">",
        )
    } else {
        (
            "The user name and password are on the card your instructor gave you.",
            "",
        )
    };
    let main = LOGIN
        .replace("{{how}}", how)
        .replace("{{room}}", room_field)
        .replace("{{error}}", &error_html)
        .replace("{{next}}", &escape(next))
        .replace("{{username}}", &escape(username));
    our_page("Log in", &main, status)
}

/// Only same-site paths: `next=//evil.example` or `next=https://…` would
/// turn the login page into an open redirect.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                // Browsers drop tabs and newlines from URLs ("/\t/evil"
                // would become "//evil"): no whitespace or control characters.
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/?a=1")), "/?a=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/ /evil.example")), "/");
        assert_eq!(safe_next(Some("/ /evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
