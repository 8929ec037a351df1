//! Environments against the real engine: dev, staging and prod of one addon, each its own
//! instance on its own ports with its own config, storage and events; promotion of the
//! exact image id dev runs into staging (a skipped stage refused); keys per environment
//! through the gateway; a promotion whose health check fails rolls back with staging
//! serving; `kill -9` during a promotion leaves each environment on one version.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// Builds `tag` from the sample image with a label, so each tag has its own image id.
fn build_tagged(tag: &str, label: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {IMAGE}\nLABEL addond.test.env=\"{label}\"\n")).unwrap();
    let o = std::process::Command::new("docker").args(["build", "-q", "-t", tag]).arg(dir.path()).output().unwrap();
    assert!(o.status.success(), "docker build {tag}: {}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", tag]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn manifest(name: &str, version: &str, image: &str, env: Value, extra: Value) -> Value {
    let mut m = json!({
        "name": name, "version": version, "category": "utilities", "image": image,
        "permissions": ["network.internet", "storage", "events.emit"],
        "events": {"emits": ["pay.done"]},
        "services": [{"name": "api", "replicas": 1, "environment": env,
                      "health_check": {"path": "/health", "interval": 1, "timeout": 2, "retries": 2},
                      "resource_limits": {"memory": "32m", "cpu": "0.2"}}],
        "actions": ["whoami", "echo", "api"],
        "config_schema": {"type": "object", "properties": {"currency": {"type": "string", "default": "EUR"}}}
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

fn by_env(v: &Value) -> std::collections::BTreeMap<String, Value> {
    v["environments"].as_array().unwrap().iter().map(|e| (e["environment"].as_str().unwrap().to_string(), e.clone())).collect()
}

/// Waits until every environment of `base` is Started and healthy on the version given.
async fn settled(d: &Daemon, base: &str, want: &[(&str, &str)], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = d.get(&format!("/api/addons/{base}/environments")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let v = r.data().clone();
        let envs = by_env(&v);
        let ok = want.iter().all(|(e, version)| {
            envs.get(*e).is_some_and(|x| {
                x["phase"] == "Started"
                    && x["version"] == *version
                    && x["health"] == "healthy"
                    && x["instances"] == 1
                    && !x["deploying"].as_bool().unwrap()
            })
        });
        if ok {
            return v;
        }
        assert!(Instant::now() < deadline, "{base} not settled on {want:?}: {v:#}\n{}", tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The image id the one service of an instance runs, as Docker reports it, once the
/// instance it replaced is gone.
async fn running_image(d: &Daemon, instance: &str) -> String {
    let v = d.get(&format!("/api/addons/{instance}")).await.data().clone();
    let sid = v["services"][0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names: Vec<String> = d.containers().await.into_keys().filter(|n| n.contains(&sid)).collect();
        if names.len() == 1 {
            return d.inspect(&names[0]).await.image.unwrap();
        }
        assert!(Instant::now() < deadline, "{instance}: one container: {names:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn api_call(d: &Daemon, instance: &str, method: &str, path: &str, body: Value) -> (u64, Value) {
    let r = d
        .post(&format!("/api/addons/{instance}/execute"), json!({"action": "api", "data": {"method": method, "path": path, "body": body}}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    (r.data()["status"].as_u64().unwrap(), r.data()["body"].clone())
}

/// `whoami` through the gateway at `path_addon` with `key`: (status, body).
async fn gw_whoami(gw: std::net::SocketAddr, path_addon: &str, key: &str) -> (u16, Value) {
    gw_whoami_at(gw, "gw", path_addon, key).await
}

/// [`gw_whoami`] with a Host header.
async fn gw_whoami_at(gw: std::net::SocketAddr, host: &str, path_addon: &str, key: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    let body = r#"{"action":"whoami"}"#;
    let head = format!(
        "POST /api/addons/{path_addon}/execute HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\napikey: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn history(d: &Daemon, instance: &str) -> Vec<Value> {
    let r = d.get(&format!("/api/addons/{instance}/deployments")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.data().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_are_isolated_promoted_by_image_and_keyed() {
    let d = Daemon::start().await;
    let (tag1, tag2) = ("addond-envtest/pay:one", "addond-envtest/pay:two");
    let id1 = build_tagged(tag1, "one");
    let id2 = build_tagged(tag2, "two");
    assert_ne!(id1, id2);
    register(&d, manifest("pay", "1.0.0", tag1, json!({}), json!({}))).await;
    register(&d, manifest("pay", "2.0.0", tag2, json!({}), json!({}))).await;
    register(
        &d,
        manifest("inv", "1.0.0", IMAGE, json!({}), json!({"events": {"subscribes": ["pay.*"]}, "permissions": ["network.internet"]})),
    )
    .await;

    // A user instance name may not contain the environment separator.
    let r = d.post("/api/addons/pay/install", json!({"instance": "pay--x"})).await;
    assert_eq!((r.status, r.error().and_then(|e| e.field).as_deref()), (400, Some("instance")), "{:?}", r.body);

    // Three environments, through addonctl; each its own instance on its own port.
    let o =
        ctl(&d, &["addons", "install", "pay", "--version", "1.0.0", "--environments", "dev,staging,prod", "--wait", "--timeout", "180"])
            .await;
    ok(&o, "install --environments");
    let v = settled(&d, "pay", &[("dev", "1.0.0"), ("staging", "1.0.0"), ("prod", "1.0.0")], 120).await;
    let envs = by_env(&v);
    assert_eq!(
        v["environments"].as_array().unwrap().iter().map(|e| e["environment"].as_str().unwrap()).collect::<Vec<_>>(),
        ["dev", "staging", "prod"]
    );
    assert_eq!((envs["dev"]["instance"].as_str(), envs["prod"]["instance"].as_str()), (Some("pay--dev"), Some("pay")));
    let mut ports: Vec<u64> = envs.values().map(|e| e["host_ports"][0].as_u64().unwrap()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "own ports: {envs:?}");
    for e in envs.values() {
        let port = e["host_ports"][0].as_u64().unwrap() as u16;
        assert_eq!(http_get(port, "/health").await.map(|(s, _)| s), Some(200), "{e:#}");
    }
    let o = ctl(&d, &["addons", "env", "list", "pay"]).await;
    let listed = ok(&o, "env list");
    assert!(listed.contains("staging") && listed.contains("pay--staging"), "{listed}");
    // inv in dev and prod, to see where pay's events go.
    let r = d.post("/api/addons/inv/install?wait=started&timeout=120", json!({"environments": ["dev", "prod"]})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    // Config per environment.
    let r = d.client.put("/api/addons/pay--dev/config", Some(&json!({"config": {"currency": "USD"}}))).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let envs = by_env(d.get("/api/addons/pay/environments").await.data());
    assert_eq!((envs["dev"]["config"]["currency"].as_str(), envs["staging"]["config"]["currency"].as_str()), (Some("USD"), Some("EUR")));

    // Storage: what dev writes, prod does not see (and the other way round).
    let (st, _) = api_call(&d, "pay--dev", "PUT", "/v1/kv/secret", json!("dev-value")).await;
    assert_eq!(st, 200);
    let (st, body) = api_call(&d, "pay", "GET", "/v1/kv/secret", Value::Null).await;
    assert_eq!(st, 404, "prod reads dev's key: {body}");
    let (st, _) = api_call(&d, "pay--dev", "GET", "/v1/kv/secret", Value::Null).await;
    assert_eq!(st, 200);
    // An addon in dev naming prod's instance through the addon API is refused.
    let (st, body) = api_call(&d, "pay--dev", "POST", "/v1/addons/pay--prod/execute", json!({"action": "echo"})).await;
    assert_eq!(st, 403, "{body}");

    // Events: dev's reach inv in dev only; prod's reach inv in prod only.
    // Both inv environments are subscribers before anything is emitted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let subs = d.get("/api/events/subscribers").await.body.to_string();
        if subs.contains("\"inv\"") && subs.contains("\"inv--dev\"") {
            break;
        }
        assert!(Instant::now() < deadline, "inv never subscribed: {subs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, body) = api_call(&d, "pay--dev", "POST", "/v1/events", json!({"name": "pay.done", "data": {"from": "dev"}})).await;
    assert_eq!((st, body["data"]["source"].as_str()), (201, Some("pay--dev")), "{body}");
    let (st, _) = api_call(&d, "pay", "POST", "/v1/events", json!({"name": "pay.done", "data": {"from": "prod"}})).await;
    assert_eq!(st, 201);
    let inv_envs = by_env(d.get("/api/addons/inv/environments").await.data());
    let port = |e: &str| inv_envs[e]["host_ports"][0].as_u64().unwrap() as u16;
    let received = |p: u16| async move {
        let (_, body) = http_get(p, "/events").await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["events"].as_array().unwrap().iter().map(|e| e["data"]["from"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while received(port("dev")).await.is_empty() || received(port("prod")).await.is_empty() {
        if Instant::now() > deadline {
            let subs = d.get("/api/events/subscribers").await;
            let log: Vec<String> = d.log().lines().filter(|l| l.contains("event") || l.contains("WARN")).map(str::to_string).collect();
            panic!(
                "events never arrived: dev {:?} prod {:?}\n{:?}\n{}",
                received(port("dev")).await,
                received(port("prod")).await,
                subs.body,
                tail(&log.join("\n"), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(received(port("dev")).await, ["dev"]);
    assert_eq!(received(port("prod")).await, ["prod"]);

    // dev moves to 2.0.0 (image two); promotions follow the pipeline.
    let r = d.post("/api/addons/pay--dev/upgrade", json!({"version": "2.0.0"})).await;
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);
    assert_eq!(running_image(&d, "pay--dev").await, id2);
    let r = d.post("/api/addons/pay/promote", json!({"from": "dev", "to": "prod"})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.error().unwrap().message.contains("staging"), "names the skipped stage: {:?}", r.body);
    let o = ctl(&d, &["addons", "promote", "pay", "dev", "staging"]).await;
    ok(&o, "promote dev staging");
    settled(&d, "pay", &[("dev", "2.0.0"), ("staging", "2.0.0"), ("prod", "1.0.0")], 60).await;
    assert_eq!(running_image(&d, "pay--staging").await, id2, "the same image id as dev");
    assert_eq!(running_image(&d, "pay").await, id1, "prod untouched");
    let envs = by_env(d.get("/api/addons/pay/environments").await.data());
    assert_eq!(envs["staging"]["config"]["currency"], "EUR", "staging keeps its own config");
    let h = history(&d, "pay--staging").await;
    let last = h.last().unwrap();
    assert_eq!((last["kind"].as_str(), last["outcome"].as_str()), (Some("promotion"), Some("succeeded")), "{last:#}");
    assert_eq!(last["promoted_from"]["environment"], "dev", "{last:#}");
    assert_eq!(last["images"][0]["image_id"].as_str(), Some(id2.as_str()));
    let o = ctl(&d, &["addons", "history", "pay--staging"]).await;
    assert!(ok(&o, "history").contains("promotion from dev"));

    // Keys per environment; the platform's field names are accepted and answered.
    let r = d.post("/api/applications", json!({"name": "shop"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"applicationId": "shop", "gatewayId": "pay", "environment": "dev"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let g = r.data();
    assert!(g["grantId"].is_string() && g["credentialId"].is_string() && g["apiKey"] == g["api_key"], "{g:#}");
    assert_eq!((g["addon"].as_str(), g["environment"].as_str()), (Some("pay"), Some("dev")));
    let dev_key = g["apiKey"].as_str().unwrap().to_string();
    let r = d.post("/api/applications", json!({"name": "shop-live"})).await;
    assert_eq!(r.status, 201);
    let r = d.post("/api/application-grants", json!({"application": "shop-live", "addon": "pay"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let prod_key = r.data()["api_key"].as_str().unwrap().to_string();
    let gw = d.gateway().await;
    let (st, body) = gw_whoami(gw, "pay", &dev_key).await;
    assert_eq!((st, body["data"]["version"].as_str()), (200, Some("2.0.0")), "a dev key reaches dev: {body}");
    assert!(body.to_string().contains("pay--dev"), "{body}");
    let (st, body) = gw_whoami(gw, "pay", &prod_key).await;
    assert_eq!((st, body["data"]["version"].as_str()), (200, Some("1.0.0")), "a prod key reaches prod: {body}");
    assert!(!body.to_string().contains("pay--"), "{body}");
    let metrics =
        String::from_utf8_lossy(&d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap().body).to_string();
    assert!(
        metrics.contains("addon_executions_total{addon_id=\"pay\",environment=\"dev\",function_name=\"whoami\",status=\"success\"}"),
        "{metrics}"
    );
    let (st, body) = gw_whoami(gw, "pay--prod", &dev_key).await;
    assert_eq!(st, 403, "a dev key is refused on prod: {body}");
    let (st, body) = gw_whoami(gw, "pay--dev", &prod_key).await;
    assert_eq!(st, 403, "a prod key is refused on dev: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_promotion_rolls_back_and_kill9_leaves_one_version_each() {
    let mut d = Daemon::start_with(Options { gateway_extra: "base_domain = \"addons.test\"\n".into(), ..Default::default() }).await;
    let tag1 = "addond-envtest/slow:one";
    build_tagged(tag1, "slow-one");
    register(&d, manifest("slow", "1.0.0", tag1, json!({}), json!({}))).await;
    // 2.0.0 is healthy after 4 s (its checks allow that): fine for dev under the default timeout.
    let mut m2 = manifest("slow", "2.0.0", IMAGE, json!({"SAMPLE_HEALTH_DELAY_MS": "4000"}), json!({}));
    m2["services"][0]["health_check"]["retries"] = json!(10);
    register(&d, m2).await;
    let r =
        d.post("/api/addons/slow/install?wait=started&timeout=120", json!({"version": "1.0.0", "environments": ["dev", "staging"]})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    settled(&d, "slow", &[("dev", "1.0.0"), ("staging", "1.0.0")], 90).await;
    let r = d.post("/api/addons/slow--dev/upgrade", json!({"version": "2.0.0"})).await;
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);

    // Host routing: <addon>.<env>.<gateway.base_domain> must name the key's environment.
    let r = d.post("/api/applications", json!({"name": "tester"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": "tester", "addon": "slow", "environment": "dev"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let dev_key = r.data()["api_key"].as_str().unwrap().to_string();
    let gw = d.gateway().await;
    let (st, body) = gw_whoami_at(gw, "slow.dev.addons.test", "slow", &dev_key).await;
    assert_eq!((st, body["data"]["version"].as_str()), (200, Some("2.0.0")), "{body}");
    let (st, body) = gw_whoami_at(gw, "slow.staging.addons.test:7080", "slow", &dev_key).await;
    assert_eq!(st, 403, "a dev key through staging's host: {body}");
    let r = d.post("/api/application-grants", json!({"application": "tester", "addon": "slow", "environment": "qa"})).await;
    assert_eq!((r.status, r.error().and_then(|e| e.field).as_deref()), (404, Some("environment")), "{:?}", r.body);

    // Now a health check must pass within 2 s: the promotion cannot, and rolls back.
    d.terminate();
    let mut text = std::fs::read_to_string(&d.config).unwrap();
    text.push_str("\n[deploy]\nhealth_timeout_seconds = 2\n");
    std::fs::write(&d.config, text).unwrap();
    d.spawn().await;
    settled(&d, "slow", &[("dev", "2.0.0"), ("staging", "1.0.0")], 90).await;
    let r = d.post("/api/addons/slow/promote", json!({"from": "dev", "to": "staging"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["deployment"]["outcome"], "rolled_back", "{:?}", r.body);
    assert_eq!(r.data()["deployment"]["kind"], "promotion");
    settled(&d, "slow", &[("dev", "2.0.0"), ("staging", "1.0.0")], 60).await;
    let r = d.post("/api/addons/slow--staging/execute", json!({"action": "whoami"})).await;
    assert_eq!((r.status, r.data()["version"].as_str()), (200, Some("1.0.0")), "staging keeps serving: {:?}", r.body);

    // kill -9 while the promotion's new instance starts: each environment on one version after.
    d.kill9();
    d.env = vec![("ADDOND_DEBUG_HOOKS".into(), "1".into()), ("ADDOND_DEBUG_ABORT_AT".into(), "deploy.candidates_added".into())];
    d.spawn().await;
    settled(&d, "slow", &[("dev", "2.0.0"), ("staging", "1.0.0")], 90).await;
    let client = addond::client::Client::new(d.socket.clone());
    let req = tokio::spawn(async move { client.post("/api/addons/slow/promote", Some(&json!({"from": "dev", "to": "staging"}))).await });
    let mut child = d.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "never reached the failpoint\n{}", tail(&d.log(), 40));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(req.await.unwrap().is_err(), "the request died with the daemon");
    d.env.clear();
    d.spawn().await;
    settled(&d, "slow", &[("dev", "2.0.0"), ("staging", "1.0.0")], 90).await;
    // The recovery rolls the promotion back right after the first resync.
    let deadline = Instant::now() + Duration::from_secs(60);
    let h = loop {
        let h = history(&d, "slow--staging").await;
        if h.last().unwrap()["outcome"] != "running" {
            break h;
        }
        assert!(Instant::now() < deadline, "the promotion is still running: {:#}", h.last().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    settled(&d, "slow", &[("dev", "2.0.0"), ("staging", "1.0.0")], 60).await;
    let last = h.last().unwrap();
    let brief: Vec<String> = h.iter().map(|x| format!("{} {} {} {}", x["id"], x["kind"], x["outcome"], x["reason"])).collect();
    assert_eq!((last["kind"].as_str(), last["outcome"].as_str()), (Some("promotion"), Some("rolled_back")), "{brief:#?}");
    assert!(last["reason"].as_str().unwrap().contains("daemon stopped"), "{brief:#?}");
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, with_spec): (i64, i64) =
            db.query_row("SELECT COUNT(*), COUNT(spec) FROM instances", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        if (n, with_spec) == (2, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "one instance per environment, none of the promotion: {n} rows, {with_spec} of it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (inst, version) in [("slow--dev", "2.0.0"), ("slow--staging", "1.0.0")] {
        let v: String = db.query_row("SELECT version FROM addon_installs WHERE instance = ?1", [inst], |r| r.get(0)).unwrap();
        assert_eq!(v, version, "{inst}");
        let view = d.get(&format!("/api/addons/{inst}")).await.data().clone();
        let sid = view["services"][0]["id"].as_str().unwrap().to_string();
        let containers: Vec<String> = d.containers().await.into_keys().filter(|n| n.contains(&sid)).collect();
        assert_eq!(containers.len(), 1, "{inst}: no stray containers: {containers:?}");
    }

    // One more environment, with its own config, on the version the first environment runs.
    let o = ctl(&d, &["addons", "env", "add", "slow", "qa", "--set", "currency=GBP", "--wait", "--timeout", "120"]).await;
    ok(&o, "env add");
    let v = settled(&d, "slow", &[("dev", "2.0.0"), ("staging", "1.0.0"), ("qa", "2.0.0")], 60).await;
    assert_eq!(by_env(&v)["qa"]["config"]["currency"], "GBP", "{v:#}");
    let o = ctl(&d, &["addons", "env", "add", "slow", "qa"]).await;
    failed(&o, 1, "the same environment twice");
}
