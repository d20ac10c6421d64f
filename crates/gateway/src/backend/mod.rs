//! The configured GPU backends and the one way a job runs on any of them.
//!
//! A backend is reached through one of two links: a stock ComfyUI (or the
//! simulator) spoken to directly, or a `comfyume worker` that carries each
//! job in one streamed request. This module is the only code that tells
//! them apart: the dispatcher sees a [`Backend`] and, for each job, a
//! [`BackendSession`] (see `session`), whatever the link.

mod comfy;
mod extension;
mod session;
mod worker;

pub use comfyume_protocol::{BackendError, JobStatus, OutputFile};
pub use session::{BackendSession, Session, SessionError, SessionEvent, Submission};

use comfyume_protocol::extension as paths;
use comfyume_protocol::worker::WorkerClient;
use comfyume_protocol::{ComfyClient, Secret};
use serde_json::{Map, Value};

use crate::config::{BackendConfig, BackendKind};

/// Prompts the gateway keeps on a ComfyUI per slot: the one it runs, and
/// the next one waiting in its queue (`dispatch.queue_ahead`).
pub const PLACES_PER_SLOT: u32 = 2;

/// One configured backend.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    pub kind: BackendKind,
    pub slots: u32,
    pub group: Option<String>,
    url: String,
    link: Link,
}

#[derive(Clone, Debug)]
enum Link {
    /// Stock ComfyUI or the simulator, and each slot's socket between jobs.
    Comfy(ComfyClient, comfy::IdleSockets),
    /// A `comfyume worker`: `api` answers `/v1/health` and `/v1/object_info`
    /// (with the token), `runs` streams the jobs.
    Worker {
        api: ComfyClient,
        runs: WorkerClient,
    },
}

/// The HTTP client could not be built: in practice, no CA certificates
/// (a bare container). Said so that an operator knows what to add.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set up HTTP(S) connections to GPU backends ({}). HTTPS needs the system's CA \
     certificates: install them (Debian: the ca-certificates package) or give the \
     container /etc/ssl/certs",
    innermost(.0)
)]
pub struct HttpSetupError(reqwest::Error);

/// reqwest says only "builder error"; the reason is its source's.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

impl Backend {
    /// `http` is the shared client for short requests; a worker's job
    /// streams get a client of their own (no overall time-out).
    pub fn new(config: &BackendConfig, http: reqwest::Client) -> Result<Self, BackendError> {
        let api = ComfyClient::new(&config.name, &config.url, config.token.clone(), http);
        let link = match config.kind {
            BackendKind::Comfyui | BackendKind::Sim => {
                Link::Comfy(api, comfy::IdleSockets::new(config.slots * PLACES_PER_SLOT))
            }
            BackendKind::Worker => {
                let streams =
                    WorkerClient::http_client().map_err(|e| BackendError::Unreachable {
                        backend: config.name.clone(),
                        reason: HttpSetupError(e).to_string(),
                    })?;
                let token = config.token.clone().unwrap_or_else(|| Secret::new(""));
                let runs = WorkerClient::new(&config.url, token, streams);
                Link::Worker { api, runs }
            }
        };
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            slots: config.slots,
            group: config.group.clone(),
            url: config.url.trim_end_matches('/').to_string(),
            link,
        })
    }

    /// The shared HTTP client: explicit timeouts so a hung backend cannot
    /// hang a participant's page load.
    pub fn http_client() -> Result<reqwest::Client, HttpSetupError> {
        ComfyClient::http_client().map_err(HttpSetupError)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kind as the configuration names it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            BackendKind::Comfyui => "comfyui",
            BackendKind::Sim => "sim",
            BackendKind::Worker => "worker",
        }
    }

    /// Whether the backend answers (and is not still loading): ComfyUI's
    /// `/system_stats`, or a worker's `/v1/health`. A worker whose ComfyUI
    /// is still cold counts as up: on a scale-to-zero platform only a job's
    /// request starts it, and the worker reports the wait while it runs.
    pub async fn check(&self) -> Result<(), BackendError> {
        match &self.link {
            Link::Comfy(comfy, _) => comfy.system_stats().await.map(drop),
            Link::Worker { api, .. } => api.get_json("/v1/health").await.map(drop),
        }
    }

    /// The backend's node catalogue.
    pub async fn object_info(&self) -> Result<Map<String, Value>, BackendError> {
        match &self.link {
            Link::Comfy(comfy, _) => comfy.object_info().await,
            Link::Worker { api, .. } => api.object_info_at("/v1/object_info").await,
        }
    }

    /// ComfyUI's answer to `GET path` (one of the read-only routes a
    /// worker relays, see `comfyume_protocol::worker::relays`), whatever
    /// its status; on a worker, through its relay.
    pub async fn fetch(&self, path: &str) -> Result<comfyume_protocol::Fetched, BackendError> {
        use comfyume_protocol::worker::{COMFYUI_RELAY, MAX_RELAYED_BYTES};
        match &self.link {
            Link::Comfy(comfy, _) => comfy.fetch(path, MAX_RELAYED_BYTES).await,
            Link::Worker { api, .. } => {
                api.fetch(&format!("{COMFYUI_RELAY}{path}"), MAX_RELAYED_BYTES)
                    .await
            }
        }
    }

    /// The signatures of the nodes' validation functions, from ComfyUME's
    /// backend extension (on a worker's ComfyUI, through the worker); `None`
    /// when the backend does not run it (404: not an error, the backend
    /// that runs each job then makes those checks).
    pub async fn validator_signatures(
        &self,
    ) -> Result<Option<comfyume_prompt::Signatures>, BackendError> {
        let (client, path) = match &self.link {
            Link::Comfy(comfy, _) => (comfy, paths::SIGNATURES),
            Link::Worker { api, .. } => (api, paths::WORKER_SIGNATURES),
        };
        match client.get_json(path).await {
            Ok(body) => extension::signatures(&body)
                .map(Some)
                .map_err(|reason| self.bad_answer(path, reason)),
            Err(BackendError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs nodes' validation functions through the backend extension:
    /// one verdict per call, in order.
    pub async fn run_validators(
        &self,
        calls: &[comfyume_prompt::ValidatorCall],
    ) -> Result<Vec<comfyume_prompt::Verdict>, BackendError> {
        let (client, path) = match &self.link {
            Link::Comfy(comfy, _) => (comfy, paths::VALIDATE_INPUTS),
            Link::Worker { api, .. } => (api, paths::WORKER_VALIDATE_INPUTS),
        };
        let body = client.post_json(path, &extension::request(calls)).await?;
        extension::verdicts(&body, calls.len()).map_err(|reason| self.bad_answer(path, reason))
    }

    fn bad_answer(&self, path: &str, reason: String) -> BackendError {
        BackendError::BadResponse {
            backend: self.name.clone(),
            path: path.to_string(),
            reason,
        }
    }

    /// The backend's GPUs as ComfyUI's `/system_stats` lists them; `None`
    /// for a worker, whose protocol does not report them.
    pub async fn devices(&self) -> Result<Option<Vec<Value>>, BackendError> {
        match &self.link {
            Link::Comfy(comfy, _) => {
                let stats = comfy.system_stats().await?;
                Ok(Some(
                    stats
                        .get("devices")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                ))
            }
            Link::Worker { .. } => Ok(None),
        }
    }

    /// Makes sure the backend no longer runs `prompt_id` (after the run
    /// gave up on it). Best effort: the backend may be gone.
    pub async fn forget(&self, prompt_id: &str) {
        match &self.link {
            Link::Comfy(client, _) => {
                if let Err(e) = comfyume_protocol::session::cancel_prompt(client, prompt_id).await {
                    tracing::debug!(backend = %self.name, error = %e, "could not take back a lost job");
                }
            }
            // Its stream ended with the run, which made the worker cancel it.
            Link::Worker { .. } => {}
        }
    }

    /// How many jobs each slot may hold at once: on a ComfyUI, with
    /// `queue_ahead`, the running one and the next one waiting in the
    /// ComfyUI's own queue; a worker takes one job per request.
    pub fn places_per_slot(&self, queue_ahead: bool) -> u32 {
        match self.link {
            Link::Comfy(..) if queue_ahead => PLACES_PER_SLOT,
            _ => 1,
        }
    }

    /// The client id the backend knows place `place` by (see
    /// [`slot_session`](Self::slot_session)): ComfyUI sends a prompt's
    /// events to the client that queued it, so a job re-attached after a
    /// restart is heard under the same id.
    pub fn slot_client_id(&self, place: u32) -> String {
        format!("comfyume-{}-{place}", self.name)
    }

    /// A session for one job at place `place` (slot `place % slots`; each
    /// place of a slot is a client of its own, so the events of the job
    /// waiting behind the running one reach that job only), under the
    /// prompt id `prompt_id`. On a ComfyUI it follows the job on the
    /// socket the place's previous job left open, when that is still open.
    pub fn slot_session(&self, place: u32, prompt_id: &str) -> Session {
        match &self.link {
            Link::Comfy(client, idle) => Session::Comfy(comfy::ComfyJob::new(
                client.clone(),
                self.slot_client_id(place),
                prompt_id.to_string(),
                Some(idle.slot(place)),
            )),
            Link::Worker { runs, .. } => {
                Session::Worker(worker::WorkerJob::new(runs.clone(), prompt_id.to_string()))
            }
        }
    }

    /// A session for a prompt outside the slots (the warm-up), as client
    /// `client_id`, on a socket of its own.
    pub fn session(&self, client_id: &str, prompt_id: &str) -> Session {
        match &self.link {
            Link::Comfy(client, _) => Session::Comfy(comfy::ComfyJob::new(
                client.clone(),
                client_id.to_string(),
                prompt_id.to_string(),
                None,
            )),
            Link::Worker { runs, .. } => {
                Session::Worker(worker::WorkerJob::new(runs.clone(), prompt_id.to_string()))
            }
        }
    }
}
