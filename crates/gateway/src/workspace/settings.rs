//! `/settings` (ComfyUI app/app_settings.py): one JSON object per user in
//! `userdata/comfy.settings.json`.
//!
//! Every update is a read-modify-write of the whole file, so it runs under
//! the user's write lock: the frontend fires several `POST /settings/{id}`
//! in quick succession, and without the lock the last writer would drop the
//! others' keys.

use std::fs;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Result, Staged, Workspace, WorkspaceError, blocking};

const SETTINGS_FILE: &str = "comfy.settings.json";

impl Workspace {
    /// `GET /settings`: the stored object; `{}` when the file is missing or
    /// unreadable, as in ComfyUI. (ComfyUI would return a stored non-object
    /// value as is; we read it as `{}` too, since every caller expects an
    /// object and the frontend only ever stores one.)
    pub async fn settings(&self) -> Map<String, Value> {
        let bytes = tokio::fs::read(self.settings_path()).await.ok();
        parse_settings(bytes.as_deref())
    }

    /// `GET /settings/{id}`: the value, or `null`.
    pub async fn get_setting(&self, id: &str) -> Value {
        self.settings().await.remove(id).unwrap_or(Value::Null)
    }

    /// `POST /settings`: merges `new` into the stored object (new keys are
    /// appended, existing ones keep their place and take the new value).
    pub async fn merge_settings(&self, new: Map<String, Value>) -> Result<()> {
        self.update_settings(move |settings| settings.extend(new))
            .await
    }

    /// `POST /settings/{id}`: stores one value. An empty id is 400.
    pub async fn set_setting(&self, id: &str, value: Value) -> Result<()> {
        if id.is_empty() {
            return Err(WorkspaceError::BadRequest("Setting id not provided".into()));
        }
        let id = id.to_owned();
        self.update_settings(move |settings| {
            settings.insert(id, value);
        })
        .await
    }

    fn settings_path(&self) -> std::path::PathBuf {
        self.userdata_dir().join(SETTINGS_FILE)
    }

    async fn update_settings<F>(&self, change: F) -> Result<()>
    where
        F: FnOnce(&mut Map<String, Value>) + Send + 'static,
    {
        let path = self.settings_path();
        let staging = self.staging_dir();
        let guard = self.write_lock().await;
        blocking(move || {
            let _guard = guard;
            let mut settings = parse_settings(fs::read(&path).ok().as_deref());
            change(&mut settings);
            write_settings(&path, &staging, &settings)
        })
        .await
    }
}

fn parse_settings(bytes: Option<&[u8]>) -> Map<String, Value> {
    match bytes.map(serde_json::from_slice::<Value>) {
        Some(Ok(Value::Object(map))) => map,
        Some(Ok(_)) | Some(Err(_)) => {
            tracing::warn!("a user settings file is not a JSON object; reading it as empty");
            Map::new()
        }
        None => Map::new(),
    }
}

/// Writes the object as ComfyUI does (`json.dumps(indent=4)`), atomically.
fn write_settings(path: &Path, staging: &Path, settings: &Map<String, Value>) -> Result<()> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    settings
        .serialize(&mut ser)
        .map_err(|e| WorkspaceError::Io(e.into()))?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    Staged::write(staging, &out)?.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspaces;
    use comfyume_domain::UserName;
    use serde_json::json;

    fn setup() -> (tempfile::TempDir, Workspaces, Workspace) {
        let tmp = tempfile::tempdir().unwrap();
        let all = Workspaces::new(tmp.path().join("users"));
        let ws = all.user(&UserName::parse("alice").unwrap());
        (tmp, all, ws)
    }

    #[tokio::test]
    async fn missing_is_empty_and_get_one_is_null() {
        let (_t, _a, ws) = setup();
        assert!(ws.settings().await.is_empty());
        assert_eq!(ws.get_setting("Comfy.X").await, Value::Null);
        // Reads create nothing.
        assert!(!ws.dir().exists());
    }

    #[tokio::test]
    async fn set_get_and_the_file_format() {
        let (_t, _a, ws) = setup();
        ws.set_setting("Comfy.Test", json!("hello")).await.unwrap();
        assert_eq!(ws.get_setting("Comfy.Test").await, json!("hello"));
        let text = fs::read_to_string(ws.userdata_dir().join(SETTINGS_FILE)).unwrap();
        assert_eq!(text, "{\n    \"Comfy.Test\": \"hello\"\n}");
        let err = ws.set_setting("", json!(1)).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::BadRequest(_)));
    }

    #[tokio::test]
    async fn merge_keeps_order_and_overrides() {
        let (_t, _a, ws) = setup();
        ws.set_setting("a", json!(1)).await.unwrap();
        ws.set_setting("b", json!(2)).await.unwrap();
        let new = json!({"c": 3, "a": {"nested": true}});
        ws.merge_settings(new.as_object().unwrap().clone())
            .await
            .unwrap();
        let all = ws.settings().await;
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(
            Value::Object(all),
            json!({"a": {"nested": true}, "b": 2, "c": 3})
        );
    }

    #[tokio::test]
    async fn corrupt_file_reads_as_empty_and_is_replaced_on_write() {
        let (_t, _a, ws) = setup();
        fs::create_dir_all(ws.userdata_dir()).unwrap();
        let path = ws.userdata_dir().join(SETTINGS_FILE);
        fs::write(&path, b"{not json").unwrap();
        assert!(ws.settings().await.is_empty());
        fs::write(&path, b"[1,2]").unwrap();
        assert!(ws.settings().await.is_empty());
        ws.set_setting("a", json!(true)).await.unwrap();
        assert_eq!(Value::Object(ws.settings().await), json!({"a": true}));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_lose_nothing() {
        let (_t, all, _ws) = setup();
        let name = UserName::parse("alice").unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            // Each task gets its own handle, as each request would.
            let ws = all.user(&name);
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    ws.set_setting(&format!("k{i}"), json!(i)).await
                } else {
                    let mut m = Map::new();
                    m.insert(format!("k{i}"), json!(i));
                    ws.merge_settings(m).await
                }
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let settings = all.user(&name).settings().await;
        assert_eq!(settings.len(), 20);
        for i in 0..20 {
            assert_eq!(settings[&format!("k{i}")], json!(i));
        }
    }

    #[tokio::test]
    async fn settings_are_per_user() {
        let (_t, all, alice) = setup();
        let bob = all.user(&UserName::parse("bob").unwrap());
        alice.set_setting("theme", json!("dark")).await.unwrap();
        assert_eq!(bob.get_setting("theme").await, Value::Null);
    }
}
