//! Strict HTTP at the edges: protocol refusals answered with the JSON envelope on both
//! listeners, malformed chunked bodies as 400, refusals that keep keep-alive connections
//! usable, JSON bodies with trailing data refused, and error messages that name the field
//! and say what to send instead of quoting the parser.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Sends `raw` on a fresh connection and reads until the server closes it.
async fn raw_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, raw: &[u8]) -> String {
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// The status and the envelope of a raw answer; panics with the answer when it is not one.
fn envelope(out: &str, what: &str) -> (u16, Value) {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no answer: {out:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: the body is not the JSON envelope ({e}): {out:?}"));
    assert_eq!(v["success"], false, "{what}: {out}");
    assert!(v["error"]["code"].is_string() && v["error"]["message"].as_str().is_some_and(|m| m.len() > 20), "{what}: {out}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{what}: {head}");
    (status, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_refusals_answer_with_the_envelope() {
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let long_path = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers = format!("GET /health HTTP/1.1\r\nhost: x\r\n{}\r\n", (0..150).map(|i| format!("x-h{i}: 1\r\n")).collect::<String>());
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a bad request line", b"NOT AN HTTP REQUEST\r\n\r\n".to_vec(), 400),
        ("a NUL in a header", b"GET /health HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n".to_vec(), 400),
        (
            "conflicting Content-Lengths",
            b"POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
            400,
        ),
        ("a negative Content-Length", b"POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".to_vec(), 400),
        ("a Transfer-Encoding not ending in chunked", b"POST /health HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(), 400),
        ("a 70,000-byte path", long_path.into_bytes(), 414),
        ("150 headers", many_headers.into_bytes(), 431),
    ];
    for (what, raw, want) in &cases {
        let out = raw_exchange(tokio::net::TcpStream::connect(gw).await.expect("gateway"), raw).await;
        let (status, v) = envelope(&out, &format!("gateway, {what}"));
        assert_eq!(status, *want, "gateway, {what}: {v}");
        let out = raw_exchange(tokio::net::UnixStream::connect(&d.socket).await.expect("admin socket"), raw).await;
        let (status, v) = envelope(&out, &format!("admin socket, {what}"));
        assert_eq!(status, *want, "admin socket, {what}: {v}");
    }
    // Both listeners still serve.
    assert_eq!(d.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunked_body_is_a_400_and_trailing_json_is_refused() {
    let d = Daemon::start().await;
    let out = raw_exchange(
        tokio::net::UnixStream::connect(&d.socket).await.expect("admin socket"),
        format!(
            "POST {SVC} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let (status, v) = envelope(&out, "a malformed chunk");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_body", "{v}");
    assert_eq!(v["error"]["field"], "body", "{v}");

    // A JSON value with more after it is refused, whatever the route would make of the first.
    for (path, body) in [
        ("/api/plugin-microservice/cleanup", r#"{"days": 36500}{"days":"#),
        ("/api/plugin-microservice/cleanup", r#"{"days": 36500} trailing"#),
        ("/api/events", r#"{"name": "a.b"}{"name": "c.d"}"#),
    ] {
        let r = d.client.request_raw(addond::client::Method::POST, path, None).await.expect("request");
        assert!(r.status >= 400, "an empty body is refused too");
        let out = raw_exchange(
            tokio::net::UnixStream::connect(&d.socket).await.expect("admin socket"),
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        )
        .await;
        let (status, v) = envelope(&out, body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_json", "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("after its JSON value"), "{body}: {v}");
    }
    let r = d.get("/api/events").await;
    assert!(r.data().as_array().unwrap().is_empty(), "nothing was emitted: {:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_keep_keep_alive_clients_whole() {
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let (clients, per_client) = (40, 30);
    let errors = Arc::new(AtomicUsize::new(0));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (errors, reconnects) = (errors.clone(), reconnects.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<tokio::net::TcpStream> = None;
            let mut first_error = None;
            for i in 0..per_client {
                // Small bodies most of the time, now and then one too large to read first.
                let size = if (c + i) % 5 == 0 { 300 * 1024 } else { 2 * 1024 };
                let body = vec![b'x'; size];
                let mut req = format!(
                    "POST /api/addons/pay/execute HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
                )
                .into_bytes();
                req.extend_from_slice(&body);
                let s = match conn.as_mut() {
                    Some(s) => s,
                    None => {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        conn.insert(tokio::net::TcpStream::connect(gw).await.expect("connect"))
                    }
                };
                match exchange(s, &req).await {
                    Ok((st, headers, _)) => {
                        assert!(st == 401 || st == 429, "a refusal, not {st}");
                        if headers.iter().any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close")) {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                        conn = None;
                    }
                }
            }
            first_error
        }));
    }
    let mut first = None;
    for t in tasks {
        if let Some(e) = t.await.expect("client") {
            first.get_or_insert(e);
        }
    }
    let (errors, reconnects) = (errors.load(Ordering::Relaxed), reconnects.load(Ordering::Relaxed));
    eprintln!("{} requests, {errors} broken, {reconnects} connections", clients * per_client);
    assert_eq!(errors, 0, "requests that died (EPIPE, reset, no answer); first: {first:?}");
    assert!(
        reconnects < clients * per_client / 2,
        "small refused bodies are read so the connection stays usable: {reconnects} connections"
    );
}

/// Where a bad body goes: the admin socket, or the gateway with an API key.
enum Target<'a> {
    Admin,
    Gateway(std::net::SocketAddr, &'a str),
}

/// Sends `body` to `path` and returns the answer's status and envelope.
async fn post_raw(d: &Daemon, to: &Target<'_>, method: &str, path: &str, body: &str) -> (u16, Value) {
    let head = |extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}", body.len())
    };
    let out = match to {
        Target::Admin => raw_exchange(tokio::net::UnixStream::connect(&d.socket).await.expect("admin socket"), head("").as_bytes()).await,
        Target::Gateway(gw, key) => {
            raw_exchange(tokio::net::TcpStream::connect(gw).await.expect("gateway"), head(&format!("apikey: {key}\r\n")).as_bytes()).await
        }
    };
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path} {body}: no answer"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_messages_that_name_the_field() {
    let d = Daemon::start().await;
    let svc = d.create_started("target", json!({})).await;
    let sid = svc["id"].as_str().unwrap().to_string();
    // An installed addon and a key for it, for the gateway's two routes that take a body.
    let manifest = json!({
        "name": "pay", "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "actions": ["add"], "widgets": [{"name": "checkout", "category": "form"}]
    });
    assert_eq!(d.post("/api/addons/register", manifest).await.status, 201);
    let r = d.post("/api/addons/pay/install?wait=started&timeout=180", json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/applications", json!({"name": "shop"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": "shop", "addon": "pay"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.data()["api_key"].as_str().unwrap().to_string();
    let gw = d.gateway().await;
    let gateway = Target::Gateway(gw, &key);
    let gateway_routes: &[(&str, String)] = &[("POST", "/api/addons/pay/execute".into()), ("POST", "/api/widgets/pay/checkout".into())];
    let routes: &[(&str, String)] = &[
        ("POST", SVC.to_string()),
        ("POST", format!("{SVC}/{sid}/scale")),
        ("POST", "/api/plugin-microservice/templates/rest_api_basic/create".into()),
        ("POST", "/api/plugin-microservice/cleanup".into()),
        ("POST", "/api/plugin-microservice/images/pull".into()),
        ("POST", "/api/addons/register".into()),
        ("POST", "/api/addons/pay/install".into()),
        ("PUT", "/api/addons/pay/config".into()),
        ("POST", "/api/addons/pay/execute".into()),
        ("POST", "/api/widgets/pay/checkout".into()),
        ("POST", "/api/applications".into()),
        ("POST", "/api/application-grants".into()),
        ("PATCH", "/api/application-grants/nope".into()),
        ("POST", "/api/application-grants/nope/rotate".into()),
        ("POST", "/api/events".into()),
        ("POST", "/api/events/redrive".into()),
    ];
    let bodies = [
        "",
        "{",
        r#"{"name": "#,
        "[1, 2]",
        r#""text""#,
        "nul",
        "{} {",
        r#"{"no_such_field": 1}"#,
        r#"{"name": 5, "image": [], "replicas": "two", "days": "x", "action": 7, "application": {}, "config": 1, "subscriber": []}"#,
        r#"{"name": "x", "image": "img:1", "volumes": [5]}"#,
        r#"{"name": "x", "image": "img:1", "volumes": [{"source": "a"}]}"#,
        r#"{"name": "x", "image": "img:1", "resource_limits": {"memory": [], "cpu": {}}}"#,
        r#"{"name": "x", "version": "1.0.0", "actions": [5], "widgets": [{"title": "x"}]}"#,
        r#"{"name": "x", "version": "1.0.0", "services": [{"name": "api", "volumes": [true]}]}"#,
        r#"{"replicas": -1.5}"#,
        r#"{"rate_limit": {"requests_per_second": "fast"}}"#,
    ];
    let mut checked = 0;
    let targets = routes.iter().map(|r| (&Target::Admin, r)).chain(gateway_routes.iter().map(|r| (&gateway, r)));
    for (to, (method, path)) in targets {
        for body in bodies {
            let (status, v) = post_raw(&d, to, method, path, body).await;
            assert!((400..500).contains(&status), "{method} {path} {body}: {status} {v}");
            let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{method} {path} {body}: no envelope: {v}"));
            for raw in [
                "line 1 column",
                "untagged enum",
                "struct ",
                "EOF while",
                "expected u16",
                "expected u32",
                "expected u64",
                "expected i64",
                "expected f64",
                "expected usize",
                "sequence",
                "expected a map",
            ] {
                assert!(!message.contains(raw), "{method} {path} {body}: the parser's own text `{raw}` in: {message}");
            }
            if status == 400 {
                let field = v["error"]["field"].as_str().unwrap_or("");
                assert!(!field.is_empty(), "{method} {path} {body}: the 400 names no field: {v}");
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} answers were 400s");
}
