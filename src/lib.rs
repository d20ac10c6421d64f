//! ComfyUME: one gateway that serves every workshop participant their own
//! real ComfyUI, over a fair shared queue of GPU backends.
//!
//! The crate map, outside in:
//! - [`cli`]: the `comfyume` command line; `main.rs` only calls it.
//! - [`config`]: the TOML + environment configuration.
//! - [`server`]: `run(listener, state, shutdown)`, the entry point of `serve` and of the tests.
//! - [`app`]: `AppState`, the services a request can reach, built once.
//! - `http`: every route of the gateway (with [`sim`] and [`worker`], the servers of
//!   their own, the only code that knows axum).
//! - [`auth`]: passwords, sessions, login rate limits, credential sheets.
//! - [`workspace`]: each user's files (userdata, settings, input/output/temp).
//! - [`templates`]: the workshop's workflow templates.
//! - [`frontend`]: the ComfyUI web frontend on disk.
//! - [`catalogue`]: the node catalogue gathered from the backends.
//! - [`backend`]: clients for ComfyUI-protocol GPU backends.
//! - [`hub`]: live browser sockets, by user.
//! - [`sim`]: the built-in GPU simulator (`comfyume sim-backend`), a server of its own.
//! - [`worker`]: `comfyume worker`, the sidecar for serverless GPUs, and its client.
//! - [`jobs`]: accepting prompts; each user's queue and history.
//! - [`prompt`]: checking a prompt against the node catalogue, as ComfyUI does.
//! - [`scheduler`]: the fair queue's pure decisions.
//! - [`dispatch`]: running jobs on backend slots and relaying their events.
//! - [`store`]: the database (the only place with SQL).
//! - [`domain`]: parsed types shared by all of the above.

pub mod app;
pub mod auth;
pub mod backend;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod frontend;
mod http;
pub mod hub;
pub mod jobs;
pub mod prompt;
pub mod scheduler;
pub mod server;
pub mod sim;
pub mod store;
mod telemetry;
pub mod templates;
pub mod worker;
pub mod workspace;
