//! `TestApp`: a gateway and its simulator on ephemeral ports, with helpers
//! to create users and log in. Dropping it (or `restart`, or `shutdown`)
//! stops the gateway, waits until it has, and fails the test if anything
//! it started is still running.

use std::collections::BTreeMap;
use std::path::PathBuf;

use comfyume::app::AppState;
use comfyume::backend::Backend;
use comfyume::config::{AuthMode, BackendConfig, BackendKind, Config};
use comfyume_domain::{Password, Role, UserName};
use reqwest::redirect::Policy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod balancer;
pub mod fake_backend;
pub mod postgres;
pub mod s3;

/// How long any single wait in a test may take before it fails, naming
/// what it waited for. A bound against hangs, not a timed assertion: a
/// healthy run waits milliseconds.
pub const WAIT_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT_BOUND`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT_BOUND, fut).await {
        Ok(value) => value,
        Err(_) => panic!("waited {} s for {what}", WAIT_BOUND.as_secs()),
    }
}

pub struct TestApp {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub sim_url: String,
    pub state: AppState,
    pub data_dir: PathBuf,
    config: Config,
    manual_dispatch: bool,
    gateway: Option<Gateway>,
    stop: Vec<oneshot::Sender<()>>,
    sim_stops: Vec<Option<oneshot::Sender<()>>>,
    _dirs: tempfile::TempDir,
}

/// How a test wants its gateway and simulator.
#[derive(Default)]
pub struct Options {
    /// Serve HTTP only; the test starts jobs with `dispatch_once`.
    pub manual_dispatch: bool,
    pub sim: comfyume_sim::SimOptions,
    /// A second simulator, `sim-2`, after the first.
    pub second_sim: Option<comfyume_sim::SimOptions>,
    /// Backends (name, url) listed before the simulators, so they get the
    /// first job.
    pub before: Vec<(String, String)>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_full(Options::default(), adjust).await
    }

    pub async fn spawn_full(options: Options, adjust: impl FnOnce(&mut Config)) -> TestApp {
        comfyume::telemetry::init_for_tests();
        let dirs = tempfile::tempdir().unwrap();
        let stop = Vec::new();
        let (sim_url, stop_sim) = start_sim(options.sim).await;
        let mut sim_stops = vec![Some(stop_sim)];
        let mut backends: Vec<BackendConfig> = options
            .before
            .iter()
            .map(|(name, url)| BackendConfig {
                name: name.clone(),
                kind: BackendKind::Comfyui,
                url: url.clone(),
                slots: 1,
                group: None,
                token: None,
            })
            .collect();
        backends.push(BackendConfig {
            name: "sim".into(),
            kind: BackendKind::Sim,
            url: sim_url.clone(),
            slots: 1,
            group: None,
            token: None,
        });
        if let Some(second) = options.second_sim {
            let (url, stop_second) = start_sim(second).await;
            sim_stops.push(Some(stop_second));
            backends.push(BackendConfig {
                name: "sim-2".into(),
                kind: BackendKind::Sim,
                url,
                slots: 1,
                group: None,
                token: None,
            });
        }

        let mut config = Config {
            data_dir: dirs.path().join("data"),
            frontend_dir: fake_frontend(dirs.path()),
            templates_dir: Some(templates(dirs.path())),
            backends,
            ..Config::default()
        };
        config.auth.secure_cookies = false;
        // Past a login limit, the next attempt waits an hour here, not the
        // default second: a test that expects a refusal gets it however
        // slowly the machine runs. (The growing delay itself is tested
        // with a clock in auth::rate_limit.)
        config.auth.login_first_delay_seconds = 3600;
        config.auth.login_max_delay_seconds = 3600;
        adjust(&mut config);
        if config.database_url.is_none() && postgres::gateways_on_postgres() {
            let url = postgres::database("a gateway on PostgreSQL")
                .await
                .expect("TEST_DATABASE=postgres needs TEST_POSTGRES_URL");
            config.database_url = Some(comfyume::config::Secret::new(url));
        }
        if config.files.url.is_none() && s3::gateways_on_bucket() {
            config.files = s3::files_in_a_new_bucket("a gateway with files in a bucket")
                .await
                .expect("TEST_FILES=bucket needs TEST_MOTO_PYTHON");
        }
        let data_dir = config.data_dir.clone();
        let gateway = start_gateway(&config, options.manual_dispatch).await;
        let (state, addr) = (gateway.state.clone(), gateway.addr);
        TestApp {
            url: format!("http://{addr}"),
            addr,
            sim_url,
            state,
            data_dir,
            config,
            manual_dispatch: options.manual_dispatch,
            gateway: Some(gateway),
            stop,
            sim_stops,
            _dirs: dirs,
        }
    }

    /// Stops simulator `i` (0: `sim`, 1: `sim-2`), as a GPU that goes away.
    pub fn stop_sim(&mut self, i: usize) {
        if let Some(tx) = self.sim_stops[i].take() {
            let _ = tx.send(());
        }
    }

    /// Stops the gateway and starts a new one on the same data directory
    /// (and the same simulator), as after a restart; sessions survive, so
    /// clients stay logged in. The new gateway listens on a new port.
    pub async fn restart(&mut self) {
        if let Some(old) = self.gateway.take() {
            old.stop().await;
        }
        let gateway = start_gateway(&self.config, self.manual_dispatch).await;
        self.state = gateway.state.clone();
        self.addr = gateway.addr;
        self.url = format!("http://{}", gateway.addr);
        self.gateway = Some(gateway);
    }

    /// Stops the gateway and waits until it has, checking that nothing it
    /// started is left running.
    pub async fn shutdown(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await;
        }
    }

    /// One dispatcher round (manual-dispatch apps): starts what the
    /// scheduler places on free slots; returns the ids that started.
    pub async fn dispatch_once(&self) -> Vec<String> {
        let started = self.state.dispatcher.clone().run_once().await.unwrap();
        started.iter().map(|id| id.to_string()).collect()
    }

    pub async fn spawn_local_mode() -> TestApp {
        Self::spawn_with(|c| c.auth.mode = AuthMode::None).await
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn add_user(&self, name: &str, password: &str) {
        self.add_user_with_role(name, password, Role::Participant)
            .await;
    }

    pub async fn add_user_with_role(&self, name: &str, password: &str, role: Role) {
        self.state
            .accounts
            .create_user(
                &UserName::parse(name).unwrap(),
                &Password::new(password),
                role,
            )
            .await
            .unwrap();
    }

    /// A client that keeps cookies and does not follow redirects, like a
    /// browser whose navigation the test inspects step by step.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    pub async fn try_login(
        &self,
        client: &reqwest::Client,
        name: &str,
        password: &str,
    ) -> reqwest::Response {
        client
            .post(self.at("/login"))
            .form(&[("username", name), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap()
    }

    /// A new user, logged in: the returned client carries their session.
    pub async fn user(&self, name: &str) -> reqwest::Client {
        let password = format!("{name}-secret-pw");
        self.add_user(name, &password).await;
        let client = self.client();
        let r = self.try_login(&client, name, &password).await;
        assert_eq!(r.status(), 303, "login of {name} should redirect");
        client
    }

    /// Where a user's files live on disk (when they are not in a bucket:
    /// tests that look at the disk itself use this; the others go
    /// through [`user_file`](Self::user_file) and its siblings).
    pub fn user_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("users").join(name)
    }

    /// The files bucket this gateway keeps participants' files in, if any.
    fn files_bucket(&self) -> Option<std::sync::Arc<dyn object_store::ObjectStore>> {
        comfyume::buckets::files_bucket(&self.config.files).unwrap()
    }

    /// A user's file, `rel` under their folder (`input/x.png`,
    /// `userdata/comfy.settings.json`), wherever the files live.
    pub async fn user_file(&self, name: &str, rel: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        match self.files_bucket() {
            Some(store) => match store.get(&format!("users/{name}/{rel}").into()).await {
                Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("reading {name}/{rel} from the bucket: {e}"),
            },
            None => std::fs::read(self.user_dir(name).join(rel)).ok(),
        }
    }

    /// Puts a file among a user's files behind the gateway's back.
    pub async fn put_user_file(&self, name: &str, rel: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt;
        match self.files_bucket() {
            Some(store) => {
                store
                    .put(&format!("users/{name}/{rel}").into(), bytes.to_vec().into())
                    .await
                    .unwrap();
            }
            None => {
                let path = self.user_dir(name).join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
        }
    }

    /// Every file under `rel` in a user's folder, by its path below
    /// `rel`, wherever the files live.
    pub async fn user_files(&self, name: &str, rel: &str) -> BTreeMap<String, Vec<u8>> {
        use futures_util::StreamExt;
        use object_store::ObjectStoreExt;
        let mut out = BTreeMap::new();
        match self.files_bucket() {
            Some(store) => {
                let prefix: object_store::path::Path = format!("users/{name}/{rel}").into();
                let skip = prefix.as_ref().len() + 1;
                let listed: Vec<_> = store.list(Some(&prefix)).collect().await;
                for meta in listed {
                    let meta = meta.unwrap();
                    let bytes = store
                        .get(&meta.location)
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    out.insert(meta.location.as_ref()[skip..].to_string(), bytes.to_vec());
                }
            }
            None => {
                fn walk(dir: &std::path::Path, name: &str, out: &mut BTreeMap<String, Vec<u8>>) {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        return;
                    };
                    for e in entries {
                        let e = e.unwrap();
                        let file = e.file_name().to_string_lossy().into_owned();
                        let n = if name.is_empty() {
                            file
                        } else {
                            format!("{name}/{file}")
                        };
                        if e.file_type().unwrap().is_dir() {
                            walk(&e.path(), &n, out);
                        } else {
                            out.insert(n, std::fs::read(e.path()).unwrap());
                        }
                    }
                }
                walk(&self.user_dir(name).join(rel), "", &mut out);
            }
        }
        out
    }

    /// The environment that points a `comfyume` command at this gateway's
    /// files bucket, if it has one (the command line's configuration).
    pub fn files_env(&self) -> Vec<(String, String)> {
        let files = &self.config.files;
        let Some(url) = &files.url else {
            return Vec::new();
        };
        let s3 = &files.s3;
        let mut env = vec![("COMFYUME_FILES__URL".to_string(), url.clone())];
        for (key, value) in [
            ("ENDPOINT", s3.endpoint.clone()),
            ("REGION", s3.region.clone()),
            ("ACCESS_KEY_ID", s3.access_key_id.clone()),
            (
                "SECRET_ACCESS_KEY",
                s3.secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_string()),
            ),
        ] {
            if let Some(value) = value {
                env.push((format!("COMFYUME_FILES__S3__{key}"), value));
            }
        }
        env
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

async fn start_sim(options: comfyume_sim::SimOptions) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(comfyume_sim::run_with(listener, options, async move {
        let _ = rx.await;
    }));
    (url, tx)
}

/// A running gateway and what it takes to stop it.
struct Gateway {
    state: AppState,
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Stops the gateway as `comfyume serve` does on a signal, waits for
    /// it, and fails the test if any task it started is still running.
    async fn stop(self) {
        let _ = self.stop.send(());
        let served = within("the gateway to stop", self.served).await;
        served
            .expect("the server task ends")
            .expect("the server ends cleanly");
        // A manually driven dispatcher is shut down by its driver.
        self.state.dispatcher.shutdown().await;
        assert_eq!(
            self.state.dispatcher.tasks_left(),
            0,
            "the stopped gateway left tasks running"
        );
    }
}

async fn start_gateway(config: &Config, manual_dispatch: bool) -> Gateway {
    let http = Backend::http_client().expect("an HTTP client");
    let backends = config
        .backends
        .iter()
        .map(|b| Backend::new(b, http.clone()).expect("a backend"))
        .collect();
    let state = AppState::build(config.clone(), backends)
        .await
        .expect("the gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
    };
    let served = if manual_dispatch {
        // What `server::run` does first, without the dispatcher's loop.
        state.dispatcher.recover().await.expect("recovery");
        tokio::spawn(comfyume::server::serve_http(listener, state.clone(), stop))
    } else {
        tokio::spawn(comfyume::server::run(listener, state.clone(), stop))
    };
    Gateway {
        state,
        addr,
        stop: tx,
        served,
    }
}

impl Drop for TestApp {
    /// Stops the gateway and checks, before the test ends, that nothing it
    /// started is left running. (Integration tests run on a multi-thread
    /// runtime, which lets this wait here.)
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            if std::thread::panicking() {
                // The test failed already; a second panic would hide why.
                let _ = gateway.stop.send(());
            } else {
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(gateway.stop())
                });
            }
        }
        for tx in self.sim_stops.drain(..).flatten() {
            let _ = tx.send(());
        }
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// A stand-in for the frontend wheel: enough files to exercise the static
/// routes without downloading the real one (the browser tests use that).
pub fn fake_frontend(root: &std::path::Path) -> PathBuf {
    let site = root.join("frontend");
    let stat = site.join("comfyui_frontend_package/static");
    std::fs::create_dir_all(stat.join("extensions/core")).unwrap();
    std::fs::create_dir_all(stat.join("assets")).unwrap();
    std::fs::create_dir_all(site.join("comfyui_frontend_package-1.48.7.dist-info")).unwrap();
    std::fs::write(
        stat.join("index.html"),
        "<!doctype html><title>ComfyUI</title>",
    )
    .unwrap();
    std::fs::write(stat.join("assets/index-abc123.js"), "export {}").unwrap();
    std::fs::write(stat.join("extensions/core/groupNode.js"), "export {}").unwrap();
    stat
}

/// A workshop template folder with one workflow and its thumbnail.
pub fn templates(root: &std::path::Path) -> PathBuf {
    let dir = root.join("templates");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("invert.json"),
        include_str!("../../../../../demo/templates/invert-an-image.json"),
    )
    .unwrap();
    dir
}

/// Sends a WebSocket upgrade with the client's cookies and returns the
/// socket (or the HTTP status it was refused with).
pub async fn ws_connect(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = app.ws_url(path).into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// The session cookie a logged-in client holds, as a `Cookie:` header value.
pub async fn session_cookie_of(app: &TestApp, name: &str) -> String {
    let password = format!("{name}-secret-pw");
    app.add_user(name, &password).await;
    let r = app.try_login(&app.client(), name, &password).await;
    cookie_of(&r)
}

/// The session cookie a login answer sets, as a `Cookie:` header value.
pub fn cookie_of(login: &reqwest::Response) -> String {
    let set = login.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// A memory figure of process `pid` from `/proc/<pid>/status`, in bytes:
/// `VmRSS` (resident now) or `VmHWM` (the peak).
pub fn memory_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}
