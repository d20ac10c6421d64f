//! GPU backends: the configured ComfyUI-protocol servers and the HTTP client
//! that talks to them.
//!
//! The gateway speaks to every backend as a plain ComfyUI client. Requests
//! never carry a browser's `Origin` or `Sec-Fetch-*` headers: stock ComfyUI
//! answers 403 to those on loopback.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{BackendConfig, BackendKind};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend '{backend}' is unreachable: {reason}")]
    Unreachable { backend: String, reason: String },
    #[error("backend '{backend}' answered HTTP {status} to {path}")]
    Status {
        backend: String,
        path: String,
        status: u16,
    },
    #[error("backend '{backend}' sent an unreadable answer to {path}: {reason}")]
    BadResponse {
        backend: String,
        path: String,
        reason: String,
    },
}

/// A client for one backend.
#[derive(Clone, Debug)]
pub struct BackendClient {
    pub name: String,
    pub kind: BackendKind,
    pub slots: u32,
    base: String,
    http: reqwest::Client,
}

impl BackendClient {
    pub fn new(config: &BackendConfig, http: reqwest::Client) -> Self {
        Self {
            name: config.name.clone(),
            kind: config.kind,
            slots: config.slots,
            base: config.url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The shared HTTP client: explicit timeouts so a hung backend cannot hang
    /// a participant's page load.
    pub fn http_client() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("comfyume/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building the HTTP client")
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The backend's node catalogue (`GET /object_info`).
    pub async fn object_info(&self) -> Result<Map<String, Value>, BackendError> {
        match self.get_json("/object_info").await? {
            Value::Object(m) => Ok(m),
            _ => Err(self.bad("/object_info", "not a JSON object")),
        }
    }

    /// The backend's `GET /system_stats`.
    pub async fn system_stats(&self) -> Result<Value, BackendError> {
        self.get_json("/system_stats").await
    }

    async fn get_json(&self, path: &str) -> Result<Value, BackendError> {
        let response = self
            .http
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .map_err(|e| BackendError::Unreachable {
                backend: self.name.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(BackendError::Status {
                backend: self.name.clone(),
                path: path.to_string(),
                status: status.as_u16(),
            });
        }
        response
            .json()
            .await
            .map_err(|e| self.bad(path, &e.to_string()))
    }

    fn bad(&self, path: &str, reason: &str) -> BackendError {
        BackendError::BadResponse {
            backend: self.name.clone(),
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }
}
