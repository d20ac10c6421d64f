//! The PostgreSQL engine of the store, for several gateways sharing one
//! database: a connection pool, embedded migrations of its own. Accounts
//! and sessions here, jobs in `jobs`, the instructor's console in `room`.
//!
//! PostgreSQL runs writing statements side by side (READ COMMITTED), so a
//! bound that SQLite's one writer keeps by itself (a per-user cap checked
//! by the inserting statement) is kept here by locking what it counts: the
//! owner's row, or a transaction-scoped advisory lock.

mod cluster;
mod jobs;
mod room;

pub use cluster::{Lease, Listener};

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use comfyume_domain::{Role, UserId, UserName};

use super::{Caps, StoreError, StoreResult, UserRecord};

/// The advisory lock held while a room member is added, so two joins at
/// once cannot both take the last place (`auth.room_max_members`).
const ROOM_MEMBERS_LOCK: i64 = 0x636f_6d66_0001;

#[derive(Clone)]
pub(super) struct Postgres {
    pool: PgPool,
    /// For connections of their own (the dispatcher's lease).
    options: std::sync::Arc<PgConnectOptions>,
    /// The server process of the connection that last took the
    /// dispatcher's lease (0: never taken): job claims check that it still
    /// holds the lock, so a gateway that lost the lease cannot claim.
    lease_pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl Postgres {
    /// Connects with at most `max_connections` and brings the schema up to
    /// date (the migrations take a lock of their own, so replicas starting
    /// together migrate once).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Postgres> {
        let options = PgConnectOptions::from_str(url)?.application_name("comfyume");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Postgres {
            pool,
            options: options.into(),
            lease_pid: Default::default(),
        })
    }

    pub async fn create_user(
        &self,
        name: &UserName,
        password_hash: &str,
        role: Role,
        now_ms: i64,
    ) -> StoreResult<UserRecord> {
        let result = sqlx::query_scalar(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4)
             RETURNING id",
        )
        .bind(name.as_str())
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(id) => Ok(UserRecord {
                id: UserId(id),
                name: name.clone(),
                password_hash: password_hash.to_string(),
                role,
                created_at: now_ms,
                disabled: false,
                caps: Caps::default(),
                room_member: false,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user '{name}'")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, name: &UserName) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT id, name, password_hash, role, created_at, disabled_at, max_pending, max_running, room_member FROM users WHERE name = $1",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn user_by_id(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT id, name, password_hash, role, created_at, disabled_at, max_pending, max_running, room_member FROM users WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, password_hash, role, created_at, disabled_at, max_pending, max_running, room_member FROM users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Replaces a password and ends every session of that user.
    pub async fn set_password(&self, name: &UserName, password_hash: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(password_hash)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user '{name}'")));
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = $1)")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_users(
        &self,
        users: &[(UserName, String)],
        role: Role,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (name, hash) in users {
            let inserted = sqlx::query(
                "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(name.as_str())
            .bind(hash)
            .bind(role.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                // Dropping the transaction takes back the ones before.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(StoreError::Conflict(name.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_room_member(
        &self,
        name: &UserName,
        password_hash: &str,
        now_ms: i64,
        max_members: u32,
    ) -> StoreResult<Option<UserRecord>> {
        // Joins take turns (the lock ends with the transaction), so the
        // count cannot change between checking and inserting.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROOM_MEMBERS_LOCK)
            .execute(&mut *tx)
            .await?;
        let result = sqlx::query(
            "INSERT INTO users (name, password_hash, role, created_at, room_member)
             SELECT $1, $2, 'participant', $3, TRUE
             WHERE (SELECT COUNT(*) FROM users WHERE room_member) < $4",
        )
        .bind(name.as_str())
        .bind(password_hash)
        .bind(now_ms)
        .bind(i64::from(max_members))
        .execute(&mut *tx)
        .await;
        match result {
            Ok(r) if r.rows_affected() == 0 => Ok(None),
            Ok(_) => {
                tx.commit().await?;
                self.user_by_name(name).await
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user '{name}'")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn set_caps(&self, name: &UserName, caps: Caps) -> StoreResult<()> {
        let updated =
            sqlx::query("UPDATE users SET max_pending = $1, max_running = $2 WHERE name = $3")
                .bind(caps.max_pending.map(i64::from))
                .bind(caps.max_running.map(i64::from))
                .bind(name.as_str())
                .execute(&self.pool)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user '{name}'")));
        }
        Ok(())
    }

    /// Disables an account (`Some(when)`), ending its sessions, or enables
    /// it again (`None`).
    pub async fn set_disabled(&self, name: &UserName, disabled_at: Option<i64>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET disabled_at = $1 WHERE name = $2")
            .bind(disabled_at)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user '{name}'")));
        }
        if disabled_at.is_some() {
            sqlx::query(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = $1)",
            )
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes an account and its sessions (its files are the workspace's
    /// business).
    pub async fn remove_user(&self, name: &UserName) -> StoreResult<()> {
        let deleted = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user '{name}'")));
        }
        Ok(())
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        user: UserId,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user.0)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The active, enabled user owning an unexpired session.
    pub async fn session_user(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.password_hash, u.role, u.created_at, u.disabled_at, u.max_pending, u.max_running, u.room_member
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes expired sessions; returns how many went.
    pub async fn sweep_sessions(&self, now_ms: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn snapshot_into(&self, _path: &std::path::Path) -> StoreResult<()> {
        Err(StoreError::Unsupported(
            "a PostgreSQL database is backed up by PostgreSQL's own tools (pg_dump, or the \
             operator's base backups and WAL archive), not by comfyume backup"
                .into(),
        ))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A stored limit (a count, so never negative in practice).
fn cap(stored: Option<i64>) -> Option<u32> {
    stored.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

fn user_from_row(r: &sqlx::postgres::PgRow) -> StoreResult<UserRecord> {
    let name: String = r.try_get("name")?;
    let role: String = r.try_get("role")?;
    let disabled_at: Option<i64> = r.try_get("disabled_at")?;
    Ok(UserRecord {
        id: UserId(r.try_get("id")?),
        name: UserName::parse(&name)
            .map_err(|e| StoreError::Corrupt(format!("user name {name:?}: {e}")))?,
        password_hash: r.try_get("password_hash")?,
        role: role.parse().map_err(StoreError::Corrupt)?,
        created_at: r.try_get("created_at")?,
        disabled: disabled_at.is_some(),
        room_member: r.try_get("room_member")?,
        caps: Caps {
            max_pending: cap(r.try_get("max_pending")?),
            max_running: cap(r.try_get("max_running")?),
        },
    })
}
