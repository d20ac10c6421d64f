//! Accounts and login: password hashing, session tokens, login rate limits
//! and the credential sheets an instructor prints.
//!
//! [`Accounts`] is the service the HTTP layer and the CLI share; it knows the
//! store but nothing about cookies or HTTP.

mod credentials;
mod password;
mod rate_limit;
mod token;

pub use credentials::{CredentialRow, generate_password, write_credentials_csv};
pub use rate_limit::{LoginEvent, LoginLimiter, Slowdown};
pub use token::SessionToken;

use std::net::IpAddr;
use std::time::Duration;

use crate::clock::now_ms;
use crate::store::{Store, StoreError, UserRecord};
use comfyume_domain::{Password, Role, UserId, UserName};

/// The user a request acts for, as the rest of the server sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub id: UserId,
    pub name: UserName,
    pub role: Role,
}

impl From<UserRecord> for SessionUser {
    fn from(u: UserRecord) -> Self {
        SessionUser {
            id: u.id,
            name: u.name,
            role: u.role,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Wrong user name or password.")]
    InvalidCredentials,
    #[error("Too many failed logins. Try again in {} minute(s), or ask your instructor.", .retry_after.as_secs().div_ceil(60))]
    RateLimited { retry_after: Duration },
    #[error("A password is at most {} bytes long.", password::MAX_PASSWORD_BYTES)]
    PasswordTooLong,
    #[error("{0}")]
    BadBatch(String),
    #[error("user '{0}' already exists; choose another prefix or remove the old accounts first")]
    Exists(UserName),
    /// Joining with the room's password, with a name someone has.
    #[error(
        "That name is taken: choose another one (or log in with your own password, if it is yours)."
    )]
    NameTaken,
    #[error("The room is full: ask your instructor for an account.")]
    RoomFull,
    #[error("That is not the room's password.")]
    WrongRoomPassword,
    #[error("A user name has letters, digits, - and _ only (at most 64).")]
    BadName,
    #[error(
        "Choose a password of your own of at least 8 characters: you log in with it next time."
    )]
    OwnPasswordTooShort,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The shortest password a participant may choose when joining a room.
pub const MIN_OWN_PASSWORD_CHARS: usize = 8;

/// The most accounts one numbered batch creates.
pub const MAX_BATCH: u32 = 9999;

/// A successful login.
pub struct LoggedIn {
    pub user: SessionUser,
    pub session: SessionToken,
    /// The browser's device cookie from now on (see `rate_limit`).
    pub device: SessionToken,
}

/// The limiter's key for every name no account can have.
const NOT_A_NAME: &str = "(not a user name)";

fn check_length(password: &Password) -> Result<(), AuthError> {
    if password.expose().len() > password::MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong);
    }
    Ok(())
}

/// Login, logout and session lookup.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    limiter: LoginLimiter,
    session_ttl: Duration,
    /// The room's shared password and how many accounts it may make
    /// (`auth.room_password`), when the room uses one.
    room: Option<(crate::config::Secret, u32)>,
}

impl Accounts {
    /// The login limits (shared with the other gateways, when there are).
    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }

    pub fn new(store: Store, limiter: LoginLimiter, session_ttl: Duration) -> Self {
        Self {
            store,
            limiter,
            session_ttl,
            room: None,
        }
    }

    /// Lets participants join with the room's shared `password` (at most
    /// `max_members` accounts made that way).
    pub fn with_room_password(
        mut self,
        password: Option<crate::config::Secret>,
        max_members: u32,
    ) -> Self {
        self.room = password.map(|p| (p, max_members));
        self
    }

    /// Whether participants join with the room's shared password.
    pub fn room_mode(&self) -> bool {
        self.room.is_some()
    }

    /// `password` is the room's shared password (compared in constant
    /// time).
    fn is_room_password(&self, password: &Password) -> bool {
        self.room.as_ref().is_some_and(|(room, _)| {
            let (a, b) = (room.expose().as_bytes(), password.expose().as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates an account (CLI and demo set-up).
    pub async fn create_user(
        &self,
        name: &UserName,
        password: &Password,
        role: Role,
    ) -> Result<SessionUser, AuthError> {
        check_length(password)?;
        let hash = password::hash(password).await;
        Ok(self
            .store
            .create_user(name, &hash, role, now_ms())
            .await?
            .into())
    }

    /// Creates `count` participant accounts `<prefix>001`, `<prefix>002`, …
    /// (four digits past 999) with generated passwords, all or none: every
    /// name is checked free first. Hashes run side by side, one per core.
    pub async fn create_numbered(
        &self,
        prefix: &str,
        count: u32,
    ) -> Result<Vec<CredentialRow>, AuthError> {
        if count == 0 || count > MAX_BATCH {
            return Err(AuthError::BadBatch(format!(
                "the count must be between 1 and {MAX_BATCH}"
            )));
        }
        let width = if count < 1000 { 3 } else { 4 };
        let names = (1..=count)
            .map(|i| UserName::parse(&format!("{prefix}{i:0width$}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                AuthError::BadBatch(format!("the prefix makes invalid user names: {e}"))
            })?;
        for name in &names {
            if self.store.user_by_name(name).await?.is_some() {
                return Err(AuthError::Exists(name.clone()));
            }
        }
        let hashed = futures_util::future::join_all(names.into_iter().map(|name| async move {
            let password = generate_password();
            let hash = password::hash(&Password::new(password.clone())).await;
            (name, password, hash)
        }))
        .await;
        // One transaction: a name taken meanwhile (a participant joining
        // with the room's password, say) leaves none of them made.
        let accounts: Vec<(UserName, String)> = hashed
            .iter()
            .map(|(name, _, hash)| (name.clone(), hash.clone()))
            .collect();
        match self
            .store
            .create_users(&accounts, Role::Participant, now_ms())
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(taken)) => {
                let name = UserName::parse(&taken)
                    .map_err(|_| StoreError::Corrupt(format!("user name {taken:?}")))?;
                return Err(AuthError::Exists(name));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(hashed
            .into_iter()
            .map(|(name, password, _)| CredentialRow {
                user: name.to_string(),
                password,
                role: Role::Participant.to_string(),
            })
            .collect())
    }

    pub async fn set_password(
        &self,
        name: &UserName,
        password: &Password,
    ) -> Result<(), AuthError> {
        check_length(password)?;
        let hash = password::hash(password).await;
        Ok(self.store.set_password(name, &hash).await?)
    }

    /// Checks a login and opens a session. Unknown users cost the same hash
    /// verification as known ones, so timing does not reveal which names
    /// exist; failures count against the name (or the `device` that logged
    /// in as it before) and the address. On success, also the device
    /// cookie the browser keeps for its next login.
    pub async fn login(
        &self,
        raw_name: &str,
        password: &Password,
        client: IpAddr,
        device: Option<&str>,
    ) -> Result<LoggedIn, AuthError> {
        let name = UserName::parse(raw_name).ok();
        // Names that cannot be accounts share one key, so made-up names of
        // any length cost the limiter nothing.
        let name_key = name.as_ref().map_or(NOT_A_NAME, UserName::as_str);
        // Counted before the password is checked, so parallel guesses
        // cannot all start before the first one fails.
        let limited = |retry_after| AuthError::RateLimited { retry_after };
        let attempt = self
            .limiter
            .begin(name_key, client, device)
            .map_err(limited)?;
        let Some(name) = name.filter(|_| check_length(password).is_ok()) else {
            // Nothing to hide by timing: no account has such a name or
            // such a password.
            self.limiter.failed(attempt);
            return Err(AuthError::InvalidCredentials);
        };
        let record = self.store.user_by_name(&name).await?;
        let hash = record.as_ref().map(|u| u.password_hash.clone());
        let turn = password::turn().await;
        let attempt = self.limiter.recheck(attempt).map_err(limited)?;
        let (ok, turn) = password::verify_in_turn(turn, password, hash).await;
        match record {
            Some(user) if ok && !user.disabled => {
                drop(turn);
                self.open_session(attempt, user).await
            }
            _ => {
                // Counted before the turn goes: the next check in line
                // looks at the address's limit with this failure in it.
                self.limiter.failed(attempt);
                drop(turn);
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// A participant's first time in a room with a shared password
    /// (`auth.room_password`): with the room's password, a free name of
    /// their choosing and a password of their own, their account is made
    /// and they are logged in. From then on they log in with their own
    /// password, like anyone: the room's password reaches no account.
    /// Counted against the same limits as logins, and against one limit
    /// for the whole room's wrong room passwords.
    pub async fn join(
        &self,
        raw_name: &str,
        own_password: &Password,
        room_password: &Password,
        client: IpAddr,
        device: Option<&str>,
    ) -> Result<LoggedIn, AuthError> {
        let Some((_, max_members)) = &self.room else {
            return Err(AuthError::InvalidCredentials);
        };
        let name = UserName::parse(raw_name).ok();
        let name_key = name.as_ref().map_or(NOT_A_NAME, UserName::as_str);
        let limited = |retry_after| AuthError::RateLimited { retry_after };
        let attempt = self
            .limiter
            .begin(name_key, client, device)
            .map_err(limited)?;
        if let Some(retry_after) = self.limiter.room_blocked() {
            self.limiter.failed(attempt);
            return Err(limited(retry_after));
        }
        if !self.is_room_password(room_password) {
            self.limiter.room_wrong();
            self.limiter.failed(attempt);
            return Err(AuthError::WrongRoomPassword);
        }
        let Some(name) = name else {
            self.limiter.failed(attempt);
            return Err(AuthError::BadName);
        };
        if own_password.expose().chars().count() < MIN_OWN_PASSWORD_CHARS {
            self.limiter.failed(attempt);
            return Err(AuthError::OwnPasswordTooShort);
        }
        check_length(own_password)?;
        if self.store.user_by_name(&name).await?.is_some() {
            self.limiter.failed(attempt);
            return Err(AuthError::NameTaken);
        }
        let hash = password::hash(own_password).await;
        let attempt = self.limiter.recheck(attempt).map_err(limited)?;
        match self
            .store
            .create_room_member(&name, &hash, now_ms(), *max_members)
            .await
        {
            Ok(Some(user)) => {
                tracing::info!(user = %name, "a participant joined with the room's password");
                self.open_session(attempt, user).await
            }
            Ok(None) => {
                self.limiter.failed(attempt);
                Err(AuthError::RoomFull)
            }
            Err(StoreError::Conflict(_)) => {
                self.limiter.failed(attempt);
                Err(AuthError::NameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A session for `user`, whose login `attempt` succeeded.
    async fn open_session(
        &self,
        attempt: rate_limit::Attempt,
        user: UserRecord,
    ) -> Result<LoggedIn, AuthError> {
        let device = SessionToken::generate();
        self.limiter.succeeded(attempt, device.expose());
        let token = SessionToken::generate();
        let now = now_ms();
        let ttl = i64::try_from(self.session_ttl.as_millis()).unwrap_or(i64::MAX);
        self.store
            .create_session(&token.hash(), user.id, now, now.saturating_add(ttl))
            .await?;
        Ok(LoggedIn {
            user: user.into(),
            session: token,
            device,
        })
    }

    /// The user behind a session cookie value, if it is live.
    pub async fn session_user(&self, token: &str) -> Result<Option<SessionUser>, AuthError> {
        let hash = SessionToken::hash_of(token);
        Ok(self
            .store
            .session_user(&hash, now_ms())
            .await?
            .map(SessionUser::from))
    }

    /// Deletes expired sessions; returns how many. The server runs this
    /// periodically so the table does not grow with every login.
    pub async fn sweep_expired_sessions(&self) -> Result<u64, AuthError> {
        Ok(self.store.sweep_sessions(now_ms()).await?)
    }

    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        Ok(self
            .store
            .delete_session(&SessionToken::hash_of(token))
            .await?)
    }
}
