//! The store's conformance suite: every test here runs unchanged on both
//! engines (`on_sqlite::…` and `on_postgres::…`), so the rest of the
//! gateway can rely on one behaviour whichever database runs.

use comfyume_domain::{Job, JobId, JobState, Role, UserId, UserName};
use serde_json::{Value, json};

use super::testing::{self, TestStore};
use super::*;

/// Runs each listed test on a fresh SQLite store and a fresh PostgreSQL
/// database.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::testing::sqlite().await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(store) = super::testing::postgres(stringify!($test)).await {
                        super::$test(store).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    users_are_unique_and_listed,
    a_batch_of_accounts_is_made_whole_or_not_at_all,
    sessions_expire_and_die_with_password_change,
    disabling_or_removing_a_user_ends_their_sessions,
    caps_are_kept_per_account,
    room_members_never_exceed_their_bound_under_parallel_joins,
    numbers_follow_comfyui,
    the_pending_cap_holds_under_parallel_submissions,
    a_job_is_claimed_once_under_parallel_claims,
    only_the_current_attempt_may_finish_a_job,
    retries_and_handbacks_keep_the_queue_order,
    cancel_and_delete_touch_only_the_owners_jobs,
    history_pages_as_comfyui_selects_them,
    job_pages_filter_sort_and_count,
    prompts_are_read_back_as_they_went_in,
    the_instructor_lane_and_room_jobs,
    the_audit_log_pages_newest_first,
    room_values_and_pushed_workflows,
    the_wall_keeps_its_cap_under_parallel_shares,
    the_dashboards_figures,
    gateways_opening_one_database_together_share_it,
    one_gateway_at_a_time_holds_the_dispatchers_lease,
    what_one_gateway_broadcasts_the_others_hear_in_order,
    a_cancel_request_waits_on_the_running_job,
);

fn name(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

async fn user(s: &Store, n: &str, role: Role) -> UserId {
    s.create_user(&name(n), "h", role, 0).await.unwrap().id
}

fn new_job(owner: UserId, number: Option<f64>, front: bool) -> NewJob {
    NewJob {
        id: JobId::new(),
        owner,
        number,
        front,
        prompt: json!({"1": {}}),
        extra_data: json!({"create_time": 1}),
        outputs_to_execute: vec!["1".into()],
        partial_targets: None,
        workflow_id: None,
        created_at: 1,
    }
}

fn queued(inserted: StoreResult<Inserted>) -> Job {
    match inserted.unwrap() {
        Inserted::Queued(job) => *job,
        Inserted::QueueFull { .. } => panic!("the queue is not full"),
    }
}

async fn submit(s: &Store, owner: UserId) -> Job {
    queued(s.insert_job(new_job(owner, None, false), 100).await)
}

fn finish(state: JobState, finished_at: i64) -> Finish {
    Finish {
        state,
        outputs: Default::default(),
        meta: Default::default(),
        messages: vec![],
        error: None,
        finished_at,
    }
}

/// Claims and finishes `job`: started at `start`, ended at `end`.
async fn run(s: &Store, job: &JobId, backend: &str, start: i64, end: i64, state: JobState) {
    let claimed = s.claim_job(job, backend, 0, start).await.unwrap().unwrap();
    s.finish_job(job, claimed.job.attempts, &finish(state, end))
        .await
        .unwrap()
        .unwrap();
}

async fn users_are_unique_and_listed(s: TestStore) {
    s.create_user(&name("bob"), "h1", Role::Participant, 1)
        .await
        .unwrap();
    let alice = s
        .create_user(&name("alice"), "h2", Role::Admin, 2)
        .await
        .unwrap();
    assert!(matches!(
        s.create_user(&name("BOB"), "h3", Role::Participant, 3)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let all = s.list_users().await.unwrap();
    assert_eq!(
        all.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(all[0].role, Role::Admin);
    let by_id = s.user_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(
        (
            by_id.name.as_str(),
            by_id.password_hash.as_str(),
            by_id.created_at
        ),
        ("alice", "h2", 2)
    );
    assert!(!by_id.disabled && !by_id.room_member);
    assert!(s.user_by_name(&name("carol")).await.unwrap().is_none());
}

async fn a_batch_of_accounts_is_made_whole_or_not_at_all(s: TestStore) {
    s.create_user(&name("b"), "h", Role::Participant, 1)
        .await
        .unwrap();
    let batch: Vec<(UserName, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| (name(n), "h".to_string()))
        .collect();
    let err = s
        .create_users(&batch, Role::Participant, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref n) if n == "b"),
        "{err}"
    );
    assert!(s.user_by_name(&name("a")).await.unwrap().is_none());
    assert!(s.user_by_name(&name("c")).await.unwrap().is_none());
    let fresh: Vec<(UserName, String)> = ["x", "y"]
        .iter()
        .map(|n| (name(n), "h".to_string()))
        .collect();
    s.create_users(&fresh, Role::Participant, 3).await.unwrap();
    assert!(s.user_by_name(&name("y")).await.unwrap().is_some());
}

async fn sessions_expire_and_die_with_password_change(s: TestStore) {
    let u = s
        .create_user(&name("bob"), "h1", Role::Participant, 1)
        .await
        .unwrap();
    s.create_session("t1", u.id, 10, 100).await.unwrap();
    assert_eq!(
        s.session_user("t1", 50)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_str(),
        "bob"
    );
    assert!(s.session_user("t1", 100).await.unwrap().is_none());
    assert!(s.session_user("nope", 50).await.unwrap().is_none());
    s.set_password(&name("bob"), "h2").await.unwrap();
    assert!(s.session_user("t1", 50).await.unwrap().is_none());
    assert_eq!(
        s.user_by_name(&name("bob"))
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "h2"
    );
    assert!(matches!(
        s.set_password(&name("nobody"), "h").await,
        Err(StoreError::NotFound(_))
    ));
    s.create_session("t2", u.id, 10, 100).await.unwrap();
    s.create_session("t3", u.id, 10, 200).await.unwrap();
    assert_eq!(s.sweep_sessions(100).await.unwrap(), 1);
    s.delete_session("t3").await.unwrap();
    assert!(s.session_user("t3", 150).await.unwrap().is_none());
}

async fn disabling_or_removing_a_user_ends_their_sessions(s: TestStore) {
    let u = s
        .create_user(&name("bob"), "h1", Role::Participant, 1)
        .await
        .unwrap();
    s.create_session("t1", u.id, 10, 100).await.unwrap();
    s.set_disabled(&name("bob"), Some(20)).await.unwrap();
    assert!(s.session_user("t1", 50).await.unwrap().is_none());
    assert!(s.user_by_id(u.id).await.unwrap().unwrap().disabled);
    s.create_session("t2", u.id, 30, 100).await.unwrap();
    assert!(
        s.session_user("t2", 50).await.unwrap().is_none(),
        "a disabled account has no live session"
    );
    s.set_disabled(&name("bob"), None).await.unwrap();
    assert!(s.session_user("t2", 50).await.unwrap().is_some());
    s.remove_user(&name("bob")).await.unwrap();
    assert!(s.session_user("t2", 50).await.unwrap().is_none());
    assert!(matches!(
        s.remove_user(&name("bob")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.set_disabled(&name("bob"), Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn caps_are_kept_per_account(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let caps = Caps {
        max_pending: Some(1),
        max_running: Some(2),
    };
    s.set_caps(&name("a"), caps).await.unwrap();
    assert_eq!(s.user_by_id(a).await.unwrap().unwrap().caps, caps);
    assert!(matches!(
        s.insert_job(new_job(a, None, false), 10).await.unwrap(),
        Inserted::Queued(_)
    ));
    assert!(
        matches!(
            s.insert_job(new_job(a, None, false), 10).await.unwrap(),
            Inserted::QueueFull { limit: 1 }
        ),
        "their own cap, not the room's"
    );
    assert_eq!(s.pending_jobs().await.unwrap()[0].owner_cap, Some(2));
    s.set_caps(&name("a"), Caps::default()).await.unwrap();
    assert_eq!(
        s.user_by_id(a).await.unwrap().unwrap().caps,
        Caps::default()
    );
    assert!(matches!(
        s.set_caps(&name("nobody"), caps).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn room_members_never_exceed_their_bound_under_parallel_joins(s: TestStore) {
    let joins = (0..8).map(|i| {
        let s = s.store.clone();
        tokio::spawn(async move {
            s.create_room_member(&name(&format!("m{i}")), "h", 5, 3)
                .await
        })
    });
    let mut made = 0;
    for join in futures_util::future::join_all(joins).await {
        if let Some(member) = join.unwrap().unwrap() {
            assert!(member.room_member && member.role == Role::Participant);
            made += 1;
        }
    }
    assert_eq!(made, 3, "never more than the bound");
    s.create_user(&name("own"), "h", Role::Participant, 1)
        .await
        .unwrap();
    assert!(matches!(
        s.create_room_member(&name("own"), "h", 5, 10).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn numbers_follow_comfyui(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let j1 = queued(s.insert_job(new_job(a, None, false), 10).await);
    let j2 = queued(s.insert_job(new_job(a, None, true), 10).await);
    let j3 = queued(s.insert_job(new_job(a, Some(5.0), false), 10).await);
    assert_eq!((j1.number, j1.number_is_float), (j1.seq as f64, false));
    assert_eq!(j2.number, -(j2.seq as f64), "front: the counter, negated");
    assert_eq!((j3.number, j3.number_is_float), (5.0, true));
    assert!(j1.seq < j2.seq && j2.seq < j3.seq);
    assert_eq!(j1.state, JobState::Pending);
    assert!(matches!(
        s.insert_job(
            NewJob {
                id: j1.id,
                ..new_job(a, None, false)
            },
            10
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    let pending = s.pending_jobs().await.unwrap();
    assert_eq!(pending.len(), 3);
    assert!(!pending[0].admin && !pending[0].retry);
    assert_eq!(s.queue_counts().await.unwrap(), (3, 0));
    assert_eq!(s.active_counts(a).await.unwrap(), (3, 0));
}

async fn the_pending_cap_holds_under_parallel_submissions(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let b = user(&s, "b", Role::Participant).await;
    let tries = (0..8).map(|_| {
        let s = s.store.clone();
        tokio::spawn(async move { s.insert_job(new_job(a, None, false), 3).await })
    });
    let mut queued = 0;
    for result in futures_util::future::join_all(tries).await {
        match result.unwrap().unwrap() {
            Inserted::Queued(_) => queued += 1,
            Inserted::QueueFull { limit } => assert_eq!(limit, 3),
        }
    }
    assert_eq!(queued, 3, "never more than the cap");
    assert!(
        matches!(
            s.insert_job(new_job(b, None, false), 3).await.unwrap(),
            Inserted::Queued(_)
        ),
        "another user's queue is their own"
    );
    let first = s.pending_jobs().await.unwrap()[0].id;
    assert!(s.claim_job(&first, "gpu", 0, 2).await.unwrap().is_some());
    assert!(
        matches!(
            s.insert_job(new_job(a, None, false), 3).await.unwrap(),
            Inserted::Queued(_)
        ),
        "a running job frees its place"
    );
    let seqs: Vec<i64> = s
        .pending_jobs()
        .await
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ids from the database, in order: {seqs:?}"
    );
}

async fn a_job_is_claimed_once_under_parallel_claims(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let job = submit(&s, a).await;
    let claims = (0..8).map(|i| {
        let s = s.store.clone();
        tokio::spawn(async move { s.claim_job(&job.id, &format!("gpu{i}"), 0, 5).await })
    });
    let won = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().as_ref().unwrap().is_some())
        .count();
    assert_eq!(won, 1, "exactly one claim wins");
    let running = s.in_progress_jobs().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].attempts, 1);
}

async fn only_the_current_attempt_may_finish_a_job(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let j = queued(s.insert_job(new_job(a, None, false), 10).await);
    let claimed = s.claim_job(&j.id, "gpu", 3, 2).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, j.id);
    assert_eq!(claimed.job.state, JobState::InProgress);
    assert_eq!(claimed.job.attempts, 1);
    assert_eq!(
        (claimed.job.backend.as_deref(), claimed.job.slot),
        (Some("gpu"), Some(3))
    );
    assert_eq!(claimed.job.started_at, Some(2));
    assert_eq!(claimed.owner_name.as_str(), "a");
    assert_eq!(
        claimed.active,
        (0, 1),
        "the owner's counts, this job running"
    );
    assert!(
        s.claim_job(&j.id, "gpu", 0, 2).await.unwrap().is_none(),
        "claimed once"
    );
    assert!(s.requeue_job(&j.id).await.unwrap());
    assert!(!s.requeue_job(&j.id).await.unwrap(), "only a running job");
    assert!(s.claim_job(&j.id, "gpu", 0, 3).await.unwrap().is_some());
    let mut outputs = serde_json::Map::new();
    outputs.insert("9".into(), json!({"images": [{"filename": "a.png"}]}));
    let messages = vec![json!(["execution_start", {"prompt_id": j.id.to_string()}])];
    s.record_progress(&j.id, 1, &outputs, &Default::default(), &messages)
        .await
        .unwrap();
    assert!(
        s.job(&j.id).await.unwrap().unwrap().outputs.is_empty(),
        "a stale run cannot record progress"
    );
    s.record_progress(&j.id, 2, &outputs, &Default::default(), &messages)
        .await
        .unwrap();
    let running = s.job(&j.id).await.unwrap().unwrap();
    assert_eq!((running.outputs, running.messages), (outputs, messages));
    assert!(
        s.finish_job(&j.id, 1, &finish(JobState::Completed, 9))
            .await
            .unwrap()
            .is_none(),
        "a stale run cannot finish it"
    );
    let mut done = finish(JobState::Failed, 9);
    done.error = Some(json!({"exception_message": "boom"}));
    assert_eq!(
        s.finish_job(&j.id, 2, &done).await.unwrap(),
        Some((0, 0)),
        "the owner's counts after the finish"
    );
    let ended = s.job(&j.id).await.unwrap().unwrap();
    assert_eq!(
        (ended.state, ended.attempts, ended.finished_at),
        (JobState::Failed, 2, Some(9))
    );
    assert_eq!(ended.error, done.error);
    assert!(
        s.finish_job(&j.id, 2, &finish(JobState::Completed, 10))
            .await
            .unwrap()
            .is_none(),
        "finished once"
    );
    assert_eq!(s.active_counts(a).await.unwrap(), (0, 0));
}

async fn retries_and_handbacks_keep_the_queue_order(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let first = submit(&s, a).await;
    let second = submit(&s, a).await;
    let claimed = s
        .claim_job(&second.id, "gpu-a", 0, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !s.unclaim_job(&second.id, claimed.job.attempts + 1)
            .await
            .unwrap(),
        "another attempt's hand-back"
    );
    assert!(
        s.unclaim_job(&second.id, claimed.job.attempts)
            .await
            .unwrap()
    );
    let back = s.job(&second.id).await.unwrap().unwrap();
    assert_eq!(
        (back.state, back.attempts, back.backend),
        (JobState::Pending, 0, None),
        "as if never claimed"
    );
    let claimed = s
        .claim_job(&second.id, "gpu-a", 1, 3)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.requeue_for_retry(&second.id, claimed.job.attempts, "gpu-a")
            .await
            .unwrap()
    );
    let pending = s.pending_jobs().await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        [first.id, second.id],
        "the queue keeps submission order; the retry flag puts it first"
    );
    assert!(pending[1].retry && !pending[0].retry);
    assert_eq!(pending[1].avoid_backend.as_deref(), Some("gpu-a"));
    assert_eq!(s.job(&second.id).await.unwrap().unwrap().attempts, 1);
}

async fn cancel_and_delete_touch_only_the_owners_jobs(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let b = user(&s, "b", Role::Admin).await;
    let ja = submit(&s, a).await;
    let ja2 = submit(&s, a).await;
    let jb = submit(&s, b).await;
    assert!(
        s.cancel_pending(a, Some(&[jb.id]), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.cancel_pending(a, Some(&[ja2.id, jb.id]), 5)
            .await
            .unwrap(),
        vec![ja2.id]
    );
    assert_eq!(s.cancel_pending(a, None, 5).await.unwrap(), vec![ja.id]);
    let cancelled = s.job(&ja.id).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.state, cancelled.finished_at),
        (JobState::Cancelled, Some(5))
    );
    assert_eq!(
        s.job(&jb.id).await.unwrap().unwrap().state,
        JobState::Pending
    );
    assert_eq!(
        s.delete_history(b, None).await.unwrap(),
        0,
        "pending jobs are not history"
    );
    assert_eq!(
        s.delete_history(b, Some(&[ja.id])).await.unwrap(),
        0,
        "not b's"
    );
    assert_eq!(s.delete_history(a, Some(&[ja.id])).await.unwrap(), 1);
    assert!(s.job(&ja.id).await.unwrap().is_none());
    assert_eq!(s.delete_history(a, None).await.unwrap(), 1);
    assert_eq!(s.jobs_of(a).await.unwrap().len(), 0);
    assert_eq!(s.jobs_of(b).await.unwrap().len(), 1);
}

async fn history_pages_as_comfyui_selects_them(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = submit(&s, a).await;
        run(&s, &job.id, "gpu", 10 + i, 20 + i, JobState::Completed).await;
        ids.push(job.id);
    }
    let never_ran = submit(&s, a).await;
    s.cancel_pending(a, Some(&[never_ran.id]), 30)
        .await
        .unwrap();
    let waiting = submit(&s, a).await;
    let page = |p| {
        let s = s.store.clone();
        async move {
            s.history_of(a, p)
                .await
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(HistoryPage::All).await,
        ids,
        "finished jobs that ran, oldest first"
    );
    assert_eq!(page(HistoryPage::Newest(2)).await, ids[3..]);
    assert_eq!(
        page(HistoryPage::From {
            offset: 1,
            limit: Some(2)
        })
        .await,
        ids[1..3]
    );
    assert_eq!(
        page(HistoryPage::From {
            offset: 3,
            limit: None
        })
        .await,
        ids[3..]
    );
    assert_eq!(
        s.active_jobs_of(a)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [waiting.id]
    );
    assert_eq!(s.jobs_of(a).await.unwrap().len(), 7);
}

async fn job_pages_filter_sort_and_count(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    // Three finished jobs whose messages give execution times 30, 10 and
    // 20 ms, and one whose end has a non-integer timestamp (0).
    let mut finished = Vec::new();
    for (i, (started, ended)) in [
        (json!(100), json!(130)),
        (json!(200), json!(210)),
        (json!(300), json!(320)),
        (json!(400), json!(450.5)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut new = new_job(a, None, false);
        new.created_at = 10 - i as i64;
        new.workflow_id = Some(if i % 2 == 0 { "w-even" } else { "w-odd" }.into());
        let job = queued(s.insert_job(new, 100).await);
        let claimed = s.claim_job(&job.id, "gpu", 0, 1).await.unwrap().unwrap();
        let mut f = finish(JobState::Completed, 2);
        f.messages = vec![
            json!(["execution_start", {"prompt_id": "x", "timestamp": started}]),
            json!(["execution_cached", {"nodes": []}]),
            json!(["execution_success", {"prompt_id": "x", "timestamp": ended}]),
        ];
        s.finish_job(&job.id, claimed.job.attempts, &f)
            .await
            .unwrap()
            .unwrap();
        finished.push(job.id);
    }
    let waiting = submit(&s, a).await;
    let page = JobsPage {
        states: vec![JobState::Completed],
        workflow_id: None,
        sort: JobsSort::Duration,
        descending: true,
        offset: 0,
        limit: None,
    };
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let (jobs, total) = s.jobs_page_of(a, &page).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        ids(jobs),
        [finished[0], finished[2], finished[1], finished[3]],
        "longest first"
    );
    let (jobs, _) = s
        .jobs_page_of(
            a,
            &JobsPage {
                descending: false,
                ..page.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids(jobs),
        [finished[3], finished[1], finished[2], finished[0]]
    );
    let (jobs, total) = s
        .jobs_page_of(
            a,
            &JobsPage {
                states: vec![JobState::Completed, JobState::Pending],
                sort: JobsSort::Creation,
                descending: false,
                offset: 1,
                limit: Some(2),
                ..page.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        ids(jobs),
        [finished[3], finished[2]],
        "oldest created first, from the second (the first is the waiting one)"
    );
    let (jobs, _) = s
        .jobs_page_of(
            a,
            &JobsPage {
                states: vec![JobState::Pending],
                ..page.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(jobs), [waiting.id], "not run: duration 0");
    let (jobs, total) = s
        .jobs_page_of(
            a,
            &JobsPage {
                workflow_id: Some("w-odd".into()),
                sort: JobsSort::Creation,
                ..page.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!((ids(jobs), total), (vec![finished[1], finished[3]], 2));
    let other = user(&s, "b", Role::Participant).await;
    assert_eq!(s.jobs_page_of(other, &page).await.unwrap().1, 0);
}

async fn prompts_are_read_back_as_they_went_in(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    // Key order is ComfyUI's and must survive the round trip.
    let prompt: Value =
        serde_json::from_str(r#"{"9": {"class_type": "SaveImage", "inputs": {"z": 1, "a": [1, 0.5, "é"]}}, "10": {}, "2": {}}"#)
            .unwrap();
    let mut new = new_job(a, None, false);
    new.prompt = prompt.clone();
    new.extra_data = json!({"create_time": 5, "extra_pnginfo": {"workflow": {"b": 1, "a": 2}}});
    new.partial_targets = Some(vec!["9".into()]);
    new.workflow_id = Some("wf".into());
    let job = queued(s.insert_job(new.clone(), 10).await);
    let read = s.job(&job.id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(&read.prompt).unwrap(),
        serde_json::to_string(&prompt).unwrap()
    );
    assert_eq!(
        serde_json::to_string(&read.extra_data).unwrap(),
        serde_json::to_string(&new.extra_data).unwrap()
    );
    assert_eq!(read.partial_targets, new.partial_targets);
    assert_eq!(read.workflow_id.as_deref(), Some("wf"));
    let other = JobId::new();
    let prompts = s.prompts_of(&[job.id, other]).await.unwrap();
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].0, job.id);
    assert_eq!(
        serde_json::to_string(&prompts[0].1).unwrap(),
        serde_json::to_string(&prompt).unwrap()
    );
}

async fn the_instructor_lane_and_room_jobs(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let t = user(&s, "teacher", Role::Admin).await;
    let ja = submit(&s, a).await;
    let jb = submit(&s, a).await;
    let jt = submit(&s, t).await;
    assert!(s.bump_job(&jb.id, 7).await.unwrap());
    s.claim_job(&ja.id, "gpu", 0, 8).await.unwrap().unwrap();
    assert!(!s.bump_job(&ja.id, 9).await.unwrap(), "only a pending job");
    let pending = s.pending_jobs().await.unwrap();
    let lane: Vec<(JobId, bool)> = pending.iter().map(|p| (p.id, p.admin)).collect();
    assert_eq!(lane, [(jb.id, true), (jt.id, true)]);
    let room = s.room_jobs().await.unwrap();
    assert_eq!(
        room.iter()
            .map(|r| (r.id, r.owner.as_str(), r.state, r.bumped_at))
            .collect::<Vec<_>>(),
        [
            (ja.id, "a", JobState::InProgress, None),
            (jb.id, "a", JobState::Pending, Some(7)),
            (jt.id, "teacher", JobState::Pending, None),
        ]
    );
    assert_eq!(room[0].backend.as_deref(), Some("gpu"));
    assert_eq!(room[0].started_at, Some(8));
    assert_eq!(s.queue_counts().await.unwrap(), (2, 1));
}

async fn the_audit_log_pages_newest_first(s: TestStore) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let entry = s
            .record_audit(
                100 + i,
                "teacher",
                "room.pause",
                "room",
                &json!({"paused": i}),
            )
            .await
            .unwrap();
        assert_eq!(entry.detail, json!({"paused": i}));
        ids.push(entry.id);
    }
    let newest = s.audit_log(2, None).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    assert_eq!(
        (
            newest[0].at,
            newest[0].actor.as_str(),
            newest[0].action.as_str()
        ),
        (104, "teacher", "room.pause")
    );
    let older = s.audit_log(10, Some(ids[3])).await.unwrap();
    assert_eq!(
        older.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[2], ids[1], ids[0]]
    );
}

async fn room_values_and_pushed_workflows(s: TestStore) {
    assert_eq!(s.room_value("paused").await.unwrap(), None);
    s.set_room_value("paused", "true").await.unwrap();
    s.set_room_value("paused", "false").await.unwrap();
    assert_eq!(
        s.room_value("paused").await.unwrap().as_deref(),
        Some("false")
    );
    let a = user(&s, "a", Role::Participant).await;
    let b = user(&s, "b", Role::Participant).await;
    let w1 = s
        .add_room_workflow("intro", &json!({"nodes": [], "z": 1, "a": 2}), 1, "teacher")
        .await
        .unwrap();
    let w2 = s
        .add_room_workflow("part 2", &json!({"nodes": [1]}), 2, "teacher")
        .await
        .unwrap();
    s.mark_workflow_delivered(w1, a, 3).await.unwrap();
    s.mark_workflow_delivered(w1, a, 4).await.unwrap();
    let for_a = s.undelivered_workflows(a).await.unwrap();
    assert_eq!(
        for_a,
        [RoomWorkflow {
            id: w2,
            name: "part 2".into(),
            content: json!({"nodes": [1]})
        }]
    );
    let for_b = s.undelivered_workflows(b).await.unwrap();
    assert_eq!(for_b.iter().map(|w| w.id).collect::<Vec<_>>(), [w1, w2]);
    assert_eq!(for_b[0].content, json!({"nodes": [], "z": 1, "a": 2}));
}

async fn the_wall_keeps_its_cap_under_parallel_shares(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let b = user(&s, "b", Role::Participant).await;
    let shares = (0..6).map(|i| {
        let s = s.store.clone();
        tokio::spawn(async move {
            s.add_wall_item(a, &format!("out{i}.png"), "png", i, 2)
                .await
        })
    });
    let made: Vec<i64> = futures_util::future::join_all(shares)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(made.len(), 2, "never more than the cap");
    assert_eq!(s.wall_shown_by(a).await.unwrap(), 2);
    let theirs = s
        .add_wall_item(b, "b.webp", "webp", 50, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.set_wall_hidden(made[0], Some("teacher"), 60)
            .await
            .unwrap()
    );
    assert!(!s.set_wall_hidden(9_999, Some("teacher"), 60).await.unwrap());
    assert_eq!(s.wall_shown_by(a).await.unwrap(), 1);
    let shown = s.wall_items(10, false).await.unwrap();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0].id, theirs, "newest first");
    assert_eq!(
        (shown[0].author.as_str(), shown[0].ext.as_str()),
        ("b", "webp")
    );
    assert_eq!(s.wall_items(10, true).await.unwrap().len(), 3);
    assert_eq!(s.wall_items(1, true).await.unwrap().len(), 1);
    assert!(s.wall_item(made[0]).await.unwrap().unwrap().hidden);
    assert!(s.set_wall_hidden(made[0], None, 70).await.unwrap());
    assert!(!s.wall_item(made[0]).await.unwrap().unwrap().hidden);
    assert!(s.wall_item(9_999).await.unwrap().is_none());
}

async fn the_dashboards_figures(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let b = user(&s, "b", Role::Participant).await;
    let mut with_outputs = new_job(a, None, false);
    with_outputs.created_at = 100;
    let job = queued(s.insert_job(with_outputs, 10).await);
    let claimed = s
        .claim_job(&job.id, "gpu-1", 0, 150)
        .await
        .unwrap()
        .unwrap();
    let mut done = finish(JobState::Completed, 400);
    done.outputs
        .insert("9".into(), json!({"images": [{"filename": "x.png"}]}));
    s.finish_job(&job.id, claimed.job.attempts, &done)
        .await
        .unwrap()
        .unwrap();
    let failed = submit(&s, a).await;
    run(&s, &failed.id, "gpu-2", 500, 600, JobState::Failed).await;
    let pending = submit(&s, b).await;
    let _ = pending;

    let activity: std::collections::HashMap<UserId, AccountActivity> =
        s.account_activity().await.unwrap().into_iter().collect();
    assert_eq!(
        activity[&a],
        AccountActivity {
            pending: 0,
            running: 0,
            completed: 1,
            failed: 1,
            cancelled: 0,
            gpu_ms: 250 + 100,
            last_activity: Some(600),
        }
    );
    assert_eq!(activity[&b].pending, 1);
    assert_eq!(
        s.backend_activity(0).await.unwrap(),
        [
            BackendActivity {
                backend: "gpu-1".into(),
                jobs: 1,
                run_ms: 250
            },
            BackendActivity {
                backend: "gpu-2".into(),
                jobs: 1,
                run_ms: 100
            },
        ]
    );
    assert_eq!(s.backend_activity(500).await.unwrap().len(), 1);
    assert_eq!(
        s.latest_outputs().await.unwrap(),
        [(a, json!({"9": {"images": [{"filename": "x.png"}]}}))]
    );
    assert_eq!(s.recent_waits(1).await.unwrap(), [500 - 1]);
    assert_eq!(s.recent_waits(5).await.unwrap(), [499, 50]);
    assert_eq!(s.gpu_time_by_user(0).await.unwrap(), [(a, 350, 2)]);
    assert_eq!(s.gpu_time_by_user(500).await.unwrap(), [(a, 100, 1)]);
}

async fn gateways_opening_one_database_together_share_it(s: TestStore) {
    // Two more gateways start at once on the same database: the schema
    // is brought up to date once, and each sees the others' writes.
    let (one, two) = tokio::join!(Store::connect(&s.url), Store::connect(&s.url));
    let (one, two) = (one.unwrap(), two.unwrap());
    let a = user(&one, "a", Role::Participant).await;
    let job = submit(&two, a).await;
    assert_eq!(s.job(&job.id).await.unwrap().unwrap().owner, a);
    let claims = futures_util::future::join_all(
        [&s.store, &one, &two].map(|store| store.claim_job(&job.id, "gpu", 0, 1)),
    )
    .await;
    assert_eq!(
        claims
            .into_iter()
            .filter(|c| matches!(c, Ok(Some(_))))
            .count(),
        1,
        "claimed by exactly one"
    );
    one.close().await;
    two.close().await;
}

async fn one_gateway_at_a_time_holds_the_dispatchers_lease(s: TestStore) {
    let other = Store::connect(&s.url).await.unwrap();
    let mut lease = s.try_lease().await.unwrap().expect("a free lease");
    lease.held().await.unwrap();
    if !s.shared() {
        // One gateway per SQLite file: its lease is always its own.
        assert!(other.try_lease().await.unwrap().is_some());
        return;
    }
    assert!(
        other.try_lease().await.unwrap().is_none(),
        "held by the first"
    );
    // Claims are fenced by the lease: once a gateway has taken it, it
    // claims only while it holds it.
    let a = user(&s, "a", Role::Participant).await;
    let first = submit(&s, a).await;
    assert!(s.claim_job(&first.id, "gpu", 0, 1).await.unwrap().is_some());
    lease.release().await;
    let second = submit(&s, a).await;
    assert!(
        s.claim_job(&second.id, "gpu", 0, 1)
            .await
            .unwrap()
            .is_none(),
        "a gateway that lost the lease cannot claim"
    );
    assert_eq!(
        s.job(&second.id).await.unwrap().unwrap().state,
        JobState::Pending
    );
    let mut taken = other.try_lease().await.unwrap().expect("released");
    taken.held().await.unwrap();
    assert!(s.try_lease().await.unwrap().is_none());
    assert!(
        other
            .claim_job(&second.id, "gpu", 0, 2)
            .await
            .unwrap()
            .is_some(),
        "the new holder claims"
    );
    // A holder whose connection ends (its process killed) frees it too.
    drop(taken);
    other.close().await;
    let mut again = None;
    for _ in 0..100 {
        again = s.try_lease().await.unwrap();
        if again.is_some() {
            break;
        }
        // The server notices the closed connection on its own time.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the lease of a dropped connection is free");
}

async fn what_one_gateway_broadcasts_the_others_hear_in_order(s: TestStore) {
    let other = Store::connect(&s.url).await.unwrap();
    let Some(mut listener) = other.listen().await.unwrap() else {
        assert!(
            !s.shared(),
            "only a database of one gateway has no listeners"
        );
        s.broadcast(&["nobody hears this".into()], 1).await.unwrap();
        return;
    };
    let long = "x".repeat(20_000);
    let sent: Vec<String> = vec![
        "first".into(),
        "same".into(),
        "same".into(),
        long.clone(),
        "#not a row".into(),
        "last".into(),
    ];
    s.broadcast(&sent[..3], 1).await.unwrap();
    s.broadcast(&sent[3..], 2).await.unwrap();
    let mut heard = Vec::new();
    while heard.len() < sent.len() {
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), listener.recv())
            .await
            .unwrap_or_else(|_| panic!("waited 60 s for message {}; heard {heard:?}", heard.len()));
        heard.push(next.unwrap().expect("no lost link"));
    }
    assert_eq!(heard, sent, "every message, in order, long ones too");
}

async fn a_cancel_request_waits_on_the_running_job(s: TestStore) {
    let a = user(&s, "a", Role::Participant).await;
    let waiting = submit(&s, a).await;
    let running = submit(&s, a).await;
    s.claim_job(&running.id, "gpu", 0, 1)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !s.request_cancel(&waiting.id, 2).await.unwrap(),
        "only a running job"
    );
    assert!(s.cancel_requests().await.unwrap().is_empty());
    assert!(s.request_cancel(&running.id, 2).await.unwrap());
    assert_eq!(s.cancel_requests().await.unwrap(), [running.id]);
    s.finish_job(&running.id, 1, &finish(JobState::Cancelled, 3))
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.cancel_requests().await.unwrap().is_empty(),
        "an ended job is no request"
    );
    assert!(!s.request_cancel(&running.id, 4).await.unwrap());
}
