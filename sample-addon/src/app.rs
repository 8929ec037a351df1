//! The one list of routes: which handler answers which method and path. The handlers of the
//! container contract are in [`crate::contract`], the test-only ones in [`crate::knobs`];
//! the streaming routes (`/upload`, `/download`, `/ws`) never get here, the connection
//! serves them itself ([`crate::net::stream`]).

use serde_json::json;

use crate::contract;
use crate::knobs;
use crate::net::http::{percent_decode, Request};
use crate::net::response::{method_not_allowed, Response};
use crate::state::State;

/// Dispatch one request. Never panics on client input.
pub fn route(state: &State, req: &Request) -> Response {
    // HEAD is answered like GET (the connection handler drops the body).
    let method = if req.method == "HEAD" { "GET" } else { req.method.as_str() };
    let segments: Vec<&str> = req.path.split('/').skip(1).collect();
    match segments.as_slice() {
        [""] => match method {
            "GET" => contract::root(state),
            _ => method_not_allowed(&["GET"]),
        },
        ["health"] => match method {
            "GET" => contract::health(state),
            _ => method_not_allowed(&["GET"]),
        },
        ["execute", action] => match method {
            "POST" => match percent_decode(action) {
                Some(action) => contract::execute(state, &action, req),
                None => Response::error(400, "malformed action name"),
            },
            _ => method_not_allowed(&["POST"]),
        },
        ["widgets", widget, "render"] => match method {
            "POST" => match percent_decode(widget) {
                Some(widget) => {
                    knobs::burn_cpu(state.settings.render_cpu);
                    contract::render_widget(&widget, req)
                }
                None => Response::error(400, "malformed widget name"),
            },
            _ => method_not_allowed(&["POST"]),
        },
        ["events"] => match method {
            "POST" => contract::post_event(state, req),
            "GET" => knobs::get_events(state),
            "DELETE" => knobs::clear_events(state),
            _ => method_not_allowed(&["GET", "POST", "DELETE"]),
        },
        ["headers"] => knobs::headers(req),
        ["config"] => match method {
            "GET" => contract::get_config(state),
            "POST" => contract::post_config(state, req),
            _ => method_not_allowed(&["GET", "POST"]),
        },
        ["admin", "health", which @ ("fail" | "ok")] => match method {
            "POST" => knobs::set_health_failing(state, *which == "fail"),
            _ => method_not_allowed(&["POST"]),
        },
        ["admin", "events", which @ ("fail" | "ok")] => match method {
            "POST" => knobs::set_events_failing(state, *which == "fail"),
            _ => method_not_allowed(&["POST"]),
        },
        ["admin", "exit"] => match method {
            "POST" => knobs::admin_exit(req),
            _ => method_not_allowed(&["POST"]),
        },
        ["admin", "oom"] => match method {
            "POST" => knobs::admin_oom(),
            _ => method_not_allowed(&["POST"]),
        },
        _ => Response::json(404, json!({ "error": format!("no route for {} {}", req.method, req.path) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::ACTIONS;
    use crate::contract::{html_escape, VERSION, WIDGETS};
    use crate::net::response::After;
    use crate::state::{Secret, Settings, MAX_EVENTS};
    use serde_json::Value;
    use std::time::{Duration, Instant};

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
        let s = State::new(Settings { health_delay: Duration::from_millis(150), ..settings() });
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

        assert_eq!(call(&s, "POST", "/execute/add", r#"{"a":1,"b":2}"#), (200, json!({ "sum": 3 })));
        assert_eq!(call(&s, "POST", "/execute/add", r#"{"a":1.5,"b":2}"#), (200, json!({ "sum": 3.5 })));
        let big = format!(r#"{{"a":{},"b":1}}"#, i64::MAX);
        assert_eq!(call(&s, "POST", "/execute/add", &big).0, 200);
        let (st, b) = call(&s, "POST", "/execute/add", r#"{"a":"1","b":2}"#);
        assert_eq!(st, 400);
        assert!(b["error"].is_string());
        assert_eq!(call(&s, "POST", "/execute/add", r#"{"a":1}"#).0, 400);
        assert_eq!(call(&s, "POST", "/execute/add", "[1,2]").0, 400);
        assert_eq!(call(&s, "POST", "/execute/add", "{not json").0, 400);

        let t = Instant::now();
        assert_eq!(call(&s, "POST", "/execute/sleep", r#"{"ms":50}"#), (200, json!({ "slept_ms": 50 })));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(call(&s, "POST", "/execute/sleep", r#"{"ms":-1}"#).0, 400);
        assert_eq!(call(&s, "POST", "/execute/sleep", "{}").0, 400);
        assert_eq!(call(&s, "POST", "/execute/sleep", r#"{"ms":99999999}"#).0, 400);

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
    fn renders_burn_the_configured_cpu() {
        let s = State::new(Settings { render_cpu: Duration::from_millis(5), ..settings() });
        let t0 = Instant::now();
        let (st, _) = call(&s, "POST", "/widgets/checkout/render", "{}");
        assert_eq!(st, 200);
        assert!(t0.elapsed() >= Duration::from_millis(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn widget_render() {
        let s = State::new(settings());
        let (st, b) =
            call(&s, "POST", "/widgets/checkout/render", r#"{"config":{"title":"Pay <now>"},"context":{"user":"a&b","amount":12.5}}"#);
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
        assert_eq!(call(&s, "POST", "/widgets/checkout/render", r#"{"config":3}"#).0, 400);
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
        assert_eq!((b["rejected"].as_u64(), b["failing"].as_bool()), (Some(0), Some(false)));
    }

    #[test]
    fn events_can_fail_on_purpose() {
        let s = State::new(Settings { events_fail: true, ..settings() });
        let (st, b) = call(&s, "POST", "/events", r#"{"name":"x"}"#);
        assert_eq!(st, 500);
        assert!(b["error"].is_string());
        let (_, b) = call(&s, "GET", "/events", "");
        assert_eq!((b["count"].as_u64(), b["rejected"].as_u64()), (Some(0), Some(1)));
        assert_eq!(b["failing"], true);
        assert_eq!(call(&s, "POST", "/admin/events/ok", ""), (200, json!({ "ok": true, "events": "ok" })));
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
        let s = State::new(Settings { api: None, token: None, ..settings() });
        let (_, b) = call(&s, "POST", "/execute/env", "{}");
        assert_eq!((b["api"].clone(), b["token_present"].clone()), (Value::Null, json!(false)));
    }

    fn with_api(api: &str) -> State {
        State::new(Settings { api: Some(api.to_string()), ..settings() })
    }

    #[test]
    fn api_action_json_round_trip() {
        let reply = r#"{"success":true,"data":{"id":"e1"}}"#;
        let (base, rx) = crate::net::client::tests::one_shot(
            format!("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}", reply.len())
                .into_bytes(),
        );
        let s = with_api(&base);
        let (st, b) =
            call(&s, "POST", "/execute/api", r#"{"method":"post","path":"/v1/events","body":{"name":"order.created","data":{"n":1}}}"#);
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["status"], 201);
        assert_eq!(b["body"], json!({ "success": true, "data": { "id": "e1" } }));
        assert_eq!(b["content_type"], "application/json");
        let (head, body) = rx.recv().unwrap();
        assert!(head.starts_with("POST /v1/events HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Authorization: Bearer at_x_secret\r\n"), "{head}");
        assert!(head.contains("Content-Type: application/json\r\n"), "{head}");
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
        assert!(!head.to_ascii_lowercase().contains("authorization"), "{head}");
        assert!(head.contains("X-Test: 1\r\n") && head.contains("Content-Type: application/octet-stream\r\n"));
        assert_eq!(body, b"raw bytes");

        // A JSON Content-Type with a body that is not JSON: text as well.
        let (base, _rx) = crate::net::client::tests::one_shot(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
        );
        let (st, b) = call(&with_api(&base), "POST", "/execute/api", r#"{"method":"GET","path":"/v1/kv/x"}"#);
        assert_eq!((st, b["status"].clone(), b["body"].clone()), (200, json!(404), json!("nope")));
    }

    #[test]
    fn api_action_errors() {
        // No ADDOND_API: 502.
        let s = State::new(Settings { api: None, ..settings() });
        let (st, b) = call(&s, "POST", "/execute/api", r#"{"method":"GET","path":"/v1/health"}"#);
        assert_eq!(st, 502);
        assert!(b["error"].as_str().unwrap().contains("ADDOND_API"));
        // Nothing listening: 502.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = with_api(&format!("http://127.0.0.1:{port}"));
        let (st, b) = call(&s, "POST", "/execute/api", r#"{"method":"GET","path":"/v1/health"}"#);
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
        assert_eq!(call(&s, "GET", "/config", ""), (200, json!({ "currency": "EUR" })));
        let (st, b) = call(&s, "POST", "/config", r#"{"currency":"USD"}"#);
        assert_eq!((st, b["ok"].as_bool()), (200, Some(true)));
        assert_eq!(call(&s, "GET", "/config", "").1, json!({ "currency": "USD" }));
        assert_eq!(call(&s, "POST", "/config", "{oops").0, 400);

        let s = State::new(Settings { config_restart: true, ..settings() });
        assert_eq!(call(&s, "POST", "/config", r#"{"currency":"USD"}"#).0, 404);
        assert_eq!(call(&s, "GET", "/config", "").1, json!({ "currency": "EUR" }));
    }

    #[test]
    fn admin_exit_and_oom() {
        let s = State::new(settings());
        let r = route(&s, &req("POST", "/admin/exit?code=3", ""));
        assert_eq!((r.status, r.after, r.close), (200, After::Exit(3), true));
        assert_eq!(route(&s, &req("POST", "/admin/exit", "")).after, After::Exit(0));
        assert_eq!(route(&s, &req("POST", "/admin/exit?code=300", "")).status, 400);
        assert_eq!(route(&s, &req("POST", "/admin/exit?code=x", "")).after, After::Nothing);
        assert_eq!(route(&s, &req("POST", "/admin/oom", "")).after, After::Oom);
        assert_eq!(route(&s, &req("GET", "/admin/oom", "")).status, 405);
    }

    #[test]
    fn headers_echo() {
        let s = State::new(settings());
        let mut r = req("POST", "/headers", "ignored");
        r.headers =
            vec![("host".into(), "h".into()), ("x-forwarded-for".into(), "1.2.3.4".into()), ("x-forwarded-for".into(), "5.6.7.8".into())];
        let resp = route(&s, &r);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, json!({ "host": "h", "x-forwarded-for": "1.2.3.4, 5.6.7.8" }));
        assert_eq!(call(&s, "GET", "/headers", ""), (200, json!({})));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(html_escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
