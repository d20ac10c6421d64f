//! The runner's phases against a scripted backend session: submit, follow,
//! recover from a dropped socket or a silent backend through the backend's
//! own account of the job, outputs and inputs, cancel, time limits. The
//! store is a real SQLite database and the files land in a real folder;
//! only the backend is scripted (the integration tests run real ones).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comfyume_domain::{Job, JobState, Role, UserName};
use comfyume_protocol::{HistoryEntry, Outcome as BackendOutcome, OutputFile};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::{Outcome, RunLimits, run};
use crate::backend::{BackendSession, JobStatus, SessionError, SessionEvent, Submission};
use crate::catalogue::Catalogue;
use crate::dispatch::Shared;
use crate::hub::{Hub, Outbound};
use crate::store::{Inserted, NewJob, Store};
use crate::workspace::Workspaces;

const SID: &str = "browser-sid";

/// One answer of the scripted `next`.
enum Step {
    Event(SessionEvent),
    Fail(SessionError),
    /// Nothing ever comes (a hung backend).
    Hang,
}

/// What the run asked of the session, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Submit(Submission),
    Reattach,
    Reconnect,
    Status,
    Fetch(String),
    Stop,
}

/// A backend that answers from a script and notes every call.
struct Scripted {
    submit: Result<(), SessionError>,
    steps: VecDeque<Step>,
    statuses: VecDeque<Result<JobStatus, SessionError>>,
    reconnects: VecDeque<Result<(), SessionError>>,
    /// Steps that follow a `stop` (what the backend says of the stop).
    after_stop: VecDeque<Step>,
    can_reattach: bool,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Told when the run has read its first event.
    first_read: Option<Arc<Notify>>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            submit: Ok(()),
            steps: steps.into(),
            statuses: VecDeque::new(),
            reconnects: VecDeque::new(),
            after_stop: VecDeque::new(),
            can_reattach: true,
            calls: Arc::default(),
            first_read: None,
        }
    }

    fn statuses(mut self, statuses: Vec<Result<JobStatus, SessionError>>) -> Self {
        self.statuses = statuses.into();
        self
    }

    fn calls(&self) -> Arc<Mutex<Vec<Call>>> {
        self.calls.clone()
    }

    fn note(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl BackendSession for Scripted {
    fn can_reattach(&self) -> bool {
        self.can_reattach
    }

    async fn submit(&mut self, job: &Submission) -> Result<(), SessionError> {
        self.note(Call::Submit(job.clone()));
        self.submit.clone()
    }

    async fn reattach(&mut self) -> Result<(), SessionError> {
        self.note(Call::Reattach);
        Ok(())
    }

    async fn next(&mut self) -> Result<SessionEvent, SessionError> {
        // Cancel-safe, as the trait asks: a hang stays in the script for
        // the next call when the run stops waiting on this one.
        if matches!(self.steps.front(), Some(Step::Hang)) {
            return std::future::pending().await;
        }
        match self.steps.pop_front() {
            Some(Step::Event(e)) => {
                if let Some(first) = self.first_read.take() {
                    first.notify_one();
                }
                Ok(e)
            }
            Some(Step::Fail(e)) => Err(e),
            Some(Step::Hang) => unreachable!("kept above"),
            None => panic!("the run read past the end of the script"),
        }
    }

    async fn reconnect(&mut self) -> Result<(), SessionError> {
        self.note(Call::Reconnect);
        self.reconnects.pop_front().unwrap_or(Ok(()))
    }

    async fn status(&mut self) -> Result<JobStatus, SessionError> {
        self.note(Call::Status);
        self.statuses
            .pop_front()
            .unwrap_or_else(|| panic!("the script has no answer for status"))
    }

    async fn fetch_output(&mut self, file: &OutputFile) -> Result<Vec<u8>, SessionError> {
        self.note(Call::Fetch(file.filename.clone()));
        Ok(format!("bytes of {}", file.filename).into_bytes())
    }

    async fn stop(&mut self) {
        self.note(Call::Stop);
        let rest: Vec<Step> = self.after_stop.drain(..).collect();
        self.steps = rest.into();
    }
}

/// A real store, hub, catalogue and file tree around one claimed job.
struct Rig {
    shared: Shared,
    job: Job,
    owner: UserName,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(prompt: Value) -> Rig {
        crate::telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let owner = UserName::parse("alice").unwrap();
        let user = store
            .create_user(&owner, "hash", Role::Participant, 1)
            .await
            .unwrap();
        let cache = dir.path().join("catalogue.json");
        std::fs::write(
            &cache,
            json!({"nodes": catalogue(), "devices": []}).to_string(),
        )
        .unwrap();
        let shared = Shared {
            store,
            hub: Arc::new(Hub::default()),
            metrics: Arc::default(),
            workspaces: Workspaces::new(dir.path().join("users")),
            catalogue: Arc::new(Catalogue::new(Vec::new(), cache)),
            progress: Default::default(),
        };
        let inserted = shared
            .store
            .insert_job(
                NewJob {
                    id: Default::default(),
                    owner: user.id,
                    number: None,
                    front: false,
                    prompt,
                    extra_data: json!({"client_id": SID, "create_time": 5, "extra_pnginfo": {}}),
                    outputs_to_execute: vec!["9".into()],
                    partial_targets: None,
                    workflow_id: None,
                    created_at: 10,
                },
                10,
            )
            .await
            .unwrap();
        let Inserted::Queued(job) = inserted else {
            panic!("queued")
        };
        let job = *job;
        assert!(
            shared
                .store
                .claim_job(&job.id, "gpu", 0, 20)
                .await
                .unwrap()
                .is_some()
        );
        let job = shared.store.job(&job.id).await.unwrap().unwrap();
        Rig {
            shared,
            job,
            owner,
            _dir: dir,
        }
    }

    fn id(&self) -> String {
        self.job.id.to_string()
    }

    fn limits(&self) -> RunLimits {
        RunLimits {
            job_timeout: Duration::from_secs(600),
            may_retry: true,
            resume: false,
            queued: tokio::sync::watch::Sender::new(false),
            after: None,
            recorded: None,
            cancel: Arc::new(Notify::new()),
            silence_check: Duration::from_secs(600),
        }
    }

    async fn run(&self, session: Scripted, limits: RunLimits) -> Outcome {
        run(
            &self.shared,
            self.job.clone(),
            self.owner.clone(),
            session,
            limits,
        )
        .await
    }

    fn listen(&self) -> (crate::hub::Registration<'_>, mpsc::Receiver<Outbound>) {
        self.shared.hub.register(self.job.owner, SID)
    }

    async fn stored(&self) -> Job {
        self.shared.store.job(&self.job.id).await.unwrap().unwrap()
    }

    fn output_file(&self, name: &str) -> std::path::PathBuf {
        self.shared
            .workspaces
            .user(&self.owner)
            .kind_dir(comfyume_domain::FileKind::Output)
            .join(name)
    }

    // --- ComfyUI's frames for this job -------------------------------------

    fn event(&self, kind: &str, mut data: Value) -> Step {
        data["prompt_id"] = json!(self.id());
        let raw = json!({"type": kind, "data": data}).to_string();
        Step::Event(SessionEvent::Event {
            kind: kind.into(),
            data,
            raw,
        })
    }

    fn start(&self) -> Step {
        self.event("execution_start", json!({"timestamp": 1}))
    }

    fn executed(&self, node: &str, file: &str) -> Step {
        self.event(
            "executed",
            json!({"node": node, "display_node": node, "output": {"images": [{"filename": file, "subfolder": "", "type": "output"}]}}),
        )
    }

    fn success(&self) -> Step {
        self.event("execution_success", json!({"timestamp": 2}))
    }

    fn history(&self, messages: Value, outputs: Value, status: &str) -> JobStatus {
        let id = self.id();
        let answer = json!({ &id: {
            "prompt": [], "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {},
        }});
        JobStatus::Finished(HistoryEntry::from_answer(&answer, &id).unwrap())
    }
}

fn done() -> Step {
    Step::Event(SessionEvent::Done { outcome: None })
}

/// SaveImage and LoadImage, as ComfyUI describes them.
fn catalogue() -> Value {
    json!({
        "LoadImage": {"input": {"required": {"image": [["a.png"], {"image_upload": true}]}}, "output": ["IMAGE", "MASK"], "output_node": false},
        "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}}, "output": [], "output_node": true},
    })
}

fn save_prompt() -> Value {
    json!({"9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}})
}

/// The `type` of every text frame the owner got, with the node of `executed`.
fn received(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
    let mut kinds = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        match frame {
            Outbound::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let kind = v["type"].as_str().unwrap().to_string();
                kinds.push(match kind.as_str() {
                    "executed" => format!("executed:{}", v["data"]["node"].as_str().unwrap_or("?")),
                    "executing" => format!("executing:{}", v["data"]["node"]),
                    _ => kind,
                });
            }
            Outbound::Binary(_) => kinds.push("binary".into()),
        }
    }
    kinds
}

fn calls(log: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
    log.lock().unwrap().clone()
}

fn no_submit(calls: &[Call]) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| !matches!(c, Call::Submit(_)))
        .cloned()
        .collect()
}

// --- submit and follow --------------------------------------------------------

#[tokio::test]
async fn a_job_runs_to_its_end_with_its_outputs_in_the_owners_files() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let session = Scripted::new(vec![
        rig.start(),
        rig.event("executing", json!({"node": "9", "display_node": "9"})),
        Step::Event(SessionEvent::Binary(bytes::Bytes::from_static(
            b"\0\0\0\x01png",
        ))),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        done(),
    ]);
    let log = session.calls();
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
    let calls = calls(&log);
    let Call::Submit(sent) = &calls[0] else {
        panic!("submitted first: {calls:?}")
    };
    assert_eq!(
        sent.extra_data,
        json!({"extra_pnginfo": {}}),
        "the gateway's own bookkeeping stays home"
    );
    assert_eq!(calls[1..], [Call::Fetch("x_00001_.png".into())]);
    assert_eq!(
        std::fs::read(rig.output_file("x_00001_.png")).unwrap(),
        b"bytes of x_00001_.png"
    );
    assert_eq!(
        received(&mut rx),
        [
            "execution_start",
            r#"executing:"9""#,
            "binary",
            "executed:9",
            "execution_success",
            "status",
            "executing:null"
        ]
    );
    let job = rig.stored().await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(
        job.outputs["9"]["images"][0]["filename"], "x_00001_.png",
        "history keeps the output"
    );
    let kinds: Vec<&str> = job
        .messages
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["execution_start", "execution_success"]);
}

#[tokio::test]
async fn an_output_named_like_an_older_one_gets_a_new_name() {
    let rig = Rig::new(save_prompt()).await;
    std::fs::create_dir_all(rig.output_file("x").parent().unwrap()).unwrap();
    std::fs::write(rig.output_file("x_00001_.png"), b"yesterday's").unwrap();
    let session = Scripted::new(vec![
        rig.start(),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        done(),
    ]);
    rig.run(session, rig.limits()).await;
    let job = rig.stored().await;
    let renamed = job.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    assert_ne!(
        renamed, "x_00001_.png",
        "the older file is not shown instead"
    );
    assert_eq!(
        std::fs::read(rig.output_file(renamed)).unwrap(),
        b"bytes of x_00001_.png"
    );
    assert_eq!(
        std::fs::read(rig.output_file("x_00001_.png")).unwrap(),
        b"yesterday's"
    );
}

#[tokio::test]
async fn files_streamed_ahead_are_not_fetched_again() {
    let rig = Rig::new(save_prompt()).await;
    let file = OutputFile {
        filename: "x_00001_.png".into(),
        subfolder: String::new(),
        kind: "output".into(),
    };
    let session = Scripted::new(vec![
        rig.start(),
        Step::Event(SessionEvent::File {
            file,
            data: b"streamed".to_vec(),
        }),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        Step::Event(SessionEvent::Done {
            outcome: Some(BackendOutcome::Success),
        }),
    ]);
    let log = session.calls();
    rig.run(session, rig.limits()).await;
    assert!(!calls(&log).iter().any(|c| matches!(c, Call::Fetch(_))));
    assert_eq!(
        std::fs::read(rig.output_file("x_00001_.png")).unwrap(),
        b"streamed"
    );
}

#[tokio::test]
async fn outputs_an_earlier_attempt_delivered_are_not_delivered_again() {
    let mut rig = Rig::new(save_prompt()).await;
    rig.job.outputs.insert("9".into(), json!({"images": []}));
    let (_reg, mut rx) = rig.listen();
    let session = Scripted::new(vec![
        rig.start(),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        done(),
    ]);
    let log = session.calls();
    rig.run(session, rig.limits()).await;
    assert!(!calls(&log).iter().any(|c| matches!(c, Call::Fetch(_))));
    assert!(!received(&mut rx).iter().any(|k| k.starts_with("executed")));
}

#[tokio::test]
async fn an_output_with_an_unusable_shape_is_relayed_without_harm() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let session = Scripted::new(vec![
        rig.start(),
        // No node, an output that is not an object, a file outside the folders.
        rig.event("executed", json!({"output": "garbage"})),
        rig.event(
            "executed",
            json!({"node": "9", "output": {"images": [{"filename": "x.png", "subfolder": "../../etc", "type": "output"}]}}),
        ),
        rig.success(),
        done(),
    ]);
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
    let job = rig.stored().await;
    assert_eq!(
        job.outputs["9"]["images"],
        json!([]),
        "a file outside the output folders is dropped, not copied"
    );
    assert!(received(&mut rx).contains(&"executed:9".to_string()));
}

// --- the backend fails --------------------------------------------------------

#[tokio::test]
async fn a_dropped_socket_with_the_job_finished_is_collected_from_history() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let start = json!({"prompt_id": rig.id(), "timestamp": 1});
    let session = Scripted::new(vec![
        rig.start(),
        Step::Fail(SessionError::Lost("the connection ended".into())),
    ])
    .statuses(vec![Ok(rig.history(
        json!([["execution_start", start], ["execution_success", {"prompt_id": rig.id(), "timestamp": 3}]]),
        json!({"9": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}}),
        "success",
    ))]);
    let log = session.calls();
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
    assert_eq!(
        no_submit(&calls(&log)),
        [
            Call::Reconnect,
            Call::Status,
            Call::Fetch("x_00001_.png".into())
        ],
        "listens again before asking"
    );
    assert_eq!(
        received(&mut rx),
        [
            "execution_start",
            "executed:9",
            "execution_success",
            "status",
            "executing:null"
        ],
        "what was missed, once"
    );
    assert!(rig.output_file("x_00001_.png").exists());
}

#[tokio::test]
async fn a_dropped_socket_with_the_job_still_running_is_followed_again() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![
        rig.start(),
        Step::Fail(SessionError::Lost("reset".into())),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        done(),
    ])
    // Asked once when the socket dropped, once more at the end (frames
    // sent while it was down are only in history).
    .statuses(vec![
        Ok(JobStatus::Queued),
        Ok(rig.history(json!([]), json!({}), "success")),
    ]);
    let log = session.calls();
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
    assert_eq!(
        no_submit(&calls(&log)),
        [
            Call::Reconnect,
            Call::Status,
            Call::Fetch("x_00001_.png".into()),
            Call::Status
        ]
    );
}

#[tokio::test]
async fn a_job_the_backend_lost_goes_back_to_the_coordinator() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![
        rig.start(),
        Step::Fail(SessionError::Lost("the connection ended".into())),
    ])
    .statuses(vec![Ok(JobStatus::Unknown)]);
    let Outcome::BackendFault { reason } = rig.run(session, rig.limits()).await else {
        panic!("handed back")
    };
    assert!(
        reason.contains("went away (the connection ended)"),
        "{reason}"
    );
    assert_eq!(
        rig.stored().await.state,
        JobState::InProgress,
        "nothing recorded: the coordinator decides"
    );
}

/// A job handed back to the coordinator keeps the outputs it delivered,
/// so its next attempt does not deliver them again.
#[tokio::test]
async fn a_job_handed_back_keeps_the_outputs_it_delivered() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![
        rig.start(),
        rig.executed("9", "x_00001_.png"),
        Step::Fail(SessionError::Lost("the connection ended".into())),
    ])
    .statuses(vec![Ok(JobStatus::Unknown)]);
    let outcome = rig.run(session, rig.limits()).await;
    assert!(
        matches!(outcome, Outcome::BackendFault { .. }),
        "{outcome:?}"
    );
    let stored = rig.stored().await;
    assert_eq!(stored.state, JobState::InProgress);
    assert!(stored.outputs.contains_key("9"), "{:?}", stored.outputs);
}

/// Outputs delivered while a job goes on are saved once the backend is
/// quiet for a moment (a crash then does not deliver them again), without
/// waiting for the job's end.
#[tokio::test]
async fn delivered_outputs_are_saved_while_the_job_goes_on() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, _rx) = rig.listen();
    let mut session = Scripted::new(vec![
        rig.start(),
        rig.executed("9", "x_00001_.png"),
        Step::Hang,
    ]);
    session.after_stop = vec![
        rig.event("execution_interrupted", json!({"node_id": "9"})),
        done(),
    ]
    .into();
    let limits = rig.limits();
    let cancel = limits.cancel.clone();
    let watch = async {
        // Waits for the save (bounded, so a run that never saves fails
        // instead of hanging).
        for _ in 0..2000 {
            let stored = rig.stored().await;
            if stored.outputs.contains_key("9") {
                assert_eq!(stored.state, JobState::InProgress, "saved before the end");
                cancel.notify_one();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the delivered output was never saved while the job went on");
    };
    let (outcome, ()) = tokio::join!(rig.run(session, limits), watch);
    assert_eq!(outcome, Outcome::Finished(JobState::Cancelled));
}

#[tokio::test]
async fn a_lost_job_with_no_attempt_left_fails_with_a_reason() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let session = Scripted::new(vec![Step::Fail(SessionError::Lost("reset".into()))])
        .statuses(vec![Ok(JobStatus::Unknown)]);
    let limits = RunLimits {
        may_retry: false,
        ..rig.limits()
    };
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Failed)
    );
    let job = rig.stored().await;
    let error = job.error.unwrap();
    assert_eq!(error["exception_type"], "ConnectionError");
    assert_eq!(
        received(&mut rx),
        [
            "execution_start",
            "execution_error",
            "status",
            "executing:null"
        ]
    );
}

#[tokio::test]
async fn a_reconnect_that_fails_loses_the_job() {
    let rig = Rig::new(save_prompt()).await;
    let mut session = Scripted::new(vec![Step::Fail(SessionError::Lost("reset".into()))]);
    session.reconnects = vec![Err(SessionError::Lost("refused".into()))].into();
    let log = session.calls();
    assert!(matches!(
        rig.run(session, rig.limits()).await,
        Outcome::BackendFault { .. }
    ));
    assert_eq!(no_submit(&calls(&log)), [Call::Reconnect]);
}

#[tokio::test]
async fn garbage_from_the_backend_is_its_fault_not_the_jobs() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![
        rig.start(),
        Step::Fail(SessionError::Failed(
            "the worker's stream is unusable: a frame of unknown kind 9".into(),
        )),
    ]);
    let Outcome::BackendFault { reason } = rig.run(session, rig.limits()).await else {
        panic!("handed back")
    };
    assert!(reason.contains("unknown kind 9"), "{reason}");
}

#[tokio::test]
async fn a_silent_backend_is_asked_and_a_finished_job_collected() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![rig.start(), Step::Hang]).statuses(vec![Ok(rig.history(
        json!([["execution_error", {"prompt_id": rig.id(), "exception_message": "boom"}]]),
        json!({}),
        "error",
    ))]);
    let log = session.calls();
    let limits = RunLimits {
        silence_check: Duration::from_millis(20),
        ..rig.limits()
    };
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Failed)
    );
    assert_eq!(
        no_submit(&calls(&log)),
        [Call::Status],
        "the connection is kept: no reconnect"
    );
    assert_eq!(
        rig.stored().await.error.unwrap()["exception_message"],
        "boom"
    );
}

#[tokio::test]
async fn a_job_past_its_time_limit_is_stopped_on_the_backend() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![rig.start(), Step::Hang]);
    let log = session.calls();
    let limits = RunLimits {
        job_timeout: Duration::from_millis(20),
        may_retry: false,
        ..rig.limits()
    };
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Failed)
    );
    assert_eq!(no_submit(&calls(&log)), [Call::Stop]);
    let error = rig.stored().await.error.unwrap();
    assert_eq!(error["exception_type"], "TimeoutError");
}

#[tokio::test]
async fn a_refused_prompt_fails_with_comfyuis_words_and_is_not_retried() {
    let rig = Rig::new(save_prompt()).await;
    let mut session = Scripted::new(vec![]);
    session.submit = Err(SessionError::Rejected(
        json!({"error": {"message": "Prompt has no outputs", "details": ""}}),
    ));
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Failed)
    );
    let error = rig.stored().await.error.unwrap();
    assert_eq!(
        error["exception_message"],
        "The GPU server refused this prompt: Prompt has no outputs"
    );
    assert_eq!(error["exception_type"], "ValidationError");
}

#[tokio::test]
async fn a_busy_backend_hands_the_job_back_unstarted() {
    let rig = Rig::new(save_prompt()).await;
    let mut session = Scripted::new(vec![]);
    session.submit = Err(SessionError::Busy("the worker is busy (HTTP 429)".into()));
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::NotStarted {
            reason: "the worker is busy (HTTP 429)".into()
        }
    );
}

// --- the slot and the job ahead (dispatch.queue_ahead) ------------------------

/// The slot is free once the job's end is recorded, before its owner
/// hears that end: whoever sees a job end sees its slot free.
#[tokio::test]
async fn a_finished_job_frees_its_slot_before_its_owner_hears_the_end() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let session = Scripted::new(vec![rig.start(), rig.success(), done()]);
    let (hub, owner) = (rig.shared.hub.clone(), rig.job.owner);
    let limits = RunLimits {
        recorded: Some(Box::new(move || {
            let marker = json!({"type": "slot_freed"}).to_string();
            hub.send_to_user(owner, Outbound::Text(marker));
        })),
        ..rig.limits()
    };
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Completed)
    );
    assert_eq!(
        received(&mut rx),
        [
            "execution_start",
            "execution_success",
            "status",
            "slot_freed",
            "executing:null"
        ]
    );
}

/// A job queued on the backend behind another: its owner hears nothing of
/// it while the run of the job ahead goes on (that job's last frames may
/// still be on their way), then all of it, in order.
#[tokio::test]
async fn a_job_queued_behind_another_is_heard_once_that_run_is_over() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let mut session = Scripted::new(vec![rig.start(), rig.success(), done()]);
    let first_read = Arc::new(Notify::new());
    session.first_read = Some(first_read.clone());
    // The job ahead is in the backend's queue; its run is not over.
    let (ahead_run, ahead) = tokio::sync::watch::channel(true);
    let limits = RunLimits {
        after: Some(ahead),
        ..rig.limits()
    };
    let (outcome, ()) = tokio::join!(rig.run(session, limits), async {
        first_read.notified().await;
        assert!(
            rx.try_recv().is_err(),
            "nothing relayed while the job ahead's run goes on"
        );
        drop(ahead_run);
    });
    assert_eq!(outcome, Outcome::Finished(JobState::Completed));
    assert_eq!(
        received(&mut rx),
        [
            "execution_start",
            "execution_success",
            "status",
            "executing:null"
        ]
    );
}

// --- cancel and resume --------------------------------------------------------

#[tokio::test]
async fn a_cancelled_job_is_stopped_and_ends_as_the_backend_tells() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let mut session = Scripted::new(vec![Step::Hang]);
    session.after_stop = vec![
        rig.event("execution_interrupted", json!({"node_id": "9"})),
        done(),
    ]
    .into();
    let log = session.calls();
    let limits = rig.limits();
    // Fired before the run waits: the permit is kept, not lost.
    limits.cancel.notify_one();
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Cancelled)
    );
    assert_eq!(no_submit(&calls(&log)), [Call::Stop]);
    assert_eq!(
        received(&mut rx),
        ["execution_interrupted", "status", "executing:null"],
        "the backend's own account, once"
    );
}

#[tokio::test]
async fn a_cancelled_job_the_backend_no_longer_knows_ends_cancelled() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let mut session = Scripted::new(vec![Step::Hang]).statuses(vec![Ok(JobStatus::Unknown)]);
    session.after_stop = vec![Step::Fail(SessionError::Lost("closed".into()))].into();
    let limits = rig.limits();
    limits.cancel.notify_one();
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Cancelled),
        "never handed back to run again"
    );
    assert_eq!(
        received(&mut rx),
        [
            "execution_start",
            "execution_interrupted",
            "status",
            "executing:null"
        ]
    );
}

#[tokio::test]
async fn after_a_restart_a_finished_job_is_collected_without_running_it_again() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![]).statuses(vec![Ok(rig.history(
        json!([["execution_success", {"prompt_id": rig.id()}]]),
        json!({"9": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}}),
        "success",
    ))]);
    let log = session.calls();
    let limits = RunLimits {
        resume: true,
        ..rig.limits()
    };
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Completed)
    );
    assert_eq!(
        calls(&log),
        [
            Call::Reattach,
            Call::Status,
            Call::Fetch("x_00001_.png".into())
        ]
    );
}

#[tokio::test]
async fn after_a_restart_a_session_that_cannot_reattach_submits_again() {
    let rig = Rig::new(save_prompt()).await;
    let mut session = Scripted::new(vec![rig.start(), rig.success(), done()]);
    session.can_reattach = false;
    let log = session.calls();
    let limits = RunLimits {
        resume: true,
        ..rig.limits()
    };
    rig.run(session, limits).await;
    assert!(matches!(calls(&log)[0], Call::Submit(_)));
}

// --- inputs -------------------------------------------------------------------

#[tokio::test]
async fn input_files_go_to_the_backend_under_content_addressed_names() {
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "pasted/photo.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "again.png"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    });
    let rig = Rig::new(prompt).await;
    let input = rig
        .shared
        .workspaces
        .user(&rig.owner)
        .kind_dir(comfyume_domain::FileKind::Input);
    std::fs::create_dir_all(input.join("pasted")).unwrap();
    std::fs::write(input.join("pasted/photo.png"), b"same bytes").unwrap();
    std::fs::write(input.join("again.png"), b"same bytes").unwrap();
    let session = Scripted::new(vec![rig.start(), rig.success(), done()]);
    let log = session.calls();
    rig.run(session, rig.limits()).await;
    let Call::Submit(sent) = &calls(&log)[0] else {
        panic!("submitted")
    };
    let name = sent.prompt["1"]["inputs"]["image"].as_str().unwrap();
    assert!(
        name.starts_with("comfyume-") && name.ends_with(".png"),
        "{name}"
    );
    assert_eq!(
        sent.prompt["2"]["inputs"]["image"],
        json!(name),
        "same content, same name"
    );
    assert_eq!(
        sent.inputs,
        [(name.to_string(), b"same bytes".to_vec())],
        "sent once"
    );
}

#[tokio::test]
async fn a_missing_input_file_fails_the_job_without_a_backend() {
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    });
    let rig = Rig::new(prompt).await;
    let session = Scripted::new(vec![]);
    let log = session.calls();
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Failed)
    );
    assert!(calls(&log).is_empty(), "nothing sent");
    let error = rig.stored().await.error.unwrap();
    assert_eq!(error["exception_type"], "FileNotFoundError");
    assert!(
        error["exception_message"]
            .as_str()
            .unwrap()
            .contains("'gone.png'"),
        "{error}"
    );
}

#[tokio::test]
async fn an_end_without_an_outcome_is_looked_up_in_history() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![rig.start(), done()]).statuses(vec![Ok(rig.history(
        json!([["execution_success", {"prompt_id": rig.id()}]]),
        json!({}),
        "success",
    ))]);
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
}

#[tokio::test]
async fn an_end_nobody_explains_fails_with_a_reason() {
    let rig = Rig::new(save_prompt()).await;
    let session = Scripted::new(vec![rig.start(), done()]).statuses(vec![Ok(JobStatus::Unknown)]);
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Failed)
    );
    let error = rig.stored().await.error.unwrap();
    assert_eq!(
        error["exception_message"],
        "The GPU server ended the job without saying how it went."
    );
}

#[tokio::test]
async fn a_start_missed_while_the_socket_was_down_is_kept_but_not_replayed() {
    let rig = Rig::new(save_prompt()).await;
    let (_reg, mut rx) = rig.listen();
    let start = json!({"prompt_id": rig.id(), "timestamp": 1});
    let success = json!({"prompt_id": rig.id(), "timestamp": 3});
    let session = Scripted::new(vec![
        Step::Fail(SessionError::Lost("reset before the start".into())),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        done(),
    ])
    .statuses(vec![
        Ok(JobStatus::Queued),
        Ok(rig.history(
            json!([["execution_start", start], ["execution_success", success]]),
            json!({"9": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}}),
            "success",
        )),
    ]);
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
    assert_eq!(
        received(&mut rx),
        [
            "executed:9",
            "execution_success",
            "status",
            "executing:null"
        ],
        "no start after the end"
    );
    let kinds: Vec<String> = rig
        .stored()
        .await
        .messages
        .iter()
        .map(|m| m[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["execution_start", "execution_success"],
        "history in order"
    );
}

#[tokio::test]
async fn a_cancel_during_a_failing_submit_is_not_retried() {
    let rig = Rig::new(save_prompt()).await;
    let mut session = Scripted::new(vec![]);
    session.submit = Err(SessionError::Failed("connection reset".into()));
    let limits = rig.limits();
    limits.cancel.notify_one();
    assert_eq!(
        rig.run(session, limits).await,
        Outcome::Finished(JobState::Cancelled)
    );
}

#[tokio::test]
async fn an_output_over_the_owners_quota_is_dropped_and_the_owner_told() {
    let mut rig = Rig::new(save_prompt()).await;
    rig.shared.workspaces = Workspaces::new(rig._dir.path().join("users")).with_quota(5);
    let (_reg, mut rx) = rig.listen();
    let session = Scripted::new(vec![
        rig.start(),
        rig.executed("9", "x_00001_.png"),
        rig.success(),
        done(),
    ]);
    assert_eq!(
        rig.run(session, rig.limits()).await,
        Outcome::Finished(JobState::Completed)
    );
    assert_eq!(rig.stored().await.outputs["9"]["images"], json!([]));
    assert!(!rig.output_file("x_00001_.png").exists());
    let mut told = Vec::new();
    while let Ok(Outbound::Text(t)) = rx.try_recv() {
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "notification" {
            told.push(v["data"]["value"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("x_00001_.png was not kept"), "{told:?}");
}

/// Phase spans as they close, by the `phase_test` run they ran under:
/// the test binary's one global subscriber (a scoped one would race other
/// tests over tracing's global cache of which call sites are enabled).
fn closed_phases() -> &'static std::sync::Mutex<Vec<(u64, String)>> {
    use tracing_subscriber::layer::SubscriberExt;

    static CLOSED: std::sync::OnceLock<std::sync::Mutex<Vec<(u64, String)>>> =
        std::sync::OnceLock::new();
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(PhaseRecorder)
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the unit tests");
    });
    CLOSED.get_or_init(Default::default)
}

struct PhaseRecorder;

/// The `run` field of a `phase_test` span.
struct TestRun(u64);

impl<S> tracing_subscriber::Layer<S> for PhaseRecorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Run(Option<u64>);
        impl tracing::field::Visit for Run {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "run" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if attrs.metadata().name() != "phase_test" {
            return;
        }
        let mut run = Run(None);
        attrs.record(&mut run);
        if let (Some(run), Some(span)) = (run.0, ctx.span(id)) {
            span.extensions_mut().insert(TestRun(run));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if span.metadata().target() != crate::telemetry::PHASE {
            return;
        }
        let run = span
            .scope()
            .find_map(|s| s.extensions().get::<TestRun>().map(|r| r.0));
        if let Some(run) = run {
            closed_phases()
                .lock()
                .unwrap()
                .push((run, span.name().to_string()));
        }
    }
}

#[tokio::test]
async fn each_phase_of_a_run_is_a_span() {
    use tracing::Instrument;

    let closed = closed_phases();
    // Run 0 registers every phase's call site (another test may have been
    // registering one while the subscriber was installed, and cached
    // "nobody listens"); then the cache is rebuilt with every call site
    // known, and run 1 is the one looked at.
    for run in 0..2u64 {
        let rig = Rig::new(save_prompt()).await;
        let (_reg, _rx) = rig.listen();
        let session = Scripted::new(vec![
            rig.start(),
            rig.executed("9", "x_00001_.png"),
            rig.success(),
            done(),
        ]);
        let outcome = rig
            .run(session, rig.limits())
            .instrument(tracing::info_span!("phase_test", run))
            .await;
        assert_eq!(outcome, Outcome::Finished(JobState::Completed));
        tracing::callsite::rebuild_interest_cache();
    }
    let phases: Vec<String> = closed
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _)| *r == 1)
        .map(|(_, name)| name.clone())
        .collect();
    assert_eq!(
        phases,
        [
            "inputs", "submit", "download", "store", "output", "follow", "finish"
        ]
    );
}
