//! The ComfyUI web frontend on disk: the `static/` folder of the pinned
//! `comfyui-frontend-package` wheel, served as-is.

use std::path::{Path, PathBuf};

/// The version this build of ComfyUME is made for.
pub const PINNED_VERSION: &str = "1.48.7";

#[derive(Debug, Clone)]
pub struct Frontend {
    pub dir: PathBuf,
    /// The wheel's version when it can be read from its `.dist-info`.
    pub version: Option<String>,
    /// `/extensions/…/*.js` of the frontend's own extensions, for
    /// `GET /extensions`.
    pub extensions: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(
        "the ComfyUI frontend was not found at {0} (no index.html there).\n\
         Fetch it with `scripts/fetch-frontend.sh` (pip download comfyui-frontend-package=={PINNED_VERSION}) \
         or point `frontend_dir` / --frontend-dir at the wheel's comfyui_frontend_package/static folder."
    )]
    Missing(PathBuf),
}

impl Frontend {
    /// Checks the folder and indexes what the server needs from it.
    pub fn open(dir: &Path) -> Result<Frontend, FrontendError> {
        if !dir.join("index.html").is_file() {
            return Err(FrontendError::Missing(dir.to_path_buf()));
        }
        let mut extensions = Vec::new();
        collect_js(&dir.join("extensions"), "/extensions", &mut extensions);
        extensions.sort();
        Ok(Frontend {
            dir: dir.to_path_buf(),
            version: read_version(dir),
            extensions,
        })
    }
}

fn collect_js(dir: &Path, url_prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            collect_js(&path, &format!("{url_prefix}/{name}"), out);
        } else if name.ends_with(".js") {
            out.push(format!("{url_prefix}/{name}"));
        }
    }
}

/// `static/` sits in `comfyui_frontend_package/`, next to which the wheel
/// unpacks `comfyui_frontend_package-X.Y.Z.dist-info/`.
fn read_version(static_dir: &Path) -> Option<String> {
    let site = static_dir.parent()?.parent()?;
    std::fs::read_dir(site).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_prefix("comfyui_frontend_package-")?
            .strip_suffix(".dist-info")
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_version_and_extensions() {
        let root = tempfile::tempdir().unwrap();
        let stat = root.path().join("comfyui_frontend_package/static");
        std::fs::create_dir_all(stat.join("extensions/core")).unwrap();
        std::fs::create_dir_all(
            root.path()
                .join("comfyui_frontend_package-1.48.7.dist-info"),
        )
        .unwrap();
        std::fs::write(stat.join("index.html"), "<html>").unwrap();
        std::fs::write(stat.join("extensions/core/a.js"), "").unwrap();
        std::fs::write(stat.join("extensions/core/a.css"), "").unwrap();
        let f = Frontend::open(&stat).unwrap();
        assert_eq!(f.version.as_deref(), Some("1.48.7"));
        assert_eq!(f.extensions, ["/extensions/core/a.js"]);
    }

    #[test]
    fn a_missing_frontend_says_how_to_fetch_it() {
        let err = Frontend::open(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fetch-frontend.sh"), "{err}");
    }
}
