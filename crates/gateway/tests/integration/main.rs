//! The integration tests: one binary (one link step), each module a topic.
//! Every test runs a real gateway on an ephemeral loopback port, backed by a
//! real simulator on another, and talks to it over HTTP and WebSocket.

mod support;

mod admin;
mod auth;
mod backup;
mod bounds;
mod cli;
mod comfy_routes;
mod crash;
mod differential;
mod execution;
mod export;
mod faults;
mod files;
mod isolation;
mod loadtest;
mod metrics;
mod placement;
mod queue_ahead;
mod replicas;
mod room;
mod stock_comfyui;
mod stock_faults;
mod userdata;
mod workers;
mod workspace;
