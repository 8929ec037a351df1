//! A small JSON Schema validator for the subset addon manifests use: `type`, `properties`,
//! `required`, `additionalProperties` (boolean), `items`, `enum`, `const`, `minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `minItems`,
//! `maxItems`, `default`, and the annotations `title`, `description`, `format`, `examples`,
//! `$schema`, `$comment`. A schema using anything else is refused when the manifest is
//! registered, naming the keyword, rather than silently half-checked at run time.
//! Defaults are applied to missing object properties.

use serde_json::{Map, Value};

const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "default",
    "title",
    "description",
    "format",
    "examples",
    "$schema",
    "$comment",
];

const TYPES: &[&str] = &["object", "array", "string", "number", "integer", "boolean", "null"];

/// Checks that `schema` only uses the supported subset; `path` prefixes the error.
pub fn check_schema(schema: &Value, path: &str) -> Result<(), String> {
    let Some(obj) = schema.as_object() else {
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{path}: a schema must be an object")),
        };
    };
    for (k, v) in obj {
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(format!("{path}: unsupported schema keyword `{k}` (supported: {})", KEYWORDS.join(", ")));
        }
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    if !n.as_str().is_some_and(|t| TYPES.contains(&t)) {
                        return Err(format!("{path}.type: `{n}` is not one of {}", TYPES.join(", ")));
                    }
                }
            }
            "properties" => {
                let props = v.as_object().ok_or_else(|| format!("{path}.properties: must be an object"))?;
                for (name, sub) in props {
                    check_schema(sub, &format!("{path}.properties.{name}"))?;
                }
            }
            "items" => check_schema(v, &format!("{path}.items"))?,
            "required" if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                return Err(format!("{path}.required: must be a list of property names"));
            }
            "additionalProperties" if !v.is_boolean() => {
                return Err(format!("{path}.additionalProperties: only true or false is supported"));
            }
            "enum" if !v.is_array() => return Err(format!("{path}.enum: must be a list")),
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" if !v.is_number() => {
                return Err(format!("{path}.{k}: must be a number"));
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" if !v.is_u64() => {
                return Err(format!("{path}.{k}: must be a non-negative integer"));
            }
            _ => {}
        }
    }
    if let Some(d) = obj.get("default") {
        validate(schema, d, &format!("{path}.default")).map_err(|e| format!("the default does not match its own schema: {e}"))?;
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `value` against `schema`; the error names the path of the first bad value.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return if schema == &Value::Bool(false) { Err(format!("{path}: no value is allowed here")) } else { Ok(()) };
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, value),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_matches(t, value)),
            _ => true,
        };
        if !ok {
            return Err(format!(
                "{path}: expected {}, got {}",
                t.as_str().map(str::to_string).unwrap_or_else(|| t.to_string()),
                kind(value)
            ));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            return Err(format!("{path}: {value} is not one of {}", Value::Array(e.clone())));
        }
    }
    if let Some(c) = s.get("const") {
        if c != value {
            return Err(format!("{path}: must be {c}"));
        }
    }
    if let Some(n) = value.as_f64() {
        let bound = |k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(m) = bound("minimum").filter(|m| n < *m) {
            return Err(format!("{path}: {n} is less than the minimum {m}"));
        }
        if let Some(m) = bound("maximum").filter(|m| n > *m) {
            return Err(format!("{path}: {n} is more than the maximum {m}"));
        }
        if let Some(m) = bound("exclusiveMinimum").filter(|m| n <= *m) {
            return Err(format!("{path}: {n} must be more than {m}"));
        }
        if let Some(m) = bound("exclusiveMaximum").filter(|m| n >= *m) {
            return Err(format!("{path}: {n} must be less than {m}"));
        }
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if let Some(m) = s.get("minLength").and_then(Value::as_u64).filter(|m| len < *m) {
            return Err(format!("{path}: shorter than {m} characters"));
        }
        if let Some(m) = s.get("maxLength").and_then(Value::as_u64).filter(|m| len > *m) {
            return Err(format!("{path}: longer than {m} characters"));
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if let Some(m) = s.get("minItems").and_then(Value::as_u64).filter(|m| n < *m) {
            return Err(format!("{path}: fewer than {m} items"));
        }
        if let Some(m) = s.get("maxItems").and_then(Value::as_u64).filter(|m| n > *m) {
            return Err(format!("{path}: more than {m} items"));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{i}]"))?;
            }
        }
    }
    if let Some(obj) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{}: required property is missing", join(path, r)));
                }
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, v, &join(path, k))?,
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{}: unknown property", join(path, k)));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Fills missing object properties from their schema's `default`, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    let Some(obj) = value.as_object_mut() else { return };
    for (k, sub) in props {
        match obj.get_mut(k) {
            Some(v) => apply_defaults(sub, v),
            None => {
                if let Some(d) = sub.get("default") {
                    obj.insert(k.clone(), d.clone());
                } else if sub.get("properties").is_some() && sub.get("type").and_then(Value::as_str) == Some("object") {
                    let mut nested = Value::Object(Map::new());
                    apply_defaults(sub, &mut nested);
                    if nested.as_object().is_some_and(|m| !m.is_empty()) {
                        obj.insert(k.clone(), nested);
                    }
                }
            }
        }
    }
}

/// Whether a schema accepts everything and adds nothing (`{}` or null).
pub fn is_empty(schema: &Value) -> bool {
    schema.is_null() || schema.as_object().is_some_and(|o| o.is_empty())
}

/// Applies defaults, then validates: the value an addon receives.
pub fn normalize(schema: &Value, value: Value, path: &str) -> Result<Value, String> {
    let mut v = value;
    apply_defaults(schema, &mut v);
    validate(schema, &v, path)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["amount"],
            "additionalProperties": false,
            "properties": {
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "currency": {"type": "string", "enum": ["EUR", "USD"], "default": "EUR"},
                "note": {"type": "string", "maxLength": 5},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "opts": {"type": "object", "properties": {"fast": {"type": "boolean", "default": true}}}
            }
        })
    }

    #[test]
    fn defaults_then_validation() {
        let v = normalize(&schema(), json!({"amount": 3}), "data").unwrap();
        assert_eq!(v, json!({"amount": 3, "currency": "EUR", "opts": {"fast": true}}));
    }

    #[test]
    fn errors_name_the_path() {
        let s = schema();
        let cases = [
            (json!({}), "data.amount: required"),
            (json!({"amount": "x"}), "data.amount: expected number"),
            (json!({"amount": 0}), "must be more than 0"),
            (json!({"amount": 1, "currency": "GBP"}), "data.currency"),
            (json!({"amount": 1, "note": "toolong"}), "data.note: longer than 5"),
            (json!({"amount": 1, "tags": ["a", 1]}), "data.tags[1]: expected string"),
            (json!({"amount": 1, "tags": ["a", "b", "c"]}), "more than 2 items"),
            (json!({"amount": 1, "bogus": 1}), "data.bogus: unknown property"),
            (json!([1]), "data: expected object"),
        ];
        for (v, want) in cases {
            let e = normalize(&s, v.clone(), "data").unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn unsupported_keywords_are_refused() {
        check_schema(&schema(), "s").unwrap();
        let e = check_schema(&json!({"oneOf": []}), "actions[0].input_schema").unwrap_err();
        assert!(e.contains("actions[0].input_schema") && e.contains("oneOf"), "{e}");
        let e = check_schema(&json!({"type": "text"}), "s").unwrap_err();
        assert!(e.contains("s.type"), "{e}");
        let e = check_schema(&json!({"properties": {"a": {"type": "number", "default": "x"}}}), "s").unwrap_err();
        assert!(e.contains("default"), "{e}");
        let e = check_schema(&json!({"properties": {"a": {"pattern": "x"}}}), "s").unwrap_err();
        assert!(e.contains("s.properties.a") && e.contains("pattern"), "{e}");
    }

    #[test]
    fn integers() {
        assert!(validate(&json!({"type": "integer"}), &json!(3), "x").is_ok());
        assert!(validate(&json!({"type": "integer"}), &json!(3.5), "x").is_err());
    }
}
