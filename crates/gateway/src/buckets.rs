//! Opening an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO): what
//! backups ([`crate::backup`]) and participants' files in a bucket
//! ([`crate::workspace`]) share.
//!
//! `object_store` (Apache Arrow's) rather than the AWS SDK: one small
//! client, built on the reqwest and rustls the gateway already has, with
//! retries and timeouts we set; the SDK is many times its build.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::config::S3Config;

/// How patient a bucket's client is.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// The longest silence (connecting, or waiting for the next bytes)
    /// before a request fails; not a limit on a whole transfer.
    pub timeout: Duration,
    /// Retries of a failed request, with backoff.
    pub max_retries: u32,
}

/// Opens `rest`, the part of an `s3://` URL after the scheme
/// (`BUCKET[/PREFIX]`), with endpoint, region and credentials from `s3`,
/// else the AWS environment variables. The store answers with keys
/// relative to the prefix. Says why in one sentence when it cannot.
pub fn open_s3(
    rest: &str,
    s3: &S3Config,
    patience: Patience,
) -> Result<Arc<dyn ObjectStore>, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("no bucket: s3://BUCKET/PREFIX".into());
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret.expose());
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token.expose());
    }
    // The client options replace what `from_env` read, so plain HTTP is
    // allowed here for an endpoint from either place.
    let endpoint = s3
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT").ok());
    let allow_http = endpoint.is_some_and(|e| e.starts_with("http://"))
        || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let Patience {
        timeout,
        max_retries,
    } = patience;
    builder = builder
        .with_client_options(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_connect_timeout(timeout.min(Duration::from_secs(10)))
                .with_read_timeout(timeout)
                .with_allow_http(allow_http),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: max_retries as usize,
            retry_timeout: timeout.saturating_mul(max_retries.max(1)),
        });
    let store = builder.build().map_err(|e| e.to_string())?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

/// The files bucket `[files] url` names, opened; `None` when the files
/// stay on disk.
pub fn files_bucket(
    config: &crate::config::FilesConfig,
) -> Result<Option<Arc<dyn ObjectStore>>, String> {
    let Some(url) = &config.url else {
        return Ok(None);
    };
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(format!(
            "[files] url = {url:?}: expected s3://BUCKET/PREFIX (or no url, for files on disk)"
        ));
    };
    let patience = Patience {
        timeout: Duration::from_secs(config.timeout_seconds),
        max_retries: config.max_retries,
    };
    open_s3(rest, &config.s3, patience)
        .map(Some)
        .map_err(|reason| format!("[files] url = {url:?}: {reason}"))
}

/// Checks the files bucket before any participant relies on it: that it
/// can be listed (a bucket missing, unreachable or refusing the
/// credentials is said at start, not on every participant's first save),
/// and that it keeps conditional writes. Gateways rely on those to keep
/// upload names and settings whole (`crate::workspace`'s bucket); a store
/// that ignored them would lose files without a word, so it is refused.
/// Writes and deletes one object under `.comfyume-check/`.
pub async fn check_files_bucket(store: &dyn ObjectStore, url: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    use object_store::{ObjectStoreExt, PutMode, PutOptions, PutResult, UpdateVersion};
    if let Some(Err(e)) = store.list(None).next().await {
        return Err(format!("the files bucket {url} cannot be used: {e}"));
    }
    let key = object_store::path::Path::from(format!(
        ".comfyume-check/{}",
        uuid::Uuid::new_v4().simple()
    ));
    let with = |mode: PutMode| PutOptions {
        mode,
        ..PutOptions::default()
    };
    let update = |written: &PutResult| {
        with(PutMode::Update(UpdateVersion {
            e_tag: written.e_tag.clone(),
            version: written.version.clone(),
        }))
    };
    let checked = async {
        let first = store
            .put_opts(&key, "1".into(), with(PutMode::Create))
            .await
            .map_err(|e| format!("a test write failed: {e}"))?;
        match store
            .put_opts(&key, "2".into(), with(PutMode::Create))
            .await
        {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Err(
                    "it ignores If-None-Match (a create-only write replaced an object)".to_string(),
                );
            }
            Err(e) => return Err(format!("a create-only write failed: {e}")),
        }
        store
            .put_opts(&key, "3".into(), update(&first))
            .await
            .map_err(|e| format!("a conditional update (If-Match) failed: {e}"))?;
        match store.put_opts(&key, "4".into(), update(&first)).await {
            Err(object_store::Error::Precondition { .. }) => Ok(()),
            Ok(_) => Err(
                "it ignores If-Match (an update of a replaced version went through)".to_string(),
            ),
            Err(e) => Err(format!("a conditional update (If-Match) failed: {e}")),
        }
    }
    .await;
    if let Err(e) = store.delete(&key).await {
        tracing::warn!(key = %key, error = %e, "could not delete the files bucket's check object");
    }
    checked.map_err(|why| format!("the files bucket {url} cannot keep participants' files: {why}"))
}
