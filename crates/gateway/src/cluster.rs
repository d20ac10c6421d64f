//! Several gateways, one room. Behind a load balancer, every gateway on one
//! PostgreSQL database accepts logins, workspace requests and prompts; the
//! database holds what they share (accounts, sessions, the queue, the
//! room's switches). Two things live in memory and are shared here:
//!
//! - **Dispatching.** Exactly one gateway dispatches at a time: the holder
//!   of the dispatcher's lease ([`lead`]). When it dies (`kill -9`
//!   included) the database releases the lease, another gateway takes it
//!   within [`LEASE_POLL`], picks up the jobs that were running where they
//!   run (as after a restart), and goes on. Claims stay compare-and-set in
//!   the database, so no job runs twice.
//! - **Signals** ([`Signal`]): a browser frame for a participant whose
//!   socket is on another gateway, "the queue changed", "cancel that
//!   running job", "the room paused". Each gateway sends its own through
//!   the database's `NOTIFY` ([`publish`]) and applies the others' as they
//!   arrive ([`listen`]), in the order they were sent.
//!
//! On SQLite there is one gateway: no lease to take, nothing to relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::{LoginEvent, LoginLimiter};
use crate::clock::now_ms;
use crate::dispatch::{Admission, BackendStatus, Dispatcher, LiveRun, LiveView};
use crate::hub::{Hub, Outbound};
use crate::store::Store;
use comfyume_domain::{JobId, UserId};

/// How often a gateway without the lease tries to take it: the longest a
/// room goes without a dispatcher after the one it had dies.
pub const LEASE_POLL: Duration = Duration::from_secs(1);

/// How often the dispatching gateway makes sure it still holds the lease.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// Signals waiting to be sent to the other gateways; past this many, or
/// [`OUTBOX_BYTES`] of frames, new ones are dropped and counted (a
/// participant's browser collects what it missed from history, as after
/// any network drop).
pub const OUTBOX_QUEUE: usize = 16_384;

/// The frames (previews are the big ones) waiting in the outbox at most.
pub const OUTBOX_BYTES: usize = 64 << 20;

/// Signals sent in one database round trip at most.
const BATCH: usize = 256;

/// Something the other gateways must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A frame for every socket of a user.
    ToUser(UserId, Outbound),
    /// A frame for one socket of a user.
    ToSid(UserId, String, Outbound),
    /// The instructor's word to the room.
    ToEveryone(Outbound),
    /// Close a user's sockets (their account was disabled or removed).
    Disconnect(UserId),
    /// The queue or the slots changed: look again.
    Wake,
    /// Stop this running job (its owner or an instructor cancelled it).
    Cancel(JobId),
    Paused(bool),
    UseGroup(Option<String>),
    Admission(String, Admission),
    /// A login count (see `auth::rate_limit`).
    Login(LoginEvent),
    /// The dispatching gateway's backends and runs, live.
    Live(LiveView),
    /// Who has sockets open on a gateway (named), so the room's news
    /// reaches them.
    Connected(String, Vec<UserId>),
}

/// Where a gateway's signals wait for [`publish`]. Sending never blocks.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Signal>,
    dropped: Arc<AtomicU64>,
    /// The frames' bytes waiting now.
    waiting_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Signal {
    /// What it holds in memory while it waits, roughly (its frame).
    fn weight(&self) -> usize {
        let frame_len = |frame: &Outbound| match frame {
            Outbound::Text(text) => text.len(),
            Outbound::Binary(bytes) => bytes.len(),
        };
        64 + match self {
            Signal::ToUser(_, frame) | Signal::ToSid(_, _, frame) | Signal::ToEveryone(frame) => {
                frame_len(frame)
            }
            Signal::Live(view) => 256 * (view.backends.len() + view.running.len()),
            Signal::Connected(_, users) => 8 * users.len(),
            _ => 0,
        }
    }
}

impl Outbox {
    /// A new outbox and the receiver [`publish`] drains.
    pub fn new(bound: usize) -> (Outbox, mpsc::Receiver<Signal>) {
        let (tx, rx) = mpsc::channel(bound.max(1));
        let outbox = Outbox {
            tx,
            dropped: Arc::default(),
            waiting_bytes: Arc::default(),
        };
        (outbox, rx)
    }

    pub fn send(&self, signal: Signal) {
        let weight = signal.weight();
        let waiting = self.waiting_bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        let refused = if waiting > OUTBOX_BYTES {
            true
        } else {
            matches!(
                self.tx.try_send(signal),
                Err(mpsc::error::TrySendError::Full(_))
            )
        };
        if refused {
            self.waiting_bytes.fetch_sub(weight, Ordering::Relaxed);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "signals to the other gateways are not going out fast enough: dropping some"
                );
            }
        }
    }

    /// `signal` left the outbox (sent, or given up on).
    fn gone(&self, signal: &Signal) {
        self.waiting_bytes
            .fetch_sub(signal.weight(), Ordering::Relaxed);
    }

    /// Signals dropped so far because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A signal as it travels: who sent it, its number there, and what it is.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sending gateway.
    from: String,
    /// Counts the sender's signals; it also keeps two equal signals in one
    /// transaction distinct (PostgreSQL folds identical notifications).
    n: u64,
    #[serde(flatten)]
    signal: Wire,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Wire {
    ToUser {
        user: i64,
        frame: Frame,
    },
    ToSid {
        user: i64,
        sid: String,
        frame: Frame,
    },
    ToEveryone {
        frame: Frame,
    },
    Disconnect {
        user: i64,
    },
    Wake,
    Cancel {
        job: String,
    },
    Paused {
        paused: bool,
    },
    UseGroup {
        group: Option<String>,
    },
    Admission {
        backend: String,
        admission: Admission,
    },
    Login {
        login: LoginEvent,
    },
    Live {
        backends: Vec<BackendStatus>,
        running: Vec<WireRun>,
    },
    Connected {
        gateway: String,
        users: Vec<i64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct WireRun {
    job: String,
    owner: i64,
    backend: String,
    elapsed_ms: u64,
    progress: Option<(u64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frame {
    Text(String),
    /// Base64.
    Binary(String),
}

impl From<&Outbound> for Frame {
    fn from(frame: &Outbound) -> Frame {
        match frame {
            Outbound::Text(text) => Frame::Text(text.clone()),
            Outbound::Binary(bytes) => {
                Frame::Binary(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

impl TryFrom<Frame> for Outbound {
    type Error = String;
    fn try_from(frame: Frame) -> Result<Outbound, String> {
        match frame {
            Frame::Text(text) => Ok(Outbound::Text(text)),
            Frame::Binary(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Outbound::Binary)
                .map_err(|e| format!("a binary frame that is not base64: {e}")),
        }
    }
}

impl From<&Signal> for Wire {
    fn from(signal: &Signal) -> Wire {
        match signal {
            Signal::ToUser(user, frame) => Wire::ToUser {
                user: user.0,
                frame: frame.into(),
            },
            Signal::ToSid(user, sid, frame) => Wire::ToSid {
                user: user.0,
                sid: sid.clone(),
                frame: frame.into(),
            },
            Signal::ToEveryone(frame) => Wire::ToEveryone {
                frame: frame.into(),
            },
            Signal::Disconnect(user) => Wire::Disconnect { user: user.0 },
            Signal::Wake => Wire::Wake,
            Signal::Cancel(job) => Wire::Cancel {
                job: job.to_string(),
            },
            Signal::Paused(paused) => Wire::Paused { paused: *paused },
            Signal::UseGroup(group) => Wire::UseGroup {
                group: group.clone(),
            },
            Signal::Admission(backend, admission) => Wire::Admission {
                backend: backend.clone(),
                admission: *admission,
            },
            Signal::Login(login) => Wire::Login {
                login: login.clone(),
            },
            Signal::Live(view) => Wire::Live {
                backends: view.backends.clone(),
                running: view
                    .running
                    .iter()
                    .map(|r| WireRun {
                        job: r.job.to_string(),
                        owner: r.owner.0,
                        backend: r.backend.clone(),
                        elapsed_ms: r.elapsed_ms,
                        progress: r.progress,
                    })
                    .collect(),
            },
            Signal::Connected(gateway, users) => Wire::Connected {
                gateway: gateway.clone(),
                users: users.iter().map(|u| u.0).collect(),
            },
        }
    }
}

impl TryFrom<Wire> for Signal {
    type Error = String;
    fn try_from(wire: Wire) -> Result<Signal, String> {
        Ok(match wire {
            Wire::ToUser { user, frame } => Signal::ToUser(UserId(user), frame.try_into()?),
            Wire::ToSid { user, sid, frame } => Signal::ToSid(UserId(user), sid, frame.try_into()?),
            Wire::ToEveryone { frame } => Signal::ToEveryone(frame.try_into()?),
            Wire::Disconnect { user } => Signal::Disconnect(UserId(user)),
            Wire::Wake => Signal::Wake,
            Wire::Cancel { job } => {
                Signal::Cancel(JobId::parse(&job).map_err(|_| format!("a cancel for job {job:?}"))?)
            }
            Wire::Paused { paused } => Signal::Paused(paused),
            Wire::UseGroup { group } => Signal::UseGroup(group),
            Wire::Admission { backend, admission } => Signal::Admission(backend, admission),
            Wire::Login { login } => Signal::Login(login),
            Wire::Live { backends, running } => Signal::Live(LiveView {
                backends,
                running: running
                    .into_iter()
                    .map(|r| {
                        Ok(LiveRun {
                            job: JobId::parse(&r.job)
                                .map_err(|_| format!("a live view of job {:?}", r.job))?,
                            owner: UserId(r.owner),
                            backend: r.backend,
                            elapsed_ms: r.elapsed_ms,
                            progress: r.progress,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            }),
            Wire::Connected { gateway, users } => {
                Signal::Connected(gateway, users.into_iter().map(UserId).collect())
            }
        })
    }
}

/// This gateway among the others: its name in the signals it sends.
#[derive(Debug, Clone)]
pub struct Replica(Arc<str>);

impl Replica {
    pub fn new() -> Replica {
        Replica(uuid::Uuid::new_v4().simple().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Replica {
    fn default() -> Self {
        Replica::new()
    }
}

/// This gateway's place among the others sharing its database.
pub struct Membership {
    pub replica: Replica,
    pub outbox: Outbox,
    /// What [`publish`] drains, until it starts.
    unsent: std::sync::Mutex<Option<mpsc::Receiver<Signal>>>,
}

impl Membership {
    pub fn new() -> Membership {
        let (outbox, unsent) = Outbox::new(OUTBOX_QUEUE);
        Membership {
            replica: Replica::new(),
            outbox,
            unsent: std::sync::Mutex::new(Some(unsent)),
        }
    }

    /// The outbox's receiving end, for [`publish`]; `None` once taken.
    pub fn take_unsent(&self) -> Option<mpsc::Receiver<Signal>> {
        self.unsent.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Default for Membership {
    fn default() -> Self {
        Membership::new()
    }
}

/// Sends this gateway's signals to the others, in order, until the outbox
/// closes: whatever is waiting goes in one round trip.
pub async fn publish(
    store: Store,
    replica: Replica,
    outbox: Outbox,
    mut unsent: mpsc::Receiver<Signal>,
) {
    let mut n: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    while unsent.recv_many(&mut batch, BATCH).await > 0 {
        let messages: Vec<String> = batch
            .drain(..)
            .filter_map(|signal| {
                outbox.gone(&signal);
                n += 1;
                let envelope = Envelope {
                    from: replica.as_str().to_string(),
                    n,
                    signal: Wire::from(&signal),
                };
                serde_json::to_string(&envelope)
                    .map_err(|e| tracing::error!(error = %e, "a signal that cannot be encoded"))
                    .ok()
            })
            .collect();
        if let Err(e) = store.broadcast(&messages, now_ms()).await {
            tracing::warn!(error = %e, signals = messages.len(), "could not send signals to the other gateways");
        }
    }
}

/// Applies the other gateways' signals here as they arrive, until the task
/// is dropped. Does nothing on SQLite.
pub async fn listen(store: Store, replica: Replica, here: Here) {
    let mut listener = loop {
        match store.listen().await {
            Ok(Some(listener)) => break listener,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to the other gateways yet; trying again");
                tokio::time::sleep(LEASE_POLL).await;
            }
        }
    };
    loop {
        let message = match listener.recv().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                tracing::warn!(
                    "the link to the other gateways was lost and made again: signals sent meanwhile were missed"
                );
                // Whatever changed meanwhile: the room's switches as the
                // store keeps them, and the queue looked at again.
                if let Err(e) = crate::room::restore_switches(&here.dispatcher).await {
                    tracing::warn!(error = %e, "could not read the room's switches again");
                }
                here.dispatcher.wake_here();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read a signal from the other gateways");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let envelope: Envelope = match serde_json::from_str(&message) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "a signal that cannot be read; ignored");
                continue;
            }
        };
        if envelope.from == replica.as_str() {
            continue;
        }
        match Signal::try_from(envelope.signal) {
            Ok(signal) => here.apply(signal),
            Err(why) => tracing::warn!(%why, "a signal that cannot be read; ignored"),
        }
    }
}

/// What the other gateways' signals act on, here.
pub struct Here {
    pub hub: Arc<Hub>,
    pub dispatcher: Arc<Dispatcher>,
    pub logins: LoginLimiter,
}

impl Here {
    /// Does here what another gateway signalled.
    fn apply(&self, signal: Signal) {
        let (hub, dispatcher) = (&self.hub, &self.dispatcher);
        match signal {
            Signal::ToUser(user, frame) => hub.deliver_to_user(user, frame),
            Signal::ToSid(user, sid, frame) => hub.deliver_to_sid(user, &sid, frame),
            Signal::ToEveryone(frame) => {
                hub.deliver_to_everyone(frame);
            }
            Signal::Disconnect(user) => {
                hub.disconnect_here(user);
            }
            Signal::Wake => dispatcher.wake_here(),
            Signal::Cancel(job) => {
                dispatcher.cancel_here(&job);
            }
            Signal::Paused(paused) => dispatcher.set_paused_here(paused),
            Signal::UseGroup(group) => {
                dispatcher.use_group_here(group);
            }
            Signal::Admission(backend, admission) => {
                dispatcher.set_admission_here(&backend, admission);
            }
            Signal::Login(event) => self.logins.apply(event),
            Signal::Live(view) => dispatcher.heard(view),
            Signal::Connected(gateway, users) => {
                // Someone came or went: the room's news looks again.
                if hub.heard_connected(&gateway, users) {
                    dispatcher.wake_here();
                }
            }
        }
    }
}

/// How often the dispatching gateway shares its live view (when it
/// changed): progress bars and backend states on the other gateways'
/// dashboards lag by at most this.
pub const LIVE_VIEW_EVERY: Duration = Duration::from_secs(1);

/// Shares the dispatching gateway's live view of the backends and runs
/// with the others, each time it changed and every [`LIVE_VIEW_AGAIN`]
/// ticks regardless (for gateways that started since), while this
/// gateway dispatches.
pub async fn share_live_view(dispatcher: Arc<Dispatcher>, outbox: Outbox) {
    let mut tick = tokio::time::interval(LIVE_VIEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<LiveView> = None;
    let mut unchanged = 0;
    loop {
        tick.tick().await;
        if !dispatcher.is_leading() {
            last = None;
            continue;
        }
        let view = dispatcher.live_view();
        // Elapsed times always change: compare without them.
        let changed = last.as_ref().is_none_or(|old| {
            old.backends != view.backends
                || old.running.len() != view.running.len()
                || old.running.iter().zip(&view.running).any(|(a, b)| {
                    (a.job, &a.backend, a.progress) != (b.job, &b.backend, b.progress)
                })
        });
        unchanged = if changed { 0 } else { unchanged + 1 };
        if changed || unchanged >= LIVE_VIEW_AGAIN {
            unchanged = 0;
            outbox.send(Signal::Live(view.clone()));
            last = Some(view);
        }
    }
}

/// Ticks of [`LIVE_VIEW_EVERY`] after which an unchanged view is shared
/// again.
const LIVE_VIEW_AGAIN: u32 = 10;

/// Tells the other gateways who has sockets open here, each time that
/// changed and every [`LIVE_VIEW_AGAIN`] ticks regardless (what a gateway
/// said holds for `hub::ELSEWHERE_FRESH`), so the dispatching gateway's
/// news of the queue reaches participants connected anywhere.
pub async fn share_connected(hub: Arc<Hub>, replica: Replica, outbox: Outbox) {
    let mut tick = tokio::time::interval(LIVE_VIEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<UserId>> = None;
    let mut unchanged = 0;
    loop {
        tick.tick().await;
        let here = hub.connected_here();
        let changed = last.as_ref() != Some(&here);
        unchanged = if changed { 0 } else { unchanged + 1 };
        if changed || unchanged >= LIVE_VIEW_AGAIN {
            unchanged = 0;
            outbox.send(Signal::Connected(
                replica.as_str().to_string(),
                here.clone(),
            ));
            last = Some(here);
        }
    }
}

/// Dispatches while this gateway holds the dispatcher's lease, and waits
/// to take it while another does, until `closing` turns true. On taking
/// it, the jobs left running are picked up where they run; on losing it
/// (the database connection gone), every run here stops at once, so the
/// gateway that takes over is the only one following them.
pub async fn lead(
    store: Store,
    dispatcher: Arc<Dispatcher>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    dispatcher.set_leading(false);
    loop {
        if *closing.borrow() {
            return;
        }
        let asked = tokio::select! {
            asked = store.try_lease() => asked,
            _ = closing.wait_for(|closing| *closing) => return,
        };
        let mut lease = match asked {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                let _ = tokio::time::timeout(LEASE_POLL, closing.changed()).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask for the dispatcher's lease; trying again");
                let _ = tokio::time::timeout(LEASE_POLL, closing.changed()).await;
                continue;
            }
        };
        let span = tracing::info_span!("dispatching");
        // What this gateway heard while another dispatched is not what it
        // goes by now: the room's switches as the store keeps them (a
        // signal may have been missed), and runs of its own.
        dispatcher.forget_heard();
        let taken_over = async {
            crate::room::restore_switches(&dispatcher)
                .await
                .map_err(|e| e.to_string())?;
            dispatcher.recover().await.map_err(|e| e.to_string())
        };
        if let Err(e) = tracing::Instrument::instrument(taken_over, span.clone()).await {
            tracing::error!(error = %e, "took the dispatcher's lease but cannot recover the queue; giving it back");
            // Whatever the recovery started stops before the lease goes.
            dispatcher.step_down().await;
            lease.release().await;
            let _ = tokio::time::timeout(LEASE_POLL, closing.changed()).await;
            continue;
        }
        tracing::info!("this gateway holds the dispatcher's lease: it dispatches");
        dispatcher.set_leading(true);
        let lost = tokio::select! {
            () = tracing::Instrument::instrument(dispatcher.clone().run(), span) => None,
            lost = keep(&mut lease) => Some(lost),
            _ = closing.wait_for(|closing| *closing) => None,
        };
        dispatcher.set_leading(false);
        match lost {
            Some(e) => {
                tracing::error!(error = %e, "lost the dispatcher's lease: stopping every run here for the gateway that takes over");
                dispatcher.step_down().await;
                lease.release().await;
            }
            None => {
                // Closing: the runs stop before the lease goes, so no
                // other gateway follows them while these still do.
                dispatcher.shutdown().await;
                lease.release().await;
                return;
            }
        }
    }
}

/// Returns (with why) once the lease is no longer certainly held.
async fn keep(lease: &mut crate::store::Lease) -> crate::store::StoreError {
    loop {
        tokio::time::sleep(LEASE_CHECK).await;
        if let Err(e) = lease.held().await {
            return e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_survives_the_trip() {
        let signals = [
            Signal::ToUser(UserId(3), Outbound::Text("{\"type\":\"status\"}".into())),
            Signal::ToSid(
                UserId(4),
                "tab".into(),
                Outbound::Binary(vec![0, 1, 2, 255]),
            ),
            Signal::ToEveryone(Outbound::Text("hi".into())),
            Signal::Disconnect(UserId(5)),
            Signal::Wake,
            Signal::Cancel(JobId::new()),
            Signal::Paused(true),
            Signal::UseGroup(Some("a100".into())),
            Signal::UseGroup(None),
            Signal::Admission("gpu-1".into(), Admission::Draining),
            Signal::Login(LoginEvent::Begun {
                user: "bob".into(),
                device: None,
            }),
            Signal::Login(LoginEvent::Failed {
                ip: "2001:db8::1".parse().unwrap(),
            }),
            Signal::Login(LoginEvent::Succeeded {
                user: "bob".into(),
                old_device: Some("h1".into()),
                device: "h2".into(),
            }),
            Signal::Connected("r2".into(), vec![UserId(1), UserId(9)]),
            Signal::Login(LoginEvent::WrongRoomPassword),
            Signal::Live(LiveView {
                backends: vec![BackendStatus {
                    name: "gpu-1".into(),
                    kind: crate::config::BackendKind::Comfyui,
                    url: "http://gpu-1:8188".into(),
                    slots: 2,
                    group: Some("h200".into()),
                    active: true,
                    running: 1,
                    queued: 0,
                    state: crate::dispatch::BackendState::Busy,
                    last_error: None,
                }],
                running: vec![LiveRun {
                    job: JobId::new(),
                    owner: UserId(7),
                    backend: "gpu-1".into(),
                    elapsed_ms: 1500,
                    progress: Some((3, 20)),
                }],
            }),
        ];
        for signal in signals {
            let text = serde_json::to_string(&Envelope {
                from: "r".into(),
                n: 1,
                signal: Wire::from(&signal),
            })
            .unwrap();
            let back: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(Signal::try_from(back.signal).unwrap(), signal, "{text}");
        }
    }

    #[test]
    fn a_full_outbox_drops_and_counts() {
        let (outbox, _rx) = Outbox::new(2);
        for _ in 0..5 {
            outbox.send(Signal::Wake);
        }
        assert_eq!(outbox.dropped(), 3);
        // Bounded by bytes too: previews are large.
        let (outbox, mut rx) = Outbox::new(1_000);
        let preview = || Signal::ToUser(UserId(1), Outbound::Binary(vec![0; 1 << 20]));
        for _ in 0..100 {
            outbox.send(preview());
        }
        assert_eq!(outbox.dropped(), 100 - (OUTBOX_BYTES >> 20) as u64 + 1);
        let first = rx.try_recv().unwrap();
        outbox.gone(&first);
        outbox.send(preview());
        assert_eq!(
            outbox.dropped(),
            100 - (OUTBOX_BYTES >> 20) as u64 + 1,
            "room again once one went"
        );
    }
}
