//! Addons end to end with real containers of the sample addon: manifests, install,
//! execute over load-balanced replicas (and one killed under load), widgets behind the
//! cache, live config, dependencies, and the fixture table of good and bad manifests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The sample addon as a manifest: actions with schemas, a widget, a config schema.
fn sample_manifest(name: &str, version: &str, replicas: u32, extra: Value) -> Value {
    let mut m = json!({
        "name": name, "version": version, "category": "ecommerce", "image": IMAGE,
        "permissions": ["network.internet"],
        "services": [{"name": "api", "replicas": replicas, "resource_limits": {"memory": "32m", "cpu": "0.2"}}],
        "actions": [
            {"name": "add", "input_schema": {"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}},
            "echo", "fail", "whoami",
            {"name": "sleep", "timeout_seconds": 1}
        ],
        "widgets": [{"name": "checkout", "category": "form", "config_schema": {"type": "object", "additionalProperties": false, "properties": {"title": {"type": "string", "default": "Pay now"}}}}],
        "config_schema": {"type": "object", "properties": {"currency": {"type": "string", "enum": ["EUR", "USD"], "default": "EUR"}}}
    });
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            m[k] = v.clone();
        }
    }
    m
}

async fn register(d: &Daemon, m: Value) {
    let r = d.post("/api/addons/register", m).await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

async fn install(d: &Daemon, name: &str, body: Value) -> Value {
    let r = d.post(&format!("/api/addons/{name}/install?wait=started&timeout=180"), body).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    r.data().clone()
}

async fn execute(d: &Daemon, instance: &str, action: &str, data: Value) -> addond::client::Response {
    d.post(&format!("/api/addons/{instance}/execute"), json!({"action": action, "data": data})).await
}

fn instance_ports(view: &Value) -> Vec<u16> {
    view["services"][0]["instances"].as_array().unwrap().iter().map(|i| i["host_port"].as_u64().unwrap() as u16).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_fixture_table() {
    let d = Daemon::start().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests");
    let expected: HashMap<String, Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f != "expected.json" && f.ends_with(".json"))
        .collect();
    assert_eq!(files.len(), expected.len(), "every fixture needs an expected outcome and vice versa");
    for f in files {
        let want = &expected[&f];
        let body = std::fs::read(dir.join(&f)).unwrap();
        // send the file's bytes exactly as they are (some are not valid JSON on purpose)
        let out = raw_post(&d, "/api/addons/register", &body).await;
        assert_eq!(out.0, want["status"].as_u64().unwrap() as u16, "{f}: {}", out.1);
        let v: Value = serde_json::from_str(&out.1).unwrap_or(Value::Null);
        if let Some(code) = want.get("code") {
            assert_eq!(&v["error"]["code"], code, "{f}: {}", out.1);
        }
        if let Some(field) = want.get("field") {
            assert_eq!(&v["error"]["field"], field, "{f}: {}", out.1);
        }
        if let Some(msg) = want.get("message").and_then(Value::as_str) {
            assert!(v["error"]["message"].as_str().unwrap_or("").contains(msg), "{f}: want `{msg}` in {}", out.1);
        }
    }
    // a manifest over 64 KiB is refused before it is parsed
    let big = json!({"name": "big", "version": "1.0.0", "description": "x".repeat(70 * 1024)});
    let out = raw_post(&d, "/api/addons/register", big.to_string().as_bytes()).await;
    assert_eq!(out.0, 413, "{}", out.1);
    // the short form expands: actions and widgets with default schemas
    let r = d.get("/api/addons/payment-gateway").await;
    assert_eq!(r.data()["manifest"]["actions"][0]["name"], "process-payment");
    assert_eq!(r.data()["manifest"]["widgets"][0]["category"], "content");
    // a newer version keeps the older one listed; re-registering the same version is a no-op,
    // a different manifest under the same version is a conflict
    register(&d, json!({"name": "payment-gateway", "version": "1.1.0", "endpoints": ["process-payment", "refund"]})).await;
    let r = d
        .post("/api/addons/register", json!({"name": "payment-gateway", "version": "1.1.0", "endpoints": ["process-payment", "refund"]}))
        .await;
    assert_eq!(r.status, 200);
    let r = d.post("/api/addons/register", json!({"name": "payment-gateway", "version": "1.1.0", "endpoints": ["other"]})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = d.get("/api/addons").await;
    let pg = r.data()["addons"].as_array().unwrap().iter().find(|a| a["name"] == "payment-gateway").unwrap().clone();
    assert_eq!(pg["version"], "1.1.0");
    assert_eq!(pg["versions"], json!(["1.0.0", "1.1.0"]));
    let r = d.get("/api/addons?category=ecommerce").await;
    assert_eq!(r.data()["addons"].as_array().unwrap().len(), 1, "only shop-pay is ecommerce");
    // installing a manifest without an image says why
    let r = d.post("/api/addons/payment-gateway/install", json!({})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("names no image"));
}

async fn raw_post(d: &Daemon, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn register_install_execute_render_and_metrics() {
    let d = Daemon::start().await;
    register(&d, sample_manifest("pay", "1.0.0", 1, json!({}))).await;
    let v = install(&d, "pay", json!({"config": {}})).await;
    assert_eq!(v["phase"], "Started");
    assert_eq!(v["config"]["currency"], "EUR", "config defaults applied");
    // the container got its config and identity
    let port = instance_ports(&v)[0];
    let (_, cfg) = http_get(port, "/config").await.unwrap();
    assert!(cfg.contains("EUR"), "{cfg}");

    let r = execute(&d, "pay", "add", json!({"a": 2, "b": 40})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["sum"], 42);
    // schema violation names the field; unknown action lists the known ones
    let r = execute(&d, "pay", "add", json!({"a": "two", "b": 1})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "data.a");
    let r = execute(&d, "pay", "refund", json!({})).await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("add, echo, fail, whoami, sleep"));
    // the addon's own error is passed on as 502; a slow action times out as 504
    let r = execute(&d, "pay", "fail", json!({})).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.body["error"]["code"], "addon_error");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("failed on purpose"), "{:?}", r.body);
    let r = execute(&d, "pay", "sleep", json!({"ms": 3000})).await;
    assert_eq!(r.status, 504, "{:?}", r.body);
    let r = execute(&d, "nobody", "add", json!({})).await;
    assert_eq!(r.status, 404);

    // widgets: catalogue, render, cache hit, 304, frame, schema errors, unknown widget
    let r = d.get("/api/widgets?category=form").await;
    assert_eq!(r.data()[0]["widget"], "checkout");
    assert_eq!(d.get("/api/widgets?category=layout").await.data().as_array().unwrap().len(), 0);
    let path = "/api/widgets/pay/checkout?config=%7B%22title%22%3A%22Buy%22%7D&context=%7B%22cart%22%3A3%7D";
    let first = d.client.request_raw(addond::client::Method::GET, path, None).await.unwrap();
    assert_eq!(first.status, 200);
    let body: Value = serde_json::from_slice(&first.body).unwrap();
    assert!(body["data"]["html"].as_str().unwrap().contains("Buy"), "{body}");
    let (status, headers) = raw_get_headers(&d, path, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-cache").map(String::as_str), Some("hit"), "{headers:?}");
    let etag = headers["etag"].clone();
    let (status, _) = raw_get_headers(&d, path, Some(&etag)).await;
    assert_eq!(status, 304);
    let r = d.post("/api/widgets/pay/checkout", json!({"config": {"title": "Buy"}, "context": {"cart": 3}})).await;
    assert_eq!(r.status, 200, "POST renders the same widget (same cache entry)");
    let r = d.get("/api/widgets/pay/checkout?config=%7B%22colour%22%3A1%7D").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "config.colour");
    let r = d.get("/api/widgets/pay/banner").await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("checkout"));
    let frame = d.client.request_raw(addond::client::Method::GET, "/api/widgets/pay/checkout/frame", None).await.unwrap();
    assert_eq!(frame.status, 200);
    let html = String::from_utf8_lossy(&frame.body);
    assert!(html.starts_with("<!doctype html>") && html.contains("Pay now"), "{html}");
    let (_, fh) = raw_get_headers(&d, "/api/widgets/pay/checkout/frame", None).await;
    let csp = &fh["content-security-policy"];
    assert!(csp.starts_with("sandbox allow-scripts") && csp.contains("default-src 'none'"), "{csp}");

    // a config change invalidates the cache at once
    let r = d.client.put("/api/addons/pay/config", Some(&json!({"config": {"currency": "USD"}}))).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["applied"], 1);
    let (_, headers) = raw_get_headers(&d, path, None).await;
    assert_eq!(headers.get("x-cache").map(String::as_str), Some("miss"));
    let r = d.client.put("/api/addons/pay/config", Some(&json!({"config": {"currency": "GBP"}}))).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "config.currency");

    // metrics: executions, latency, cache, and promtool (when installed) accepts them
    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8_lossy(&raw.body).to_string();
    assert!(text.contains("addon_executions_total{addon_id=\"pay\",function_name=\"add\",status=\"success\"} 1"), "{text}");
    assert!(text.contains("addon_executions_total{addon_id=\"pay\",function_name=\"sleep\",status=\"timeout\"} 1"), "{text}");
    assert!(text.contains("addon_response_time_seconds_count{addon_id=\"pay\",function_name=\"add\"}"));
    assert!(text.contains("widget_render_time_seconds_bucket"));
    // hits: the second GET, the 304, the POST and the second frame
    assert!(text.contains("widget_cache_hits_total 4"), "{text}");
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    } else {
        assert!(std::env::var("CI").is_err(), "promtool must be installed in CI (scripts/test.sh installs it)");
    }
}

async fn raw_get_headers(d: &Daemon, path: &str, if_none_match: Option<&str>) -> (u16, HashMap<String, String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let inm = if_none_match.map(|e| format!("if-none-match: {e}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n{inm}connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let head = text.split("\r\n\r\n").next().unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = head.lines().skip(1).filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    (status, headers)
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_load_and_a_killed_one_costs_only_in_flight_calls() {
    let d = Daemon::start_with(Options { extra: "[addons]\nbreaker_cooldown_seconds = 1.0\n".into(), ..Default::default() }).await;
    register(&d, sample_manifest("lb", "1.0.0", 3, json!({}))).await;
    let v = install(&d, "lb", json!({})).await;
    let instances: Vec<String> =
        v["services"][0]["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(instances.len(), 3);
    // each replica serves some calls
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let r = execute(&d, "lb", "echo", json!({"x": 1})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        *served.entry(r.data()["instance"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(served.values().all(|n| *n >= 5), "round robin should spread 30 calls: {served:?}");

    // kill one replica under load
    let workers = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, stop, failures, ok) = (d.client.clone(), stop.clone(), failures.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = client.post("/api/addons/lb/execute", Some(&json!({"action": "echo", "data": {}}))).await.unwrap();
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(r.body.to_string());
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = v["services"][0]["instances"][1].clone();
    let victim_id = victim["id"].as_str().unwrap().to_string();
    let name = format!("addond-{}-1", v["services"][0]["id"].as_str().unwrap());
    docker().kill_container(&name, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    let failed = failures.load(Ordering::Relaxed);
    eprintln!("{} ok, {failed} failed during the kill: {errors:?}", ok.load(Ordering::Relaxed));
    assert!(failed <= workers, "only calls in flight on the killed replica may fail, got {failed}: {errors:?}");
    assert!(ok.load(Ordering::Relaxed) > 100);
    // It left routing: its breaker opened after calls failed on it, or the daemon saw the
    // exit first (Docker's event) and restarted it before a call could fail there. Which
    // comes first is a race; either way no call beyond those in flight failed (above).
    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8_lossy(&raw.body).to_string();
    let breaker = text.contains(&format!("instance=\"{victim_id}\"")) && text.contains("addond_breaker_opens_total");
    let sid = v["services"][0]["id"].as_str().unwrap();
    let svc = d.get(&format!("/api/plugin-microservice/services/{sid}")).await.data().clone();
    let restarts = svc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == victim_id.as_str())
        .map_or(0, |i| i["restarts"].as_u64().unwrap_or(0));
    assert!(breaker || restarts > 0, "neither did its breaker open nor was it restarted:\n{svc}\n{text}");
    // it comes back (restarted by the daemon) and gets traffic again
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = execute(&d, "lb", "echo", json!({})).await;
        if r.status == 200 && r.data()["instance"] == victim_id.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted replica never got traffic again\n{}", tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = d.get("/api/addons/lb").await;
    assert_eq!(view.data()["phase"], "Started");
    assert_eq!(view.data()["services"][0]["instances"][1]["restarts"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn live_config_reaches_every_instance_and_404_means_replace_one_at_a_time() {
    let d = Daemon::start().await;
    register(&d, sample_manifest("live", "1.0.0", 3, json!({}))).await;
    let v = install(&d, "live", json!({"config": {"currency": "EUR"}})).await;
    let t0 = Instant::now();
    let r = d.client.put("/api/addons/live/config", Some(&json!({"config": {"currency": "USD"}}))).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["applied"], 3, "{:?}", r.body);
    eprintln!("config pushed to 3 instances in {took:?}");
    for p in instance_ports(&v) {
        let (_, cfg) = http_get(p, "/config").await.unwrap();
        assert!(cfg.contains("USD"), "port {p}: {cfg}");
    }

    // an addon whose instances answer 404 to /config is rolled, one instance at a time
    let mut m = sample_manifest("rolling", "1.0.0", 2, json!({}));
    m["services"][0]["environment"] = json!({"SAMPLE_CONFIG_RESTART": "1"});
    register(&d, m).await;
    let v = install(&d, "rolling", json!({})).await;
    let before: HashSet<String> = container_ids(&d, "rolling").await;
    let r = d.client.put("/api/addons/rolling/config", Some(&json!({"config": {"currency": "USD"}}))).await.unwrap();
    assert_eq!(r.data()["replacing"], 2, "{:?}", r.body);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut min_healthy = usize::MAX;
    let sid = v["services"][0]["id"].as_str().unwrap().to_string();
    loop {
        // one read: container ids and health of the same moment
        let svc = d.get(&format!("{SVC}/{sid}")).await;
        let insts = svc.data()["instances"].as_array().unwrap().clone();
        let healthy = insts.iter().filter(|i| i["health"] == "healthy").count();
        min_healthy = min_healthy.min(healthy);
        let now_ids: HashSet<String> = insts.iter().filter_map(|i| i["container_id"].as_str().map(str::to_string)).collect();
        // every instance has a new container (none mid-replacement) and all are healthy
        if now_ids.len() == 2 && now_ids.is_disjoint(&before) && healthy == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish\n{}", tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(min_healthy >= 1, "instances were replaced all at once");
    for p in instance_ports(&v) {
        let Some((_, cfg)) = http_get(p, "/config").await else {
            panic!("port {p} does not answer; now: {:#}\n{}", d.get("/api/addons/rolling").await.body, tail(&d.log(), 40));
        };
        assert!(cfg.contains("USD"), "replaced instance starts with the new config: {cfg}");
    }
}

async fn container_ids(d: &Daemon, instance: &str) -> HashSet<String> {
    let view = d.get(&format!("/api/addons/{instance}")).await;
    let sid = view.data()["services"][0]["id"].as_str().unwrap().to_string();
    let svc = d.get(&format!("{SVC}/{sid}")).await;
    svc.data()["instances"].as_array().unwrap().iter().filter_map(|i| i["container_id"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dependencies_two_instances_and_uninstall() {
    let d = Daemon::start().await;
    register(&d, sample_manifest("inventory", "1.2.0", 1, json!({}))).await;
    register(&d, sample_manifest("shop", "1.0.0", 1, json!({"dependencies": {"inventory": "^1.0"}}))).await;
    register(&d, sample_manifest("legacy", "1.0.0", 1, json!({"dependencies": {"inventory": "^2.0"}}))).await;
    // a missing dependency is a 409 naming it
    let r = d.post("/api/addons/shop/install", json!({})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("inventory ^1.0 (not installed)"), "{:?}", r.body);
    // a bad config never creates anything
    let r = d.post("/api/addons/inventory/install", json!({"config": {"currency": 5}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "config.currency");
    assert!(d.get(SVC).await.data().as_array().unwrap().is_empty());

    install(&d, "inventory", json!({})).await;
    let r = d.post("/api/addons/legacy/install", json!({})).await;
    assert_eq!(r.status, 409);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("inventory ^2.0 (installed: 1.2.0)"), "{:?}", r.body);
    // two instances of one addon, each with its own config, services and ports
    let eu = install(&d, "shop", json!({"instance": "shop-eu", "config": {"currency": "EUR"}})).await;
    let us = install(&d, "shop", json!({"instance": "shop-us", "config": {"currency": "USD"}})).await;
    assert_ne!(instance_ports(&eu), instance_ports(&us));
    let (_, c1) = http_get(instance_ports(&eu)[0], "/config").await.unwrap();
    let (_, c2) = http_get(instance_ports(&us)[0], "/config").await.unwrap();
    assert!(c1.contains("EUR") && c2.contains("USD"), "{c1} {c2}");
    let r = d.post("/api/addons/shop/install", json!({"instance": "shop-eu"})).await;
    assert_eq!(r.status, 409, "instance names are unique");
    assert_eq!(execute(&d, "shop-us", "add", json!({"a": 1, "b": 1})).await.data()["sum"], 2);

    // uninstall is refused while dependents are installed, unless forced
    let r = d.delete("/api/addons/inventory").await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("shop-eu"));
    let r = d.delete("/api/addons/shop-eu?wait=deleted&timeout=30").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(d.get("/api/addons/shop-eu").await.status, 404, "shop-eu is gone");
    assert_eq!(
        d.get("/api/addons/shop").await.data()["installed"],
        json!([{"instance": "shop-us", "version": "1.0.0"}]),
        "the catalogue entry stays"
    );
    let r = d.delete("/api/addons/inventory?force=true&wait=deleted&timeout=30").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(d.get("/api/addons/inventory").await.data()["installed"].as_array().unwrap().is_empty());
    // stop / start per addon
    let r = d.post("/api/addons/shop-us/stop?wait=stopped&timeout=30", json!({})).await;
    assert_eq!(r.data()["phase"], "Stopped", "{:?}", r.body);
    let r = execute(&d, "shop-us", "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(r.status, 503, "a stopped addon has no healthy instance: {:?}", r.body);
    let r = d.post("/api/addons/shop-us/start?wait=started&timeout=30", json!({})).await;
    assert_eq!(r.data()["phase"], "Started");
    assert_eq!(execute(&d, "shop-us", "add", json!({"a": 1, "b": 1})).await.status, 200);
    // its service deleted behind the addon's back: calls say so at once, not "no healthy instance"
    let sid = us["services"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(d.delete(&format!("{SVC}/{sid}?wait=deleted&timeout=30")).await.status, 200);
    let r = execute(&d, "shop-us", "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("has no services"), "{:?}", r.body);
    // unregister only when nothing is installed
    assert_eq!(d.delete("/api/addons/shop?unregister=true").await.status, 409);
    assert_eq!(d.delete("/api/addons/legacy?unregister=true").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn addons_without_internet_sit_on_the_internal_network() {
    let d = Daemon::start().await;
    register(&d, sample_manifest("quiet", "1.0.0", 1, json!({"permissions": []}))).await;
    let v = install(&d, "quiet", json!({})).await;
    let sid = v["services"][0]["id"].as_str().unwrap();
    let c = d.inspect(&format!("addond-{sid}-0")).await;
    let nets = c.network_settings.unwrap().networks.unwrap();
    // the addon instance's own network, of the internal kind
    let own = format!("addond_{}_a_quiet_internal", d.daemon_id().unwrap());
    assert_eq!(nets.keys().collect::<Vec<_>>(), vec![&own]);
    let net = docker().inspect_network(&own, None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap();
    assert_eq!(net.internal, Some(true));
    // still reachable by the daemon for actions
    assert_eq!(execute(&d, "quiet", "add", json!({"a": 1, "b": 2})).await.data()["sum"], 3);
}
