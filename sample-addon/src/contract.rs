//! The addon container contract, as this addon answers it: read this file to write an addon.
//!
//! addond starts each instance of an addon's service as a container, sets the variables
//! below, and talks to it over HTTP on `PORT`:
//!
//! | route                            | who calls it | what it must do |
//! |----------------------------------|--------------|-----------------|
//! | `GET /health`                    | addond, after a start and periodically | 2xx when ready |
//! | `POST /execute/{action}`         | addond's execute API | run the action on the JSON body |
//! | `POST /widgets/{widget}/render`  | addond's widget API | answer `{"html", "css", "javascript"}` |
//! | `POST /events`                   | addond's event delivery | 2xx to acknowledge one event; else it is retried |
//! | `POST /config`                   | addond, when the configuration changes | 2xx if applied live, 404 to be restarted |
//!
//! `GET /` and `GET /config` are not required; this addon answers them to show its identity
//! and live configuration. The addon can call back into addond through `ADDOND_API` with
//! `Authorization: Bearer $ADDOND_TOKEN` (see the `api` action in [`crate::actions`]).
//! What is only here for tests is in [`crate::knobs`].

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use crate::actions::{self, ACTIONS};
use crate::env::Env;
use crate::net::http::Request;
use crate::net::response::{json_body, Response};
use crate::state::{lock, Secret, State, MAX_EVENTS};

/// The addon's name in addond's catalogue.
pub const ADDOND_ADDON: &str = "ADDOND_ADDON";
/// The service of the addon this container runs (one image may serve several).
pub const ADDOND_SERVICE: &str = "ADDOND_SERVICE";
/// The addon version this container runs (set by addond from the manifest).
pub const ADDOND_VERSION: &str = "ADDOND_VERSION";
/// This instance's id: unique among the running containers of the service.
pub const ADDOND_INSTANCE: &str = "ADDOND_INSTANCE";
/// The service's configuration as a JSON object, as it was when the container started.
pub const ADDOND_CONFIG: &str = "ADDOND_CONFIG";
/// Base URL (`http://ip:port`) of addond's addon API, on the container's own network.
pub const ADDOND_API: &str = "ADDOND_API";
/// The instance's bearer token for `ADDOND_API`; a secret: never log or echo it.
pub const ADDOND_TOKEN: &str = "ADDOND_TOKEN";
/// The TCP port to listen on (all interfaces); addond maps it to a host port.
pub const PORT: &str = "PORT";
/// Where to listen when `PORT` is unset.
pub const DEFAULT_PORT: u16 = 8080;

/// The sample's version, shown by `GET /`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The widgets this addon renders.
pub const WIDGETS: [&str; 1] = ["checkout"];

/// What addond told this container through its environment.
#[derive(Debug)]
pub struct ContractEnv {
    /// [`ADDOND_ADDON`].
    pub addon: Option<String>,
    /// [`ADDOND_SERVICE`].
    pub service: Option<String>,
    /// [`ADDOND_INSTANCE`].
    pub instance: Option<String>,
    /// [`ADDOND_VERSION`].
    pub version: Option<String>,
    /// [`ADDOND_API`].
    pub api: Option<String>,
    /// [`ADDOND_TOKEN`].
    pub token: Option<Secret>,
    /// [`PORT`], or [`DEFAULT_PORT`].
    pub port: u16,
    /// [`ADDOND_CONFIG`], or `{}` (with a warning) when it is not JSON.
    pub initial_config: Value,
}

/// Read the contract's variables. A bad `PORT` is fatal; a bad `ADDOND_CONFIG` only warns.
pub fn read_env(env: &Env, warnings: &mut Vec<String>) -> Result<ContractEnv, String> {
    let port = env.num(PORT, 65535)?.map(|n| n as u16).unwrap_or(DEFAULT_PORT);
    let initial_config = match env.get(ADDOND_CONFIG) {
        None => serde_json::json!({}),
        Some(raw) => serde_json::from_str(&raw).unwrap_or_else(|e| {
            warnings.push(format!("ADDOND_CONFIG is not valid JSON ({e}); starting with {{}}"));
            serde_json::json!({})
        }),
    };
    Ok(ContractEnv {
        addon: env.get(ADDOND_ADDON),
        service: env.get(ADDOND_SERVICE),
        instance: env.get(ADDOND_INSTANCE),
        version: env.get(ADDOND_VERSION),
        api: env.get(ADDOND_API),
        token: env.get(ADDOND_TOKEN).map(Secret),
        port,
        initial_config,
    })
}

/// `GET /`: who this is (not required by addond).
pub fn root(state: &State) -> Response {
    Response::json(
        200,
        json!({
            "name": "sample-addon",
            "version": VERSION,
            "addon": state.settings.addon,
            "service": state.settings.service,
            "instance": state.settings.instance,
        }),
    )
}

/// `GET /health`: 2xx (here 200 `{"status": "ok"}`) when the instance can serve. addond polls
/// it after a start and while running; anything else counts as unhealthy. Knobs: 503 "starting"
/// during `SAMPLE_HEALTH_DELAY_MS`, 500 "failing" after `POST /admin/health/fail`.
pub fn health(state: &State) -> Response {
    let uptime_ms = state.uptime_ms();
    let instance = &state.settings.instance;
    if uptime_ms < state.settings.health_delay.as_millis() as u64 {
        return Response::json(503, json!({ "status": "starting", "instance": instance, "uptime_ms": uptime_ms }));
    }
    if state.health_fail.load(Ordering::SeqCst) {
        return Response::json(500, json!({ "status": "failing", "instance": instance, "uptime_ms": uptime_ms }));
    }
    Response::json(200, json!({ "status": "ok", "instance": instance, "uptime_ms": uptime_ms }))
}

/// `POST /execute/{action}`: run an action on a JSON body (empty means `null`) and answer
/// its JSON result; 404 for an action the addon does not have, 4xx for a bad input, 5xx
/// when the action failed. addond forwards calls of its execute API here.
pub fn execute(state: &State, action: &str, req: &Request) -> Response {
    if !ACTIONS.contains(&action) {
        return Response::json(404, json!({ "error": format!("unknown action {action}"), "known": ACTIONS }));
    }
    let input = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    actions::run(state, action, input)
}

/// Escapes the five HTML-special characters: widget HTML embeds text from the request.
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

/// `POST /widgets/{widget}/render`: `{"config": {...}, "context": {...}}` in, `{"html",
/// "css", "javascript"}` out, embedded by addond's widget API in a host page.
pub fn render_widget(widget: &str, req: &Request) -> Response {
    if !WIDGETS.contains(&widget) {
        return Response::json(404, json!({ "error": format!("unknown widget {widget}"), "known": WIDGETS }));
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
    html.push_str(&format!("<h2 class=\"addond-checkout__title\">{}</h2>", html_escape(&title)));
    html.push_str("<dl class=\"addond-checkout__context\">");
    for (key, value) in &context {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        html.push_str(&format!("<dt>{}</dt><dd>{}</dd>", html_escape(key), html_escape(&text)));
    }
    html.push_str("</dl><button type=\"button\" class=\"addond-checkout__pay\">Pay</button></div>");
    let css = ".addond-checkout{font-family:sans-serif;border:1px solid #ccc;padding:1em;border-radius:4px}\
               .addond-checkout__title{margin:0 0 .5em}\
               .addond-checkout__pay{padding:.5em 1em}";
    let javascript = "document.querySelectorAll('.addond-checkout__pay').forEach(function(b){\
                      b.addEventListener('click',function(){b.textContent='Paid';});});";
    Response::json(200, json!({ "html": html, "css": css, "javascript": javascript }))
}

/// `POST /events`: one event addond delivers to a subscribed service (the body is the
/// event); any 2xx acknowledges it, anything else makes addond retry it with backoff (and
/// dead-letter it after its last attempt). Kept for `GET /events`.
/// Knob: 500 while `SAMPLE_EVENTS_FAIL` / `POST /admin/events/fail` is on.
pub fn post_event(state: &State, req: &Request) -> Response {
    if state.events_fail.load(Ordering::SeqCst) {
        state.events_rejected.fetch_add(1, Ordering::SeqCst);
        return Response::error(500, "POST /events is failing on purpose (SAMPLE_EVENTS_FAIL / POST /admin/events/fail)");
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

/// `GET /config`: the live configuration (not required by addond).
pub fn get_config(state: &State) -> Response {
    Response::json(200, lock(&state.config).clone())
}

/// `POST /config`: addond sends the service's new configuration; 2xx applies it live, 404
/// asks addond to restart the container instead (what `SAMPLE_CONFIG_RESTART` answers).
pub fn post_config(state: &State, req: &Request) -> Response {
    if state.settings.config_restart {
        return Response::error(404, "live config updates are not supported; restart the container");
    }
    let config = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    *lock(&state.config) = config.clone();
    let updates = state.config_updates.fetch_add(1, Ordering::SeqCst) + 1;
    Response::json(200, json!({ "ok": true, "config": config, "updates": updates }))
}
