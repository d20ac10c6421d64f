//! ComfyUME: one gateway that serves every workshop participant their own
//! real ComfyUI, over a fair shared queue of GPU backends.
//!
//! The crate map, outside in:
//! - [`cli`]: the `comfyume` command line; `main.rs` only calls it.
//! - [`config`]: the TOML + environment configuration.
//! - [`server`]: `run(listener, shutdown)`, the entry point of `serve` and of the tests.
//! - `http`: every route (the only module that knows axum).
//! - [`auth`]: passwords, sessions, login rate limits, credential sheets.
//! - [`workspace`]: each user's files (userdata, settings, input/output/temp).
//! - [`catalogue`]: the node catalogue gathered from the backends.
//! - [`backend`]: clients for ComfyUI-protocol GPU backends.
//! - [`sim`]: the built-in GPU simulator (`comfyume sim-backend`).
//! - [`store`]: the database (the only place with SQL).
//! - [`domain`]: parsed types shared by all of the above.

pub mod domain;
pub mod workspace;
