//! Uploads, `/view` and `/internal/files`: ComfyUI's naming rules
//! (same-content reuse, `name (1).ext`), its 400/403/404 answers, safe
//! content types, and `/view`'s image conversions.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::support::TestApp;

pub fn image_form(name: &str, bytes: &[u8]) -> Form {
    Form::new().part(
        "image",
        Part::bytes(bytes.to_vec())
            .file_name(name.to_string())
            .mime_str("image/png")
            .unwrap(),
    )
}

pub async fn upload(app: &TestApp, c: &reqwest::Client, form: Form) -> reqwest::Response {
    c.post(app.at("/api/upload/image"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reuse_identical_files_and_rename_different_ones() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;

    let r = upload(&app, &c, image_form("g.png", b"one")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"name": "g.png", "subfolder": "", "type": "input"})
    );
    let again: Value = upload(&app, &c, image_form("g.png", b"one"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["name"], "g.png");
    let other: Value = upload(&app, &c, image_form("g.png", b"two"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["name"], "g (1).png");
    let third: Value = upload(&app, &c, image_form("g.png", b"three"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["name"], "g (2).png");

    let form = image_form("g.png", b"pasted")
        .text("subfolder", "pasted")
        .text("overwrite", "true");
    let pasted: Value = upload(&app, &c, form).await.json().await.unwrap();
    assert_eq!(
        pasted,
        json!({"name": "g.png", "subfolder": "pasted", "type": "input"})
    );
    let form = image_form("g.png", b"pasted-2")
        .text("subfolder", "pasted")
        .text("overwrite", "1");
    let pasted: Value = upload(&app, &c, form).await.json().await.unwrap();
    assert_eq!(pasted["name"], "g.png", "overwrite keeps the name");
    assert_eq!(
        app.user_file("alice", "input/pasted/g.png").await.unwrap(),
        b"pasted-2"
    );

    // The mask editor's route takes the same form.
    let r = c
        .post(app.at("/upload/mask"))
        .multipart(image_form("m.png", b"mask"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"name": "m.png", "subfolder": "", "type": "input"})
    );

    let listed: Value = c
        .get(app.at("/internal/files/input"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"g (1).png [input]") && listed.contains(&"m.png [input]"),
        "{listed:?}"
    );
    let r = c
        .get(app.at("/internal/files/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The user's uploads are LoadImage's choices, and nobody else's are.
    let info: Value = c
        .get(app.at("/api/object_info/LoadImage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let choices = info["LoadImage"]["input"]["required"]["image"][0]
        .as_array()
        .unwrap();
    assert!(
        choices.contains(&json!("g.png")) && choices.contains(&json!("g (1).png")),
        "{choices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors() {
    let app = TestApp::spawn_with(|c| c.limits.max_upload_bytes = 1024).await;
    let c = app.user("alice").await;
    let r = c
        .post(app.at("/api/upload/image"))
        .multipart(Form::new().text("type", "input"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no image part");
    let r = upload(&app, &c, image_form("g.png", b"x").text("type", "bogus")).await;
    assert_eq!(r.status(), 400);
    let r = upload(&app, &c, image_form("../../evil.png", b"x")).await;
    assert!(r.status() == 400 || r.status() == 403, "{}", r.status());
    let r = upload(
        &app,
        &c,
        image_form("g.png", b"x").text("subfolder", "../../other"),
    )
    .await;
    assert!(r.status() == 400 || r.status() == 403, "{}", r.status());
    let r = upload(&app, &c, image_form("big.png", &vec![7u8; 4096])).await;
    assert_eq!(r.status(), 413);
    let text = r.text().await.unwrap();
    assert!(text.contains("too large"), "{text}");
    assert!(
        !app.data_dir.join("users/evil.png").exists() && !app.data_dir.join("evil.png").exists()
    );
    // Names longer than a file system takes: a clear 400, not a 500.
    let long = format!("{}.png", "n".repeat(300));
    let r = upload(&app, &c, image_form(&long, b"x")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "File name too long");
    let deep = vec!["folder"; 800].join("/");
    let r = upload(&app, &c, image_form("g.png", b"x").text("subfolder", deep)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Subfolder too long");
    let r = upload(&app, &c, image_form("ok.png", b"x")).await;
    assert_eq!(r.status(), 200, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_serves_the_users_files_like_comfyui() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    upload(&app, &c, image_form("g.png", b"\x89PNG-bytes")).await;
    upload(
        &app,
        &c,
        image_form("s.png", b"sub").text("subfolder", "pasted"),
    )
    .await;

    let r = c
        .get(app.at("/api/view?filename=g.png&type=input&subfolder=&rand=0.5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["content-disposition"], "filename=\"g.png\"");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\x89PNG-bytes");

    let r = c
        .get(app.at("/view?filename=g.png%20%5Binput%5D"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an annotated name picks the folder");
    let r = c
        .get(app.at("/api/view?filename=s.png&type=input&subfolder=pasted"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"sub");

    assert_eq!(
        c.get(app.at("/api/view?filename=g.png"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "default type is output"
    );
    assert_eq!(
        c.get(app.at("/api/view?filename=nope.png&type=input"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(app.at("/api/view")).send().await.unwrap().status(),
        404,
        "no filename"
    );
    assert_eq!(
        c.get(app.at("/api/view?filename=..%2Fg.png&type=input"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(app.at("/api/view?filename=%2Fetc%2Fpasswd"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(app.at("/api/view?filename=g.png&type=secret"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(app.at("/api/view?filename=passwd&type=input&subfolder=..%2F..%2F..%2F..%2Fetc"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_types_are_served_as_attachments() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    upload(&app, &c, image_form("x.html", b"<script>alert(1)</script>")).await;
    upload(
        &app,
        &c,
        image_form("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
    )
    .await;
    let r = c
        .get(app.at("/api/view?filename=x.html&type=input"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let r = c
        .get(app.at("/api/view?filename=x.svg&type=input"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let r = c
        .get(app.at("/api/view?filename=x.svg&type=input"))
        .header("sec-fetch-dest", "image")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "image/svg+xml",
        "an <img> may show an SVG"
    );
}

/// One participant cannot fill the room's disk: past their quota a save is
/// refused with 507 and a reason; freeing space lets them save again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_files_are_bounded_by_a_quota() {
    let app = TestApp::spawn_with(|c| c.limits.max_user_disk_bytes = 10_000).await;
    let c = app.user("alice").await;
    let r = upload(&app, &c, image_form("a.png", &[1u8; 4000])).await;
    assert_eq!(r.status(), 200);
    let save = |name: &str, len: usize| {
        c.post(app.at(&format!("/api/userdata/workflows%2F{name}")))
            .body(vec![b'w'; len])
            .send()
    };
    assert_eq!(save("one.json", 4000).await.unwrap().status(), 200);
    let r = upload(&app, &c, image_form("b.png", &[2u8; 4000])).await;
    assert_eq!(r.status(), 507);
    let text = r.text().await.unwrap();
    assert!(text.contains("ask your instructor to make room"), "{text}");
    assert_eq!(save("two.json", 4000).await.unwrap().status(), 507);
    let r = upload(
        &app,
        &c,
        image_form("t.png", &[3u8; 4000]).text("type", "temp"),
    )
    .await;
    assert_eq!(
        r.status(),
        507,
        "the temp folder is no way around the quota"
    );
    // Overwriting a file counts only the difference.
    let r = c
        .post(app.at("/api/userdata/workflows%2Fone.json?overwrite=true"))
        .body(vec![b'v'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(app.at("/api/userdata/workflows%2Fone.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        save("two.json", 4000).await.unwrap().status(),
        200,
        "room again"
    );
    // Another participant has a quota of their own.
    let b = app.user("bob").await;
    let r = upload(&app, &b, image_form("a.png", &[1u8; 4000])).await;
    assert_eq!(r.status(), 200);
}

/// `/view` with `channel` or `preview` converts the image, and a file
/// that is not one gets a 400 saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_converts_images_and_refuses_what_is_not_one() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        4,
        2,
        image::Rgba([10, 20, 30, 77]),
    ))
    .write_to(&mut png, image::ImageFormat::Png)
    .unwrap();
    assert_eq!(
        upload(&app, &c, image_form("layer.png", png.get_ref()))
            .await
            .status(),
        200
    );
    let alpha = c
        .get(app.at("/api/view?filename=layer.png&type=input&channel=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(alpha.status(), 200);
    assert_eq!(alpha.headers()["content-type"], "image/png");
    assert_eq!(
        alpha.headers()["content-disposition"],
        "filename=\"layer.png\""
    );
    let mask = image::load_from_memory(&alpha.bytes().await.unwrap())
        .unwrap()
        .to_rgba8();
    assert_eq!(mask.get_pixel(3, 1).0, [0, 0, 0, 77]);

    app.put_user_file("alice", "input/notes.png", b"not a picture")
        .await;
    let refused = c
        .get(app.at("/api/view?filename=notes.png&type=input&preview=webp;50"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not an image this server can convert"),
        "{body}"
    );
}
