//! Workshop templates: the instructor's workflows, published to every
//! participant's Templates browser in the format the frontend reads for its
//! core templates (`/templates/index.json`, `/templates/<name>.json`,
//! thumbnails at `/templates/<name>-1.<ext>`).
//!
//! The folder holds workflow `.json` files. A thumbnail `<name>.png`,
//! `.webp` or `.jpg` (or `<name>-1.<ext>`) is used when present; otherwise
//! a title card is drawn. An `index.json` in the folder, in the frontend's
//! own format, replaces the generated index for full control over titles,
//! descriptions and grouping.
//!
//! After the workshop's own come ComfyUI's official templates
//! (comfyui-workflow-templates, laid out by `scripts/fetch-frontend.sh` as
//! ComfyUI's asset map resolves them): their categories follow the
//! workshop's in every index, and their files answer the names the
//! workshop's do not.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    #[error("{0} is not a readable folder: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    BadFile(PathBuf, String),
}

/// One published workflow.
#[derive(Debug, Clone)]
struct Template {
    workflow: PathBuf,
    thumbnail: Option<(PathBuf, &'static str)>,
    title: String,
}

/// What the routes serve, indexed once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    index: Value,
    by_name: BTreeMap<String, Template>,
    official: Option<Arc<Official>>,
}

/// The official template gallery's folder, and each index merged with the
/// workshop's, made once per index file.
#[derive(Debug)]
struct Official {
    dir: PathBuf,
    merged: Mutex<HashMap<String, Bytes>>,
}

/// A file the `/templates/` route can answer with.
pub enum TemplateFile {
    Json(Value),
    File {
        path: PathBuf,
        content_type: &'static str,
    },
    Svg(String),
    /// An index with the official gallery's categories after the workshop's.
    Index(Bytes),
    /// A file of the official gallery.
    Official {
        path: PathBuf,
        content_type: &'static str,
    },
}

impl Templates {
    /// Indexes `dir`; no folder means an empty Templates browser.
    pub fn open(dir: Option<&Path>) -> Result<Templates, TemplatesError> {
        let Some(dir) = dir else {
            return Ok(Templates {
                index: json!([]),
                by_name: BTreeMap::new(),
                official: None,
            });
        };
        let entries =
            std::fs::read_dir(dir).map_err(|e| TemplatesError::Folder(dir.to_path_buf(), e))?;
        let mut by_name = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().and_then(|e| e.to_str()) != Some("json")
                || stem == "index"
                || !is_safe_name(stem)
            {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| TemplatesError::BadFile(path.clone(), e.to_string()))?;
            let workflow: Value = serde_json::from_str(&text)
                .map_err(|e| TemplatesError::BadFile(path.clone(), e.to_string()))?;
            if !workflow.get("nodes").is_some_and(Value::is_array) {
                return Err(TemplatesError::BadFile(
                    path,
                    "not a ComfyUI workflow (no \"nodes\" list)".into(),
                ));
            }
            by_name.insert(
                stem.to_string(),
                Template {
                    thumbnail: find_thumbnail(dir, stem),
                    title: title_from_name(stem),
                    workflow: path,
                },
            );
        }
        let custom_index = dir.join("index.json");
        let index = if custom_index.is_file() {
            let text = std::fs::read_to_string(&custom_index)
                .map_err(|e| TemplatesError::BadFile(custom_index.clone(), e.to_string()))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TemplatesError::BadFile(custom_index.clone(), e.to_string()))?;
            if !v.is_array() {
                return Err(TemplatesError::BadFile(
                    custom_index,
                    "must be a list of template categories".into(),
                ));
            }
            v
        } else {
            generated_index(&by_name)
        };
        Ok(Templates {
            index,
            by_name,
            official: None,
        })
    }

    /// Adds the official gallery at `dir` (which must hold its
    /// `index.json`) after the workshop's templates.
    pub fn with_official(mut self, dir: &Path) -> Result<Templates, TemplatesError> {
        let index = dir.join("index.json");
        if !index.is_file() {
            return Err(TemplatesError::BadFile(
                index,
                "the official template gallery has no index here (scripts/fetch-frontend.sh fetches it)".into(),
            ));
        }
        self.official = Some(Arc::new(Official {
            dir: dir.to_path_buf(),
            merged: Mutex::default(),
        }));
        Ok(self)
    }

    /// Each template's name and workflow file.
    pub fn workflows(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.by_name
            .iter()
            .map(|(name, t)| (name.as_str(), t.workflow.as_path()))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Answers `/templates/<file>`; `None` is a 404.
    /// The answer to `/templates/{file}`: `None` for no such file; an error
    /// for a listed template whose workflow can no longer be read (edited
    /// into invalid JSON, say, during the workshop).
    pub async fn file(&self, file: &str) -> Result<Option<TemplateFile>, TemplateUnreadable> {
        if let Some(official) = &self.official {
            if is_index(file) {
                return self.merged_index(official, file).await.map(Some);
            }
        }
        let path = match self.lookup(file) {
            None => return Ok(self.official_file(file)),
            Some(Lookup::Ready(answer)) => return Ok(Some(answer)),
            Some(Lookup::Workflow(path)) => path,
        };
        let unreadable = |reason: String| TemplateUnreadable {
            path: path.display().to_string(),
            reason,
        };
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let workflow = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        Ok(Some(TemplateFile::Json(workflow)))
    }

    /// Index `file` (`index.json`, `index.<locale>.json`): the workshop's
    /// categories, then the official gallery's in that language (or in
    /// English when it has none).
    async fn merged_index(
        &self,
        official: &Official,
        file: &str,
    ) -> Result<TemplateFile, TemplateUnreadable> {
        let localised = official.dir.join(file);
        // Kept by the file read, so any number of languages asked for make
        // at most one copy per index the gallery has.
        let (source, path) = if localised.is_file() {
            (file, localised)
        } else {
            ("index.json", official.dir.join("index.json"))
        };
        if let Some(made) = official.merged.lock().expect("not poisoned").get(source) {
            return Ok(TemplateFile::Index(made.clone()));
        }
        let unreadable = |reason: String| TemplateUnreadable {
            path: path.display().to_string(),
            reason,
        };
        let text = tokio::fs::read(&path)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let categories: Vec<Value> =
            serde_json::from_slice(&text).map_err(|e| unreadable(e.to_string()))?;
        let mut merged: Vec<Value> = self.index.as_array().cloned().unwrap_or_default();
        merged.extend(categories);
        let made = Bytes::from(serde_json::to_vec(&merged).map_err(|e| unreadable(e.to_string()))?);
        official
            .merged
            .lock()
            .expect("not poisoned")
            .insert(source.to_string(), made.clone());
        Ok(TemplateFile::Index(made))
    }

    /// A file of the official gallery (`logo/…` included).
    fn official_file(&self, file: &str) -> Option<TemplateFile> {
        let official = self.official.as_ref()?;
        let relative = comfyume_domain::SafeRelPath::parse(file).ok()?;
        let path = official.dir.join(relative.as_str());
        path.is_file().then(|| TemplateFile::Official {
            content_type: content_type_of(&path),
            path,
        })
    }

    fn lookup(&self, file: &str) -> Option<Lookup> {
        // Localised indexes get the same list: workshop templates are written
        // in one language, and a 404 would only make the frontend log a
        // warning and ask again for index.json.
        if is_index(file) {
            return Some(Lookup::Ready(TemplateFile::Json(self.index.clone())));
        }
        if file == "index_logo.json" && self.official.is_none() {
            return Some(Lookup::Ready(TemplateFile::Json(json!({}))));
        }
        let (stem, ext) = file.rsplit_once('.')?;
        if ext == "json" {
            let t = self.by_name.get(stem)?;
            return Some(Lookup::Workflow(t.workflow.clone()));
        }
        let name = stem.strip_suffix("-1")?;
        let t = self.by_name.get(name)?;
        match &t.thumbnail {
            Some((path, content_type)) if ext == extension_of(path) => {
                Some(Lookup::Ready(TemplateFile::File {
                    path: path.clone(),
                    content_type,
                }))
            }
            None if ext == "svg" => Some(Lookup::Ready(TemplateFile::Svg(title_card(&t.title)))),
            _ => None,
        }
    }
}

/// Where a template file's answer comes from.
enum Lookup {
    Ready(TemplateFile),
    /// A workflow, read from disk on each request (the instructor may
    /// edit it during the workshop).
    Workflow(PathBuf),
}

/// A listed template whose workflow cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("the workshop template {path} cannot be read: {reason}")]
pub struct TemplateUnreadable {
    pub path: String,
    pub reason: String,
}

fn generated_index(by_name: &BTreeMap<String, Template>) -> Value {
    let templates: Vec<Value> = by_name
        .iter()
        .map(|(name, t)| {
            let subtype = t
                .thumbnail
                .as_ref()
                .map(|(p, _)| extension_of(p))
                .unwrap_or("svg");
            json!({
                "name": name,
                "title": t.title,
                "description": "A workflow prepared for this workshop.",
                "mediaType": "image",
                "mediaSubtype": subtype,
                "tags": ["Workshop"],
            })
        })
        .collect();
    if templates.is_empty() {
        return json!([]);
    }
    // An essential category titled exactly "Getting Started" is the one the
    // frontend's first-run Templates dialog opens on, so a new participant
    // sees the workshop's workflows first.
    json!([{
        "moduleName": "default",
        "title": "Getting Started",
        "type": "image",
        "isEssential": true,
        "templates": templates,
    }])
}

fn find_thumbnail(dir: &Path, stem: &str) -> Option<(PathBuf, &'static str)> {
    for base in [format!("{stem}-1"), stem.to_string()] {
        for (ext, content_type) in [
            ("webp", "image/webp"),
            ("png", "image/png"),
            ("jpg", "image/jpeg"),
            ("jpeg", "image/jpeg"),
        ] {
            let p = dir.join(format!("{base}.{ext}"));
            if p.is_file() {
                return Some((p, content_type));
            }
        }
    }
    None
}

/// `index.json` and its localised forms (`index.fr.json`), not the other
/// `index_*.json` files.
fn is_index(file: &str) -> bool {
    file == "index.json"
        || (file.starts_with("index.")
            && file.ends_with(".json")
            && !file.contains('/')
            && !matches!(file, "index.schema.json" | "index.mcp.json"))
}

/// What an official gallery file is served as: its guessed type, as
/// ComfyUI's `FileResponse` does.
fn content_type_of(path: &Path) -> &'static str {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(crate::workspace::guess_content_type)
        .unwrap_or("application/octet-stream")
}

fn extension_of(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}

/// `invert-an-image` → `Invert an image`.
fn title_from_name(stem: &str) -> String {
    let spaced = stem.replace(['-', '_'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A simple title card, for templates that come without a picture.
fn title_card(title: &str) -> String {
    let escaped = crate::markup::escape_html(title);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="0 0 512 512"><defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#2b2d42"/><stop offset="1" stop-color="#14151f"/></linearGradient></defs><rect width="512" height="512" fill="url(#g)"/><text x="256" y="236" font-family="system-ui, sans-serif" font-size="34" fill="#f0a04b" text-anchor="middle">ComfyUME</text><text x="256" y="292" font-family="system-ui, sans-serif" font-size="28" fill="#e8e8f0" text-anchor="middle">{escaped}</text></svg>"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Templates {
        async fn file_ok(&self, file: &str) -> Option<TemplateFile> {
            self.file(file).await.expect("readable")
        }
    }

    fn folder() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("invert-an-image.json"),
            r#"{"nodes": [], "links": []}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("with_thumb.json"), r#"{"nodes": []}"#).unwrap();
        std::fs::write(d.path().join("with_thumb.png"), b"\x89PNG").unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        d
    }

    #[tokio::test]
    async fn generates_an_index_the_frontend_reads() {
        let d = folder();
        let t = Templates::open(Some(d.path())).unwrap();
        assert_eq!(t.len(), 2);
        let Some(TemplateFile::Json(index)) = t.file_ok("index.json").await else {
            panic!()
        };
        assert_eq!(index[0]["moduleName"], "default");
        let items = index[0]["templates"].as_array().unwrap();
        assert_eq!(items[0]["name"], "invert-an-image");
        assert_eq!(items[0]["title"], "Invert an image");
        assert_eq!(items[0]["mediaSubtype"], "svg");
        assert_eq!(items[1]["mediaSubtype"], "png");
        assert!(matches!(
            t.file_ok("index.fr.json").await,
            Some(TemplateFile::Json(_))
        ));
    }

    #[tokio::test]
    async fn serves_workflows_and_thumbnails_only() {
        let d = folder();
        let t = Templates::open(Some(d.path())).unwrap();
        assert!(matches!(
            t.file_ok("invert-an-image.json").await,
            Some(TemplateFile::Json(_))
        ));
        assert!(matches!(
            t.file_ok("invert-an-image-1.svg").await,
            Some(TemplateFile::Svg(_))
        ));
        assert!(matches!(
            t.file_ok("with_thumb-1.png").await,
            Some(TemplateFile::File {
                content_type: "image/png",
                ..
            })
        ));
        assert!(t.file_ok("with_thumb-1.webp").await.is_none());
        assert!(t.file_ok("notes.txt").await.is_none());
        assert!(t.file_ok("nope.json").await.is_none());
        assert!(t.file_ok("..").await.is_none());
    }

    #[test]
    fn refuses_a_broken_workflow_with_its_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.json"), "{nope").unwrap();
        let err = Templates::open(Some(d.path())).unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }

    #[test]
    fn title_cards_escape_the_title() {
        assert!(title_card("<b>").contains("&lt;b&gt;"));
    }

    /// An official gallery: an index in English and French, a workflow, a
    /// thumbnail, a logo in a subfolder.
    fn gallery() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let category = |title: &str| {
            json!([{"moduleName": "default", "title": title, "type": "image",
                    "templates": [{"name": "official_t2i", "mediaType": "image", "mediaSubtype": "webp"}]}])
        };
        std::fs::write(d.path().join("index.json"), category("Image").to_string()).unwrap();
        std::fs::write(
            d.path().join("index.fr.json"),
            category("Images").to_string(),
        )
        .unwrap();
        std::fs::write(d.path().join("index_logo.json"), r#"{"a": "logo/a.webp"}"#).unwrap();
        std::fs::write(d.path().join("official_t2i.json"), r#"{"nodes": []}"#).unwrap();
        std::fs::write(d.path().join("official_t2i-1.webp"), b"RIFF").unwrap();
        std::fs::create_dir(d.path().join("logo")).unwrap();
        std::fs::write(d.path().join("logo/a.webp"), b"RIFF").unwrap();
        d
    }

    #[tokio::test]
    async fn the_official_gallery_follows_the_workshops_templates() {
        let (workshop, official) = (folder(), gallery());
        let t = Templates::open(Some(workshop.path()))
            .unwrap()
            .with_official(official.path())
            .unwrap();
        let index = |file: &'static str| {
            let t = t.clone();
            async move {
                match t.file_ok(file).await {
                    Some(TemplateFile::Index(bytes)) => {
                        serde_json::from_slice::<Value>(&bytes).unwrap()
                    }
                    _ => panic!("{file} is not an index"),
                }
            }
        };
        let titles = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c["title"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            titles(&index("index.json").await),
            ["Getting Started", "Image"]
        );
        assert_eq!(
            titles(&index("index.fr.json").await),
            ["Getting Started", "Images"]
        );
        // A language the gallery lacks gets its English index, made once.
        assert_eq!(
            titles(&index("index.ja.json").await),
            ["Getting Started", "Image"]
        );
        assert_eq!(
            titles(&index("index.xx.json").await),
            ["Getting Started", "Image"]
        );
        let kept = t.official.as_ref().unwrap().merged.lock().unwrap().len();
        assert_eq!(kept, 2, "index.json and index.fr.json");

        assert!(matches!(
            t.file_ok("official_t2i.json").await,
            Some(TemplateFile::Official {
                content_type: "application/json",
                ..
            })
        ));
        assert!(matches!(
            t.file_ok("logo/a.webp").await,
            Some(TemplateFile::Official {
                content_type: "image/webp",
                ..
            })
        ));
        assert!(matches!(
            t.file_ok("index_logo.json").await,
            Some(TemplateFile::Official { .. })
        ));
        // The workshop's own still answer first.
        assert!(matches!(
            t.file_ok("invert-an-image.json").await,
            Some(TemplateFile::Json(_))
        ));
        for outside in [
            "../index.json",
            "/etc/passwd",
            "logo/../../x",
            "missing.json",
        ] {
            assert!(t.file_ok(outside).await.is_none(), "{outside}");
        }
        assert!(
            Templates::open(None)
                .unwrap()
                .with_official(workshop.path())
                .is_err(),
            "no index there"
        );
    }
}
