//! The model lists stock ComfyUI serves (`/models`, `/models/{folder}`,
//! `/experiment/models`, `/experiment/models/{folder}`, `/embeddings`),
//! answered for the simulator's own "models": its checkpoints, and empty
//! folders for the rest, in stock v0.33.0's shapes and order.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::catalogue::CHECKPOINTS;

/// `folder_paths.folder_names_and_paths`, in stock v0.33.0's order.
const FOLDERS: &[&str] = &[
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "datasets",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
    "background_removal",
    "frame_interpolation",
    "geometry_estimation",
    "optical_flow",
    "detection",
];

/// `folder_paths.supported_pt_extensions`, sorted as `/experiment/models`
/// lists them.
const EXTENSIONS: &[&str] = &[
    ".bin",
    ".ckpt",
    ".pkl",
    ".pt",
    ".pt2",
    ".pth",
    ".safetensors",
    ".sft",
];

/// What a checkpoint "weighs" and when it was "made": fixed, so every
/// answer is the same.
const CHECKPOINT_SIZE: u64 = 2_132_625_894;
const CHECKPOINT_TIME: f64 = 1_700_000_000.0;

fn files_of(folder: &str) -> Option<&'static [&'static str]> {
    match folder {
        "checkpoints" => Some(CHECKPOINTS),
        f if FOLDERS.contains(&f) => Some(&[]),
        _ => None,
    }
}

pub(crate) async fn folders() -> Json<Value> {
    Json(json!(FOLDERS))
}

pub(crate) async fn folder(Path(folder): Path<String>) -> Response {
    match files_of(&folder) {
        Some(files) => Json(json!(files)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn embeddings() -> Json<Value> {
    Json(json!([]))
}

pub(crate) async fn experiment_folders() -> Json<Value> {
    Json(Value::Array(
        FOLDERS
            .iter()
            .filter(|f| !matches!(**f, "configs" | "custom_nodes"))
            .map(|f| json!({"name": f, "folders": [format!("/sim/models/{f}")], "extensions": EXTENSIONS}))
            .collect(),
    ))
}

pub(crate) async fn experiment_folder(Path(folder): Path<String>) -> Response {
    let Some(files) = files_of(&folder) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let listed: Vec<Value> = files
        .iter()
        .map(|name| {
            json!({"name": name, "pathIndex": 0, "modified": CHECKPOINT_TIME,
                   "created": CHECKPOINT_TIME, "size": CHECKPOINT_SIZE})
        })
        .collect();
    Json(Value::Array(listed)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_its_checkpoints_in_stocks_shapes() {
        assert_eq!(folders().await.0[0], "checkpoints");
        let checkpoints = folder(Path("checkpoints".into())).await;
        assert_eq!(checkpoints.status(), StatusCode::OK);
        assert_eq!(
            folder(Path("nowhere".into())).await.status(),
            StatusCode::NOT_FOUND
        );
        let listed = experiment_folders().await.0;
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["name"] != "configs")
        );
        assert_eq!(
            experiment_folder(Path("loras".into())).await.status(),
            StatusCode::OK
        );
    }
}
