//! ComfyUME's gateway: one server that gives every workshop participant
//! their own real ComfyUI, over a fair shared queue of GPU backends.
//!
//! The workspace's crates are the architecture (the README draws the
//! graph): `comfyume-domain` (parsed types), `comfyume-protocol` (ComfyUI's
//! wire protocol and the client session against a ComfyUI, and the worker
//! sidecar's protocol), `comfyume-prompt` (ComfyUI's prompt validation),
//! `comfyume-scheduler` (the fair queue's pure decisions), `comfyume-sim`
//! (the GPU simulator) and `comfyume-worker` (the GPU sidecar). This crate
//! is the gateway and the `comfyume` command line, outside in:
//!
//! - [`cli`]: the `comfyume` command line; `main.rs` only calls it.
//! - [`allocator`]: the memory allocator, and when it hands memory back.
//! - [`config`]: the TOML + environment configuration.
//! - [`server`]: `run(listener, state, shutdown)`, the entry point of `serve` and of the tests.
//! - [`app`]: `AppState`, the services a request can reach, built once.
//! - `http`: every route of the gateway (the only module that knows axum).
//! - [`auth`]: passwords, sessions, login rate limits, credential sheets.
//! - [`workspace`]: each user's files (userdata, settings, input/output/temp), on disk or in a bucket.
//! - [`templates`]: the workshop's workflow templates.
//! - [`frontend`]: the ComfyUI web frontend on disk.
//! - [`catalogue`]: the node catalogue gathered from the backends.
//! - [`backend_assets`]: what else the backends serve (custom node packs'
//!   frontend files, translations, example workflows, model lists), merged.
//! - [`backend`]: the configured GPU backends, and the one way a job runs on any of them.
//! - [`hub`]: live browser sockets, by user.
//! - [`jobs`]: accepting prompts; each user's queue and history.
//! - [`dispatch`]: running jobs on backend slots and relaying their events.
//! - [`room`]: the instructor's actions on the room, each audited.
//! - [`buckets`]: opening S3-compatible buckets (backups, participants' files).
//! - [`store`]: the database (the only place with SQL).
//! - [`doctor`]: `comfyume doctor`, the pre-workshop checks.
//! - [`metrics`]: the counters and histograms behind `/metrics`.
//! - [`markup`]: escaping text into the HTML and SVG the gateway writes.
//! - [`loadtest`]: `comfyume loadtest`, simulated participants against a running gateway.

pub mod allocator;
pub mod app;
pub mod auth;
pub mod backend;
pub mod backend_assets;
pub mod backup;
pub mod buckets;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod dispatch;
pub mod doctor;
pub mod frontend;
mod http;
pub mod hub;
pub mod jobs;
pub mod loadtest;
pub mod markup;
pub mod metrics;
pub mod room;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod workspace;

#[cfg(feature = "fuzzing")]
pub use http::fuzzing;
