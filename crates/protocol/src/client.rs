//! The HTTP and WebSocket client of one ComfyUI server (stock ComfyUI, the
//! simulator, or anything else that speaks its protocol).
//!
//! Requests never carry a browser's `Origin` or `Sec-Fetch-*` headers:
//! stock ComfyUI answers 403 to those on loopback.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::Secret;

/// A WebSocket to a ComfyUI server.
pub type BackendSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend refused the prompt (HTTP 400) with ComfyUI's error body.
    #[error("backend '{backend}' refused the prompt")]
    Rejected { backend: String, body: Value },
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

/// A `GET` answered, whatever its status.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

impl Fetched {
    /// The body as JSON, for a 200.
    pub fn json(&self) -> Option<Value> {
        (self.status == 200)
            .then(|| serde_json::from_slice(&self.body).ok())
            .flatten()
    }
}

/// An error with every cause under it (`outer: inner: root`): reqwest's
/// own message names the URL but not why, which is in its sources
/// ("connection refused", "timed out"). The text is what an operator
/// reads in the admin console and the log.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        // Some layers repeat their source's words in their own.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

/// ComfyUI's own words for why it refused a prompt: a 400 body's
/// `error.message`, with its `details` in parentheses when there are any,
/// then each failing node's errors (`node_errors`, which is where a node's
/// own `VALIDATE_INPUTS` says what is wrong).
pub fn rejection_summary(body: &Value) -> String {
    let error = body.get("error");
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let message = text("message").unwrap_or("invalid prompt");
    let mut summary = match text("details") {
        Some(details) => format!("{message} ({details})"),
        None => message.to_string(),
    };
    let nodes = body.get("node_errors").and_then(Value::as_object);
    for (id, node) in nodes.into_iter().flatten() {
        let class = node
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let reasons: Vec<String> = node
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| {
                let field = |k: &str| e.get(k).and_then(Value::as_str).filter(|t| !t.is_empty());
                match (field("message"), field("details")) {
                    (Some(m), Some(d)) => format!("{m}: {d}"),
                    (Some(m), None) => m.to_string(),
                    (None, Some(d)) => d.to_string(),
                    (None, None) => "invalid".to_string(),
                }
            })
            .collect();
        summary.push_str(&format!("; {class} (node {id}): {}", reasons.join("; ")));
    }
    summary
}

/// The first node a 400 body's `node_errors` names: its id and class.
pub fn rejected_node(body: &Value) -> Option<(String, String)> {
    let (id, node) = body.get("node_errors")?.as_object()?.iter().next()?;
    let class = node
        .get("class_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some((id.clone(), class.to_string()))
}

/// A client for one ComfyUI server, named in its errors.
#[derive(Clone, Debug)]
pub struct ComfyClient {
    name: String,
    token: Option<Secret>,
    base: String,
    http: reqwest::Client,
}

impl ComfyClient {
    /// A client for the server at `url` (`http://` or `https://`), called
    /// `name` in errors; `token` goes with every GET as a bearer token.
    pub fn new(
        name: impl Into<String>,
        url: &str,
        token: Option<Secret>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            name: name.into(),
            token,
            base: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared HTTP client: explicit timeouts so a hung backend cannot hang
    /// a participant's page load. Fails when the system's CA certificates
    /// cannot be loaded (HTTPS needs them).
    pub fn http_client() -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("comfyume/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The server's node catalogue (`GET /object_info`).
    pub async fn object_info(&self) -> Result<Map<String, Value>, BackendError> {
        self.object_info_at("/object_info").await
    }

    /// A node catalogue served at `path` (a worker serves its ComfyUI's at
    /// `/v1/object_info`).
    pub async fn object_info_at(&self, path: &str) -> Result<Map<String, Value>, BackendError> {
        match self.get_json(path).await? {
            Value::Object(m) => Ok(m),
            _ => Err(self.bad(path, "not a JSON object")),
        }
    }

    /// The backend's `GET /system_stats`.
    pub async fn system_stats(&self) -> Result<Value, BackendError> {
        self.get_json("/system_stats").await
    }

    /// Queues a prompt (`POST /prompt`). A 400 is [`BackendError::Rejected`]
    /// with ComfyUI's body.
    pub async fn post_prompt(&self, body: &Value) -> Result<Value, BackendError> {
        let response = self
            .http
            .post(format!("{}/prompt", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status == reqwest::StatusCode::BAD_REQUEST {
            // ComfyUI's refusals are JSON; anything else (a proxy's page)
            // is not a verdict on the prompt.
            let text = response
                .text()
                .await
                .map_err(|e| self.bad("/prompt", &describe(&e)))?;
            return match serde_json::from_str::<Value>(&text) {
                Ok(body) => Err(BackendError::Rejected {
                    backend: self.name.clone(),
                    body,
                }),
                Err(_) => Err(self.bad(
                    "/prompt",
                    &format!(
                        "HTTP 400 without ComfyUI's JSON: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                )),
            };
        }
        if !status.is_success() {
            return Err(self.status("/prompt", status));
        }
        response
            .json()
            .await
            .map_err(|e| self.bad("/prompt", &describe(&e)))
    }

    /// Uploads an input file (`POST /upload/image`, overwriting); returns the
    /// name the backend stored it under.
    pub async fn upload_input(&self, name: &str, bytes: Vec<u8>) -> Result<String, BackendError> {
        self.upload_input_to("", name, bytes).await
    }

    /// Uploads an input file into `subfolder` of the input folder (`""` for
    /// the folder itself), overwriting; returns the name the backend stored
    /// it under (without the subfolder).
    pub async fn upload_input_to(
        &self,
        subfolder: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, BackendError> {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let mut form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("type", "input")
            .text("overwrite", "true");
        if !subfolder.is_empty() {
            form = form.text("subfolder", subfolder.to_string());
        }
        let response = self
            .http
            .post(format!("{}/upload/image", self.base))
            .multipart(form)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.status("/upload/image", response.status()));
        }
        let v: Value = response
            .json()
            .await
            .map_err(|e| self.bad("/upload/image", &describe(&e)))?;
        v.get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.bad("/upload/image", "no name in the answer"))
    }

    /// Downloads a file the backend produced (`GET /view`).
    pub async fn download(
        &self,
        filename: &str,
        subfolder: &str,
        kind: &str,
    ) -> Result<Vec<u8>, BackendError> {
        let response = self
            .http
            .get(format!("{}/view", self.base))
            .query(&[
                ("filename", filename),
                ("subfolder", subfolder),
                ("type", kind),
            ])
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.status("/view", response.status()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.bad("/view", &describe(&e)))?;
        Ok(bytes.to_vec())
    }

    /// Interrupts `prompt_id` if it is the one running there.
    pub async fn interrupt(&self, prompt_id: &str) -> Result<(), BackendError> {
        let response = self
            .http
            .post(format!("{}/interrupt", self.base))
            .json(&serde_json::json!({ "prompt_id": prompt_id }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.status("/interrupt", response.status()));
        }
        Ok(())
    }

    /// Removes `prompt_id` from the backend's pending queue
    /// (`POST /queue {"delete": [id]}`); a running prompt is unaffected.
    pub async fn delete_queued(&self, prompt_id: &str) -> Result<(), BackendError> {
        let response = self
            .http
            .post(format!("{}/queue", self.base))
            .json(&serde_json::json!({ "delete": [prompt_id] }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.status("/queue", response.status()));
        }
        Ok(())
    }

    /// The backend's `GET /queue`: `{"queue_running": [...], "queue_pending": [...]}`.
    pub async fn queue(&self) -> Result<Value, BackendError> {
        self.get_json("/queue").await
    }

    /// The backend's history entry for one prompt (`{}` when it has none).
    pub async fn history(&self, prompt_id: &str) -> Result<Value, BackendError> {
        self.get_json(&format!("/history/{prompt_id}")).await
    }

    /// Opens the backend's WebSocket as client `client_id`.
    pub async fn connect_ws(&self, client_id: &str) -> Result<BackendSocket, BackendError> {
        let ws_base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", self.base.trim_start_matches("http://"))
        };
        let url = format!("{ws_base}/ws?clientId={client_id}");
        // No Nagle delay on our small frames (see server.rs).
        let connect = tokio_tungstenite::connect_async_with_config(url, None, true);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(BackendError::Unreachable {
                backend: self.name.clone(),
                reason: describe(&e),
            }),
            Err(_) => Err(BackendError::Unreachable {
                backend: self.name.clone(),
                reason: "timed out opening the WebSocket".into(),
            }),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> BackendError {
        BackendError::Unreachable {
            backend: self.name.clone(),
            reason: describe(&e),
        }
    }

    fn status(&self, path: &str, status: reqwest::StatusCode) -> BackendError {
        BackendError::Status {
            backend: self.name.clone(),
            path: path.to_string(),
            status: status.as_u16(),
        }
    }

    /// `GET path` as JSON, with the bearer token if there is one.
    pub async fn get_json(&self, path: &str) -> Result<Value, BackendError> {
        let mut request = self.http.get(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::Unreachable {
                backend: self.name.clone(),
                reason: describe(&e),
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
            .map_err(|e| self.bad(path, &describe(&e)))
    }

    /// `GET path` (with its query) as it comes: status, content type and
    /// body, whatever the status, with the bearer token if there is one.
    /// A body over `max_bytes` is [`BackendError::BadResponse`].
    pub async fn fetch(&self, path: &str, max_bytes: usize) -> Result<Fetched, BackendError> {
        let mut request = self.http.get(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request.send().await.map_err(|e| self.unreachable(e))?;
        let too_big = || self.bad(path, &format!("the answer is over {max_bytes} bytes"));
        if response
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return Err(too_big());
        }
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.bad(path, &describe(&e)))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status,
            content_type,
            body: body.into(),
        })
    }

    /// `POST path` with a JSON body, answered with JSON (any status but
    /// success is [`BackendError::Status`]).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, BackendError> {
        let mut request = self.http.post(format!("{}{}", self.base, path)).json(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status(path, status));
        }
        response
            .json()
            .await
            .map_err(|e| self.bad(path, &describe(&e)))
    }

    fn bad(&self, path: &str, reason: &str) -> BackendError {
        BackendError::BadResponse {
            backend: self.name.clone(),
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejections_quote_comfyui() {
        let body = json!({"error": {"type": "missing_node_type", "message": "Node 'X' not found.", "details": "Node ID '#1'"}});
        assert_eq!(
            rejection_summary(&body),
            "Node 'X' not found. (Node ID '#1')"
        );
        let body = json!({"error": {"message": "Prompt has no outputs", "details": ""}});
        assert_eq!(rejection_summary(&body), "Prompt has no outputs");
        assert_eq!(rejection_summary(&json!(null)), "invalid prompt");
    }

    /// A refusal from a node's own `VALIDATE_INPUTS` names the node and
    /// its reason, as the 400 body does.
    #[test]
    fn rejections_name_the_failing_nodes() {
        let body = json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"2": {"errors": [{"type": "custom_validation_failed", "message": "Failed to validate prompt for output 3", "details": "amount must be a multiple of 0.25"}], "dependent_outputs": ["3"], "class_type": "Strength"}},
        });
        assert_eq!(
            rejection_summary(&body),
            "Prompt outputs failed validation; Strength (node 2): Failed to validate prompt for output 3: amount must be a multiple of 0.25"
        );
        assert_eq!(rejected_node(&body), Some(("2".into(), "Strength".into())));
        assert_eq!(rejected_node(&json!({"error": {}})), None);
    }

    /// An operator reads why a backend is unreachable, not only its URL.
    #[tokio::test]
    async fn an_unreachable_backend_says_why() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = ComfyClient::new(
            "gpu-1",
            &format!("http://127.0.0.1:{port}"),
            None,
            ComfyClient::http_client().unwrap(),
        );
        let e = client.system_stats().await.unwrap_err().to_string();
        assert!(e.starts_with("backend 'gpu-1' is unreachable: "), "{e}");
        assert!(
            e.to_lowercase().contains("refused"),
            "the cause is named: {e}"
        );
    }
}
