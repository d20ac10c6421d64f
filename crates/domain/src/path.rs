//! `SafeRelPath`: a relative path that can never leave the directory it is
//! joined to.
//!
//! ComfyUI resolves user-supplied paths with `os.path.abspath` and then checks
//! the result is still under the root (403 otherwise). We do the same thing
//! lexically, before touching the disk: `.` and `..` are folded, and a path that
//! climbs above its root, is absolute, or holds a NUL byte is refused. Symlinks
//! are never created inside workspaces, so a lexical check is sufficient.

use std::fmt;
use std::path::{Path, PathBuf};

/// A normalised relative path (forward slashes, no `.`/`..`, no empty
/// segments). The empty path is the root itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SafeRelPath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute paths are not allowed")]
    Absolute,
    #[error("path escapes its root")]
    Escapes,
    #[error("path contains a forbidden character")]
    BadCharacter,
    #[error("path is too long")]
    TooLong,
}

/// The longest name one segment may have, in bytes (Linux's `NAME_MAX`).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// The longest relative path accepted, in bytes: well inside `PATH_MAX`
/// once under a data directory.
pub const MAX_PATH_BYTES: usize = 1024;

impl SafeRelPath {
    /// The root itself.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses a client-supplied relative path. Both `/` and `\` separate
    /// segments (a Windows client's `sub\x.png` must not become a file name
    /// holding a backslash that another tool would read as a separator).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.contains('\0') {
            return Err(PathError::BadCharacter);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        if raw.starts_with('/') || raw.starts_with('\\') || looks_like_drive(raw) {
            return Err(PathError::Absolute);
        }
        let mut parts: Vec<&str> = Vec::new();
        for seg in raw.split(['/', '\\']) {
            match seg {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes);
                    }
                }
                s if s.len() > MAX_SEGMENT_BYTES => return Err(PathError::TooLong),
                s => parts.push(s),
            }
        }
        // `./C:/x` folds to `C:/x`: refused like the raw form, so what
        // parses always parses again to itself.
        if parts.first().is_some_and(|first| looks_like_drive(first)) {
            return Err(PathError::Absolute);
        }
        Ok(Self(parts.join("/")))
    }

    /// Parses a single file name: like [`parse`](Self::parse) but the result
    /// must be exactly one non-empty segment.
    pub fn parse_file_name(raw: &str) -> Result<Self, PathError> {
        let p = Self::parse(raw)?;
        if p.0.is_empty() || p.0.contains('/') {
            return Err(PathError::BadCharacter);
        }
        Ok(p)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/other`, still safe because both halves are.
    pub fn join(&self, other: &SafeRelPath) -> SafeRelPath {
        match (self.is_root(), other.is_root()) {
            (true, _) => other.clone(),
            (_, true) => self.clone(),
            _ => SafeRelPath(format!("{}/{}", self.0, other.0)),
        }
    }

    /// The last segment, or `""` for the root.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// Everything before the last segment.
    pub fn parent(&self) -> SafeRelPath {
        match self.0.rfind('/') {
            Some(i) => SafeRelPath(self.0[..i].to_string()),
            None => SafeRelPath::root(),
        }
    }

    /// Segments, for building `split=true` listings.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The absolute location under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.is_root() {
            root.to_path_buf()
        } else {
            root.join(&self.0)
        }
    }
}

fn looks_like_drive(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

impl fmt::Display for SafeRelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafeRelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafeRelPath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_dots_and_separators() {
        assert_eq!(SafeRelPath::parse("a/./b//c").unwrap().as_str(), "a/b/c");
        assert_eq!(SafeRelPath::parse("a/b/../c").unwrap().as_str(), "a/c");
        assert_eq!(SafeRelPath::parse("a\\b").unwrap().as_str(), "a/b");
        assert!(SafeRelPath::parse("").unwrap().is_root());
        assert!(SafeRelPath::parse("a/..").unwrap().is_root());
    }

    #[test]
    fn refuses_escapes() {
        assert_eq!(SafeRelPath::parse(".."), Err(PathError::Escapes));
        assert_eq!(SafeRelPath::parse("a/../../b"), Err(PathError::Escapes));
        assert_eq!(SafeRelPath::parse("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(
            SafeRelPath::parse("\\\\server\\x"),
            Err(PathError::Absolute)
        );
        assert_eq!(SafeRelPath::parse("C:/x"), Err(PathError::Absolute));
        // Found by fuzzing (fuzz/fuzz_targets/paths.rs): a drive letter
        // left first once `./` is folded.
        assert_eq!(SafeRelPath::parse("./b:/jo."), Err(PathError::Absolute));
        assert_eq!(SafeRelPath::parse("x/../b:"), Err(PathError::Absolute));
        assert_eq!(SafeRelPath::parse("a\0b"), Err(PathError::BadCharacter));
        let long = "x".repeat(MAX_SEGMENT_BYTES + 1);
        assert_eq!(SafeRelPath::parse(&long), Err(PathError::TooLong));
        assert_eq!(
            SafeRelPath::parse(&format!("a/{long}/b")),
            Err(PathError::TooLong)
        );
        let deep = vec!["abc"; MAX_PATH_BYTES / 3].join("/");
        assert_eq!(SafeRelPath::parse(&deep), Err(PathError::TooLong));
        assert!(SafeRelPath::parse(&"x".repeat(MAX_SEGMENT_BYTES)).is_ok());
    }

    #[test]
    fn file_names_are_one_segment() {
        assert!(SafeRelPath::parse_file_name("x.png").is_ok());
        assert!(SafeRelPath::parse_file_name("a/x.png").is_err());
        assert!(SafeRelPath::parse_file_name("").is_err());
        assert!(SafeRelPath::parse_file_name("..").is_err());
    }

    #[test]
    fn parent_and_name() {
        let p = SafeRelPath::parse("workflows/sub/a.json").unwrap();
        assert_eq!(p.file_name(), "a.json");
        assert_eq!(p.parent().as_str(), "workflows/sub");
        assert_eq!(
            p.segments().collect::<Vec<_>>(),
            ["workflows", "sub", "a.json"]
        );
    }
}
