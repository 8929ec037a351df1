//! The shape of the JSON envelope every answer carries (`{"success": true, "data": …,
//! "message": …}`), as a leaf below every module: the HTTP layer answers with it, and the
//! widget cache keeps answers already wrapped in it without depending on the HTTP layer
//! (which depends on the addons for its error mapping).

use serde_json::{json, Value};

/// The success envelope around `data`.
pub fn success(data: Value, message: &str) -> Value {
    json!({"success": true, "data": data, "message": message})
}

/// The success envelope around `data` as JSON text.
pub fn success_bytes(data: Value, message: &str) -> Vec<u8> {
    success(data, message).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_success_shape() {
        let v: Value = serde_json::from_slice(&success_bytes(json!({"a": 1}), "done")).unwrap();
        assert_eq!(v, json!({"success": true, "data": {"a": 1}, "message": "done"}));
    }
}
