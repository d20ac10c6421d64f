//! Reading backups back: `restore` onto an empty data directory (every
//! object's size and hash checked before a file is put in place),
//! `verify` in the store, and `list`.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::manifest::{BackupId, Entry, Manifest};
use super::target::{Target, ToFile};
use super::{BackupError, newest_manifest, read_manifest};

const CONCURRENCY: usize = 4;

/// Where a restore writes.
#[derive(Debug, Clone)]
pub struct Destination {
    pub data_dir: PathBuf,
    /// The SQLite file the configuration names.
    pub database_file: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub id: BackupId,
    pub files: usize,
    pub bytes: u64,
}

/// The backup `at`, or the newest.
pub async fn pick(target: &Target, at: Option<&BackupId>) -> Result<Manifest, BackupError> {
    match at {
        Some(id) => read_manifest(target, id).await,
        None => newest_manifest(target)
            .await?
            .ok_or(BackupError::NoBackups {
                url: target.url().to_string(),
            }),
    }
}

/// Restores the backup `at` (the newest if `None`) into `dest`, which must
/// be empty unless `force` (then the backup's files and database replace
/// what is there; other files stay). Fails, naming each, if any object is
/// missing or does not match its hash; what did match is in place.
pub async fn restore(
    target: &Target,
    at: Option<&BackupId>,
    dest: &Destination,
    force: bool,
) -> Result<RestoreReport, BackupError> {
    if !force {
        refuse_if_not_empty(dest)?;
    }
    let manifest = pick(target, at).await?;
    let free = crate::disk::free_bytes(&dest.data_dir).map_err(BackupError::Disk)?;
    if free < manifest.total_bytes() {
        return Err(BackupError::Internal(format!(
            "backup {} restores to {}, but {} has only {} free",
            manifest.id,
            crate::disk::Bytes(manifest.total_bytes()),
            dest.data_dir.display(),
            crate::disk::Bytes(free)
        )));
    }
    // Every file to its end, even after an error: each cleans up its own
    // partial download, so nothing half-written is left behind.
    let results: Vec<Result<Option<String>, BackupError>> =
        futures_util::stream::iter(manifest.files.iter())
            .map(|entry| {
                let path = dest.data_dir.join(&entry.path);
                async move { restore_entry(target, entry, &path).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut problems = Vec::new();
    for result in results {
        if let Some(problem) = result? {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        // The database last: a data directory with a database is one a
        // server would start on.
        for suffix in ["-wal", "-shm"] {
            let mut side = dest.database_file.as_os_str().to_owned();
            side.push(suffix);
            remove_if_there(Path::new(&side))?;
        }
        if let Some(problem) =
            restore_entry(target, &manifest.database, &dest.database_file).await?
        {
            problems.push(problem);
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(BackupError::Damaged {
            backup: manifest.id.clone(),
            problems,
        });
    }
    Ok(RestoreReport {
        id: manifest.id.clone(),
        files: manifest.files.len(),
        bytes: manifest.total_bytes(),
    })
}

fn refuse_if_not_empty(dest: &Destination) -> Result<(), BackupError> {
    let has_anything = match std::fs::read_dir(&dest.data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(BackupError::Local {
                path: dest.data_dir.display().to_string(),
                source,
            });
        }
    };
    if has_anything {
        return Err(BackupError::NotEmpty(dest.data_dir.display().to_string()));
    }
    if dest.database_file.exists() {
        return Err(BackupError::NotEmpty(
            dest.database_file.display().to_string(),
        ));
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BackupError::Local {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Downloads one entry beside `path`, checks it, and renames it into
/// place. `Some(problem)` when the store's copy is missing or damaged.
async fn restore_entry(
    target: &Target,
    entry: &Entry,
    path: &Path,
) -> Result<Option<String>, BackupError> {
    let local = |source| BackupError::Local {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(local)?;
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".restoring");
    let partial = PathBuf::from(partial);
    let mut file = tokio::fs::File::create(&partial).await.map_err(local)?;
    let key = entry.sha256.object_key();
    let read = target
        .read_through(
            &key,
            ToFile {
                file: &mut file,
                path: &partial,
            },
        )
        .await;
    let back = match read {
        Ok(back) => back,
        Err(e) if Target::is_not_found(&e) => {
            drop(file);
            remove_if_there(&partial)?;
            return Ok(Some(format!("{}: {key} is missing", entry.path)));
        }
        Err(e) => {
            drop(file);
            remove_if_there(&partial)?;
            return Err(e);
        }
    };
    if back.sha256 != entry.sha256 || back.size != entry.size {
        drop(file);
        remove_if_there(&partial)?;
        return Ok(Some(format!(
            "{}: {key} reads back as {} bytes with SHA-256 {}, not {} bytes with its name",
            entry.path,
            back.size,
            back.sha256.as_str(),
            entry.size
        )));
    }
    file.sync_all().await.map_err(local)?;
    let file = file.into_std().await;
    let modified =
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(entry.modified_ns.max(0) as u64);
    file.set_modified(modified).map_err(local)?;
    drop(file);
    tokio::fs::rename(&partial, path).await.map_err(local)?;
    Ok(None)
}

/// What `verify` found: everything fine, or the problems.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub id: BackupId,
    pub objects: usize,
    pub read_in_full: usize,
}

/// Checks the backup `at` (the newest if `None`) in the store: every
/// object there with its size, and `percent` of them read back in full.
pub async fn verify(
    target: &Target,
    at: Option<&BackupId>,
    percent: u8,
) -> Result<VerifyReport, BackupError> {
    let manifest = pick(target, at).await?;
    let (read_in_full, by_size) = super::take::verify_objects(
        target,
        &manifest,
        percent,
        &std::collections::HashSet::new(),
    )
    .await?;
    Ok(VerifyReport {
        id: manifest.id,
        objects: read_in_full + by_size,
        read_in_full,
    })
}

/// One backup as `backup list` shows it; `problem` when its manifest
/// cannot be read (such a backup cannot be restored).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub id: BackupId,
    pub files: usize,
    pub bytes: u64,
    pub database_bytes: u64,
    pub problem: Option<String>,
}

/// Every backup in the store, oldest first.
pub async fn list(target: &Target) -> Result<Vec<Listed>, BackupError> {
    let mut ids: Vec<BackupId> = target
        .list(super::manifest::MANIFESTS)
        .await?
        .iter()
        .filter_map(|(key, _)| BackupId::from_manifest_key(key))
        .collect();
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(match read_manifest(target, &id).await {
            Ok(m) => Listed {
                files: m.files.len(),
                bytes: m.total_bytes(),
                database_bytes: m.database.size,
                id,
                problem: None,
            },
            Err(e) => Listed {
                id,
                files: 0,
                bytes: 0,
                database_bytes: 0,
                problem: Some(e.to_string()),
            },
        });
    }
    Ok(out)
}
