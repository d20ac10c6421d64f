//! The gateway's side of the worker protocol: [`WorkerClient`] asks a
//! worker for its health and runs a job as one streamed request, yielding
//! its [`Frame`]s as they arrive.
//!
//! Every way a run can go wrong before or during the stream is a distinct
//! [`WorkerError`], so the caller can choose: resend with data
//! ([`WorkerError::MissingInputs`]), try another replica
//! ([`WorkerError::Busy`], [`WorkerError::Unreachable`], a broken stream),
//! or give up ([`WorkerError::BadRequest`], [`WorkerError::Unauthorized`]).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunRequest;
use super::stream::{self, DecodeError, Decoder, Frame};
use crate::Secret;

/// A worker endpoint: its base URL (e.g. a serverless platform's load
/// balancer), the bearer token, and the HTTP client to reach it with.
#[derive(Clone, Debug)]
pub struct WorkerClient {
    pub base_url: String,
    pub token: Secret,
    /// Must not have an overall request timeout: a run lasts as long as the
    /// job. [`WorkerClient::http_client`] builds a suitable one.
    pub http: reqwest::Client,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ready` or `starting`.
    pub status: String,
    pub comfyui: String,
    pub running: u32,
    pub version: String,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No answer (connection refused, DNS, TLS, timeout).
    #[error("the worker is unreachable: {0}")]
    Unreachable(String),
    #[error("the worker refused the token (HTTP 401)")]
    Unauthorized,
    /// At its `--max-jobs`: try another replica.
    #[error("the worker is busy (HTTP 429)")]
    Busy,
    /// Content-addressed inputs the worker's ComfyUI does not have: resend
    /// these with their data.
    #[error("the worker lacks input files: {}", .0.join(", "))]
    MissingInputs(Vec<String>),
    #[error("the worker refused the request: {0}")]
    BadRequest(String),
    #[error("the worker answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The stream's bytes are not the protocol, or it ended without END
    /// or ERROR (the worker or a proxy cut it).
    #[error("the worker's stream is unusable: {0}")]
    Protocol(#[from] DecodeError),
    /// Reading the stream failed midway.
    #[error("the worker's stream broke: {0}")]
    Broken(String),
}

/// How long the stream may stay silent: the worker sends something at
/// least every 15 s while a job runs.
const READ_TIMEOUT: Duration = Duration::from_secs(90);

enum State {
    Start(reqwest::RequestBuilder),
    Reading {
        response: reqwest::Response,
        decoder: Decoder,
        pending: VecDeque<Frame>,
    },
    Done,
}

impl WorkerClient {
    pub fn new(base_url: impl Into<String>, token: Secret, http: reqwest::Client) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// An HTTP client fit for runs: connect and per-read timeouts, but no
    /// overall one.
    pub fn http_client() -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("comfyume/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, WorkerError> {
        let response = self
            .http
            .get(self.url("/v1/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| WorkerError::Unreachable(crate::client::describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(WorkerError::Status {
                status: status.as_u16(),
                body: short_body(response).await,
            });
        }
        response
            .json()
            .await
            .map_err(|e| WorkerError::Broken(crate::client::describe(&e)))
    }

    /// Runs `request`: the frames of the job as they arrive. The stream
    /// ends after a terminal frame (END or ERROR) or after the first
    /// error; dropping it disconnects, which makes the worker cancel the job.
    pub fn run(
        &self,
        request: &RunRequest,
    ) -> impl Stream<Item = Result<Frame, WorkerError>> + Send + 'static {
        let builder = self
            .http
            .post(self.url("/v1/run"))
            .bearer_auth(self.token.expose())
            .json(request);
        futures_util::stream::unfold(State::Start(builder), step)
    }
}

async fn step(mut state: State) -> Option<(Result<Frame, WorkerError>, State)> {
    loop {
        state = match state {
            State::Done => return None,
            State::Start(builder) => match builder.send().await {
                Err(e) => {
                    return Some((
                        Err(WorkerError::Unreachable(crate::client::describe(&e))),
                        State::Done,
                    ));
                }
                Ok(response) => match accept(response).await {
                    Err(e) => return Some((Err(e), State::Done)),
                    Ok(response) => State::Reading {
                        response,
                        decoder: Decoder::new(),
                        pending: VecDeque::new(),
                    },
                },
            },
            State::Reading {
                mut response,
                mut decoder,
                mut pending,
            } => {
                if let Some(frame) = pending.pop_front() {
                    let next = if frame.is_terminal() {
                        State::Done
                    } else {
                        State::Reading {
                            response,
                            decoder,
                            pending,
                        }
                    };
                    return Some((Ok(frame), next));
                }
                match response.chunk().await {
                    Ok(Some(bytes)) => match decoder.push(&bytes) {
                        Ok(frames) => pending.extend(frames),
                        Err(e) => return Some((Err(e.into()), State::Done)),
                    },
                    // A clean end comes right after a terminal frame, which
                    // already ended the stream; reaching here means it was cut.
                    Ok(None) => {
                        let e = decoder.finish().err().unwrap_or(DecodeError::NoEnd);
                        return Some((Err(e.into()), State::Done));
                    }
                    Err(e) => {
                        return Some((
                            Err(WorkerError::Broken(crate::client::describe(&e))),
                            State::Done,
                        ));
                    }
                }
                State::Reading {
                    response,
                    decoder,
                    pending,
                }
            }
        };
    }
}

/// Maps the answer's status to an error, or keeps a 200 stream.
async fn accept(response: reqwest::Response) -> Result<reqwest::Response, WorkerError> {
    let status = response.status().as_u16();
    match status {
        200 => {
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type.starts_with(stream::CONTENT_TYPE) {
                Ok(response)
            } else {
                Err(WorkerError::Status {
                    status,
                    body: format!("not a worker stream (Content-Type: {content_type:?})"),
                })
            }
        }
        401 => Err(WorkerError::Unauthorized),
        429 => Err(WorkerError::Busy),
        409 => {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let missing: Vec<String> = body
                .get("missing")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            Err(WorkerError::MissingInputs(missing))
        }
        400 => {
            let body = short_body(response).await;
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or(body);
            Err(WorkerError::BadRequest(message))
        }
        _ => Err(WorkerError::Status {
            status,
            body: short_body(response).await,
        }),
    }
}

/// The start of an error body, for a message.
async fn short_body(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    match text.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
