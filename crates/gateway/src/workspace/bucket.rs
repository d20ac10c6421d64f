//! Participants' files in an S3-compatible bucket (`[files] url =
//! "s3://…"`): every [`Workspace`] operation, with the answers it gives on
//! disk, for gateways that share no filesystem.
//!
//! Keys are `users/<user>/<area>/<path>` under the URL's prefix, the area
//! being `userdata`, `input`, `output` or `temp` (the fixed `users/` level
//! keeps them apart from anything else under the prefix: the wall's
//! `wall/`, a backup's `objects/` and `locks/` if an operator pointed both
//! at one place). A bucket has no directories: a
//! folder exists while a file is under it, so a folder emptied of its last
//! file is gone (on disk it stays, empty), and nothing else differs that
//! the frontend can see. Each object is written whole by one PUT, so a
//! reader sees the old file or the new one, never half (what `.staging/`
//! gives on disk).
//!
//! Writers to one user take turns through the per-user lock as on disk.
//! Between gateways the bucket's conditional writes keep the same
//! promises without a lock: a new name is claimed with `If-None-Match: *`
//! (two uploads never get one name; a workflow saved without overwrite
//! never replaces another's), and settings are written with `If-Match` on
//! the version that was read, read again when another gateway wrote in
//! between. Work that has begun runs to its end even when the request
//! goes away ([`detached`]), as the blocking tasks do on disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde_json::{Map, Value};

use comfyume_domain::{FileKind, SafeRelPath};

use super::error::{DIR_NOT_FOUND, FILE_NOT_FOUND, INVALID_FILENAME, V2_NOT_A_DIR, V2_NOT_FOUND};
use super::info::FileInfo;
use super::source::{FileSource, bucket_error};
use super::userdata::{UserdataFile, V2Entry, sort_v2, userdata_serve_as};
use super::{Result, Workspace, WorkspaceError, mime, over_quota};

/// The bucket holding every user's files, opened once.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bucket")
    }
}

impl Bucket {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    pub(super) fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
}

/// One user's part of the bucket.
#[derive(Clone)]
pub(super) struct UserBucket {
    store: Arc<dyn ObjectStore>,
    user: String,
}

impl std::fmt::Debug for UserBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserBucket({})", self.user)
    }
}

/// The most files one move of a folder copies (each is a request of its
/// own, made while the user's other writes wait).
pub const MAX_FILES_MOVED: usize = 1000;

/// How often a settings update is tried again when another gateway keeps
/// writing the file between our read and our write.
const SETTINGS_ATTEMPTS: u32 = 32;

/// A random wait before trying a lost settings update again, growing
/// with the attempts, so two gateways racing for one file drift apart
/// instead of colliding in step.
fn backoff(attempt: u32) -> std::time::Duration {
    let most_ms = u128::from(10 * attempt.min(20));
    let ms = uuid::Uuid::new_v4().as_u128() % (most_ms + 1);
    std::time::Duration::from_millis(ms as u64)
}

impl UserBucket {
    pub(super) fn new(bucket: &Bucket, user: &str) -> Self {
        Self {
            store: bucket.store.clone(),
            user: user.to_owned(),
        }
    }

    pub(super) fn user(&self) -> &str {
        &self.user
    }

    /// The key of `rel` in `area`; `None` for a name no bucket key can
    /// carry (a control character), which cannot exist there.
    fn key(&self, area: &str, rel: &SafeRelPath) -> Option<ObjectPath> {
        // A user name is one plain path segment by construction.
        let raw = if rel.is_root() {
            format!("users/{}/{area}", self.user)
        } else {
            format!("users/{}/{area}/{}", self.user, rel.as_str())
        };
        ObjectPath::parse(raw).ok()
    }

    /// All of the user's keys are under this one.
    fn root(&self) -> ObjectPath {
        ObjectPath::from_iter(["users", self.user.as_str()])
    }

    fn source(&self, key: ObjectPath) -> FileSource {
        FileSource::Bucket {
            store: self.store.clone(),
            key,
        }
    }

    async fn head(&self, key: &ObjectPath) -> Result<Option<ObjectMeta>> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(bucket_error(e)),
        }
    }

    /// Whether `key` is a folder: some file is under it.
    async fn is_folder(&self, key: &ObjectPath) -> Result<bool> {
        match self.store.list(Some(key)).next().await {
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(bucket_error(e)),
            None => Ok(false),
        }
    }

    /// Every file under `key`, with its path below `key`.
    async fn files_under(&self, key: &ObjectPath) -> Result<Vec<(String, ObjectMeta)>> {
        let skip = key.as_ref().len() + 1;
        let mut listing = self.store.list(Some(key));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(bucket_error)?;
            match meta.location.as_ref().get(skip..) {
                Some(rel) if !rel.is_empty() => out.push((rel.to_owned(), meta)),
                // Not a file of ours: a "folder" marker some tools write.
                _ => {
                    tracing::warn!(key = %meta.location, "an object that names no file, left alone")
                }
            }
        }
        Ok(out)
    }

    /// The files directly in the folder `key` (not in its subfolders).
    async fn files_in(&self, key: &ObjectPath) -> Result<Vec<(String, ObjectMeta)>> {
        let listed = self
            .store
            .list_with_delimiter(Some(key))
            .await
            .map_err(bucket_error)?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| Some((meta.location.filename()?.to_owned(), meta)))
            .collect())
    }

    async fn get(&self, key: &ObjectPath) -> Result<Option<(Bytes, ObjectMeta)>> {
        match self.store.get(key).await {
            Ok(got) => {
                let meta = got.meta.clone();
                Ok(Some((got.bytes().await.map_err(bucket_error)?, meta)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(bucket_error(e)),
        }
    }

    async fn put(
        &self,
        key: &ObjectPath,
        data: Bytes,
        mode: PutMode,
    ) -> std::result::Result<(), object_store::Error> {
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store.put_opts(key, data.into(), options).await?;
        Ok(())
    }

    /// An ancestor folder of `rel` in `area` that is a file: nothing can be
    /// stored under it (on disk, creating the folder fails).
    async fn file_in_the_way(&self, area: &str, rel: &SafeRelPath) -> Result<bool> {
        let mut ancestor = String::new();
        let segments: Vec<&str> = rel.as_str().split('/').collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            if !ancestor.is_empty() {
                ancestor.push('/');
            }
            ancestor.push_str(segment);
            let Ok(path) = SafeRelPath::parse(&ancestor) else {
                continue;
            };
            if let Some(key) = self.key(area, &path) {
                if self.head(&key).await?.is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Bytes of everything the user keeps.
    async fn total_bytes(&self) -> Result<u64> {
        let mut listing = self.store.list(Some(&self.root()));
        let mut total = 0u64;
        while let Some(meta) = listing.next().await {
            total = total.saturating_add(meta.map_err(bucket_error)?.size);
        }
        Ok(total)
    }
}

/// Runs `work` to its end on its own task, even if the request waiting
/// for it goes away half-way (a folder moved object by object must not
/// stop in the middle).
async fn detached<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| WorkspaceError::Io(std::io::Error::other(e)))?
}

/// A folder tree built from a listing, walked as the disk is walked.
#[derive(Default)]
struct Tree {
    folders: BTreeMap<String, Tree>,
    files: BTreeMap<String, ObjectMeta>,
}

impl Tree {
    fn build(files: Vec<(String, ObjectMeta)>) -> Tree {
        let mut root = Tree::default();
        for (rel, meta) in files {
            let mut node = &mut root;
            let mut segments = rel.split('/').peekable();
            while let Some(segment) = segments.next() {
                if segments.peek().is_none() {
                    node.files.insert(segment.to_owned(), meta);
                    break;
                }
                node = node.folders.entry(segment.to_owned()).or_default();
            }
        }
        root
    }

    /// `glob` without hidden names: the folder's files by name, then each
    /// subfolder's in turn (the disk listing's order).
    fn glob(&self, prefix: &str, recurse: bool, out: &mut Vec<FileInfo>) {
        for (name, meta) in self.files.iter().filter(|(n, _)| !n.starts_with('.')) {
            out.push(from_object(format!("{prefix}{name}"), meta));
        }
        if recurse {
            for (name, folder) in self.folders.iter().filter(|(n, _)| !n.starts_with('.')) {
                folder.glob(&format!("{prefix}{name}/"), true, out);
            }
        }
    }

    /// `os.walk` top-down, as `/v2/userdata` lists.
    fn walk(&self, prefix: &str, out: &mut Vec<V2Entry>) {
        for name in self.folders.keys() {
            out.push(V2Entry::folder(prefix, name));
        }
        for (name, meta) in &self.files {
            out.push(V2Entry::file(
                prefix,
                name,
                Some(meta.size),
                Some(meta.last_modified.timestamp_millis() as f64 / 1000.0),
            ));
        }
        for (name, folder) in &self.folders {
            folder.walk(&format!("{prefix}{name}/"), out);
        }
    }
}

/// A file's info from the bucket: it keeps one time, when the object was
/// written, which stands for both of ComfyUI's.
fn from_object(path: String, meta: &ObjectMeta) -> FileInfo {
    let millis = meta.last_modified.timestamp_millis();
    FileInfo {
        path,
        size: meta.size,
        modified: millis,
        created: millis,
    }
}

fn area(kind: FileKind) -> &'static str {
    kind.as_str()
}

impl Workspace {
    /// Checks that `incoming` bytes fit in the quota with `freed` bytes
    /// (a file being replaced) given back. Counted from a listing before
    /// every write: other gateways write to the same files, and a count
    /// kept here would miss theirs.
    async fn bucket_room_for(&self, bucket: &UserBucket, incoming: u64, freed: u64) -> Result<()> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let used = bucket.total_bytes().await?.saturating_sub(freed);
        if used.saturating_add(incoming) > quota {
            return Err(over_quota(used, quota));
        }
        Ok(())
    }

    pub(super) async fn bucket_has_files(bucket: &UserBucket) -> Result<bool> {
        bucket.is_folder(&bucket.root()).await
    }

    pub(super) async fn bucket_list(
        bucket: &UserBucket,
        dir: &SafeRelPath,
        recurse: bool,
    ) -> Result<Vec<FileInfo>> {
        let Some(base) = bucket.key("userdata", dir) else {
            return Err(WorkspaceError::NotFound(DIR_NOT_FOUND));
        };
        let files = bucket.files_under(&base).await?;
        if files.is_empty() {
            // A file lists nothing; nothing at all is "not found".
            return match bucket.head(&base).await? {
                Some(_) => Ok(Vec::new()),
                None => Err(WorkspaceError::NotFound(DIR_NOT_FOUND)),
            };
        }
        let mut out = Vec::new();
        Tree::build(files).glob("", recurse, &mut out);
        Ok(out)
    }

    pub(super) async fn bucket_read(
        bucket: &UserBucket,
        file: &SafeRelPath,
    ) -> Result<UserdataFile> {
        let key = bucket
            .key("userdata", file)
            .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
        match bucket.head(&key).await? {
            Some(meta) => Ok(UserdataFile {
                size: meta.size,
                source: bucket.source(key),
                serve_as: userdata_serve_as(file),
            }),
            None => Err(WorkspaceError::NotFound(FILE_NOT_FOUND)),
        }
    }

    pub(super) async fn bucket_write(
        &self,
        bucket: &UserBucket,
        file: &SafeRelPath,
        data: Vec<u8>,
        overwrite: bool,
    ) -> Result<FileInfo> {
        let key = bucket
            .key("userdata", file)
            .ok_or_else(|| WorkspaceError::BadRequest(INVALID_FILENAME.into()))?;
        let guard = self.write_lock().await;
        let (me, bucket, file) = (self.clone(), bucket.clone(), file.clone());
        detached(async move {
            let _guard = guard;
            let existing = bucket.head(&key).await?;
            let folder = bucket.is_folder(&key).await?;
            if !overwrite && (existing.is_some() || folder) {
                return Err(WorkspaceError::Conflict);
            }
            if folder || bucket.file_in_the_way("userdata", &file).await? {
                // What ComfyUI answers for any OSError while saving (on
                // disk: a folder in the way of the rename, or a file in
                // the way of its parent folders).
                return Err(WorkspaceError::BadRequest(INVALID_FILENAME.into()));
            }
            let freed = existing.map_or(0, |m| m.size);
            me.bucket_room_for(&bucket, data.len() as u64, freed)
                .await?;
            let mode = if overwrite {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            let data = Bytes::from(data);
            match bucket.put(&key, data.clone(), mode).await {
                Ok(()) => {}
                // Taken since we looked: by another gateway, or by our own
                // first attempt when the store's answer to it was lost and
                // the client tried again (then the content is ours).
                Err(object_store::Error::AlreadyExists { .. }) => {
                    if !same_object(&bucket, &key, &data).await? {
                        return Err(WorkspaceError::Conflict);
                    }
                }
                Err(e) => return Err(bucket_error(e)),
            }
            let meta = bucket
                .head(&key)
                .await?
                .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
            Ok(from_object(file.as_str().to_owned(), &meta))
        })
        .await
    }

    pub(super) async fn bucket_delete(
        &self,
        bucket: &UserBucket,
        file: &SafeRelPath,
    ) -> Result<()> {
        let key = bucket
            .key("userdata", file)
            .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
        let guard = self.write_lock().await;
        let (me, bucket) = (self.clone(), bucket.clone());
        detached(async move {
            let _guard = guard;
            if bucket.head(&key).await?.is_none() {
                return Err(if bucket.is_folder(&key).await? {
                    WorkspaceError::BadRequest("Cannot delete a directory".into())
                } else {
                    WorkspaceError::NotFound(FILE_NOT_FOUND)
                });
            }
            me.recount_usage();
            bucket.store.delete(&key).await.map_err(bucket_error)
        })
        .await
    }

    pub(super) async fn bucket_rename(
        &self,
        bucket: &UserBucket,
        src: &SafeRelPath,
        dest: &SafeRelPath,
        overwrite: bool,
    ) -> Result<FileInfo> {
        let from = bucket
            .key("userdata", src)
            .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
        let to = bucket
            .key("userdata", dest)
            .ok_or_else(|| WorkspaceError::BadRequest(INVALID_FILENAME.into()))?;
        let same = src == dest;
        let into_itself = dest.as_str().starts_with(&format!("{}/", src.as_str()));
        let (src_root, dest_root) = (src.is_root(), dest.is_root());
        let guard = self.write_lock().await;
        let (me, bucket, dest) = (self.clone(), bucket.clone(), dest.clone());
        detached(async move {
            let _guard = guard;
            let src_file = bucket.head(&from).await?;
            if src_file.is_none() && !bucket.is_folder(&from).await? {
                return Err(WorkspaceError::NotFound(FILE_NOT_FOUND));
            }
            if src_root || dest_root {
                return Err(WorkspaceError::BadRequest(INVALID_FILENAME.into()));
            }
            let dest_file = bucket.head(&to).await?.is_some();
            let dest_folder = bucket.is_folder(&to).await?;
            if (dest_file || dest_folder) && (!overwrite || (dest_folder && !same)) {
                return Err(WorkspaceError::Conflict);
            }
            if same {
                return Ok(match bucket.head(&to).await? {
                    Some(meta) => from_object(dest.as_str().to_owned(), &meta),
                    None => folder_info(dest.as_str()),
                });
            }
            // What the disk's rename fails with (ComfyUI: a 500).
            if into_itself {
                return Err(cannot_move("a folder cannot move into itself"));
            }
            if src_file.is_none() && dest_file {
                return Err(cannot_move("a folder cannot replace a file"));
            }
            if bucket.file_in_the_way("userdata", &dest).await? {
                return Err(cannot_move("a file is in the way of the destination"));
            }
            me.recount_usage();
            if src_file.is_some() {
                let (bytes, _) = bucket
                    .get(&from)
                    .await?
                    .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
                // Without overwrite the name is claimed as a new file's
                // is, so a file another gateway saved there since we
                // looked is never replaced.
                let mode = if overwrite {
                    PutMode::Overwrite
                } else {
                    PutMode::Create
                };
                match bucket.put(&to, bytes, mode).await {
                    Ok(()) => {}
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        return Err(WorkspaceError::Conflict);
                    }
                    Err(e) => return Err(bucket_error(e)),
                }
                bucket.store.delete(&from).await.map_err(bucket_error)?;
                let meta = bucket
                    .head(&to)
                    .await?
                    .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
                return Ok(from_object(dest.as_str().to_owned(), &meta));
            }
            // A folder: every file in it, copied before any is deleted,
            // so a failure half-way loses nothing.
            let files = bucket.files_under(&from).await?;
            if files.len() > MAX_FILES_MOVED {
                return Err(WorkspaceError::TooLarge(format!(
                    "The folder holds {} files; folders of up to {MAX_FILES_MOVED} can be moved at once.",
                    files.len()
                )));
            }
            for (rel, meta) in &files {
                let target = ObjectPath::parse(format!("{to}/{rel}"))
                    .map_err(|e| bucket_error(e.into()))?;
                bucket
                    .store
                    .copy(&meta.location, &target)
                    .await
                    .map_err(bucket_error)?;
            }
            for (_, meta) in &files {
                bucket
                    .store
                    .delete(&meta.location)
                    .await
                    .map_err(bucket_error)?;
            }
            Ok(folder_info(dest.as_str()))
        })
        .await
    }

    pub(super) async fn bucket_list_v2(
        bucket: &UserBucket,
        path: &SafeRelPath,
    ) -> Result<Vec<V2Entry>> {
        let Some(target) = bucket.key("userdata", path) else {
            return Err(WorkspaceError::NotFound(V2_NOT_FOUND));
        };
        let files = bucket.files_under(&target).await?;
        if files.is_empty() {
            return if bucket.head(&target).await?.is_some() {
                Err(WorkspaceError::BadRequest(V2_NOT_A_DIR.into()))
            } else if path.is_root() {
                Ok(Vec::new())
            } else {
                Err(WorkspaceError::NotFound(V2_NOT_FOUND))
            };
        }
        let prefix = if path.is_root() {
            String::new()
        } else {
            format!("{}/", path.as_str())
        };
        let mut out = Vec::new();
        Tree::build(files).walk(&prefix, &mut out);
        sort_v2(&mut out);
        Ok(out)
    }

    pub(super) async fn bucket_save_upload(
        &self,
        bucket: &UserBucket,
        kind: FileKind,
        subfolder: &SafeRelPath,
        file_name: String,
        data: Vec<u8>,
        overwrite: bool,
    ) -> Result<String> {
        let guard = self.write_lock().await;
        let (me, bucket, subfolder) = (self.clone(), bucket.clone(), subfolder.clone());
        detached(async move {
            let _guard = guard;
            let area = area(kind);
            let in_subfolder = |name: &str| -> Result<(SafeRelPath, ObjectPath)> {
                let raw = if subfolder.is_root() {
                    name.to_owned()
                } else {
                    format!("{}/{name}", subfolder.as_str())
                };
                let rel = SafeRelPath::parse(&raw)
                    .map_err(|e| WorkspaceError::BadRequest(e.to_string()))?;
                let key = bucket
                    .key(area, &rel)
                    .ok_or_else(|| WorkspaceError::BadRequest(INVALID_FILENAME.into()))?;
                Ok((rel, key))
            };
            let data = Bytes::from(data);
            let (first, _) = in_subfolder(&file_name)?;
            if bucket.file_in_the_way(area, &first).await? {
                // On disk, creating the subfolder fails (ComfyUI: a 500).
                return Err(WorkspaceError::Io(std::io::Error::other(format!(
                    "the subfolder '{}' is in the way of a file",
                    subfolder.as_str()
                ))));
            }
            if overwrite {
                let (_, key) = in_subfolder(&file_name)?;
                if bucket.is_folder(&key).await? {
                    // On disk, the rename onto a folder fails.
                    return Err(WorkspaceError::Io(std::io::Error::other(format!(
                        "'{file_name}' is a folder"
                    ))));
                }
                let freed = bucket.head(&key).await?.map_or(0, |m| m.size);
                me.bucket_room_for(&bucket, data.len() as u64, freed)
                    .await?;
                bucket
                    .put(&key, data, PutMode::Overwrite)
                    .await
                    .map_err(bucket_error)?;
                return Ok(file_name);
            }
            let (stem, ext) = super::files::split_ext(&file_name);
            let mut name = file_name.clone();
            let mut n: u64 = 1;
            loop {
                let (_, key) = in_subfolder(&name)?;
                match bucket.head(&key).await? {
                    // A folder by that name is never the same content.
                    None if bucket.is_folder(&key).await? => {}
                    None => {
                        // Only a new file needs room: the same content
                        // already stored is reused below.
                        me.bucket_room_for(&bucket, data.len() as u64, 0).await?;
                        match bucket.put(&key, data.clone(), PutMode::Create).await {
                            Ok(()) => return Ok(name),
                            // Another gateway claimed the name first: it
                            // is taken, and compared like any other.
                            Err(object_store::Error::AlreadyExists { .. }) => {
                                if same_object(&bucket, &key, &data).await? {
                                    return Ok(name);
                                }
                            }
                            Err(e) => return Err(bucket_error(e)),
                        }
                    }
                    Some(meta) => {
                        if meta.size == data.len() as u64
                            && same_object(&bucket, &key, &data).await?
                        {
                            return Ok(name);
                        }
                    }
                }
                name = format!("{stem} ({n}){ext}");
                n += 1;
            }
        })
        .await
    }

    pub(super) async fn bucket_find(
        bucket: &UserBucket,
        kind: FileKind,
        rel: &SafeRelPath,
    ) -> Result<Option<(FileSource, u64)>> {
        let Some(key) = bucket.key(area(kind), rel) else {
            return Ok(None);
        };
        Ok(bucket
            .head(&key)
            .await?
            .map(|meta| (bucket.source(key), meta.size)))
    }

    pub(super) async fn bucket_list_files(
        bucket: &UserBucket,
        kind: FileKind,
    ) -> Result<Vec<String>> {
        let key = bucket
            .key(area(kind), &SafeRelPath::root())
            .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
        let mut files: Vec<(i64, String)> = bucket
            .files_in(&key)
            .await?
            .into_iter()
            .filter(|(name, _)| !name.starts_with('.'))
            .map(|(name, meta)| (meta.last_modified.timestamp_millis(), name))
            .collect();
        files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(files
            .into_iter()
            .map(|(_, name)| format!("{name} [{}]", kind.as_str()))
            .collect())
    }

    pub(super) async fn bucket_input_images(bucket: &UserBucket) -> Result<Vec<String>> {
        let key = bucket
            .key(area(FileKind::Input), &SafeRelPath::root())
            .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
        let mut names: Vec<String> = bucket
            .files_in(&key)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| mime::content_class(name) == Some("image"))
            .collect();
        names.sort();
        Ok(names)
    }

    pub(super) async fn bucket_settings(
        bucket: &UserBucket,
    ) -> Result<Option<(Bytes, UpdateVersion)>> {
        let key = bucket
            .key("userdata", &settings_rel())
            .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
        Ok(bucket.get(&key).await?.map(|(bytes, meta)| {
            (
                bytes,
                UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                },
            )
        }))
    }

    /// A read-modify-write of the settings file, tried again when another
    /// gateway wrote it between our read and our write.
    pub(super) async fn bucket_update_settings<F>(
        &self,
        bucket: &UserBucket,
        max_bytes: u64,
        change: F,
    ) -> Result<()>
    where
        F: Fn(&mut Map<String, Value>) + Send + Sync + 'static,
    {
        let guard = self.write_lock().await;
        let (me, bucket) = (self.clone(), bucket.clone());
        detached(async move {
            let _guard = guard;
            me.recount_usage();
            let key = bucket
                .key("userdata", &settings_rel())
                .ok_or(WorkspaceError::NotFound(FILE_NOT_FOUND))?;
            for attempt in 0..SETTINGS_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                let (mut settings, mode) = match Self::bucket_settings(&bucket).await? {
                    None => (Map::new(), PutMode::Create),
                    Some((bytes, version)) => {
                        let settings = match super::settings::parse_settings(&bytes) {
                            Ok(map) => map,
                            Err(why) => {
                                set_aside_corrupt(&bucket, &key, &why).await?;
                                Map::new()
                            }
                        };
                        (settings, PutMode::Update(version))
                    }
                };
                change(&mut settings);
                let out = super::settings::encode_settings(&settings, max_bytes)?;
                match bucket.put(&key, Bytes::from(out), mode).await {
                    Ok(()) => return Ok(()),
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ) => continue,
                    Err(e) => return Err(bucket_error(e)),
                }
            }
            Err(WorkspaceError::Io(std::io::Error::other(format!(
                "the settings changed elsewhere {SETTINGS_ATTEMPTS} times while this change was being saved; try again"
            ))))
        })
        .await
    }

    /// The user's workflows and outputs: (name in the export zip, file),
    /// in the order the disk export walks them.
    pub(super) async fn bucket_export_files(
        bucket: &UserBucket,
    ) -> Result<Vec<(String, FileSource)>> {
        let workflows = SafeRelPath::parse("workflows").expect("a plain folder name");
        let mut out = Vec::new();
        for (area, folder, zipped) in [
            ("userdata", workflows, "workflows"),
            ("output", SafeRelPath::root(), "outputs"),
        ] {
            let key = bucket
                .key(area, &folder)
                .expect("plain folder names make keys");
            let mut files = bucket.files_under(&key).await?;
            files.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
            out.extend(
                files
                    .into_iter()
                    .map(|(rel, meta)| (format!("{zipped}/{rel}"), bucket.source(meta.location))),
            );
        }
        Ok(out)
    }
}

fn settings_rel() -> SafeRelPath {
    SafeRelPath::parse(super::settings::SETTINGS_FILE).expect("a plain file name")
}

/// A move the disk's rename would refuse: ComfyUI answers those with a
/// 500, and so does the disk here.
fn cannot_move(why: &str) -> WorkspaceError {
    WorkspaceError::Io(std::io::Error::other(why.to_owned()))
}

/// A folder's info after a move: a bucket keeps no times for folders.
fn folder_info(path: &str) -> FileInfo {
    let now = chrono::Utc::now().timestamp_millis();
    FileInfo {
        path: path.to_owned(),
        size: 0,
        modified: now,
        created: now,
    }
}

/// Whether the object at `key` holds exactly `data`.
async fn same_object(bucket: &UserBucket, key: &ObjectPath, data: &[u8]) -> Result<bool> {
    Ok(bucket
        .get(key)
        .await?
        .is_some_and(|(bytes, _)| bytes.as_ref() == data))
}

/// Keeps a corrupt settings file beside it (as on disk) before an update
/// starts from an empty object.
async fn set_aside_corrupt(bucket: &UserBucket, key: &ObjectPath, why: &str) -> Result<()> {
    let millis = chrono::Utc::now().timestamp_millis();
    let aside =
        ObjectPath::parse(format!("{key}.corrupt-{millis}")).map_err(|e| bucket_error(e.into()))?;
    bucket.store.copy(key, &aside).await.map_err(bucket_error)?;
    tracing::warn!(file = %key, kept = %aside, %why, "a corrupt user settings file was set aside");
    Ok(())
}
