//! One simulated participant: a browser with the ComfyUI frontend open. It
//! logs in, loads what the frontend loads at start-up, keeps one socket
//! open, queues its jobs one after another, follows each on the socket,
//! fetches its outputs, and notes every frame that is not its own.
//!
//! Everything it waits for is an answer or a socket frame, each with a
//! bound that becomes a `timeout` error; the only pauses are the ones a
//! person makes (the ramp before logging in, the think time between jobs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::accounts::Account;
use super::progress::Counters;
use super::workflow::Workflow;

/// What every participant does, shared by all of them.
pub struct Plan {
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub base: String,
    /// The base's origin, sent as a browser sends it.
    pub origin: String,
    /// `ws(s)://host[:port][/prefix]/ws`.
    pub ws_url: String,
    pub jobs_per_user: u32,
    pub think: Duration,
    /// No job is submitted from then on.
    pub stop_submitting_at: Option<Instant>,
    /// The bound of every network wait, and of each job from its submit to
    /// its final frame.
    pub timeout: Duration,
    pub workflow: Workflow,
}

/// An error a participant met, with a kind to count it by.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: String,
    pub message: String,
}

impl Failure {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// A request that got no answer: `timeout` when its bound ran out.
    fn transport(what: &str, e: &reqwest::Error) -> Failure {
        let kind = if e.is_timeout() {
            "timeout"
        } else {
            "connection"
        };
        Failure::new(kind, format!("{what}: {}", error_chain(e)))
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One queued job, as this participant saw it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub prompt_id: Option<String>,
    /// When the submit request left.
    pub sent: Instant,
    /// When the submit was answered 200 (absent: refused or unanswered).
    pub accepted: Option<Instant>,
    /// When its `execution_start` arrived.
    pub started: Option<Instant>,
    /// When its final frame arrived, or when the participant gave up on it.
    pub ended: Instant,
    /// Finished, and every output it announced fetched.
    pub completed: bool,
    pub output_fetch: Option<Duration>,
}

/// Everything one participant saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub user: String,
    pub login: Option<Duration>,
    pub startup: Option<Duration>,
    pub jobs: Vec<JobRecord>,
    /// Every error, by kind.
    pub error_counts: BTreeMap<String, u64>,
    /// The first errors, whole.
    pub failures: Vec<Failure>,
    pub misdirected: u64,
    pub misdirected_examples: Vec<String>,
    pub text_frames: u64,
    pub binary_frames: u64,
}

impl Outcome {
    pub fn new(user: &str) -> Outcome {
        Outcome {
            user: user.to_string(),
            login: None,
            startup: None,
            jobs: Vec::new(),
            error_counts: BTreeMap::new(),
            failures: Vec::new(),
            misdirected: 0,
            misdirected_examples: Vec::new(),
            text_frames: 0,
            binary_frames: 0,
        }
    }
}

/// Errors kept per participant (their count is kept whole).
const MAX_FAILURES: usize = 64;
/// Misdirected frames described per participant.
const MAX_MISDIRECTED_EXAMPLES: usize = 5;
/// Foreign prompt ids remembered, to notice one that becomes ours later.
const MAX_FOREIGN_IDS: usize = 1024;
/// Frames held while a submit is unanswered (they may be its own).
const MAX_HELD: usize = 1024;
/// Frames that may wait between the socket and the participant.
const FRAME_QUEUE: usize = 1024;
/// How long closing a socket may take at the end.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// The participants still at work; each one keeps its socket open until
/// all are done, as a room of open browsers does.
pub struct Room {
    remaining: AtomicUsize,
    done: watch::Sender<bool>,
}

impl Room {
    pub fn new(participants: usize) -> Arc<Room> {
        Arc::new(Room {
            remaining: AtomicUsize::new(participants),
            done: watch::Sender::new(participants == 0),
        })
    }

    fn leave(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.send_replace(true);
        }
    }
}

/// A participant's place in the room: left once, when its jobs are over or
/// when its task ends however it ends.
struct Seat {
    room: Arc<Room>,
    left: bool,
}

impl Seat {
    fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            self.room.leave();
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Runs one participant from login (at `start_at`) to the end of the room.
pub async fn run(
    index: usize,
    account: Account,
    plan: Arc<Plan>,
    start_at: Instant,
    counters: Arc<Counters>,
    room: Arc<Room>,
) -> Outcome {
    let mut seat = Seat {
        room: room.clone(),
        left: false,
    };
    let mut me = Participant {
        index,
        plan,
        counters,
        outcome: Outcome::new(&account.user),
    };
    tokio::time::sleep_until(start_at.into()).await;
    let socket = me.work(&account).await;
    seat.leave();
    if let Some(mut socket) = socket {
        let mut done = room.done.subscribe();
        let _ = socket.during(done.wait_for(|d| *d)).await;
        let book = socket.close().await;
        me.absorb(book);
    }
    me.outcome
}

struct Participant {
    index: usize,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    outcome: Outcome,
}

impl Participant {
    fn fail(&mut self, failure: Failure) {
        Counters::add(&self.counters.errors);
        *self
            .outcome
            .error_counts
            .entry(failure.kind.clone())
            .or_default() += 1;
        if self.outcome.failures.len() < MAX_FAILURES {
            self.outcome.failures.push(failure);
        }
    }

    fn absorb(&mut self, book: Book) {
        self.outcome.misdirected = book.misdirected;
        self.outcome.misdirected_examples = book.examples;
        self.outcome.text_frames = book.text_frames;
        self.outcome.binary_frames = book.binary_frames;
        if let Some(example) = book.garbled_example {
            self.fail(Failure::new("protocol", example));
            let more = book.garbled - 1;
            *self
                .outcome
                .error_counts
                .entry("protocol".into())
                .or_default() += more;
            self.counters.errors.fetch_add(more, Ordering::Relaxed);
        }
    }

    /// Login, start-up and the jobs; the socket, if it opened.
    async fn work(&mut self, account: &Account) -> Option<Socket> {
        let http = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.plan.timeout)
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                self.fail(Failure::new("client", error_chain(&e)));
                return None;
            }
        };
        let began = Instant::now();
        let cookie = match login(&http, &self.plan, account).await {
            Ok(c) => c,
            Err(f) => {
                self.fail(f);
                return None;
            }
        };
        self.outcome.login = Some(began.elapsed());
        Counters::add(&self.counters.logged_in);
        let session = Session {
            http,
            cookie,
            plan: self.plan.clone(),
        };

        let began = Instant::now();
        for &(path, need) in STARTUP {
            match session.get(path).await {
                Ok((status, _)) if status == StatusCode::OK => {}
                Ok((status, _)) if need == Need::Tolerated && status == StatusCode::NOT_FOUND => {}
                Ok((status, _)) => {
                    self.fail(Failure::new(
                        "startup",
                        format!("GET {path} answered {status}"),
                    ));
                    if need == Need::Required {
                        return None;
                    }
                }
                Err(f) => {
                    self.fail(f);
                    return None;
                }
            }
        }
        self.outcome.startup = Some(began.elapsed());

        let mut socket = match Socket::open(&session).await {
            Ok(s) => s,
            Err(f) => {
                self.fail(f);
                return None;
            }
        };
        let hello = Instant::now() + self.plan.timeout;
        if let Err(stop) = socket.wait(hello, |b| b.sid.is_some()).await {
            self.fail(stop.failure("the socket's first `status` frame (with its sid)"));
            return Some(socket);
        }
        self.jobs(&session, &mut socket).await;
        Some(socket)
    }

    async fn jobs(&mut self, session: &Session, socket: &mut Socket) {
        let plan = self.plan.clone();
        // The frontend adopts the sid the server names in its first frame.
        let client_id = socket.book.sid.clone().unwrap_or_default();
        for j in 0..plan.jobs_per_user {
            if plan.stop_submitting_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if j > 0 && !plan.think.is_zero() {
                socket.during(tokio::time::sleep(plan.think)).await;
            }
            if plan.stop_submitting_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if let Some(reason) = &socket.book.closed {
                let reason = reason.clone();
                self.fail(Failure::new(
                    "websocket_closed",
                    format!("the socket closed before all jobs were queued: {reason}"),
                ));
                break;
            }
            let seq = self.index as u64 * u64::from(plan.jobs_per_user) + u64::from(j);
            let body = json!({"prompt": plan.workflow.for_job(seq), "client_id": client_id});
            let record = self.job(session, socket, &body).await;
            Counters::add(&self.counters.jobs_finished);
            self.outcome.jobs.push(record);
        }
    }

    /// Submits one prompt and follows it to its outputs.
    async fn job(&mut self, session: &Session, socket: &mut Socket, body: &Value) -> JobRecord {
        socket.book.submitting = true;
        let sent = Instant::now();
        let answer = socket.during(session.post_json("/api/prompt", body)).await;
        let answered = Instant::now();
        let mut record = JobRecord {
            prompt_id: None,
            sent,
            accepted: None,
            started: None,
            ended: answered,
            completed: false,
            output_fetch: None,
        };
        let id = match answer.and_then(|(status, bytes)| submitted_id(status, &bytes)) {
            Ok(id) => id,
            Err(f) => {
                socket.book.refused();
                self.fail(f);
                return record;
            }
        };
        socket.book.accepted(&id);
        record.prompt_id = Some(id.clone());
        record.accepted = Some(answered);

        let finish = socket.finished(&id, sent + self.plan.timeout).await;
        let watch = socket.book.own.get(&id).cloned().unwrap_or_default();
        record.started = watch.started;
        match finish {
            Ok(End::Done(at)) => {
                record.ended = at;
                if watch.started.is_none() {
                    self.fail(Failure::new(
                        "protocol",
                        format!("prompt {id} finished without an `execution_start` frame"),
                    ));
                }
                let began = Instant::now();
                match socket
                    .during(fetch_outputs(session, &id, watch.announced_images))
                    .await
                {
                    Ok(()) => {
                        record.output_fetch = Some(began.elapsed());
                        record.completed = true;
                    }
                    Err(f) => self.fail(f),
                }
            }
            Ok(End::Failed(at, f)) => {
                record.ended = at;
                self.fail(f);
            }
            Err(stop) => {
                record.ended = Instant::now();
                self.fail(stop.failure(&format!("the end of prompt {id}")));
            }
        }
        record
    }
}

/// Whether start-up may go on without a route's 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The frontend breaks without it.
    Required,
    /// The frontend carries on after a 404 (and logs anything else).
    Tolerated,
}

/// What the frontend (1.48.7) requests when its page loads, in its order
/// (docs/comfyui-api.md §3.5 A; the socket opens after these). Static
/// assets other than the page are left out: a browser caches them.
const STARTUP: &[(&str, Need)] = &[
    ("/", Need::Required),
    ("/api/features", Need::Tolerated),
    ("/api/users", Need::Required),
    ("/api/i18n", Need::Tolerated),
    ("/api/settings", Need::Required),
    (
        "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
        Need::Tolerated,
    ),
    ("/api/global_subgraphs", Need::Tolerated),
    (
        "/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true",
        Need::Tolerated,
    ),
    ("/api/extensions", Need::Required),
    ("/api/object_info", Need::Required),
    ("/api/userdata/comfy.templates.json", Need::Tolerated),
    ("/api/userdata/workflows%2F.index.json", Need::Tolerated),
    (
        "/api/jobs?status=in_progress,pending&limit=200&offset=0",
        Need::Tolerated,
    ),
    (
        "/api/jobs?status=completed,failed,cancelled&limit=64&offset=0",
        Need::Tolerated,
    ),
    ("/api/system_stats", Need::Tolerated),
];

/// The names the gateway gives its session cookie (`__Host-` with Secure
/// cookies).
const SESSION_COOKIES: [&str; 2] = ["comfyume_session", "__Host-comfyume_session"];

/// Logs in through the login form; the session cookie as a `Cookie` value.
async fn login(
    http: &reqwest::Client,
    plan: &Plan,
    account: &Account,
) -> Result<HeaderValue, Failure> {
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let form = format!(
        "username={}&password={}&next=%2F",
        encode(&account.user),
        encode(&account.password)
    );
    let response = http
        .post(format!("{}/login", plan.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ORIGIN, &plan.origin)
        .body(form)
        .send()
        .await
        .map_err(|e| Failure::transport("POST /login", &e))?;
    let status = response.status();
    let user = &account.user;
    match status {
        StatusCode::SEE_OTHER => {}
        StatusCode::TOO_MANY_REQUESTS => {
            return Err(Failure::new(
                "login_rate_limited",
                format!("{user}: the login was rate limited (429)"),
            ));
        }
        StatusCode::UNAUTHORIZED => {
            return Err(Failure::new(
                "login_refused",
                format!("{user}: wrong user name or password (401)"),
            ));
        }
        _ => {
            return Err(Failure::new(
                "login_failed",
                format!("{user}: POST /login answered {status}"),
            ));
        }
    }
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| SESSION_COOKIES.contains(&name) && !value.is_empty())
        })
        .and_then(|pair| HeaderValue::from_str(pair).ok())
        .ok_or_else(|| {
            Failure::new(
                "login_failed",
                format!("{user}: the login answered 303 without a session cookie"),
            )
        })
}

/// A logged-in browser's HTTP side.
struct Session {
    http: reqwest::Client,
    cookie: HeaderValue,
    plan: Arc<Plan>,
}

impl Session {
    async fn get(&self, path: &str) -> Result<(StatusCode, bytes::Bytes), Failure> {
        self.send(
            &format!("GET {path}"),
            self.http.get(format!("{}{path}", self.plan.base)),
        )
        .await
    }

    async fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(StatusCode, bytes::Bytes), Failure> {
        let request = self
            .http
            .post(format!("{}{path}", self.plan.base))
            .header(ORIGIN, &self.plan.origin)
            .json(body);
        self.send(&format!("POST {path}"), request).await
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes), Failure> {
        let response = request
            .header(COOKIE, self.cookie.clone())
            .send()
            .await
            .map_err(|e| Failure::transport(what, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::transport(what, &e))?;
        Ok((status, body))
    }
}

/// The prompt id of a submit's answer, or the error it reports: the kind
/// is ComfyUI's `error.type` when the body has one.
fn submitted_id(status: StatusCode, body: &[u8]) -> Result<String, Failure> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status == StatusCode::OK {
        return json
            .as_ref()
            .and_then(|v| v.get("prompt_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::new(
                    "protocol",
                    "POST /api/prompt answered 200 without a prompt_id",
                )
            });
    }
    let error = json.as_ref().and_then(|v| v.get("error"));
    match error.and_then(|e| e.get("type")).and_then(Value::as_str) {
        Some(kind) => {
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            Err(Failure::new(
                kind,
                format!("POST /api/prompt answered {status}: {message}"),
            ))
        }
        None => Err(Failure::new(
            format!("submit_http_{}", status.as_u16()),
            format!(
                "POST /api/prompt answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        )),
    }
}

/// Fetches a finished prompt's outputs as the frontend shows them: its
/// history entry, then every image in it.
async fn fetch_outputs(session: &Session, id: &str, announced: usize) -> Result<(), Failure> {
    let missing = |why: String| Failure::new("output_missing", format!("prompt {id}: {why}"));
    let (status, body) = session.get(&format!("/api/history/{id}")).await?;
    if status != StatusCode::OK {
        return Err(missing(format!(
            "GET /api/history/{{id}} answered {status}"
        )));
    }
    let history: Value = serde_json::from_slice(&body)
        .map_err(|e| missing(format!("its history is not JSON: {e}")))?;
    let Some(entry) = history.get(id) else {
        return Err(missing("its history has no entry for it".into()));
    };
    let images: Vec<&Value> = entry
        .get("outputs")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|outputs| outputs.values())
        .filter_map(|o| o.get("images").and_then(Value::as_array))
        .flatten()
        .collect();
    if images.len() < announced {
        return Err(missing(format!(
            "the socket announced {announced} image(s), its history lists {}",
            images.len()
        )));
    }
    for image in images {
        let field = |k: &str| image.get(k).and_then(Value::as_str).unwrap_or("");
        let (filename, subfolder, kind) = (field("filename"), field("subfolder"), field("type"));
        let what = format!("GET /api/view?filename={filename}");
        let request = session
            .http
            .get(format!("{}/api/view", session.plan.base))
            .query(&[
                ("filename", filename),
                ("subfolder", subfolder),
                ("type", kind),
            ]);
        let (status, bytes) = session.send(&what, request).await?;
        if status != StatusCode::OK || bytes.is_empty() {
            return Err(Failure::new(
                "output_fetch",
                format!(
                    "prompt {id}: {what} answered {status} with {} byte(s)",
                    bytes.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A frame off the socket, stamped when it arrived.
enum Frame {
    Text(Instant, Value),
    Garbled(String),
    Binary,
    Closed(String),
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The participant's socket: a task reads it continuously; the participant
/// takes in its frames whenever it waits for anything.
struct Socket {
    frames: mpsc::Receiver<Frame>,
    sink: SplitSink<WsStream, Message>,
    reader: tokio::task::JoinHandle<()>,
    book: Book,
}

/// Why a wait on the socket ended without what it waited for.
enum Stop {
    TimedOut,
    Closed(String),
}

impl Stop {
    fn failure(&self, awaited: &str) -> Failure {
        match self {
            Stop::TimedOut => Failure::new("timeout", format!("waited in vain for {awaited}")),
            Stop::Closed(reason) => Failure::new(
                "websocket_closed",
                format!("the socket closed while waiting for {awaited}: {reason}"),
            ),
        }
    }
}

impl Socket {
    async fn open(session: &Session) -> Result<Socket, Failure> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let client_id = uuid::Uuid::new_v4();
        let url = format!("{}?clientId={client_id}", session.plan.ws_url);
        let refused = |why: String| Failure::new("websocket", why);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| refused(format!("{url}: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(COOKIE, session.cookie.clone());
        if let Ok(origin) = HeaderValue::from_str(&session.plan.origin) {
            headers.insert(ORIGIN, origin);
        }
        let connected = tokio::time::timeout(
            session.plan.timeout,
            tokio_tungstenite::connect_async(request),
        )
        .await
        .map_err(|_| Failure::new("timeout", "the socket did not open in time"))?;
        let (ws, _) = connected.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                refused(format!("GET /ws was refused: {}", r.status()))
            }
            e => refused(format!("GET /ws failed: {}", error_chain(&e))),
        })?;
        let (mut sink, stream) = ws.split();
        // What the frontend sends as soon as the socket opens.
        let flags = json!({"type": "feature_flags", "data": {
            "supports_preview_metadata": true,
            "supports_manager_v4_ui": true,
            "supports_progress_text_metadata": true,
        }});
        sink.send(Message::Text(flags.to_string().into()))
            .await
            .map_err(|e| refused(format!("the socket broke at once: {e}")))?;
        let (tx, frames) = mpsc::channel(FRAME_QUEUE);
        let reader = tokio::spawn(read_frames(stream, tx));
        Ok(Socket {
            frames,
            sink,
            reader,
            book: Book::new(),
        })
    }

    /// Awaits `work`, taking in the socket's frames meanwhile.
    async fn during<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                frame = self.frames.recv(), if self.book.closed.is_none() => {
                    self.book.take(frame.unwrap_or_else(|| Frame::Closed("the reader stopped".into())));
                }
            }
        }
    }

    /// Takes in frames until `done` holds, the socket closes, or `deadline`.
    async fn wait(&mut self, deadline: Instant, done: impl Fn(&Book) -> bool) -> Result<(), Stop> {
        loop {
            if done(&self.book) {
                return Ok(());
            }
            if let Some(reason) = &self.book.closed {
                return Err(Stop::Closed(reason.clone()));
            }
            match tokio::time::timeout_at(deadline.into(), self.frames.recv()).await {
                Ok(frame) => self
                    .book
                    .take(frame.unwrap_or_else(|| Frame::Closed("the reader stopped".into()))),
                Err(_) => return Err(Stop::TimedOut),
            }
        }
    }

    /// How prompt `id` ended: its final `executing`, or its error.
    async fn finished(&mut self, id: &str, deadline: Instant) -> Result<End, Stop> {
        self.wait(deadline, |b| b.own.get(id).is_some_and(|w| w.end.is_some()))
            .await?;
        self.book
            .own
            .get(id)
            .and_then(|w| w.end.clone())
            .ok_or(Stop::TimedOut)
    }

    /// Closes the socket; what it said, in the end.
    async fn close(mut self) -> Book {
        if self.book.closed.is_none() {
            let _ = tokio::time::timeout(CLOSE_BOUND, self.sink.send(Message::Close(None))).await;
            // The server's answering close ends the reader.
            let _ = self
                .wait(Instant::now() + CLOSE_BOUND, |b| b.closed.is_some())
                .await;
        }
        self.reader.abort();
        self.book
    }
}

async fn read_frames(mut stream: SplitStream<WsStream>, tx: mpsc::Sender<Frame>) {
    let ended = loop {
        let frame = match stream.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                Ok(value) => Frame::Text(Instant::now(), value),
                Err(e) => Frame::Garbled(format!("a text frame that is not JSON: {e}")),
            },
            Some(Ok(Message::Binary(_))) => Frame::Binary,
            Some(Ok(Message::Close(close))) => {
                break close.map_or("closed by the server".into(), |c| {
                    format!("closed by the server ({} {})", c.code, c.reason)
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break format!("the socket failed: {e}"),
            None => break "the connection ended".into(),
        };
        if tx.send(frame).await.is_err() {
            return;
        }
    };
    let _ = tx.send(Frame::Closed(ended)).await;
}

/// How a prompt ended on the socket.
#[derive(Debug, Clone)]
enum End {
    Done(Instant),
    Failed(Instant, Failure),
}

/// What the socket has said about one of the participant's prompts.
#[derive(Debug, Clone, Default)]
struct Watch {
    started: Option<Instant>,
    end: Option<End>,
    announced_images: usize,
}

/// The participant's reading of its socket: its prompts' progress, and
/// every frame that names someone else's prompt.
struct Book {
    sid: Option<String>,
    own: HashMap<String, Watch>,
    /// A submit is unanswered: frames naming an unknown prompt may be its.
    submitting: bool,
    held: Vec<(Instant, Value)>,
    foreign: HashSet<String>,
    misdirected: u64,
    examples: Vec<String>,
    text_frames: u64,
    binary_frames: u64,
    closed: Option<String>,
    /// Text frames that were not JSON.
    garbled: u64,
    garbled_example: Option<String>,
}

impl Book {
    fn new() -> Book {
        Book {
            sid: None,
            own: HashMap::new(),
            submitting: false,
            held: Vec::new(),
            foreign: HashSet::new(),
            misdirected: 0,
            examples: Vec::new(),
            text_frames: 0,
            binary_frames: 0,
            closed: None,
            garbled: 0,
            garbled_example: None,
        }
    }

    fn take(&mut self, frame: Frame) {
        match frame {
            Frame::Text(at, value) => {
                self.text_frames += 1;
                self.text(at, value);
            }
            Frame::Binary => self.binary_frames += 1,
            Frame::Garbled(why) => {
                self.garbled += 1;
                self.garbled_example.get_or_insert(why);
            }
            Frame::Closed(reason) => {
                self.closed.get_or_insert(reason);
            }
        }
    }

    fn text(&mut self, at: Instant, value: Value) {
        let data = value.get("data");
        if self.sid.is_none() && value.get("type").and_then(Value::as_str) == Some("status") {
            if let Some(sid) = data.and_then(|d| d.get("sid")).and_then(Value::as_str) {
                self.sid = Some(sid.to_string());
            }
        }
        let Some(id) = data
            .and_then(|d| d.get("prompt_id"))
            .and_then(Value::as_str)
        else {
            return;
        };
        if self.own.contains_key(id) {
            self.apply(at, &value);
        } else if self.submitting && self.held.len() < MAX_HELD {
            self.held.push((at, value));
        } else {
            let id = id.to_string();
            self.misdirect(&id, &value, "not one of this participant's prompts");
        }
    }

    fn misdirect(&mut self, id: &str, frame: &Value, why: &str) {
        self.misdirected += 1;
        if self.foreign.len() < MAX_FOREIGN_IDS {
            self.foreign.insert(id.to_string());
        }
        if self.examples.len() < MAX_MISDIRECTED_EXAMPLES {
            let kind = frame.get("type").and_then(Value::as_str).unwrap_or("?");
            self.examples
                .push(format!("`{kind}` frame for prompt {id}: {why}"));
        }
    }

    /// The submit was answered with `id`: the frames held meanwhile are
    /// either its own or misdirected.
    fn accepted(&mut self, id: &str) {
        self.submitting = false;
        if self.foreign.contains(id) && self.examples.len() < MAX_MISDIRECTED_EXAMPLES {
            self.examples.push(format!(
                "prompt {id} was on this socket before this participant submitted it"
            ));
        }
        self.own.insert(id.to_string(), Watch::default());
        for (at, frame) in std::mem::take(&mut self.held) {
            let frame_id = frame
                .get("data")
                .and_then(|d| d.get("prompt_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if frame_id == id {
                self.apply(at, &frame);
            } else {
                self.misdirect(&frame_id, &frame, "not one of this participant's prompts");
            }
        }
    }

    /// The submit was refused: nothing held can be this participant's.
    fn refused(&mut self) {
        self.submitting = false;
        for (_, frame) in std::mem::take(&mut self.held) {
            let frame_id = frame
                .get("data")
                .and_then(|d| d.get("prompt_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            self.misdirect(
                &frame_id,
                &frame,
                "arrived while this participant's submit was refused",
            );
        }
    }

    /// A frame about one of this participant's prompts.
    fn apply(&mut self, at: Instant, frame: &Value) {
        let data = &frame["data"];
        let Some(watch) = data["prompt_id"]
            .as_str()
            .and_then(|id| self.own.get_mut(id))
        else {
            return;
        };
        let text = |k: &str| data[k].as_str().unwrap_or("?").to_string();
        match frame["type"].as_str() {
            Some("execution_start") => {
                watch.started.get_or_insert(at);
            }
            Some("executing") if data.get("node").is_some_and(Value::is_null) => {
                watch.end.get_or_insert(End::Done(at));
            }
            Some("executed") => {
                watch.announced_images += data["output"]["images"]
                    .as_array()
                    .map_or(0, std::vec::Vec::len);
            }
            Some("execution_error") => {
                let failure = Failure::new(
                    "execution_error",
                    format!(
                        "prompt {}: node {} ({}) raised {}: {}",
                        text("prompt_id"),
                        text("node_id"),
                        text("node_type"),
                        text("exception_type"),
                        text("exception_message").trim_end()
                    ),
                );
                watch.end.get_or_insert(End::Failed(at, failure));
            }
            Some("execution_interrupted") => {
                let failure = Failure::new(
                    "execution_interrupted",
                    format!(
                        "prompt {} was interrupted at node {} ({})",
                        text("prompt_id"),
                        text("node_id"),
                        text("node_type")
                    ),
                );
                watch.end.get_or_insert(End::Failed(at, failure));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, data: Value) -> Value {
        json!({"type": kind, "data": data})
    }

    #[test]
    fn frames_of_other_prompts_are_misdirected() {
        let mut book = Book::new();
        let t = Instant::now();
        book.text(t, frame("status", json!({"sid": "me", "status": {}})));
        assert_eq!(book.sid.as_deref(), Some("me"));
        // Arrives before the submit's answer: held, then found to be ours.
        book.submitting = true;
        book.text(t, frame("execution_start", json!({"prompt_id": "p1"})));
        book.text(t, frame("execution_start", json!({"prompt_id": "other"})));
        book.accepted("p1");
        assert!(book.own["p1"].started.is_some());
        assert_eq!(book.misdirected, 1);
        book.text(
            t,
            frame("executing", json!({"node": "3", "prompt_id": "p1"})),
        );
        assert!(book.own["p1"].end.is_none());
        book.text(
            t,
            frame("executing", json!({"node": null, "prompt_id": "p1"})),
        );
        assert!(matches!(book.own["p1"].end, Some(End::Done(_))));
        // Not submitting: an unknown prompt is someone else's at once; and
        // if it later turns out to be ours, that is noted too.
        book.text(t, frame("progress", json!({"prompt_id": "p2"})));
        assert_eq!(book.misdirected, 2);
        book.submitting = true;
        book.accepted("p2");
        assert!(book.examples.iter().any(|e| e.contains("before")));
    }

    #[test]
    fn a_refused_submit_owns_nothing_held() {
        let mut book = Book::new();
        book.submitting = true;
        book.text(
            Instant::now(),
            frame("executed", json!({"prompt_id": "x", "output": {}})),
        );
        assert_eq!(book.misdirected, 0);
        book.refused();
        assert_eq!(book.misdirected, 1);
    }

    #[test]
    fn errors_are_kinds_from_comfyuis_error_shape() {
        let body = br#"{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"}, "node_errors": {}}"#;
        let f = submitted_id(StatusCode::BAD_REQUEST, body).unwrap_err();
        assert_eq!(f.kind, "prompt_outputs_failed_validation");
        let f = submitted_id(StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert_eq!(f.kind, "submit_http_502");
        assert_eq!(
            submitted_id(StatusCode::OK, br#"{"prompt_id": "a", "number": 1}"#).unwrap(),
            "a"
        );
    }

    #[test]
    fn an_execution_error_ends_the_prompt_with_its_kind() {
        let mut book = Book::new();
        book.submitting = true;
        book.accepted("p");
        book.text(
            Instant::now(),
            frame(
                "execution_error",
                json!({"prompt_id": "p", "node_id": "2", "node_type": "KSampler", "exception_type": "RuntimeError", "exception_message": "boom\n"}),
            ),
        );
        let Some(End::Failed(_, f)) = &book.own["p"].end else {
            panic!("the prompt should have failed");
        };
        assert_eq!(f.kind, "execution_error");
        assert!(f.message.ends_with("RuntimeError: boom"), "{}", f.message);
    }
}
