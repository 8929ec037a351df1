//! Bad input gets a 4xx envelope naming the field, and changes nothing.

use serde_json::{json, Value};

use crate::common::*;

async fn expect_refused(d: &Daemon, path: &str, body: Value, status: u16, code: &str, field: Option<&str>) {
    let r = d.post(path, body.clone()).await;
    assert_eq!(r.status, status, "{body} → {:?}", r.body);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["error"]["code"], code, "{body} → {:?}", r.body);
    if let Some(f) = field {
        assert_eq!(r.body["error"]["field"], f, "{body} → {:?}", r.body);
    }
    assert!(r.body["error"]["message"].as_str().unwrap().len() > 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_the_field_and_nothing_changes() {
    let d = Daemon::start().await;
    let base = |k: &str, v: Value| {
        let mut b = json!({"name": "ok-name", "image": IMAGE});
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({"image": IMAGE}), 400, "validation_failed", Some("name")),
        // Names are display names (docs/api.md): any text but control characters, 1–100 long.
        (base("name", json!("bad\u{7}name")), 400, "validation_failed", Some("name")),
        (base("name", json!("x".repeat(101))), 400, "validation_failed", Some("name")),
        (base("plugin_id", json!("Bad Plugin")), 400, "validation_failed", Some("plugin_id")),
        (base("port", json!(-1)), 400, "validation_failed", Some("port")),
        (base("port", json!("eighty")), 400, "invalid_json", Some("port")),
        (base("replicas", json!(-3)), 400, "validation_failed", Some("replicas")),
        (base("replicas", json!(1_000_000)), 400, "validation_failed", Some("replicas")),
        (base("resource_limits", json!({"memory": "-1g"})), 400, "validation_failed", Some("resource_limits.memory")),
        (base("resource_limits", json!({"memory": "100000g"})), 400, "validation_failed", Some("resource_limits.memory")),
        (base("resource_limits", json!({"cpu": "-0.5"})), 400, "validation_failed", Some("resource_limits.cpu")),
        (base("resource_limits", json!({"cpu": "9999"})), 400, "validation_failed", Some("resource_limits.cpu")),
        (base("resource_limits", json!({"pids": -1})), 400, "validation_failed", Some("resource_limits.pids")),
        (base("volumes", json!(["/etc:/data"])), 400, "invalid_volume", Some("volumes[0]")),
        (base("volumes", json!(["../../etc:/data"])), 400, "invalid_volume", Some("volumes[0]")),
        (base("volumes", json!(["/var/run/docker.sock:/var/run/docker.sock"])), 400, "invalid_volume", Some("volumes[0]")),
        (base("volumes", json!([{"source": "docker.sock", "target": "/s"}])), 400, "invalid_volume", Some("volumes[0]")),
        (base("networks", json!(["host"])), 400, "validation_failed", Some("networks[0]")),
        (base("restart_policy", json!("sometimes")), 400, "invalid_json", Some("restart_policy")),
        (base("environment", json!({"ADDOND_TOKEN": "x"})), 400, "validation_failed", Some("environment.ADDOND_TOKEN")),
        (base("unknown_key", json!(1)), 400, "invalid_json", None),
        (base("health_check", json!({"interval": 0})), 400, "validation_failed", Some("health_check.interval")),
        (base("image", json!("no-such-image:404")), 404, "image_not_found", Some("image")),
    ];
    for (body, status, code, field) in cases {
        expect_refused(&d, SVC, body, status, code, field).await;
    }
    expect_refused(&d, "/api/plugin-microservice/templates/nope/create", json!({"name": "x"}), 404, "not_found", Some("template")).await;
    expect_refused(
        &d,
        "/api/plugin-microservice/templates/rest_api_basic/create",
        json!({"name": "bad\nname"}),
        400,
        "validation_failed",
        Some("name"),
    )
    .await;

    // malformed and oversized bodies, bad queries
    let socket = d.socket.clone();
    let raw = |body: &'static str| {
        let socket = socket.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
            let req = format!(
                "POST {SVC} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let out = raw("{\"name\": ").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("invalid_json"), "{out}");
    let out = raw("").await;
    assert!(out.starts_with("HTTP/1.1 400") && out.contains("needs a JSON body"), "{out}");
    let big = json!({"name": "big", "image": IMAGE, "environment": {"X": "y".repeat(2 << 20)}});
    let r = d.post(SVC, big).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "payload_too_large");
    let r = d.post(&format!("{SVC}?wait=sometime"), json!({"name": "q", "image": IMAGE})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "wait");
    let r = d.get(&format!("{SVC}/nope/logs?lines=abc")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "invalid_query");
    let r = d.post(&format!("{SVC}/nope/scale"), json!({"replicas": 2})).await;
    assert_eq!(r.status, 404);
    let r = d.post("/api/plugin-microservice/cleanup", json!({"days": -1})).await;
    assert_eq!(r.status, 400);

    // nothing changed: no service, no container, no booked port
    let r = d.get(SVC).await;
    assert_eq!(r.data().as_array().unwrap().len(), 0, "{:?}", r.body);
    assert!(d.containers().await.is_empty());
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let n: i64 = db.query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);

    // a duplicate name is a conflict and does not disturb the first service
    d.create_started("taken", json!({})).await;
    let r = d.post(SVC, json!({"name": "taken", "image": IMAGE})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(d.get(SVC).await.data().as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn symlink_escape_in_a_volume_is_refused() {
    let d = Daemon::start().await;
    let dir = d.data_dir().join("volumes").join("linky");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("esc")).unwrap();
    let r = d.post(SVC, json!({"name": "linky", "image": IMAGE, "volumes": ["./esc:/data"]})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_volume");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("symlink"));
    assert!(d.service("linky").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    for (text, key) in
        [("[ports]\nrange_start = 99999\n", "ports.range_start"), ("[portz]\n", "portz"), ("[sandbox]\nuser = \"root\"\n", "sandbox.user")]
    {
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(addond_bin()).args(["check-config", "--config"]).arg(&p).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
    }
    std::fs::write(&p, "[ports]\nrange_start = 8100\n").unwrap();
    let out = std::process::Command::new(addond_bin())
        .args(["print-config", "--config"])
        .arg(&p)
        .env("ADDOND_PORTS_RANGE_END", "8200")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("range_start = 8100") && text.contains("range_end = 8200"), "{text}");
}
