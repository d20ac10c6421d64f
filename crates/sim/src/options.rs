//! The simulator's test knobs: how fast it "samples", which node fails,
//! when it drops its WebSockets, how slowly it starts, and where it keeps
//! its files.
//!
//! [`SimOptions`] derives `clap::Args`, so the command line can flatten it
//! into `comfyume sim-backend` (`--step-ms`, `--fail-node`,
//! `--drop-after-steps`, `--startup-delay-ms`, `--files-dir`); tests build it
//! with struct-update syntax over [`Default`].

use std::path::PathBuf;
use std::time::Duration;

/// How a simulator behaves. `Default` is a quick, well-behaved backend.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Time each KSampler step takes (milliseconds).
    #[arg(long = "step-ms", value_name = "MS", default_value = "50", value_parser = millis)]
    pub step_time: Duration,

    /// Make every node of this class_type (e.g. KSampler) raise a
    /// RuntimeError when it executes, as a node failing at run time does.
    #[arg(long = "fail-node", value_name = "CLASS_TYPE")]
    pub fail_node: Option<String>,

    /// Close every WebSocket once a prompt has sent this many `progress`
    /// steps (once per prompt); the prompt itself keeps running, so a
    /// client can reconnect and pick it up, as after a network drop.
    #[arg(long = "drop-after-steps", value_name = "N")]
    pub drop_after_steps: Option<u32>,

    /// Answer 503 to every request (WebSocket upgrades included) for this
    /// long after start (milliseconds), like a backend still loading.
    #[arg(long = "startup-delay-ms", value_name = "MS", default_value = "0", value_parser = millis)]
    pub startup_delay: Duration,

    /// Folder for the input/, output/ and temp/ directories. Default: a
    /// fresh temporary folder, removed when the simulator stops.
    #[arg(long = "files-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            step_time: Duration::from_millis(50),
            fail_node: None,
            drop_after_steps: None,
            startup_delay: Duration::ZERO,
            data_dir: None,
        }
    }
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected milliseconds as a whole number: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimOptions,
    }

    #[test]
    fn flags_parse_and_defaults_agree() {
        Cli::command().debug_assert();
        let parsed = Cli::try_parse_from(["sim"]).expect("no flags");
        assert_eq!(parsed.sim, SimOptions::default());

        let parsed = Cli::try_parse_from([
            "sim",
            "--step-ms",
            "5",
            "--fail-node",
            "KSampler",
            "--drop-after-steps",
            "3",
            "--startup-delay-ms",
            "250",
            "--files-dir",
            "/tmp/x",
        ])
        .expect("all flags");
        assert_eq!(
            parsed.sim,
            SimOptions {
                step_time: Duration::from_millis(5),
                fail_node: Some("KSampler".into()),
                drop_after_steps: Some(3),
                startup_delay: Duration::from_millis(250),
                data_dir: Some("/tmp/x".into()),
            }
        );
        assert!(Cli::try_parse_from(["sim", "--step-ms", "fast"]).is_err());
    }
}
