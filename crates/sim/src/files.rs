//! The simulator's input/, output/ and temp/ folders, and the routes that
//! reach them: `GET /view` and `POST /upload/image` (docs/comfyui-api.md
//! §6.7, §6.8).
//!
//! Paths from clients are resolved lexically and must stay inside their
//! folder. Stock checks `/view` and uploads the same way; for `LoadImage`
//! names, which stock does not confine, the simulator refuses escapes too.

use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SimState;
use super::png;

/// The three folders of a ComfyUI install.
#[derive(Debug)]
pub(crate) struct Dirs {
    pub root: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
    /// Whether `root` is ours to delete when dropped.
    owned: bool,
}

impl Dirs {
    /// Uses `root` (created if missing), or a fresh temporary folder that is
    /// deleted when the `Dirs` is dropped. Like stock, temp/ starts empty.
    pub fn create(root: Option<&Path>) -> io::Result<Dirs> {
        let (root, owned) = match root {
            Some(root) => (root.to_path_buf(), false),
            None => {
                let name = format!("comfyume-sim-{}", uuid::Uuid::new_v4().simple());
                (std::env::temp_dir().join(name), true)
            }
        };
        let dirs = Dirs {
            input: root.join("input"),
            output: root.join("output"),
            temp: root.join("temp"),
            root,
            owned,
        };
        if dirs.temp.exists() {
            std::fs::remove_dir_all(&dirs.temp)?;
        }
        for dir in [&dirs.input, &dirs.output, &dirs.temp] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(dirs)
    }

    /// `output`, `input` or `temp`.
    pub fn by_type(&self, kind: &str) -> Option<&Path> {
        match kind {
            "output" => Some(&self.output),
            "input" => Some(&self.input),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }

    /// Resolves a `LoadImage` value: `name`, `sub/name`, or either with a
    /// ` [output]`/` [input]`/` [temp]` suffix choosing the folder.
    pub fn resolve_annotated(&self, value: &str) -> Option<PathBuf> {
        let (name, kind) = annotated(value);
        let base = self.by_type(kind.unwrap_or("input"))?;
        join_inside(base, name)
    }

    /// The image files directly in input/, sorted: `LoadImage`'s choices.
    pub fn input_images(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.input) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| {
                mime_guess::from_path(name)
                    .first()
                    .is_some_and(|m| m.type_() == "image")
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = std::fs::remove_dir_all(&self.root)
        {
            tracing::warn!(dir = %self.root.display(), error = %e, "could not remove the simulator's folder");
        }
    }
}

/// Splits stock's folder annotation off a file name.
fn annotated(name: &str) -> (&str, Option<&'static str>) {
    for kind in ["output", "input", "temp"] {
        if let Some(base) = name.strip_suffix(&format!(" [{kind}]")) {
            return (base, Some(kind));
        }
    }
    (name, None)
}

/// `base/relative` if `relative` is a plain relative path that stays inside.
pub(crate) fn join_inside(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut path = base.to_path_buf();
    let mut depth = 0usize;
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => {
                path.push(part);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => {
                path.pop();
                depth -= 1;
            }
            _ => return None,
        }
    }
    Some(path)
}

/// aiohttp's bare error responses, which stock returns without a body.
fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// `GET /view?filename=&type=&subfolder=&channel=`. `preview=` (a WebP or
/// JPEG re-encode in stock) is ignored: the simulator serves the file.
pub(super) async fn view(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(filename) = query.get("filename") else {
        return status(StatusCode::NOT_FOUND);
    };
    let (filename, kind) = annotated(filename);
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return status(StatusCode::BAD_REQUEST);
    }
    let kind = kind.unwrap_or_else(|| query.get("type").map_or("output", String::as_str));
    let Some(mut dir) = state.dirs.by_type(kind).map(Path::to_path_buf) else {
        return status(StatusCode::BAD_REQUEST);
    };
    if let Some(subfolder) = query.get("subfolder") {
        match join_inside(&dir, subfolder) {
            Some(inside) => dir = inside,
            None => return status(StatusCode::FORBIDDEN),
        }
    }
    let name = filename.rsplit('/').next().unwrap_or(filename).to_owned();
    let Ok(bytes) = tokio::fs::read(dir.join(&name)).await else {
        return status(StatusCode::NOT_FOUND);
    };
    let disposition = format!("filename=\"{name}\"");
    let channel = query.get("channel").map_or("rgba", String::as_str);
    if channel == "rgb" || channel == "a" {
        // Stock re-encodes through PIL; the simulator can for PNGs.
        if let Ok(png) = channel_png(&bytes, channel == "a") {
            return file_response(png, "image/png", disposition);
        }
    }
    let guessed = mime_guess::from_path(&name).first_or_octet_stream();
    let content_type = match guessed.essence_str() {
        "text/html" | "application/xhtml+xml" | "text/javascript" | "text/css" => {
            "application/octet-stream".to_owned()
        }
        other => other.to_owned(),
    };
    file_response(bytes, &content_type, disposition)
}

fn file_response(bytes: Vec<u8>, content_type: &str, disposition: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        Body::from(bytes),
    )
        .into_response()
}

/// `channel=rgb`: the picture without alpha; `channel=a`: black RGB whose
/// alpha is the original's (255 where there was none).
fn channel_png(bytes: &[u8], alpha_only: bool) -> Result<Vec<u8>, String> {
    let decoded = png::decode(bytes)?;
    let img = &decoded.image;
    if !alpha_only {
        return png::encode_image(img, 0, &[], png::Effort::Fast);
    }
    let mut rgba = Vec::with_capacity(img.width * img.height * 4);
    for i in 0..img.width * img.height {
        let a = decoded.alpha.as_ref().map_or(1.0, |alpha| alpha[i]);
        rgba.extend_from_slice(&[0, 0, 0, (a * 255.0).round() as u8]);
    }
    png::encode_rgba8(img.width, img.height, &rgba)
}

/// `POST /upload/image` (multipart: `image`, `type`, `subfolder`, `overwrite`).
pub(super) async fn upload_image(
    State(state): State<Arc<SimState>>,
    mut form: Multipart,
) -> Response {
    let mut image: Option<(String, Vec<u8>)> = None;
    let mut fields: HashMap<String, String> = HashMap::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return status(StatusCode::BAD_REQUEST),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let Ok(bytes) = field.bytes().await else {
            return status(StatusCode::BAD_REQUEST);
        };
        match (name.as_str(), file_name) {
            ("image", Some(file_name)) => image = Some((file_name, bytes.to_vec())),
            ("image", None) => return status(StatusCode::BAD_REQUEST),
            _ => {
                fields.insert(name, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    let Some((filename, bytes)) = image else {
        return status(StatusCode::BAD_REQUEST);
    };
    let kind = fields
        .get("type")
        .map_or("input", String::as_str)
        .to_owned();
    let Some(base) = state.dirs.by_type(&kind) else {
        // Stock fails on an unknown type with an unhandled exception.
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        )
            .into_response();
    };
    let subfolder = fields.get("subfolder").cloned().unwrap_or_default();
    let overwrite = matches!(
        fields.get("overwrite").map(String::as_str),
        Some("true" | "1")
    );
    let (Some(folder), false) = (join_inside(base, &subfolder), bad_file_name(&filename)) else {
        return status(StatusCode::BAD_REQUEST);
    };
    match store_upload(&folder, &filename, &bytes, overwrite).await {
        Ok(name) => {
            axum::Json(json!({"name": name, "subfolder": subfolder, "type": kind})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "upload failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error",
            )
                .into_response()
        }
    }
}

/// Names the simulator will not write: empty, hidden paths, or any path.
fn bad_file_name(name: &str) -> bool {
    name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0'])
}

/// Writes `bytes` as `name` in `folder`, and returns the name used: the
/// same name if the file is new, identical, or `overwrite`; otherwise the
/// first free `"stem (i).ext"`.
async fn store_upload(
    folder: &Path,
    name: &str,
    bytes: &[u8],
    overwrite: bool,
) -> io::Result<String> {
    tokio::fs::create_dir_all(folder).await?;
    let (stem, ext) = split_extension(name);
    let mut candidate = name.to_owned();
    let mut i = 1;
    if !overwrite {
        while let Ok(existing) = tokio::fs::read(folder.join(&candidate)).await {
            if existing == bytes {
                return Ok(candidate);
            }
            candidate = format!("{stem} ({i}){ext}");
            i += 1;
        }
    }
    tokio::fs::write(folder.join(&candidate), bytes).await?;
    Ok(candidate)
}

/// Python's `os.path.splitext` for a bare name: a leading dot is no extension.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if name[..dot].chars().any(|c| c != '.') => name.split_at(dot),
        _ => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let base = Path::new("/data/input");
        assert_eq!(join_inside(base, "a.png"), Some(base.join("a.png")));
        assert_eq!(
            join_inside(base, "sub/./a.png"),
            Some(base.join("sub/a.png"))
        );
        assert_eq!(join_inside(base, "sub/../a.png"), Some(base.join("a.png")));
        assert_eq!(join_inside(base, ""), Some(base.to_path_buf()));
        assert_eq!(join_inside(base, "../a.png"), None);
        assert_eq!(join_inside(base, "/etc/passwd"), None);
    }

    #[test]
    fn a_made_folder_is_removed_on_drop_and_a_given_one_kept() {
        let dirs = Dirs::create(None).expect("temp dirs");
        let root = dirs.root.clone();
        std::fs::write(dirs.output.join("x.png"), b"x").expect("write");
        drop(dirs);
        assert!(!root.exists());

        let given =
            std::env::temp_dir().join(format!("sim-given-{}", uuid::Uuid::new_v4().simple()));
        let dirs = Dirs::create(Some(&given)).expect("given dirs");
        std::fs::write(dirs.temp.join("old.png"), b"x").expect("write");
        drop(dirs);
        let again = Dirs::create(Some(&given)).expect("again");
        assert!(again.input.is_dir() && again.output.is_dir());
        assert!(
            !again.temp.join("old.png").exists(),
            "temp/ starts empty, as in stock"
        );
        drop(again);
        std::fs::remove_dir_all(&given).expect("cleanup");
    }

    #[test]
    fn annotations_and_extensions() {
        assert_eq!(annotated("g.png [input]"), ("g.png", Some("input")));
        assert_eq!(annotated("g.png [temp]"), ("g.png", Some("temp")));
        assert_eq!(annotated("g.png"), ("g.png", None));
        assert_eq!(split_extension("g.png"), ("g", ".png"));
        assert_eq!(split_extension("a.b.png"), ("a.b", ".png"));
        assert_eq!(split_extension(".hidden"), (".hidden", ""));
        assert_eq!(split_extension("noext"), ("noext", ""));
    }
}
