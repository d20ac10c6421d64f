//! Taking a backup: a consistent snapshot of the database, every
//! participant's file uploaded once by content, every object read back
//! and checked, the manifest written last and checked too, then the
//! retention rules applied.
//!
//! Consistency while the room runs: the database is snapshotted first
//! (`VACUUM INTO` reads one transaction's view), the files are listed
//! after. A job's output is on disk before its row says so, so every
//! output a snapshotted row names is among the files listed later. Files
//! are replaced by rename, never rewritten in place, so a file opened here
//! reads as one version from start to end.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt};
use std::os::unix::fs::MetadataExt;

use sha2::Digest;
use tracing::Instrument;

use super::manifest::{BackupId, Entry, FORMAT, LOCKS, Manifest, OBJECTS, Sha256};
use super::retention::{self, Retention};
use super::target::{Discard, PART_BYTES, Target};
use super::{BackupError, Source, newest_manifest};

/// Uploads, reads and checks at once.
const CONCURRENCY: usize = 4;

/// How a backup is taken.
#[derive(Debug, Clone)]
pub struct Options {
    /// The percentage of objects read back in full (the rest are checked
    /// by size).
    pub verify_percent: u8,
    pub retention: Retention,
    /// Unreferenced objects younger than this are left for a later run.
    pub collect_after: Duration,
}

/// What a backup did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub id: BackupId,
    /// Files in the backup (the database not counted).
    pub files: usize,
    /// Bytes the backup restores to.
    pub total_bytes: u64,
    /// Objects and bytes this run uploaded (the rest were there already).
    pub uploaded_objects: usize,
    pub uploaded_bytes: u64,
    /// Objects read back in full, and checked by size only.
    pub verified_in_full: usize,
    pub verified_by_size: usize,
    /// Backups the retention rules removed, and objects collected.
    pub pruned: Vec<BackupId>,
    pub collected_objects: usize,
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A file of the data directory to back up.
#[derive(Debug, Clone)]
struct LocalFile {
    rel: String,
    abs: PathBuf,
    size: u64,
    modified_ns: i64,
    inode: u64,
    changed_ns: i64,
}

/// What says a file is the one an earlier backup read: its path, size,
/// modification time, inode and change time.
type Stamp = (String, u64, i64, u64, i64);

impl LocalFile {
    fn stamp(&self) -> Stamp {
        (
            self.rel.clone(),
            self.size,
            self.modified_ns,
            self.inode,
            self.changed_ns,
        )
    }
}

/// Takes one backup of `source` into `target`. While it runs, a lock
/// object (`locks/<id>`) tells every other backup's collector to delete
/// nothing: this one may be about to refer to any object already there.
pub async fn take(
    source: &Source,
    target: &Target,
    options: &Options,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let created_at = Utc::now();
    let id = BackupId::new(created_at);
    let estimate = database_size(&source.database_file);
    source.disk.check(estimate).map_err(BackupError::Disk)?;
    let lock = format!("{LOCKS}/{id}");
    target
        .put(
            &lock,
            Bytes::from(format!("{{\"started\": \"{created_at}\"}}")),
        )
        .await?;
    let taken = take_locked(source, target, options, &id).await;
    if let Err(e) = target.delete(&lock).await {
        // It ages out after `collect_after`; meanwhile nothing is
        // collected, which costs space, never a backup.
        tracing::warn!(error = %e, lock, "cannot remove the backup's lock");
    }
    let (manifest, uploaded) = taken?;
    let (pruned, collected_objects) = retention::apply(
        target,
        &options.retention,
        options.collect_after,
        Utc::now(),
        Some(&id),
    )
    .instrument(tracing::info_span!("backup.retention"))
    .await
    .map_err(|e| BackupError::Retention {
        id: id.clone(),
        reason: e.to_string(),
    })?;
    Ok(BackupReport {
        id,
        files: manifest.files.len(),
        total_bytes: manifest.total_bytes(),
        uploaded_objects: uploaded.objects,
        uploaded_bytes: uploaded.bytes,
        verified_in_full: uploaded.verified_in_full,
        verified_by_size: uploaded.verified_by_size,
        pruned,
        collected_objects,
        duration: started.elapsed(),
    })
}

/// What [`take_locked`] uploaded and checked.
struct Uploaded {
    objects: usize,
    bytes: u64,
    verified_in_full: usize,
    verified_by_size: usize,
}

/// The backup itself, under its lock: snapshot, files, verification, and
/// the manifest, written and checked.
async fn take_locked(
    source: &Source,
    target: &Target,
    options: &Options,
    id: &BackupId,
) -> Result<(Manifest, Uploaded), BackupError> {
    let staging = Staging::fresh(&source.data_dir, id)?;
    let snapshot = staging.dir.join("database.sqlite");
    source
        .store
        .snapshot_into(&snapshot)
        .instrument(tracing::info_span!("backup.snapshot"))
        .await
        .map_err(|e| BackupError::Database(e.to_string()))?;

    let data_dir = source.data_dir.clone();
    let files = tokio::task::spawn_blocking(move || list_files(&data_dir))
        .instrument(tracing::info_span!("backup.list_files"))
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))??;

    let present: HashMap<Sha256, u64> = target
        .list(OBJECTS)
        .await?
        .into_iter()
        .filter_map(|(key, size)| Sha256::from_object_key(&key).map(|h| (h, size)))
        .collect();
    let known = known_hashes(target).await;
    let state = UploadState {
        present: Mutex::new(present),
        uploaded: Mutex::new(HashSet::new()),
    };

    let mut entries: Vec<Entry> = futures_util::stream::iter(files)
        .map(|file| store_file(target, file, &known, &state))
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|entry| async move { Ok(entry) })
        .try_collect()
        .instrument(tracing::info_span!("backup.upload_files"))
        .await?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    let database = store_file(
        target,
        local_file(&snapshot, "comfyume.db".into())?,
        &HashMap::new(),
        &state,
    )
    .instrument(tracing::info_span!("backup.upload_database"))
    .await?
    .ok_or_else(|| BackupError::Internal("the database snapshot vanished".into()))?;
    drop(staging);

    let manifest = Manifest {
        format: FORMAT,
        id: id.clone(),
        created_at: id.taken_at(),
        comfyume: env!("CARGO_PKG_VERSION").to_string(),
        database,
        files: entries,
    };
    let uploaded = state.uploaded.into_inner().expect("not poisoned");
    let (verified_in_full, verified_by_size) =
        verify_objects(target, &manifest, options.verify_percent, &uploaded)
            .instrument(tracing::info_span!("backup.verify"))
            .await?;
    write_manifest(target, &manifest).await?;
    // Still all there once the manifest is: a collector that looked
    // before this backup's lock was written may have deleted an object
    // it reuses. Such a backup is removed, and fails.
    if let Err(e) = verify_objects(target, &manifest, 0, &HashSet::new()).await {
        target.delete(&manifest.id.manifest_key()).await?;
        return Err(e);
    }
    let uploaded = Uploaded {
        objects: uploaded.len(),
        bytes: manifest
            .entries()
            .filter(|e| uploaded.contains(&e.sha256))
            .map(|e| (e.sha256.clone(), e.size))
            .collect::<HashMap<_, _>>()
            .values()
            .sum(),
        verified_in_full,
        verified_by_size,
    };
    Ok((manifest, uploaded))
}

/// The backup's scratch folder in the data directory (the database
/// snapshot waits there while it uploads), one per run so a backup from
/// the CLI and the server's own never share one; removed when dropped.
/// Folders a killed run left are removed after a day.
struct Staging {
    dir: PathBuf,
}

const STAGING: &str = ".backup-staging";
const STALE_STAGING: Duration = Duration::from_secs(24 * 3600);

impl Staging {
    fn fresh(data_dir: &Path, id: &BackupId) -> Result<Self, BackupError> {
        let root = data_dir.join(STAGING);
        for old in read_dir(&root)? {
            let stale = old
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_STAGING);
            if stale {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let dir = root.join(id.as_str());
        std::fs::create_dir_all(&dir).map_err(|source| BackupError::Local {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the backup's staging folder");
        }
    }
}

/// About what a snapshot of the database takes (the file and its
/// write-ahead log).
fn database_size(file: &Path) -> u64 {
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    [file.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Every file a backup holds: participants' workflows, settings, uploads
/// and outputs (not their previews in `temp/`, nor half-written files),
/// and the wall's shared copies.
fn list_files(data_dir: &Path) -> Result<Vec<LocalFile>, BackupError> {
    let mut out = Vec::new();
    let users = data_dir.join("users");
    for user in read_dir(&users)? {
        if !user.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let name = user.file_name().to_string_lossy().into_owned();
        for part in read_dir(&user.path())? {
            let part_name = part.file_name().to_string_lossy().into_owned();
            if matches!(part_name.as_str(), "temp" | ".staging") {
                continue;
            }
            walk(&part.path(), &format!("users/{name}/{part_name}"), &mut out)?;
        }
    }
    let wall = data_dir.join("wall");
    for item in read_dir(&wall)? {
        let item_name = item.file_name().to_string_lossy().into_owned();
        if item_name.starts_with(".incoming-") {
            continue;
        }
        walk(&item.path(), &format!("wall/{item_name}"), &mut out)?;
    }
    Ok(out)
}

/// The entries of a directory; none when it does not exist (yet).
fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, BackupError> {
    let local = |source| BackupError::Local {
        path: dir.display().to_string(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<_, _>>().map_err(local),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(local(e)),
    }
}

fn walk(path: &Path, rel: &str, out: &mut Vec<LocalFile>) -> Result<(), BackupError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Deleted since its folder was read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BackupError::Local {
                path: path.display().to_string(),
                source,
            });
        }
    };
    if meta.is_dir() {
        for entry in read_dir(path)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            walk(&entry.path(), &format!("{rel}/{name}"), out)?;
        }
    } else if meta.is_file() {
        out.push(LocalFile {
            rel: rel.to_string(),
            abs: path.to_path_buf(),
            size: meta.len(),
            modified_ns: modified_ns(&meta),
            inode: meta.ino(),
            changed_ns: changed_ns(&meta),
        });
    }
    // The gateway never makes links or devices; anything else is skipped.
    Ok(())
}

fn local_file(path: &Path, rel: String) -> Result<LocalFile, BackupError> {
    let meta = std::fs::metadata(path).map_err(|source| BackupError::Local {
        path: path.display().to_string(),
        source,
    })?;
    Ok(LocalFile {
        rel,
        abs: path.to_path_buf(),
        size: meta.len(),
        modified_ns: modified_ns(&meta),
        inode: meta.ino(),
        changed_ns: changed_ns(&meta),
    })
}

fn changed_ns(meta: &std::fs::Metadata) -> i64 {
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

fn modified_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Hashes the newest backup already knows, by [`Stamp`]: an unchanged
/// file is not read again. Without a readable newest manifest every file
/// is read, which costs time, never correctness.
async fn known_hashes(target: &Target) -> HashMap<Stamp, Sha256> {
    match newest_manifest(target).await {
        Ok(Some(manifest)) => manifest
            .files
            .into_iter()
            .map(|e| {
                (
                    (e.path, e.size, e.modified_ns, e.inode, e.changed_ns),
                    e.sha256,
                )
            })
            .collect(),
        Ok(None) => HashMap::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the newest backup's manifest: every file is read and hashed again");
            HashMap::new()
        }
    }
}

struct UploadState {
    /// Objects in the store, by hash, with their sizes.
    present: Mutex<HashMap<Sha256, u64>>,
    /// The objects this run uploaded.
    uploaded: Mutex<HashSet<Sha256>>,
}

impl UploadState {
    fn has(&self, hash: &Sha256, size: u64) -> bool {
        self.present.lock().expect("not poisoned").get(hash) == Some(&size)
    }

    fn stored(&self, hash: Sha256, size: u64) {
        self.present
            .lock()
            .expect("not poisoned")
            .insert(hash.clone(), size);
        self.uploaded.lock().expect("not poisoned").insert(hash);
    }
}

/// Puts one file's content in the store unless it is there already, and
/// returns its entry; `None` when the file was deleted meanwhile.
async fn store_file(
    target: &Target,
    file: LocalFile,
    known: &HashMap<Stamp, Sha256>,
    state: &UploadState,
) -> Result<Option<Entry>, BackupError> {
    let entry = |size, sha256| Entry {
        path: file.rel.clone(),
        size,
        sha256,
        modified_ns: file.modified_ns,
        inode: file.inode,
        changed_ns: file.changed_ns,
    };
    if let Some(hash) = known.get(&file.stamp())
        && state.has(hash, file.size)
    {
        return Ok(Some(entry(file.size, hash.clone())));
    }
    let local = |source| BackupError::Local {
        path: file.abs.display().to_string(),
        source,
    };
    let mut opened = match tokio::fs::File::open(&file.abs).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local(e)),
    };
    if file.size <= PART_BYTES as u64 {
        use tokio::io::AsyncReadExt;
        let mut content = Vec::with_capacity(file.size as usize);
        opened.read_to_end(&mut content).await.map_err(local)?;
        // Hashing megabytes is CPU work: off the runtime's threads.
        let (content, hash) = tokio::task::spawn_blocking(move || {
            let hash = Sha256::of_digest(&sha2::Sha256::digest(&content));
            (content, hash)
        })
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?;
        let size = content.len() as u64;
        if !state.has(&hash, size) {
            target.put(&hash.object_key(), Bytes::from(content)).await?;
            state.stored(hash.clone(), size);
        }
        return Ok(Some(entry(size, hash)));
    }
    // Large: hash first (on a blocking thread), then send only if the
    // store lacks it.
    let std_file = opened.into_std().await;
    let (std_file, hashed) = tokio::task::spawn_blocking(move || {
        let mut f = std_file;
        let hashed = hash_file(&mut f);
        (f, hashed)
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))?;
    let (size, hash) = hashed.map_err(local)?;
    let mut opened = tokio::fs::File::from_std(std_file);
    if !state.has(&hash, size) {
        use tokio::io::AsyncSeekExt;
        opened
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(local)?;
        let sent = target.put_file(&hash.object_key(), &mut opened).await?;
        if sent.sha256 != hash || sent.size != size {
            // Content under a key that is not its hash: never leave it.
            target.delete(&hash.object_key()).await?;
            return Err(BackupError::Internal(format!(
                "{} changed while it was being backed up",
                file.rel
            )));
        }
        state.stored(hash.clone(), size);
    }
    Ok(Some(entry(size, hash)))
}

fn hash_file(file: &mut std::fs::File) -> std::io::Result<(u64, Sha256)> {
    use std::io::Read;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, Sha256::of_digest(&hasher.finalize())))
}

/// Checks that every object `manifest` names is in the store with its
/// size, and reads back in full, checking their hashes, every object in
/// `always` (what this run uploaded) and `percent` of the others.
/// Returns how many were read in full and how many checked by size.
pub async fn verify_objects(
    target: &Target,
    manifest: &Manifest,
    percent: u8,
    always: &HashSet<Sha256>,
) -> Result<(usize, usize), BackupError> {
    let mut wanted: Vec<(Sha256, u64)> = Vec::new();
    let mut seen = HashSet::new();
    for e in manifest.entries() {
        if seen.insert(e.sha256.clone()) {
            wanted.push((e.sha256.clone(), e.size));
        }
    }
    let listed: HashMap<String, u64> = target.list(OBJECTS).await?.into_iter().collect();
    let mut problems = Vec::new();
    for (hash, size) in &wanted {
        match listed.get(&hash.object_key()) {
            None => problems.push(format!("{} is missing", hash.object_key())),
            Some(s) if s != size => problems.push(format!(
                "{} holds {s} bytes, {size} expected",
                hash.object_key()
            )),
            Some(_) => {}
        }
    }
    let (mut full, others): (Vec<_>, Vec<_>) = wanted
        .iter()
        .cloned()
        .partition(|(h, _)| always.contains(h));
    if percent > 0 {
        full.extend(sample(&others, percent));
    }
    let read: Vec<Option<String>> = futures_util::stream::iter(full.iter().cloned())
        .map(|(hash, size)| async move {
            match target.read_through(&hash.object_key(), Discard).await {
                Ok(back) if back.sha256 == hash && back.size == size => Ok(None),
                Ok(back) => Ok(Some(format!(
                    "{} reads back as {} bytes with SHA-256 {}, not its name",
                    hash.object_key(),
                    back.size,
                    back.sha256.as_str()
                ))),
                Err(e) if Target::is_not_found(&e) => {
                    Ok(Some(format!("{} is missing", hash.object_key())))
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    problems.extend(read.into_iter().flatten());
    if !problems.is_empty() {
        problems.sort();
        problems.dedup();
        return Err(BackupError::Damaged {
            backup: manifest.id.clone(),
            problems,
        });
    }
    Ok((full.len(), wanted.len() - full.len()))
}

/// `percent` of `objects`, at least one, chosen at random (all at 100).
fn sample(objects: &[(Sha256, u64)], percent: u8) -> Vec<(Sha256, u64)> {
    if percent >= 100 || objects.is_empty() {
        return objects.to_vec();
    }
    let count = ((objects.len() * usize::from(percent)).div_ceil(100)).max(1);
    let mut picked: Vec<(u64, &(Sha256, u64))> = objects
        .iter()
        .map(|o| {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).expect("the OS random source");
            (u64::from_le_bytes(r), o)
        })
        .collect();
    picked.sort_by_key(|(r, _)| *r);
    picked
        .into_iter()
        .take(count)
        .map(|(_, o)| o.clone())
        .collect()
}

/// Writes the manifest and reads it back: only then does the backup
/// exist.
async fn write_manifest(target: &Target, manifest: &Manifest) -> Result<(), BackupError> {
    let bytes = Bytes::from(
        serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Internal(e.to_string()))?,
    );
    let key = manifest.id.manifest_key();
    target.put(&key, bytes.clone()).await?;
    let back = target.get(&key).await?;
    if back != bytes || Manifest::parse(&back).is_err() {
        return Err(BackupError::Damaged {
            backup: manifest.id.clone(),
            problems: vec![format!("{key} reads back different from what was written")],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_takes_its_share_and_at_least_one() {
        let objects: Vec<(Sha256, u64)> = (0..200u64)
            .map(|i| (Sha256::of_digest(&sha2::Sha256::digest(i.to_le_bytes())), i))
            .collect();
        assert_eq!(sample(&objects, 100).len(), 200);
        assert_eq!(sample(&objects, 10).len(), 20);
        assert_eq!(sample(&objects[..3], 1).len(), 1);
        let picked = sample(&objects, 50);
        let distinct: HashSet<_> = picked.iter().map(|(h, _)| h.clone()).collect();
        assert_eq!(distinct.len(), 100);
    }

    #[test]
    fn previews_and_half_written_files_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (path, body) in [
            ("users/alice/userdata/workflows/a.json", "{}"),
            ("users/alice/input/cat.png", "png"),
            ("users/alice/output/sub/out.png", "out"),
            ("users/alice/temp/preview.png", "tmp"),
            ("users/alice/.staging/half", "half"),
            ("wall/3.png", "wall"),
            ("wall/.incoming-x", "half"),
            ("comfyume.db", "db"),
            ("catalogue.json", "{}"),
        ] {
            let p = d.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let mut names: Vec<String> = list_files(d).unwrap().into_iter().map(|f| f.rel).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "users/alice/input/cat.png",
                "users/alice/output/sub/out.png",
                "users/alice/userdata/workflows/a.json",
                "wall/3.png",
            ]
        );
    }
}
