//! `FileInfo`, ComfyUI's `get_file_info`, and the timestamp arithmetic that
//! makes our numbers match Python's to the millisecond.

use std::fs::Metadata;

use serde::Serialize;

/// ComfyUI's `get_file_info` (app/user_manager.py): serialises as
/// `{"path","size","modified","created"}` with millisecond epoch integers.
/// `created` is `os.path.getctime`, which on Linux is the inode *change*
/// time, not the birth time: a rename bumps it, and the trace of a move shows
/// exactly that, so we read the same field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Forward-slash path, relative to whatever the caller documents (the
    /// listed directory, or the userdata root).
    pub path: String,
    pub size: u64,
    pub modified: i64,
    pub created: i64,
}

impl FileInfo {
    pub(crate) fn new(path: String, md: &Metadata) -> Self {
        Self {
            path,
            size: md.len(),
            modified: millis(mtime_secs(md)),
            created: millis(ctime_secs(md)),
        }
    }
}

/// Python's `int(t * 1000)`: the float product, truncated toward zero.
fn millis(secs: f64) -> i64 {
    (secs * 1000.0) as i64
}

/// `st_mtime` as Python computes it: `sec + nsec * 1e-9` in doubles, so the
/// value (and the `/v2/userdata` float built from it) is the same number.
#[cfg(unix)]
pub(crate) fn mtime_secs(md: &Metadata) -> f64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime() as f64 + md.mtime_nsec() as f64 * 1e-9
}

#[cfg(unix)]
fn ctime_secs(md: &Metadata) -> f64 {
    use std::os::unix::fs::MetadataExt;
    md.ctime() as f64 + md.ctime_nsec() as f64 * 1e-9
}

// Off Unix, Python's getctime is the creation time, which std exposes.
#[cfg(not(unix))]
pub(crate) fn mtime_secs(md: &Metadata) -> f64 {
    system_secs(md.modified())
}

#[cfg(not(unix))]
fn ctime_secs(md: &Metadata) -> f64 {
    system_secs(md.created().or_else(|_| md.modified()))
}

#[cfg(not(unix))]
fn system_secs(t: std::io::Result<std::time::SystemTime>) -> f64 {
    use std::time::UNIX_EPOCH;
    match t {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        },
        Err(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_truncates_like_python_int() {
        assert_eq!(millis(1795795242.1754084), 1795795242175);
        assert_eq!(millis(0.0009), 0);
        assert_eq!(millis(-0.0019), -1);
    }

    #[test]
    fn serialises_in_comfyui_key_order() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.json");
        std::fs::write(&p, b"{\"x\":1}").unwrap();
        let md = std::fs::metadata(&p).unwrap();
        let info = FileInfo::new("workflows/a.json".into(), &md);
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.starts_with("{\"path\":\"workflows/a.json\",\"size\":7,\"modified\":"));
        assert!(json.contains(",\"created\":"));
        // Plausible epoch milliseconds, not seconds.
        assert!(info.modified > 1_600_000_000_000);
        assert!(info.created >= info.modified - 1);
    }
}
