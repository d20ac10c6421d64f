//! The `worker` backend kind: jobs through gateway → `comfyume worker` →
//! simulator, a load balancer spreading requests over two workers, and the
//! gateway giving up on a run (the worker then interrupts the prompt).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use comfyume::config::{BackendConfig, BackendKind, Secret};
use comfyume_worker::WorkerArgs;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::execution::{cpu_prompt, frames_until_done, participant, submit_ok, txt2img_prompt};
use crate::support::{Options, TestApp};

const TOKEN: &str = "worker-token-for-tests";

async fn start_sim(options: comfyume_sim::SimOptions) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(comfyume_sim::run_with(
        listener,
        options,
        std::future::pending(),
    ));
    url
}

/// A worker in front of a fresh simulator; returns the worker's URL and the
/// simulator's.
async fn start_worker(sim: comfyume_sim::SimOptions) -> (String, String) {
    let sim_url = start_sim(sim).await;
    (worker_in_front_of(&sim_url).await, sim_url)
}

/// A worker in front of the ComfyUI at `comfyui`; its URL.
pub async fn worker_in_front_of(comfyui: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let args = WorkerArgs {
        comfyui: comfyui.to_string(),
        listen: addr,
        token: Secret::new(TOKEN),
        max_jobs: 1,
        ready_timeout_secs: 30,
    };
    tokio::spawn(comfyume_worker::run(listener, args, std::future::pending()));
    format!("http://{addr}")
}

pub fn worker_backend(name: &str, url: &str, slots: u32) -> BackendConfig {
    let mut b = BackendConfig::new(name, BackendKind::Worker, url, slots);
    b.token = Some(Secret::new(TOKEN));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_a_worker() {
    let (worker, _) = start_worker(Default::default()).await;
    let app = TestApp::spawn_full(Options::default(), |c| {
        c.backends = vec![worker_backend("serverless", &worker, 1)]
    })
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, txt2img_prompt(5, 3)).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert_eq!(frames.iter().filter(|f| f["type"] == "progress").count(), 3);
    assert_eq!(
        frames.iter().filter(|f| f["binary"] == 4).count(),
        3,
        "previews relayed"
    );
    let saved = frames
        .iter()
        .find(|f| f["type"] == "executed")
        .expect("the output");
    let name = saved["data"]["output"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    let r = a
        .http
        .get(app.at(&format!("/api/view?filename={name}&type=output")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..4], b"\x89PNG");
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "completed");
    // The node catalogue came through the worker too.
    let info: Value = a.get_json(&app, "/api/object_info/KSampler").await;
    assert!(info.get("KSampler").is_some());
}

/// A load balancer that sends each request to the next replica in turn.
async fn round_robin(replicas: Vec<String>) -> (String, Arc<AtomicUsize>) {
    #[derive(Clone)]
    struct Lb {
        replicas: Arc<Vec<String>>,
        next: Arc<AtomicUsize>,
        http: reqwest::Client,
    }
    async fn forward(State(lb): State<Lb>, request: Request) -> Response {
        let n = lb.next.fetch_add(1, Ordering::SeqCst);
        let target = &lb.replicas[n % lb.replicas.len()];
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let mut out = lb
            .http
            .request(request.method().clone(), format!("{target}{path}"));
        for (k, v) in request.headers() {
            if k != "host" {
                out = out.header(k, v);
            }
        }
        let body = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut upstream = out.body(body).send().await.unwrap();
        let mut response = Response::builder().status(upstream.status().as_u16());
        for (k, v) in upstream.headers() {
            response = response.header(k, v);
        }
        // Stream the body through as it arrives.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = upstream.chunk().await {
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        response.body(Body::from_stream(stream)).unwrap()
    }
    let next = Arc::new(AtomicUsize::new(0));
    let lb = Lb {
        replicas: Arc::new(replicas),
        next: next.clone(),
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(forward).with_state(lb);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_spreading_requests_over_two_workers_loses_nothing() {
    let (w1, _) = start_worker(Default::default()).await;
    let (w2, _) = start_worker(Default::default()).await;
    let (lb, requests) = round_robin(vec![w1, w2]).await;
    let app = TestApp::spawn_full(Options::default(), |c| {
        c.backends = vec![worker_backend("serverless", &lb, 2)]
    })
    .await;
    let mut a = participant(&app, "alice").await;
    let mut b = participant(&app, "bob").await;
    let mut ids = Vec::new();
    for (p, prefix) in [(&a, "a1"), (&b, "b1"), (&a, "a2"), (&b, "b2")] {
        ids.push(submit_ok(&app, p, cpu_prompt(prefix)).await);
    }
    frames_until_done(&mut a.ws, &ids[0]).await;
    frames_until_done(&mut a.ws, &ids[2]).await;
    frames_until_done(&mut b.ws, &ids[1]).await;
    frames_until_done(&mut b.ws, &ids[3]).await;
    for (p, id) in [(&a, &ids[0]), (&b, &ids[1]), (&a, &ids[2]), (&b, &ids[3])] {
        let job: Value = p.get_json(&app, &format!("/api/jobs/{id}")).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["outputs_count"], 1);
    }
    assert!(
        requests.load(Ordering::SeqCst) >= 4,
        "both replicas served requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_gateway_gives_up_on_is_interrupted_by_the_worker() {
    let slow = comfyume_sim::SimOptions {
        step_time: Duration::from_millis(200),
        ..Default::default()
    };
    let (worker, sim) = start_worker(slow).await;
    let app = TestApp::spawn_full(Options::default(), |c| {
        c.backends = vec![worker_backend("serverless", &worker, 1)];
        c.dispatch.job_timeout_seconds = 1;
        c.dispatch.max_attempts = 1;
    })
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, txt2img_prompt(9, 100)).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "execution_error")
        .expect("the time-out is explained");
    assert!(
        error["data"]["exception_message"]
            .as_str()
            .unwrap()
            .contains("limit")
    );
    // The worker saw its caller go and interrupted the prompt on its ComfyUI.
    let http = reqwest::Client::new();
    let interrupted = async {
        loop {
            let h: Value = http
                .get(format!("{sim}/history/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(messages) = h[&id]["status"]["messages"].as_array() {
                return messages.iter().any(|m| m[0] == "execution_interrupted");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let interrupted = tokio::time::timeout(Duration::from_secs(30), interrupted)
        .await
        .expect("the prompt ended on the simulator");
    assert!(interrupted, "ended by an interrupt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reaches_a_job_running_on_a_worker() {
    let slow = comfyume_sim::SimOptions {
        step_time: Duration::from_millis(100),
        ..Default::default()
    };
    let (worker, sim) = start_worker(slow).await;
    let app = TestApp::spawn_full(Options::default(), |c| {
        c.backends = vec![worker_backend("serverless", &worker, 1)]
    })
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, txt2img_prompt(4, 100)).await;
    loop {
        if crate::execution::next_frame(&mut a.ws).await["type"] == "progress" {
            break;
        }
    }
    a.http
        .post(app.at("/api/interrupt"))
        .json(&serde_json::json!({"prompt_id": id}))
        .send()
        .await
        .unwrap();
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert!(frames.iter().any(|f| f["type"] == "execution_interrupted"));
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "cancelled");
    // The worker stopped the prompt on its ComfyUI.
    let http = reqwest::Client::new();
    let ended = async {
        loop {
            let h: Value = http
                .get(format!("{sim}/history/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if h.get(&id).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .expect("the prompt ended on the simulator");
}
