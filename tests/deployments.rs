//! Deployments end to end against the real engine: a health-gated upgrade of a 3-replica
//! addon under load through the gateway (no failed call), history and rollback through
//! `addonctl`, upgrades that fail (a crash, a health check that never passes, a config the
//! new schema refuses, a dependent's requirement) and roll back, `kill -9` at two points of
//! an upgrade, and the clean-up of built images keeping what a rollback needs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The sample addon at `version` with `replicas`; `env` goes to its service.
fn manifest(name: &str, version: &str, replicas: u32, env: Value) -> Value {
    json!({
        "name": name, "version": version, "category": "utilities", "image": IMAGE,
        "services": [{"name": "api", "replicas": replicas, "environment": env,
                      "health_check": {"path": "/health", "interval": 1, "timeout": 2, "retries": 2},
                      "resource_limits": {"memory": "32m", "cpu": "0.2"}}],
        "actions": ["whoami", "echo"],
        "config_schema": {"type": "object", "properties": {"currency": {"type": "string", "default": "EUR"}}}
    })
}

fn code(r: &addond::client::Response) -> Option<String> {
    r.error().map(|e| e.code)
}

fn field(r: &addond::client::Response) -> Option<String> {
    r.error().and_then(|e| e.field)
}

fn emsg(r: &addond::client::Response) -> String {
    r.error().map(|e| e.message).unwrap_or_default()
}

async fn register(d: &Daemon, m: Value) {
    let r = d.post("/api/addons/register", m).await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

/// A gateway key covering `addon`.
async fn key_for(d: &Daemon, addon: &str) -> String {
    let r = d.post("/api/applications", json!({"name": format!("app-{addon}"), "organization": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": format!("app-{addon}"), "addon": addon})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.data()["api_key"].as_str().unwrap().to_string()
}

/// `whoami` through the gateway on a fresh connection: (status, version that answered).
async fn gw_whoami(gw: SocketAddr, addon: &str, key: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(gw).await else { return (0, String::new()) };
    let body = r#"{"action":"whoami"}"#;
    let head = format!(
        "POST /api/addons/{addon}/execute HTTP/1.1\r\nhost: gw\r\nconnection: close\r\napikey: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, v["data"]["version"].as_str().or(v["version"].as_str()).unwrap_or("").to_string())
}

/// Containers of this daemon (running or not) whose names start with `addond-<service id>`.
async fn containers_of(d: &Daemon, service_id: &str) -> Vec<String> {
    d.containers().await.into_keys().filter(|n| n.contains(service_id)).collect()
}

fn service_of(view: &Value) -> (String, Vec<Value>) {
    let s = &view["services"][0];
    (s["id"].as_str().unwrap().to_string(), s["instances"].as_array().unwrap().clone())
}

/// Waits until the addon is Started with `n` instances, all on `version` and healthy, and
/// exactly `n` containers of its service exist; returns the view.
async fn settled_on(d: &Daemon, addon: &str, version: &str, n: usize, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = d.get(&format!("/api/addons/{addon}")).await.data().clone();
        let (sid, inst) = service_of(&v);
        let containers = containers_of(d, &sid).await;
        let ok = v["phase"] == "Started"
            && v["version"] == version
            && inst.len() == n
            && inst.iter().all(|i| i["version"] == version && i["health"] == "healthy" && i["new"] == false)
            && containers.len() == n;
        if ok {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{addon} not settled on {version} with {n} instances after {secs}s: {v:#}\ncontainers: {containers:?}\n{}",
            tail(&d.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn history(d: &Daemon, addon: &str) -> Vec<Value> {
    let r = d.get(&format!("/api/addons/{addon}/deployments")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.data().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_under_load_loses_no_call_then_history_and_rollback() {
    let d = Daemon::start().await;
    register(&d, manifest("up", "1.0.0", 3, json!({}))).await;
    register(&d, manifest("up", "2.0.0", 3, json!({}))).await;
    let r = d.post("/api/addons/up/install?wait=started&timeout=180", json!({"version": "1.0.0"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = key_for(&d, "up").await;
    let gw = d.gateway().await;
    assert_eq!(gw_whoami(gw, "up", &key).await, (200, "1.0.0".to_string()));

    // Four callers through the gateway for the whole upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, seen, key) = (stop.clone(), seen.clone(), key.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = gw_whoami(gw, "up", &key).await;
                seen.lock().unwrap().push(r);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = ctl(&d, &["addons", "upgrade", "up", "2.0.0"]).await;
    let text = ok(&o, "addons upgrade");
    assert!(text.contains("up is on 2.0.0"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} calls failed during the upgrade: {:?}", failed.len(), seen.len(), &failed[..failed.len().min(5)]);
    let versions: HashSet<&str> = seen.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions, HashSet::from(["1.0.0", "2.0.0"]), "calls were answered by both versions during the upgrade");
    assert!(seen.len() > 20, "the load ran ({} calls)", seen.len());
    let v = settled_on(&d, "up", "2.0.0", 3, 60).await;
    for _ in 0..6 {
        assert_eq!(gw_whoami(gw, "up", &key).await, (200, "2.0.0".to_string()));
    }
    // Instances were replaced: new ids, new ports, the old containers gone.
    let (_, inst) = service_of(&v);
    assert_eq!(inst.len(), 3);

    // History: the install and the upgrade, by the caller's uid.
    let h = history(&d, "up").await;
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(
        (h[0]["kind"].as_str(), h[0]["to_version"].as_str(), h[0]["outcome"].as_str()),
        (Some("install"), Some("1.0.0"), Some("succeeded"))
    );
    assert_eq!(
        (h[1]["kind"].as_str(), h[1]["from_version"].as_str(), h[1]["to_version"].as_str(), h[1]["outcome"].as_str()),
        (Some("upgrade"), Some("1.0.0"), Some("2.0.0"), Some("succeeded"))
    );
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(h[1]["who"], format!("uid:{uid}"));
    assert_eq!(h[1]["images"][0]["image"], IMAGE);
    assert!(h[1]["images"][0]["image_id"].as_str().unwrap_or("").starts_with("sha256:"), "{:#}", h[1]);
    assert_eq!(h[0]["config_hash"], h[1]["config_hash"], "same config, same hash");
    let o = ctl(&d, &["addons", "history", "up"]).await;
    let text = ok(&o, "addons history");
    assert!(text.contains("upgrade") && text.contains("1.0.0 → 2.0.0") && text.contains("succeeded"), "{text}");
    // Same version again: nothing to do, refused.
    let r = d.post("/api/addons/up/upgrade", json!({"version": "2.0.0"})).await;
    assert_eq!((r.status, code(&r).as_deref()), (409, Some("conflict")), "{:?}", r.body);

    // Rollback (to the install) through the same path.
    let o = ctl(&d, &["addons", "rollback", "up"]).await;
    let text = ok(&o, "addons rollback");
    assert!(text.contains("up is on 1.0.0"), "{text}");
    settled_on(&d, "up", "1.0.0", 3, 60).await;
    assert_eq!(gw_whoami(gw, "up", &key).await, (200, "1.0.0".to_string()));
    let h = history(&d, "up").await;
    assert_eq!(h.len(), 3);
    assert_eq!(
        (h[2]["kind"].as_str(), h[2]["source"].as_i64(), h[2]["outcome"].as_str()),
        (Some("rollback"), h[0]["id"].as_i64(), Some("succeeded"))
    );
    // An explicit target.
    let r = d.post("/api/addons/up/rollback", json!({"to": h[1]["id"]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded");
    settled_on(&d, "up", "2.0.0", 3, 60).await;
    let r = d.post("/api/addons/up/rollback", json!({"to": 9999})).await;
    assert_eq!((r.status, field(&r).as_deref()), (400, Some("to")), "{:?}", r.body);
    // Events on the bus.
    let ev = d.get("/api/events?limit=500").await;
    let names: Vec<String> = ev.data().as_array().unwrap().iter().filter_map(|e| e["name"].as_str().map(str::to_string)).collect();
    for n in ["deployment.started", "deployment.succeeded"] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_upgrades_roll_back_and_the_old_version_keeps_serving() {
    let d = Daemon::start_with(Options { extra: "[deploy]\nhealth_timeout_seconds = 6\n".into(), ..Default::default() }).await;
    register(&d, manifest("rb", "1.0.0", 2, json!({}))).await;
    // 2.0.0 crashes at start; 3.0.0 never passes its health check; 4.0.0's schema refuses the config.
    register(&d, manifest("rb", "2.0.0", 2, json!({"SAMPLE_EXIT_ON_START": "3"}))).await;
    let mut m3 = manifest("rb", "3.0.0", 2, json!({"SAMPLE_HEALTH_DELAY_MS": "600000"}));
    m3["services"][0]["health_check"]["start_period"] = json!(600);
    register(&d, m3).await;
    let mut m4 = manifest("rb", "4.0.0", 2, json!({}));
    m4["config_schema"] = json!({"type": "object", "properties": {"currency": {"type": "string", "enum": ["GBP"]}}});
    register(&d, m4).await;
    let r = d.post("/api/addons/rb/install?wait=started&timeout=180", json!({"version": "1.0.0"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = key_for(&d, "rb").await;
    let gw = d.gateway().await;

    // A crash: the CLI says so and exits 1; the addon stays on 1.0.0.
    let o = ctl(&d, &["addons", "upgrade", "rb", "2.0.0"]).await;
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("was rolled back") && out(&o).contains("rb stays on 1.0.0"), "{}", out(&o));
    assert!(err(&o).contains("exited with code 3"), "{}", err(&o));
    settled_on(&d, "rb", "1.0.0", 2, 60).await;
    assert_eq!(gw_whoami(gw, "rb", &key).await, (200, "1.0.0".to_string()));

    // Never healthy: rolled back at the deadline, and served meanwhile.
    let t0 = Instant::now();
    let r = d.post("/api/addons/rb/upgrade", json!({"version": "3.0.0"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let dep = &r.data()["deployment"];
    assert_eq!(dep["outcome"], "rolled_back", "{dep:#}");
    assert!(dep["reason"].as_str().unwrap().contains("not healthy within 6s"), "{dep:#}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(r.message().unwrap().contains("stays on 1.0.0"), "{:?}", r.message());
    let v = settled_on(&d, "rb", "1.0.0", 2, 60).await;
    assert_eq!(v["last_deployment"]["outcome"], "rolled_back", "addons show shows the failure");
    assert_eq!(gw_whoami(gw, "rb", &key).await, (200, "1.0.0".to_string()));

    // A config the new schema refuses: nothing starts, the field is named, no deployment.
    let before = history(&d, "rb").await.len();
    let r = d.post("/api/addons/rb/upgrade", json!({"version": "4.0.0"})).await;
    assert_eq!((r.status, code(&r).as_deref()), (400, Some("validation_failed")), "{:?}", r.body);
    assert!(field(&r).unwrap_or_default().starts_with("config"), "{:?}", r.body);
    assert!(emsg(&r).contains("4.0.0"), "{:?}", r.body);
    assert_eq!(history(&d, "rb").await.len(), before);
    // ... but with a config that fits, 4.0.0 goes through.
    let r = d.post("/api/addons/rb/upgrade", json!({"version": "4.0.0", "config": {"currency": "GBP"}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:#}", r.data());
    assert_eq!(r.data()["config"]["currency"], "GBP");
    settled_on(&d, "rb", "4.0.0", 2, 60).await;

    // A dependent's requirement: refused, naming it.
    register(&d, manifest("base", "1.0.0", 1, json!({}))).await;
    register(&d, manifest("base", "2.0.0", 1, json!({}))).await;
    let mut dep = manifest("uses", "1.0.0", 1, json!({}));
    dep["dependencies"] = json!({"base": "^1.0"});
    register(&d, dep).await;
    for (a, body) in [("base", json!({"version": "1.0.0"})), ("uses", json!({}))] {
        let r = d.post(&format!("/api/addons/{a}/install?wait=started&timeout=180"), body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let r = d.post("/api/addons/base/upgrade", json!({})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(emsg(&r).contains("`uses`"), "{:?}", r.body);

    // The failures are on the bus and in the history.
    let h = history(&d, "rb").await;
    let outcomes: Vec<&str> = h.iter().map(|x| x["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["succeeded", "rolled_back", "rolled_back", "succeeded"], "{h:#?}");
    let ev = d.get("/api/events?limit=500").await;
    let names: Vec<String> = ev.data().as_array().unwrap().iter().filter_map(|e| e["name"].as_str().map(str::to_string)).collect();
    for n in ["deployment.failed", "deployment.rolled_back"] {
        assert_eq!(names.iter().filter(|x| *x == n).count(), 2, "{n} twice in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_upgrade_leaves_one_version_and_no_strays() {
    let mut d = Daemon::start().await;
    register(&d, manifest("k9", "1.0.0", 2, json!({}))).await;
    register(&d, manifest("k9", "2.0.0", 2, json!({}))).await;
    register(&d, manifest("k9", "3.0.0", 2, json!({}))).await;
    let r = d.post("/api/addons/k9/install?wait=started&timeout=180", json!({"version": "1.0.0"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for (point, to) in [("deploy.candidates_added", "2.0.0"), ("deploy.before_commit", "3.0.0")] {
        d.kill9();
        d.env = vec![("ADDOND_DEBUG_HOOKS".into(), "1".into()), ("ADDOND_DEBUG_ABORT_AT".into(), point.into())];
        d.spawn().await;
        settled_on(&d, "k9", "1.0.0", 2, 60).await;
        let client = addond::client::Client::new(d.socket.clone());
        let body = json!({"version": to});
        let req = tokio::spawn(async move { client.post("/api/addons/k9/upgrade", Some(&body)).await });
        let mut child = d.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "never reached {point}\n{}", tail(&d.log(), 40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(req.await.unwrap().is_err(), "the request died with the daemon");
        d.env.clear();
        d.spawn().await;
        // After the restart: the old version, whole, nothing of the new one left.
        settled_on(&d, "k9", "1.0.0", 2, 90).await;
        let h = history(&d, "k9").await;
        let last = h.last().unwrap();
        assert_eq!((last["to_version"].as_str(), last["outcome"].as_str()), (Some(to), Some("rolled_back")), "{point}: {h:#?}");
        assert!(last["reason"].as_str().unwrap().contains("daemon stopped"), "{last:#}");
        let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
        let (n, with_spec): (i64, i64) =
            db.query_row("SELECT COUNT(*), COUNT(spec) FROM instances", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((n, with_spec), (2, 0), "{point}: two instance rows, none of the rollout");
        let version: String = db.query_row("SELECT version FROM addon_installs WHERE instance = 'k9'", [], |r| r.get(0)).unwrap();
        assert_eq!(version, "1.0.0");
    }
    // And a real upgrade still works after both crashes.
    let r = d.post("/api/addons/k9/upgrade", json!({"version": "3.0.0"})).await;
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);
    settled_on(&d, "k9", "3.0.0", 2, 60).await;
}

/// Builds an image `tag` from the sample image with a label, so each tag has its own id.
fn build_tagged(tag: &str, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {IMAGE}\nLABEL addond.test.gc=\"{label}\"\n")).unwrap();
    let o = std::process::Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(o.status.success(), "docker build {tag}: {}", String::from_utf8_lossy(&o.stderr));
}

fn image_exists(tag: &str) -> bool {
    std::process::Command::new("docker").args(["image", "inspect", tag]).output().map(|o| o.status.success()).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn image_cleanup_keeps_what_rollback_needs() {
    let d = Daemon::start_with(Options { extra: "[deploy]\nkeep_deployments = 2\n".into(), ..Default::default() }).await;
    let repo = format!("addond/gc-test-{}", std::process::id());
    let tags: Vec<String> = (1..=4).map(|n| format!("{repo}:{n}.0.0")).collect();
    for (n, t) in tags.iter().enumerate() {
        build_tagged(t, &format!("{repo}-{n}"));
        let mut m = manifest("gc", &format!("{}.0.0", n + 1), 1, json!({}));
        m["image"] = json!(t);
        register(&d, m).await;
    }
    // Somebody else's image under the same prefix is not ours to keep or remove, unless
    // it is built by addond: the clean-up only ever looks at `addond/` tags, and this one
    // (another repository) must survive.
    let r = d.post("/api/addons/gc/install?wait=started&timeout=180", json!({"version": "1.0.0"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for v in ["2.0.0", "3.0.0", "4.0.0"] {
        let r = d.post("/api/addons/gc/upgrade", json!({"version": v})).await;
        assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);
    }
    // Kept: the newest two succeeded deployments (4 running, 3 for a rollback).
    let present: Vec<bool> = tags.iter().map(|t| image_exists(t)).collect();
    assert_eq!(present, [false, false, true, true], "{tags:?}");
    assert!(image_exists(IMAGE), "the shared sample image is never touched");
    // The rollback target is still there and works.
    let r = d.post("/api/addons/gc/rollback", json!({})).await;
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);
    settled_on(&d, "gc", "3.0.0", 1, 60).await;
    let _ = d.post("/api/addons/gc/upgrade", json!({"version": "4.0.0"})).await;
    // Clean up this test's images (removing the daemon first: containers use them).
    let _ = d.delete("/api/addons/gc?wait=deleted&timeout=60").await;
    for t in &tags {
        let _ = std::process::Command::new("docker").args(["rmi", "-f", t]).output();
    }
}
