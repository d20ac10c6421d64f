//! Object stores for the backup tests: a real S3-compatible server (moto,
//! from PyPI, in server mode on a loopback port; `scripts/test.sh`
//! installs it and names its Python in `TEST_MOTO_PYTHON`), and small
//! axum fakes of a store that fails: one answering 500, one refusing the
//! credentials as S3 does, one that never answers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use comfyume::config::BackupConfig;
use tokio::net::TcpListener;

/// A moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto, or says why the test is skipped and returns `None`
    /// when `TEST_MOTO_PYTHON` is unset (a plain `cargo test`; the
    /// suite's `scripts/test.sh` always sets it).
    pub fn start(test: &str) -> Option<Moto> {
        let Ok(python) = std::env::var("TEST_MOTO_PYTHON") else {
            eprintln!(
                "SKIPPED {test}: no S3-compatible server (scripts/test.sh installs moto and sets TEST_MOTO_PYTHON)"
            );
            return None;
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/moto_server.py");
        let mut child = Command::new(&python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {python}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("moto printed {line:?}, not its port"));
        Some(Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Makes a bucket (moto takes requests without signatures).
    pub async fn bucket(&self, name: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "creating bucket {name}: {}",
            r.status()
        );
    }
}

/// Whether the gateways of this run keep participants' files in a
/// bucket rather than on disk: `TEST_FILES=bucket` (scripts/test.sh runs
/// the gateway tests once more that way).
pub fn gateways_on_bucket() -> bool {
    std::env::var("TEST_FILES").is_ok_and(|files| files == "bucket")
}

/// One moto server for the whole test binary, started on first use; it
/// stops when the binary exits (its standard input closes).
pub fn shared_moto(test: &str) -> Option<&'static Moto> {
    static MOTO: std::sync::OnceLock<Option<Moto>> = std::sync::OnceLock::new();
    MOTO.get_or_init(|| Moto::start(test)).as_ref()
}

/// Settings for participants' files in a new, empty bucket on moto;
/// `None` (said on stderr) without moto, which under CI is a failure.
pub async fn files_in_a_new_bucket(test: &str) -> Option<comfyume::config::FilesConfig> {
    let Some(moto) = shared_moto(test) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: TEST_MOTO_PYTHON is unset under CI (scripts/test.sh installs moto)"
        );
        eprintln!("SKIPPED {test}: no S3-compatible server (TEST_MOTO_PYTHON is unset)");
        return None;
    };
    let name = format!("files-{}", uuid::Uuid::new_v4().simple());
    moto.bucket(&name).await;
    Some(files_config(&moto.endpoint, &format!("s3://{name}/room")))
}

/// Participants' files at `url` on the store at `endpoint`.
pub fn files_config(endpoint: &str, url: &str) -> comfyume::config::FilesConfig {
    let mut c = comfyume::config::FilesConfig {
        url: Some(url.to_string()),
        timeout_seconds: 10,
        max_retries: 1,
        ..Default::default()
    };
    c.s3.endpoint = Some(endpoint.to_string());
    c.s3.region = Some("us-east-1".into());
    c.s3.access_key_id = Some("comfyume-test".into());
    c.s3.secret_access_key = Some(comfyume::config::Secret::new("comfyume-test-secret"));
    c
}

/// The backup settings for a store at `endpoint`, failing fast.
pub fn s3_config(endpoint: &str) -> BackupConfig {
    let mut c = BackupConfig::default();
    c.s3.endpoint = Some(endpoint.to_string());
    c.s3.region = Some("us-east-1".into());
    c.s3.access_key_id = Some("comfyume-test".into());
    c.s3.secret_access_key = Some(comfyume::config::Secret::new("comfyume-test-secret"));
    c.timeout_seconds = 2;
    c.max_retries = 1;
    c.collect_after_seconds = 0;
    c
}

/// How a fake store fails.
#[derive(Clone, Copy, Debug)]
pub enum Broken {
    /// Every request answered 500.
    ServerError,
    /// Every request refused as S3 refuses an unknown access key.
    BadCredentials,
    /// Connections accepted, never answered.
    Silent,
    /// Takes every write, whatever its conditions (`If-None-Match`,
    /// `If-Match`): a store that would let gateways overwrite each other.
    IgnoresConditions,
}

/// Serves a broken store on a loopback port until the test ends; returns
/// its endpoint.
pub async fn broken_store(how: Broken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    match how {
        Broken::Silent => {
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            });
        }
        Broken::IgnoresConditions => {
            let app = axum::Router::new().fallback(
                |method: axum::http::Method| async move {
                    match method {
                        axum::http::Method::GET => (
                            StatusCode::OK,
                            [("content-type", "application/xml")],
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>",
                        )
                            .into_response(),
                        axum::http::Method::DELETE => StatusCode::NO_CONTENT.into_response(),
                        _ => (StatusCode::OK, [("etag", "\"same\"")]).into_response(),
                    }
                },
            );
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
        }
        Broken::ServerError | Broken::BadCredentials => {
            let app = axum::Router::new().fallback(move || async move {
                match how {
                    Broken::ServerError => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>",
                    )
                        .into_response(),
                    _ => (
                        StatusCode::FORBIDDEN,
                        "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>",
                    )
                        .into_response(),
                }
            });
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
        }
    }
    endpoint
}
