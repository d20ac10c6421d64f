//! `/userdata` and `/v2/userdata` (ComfyUI app/user_manager.py): listing,
//! reading, writing, deleting and moving files under a user's `userdata/`.

use std::fs;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;

use super::error::{
    DIR_NOT_FOUND, DIR_NOT_PROVIDED, FILE_NOT_FOUND, INVALID_DIRECTORY, INVALID_FILE_PATH,
    INVALID_FILENAME, V2_INVALID_PATH, V2_NOT_A_DIR, V2_NOT_FOUND,
};
use super::info::{FileInfo, mtime_secs};
use super::mime::{self, OCTET_STREAM, ServeAs};
use super::source::FileSource;
use super::{Result, Staged, Workspace, WorkspaceError, blocking, stat};
use comfyume_domain::SafeRelPath;

/// The three shapes of a `GET /userdata` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// `["b.json", "sub/a.json"]`
    Plain,
    /// `[["b.json","b.json"], ["sub/a.json","sub","a.json"]]`
    Split,
    /// `[{"path","size","modified","created"}, ...]`
    FullInfo,
}

impl ListFormat {
    /// ComfyUI ignores `split` when `full_info` is set.
    pub fn from_flags(full_info: bool, split: bool) -> Self {
        match (full_info, split) {
            (true, _) => ListFormat::FullInfo,
            (false, true) => ListFormat::Split,
            (false, false) => ListFormat::Plain,
        }
    }
}

/// Renders [`Workspace::list`]'s result as ComfyUI's JSON for `format`.
pub fn render_listing(files: &[FileInfo], format: ListFormat) -> Value {
    let items = files.iter().map(|f| match format {
        ListFormat::Plain => Value::String(f.path.clone()),
        ListFormat::Split => Value::Array(
            std::iter::once(f.path.as_str())
                .chain(f.path.split('/'))
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        ListFormat::FullInfo => serde_json::json!(f),
    });
    Value::Array(items.collect())
}

/// A `/userdata` boolean query flag (`recurse`, `full_info`, `split`): true
/// only for `"true"`, in any case.
pub fn query_flag(raw: Option<&str>) -> bool {
    raw.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `/userdata`'s `overwrite`: anything but the exact string `"false"` is
/// true, including absence and the frontend's `overwrite=undefined`.
pub fn overwrite_flag(raw: Option<&str>) -> bool {
    raw != Some("false")
}

/// A `{file}` or `{dest}` segment of `/userdata/...` (already percent-decoded
/// once by the router). ComfyUI unquotes once more when a `%` is left, so the
/// frontend's `encodeURIComponent` of a double-encoded name still lands; a
/// path outside the user root is 403.
pub fn parse_userdata_path(raw: &str) -> Result<SafeRelPath> {
    parse_unquoted(raw, WorkspaceError::Forbidden(INVALID_FILE_PATH))
}

/// The `dir` query parameter of `GET /userdata`: missing or empty is 400
/// "Directory not provided", an escape is 403 "Invalid directory".
pub fn parse_userdata_dir(raw: Option<&str>) -> Result<SafeRelPath> {
    match raw {
        None | Some("") => Err(WorkspaceError::BadRequest(DIR_NOT_PROVIDED.into())),
        Some(raw) => parse_unquoted(raw, WorkspaceError::Forbidden(INVALID_DIRECTORY)),
    }
}

/// The `path` query parameter of `GET /v2/userdata`: always unquoted once
/// more, missing means the root, an escape is 400 "Invalid path requested".
pub fn parse_v2_path(raw: Option<&str>) -> Result<SafeRelPath> {
    let raw = raw.unwrap_or("");
    let decoded = percent_decode_str(raw).decode_utf8_lossy();
    SafeRelPath::parse(&decoded).map_err(|_| WorkspaceError::BadRequest(V2_INVALID_PATH.into()))
}

fn parse_unquoted(raw: &str, refused: WorkspaceError) -> Result<SafeRelPath> {
    let parsed = if raw.contains('%') {
        // Python's `unquote`: invalid escapes stay as they are, invalid UTF-8
        // becomes U+FFFD.
        SafeRelPath::parse(&percent_decode_str(raw).decode_utf8_lossy())
    } else {
        SafeRelPath::parse(raw)
    };
    parsed.map_err(|_| refused)
}

/// How `GET /userdata/{file}` serves `file`: the root `user.css` as inline
/// CSS (the frontend links it as a stylesheet); anything else as an
/// attachment of its guessed type, with script-capable types downgraded to
/// `application/octet-stream`, so a stored file can never run in our origin.
pub fn userdata_serve_as(file: &SafeRelPath) -> ServeAs {
    if file.as_str() == "user.css" {
        return ServeAs {
            content_type: "text/css",
            content_disposition: "inline".into(),
            vary_sec_fetch_dest: false,
        };
    }
    let guessed = mime::guess(file.file_name()).unwrap_or(OCTET_STREAM);
    let content_type = if mime::is_dangerous_content_type(guessed) {
        OCTET_STREAM
    } else {
        guessed
    };
    ServeAs {
        content_type,
        content_disposition: "attachment".into(),
        vary_sec_fetch_dest: false,
    }
}

/// A userdata file ready to be streamed.
#[derive(Debug, Clone)]
pub struct UserdataFile {
    pub source: FileSource,
    pub size: u64,
    /// Same as [`userdata_serve_as`] for this file.
    pub serve_as: ServeAs,
}

/// One `/v2/userdata` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2Entry {
    pub name: String,
    /// Relative to the userdata root.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: V2Kind,
    /// Files only; absent when the file could not be stat'ed (a dangling
    /// symlink), as in ComfyUI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Files only: `st_mtime` as float seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<f64>,
}

impl V2Entry {
    /// The folder `name` in the folder whose path (relative to the
    /// userdata root) is `prefix`, empty or ending in `/`.
    pub(super) fn folder(prefix: &str, name: &str) -> Self {
        Self {
            path: format!("{prefix}{name}"),
            name: name.to_owned(),
            kind: V2Kind::Directory,
            size: None,
            modified: None,
        }
    }

    /// The file `name` in the folder at `prefix`.
    pub(super) fn file(prefix: &str, name: &str, size: Option<u64>, modified: Option<f64>) -> Self {
        Self {
            path: format!("{prefix}{name}"),
            name: name.to_owned(),
            kind: V2Kind::File,
            size,
            modified,
        }
    }
}

/// `/v2/userdata`'s order: folders first, then by lower-cased name; a
/// stable sort, like Python's, so equal names keep `os.walk`'s order.
pub(super) fn sort_v2(entries: &mut [V2Entry]) {
    entries.sort_by_key(|e| (e.kind == V2Kind::File, e.name.to_lowercase()));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum V2Kind {
    Directory,
    File,
}

impl Workspace {
    /// `GET /userdata?dir=D[&recurse=true]`: the files (not directories)
    /// under `dir`, with paths relative to `dir`.
    ///
    /// Python's `glob` is what ComfyUI uses, and glob skips names starting
    /// with `.` (files, and directories when recursing), so
    /// `workflows/.index.json` is never listed. Order: the files of a
    /// directory by name, then each subdirectory's in turn (glob's own order
    /// is the directory's, which is unspecified; this is that order sorted).
    /// A missing `dir` is 404 "Directory not found"; a `dir` that is a file
    /// lists nothing.
    pub async fn list(&self, dir: &SafeRelPath, recurse: bool) -> Result<Vec<FileInfo>> {
        if let Some(bucket) = &self.bucket {
            return Self::bucket_list(bucket, dir, recurse).await;
        }
        let base = dir.under(&self.userdata_dir());
        blocking(move || {
            let Some(md) = stat(&base) else {
                return Err(WorkspaceError::NotFound(DIR_NOT_FOUND));
            };
            let mut out = Vec::new();
            if md.is_dir() {
                glob_files(&base, "", recurse, &mut out);
            }
            Ok(out)
        })
        .await
    }

    /// `GET /userdata/{file}`: the file to stream, 404 if it is missing or
    /// is a directory.
    pub async fn read(&self, file: &SafeRelPath) -> Result<UserdataFile> {
        if let Some(bucket) = &self.bucket {
            return Self::bucket_read(bucket, file).await;
        }
        let path = file.under(&self.userdata_dir());
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(UserdataFile {
                source: FileSource::Disk(path),
                size: md.len(),
                serve_as: userdata_serve_as(file),
            }),
            _ => Err(WorkspaceError::NotFound(FILE_NOT_FOUND)),
        }
    }

    /// A userdata file's bytes (a pushed workflow compares them with its
    /// own before taking another name).
    pub async fn read_bytes(&self, file: &SafeRelPath) -> Result<Vec<u8>> {
        self.read(file).await?.source.read_all().await
    }

    /// `POST /userdata/{file}`: stores `data` atomically (staged, then
    /// renamed into place), creating parent directories. With
    /// `overwrite == false` an existing file (or directory) is 409. Returns
    /// the new file's info, its path relative to the userdata root (the plain
    /// answer is that `path` alone).
    pub async fn write(
        &self,
        file: &SafeRelPath,
        data: Vec<u8>,
        overwrite: bool,
    ) -> Result<FileInfo> {
        if file.is_root() {
            // ComfyUI's os.replace onto the user root fails with an OSError: 400.
            return Err(WorkspaceError::BadRequest(INVALID_FILENAME.into()));
        }
        if let Some(bucket) = &self.bucket {
            return self.bucket_write(bucket, file, data, overwrite).await;
        }
        let target = file.under(&self.userdata_dir());
        let staging = self.staging_dir();
        let rel = file.as_str().to_owned();
        let guard = self.write_lock().await;
        let me = self.clone();
        blocking(move || {
            let _guard = guard;
            let _across = me.lock_across_gateways()?;
            if !overwrite && stat(&target).is_some() {
                return Err(WorkspaceError::Conflict);
            }
            me.write_within_quota(data.len() as u64, Some(&target), || {
                // ComfyUI answers 400 with this reason for any OSError
                // while saving: the name is what makes creating its
                // folders or the rename fail (a file or a directory in
                // the way, a name too long).
                let invalid = |_| WorkspaceError::BadRequest(INVALID_FILENAME.into());
                create_parent(&target).map_err(invalid)?;
                let staged = Staged::write(&staging, &data)?;
                staged.persist(&target).map_err(invalid)
            })?;
            let md = fs::metadata(&target)?;
            Ok(FileInfo::new(rel, &md))
        })
        .await
    }

    /// `DELETE /userdata/{file}`: 404 if missing. A directory is refused
    /// with 400 (ComfyUI's `os.remove` crashes on one: 500).
    pub async fn delete(&self, file: &SafeRelPath) -> Result<()> {
        if let Some(bucket) = &self.bucket {
            return self.bucket_delete(bucket, file).await;
        }
        let target = file.under(&self.userdata_dir());
        let guard = self.write_lock().await;
        let me = self.clone();
        blocking(move || {
            let _guard = guard;
            let _across = me.lock_across_gateways()?;
            let Some(md) = stat(&target) else {
                return Err(WorkspaceError::NotFound(FILE_NOT_FOUND));
            };
            let is_link = fs::symlink_metadata(&target)?.file_type().is_symlink();
            if md.is_dir() && !is_link {
                return Err(WorkspaceError::BadRequest(
                    "Cannot delete a directory".into(),
                ));
            }
            me.recount_usage();
            fs::remove_file(&target)?;
            Ok(())
        })
        .await
    }

    /// `POST /userdata/{src}/move/{dest}`: 404 if `src` is missing; 409 if
    /// `dest` exists and `!overwrite`; otherwise renames (replacing a file
    /// at `dest`; parent directories of `dest` are created). Returns the
    /// info of `dest`, relative to the userdata root.
    ///
    /// Moving onto an existing directory is 409 even with `overwrite`:
    /// ComfyUI's `shutil.move` would quietly move the file *into* it and then
    /// report the directory.
    pub async fn rename(
        &self,
        src: &SafeRelPath,
        dest: &SafeRelPath,
        overwrite: bool,
    ) -> Result<FileInfo> {
        if let Some(bucket) = &self.bucket {
            return self.bucket_rename(bucket, src, dest, overwrite).await;
        }
        let root = self.userdata_dir();
        let from = src.under(&root);
        let to = dest.under(&root);
        let same = src == dest;
        let (src_root, dest_root) = (src.is_root(), dest.is_root());
        let rel = dest.as_str().to_owned();
        let guard = self.write_lock().await;
        let me = self.clone();
        blocking(move || {
            let _guard = guard;
            let _across = me.lock_across_gateways()?;
            if stat(&from).is_none() {
                return Err(WorkspaceError::NotFound(FILE_NOT_FOUND));
            }
            if src_root || dest_root {
                // Moving the user root itself, or onto it.
                return Err(WorkspaceError::BadRequest(INVALID_FILENAME.into()));
            }
            if let Some(existing) = stat(&to) {
                if !overwrite || (existing.is_dir() && !same) {
                    return Err(WorkspaceError::Conflict);
                }
            }
            if !same {
                me.recount_usage();
                create_parent(&to)?;
                fs::rename(&from, &to)?;
            }
            let md = fs::metadata(&to)?;
            Ok(FileInfo::new(rel, &md))
        })
        .await
    }

    /// `GET /v2/userdata?path=P`: everything under `P`, recursively
    /// (hidden entries included: ComfyUI walks with `os.walk`, not glob),
    /// directories first, then by lower-cased name. Paths are relative to
    /// the userdata root. A missing userdata root lists as `[]` (a new
    /// user); any other missing path is 404, a file is 400.
    pub async fn list_v2(&self, path: &SafeRelPath) -> Result<Vec<V2Entry>> {
        if let Some(bucket) = &self.bucket {
            return Self::bucket_list_v2(bucket, path).await;
        }
        let target = path.under(&self.userdata_dir());
        let is_root = path.is_root();
        let prefix = if is_root {
            String::new()
        } else {
            format!("{}/", path.as_str())
        };
        blocking(move || {
            let Some(md) = stat(&target) else {
                return if is_root {
                    Ok(Vec::new())
                } else {
                    Err(WorkspaceError::NotFound(V2_NOT_FOUND))
                };
            };
            if !md.is_dir() {
                return Err(WorkspaceError::BadRequest(V2_NOT_A_DIR.into()));
            }
            let mut out = Vec::new();
            walk_v2(&target, &prefix, &mut out);
            sort_v2(&mut out);
            Ok(out)
        })
        .await
    }
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// A directory's entries as (name, path), sorted by name. Names that are
/// not UTF-8 are skipped: they cannot travel in the JSON answers faithfully.
/// Unreadable directories read as empty, as Python's glob and walk do.
pub(super) fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(String, PathBuf)> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((name, e.path()))
        })
        .collect();
    entries.sort();
    entries
}

/// Real (not symlinked) directory: recursion never follows links, so a link
/// cannot make a listing loop or reach outside the workspace.
fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// glob(`*`) or glob(`**/*`) + `isfile`, as ComfyUI lists userdata.
fn glob_files(dir: &Path, prefix: &str, recurse: bool, out: &mut Vec<FileInfo>) {
    let entries: Vec<_> = sorted_entries(dir)
        .into_iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    for (name, path) in &entries {
        if let Some(md) = stat(path).filter(|m| m.is_file()) {
            out.push(FileInfo::new(format!("{prefix}{name}"), &md));
        }
    }
    if recurse {
        for (name, path) in &entries {
            if is_real_dir(path) {
                glob_files(path, &format!("{prefix}{name}/"), true, out);
            }
        }
    }
}

/// `os.walk` top-down: each directory's subdirectories, then its files, then
/// the same for each subdirectory. Symlinks to directories are reported as
/// directories but not entered (os.walk's `followlinks=False`).
fn walk_v2(dir: &Path, prefix: &str, out: &mut Vec<V2Entry>) {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for (name, path) in sorted_entries(dir) {
        match stat(&path) {
            Some(md) if md.is_dir() => dirs.push((name, path)),
            md => files.push((name, md)),
        }
    }
    for (name, _) in &dirs {
        out.push(V2Entry::folder(prefix, name));
    }
    for (name, md) in files {
        out.push(V2Entry::file(
            prefix,
            &name,
            md.as_ref().map(|m| m.len()),
            md.as_ref().map(mtime_secs),
        ));
    }
    for (name, path) in dirs {
        if is_real_dir(&path) {
            walk_v2(&path, &format!("{prefix}{name}/"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspaces;
    use comfyume_domain::UserName;
    use serde_json::json;

    fn p(s: &str) -> SafeRelPath {
        SafeRelPath::parse(s).unwrap()
    }

    fn setup() -> (tempfile::TempDir, Workspace) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspaces::new(tmp.path().join("users")).user(&UserName::parse("alice").unwrap());
        (tmp, ws)
    }

    /// The trace's scenario: `workflows/sub/a.json` then `workflows/b.json`.
    async fn trace_files(ws: &Workspace) {
        ws.write(&p("workflows/sub/a.json"), b"{\"y\":2}".to_vec(), true)
            .await
            .unwrap();
        ws.write(&p("workflows/b.json"), b"{\"x\":1}".to_vec(), false)
            .await
            .unwrap();
    }

    fn paths(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn write_answers_like_the_trace() {
        let (_t, ws) = setup();
        let info = ws
            .write(&p("workflows/sub/a.json"), b"{\"x\":1}".to_vec(), true)
            .await
            .unwrap();
        assert_eq!(info.path, "workflows/sub/a.json");
        assert_eq!(info.size, 7);
        assert!(info.modified > 0 && info.created >= info.modified - 1);
        let info = ws
            .write(&p("workflows/b.json"), b"{\"x\":1}".to_vec(), false)
            .await
            .unwrap();
        // The plain (`full_info` false) answer is this path as a JSON string.
        assert_eq!(json!(info.path), json!("workflows/b.json"));
        let on_disk = ws.userdata_dir().join("workflows/b.json");
        assert_eq!(fs::read(on_disk).unwrap(), b"{\"x\":1}");
        // Nothing is left in staging.
        assert_eq!(fs::read_dir(ws.staging_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn write_conflicts_without_overwrite() {
        let (_t, ws) = setup();
        trace_files(&ws).await;
        let err = ws
            .write(&p("workflows/b.json"), b"new".to_vec(), false)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Conflict));
        assert_eq!(err.to_string(), "File already exists");
        // Unchanged.
        let body = fs::read(ws.userdata_dir().join("workflows/b.json")).unwrap();
        assert_eq!(body, b"{\"x\":1}");
        // A directory in the way is also "exists".
        let err = ws
            .write(&p("workflows/sub"), b"x".to_vec(), false)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Conflict));
        // Overwrite replaces.
        let info = ws
            .write(&p("workflows/b.json"), b"new".to_vec(), true)
            .await
            .unwrap();
        assert_eq!(info.size, 3);
    }

    #[tokio::test]
    async fn write_onto_a_directory_or_the_root_is_invalid_filename() {
        let (_t, ws) = setup();
        trace_files(&ws).await;
        let err = ws
            .write(&p("workflows/sub"), b"x".to_vec(), true)
            .await
            .unwrap_err();
        assert!(matches!(&err, WorkspaceError::BadRequest(m) if m == INVALID_FILENAME));
        let err = ws.write(&p("a/.."), b"x".to_vec(), true).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::BadRequest(_)));
        assert_eq!(fs::read_dir(ws.staging_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn listing_variants_match_the_trace() {
        let (_t, ws) = setup();
        trace_files(&ws).await;
        // Hidden files and directories are not listed (glob semantics).
        ws.write(&p("workflows/.index.json"), b"{}".to_vec(), true)
            .await
            .unwrap();
        ws.write(&p("workflows/.hidden/x.json"), b"{}".to_vec(), true)
            .await
            .unwrap();

        let files = ws.list(&p("workflows"), true).await.unwrap();
        assert_eq!(
            render_listing(&files, ListFormat::Plain),
            json!(["b.json", "sub/a.json"])
        );
        assert_eq!(
            render_listing(&files, ListFormat::from_flags(false, true)),
            json!([["b.json", "b.json"], ["sub/a.json", "sub", "a.json"]])
        );
        let full = render_listing(&files, ListFormat::from_flags(true, true));
        assert_eq!(paths(&full), ["b.json", "sub/a.json"]);
        let first = full[0].as_object().unwrap();
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            ["path", "size", "modified", "created"]
        );
        assert_eq!(first["size"], json!(7));
        assert!(first["modified"].is_i64());

        let top = ws.list(&p("workflows"), false).await.unwrap();
        assert_eq!(render_listing(&top, ListFormat::Plain), json!(["b.json"]));
    }

    #[tokio::test]
    async fn listing_order_is_files_then_subdirectories_preorder() {
        let (_t, ws) = setup();
        for f in [
            "d/z.json",
            "d/a/y.json",
            "d/a/b/x.json",
            "d/c/w.json",
            "d/m.json",
        ] {
            ws.write(&p(f), b"1".to_vec(), true).await.unwrap();
        }
        let files = ws.list(&p("d"), true).await.unwrap();
        assert_eq!(
            render_listing(&files, ListFormat::Plain),
            json!(["m.json", "z.json", "a/y.json", "a/b/x.json", "c/w.json"])
        );
    }

    #[tokio::test]
    async fn listing_missing_dir_and_file_dir() {
        let (_t, ws) = setup();
        let err = ws.list(&p("workflows"), false).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::NotFound(DIR_NOT_FOUND)));
        assert_eq!(err.to_string(), "Directory not found");
        // Reading did not create anything.
        assert!(!ws.dir().exists());
        ws.write(&p("f.json"), b"1".to_vec(), true).await.unwrap();
        assert!(ws.list(&p("f.json"), true).await.unwrap().is_empty());
        // The root lists its own files.
        let root = ws.list(&p("."), false).await.unwrap();
        assert_eq!(render_listing(&root, ListFormat::Plain), json!(["f.json"]));
    }

    #[tokio::test]
    async fn read_and_its_headers() {
        let (_t, ws) = setup();
        trace_files(&ws).await;
        let f = ws.read(&p("workflows/b.json")).await.unwrap();
        assert_eq!(f.size, 7);
        assert_eq!(fs::read(f.source.disk_path()).unwrap(), b"{\"x\":1}");
        assert_eq!(f.serve_as.content_type, "application/json");
        assert_eq!(f.serve_as.content_disposition, "attachment");
        for missing in [
            "workflows/nope.json",
            "workflows/sub",
            "workflows/b.json/x",
            ".",
        ] {
            let err = ws.read(&p(missing)).await.unwrap_err();
            assert!(matches!(err, WorkspaceError::NotFound(_)), "{missing}");
        }
    }

    #[test]
    fn userdata_content_types() {
        let css = userdata_serve_as(&p("user.css"));
        assert_eq!(
            (css.content_type, css.content_disposition.as_str()),
            ("text/css", "inline")
        );
        let css = userdata_serve_as(&p("x/../user.css"));
        assert_eq!(css.content_disposition, "inline");
        for dangerous in [
            "sub/user.css",
            "a.html",
            "a.js",
            "a.svg",
            "a.xml",
            "a.mht",
            "a.xhtml",
        ] {
            let s = userdata_serve_as(&p(dangerous));
            assert_eq!(s.content_type, OCTET_STREAM, "{dangerous}");
            assert_eq!(s.content_disposition, "attachment");
        }
        assert_eq!(userdata_serve_as(&p("a.png")).content_type, "image/png");
        assert_eq!(userdata_serve_as(&p("README")).content_type, OCTET_STREAM);
        assert!(!userdata_serve_as(&p("a.png")).vary_sec_fetch_dest);
    }

    #[tokio::test]
    async fn delete_rules() {
        let (_t, ws) = setup();
        trace_files(&ws).await;
        ws.delete(&p("workflows/b.json")).await.unwrap();
        assert!(!ws.userdata_dir().join("workflows/b.json").exists());
        let err = ws.delete(&p("workflows/b.json")).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::NotFound(_)));
        let err = ws.delete(&p("workflows/sub")).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::BadRequest(_)));
        assert!(ws.userdata_dir().join("workflows/sub/a.json").exists());
    }

    #[tokio::test]
    async fn rename_rules() {
        let (_t, ws) = setup();
        trace_files(&ws).await;
        // Plain move, like the trace's b.json → c.json.
        let info = ws
            .rename(&p("workflows/b.json"), &p("workflows/c.json"), false)
            .await
            .unwrap();
        assert_eq!(info.path, "workflows/c.json");
        assert_eq!(info.size, 7);
        assert!(!ws.userdata_dir().join("workflows/b.json").exists());

        // Source missing → 404 (even when dest exists).
        let err = ws
            .rename(&p("workflows/b.json"), &p("workflows/c.json"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::NotFound(_)));

        // Onto an existing file: 409 without overwrite, replaced with it.
        let err = ws
            .rename(&p("workflows/c.json"), &p("workflows/sub/a.json"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Conflict));
        assert!(ws.userdata_dir().join("workflows/c.json").exists());
        ws.rename(&p("workflows/c.json"), &p("workflows/sub/a.json"), true)
            .await
            .unwrap();
        let moved = fs::read(ws.userdata_dir().join("workflows/sub/a.json")).unwrap();
        assert_eq!(moved, b"{\"x\":1}");

        // Into a new directory: parents are created.
        let info = ws
            .rename(&p("workflows/sub/a.json"), &p("archive/2024/a.json"), false)
            .await
            .unwrap();
        assert_eq!(info.path, "archive/2024/a.json");

        // Onto an existing directory: 409 even with overwrite.
        ws.write(&p("x.json"), b"1".to_vec(), true).await.unwrap();
        let err = ws
            .rename(&p("x.json"), &p("archive"), true)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Conflict));

        // Onto itself: 409 without overwrite (it exists), a no-op with it.
        let err = ws
            .rename(&p("x.json"), &p("x.json"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Conflict));
        let info = ws.rename(&p("x.json"), &p("./x.json"), true).await.unwrap();
        assert_eq!(info.path, "x.json");
    }

    #[tokio::test]
    async fn v2_listing_matches_the_trace() {
        let (_t, ws) = setup();
        ws.write(&p("workflows/sub/a.json"), b"{\"x\":1}".to_vec(), true)
            .await
            .unwrap();
        let entries = ws.list_v2(&p("workflows")).await.unwrap();
        let v = serde_json::to_value(&entries).unwrap();
        assert_eq!(
            v[0],
            json!({"name":"sub","path":"workflows/sub","type":"directory"})
        );
        let file = v[1].as_object().unwrap();
        assert_eq!(
            file.keys().collect::<Vec<_>>(),
            ["name", "path", "type", "size", "modified"]
        );
        assert_eq!(file["path"], json!("workflows/sub/a.json"));
        assert_eq!(file["size"], json!(7));
        assert!(file["modified"].is_f64());
        let secs = file["modified"].as_f64().unwrap();
        let ms = ws.list(&p("workflows/sub"), false).await.unwrap()[0].modified;
        assert_eq!((secs * 1000.0) as i64, ms);
    }

    #[tokio::test]
    async fn v2_sorts_directories_first_then_by_lowercase_name() {
        let (_t, ws) = setup();
        for f in ["B.json", "a.json", "Z/x.json", "c/.hidden", "c/d/e.json"] {
            ws.write(&p(f), b"1".to_vec(), true).await.unwrap();
        }
        let entries = ws.list_v2(&SafeRelPath::root()).await.unwrap();
        let got: Vec<(&str, V2Kind)> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        use V2Kind::*;
        // The key is the *name*, so entries of different depths interleave.
        assert_eq!(
            got,
            [
                ("c", Directory),
                ("c/d", Directory),
                ("Z", Directory),
                ("c/.hidden", File),
                ("a.json", File),
                ("B.json", File),
                ("c/d/e.json", File),
                ("Z/x.json", File),
            ]
        );
    }

    #[tokio::test]
    async fn v2_missing_root_file_and_missing_path() {
        let (_t, ws) = setup();
        assert!(ws.list_v2(&SafeRelPath::root()).await.unwrap().is_empty());
        let err = ws.list_v2(&p("workflows")).await.unwrap_err();
        assert_eq!(err.to_string(), "Requested path not found");
        ws.write(&p("f.json"), b"1".to_vec(), true).await.unwrap();
        let err = ws.list_v2(&p("f.json")).await.unwrap_err();
        assert!(matches!(&err, WorkspaceError::BadRequest(m) if m == V2_NOT_A_DIR));
    }

    #[test]
    fn flags() {
        assert!(query_flag(Some("true")));
        assert!(query_flag(Some("TRUE")));
        assert!(!query_flag(Some("1")));
        assert!(!query_flag(None));
        assert!(overwrite_flag(None));
        assert!(overwrite_flag(Some("undefined")));
        assert!(overwrite_flag(Some("FALSE")));
        assert!(!overwrite_flag(Some("false")));
        assert_eq!(ListFormat::from_flags(false, false), ListFormat::Plain);
    }

    #[test]
    fn path_parsing() {
        assert_eq!(
            parse_userdata_path("workflows/a b.json").unwrap().as_str(),
            "workflows/a b.json"
        );
        // A `%` left after the router's decoding is unquoted once more.
        assert_eq!(
            parse_userdata_path("workflows%2Fa%20b.json")
                .unwrap()
                .as_str(),
            "workflows/a b.json"
        );
        assert_eq!(
            parse_userdata_path("100%.json").unwrap().as_str(),
            "100%.json"
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "%2E%2E/x",
            "a/../../x",
            "a\0b",
            "..%2F..%2Fbob",
        ] {
            let err = parse_userdata_path(bad).unwrap_err();
            assert!(matches!(err, WorkspaceError::Forbidden(_)), "{bad}");
        }
        let err = parse_userdata_dir(None).unwrap_err();
        assert_eq!(err.to_string(), "Directory not provided");
        assert!(matches!(
            parse_userdata_dir(Some("")),
            Err(WorkspaceError::BadRequest(_))
        ));
        let err = parse_userdata_dir(Some("..")).unwrap_err();
        assert!(matches!(err, WorkspaceError::Forbidden(INVALID_DIRECTORY)));
        assert!(parse_userdata_dir(Some(".")).unwrap().is_root());

        assert!(parse_v2_path(None).unwrap().is_root());
        assert_eq!(
            parse_v2_path(Some("workflows%2Fsub")).unwrap().as_str(),
            "workflows/sub"
        );
        let err = parse_v2_path(Some("%2e%2e")).unwrap_err();
        assert_eq!(err.to_string(), "Invalid path requested");
    }

    #[tokio::test]
    async fn users_are_isolated() {
        let tmp = tempfile::tempdir().unwrap();
        let all = Workspaces::new(tmp.path().join("users"));
        let alice = all.user(&UserName::parse("alice").unwrap());
        let bob = all.user(&UserName::parse("bob").unwrap());
        alice
            .write(&p("workflows/a.json"), b"1".to_vec(), true)
            .await
            .unwrap();
        assert!(bob.read(&p("workflows/a.json")).await.is_err());
        assert!(parse_userdata_path("../bob/userdata/x").is_err());
        assert!(matches!(
            bob.list(&p("workflows"), true).await,
            Err(WorkspaceError::NotFound(_))
        ));
    }
}
