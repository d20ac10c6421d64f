//! Jobs: accepting prompts, the per-user queue and history.
pub mod views;
