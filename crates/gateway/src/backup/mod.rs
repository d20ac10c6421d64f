//! Backups of what a workshop produces (the database: accounts, job
//! history, the room; and every participant's workflows, uploads and
//! outputs, and the wall) to S3-compatible storage or a local folder,
//! restored onto a fresh machine, and never reported as done unless every
//! object was written and read back.
//!
//! - [`manifest`]: the format in the store (content-addressed objects,
//!   one manifest per backup, written last).
//! - [`target`]: the store (`object_store`).
//! - [`take`]: taking a backup; [`retention`]: which to keep, and
//!   collecting what none needs; [`restore`]: restore, verify, list.
//! - [`schedule`]: backups on a schedule inside `serve`, and their status
//!   for the instructor and `/metrics`.
//!
//! Every failure is an error with its reason (the store's answer, the
//! file, the object that did not match): the CLI exits non-zero and the
//! server shows it on the dashboard.

pub mod manifest;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod take;
pub mod target;

use std::path::PathBuf;

pub use manifest::{BackupId, Manifest};
pub use restore::{Destination, Listed, RestoreReport, VerifyReport};
pub use retention::Retention;
pub use schedule::{BackupStatus, Backups};
pub use take::{BackupReport, Options};
pub use target::Target;

use crate::config::Config;
use crate::disk::{DiskError, DiskGuard};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup destination {url}: {reason}")]
    Url { url: String, reason: String },
    /// The store's error, with its causes in the message (it is not a
    /// `source`, so reporters do not print them twice).
    #[error("{url}: {doing}: {}", chain(cause.as_ref()))]
    Remote {
        url: String,
        doing: String,
        cause: Box<object_store::Error>,
    },
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    #[error("the database snapshot failed: {0}")]
    Database(String),
    #[error("backups need the SQLite database file; {0} is not one")]
    NotSqlite(String),
    #[error(transparent)]
    Disk(DiskError),
    #[error("backup {backup} is damaged: {}", problems.join("; "))]
    Damaged {
        backup: BackupId,
        problems: Vec<String>,
    },
    #[error("backup {id}'s manifest cannot be read: {reason}")]
    Manifest { id: BackupId, reason: String },
    #[error("no backup in {url}")]
    NoBackups { url: String },
    #[error("no backup {id} in {url}")]
    NoSuchBackup { id: BackupId, url: String },
    #[error(
        "{0} is not empty: restore onto an empty data directory (or pass --force to write over it)"
    )]
    NotEmpty(String),
    #[error(
        "backup {id} was written and verified, but applying the retention rules failed: {reason}"
    )]
    Retention { id: BackupId, reason: String },
    #[error("no backup destination: pass --to URL or set [backup] to in the configuration")]
    NoDestination,
    #[error("{0}")]
    Internal(String),
}

/// An error with the causes under it (`error sending request: … timed
/// out`): the top line of a network error rarely says what happened.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = e.source();
    }
    text
}

/// What a backup is taken of.
#[derive(Clone)]
pub struct Source {
    pub data_dir: PathBuf,
    /// The SQLite file behind `store` (its size sizes the staging).
    pub database_file: PathBuf,
    pub store: Store,
    pub disk: DiskGuard,
}

/// The SQLite file a configuration's database URL names.
pub fn database_file(config: &Config) -> Result<PathBuf, BackupError> {
    let url = config.database_url();
    let url = url.expose();
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|p| !p.is_empty() && !p.starts_with(":memory:"))
        .ok_or_else(|| BackupError::NotSqlite(redact_url(url)))?;
    // Connection options after `?` are not part of the path.
    Ok(PathBuf::from(path.split('?').next().unwrap_or(path)))
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("{}://…@{host}", url.split(':').next().unwrap_or("")),
        None => url.to_string(),
    }
}

impl Options {
    pub fn from_config(config: &crate::config::BackupConfig) -> Self {
        Self {
            verify_percent: config.verify_percent,
            retention: Retention {
                keep_last: config.keep_last,
                keep_daily: config.keep_daily,
                keep_weekly: config.keep_weekly,
            },
            collect_after: std::time::Duration::from_secs(config.collect_after_seconds),
        }
    }
}

/// Reads and checks one backup's manifest.
pub async fn read_manifest(target: &Target, id: &BackupId) -> Result<Manifest, BackupError> {
    let bytes = match target.get(&id.manifest_key()).await {
        Ok(bytes) => bytes,
        Err(e) if Target::is_not_found(&e) => {
            return Err(BackupError::NoSuchBackup {
                id: id.clone(),
                url: target.url().to_string(),
            });
        }
        Err(e) => return Err(e),
    };
    let manifest = Manifest::parse(&bytes).map_err(|reason| BackupError::Manifest {
        id: id.clone(),
        reason,
    })?;
    if &manifest.id != id {
        return Err(BackupError::Manifest {
            id: id.clone(),
            reason: format!("it names itself {}", manifest.id),
        });
    }
    Ok(manifest)
}

/// The newest backup's manifest, if there is a backup.
pub async fn newest_manifest(target: &Target) -> Result<Option<Manifest>, BackupError> {
    let newest = target
        .list(manifest::MANIFESTS)
        .await?
        .iter()
        .filter_map(|(key, _)| BackupId::from_manifest_key(key))
        .max();
    match newest {
        Some(id) => read_manifest(target, &id).await.map(Some),
        None => Ok(None),
    }
}
