//! Two gateways over one PostgreSQL database, as behind a load balancer:
//! real processes (the `comfyume` binary for both gateways and for the
//! simulator), a database of their own on the test PostgreSQL. Prompts
//! sent to either run exactly once; a participant whose socket is on the
//! gateway that does not dispatch receives every event of their jobs, in
//! order; `kill -9` of the dispatching gateway mid-job hands the room to
//! the other, nothing lost or run twice; login limits and the room's pause
//! hold on every gateway; and a load test through a round-robin balancer
//! (no sticky sessions) gets every job back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use comfyume::loadtest::{AccountSource, Options, Progress};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::crash::{Proc, connect, serve, start};
use crate::execution::{cpu_prompt, frames_until_done, next_frame, next_frame_any, txt2img_prompt};
use crate::support::balancer::Balancer;
use crate::support::{WAIT_BOUND, cookie_of, postgres, within};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A simulator and the configuration two gateways share: one database,
/// and one data directory or (`Room::with_bucket`) one files bucket and a
/// data directory each.
struct Room {
    dir: tempfile::TempDir,
    database: String,
    /// The gateways' configurations, taken in turn.
    configs: Vec<PathBuf>,
    started: std::sync::atomic::AtomicUsize,
    /// The files bucket's settings, when the files are in one.
    files: Option<comfyume::config::FilesConfig>,
    sim_files: PathBuf,
    _sim: Proc,
}

impl Room {
    /// `None` (said) without a test PostgreSQL outside CI.
    async fn new(test: &str, step_ms: u32) -> Option<Room> {
        Self::open(test, step_ms, None).await
    }

    /// Gateways that share no disk: each has its own data directory, and
    /// participants' files are in one bucket (on moto).
    async fn with_bucket(test: &str, step_ms: u32) -> Option<Room> {
        let files = crate::support::s3::files_in_a_new_bucket(test).await?;
        Self::open(test, step_ms, Some(files)).await
    }

    async fn open(
        test: &str,
        step_ms: u32,
        files: Option<comfyume::config::FilesConfig>,
    ) -> Option<Room> {
        let database = postgres::database(test).await?;
        let dir = tempfile::tempdir().unwrap();
        let sim_files = dir.path().join("sim-files");
        let (sim, sim_url) = start(
            &[
                "sim-backend",
                "--listen",
                "127.0.0.1:0",
                "--step-ms",
                &step_ms.to_string(),
                "--files-dir",
                sim_files.to_str().unwrap(),
            ],
            "listening on ",
            true,
        );
        let frontend = dir.path().join("frontend");
        std::fs::create_dir_all(&frontend).unwrap();
        std::fs::write(frontend.join("index.html"), "<!doctype html>").unwrap();
        let write_config = |name: &str, data_dir: &str| {
            let config = dir.path().join(name);
            let mut text = format!(
                "data_dir = {:?}\ndatabase_url = {database:?}\nfrontend_dir = {:?}\nadmin_token = \"room-token\"\n\
                 [auth]\nsecure_cookies = false\nlogin_failures_per_user = 3\n\
                 login_first_delay_seconds = 3600\nlogin_max_delay_seconds = 3600\n[limits]\nmax_pending_per_user = 20\n\
                 [[backends]]\nname = \"sim\"\nkind = \"sim\"\nurl = {sim_url:?}\nslots = 2\n",
                dir.path().join(data_dir),
                frontend,
            );
            if let Some(files) = &files {
                let s3 = &files.s3;
                text.push_str(&format!(
                    "[files]\nurl = {:?}\n[files.s3]\nendpoint = {:?}\nregion = {:?}\n\
                     access_key_id = {:?}\nsecret_access_key = {:?}\n",
                    files.url.as_deref().unwrap(),
                    s3.endpoint.as_deref().unwrap(),
                    s3.region.as_deref().unwrap(),
                    s3.access_key_id.as_deref().unwrap(),
                    s3.secret_access_key.as_ref().unwrap().expose(),
                ));
            }
            std::fs::write(&config, text).unwrap();
            config
        };
        let configs = if files.is_some() {
            vec![
                write_config("comfyume-a.toml", "data-a"),
                write_config("comfyume-b.toml", "data-b"),
            ]
        } else {
            vec![write_config("comfyume.toml", "data")]
        };
        let add = Command::new(env!("CARGO_BIN_EXE_comfyume"))
            .args(["--config", configs[0].to_str().unwrap()])
            .args(["users", "add", "alice", "--password", "pw"])
            .env_remove("COMFYUME_CONFIG")
            .output()
            .unwrap();
        assert!(add.status.success(), "{add:?}");
        Some(Room {
            dir,
            database,
            configs,
            started: Default::default(),
            files,
            sim_files,
            _sim: sim,
        })
    }

    /// Starts one gateway and waits until it is ready; `dispatching`: until
    /// it dispatches too.
    async fn gateway(&self, dispatching: bool) -> (Proc, String) {
        let turn = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (proc, url) = serve(&self.configs[turn % self.configs.len()]);
        within("the gateway to be ready", async {
            loop {
                let ready = ready(&url).await;
                if ready["ready"] == true && (!dispatching || ready["dispatching"] == true) {
                    break;
                }
                // Polling a state only /ready shows (the lease is taken
                // on the gateway's own schedule).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        (proc, url)
    }

    /// The simulator's saved images: one per job it ran.
    fn images_made(&self) -> usize {
        std::fs::read_dir(self.sim_files.join("output"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// How many times each job was dispatched, from the database.
    async fn attempts(&self, ids: &[String]) -> Vec<i64> {
        let store = comfyume::store::Store::connect(&self.database)
            .await
            .unwrap();
        let mut attempts = Vec::new();
        for id in ids {
            let job = store
                .job(&comfyume_domain::JobId::parse(id).unwrap())
                .await
                .unwrap()
                .unwrap();
            attempts.push(job.attempts);
        }
        store.close().await;
        attempts
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The JSON a GET answers, with `http`'s session.
async fn get_json(http: &reqwest::Client, url: String) -> Value {
    json_of(http.get(url)).await
}

/// The JSON `request` is answered with.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The JSON an admin API GET answers, with the room's admin token.
async fn admin_json(url: String) -> Value {
    json_of(reqwest::Client::new().get(url).bearer_auth("room-token")).await
}

async fn ready(url: &str) -> Value {
    json_of(reqwest::Client::new().get(format!("{url}/ready"))).await
}

/// Logs alice in at `url`: the session is the database's, good on every
/// gateway.
async fn log_in(url: &str) -> (reqwest::Client, String) {
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{url}/login"))
        .form(&[("username", "alice"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    let cookie = cookie_of(&login);
    let http = reqwest::Client::builder()
        .default_headers(
            std::iter::once((reqwest::header::COOKIE, cookie.parse().unwrap())).collect(),
        )
        .build()
        .unwrap();
    (http, cookie)
}

async fn submit(http: &reqwest::Client, url: &str, prompt: Value) -> String {
    let r = json_of(
        http.post(format!("{url}/api/prompt"))
            .json(&json!({"prompt": prompt, "client_id": "tab"})),
    )
    .await;
    r["prompt_id"]
        .as_str()
        .unwrap_or_else(|| panic!("queued: {r}"))
        .to_string()
}

/// Every frame (text or binary, whole) until the end of `prompt_id`,
/// without the queue counts (each gateway sends its own when a prompt
/// arrives there, so those interleave differently on each).
async fn job_frames_until_done(ws: &mut Socket, prompt_id: &str) -> Vec<Message> {
    let mut frames = Vec::new();
    loop {
        let frame = within("a frame from the gateway", ws.next())
            .await
            .expect("socket open")
            .expect("frame");
        let done = match &frame {
            Message::Text(text) => {
                let f: Value = serde_json::from_str(text).unwrap();
                if f["type"] == "status" {
                    continue;
                }
                f["type"] == "executing"
                    && f["data"]["node"].is_null()
                    && f["data"]["prompt_id"] == prompt_id
            }
            Message::Binary(_) => false,
            _ => continue,
        };
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Whether a text frame of `kind` about `prompt_id` is among `frames`.
fn has(frames: &[Message], kind: &str, prompt_id: &str) -> bool {
    frames.iter().any(|m| match m {
        Message::Text(t) => {
            let f: Value = serde_json::from_str(t).unwrap();
            f["type"] == kind && f["data"]["prompt_id"] == prompt_id
        }
        _ => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_to_either_gateway_run_once_and_every_event_reaches_the_other() {
    let Some(room) = Room::new("replicas: exactly once, events in order", 20).await else {
        return;
    };
    let (_a, a) = room.gateway(true).await;
    let (_b, b) = room.gateway(false).await;
    assert_eq!(ready(&b).await["dispatching"], false, "one dispatches");

    let (http, cookie) = log_in(&a).await;
    // The same tab, open on each gateway: the one that dispatches, and
    // the one whose frames all come through the database.
    let mut on_a = connect(&a, &cookie).await;
    let mut on_b = connect(&b, &cookie).await;
    let prompts = [
        txt2img_prompt(1, 6),
        cpu_prompt("p1"),
        txt2img_prompt(2, 6),
        cpu_prompt("p2"),
        cpu_prompt("p3"),
        txt2img_prompt(3, 4),
    ];
    let mut ids = Vec::new();
    for (i, prompt) in prompts.into_iter().enumerate() {
        let gateway = if i % 2 == 0 { &a } else { &b };
        ids.push(submit(&http, gateway, prompt).await);
    }
    let last = ids.last().unwrap().clone();
    let (seen_on_a, seen_on_b) = tokio::join!(
        job_frames_until_done(&mut on_a, &last),
        job_frames_until_done(&mut on_b, &last)
    );
    for id in &ids {
        assert!(has(&seen_on_b, "execution_success", id), "job {id} ended");
    }
    assert!(
        seen_on_b.iter().any(|m| matches!(m, Message::Binary(_))),
        "previews came through too"
    );
    assert_eq!(
        seen_on_a.len(),
        seen_on_b.len(),
        "as many frames on either gateway"
    );
    if let Some(i) = (0..seen_on_a.len()).find(|&i| seen_on_a[i] != seen_on_b[i]) {
        let show = |m: &Message| match m {
            Message::Text(t) => t.chars().take(300).collect::<String>(),
            other => format!("{} bytes", other.len()),
        };
        panic!(
            "the same frames in the same order on the gateway that does not dispatch: frame {i} differs\n  there: {}\n  here:  {}",
            show(&seen_on_a[i]),
            show(&seen_on_b[i])
        );
    }

    // The GPUs as the dispatching gateway sees them (it has used them)
    // reach the other: its participants' panel says they are ready, not
    // warming up (as a gateway that never probed them would say).
    within("the other gateway to hear the GPUs are ready", async {
        loop {
            let standing: Value = get_json(&http, format!("{b}/api/comfyume/room")).await;
            if standing["gpus"] == "ready" {
                break;
            }
            // Shared once a second by the dispatching gateway.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let backends: Value = admin_json(format!("{b}/admin/api/backends")).await;
    assert_eq!(backends[0]["name"], "sim");
    assert_eq!(backends[0]["state"], "ready", "{backends}");
    let jobs: Value = get_json(&http, format!("{b}/api/jobs")).await;
    assert_eq!(jobs["pagination"]["total"], 6, "nothing duplicated: {jobs}");
    assert_eq!(
        room.attempts(&ids).await,
        vec![1; 6],
        "each dispatched once"
    );
    assert_eq!(room.images_made(), 6, "the simulator ran each job once");
    let outputs = std::fs::read_dir(room.data_dir().join("data/users/alice/output"))
        .unwrap()
        .count();
    assert_eq!(outputs, 6, "every output in alice's own files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_dispatching_gateway_mid_job_hands_the_room_to_the_other() {
    let Some(room) = Room::new("replicas: kill -9 of the dispatcher", 100).await else {
        return;
    };
    let (mut a, a_url) = room.gateway(true).await;
    let (_b, b) = room.gateway(false).await;
    let (http, cookie) = log_in(&b).await;
    let mut ws = connect(&b, &cookie).await;
    let mut ids = Vec::new();
    for prompt in [txt2img_prompt(11, 40), cpu_prompt("p1"), cpu_prompt("p2")] {
        ids.push(submit(&http, &b, prompt).await);
    }
    // The long job runs on the simulator, dispatched by the other gateway,
    // which also tells alice (connected only here) where she stands.
    let (mut told, mut running) = (false, false);
    while !(told && running) {
        let f = next_frame_any(&mut ws).await;
        told |= f["type"] == comfyume::room::NEWS_FRAME;
        running |= f["type"] == "progress" && f["data"]["prompt_id"] == ids[0];
    }
    let killed = std::time::Instant::now();
    a.child.kill().unwrap(); // SIGKILL: no shutdown of any kind
    a.child.wait().unwrap();
    drop(a);
    assert!(
        reqwest::get(format!("{a_url}/ready")).await.is_err(),
        "the dispatching gateway is gone"
    );

    within("the other gateway to take the dispatching over", async {
        while ready(&b).await["dispatching"] != true {
            // Only /ready shows it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // A figure for the record, not an assertion (machines are noisy).
    eprintln!(
        "replicas: the other gateway dispatched {} ms after the kill",
        killed.elapsed().as_millis()
    );
    // The other took the lease, picks the running job up where it runs,
    // and runs the rest; the last one's end is the end of the scenario.
    let frames = frames_until_done(&mut ws, &ids[2]).await;
    let ended = |id: &str| {
        frames
            .iter()
            .any(|f| f["type"] == "execution_success" && f["data"]["prompt_id"] == id)
    };
    assert!(
        ended(&ids[0]),
        "the interrupted run's end reached its owner"
    );
    assert_eq!(ready(&b).await["dispatching"], true);

    let jobs: Value = get_json(&http, format!("{b}/api/jobs")).await;
    assert_eq!(jobs["pagination"]["total"], 3, "nothing duplicated: {jobs}");
    for id in &ids {
        let job: Value = get_json(&http, format!("{b}/api/jobs/{id}")).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["outputs_count"], 1);
    }
    assert_eq!(
        room.attempts(&ids).await,
        vec![1; 3],
        "each dispatched once: the running one was picked up, not sent again"
    );
    assert_eq!(room.images_made(), 3, "the simulator ran each job once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_test_through_a_round_robin_balancer_gets_every_job_back() {
    const PARTICIPANTS: u32 = 12;
    const JOBS_EACH: u32 = 2;
    let Some(room) = Room::new("replicas: a load test across two gateways", 5).await else {
        return;
    };
    let (_a, a) = room.gateway(true).await;
    let (_b, b) = room.gateway(false).await;
    let balancer = Balancer::start(&[a, b]).await;

    let mut options = Options::new(
        balancer.url.clone(),
        AccountSource::Create {
            count: PARTICIPANTS,
        },
    );
    options.admin_token = Some("room-token".into());
    options.jobs_per_user = JOBS_EACH;
    options.think = Duration::ZERO;
    options.timeout = WAIT_BOUND / 2;
    let report = within(
        "the load test",
        comfyume::loadtest::run(options, Progress::Off),
    )
    .await
    .expect("the load test runs");
    let planned = u64::from(PARTICIPANTS * JOBS_EACH);
    assert_eq!(report.errors.total, 0, "{}", report.table());
    assert_eq!(report.misdirected_frames.count, 0, "{}", report.table());
    assert_eq!(
        (
            report.jobs.submitted,
            report.jobs.completed,
            report.jobs.failed
        ),
        (planned, planned, 0),
        "{}",
        report.table()
    );
    assert_eq!(room.images_made() as u64, planned, "each job ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_and_the_rooms_pause_hold_on_every_gateway() {
    let Some(room) = Room::new("replicas: shared limits and pause", 20).await else {
        return;
    };
    let (_a, a) = room.gateway(true).await;
    let (_b, b) = room.gateway(false).await;
    let (http, cookie) = log_in(&a).await;
    let mut on_b = connect(&b, &cookie).await;

    // Three wrong guesses at alice's name on the first gateway...
    let stranger = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = stranger
            .post(format!("{a}/login"))
            .form(&[("username", "alice"), ("password", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // ...then the instructor pauses the room there. Signals from one
    // gateway arrive in order: once the pause's notice reaches a socket
    // on the second, so have the guesses.
    let paused = reqwest::Client::new()
        .post(format!("{a}/admin/api/room/pause"))
        .bearer_auth("room-token")
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    loop {
        let f = next_frame(&mut on_b).await;
        if f["type"] == "notification" && f["data"]["id"] == "comfyume-room-pause" {
            break;
        }
    }
    let r = stranger
        .post(format!("{b}/login"))
        .form(&[("username", "alice"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the name's guesses on the other gateway count here"
    );
    let room_b: Value = admin_json(format!("{b}/admin/api/jobs")).await;
    assert_eq!(room_b["paused"], true, "{room_b}");

    // Resumed on the other gateway: the dispatching one runs again.
    let id = submit(&http, &b, cpu_prompt("waits")).await;
    let resumed = reqwest::Client::new()
        .post(format!("{b}/admin/api/room/resume"))
        .bearer_auth("room-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    frames_until_done(&mut on_b, &id).await;
    assert_eq!(room.attempts(std::slice::from_ref(&id)).await, [1]);

    // Interrupted from the gateway that does not dispatch: the run on the
    // other stops.
    let long = submit(&http, &b, txt2img_prompt(5, 200)).await;
    loop {
        let f = next_frame(&mut on_b).await;
        if f["type"] == "progress" && f["data"]["prompt_id"] == long {
            break;
        }
    }
    let r = http
        .post(format!("{b}/api/interrupt"))
        .json(&json!({"prompt_id": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let frames = frames_until_done(&mut on_b, &long).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "execution_interrupted" && f["data"]["prompt_id"] == long),
        "interrupted"
    );
}

/// Gateways that share no disk keep participants' files in one bucket:
/// what alice saves through one gateway the other lists and serves
/// (streamed from the bucket), and her job's output, asked of the gateway
/// that does not dispatch, lands in the bucket and is served by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_without_a_shared_disk_share_participants_files_through_a_bucket() {
    use object_store::ObjectStoreExt;
    let Some(room) = Room::with_bucket("replicas: files in a bucket", 20).await else {
        return;
    };
    let (_a, a) = room.gateway(true).await;
    let (_b, b) = room.gateway(false).await;
    let (http, cookie) = log_in(&b).await;

    let picture: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let uploaded = json_of(
        http.post(format!("{b}/api/upload/image"))
            .multipart(crate::files::image_form("cat.png", &picture)),
    )
    .await;
    assert_eq!(uploaded["name"], "cat.png");
    let saved = http
        .post(format!(
            "{a}/api/userdata/workflows%2Fmine.json?overwrite=true"
        ))
        .body("{\"nodes\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let listed = get_json(&http, format!("{b}/api/userdata?dir=workflows")).await;
    assert_eq!(listed, json!(["mine.json"]), "saved on A, listed on B");
    let viewed = http
        .get(format!("{a}/api/view?filename=cat.png&type=input"))
        .send()
        .await
        .unwrap();
    assert_eq!(viewed.status(), 200);
    assert_eq!(
        viewed.headers()["content-length"],
        picture.len().to_string().as_str()
    );
    assert!(
        viewed.bytes().await.unwrap() == picture,
        "uploaded on B, served whole on A"
    );

    let mut on_b = connect(&b, &cookie).await;
    let id = submit(&http, &b, cpu_prompt("shared")).await;
    let frames = job_frames_until_done(&mut on_b, &id).await;
    let executed = frames
        .iter()
        .find_map(|m| match m {
            Message::Text(t) => {
                let f: Value = serde_json::from_str(t).unwrap();
                (f["type"] == "executed" && f["data"]["prompt_id"] == id.as_str()).then_some(f)
            }
            _ => None,
        })
        .expect("an executed frame");
    let image = &executed["data"]["output"]["images"][0];
    let (name, subfolder) = (
        image["filename"].as_str().unwrap(),
        image["subfolder"].as_str().unwrap(),
    );
    let view = |gateway: &str| {
        let url = format!("{gateway}/api/view?filename={name}&subfolder={subfolder}&type=output");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    };
    let (on_a, on_b) = (view(&a).await, view(&b).await);
    assert!(!on_a.is_empty());
    assert_eq!(on_a, on_b, "one output, served by either gateway");
    let store = comfyume::buckets::files_bucket(room.files.as_ref().unwrap())
        .unwrap()
        .unwrap();
    let key = if subfolder.is_empty() {
        format!("users/alice/output/{name}")
    } else {
        format!("users/alice/output/{subfolder}/{name}")
    };
    let stored = store
        .get(&key.as_str().into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored, on_a, "the output is the bucket's");
    // Shared on the wall through B, seen through A.
    let shared = json_of(
        http.post(format!("{b}/api/comfyume/wall"))
            .json(&json!({"filename": name, "type": "output", "subfolder": subfolder})),
    )
    .await;
    let url = shared["url"].as_str().unwrap_or_else(|| panic!("{shared}"));
    let on_the_wall = http.get(format!("{a}{url}")).send().await.unwrap();
    assert_eq!(on_the_wall.status(), 200);
    assert_eq!(on_the_wall.bytes().await.unwrap(), on_a);
    for data_dir in ["data-a", "data-b"] {
        for kept in ["users", "wall"] {
            assert!(
                !room.data_dir().join(data_dir).join(kept).exists(),
                "nothing of {kept} on {data_dir}"
            );
        }
    }
}
