//! Live browser sockets, by user.
//!
//! Every message about someone's work goes to that user's sockets (or one
//! of them), so one participant's events can never reach another. The one
//! message for everyone is the instructor's word to the room
//! ([`Hub::send_to_everyone`]), which carries nobody's work.
//!
//! With several gateways, a user's sockets may be on any of them: each
//! send here reaches this gateway's sockets and goes out to the others
//! (`crate::cluster`), which deliver it to theirs.
//!
//! Each socket's queue is bounded: a browser that stops reading (a frozen
//! tab, a stalled link) is disconnected once [`OUTBOUND_QUEUE`] frames wait
//! for it, instead of holding them in memory; it reconnects and collects
//! what it missed from history, as after any network drop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::cluster::{Outbox, Signal};
use comfyume_domain::UserId;

/// A frame on its way to a browser.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Text(String),
    Binary(Vec<u8>),
}

/// Frames that may wait for one socket (progress and previews of a few
/// jobs: a reading browser never comes near it).
pub const OUTBOUND_QUEUE: usize = 1024;

struct Connection {
    id: u64,
    sid: String,
    tx: mpsc::Sender<Outbound>,
    /// The client announced `supports_preview_metadata`: previews go to it
    /// as type-4 frames; to others as ComfyUI's plain type 1.
    preview_metadata: bool,
}

#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    users: Mutex<HashMap<UserId, Vec<Connection>>>,
    /// Sockets admitted per user (upgrading or open).
    admitted: Mutex<HashMap<UserId, u32>>,
    /// The other gateways, when there are (see `crate::cluster`).
    relay: Option<Outbox>,
    /// Who has sockets open on each other gateway, as it last said, and
    /// when.
    elsewhere: Mutex<HashMap<String, (Vec<UserId>, std::time::Instant)>>,
}

/// How long what another gateway said of its sockets holds: it says it
/// again well within this while it lives.
pub const ELSEWHERE_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// One admitted socket of a user, held for the socket's whole life
/// (from before its upgrade): dropping it frees the place.
pub struct SocketPermit {
    hub: Arc<Hub>,
    user: UserId,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut admitted = self.hub.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = admitted.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                admitted.remove(&self.user);
            }
        }
    }
}

/// Removes its connection from the hub when dropped (the socket task ends).
pub struct Registration<'a> {
    hub: &'a Hub,
    user: UserId,
    id: u64,
}

impl Hub {
    /// A hub whose sends also go to the gateways behind `relay`.
    pub fn relaying(relay: Outbox) -> Hub {
        Hub {
            relay: Some(relay),
            ..Hub::default()
        }
    }

    fn relay(&self, signal: impl FnOnce() -> Signal) {
        if let Some(relay) = &self.relay {
            relay.send(signal());
        }
    }

    /// A place for one more socket of `user`, unless they already have
    /// `max` (every browser tab holds one; thousands would only eat
    /// memory).
    pub fn admit(self: &Arc<Self>, user: UserId, max: u32) -> Option<SocketPermit> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        let n = admitted.entry(user).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SocketPermit {
            hub: self.clone(),
            user,
        })
    }

    /// Adds a socket. A newer socket with the same `sid` replaces the older
    /// one, as in ComfyUI; unlike ComfyUI, the older one closing later does
    /// not remove the newer (removal is by connection, not by sid).
    pub fn register(
        &self,
        user: UserId,
        sid: &str,
    ) -> (Registration<'_>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let conns = users.entry(user).or_default();
        conns.retain(|c| c.sid != sid);
        conns.push(Connection {
            id,
            sid: sid.to_string(),
            tx,
            preview_metadata: false,
        });
        (
            Registration {
                hub: self,
                user,
                id,
            },
            rx,
        )
    }

    /// Sends to every socket of `user`.
    pub fn send_to_user(&self, user: UserId, msg: Outbound) {
        // Relayed and delivered under one lock: the other gateways see
        // frames from concurrent sends here in the order the sockets here
        // do.
        let mut users = self.lock_users();
        self.relay(|| Signal::ToUser(user, msg.clone()));
        to_user(&mut users, user, msg);
    }

    /// Sends to every socket of `user` on this gateway.
    pub fn deliver_to_user(&self, user: UserId, msg: Outbound) {
        to_user(&mut self.lock_users(), user, msg);
    }

    /// Sends to the socket `sid` of `user`, if it is connected. A preview
    /// with metadata (type 4) reaches a client that did not ask for that
    /// form as the plain preview (type 1) stock ComfyUI would send it.
    pub fn send_to_sid(&self, user: UserId, sid: &str, msg: Outbound) {
        let mut users = self.lock_users();
        self.relay(|| Signal::ToSid(user, sid.to_string(), msg.clone()));
        to_sid(&mut users, user, sid, msg);
    }

    /// [`send_to_sid`](Self::send_to_sid) on this gateway.
    pub fn deliver_to_sid(&self, user: UserId, sid: &str, msg: Outbound) {
        to_sid(&mut self.lock_users(), user, sid, msg);
    }

    /// Sends to every open socket (the instructor's announcements only);
    /// returns how many it reached on this gateway.
    pub fn send_to_everyone(&self, msg: Outbound) -> usize {
        let mut users = self.lock_users();
        self.relay(|| Signal::ToEveryone(msg.clone()));
        to_everyone(&mut users, msg)
    }

    /// [`send_to_everyone`](Self::send_to_everyone) on this gateway.
    pub fn deliver_to_everyone(&self, msg: Outbound) -> usize {
        to_everyone(&mut self.lock_users(), msg)
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Connection>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every socket of `user` (their account was disabled or its
    /// password reset); returns how many there were on this gateway.
    pub fn disconnect_user(&self, user: UserId) -> usize {
        self.relay(|| Signal::Disconnect(user));
        self.disconnect_here(user)
    }

    /// [`disconnect_user`](Self::disconnect_user) on this gateway.
    pub fn disconnect_here(&self, user: UserId) -> usize {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        // Each socket's task ends when its sender goes.
        users.remove(&user).map_or(0, |conns| conns.len())
    }

    /// The users with at least one socket open, on this gateway or (as
    /// they said lately) another.
    pub fn connected_users(&self) -> Vec<UserId> {
        let mut users: std::collections::BTreeSet<UserId> =
            self.connected_here().into_iter().collect();
        let elsewhere = self.elsewhere.lock().unwrap_or_else(|e| e.into_inner());
        for (there, at) in elsewhere.values() {
            if at.elapsed() < ELSEWHERE_FRESH {
                users.extend(there.iter().copied());
            }
        }
        users.into_iter().collect()
    }

    /// The users with at least one socket open on this gateway.
    pub fn connected_here(&self) -> Vec<UserId> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut here: Vec<UserId> = users.keys().copied().collect();
        here.sort();
        here
    }

    /// Another gateway's word on who has sockets open there; true if that
    /// changed what it said before.
    pub fn heard_connected(&self, gateway: &str, users: Vec<UserId>) -> bool {
        let mut elsewhere = self.elsewhere.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        elsewhere.retain(|_, (_, at)| now.duration_since(*at) < ELSEWHERE_FRESH);
        let changed = elsewhere.get(gateway).is_none_or(|(old, _)| *old != users);
        elsewhere.insert(gateway.to_string(), (users, now));
        changed
    }

    /// How many sockets are open, over all users.
    pub fn connection_count(&self) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.values().map(Vec::len).sum()
    }
}

impl Registration<'_> {
    /// Records the client's `supports_preview_metadata` flag.
    pub fn set_preview_metadata(&self, on: bool) {
        let mut users = self.hub.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = users
            .get_mut(&self.user)
            .into_iter()
            .flatten()
            .find(|c| c.id == self.id)
        {
            c.preview_metadata = on;
        }
    }
}

fn to_user(users: &mut HashMap<UserId, Vec<Connection>>, user: UserId, msg: Outbound) {
    if let Some(conns) = users.get_mut(&user) {
        conns.retain(|c| deliver(c, msg.clone()));
    }
}

fn to_sid(users: &mut HashMap<UserId, Vec<Connection>>, user: UserId, sid: &str, msg: Outbound) {
    let Some(conns) = users.get_mut(&user) else {
        return;
    };
    let Some(i) = conns.iter().position(|c| c.sid == sid) else {
        return;
    };
    let c = &conns[i];
    let msg = match msg {
        Outbound::Binary(bytes) if !c.preview_metadata => match plain_preview(&bytes) {
            Some(plain) => Outbound::Binary(plain),
            None => Outbound::Binary(bytes),
        },
        other => other,
    };
    if !deliver(c, msg) {
        conns.remove(i);
    }
}

fn to_everyone(users: &mut HashMap<UserId, Vec<Connection>>, msg: Outbound) -> usize {
    let mut reached = 0;
    for conns in users.values_mut() {
        conns.retain(|c| {
            let delivered = deliver(c, msg.clone());
            reached += usize::from(delivered);
            delivered
        });
    }
    reached
}

/// Queues `msg` for `c`; `false` when the socket is gone, or so far behind
/// that it is dropped (its receiver then ends, and the socket closes).
fn deliver(c: &Connection, msg: Outbound) -> bool {
    match c.tx.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(
                sid = %c.sid,
                queued = OUTBOUND_QUEUE,
                "a socket stopped reading: disconnecting it (it reconnects and catches up from history)"
            );
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A type-4 preview (`[4][meta len][meta JSON][image]`) as type 1
/// (`[1][1 = JPEG | 2 = PNG][image]`); `None` for any other frame.
fn plain_preview(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.get(..4)? != 4u32.to_be_bytes() {
        return None;
    }
    let len = u32::from_be_bytes(frame.get(4..8)?.try_into().ok()?) as usize;
    let meta: serde_json::Value =
        serde_json::from_slice(frame.get(8..8usize.checked_add(len)?)?).ok()?;
    let image = frame.get(8 + len..)?;
    let image_type: u32 = if meta.get("image_type").and_then(|t| t.as_str()) == Some("image/png") {
        2
    } else {
        1
    };
    let mut out = Vec::with_capacity(8 + image.len());
    out.extend(1u32.to_be_bytes());
    out.extend(image_type.to_be_bytes());
    out.extend(image);
    Some(out)
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut users = self.hub.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = users.get_mut(&self.user) {
            conns.retain(|c| c.id != self.id);
            if conns.is_empty() {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_with_their_user() {
        let hub = Hub::default();
        let (_a, mut rx_a) = hub.register(UserId(1), "s1");
        let (_b, mut rx_b) = hub.register(UserId(2), "s1");
        hub.send_to_user(UserId(1), Outbound::Text("hi".into()));
        hub.send_to_sid(UserId(2), "s1", Outbound::Text("b".into()));
        assert_eq!(rx_a.try_recv().unwrap(), Outbound::Text("hi".into()));
        assert!(rx_a.try_recv().is_err());
        assert_eq!(rx_b.try_recv().unwrap(), Outbound::Text("b".into()));
        assert!(rx_b.try_recv().is_err());
    }

    #[test]
    fn previews_take_the_form_the_client_asked_for() {
        let hub = Hub::default();
        let (plain, mut rx_plain) = hub.register(UserId(1), "old-script");
        let (meta, mut rx_meta) = hub.register(UserId(1), "frontend");
        meta.set_preview_metadata(true);
        let m = br#"{"node_id":"3","prompt_id":"p","image_type":"image/png"}"#;
        let mut frame = 4u32.to_be_bytes().to_vec();
        frame.extend((m.len() as u32).to_be_bytes());
        frame.extend(m);
        frame.extend(b"PNGDATA");
        hub.send_to_sid(UserId(1), "old-script", Outbound::Binary(frame.clone()));
        hub.send_to_sid(UserId(1), "frontend", Outbound::Binary(frame.clone()));
        let mut expected = 1u32.to_be_bytes().to_vec();
        expected.extend(2u32.to_be_bytes());
        expected.extend(b"PNGDATA");
        assert_eq!(rx_plain.try_recv().unwrap(), Outbound::Binary(expected));
        assert_eq!(rx_meta.try_recv().unwrap(), Outbound::Binary(frame));
        drop(plain);
        assert!(
            plain_preview(&[0, 0, 0, 4, 255, 255, 255, 255]).is_none(),
            "a lying length is not trusted"
        );
    }

    #[test]
    fn a_socket_that_stops_reading_is_dropped_not_buffered() {
        let hub = Hub::default();
        let (_stuck, mut rx_stuck) = hub.register(UserId(1), "frozen-tab");
        let (_reader, mut rx_reader) = hub.register(UserId(1), "live-tab");
        for i in 0..OUTBOUND_QUEUE {
            hub.send_to_user(UserId(1), Outbound::Text(i.to_string()));
            // The live tab keeps up; the frozen one reads nothing.
            assert_eq!(rx_reader.try_recv().unwrap(), Outbound::Text(i.to_string()));
        }
        assert_eq!(hub.connection_count(), 2, "a full queue is not yet over");
        hub.send_to_user(UserId(1), Outbound::Text("one more".into()));
        assert_eq!(hub.connection_count(), 1, "the frozen tab is dropped");
        assert_eq!(
            rx_reader.try_recv().unwrap(),
            Outbound::Text("one more".into())
        );
        // What was queued for the frozen tab drains, then its queue ends,
        // which closes its socket.
        for _ in 0..OUTBOUND_QUEUE {
            assert!(rx_stuck.try_recv().is_ok());
        }
        assert_eq!(
            rx_stuck.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        );
    }

    #[test]
    fn a_replaced_socket_closing_late_keeps_the_new_one() {
        let hub = Hub::default();
        let (old, _rx_old) = hub.register(UserId(1), "s");
        let (_new, mut rx_new) = hub.register(UserId(1), "s");
        drop(old);
        hub.send_to_sid(UserId(1), "s", Outbound::Text("x".into()));
        assert_eq!(rx_new.try_recv().unwrap(), Outbound::Text("x".into()));
        assert_eq!(hub.connection_count(), 1);
    }
}
