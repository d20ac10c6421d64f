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

/// Lists one key of `store`, so a bucket that is missing, unreachable or
/// refuses the credentials stops `serve` at start, saying so, instead of
/// failing every participant's first save.
pub async fn check_reachable(store: &dyn ObjectStore, url: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    match store.list(None).next().await {
        None | Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!("the files bucket {url} cannot be used: {e}")),
    }
}
