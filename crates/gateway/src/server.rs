//! `run(listener, state, shutdown)`: serves the gateway until `shutdown`
//! resolves. `comfyume serve` and the integration tests both call it.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::app::AppState;

/// Serves HTTP and runs the background work until `shutdown` resolves:
/// first the recovery of jobs a previous run left (re-attached on their
/// backends, or queued again), then the dispatcher and the chores. Every
/// task started here, and every job task the dispatcher started, has ended
/// when this returns.
///
/// A gateway sharing its database with others (`crate::cluster`) recovers
/// and dispatches only while it holds the dispatcher's lease, and relays
/// what changes here to the others.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if state.cluster.is_none() {
        state
            .dispatcher
            .recover()
            .await
            .map_err(|e| std::io::Error::other(format!("cannot recover the job queue: {e}")))?;
    }
    let metrics_listener = match state.config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on metrics_listen {addr}: {e}"),
            )
        })?),
        None => None,
    };
    let mut background = JoinSet::new();
    background.spawn(housekeeping(state.clone()));
    let leader = match &state.cluster {
        None => {
            background.spawn(state.dispatcher.clone().run());
            None
        }
        Some(cluster) => {
            if let Some(unsent) = cluster.take_unsent() {
                background.spawn(crate::cluster::publish(
                    state.store.clone(),
                    cluster.replica.clone(),
                    cluster.outbox.clone(),
                    unsent,
                ));
            }
            background.spawn(crate::cluster::listen(
                state.store.clone(),
                cluster.replica.clone(),
                crate::cluster::Here {
                    hub: state.hub.clone(),
                    dispatcher: state.dispatcher.clone(),
                    logins: state.accounts.limiter().clone(),
                },
            ));
            background.spawn(crate::cluster::share_connected(
                state.hub.clone(),
                cluster.replica.clone(),
                cluster.outbox.clone(),
            ));
            background.spawn(crate::cluster::share_live_view(
                state.dispatcher.clone(),
                cluster.outbox.clone(),
            ));
            // Owned here, not by `background`: on the way out its runs
            // stop before its lease goes (see `cluster::lead`).
            Some(tokio::spawn(crate::cluster::lead(
                state.store.clone(),
                state.dispatcher.clone(),
                state.closing.subscribe(),
            )))
        }
    };
    background.spawn(room_news(state.clone()));
    if let Some(backups) = state.backups.clone() {
        background.spawn(scheduled_backups(backups));
    }
    // Closes with the main address (which flips `closing`), and is waited
    // for after it.
    let metrics = match metrics_listener {
        Some(listener) => {
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
            Some(tokio::spawn(crate::http::serve_metrics(
                listener,
                state.clone(),
            )))
        }
        None => None,
    };
    let served = serve_http(listener, state.clone(), shutdown).await;
    if let Some(leader) = leader {
        // `closing` has turned true: it stops dispatching and gives the
        // lease back.
        state.closing.send_replace(true);
        if let Err(e) = leader.await {
            tracing::error!(error = %e, "the dispatcher's lease task failed");
        }
    }
    if let Some(metrics) = metrics {
        match metrics.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the metrics address failed"),
            Err(e) => tracing::error!(error = %e, "the metrics address's task failed"),
        }
    }
    background.shutdown().await;
    state.dispatcher.shutdown().await;
    served
}

/// Serves HTTP only. Tests that drive the dispatcher step by step
/// (`Dispatcher::recover`, `Dispatcher::run_once`) use this instead of
/// [`run`], and shut the dispatcher down themselves.
pub async fn serve_http(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http::serve(listener, state, shutdown).await
}

/// Periodic chores, each one a `run_once` the tests can call directly.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        run_housekeeping_once(&state).await;
    }
}

/// Tells participants where they stand whenever the queue changes
/// ([`crate::room::Room::publish_once`]), and samples the queue for the
/// dashboard's charts.
async fn room_news(state: AppState) {
    let mut changes = state.dispatcher.changes();
    let mut sample = tokio::time::interval(crate::room::dashboard::SAMPLE_EVERY);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = sample.tick() => {
                // The dashboard's charts: the queue every few seconds.
                if let Err(e) = state.room.sample_once().await {
                    tracing::warn!(error = %e, "could not sample the queue for the dashboard");
                }
                continue;
            }
        }
        // Changes come in bursts (a job ends, the next one starts, its
        // owner's status goes out): one look after the burst, at most a
        // few a second however busy the room is.
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Where everyone stands is the dispatching gateway's to say (it
        // knows what runs); the other gateways relay what it sends.
        if !state.dispatcher.is_leading() {
            continue;
        }
        if let Err(e) = state.room.publish_once().await {
            tracing::warn!(error = %e, "could not tell participants where they stand in the queue");
        }
    }
}

/// Backs up on the configured schedule ([`crate::backup::Backups::run_once`]),
/// and when an instructor asks; the first scheduled one waits a minute
/// after the start, so a server restarted in a loop does not back up in a
/// loop. Failures are recorded (and
/// logged) by `run_once`, and tried again sooner than the period.
async fn scheduled_backups(backups: std::sync::Arc<crate::backup::Backups>) {
    loop {
        // Or sooner, when an instructor asks for one.
        tokio::select! {
            () = tokio::time::sleep(backups.due_in(Duration::from_secs(60))) => {}
            () = backups.asked() => {}
        }
        // The outcome is in the status the console and /metrics show.
        let _ = backups.run_once().await;
    }
}

/// Removes expired sessions.
pub async fn run_housekeeping_once(state: &AppState) {
    match state.accounts.sweep_expired_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "expired sessions removed"),
        Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
    }
}
