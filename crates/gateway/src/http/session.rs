//! Who is asking: the session cookie, and the extractors that turn it into
//! a user (or refuse the request).

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::auth::SessionUser;
use crate::http::error::ApiError;

/// The session cookie's name. With `Secure` cookies the `__Host-` prefix
/// also pins it to this host and path.
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.config.auth.secure_cookies {
        "__Host-comfyume_session"
    } else {
        "comfyume_session"
    }
}

pub fn session_cookie(state: &AppState, token: &str) -> String {
    let max_age = u64::from(state.config.auth.session_hours) * 3600;
    let secure = if state.config.auth.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(state)
    )
}

pub fn clear_cookie(state: &AppState) -> String {
    let secure = if state.config.auth.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
        cookie_name(state)
    )
}

/// The session token sent with the request, if any.
pub fn session_token<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn lookup(parts: &Parts, state: &AppState) -> Result<Option<SessionUser>, ApiError> {
    if let Some(u) = &state.local_user {
        return Ok(Some(u.clone()));
    }
    match session_token(&parts.headers, cookie_name(state)) {
        Some(token) => Ok(state.accounts.session_user(token).await?),
        None => Ok(None),
    }
}

/// The logged-in user of an API or socket request; 401 without one.
pub struct CurrentUser(pub SessionUser);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        lookup(parts, state)
            .await?
            .map(CurrentUser)
            .ok_or(ApiError::Unauthorized)
    }
}

/// The logged-in user of a page a browser navigates to; without one, a
/// redirect to the login page that comes back here afterwards.
pub struct PageUser(pub SessionUser);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match lookup(parts, state).await? {
            Some(u) => Ok(PageUser(u)),
            None => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
                    .to_string();
                Err(ApiError::LoginRequired { next })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; comfyume_session=tok; b=2".parse().unwrap());
        assert_eq!(session_token(&h, "comfyume_session"), Some("tok"));
        assert_eq!(session_token(&h, "__Host-comfyume_session"), None);
    }
}
