//! Login throttling, per user name and per client address, in a sliding
//! window. A name's attempts count from the moment they begin (so a burst
//! of parallel guesses at one name cannot all slip in before the first is
//! counted); a successful one is taken back. An address's count is of
//! failures only, so a whole room behind one NAT can log in at once; its
//! limit is checked when the attempt begins and again when the attempt's
//! turn to hash comes ([`LoginLimiter::recheck`]), and only as many hashes
//! run at once as there are cores, so a burst of guesses at many names
//! gets at most the limit plus a core's worth checked. Past a limit,
//! attempts slow down rather
//! than lock out: each further one must wait twice as long after the one
//! before (by default 1 s, 2 s, 4 s, … up to a minute), so a guesser gets a
//! handful of tries a window while the real owner waits seconds, not the
//! window.
//!
//! A name under attack does not lock out its owner: a browser that logged
//! in as that name before holds a device cookie (OWASP's "device cookies"),
//! and its attempts are counted against the device, not the name. Whoever
//! guesses without one is stopped by the name's limit.
//!
//! IPv6 clients are counted by their /64 (one machine or home picks any
//! address in it).
//!
//! In memory: a restart forgiving everyone is harmless. Several gateways
//! sharing one room (`crate::cluster`) share their counts: each tells the
//! others every attempt, failure and success ([`LoginEvent`]) and counts
//! theirs as its own, so a guesser gains nothing by spreading guesses over
//! gateways (beyond the milliseconds a count takes to travel).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct LoginLimiter {
    inner: Arc<Mutex<Inner>>,
    /// The other gateways, when there are.
    relay: Option<crate::cluster::Outbox>,
    /// Wrong room passwords, from anyone (see [`RoomGuesses`]).
    room: Arc<RoomGuesses>,
    per_user: usize,
    per_ip: usize,
    window: Duration,
    slowdown: Slowdown,
}

/// The delays past the limit: `first`, doubling after each attempt let
/// through, never more than `max` (nor the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slowdown {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Slowdown {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Slowdown {
    /// The wait after the latest attempt once `over` attempts past the
    /// limit were let through.
    fn delay(self, over: usize, window: Duration) -> Duration {
        let doublings = u32::try_from(over).unwrap_or(u32::MAX).min(30);
        self.first
            .saturating_mul(1 << doublings)
            .min(self.max)
            .min(window)
    }
}

#[derive(Default)]
struct Inner {
    by_user: HashMap<String, VecDeque<Instant>>,
    by_ip: HashMap<IpAddr, VecDeque<Instant>>,
    /// Per device (the SHA-256 of its cookie), the name it logged in as
    /// and its recent attempts.
    devices: HashMap<String, Device>,
}

struct Device {
    user: String,
    attempts: VecDeque<Instant>,
}

/// Devices remembered at most, oldest forgotten first (a device that is
/// forgotten is only treated as a stranger again).
const MAX_DEVICES: usize = 10_000;

impl LoginLimiter {
    pub fn new(per_user: u32, per_ip: u32, window: Duration, slowdown: Slowdown) -> Self {
        Self {
            inner: Arc::default(),
            relay: None,
            room: Arc::default(),
            per_user: per_user as usize,
            per_ip: per_ip as usize,
            window,
            slowdown,
        }
    }

    /// Tells the gateways behind `relay` of every count here.
    pub fn with_relay(mut self, relay: crate::cluster::Outbox) -> Self {
        self.relay = Some(relay);
        self
    }

    fn share(&self, event: impl FnOnce() -> LoginEvent) {
        if let Some(relay) = &self.relay {
            relay.send(crate::cluster::Signal::Login(event()));
        }
    }

    /// Counts here what another gateway counted.
    pub fn apply(&self, event: LoginEvent) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            LoginEvent::Begun { user, device } => match device {
                Some(key) => {
                    if let Some(d) = inner.devices.get_mut(&key) {
                        d.attempts.push_back(now);
                    }
                }
                None => inner.by_user.entry(user).or_default().push_back(now),
            },
            LoginEvent::Withdrawn { user, device } => {
                let queue = match &device {
                    Some(key) => inner.devices.get_mut(key).map(|d| &mut d.attempts),
                    None => inner.by_user.get_mut(&user),
                };
                if let Some(q) = queue {
                    q.pop_back();
                }
            }
            LoginEvent::Failed { ip } => {
                count_failure(&mut inner, address_key(ip), now, self.window);
            }
            LoginEvent::Succeeded {
                user,
                old_device,
                device,
            } => remember_success(&mut inner, user, old_device, device, now),
            LoginEvent::WrongRoomPassword => self.room.wrong_at(now),
        }
    }

    /// How long joining with the room's password must wait, if it must.
    pub fn room_blocked(&self) -> Option<Duration> {
        self.room.blocked()
    }

    /// A wrong room password, counted here and on the other gateways.
    pub fn room_wrong(&self) {
        self.room.wrong();
        self.share(|| LoginEvent::WrongRoomPassword);
    }

    /// Starts an attempt: `Err(retry_after)` when the name (or, for a
    /// device that logged in as it before, that device) or the address is
    /// over its limit, else the attempt, counted against the name already.
    pub fn begin(&self, user: &str, ip: IpAddr, device: Option<&str>) -> Result<Attempt, Duration> {
        self.begin_at(user, ip, device, Instant::now())
    }

    fn begin_at(
        &self,
        user: &str,
        ip: IpAddr,
        device: Option<&str>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let ip = address_key(ip);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (window, slowdown) = (self.window, self.slowdown);
        let known = device
            .map(device_key)
            .filter(|key| inner.devices.get(key).is_some_and(|d| d.user == user));
        let user_wait = match &known {
            Some(key) => inner
                .devices
                .get_mut(key)
                .and_then(|d| wait(&mut d.attempts, self.per_user, window, slowdown, now)),
            None => inner
                .by_user
                .get_mut(user)
                .and_then(|q| wait(q, self.per_user, window, slowdown, now)),
        };
        let ip_wait = inner
            .by_ip
            .get_mut(&ip)
            .and_then(|q| wait(q, self.per_ip, window, slowdown, now));
        if let Some(d) = user_wait.max(ip_wait) {
            return Err(d);
        }
        match &known {
            Some(key) => {
                if let Some(d) = inner.devices.get_mut(key) {
                    d.attempts.push_back(now);
                }
            }
            None => inner
                .by_user
                .entry(user.to_string())
                .or_default()
                .push_back(now),
        }
        self.share(|| LoginEvent::Begun {
            user: user.to_string(),
            device: known.clone(),
        });
        // Keep memory bounded under a flood of made-up names: entries whose
        // attempts all aged out go.
        if inner.by_user.len() > 10_000 {
            inner
                .by_user
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        Ok(Attempt {
            user: user.to_string(),
            ip,
            at: now,
            device: known,
        })
    }

    /// The last look at the address, once the attempt's turn to hash has
    /// come: failures that ended while it waited count. When refused, the
    /// attempt is withdrawn (its password was never checked).
    pub fn recheck(&self, attempt: Attempt) -> Result<Attempt, Duration> {
        self.recheck_at(attempt, Instant::now())
    }

    fn recheck_at(&self, attempt: Attempt, now: Instant) -> Result<Attempt, Duration> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(retry_after) = inner
            .by_ip
            .get_mut(&attempt.ip)
            .and_then(|q| wait(q, self.per_ip, self.window, self.slowdown, now))
        else {
            return Ok(attempt);
        };
        let queue = match &attempt.device {
            Some(key) => inner.devices.get_mut(key).map(|d| &mut d.attempts),
            None => inner.by_user.get_mut(&attempt.user),
        };
        if let Some(q) = queue {
            if let Some(i) = q.iter().rposition(|t| *t == attempt.at) {
                q.remove(i);
            }
        }
        self.share(|| LoginEvent::Withdrawn {
            user: attempt.user,
            device: attempt.device,
        });
        Err(retry_after)
    }

    /// The attempt failed: it counts against its address too.
    pub fn failed(&self, attempt: Attempt) {
        self.failed_at(attempt, Instant::now());
    }

    fn failed_at(&self, attempt: Attempt, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        count_failure(&mut inner, attempt.ip, now, self.window);
        self.share(|| LoginEvent::Failed { ip: attempt.ip });
    }

    /// The attempt succeeded: the name's failures are forgiven.
    /// `device` is the cookie the browser gets (or keeps) for the name.
    pub fn succeeded(&self, attempt: Attempt, device: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let device = device_key(device);
        self.share(|| LoginEvent::Succeeded {
            user: attempt.user.clone(),
            old_device: attempt.device.clone(),
            device: device.clone(),
        });
        remember_success(&mut inner, attempt.user, attempt.device, device, attempt.at);
    }
}

/// A count one gateway's limiter tells the others' (see the module's doc).
/// Devices travel as their cookie's hash, never the cookie.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LoginEvent {
    /// An attempt began, counted against a name or a known device.
    Begun {
        user: String,
        device: Option<String>,
    },
    /// An attempt refused before its password was checked was taken back.
    Withdrawn {
        user: String,
        device: Option<String>,
    },
    /// An attempt failed: it counts against its address.
    Failed { ip: IpAddr },
    /// An attempt succeeded: the name's count is forgiven (unless it came
    /// from a known device), and the device is known for the name.
    Succeeded {
        user: String,
        old_device: Option<String>,
        device: String,
    },
    /// Someone gave a wrong room password.
    WrongRoomPassword,
}

/// One more failure from `ip` (already keyed by [`address_key`]).
fn count_failure(inner: &mut Inner, ip: IpAddr, now: Instant, window: Duration) {
    inner.by_ip.entry(ip).or_default().push_back(now);
    // Bounded under a flood from many addresses, as names are.
    if inner.by_ip.len() > 10_000 {
        inner
            .by_ip
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
    }
}

/// A success: forgives the name (unless the attempt came from a known
/// device: the owner's own device does not forgive a stranger's guesses)
/// and remembers `device` (a cookie's hash) for it.
fn remember_success(
    inner: &mut Inner,
    user: String,
    old_device: Option<String>,
    device: String,
    at: Instant,
) {
    if old_device.is_none() {
        inner.by_user.remove(&user);
    }
    if let Some(old) = old_device {
        inner.devices.remove(&old);
    }
    if inner.devices.len() >= MAX_DEVICES {
        let oldest = inner
            .devices
            .iter()
            .min_by_key(|(_, d)| d.attempts.back().copied())
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            inner.devices.remove(&oldest);
        }
    }
    inner.devices.insert(
        device,
        Device {
            user,
            attempts: VecDeque::from([at]),
        },
    );
}

/// The address an attempt is counted against: an IPv6 address by its /64,
/// the block one machine or home is given (it can pick any address in it,
/// so counting each would count nothing); an IPv4 address as it is.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Devices are remembered by their cookie's hash, as sessions are.
fn device_key(cookie: &str) -> String {
    super::SessionToken::hash_of(cookie)
}

/// A login attempt under way: counted against its name until it succeeds;
/// reported as [`failed`](LoginLimiter::failed) to count against its
/// address.
#[derive(Debug)]
#[must_use = "report the attempt as failed or succeeded"]
pub struct Attempt {
    user: String,
    ip: IpAddr,
    at: Instant,
    /// The known device it came from.
    device: Option<String>,
}

/// Drops failures older than the window; past `limit`, how long until
/// the next attempt may begin (the growing delay after the latest one).
fn wait(
    q: &mut VecDeque<Instant>,
    limit: usize,
    window: Duration,
    slowdown: Slowdown,
    now: Instant,
) -> Option<Duration> {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
    if q.len() < limit {
        return None;
    }
    let latest = *q.back()?;
    let ready = latest + slowdown.delay(q.len() - limit, window);
    // Retry-After is in whole seconds: round up, so a client that waits
    // exactly that long is let in.
    (ready > now).then(|| Duration::from_secs((ready - now).as_secs_f64().ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    /// Past the limit a name slows down, it does not lock: each attempt
    /// waits twice as long after the one before, up to a minute, however
    /// long the window.
    #[test]
    fn past_the_limit_attempts_wait_a_growing_delay() {
        let l = LoginLimiter::new(3, 1000, Duration::from_secs(3600), Slowdown::default());
        let mut now = Instant::now();
        for _ in 0..3 {
            let _ = l.begin_at("bob", A, None, now).unwrap();
        }
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = l.begin_at("bob", B, None, now).unwrap_err();
            assert_eq!(
                l.begin_at("bob", B, None, now + wait - Duration::from_millis(1))
                    .unwrap_err(),
                Duration::from_secs(1).min(wait),
                "one moment early is still too early"
            );
            now += wait;
            let _ = l
                .begin_at("bob", B, None, now)
                .expect("let in once the wait is over");
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    /// Two gateways: what one counts, the other counts too.
    #[test]
    fn counts_travel_to_the_other_gateways() {
        let (outbox, mut sent) = crate::cluster::Outbox::new(64);
        let here = LoginLimiter::new(3, 5, Duration::from_secs(3600), Slowdown::default())
            .with_relay(outbox);
        let there = LoginLimiter::new(3, 5, Duration::from_secs(3600), Slowdown::default());
        let deliver = |sent: &mut tokio::sync::mpsc::Receiver<crate::cluster::Signal>| {
            while let Ok(signal) = sent.try_recv() {
                match signal {
                    crate::cluster::Signal::Login(event) => there.apply(event),
                    other => panic!("not a login count: {other:?}"),
                }
            }
        };
        for _ in 0..3 {
            here.failed(here.begin("bob", A, None).unwrap());
        }
        deliver(&mut sent);
        assert!(
            there.begin("bob", B, None).is_err(),
            "the name's guesses elsewhere count"
        );
        for name in ["x", "y"] {
            here.failed(here.begin(name, A, None).unwrap());
        }
        deliver(&mut sent);
        assert!(
            there.begin("zed", A, None).is_err(),
            "the address's failures elsewhere count"
        );

        // The owner logs in on one gateway: their device is known on both.
        let owner = LoginLimiter::new(3, 100, Duration::from_secs(3600), Slowdown::default());
        let (outbox, mut sent) = crate::cluster::Outbox::new(64);
        let owner = LoginLimiter {
            relay: Some(outbox),
            ..owner
        };
        let attempt = owner.begin("carol", A, None).unwrap();
        owner.succeeded(attempt, "device-cookie");
        let there = LoginLimiter::new(3, 100, Duration::from_secs(3600), Slowdown::default());
        // Wrong room passwords anywhere count towards the room's limit.
        for _ in 0..RoomGuesses::MAX {
            owner.room_wrong();
        }
        while let Ok(crate::cluster::Signal::Login(event)) = sent.try_recv() {
            there.apply(event);
        }
        assert!(there.room_blocked().is_some(), "joining waits everywhere");
        for _ in 0..3 {
            there.failed(there.begin("carol", B, None).unwrap());
        }
        assert!(
            there.begin("carol", B, None).is_err(),
            "a stranger is stopped"
        );
        assert!(
            there.begin("carol", A, Some("device-cookie")).is_ok(),
            "the owner's device, known from the other gateway, is not"
        );
    }

    #[test]
    fn per_user_limit_then_window_passes() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.begin_at("bob", A, None, t0).is_ok());
        }
        assert!(
            l.begin_at("bob", B, None, t0).is_err(),
            "the name is locked from any address"
        );
        assert!(
            l.begin_at("alice", A, None, t0).is_ok(),
            "other names are unaffected"
        );
        assert!(
            l.begin_at("bob", A, None, t0 + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn an_ipv6_block_counts_as_one_address() {
        let l = LoginLimiter::new(100, 2, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        let at = |s: &str| s.parse::<IpAddr>().unwrap();
        l.failed_at(
            l.begin_at("a", at("2001:db8:1:2::1"), None, t0).unwrap(),
            t0,
        );
        l.failed_at(
            l.begin_at("b", at("2001:db8:1:2:ffff::9"), None, t0)
                .unwrap(),
            t0,
        );
        assert!(
            l.begin_at("c", at("2001:db8:1:2:abcd::3"), None, t0)
                .is_err(),
            "another address in the same /64 is the same client"
        );
        assert!(l.begin_at("c", at("2001:db8:1:3::1"), None, t0).is_ok());
    }

    #[test]
    fn per_ip_limit() {
        let l = LoginLimiter::new(100, 2, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        l.failed_at(l.begin_at("a", A, None, t0).unwrap(), t0);
        l.failed_at(l.begin_at("b", A, None, t0).unwrap(), t0);
        let wait = l.begin_at("c", A, None, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(60));
        assert!(l.begin_at("c", B, None, t0).is_ok());
    }

    #[test]
    fn success_forgives_the_name_and_never_counts_against_the_address() {
        let l = LoginLimiter::new(2, 2, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        l.failed_at(l.begin_at("bob", A, None, t0).unwrap(), t0);
        let ok = l.begin_at("bob", A, None, t0).unwrap();
        l.succeeded(ok, "device-1");
        assert!(
            l.begin_at("bob", A, None, t0).is_ok(),
            "the name is forgiven"
        );
        assert!(
            l.begin_at("carol", A, None, t0).is_ok(),
            "one failure and a success leave the address under its limit"
        );
    }

    /// A room behind one address (a NAT, the proxy) arrives at once: every
    /// attempt in flight passes, however many; only failures count.
    #[test]
    fn a_room_behind_one_address_logs_in_together() {
        let l = LoginLimiter::new(10, 5, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        let attempts: Vec<Attempt> = (0..200)
            .map(|i| l.begin_at(&format!("user{i}"), A, None, t0).unwrap())
            .collect();
        for (i, attempt) in attempts.into_iter().enumerate() {
            let attempt = l.recheck_at(attempt, t0).expect("no failures yet");
            l.succeeded(attempt, &format!("device-{i}"));
        }
    }

    /// Guesses at many names from one address: each is looked at again
    /// when its turn to hash comes, so the address stops them once its
    /// failures reach the limit, and a refused one is withdrawn from its
    /// name.
    #[test]
    fn the_address_is_looked_at_again_before_hashing() {
        let l = LoginLimiter::new(1, 3, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        let waiting: Vec<Attempt> = (0..10)
            .map(|i| l.begin_at(&format!("guess{i}"), A, None, t0).unwrap())
            .collect();
        let mut checked = 0;
        for attempt in waiting {
            match l.recheck_at(attempt, t0) {
                Ok(attempt) => {
                    checked += 1;
                    l.failed_at(attempt, t0);
                }
                Err(wait) => assert_eq!(wait, Duration::from_secs(1)),
            }
        }
        assert_eq!(checked, 3);
        assert!(
            l.begin_at("guess9", B, None, t0).is_ok(),
            "a refused attempt does not count against its name"
        );
    }

    /// Bob logged in from his laptop (device cookie `bobs-laptop`); then
    /// someone at address B guessed his password up to the name's limit.
    fn bob_logged_in_then_guessed() -> (LoginLimiter, Instant) {
        let l = LoginLimiter::new(2, 100, Duration::from_secs(60), Slowdown::default());
        let t0 = Instant::now();
        let first = l.begin_at("bob", A, None, t0).unwrap();
        l.succeeded(first, "bobs-laptop");
        for _ in 0..2 {
            let guess = l.begin_at("bob", B, None, t0).unwrap();
            l.failed_at(guess, t0);
        }
        (l, t0)
    }

    #[test]
    fn a_known_device_is_not_locked_out_with_its_name() {
        let (l, t0) = bob_logged_in_then_guessed();
        assert!(
            l.begin_at("bob", B, None, t0).is_err(),
            "the guesser is stopped"
        );
        assert!(
            l.begin_at("bob", A, Some("bobs-laptop"), t0).is_ok(),
            "bob's own browser still gets in"
        );
        assert!(
            l.begin_at("bob", B, Some("forged-cookie"), t0).is_err(),
            "an unknown device is a stranger"
        );
        assert!(
            l.begin_at("carol", A, Some("bobs-laptop"), t0).is_ok(),
            "a device counts only for its own name"
        );
    }

    #[test]
    fn the_owners_login_does_not_forgive_a_guesser() {
        let (l, t0) = bob_logged_in_then_guessed();
        let again = l.begin_at("bob", A, Some("bobs-laptop"), t0).unwrap();
        l.succeeded(again, "bobs-laptop-2");
        assert!(
            l.begin_at("bob", B, None, t0).is_err(),
            "bob's own login gives the guesser no new tries"
        );
    }
}

/// Wrong room passwords from anyone (`Accounts::join`): past
/// [`RoomGuesses::MAX`] in one [`RoomGuesses::WINDOW`], joining waits until
/// the window has passed. Per-name and per-address limits cannot stop
/// guesses spread over many names and addresses; this one can, at the
/// price of making everyone wait a few minutes while someone guesses.
#[derive(Default)]
pub struct RoomGuesses {
    wrong: Mutex<VecDeque<Instant>>,
}

impl RoomGuesses {
    pub const MAX: usize = 50;
    pub const WINDOW: Duration = Duration::from_secs(300);

    /// How long joining must wait, if it must.
    pub fn blocked(&self) -> Option<Duration> {
        self.blocked_at(Instant::now())
    }

    pub fn wrong(&self) {
        self.wrong_at(Instant::now());
    }

    fn blocked_at(&self, now: Instant) -> Option<Duration> {
        let mut wrong = self.wrong.lock().unwrap_or_else(|e| e.into_inner());
        while wrong
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
        {
            wrong.pop_front();
        }
        (wrong.len() >= Self::MAX).then(|| {
            wrong
                .front()
                .map_or(Duration::ZERO, |t| Self::WINDOW - now.duration_since(*t))
        })
    }

    fn wrong_at(&self, now: Instant) {
        let mut wrong = self.wrong.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: older ones than the window go first, and no more than
        // the limit are kept.
        if wrong.len() >= Self::MAX {
            wrong.pop_front();
        }
        wrong.push_back(now);
    }
}

#[cfg(test)]
mod room_guesses_tests {
    use super::*;

    #[test]
    fn many_wrong_room_passwords_make_everyone_wait_out_the_window() {
        let guesses = RoomGuesses::default();
        let start = Instant::now();
        for _ in 0..RoomGuesses::MAX - 1 {
            guesses.wrong_at(start);
        }
        assert_eq!(guesses.blocked_at(start), None);
        guesses.wrong_at(start);
        let wait = guesses.blocked_at(start).expect("blocked");
        assert_eq!(wait, RoomGuesses::WINDOW);
        let later = start + RoomGuesses::WINDOW;
        assert_eq!(guesses.blocked_at(later), None);
    }
}
