//! Backups on a schedule inside `serve` (`[backup] to`, `every`), and what
//! the instructor's console and `/metrics` show of them: the last success
//! (when, size, time taken) and the last failure with its reason. Both are
//! kept in the database, so a restart does not forget a failure.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::take::{self, BackupReport, Options};
use super::{BackupError, Source, Target};
use crate::clock::now_ms;

const LAST_SUCCESS: &str = "backup.last_success";
const LAST_FAILURE: &str = "backup.last_failure";

/// A failed backup is tried again after this (or after the period, if
/// shorter).
const RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Success {
    pub id: String,
    pub at_ms: i64,
    pub files: usize,
    pub total_bytes: u64,
    pub uploaded_bytes: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub at_ms: i64,
    pub reason: String,
}

/// What the console and `/metrics` show.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackupStatus {
    /// The destination, if backups are scheduled.
    pub to: Option<String>,
    pub every_seconds: u64,
    pub running: bool,
    pub last_success: Option<Success>,
    pub last_failure: Option<Failure>,
    /// Failures since the server started.
    pub failures: u64,
}

impl BackupStatus {
    /// The last attempt failed (a failure newer than any success).
    pub fn failing(&self) -> bool {
        match (&self.last_failure, &self.last_success) {
            (Some(f), Some(s)) => f.at_ms > s.at_ms,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// The server's backups.
pub struct Backups {
    source: Source,
    target: Option<Target>,
    options: Options,
    every: Duration,
    status: Mutex<BackupStatus>,
    /// One backup at a time.
    running: tokio::sync::Mutex<()>,
    /// An instructor's "back up now", for the schedule's loop.
    asked: tokio::sync::Notify,
    /// Bumped whenever the status changes.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Backups {
    /// `target`: where scheduled backups go (`None`: not scheduled).
    /// Reads the last success and failure from the database.
    pub async fn open(
        source: Source,
        target: Option<Target>,
        options: Options,
        every: Duration,
    ) -> Result<Self, BackupError> {
        let read = |key: &'static str| {
            let store = source.store.clone();
            async move {
                store
                    .room_value(key)
                    .await
                    .map_err(|e| BackupError::Database(e.to_string()))
            }
        };
        let last_success = read(LAST_SUCCESS)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok());
        let last_failure = read(LAST_FAILURE)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok());
        let status = BackupStatus {
            to: target.as_ref().map(|t| t.url().to_string()),
            every_seconds: every.as_secs(),
            running: false,
            last_success,
            last_failure,
            failures: 0,
        };
        Ok(Self {
            source,
            target,
            options,
            every,
            status: Mutex::new(status),
            running: tokio::sync::Mutex::new(()),
            asked: tokio::sync::Notify::new(),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn status(&self) -> BackupStatus {
        self.status.lock().expect("not poisoned").clone()
    }

    pub fn scheduled(&self) -> bool {
        self.target.is_some()
    }

    /// Asks the schedule's loop for a backup now (after the one running,
    /// if one is).
    pub fn ask_now(&self) {
        self.asked.notify_one();
    }

    /// Resolves when someone asked for a backup now.
    pub async fn asked(&self) {
        self.asked.notified().await;
    }

    /// Changes whenever a backup starts or ends.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// How long until the next backup is due: a period after the last
    /// success, sooner after a failure, and never sooner than `floor`
    /// (the server settles first after a start).
    pub fn due_in(&self, floor: Duration) -> Duration {
        let status = self.status();
        let now = now_ms();
        let since = |at_ms: i64| Duration::from_millis(now.saturating_sub(at_ms).max(0) as u64);
        let mut wait = match &status.last_success {
            Some(s) => self.every.saturating_sub(since(s.at_ms)),
            None => Duration::ZERO,
        };
        if status.failing()
            && let Some(f) = &status.last_failure
        {
            wait = wait.max(RETRY_AFTER.min(self.every).saturating_sub(since(f.at_ms)));
        }
        wait.max(floor)
    }

    /// Takes one backup to the configured destination now, and records
    /// how it went.
    pub async fn run_once(&self) -> Result<BackupReport, BackupError> {
        let target = self.target.as_ref().ok_or(BackupError::NoDestination)?;
        let _one = self.running.lock().await;
        self.status.lock().expect("not poisoned").running = true;
        self.changed();
        let outcome = take::take(&self.source, target, &self.options).await;
        let at_ms = now_ms();
        match &outcome {
            Ok(report) => {
                let success = Success {
                    id: report.id.to_string(),
                    at_ms,
                    files: report.files,
                    total_bytes: report.total_bytes,
                    uploaded_bytes: report.uploaded_bytes,
                    duration_ms: report.duration.as_millis() as u64,
                };
                tracing::info!(
                    backup = %report.id,
                    files = report.files,
                    bytes = report.total_bytes,
                    uploaded = report.uploaded_bytes,
                    ms = success.duration_ms,
                    "backup written and verified"
                );
                self.remember(LAST_SUCCESS, &success).await;
                let mut status = self.status.lock().expect("not poisoned");
                status.last_success = Some(success);
                status.running = false;
            }
            Err(e) => {
                let failure = Failure {
                    at_ms,
                    reason: e.to_string(),
                };
                tracing::error!(error = %e, "backup failed");
                self.remember(LAST_FAILURE, &failure).await;
                let mut status = self.status.lock().expect("not poisoned");
                status.last_failure = Some(failure);
                status.failures += 1;
                status.running = false;
            }
        }
        self.changed();
        outcome
    }

    async fn remember<T: Serialize>(&self, key: &str, value: &T) {
        let json = serde_json::to_string(value).expect("plain data");
        if let Err(e) = self.source.store.set_room_value(key, &json).await {
            // The status in memory still shows it; only a restart would
            // forget it.
            tracing::error!(error = %e, key, "cannot record the backup's outcome in the database");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Backups` over an in-memory database, with the given history.
    async fn with_history(success_ago: Option<Duration>, failure_ago: Option<Duration>) -> Backups {
        let store = crate::store::Store::connect("sqlite::memory:")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = Source {
            data_dir: dir.path().to_path_buf(),
            database_file: dir.path().join("comfyume.db"),
            store,
            disk: crate::disk::DiskGuard::new(dir.path(), 0),
        };
        let options = Options::from_config(&crate::config::BackupConfig::default());
        let b = Backups::open(source, None, options, Duration::from_secs(3600))
            .await
            .unwrap();
        let at = |ago: Duration| now_ms() - ago.as_millis() as i64;
        {
            let mut status = b.status.lock().unwrap();
            status.last_success = success_ago.map(|ago| Success {
                id: "x".into(),
                at_ms: at(ago),
                files: 0,
                total_bytes: 0,
                uploaded_bytes: 0,
                duration_ms: 0,
            });
            status.last_failure = failure_ago.map(|ago| Failure {
                at_ms: at(ago),
                reason: "r".into(),
            });
        }
        b
    }

    #[tokio::test]
    async fn the_next_backup_is_a_period_after_a_success_and_sooner_after_a_failure() {
        let minute = Duration::from_secs(60);
        // Never backed up: as soon as the server has settled.
        assert_eq!(with_history(None, None).await.due_in(minute), minute);
        // Just backed up: about an hour from now.
        let wait = with_history(Some(Duration::ZERO), None)
            .await
            .due_in(minute);
        assert!(wait > 50 * minute && wait <= 60 * minute, "{wait:?}");
        // Overdue: right after the floor.
        let wait = with_history(Some(120 * minute), None).await.due_in(minute);
        assert_eq!(wait, minute);
        // Failed just now, last success long ago: in about ten minutes.
        let wait = with_history(Some(120 * minute), Some(Duration::ZERO))
            .await
            .due_in(minute);
        assert!(wait > 5 * minute && wait <= 10 * minute, "{wait:?}");
    }

    #[test]
    fn a_failure_newer_than_the_last_success_is_failing() {
        let ok = Success {
            id: "x".into(),
            at_ms: 10,
            files: 0,
            total_bytes: 0,
            uploaded_bytes: 0,
            duration_ms: 0,
        };
        let failed = |at_ms| Failure {
            at_ms,
            reason: "r".into(),
        };
        let mut s = BackupStatus::default();
        assert!(!s.failing());
        s.last_failure = Some(failed(5));
        assert!(s.failing());
        s.last_success = Some(ok);
        assert!(!s.failing());
        s.last_failure = Some(failed(11));
        assert!(s.failing());
    }
}
