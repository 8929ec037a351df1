//! What a user hands over besides flags: JSON values on the command line (`--data`,
//! `--config`, `--context`), `--set KEY=VALUE` pairs laid over them, and documents in
//! files (TOML or JSON, `-` for stdin), such as addon manifests and configs. Mistakes in
//! them are usage errors (exit 2).

use std::io::{self, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::UsageError;

/// `--set KEY=VALUE`: the value is JSON when it parses as JSON (`3`, `true`, `[1,2]`,
/// `{"a":1}`, `"quoted"`), else the text as a string (`USD`, `hello world`, ``).
pub(crate) fn parse_set(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("expected KEY=VALUE with a non-empty KEY, got `{s}`"));
    }
    let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('s').parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected seconds (30), got `{s}`")),
    }
}

/// A JSON value given on the command line (`--data`, `--config`, `--context`).
pub(crate) fn parse_json_arg(flag: &str, text: &str) -> Result<Value, UsageError> {
    serde_json::from_str(text).map_err(|e| UsageError(format!("{flag} is not valid JSON: {e}")))
}

/// A document from a file: TOML when the name ends in `.toml`, JSON otherwise; `-` is
/// JSON on stdin. TOML becomes the same JSON (tables → objects, datetimes → strings).
/// `what` names the file in errors (`manifest`, `--config-file`). Errors are usage errors.
pub(crate) fn read_document(path: &Path, what: &str) -> Result<Value, UsageError> {
    let stdin = path.as_os_str() == "-";
    let text = if stdin {
        let mut s = String::new();
        io::stdin().read_to_string(&mut s).map_err(|e| UsageError(format!("cannot read the {what} from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read {what} {}: {e}", path.display())))?
    };
    let name = if stdin { "stdin".to_string() } else { path.display().to_string() };
    let is_toml = !stdin && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        return toml_to_json_document(&text).map_err(|e| UsageError(format!("{what} {name} is not valid TOML: {e}")));
    }
    serde_json::from_str(&text).map_err(|e| {
        let hint = match path.extension() {
            Some(x) if x.eq_ignore_ascii_case("json") => "",
            _ if stdin => "",
            _ => " (name it .toml for TOML)",
        };
        UsageError(format!("{what} {name} is not valid JSON: {e}{hint}"))
    })
}

/// Parses a TOML document into the JSON object it describes. Errors name the line and
/// column (one line: the error printer keeps messages on one line).
pub(crate) fn toml_to_json_document(text: &str) -> Result<Value, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        }
    })?;
    toml_to_json(toml::Value::Table(table), "")
}

/// TOML value → JSON value. `path` (`services[0].replicas`) names a float JSON cannot
/// hold (nan, inf).
pub(crate) fn toml_to_json(v: toml::Value, path: &str) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => return Err(format!("`{}` is {f}, which JSON cannot represent", if path.is_empty() { "value" } else { path })),
        },
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.into_iter().enumerate().map(|(i, x)| toml_to_json(x, &format!("{path}[{i}]"))).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => {
            let mut m = Map::new();
            for (k, x) in t {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                m.insert(k, toml_to_json(x, &p)?);
            }
            Value::Object(m)
        }
    })
}

/// Lays `--set KEY=VALUE` pairs over `base` (top-level keys; a later one wins).
pub(crate) fn apply_sets(base: Value, sets: &[(String, Value)], what: &str) -> Result<Value, UsageError> {
    if sets.is_empty() {
        return Ok(base);
    }
    let Value::Object(mut m) = base else {
        return Err(UsageError(format!("--set needs {what} to be a JSON object")));
    };
    for (k, v) in sets {
        m.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit_code;
    use serde_json::json;

    const MANIFEST_TOML: &str = r#"
name = "shop"
version = "1.2.0"
category = "ecommerce"
image = "addond-sample:latest"
permissions = ["network.internet"]
# Mixed arrays (TOML 1.0): strings and inline tables.
actions = ["echo", { name = "sleep", timeout_seconds = 1.5 }]

[[services]]
name = "api"
replicas = 2
resource_limits = { memory = "32m", cpu = "0.2" }

[[widgets]]
name = "checkout"
category = "form"
config_schema = { type = "object", properties = { title = { type = "string", default = "Pay now" } } }

[events]
emits = ["payment.completed"]

[dependencies]
inventory = "^1.0"

[config_schema]
type = "object"
properties.currency = { type = "string", enum = ["EUR", "USD"], default = "EUR" }

[[schedules]]
cron = "*/5 * * * *"
action = "echo"
"#;

    #[test]
    fn toml_manifests_become_the_same_json() {
        let v = toml_to_json_document(MANIFEST_TOML).unwrap();
        assert_eq!(
            v,
            json!({
                "name": "shop", "version": "1.2.0", "category": "ecommerce", "image": "addond-sample:latest",
                "permissions": ["network.internet"],
                "actions": ["echo", {"name": "sleep", "timeout_seconds": 1.5}],
                "services": [{"name": "api", "replicas": 2, "resource_limits": {"memory": "32m", "cpu": "0.2"}}],
                "widgets": [{"name": "checkout", "category": "form",
                    "config_schema": {"type": "object", "properties": {"title": {"type": "string", "default": "Pay now"}}}}],
                "events": {"emits": ["payment.completed"]},
                "dependencies": {"inventory": "^1.0"},
                "config_schema": {"type": "object", "properties": {"currency": {"type": "string", "enum": ["EUR", "USD"], "default": "EUR"}}},
                "schedules": [{"cron": "*/5 * * * *", "action": "echo"}]
            })
        );
        // Integers stay integers, datetimes become strings, sub-tables of array elements land
        // in the last element.
        let v = toml_to_json_document("n = 3\nf = 2.0\nt = true\nd = 1979-05-27T07:32:00Z\n[[a]]\nx = 1\n[[a]]\nx = 2\n[a.sub]\ny = -1\n")
            .unwrap();
        assert_eq!(v, json!({"n": 3, "f": 2.0, "t": true, "d": "1979-05-27T07:32:00Z", "a": [{"x": 1}, {"x": 2, "sub": {"y": -1}}]}));
        assert!(v["n"].is_i64() && v["f"].is_f64());
        // What JSON cannot hold is named by its path.
        let e = toml_to_json_document("[[services]]\nname = \"a\"\n[services.limits]\ncpu = nan\n").unwrap_err();
        assert!(e.contains("services[0].limits.cpu") && e.contains("NaN"), "{e}");
        // Syntax errors name the line and column, on one line.
        let e = toml_to_json_document("name = \"shop\"\nversion 1.0.0\n").unwrap_err();
        assert!(e.starts_with("line 2, column "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = toml_to_json_document("a = 1\na = 2\n").unwrap_err();
        assert!(e.starts_with("line 2,"), "{e}");
    }

    #[test]
    fn documents_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let t = write("addon.TOML", "name = \"x\"\nversion = \"1.0.0\"\n");
        assert_eq!(read_document(&t, "manifest").unwrap(), json!({"name": "x", "version": "1.0.0"}));
        let j = write("addon.json", r#"{"name": "x"}"#);
        assert_eq!(read_document(&j, "manifest").unwrap(), json!({"name": "x"}));
        // Any other name is read as JSON; a failure hints at .toml.
        let other = write("addon.manifest", r#"{"name": "y"}"#);
        assert_eq!(read_document(&other, "manifest").unwrap(), json!({"name": "y"}));
        let e = read_document(&write("addon.txt", "name = \"x\""), "manifest").unwrap_err();
        assert!(e.0.contains("is not valid JSON") && e.0.contains("name it .toml"), "{e}");
        let e = read_document(&write("bad.json", "{"), "manifest").unwrap_err();
        assert!(e.0.contains("bad.json is not valid JSON") && !e.0.contains(".toml"), "{e}");
        let e = read_document(&write("bad.toml", "name = "), "--config-file").unwrap_err();
        assert!(e.0.starts_with("--config-file ") && e.0.contains("bad.toml is not valid TOML: line 1"), "{e}");
        let e = read_document(&dir.path().join("missing.toml"), "manifest").unwrap_err();
        assert!(e.0.starts_with("cannot read manifest "), "{e}");
        assert_eq!(exit_code(&e.into()), 2);
    }

    #[test]
    fn set_values_are_json_or_text() {
        let ok = |s: &str| parse_set(s).unwrap();
        assert_eq!(ok("currency=USD"), ("currency".into(), json!("USD")));
        assert_eq!(ok("n=3"), ("n".into(), json!(3)));
        assert_eq!(ok("ratio=0.5"), ("ratio".into(), json!(0.5)));
        assert_eq!(ok("live=true"), ("live".into(), json!(true)));
        assert_eq!(ok("none=null"), ("none".into(), Value::Null));
        assert_eq!(ok("tags=[\"a\",1]"), ("tags".into(), json!(["a", 1])));
        assert_eq!(ok("o={\"a\":{\"b\":1}}"), ("o".into(), json!({"a": {"b": 1}})));
        // A JSON string keeps what a bare word cannot say: "3" as text.
        assert_eq!(ok("zip=\"01234\""), ("zip".into(), json!("01234")));
        assert_eq!(ok("zip=01234"), ("zip".into(), json!("01234")), "not JSON (leading zero): text");
        assert_eq!(ok("title=Pay now"), ("title".into(), json!("Pay now")));
        assert_eq!(ok("url=http://x/?a=b"), ("url".into(), json!("http://x/?a=b")), "split at the first =");
        assert_eq!(ok("empty="), ("empty".into(), json!("")));
        assert_eq!(ok("a.b=1"), ("a.b".into(), json!(1)), "top-level keys only: dots are literal");
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("=x").is_err());
        assert!(parse_set(" =x").is_err());

        let sets = vec![("currency".to_string(), json!("USD")), ("n".to_string(), json!(1)), ("n".to_string(), json!(2))];
        assert_eq!(
            apply_sets(json!({"currency": "EUR", "keep": true}), &sets, "the config").unwrap(),
            json!({"currency": "USD", "keep": true, "n": 2})
        );
        assert_eq!(apply_sets(json!([1]), &[], "the input").unwrap(), json!([1]), "nothing to set: left as it is");
        let e = apply_sets(json!([1]), &sets, "the input").unwrap_err();
        assert!(e.0.contains("--set needs the input to be a JSON object"), "{e}");
    }
}
