//! The bodies of ComfyUME's backend extension (`comfyui/comfyume_backend`;
//! routes in `comfyume_protocol::extension`): the signatures of nodes'
//! validation functions, and running them for a prompt's nodes (see
//! `comfyume_prompt::python`), read into the validator's types.

use comfyume_prompt::{Signature, Signatures, ValidatorCall, Verdict};
use serde_json::{Value, json};

/// Reads `GET /comfyume/v1/validators`: `{"classes": {class: null |
/// {"args": [...], "varkw": bool}}}`.
pub fn signatures(body: &Value) -> Result<Signatures, String> {
    let classes = body
        .get("classes")
        .and_then(Value::as_object)
        .ok_or("no \"classes\" object")?;
    let mut read = Vec::with_capacity(classes.len());
    for (class, described) in classes {
        let signature = match described {
            Value::Null => None,
            Value::Object(s) => {
                let args = s
                    .get("args")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| format!("{class}: \"args\" is not a list of names"))?;
                let varkw = s
                    .get("varkw")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| format!("{class}: \"varkw\" is not a boolean"))?;
                Some(Signature { args, varkw })
            }
            other => return Err(format!("{class}: {other} is not a signature")),
        };
        read.push((class.clone(), signature));
    }
    let mut signatures = Signatures::default();
    signatures.merge(read);
    Ok(signatures)
}

/// The body of `POST /comfyume/v1/validate_inputs`.
pub fn request(calls: &[ValidatorCall]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "node_id": c.node_id,
                "class_type": c.class_type,
                "inputs": c.inputs,
                "received_types": c.received_types,
            })
        })
        .collect();
    json!({ "calls": calls })
}

/// Reads its answer: one verdict per call, in order.
pub fn verdicts(body: &Value, calls: usize) -> Result<Vec<Verdict>, String> {
    let verdicts = body
        .get("verdicts")
        .and_then(Value::as_array)
        .ok_or("no \"verdicts\" list")?;
    if verdicts.len() != calls {
        return Err(format!("{} verdicts for {calls} calls", verdicts.len()));
    }
    verdicts.iter().map(verdict).collect()
}

fn verdict(v: &Value) -> Result<Verdict, String> {
    if let Some(errors) = v.get("errors") {
        let errors = errors.as_array().ok_or("\"errors\" is not a list")?;
        return Ok(Verdict::Errors(errors.clone()));
    }
    let raised = v
        .get("exception")
        .ok_or("a verdict is neither errors nor an exception")?;
    let text = |key: &str| {
        raised
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the exception's \"{key}\" is not a string"))
    };
    let traceback = raised
        .get("traceback")
        .and_then(Value::as_array)
        .and_then(|t| {
            t.iter()
                .map(|l| l.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or("the exception's \"traceback\" is not a list of lines")?;
    Ok(Verdict::Raised {
        exception_type: text("type")?,
        message: text("message")?,
        traceback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_extension_sends() {
        let s = signatures(&json!({"version": 1, "classes": {
            "A": null, "B": {"args": ["cls", "amount"], "varkw": false}}}))
        .unwrap();
        assert_eq!(s.get("A"), Some(None));
        assert_eq!(
            s.get("B"),
            Some(Some(&Signature {
                args: vec!["cls".into(), "amount".into()],
                varkw: false
            }))
        );
        assert!(signatures(&json!({"classes": {"B": {"args": "cls"}}})).is_err());

        let v = verdicts(
            &json!({"verdicts": [{"errors": []},
                {"exception": {"type": "KeyError", "message": "'X'", "traceback": ["  File …\n"]}}]}),
            2,
        )
        .unwrap();
        assert_eq!(v[0], Verdict::Errors(vec![]));
        assert!(
            matches!(&v[1], Verdict::Raised { exception_type, .. } if exception_type == "KeyError")
        );
        assert!(verdicts(&json!({"verdicts": []}), 1).is_err());
    }
}
