//! `/settings` (ComfyUI app/app_settings.py): one JSON object per user in
//! `userdata/comfy.settings.json`.
//!
//! Every update is a read-modify-write of the whole file, so it runs under
//! the user's write lock: the frontend fires several `POST /settings/{id}`
//! in quick succession, and without the lock the last writer would drop the
//! others' keys.

use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use super::{Result, Staged, Workspace, WorkspaceError, blocking};

pub(super) const SETTINGS_FILE: &str = "comfy.settings.json";

impl Workspace {
    /// `GET /settings`: the stored object; `{}` when the file is missing,
    /// or (logged) unreadable or corrupt, as in ComfyUI. (ComfyUI would
    /// return a stored non-object value as is; we read it as `{}` too,
    /// since every caller expects an object and the frontend only ever
    /// stores one.)
    pub async fn settings(&self) -> Map<String, Value> {
        if let Some(bucket) = &self.bucket {
            return match Self::bucket_settings(bucket).await {
                Ok(Some((bytes, _))) => parse_settings(&bytes).unwrap_or_else(|why| {
                    tracing::error!(user = bucket.user(), %why, "a user settings file is corrupt; serving it as empty");
                    Map::new()
                }),
                Ok(None) => Map::new(),
                Err(e) => {
                    tracing::error!(user = bucket.user(), error = %e, "a user settings file cannot be read; serving it as empty");
                    Map::new()
                }
            };
        }
        let path = self.settings_path();
        match tokio::fs::read(&path).await {
            Ok(bytes) => parse_settings(&bytes).unwrap_or_else(|why| {
                tracing::error!(file = %path.display(), %why, "a user settings file is corrupt; serving it as empty");
                Map::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "a user settings file cannot be read; serving it as empty");
                Map::new()
            }
        }
    }

    /// `GET /settings/{id}`: the value, or `null`.
    pub async fn get_setting(&self, id: &str) -> Value {
        self.settings().await.remove(id).unwrap_or(Value::Null)
    }

    /// `POST /settings`: merges `new` into the stored object (new keys are
    /// appended, existing ones keep their place and take the new value).
    /// The stored file may not grow past `max_bytes`.
    pub async fn merge_settings(&self, new: Map<String, Value>, max_bytes: u64) -> Result<()> {
        self.update_settings(max_bytes, move |settings| settings.extend(new.clone()))
            .await
    }

    /// `POST /settings/{id}`: stores one value. An empty id is 400.
    pub async fn set_setting(&self, id: &str, value: Value, max_bytes: u64) -> Result<()> {
        if id.is_empty() {
            return Err(WorkspaceError::BadRequest("Setting id not provided".into()));
        }
        let id = id.to_owned();
        self.update_settings(max_bytes, move |settings| {
            settings.insert(id.clone(), value.clone());
        })
        .await
    }

    fn settings_path(&self) -> std::path::PathBuf {
        self.userdata_dir().join(SETTINGS_FILE)
    }

    async fn update_settings<F>(&self, max_bytes: u64, change: F) -> Result<()>
    where
        F: Fn(&mut Map<String, Value>) + Send + Sync + 'static,
    {
        if let Some(bucket) = &self.bucket {
            return self.bucket_update_settings(bucket, max_bytes, change).await;
        }
        let path = self.settings_path();
        let staging = self.staging_dir();
        let guard = self.write_lock().await;
        let me = self.clone();
        blocking(move || {
            let _guard = guard;
            let _across = me.lock_across_gateways()?;
            // Settings are small and bounded by `max_bytes`, not the quota.
            me.recount_usage();
            let mut settings = settings_to_update(&path)?;
            change(&mut settings);
            write_settings(&path, &staging, &settings, max_bytes)
        })
        .await
    }
}

/// The stored object, or why the file is not one.
pub(super) fn parse_settings(bytes: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The object an update starts from. Unlike ComfyUI, which rewrites a
/// corrupt file with only the new key, the corrupt file is first kept
/// beside it (`comfy.settings.json.corrupt-<ms>`), so no setting is lost
/// without a trace; a file that cannot be read is an error, never
/// overwritten.
fn settings_to_update(path: &Path) -> Result<Map<String, Value>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(e.into()),
    };
    match parse_settings(&bytes) {
        Ok(map) => Ok(map),
        Err(why) => {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let aside = path.with_extension(format!("json.corrupt-{millis}"));
            fs::rename(path, &aside)?;
            tracing::warn!(file = %path.display(), kept = %aside.display(), %why, "a corrupt user settings file was set aside");
            Ok(Map::new())
        }
    }
}

/// Writes the object compactly (ComfyUI indents it, which only makes every
/// later read slower), atomically, unless it grew past `max_bytes`.
fn write_settings(
    path: &Path,
    staging: &Path,
    settings: &Map<String, Value>,
    max_bytes: u64,
) -> Result<()> {
    let out = encode_settings(settings, max_bytes)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    Staged::write(staging, &out)?.persist(path)?;
    Ok(())
}

/// The object as stored, unless it grew past `max_bytes`.
pub(super) fn encode_settings(settings: &Map<String, Value>, max_bytes: u64) -> Result<Vec<u8>> {
    let out = serde_json::to_vec(settings).map_err(|e| WorkspaceError::Io(e.into()))?;
    if out.len() as u64 > max_bytes {
        return Err(WorkspaceError::TooLarge(format!(
            "Settings would take {} bytes; the limit is {max_bytes}.",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspaces;
    use comfyume_domain::UserName;
    use serde_json::json;

    const LIMIT: u64 = 1024 * 1024;

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
        ws.set_setting("Comfy.Test", json!("hello"), LIMIT)
            .await
            .unwrap();
        assert_eq!(ws.get_setting("Comfy.Test").await, json!("hello"));
        let text = fs::read_to_string(ws.userdata_dir().join(SETTINGS_FILE)).unwrap();
        assert_eq!(text, r#"{"Comfy.Test":"hello"}"#, "compact");
        let err = ws.set_setting("", json!(1), LIMIT).await.unwrap_err();
        assert!(matches!(err, WorkspaceError::BadRequest(_)));
    }

    #[tokio::test]
    async fn merge_keeps_order_and_overrides() {
        let (_t, _a, ws) = setup();
        ws.set_setting("a", json!(1), LIMIT).await.unwrap();
        ws.set_setting("b", json!(2), LIMIT).await.unwrap();
        let new = json!({"c": 3, "a": {"nested": true}});
        ws.merge_settings(new.as_object().unwrap().clone(), LIMIT)
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
    async fn a_corrupt_file_reads_as_empty_and_is_kept_aside_on_write() {
        let (_t, _a, ws) = setup();
        fs::create_dir_all(ws.userdata_dir()).unwrap();
        let path = ws.userdata_dir().join(SETTINGS_FILE);
        fs::write(&path, b"{not json").unwrap();
        assert!(ws.settings().await.is_empty());
        fs::write(&path, b"[1,2]").unwrap();
        assert!(ws.settings().await.is_empty());
        ws.set_setting("a", json!(true), LIMIT).await.unwrap();
        assert_eq!(Value::Object(ws.settings().await), json!({"a": true}));
        let kept: Vec<Vec<u8>> = fs::read_dir(ws.userdata_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .map(|p| fs::read(p).unwrap())
            .collect();
        assert_eq!(kept, [b"[1,2]".to_vec()], "nothing lost without a trace");
    }

    #[tokio::test]
    async fn settings_may_not_grow_past_the_limit() {
        let (_t, _a, ws) = setup();
        ws.set_setting("small", json!("x"), 64).await.unwrap();
        let err = ws
            .set_setting("big", json!("y".repeat(100)), 64)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::TooLarge(_)), "{err}");
        assert_eq!(
            Value::Object(ws.settings().await),
            json!({"small": "x"}),
            "unchanged"
        );
    }

    #[tokio::test]
    async fn an_unreadable_file_is_never_overwritten() {
        let (_t, _a, ws) = setup();
        // A folder where the file should be: reading it fails, not "missing".
        fs::create_dir_all(ws.userdata_dir().join(SETTINGS_FILE)).unwrap();
        assert!(ws.set_setting("a", json!(1), LIMIT).await.is_err());
        assert!(ws.userdata_dir().join(SETTINGS_FILE).is_dir());
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
                    ws.set_setting(&format!("k{i}"), json!(i), LIMIT).await
                } else {
                    let mut m = Map::new();
                    m.insert(format!("k{i}"), json!(i));
                    ws.merge_settings(m, LIMIT).await
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
        alice
            .set_setting("theme", json!("dark"), LIMIT)
            .await
            .unwrap();
        assert_eq!(bob.get_setting("theme").await, Value::Null);
    }
}
