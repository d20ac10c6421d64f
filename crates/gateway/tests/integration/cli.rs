//! The `comfyume` binary itself: account commands against the same data
//! directory a server then uses, the config helpers, and start-up errors.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{TestApp, memory_bytes};

fn comfyume(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("COMFYUME_CONFIG")
        .output()
        .expect("the comfyume binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_writes_a_credential_sheet_whose_passwords_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sheet = dir.path().join("creds.csv");
    let out = comfyume(
        &data,
        &[
            "users",
            "import",
            "--count",
            "3",
            "--prefix",
            "user",
            "--out",
            sheet.to_str().unwrap(),
            "--url",
            "https://ws.example",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("created 3 accounts"));
    let csv = std::fs::read_to_string(&sheet).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "user,password,role,url");
    assert_eq!(lines.len(), 4);
    let row: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(row[0], "user002");
    assert_eq!(row[2], "participant");
    assert_eq!(row[3], "https://ws.example");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&sheet).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // A second import with the same prefix creates nothing.
    let again = comfyume(
        &data,
        &[
            "users",
            "import",
            "--count",
            "5",
            "--prefix",
            "user",
            "--out",
            sheet.to_str().unwrap(),
        ],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let list = comfyume(&data, &["users", "list"]);
    let listed = stdout(&list);
    assert!(
        listed.contains("user003") && !listed.contains("user004"),
        "{listed}"
    );

    // The server on the same data directory accepts the printed password.
    let data_for_app = data.clone();
    let app = TestApp::spawn_with(move |c| c.data_dir = data_for_app).await;
    let r = app.try_login(&app.client(), "user002", row[1]).await;
    assert_eq!(r.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_passwd_remove() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = comfyume(&data, &["users", "add", "teacher", "--admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("created admin 'teacher' with password: "),
        "{text}"
    );

    let out = comfyume(&data, &["users", "add", "Teacher", "--password", "x"]);
    assert!(
        !out.status.success(),
        "names are case-insensitive and unique"
    );
    let out = comfyume(&data, &["users", "add", "../evil", "--password", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("user name"), "{}", stderr(&out));

    let out = comfyume(
        &data,
        &["users", "passwd", "teacher", "--password", "new-pass-1"],
    );
    assert!(out.status.success());
    let data_for_app = data.clone();
    let app = TestApp::spawn_with(move |c| c.data_dir = data_for_app).await;
    assert_eq!(
        app.try_login(&app.client(), "teacher", "new-pass-1")
            .await
            .status(),
        303
    );

    let out = comfyume(&data, &["users", "remove", "teacher"]);
    assert!(out.status.success());
    assert_eq!(
        app.try_login(&app.client(), "teacher", "new-pass-1")
            .await
            .status(),
        401
    );
    let out = comfyume(&data, &["users", "remove", "teacher"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"));
}

#[test]
fn config_example_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = comfyume(dir.path(), &["config", "example"]);
    assert!(out.status.success());
    let example = stdout(&out);
    assert!(example.contains("[auth]") && example.contains("[[backends]]"));

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nfrontend_dri = \"x\"\n").unwrap();
    let out = comfyume(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "users", "list"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("frontend_dri"), "{}", stderr(&out));

    let out = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--frontend-dir",
            "/nonexistent/static",
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .env_remove("COMFYUME_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("frontend was not found") && err.contains("fetch-frontend.sh"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .arg("--help")
        .output()
        .unwrap();
    let help = stdout(&out);
    for cmd in ["serve", "users", "sim-backend", "config"] {
        assert!(help.contains(cmd), "--help lists {cmd}");
    }
}

/// A bare container with no CA certificates: `serve` says what is missing
/// and exits, instead of panicking (found by the static binary's chroot
/// smoke test in scripts/test.sh).
#[test]
fn serve_without_ca_certificates_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let frontend = dir.path().join("static");
    std::fs::create_dir(&frontend).unwrap();
    std::fs::write(frontend.join("index.html"), "<html>").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .args([
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--frontend-dir",
        ])
        .arg(&frontend)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .env_remove("COMFYUME_CONFIG")
        .env("SSL_CERT_FILE", dir.path().join("no-such-bundle.pem"))
        .env("SSL_CERT_DIR", dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("CA certificates") && err.contains("ca-certificates package"),
        "{err}"
    );
}

/// The README's way to give a new account its password without putting it
/// on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_password_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .arg("--data-dir")
        .arg(&data)
        .args(["users", "add", "frank"])
        .env_remove("COMFYUME_CONFIG")
        .env("COMFYUME_NEW_PASSWORD", "from-the-env-1")
        .output()
        .expect("the comfyume binary runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("from-the-env-1"),
        "a password given is not printed"
    );
    let data_for_app = data.clone();
    let app = TestApp::spawn_with(move |c| c.data_dir = data_for_app).await;
    assert_eq!(
        app.try_login(&app.client(), "frank", "from-the-env-1")
            .await
            .status(),
        303
    );
}

/// `comfyume doctor` passes a healthy setup line by line, and names what is
/// wrong with a broken one (exit status 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_a_healthy_and_a_broken_setup() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(comfyume_sim::run(listener, async move {
        let _ = stopped.await;
    }));
    let frontend = crate::support::fake_frontend(dir.path());
    let templates = crate::support::templates(dir.path());
    let warmup = |class_type: &str| {
        let path = dir.path().join(format!("warmup-{class_type}.json"));
        let prompt = serde_json::json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": class_type, "inputs": {"images": ["1", 0], "filename_prefix": "warmup"}},
        });
        std::fs::write(&path, prompt.to_string()).unwrap();
        path
    };
    let config = |backend_url: &str, warmup: &Path| {
        let path = dir.path().join("doctor.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = {:?}\n[dispatch]\nwarmup_prompt = {:?}\n\
                 [[backends]]\nname = \"gpu-1\"\nkind = \"sim\"\nurl = \"{backend_url}\"\nslots = 2\n",
                dir.path().join("data").display().to_string(),
                warmup.display().to_string(),
            ),
        )
        .unwrap();
        path
    };
    let doctor = |config: &Path, frontend: &Path| {
        let cfg = config.to_path_buf();
        let (frontend, templates) = (frontend.to_path_buf(), templates.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_comfyume"))
                .arg("--config")
                .arg(&cfg)
                .arg("doctor")
                .arg("--frontend-dir")
                .arg(&frontend)
                .arg("--templates-dir")
                .arg(&templates)
                .args(["--participants", "30"])
                .output()
                .expect("the comfyume binary runs")
        })
    };

    let good_warmup = warmup("SaveImage");
    let healthy = doctor(&config(&sim_url, &good_warmup), &frontend)
        .await
        .unwrap();
    let text = stdout(&healthy);
    assert!(healthy.status.success(), "{text}\n{}", stderr(&healthy));
    for line in [
        "configuration",
        "data directory",
        "frontend",
        "backend gpu-1",
        "template ",
        "warm-up gpu-1",
        "capacity",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(line)),
            "no ok line for {line}:\n{text}"
        );
    }

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert!(
        text.contains("30 participants × 1 job on 2 slots"),
        "{text}"
    );

    let broken = doctor(
        &config(&dead_url, &good_warmup),
        &dir.path().join("nowhere"),
    )
    .await
    .unwrap();
    let text = stdout(&broken);
    assert!(!broken.status.success());
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("frontend")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("backend gpu-1")
            && l.contains("unreachable")),
        "{text}"
    );
    assert!(
        stderr(&broken).contains("check(s) failed"),
        "{}",
        stderr(&broken)
    );
    assert!(
        text.lines().any(|l| l.starts_with("WARN")
            && l.contains("capacity")
            && l.contains("no backend ran")),
        "{text}"
    );

    // A warm-up prompt the backend refuses fails its line, by name.
    let refused = doctor(&config(&sim_url, &warmup("NoSuchNode")), &frontend)
        .await
        .unwrap();
    let text = stdout(&refused);
    assert!(!refused.status.success());
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("warm-up gpu-1")
            && l.contains("NoSuchNode")),
        "{text}"
    );
}

/// Starts `comfyume serve --demo` on a free port with a fake frontend in
/// `dir`; returns it and the URL it prints once it serves.
async fn serve(dir: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let frontend = crate::support::fake_frontend(dir);
    let mut server = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .args([
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--frontend-dir",
        ])
        .arg(&frontend)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("COMFYUME_CONFIG")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("ComfyUME is serving on ").map(str::to_owned));
        // Keep reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        url
    })
    .await
    .unwrap()
    .expect("the server says where it serves");
    (server, url)
}

/// A workshop's first minute: 200 participants behind one address log in
/// at the same moment, and every one of them gets in (the server's peak
/// memory is printed; the benchmark tracks it, the test does not judge it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_of_200_lets_everyone_in() {
    let dir = tempfile::tempdir().unwrap();
    let sheet = dir.path().join("room.csv");
    let import = comfyume(
        &dir.path().join("data"),
        &[
            "users",
            "import",
            "--count",
            "200",
            "--prefix",
            "seat",
            "--url",
            "http://x",
            "--out",
            sheet.to_str().unwrap(),
        ],
    );
    assert!(import.status.success(), "{}", stderr(&import));
    let room: Vec<(String, String)> = std::fs::read_to_string(&sheet)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut fields = l.split(',');
            let name = fields.next().unwrap().to_string();
            (name, fields.next().unwrap().to_string())
        })
        .collect();
    assert_eq!(room.len(), 200);

    let (mut server, url) = serve(dir.path(), &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let logins = room.iter().map(|(name, password)| {
        let (client, url) = (client.clone(), format!("{url}/login"));
        async move {
            client
                .post(url)
                .form(&[
                    ("username", name.as_str()),
                    ("password", password),
                    ("next", "/"),
                ])
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses =
        crate::support::within("the login storm", futures_util::future::join_all(logins)).await;
    let peak = memory_bytes(server.id(), "VmHWM");
    server.kill().unwrap();
    server.wait().unwrap();
    let admitted = statuses.iter().filter(|s| matches!(s, Ok(303))).count();
    assert_eq!(admitted, 200, "{statuses:?}");
    println!(
        "login storm of 200: server peak RSS {} MB",
        peak / (1024 * 1024)
    );
}

/// A login flood with made-up names against the real binary (its own
/// allocator): 300 failed logins, 150 at a time, each answered, and the
/// process holds on to a bounded amount of memory afterwards (once 22 GB
/// and then 700 MB; the bound is generous).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_leaves_the_servers_memory_bounded() {
    const BOUND: u64 = 160 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    // Every attempt gets its password checked: that is the load.
    let (mut server, url) = serve(
        dir.path(),
        &[("COMFYUME_AUTH__LOGIN_FAILURES_PER_IP", "100000")],
    )
    .await;
    let before = memory_bytes(server.id(), "VmRSS");
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let logins = (0..150).map(|i| {
            let client = client.clone();
            let url = format!("{url}/login");
            async move {
                client
                    .post(url)
                    .form(&[
                        ("username", format!("nobody{i}")),
                        ("password", "x".into()),
                        ("next", "/".into()),
                    ])
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        let statuses =
            crate::support::within("a round of logins", futures_util::future::join_all(logins))
                .await;
        for status in statuses {
            assert_eq!(status.ok(), Some(401));
        }
    }
    let grown = memory_bytes(server.id(), "VmRSS").saturating_sub(before);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        grown < BOUND,
        "resident memory grew by {} MB",
        grown / (1024 * 1024)
    );
}

/// With participants' files in a bucket, `comfyume doctor` checks that
/// the bucket takes a write, and `serve` refuses to start, saying why,
/// when it cannot reach it (rather than failing every participant's
/// first save).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_bucket_is_checked_by_doctor_and_at_start() {
    let Some(files) =
        crate::support::s3::files_in_a_new_bucket("the files bucket is checked").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let frontend = crate::support::fake_frontend(dir.path());
    let endpoint = files.s3.endpoint.clone().unwrap();
    let url = files.url.clone().unwrap();
    let missing = url.replacen("s3://files-", "s3://missing-", 1);
    let run = |bucket: &str, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_comfyume"));
        command
            .args(args)
            .arg("--frontend-dir")
            .arg(&frontend)
            .env_remove("COMFYUME_CONFIG")
            .env("COMFYUME_DATA_DIR", dir.path().join("data"))
            .env("COMFYUME_FILES__URL", bucket)
            .env("COMFYUME_FILES__MAX_RETRIES", "0")
            .env("COMFYUME_FILES__S3__ENDPOINT", &endpoint)
            .env("COMFYUME_FILES__S3__REGION", "us-east-1")
            .env("COMFYUME_FILES__S3__ACCESS_KEY_ID", "comfyume-test")
            .env(
                "COMFYUME_FILES__S3__SECRET_ACCESS_KEY",
                "comfyume-test-secret",
            );
        command.output().expect("the comfyume binary runs")
    };
    let line = |output: &std::process::Output, verdict: &str| {
        stdout(output)
            .lines()
            .find(|l| l.starts_with(verdict) && l.contains("files bucket"))
            .map(str::to_string)
    };

    let healthy = run(&url, &["doctor"]);
    let found = line(&healthy, "ok");
    assert!(
        found
            .as_deref()
            .is_some_and(|l| l.contains("keeps conditional writes")),
        "{}",
        stdout(&healthy)
    );
    let broken = run(&missing, &["doctor"]);
    assert!(!broken.status.success());
    assert!(line(&broken, "FAIL").is_some(), "{}", stdout(&broken));

    let refused = run(&missing, &["serve", "--demo", "--listen", "127.0.0.1:0"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("participants' files: the files bucket"),
        "{}",
        stderr(&refused)
    );

    // A store that takes every write whatever its conditions would let
    // gateways overwrite each other's files: refused, saying so.
    let careless =
        crate::support::s3::broken_store(crate::support::s3::Broken::IgnoresConditions).await;
    let frontend = frontend.clone();
    let refused = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_comfyume"))
            .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
            .arg("--frontend-dir")
            .arg(&frontend)
            .env_remove("COMFYUME_CONFIG")
            .env("COMFYUME_FILES__URL", "s3://careless/room")
            .env("COMFYUME_FILES__MAX_RETRIES", "0")
            .env("COMFYUME_FILES__S3__ENDPOINT", careless)
            .env("COMFYUME_FILES__S3__REGION", "us-east-1")
            .env("COMFYUME_FILES__S3__ACCESS_KEY_ID", "k")
            .env("COMFYUME_FILES__S3__SECRET_ACCESS_KEY", "s")
            .output()
            .expect("the comfyume binary runs")
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("it ignores If-None-Match"),
        "{}",
        stderr(&refused)
    );
}
