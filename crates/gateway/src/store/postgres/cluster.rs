//! What several gateways on one PostgreSQL database share besides tables:
//! the dispatcher's lease (a session advisory lock, released by the server
//! the moment its holder's connection ends, a `kill -9` included) and the
//! relay between gateways (`NOTIFY` on one channel, `LISTEN` by each).

use sqlx::postgres::PgListener;
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

/// How long a long message stays in `relay_messages` for its readers.
const LONG_MESSAGE_TTL_MS: i64 = 60_000;

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
    /// gone).
    pub async fn held(&mut self) -> StoreResult<()> {
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
             AND granted AND ((classid::BIGINT << 32) | objid::BIGINT) = $1)",
        )
        .bind(DISPATCHER_LOCK)
        .fetch_one(&mut self.connection)
        .await?;
        if held {
            Ok(())
        } else {
            Err(StoreError::Unsupported(
                "the dispatcher's lock is no longer held by this gateway's connection".into(),
            ))
        }
    }

    /// Unlocks at once (closing alone would leave the lock until the
    /// server notices), then closes.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(DISPATCHER_LOCK)
            .execute(&mut self.connection)
            .await;
        let _ = self.connection.close().await;
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
    /// The lease, if no other gateway holds it.
    pub async fn try_lease(&self) -> StoreResult<Option<Lease>> {
        let options = (*self.options)
            .clone()
            .application_name("comfyume dispatcher");
        let mut connection = PgConnection::connect_with(&options).await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(DISPATCHER_LOCK)
            .fetch_one(&mut connection)
            .await?;
        if taken {
            Ok(Some(Lease { connection }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Sends `messages`, in order, to every listening gateway: one
    /// transaction, so they arrive together and in this order, after any
    /// sent before by the same caller.
    pub async fn broadcast(&self, messages: &[String], now_ms: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let mut payloads = Vec::with_capacity(messages.len());
        let mut stored = false;
        for (place, message) in messages.iter().enumerate() {
            if message.len() <= INLINE_MAX && !message.starts_with(ROW_MARK) {
                payloads.push(format!("{place}{PLACE_END}{message}"));
                continue;
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO relay_messages (at, body) VALUES ($1, $2) RETURNING id",
            )
            .bind(now_ms)
            .bind(message)
            .fetch_one(&mut *tx)
            .await?;
            payloads.push(format!("{place}{PLACE_END}{ROW_MARK}{id}"));
            stored = true;
        }
        if stored {
            sqlx::query("DELETE FROM relay_messages WHERE at < $1")
                .bind(now_ms - LONG_MESSAGE_TTL_MS)
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
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Listener {
            listener,
            db: self.clone(),
        })
    }
}
