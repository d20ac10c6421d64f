//! The file pickers of ComfyUI's node catalogue (`/object_info`): inputs
//! whose spec carries `image_upload: true` choose among the files of the
//! input folder, which in a workshop are each participant's own.

use serde_json::Value;

/// Whether input `input` of a NodeInfo is an image-upload picker.
pub fn is_image_picker(info: &Value, input: &str) -> bool {
    ["required", "optional"].iter().any(|section| {
        info.get("input")
            .and_then(|i| i.get(*section))
            .and_then(|s| s.get(input))
            .is_some_and(spec_is_image_picker)
    })
}

fn spec_is_image_picker(spec: &Value) -> bool {
    spec.get(1)
        .and_then(|o| o.get("image_upload"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// One node's info with the user's input images substituted into every
/// image-upload picker. Stock ComfyUI marks those inputs with
/// `image_upload: true`; the choices are either the first element of the
/// spec (`[[choices…], {…}]`) or, in the newer form, `["COMBO", {"options": […]}]`.
pub fn personalise(info: &Value, input_images: &[String]) -> Value {
    let mut info = info.clone();
    for section in ["required", "optional"] {
        let Some(inputs) = info
            .pointer_mut(&format!("/input/{section}"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for spec in inputs.values_mut() {
            if !spec_is_image_picker(spec) {
                continue;
            }
            let Some(parts) = spec.as_array_mut() else {
                continue;
            };
            let choices = Value::Array(input_images.iter().cloned().map(Value::String).collect());
            if parts.first().is_some_and(Value::is_array) {
                parts[0] = choices;
            } else if let Some(opts) = parts.get_mut(1).and_then(Value::as_object_mut) {
                if opts.contains_key("options") {
                    opts.insert("options".into(), choices);
                }
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitutes_both_combo_forms() {
        let old = json!({"input": {"required": {"image": [["other_users.png"], {"image_upload": true}]}}});
        let out = personalise(&old, &["mine.png".into()]);
        assert_eq!(out["input"]["required"]["image"][0], json!(["mine.png"]));

        let new = json!({"input": {"required": {"image": ["COMBO", {"image_upload": true, "options": ["x.png"]}]}}});
        let out = personalise(&new, &[]);
        assert_eq!(out["input"]["required"]["image"][1]["options"], json!([]));
    }

    #[test]
    fn leaves_other_combos_alone() {
        let info = json!({"input": {"required": {"ckpt_name": [["a.safetensors"], {}]}}});
        assert_eq!(personalise(&info, &["mine.png".into()]), info);
    }

    #[test]
    fn finds_image_pickers() {
        let info = json!({"input": {"required": {"image": [["a.png"], {"image_upload": true}], "ckpt_name": [["a.safetensors"], {}]}}});
        assert!(is_image_picker(&info, "image"));
        assert!(!is_image_picker(&info, "ckpt_name"));
        assert!(!is_image_picker(&info, "missing"));
    }
}
