//! Real pixels: the §9 example prompt, an upload → LoadImage →
//! ImageInvert → SaveImage round trip, resizing nodes end to end, and the
//! determinism of text-to-image.

use serde_json::json;

use super::*;

async fn view(sim: &Sim, filename: &str, subfolder: &str, kind: &str) -> Vec<u8> {
    let path = format!("/view?filename={filename}&subfolder={subfolder}&type={kind}");
    let response = sim.get(&path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.expect("bytes").to_vec()
}

/// The `images` of a run's `executed` frame for `node`.
fn images_of(frames: &[Frame], node: &str) -> Vec<Value> {
    json_frames(frames)
        .into_iter()
        .find(|f| f["type"] == "executed" && f["data"]["node"] == node)
        .and_then(|f| f["data"]["output"]["images"].as_array().cloned())
        .unwrap_or_else(|| panic!("no executed frame for node {node}"))
}

/// docs/comfyui-api.md §9: the CPU end-to-end prompt.
#[tokio::test]
async fn the_cpu_example_prompt_saves_the_expected_png() {
    let sim = start().await;
    let mut client = sim.client("e2e", false).await;
    let prompt = json!({
        "1": {"class_type": "EmptyImage",  "inputs": {"width": 256, "height": 256, "batch_size": 1, "color": 16_744_448}, "_meta": {"title": "Empty Image"}},
        "2": {"class_type": "ImageBlur",   "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "ImageScale",  "inputs": {"image": ["3", 0], "upscale_method": "bilinear", "width": 128, "height": 128, "crop": "disabled"}},
        "5": {"class_type": "SaveImage",   "inputs": {"images": ["4", 0], "filename_prefix": "cpu_e2e"}},
        "6": {"class_type": "PreviewImage","inputs": {"images": ["1", 0]}}
    });
    let workflow =
        json!({"id": "wf-e2e", "nodes": [{"id": 1, "type": "EmptyImage", "title": "Ünïcode"}]});
    let (status, answer) = sim
        .post("/prompt", json!({"prompt": prompt, "client_id": "e2e", "extra_data": {"extra_pnginfo": {"workflow": workflow}}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["number"], 0);
    assert_eq!(answer["node_errors"], json!({}));
    let id = answer["prompt_id"].as_str().expect("id");
    let frames = client.until_done(id).await;

    assert_eq!(
        images_of(&frames, "5"),
        [json!({"filename": "cpu_e2e_00001_.png", "subfolder": "", "type": "output"})]
    );
    let preview = &images_of(&frames, "6")[0];
    let name = preview["filename"].as_str().expect("name");
    assert!(
        name.starts_with("ComfyUI_temp_") && name.ends_with("_00001_.png"),
        "{name}"
    );
    assert_eq!(preview["type"], "temp");

    let response = sim
        .get("/view?filename=cpu_e2e_00001_.png&type=output")
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["content-disposition"],
        "filename=\"cpu_e2e_00001_.png\""
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let bytes = response.bytes().await.expect("bytes");
    let (w, h, rgb) = decode_png(&bytes);
    assert_eq!((w, h), (128, 128));
    let centre = &rgb[(64 * 128 + 64) * 3..][..3];
    for (got, want) in centre.iter().zip([0u8, 126, 255]) {
        assert!(got.abs_diff(want) <= 2, "centre pixel {centre:?}");
    }
    let chunks = crate::png::text_chunks(&bytes).expect("chunks");
    let keys: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["prompt", "workflow"]);
    assert_eq!(chunks[0].1, crate::png::python_json(&prompt));
    assert!(
        chunks[1].1.contains("\\u00dcn\\u00efcode"),
        "{}",
        chunks[1].1
    );

    let temp = view(&sim, name, "", "temp").await;
    let (w, h, rgb) = decode_png(&temp);
    assert_eq!((w, h, &rgb[..3]), (256, 256, &[255u8, 128, 0][..]));
    sim.shutdown().await;
}

fn rgba_png(width: u32, height: u32, rgba: &[u8]) -> Vec<u8> {
    crate::png::encode_rgba8(width as usize, height as usize, rgba).expect("png")
}

async fn upload(sim: &Sim, name: &str, bytes: Vec<u8>, fields: &[(&str, &str)]) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
    );
    for (k, v) in fields {
        form = form.text((*k).to_owned(), (*v).to_owned());
    }
    let response = reqwest::Client::new()
        .post(sim.url("/api/upload/image"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An uploaded picture goes through LoadImage, ImageInvert and SaveImage
/// with its real pixels; its alpha becomes LoadImage's mask.
#[tokio::test]
async fn upload_load_invert_save_round_trip() {
    let sim = start().await;
    let pixels = [
        10, 20, 30, 255, 200, 100, 50, 0, 0, 0, 0, 128, 255, 255, 255, 255,
    ];
    let (status, body) = upload(
        &sim,
        "pic.png",
        rgba_png(2, 2, &pixels),
        &[("subfolder", "in")],
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"name": "pic.png", "subfolder": "in", "type": "input"})
        )
    );

    let info = sim.get_json("/object_info/LoadImage").await;
    assert_eq!(
        info["LoadImage"]["input"]["required"]["image"][0],
        json!([]),
        "only top-level files are offered"
    );

    let mut client = sim.client("rt", false).await;
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "in/pic.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "round/trip"}},
    });
    let id = sim.submit(prompt, "rt").await;
    let frames = client.until_done(&id).await;
    let saved = &images_of(&frames, "3")[0];
    assert_eq!(
        saved,
        &json!({"filename": "trip_00001_.png", "subfolder": "round", "type": "output"})
    );
    let (w, h, rgb) = decode_png(&view(&sim, "trip_00001_.png", "round", "output").await);
    assert_eq!((w, h), (2, 2));
    // 8-bit values truncate as numpy's `astype(uint8)` does: 1 - 200/255 gives 54.
    assert_eq!(rgb, [245, 235, 225, 54, 155, 205, 255, 255, 255, 0, 0, 0]);
    sim.shutdown().await;
}

/// Scale (keeping aspect), flip, blur and scale-by, through the executor.
#[tokio::test]
async fn resizing_nodes_produce_the_right_sizes() {
    let sim = start().await;
    let mut client = sim.client("sizes", false).await;
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 20, "batch_size": 2, "color": 0x00FF00}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "area", "width": 0, "height": 10, "crop": "disabled"}},
        "3": {"class_type": "ImageFlip", "inputs": {"image": ["2", 0], "flip_method": "y-axis: horizontally"}},
        "4": {"class_type": "ImageBlur", "inputs": {"image": ["3", 0], "blur_radius": 2, "sigma": 0.5}},
        "5": {"class_type": "ImageScaleBy", "inputs": {"image": ["4", 0], "upscale_method": "lanczos", "scale_by": 1.5}},
        "6": {"class_type": "ImageScale", "inputs": {"image": ["5", 0], "upscale_method": "bicubic", "width": 12, "height": 12, "crop": "center"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "big"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "square_%width%x%height%"}},
    });
    let id = sim.submit(prompt, "sizes").await;
    let frames = client.until_done(&id).await;
    let big = images_of(&frames, "7");
    assert_eq!(big.len(), 2, "one file per batch image");
    assert_eq!(big[1]["filename"], "big_00002_.png");
    let (w, h, rgb) = decode_png(&view(&sim, "big_00001_.png", "", "output").await);
    assert_eq!((w, h), (30, 15));
    assert_eq!(&rgb[..3], &[0, 255, 0]);
    let square = images_of(&frames, "8");
    assert_eq!(square[0]["filename"], "square_12x12_00001_.png");
    sim.shutdown().await;
}

async fn render(sim: &Sim, seed: u64, text: &str) -> Vec<u8> {
    let mut client = sim.client("t2i", false).await;
    let id = sim.submit(txt2img(seed, 3, text, "t2i"), "t2i").await;
    let frames = client.until_done(&id).await;
    let saved = images_of(&frames, "6");
    view(
        sim,
        saved[0]["filename"].as_str().expect("name"),
        "",
        "output",
    )
    .await
}

/// Same seed and text: the same picture, byte for byte, even on another
/// simulator; another seed or text: another picture.
#[tokio::test]
async fn text_to_image_is_deterministic() {
    let one = start().await;
    let two = start().await;
    let first = render(&one, 42, "a lighthouse at sunset").await;
    let again = render(&two, 42, "a lighthouse at sunset").await;
    assert_eq!(first, again);
    let (w, h, pixels) = decode_png(&first);
    assert_eq!((w, h), (64, 48));
    let other_seed = decode_png(&render(&one, 43, "a lighthouse at sunset").await).2;
    let other_text = decode_png(&render(&two, 42, "a forest at dawn").await).2;
    assert_ne!(pixels, other_seed);
    assert_ne!(pixels, other_text);
    // Not a flat colour.
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks(3).collect();
    assert!(distinct.len() > 100, "{} colours", distinct.len());
    one.shutdown().await;
    two.shutdown().await;
}
