//! The instructor's console in PostgreSQL: the room's jobs across owners,
//! the instructor lane for bumped jobs, the audit log, the room's switches,
//! pushed workflows and the wall.

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::Postgres;
use super::jobs::parse_id;
use crate::store::{
    AccountActivity, AuditEntry, BackendActivity, RoomJob, RoomWorkflow, StoreError, StoreResult,
    WallItem,
};
use comfyume_domain::{JobId, UserId, UserName};

impl Postgres {
    pub async fn room_jobs(&self) -> StoreResult<Vec<RoomJob>> {
        let rows = sqlx::query(
            "SELECT j.id, u.name, j.state, j.created_at, j.started_at, j.backend, j.bumped_at
             FROM jobs j JOIN users u ON u.id = j.user_id
             WHERE j.state IN ('pending', 'in_progress') ORDER BY j.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("name")?;
                let state: String = r.try_get("state")?;
                Ok(RoomJob {
                    id: parse_id(r)?,
                    owner: UserName::parse(&name)
                        .map_err(|_| StoreError::Corrupt(format!("user name {name:?}")))?,
                    state: state
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("job state {state:?}")))?,
                    created_at: r.try_get("created_at")?,
                    started_at: r.try_get("started_at")?,
                    backend: r.try_get("backend")?,
                    bumped_at: r.try_get("bumped_at")?,
                })
            })
            .collect()
    }

    pub async fn bump_job(&self, id: &JobId, now: i64) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE jobs SET bumped_at = $2 WHERE id = $1 AND state = 'pending'")
                .bind(id.to_string())
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn record_audit(
        &self,
        at: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail: &Value,
    ) -> StoreResult<AuditEntry> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(AuditEntry {
            id,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.clone(),
        })
    }

    pub async fn audit_log(&self, limit: u32, before: Option<i64>) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM audit_log
             WHERE id < $2 ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    pub async fn room_value(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM room_state WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_room_value(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO room_state (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Postgres {
    pub async fn add_room_workflow(
        &self,
        name: &str,
        content: &Value,
        at: i64,
        by: &str,
    ) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO room_workflows (name, content, pushed_at, pushed_by) VALUES ($1, $2, $3, $4)
             RETURNING id",
        )
        .bind(name)
        .bind(content.to_string())
        .bind(at)
        .bind(by)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn undelivered_workflows(&self, user: UserId) -> StoreResult<Vec<RoomWorkflow>> {
        let rows = sqlx::query(
            "SELECT w.id, w.name, w.content FROM room_workflows w
             WHERE NOT EXISTS (SELECT 1 FROM room_workflow_deliveries d
                               WHERE d.workflow_id = w.id AND d.user_id = $1)
             ORDER BY w.id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let content: String = r.try_get("content")?;
                Ok(RoomWorkflow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    content: serde_json::from_str(&content)
                        .map_err(|e| StoreError::Corrupt(format!("room_workflows.content: {e}")))?,
                })
            })
            .collect()
    }

    pub async fn mark_workflow_delivered(&self, id: i64, user: UserId, at: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO room_workflow_deliveries (workflow_id, user_id, delivered_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(user.0)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Postgres {
    pub async fn account_activity(&self) -> StoreResult<Vec<(UserId, AccountActivity)>> {
        let rows = sqlx::query(
            "SELECT user_id, state, COUNT(*) AS n,
                    SUM(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL
                             THEN finished_at - started_at ELSE 0 END)::BIGINT AS gpu_ms,
                    MAX(GREATEST(created_at, COALESCE(finished_at, 0))) AS last
             FROM jobs GROUP BY user_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_user: std::collections::BTreeMap<i64, AccountActivity> = Default::default();
        for r in &rows {
            let user: i64 = r.try_get("user_id")?;
            let state: String = r.try_get("state")?;
            let n = u32::try_from(r.try_get::<i64, _>("n")?).unwrap_or(u32::MAX);
            let a = by_user.entry(user).or_default();
            match state.as_str() {
                "pending" => a.pending = n,
                "in_progress" => a.running = n,
                "completed" => a.completed = n,
                "failed" => a.failed = n,
                "cancelled" => a.cancelled = n,
                other => return Err(StoreError::Corrupt(format!("job state {other:?}"))),
            }
            a.gpu_ms += r.try_get::<Option<i64>, _>("gpu_ms")?.unwrap_or(0);
            let last: Option<i64> = r.try_get("last")?;
            a.last_activity = a.last_activity.max(last);
        }
        Ok(by_user.into_iter().map(|(u, a)| (UserId(u), a)).collect())
    }

    pub async fn backend_activity(&self, since_ms: i64) -> StoreResult<Vec<BackendActivity>> {
        let rows = sqlx::query(
            "SELECT backend, COUNT(*) AS n, SUM(finished_at - started_at)::BIGINT AS run_ms FROM jobs
             WHERE backend IS NOT NULL AND started_at IS NOT NULL AND finished_at >= $1
               AND state IN ('completed', 'failed', 'cancelled')
             GROUP BY backend ORDER BY backend",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BackendActivity {
                    backend: r.try_get("backend")?,
                    jobs: u32::try_from(r.try_get::<i64, _>("n")?).unwrap_or(u32::MAX),
                    run_ms: r.try_get::<Option<i64>, _>("run_ms")?.unwrap_or(0),
                })
            })
            .collect()
    }

    pub async fn latest_outputs(&self) -> StoreResult<Vec<(UserId, Value)>> {
        let rows = sqlx::query(
            "SELECT j.user_id, j.outputs FROM jobs j
             JOIN (SELECT user_id, MAX(seq) AS seq FROM jobs
                   WHERE state = 'completed' AND outputs != '{}' GROUP BY user_id) latest
               ON latest.seq = j.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("outputs")?;
                let outputs = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("jobs.outputs: {e}")))?;
                Ok((UserId(r.try_get("user_id")?), outputs))
            })
            .collect()
    }

    pub async fn recent_waits(&self, limit: u32) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT started_at - created_at FROM jobs WHERE started_at IS NOT NULL
             ORDER BY started_at DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Postgres {
    pub async fn add_wall_item(
        &self,
        user: UserId,
        file_name: &str,
        ext: &str,
        at: i64,
        max_shown: u32,
    ) -> StoreResult<Option<i64>> {
        // The author's row stays locked from the count to the commit, so
        // two shares at once cannot both pass the cap.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        let id = sqlx::query_scalar(
            "INSERT INTO wall_items (user_id, file_name, ext, shared_at)
             SELECT $1, $2, $3, $4
             WHERE (SELECT COUNT(*) FROM wall_items WHERE user_id = $1 AND hidden_at IS NULL) < $5
             RETURNING id",
        )
        .bind(user.0)
        .bind(file_name)
        .bind(ext)
        .bind(at)
        .bind(i64::from(max_shown))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn wall_items(&self, limit: u32, with_hidden: bool) -> StoreResult<Vec<WallItem>> {
        let rows = sqlx::query(
            "SELECT w.id, u.name, w.file_name, w.ext, w.shared_at, w.hidden_at
             FROM wall_items w JOIN users u ON u.id = w.user_id
             WHERE $2 OR w.hidden_at IS NULL ORDER BY w.id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(with_hidden)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(wall_from_row).collect()
    }

    pub async fn wall_item(&self, id: i64) -> StoreResult<Option<WallItem>> {
        let row = sqlx::query(
            "SELECT w.id, u.name, w.file_name, w.ext, w.shared_at, w.hidden_at
             FROM wall_items w JOIN users u ON u.id = w.user_id WHERE w.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(wall_from_row).transpose()
    }

    pub async fn wall_shown_by(&self, user: UserId) -> StoreResult<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM wall_items WHERE user_id = $1 AND hidden_at IS NULL",
        )
        .bind(user.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub async fn set_wall_hidden(
        &self,
        id: i64,
        hidden_by: Option<&str>,
        at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE wall_items SET hidden_at = CASE WHEN $2::TEXT IS NULL THEN NULL ELSE $3 END, hidden_by = $2
             WHERE id = $1",
        )
        .bind(id)
        .bind(hidden_by)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn wall_from_row(r: &PgRow) -> StoreResult<WallItem> {
    let name: String = r.try_get("name")?;
    let hidden: Option<i64> = r.try_get("hidden_at")?;
    Ok(WallItem {
        id: r.try_get("id")?,
        author: UserName::parse(&name)
            .map_err(|_| StoreError::Corrupt(format!("user name {name:?}")))?,
        file_name: r.try_get("file_name")?,
        ext: r.try_get("ext")?,
        shared_at: r.try_get("shared_at")?,
        hidden: hidden.is_some(),
    })
}

fn audit_from_row(r: &PgRow) -> StoreResult<AuditEntry> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("audit_log.detail: {e}")))?,
    })
}
