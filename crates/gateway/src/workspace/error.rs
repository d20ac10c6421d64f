//! What can go wrong with a workspace operation, in ComfyUI's terms.
//!
//! Each variant is one HTTP status in ComfyUI (404, 409, 403, 400, and 500 for
//! `Io`), but nothing here knows HTTP: the handlers do the mapping. Where
//! ComfyUI answers with a text body ("Directory not found", "File already
//! exists", ...), the message is exactly that text, so a handler can send
//! `err.to_string()`; where ComfyUI sends an empty body the message is only a
//! description for logs (the frontend reads the status, never those bodies).

/// A workspace operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// ComfyUI: 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// ComfyUI: 409, body "File already exists".
    #[error("File already exists")]
    Conflict,
    /// ComfyUI: 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// ComfyUI: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Over one of the gateway's own size limits: 413 (ComfyUI has none).
    #[error("{0}")]
    TooLarge(String),
    /// Over the user's disk quota: 507 (ComfyUI has none).
    #[error("{0}")]
    QuotaExceeded(String),
    /// The server's disk is nearly full (the disk guard): 507.
    #[error("{0}")]
    DiskFull(String),
    /// ComfyUI: 500 (an unexpected filesystem failure).
    #[error("workspace I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = WorkspaceError> = std::result::Result<T, E>;

// The texts ComfyUI sends (or, where it sends none, what we log).

/// `GET /userdata` without `dir` (ComfyUI's body).
pub(crate) const DIR_NOT_PROVIDED: &str = "Directory not provided";
/// `GET /userdata?dir=` that escapes the user root (ComfyUI's body).
pub(crate) const INVALID_DIRECTORY: &str = "Invalid directory";
/// `GET /userdata?dir=` that does not exist (ComfyUI's body).
pub(crate) const DIR_NOT_FOUND: &str = "Directory not found";
/// `GET /v2/userdata` bodies.
pub(crate) const V2_NOT_FOUND: &str = "Requested path not found";
pub(crate) const V2_NOT_A_DIR: &str = "Requested path is not a directory";
pub(crate) const V2_INVALID_PATH: &str = "Invalid path requested";
/// The reason ComfyUI gives when saving a userdata file fails.
pub(crate) const INVALID_FILENAME: &str =
    "Invalid filename. Please avoid special characters like :\\/*?\"<>|";
/// A userdata `{file}` that escapes the user root (ComfyUI: empty 403).
pub(crate) const INVALID_FILE_PATH: &str = "Invalid file path";
/// A file that does not exist (ComfyUI: empty 404 on every route).
pub(crate) const FILE_NOT_FOUND: &str = "File not found";
