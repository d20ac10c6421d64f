//! What an operator's tools ask the gateway: `/ready` for a load balancer
//! or an orchestrator, `/metrics` for Prometheus. (`/health` only says the
//! process answers.)

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::admin::Admin;
use crate::metrics::{BackendGauge, Gauges, ProcessFigures};

/// `/ready`: whether this gateway can serve a room: its database answers
/// and it has a node catalogue (fetched from a backend, or the last one
/// saved). 200 or 503, with each check's word. The disk's state is said
/// too, without deciding readiness: a gateway short of disk still serves
/// logins, downloads and the instructor's console (where the space is
/// freed), and refuses new files itself with a reason.
pub async fn ready(State(state): State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => Ok("ok".to_string()),
        Err(e) => Err(format!("unreachable: {e}")),
    };
    let catalogue = match state.catalogue.snapshot().await {
        Ok(snapshot) => Ok(format!("{} nodes", snapshot.nodes.len())),
        Err(e) => Err(e.to_string()),
    };
    let ready = database.is_ok() && catalogue.is_ok();
    let word = |check: Result<String, String>| check.unwrap_or_else(|e| e);
    let disk = match state.disk.state() {
        Ok(d) if d.low() => format!(
            "low: {} free, below the {} kept free; new files are refused",
            crate::disk::Bytes(d.free),
            crate::disk::Bytes(d.min_free)
        ),
        Ok(d) => format!("{} free", crate::disk::Bytes(d.free)),
        Err(e) => e.to_string(),
    };
    let body = serde_json::json!({
        "ready": ready,
        "database": word(database),
        "catalogue": word(catalogue),
        "disk": disk,
        // Whether this gateway is the one dispatching (several may share
        // the database; any of them serves requests).
        "dispatching": state.dispatcher.is_leading(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `/metrics` on the main address: an instructor's session or the admin
/// token (participants get 403: the room's figures are not theirs).
pub async fn metrics(_: Admin, state: State<AppState>) -> Response {
    exposition(state).await
}

/// `/metrics` as the separate `metrics_listen` address serves it, where
/// reaching the address is the permission.
pub async fn exposition(State(state): State<AppState>) -> Response {
    let (pending, running) = match state.store.queue_counts().await {
        Ok(counts) => counts,
        Err(e) => {
            // A scrape that cannot see the queue fails visibly, rather
            // than reporting an empty one.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot count the queue: {e}\n"),
            )
                .into_response();
        }
    };
    let backends = state
        .dispatcher
        .backends()
        .into_iter()
        .map(|b| BackendGauge {
            name: b.name,
            state: b.state.as_str().to_string(),
            slots: b.slots,
            running: b.running,
        })
        .collect();
    let now = Gauges {
        pending,
        running,
        backends,
        sockets: state.hub.connection_count(),
        dispatching: state.dispatcher.is_leading(),
        relay_dropped: state.cluster.as_ref().map(|c| c.outbox.dropped()),
        process: ProcessFigures::read(),
        disk: state.disk.state().map_err(|e| e.to_string()),
        backup: state.backups.as_ref().map(|b| b.status()),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&now),
    )
        .into_response()
}
