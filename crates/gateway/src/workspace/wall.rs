//! The wall's copies of the images participants share: the room's, not
//! any participant's, so they outlive the original's deletion. In
//! `<data_dir>/wall/<id>.<ext>`, or under `wall/` in the files bucket
//! when participants' files are there (theirs are under `users/`), so
//! every gateway serves them.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::source::{FileSource, bucket_error};
use super::{Bucket, Result, WorkspaceError};

/// Where the wall's images are kept.
#[derive(Clone)]
pub enum WallImages {
    Disk(PathBuf),
    Bucket(Arc<dyn ObjectStore>),
}

impl std::fmt::Debug for WallImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WallImages::Disk(dir) => write!(f, "WallImages({})", dir.display()),
            WallImages::Bucket(_) => f.write_str("WallImages(bucket)"),
        }
    }
}

impl WallImages {
    /// In `dir`, unless the participants' files are in `bucket`.
    pub fn new(dir: PathBuf, bucket: Option<&Bucket>) -> Self {
        match bucket {
            Some(bucket) => WallImages::Bucket(bucket.store()),
            None => WallImages::Disk(dir),
        }
    }

    /// Keeps item `id`'s image whole: written beside its place and
    /// renamed into it on disk, one PUT in a bucket, so the wall never
    /// shows half an image.
    pub async fn keep(&self, id: i64, ext: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            WallImages::Disk(dir) => {
                tokio::fs::create_dir_all(dir).await?;
                let incoming = dir.join(format!(".incoming-{}", uuid::Uuid::new_v4()));
                let kept = async {
                    tokio::fs::write(&incoming, bytes).await?;
                    tokio::fs::rename(&incoming, dir.join(file_name(id, ext))).await
                }
                .await;
                if kept.is_err() {
                    // Best effort: the half-written copy is ours alone.
                    let _ = tokio::fs::remove_file(&incoming).await;
                }
                Ok(kept?)
            }
            WallImages::Bucket(store) => {
                store
                    .put(&key(id, ext)?, Bytes::from(bytes).into())
                    .await
                    .map_err(bucket_error)?;
                Ok(())
            }
        }
    }

    /// Item `id`'s image, to serve.
    pub fn source(&self, id: i64, ext: &str) -> Result<FileSource> {
        Ok(match self {
            WallImages::Disk(dir) => FileSource::Disk(dir.join(file_name(id, ext))),
            WallImages::Bucket(store) => FileSource::Bucket {
                store: store.clone(),
                key: key(id, ext)?,
            },
        })
    }
}

fn file_name(id: i64, ext: &str) -> String {
    format!("{id}.{ext}")
}

fn key(id: i64, ext: &str) -> Result<ObjectPath> {
    // An id and an extension from the wall's own list: a failure here is
    // ours, not the caller's.
    ObjectPath::parse(format!("wall/{}", file_name(id, ext)))
        .map_err(|e| WorkspaceError::Io(std::io::Error::other(e.to_string())))
}
