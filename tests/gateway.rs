//! The gateway over real loopback TCP: keys and their scope, rotation and revocation,
//! every route's auth rule, rate-limit accuracy, failed-auth limits that a forged
//! `X-Forwarded-For` cannot dodge, body limits, streaming and WebSocket passthrough, CORS,
//! audit, and keys that never appear in clear at rest.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

fn manifest(name: &str) -> Value {
    json!({
        "name": name, "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "actions": ["add", "echo"],
        "widgets": [{"name": "checkout", "category": "form"}]
    })
}

/// Registers and installs `name`, creates an application and a grant, returns the key.
async fn setup(d: &Daemon, name: &str, app: &str, grant_extra: Value) -> (String, String) {
    let r = d.post("/api/addons/register", manifest(name)).await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
    let r = d.post(&format!("/api/addons/{name}/install?wait=started&timeout=180"), json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/applications", json!({"name": app, "organization": "Acme"})).await;
    assert!(r.status == 201 || r.status == 409, "{:?}", r.body);
    let mut body = json!({"application": app, "addon": name});
    if let Some(o) = grant_extra.as_object() {
        for (k, v) in o {
            body[k] = v.clone();
        }
    }
    let r = d.post("/api/application-grants", body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.message().unwrap().contains("never shown again"));
    (r.data()["api_key"].as_str().unwrap().to_string(), r.data()["id"].as_str().unwrap().to_string())
}

/// One HTTP/1.1 request over a fresh TCP connection: (status, headers, body).
async fn req(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head.lines().skip(1).filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    (status, headers, body.to_string())
}

/// The key with its last hex digit changed (to another digit, whatever it was).
fn wrong_secret(key: &str) -> String {
    let (head, last) = key.split_at(key.len() - 1);
    format!("{head}{}", if last == "0" { '1' } else { '0' })
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_has_an_auth_rule_and_enforces_it() {
    use addond::gateway::{AuthRule, ROUTES};
    // Only the gateway's own liveness and its OpenAPI document are public; a new public route
    // must be added here on purpose.
    let public: Vec<&str> = ROUTES.iter().filter(|r| r.auth == AuthRule::Public).map(|r| r.path).collect();
    // `/openapi.json`: the document of the gateway's routes, which says how to get a key.
    assert_eq!(public, vec!["/health", "/openapi.json"]);
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let (key, _) = setup(&d, "pay", "shop", json!({})).await;
    let (other_key, _) = setup(&d, "other", "shop2", json!({})).await;
    for route in ROUTES {
        let method = if route.path.ends_with("/execute") { "POST" } else { "GET" };
        let body = if method == "POST" { br#"{"action":"add","data":{"a":1,"b":1}}"#.as_slice() } else { b"" };
        let (st, _, b) = req(gw, method, route.example, &[], body).await;
        match route.auth {
            AuthRule::Public => assert_eq!(st, 200, "{}: {b}", route.path),
            AuthRule::GrantForAddon => {
                assert_eq!(st, 401, "{} without a key: {b}", route.path);
                assert_eq!(code(&b), "missing_api_key");
                let (st, _, b) = req(gw, method, route.example, &[("apikey", &other_key)], body).await;
                assert_eq!(st, 403, "{} with a key for another addon: {b}", route.path);
                let (st, _, b) = req(gw, method, route.example, &[("apikey", &wrong_secret(&key))], body).await;
                assert_eq!(st, 401, "{} with a wrong secret: {b}", route.path);
                assert_eq!(code(&b), "invalid_api_key");
                let (st, _, b) = req(gw, method, route.example, &[("authorization", &format!("Bearer {key}"))], body).await;
                assert!(st != 401 && st != 403, "{} with its key: {st} {b}", route.path);
            }
            AuthRule::AnyGrant => {
                assert_eq!(st, 401, "{} without a key: {b}", route.path);
                assert_eq!(code(&b), "missing_api_key");
                let (st, _, b) = req(gw, method, route.example, &[("apikey", &wrong_secret(&key))], body).await;
                assert_eq!(st, 401, "{} with a wrong secret: {b}", route.path);
                assert_eq!(code(&b), "invalid_api_key");
                // Past the key check (what answers then is the route's own business: tests/mcp.rs).
                let (st, _, b) = req(gw, method, route.example, &[("authorization", &format!("Bearer {key}"))], body).await;
                assert!(st != 401, "{} with its key: {st} {b}", route.path);
            }
        }
    }
    // the admin API is never served on the gateway
    for path in ["/api/plugin-microservice/services", "/api/applications", "/api/application-grants", "/metrics", "/api/audit"] {
        let (st, _, _) = req(gw, "GET", path, &[("apikey", &key)], b"").await;
        assert_eq!(st, 404, "{path} must not exist on the gateway");
    }
    // execute and widgets through the gateway
    let (st, _, b) = req(gw, "POST", "/api/addons/pay/execute", &[("apikey", &key)], br#"{"action":"add","data":{"a":20,"b":22}}"#).await;
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("\"sum\":42"), "{b}");
    let (st, h, b) = req(gw, "GET", "/api/widgets/pay/checkout", &[("apikey", &key)], b"").await;
    assert_eq!(st, 200, "{b}");
    let etag = h.iter().find(|(k, _)| k == "etag").map(|(_, v)| v.clone()).unwrap();
    let (st, _, _) = req(gw, "GET", "/api/widgets/pay/checkout", &[("apikey", &key), ("if-none-match", &etag)], b"").await;
    assert_eq!(st, 304);
    let (st, h, b) = req(gw, "GET", "/api/widgets/pay/checkout/frame", &[("apikey", &key)], b"").await;
    assert_eq!(st, 200);
    assert!(b.starts_with("<!doctype html>"));
    assert!(h.iter().any(|(k, v)| k == "content-security-policy" && v.starts_with("sandbox")));

    // Warm renders are answered by their raw query; another spelling of the same input hits
    // the canonical entry; a config change makes both miss.
    let x_cache = |h: &[(String, String)]| h.iter().find(|(k, _)| k == "x-cache").map(|(_, v)| v.clone()).unwrap_or_default();
    let q = "/api/widgets/pay/checkout?config=%7B%22title%22%3A%22A%22%2C%22n%22%3A1%7D&context=%7B%22cart%22%3A7%7D";
    let respelled = "/api/widgets/pay/checkout?context=%7B%20%22cart%22%3A%207%20%7D&config=%7B%22n%22%3A1%2C%22title%22%3A%22A%22%7D";
    let (st, h, first) = req(gw, "GET", q, &[("apikey", &key)], b"").await;
    assert_eq!((st, x_cache(&h).as_str()), (200, "miss"), "{first}");
    let (st, h, again) = req(gw, "GET", q, &[("apikey", &key)], b"").await;
    assert_eq!((st, x_cache(&h).as_str()), (200, "hit"));
    assert_eq!(again, first, "a hit answers the same bytes");
    let (st, h, b) = req(gw, "GET", respelled, &[("apikey", &key)], b"").await;
    assert_eq!((st, x_cache(&h).as_str(), b.as_str()), (200, "hit", first.as_str()));
    // A query that does not parse is refused every time, never cached.
    for _ in 0..2 {
        let (st, _, b) = req(gw, "GET", "/api/widgets/pay/checkout?config=%7Bnope", &[("apikey", &key)], b"").await;
        assert_eq!(st, 400, "{b}");
    }
    let r = d.client.put("/api/addons/pay/config", Some(&json!({"config": {"currency": "USD"}}))).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (st, h, b) = req(gw, "GET", q, &[("apikey", &key)], b"").await;
    assert_eq!((st, x_cache(&h).as_str()), (200, "miss"), "after a config change: {b}");
    for path in [q, respelled] {
        let (_, h, _) = req(gw, "GET", path, &[("apikey", &key)], b"").await;
        assert_eq!(x_cache(&h), "hit", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_and_rotated_keys() {
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let (key, grant) = setup(&d, "pay", "shop", json!({})).await;
    let call = |k: String| async move { req(gw, "GET", "/gw/pay/health", &[("apikey", &k)], b"").await };
    assert_eq!(call(key.clone()).await.0, 200);
    // rotation with a grace: both keys work, then only the new one
    let r = d.post(&format!("/api/application-grants/{grant}/rotate"), json!({"grace_seconds": 2})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let key2 = r.data()["api_key"].as_str().unwrap().to_string();
    assert_ne!(key, key2);
    assert_eq!(call(key.clone()).await.0, 200, "old key inside its grace");
    assert_eq!(call(key2.clone()).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (st, _, b) = call(key.clone()).await;
    assert_eq!(st, 401, "old key after its grace: {b}");
    assert_eq!(call(key2.clone()).await.0, 200);
    // rotation without grace: the old key is refused from the very next request
    let r = d.post(&format!("/api/application-grants/{grant}/rotate"), json!({})).await;
    let key3 = r.data()["api_key"].as_str().unwrap().to_string();
    assert_eq!(call(key2.clone()).await.0, 401);
    assert_eq!(call(key3.clone()).await.0, 200);
    // revocation: refused from the very next request
    let r = d.post(&format!("/api/application-grants/{grant}/revoke"), json!({})).await;
    assert_eq!(r.status, 200);
    let (st, _, b) = call(key3.clone()).await;
    assert_eq!(st, 401, "{b}");
    assert_eq!(code(&b), "revoked_api_key");
    // keys are never stored or logged in clear
    let db = std::fs::read(d.data_dir().join("addond.db")).unwrap();
    let wal = std::fs::read(d.data_dir().join("addond.db-wal")).unwrap_or_default();
    let log = d.log();
    for k in [&key, &key2, &key3] {
        let secret = k.rsplit('_').next().unwrap();
        for (what, hay) in [("database", &db), ("wal", &wal), ("log", &log.as_bytes().to_vec())] {
            assert!(!hay.windows(secret.len()).any(|w| w == secret.as_bytes()), "key secret found in the {what}");
        }
    }
    // the audit log has the admin changes (with uid) and the denials (with source)
    let r = d.get("/api/audit?limit=200").await;
    let entries = r.data().as_array().unwrap();
    assert!(entries.iter().any(|e| e["path"].as_str().unwrap().ends_with("/revoke") && e["uid"].is_number()));
    assert!(
        entries.iter().any(|e| e["status"] == 401 && e["source"] == "127.0.0.1" && e["detail"].as_str().unwrap().contains("revoked")),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_is_accurate_under_ten_times_overload() {
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let rate = 40.0;
    // default burst: one second's worth
    let (key, _) = setup(&d, "pay", "shop", json!({"rate_limit": {"requests_per_second": rate}})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let secs = 5.0;
    let mut tasks = Vec::new();
    // 10× the rate: 8 workers each pacing 50 requests/s
    for w in 0..8u64 {
        let (stop, ok, limited, key) = (stop.clone(), ok.clone(), limited.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(2500 * w)).await;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (st, h, _) = req(gw, "GET", "/gw/pay/health", &[("apikey", &key)], b"").await;
                match st {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => {
                        assert!(h.iter().any(|(k, _)| k == "retry-after"), "429 without Retry-After");
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected {other}"),
                };
            }
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed) as f64;
    // a token bucket passes its burst, then exactly its rate
    let expected = rate * elapsed + rate;
    let total = ok + limited.load(Ordering::Relaxed) as f64;
    eprintln!("rate limit: {ok} passed of {total} in {elapsed:.2}s, expected {expected:.0}");
    assert!(total >= 8.0 * rate * 0.8 * secs, "the load did not reach 10× the rate: {total}");
    assert!((ok - expected).abs() <= expected * 0.05, "{ok} passed, expected {expected:.0} ± 5%");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_auth_is_limited_per_source_and_forged_forwarded_for_changes_nothing() {
    let d = Daemon::start_with(Options { gateway_extra: "failed_auth_per_minute = 5".into(), ..Default::default() }).await;
    let gw = d.gateway().await;
    let bad = "ak_000000000000_0000000000000000000000000000000000000000000000000000000000000000";
    for i in 0..5 {
        let (st, _, _) = req(gw, "GET", "/gw/pay/x", &[("apikey", bad), ("x-forwarded-for", &format!("10.9.9.{i}"))], b"").await;
        assert_eq!(st, 401);
    }
    // a forged X-Forwarded-For from an untrusted peer does not buy a new budget
    let (st, h, b) = req(gw, "GET", "/gw/pay/x", &[("apikey", bad), ("x-forwarded-for", "10.1.2.3")], b"").await;
    assert_eq!(st, 429, "{b}");
    assert_eq!(code(&b), "too_many_failures");
    assert!(h.iter().any(|(k, v)| k == "retry-after" && v.parse::<u64>().unwrap() >= 1));
    let r = d.get("/api/audit?limit=20").await;
    assert!(
        r.data().as_array().unwrap().iter().filter(|e| e["source"].is_string()).all(|e| e["source"] == "127.0.0.1"),
        "the forged address must not be recorded as the source"
    );

    // with the peer configured as a trusted proxy, the forwarded address counts
    let d2 = Daemon::start_with(Options {
        gateway_extra: "failed_auth_per_minute = 5\ntrusted_proxies = [\"127.0.0.1\"]".into(),
        ..Default::default()
    })
    .await;
    let gw2 = d2.gateway().await;
    for _ in 0..5 {
        assert_eq!(req(gw2, "GET", "/gw/pay/x", &[("apikey", bad), ("x-forwarded-for", "10.1.1.1")], b"").await.0, 401);
    }
    assert_eq!(req(gw2, "GET", "/gw/pay/x", &[("apikey", bad), ("x-forwarded-for", "10.1.1.1")], b"").await.0, 429);
    assert_eq!(
        req(gw2, "GET", "/gw/pay/x", &[("apikey", bad), ("x-forwarded-for", "10.2.2.2")], b"").await.0,
        401,
        "another client behind the proxy has its own budget"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_rotation_through_a_trusted_proxy_still_hits_a_limit() {
    let d = Daemon::start_with(Options {
        gateway_extra:
            "failed_auth_per_minute = 3\nfailed_auth_per_proxy_per_minute = 20\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]".into(),
        ..Default::default()
    })
    .await;
    let gw = d.gateway().await;
    let bad = "ak_000000000000_0000000000000000000000000000000000000000000000000000000000000000";
    let fail = |xff: String| async move { req(gw, "GET", "/gw/pay/x", &[("apikey", bad), ("x-forwarded-for", &xff)], b"").await.0 };

    // The client is the rightmost hop that is not a trusted proxy; what it wrote to the
    // left of it changes nothing.
    assert_eq!(fail("198.51.100.7, 10.1.1.1".into()).await, 401);
    assert_eq!(fail("6.6.6.6, 198.51.100.7".into()).await, 401);
    assert_eq!(fail("7.7.7.7, 198.51.100.7, 10.2.2.2".into()).await, 401);
    assert_eq!(fail("198.51.100.7".into()).await, 429, "the fourth failure of 198.51.100.7, whatever it put on the left");
    tokio::time::sleep(Duration::from_millis(300)).await; // denials are audited in batches
    let r = d.get("/api/audit?limit=10").await;
    let sources: Vec<&str> = r.data().as_array().unwrap().iter().filter_map(|e| e["source"].as_str()).collect();
    assert!(sources.iter().all(|s| *s == "198.51.100.7"), "{sources:?}");

    // IPv6 clients count per /64.
    for i in 1..=3 {
        assert_eq!(fail(format!("2001:db8:aa:bb::{i}")).await, 401);
    }
    assert_eq!(fail("2001:db8:aa:bb:ffff::9".into()).await, 429, "another address in the same /64");

    // A local process rotating X-Forwarded-For through the trusted proxy: every address is
    // new, but the proxy's own budget runs out (20 per minute, 8 spent above).
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(fail(format!("203.0.113.{i}")).await);
    }
    let passed = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(passed, 20 - 8, "{statuses:?}");
    assert!(statuses[passed..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_headers_body_limit_and_cors() {
    let d = Daemon::start_with(Options { gateway_extra: "max_body_bytes = 65536".into(), ..Default::default() }).await;
    let gw = d.gateway().await;
    let (key, grant) = setup(&d, "pay", "shop", json!({"allowed_origins": ["https://shop.example"]})).await;
    // the passthrough reaches the addon and strips the key and hop-by-hop headers
    let (st, _, b) = req(gw, "GET", "/gw/pay/config?x=1", &[("apikey", &key)], b"").await;
    assert_eq!(st, 200, "{b}");
    let (st, _, b) = req(
        gw,
        "POST",
        "/gw/pay/execute/echo",
        &[("authorization", &format!("Bearer {key}")), ("content-type", "application/json")],
        br#"{"hello":"world"}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("world"), "{b}");
    // 413 on an oversized body, before it reaches the addon
    let big = vec![b'x'; 100 * 1024];
    let (st, _, b) = req(gw, "POST", "/gw/pay/execute/echo", &[("apikey", &key)], &big).await;
    assert_eq!(st, 413, "{b}");
    let (st, _, _) = req(gw, "POST", "/api/addons/pay/execute", &[("apikey", &key)], &big).await;
    assert_eq!(st, 413);
    // CORS: preflight answered without a key for an allowed origin, refused otherwise
    let (st, h, _) = req(
        gw,
        "OPTIONS",
        "/api/addons/pay/execute",
        &[("origin", "https://shop.example"), ("access-control-request-method", "POST")],
        b"",
    )
    .await;
    assert_eq!(st, 204);
    assert!(h.iter().any(|(k, v)| k == "access-control-allow-origin" && v == "https://shop.example"));
    assert!(h.iter().any(|(k, v)| k == "access-control-allow-headers" && v.contains("apikey")));
    let (st, _, _) = req(
        gw,
        "OPTIONS",
        "/api/addons/pay/execute",
        &[("origin", "https://evil.example"), ("access-control-request-method", "POST")],
        b"",
    )
    .await;
    assert_eq!(st, 403);
    let (_, h, _) = req(gw, "GET", "/gw/pay/health", &[("apikey", &key), ("origin", "https://shop.example")], b"").await;
    assert!(h.iter().any(|(k, v)| k == "access-control-allow-origin" && v == "https://shop.example"));
    let (_, h, _) = req(gw, "GET", "/gw/pay/health", &[("apikey", &key), ("origin", "https://evil.example")], b"").await;
    assert!(!h.iter().any(|(k, _)| k == "access-control-allow-origin"));
    // origins are validated when a grant is changed
    let r = d
        .client
        .request(
            addond::client::Method::PATCH,
            &format!("/api/application-grants/{grant}"),
            Some(&json!({"allowed_origins": ["shop.example/"]})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "allowed_origins[0]");
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_through_without_buffering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start_with(Options { gateway_extra: "max_body_bytes = 268435456".into(), ..Default::default() }).await;
    let gw = d.gateway().await;
    let (key, _) = setup(&d, "pay", "shop", json!({})).await;
    let pid = d.child.as_ref().unwrap().id();
    let before = vm_hwm_kb(pid);
    // 64 MiB up, sent in chunks as they are produced
    let total: usize = 64 << 20;
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(
        format!("POST /gw/pay/upload HTTP/1.1\r\nhost: gw\r\napikey: {key}\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut hash: u64 = 0xcbf29ce484222325;
    for _ in 0..total / chunk.len() {
        s.write_all(&chunk).await.unwrap();
        for b in &chunk {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(&format!("\"bytes\":{total}")), "{out}");
    assert!(out.contains(&format!("{hash:016x}")), "checksum differs: {out}");
    // 64 MiB down
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(
        format!("GET /gw/pay/download?bytes={total} HTTP/1.1\r\nhost: gw\r\napikey: {key}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got > total, "headers and chunk framing come on top of {total} bytes: got {got}");
    let grown_mb = (vm_hwm_kb(pid).saturating_sub(before)) / 1024;
    eprintln!("daemon peak RSS grew by {grown_mb} MiB while 128 MiB passed through");
    assert!(grown_mb < 32, "the gateway buffered the body: peak RSS grew by {grown_mb} MiB");
}

/// A minimal WebSocket client: handshake through the gateway, then masked text frames.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let (key, _) = setup(&d, "pay", "shop", json!({})).await;
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    let hs = format!(
        "GET /gw/pay/ws HTTP/1.1\r\nhost: gw\r\napikey: {key}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(hs.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed during handshake: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    // messages keep flowing over several seconds without an idle drop
    for i in 0..6 {
        let msg = format!("hello {i}");
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | msg.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(msg.bytes().enumerate().map(|(j, b)| b ^ mask[j % 4]));
        s.write_all(&frame).await.unwrap();
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).await.unwrap();
        assert_eq!(hdr[0], 0x81, "a final text frame");
        let mut payload = vec![0u8; (hdr[1] & 0x7f) as usize];
        s.read_exact(&mut payload).await.unwrap();
        assert_eq!(String::from_utf8(payload).unwrap(), msg);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // without a key, no upgrade
    let (st, _, _) = req(gw, "GET", "/gw/pay/ws", &[("upgrade", "websocket"), ("connection", "Upgrade")], b"").await;
    assert_eq!(st, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_reach_the_addon_without_the_key() {
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    let (key, _) = setup(&d, "pay", "shop", json!({})).await;
    let (st, _, b) = req(
        gw,
        "GET",
        "/gw/pay/headers",
        &[("authorization", &format!("Bearer {key}")), ("x-custom", "kept"), ("x-forwarded-for", "6.6.6.6")],
        b"",
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let h: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("authorization").is_none() && h.get("apikey").is_none(), "the key must not reach the addon: {h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "an untrusted peer's X-Forwarded-For is replaced: {h}");
    assert_eq!(h["x-addond-application"], "shop");
}

/// The daemon calls an instance on its container's own address by default, and through its
/// published host port when `ports.instance_address = "host_port"`; both serve the gateway
/// (the `host` header the addon sees tells which way the call came).
#[tokio::test(flavor = "multi_thread")]
async fn instances_are_called_where_instance_address_says() {
    for mode in ["container", "host_port"] {
        let d = Daemon::start_with(Options { ports_extra: format!("instance_address = \"{mode}\""), ..Default::default() }).await;
        let gw = d.gateway().await;
        let (key, _) = setup(&d, "pay", "shop", json!({})).await;
        let (st, _, b) = req(gw, "GET", "/gw/pay/headers", &[("apikey", &key)], b"").await;
        assert_eq!(st, 200, "{mode}: {b}");
        let seen: Value = serde_json::from_str(&b).unwrap();
        let host = seen["host"].as_str().unwrap().to_string();
        let view = d.get("/api/addons/pay").await;
        let svc = d.get(&format!("/api/plugin-microservice/services/{}", view.data()["services"][0]["id"].as_str().unwrap())).await;
        let inst = &svc.data()["instances"][0];
        let container = docker()
            .inspect_container(inst["container_id"].as_str().unwrap(), None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .unwrap();
        let ip = container.network_settings.unwrap().networks.unwrap()[&format!("addond_{}_a_pay", d.daemon_id().unwrap())]
            .ip_address
            .clone()
            .unwrap();
        match mode {
            "container" => assert_eq!(host, format!("{ip}:8080"), "called on the container's address"),
            _ => assert_eq!(host, format!("127.0.0.1:{}", inst["host_port"]), "called through the host port"),
        }
        let (st, _, b) = req(gw, "POST", "/api/addons/pay/execute", &[("apikey", &key)], br#"{"action":"add","data":{"a":2,"b":3}}"#).await;
        assert_eq!(st, 200, "{mode}: {b}");
        assert!(b.contains("\"sum\":5"), "{mode}: {b}");
    }
}
