//! The disk guard: before the gateway writes anything large (an upload, an
//! output copied from a GPU backend, a backup's database snapshot) it asks
//! whether the filesystem would keep `limits.min_free_disk_bytes` free
//! afterwards, and refuses with a reason a person can act on instead of
//! filling the disk. A full disk breaks everything at once (the database's
//! writes too), so the room stops taking new files well before it.

use std::path::{Path, PathBuf};

/// Why a write was refused, or why free space could not be known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error(
        "the server's disk is nearly full: {needed} more would leave {left} free on {path}, below the {min} it keeps free; ask the instructor to free space"
    )]
    Low {
        path: String,
        needed: Bytes,
        left: Bytes,
        min: Bytes,
    },
    #[error("cannot tell the free space on {path}: {reason}")]
    Unknown { path: String, reason: String },
}

/// A byte count that prints for a person (`1.5 GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0 as f64;
        if self.0 >= 1_000_000_000 {
            write!(f, "{:.1} GB", b / 1e9)
        } else if self.0 >= 1_000_000 {
            write!(f, "{:.1} MB", b / 1e6)
        } else if self.0 >= 1_000 {
            write!(f, "{:.1} kB", b / 1e3)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// One filesystem's guard (the data directory's). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
}

/// The filesystem's state, for `/ready`, `/metrics` and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskState {
    pub free: u64,
    pub min_free: u64,
}

impl DiskState {
    /// Below the threshold: new files are being refused.
    pub fn low(&self) -> bool {
        self.free < self.min_free
    }
}

impl DiskGuard {
    /// Guards the filesystem holding `dir` (the data directory), keeping
    /// `min_free` bytes free.
    pub fn new(dir: impl Into<PathBuf>, min_free: u64) -> Self {
        Self {
            dir: dir.into(),
            min_free,
        }
    }

    pub fn state(&self) -> Result<DiskState, DiskError> {
        Ok(DiskState {
            free: free_bytes(&self.dir)?,
            min_free: self.min_free,
        })
    }

    /// Ok when writing `bytes` more would still leave the threshold free.
    pub fn check(&self, bytes: u64) -> Result<(), DiskError> {
        let free = free_bytes(&self.dir)?;
        let left = free.saturating_sub(bytes);
        if free < bytes || left < self.min_free {
            return Err(DiskError::Low {
                path: self.dir.display().to_string(),
                needed: Bytes(bytes),
                left: Bytes(left),
                min: Bytes(self.min_free),
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged process may still write on `dir`'s filesystem
/// (the nearest existing ancestor's, for a directory made on first write).
pub fn free_bytes(dir: &Path) -> Result<u64, DiskError> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("."));
    let stats = rustix::fs::statvfs(existing).map_err(|e| DiskError::Unknown {
        path: existing.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_would_cross_the_threshold_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(DiskGuard::new(dir.path(), 0).check(1).is_ok());
        let err = DiskGuard::new(dir.path(), free + 1).check(1).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nearly full") && text.contains("keeps free"),
            "{text}"
        );
        assert!(DiskGuard::new(dir.path(), 0).check(u64::MAX).is_err());
        assert!(DiskGuard::new(dir.path(), u64::MAX).state().unwrap().low());
    }

    #[test]
    fn a_directory_not_made_yet_is_judged_by_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(&dir.path().join("users/alice/input")).is_ok());
    }

    #[test]
    fn sizes_read_as_a_person_would() {
        assert_eq!(Bytes(512).to_string(), "512 bytes");
        assert_eq!(Bytes(1_500_000).to_string(), "1.5 MB");
        assert_eq!(Bytes(2_000_000_000).to_string(), "2.0 GB");
    }
}
