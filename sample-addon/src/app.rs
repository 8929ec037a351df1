//! Routes of the addon container contract, plus test helpers (`/admin/*`, `GET /events`,
//! `/headers`, …). Streaming routes (`/upload`, `/download`, `/ws`) are in `stream` and `ws`.
//! The `api` action calls the daemon's addon API (`ADDOND_API`) through `client`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::net::client::{self, ClientError, Outgoing};
use crate::net::http::{percent_decode, Request};
use crate::net::response::{join_headers, json_body, method_not_allowed, After, Response};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const MAX_EVENTS: usize = 1000;
pub const MAX_SLEEP_MS: u64 = 600_000;
pub const ACTIONS: [&str; 10] = ["add", "api", "echo", "env", "fail", "fetch", "read_file", "sleep", "whoami", "write_file"];
pub const WIDGETS: [&str; 1] = ["checkout"];

/// A string kept out of `Debug` output (the addon API token).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Settings read from the environment once at start.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub addon: Option<String>,
    pub service: Option<String>,
    pub instance: Option<String>,
    /// `ADDOND_API`: base URL of the daemon's addon API (`http://ip:port`).
    pub api: Option<String>,
    /// `ADDOND_TOKEN`, sent as `Authorization: Bearer …` to the addon API.
    pub token: Option<Secret>,
    pub port: u16,
    pub initial_config: Value,
    /// `SAMPLE_HEALTH_DELAY_MS`: /health answers 503 until this long after start.
    pub health_delay: Duration,
    /// `SAMPLE_CONFIG_RESTART=1`: `POST /config` answers 404 ("restart me").
    pub config_restart: bool,
    /// `SAMPLE_EVENTS_FAIL=1`: `POST /events` answers 500 (toggled by `/admin/events/*`).
    pub events_fail: bool,
}

impl Settings {
    pub fn token_present(&self) -> bool {
        self.token.is_some()
    }
}

/// Shared, mutable state of the running addon.
pub struct State {
    pub settings: Settings,
    pub started: Instant,
    health_fail: AtomicBool,
    events_fail: AtomicBool,
    config: Mutex<Value>,
    config_updates: AtomicU64,
    events: Mutex<VecDeque<Value>>,
    events_total: AtomicU64,
    events_rejected: AtomicU64,
}

impl State {
    pub fn new(settings: Settings) -> Self {
        let config = settings.initial_config.clone();
        State {
            events_fail: AtomicBool::new(settings.events_fail),
            settings,
            started: Instant::now(),
            health_fail: AtomicBool::new(false),
            config: Mutex::new(config),
            config_updates: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            events_total: AtomicU64::new(0),
            events_rejected: AtomicU64::new(0),
        }
    }

    fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Dispatch one request. Never panics on client input.
pub fn route(state: &State, req: &Request) -> Response {
    // HEAD is answered like GET (the connection handler drops the body).
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    let segments: Vec<&str> = req.path.split('/').skip(1).collect();
    match segments.as_slice() {
        [""] => match method {
            "GET" => Response::json(
                200,
                json!({
                    "name": "sample-addon",
                    "version": VERSION,
                    "addon": state.settings.addon,
                    "service": state.settings.service,
                    "instance": state.settings.instance,
                }),
            ),
            _ => method_not_allowed(&["GET"]),
        },
        ["health"] => match method {
            "GET" => health(state),
            _ => method_not_allowed(&["GET"]),
        },
        ["execute", action] => match method {
            "POST" => match percent_decode(action) {
                Some(action) => execute(state, &action, req),
                None => Response::error(400, "malformed action name"),
            },
            _ => method_not_allowed(&["POST"]),
        },
        ["widgets", widget, "render"] => match method {
            "POST" => match percent_decode(widget) {
                Some(widget) => render_widget(&widget, req),
                None => Response::error(400, "malformed widget name"),
            },
            _ => method_not_allowed(&["POST"]),
        },
        ["events"] => match method {
            "POST" => post_event(state, req),
            "GET" => get_events(state),
            "DELETE" => {
                lock(&state.events).clear();
                Response::json(200, json!({ "ok": true }))
            }
            _ => method_not_allowed(&["GET", "POST", "DELETE"]),
        },
        // Any method: the request headers as received (names lower-cased; repeated headers
        // joined with ", " in order of arrival), to check what a proxy forwards.
        ["headers"] => Response::json(200, Value::Object(join_headers(&req.headers))),
        ["config"] => match method {
            "GET" => Response::json(200, lock(&state.config).clone()),
            "POST" => post_config(state, req),
            _ => method_not_allowed(&["GET", "POST"]),
        },
        ["admin", "health", which @ ("fail" | "ok")] => match method {
            "POST" => {
                let fail = *which == "fail";
                state.health_fail.store(fail, Ordering::SeqCst);
                Response::json(
                    200,
                    json!({ "ok": true, "health": if fail { "failing" } else { "ok" } }),
                )
            }
            _ => method_not_allowed(&["POST"]),
        },
        ["admin", "events", which @ ("fail" | "ok")] => match method {
            "POST" => {
                let fail = *which == "fail";
                state.events_fail.store(fail, Ordering::SeqCst);
                Response::json(
                    200,
                    json!({ "ok": true, "events": if fail { "failing" } else { "ok" } }),
                )
            }
            _ => method_not_allowed(&["POST"]),
        },
        ["admin", "exit"] => match method {
            "POST" => admin_exit(req),
            _ => method_not_allowed(&["POST"]),
        },
        ["admin", "oom"] => match method {
            "POST" => {
                let mut r =
                    Response::json(200, json!({ "ok": true, "oom": "allocating until killed" }));
                r.after = After::Oom;
                r
            }
            _ => method_not_allowed(&["POST"]),
        },
        _ => Response::json(
            404,
            json!({ "error": format!("no route for {} {}", req.method, req.path) }),
        ),
    }
}

fn health(state: &State) -> Response {
    let uptime_ms = state.uptime_ms();
    let instance = &state.settings.instance;
    if uptime_ms < state.settings.health_delay.as_millis() as u64 {
        return Response::json(
            503,
            json!({ "status": "starting", "instance": instance, "uptime_ms": uptime_ms }),
        );
    }
    if state.health_fail.load(Ordering::SeqCst) {
        return Response::json(
            500,
            json!({ "status": "failing", "instance": instance, "uptime_ms": uptime_ms }),
        );
    }
    Response::json(
        200,
        json!({ "status": "ok", "instance": instance, "uptime_ms": uptime_ms }),
    )
}

fn execute(state: &State, action: &str, req: &Request) -> Response {
    if !ACTIONS.contains(&action) {
        return Response::json(
            404,
            json!({ "error": format!("unknown action {action}"), "known": ACTIONS }),
        );
    }
    let input = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match action {
        "echo" => Response::json(
            200,
            json!({ "echo": input, "instance": state.settings.instance }),
        ),
        "add" => add(&input),
        "sleep" => {
            let ms = match serde_json::from_value::<SleepArgs>(input) {
                Ok(SleepArgs { ms }) if ms <= MAX_SLEEP_MS => ms,
                _ => {
                    return Response::error(
                        400,
                        format!("sleep expects {{\"ms\": N}} with 0 <= N <= {MAX_SLEEP_MS}"),
                    )
                }
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
    let (Some(Value::String(method)), Some(Value::String(path))) =
        (obj.get("method"), obj.get("path"))
    else {
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
    let out = Outgoing {
        method: method.to_ascii_uppercase(),
        path: path.clone(),
        headers,
        body,
    };
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
        Err(ClientError::Failed(m)) => {
            Response::error(502, format!("addon API request failed: {m}"))
        }
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
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
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
        return Response::error(
            400,
            "add expects {\"a\": number, \"b\": number}; got a non-number",
        );
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
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (field("Uid:"), field("Gid:"))
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn object_or_empty(v: Option<&Value>, name: &str) -> Result<Map<String, Value>, Response> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(Response::error(400, format!("{name} must be an object"))),
    }
}

fn render_widget(widget: &str, req: &Request) -> Response {
    if !WIDGETS.contains(&widget) {
        return Response::json(
            404,
            json!({ "error": format!("unknown widget {widget}"), "known": WIDGETS }),
        );
    }
    let body = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !(body.is_object() || body.is_null()) {
        return Response::error(400, "body must be {\"config\": {...}, \"context\": {...}}");
    }
    let config = match object_or_empty(body.get("config"), "config") {
        Ok(m) => m,
        Err(r) => return r,
    };
    let context = match object_or_empty(body.get("context"), "context") {
        Ok(m) => m,
        Err(r) => return r,
    };
    let title = match config.get("title") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "Checkout".to_string(),
        Some(other) => other.to_string(),
    };
    let mut html = String::new();
    html.push_str("<div class=\"addond-checkout\">");
    html.push_str(&format!(
        "<h2 class=\"addond-checkout__title\">{}</h2>",
        html_escape(&title)
    ));
    html.push_str("<dl class=\"addond-checkout__context\">");
    for (key, value) in &context {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        html.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            html_escape(key),
            html_escape(&text)
        ));
    }
    html.push_str("</dl><button type=\"button\" class=\"addond-checkout__pay\">Pay</button></div>");
    let css = ".addond-checkout{font-family:sans-serif;border:1px solid #ccc;padding:1em;border-radius:4px}\
               .addond-checkout__title{margin:0 0 .5em}\
               .addond-checkout__pay{padding:.5em 1em}";
    let javascript = "document.querySelectorAll('.addond-checkout__pay').forEach(function(b){\
                      b.addEventListener('click',function(){b.textContent='Paid';});});";
    Response::json(
        200,
        json!({ "html": html, "css": css, "javascript": javascript }),
    )
}

fn post_event(state: &State, req: &Request) -> Response {
    if state.events_fail.load(Ordering::SeqCst) {
        state.events_rejected.fetch_add(1, Ordering::SeqCst);
        return Response::error(
            500,
            "POST /events is failing on purpose (SAMPLE_EVENTS_FAIL / POST /admin/events/fail)",
        );
    }
    let event = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let total = state.events_total.fetch_add(1, Ordering::SeqCst) + 1;
    let mut events = lock(&state.events);
    events.push_back(event);
    while events.len() > MAX_EVENTS {
        events.pop_front();
    }
    Response::json(200, json!({ "ok": true, "received": total }))
}

fn get_events(state: &State) -> Response {
    let events: Vec<Value> = lock(&state.events).iter().cloned().collect();
    Response::json(
        200,
        json!({
            "count": events.len(),
            "total_received": state.events_total.load(Ordering::SeqCst),
            "rejected": state.events_rejected.load(Ordering::SeqCst),
            "failing": state.events_fail.load(Ordering::SeqCst),
            "events": events,
        }),
    )
}

fn post_config(state: &State, req: &Request) -> Response {
    if state.settings.config_restart {
        return Response::error(
            404,
            "live config updates are not supported; restart the container",
        );
    }
    let config = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    *lock(&state.config) = config.clone();
    let updates = state.config_updates.fetch_add(1, Ordering::SeqCst) + 1;
    Response::json(
        200,
        json!({ "ok": true, "config": config, "updates": updates }),
    )
}

fn admin_exit(req: &Request) -> Response {
    let code = match req.query_param("code") {
        None => 0,
        Some(s) => match s.parse::<i32>() {
            Ok(n) if (0..=255).contains(&n) => n,
            _ => return Response::error(400, "code must be an integer 0-255"),
        },
    };
    let mut r = Response::json(200, json!({ "ok": true, "exiting_with": code }));
    r.after = After::Exit(code);
    r.close = true;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            addon: Some("payment-gateway".into()),
            service: Some("payments-api".into()),
            instance: Some("inst_1".into()),
            api: Some("http://172.30.0.1:7081".into()),
            token: Some(Secret("at_x_secret".into())),
            port: 8080,
            initial_config: json!({ "currency": "EUR" }),
            ..Settings::default()
        }
    }

    fn req(method: &str, target: &str, body: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            version: (1, 1),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn call(state: &State, method: &str, target: &str, body: &str) -> (u16, Value) {
        let r = route(state, &req(method, target, body));
        (r.status, r.body)
    }

    #[test]
    fn root_and_not_found() {
        let s = State::new(settings());
        let (st, b) = call(&s, "GET", "/", "");
        assert_eq!(st, 200);
        assert_eq!(b["name"], "sample-addon");
        assert_eq!(b["version"], VERSION);
        let (st, b) = call(&s, "GET", "/nope/deeper", "");
        assert_eq!(st, 404);
        assert!(b["error"].as_str().unwrap().contains("/nope/deeper"));
        assert_eq!(call(&s, "GET", "/health/", "").0, 404);
        let r = route(&s, &req("DELETE", "/health", ""));
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("Allow", "GET".to_string())]);
    }

    #[test]
    fn health_toggles() {
        let s = State::new(settings());
        let (st, b) = call(&s, "GET", "/health", "");
        assert_eq!(st, 200);
        assert_eq!(b["status"], "ok");
        assert_eq!(b["instance"], "inst_1");
        assert!(b["uptime_ms"].is_u64());
        assert_eq!(call(&s, "HEAD", "/health", "").0, 200);
        assert_eq!(call(&s, "POST", "/admin/health/fail", "").0, 200);
        let (st, b) = call(&s, "GET", "/health", "");
        assert_eq!((st, b["status"].as_str()), (500, Some("failing")));
        assert_eq!(call(&s, "POST", "/admin/health/ok", "").0, 200);
        assert_eq!(call(&s, "GET", "/health", "").0, 200);
        assert_eq!(call(&s, "GET", "/admin/health/ok", "").0, 405);
    }

    #[test]
    fn health_start_delay() {
        let s = State::new(Settings {
            health_delay: Duration::from_millis(150),
            ..settings()
        });
        let (st, b) = call(&s, "GET", "/health", "");
        assert_eq!((st, b["status"].as_str()), (503, Some("starting")));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(call(&s, "GET", "/health", "").0, 200);
    }

    #[test]
    fn execute_actions() {
        let s = State::new(settings());
        let (st, b) = call(&s, "POST", "/execute/echo", r#"{"x":[1,2]}"#);
        assert_eq!(st, 200);
        assert_eq!(b, json!({ "echo": { "x": [1, 2] }, "instance": "inst_1" }));
        assert_eq!(call(&s, "POST", "/execute/echo", "").1["echo"], Value::Null);

        assert_eq!(
            call(&s, "POST", "/execute/add", r#"{"a":1,"b":2}"#),
            (200, json!({ "sum": 3 }))
        );
        assert_eq!(
            call(&s, "POST", "/execute/add", r#"{"a":1.5,"b":2}"#),
            (200, json!({ "sum": 3.5 }))
        );
        let big = format!(r#"{{"a":{},"b":1}}"#, i64::MAX);
        assert_eq!(call(&s, "POST", "/execute/add", &big).0, 200);
        let (st, b) = call(&s, "POST", "/execute/add", r#"{"a":"1","b":2}"#);
        assert_eq!(st, 400);
        assert!(b["error"].is_string());
        assert_eq!(call(&s, "POST", "/execute/add", r#"{"a":1}"#).0, 400);
        assert_eq!(call(&s, "POST", "/execute/add", "[1,2]").0, 400);
        assert_eq!(call(&s, "POST", "/execute/add", "{not json").0, 400);

        let t = Instant::now();
        assert_eq!(
            call(&s, "POST", "/execute/sleep", r#"{"ms":50}"#),
            (200, json!({ "slept_ms": 50 }))
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(call(&s, "POST", "/execute/sleep", r#"{"ms":-1}"#).0, 400);
        assert_eq!(call(&s, "POST", "/execute/sleep", "{}").0, 400);
        assert_eq!(
            call(&s, "POST", "/execute/sleep", r#"{"ms":99999999}"#).0,
            400
        );

        let (st, b) = call(&s, "POST", "/execute/fail", "{}");
        assert_eq!(st, 500);
        assert!(b["error"].is_string());

        let (st, b) = call(&s, "POST", "/execute/whoami", "");
        assert_eq!(st, 200);
        assert_eq!(b["instance"], "inst_1");
        assert_eq!(b["service"], "payments-api");
        assert_eq!(b["addon"], "payment-gateway");
        assert_eq!(b["pid"], std::process::id());
        assert!(b["uid"].is_u64());

        let (st, b) = call(&s, "POST", "/execute/launch-rockets", "{}");
        assert_eq!(st, 404);
        assert_eq!(b["error"], "unknown action launch-rockets");
        assert_eq!(b["known"], json!(ACTIONS));
        // Unknown action wins over a bad body.
        assert_eq!(call(&s, "POST", "/execute/nope", "{bad").0, 404);
        assert_eq!(call(&s, "POST", "/execute/%zz", "{}").0, 400);
        assert_eq!(call(&s, "GET", "/execute/echo", "").0, 405);
    }

    #[test]
    fn fetch_and_files() {
        let s = State::new(settings());
        let dir = std::env::temp_dir().join(format!("sample-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x").display().to_string();
        let (st, b) = call(&s, "POST", "/execute/read_file", &json!({"path": f}).to_string());
        assert_eq!(st, 404, "{b}");
        let (st, _) = call(&s, "POST", "/execute/write_file", &json!({"path": f, "text": "hi"}).to_string());
        assert_eq!(st, 200);
        let (st, b) = call(&s, "POST", "/execute/read_file", &json!({"path": f}).to_string());
        assert_eq!((st, b["text"].as_str()), (200, Some("hi")));
        assert_eq!(call(&s, "POST", "/execute/write_file", "{}").0, 400);
        std::fs::remove_dir_all(&dir).unwrap();
        // Nothing listens on port 1: no reply, reported as such.
        let (st, b) = call(&s, "POST", "/execute/fetch", r#"{"url": "http://127.0.0.1:1", "timeout_ms": 500}"#);
        assert_eq!(st, 200);
        assert_eq!(b["ok"], false, "{b}");
        assert_eq!(call(&s, "POST", "/execute/fetch", r#"{"path": "/"}"#).0, 400);
    }

    #[test]
    fn widget_render() {
        let s = State::new(settings());
        let (st, b) = call(
            &s,
            "POST",
            "/widgets/checkout/render",
            r#"{"config":{"title":"Pay <now>"},"context":{"user":"a&b","amount":12.5}}"#,
        );
        assert_eq!(st, 200);
        let html = b["html"].as_str().unwrap();
        assert!(html.contains("Pay &lt;now&gt;"), "{html}");
        assert!(html.contains("<dt>user</dt><dd>a&amp;b</dd>"), "{html}");
        assert!(html.contains("<dd>12.5</dd>"), "{html}");
        assert!(b["css"].as_str().unwrap().contains(".addond-checkout"));
        assert!(b["javascript"].is_string());

        let (st, b) = call(&s, "POST", "/widgets/checkout/render", "");
        assert_eq!(st, 200);
        assert!(b["html"].as_str().unwrap().contains(">Checkout</h2>"));
        assert_eq!(
            call(&s, "POST", "/widgets/checkout/render", r#"{"config":3}"#).0,
            400
        );
        assert_eq!(call(&s, "POST", "/widgets/checkout/render", "[]").0, 400);
        let (st, b) = call(&s, "POST", "/widgets/cart/render", "{}");
        assert_eq!(st, 404);
        assert_eq!(b["known"], json!(WIDGETS));
    }

    #[test]
    fn events_are_kept_bounded() {
        let s = State::new(settings());
        for i in 0..(MAX_EVENTS + 5) {
            let (st, b) = call(&s, "POST", "/events", &format!(r#"{{"type":"t","n":{i}}}"#));
            assert_eq!(st, 200);
            assert_eq!(b["ok"], true);
        }
        let (st, b) = call(&s, "GET", "/events", "");
        assert_eq!(st, 200);
        assert_eq!(b["count"], MAX_EVENTS);
        assert_eq!(b["total_received"], MAX_EVENTS + 5);
        assert_eq!(b["events"][0]["n"], 5);
        assert_eq!(call(&s, "POST", "/events", "nope").0, 400);
        assert_eq!(call(&s, "DELETE", "/events", "").0, 200);
        assert_eq!(call(&s, "GET", "/events", "").1["count"], 0);
    }

    #[test]
    fn events_keep_daemon_bodies_in_order() {
        let s = State::new(settings());
        let sent: Vec<Value> = (0..3)
            .map(|i| {
                json!({
                    "id": format!("evt_{i}"),
                    "name": "order.created",
                    "data": { "n": i },
                    "source": "shop",
                    "timestamp": "2024-01-01T00:00:00Z",
                })
            })
            .collect();
        for e in &sent {
            assert_eq!(call(&s, "POST", "/events", &e.to_string()).0, 200);
        }
        let (_, b) = call(&s, "GET", "/events", "");
        assert_eq!(b["events"], json!(sent));
        assert_eq!(
            (b["rejected"].as_u64(), b["failing"].as_bool()),
            (Some(0), Some(false))
        );
    }

    #[test]
    fn events_can_fail_on_purpose() {
        let s = State::new(Settings {
            events_fail: true,
            ..settings()
        });
        let (st, b) = call(&s, "POST", "/events", r#"{"name":"x"}"#);
        assert_eq!(st, 500);
        assert!(b["error"].is_string());
        let (_, b) = call(&s, "GET", "/events", "");
        assert_eq!(
            (b["count"].as_u64(), b["rejected"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(b["failing"], true);
        assert_eq!(
            call(&s, "POST", "/admin/events/ok", ""),
            (200, json!({ "ok": true, "events": "ok" }))
        );
        assert_eq!(call(&s, "POST", "/events", r#"{"name":"y"}"#).0, 200);
        assert_eq!(call(&s, "POST", "/admin/events/fail", "").0, 200);
        assert_eq!(call(&s, "POST", "/events", r#"{"name":"z"}"#).0, 500);
        let (_, b) = call(&s, "GET", "/events", "");
        assert_eq!(b["events"], json!([{ "name": "y" }]));
        assert_eq!(b["rejected"], 2);
        assert_eq!(call(&s, "GET", "/admin/events/fail", "").0, 405);
        // Off by default.
        let s = State::new(settings());
        assert_eq!(call(&s, "POST", "/events", "{}").0, 200);
    }

    #[test]
    fn env_action() {
        let s = State::new(settings());
        let (st, b) = call(&s, "POST", "/execute/env", "");
        assert_eq!(st, 200);
        assert_eq!(b["api"], "http://172.30.0.1:7081");
        assert_eq!(b["token_present"], true);
        assert_eq!(b["addon"], "payment-gateway");
        assert_eq!(b["instance"], "inst_1");
        let s = State::new(Settings {
            api: None,
            token: None,
            ..settings()
        });
        let (_, b) = call(&s, "POST", "/execute/env", "{}");
        assert_eq!(
            (b["api"].clone(), b["token_present"].clone()),
            (Value::Null, json!(false))
        );
    }

    fn with_api(api: &str) -> State {
        State::new(Settings {
            api: Some(api.to_string()),
            ..settings()
        })
    }

    #[test]
    fn api_action_json_round_trip() {
        let reply = r#"{"success":true,"data":{"id":"e1"}}"#;
        let (base, rx) = crate::net::client::tests::one_shot(
            format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            )
            .into_bytes(),
        );
        let s = with_api(&base);
        let (st, b) = call(
            &s,
            "POST",
            "/execute/api",
            r#"{"method":"post","path":"/v1/events","body":{"name":"order.created","data":{"n":1}}}"#,
        );
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["status"], 201);
        assert_eq!(
            b["body"],
            json!({ "success": true, "data": { "id": "e1" } })
        );
        assert_eq!(b["content_type"], "application/json");
        let (head, body) = rx.recv().unwrap();
        assert!(head.starts_with("POST /v1/events HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("Authorization: Bearer at_x_secret\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent, json!({ "name": "order.created", "data": { "n": 1 } }));
    }

    #[test]
    fn api_action_raw_and_text_replies() {
        let (base, rx) = crate::net::client::tests::one_shot(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n"
                .to_vec(),
        );
        let s = with_api(&base);
        let (st, b) = call(
            &s,
            "POST",
            "/execute/api",
            r#"{"method":"PUT","path":"/v1/kv/k","raw":"raw bytes","headers":{"authorization":null,"X-Test":"1"}}"#,
        );
        assert_eq!(st, 200, "{b}");
        // Not JSON by Content-Type: the text as is.
        assert_eq!(b["body"], r#"{"a":1}"#);
        assert_eq!(b["headers"]["transfer-encoding"], "chunked");
        let (head, body) = rx.recv().unwrap();
        assert!(head.starts_with("PUT /v1/kv/k HTTP/1.1\r\n"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "{head}"
        );
        assert!(
            head.contains("X-Test: 1\r\n")
                && head.contains("Content-Type: application/octet-stream\r\n")
        );
        assert_eq!(body, b"raw bytes");

        // A JSON Content-Type with a body that is not JSON: text as well.
        let (base, _rx) = crate::net::client::tests::one_shot(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
        );
        let (st, b) = call(
            &with_api(&base),
            "POST",
            "/execute/api",
            r#"{"method":"GET","path":"/v1/kv/x"}"#,
        );
        assert_eq!(
            (st, b["status"].clone(), b["body"].clone()),
            (200, json!(404), json!("nope"))
        );
    }

    #[test]
    fn api_action_errors() {
        // No ADDOND_API: 502.
        let s = State::new(Settings {
            api: None,
            ..settings()
        });
        let (st, b) = call(
            &s,
            "POST",
            "/execute/api",
            r#"{"method":"GET","path":"/v1/health"}"#,
        );
        assert_eq!(st, 502);
        assert!(b["error"].as_str().unwrap().contains("ADDOND_API"));
        // Nothing listening: 502.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = with_api(&format!("http://127.0.0.1:{port}"));
        let (st, b) = call(
            &s,
            "POST",
            "/execute/api",
            r#"{"method":"GET","path":"/v1/health"}"#,
        );
        assert_eq!(st, 502, "{b}");
        assert!(b["error"].is_string());
        // Bad inputs: 400 (before any connection is tried).
        for bad in [
            "",
            "[]",
            r#"{"path":"/v1/health"}"#,
            r#"{"method":"GET"}"#,
            r#"{"method":"GET","path":"v1/health"}"#,
            r#"{"method":"G T","path":"/v1/health"}"#,
            r#"{"method":"PUT","path":"/v1/kv/k","body":1,"raw":"x"}"#,
            r#"{"method":"PUT","path":"/v1/kv/k","raw":5}"#,
            r#"{"method":"GET","path":"/v1/health","headers":{"X":1}}"#,
            r#"{"method":"GET","path":"/v1/health","headers":[]}"#,
        ] {
            assert_eq!(call(&s, "POST", "/execute/api", bad).0, 400, "{bad}");
        }
    }

    #[test]
    fn config_live_and_restart() {
        let s = State::new(settings());
        assert_eq!(
            call(&s, "GET", "/config", ""),
            (200, json!({ "currency": "EUR" }))
        );
        let (st, b) = call(&s, "POST", "/config", r#"{"currency":"USD"}"#);
        assert_eq!((st, b["ok"].as_bool()), (200, Some(true)));
        assert_eq!(
            call(&s, "GET", "/config", "").1,
            json!({ "currency": "USD" })
        );
        assert_eq!(call(&s, "POST", "/config", "{oops").0, 400);

        let s = State::new(Settings {
            config_restart: true,
            ..settings()
        });
        assert_eq!(call(&s, "POST", "/config", r#"{"currency":"USD"}"#).0, 404);
        assert_eq!(
            call(&s, "GET", "/config", "").1,
            json!({ "currency": "EUR" })
        );
    }

    #[test]
    fn admin_exit_and_oom() {
        let s = State::new(settings());
        let r = route(&s, &req("POST", "/admin/exit?code=3", ""));
        assert_eq!((r.status, r.after, r.close), (200, After::Exit(3), true));
        assert_eq!(
            route(&s, &req("POST", "/admin/exit", "")).after,
            After::Exit(0)
        );
        assert_eq!(
            route(&s, &req("POST", "/admin/exit?code=300", "")).status,
            400
        );
        assert_eq!(
            route(&s, &req("POST", "/admin/exit?code=x", "")).after,
            After::Nothing
        );
        assert_eq!(route(&s, &req("POST", "/admin/oom", "")).after, After::Oom);
        assert_eq!(route(&s, &req("GET", "/admin/oom", "")).status, 405);
    }

    #[test]
    fn headers_echo() {
        let s = State::new(settings());
        let mut r = req("POST", "/headers", "ignored");
        r.headers = vec![
            ("host".into(), "h".into()),
            ("x-forwarded-for".into(), "1.2.3.4".into()),
            ("x-forwarded-for".into(), "5.6.7.8".into()),
        ];
        let resp = route(&s, &r);
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body,
            json!({ "host": "h", "x-forwarded-for": "1.2.3.4, 5.6.7.8" })
        );
        assert_eq!(call(&s, "GET", "/headers", ""), (200, json!({})));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
