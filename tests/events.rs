//! Events with real containers: payment → email + inventory, in order and at least once
//! (also across `kill -9` of the daemon mid-burst), a subscriber that is down and recovers,
//! dead letters and redrive, wildcards, SSE resume, the addon API's permissions and
//! storage isolation, and schedules.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

fn manifest(name: &str, extra: Value) -> Value {
    let mut m = json!({
        "name": name, "version": "1.0.0", "image": IMAGE,
        "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "actions": ["echo", "api", "env"]
    });
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            m[k] = v.clone();
        }
    }
    m
}

fn port(view: &Value) -> u16 {
    view["services"][0]["instances"][0]["host_port"].as_u64().unwrap() as u16
}

/// The events an instance of the sample addon received, in arrival order.
async fn received(port: u16) -> Vec<Value> {
    let (_, body) = http_get(port, "/events").await.expect("subscriber answers");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["events"].as_array().cloned().unwrap_or_default()
}

async fn emit(d: &Daemon, name: &str, data: Value) -> i64 {
    let r = d.post("/api/events", json!({"name": name, "data": data})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.data()["id"].as_i64().unwrap()
}

async fn wait_received(port: u16, n: usize, secs: u64, d: &Daemon) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = received(port).await;
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "only {} of {n} events arrived\n{}", got.len(), tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_to_email_and_inventory_in_order_with_wildcards() {
    let d = Daemon::start().await;
    let pay = install_addon(
        &d,
        manifest("payment", json!({"permissions": ["network.internet", "events.emit"], "events": {"emits": ["payment.completed"]}})),
        None,
    )
    .await;
    let email = install_addon(&d, manifest("email", json!({"events": {"subscribes": ["payment.completed"]}})), None).await;
    let inv = install_addon(&d, manifest("inventory", json!({"events": {"subscribes": ["payment.*", "stock.*"]}})), None).await;
    // deliverers start within a second of the install; events from then on are delivered
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(emit(&d, "payment.completed", json!({"n": n})).await);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase: {ids:?}");
    emit(&d, "stock.low", json!({"sku": "x"})).await;
    emit(&d, "other.thing", json!({})).await;
    let got_email = wait_received(port(&email), 50, 20, &d).await;
    let got_inv = wait_received(port(&inv), 51, 20, &d).await;
    let ns: Vec<i64> = got_email.iter().map(|e| e["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..50).collect::<Vec<_>>(), "email gets every payment, in order");
    assert!(got_email.iter().all(|e| e["name"] == "payment.completed" && e["source"].as_str().unwrap().starts_with("admin")));
    assert_eq!(got_inv.last().unwrap()["name"], "stock.low", "the wildcard subscription gets stock.*");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received(port(&email)).await.len(), 50, "email does not get stock.* or other names");
    assert_eq!(received(port(&inv)).await.len(), 51);
    assert!(received(port(&pay)).await.is_empty(), "payment subscribes to nothing");

    // the log and its filters
    let r = d.get("/api/events?name=payment.*&limit=1000").await;
    assert_eq!(r.data().as_array().unwrap().len(), 50);
    let r = d.get(&format!("/api/events?after={}&limit=5", ids[47])).await;
    assert_eq!(r.data()[0]["id"], ids[48]);
    // lifecycle events are in the log too
    let r = d.get("/api/events?name=addon.installed").await;
    assert_eq!(r.data().as_array().unwrap().len(), 3, "{:?}", r.body);
    assert_eq!(r.data()[0]["source"], "addond");
    let r = d.get("/api/events?name=service.started").await;
    assert!(!r.data().as_array().unwrap().is_empty());
    // bad names are refused
    let r = d.post("/api/events", json!({"name": "Bad Name"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "name");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_across_kill_dash_nine_during_a_burst() {
    let mut d = Daemon::start().await;
    let email = install_addon(&d, manifest("email", json!({"events": {"subscribes": ["payment.completed"]}})), None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = d.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..60 {
                match client.post("/api/events", Some(&json!({"name": "payment.completed", "data": {"w": w, "n": n}}))).await {
                    Ok(r) if r.status == 201 => acked.push(r.data()["id"].as_i64().unwrap()),
                    _ => break, // the daemon is gone
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    d.kill9();
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(!acked.is_empty(), "the burst was killed before anything was acknowledged");
    d.spawn().await;
    // every acknowledged event is in the log and reaches the subscriber
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<i64> = received(port(&email)).await.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        if acked.is_subset(&got) {
            break;
        }
        assert!(Instant::now() < deadline, "{} acknowledged events never arrived\n{}", acked.difference(&got).count(), tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log: HashSet<i64> = d
        .get("/api/events?name=payment.completed&limit=10000")
        .await
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(acked.is_subset(&log), "an acknowledged event is missing from the log");
    // in order: first arrivals strictly increase; duplicates only re-send an earlier tail
    let got: Vec<i64> = received(port(&email)).await.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let mut seen = HashSet::new();
    let firsts: Vec<i64> = got.iter().copied().filter(|id| seen.insert(*id)).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "first deliveries out of order: {firsts:?}");
    let dups = got.len() - firsts.len();
    eprintln!("{} acknowledged, {} delivered, {dups} duplicates after the crash", acked.len(), got.len());
    assert_eq!(d.get("/health").await.data()["database"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_down_for_a_while_gets_everything_when_it_recovers() {
    let d = Daemon::start().await;
    let email = install_addon(&d, manifest("email", json!({"events": {"subscribes": ["payment.*"]}})), None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = d.post("/api/addons/email/stop?wait=stopped&timeout=30", json!({})).await;
    assert_eq!(r.status, 200);
    for n in 0..5 {
        emit(&d, "payment.completed", json!({"n": n})).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = d.get("/api/events/subscribers").await;
    let sub = &st.data()["subscribers"].as_array().unwrap().iter().find(|s| s["subscriber"] == "email").unwrap().clone();
    assert!(sub["attempts"].as_u64().unwrap() >= 1 && sub["last_error"].is_string(), "{sub}");
    let r = d.post("/api/addons/email/start?wait=started&timeout=30", json!({})).await;
    assert_eq!(r.status, 200);
    let email_port = port(&email);
    let got = wait_received(email_port, 5, 20, &d).await;
    let ns: Vec<i64> = got.iter().map(|e| e["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_and_redrive() {
    let d = Daemon::start_with(Options { events_extra: "max_attempts = 3".into(), ..Default::default() }).await;
    let email = install_addon(&d, manifest("email", json!({"events": {"subscribes": ["payment.*"]}})), None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.post("/api/addons/email/stop?wait=stopped&timeout=30", json!({})).await;
    let id = emit(&d, "payment.failed", json!({"why": "card"})).await;
    // three attempts, then the event is dead-lettered and the subscriber moves on
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = d.get("/api/events/subscribers").await;
        if st.data()["dead_letters"].as_array().unwrap().iter().any(|dl| dl["event_id"] == id && dl["subscriber"] == "email") {
            break;
        }
        assert!(Instant::now() < deadline, "never dead-lettered: {:?}", st.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.post("/api/addons/email/start?wait=started&timeout=30", json!({})).await;
    let later = emit(&d, "payment.completed", json!({})).await;
    let got = wait_received(port(&email), 1, 20, &d).await;
    assert_eq!(got[0]["id"], later, "the dead letter is skipped until redriven");
    let r = d.post("/api/events/redrive", json!({"subscriber": "email"})).await;
    assert_eq!(r.data()["redriven"], 1);
    let got = wait_received(port(&email), 2, 20, &d).await;
    assert_eq!(got[1]["id"], id, "redriven");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.get("/api/events/subscribers").await.data()["dead_letters"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the delivered dead letter stays listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_resumes_from_last_event_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start().await;
    let a = emit(&d, "order.created", json!({"n": 1})).await;
    let b = emit(&d, "order.created", json!({"n": 2})).await;
    // resume after `a`: the stream replays `b`, then follows live events
    let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(format!("GET /api/events/stream?name=order.* HTTP/1.1\r\nhost: x\r\nlast-event-id: {a}\r\n\r\n").as_bytes()).await.unwrap();
    let c = emit(&d, "order.created", json!({"n": 3})).await;
    emit(&d, "unrelated.thing", json!({})).await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains(&format!("id: {c}")) {
        assert!(Instant::now() < deadline, "{text}");
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(!text.contains(&format!("id: {a}\n")), "resumed after {a}, so {a} is not sent again: {text}");
    assert!(text.contains(&format!("id: {b}\n")), "{text}");
    let pos_b = text.find(&format!("id: {b}\n")).unwrap();
    let pos_c = text.find(&format!("id: {c}\n")).unwrap();
    assert!(pos_b < pos_c, "in order");
    assert!(!text.contains("unrelated.thing"), "filtered by name");
    assert!(text.contains("event: order.created"));
}

/// Calls the addon API from inside an instance, through the sample addon's `api` action.
async fn api_call(d: &Daemon, instance: &str, method: &str, path: &str, body: Value) -> (u64, Value) {
    let r = d
        .post(&format!("/api/addons/{instance}/execute"), json!({"action": "api", "data": {"method": method, "path": path, "body": body}}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    (r.data()["status"].as_u64().unwrap(), r.data()["body"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn addon_api_permissions_and_storage_isolation() {
    let d = Daemon::start().await;
    // payment may emit payment.completed and call inventory; email may do nothing
    install_addon(
        &d,
        manifest("inventory", json!({"permissions": ["network.internet", "storage"], "actions": ["echo", "api", "env", "add"]})),
        None,
    )
    .await;
    install_addon(
        &d,
        manifest(
            "payment",
            json!({
                "permissions": ["network.internet", "events.emit", "addons.execute", "storage"],
                "events": {"emits": ["payment.completed"]},
                "dependencies": {"inventory": "^1.0"}
            }),
        ),
        None,
    )
    .await;
    install_addon(&d, manifest("email", json!({"events": {"subscribes": ["payment.completed"]}})), None).await;
    let env = d.post("/api/addons/payment/execute", json!({"action": "env"})).await;
    assert!(env.data()["api"].as_str().unwrap().starts_with("http://172."), "{:?}", env.body);
    assert_eq!(env.data()["token_present"], true);

    let (st, body) = api_call(&d, "payment", "POST", "/v1/events", json!({"name": "payment.completed", "data": {"amount": 5}})).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["data"]["source"], "payment");
    let (st, body) = api_call(&d, "payment", "POST", "/v1/events", json!({"name": "refund.done"})).await;
    assert_eq!(st, 403, "only names the manifest emits: {body}");
    let (st, body) = api_call(&d, "email", "POST", "/v1/events", json!({"name": "payment.completed"})).await;
    assert_eq!(st, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("events.emit"), "{body}");
    let (st, body) = api_call(&d, "email", "PUT", "/v1/kv/k", json!("v")).await;
    assert_eq!(st, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("storage"), "{body}");
    let (st, body) = api_call(&d, "email", "POST", "/v1/addons/inventory/execute", json!({"action": "echo"})).await;
    assert_eq!(st, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("addons.execute"), "{body}");
    let (st, body) =
        api_call(&d, "payment", "POST", "/v1/addons/inventory/execute", json!({"action": "add", "data": {"a": 2, "b": 3}})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["sum"], 5);
    let (st, body) = api_call(&d, "payment", "POST", "/v1/addons/email/execute", json!({"action": "echo"})).await;
    assert_eq!(st, 403, "email is not among payment's dependencies: {body}");
    // each addon instance sees only its own keys
    assert_eq!(api_call(&d, "payment", "PUT", "/v1/kv/shared-name", json!({"owner": "payment"})).await.0, 200);
    assert_eq!(api_call(&d, "inventory", "GET", "/v1/kv/shared-name", Value::Null).await.0, 404);
    assert_eq!(api_call(&d, "inventory", "PUT", "/v1/kv/shared-name", json!({"owner": "inventory"})).await.0, 200);
    let (st, body) = api_call(&d, "payment", "GET", "/v1/kv/shared-name", Value::Null).await;
    assert_eq!(st, 200);
    // values are raw bytes: the JSON the addon stored comes back as its text
    let stored: Value = serde_json::from_str(body.as_str().unwrap_or("null")).unwrap_or(body.clone());
    assert_eq!(stored["owner"], "payment", "{body}");
    assert_eq!(api_call(&d, "payment", "DELETE", "/v1/kv/shared-name", Value::Null).await.0, 200);
    assert_eq!(api_call(&d, "payment", "GET", "/v1/kv/shared-name", Value::Null).await.0, 404);
    assert_eq!(api_call(&d, "inventory", "GET", "/v1/kv/shared-name", Value::Null).await.0, 200);
    // with its token the health route answers; without it, 401
    let r = d.post("/api/addons/payment/execute", json!({"action": "api", "data": {"method": "GET", "path": "/v1/health"}})).await;
    assert_eq!(r.data()["status"], 200, "{:?}", r.body);
    assert_eq!(r.data()["body"]["data"]["permissions"], json!(["network.internet", "events.emit", "addons.execute", "storage"]));
    let r = d
        .post(
            "/api/addons/payment/execute",
            json!({"action": "api", "data": {"method": "GET", "path": "/v1/health", "headers": {"Authorization": null}}}),
        )
        .await;
    assert_eq!(r.data()["status"], 401, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_and_each_run_is_recorded() {
    let d = Daemon::start().await;
    install_addon(&d, manifest("ticker", json!({"schedules": [{"cron": "*/2 * * * * *", "action": "echo"}]})), None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = d.get("/api/addons/ticker/schedules").await;
        let runs = r.data()["runs"].as_array().unwrap().clone();
        if runs.len() >= 2 {
            assert!(runs.iter().all(|r| r["status"] == "ok"), "{runs:?}");
            assert_eq!(runs[0]["action"], "echo");
            break;
        }
        assert!(Instant::now() < deadline, "the schedule did not fire twice: {:?}\n{}", r.body, tail(&d.log(), 20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
