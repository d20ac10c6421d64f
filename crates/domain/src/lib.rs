//! Domain types: the parsed values that travel inward from the edges.
//!
//! Nothing here knows about HTTP, SQL or the filesystem layout; every type is
//! built by a `parse` function that refuses bad input, so code that receives
//! one never has to re-check it.

mod file_kind;
mod job;
mod path;
mod user;

pub use file_kind::FileKind;
pub use job::{Job, JobId, JobIdError, JobState};
pub use path::{MAX_PATH_BYTES, MAX_SEGMENT_BYTES, PathError, SafeRelPath};
pub use user::{Password, Role, UserId, UserName, UserNameError};
