//! The `input/`, `output/` and `temp/` folders: `/upload/image`, `/view`,
//! `/internal/files/{kind}` and LoadImage's list of choices (ComfyUI
//! server.py, folder_paths.py, internal_routes.py, nodes.py).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::error::FILE_NOT_FOUND;
use super::mime::{self, OCTET_STREAM, ServeAs};
use super::source::FileSource;
use super::userdata::sorted_entries;
use super::{Result, Staged, Workspace, WorkspaceError, blocking, stat};
use comfyume_domain::{FileKind, PathError, SafeRelPath};

/// What `POST /upload/image` answers: `{"name","subfolder","type"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadOutcome {
    /// The stored name: the given one, or `name (N).ext` when a different
    /// file already had it.
    pub name: String,
    /// The subfolder, normalised (`pasted/` comes back as `pasted`).
    pub subfolder: String,
    #[serde(rename = "type", serialize_with = "kind_str")]
    pub kind: FileKind,
}

fn kind_str<S: Serializer>(kind: &FileKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// The upload's `type` field: absent means `input`. ComfyUI crashes (500)
/// on any other value; we answer 400.
pub fn parse_upload_type(raw: Option<&str>) -> Result<FileKind> {
    match raw {
        None => Ok(FileKind::Input),
        Some(raw) => raw
            .parse()
            .map_err(|()| WorkspaceError::BadRequest("Invalid upload type".into())),
    }
}

/// The upload's `subfolder` field: absent or empty is the folder itself; one
/// that climbs out is 400 (as in ComfyUI).
pub fn parse_upload_subfolder(raw: Option<&str>) -> Result<SafeRelPath> {
    SafeRelPath::parse(raw.unwrap_or("")).map_err(|e| match e {
        PathError::TooLong => WorkspaceError::BadRequest("Subfolder too long".into()),
        _ => WorkspaceError::BadRequest("Invalid subfolder".into()),
    })
}

/// The longest upload file name, in bytes.
const MAX_UPLOAD_NAME_BYTES: usize = comfyume_domain::MAX_SEGMENT_BYTES - 20;

/// The upload part's file name: exactly one path segment, stored as given.
/// Empty, `.`, `..`, or anything with a separator or NUL is 400. (ComfyUI
/// joins the name onto the folder, so `a/b.png` would land in a
/// subdirectory; browsers never send that, and `subfolder` exists for it.)
pub fn parse_upload_file_name(raw: &str) -> Result<String> {
    // Room left for the " (n)" a same-named upload gets.
    if raw.len() > MAX_UPLOAD_NAME_BYTES {
        return Err(WorkspaceError::BadRequest("File name too long".into()));
    }
    match SafeRelPath::parse_file_name(raw) {
        Ok(p) if p.as_str() == raw => Ok(raw.to_owned()),
        _ => Err(WorkspaceError::BadRequest("Invalid file name".into())),
    }
}

/// The upload's `overwrite` field: only `"true"` or `"1"` overwrite.
pub fn upload_overwrite_flag(raw: Option<&str>) -> bool {
    matches!(raw, Some("true" | "1"))
}

/// A `/view` request with its raw strings checked (see
/// [`parse_view_request`]). Also what a handler needs to forward the
/// request to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRequest {
    pub kind: FileKind,
    pub subfolder: SafeRelPath,
    /// One plain path segment.
    pub file_name: String,
}

impl ViewRequest {
    /// Where the file would be in `ws`. Always strictly inside
    /// `ws.kind_dir(self.kind)`.
    pub fn path_in(&self, ws: &Workspace) -> PathBuf {
        self.subfolder
            .under(&ws.kind_dir(self.kind))
            .join(&self.file_name)
    }
}

/// A `/view` file that exists and is a regular file.
#[derive(Debug, Clone)]
pub struct ViewTarget {
    pub source: FileSource,
    /// The name for `Content-Disposition` (annotation and directories
    /// stripped).
    pub file_name: String,
    pub kind: FileKind,
    pub subfolder: SafeRelPath,
    pub size: u64,
}

/// ComfyUI's `/view` rules for the raw `filename`, `type` and `subfolder`
/// query values, in ComfyUI's order:
///
/// 1. no `filename` → 404; a `blake3:` asset hash → 404 (the assets
///    feature, which resolves those, is disabled here);
/// 2. a trailing `[output]`, `[input]` or `[temp]` picks the folder and
///    overrides `type`; like ComfyUI we cut the tag and the one character
///    before it (the space in `"x.png [input]"`);
/// 3. an empty name → 400; a name starting with `/` or containing `..` → 400;
/// 4. without a tag, `type` (default `output`) must be `input`, `output` or
///    `temp` → else 400;
/// 5. a `subfolder` that climbs out of the folder (or is absolute) → 403;
/// 6. only the last `/`-separated part of the name is used; if that is not a
///    plain file name (empty, `.`, holds a backslash or NUL) no such file can
///    exist → 404.
pub fn parse_view_request(
    filename: Option<&str>,
    kind: Option<&str>,
    subfolder: Option<&str>,
) -> Result<ViewRequest> {
    let Some(raw) = filename else {
        return Err(WorkspaceError::NotFound(FILE_NOT_FOUND));
    };
    if raw.starts_with("blake3:") {
        return Err(WorkspaceError::NotFound(FILE_NOT_FOUND));
    }
    let (name, tagged) = strip_annotation(raw);
    if name.is_empty() {
        return Err(WorkspaceError::BadRequest("Missing filename".into()));
    }
    if name.starts_with('/') || name.contains("..") {
        return Err(WorkspaceError::BadRequest("Invalid filename".into()));
    }
    let kind = match tagged {
        Some(kind) => kind,
        None => kind
            .unwrap_or("output")
            .parse()
            .map_err(|()| WorkspaceError::BadRequest("Invalid type".into()))?,
    };
    let subfolder = match subfolder {
        None => SafeRelPath::root(),
        Some(raw) => {
            SafeRelPath::parse(raw).map_err(|_| WorkspaceError::Forbidden("Invalid subfolder"))?
        }
    };
    let base = name.rsplit('/').next().unwrap_or(&name);
    match SafeRelPath::parse_file_name(base) {
        Ok(p) if p.as_str() == base => Ok(ViewRequest {
            kind,
            subfolder,
            file_name: base.to_owned(),
        }),
        _ => Err(WorkspaceError::NotFound(FILE_NOT_FOUND)),
    }
}

/// folder_paths.annotated_filepath: the tag check is on the bare `[kind]`
/// but the cut is one character longer, so `x.png [input]` → `x.png` and
/// `x.png[input]` → `x.pn` (faithfully odd).
fn strip_annotation(name: &str) -> (String, Option<FileKind>) {
    for (tag, kind) in [
        ("[output]", FileKind::Output),
        ("[input]", FileKind::Input),
        ("[temp]", FileKind::Temp),
    ] {
        if let Some(rest) = name.strip_suffix(tag) {
            let mut rest = rest.to_owned();
            rest.pop();
            return (rest, Some(kind));
        }
    }
    (name.to_owned(), None)
}

/// How `/view` serves `file_name` converted (`preview` or `channel`) to
/// `content_type`: ComfyUI's `filename="<name>"`, never an attachment (the
/// conversions write only images).
pub fn converted_serve_as(file_name: &str, content_type: &'static str) -> ServeAs {
    ServeAs {
        content_type,
        content_disposition: mime::quoted_file_name(file_name),
        vary_sec_fetch_dest: false,
    }
}

/// How `/view` serves the file `file_name` (the unchanged-bytes branch,
/// without `preview`/`channel`): its guessed type and
/// `filename="<name>"`; script-capable types become
/// `application/octet-stream` with `attachment; filename="<name>"`, except an
/// SVG requested with `Sec-Fetch-Dest: image`. Those dangerous types also
/// set [`ServeAs::vary_sec_fetch_dest`].
pub fn view_serve_as(file_name: &str, sec_fetch_dest: Option<&str>) -> ServeAs {
    let guessed = mime::guess(file_name).unwrap_or(OCTET_STREAM);
    let quoted = mime::quoted_file_name(file_name);
    if !mime::is_dangerous_content_type(guessed) {
        return ServeAs {
            content_type: guessed,
            content_disposition: quoted,
            vary_sec_fetch_dest: false,
        };
    }
    if mime::renders_safely_as_image(guessed, sec_fetch_dest) {
        ServeAs {
            content_type: guessed,
            content_disposition: quoted,
            vary_sec_fetch_dest: true,
        }
    } else {
        ServeAs {
            content_type: OCTET_STREAM,
            content_disposition: format!("attachment; {quoted}"),
            vary_sec_fetch_dest: true,
        }
    }
}

impl Workspace {
    /// `POST /upload/image` (and `/upload/mask`, treated the same): stores
    /// `data` as `file_name` in `kind`'s folder under `subfolder` (created
    /// if missing).
    ///
    /// Without `overwrite`, when the name is taken: identical bytes reuse
    /// the name without writing; different bytes try `stem (1).ext`,
    /// `stem (2).ext`, ... applying the same rule to each. With `overwrite`
    /// the file is replaced. The name-picking runs under the user's write
    /// lock, so two simultaneous uploads never claim the same name.
    pub async fn save_upload(
        &self,
        kind: FileKind,
        subfolder: &SafeRelPath,
        file_name: &str,
        data: Vec<u8>,
        overwrite: bool,
    ) -> Result<UploadOutcome> {
        let file_name = parse_upload_file_name(file_name)?;
        if let Some(bucket) = &self.bucket {
            let name = self
                .bucket_save_upload(bucket, kind, subfolder, file_name, data, overwrite)
                .await?;
            return Ok(UploadOutcome {
                name,
                subfolder: subfolder.as_str().to_owned(),
                kind,
            });
        }
        let dir = subfolder.under(&self.kind_dir(kind));
        let staging = self.staging_dir();
        let guard = self.write_lock().await;
        let me = self.clone();
        let name = blocking(move || {
            let _guard = guard;
            let _across = me.lock_across_gateways()?;
            fs::create_dir_all(&dir)?;
            if overwrite {
                let target = dir.join(&file_name);
                me.write_within_quota(data.len() as u64, Some(&target), || {
                    Ok(Staged::write(&staging, &data)?.persist(&target)?)
                })?;
                return Ok(file_name);
            }
            let (stem, ext) = split_ext(&file_name);
            let mut name = file_name.clone();
            let mut n: u64 = 1;
            loop {
                let target = dir.join(&name);
                match fs::symlink_metadata(&target) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Only a new file needs room: the same content
                        // already stored is reused below.
                        me.write_within_quota(data.len() as u64, None, || {
                            Ok(Staged::write(&staging, &data)?.persist(&target)?)
                        })?;
                        return Ok(name);
                    }
                    Err(e) => return Err(e.into()),
                    Ok(_) => {
                        if same_content(&target, &data)? {
                            return Ok(name);
                        }
                    }
                }
                name = format!("{stem} ({n}){ext}");
                n += 1;
            }
        })
        .await?;
        Ok(UploadOutcome {
            name,
            subfolder: subfolder.as_str().to_owned(),
            kind,
        })
    }

    /// `GET /view`: checks the raw query values (see [`parse_view_request`])
    /// and finds the file; 404 if it is missing or not a regular file.
    pub async fn resolve_view(
        &self,
        filename: Option<&str>,
        kind: Option<&str>,
        subfolder: Option<&str>,
    ) -> Result<ViewTarget> {
        let req = parse_view_request(filename, kind, subfolder)?;
        if let Some(bucket) = &self.bucket {
            let raw = if req.subfolder.is_root() {
                req.file_name.clone()
            } else {
                format!("{}/{}", req.subfolder.as_str(), req.file_name)
            };
            let rel =
                SafeRelPath::parse(&raw).map_err(|_| WorkspaceError::NotFound(FILE_NOT_FOUND))?;
            return match Self::bucket_find(bucket, req.kind, &rel).await? {
                Some((source, size)) => Ok(ViewTarget {
                    source,
                    file_name: req.file_name,
                    kind: req.kind,
                    subfolder: req.subfolder,
                    size,
                }),
                None => Err(WorkspaceError::NotFound(FILE_NOT_FOUND)),
            };
        }
        let path = req.path_in(self);
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(ViewTarget {
                source: FileSource::Disk(path),
                file_name: req.file_name,
                kind: req.kind,
                subfolder: req.subfolder,
                size: md.len(),
            }),
            _ => Err(WorkspaceError::NotFound(FILE_NOT_FOUND)),
        }
    }

    /// `GET /internal/files/{kind}`: the folder's own files (not its
    /// subfolders'), hidden ones excluded, newest first (ties by name), each
    /// as `"name [kind]"`. A folder not created yet lists as `[]`.
    pub async fn list_files(&self, kind: FileKind) -> Result<Vec<String>> {
        if let Some(bucket) = &self.bucket {
            return Self::bucket_list_files(bucket, kind).await;
        }
        let dir = self.kind_dir(kind);
        blocking(move || {
            let mut files: Vec<(SystemTime, String)> = sorted_entries(&dir)
                .into_iter()
                .filter(|(name, _)| !name.starts_with('.'))
                .filter_map(|(name, path)| {
                    let md = stat(&path).filter(|m| m.is_file())?;
                    Some((md.modified().unwrap_or(SystemTime::UNIX_EPOCH), name))
                })
                .collect();
            // Newest first; the name order from `sorted_entries` survives
            // among equal times because the sort is stable.
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            Ok(files
                .into_iter()
                .map(|(_, name)| format!("{name} [{}]", kind.as_str()))
                .collect())
        })
        .await
    }

    /// LoadImage's choices: the input folder's own files (not its
    /// subfolders'; hidden ones included, as `os.listdir` does) whose type is
    /// an image, sorted by name.
    pub async fn input_images(&self) -> Result<Vec<String>> {
        if let Some(bucket) = &self.bucket {
            return Self::bucket_input_images(bucket).await;
        }
        let dir = self.kind_dir(FileKind::Input);
        blocking(move || {
            Ok(sorted_entries(&dir)
                .into_iter()
                .filter(|(name, path)| {
                    stat(path).is_some_and(|m| m.is_file())
                        && mime::content_class(name) == Some("image")
                })
                .map(|(name, _)| name)
                .collect())
        })
        .await
    }
}

/// Python's `os.path.splitext` on a bare name: the extension starts at the
/// last dot, unless only dots precede it (`.bashrc` has none).
pub(super) fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if name[..i].chars().any(|c| c != '.') => name.split_at(i),
        _ => (name, ""),
    }
}

/// Whether the file at `path` holds exactly `data` (ComfyUI compares
/// hashes; comparing the bytes gives the same answer). A directory or
/// unreadable entry is "different", so the upload moves on to a new name.
fn same_content(path: &Path, data: &[u8]) -> io::Result<bool> {
    let Some(md) = stat(path).filter(|m| m.is_file()) else {
        return Ok(false);
    };
    if md.len() != data.len() as u64 {
        return Ok(false);
    }
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0usize;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(offset == data.len());
        }
        let end = offset + n;
        if end > data.len() || buf[..n] != data[offset..end] {
            return Ok(false);
        }
        offset = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{Workspaces, parse_userdata_dir, parse_userdata_path, parse_v2_path};
    use comfyume_domain::UserName;
    use proptest::prelude::*;
    use serde_json::json;
    use std::path::Component;

    fn p(s: &str) -> SafeRelPath {
        SafeRelPath::parse(s).unwrap()
    }

    fn setup() -> (tempfile::TempDir, Workspaces, Workspace) {
        let tmp = tempfile::tempdir().unwrap();
        let all = Workspaces::new(tmp.path().join("users"));
        let ws = all.user(&UserName::parse("alice").unwrap());
        (tmp, all, ws)
    }

    fn put(ws: &Workspace, kind: FileKind, rel: &str, data: &[u8]) -> PathBuf {
        let path = p(rel).under(&ws.kind_dir(kind));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        path
    }

    #[tokio::test]
    async fn upload_reuses_renames_and_overwrites_like_the_trace() {
        let (_t, _a, ws) = setup();
        let root = SafeRelPath::root();
        let first = ws
            .save_upload(FileKind::Input, &root, "g.png", b"one".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&first).unwrap(),
            json!({"name":"g.png","subfolder":"","type":"input"})
        );
        // Same bytes: same name, nothing new written.
        let dup = ws
            .save_upload(FileKind::Input, &root, "g.png", b"one".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(dup.name, "g.png");
        // Different bytes: the next free name.
        let renamed = ws
            .save_upload(FileKind::Input, &root, "g.png", b"two".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(renamed.name, "g (1).png");
        let third = ws
            .save_upload(FileKind::Input, &root, "g.png", b"three".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(third.name, "g (2).png");
        // Same bytes as "g (1).png": found while walking the names.
        let again = ws
            .save_upload(FileKind::Input, &root, "g.png", b"two".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(again.name, "g (1).png");
        let input = ws.kind_dir(FileKind::Input);
        assert_eq!(fs::read(input.join("g.png")).unwrap(), b"one");
        assert_eq!(fs::read(input.join("g (1).png")).unwrap(), b"two");
        assert_eq!(fs::read(input.join("g (2).png")).unwrap(), b"three");
        assert_eq!(fs::read_dir(&input).unwrap().count(), 3);

        // Subfolder + overwrite, as the trace's pasted upload.
        let pasted = parse_upload_subfolder(Some("pasted/")).unwrap();
        ws.save_upload(FileKind::Input, &pasted, "g.png", b"old".to_vec(), false)
            .await
            .unwrap();
        let over = ws
            .save_upload(FileKind::Input, &pasted, "g.png", b"new".to_vec(), true)
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&over).unwrap(),
            json!({"name":"g.png","subfolder":"pasted","type":"input"})
        );
        assert_eq!(fs::read(input.join("pasted/g.png")).unwrap(), b"new");
        assert_eq!(fs::read_dir(ws.staging_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn upload_to_other_kinds_and_names_without_extension() {
        let (_t, _a, ws) = setup();
        let root = SafeRelPath::root();
        ws.save_upload(FileKind::Temp, &root, "noext", b"a".to_vec(), false)
            .await
            .unwrap();
        let out = ws
            .save_upload(FileKind::Temp, &root, "noext", b"b".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(out.name, "noext (1)");
        assert_eq!(serde_json::to_value(&out).unwrap()["type"], json!("temp"));
        // A directory in the way is never "the same content".
        fs::create_dir_all(ws.kind_dir(FileKind::Output).join("d.png")).unwrap();
        let out = ws
            .save_upload(FileKind::Output, &root, "d.png", b"x".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(out.name, "d (1).png");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_different_uploads_get_distinct_names() {
        let (_t, all, _ws) = setup();
        let name = UserName::parse("alice").unwrap();
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let ws = all.user(&name);
            tasks.push(tokio::spawn(async move {
                ws.save_upload(
                    FileKind::Input,
                    &SafeRelPath::root(),
                    "x.png",
                    vec![i],
                    false,
                )
                .await
                .unwrap()
                .name
            }));
        }
        let mut names = Vec::new();
        for t in tasks {
            names.push(t.await.unwrap());
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 8);
    }

    #[tokio::test]
    async fn upload_refuses_bad_names() {
        let (_t, _a, ws) = setup();
        for bad in ["", ".", "..", "a/b.png", "a\\b.png", "/x.png", "x\0.png"] {
            let err = ws
                .save_upload(
                    FileKind::Input,
                    &SafeRelPath::root(),
                    bad,
                    b"x".to_vec(),
                    false,
                )
                .await
                .unwrap_err();
            assert!(matches!(err, WorkspaceError::BadRequest(_)), "{bad:?}");
        }
        assert!(!ws.dir().exists());
    }

    #[test]
    fn upload_field_parsing() {
        assert_eq!(parse_upload_type(None).unwrap(), FileKind::Input);
        assert_eq!(parse_upload_type(Some("temp")).unwrap(), FileKind::Temp);
        assert!(parse_upload_type(Some("")).is_err());
        assert!(parse_upload_type(Some("models")).is_err());
        assert!(parse_upload_subfolder(None).unwrap().is_root());
        assert!(parse_upload_subfolder(Some("")).unwrap().is_root());
        assert_eq!(
            parse_upload_subfolder(Some("a/./b")).unwrap().as_str(),
            "a/b"
        );
        for bad in ["..", "../x", "/tmp", "a/../../x"] {
            assert!(
                matches!(
                    parse_upload_subfolder(Some(bad)),
                    Err(WorkspaceError::BadRequest(_))
                ),
                "{bad}"
            );
        }
        assert!(upload_overwrite_flag(Some("true")));
        assert!(upload_overwrite_flag(Some("1")));
        assert!(!upload_overwrite_flag(Some("True")));
        assert!(!upload_overwrite_flag(Some("false")));
        assert!(!upload_overwrite_flag(None));
        assert_eq!(
            parse_upload_file_name(".hidden.png").unwrap(),
            ".hidden.png"
        );
        assert_eq!(
            parse_upload_file_name("a b (1).png").unwrap(),
            "a b (1).png"
        );
    }

    #[test]
    fn splitext_like_python() {
        assert_eq!(split_ext("g.png"), ("g", ".png"));
        assert_eq!(split_ext("a.tar.gz"), ("a.tar", ".gz"));
        assert_eq!(split_ext(".bashrc"), (".bashrc", ""));
        assert_eq!(split_ext("..x.png"), ("..x", ".png"));
        assert_eq!(split_ext("noext"), ("noext", ""));
        assert_eq!(split_ext("a."), ("a", "."));
    }

    #[tokio::test]
    async fn view_resolves_plain_annotated_and_subfolder() {
        let (_t, _a, ws) = setup();
        put(&ws, FileKind::Output, "trace_00001_.png", b"png");
        put(&ws, FileKind::Input, "g.png", b"in");
        put(&ws, FileKind::Input, "pasted/g.png", b"sub");
        put(&ws, FileKind::Temp, "t.png", b"tmp");

        // Default type is output.
        let t = ws
            .resolve_view(Some("trace_00001_.png"), None, None)
            .await
            .unwrap();
        assert_eq!(t.kind, FileKind::Output);
        assert_eq!(t.file_name, "trace_00001_.png");
        assert_eq!(t.size, 3);
        // The annotation picks the folder and beats `type`.
        let t = ws
            .resolve_view(Some("g.png [input]"), Some("output"), None)
            .await
            .unwrap();
        assert_eq!(
            (t.kind, fs::read(t.source.disk_path()).unwrap()),
            (FileKind::Input, b"in".to_vec())
        );
        let t = ws
            .resolve_view(Some("g.png [input]"), Some("bogus"), Some("pasted"))
            .await
            .unwrap();
        assert_eq!(fs::read(t.source.disk_path()).unwrap(), b"sub");
        let t = ws
            .resolve_view(Some("t.png"), Some("temp"), Some(""))
            .await
            .unwrap();
        assert_eq!(t.kind, FileKind::Temp);
        // Only the basename of the filename counts.
        let t = ws
            .resolve_view(Some("whatever/g.png"), Some("input"), None)
            .await
            .unwrap();
        assert_eq!(fs::read(t.source.disk_path()).unwrap(), b"in");
        assert_eq!(t.file_name, "g.png");
    }

    #[tokio::test]
    async fn view_not_found_cases() {
        let (_t, _a, ws) = setup();
        put(&ws, FileKind::Output, "sub/x.png", b"x");
        for (f, ty, sub) in [
            (None, None, None),
            (Some("nope.png"), None, None),
            (Some("sub"), None, None),           // a directory
            (Some("sub/"), None, None),          // empty basename
            (Some("blake3:abcdef"), None, None), // assets are disabled
            (Some("x.png"), Some("input"), Some("sub")),
            (Some("a\\b.png"), None, None),
            (Some("x.png\0"), None, Some("sub")),
        ] {
            let err = ws.resolve_view(f, ty, sub).await.unwrap_err();
            assert!(
                matches!(err, WorkspaceError::NotFound(_)),
                "{f:?} {ty:?} {sub:?}"
            );
        }
    }

    #[tokio::test]
    async fn view_traversal_attempts() {
        let (tmp, all, alice) = setup();
        let bob = all.user(&UserName::parse("bob").unwrap());
        put(&bob, FileKind::Output, "secret.png", b"bob's");
        fs::write(tmp.path().join("passwd"), b"root").unwrap();

        let bad_request = [
            ("../x", None, None),
            ("/etc/passwd", None, None),
            ("../../bob/output/secret.png", None, None),
            ("..%2f..%2fbob%2Foutput%2Fsecret.png", None, None),
            ("..\\..\\bob\\output\\secret.png", None, None),
            ("secret.png/..", None, None),
            ("/secret.png [output]", None, None),
            (" [output]", None, None),
            ("[input]", None, None),
            ("secret.png", Some("models"), None),
            ("secret.png", Some(""), None),
            ("secret.png", Some("../output"), None),
        ];
        for (f, ty, sub) in bad_request {
            let err = alice.resolve_view(Some(f), ty, sub).await.unwrap_err();
            assert!(matches!(err, WorkspaceError::BadRequest(_)), "{f:?} {ty:?}");
        }
        let forbidden = [
            ("secret.png", None, Some("../../bob/output")),
            (
                "secret.png [output]",
                Some("input"),
                Some("../../bob/output"),
            ),
            ("secret.png", None, Some("..")),
            ("secret.png", None, Some("/")),
            ("passwd", None, Some("/etc")),
            ("secret.png", None, Some("..\\..\\bob\\output")),
            ("secret.png", None, Some("a/../../..")),
        ];
        for (f, ty, sub) in forbidden {
            let err = alice.resolve_view(Some(f), ty, sub).await.unwrap_err();
            assert!(matches!(err, WorkspaceError::Forbidden(_)), "{f:?} {sub:?}");
        }
        // Percent-escapes were decoded by the router: what is left is a
        // literal name that simply does not exist.
        let err = alice
            .resolve_view(Some("secret.png"), None, Some("%2e%2e/%2e%2e/bob/output"))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::NotFound(_)));
        // Bob's own view still works.
        assert!(
            bob.resolve_view(Some("secret.png"), None, None)
                .await
                .is_ok()
        );
    }

    #[test]
    fn annotation_stripping_is_faithful() {
        assert_eq!(
            strip_annotation("a.png [output]"),
            ("a.png".into(), Some(FileKind::Output))
        );
        assert_eq!(
            strip_annotation("a.png [temp]"),
            ("a.png".into(), Some(FileKind::Temp))
        );
        assert_eq!(
            strip_annotation("a.png[input]"),
            ("a.pn".into(), Some(FileKind::Input))
        );
        assert_eq!(
            strip_annotation("é[input]"),
            ("".into(), Some(FileKind::Input))
        );
        assert_eq!(
            strip_annotation("a.png [models]"),
            ("a.png [models]".into(), None)
        );
    }

    #[test]
    fn view_content_types() {
        let png = view_serve_as("trace_00001_.png", None);
        assert_eq!(png.content_type, "image/png");
        assert_eq!(png.content_disposition, "filename=\"trace_00001_.png\"");
        assert!(!png.vary_sec_fetch_dest);

        for name in ["x.html", "x.js", "x.css", "x.xml", "x.xhtml", "x.mht"] {
            for dest in [None, Some("image"), Some("document")] {
                let s = view_serve_as(name, dest);
                assert_eq!(s.content_type, OCTET_STREAM, "{name} {dest:?}");
                assert_eq!(
                    s.content_disposition,
                    format!("attachment; filename=\"{name}\"")
                );
                assert!(s.vary_sec_fetch_dest);
            }
        }
        let svg_img = view_serve_as("x.svg", Some("image"));
        assert_eq!(svg_img.content_type, "image/svg+xml");
        assert_eq!(svg_img.content_disposition, "filename=\"x.svg\"");
        assert!(svg_img.vary_sec_fetch_dest);
        let svg_doc = view_serve_as("x.svg", Some("document"));
        assert_eq!(svg_doc.content_type, OCTET_STREAM);
        assert!(svg_doc.content_disposition.starts_with("attachment; "));
        assert_eq!(view_serve_as("x.svg", None).content_type, OCTET_STREAM);

        assert_eq!(view_serve_as("blob", None).content_type, OCTET_STREAM);
        assert_eq!(
            view_serve_as("a\"b.png", None).content_disposition,
            "filename=\"a\\\"b.png\""
        );
    }

    #[tokio::test]
    async fn internal_files_listing() {
        let (_t, _a, ws) = setup();
        assert!(ws.list_files(FileKind::Output).await.unwrap().is_empty());
        let base = SystemTime::now();
        for (i, name) in ["trace_00001_.png", "trace_00002_.png", "trace_00003_.png"]
            .iter()
            .enumerate()
        {
            let path = put(&ws, FileKind::Output, name, b"x");
            let f = fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(base + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        put(&ws, FileKind::Output, ".DS_Store", b"x");
        put(&ws, FileKind::Output, "sub/nested.png", b"x");
        assert_eq!(
            ws.list_files(FileKind::Output).await.unwrap(),
            [
                "trace_00003_.png [output]",
                "trace_00002_.png [output]",
                "trace_00001_.png [output]"
            ]
        );
        put(&ws, FileKind::Input, "g.png", b"x");
        assert_eq!(
            ws.list_files(FileKind::Input).await.unwrap(),
            ["g.png [input]"]
        );
        assert!(ws.list_files(FileKind::Temp).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn load_image_choices() {
        let (_t, _a, ws) = setup();
        assert!(ws.input_images().await.unwrap().is_empty());
        for name in [
            "b.png",
            "a.JPG",
            "c.webp",
            "notes.txt",
            "clip.mp4",
            "noext",
            ".h.png",
            "sub/d.png",
        ] {
            put(&ws, FileKind::Input, name, b"x");
        }
        fs::create_dir_all(ws.kind_dir(FileKind::Input).join("dir.png")).unwrap();
        assert_eq!(
            ws.input_images().await.unwrap(),
            [".h.png", "a.JPG", "b.png", "c.webp"]
        );
    }

    /// Strings built from the pieces that path attacks are made of, plus
    /// arbitrary Unicode.
    fn tricky() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(\\.\\.|\\.|/|\\\\|%2[eEfF]|%25|%00|\\x00|a|b\\.png|~|C:| \\[input\\]| \\[output\\]|\\[temp\\]){0,10}",
        ]
    }

    fn stays_inside(path: &Path, base: &Path) -> bool {
        path.starts_with(base)
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    }

    proptest! {
        #[test]
        fn view_requests_never_leave_their_folder(
            f in tricky(),
            ty in proptest::option::of(tricky()),
            sub in proptest::option::of(tricky()),
        ) {
            let ws = Workspaces::new(PathBuf::from("/srv/users"))
                .user(&UserName::parse("alice").unwrap());
            if let Ok(req) = parse_view_request(Some(&f), ty.as_deref(), sub.as_deref()) {
                let path = req.path_in(&ws);
                let base = ws.kind_dir(req.kind);
                prop_assert!(stays_inside(&path, &base), "{path:?}");
                prop_assert!(path != base);
            }
        }

        #[test]
        fn parsed_paths_never_leave_their_root(raw in tricky()) {
            let root = Path::new("/srv/users/alice/userdata");
            let parsed = [
                parse_userdata_path(&raw).ok(),
                parse_userdata_dir(Some(&raw)).ok(),
                parse_v2_path(Some(&raw)).ok(),
                parse_upload_subfolder(Some(&raw)).ok(),
                SafeRelPath::parse(&raw).ok(),
            ];
            for p in parsed.into_iter().flatten() {
                prop_assert!(stays_inside(&p.under(root), root), "{p:?}");
            }
            if let Ok(name) = parse_upload_file_name(&raw) {
                let path = root.join(&name);
                prop_assert!(stays_inside(&path, root) && path.parent() == Some(root));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The same property end to end, against a real directory holding
        /// a file just outside the user's folders.
        #[test]
        fn resolve_view_never_leaves_the_workspace(
            f in tricky(),
            ty in proptest::option::of(tricky()),
            sub in proptest::option::of(tricky()),
        ) {
            let (tmp, all, ws) = setup();
            fs::write(tmp.path().join("users").join("b.png"), b"outside").ok();
            let bob = all.user(&UserName::parse("bob").unwrap());
            put(&bob, FileKind::Output, "b.png", b"bob");
            put(&ws, FileKind::Output, "b.png", b"mine");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            if let Ok(t) = rt.block_on(ws.resolve_view(Some(&f), ty.as_deref(), sub.as_deref())) {
                prop_assert!(stays_inside(t.source.disk_path(), ws.dir()), "{:?}", t.source.disk_path());
                prop_assert_eq!(fs::read(t.source.disk_path()).unwrap(), b"mine".to_vec());
            }
        }
    }
}
