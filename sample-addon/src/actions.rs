//! The actions of the sample addon behind `POST /execute/{action}`. Some only compute
//! (`echo`, `add`, `sleep`, `fail`), some report what the container sees (`whoami`, `env`),
//! and some play a curious or hostile addon for the sandbox tests: `api` calls the daemon's
//! addon API with the container's token, `fetch` tries any URL (another addon's container),
//! `read_file` / `write_file` look into volumes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::net::client::{self, ClientError, Outgoing};
use crate::net::response::{join_headers, Response};
use crate::state::State;

/// Every action this addon knows, as listed in a 404 for an unknown one.
pub const ACTIONS: [&str; 10] = ["add", "api", "echo", "env", "fail", "fetch", "read_file", "sleep", "whoami", "write_file"];
/// Longest `sleep` accepted (10 minutes).
pub const MAX_SLEEP_MS: u64 = 600_000;

/// Run a known action (see [`ACTIONS`]) on its parsed JSON input.
pub fn run(state: &State, action: &str, input: Value) -> Response {
    match action {
        "echo" => Response::json(200, json!({ "echo": input, "instance": state.settings.instance })),
        "add" => add(&input),
        "sleep" => {
            let ms = match serde_json::from_value::<SleepArgs>(input) {
                Ok(SleepArgs { ms }) if ms <= MAX_SLEEP_MS => ms,
                _ => return Response::error(400, format!("sleep expects {{\"ms\": N}} with 0 <= N <= {MAX_SLEEP_MS}")),
            };
            std::thread::sleep(Duration::from_millis(ms));
            Response::json(200, json!({ "slept_ms": ms }))
        }
        "fail" => Response::error(500, "action 'fail' failed on purpose"),
        "whoami" => {
            let (uid, gid) = proc_ids();
            Response::json(
                200,
                json!({
                    "instance": state.settings.instance,
                    "version": state.settings.version,
                    "service": state.settings.service,
                    "addon": state.settings.addon,
                    "pid": std::process::id(),
                    "uid": uid,
                    "gid": gid,
                    "api": state.settings.api,
                    "token_present": state.settings.token_present(),
                }),
            )
        }
        "env" => Response::json(
            200,
            json!({
                "api": state.settings.api,
                "token_present": state.settings.token_present(),
                "addon": state.settings.addon,
                "service": state.settings.service,
                "instance": state.settings.instance,
            }),
        ),
        "api" => api_call(state, &input),
        "fetch" => fetch(&input),
        "read_file" => read_file(&input),
        "write_file" => write_file(&input),
        _ => Response::error(500, "unreachable action"),
    }
}

#[derive(Deserialize)]
struct SleepArgs {
    ms: u64,
}

const API_USAGE: &str = "api expects {\"method\": \"GET|POST|PUT|DELETE\", \"path\": \"/v1/...\", \
     \"body\": <JSON, optional>, \"raw\": <string, optional>, \"headers\": {<name>: <string|null>}}";

/// Action `api`: one request to the daemon's addon API (`ADDOND_API`) with
/// `Authorization: Bearer $ADDOND_TOKEN`. `body` is sent as JSON, `raw` as the raw body
/// (`application/octet-stream`); `headers` adds or overrides request headers (`null` drops
/// one, e.g. `{"Authorization": null}`). Answers 200 `{"status", "body", "content_type",
/// "headers"}` whatever the API answered (`body` parsed when it is JSON, else text), 400 for a
/// bad input, 502 when `ADDOND_API` is unset or the request failed.
fn api_call(state: &State, input: &Value) -> Response {
    let Some(obj) = input.as_object() else {
        return Response::error(400, API_USAGE);
    };
    let (Some(Value::String(method)), Some(Value::String(path))) = (obj.get("method"), obj.get("path")) else {
        return Response::error(400, API_USAGE);
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(token) = &state.settings.token {
        headers.push(("Authorization".into(), format!("Bearer {}", token.0)));
    }
    let body = match (obj.get("body"), obj.get("raw")) {
        (Some(_), Some(_)) => return Response::error(400, "give either body or raw, not both"),
        (Some(v), None) => {
            headers.push(("Content-Type".into(), "application/json".into()));
            Some(serde_json::to_vec(v).unwrap_or_default())
        }
        (None, Some(Value::String(raw))) => {
            headers.push(("Content-Type".into(), "application/octet-stream".into()));
            Some(raw.as_bytes().to_vec())
        }
        (None, Some(_)) => return Response::error(400, "raw must be a string"),
        (None, None) => None,
    };
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extra)) => {
            for (name, value) in extra {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                match value {
                    Value::String(v) => headers.push((name.clone(), v.clone())),
                    Value::Null => {}
                    _ => return Response::error(400, "header values must be strings or null"),
                }
            }
        }
        Some(_) => return Response::error(400, "headers must be an object"),
    }
    let Some(api) = state.settings.api.as_deref() else {
        return Response::error(502, "ADDOND_API is not set: no addon API to call");
    };
    let out = Outgoing { method: method.to_ascii_uppercase(), path: path.clone(), headers, body };
    match client::send(api, &out, client::DEFAULT_TIMEOUT) {
        Ok(reply) => Response::json(
            200,
            json!({
                "status": reply.status,
                "body": reply_body(&reply),
                "content_type": reply.header("content-type"),
                "headers": join_headers(&reply.headers),
            }),
        ),
        Err(ClientError::Invalid(m)) => Response::error(400, m),
        Err(ClientError::Failed(m)) => Response::error(502, format!("addon API request failed: {m}")),
    }
}

const FETCH_USAGE: &str = "fetch expects {\"url\": \"http://host[:port]\", \"path\": \"/...\" (default /), \
     \"method\": \"GET|POST|...\" (default GET), \"body\": <JSON, optional>, \"timeout_ms\": N (default 3000)}";

/// Action `fetch`: one request to any URL, as a hostile addon would try to reach another
/// addon's container directly. Always answers 200 (for a valid input): `{"ok": true,
/// "status", "body"}` when a reply came, `{"ok": false, "error"}` when none did.
fn fetch(input: &Value) -> Response {
    let Some(obj) = input.as_object() else {
        return Response::error(400, FETCH_USAGE);
    };
    let Some(Value::String(url)) = obj.get("url") else {
        return Response::error(400, FETCH_USAGE);
    };
    let path = match obj.get("path") {
        None => "/".to_string(),
        Some(Value::String(p)) => p.clone(),
        Some(_) => return Response::error(400, FETCH_USAGE),
    };
    let method = match obj.get("method") {
        None => "GET".to_string(),
        Some(Value::String(m)) => m.to_ascii_uppercase(),
        Some(_) => return Response::error(400, FETCH_USAGE),
    };
    let timeout = match obj.get("timeout_ms") {
        None => Duration::from_millis(3000),
        Some(v) => match v.as_u64() {
            Some(ms) if ms <= 60_000 => Duration::from_millis(ms),
            _ => return Response::error(400, FETCH_USAGE),
        },
    };
    let mut headers = Vec::new();
    let body = obj.get("body").map(|v| {
        headers.push(("Content-Type".to_string(), "application/json".to_string()));
        serde_json::to_vec(v).unwrap_or_default()
    });
    let out = Outgoing { method, path, headers, body };
    match client::send(url, &out, timeout) {
        Ok(reply) => Response::json(200, json!({ "ok": true, "status": reply.status, "body": reply_body(&reply) })),
        Err(e) => Response::json(200, json!({ "ok": false, "error": e.to_string() })),
    }
}

/// Action `write_file`: `{"path", "text"}`, to see what a volume holds from inside.
fn write_file(input: &Value) -> Response {
    let (Some(Value::String(path)), Some(Value::String(text))) = (input.get("path"), input.get("text")) else {
        return Response::error(400, "write_file expects {\"path\": \"/dir/file\", \"text\": \"...\"}");
    };
    match std::fs::write(path, text) {
        Ok(()) => Response::json(200, json!({ "written": text.len(), "path": path })),
        Err(e) => Response::error(500, format!("cannot write {path}: {e}")),
    }
}

/// Action `read_file`: `{"path"}`; 404 when there is no such file.
fn read_file(input: &Value) -> Response {
    let Some(Value::String(path)) = input.get("path") else {
        return Response::error(400, "read_file expects {\"path\": \"/dir/file\"}");
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Response::json(200, json!({ "text": text, "path": path })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Response::error(404, format!("no file {path}")),
        Err(e) => Response::error(500, format!("cannot read {path}: {e}")),
    }
}

/// The reply body as JSON when it is JSON (by Content-Type, or when none is given), else as
/// text (invalid UTF-8 replaced).
fn reply_body(reply: &client::Reply) -> Value {
    let json_type = reply.header("content-type").is_none_or(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        mime == "application/json" || mime.ends_with("+json")
    });
    if json_type && !reply.body.iter().all(|b| b.is_ascii_whitespace()) {
        if let Ok(v) = serde_json::from_slice(&reply.body) {
            return v;
        }
    }
    Value::String(String::from_utf8_lossy(&reply.body).into_owned())
}

fn add(input: &Value) -> Response {
    let (Some(a), Some(b)) = (input.get("a"), input.get("b")) else {
        return Response::error(400, "add expects {\"a\": number, \"b\": number}");
    };
    if !a.is_number() || !b.is_number() {
        return Response::error(400, "add expects {\"a\": number, \"b\": number}; got a non-number");
    }
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        if let Some(sum) = x.checked_add(y) {
            return Response::json(200, json!({ "sum": sum }));
        }
    }
    let sum = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    match serde_json::Number::from_f64(sum) {
        Some(n) => Response::json(200, json!({ "sum": n })),
        None => Response::error(400, "sum is not a finite number"),
    }
}

/// Real uid and gid from `/proc/self/status` (`Uid:` / `Gid:` lines, first field).
fn proc_ids() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse().ok())
    };
    (field("Uid:"), field("Gid:"))
}
