//! Each user's ComfyUI workspace on disk: the filesystem semantics behind
//! `/userdata`, `/v2/userdata`, `/settings`, `/upload/image`, `/view` and
//! `/internal/files`, with no HTTP knowledge.
//!
//! Layout, under the `root` given to [`Workspaces::new`] (`<data_dir>/users`):
//!
//! ```text
//! <root>/<user>/userdata/   ComfyUI's per-user dir: comfy.settings.json, workflows/, ...
//! <root>/<user>/input/      uploads (LoadImage's choices)
//! <root>/<user>/output/     saved results
//! <root>/<user>/temp/       previews
//! <root>/<user>/.staging/   half-written files, renamed into place when complete
//! ```
//!
//! Every directory is created on first write, never on a read, so a user who
//! never saved anything has no directory at all (and ComfyUI's "not found"
//! answers come out naturally).
//!
//! Paths arrive as [`SafeRelPath`](comfyume_domain::SafeRelPath), which cannot
//! climb out of the directory it is joined to; the `parse_*` helpers here add
//! the route-specific rules that need the raw string (URL-unquoting, `/view`'s
//! annotations, ...).
//!
//! Writers (userdata, settings, uploads) take a per-user lock, so two quick
//! requests from one browser cannot lose an update or pick the same upload
//! name. Readers take no lock: every file is written to `.staging/` and
//! renamed into place, so a reader sees the old or the new content, never half.
//! The lock lives in [`Workspaces`], so build that once and clone it.
//! Gateways sharing the data directory (`crate::cluster`) also take turns
//! through a file lock per user ([`Workspaces::with_shared_locks`]).
//!
//! With [`Workspaces::with_bucket`] the same operations keep the files in
//! an S3-compatible bucket instead (`bucket`), with the same answers; a
//! file found for reading is a [`FileSource`] either way, which the HTTP
//! layer streams without knowing where it is.

mod bucket;
mod error;
mod export;
mod files;
mod info;
mod mime;
pub mod preview;
mod settings;
mod source;
mod userdata;
mod wall;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use comfyume_domain::{FileKind, SafeRelPath, UserName};

pub use bucket::{Bucket, MAX_FILES_MOVED};
pub use error::{Result, WorkspaceError};
pub use export::ExportSummary;
pub use files::{
    UploadOutcome, ViewRequest, ViewTarget, converted_serve_as, parse_upload_file_name,
    parse_upload_subfolder, parse_upload_type, parse_view_request, upload_overwrite_flag,
    view_serve_as,
};
pub use info::FileInfo;
pub(crate) use mime::guess as guess_content_type;
pub use mime::{ServeAs, is_dangerous_content_type};
pub use source::{FileSource, OpenedFile};
pub use userdata::{
    ListFormat, UserdataFile, V2Entry, V2Kind, overwrite_flag, parse_userdata_dir,
    parse_userdata_path, parse_v2_path, query_flag, render_listing, userdata_serve_as,
};
pub use wall::WallImages;

/// All users' workspaces under one root. Cheap to clone; clones share the
/// per-user write locks, so build one and hand out clones.
#[derive(Debug, Clone)]
pub struct Workspaces {
    root: PathBuf,
    users: Arc<StdMutex<HashMap<UserName, Arc<Writer>>>>,
    /// The most a user's files may take, in bytes (`None`: no limit).
    quota: Option<u64>,
    /// The data directory's free space, kept before every write.
    disk: Option<crate::disk::DiskGuard>,
    /// Where the per-user file locks live, when other gateways write to
    /// the same files.
    shared_locks: Option<PathBuf>,
    /// Where the files are when they are not under `root`.
    bucket: Option<Bucket>,
}

impl Workspaces {
    /// `root` is `<data_dir>/users`; it is created lazily like everything else.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            users: Arc::default(),
            quota: None,
            disk: None,
            shared_locks: None,
            bucket: None,
        }
    }

    /// Keeps every user's files in `bucket` instead of under the root
    /// (see [`bucket`](self::bucket)); the disk guard and the file locks
    /// then have nothing to guard.
    pub fn with_bucket(mut self, bucket: Bucket) -> Self {
        self.bucket = Some(bucket);
        self
    }

    /// Writers to a user's files also hold a file lock in `dir` (one file
    /// per user), so gateways sharing the data directory on a shared
    /// filesystem take turns as this one's tasks do. The lock is `flock`,
    /// which NFS (v4), CephFS and EFS carry between machines.
    pub fn with_shared_locks(mut self, dir: PathBuf) -> Self {
        self.shared_locks = Some(dir);
        self
    }

    /// Refuses a write that would leave less free space on the disk than
    /// `guard` keeps (`WorkspaceError::DiskFull`), whatever the quota.
    pub fn with_disk_guard(mut self, guard: crate::disk::DiskGuard) -> Self {
        self.disk = Some(guard);
        self
    }

    /// Bounds what each user's files (inputs, outputs, temp, userdata)
    /// may take together: one participant cannot fill the room's disk.
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota = Some(bytes);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bucket the files are in, if they are in one.
    pub fn bucket(&self) -> Option<&Bucket> {
        self.bucket.as_ref()
    }

    /// The workspace of `name`. A `UserName` is one safe path segment by
    /// construction (letters, digits, `-_.`, starting alphanumeric), so it
    /// can name a directory as is.
    pub fn user(&self, name: &UserName) -> Workspace {
        let writer = {
            // A panic while holding this map lock cannot leave the map half
            // updated (one insert), so a poisoned lock is still usable.
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            users.entry(name.clone()).or_default().clone()
        };
        Workspace {
            dir: self.root.join(name.as_str()),
            writer,
            quota: self.quota,
            disk: self.disk.clone(),
            shared_lock: self
                .shared_locks
                .as_ref()
                .map(|dir| dir.join(name.as_str())),
            bucket: self
                .bucket
                .as_ref()
                .map(|b| bucket::UserBucket::new(b, name.as_str())),
        }
    }
}

/// What writers to one user's files share: the lock that orders them, and
/// the quota's count of the bytes the files take.
#[derive(Debug, Default)]
struct Writer {
    lock: Arc<Mutex<()>>,
    /// Only touched under `lock` (the std mutex is for `Sync`, never
    /// contended). `None`: to be counted on the next write.
    usage: StdMutex<Option<Usage>>,
}

/// The bytes a user's files take: counted by walking their folders, then
/// kept up to date by the writes that go through the quota, so a job's
/// output does not walk every earlier output. Counted again after
/// [`RECOUNT_EVERY`], and after any change not tracked here (deletes,
/// moves, settings), so files changed behind the gateway's back cannot
/// skew it for long.
#[derive(Debug, Clone, Copy)]
struct Usage {
    bytes: u64,
    counted_at: Instant,
}

/// How long a counted usage is trusted (with the tracked writes added).
const RECOUNT_EVERY: Duration = Duration::from_secs(60);

/// One user's files. Obtained from [`Workspaces::user`].
#[derive(Debug, Clone)]
pub struct Workspace {
    dir: PathBuf,
    writer: Arc<Writer>,
    quota: Option<u64>,
    disk: Option<crate::disk::DiskGuard>,
    /// The user's lock file, when gateways share the files.
    shared_lock: Option<PathBuf>,
    /// The user's part of the files bucket, when the files are there.
    bucket: Option<bucket::UserBucket>,
}

impl Workspace {
    /// `<root>/<user>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<root>/<user>/userdata`: what ComfyUI calls the user directory.
    pub fn userdata_dir(&self) -> PathBuf {
        self.dir.join("userdata")
    }

    /// `<root>/<user>/{input,output,temp}`.
    pub fn kind_dir(&self, kind: FileKind) -> PathBuf {
        self.dir.join(kind.as_str())
    }

    /// Whether the user has kept any file at all.
    pub async fn has_files(&self) -> Result<bool> {
        match &self.bucket {
            Some(bucket) => Self::bucket_has_files(bucket).await,
            None => Ok(tokio::fs::try_exists(&self.dir).await?),
        }
    }

    /// One of the user's input files, whole (sent to a GPU with a job).
    pub async fn read_input(&self, rel: &SafeRelPath) -> Result<Vec<u8>> {
        match &self.bucket {
            Some(bucket) => match Self::bucket_find(bucket, FileKind::Input, rel).await? {
                Some((source, _)) => source.read_all().await,
                None => Err(WorkspaceError::NotFound(error::FILE_NOT_FOUND)),
            },
            None => {
                FileSource::Disk(rel.under(&self.kind_dir(FileKind::Input)))
                    .read_all()
                    .await
            }
        }
    }

    fn staging_dir(&self) -> PathBuf {
        self.dir.join(".staging")
    }

    /// Takes the user's write lock as an owned guard, so it can move into a
    /// blocking task and stay held until the disk work is done even if the
    /// request future is dropped half-way.
    async fn write_lock(&self) -> OwnedMutexGuard<()> {
        self.writer.lock.clone().lock_owned().await
    }

    /// The user's lock across gateways (see
    /// [`Workspaces::with_shared_locks`]), held until the returned file is
    /// dropped; `None` when no other gateway shares the files. Blocks:
    /// call in the blocking task, after [`write_lock`](Self::write_lock).
    /// Another gateway's writes are not in the quota's count here, so it
    /// is counted again.
    fn lock_across_gateways(&self) -> io::Result<Option<fs::File>> {
        let Some(path) = &self.shared_lock else {
            return Ok(None);
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        self.recount_usage();
        Ok(Some(file))
    }

    /// The user's files changed in a way the quota's count does not track
    /// (a delete, a move, settings): count them again on the next write.
    /// Call under the write lock.
    fn recount_usage(&self) {
        *self.usage() = None;
    }

    fn usage(&self) -> std::sync::MutexGuard<'_, Option<Usage>> {
        // Written whole under the write lock: a poisoned value is still
        // one consistent figure (or `None`).
        self.writer
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs filesystem work on the blocking pool. Once started it runs to the
/// end, which is what keeps rename-into-place sequences whole when a client
/// disconnects.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WorkspaceError::Io(io::Error::other(e)))?
}

/// A file being written in `.staging/`. It is removed on drop unless
/// [`persist`](Staged::persist) renamed it into place, so no error path (or
/// panic) leaves debris behind.
struct Staged {
    path: PathBuf,
    armed: bool,
}

impl Staged {
    fn write(staging_dir: &Path, data: &[u8]) -> io::Result<Self> {
        fs::create_dir_all(staging_dir)?;
        let path = staging_dir.join(format!("{}.part", uuid::Uuid::new_v4()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let staged = Staged { path, armed: true };
        file.write_all(data)?;
        // Without this a crash right after the rename can leave an empty
        // file under the final name on some filesystems.
        file.sync_all()?;
        Ok(staged)
    }

    /// Renames the staged file onto `dest`, replacing a file already there.
    fn persist(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the file is ours alone, and failing to remove it
            // only leaves a stray file in `.staging/`.
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Workspace {
    /// Writes `incoming` bytes with `write` if they fit in the user's quota,
    /// `replacing` (a file the write overwrites) freed. Runs under the
    /// write lock, on a blocking thread: the first write (and one a minute
    /// after) walks the user's folders; the others add to that count.
    fn write_within_quota<T>(
        &self,
        incoming: u64,
        replacing: Option<&Path>,
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if let Some(disk) = &self.disk {
            disk.check(incoming)
                .map_err(|e| WorkspaceError::DiskFull(e.to_string()))?;
        }
        let Some(quota) = self.quota else {
            return write();
        };
        let freed = replacing
            .and_then(|p| fs::symlink_metadata(p).ok())
            .filter(fs::Metadata::is_file)
            .map_or(0, |md| md.len());
        let counted = match *self.usage() {
            Some(usage) if usage.counted_at.elapsed() < RECOUNT_EVERY => usage,
            _ => Usage {
                counted_at: Instant::now(),
                bytes: folder_size(&self.dir)?,
            },
        };
        let used = counted.bytes.saturating_sub(freed);
        if used.saturating_add(incoming) > quota {
            *self.usage() = Some(counted);
            return Err(over_quota(used, quota));
        }
        let written = write();
        *self.usage() = match written {
            Ok(_) => Some(Usage {
                bytes: used + incoming,
                ..counted
            }),
            // Part of it may be on disk: count again.
            Err(_) => None,
        };
        written
    }
}

/// Bytes of the regular files under a user's `dir`, every folder counted
/// (`temp` too: a participant can upload there), links not followed;
/// staging included: it holds writes under way.
fn folder_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let md = entry.metadata()?;
            if md.is_dir() {
                pending.push(entry.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    Ok(total)
}

fn over_quota(used: u64, quota: u64) -> WorkspaceError {
    WorkspaceError::QuotaExceeded(format!(
        "Your files take {} of the {} you may keep here. Delete workflows you no longer need, or ask your instructor to make room.",
        megabytes(used),
        megabytes(quota)
    ))
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// `stat` following symlinks, with Python's `os.path.exists` semantics: any
/// error (missing, a file used as a directory, a name too long...) means
/// "not there".
fn stat(path: &Path) -> Option<fs::Metadata> {
    fs::metadata(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_shared_locks() {
        let ws = Workspaces::new(PathBuf::from("/data/users"));
        let alice = UserName::parse("Alice").unwrap();
        let a1 = ws.user(&alice);
        let a2 = ws.clone().user(&alice);
        let bob = ws.user(&UserName::parse("bob").unwrap());
        assert_eq!(a1.dir(), Path::new("/data/users/alice"));
        assert_eq!(a1.userdata_dir(), Path::new("/data/users/alice/userdata"));
        assert_eq!(
            a1.kind_dir(FileKind::Temp),
            Path::new("/data/users/alice/temp")
        );
        assert!(Arc::ptr_eq(&a1.writer, &a2.writer));
        assert!(!Arc::ptr_eq(&a1.writer, &bob.writer));
    }

    /// Two gateways over one data directory (two `Workspaces`, as two
    /// processes have): their writers to one user take turns, so no
    /// read-modify-write of the settings loses another's change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gateways_sharing_the_files_take_turns_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let gateway = || {
            Workspaces::new(tmp.path().join("users"))
                .with_shared_locks(tmp.path().join(".locks"))
                .user(&UserName::parse("alice").unwrap())
        };
        let (one, two) = (gateway(), gateway());
        let writes = (0..200).map(|i| {
            let ws = if i % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(async move {
                ws.set_setting(&format!("key.{i}"), serde_json::json!(i), 1 << 20)
                    .await
            })
        });
        for write in futures_util::future::join_all(writes).await {
            write.unwrap().unwrap();
        }
        let settings = one.settings().await;
        assert_eq!(settings.len(), 200, "no update lost");

        // The lock itself: held by one, refused to the other until let go.
        let held = one.lock_across_gateways().unwrap().unwrap();
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path().join(".locks/alice"))
            .unwrap();
        let try_lock = |f: &std::fs::File| {
            rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        };
        assert_eq!(try_lock(&other), Err(rustix::io::Errno::WOULDBLOCK));
        drop(held);
        try_lock(&other).unwrap();
        assert!(
            !tmp.path().join("users/.locks").exists(),
            "the locks are not among the users"
        );
        // Without other gateways there is no lock file at all.
        let alone =
            Workspaces::new(tmp.path().join("users")).user(&UserName::parse("bob").unwrap());
        assert!(alone.lock_across_gateways().unwrap().is_none());
    }

    /// The quota's running count follows the writes it lets through, and
    /// a write that fails half-way leaves no phantom bytes in it.
    #[tokio::test]
    async fn the_quota_count_follows_writes_and_forgets_failed_ones() {
        use comfyume_domain::SafeRelPath;
        let tmp = tempfile::tempdir().unwrap();
        let me = Workspaces::new(tmp.path().to_path_buf())
            .with_quota(10_000)
            .user(&UserName::parse("alice").unwrap());
        let path = |p: &str| SafeRelPath::parse(p).unwrap();
        me.write(&path("x"), vec![0; 4000], false).await.unwrap();
        assert!(matches!(
            me.write(&path("big"), vec![0; 7000], false).await,
            Err(WorkspaceError::QuotaExceeded(_))
        ));
        // `x` is a file, so nothing can be written under it.
        assert!(me.write(&path("x/y"), vec![0; 4000], false).await.is_err());
        me.write(&path("z"), vec![0; 5000], false)
            .await
            .expect("4,000 + 5,000 bytes fit in 10,000");
        me.delete(&path("x")).await.unwrap();
        me.write(&path("w"), vec![0; 4500], false)
            .await
            .expect("the deleted file's room is free again");
    }

    #[test]
    fn staged_file_is_removed_unless_persisted() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path().join(".staging");
        let s = Staged::write(&staging, b"x").unwrap();
        let path = s.path.clone();
        assert!(path.exists());
        drop(s);
        assert!(!path.exists());

        let s = Staged::write(&staging, b"y").unwrap();
        let dest = tmp.path().join("dest");
        s.persist(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"y");
        assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);
    }
}
