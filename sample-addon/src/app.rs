//! Routes of the addon container contract, plus test helpers (`/admin/*`, `GET /events`,
//! `/headers`, …). Streaming routes (`/upload`, `/download`, `/ws`) are in `stream` and `ws`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::{percent_decode, Request};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const MAX_EVENTS: usize = 1000;
pub const MAX_SLEEP_MS: u64 = 600_000;
pub const ACTIONS: [&str; 5] = ["add", "echo", "fail", "sleep", "whoami"];
pub const WIDGETS: [&str; 1] = ["checkout"];

/// Settings read from the environment once at start.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub addon: Option<String>,
    pub service: Option<String>,
    pub instance: Option<String>,
    pub api: Option<String>,
    pub token_present: bool,
    pub port: u16,
    pub initial_config: Value,
    /// `SAMPLE_HEALTH_DELAY_MS`: /health answers 503 until this long after start.
    pub health_delay: Duration,
    /// `SAMPLE_CONFIG_RESTART=1`: `POST /config` answers 404 ("restart me").
    pub config_restart: bool,
}

/// Shared, mutable state of the running addon.
pub struct State {
    pub settings: Settings,
    pub started: Instant,
    health_fail: AtomicBool,
    config: Mutex<Value>,
    config_updates: AtomicU64,
    events: Mutex<VecDeque<Value>>,
    events_total: AtomicU64,
}

impl State {
    pub fn new(settings: Settings) -> Self {
        let config = settings.initial_config.clone();
        State {
            settings,
            started: Instant::now(),
            health_fail: AtomicBool::new(false),
            config: Mutex::new(config),
            config_updates: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            events_total: AtomicU64::new(0),
        }
    }

    fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the connection handler does after the response has been written and flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// Exit the process with this code (shortly after the response went out).
    Exit(i32),
    /// Allocate and touch memory until the kernel kills the process.
    Oom,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
    pub after: After,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Self {
        Response {
            status,
            body,
            headers: Vec::new(),
            after: After::Nothing,
            close: false,
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Response::json(status, json!({ "error": message.into() }))
    }

    pub fn body_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec())
    }
}

fn method_not_allowed(allowed: &[&str]) -> Response {
    let mut r = Response::error(
        405,
        format!("method not allowed; use {}", allowed.join(", ")),
    );
    r.headers.push(("Allow", allowed.join(", ")));
    r
}

/// Parse a JSON request body; an empty body is `null`.
fn json_body(req: &Request) -> Result<Value, Response> {
    if req.body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Response::error(400, format!("invalid JSON body: {e}")))
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
        ["headers"] => Response::json(200, Value::Object(request_headers(req))),
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

fn request_headers(req: &Request) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in &req.headers {
        match out.get_mut(name) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            _ => {
                out.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    out
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
                    "token_present": state.settings.token_present,
                }),
            )
        }
        _ => Response::error(500, "unreachable action"),
    }
}

#[derive(Deserialize)]
struct SleepArgs {
    ms: u64,
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
            token_present: true,
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
