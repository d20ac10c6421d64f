//! What several gateways on one PostgreSQL database share besides tables:
//! the dispatcher's lease (a session advisory lock, released by the server
//! the moment its holder's connection ends: at once for a `kill -9`,
//! within [`LOST_CLIENT_SECONDS`] for a machine that vanished, through the
//! server's TCP keepalives on that connection) and the relay between
//! gateways (`NOTIFY` on one channel, `LISTEN` by each).
//!
//! The lock and the channel are the database's: one database per room.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use super::Postgres;
use crate::store::{StoreError, StoreResult};

/// The advisory lock whose holder dispatches.
const DISPATCHER_LOCK: i64 = 0x636f_6d66_0002;

/// The channel every gateway listens on.
const CHANNEL: &str = "comfyume_relay";

/// The longest message sent inline; a longer one goes through
/// `relay_messages` (NOTIFY payloads stop at 8000 bytes).
const INLINE_MAX: usize = 7_000;

/// How long a long message stays in `relay_messages` for its readers (by
/// the database's clock, not a gateway's).
const LONG_MESSAGE_TTL: &str = "5 minutes";

/// How long the server waits on a silent lease connection before it drops
/// it (and the lease with it): keepalives after 5 s idle, every 2 s, 3
/// unanswered; unacknowledged data for as long.
pub const LOST_CLIENT_SECONDS: u64 = 11;

/// The longest a look at the lease, or its taking, may take before the
/// lease is counted as lost (or not taken).
const LEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Marks a notification that names a row of `relay_messages`.
const ROW_MARK: char = '#';

/// Ends the number that starts each notification: PostgreSQL folds
/// identical notifications of one transaction into one, so each carries
/// its place in its batch.
const PLACE_END: char = ':';

/// The dispatcher's lease: the connection holding the lock.
pub struct Lease {
    connection: PgConnection,
}

impl Lease {
    /// Errs once the lock is no longer certainly held (its connection is
    /// gone, or does not answer within [`LEASE_TIMEOUT`]).
    pub async fn held(&mut self) -> StoreResult<()> {
        let look = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
             AND granted AND ((classid::BIGINT << 32) | objid::BIGINT) = $1)",
        )
        .bind(DISPATCHER_LOCK)
        .fetch_one(&mut self.connection);
        let held: bool = tokio::time::timeout(LEASE_TIMEOUT, look)
            .await
            .map_err(|_| {
                StoreError::Lease(format!(
                    "the lease's connection did not answer within {} s",
                    LEASE_TIMEOUT.as_secs()
                ))
            })??;
        if held {
            Ok(())
        } else {
            Err(StoreError::Lease(
                "its lock is no longer held by this gateway's connection".into(),
            ))
        }
    }

    /// Unlocks at once (closing alone would leave the lock until the
    /// server notices), then closes.
    pub async fn release(mut self) {
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(DISPATCHER_LOCK)
            .execute(&mut self.connection);
        let _ = tokio::time::timeout(LEASE_TIMEOUT, unlock).await;
        let _ = tokio::time::timeout(LEASE_TIMEOUT, self.connection.close()).await;
    }
}

/// Messages from the other gateways (and this one's own, which the caller
/// tells apart).
pub struct Listener {
    listener: PgListener,
    db: Postgres,
}

impl Listener {
    /// The next message; `Ok(None)` when the connection was lost and made
    /// again, so messages sent meanwhile were missed.
    pub async fn recv(&mut self) -> StoreResult<Option<String>> {
        let Some(note) = self.listener.try_recv().await? else {
            return Ok(None);
        };
        let payload = note
            .payload()
            .split_once(PLACE_END)
            .map(|(_, payload)| payload)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("relay notification {:?}", note.payload()))
            })?;
        let Some(id) = payload.strip_prefix(ROW_MARK) else {
            return Ok(Some(payload.to_string()));
        };
        let id: i64 = id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("relay notification {payload:?}")))?;
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM relay_messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await?;
        body.map(Some)
            .ok_or_else(|| StoreError::NotFound(format!("relay message {id} (expired)")))
    }
}

impl Postgres {
    /// The lease, if no other gateway holds it. From then on this
    /// store's job claims succeed only while the lease's connection holds
    /// the lock (a fence: a gateway that lost the lease cannot claim).
    pub async fn try_lease(&self) -> StoreResult<Option<Lease>> {
        let keepalive = [
            ("tcp_keepalives_idle", "5".to_string()),
            ("tcp_keepalives_interval", "2".to_string()),
            ("tcp_keepalives_count", "3".to_string()),
            ("tcp_user_timeout", (LOST_CLIENT_SECONDS * 1000).to_string()),
        ];
        let options = (*self.options)
            .clone()
            .application_name("comfyume dispatcher")
            .options(keepalive);
        let take = async {
            let mut connection = PgConnection::connect_with(&options).await?;
            let taken: Option<i32> = sqlx::query_scalar(
                "SELECT pg_backend_pid() FROM (SELECT pg_try_advisory_lock($1) AS taken) t WHERE taken",
            )
            .bind(DISPATCHER_LOCK)
            .fetch_optional(&mut connection)
            .await?;
            Ok::<_, StoreError>((connection, taken))
        };
        let (connection, taken) =
            tokio::time::timeout(LEASE_TIMEOUT, take)
                .await
                .map_err(|_| {
                    StoreError::Lease(format!(
                        "the database did not answer within {} s",
                        LEASE_TIMEOUT.as_secs()
                    ))
                })??;
        match taken {
            Some(pid) => {
                self.lease_pid.store(pid, Ordering::SeqCst);
                Ok(Some(Lease { connection }))
            }
            None => {
                let _ = tokio::time::timeout(LEASE_TIMEOUT, connection.close()).await;
                Ok(None)
            }
        }
    }

    /// The condition job claims add once this store has taken the lease
    /// (`TRUE` before: a store that never leads, such as a test's, claims
    /// freely).
    pub(super) fn claim_fence(&self) -> String {
        match self.lease_pid.load(Ordering::SeqCst) {
            0 => "TRUE".to_string(),
            // Both numbers are ours, not anyone's input.
            pid => format!(
                "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.pid = {pid} AND ((l.classid::BIGINT << 32) | l.objid::BIGINT) = {DISPATCHER_LOCK})"
            ),
        }
    }

    /// Sends `messages`, in order, to every listening gateway: one
    /// transaction, so they arrive together and in this order, after any
    /// sent before by the same caller.
    pub async fn broadcast(&self, messages: &[String], _now_ms: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let mut payloads = Vec::with_capacity(messages.len());
        let mut stored = false;
        for (place, message) in messages.iter().enumerate() {
            if message.len() <= INLINE_MAX && !message.starts_with(ROW_MARK) {
                payloads.push(format!("{place}{PLACE_END}{message}"));
                continue;
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO relay_messages (at, body)
                 VALUES ((EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, $1) RETURNING id",
            )
            .bind(message)
            .fetch_one(&mut *tx)
            .await?;
            payloads.push(format!("{place}{PLACE_END}{ROW_MARK}{id}"));
            stored = true;
        }
        if stored {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM relay_messages
                 WHERE at < (EXTRACT(EPOCH FROM clock_timestamp() - INTERVAL '{LONG_MESSAGE_TTL}') * 1000)::BIGINT"
            )))
            .execute(&mut *tx)
            .await?;
        }
        // A function scan yields the array's elements in order, so the
        // notifications are queued (and delivered) in that order.
        sqlx::query("SELECT pg_notify($1, m) FROM unnest($2::TEXT[]) AS m")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn listen(&self) -> StoreResult<Listener> {
        // A connection of its own, not one of the pool's for good.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(
                (*self.options)
                    .clone()
                    .application_name("comfyume listener"),
            )
            .await?;
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        Ok(Listener {
            listener,
            db: self.clone(),
        })
    }
}
