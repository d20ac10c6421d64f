//! The ComfyUI protocol as ComfyUME speaks it, to every kind of GPU backend.
//!
//! - [`frames`]: ComfyUI's WebSocket frames for one prompt: which belong to
//!   it, which history keeps, which name output files. Pure functions.
//! - [`history`]: a finished prompt's history entry: how it ended, and the
//!   frames a client that lost its socket never saw.
//! - [`client`]: [`ComfyClient`], the HTTP and WebSocket client of one
//!   ComfyUI server.
//! - [`session`]: [`ComfySession`], one prompt's life on a ComfyUI: the
//!   feature-flag handshake, submit, follow, ask, cancel. The gateway's
//!   backend runs and the worker sidecar both drive prompts through it.
//! - [`extension`]: the routes of ComfyUME's backend extension
//!   (`comfyui/comfyume_backend`) on a ComfyUI, and the worker's relays.
//! - [`worker`]: the worker sidecar's protocol (one job = one streamed HTTP
//!   request): the request body, the frame codec and the gateway's client.
//!
//! Nothing here knows the gateway: the worker sidecar builds with this
//! crate alone.

pub mod client;
pub mod extension;
pub mod frames;
pub mod history;
mod secret;
pub mod session;
pub mod worker;

pub use client::{BackendError, BackendSocket, ComfyClient, Fetched};
pub use frames::OutputFile;
pub use history::{HistoryEntry, Outcome};
pub use secret::Secret;
pub use session::{ComfySession, Incoming, JobStatus, Lost};
