//! Job rows in SQLite: insert, claim, finish, and the per-user queries
//! behind the queue and history routes. State changes are compare-and-set
//! on the current state, so two tasks can never both move the same job.

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::Sqlite;
use crate::store::{
    Claimed, Finish, HistoryPage, Inserted, JobsPage, JobsSort, NewJob, PendingRow, StoreError,
    StoreResult,
};
use comfyume_domain::{Job, JobId, Role, UserId, UserName};

/// The columns `job_from_row` reads, as a literal so queries stay static
/// strings.
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!("SELECT ", job_columns!(), " FROM jobs ", $rest)
    };
}

/// A job's execution time as `/api/jobs` reports it: the timestamp of its
/// last end message (success, interruption, error) minus that of its last
/// `execution_start`, each an integer; 0 unless the job ended after
/// starting and both are there and non-zero.
macro_rules! duration_ms {
    () => {
        "(CASE WHEN jobs.state IN ('completed', 'failed', 'cancelled') AND jobs.started_at IS NOT NULL THEN COALESCE((
            SELECT CASE WHEN started != 0 AND ended != 0 THEN ended - started ELSE 0 END FROM (SELECT
              (SELECT CASE WHEN json_type(m.value, '$[1].timestamp') = 'integer' THEN json_extract(m.value, '$[1].timestamp') END
               FROM json_each(jobs.messages) AS m
               WHERE m.type = 'array' AND json_extract(m.value, '$[0]') = 'execution_start' AND json_type(m.value, '$[1]') = 'object'
               ORDER BY m.key DESC LIMIT 1) AS started,
              (SELECT CASE WHEN json_type(m.value, '$[1].timestamp') = 'integer' THEN json_extract(m.value, '$[1].timestamp') END
               FROM json_each(jobs.messages) AS m
               WHERE m.type = 'array' AND json_extract(m.value, '$[0]') IN ('execution_success', 'execution_interrupted', 'execution_error')
                 AND json_type(m.value, '$[1]') = 'object'
               ORDER BY m.key DESC LIMIT 1) AS ended)), 0) ELSE 0 END)"
    };
}

macro_rules! job_columns {
    () => {
        concat!(
            "seq, id, user_id, state, number, number_is_float, prompt, extra_data, outputs_to_execute, ",
            "partial_targets, workflow_id, attempts, backend, slot, created_at, started_at, finished_at, outputs, meta, ",
            "messages, error"
        )
    };
}

impl Sqlite {
    /// Inserts a pending job unless its owner already has `max_pending`
    /// waiting; returns it with its `seq` (assigned by the database) and
    /// `number`. The cap is checked by the inserting statement itself:
    /// SQLite runs one writing statement at a time, so two submissions can
    /// never both take the last place.
    pub async fn insert_job(&self, new: NewJob, max_pending: u32) -> StoreResult<Inserted> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, user_id, state, number, number_is_float, prompt, extra_data, \
             outputs_to_execute, partial_targets, workflow_id, created_at)
             SELECT $1, $2, 'pending', COALESCE($3, 0), $3 IS NOT NULL, $4, $5, $6, $7, $8, $9
             WHERE (SELECT COUNT(*) FROM jobs WHERE user_id = $2 AND state = 'pending')
                   < COALESCE((SELECT max_pending FROM users WHERE id = $2), $10)
             RETURNING seq",
        )
        .bind(new.id.to_string())
        .bind(new.owner.0)
        .bind(new.number)
        .bind(new.prompt.to_string())
        .bind(new.extra_data.to_string())
        .bind(json_text(&new.outputs_to_execute))
        .bind(new.partial_targets.as_ref().map(json_text))
        .bind(new.workflow_id.as_deref())
        .bind(new.created_at)
        .bind(i64::from(max_pending))
        .fetch_optional(&mut *tx)
        .await;
        let seq: i64 = match inserted {
            Ok(Some(row)) => row.try_get("seq")?,
            Ok(None) => {
                drop(tx);
                let own: Option<i64> =
                    sqlx::query_scalar("SELECT max_pending FROM users WHERE id = $1")
                        .bind(new.owner.0)
                        .fetch_optional(&self.pool)
                        .await?
                        .flatten();
                let limit =
                    own.map_or(max_pending, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
                return Ok(Inserted::QueueFull { limit });
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("job {}", new.id)));
            }
            Err(e) => return Err(e.into()),
        };
        // Without a client-chosen number, ComfyUI's counter: the
        // submission's place, negated for `front`.
        if new.number.is_none() {
            sqlx::query("UPDATE jobs SET number = $2 WHERE seq = $1")
                .bind(seq)
                .bind(if new.front { -seq } else { seq } as f64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.job(&new.id)
            .await?
            .map(|job| Inserted::Queued(Box::new(job)))
            .ok_or_else(|| StoreError::NotFound(format!("job {}", new.id)))
    }

    pub async fn job(&self, id: &JobId) -> StoreResult<Option<Job>> {
        let row = sqlx::query(select_jobs!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// The pending and running jobs of one user, oldest first.
    pub async fn active_jobs_of(&self, owner: UserId) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(select_jobs!(
            "WHERE user_id = $1 AND state IN ('pending', 'in_progress') ORDER BY seq"
        ))
        .bind(owner.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every job of one user, oldest first.
    pub async fn jobs_of(&self, owner: UserId) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(select_jobs!("WHERE user_id = $1 ORDER BY seq"))
            .bind(owner.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The finished jobs of one user that `/history` shows, oldest first.
    pub async fn history_of(&self, owner: UserId, page: HistoryPage) -> StoreResult<Vec<Job>> {
        // SQLite: a negative LIMIT is no limit.
        let (newest_first, limit, offset) = match page {
            HistoryPage::All => (false, -1, 0),
            HistoryPage::Newest(n) => (true, clamp(n), 0),
            HistoryPage::From { offset, limit } => (false, limit.map_or(-1, clamp), clamp(offset)),
        };
        let sql = if newest_first {
            select_jobs!(
                "WHERE user_id = $1 AND state IN ('completed', 'failed', 'cancelled') AND started_at IS NOT NULL ORDER BY seq DESC LIMIT $2 OFFSET $3"
            )
        } else {
            select_jobs!(
                "WHERE user_id = $1 AND state IN ('completed', 'failed', 'cancelled') AND started_at IS NOT NULL ORDER BY seq LIMIT $2 OFFSET $3"
            )
        };
        let rows = sqlx::query(sql)
            .bind(owner.0)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if newest_first {
            jobs.reverse();
        }
        Ok(jobs)
    }

    /// One page of a user's jobs, and how many match in all.
    pub async fn jobs_page_of(
        &self,
        owner: UserId,
        page: &JobsPage,
    ) -> StoreResult<(Vec<Job>, u64)> {
        let states = Value::from(
            page.states
                .iter()
                .map(|s| s.as_str().to_string())
                .collect::<Vec<_>>(),
        )
        .to_string();
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE user_id = $1 AND state IN (SELECT value FROM json_each($2))
             AND ($3 IS NULL OR workflow_id = $3)",
        )
        .bind(owner.0)
        .bind(&states)
        .bind(page.workflow_id.as_deref())
        .fetch_one(&self.pool)
        .await?;
        // The page's ids first: sorting carries only them, not every
        // row's prompt and history (the mixed order cannot use an index).
        macro_rules! page_ids {
            ($order:expr) => {
                concat!(
                    "SELECT id FROM jobs WHERE user_id = $1 AND state IN (SELECT value FROM json_each($2)) \
                     AND ($3 IS NULL OR workflow_id = $3) ORDER BY ",
                    $order,
                    ", seq LIMIT $4 OFFSET $5"
                )
            };
        }
        let sql = match (page.sort, page.descending) {
            (JobsSort::Creation, true) => page_ids!("created_at DESC"),
            (JobsSort::Creation, false) => page_ids!("created_at"),
            (JobsSort::Duration, true) => page_ids!(concat!(duration_ms!(), " DESC")),
            (JobsSort::Duration, false) => page_ids!(duration_ms!()),
        };
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind(owner.0)
            .bind(&states)
            .bind(page.workflow_id.as_deref())
            .bind(page.limit.map_or(-1, clamp))
            .bind(clamp(page.offset))
            .fetch_all(&self.pool)
            .await?;
        let rows = sqlx::query(select_jobs!(
            "WHERE id IN (SELECT value FROM json_each($1))"
        ))
        .bind(Value::from(ids.clone()).to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut by_id: std::collections::HashMap<String, Job> = rows
            .iter()
            .map(|r| job_from_row(r).map(|job| (job.id.to_string(), job)))
            .collect::<StoreResult<_>>()?;
        let jobs = ids.iter().filter_map(|id| by_id.remove(id)).collect();
        Ok((jobs, total.max(0) as u64))
    }

    /// (pending, in progress) counts of one user.
    pub async fn active_counts(&self, owner: UserId) -> StoreResult<(u32, u32)> {
        let row = sqlx::query(
            "SELECT SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS p,
                    SUM(CASE WHEN state = 'in_progress' THEN 1 ELSE 0 END) AS r
             FROM jobs WHERE user_id = $1 AND state IN ('pending', 'in_progress')",
        )
        .bind(owner.0)
        .fetch_one(&self.pool)
        .await?;
        let p: Option<i64> = row.try_get("p")?;
        let r: Option<i64> = row.try_get("r")?;
        Ok((p.unwrap_or(0) as u32, r.unwrap_or(0) as u32))
    }

    /// Every pending job, in submission order, with its owner's role.
    pub async fn pending_jobs(&self) -> StoreResult<Vec<PendingRow>> {
        let rows = sqlx::query(
            "SELECT j.id, j.user_id, j.number, j.seq, j.retry, j.avoid_backend, j.bumped_at, u.role, u.max_running FROM jobs j JOIN users u ON u.id = j.user_id
             WHERE j.state = 'pending' ORDER BY j.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                let bumped: Option<i64> = r.try_get("bumped_at")?;
                Ok(PendingRow {
                    id: parse_id(r)?,
                    owner: UserId(r.try_get("user_id")?),
                    admin: role == Role::Admin.as_str() || bumped.is_some(),
                    number: r.try_get("number")?,
                    seq: r.try_get("seq")?,
                    retry: r.try_get("retry")?,
                    avoid_backend: r.try_get("avoid_backend")?,
                    owner_cap: r
                        .try_get::<Option<i64>, _>("max_running")?
                        .map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
                })
            })
            .collect()
    }

    /// (pending, in progress) counts of the whole room.
    pub async fn queue_counts(&self) -> StoreResult<(u64, u64)> {
        let row = sqlx::query(
            "SELECT SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS p,
                    SUM(CASE WHEN state = 'in_progress' THEN 1 ELSE 0 END) AS r
             FROM jobs WHERE state IN ('pending', 'in_progress')",
        )
        .fetch_one(&self.pool)
        .await?;
        let p: Option<i64> = row.try_get("p")?;
        let r: Option<i64> = row.try_get("r")?;
        Ok((p.unwrap_or(0).max(0) as u64, r.unwrap_or(0).max(0) as u64))
    }

    /// The prompts of the jobs among `ids` that exist.
    pub async fn prompts_of(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, Value)>> {
        // The ids as one JSON array, unpacked by SQLite: one statement
        // however many there are.
        let ids = Value::from(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>());
        let rows = sqlx::query(
            "SELECT id, prompt FROM jobs WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(ids.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((parse_id(r)?, parse_json(r, "prompt")?)))
            .collect()
    }

    /// Jobs in progress (after a crash: the ones to re-queue or re-attach).
    pub async fn in_progress_jobs(&self) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(select_jobs!("WHERE state = 'in_progress' ORDER BY seq"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// pending → in_progress on `backend`'s `slot`; false if the job was
    /// no longer pending (cancelled meanwhile).
    pub async fn claim_job(
        &self,
        id: &JobId,
        backend: &str,
        slot: u32,
        now: i64,
    ) -> StoreResult<Option<Claimed>> {
        // One statement: the claim, the job, its owner's name and counts.
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'in_progress', backend = $2, slot = $4, started_at = $3, attempts = attempts + 1
             WHERE id = $1 AND state = 'pending'
             RETURNING ",
            job_columns!(),
            ", (SELECT name FROM users WHERE users.id = jobs.user_id) AS owner_name,
             (SELECT COUNT(*) FROM jobs AS mine WHERE mine.user_id = jobs.user_id AND mine.state = 'pending') AS owner_pending,
             (SELECT COUNT(*) FROM jobs AS mine WHERE mine.user_id = jobs.user_id AND mine.state = 'in_progress') AS owner_running"
        ))
        .bind(id.to_string())
        .bind(backend)
        .bind(now)
        .bind(i64::from(slot))
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let decoded = || -> StoreResult<Claimed> {
            let name: Option<String> = r.try_get("owner_name")?;
            let name = name.ok_or_else(|| StoreError::Corrupt(format!("job {id} has no owner")))?;
            let owner_name = UserName::parse(&name)
                .map_err(|e| StoreError::Corrupt(format!("user name {name:?}: {e}")))?;
            Ok(Claimed {
                job: job_from_row(&r)?,
                owner_name,
                active: owner_counts(&r)?,
            })
        };
        // The claim is made: a row that cannot be read is the job's
        // problem (Corrupt, so the dispatcher puts it back), not the
        // database's.
        decoded().map(Some).map_err(|e| match e {
            StoreError::Corrupt(why) => StoreError::Corrupt(why),
            other => StoreError::Corrupt(format!("claimed job {id}: {other}")),
        })
    }

    /// in_progress → pending, keeping its place (a gateway restart found
    /// it running and nobody knows where it is). Outputs already delivered
    /// are kept, so they are not delivered again.
    pub async fn requeue_job(&self, id: &JobId) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', backend = NULL, started_at = NULL, messages = '[]'
             WHERE id = $1 AND state = 'in_progress'",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// in_progress → pending as if never claimed (its attempt handed back),
    /// when a backend turned it away before starting it.
    pub async fn unclaim_job(&self, id: &JobId, attempt: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', backend = NULL, slot = NULL, started_at = NULL,
                             attempts = attempts - 1
             WHERE id = $1 AND attempts = $2 AND state = 'in_progress'",
        )
        .bind(id.to_string())
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// in_progress → pending at the front of its owner's queue, after
    /// `backend` failed the run holding `attempt`.
    pub async fn requeue_for_retry(
        &self,
        id: &JobId,
        attempt: i64,
        backend: &str,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', backend = NULL, started_at = NULL, messages = '[]',
                             retry = 1, avoid_backend = $3
             WHERE id = $1 AND attempts = $2 AND state = 'in_progress'",
        )
        .bind(id.to_string())
        .bind(attempt)
        .bind(backend)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records progress of a running job (outputs so far), so history shows
    /// them even if the run is cut short. Only the run that holds `attempt`
    /// may write: a run from before a restart can never overwrite a newer one.
    pub async fn record_progress(
        &self,
        id: &JobId,
        attempt: i64,
        outputs: &serde_json::Map<String, Value>,
        meta: &serde_json::Map<String, Value>,
        messages: &[Value],
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET outputs = $3, meta = $4, messages = $5
             WHERE id = $1 AND attempts = $2 AND state = 'in_progress'",
        )
        .bind(id.to_string())
        .bind(attempt)
        .bind(Value::Object(outputs.clone()).to_string())
        .bind(Value::Object(meta.clone()).to_string())
        .bind(json_text(&messages))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// in_progress → a terminal state, by the run holding `attempt`; false
    /// if the job was not in progress under that attempt.
    pub async fn finish_job(
        &self,
        id: &JobId,
        attempt: i64,
        f: &Finish,
    ) -> StoreResult<Option<(u32, u32)>> {
        // The owner's counts come back with the change, for their status.
        let row = sqlx::query(
            "UPDATE jobs SET state = $3, outputs = $4, meta = $5, messages = $6, error = $7, finished_at = $8
             WHERE id = $1 AND attempts = $2 AND state = 'in_progress'
             RETURNING
             (SELECT COUNT(*) FROM jobs AS mine WHERE mine.user_id = jobs.user_id AND mine.state = 'pending') AS owner_pending,
             (SELECT COUNT(*) FROM jobs AS mine WHERE mine.user_id = jobs.user_id AND mine.state = 'in_progress') AS owner_running",
        )
        .bind(id.to_string())
        .bind(attempt)
        .bind(f.state.as_str())
        .bind(Value::Object(f.outputs.clone()).to_string())
        .bind(Value::Object(f.meta.clone()).to_string())
        .bind(json_text(&f.messages))
        .bind(f.error.as_ref().map(Value::to_string))
        .bind(f.finished_at)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| owner_counts(&r)).transpose()
    }

    pub async fn request_cancel(&self, id: &JobId, now: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET cancel_requested_at = $2 WHERE id = $1 AND state = 'in_progress'",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn cancel_requests(&self) -> StoreResult<Vec<JobId>> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE state = 'in_progress' AND cancel_requested_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(parse_id).collect()
    }

    /// pending → cancelled for the owner's jobs among `ids` (all pending ones
    /// when `ids` is `None`); returns the ids that changed.
    pub async fn cancel_pending(
        &self,
        owner: UserId,
        ids: Option<&[JobId]>,
        now: i64,
    ) -> StoreResult<Vec<JobId>> {
        let rows = match ids {
            None => {
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', finished_at = $2
                     WHERE user_id = $1 AND state = 'pending' RETURNING id",
                )
                .bind(owner.0)
                .bind(now)
                .fetch_all(&self.pool)
                .await?
            }
            Some(ids) => {
                let mut rows = Vec::new();
                for id in ids {
                    let row = sqlx::query(
                        "UPDATE jobs SET state = 'cancelled', finished_at = $3
                         WHERE id = $1 AND user_id = $2 AND state = 'pending' RETURNING id",
                    )
                    .bind(id.to_string())
                    .bind(owner.0)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                    rows.extend(row);
                }
                rows
            }
        };
        rows.iter().map(parse_id).collect()
    }

    /// Deletes the owner's finished jobs among `ids` (all of them when
    /// `None`); pending and running jobs are never deleted this way.
    pub async fn delete_history(&self, owner: UserId, ids: Option<&[JobId]>) -> StoreResult<u64> {
        match ids {
            None => {
                let r = sqlx::query(
                    "DELETE FROM jobs WHERE user_id = $1 AND state IN ('completed', 'failed', 'cancelled')",
                )
                .bind(owner.0)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected())
            }
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    let r = sqlx::query(
                        "DELETE FROM jobs WHERE id = $1 AND user_id = $2 AND state IN ('completed', 'failed', 'cancelled')",
                    )
                    .bind(id.to_string())
                    .bind(owner.0)
                    .execute(&self.pool)
                    .await?;
                    n += r.rows_affected();
                }
                Ok(n)
            }
        }
    }

    /// GPU milliseconds and the number of runs of each user's jobs that
    /// finished since `since_ms`, to rebuild fair shares after a restart.
    pub async fn gpu_time_by_user(&self, since_ms: i64) -> StoreResult<Vec<(UserId, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT user_id, SUM(finished_at - started_at) AS ms, COUNT(*) AS n FROM jobs
             WHERE started_at IS NOT NULL AND finished_at IS NOT NULL AND finished_at >= $1
             GROUP BY user_id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserId(r.try_get("user_id")?),
                    r.try_get::<Option<i64>, _>("ms")?.unwrap_or(0),
                    r.try_get::<i64, _>("n")?,
                ))
            })
            .collect()
    }
}

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A count as SQLite's integer (no real count comes near the limit).
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn parse_id(r: &SqliteRow) -> StoreResult<JobId> {
    let id: String = r.try_get("id")?;
    JobId::parse(&id).map_err(|_| StoreError::Corrupt(format!("job id {id:?}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(r: &SqliteRow, col: &str) -> StoreResult<T> {
    let text: String = r.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("jobs.{col}: {e}")))
}

/// The `owner_pending` and `owner_running` columns of a claim or finish.
fn owner_counts(r: &SqliteRow) -> StoreResult<(u32, u32)> {
    let count = |column: &str| -> StoreResult<u32> {
        Ok(u32::try_from(r.try_get::<i64, _>(column)?).unwrap_or(u32::MAX))
    };
    Ok((count("owner_pending")?, count("owner_running")?))
}

fn job_from_row(r: &SqliteRow) -> StoreResult<Job> {
    let state: String = r.try_get("state")?;
    let partial: Option<String> = r.try_get("partial_targets")?;
    let error: Option<String> = r.try_get("error")?;
    Ok(Job {
        id: parse_id(r)?,
        seq: r.try_get("seq")?,
        owner: UserId(r.try_get("user_id")?),
        state: state
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("job state {state:?}")))?,
        number: r.try_get("number")?,
        number_is_float: r.try_get("number_is_float")?,
        prompt: parse_json(r, "prompt")?,
        extra_data: parse_json(r, "extra_data")?,
        outputs_to_execute: parse_json(r, "outputs_to_execute")?,
        partial_targets: partial
            .map(|p| {
                serde_json::from_str(&p)
                    .map_err(|e| StoreError::Corrupt(format!("jobs.partial_targets: {e}")))
            })
            .transpose()?,
        workflow_id: r.try_get("workflow_id")?,
        attempts: r.try_get("attempts")?,
        backend: r.try_get("backend")?,
        slot: r
            .try_get::<Option<i64>, _>("slot")?
            .and_then(|s| u32::try_from(s).ok()),
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        outputs: parse_json(r, "outputs")?,
        meta: parse_json(r, "meta")?,
        messages: parse_json(r, "messages")?,
        error: error
            .map(|e| {
                serde_json::from_str(&e)
                    .map_err(|e| StoreError::Corrupt(format!("jobs.error: {e}")))
            })
            .transpose()?,
    })
}
