//! Where backups go: an S3-compatible bucket (AWS S3, Cloudflare R2,
//! MinIO) or a local folder, behind `object_store`'s one interface.
//!
//! `object_store` serves S3 ([`crate::buckets`]) and the local
//! filesystem alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::Digest;

use super::BackupError;
use super::manifest::Sha256;
use crate::config::BackupConfig;

/// Objects up to this size go up in one request; larger ones in parts
/// of this size (R2 wants every part but the last the same size, and at
/// least 5 MiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// An opened backup destination.
#[derive(Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    /// The URL as given (credentials never appear in it).
    url: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).finish()
    }
}

/// An object's size and content hash, as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub size: u64,
    pub sha256: Sha256,
}

impl Target {
    /// Opens `url`: `s3://BUCKET[/PREFIX]` (endpoint, region and
    /// credentials from `config.s3`, else the AWS environment variables)
    /// or `file:///PATH` (created if missing).
    pub fn open(url: &str, config: &BackupConfig) -> Result<Target, BackupError> {
        let bad = |reason: &str| BackupError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let store: Arc<dyn ObjectStore> = if let Some(path) = url.strip_prefix("file://") {
            let path = std::path::Path::new(path);
            if !path.is_absolute() {
                return Err(bad(
                    "a file:// URL needs an absolute path (file:///srv/backups)",
                ));
            }
            std::fs::create_dir_all(path).map_err(|source| BackupError::Local {
                path: path.display().to_string(),
                source,
            })?;
            Arc::new(
                LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| bad(&e.to_string()))?
                    .with_automatic_cleanup(true),
            )
        } else if let Some(rest) = url.strip_prefix("s3://") {
            crate::buckets::open_s3(
                rest,
                &config.s3,
                crate::buckets::Patience {
                    timeout: Duration::from_secs(config.timeout_seconds),
                    max_retries: config.max_retries,
                },
            )
            .map_err(|e| bad(&e))?
        } else {
            return Err(bad("expected s3://BUCKET/PREFIX or file:///PATH"));
        };
        Ok(Target {
            store,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn remote(&self, doing: String) -> impl FnOnce(object_store::Error) -> BackupError + '_ {
        move |cause| BackupError::Remote {
            url: self.url.clone(),
            doing,
            cause: Box::new(cause),
        }
    }

    /// Every object under `prefix`: its key and size.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, BackupError> {
        let mut listing = self.store.list(Some(&ObjectPath::from(prefix)));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(self.remote(format!("listing {prefix}/")))?;
            out.push((meta.location.to_string(), meta.size));
        }
        Ok(out)
    }

    /// Every object under `prefix` with when it was last written.
    pub async fn list_aged(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, BackupError> {
        let mut listing = self.store.list(Some(&ObjectPath::from(prefix)));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(self.remote(format!("listing {prefix}/")))?;
            out.push((meta.location.to_string(), meta.last_modified));
        }
        Ok(out)
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BackupError> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .map_err(self.remote(format!("writing {key}")))?;
        Ok(())
    }

    /// Writes `key` from a file, in parts, hashing what it sends; the
    /// caller compares the hash with the one it expects.
    pub async fn put_file(
        &self,
        key: &str,
        file: &mut tokio::fs::File,
    ) -> Result<ReadBack, BackupError> {
        use tokio::io::AsyncReadExt;
        let upload = self
            .store
            .put_multipart(&ObjectPath::from(key))
            .await
            .map_err(self.remote(format!("starting to write {key}")))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(source) => {
                    let _ = writer.abort().await;
                    return Err(BackupError::Local {
                        path: key.to_string(),
                        source,
                    });
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            // At most two parts in flight: a bounded amount in memory.
            if let Err(e) = writer.wait_for_capacity(2).await {
                // Abandoned parts would otherwise stay in the bucket.
                let _ = writer.abort().await;
                return Err(self.remote(format!("writing {key}"))(e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(self.remote(format!("finishing {key}")))?;
        Ok(ReadBack {
            size,
            sha256: Sha256::of_digest(&hasher.finalize()),
        })
    }

    /// Reads an object whole (manifests: small).
    pub async fn get(&self, key: &str) -> Result<Bytes, BackupError> {
        let doing = format!("reading {key}");
        let got = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(self.remote(doing.clone()))?;
        got.bytes().await.map_err(self.remote(doing))
    }

    /// Reads an object through, handing each chunk to `sink` (which may
    /// write it somewhere), and returns its size and hash.
    pub async fn read_through(
        &self,
        key: &str,
        mut sink: impl AsyncChunkSink,
    ) -> Result<ReadBack, BackupError> {
        let doing = format!("reading {key}");
        let got = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(self.remote(doing.clone()))?;
        let mut stream = got.into_stream();
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.remote(doing.clone()))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            sink.take(&chunk).await?;
        }
        Ok(ReadBack {
            size,
            sha256: Sha256::of_digest(&hasher.finalize()),
        })
    }

    /// An object's size, or `None` when it is not there.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, BackupError> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote(format!("looking at {key}"))(e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), BackupError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote(format!("deleting {key}"))(e)),
        }
    }

    /// Whether `key` is missing (as opposed to unreadable).
    pub fn is_not_found(error: &BackupError) -> bool {
        matches!(
            error,
            BackupError::Remote { cause, .. }
                if matches!(**cause, object_store::Error::NotFound { .. })
        )
    }
}

/// Where [`Target::read_through`] puts what it reads.
pub trait AsyncChunkSink {
    fn take(
        &mut self,
        chunk: &[u8],
    ) -> impl std::future::Future<Output = Result<(), BackupError>> + Send;
}

/// Reads and drops: verification only needs the hash.
pub struct Discard;

impl AsyncChunkSink for Discard {
    async fn take(&mut self, _: &[u8]) -> Result<(), BackupError> {
        Ok(())
    }
}

/// Writes to a local file.
pub struct ToFile<'a> {
    pub file: &'a mut tokio::fs::File,
    pub path: &'a std::path::Path,
}

impl AsyncChunkSink for ToFile<'_> {
    async fn take(&mut self, chunk: &[u8]) -> Result<(), BackupError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(chunk)
            .await
            .map_err(|source| BackupError::Local {
                path: self.path.display().to_string(),
                source,
            })
    }
}
