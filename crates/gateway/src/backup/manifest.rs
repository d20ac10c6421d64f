//! What a backup is in the store: content-addressed objects
//! (`objects/<2 hex>/<sha256>`), and one manifest per backup
//! (`manifests/<id>.json`) listing every file with its size and SHA-256.
//! The manifest is written last, after every object it names was read back
//! and checked: a backup without a manifest did not happen.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// A backup's name: when it was taken (UTC, to the millisecond) and four
/// random hex digits, e.g. `20261204T231500.123Z-3f9a`. Names sort in the
/// order backups were taken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

impl BackupId {
    /// A new name for a backup taken at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        let mut random = [0u8; 2];
        getrandom::fill(&mut random).expect("the OS random source");
        Self(format!(
            "{}-{:02x}{:02x}",
            at.format(TIME_FORMAT),
            random[0],
            random[1]
        ))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a backup's name (such as 20261204T231500.123Z-3f9a)");
        let (time, suffix) = text.split_once('-').ok_or_else(bad)?;
        let parsed = NaiveDateTime::parse_from_str(time, TIME_FORMAT).map_err(|_| bad())?;
        // One spelling per moment (chrono also reads a missing fraction).
        if parsed.format(TIME_FORMAT).to_string() != time {
            return Err(bad());
        }
        if suffix.len() != 4 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self(text.to_string()))
    }

    /// When the backup was taken.
    pub fn taken_at(&self) -> DateTime<Utc> {
        let time = self.0.split_once('-').map_or(self.0.as_str(), |(t, _)| t);
        NaiveDateTime::parse_from_str(time, TIME_FORMAT)
            .expect("checked when parsed")
            .and_utc()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where its manifest lives in the store.
    pub fn manifest_key(&self) -> String {
        format!("{MANIFESTS}/{}.json", self.0)
    }

    /// The backup a manifest key names, if it names one.
    pub fn from_manifest_key(key: &str) -> Option<Self> {
        let name = key.strip_prefix(MANIFESTS)?.strip_prefix('/')?;
        Self::parse(name.strip_suffix(".json")?).ok()
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for BackupId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

pub const MANIFESTS: &str = "manifests";
/// One object per backup running now (`locks/<id>`).
pub const LOCKS: &str = "locks";
pub const OBJECTS: &str = "objects";

/// A SHA-256 as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    pub fn of_digest(digest: &[u8]) -> Self {
        use std::fmt::Write;
        let mut hex = String::with_capacity(64);
        for b in digest {
            let _ = write!(hex, "{b:02x}");
        }
        Self(hex)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(text.to_string()))
        } else {
            Err(format!("`{text}` is not a SHA-256 in lowercase hex"))
        }
    }

    /// The object holding content with this hash.
    pub fn object_key(&self) -> String {
        format!("{OBJECTS}/{}/{}", &self.0[..2], self.0)
    }

    /// The hash an object key names, if it names one.
    pub fn from_object_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(OBJECTS)?.strip_prefix('/')?;
        let (dir, name) = rest.split_once('/')?;
        let hash = Self::parse(name).ok()?;
        (hash.0[..2] == *dir).then_some(hash)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Sha256> for String {
    fn from(h: Sha256) -> String {
        h.0
    }
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Relative to the data directory, `/`-separated (`users/alice/output/a.png`).
    pub path: String,
    pub size: u64,
    pub sha256: Sha256,
    /// Its modification time (nanoseconds since the epoch), restored with
    /// it: ComfyUI lists a participant's files newest first.
    pub modified_ns: i64,
    /// Its inode and change time where it was backed up: with the size
    /// and the modification time, how the next backup knows the file is
    /// the same one without reading it (a file replaced by a rename is a
    /// new inode, however quickly it came). Meaningless elsewhere.
    #[serde(default)]
    pub inode: u64,
    #[serde(default)]
    pub changed_ns: i64,
}

/// A backup: the database snapshot and every file, as of `created_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub id: BackupId,
    pub created_at: DateTime<Utc>,
    /// The ComfyUME version that took it.
    pub comfyume: String,
    /// The SQLite database, as `VACUUM INTO` wrote it.
    pub database: Entry,
    /// Participants' files and the wall's, by path.
    pub files: Vec<Entry>,
}

impl Manifest {
    /// The database's entry, then every file's.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        std::iter::once(&self.database).chain(&self.files)
    }

    /// Bytes the backup restores to (each file counted once per path).
    pub fn total_bytes(&self) -> u64 {
        self.entries().map(|e| e.size).sum()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if manifest.format != FORMAT {
            return Err(format!(
                "format {} (this build reads format {FORMAT})",
                manifest.format
            ));
        }
        check_entry_path(&manifest.database.path)?;
        let mut seen = std::collections::HashSet::new();
        for entry in &manifest.files {
            check_entry_path(&entry.path)?;
            if !(entry.path.starts_with("users/") || entry.path.starts_with("wall/")) {
                return Err(format!(
                    "`{}` is not a participant's file or the wall's",
                    entry.path
                ));
            }
            if !seen.insert(entry.path.as_str()) {
                return Err(format!("`{}` is listed twice", entry.path));
            }
        }
        Ok(manifest)
    }
}

/// A manifest's paths are written to disk on restore: each must stay
/// inside the data directory whatever the store holds.
pub fn check_entry_path(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.ends_with(".restoring")
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err(format!("`{path}` is not a path inside the data directory"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_sort_by_time_and_parse_back() {
        let early = BackupId::new("2026-12-04T23:15:00.007Z".parse().unwrap());
        let late = BackupId::new("2026-12-04T23:15:00.012Z".parse().unwrap());
        assert!(early < late);
        assert!(early.as_str().starts_with("20261204T231500.007Z-"));
        assert_eq!(BackupId::parse(early.as_str()).unwrap(), early);
        assert_eq!(
            early.taken_at(),
            "2026-12-04T23:15:00.007Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            BackupId::from_manifest_key(&early.manifest_key()),
            Some(early)
        );
        for bad in [
            "",
            "latest",
            "20261204T231500.000Z",
            "20261204T231500Z-0000",
            "20261304T231500.000Z-0000",
            "20261204T231500.000Z-xyz1",
            "../x",
        ] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_keys_name_their_hash() {
        let h = Sha256::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(h.object_key(), format!("objects/ab/{}", "ab".repeat(32)));
        assert_eq!(Sha256::from_object_key(&h.object_key()), Some(h));
        assert_eq!(
            Sha256::from_object_key(&format!("objects/cd/{}", "ab".repeat(32))),
            None
        );
        assert!(Sha256::parse(&"AB".repeat(32)).is_err());
    }

    #[test]
    fn a_manifest_names_each_file_once_and_only_participants_and_the_wall() {
        let entry = |path: &str| Entry {
            path: path.into(),
            size: 1,
            sha256: Sha256::parse(&"ab".repeat(32)).unwrap(),
            modified_ns: 0,
            inode: 0,
            changed_ns: 0,
        };
        let manifest = |files: Vec<Entry>| {
            serde_json::to_vec(&Manifest {
                format: FORMAT,
                id: BackupId::new("2026-12-04T23:15:00Z".parse().unwrap()),
                created_at: "2026-12-04T23:15:00Z".parse().unwrap(),
                comfyume: "0".into(),
                database: entry("comfyume.db"),
                files,
            })
            .unwrap()
        };
        assert!(Manifest::parse(&manifest(vec![entry("users/a/x"), entry("wall/1.png")])).is_ok());
        let twice = Manifest::parse(&manifest(vec![entry("users/a/x"), entry("users/a/x")]));
        assert!(twice.unwrap_err().contains("twice"));
        let elsewhere = Manifest::parse(&manifest(vec![entry("etc/x")]));
        assert!(elsewhere.unwrap_err().contains("participant"));
        let partial = Manifest::parse(&manifest(vec![entry("users/a/x.restoring")]));
        assert!(partial.is_err());
    }

    #[test]
    fn a_manifest_cannot_name_a_path_outside_the_data_directory() {
        for bad in ["/etc/passwd", "../x", "users/../../x", "a//b", "a\\b", ""] {
            assert!(check_entry_path(bad).is_err(), "{bad}");
        }
        assert!(check_entry_path("users/alice/output/a.png").is_ok());
    }
}
