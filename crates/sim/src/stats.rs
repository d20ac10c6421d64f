//! What the simulator says about itself: `/system_stats` and the server
//! feature flags (`/features` and the `feature_flags` WebSocket reply).
//!
//! Both keep the key sets of stock ComfyUI v0.33.0, so clients that parse
//! them keep working, but every value is true of the simulator: it names
//! itself, reports the host's real RAM, and claims no GPU, Python or feature
//! it does not have.

use serde_json::{Value, json};

/// Stock's default `--max-upload-size` (100 MiB), in bytes.
const MAX_UPLOAD_SIZE: u64 = 100 * 1024 * 1024;

/// Stands in for versions of software the simulator does not contain.
const NOT_APPLICABLE: &str = "n/a";

/// The server feature flags.
pub(super) fn features() -> Value {
    json!({
        // KSampler previews go out as BIN4 (with metadata) to clients that ask.
        "supports_preview_metadata": true,
        // No model-type tags and no node replacements are served, and no
        // ComfyUI-Manager is installed.
        "supports_model_type_tags": false,
        "max_upload_size": MAX_UPLOAD_SIZE,
        "extension": {"manager": {"supports_v4": false}},
        "node_replacements": false,
        "assets": false,
    })
}

/// The `/system_stats` body.
pub(super) async fn system_stats(argv: &[String]) -> Value {
    // A host without /proc/meminfo still gets a well-formed answer.
    let (ram_total, ram_free) = match tokio::fs::read_to_string("/proc/meminfo").await {
        Ok(text) => parse_meminfo(&text).unwrap_or((0, 0)),
        Err(_) => (0, 0),
    };
    json!({
        "system": {
            "os": python_platform(),
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": concat!("comfyume-sim ", env!("CARGO_PKG_VERSION")),
            "required_frontend_version": NOT_APPLICABLE,
            "installed_templates_version": NOT_APPLICABLE,
            "required_templates_version": NOT_APPLICABLE,
            "comfy_package_versions": [],
            "python_version": NOT_APPLICABLE,
            "pytorch_version": NOT_APPLICABLE,
            "embedded_python": false,
            "deploy_environment": NOT_APPLICABLE,
            "argv": argv,
        },
        "devices": [{
            "name": "sim",
            "type": "cpu",
            "index": null,
            "vram_total": 0,
            "vram_free": 0,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }],
    })
}

/// The OS as Python's `sys.platform` names it, which is what stock reports.
fn python_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

/// `(MemTotal, MemAvailable)` in bytes; stock's `ram_free` is psutil's
/// `available`, which is `MemAvailable` on Linux.
fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_trace() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/comfyui-0.33.0/trace.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Same keys, same nesting and same JSON kinds (string, number, ...) as
    /// the stock recording.
    fn same_shape(ours: &Value, stock: &Value, at: &str) {
        match (ours, stock) {
            (Value::Object(a), Value::Object(b)) => {
                let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
                assert_eq!(ka, kb, "keys at {at}");
                for (k, v) in a {
                    same_shape(v, &b[k], &format!("{at}.{k}"));
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if let (Some(x), Some(y)) = (a.first(), b.first()) {
                    same_shape(x, y, &format!("{at}[0]"));
                }
            }
            (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Null, Value::Null) => {}
            (a, b) => panic!("kind at {at}: ours {a} / stock {b}"),
        }
    }

    #[test]
    fn features_have_the_stock_shape() {
        same_shape(&features(), &fixture_trace()["features"][1], "features");
    }

    #[tokio::test]
    async fn system_stats_have_the_stock_shape_and_say_sim() {
        let argv = vec!["comfyume".to_owned(), "sim-backend".to_owned()];
        let ours = system_stats(&argv).await;
        same_shape(&ours, &fixture_trace()["system_stats"], "system_stats");
        assert_eq!(
            ours["system"]["comfyui_version"],
            format!("comfyume-sim {}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(ours["system"]["argv"], json!(argv));
        assert_eq!(ours["devices"][0]["name"], "sim");
        if cfg!(target_os = "linux") {
            let total = ours["system"]["ram_total"].as_u64().unwrap_or(0);
            let free = ours["system"]["ram_free"].as_u64().unwrap_or(u64::MAX);
            assert!(total > 0 && free <= total, "ram {total} / free {free}");
        }
    }

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24683656 kB\nMemFree:         1000 kB\n\
                    MemAvailable:   22489256 kB\nBuffers:  1 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((24_683_656 * 1024, 22_489_256 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n"), None);
    }
}
