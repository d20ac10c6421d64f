//! Where a file found for reading is: on disk or in the files bucket.
//! The HTTP layer streams it from either without knowing which
//! ([`FileSource::open`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::error::FILE_NOT_FOUND;
use super::{Result, WorkspaceError};

/// A file a caller may read.
#[derive(Clone)]
pub enum FileSource {
    Disk(PathBuf),
    Bucket {
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
    },
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Disk(path) => write!(f, "{}", path.display()),
            FileSource::Bucket { key, .. } => write!(f, "bucket:{key}"),
        }
    }
}

/// An opened file: its size now, and its bytes as they are read.
pub struct OpenedFile {
    pub size: u64,
    pub bytes: BoxStream<'static, io::Result<Bytes>>,
}

/// How much of a file on disk is read at a time.
const CHUNK_BYTES: usize = 64 * 1024;

impl FileSource {
    /// Opens the file for streaming. A file gone since it was found is
    /// `NotFound` (the caller's 404); anything else is an I/O error.
    pub async fn open(&self) -> Result<OpenedFile> {
        match self {
            FileSource::Disk(path) => {
                let file = tokio::fs::File::open(path).await.map_err(gone_or_io)?;
                let metadata = file.metadata().await?;
                if !metadata.is_file() {
                    // Became a folder since it was found.
                    return Err(WorkspaceError::NotFound(FILE_NOT_FOUND));
                }
                let size = metadata.len();
                let bytes = futures_util::stream::try_unfold(file, |mut file| async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = bytes::BytesMut::with_capacity(CHUNK_BYTES);
                    let n = file.read_buf(&mut buf).await?;
                    Ok::<_, io::Error>((n > 0).then(|| (buf.freeze(), file)))
                });
                Ok(OpenedFile {
                    size,
                    bytes: bytes.boxed(),
                })
            }
            FileSource::Bucket { store, key } => {
                let got = store.get(key).await.map_err(bucket_error)?;
                let size = got.meta.size;
                let bytes = got
                    .into_stream()
                    .map(|chunk| chunk.map_err(|e| io::Error::other(e.to_string())));
                Ok(OpenedFile {
                    size,
                    bytes: bytes.boxed(),
                })
            }
        }
    }

    /// The whole file if it holds at most `limit` bytes, else `TooLarge`,
    /// having read no more than one byte past the limit: the size seen
    /// when it was found may be older than the file.
    pub async fn read_at_most(&self, limit: u64) -> Result<Vec<u8>> {
        let mut opened = self.open().await?;
        let too_large = |size: u64| {
            WorkspaceError::TooLarge(format!(
                "The file is over {limit} bytes ({size} or more), the most read here at once."
            ))
        };
        if opened.size > limit {
            return Err(too_large(opened.size));
        }
        let mut bytes = Vec::with_capacity(opened.size as usize);
        while let Some(chunk) = opened.bytes.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() as u64 > limit {
                return Err(too_large(bytes.len() as u64));
            }
        }
        Ok(bytes)
    }

    /// The whole file, for callers whose files are bounded where they are
    /// written (userdata, inputs sent to a GPU).
    pub async fn read_all(&self) -> Result<Vec<u8>> {
        match self {
            FileSource::Disk(path) => tokio::fs::read(path).await.map_err(gone_or_io),
            FileSource::Bucket { store, key } => {
                let got = store.get(key).await.map_err(bucket_error)?;
                Ok(got.bytes().await.map_err(bucket_error)?.to_vec())
            }
        }
    }
}

#[cfg(test)]
impl FileSource {
    /// The file's path, for tests that look at the disk.
    pub(crate) fn disk_path(&self) -> &std::path::Path {
        match self {
            FileSource::Disk(path) => path,
            FileSource::Bucket { key, .. } => panic!("{key} is in the bucket, not on disk"),
        }
    }
}

fn gone_or_io(e: io::Error) -> WorkspaceError {
    if e.kind() == io::ErrorKind::NotFound {
        WorkspaceError::NotFound(FILE_NOT_FOUND)
    } else {
        WorkspaceError::Io(e)
    }
}

/// A bucket's failure: a missing object is "not found", anything else an
/// I/O error that names the bucket's answer.
pub(super) fn bucket_error(e: object_store::Error) -> WorkspaceError {
    match e {
        object_store::Error::NotFound { .. } => WorkspaceError::NotFound(FILE_NOT_FOUND),
        e => WorkspaceError::Io(io::Error::other(format!("the files bucket: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_bounded_and_a_folder_is_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        let file = FileSource::Disk(path);
        assert_eq!(file.read_at_most(5).await.unwrap(), b"12345");
        assert!(matches!(
            file.read_at_most(4).await,
            Err(WorkspaceError::TooLarge(_))
        ));
        let folder = FileSource::Disk(dir.path().to_path_buf());
        assert!(matches!(
            folder.open().await,
            Err(WorkspaceError::NotFound(_))
        ));
        let gone = FileSource::Disk(dir.path().join("gone"));
        assert!(matches!(
            gone.read_all().await,
            Err(WorkspaceError::NotFound(_))
        ));
    }
}
