//! `dispatch.queue_ahead`: each slot's next job waits in the backend's own
//! queue behind the running one, chosen as the slot would choose it when
//! the running job ends; it reaches only its owner, and cancelling it
//! leaves the running job alone.

use serde_json::Value;

use crate::execution::{
    Participant, cpu_prompt, frames_until_done, next_frame, participant, submit_ok, txt2img_prompt,
};
use crate::support::{Options, TestApp, within};

async fn room() -> TestApp {
    TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            sim: comfyume_sim::SimOptions {
                step_time: std::time::Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        },
        |c| c.dispatch.queue_ahead = true,
    )
    .await
}

/// Waits until `id` reports progress on `p`'s socket: running on the
/// simulator.
async fn until_running(p: &mut Participant, id: &str) {
    within("the job to run", async {
        loop {
            let f = next_frame(&mut p.ws).await;
            if f["type"] == "progress" && f["data"]["prompt_id"] == id {
                break;
            }
        }
    })
    .await;
}

/// Waits until the simulator at `sim_url` holds `n` prompts (running and
/// waiting), as its own status frames say: ComfyUI sends one on connect
/// and one on every change of its queue.
pub async fn until_backend_holds(sim_url: &str, n: u64) {
    let url = format!(
        "{}/ws?clientId=watcher",
        sim_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    within("the backend's queue", async {
        loop {
            let f = next_frame(&mut ws).await;
            if f["type"] == "status" && f["data"]["status"]["exec_info"]["queue_remaining"] == n {
                break;
            }
        }
    })
    .await;
}

/// The prompt ids the simulator has waiting in its queue.
async fn backend_pending(app: &TestApp) -> Vec<String> {
    let queue: Value = reqwest::get(format!("{}/queue", app.sim_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    queue["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[1].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_job_waits_on_the_backend_behind_the_running_one() {
    let app = room().await;
    let mut alice = participant(&app, "alice").await;
    let mut bob = participant(&app, "bob").await;
    let long = submit_ok(&app, &alice, txt2img_prompt(1, 20)).await;
    let alices_next = submit_ok(&app, &alice, cpu_prompt("a2")).await;
    let bobs = submit_ok(&app, &bob, cpu_prompt("b1")).await;

    // One slot: alice's long job runs, and the place behind it goes to
    // bob, who would be next when it ends (alice has had her turn).
    assert_eq!(app.dispatch_once().await, [long.clone(), bobs.clone()]);
    until_running(&mut alice, &long).await;
    until_backend_holds(&app.sim_url, 2).await;
    assert_eq!(
        backend_pending(&app).await,
        std::slice::from_ref(&bobs),
        "queued on the GPU"
    );
    let sim = &app.state.dispatcher.backends()[0];
    assert_eq!((sim.running, sim.queued), (1, 1));
    assert!(app.dispatch_once().await.is_empty(), "the slot is full");

    let alices = frames_until_done(&mut alice.ws, &long).await;
    assert!(alices.iter().any(|f| f["type"] == "execution_success"));
    assert!(
        alices
            .iter()
            .all(|f| f["data"]["prompt_id"] != bobs.as_str()),
        "none of bob's frames reach alice"
    );
    let bobs_frames = frames_until_done(&mut bob.ws, &bobs).await;
    assert!(bobs_frames.iter().any(|f| f["type"] == "execution_success"));

    // Alice's next job takes the slot, and nothing else is left.
    assert_eq!(
        app.dispatch_once().await,
        std::slice::from_ref(&alices_next)
    );
    frames_until_done(&mut alice.ws, &alices_next).await;
    assert!(app.dispatch_once().await.is_empty());
    for (p, id) in [(&alice, &long), (&bob, &bobs), (&alice, &alices_next)] {
        let job: Value = p.get_json(&app, &format!("/api/jobs/{id}")).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["outputs_count"], 1, "{job}");
    }
}

/// Alone in the room, a participant's jobs follow one another on the GPU
/// with no gap, one running at a time as the cap says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_participants_next_job_waits_behind_their_running_one() {
    let app = room().await;
    let mut alice = participant(&app, "alice").await;
    let first = submit_ok(&app, &alice, txt2img_prompt(2, 20)).await;
    let second = submit_ok(&app, &alice, cpu_prompt("a2")).await;
    let third = submit_ok(&app, &alice, cpu_prompt("a3")).await;
    assert_eq!(app.dispatch_once().await, [first.clone(), second.clone()]);
    until_running(&mut alice, &first).await;
    until_backend_holds(&app.sim_url, 2).await;
    assert_eq!(backend_pending(&app).await, std::slice::from_ref(&second));
    frames_until_done(&mut alice.ws, &first).await;
    frames_until_done(&mut alice.ws, &second).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&third));
    frames_until_done(&mut alice.ws, &third).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_waiting_job_leaves_the_running_one_alone() {
    let app = room().await;
    let mut alice = participant(&app, "alice").await;
    let mut bob = participant(&app, "bob").await;
    let long = submit_ok(&app, &alice, txt2img_prompt(3, 20)).await;
    let bobs = submit_ok(&app, &bob, cpu_prompt("b1")).await;
    assert_eq!(app.dispatch_once().await, [long.clone(), bobs.clone()]);
    until_running(&mut alice, &long).await;
    until_backend_holds(&app.sim_url, 2).await;

    let r: Value = bob
        .http
        .post(app.at(&format!("/api/jobs/{bobs}/cancel")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, serde_json::json!({"cancelled": true}));
    let frames = frames_until_done(&mut bob.ws, &bobs).await;
    assert!(
        frames.iter().any(|f| f["type"] == "execution_interrupted"),
        "{frames:?}"
    );
    assert!(
        backend_pending(&app).await.is_empty(),
        "taken off the GPU's queue"
    );

    let alices = frames_until_done(&mut alice.ws, &long).await;
    assert!(
        alices.iter().any(|f| f["type"] == "execution_success"),
        "the running job was not interrupted: {alices:?}"
    );
    let job: Value = bob.get_json(&app, &format!("/api/jobs/{bobs}")).await;
    assert_eq!(job["status"], "cancelled", "{job}");
}

/// A burst of short jobs through one slot, dispatched as they come: each
/// waits only for the one before it on the slot, so all of them finish
/// (two jobs claimed in one round once waited for each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_short_jobs_all_finish() {
    let app = TestApp::spawn_with(|c| {
        c.dispatch.queue_ahead = true;
        c.limits.max_pending_per_user = 100;
    })
    .await;
    let mut alice = participant(&app, "alice").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(submit_ok(&app, &alice, cpu_prompt(&format!("burst-{i}"))).await);
    }
    for id in &ids {
        let frames = frames_until_done(&mut alice.ws, id).await;
        assert!(
            frames.iter().any(|f| f["type"] == "execution_success"),
            "{id}: {frames:?}"
        );
    }
}
