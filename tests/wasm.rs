//! WebAssembly addons end to end on a real daemon: publish (through the API and addonctl),
//! execute (admin API and gateway), render, events to `on_event`, host functions denied
//! without their permission, the limits (deadline, memory, traps) with the daemon still
//! answering meanwhile, hot publish under load with no failed call, rollback, a restart
//! that loads the compiled module from the cache instead of compiling, isolation between
//! calls and tenants, and the C example built with clang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A test guest in WAT. `execute` dispatches on the action's first letter: `echo` answers
/// its input, `counter` bumps a global and answers it (1 in a fresh instance), `loop`
/// never ends, `mem` grows memory until refused, `trap` hits `unreachable`, `store`
/// writes then reads a key, `version` answers VERSION, `get` reads the key `on_event`
/// wrote, `fconf` answers the instance's config (the `config` import). `render` answers a
/// fixed widget naming VERSION.
fn guest(version: &str) -> Vec<u8> {
    let wat = r#"
(module
  (import "addond" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i64)))
  (import "addond" "kv_get" (func $kv_get (param i32 i32) (result i64)))
  (import "addond" "config" (func $config (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 16) "{\"ok\":")
  (data (i32.const 48) "{\"ok\":\"VERSION\"}")
  (data (i32.const 128) "k")
  (data (i32.const 132) "e")
  (data (i32.const 136) "hello")
  (data (i32.const 160) "{\"ok\":true}")
  (data (i32.const 200) "{\"error\":\"no such action in the test guest\"}")
  (data (i32.const 512) "{\"ok\":{\"html\":\"<p>VERSION</p>\",\"css\":\"p{}\",\"javascript\":\"\"}}")
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $p))
  (func $pack (param $p i32) (param $l i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $l))))
  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done (loop $l
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    (local.get $n))
  (func (export "execute") (param $ap i32) (param $al i32) (param $ip i32) (param $il i32) (result i64)
    (local $c i32) (local $out i32)
    (local.set $c (i32.load8_u (local.get $ap)))
    (if (i32.eq (local.get $c) (i32.const 101)) (then
      (local.set $out (call $alloc (i32.add (local.get $il) (i32.const 7))))
      (memory.copy (local.get $out) (i32.const 16) (i32.const 6))
      (memory.copy (i32.add (local.get $out) (i32.const 6)) (local.get $ip) (local.get $il))
      (i32.store8 (i32.add (local.get $out) (i32.add (local.get $il) (i32.const 6))) (i32.const 125))
      (return (call $pack (local.get $out) (i32.add (local.get $il) (i32.const 7))))))
    (if (i32.eq (local.get $c) (i32.const 99)) (then
      (global.set $count (i32.add (global.get $count) (i32.const 1)))
      (local.set $out (call $alloc (i32.const 8)))
      (memory.copy (local.get $out) (i32.const 16) (i32.const 6))
      (i32.store8 (i32.add (local.get $out) (i32.const 6)) (i32.add (i32.const 48) (global.get $count)))
      (i32.store8 (i32.add (local.get $out) (i32.const 7)) (i32.const 125))
      (return (call $pack (local.get $out) (i32.const 8)))))
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $spin (br $spin))))
    (if (i32.eq (local.get $c) (i32.const 109)) (then
      (loop $bomb (drop (memory.grow (i32.const 16))) (br $bomb))))
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 115)) (then
      (drop (call $kv_set (i32.const 128) (i32.const 1) (i32.const 136) (i32.const 5)))
      (return (call $kv_get (i32.const 128) (i32.const 1)))))
    (if (i32.eq (local.get $c) (i32.const 103)) (then
      (return (call $kv_get (i32.const 132) (i32.const 1)))))
    (if (i32.eq (local.get $c) (i32.const 102)) (then (return (call $config))))
    (if (i32.eq (local.get $c) (i32.const 118)) (then
      (return (call $pack (i32.const 48) (call $strlen (i32.const 48))))))
    (call $pack (i32.const 200) (call $strlen (i32.const 200))))
  (func (export "render") (param i32 i32 i32 i32) (result i64)
    (call $pack (i32.const 512) (call $strlen (i32.const 512))))
  (func (export "on_event") (param $p i32) (param $l i32) (result i64)
    (drop (call $kv_set (i32.const 132) (i32.const 1) (local.get $p) (local.get $l)))
    (call $pack (i32.const 160) (call $strlen (i32.const 160)))))
"#;
    wat::parse_str(wat.replace("VERSION", version)).expect("the test guest is valid WAT")
}

fn manifest(name: &str, permissions: Value, extra: Value) -> Value {
    let mut m = json!({
        "name": name, "version": "1.0.0", "runtime": "wasm", "category": "utilities",
        "actions": ["echo", "counter", {"name": "loop", "timeout_seconds": 1}, "mem", "trap", "store", "version", "get", "fconf"],
        "widgets": ["card"],
        "permissions": permissions,
        "resource_limits": {"memory": "1m"},
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        m[k] = v;
    }
    m
}

fn code(r: &addond::client::Response) -> String {
    r.error().map(|e| e.code).unwrap_or_default()
}

fn emsg(r: &addond::client::Response) -> String {
    r.error().map(|e| e.message).unwrap_or_default()
}

async fn publish(d: &Daemon, instance: &str, module: &[u8]) -> addond::client::Response {
    d.client
        .request_bytes(addond::client::Method::POST, &format!("/api/addons/{instance}/publish"), "application/wasm", module.to_vec().into())
        .await
        .expect("publish answers")
}

async fn exec(d: &Daemon, instance: &str, action: &str, data: Value) -> addond::client::Response {
    d.post(&format!("/api/addons/{instance}/execute"), json!({"action": action, "data": data})).await
}

/// A gateway key covering `addon`.
async fn key_for(d: &Daemon, addon: &str) -> String {
    let r = d.post("/api/applications", json!({"name": format!("app-{addon}"), "organization": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": format!("app-{addon}"), "addon": addon})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.data()["api_key"].as_str().unwrap().to_string()
}

/// An action through the gateway on a fresh connection: (status, the envelope).
async fn gw_exec(gw: SocketAddr, addon: &str, key: &str, action: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(gw).await else { return (0, Value::Null) };
    let body = json!({"action": action, "data": {"n": 1}}).to_string();
    let head = format!(
        "POST /api/addons/{addon}/execute HTTP/1.1\r\nhost: gw\r\nconnection: close\r\napikey: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return (0, Value::Null);
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn wasm_publish_execute_render_limits_and_permissions() {
    let d = Daemon::start().await;
    let installed = install_addon(&d, manifest("wecho", json!([]), json!({})), None).await;
    assert_eq!(installed["runtime"], "wasm", "{installed}");
    assert!(installed["services"].as_array().unwrap().is_empty(), "no container: {installed}");

    // Nothing published yet: a clear 503, not a crash.
    let r = exec(&d, "wecho", "echo", json!({})).await;
    assert_eq!((r.status, code(&r).as_str()), (503, "unavailable"), "{:?}", r.body);
    assert!(emsg(&r).contains("addonctl addons publish wecho"), "{}", emsg(&r));

    // Refused before anything changes: not WebAssembly; WASI imports.
    let r = publish(&d, "wecho", b"not wasm at all").await;
    assert_eq!((r.status, code(&r).as_str()), (400, "validation_failed"), "{:?}", r.body);
    assert_eq!(r.error().unwrap().field.as_deref(), Some("body"));
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) (i32.const 0))
            (func (export "execute") (param i32 i32 i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let r = publish(&d, "wecho", &wasi).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(emsg(&r).contains("wasi_snapshot_preview1.fd_write"), "{}", emsg(&r));
    assert_eq!(d.get("/api/addons/wecho/deployments").await.data().as_array().unwrap().len(), 1, "only the install");

    // Publish with addonctl: a deployment of kind upgrade recording the module's hash.
    let file = d.dir.path().join("guest.wasm");
    std::fs::write(&file, guest("v1")).unwrap();
    let o = ctl(&d, &["addons", "publish", "wecho", file.to_str().unwrap()]).await;
    ok(&o, "addonctl addons publish");
    let hist = d.get("/api/addons/wecho/deployments").await.data().clone();
    let last = hist.as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["kind"].as_str(), last["outcome"].as_str()), (Some("upgrade"), Some("succeeded")), "{hist}");
    let image = last["images"][0]["image"].as_str().unwrap().to_string();
    assert!(image.starts_with("sha256:") && image.len() == 71, "{last}");
    assert_eq!(last["images"][0]["service"], "wasm");

    // Execute (admin API and addonctl), render.
    let r = exec(&d, "wecho", "echo", json!({"hello": "world", "n": [1, 2]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(*r.data(), json!({"hello": "world", "n": [1, 2]}), "{:?}", r.body);
    let o = ctl(&d, &["addons", "execute", "wecho", "version"]).await;
    assert!(ok(&o, "addonctl addons execute").contains("v1"), "{}", out(&o));
    let r = d.post("/api/widgets/wecho/card", json!({"config": {}, "context": {}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["html"], "<p>v1</p>", "{:?}", r.body);

    // The gateway serves it like a container addon's action.
    let key = key_for(&d, "wecho").await;
    let gw = d.gateway().await;
    let (st, v) = gw_exec(gw, "wecho", &key, "echo").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"], json!({"n": 1}), "{v}");

    // A trap: 500 addon_trapped with the trap's message.
    let r = exec(&d, "wecho", "trap", json!({})).await;
    assert_eq!((r.status, code(&r).as_str()), (500, "addon_trapped"), "{:?}", r.body);
    assert!(emsg(&r).contains("unreachable"), "{}", emsg(&r));

    // A memory bomb: refused at the manifest's 1 MiB with a clear 507.
    let r = exec(&d, "wecho", "mem", json!({})).await;
    assert_eq!((r.status, code(&r).as_str()), (507, "memory_limit_exceeded"), "{:?}", r.body);
    assert!(emsg(&r).contains("1024 KiB"), "{}", emsg(&r));

    // Storage without the `storage` permission: denied, naming it.
    let r = exec(&d, "wecho", "store", json!({})).await;
    assert_eq!((r.status, code(&r).as_str()), (403, "permission_denied"), "{:?}", r.body);
    assert!(emsg(&r).contains("`storage`"), "{}", emsg(&r));

    // An endless loop stops at the action's 1 s deadline, and other calls are answered
    // meanwhile without waiting for it.
    let client = d.client.clone();
    let t0 = Instant::now();
    let looping = tokio::spawn(async move {
        let r = client.post("/api/addons/wecho/execute", Some(&json!({"action": "loop"}))).await.unwrap();
        (r, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t1 = Instant::now();
    let r = exec(&d, "wecho", "echo", json!(7)).await;
    let during = t1.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!looping.is_finished(), "the loop is still running while echo answered");
    assert!(during < Duration::from_millis(500), "echo took {during:?} while a guest looped");
    let (r, took) = looping.await.unwrap();
    assert_eq!((r.status, code(&r).as_str()), (504, "action_timeout"), "{:?}", r.body);
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(3), "stopped after {took:?}");

    // A fresh instance per call: the guest's global counter is 1 every time.
    for _ in 0..3 {
        let r = exec(&d, "wecho", "counter", json!({})).await;
        assert_eq!(*r.data(), json!(1), "{:?}", r.body);
    }
    // The daemon is fine after all of it.
    assert_eq!(d.get("/health").await.status, 200);
    let show = d.get("/api/addons/wecho").await.data().clone();
    assert_eq!((show["phase"].as_str(), show["module"]["hash"].as_str()), (Some("Started"), Some(image.as_str())), "{show}");
}

#[tokio::test]
async fn wasm_storage_events_rollback_and_two_tenants() {
    let d = Daemon::start().await;
    let m = manifest("wstore", json!(["storage"]), json!({"events": {"subscribes": ["order.*"]}}));
    install_addon(&d, m.clone(), Some("tenant-a")).await;
    install_addon(&d, m, Some("tenant-b")).await;
    for t in ["tenant-a", "tenant-b"] {
        let r = publish(&d, t, &guest("v1")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    // Storage through the host functions, per instance.
    let r = exec(&d, "tenant-a", "store", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(*r.data(), "hello", "{:?}", r.body);

    // Events reach `on_event`, which stores them; the guest reads them back. A new
    // subscriber takes events from when its deliverer starts (within a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get("/api/events/subscribers").await.data()["subscribers"].as_array().map_or(0, |a| a.len()) < 2 {
        assert!(Instant::now() < deadline, "the subscribers never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = d.post("/api/events", json!({"name": "order.placed", "data": {"order": 42}})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = exec(&d, "tenant-b", "get", json!({})).await;
        if let Some(text) = r.data().as_str() {
            let ev: Value = serde_json::from_str(text).expect("the stored event is JSON");
            assert_eq!(ev["name"], "order.placed", "{ev}");
            assert_eq!(ev["data"]["order"], 42, "{ev}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event never reached on_event: {:?}\nsubscribers: {:?}\n{}",
            r.body,
            d.get("/api/events/subscribers").await.body,
            tail(&d.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two tenants hammered at once: every call sees a fresh instance (counter 1).
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = d.client.clone();
        let t = if i % 2 == 0 { "tenant-a" } else { "tenant-b" };
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let r = client.post(&format!("/api/addons/{t}/execute"), Some(&json!({"action": "counter"}))).await.unwrap();
                seen.push(r.data().clone());
            }
            seen
        }));
    }
    for t in tasks {
        for v in t.await.unwrap() {
            assert_eq!(v, json!(1), "state leaked between calls");
        }
    }

    // Publish v2, then roll back to v1: the recorded module answers again.
    let r = publish(&d, "tenant-a", &guest("v2")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(exec(&d, "tenant-a", "version", json!({})).await.data().clone(), "v2");
    assert_eq!(exec(&d, "tenant-b", "version", json!({})).await.data().clone(), "v1", "tenants are apart");
    let o = ctl(&d, &["addons", "rollback", "tenant-a"]).await;
    ok(&o, "addonctl addons rollback");
    assert_eq!(exec(&d, "tenant-a", "version", json!({})).await.data().clone(), "v1");
    let hist = d.get("/api/addons/tenant-a/deployments").await.data().clone();
    let kinds: Vec<&str> = hist.as_array().unwrap().iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["install", "upgrade", "upgrade", "rollback"], "{hist}");
    let o = ctl(&d, &["addons", "history", "tenant-a"]).await;
    assert!(ok(&o, "history").contains("rollback"), "{}", out(&o));
}

/// A module that answers every action with an error: valid, but broken.
const BROKEN: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"error\":\"broken on purpose\"}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "execute") (param i32 i32 i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 29))))
"#;

#[tokio::test]
async fn wasm_smoke_gates_a_publish_and_guests_read_their_config() {
    let d = Daemon::start().await;
    let extra = json!({
        "smoke": "version",
        "config_schema": {"type": "object", "properties": {"greeting": {"type": "string", "default": "hi"}, "times": {"type": "integer", "default": 2}}},
    });
    let r = d.post("/api/addons/register", manifest("wsmoke", json!([]), extra)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/addons/wsmoke/install", json!({"config": {"greeting": "hej"}})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = publish(&d, "wsmoke", &guest("v1")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);

    // The guest reads its own config, defaults applied, with no permission.
    let r = exec(&d, "wsmoke", "fconf", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(*r.data(), json!({"greeting": "hej", "times": 2}), "{:?}", r.body);

    // A module whose smoke action fails is never swapped in: the deployment is rolled
    // back with the reason, addonctl says so with exit status 1, v1 keeps answering.
    let broken = wat::parse_str(BROKEN).unwrap();
    let r = publish(&d, "wsmoke", &broken).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let dep = &r.data()["deployment"];
    assert_eq!(dep["outcome"], "rolled_back", "{dep}");
    let reason = dep["reason"].as_str().or(dep["error"].as_str()).unwrap_or_default().to_string();
    assert!(reason.contains("smoke action `version`") && reason.contains("broken on purpose"), "{dep}");
    assert_eq!(exec(&d, "wsmoke", "version", json!({})).await.data().clone(), "v1");
    let path = d.dir.path().join("broken.wasm");
    std::fs::write(&path, &broken).unwrap();
    let o = ctl(&d, &["addons", "publish", "wsmoke", path.to_str().unwrap()]).await;
    assert!(!o.status.success(), "a rolled-back publish exits non-zero: {}", out(&o));
    assert_eq!(exec(&d, "wsmoke", "version", json!({})).await.data().clone(), "v1");
    let hist = d.get("/api/addons/wsmoke/deployments").await.data().clone();
    let outcomes: Vec<&str> = hist.as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "rolled_back", "rolled_back"], "{hist}");

    // A good module after the failures goes in.
    let r = publish(&d, "wsmoke", &guest("v2")).await;
    assert_eq!(r.data()["deployment"]["outcome"], "succeeded", "{:?}", r.body);
    assert_eq!(exec(&d, "wsmoke", "version", json!({})).await.data().clone(), "v2");
}

#[tokio::test]
async fn wasm_hot_publish_under_load_and_restart_without_compiling() {
    let mut d = Daemon::start().await;
    install_addon(&d, manifest("whot", json!([]), json!({})), None).await;
    let r = publish(&d, "whot", &guest("v1")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let key = key_for(&d, "whot").await;
    let gw = d.gateway().await;

    // Callers through the gateway all along; a publish in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, calls, failures, key) = (stop.clone(), calls.clone(), failures.clone(), key.clone());
        workers.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (st, v) = gw_exec(gw, "whot", &key, "version").await;
                calls.fetch_add(1, Ordering::Relaxed);
                if st != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed call: {st} {v}");
                }
                versions.push(v["data"].as_str().unwrap_or("").to_string());
            }
            versions
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let r = publish(&d, "whot", &guest("v2")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let publish_took = t0.elapsed();
    let mut first_new = None;
    while first_new.is_none() && t0.elapsed() < Duration::from_secs(10) {
        if exec(&d, "whot", "version", json!({})).await.data().clone() == "v2" {
            first_new = Some(t0.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.push(w.await.unwrap());
    }
    eprintln!(
        "publish under load: {} calls, {} failed; publish answered in {publish_took:?}, first v2 answer after {first_new:?}",
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no call fails during a publish");
    assert!(calls.load(Ordering::Relaxed) > 50, "the load was real");
    assert!(first_new.is_some(), "v2 answered");
    for versions in &all {
        assert_eq!(versions.last().map(String::as_str), Some("v2"), "every caller ends on the new code");
        // Once a caller saw v2 it never sees v1 again.
        let first_v2 = versions.iter().position(|v| v == "v2").unwrap();
        assert!(versions[first_v2..].iter().all(|v| v == "v2"), "{versions:?}");
    }

    // Restart: the module comes from the compiled cache, nothing is compiled.
    d.terminate();
    d.spawn().await;
    let t0 = Instant::now();
    let r = exec(&d, "whot", "version", json!({})).await;
    let first_call = t0.elapsed();
    assert_eq!(*r.data(), "v2", "{:?}", r.body);
    let show = d.get("/api/addons/whot").await.data().clone();
    eprintln!("after restart: first call in {first_call:?}, module {}", show["module"]);
    assert_eq!(show["module"]["source"], "cache", "{show}");
    assert_eq!(show["module"]["compiled_since_start"], 0, "{show}");
    let log = d.log();
    let second_run = log.rsplit("addond stopped").next().unwrap_or(&log);
    assert!(second_run.contains("loaded precompiled WebAssembly module from the cache"), "{}", tail(&log, 30));
}

#[tokio::test]
async fn wasm_echo_example_builds_and_answers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = Daemon::start().await;
    let out_dir = d.dir.path().join("build");
    let o = std::process::Command::new(root.join("examples/wasm-echo/build.sh")).env("WASM_ECHO_OUT", &out_dir).output().unwrap();
    let built = ok(&o, "examples/wasm-echo/build.sh");
    let module = built.lines().last().unwrap().trim().to_string();
    assert!(std::path::Path::new(&module).exists(), "{built}");
    ok(&ctl(&d, &["addons", "register", root.join("examples/wasm-echo/addon.toml").to_str().unwrap()]).await, "register");
    ok(&ctl(&d, &["addons", "install", "wasm-echo"]).await, "install");
    ok(&ctl(&d, &["addons", "publish", "wasm-echo", &module]).await, "publish");
    let r = exec(&d, "wasm-echo", "echo", json!({"hello": ["wasm", 1]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(*r.data(), json!({"hello": ["wasm", 1]}));
    let r = exec(&d, "wasm-echo", "nope", json!({})).await;
    assert_eq!(r.status, 404, "undeclared action: {:?}", r.body);
    let r = d.post("/api/widgets/wasm-echo/card", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.data()["html"].as_str().unwrap().contains("echo"), "{:?}", r.body);
}
