//! The plugin-microservice API answers the documented example bodies, sent verbatim, in the
//! documented shapes: display names (Korean, spaces) beside safe slugs, `plugin_id` with
//! `_`, the networks by their documented names, `host: "0.0.0.0"`, the documented fields
//! of service objects, discovery and templates, logs as a list of lines, and a sentence in
//! every success's `message`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use addond::client::Response;

use crate::common::*;

/// The documented create example, verbatim but for the image (the sample's).
fn documented_body() -> Value {
    json!({
        "plugin_id": "test_plugin",
        "name": "테스트 서비스",
        "service_type": "rest_api",
        "image": IMAGE,
        "port": 8080,
        "host": "0.0.0.0",
        "environment": {"DEBUG": "true", "LOG_LEVEL": "info"},
        "volumes": [],
        "networks": ["plugin_network"],
        "health_check": {"url": "http://localhost:8080/health", "interval": 30, "timeout": 10, "retries": 3},
        "resource_limits": {"memory": "512m", "cpu": "0.5"},
        "restart_policy": "unless-stopped"
    })
}

/// Percent-encodes a display name for a path segment, as a client library would.
fn enc(s: &str) -> String {
    addond::client::encode_path_segment(s)
}

fn message(r: &Response) -> String {
    r.body["message"].as_str().unwrap_or_default().to_string()
}

/// Every documented field of a service object is there, and those a running, healthy
/// service has are filled in.
fn assert_documented_service(s: &Value, name: &str) {
    for k in [
        "id",
        "name",
        "plugin_id",
        "service_type",
        "status",
        "health_status",
        "port",
        "host_port",
        "start_time",
        "last_health_check",
        "resource_usage",
        "error_message",
    ] {
        assert!(s.get(k).is_some(), "service lacks `{k}`: {s:#}");
    }
    assert_eq!(s["name"], name, "{s:#}");
    assert_eq!(s["plugin_id"], "test_plugin");
    assert_eq!(s["status"], "running", "{s:#}");
    assert_eq!(s["health_status"], "healthy", "{s:#}");
    assert!(s["host_port"].as_u64().is_some(), "{s:#}");
    assert!(s["start_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{s:#}");
    assert!(s["last_health_check"].as_str().is_some_and(|t| t.ends_with('Z')), "{s:#}");
    assert!(s["resource_usage"].is_object(), "{s:#}");
    assert!(s["error_message"].is_null(), "a healthy service has no error: {s:#}");
    assert!(s["id"].as_str().unwrap().starts_with("svc_"));
    let slug = s["slug"].as_str().unwrap();
    assert!(addond::model::valid_name(slug), "slug `{slug}` is not a safe name");
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_service_bodies_are_accepted_and_answered_in_the_documented_shapes() {
    let d = Daemon::start().await;

    // Create with the documented body; the config publishes on loopback only, so the
    // answer says where the port went and which key changes it.
    let r = d.post(&format!("{SVC}?wait=started&timeout=180"), documented_body()).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    let msg = message(&r);
    assert!(msg.contains("테스트 서비스") && msg.contains("127.0.0.1") && msg.contains("ports.publish_address"), "{msg}");
    let svc = r.data().clone();
    assert_documented_service(&svc, "테스트 서비스");
    assert_eq!(svc["port"], 8080);
    assert_eq!(svc["host"], "127.0.0.1");
    assert_eq!(svc["networks"], json!(["plugin_network"]), "kept as sent");
    let id = svc["id"].as_str().unwrap().to_string();
    let slug = svc["slug"].as_str().unwrap().to_string();

    // Docker got the safe names: the container by id, the network by the (encoded) plugin
    // id, and the port on loopback.
    let info = d.inspect(&format!("addond-{id}-0")).await;
    let nets: Vec<String> = info.network_settings.unwrap().networks.unwrap().into_keys().collect();
    let daemon = d.daemon_id().unwrap();
    assert_eq!(nets, vec![format!("addond_{daemon}_p_test.plugin")]);
    let bindings = info.host_config.unwrap().port_bindings.unwrap();
    let ips: Vec<String> = bindings.values().flatten().flatten().filter_map(|b| b.host_ip.clone()).collect();
    assert_eq!(ips, vec!["127.0.0.1".to_string()]);

    // Lookups by id, slug and URL-encoded display name find the same service.
    for key in [id.clone(), slug.clone(), enc("테스트 서비스")] {
        let r = d.get(&format!("{SVC}/{key}")).await;
        assert_eq!(r.status, 200, "{key}: {:?}", r.body);
        assert_eq!(r.data()["id"], id.as_str());
        assert!(message(&r).contains("테스트 서비스"), "{:?}", r.body);
    }

    // The isolated network by its documented name; a second service of the same display
    // name makes that name ambiguous: 409 naming both ids.
    let mut second = documented_body();
    second["networks"] = json!(["plugin_isolated"]);
    second.as_object_mut().unwrap().remove("host");
    let r = d.post(SVC, second).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id2 = r.data()["id"].as_str().unwrap().to_string();
    assert_ne!(r.data()["slug"], slug.as_str(), "one display name, two slugs");
    assert_eq!(message(&r), "service 테스트 서비스 created");
    let r = d.get(&format!("{SVC}/{}", enc("테스트 서비스"))).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "conflict");
    let m = r.body["error"]["message"].as_str().unwrap();
    assert!(m.contains(&id) && m.contains(&id2), "{m}");
    let r = d.delete(&format!("{SVC}/{id2}?wait=deleted&timeout=60")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!message(&r).is_empty());

    // Lists: the documented fields on each, a counted sentence.
    let r = d.get(&format!("{SVC}?plugin_id=test_plugin")).await;
    assert_eq!(r.status, 200);
    assert_eq!(message(&r), "1 service found");
    assert_documented_service(&r.data()[0], "테스트 서비스");

    // resource_usage fills in once a sample was taken (views ask for one in the background).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = d.service(&id).await.unwrap();
        if s["resource_usage"]["memory_usage_mb"].as_f64().is_some_and(|m| m > 0.0) {
            assert!(s["resource_usage"]["sampled_at"].is_string(), "{s:#}");
            assert_eq!(s["resource_usage"]["memory_limit"], "512m");
            break;
        }
        assert!(Instant::now() < deadline, "resource_usage never filled in: {s:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Logs: `data` is the list of lines, the message counts them.
    let r = d.get(&format!("{SVC}/{}/logs?lines=20", enc("테스트 서비스"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let lines = r.data().as_array().expect("data is the list of log lines");
    assert!(!lines.is_empty() && lines.iter().all(Value::is_string), "{lines:?}");
    let n = lines.len();
    let want = if n == 1 { "1 log line".to_string() } else { format!("{n} log lines") };
    assert!(message(&r).starts_with(&want), "{} vs {want}", message(&r));
    assert_eq!(r.body["count"], n);
    // addonctl prints them, and finds the service by its display name.
    let o = ctl(&d, &["logs", "테스트 서비스", "--lines", "20"]).await;
    let printed = ok(&o, "addonctl logs");
    assert!(!printed.trim().is_empty());

    // Discovery: the documented totals and per-service fields, and the networks.
    let r = d.get("/api/plugin-microservice/discovery").await;
    assert_eq!(r.status, 200);
    let data = r.data();
    assert_eq!(
        (data["total_services"].as_u64(), data["healthy_services"].as_u64(), data["unhealthy_services"].as_u64()),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(message(&r), "1 service: 1 healthy, 0 unhealthy");
    let s = &data["services"][0];
    for k in ["id", "name", "plugin_id", "type", "status", "health", "endpoint", "port", "start_time"] {
        assert!(!s[k].is_null(), "discovery service lacks `{k}`: {s:#}");
    }
    assert_eq!(
        (s["name"].as_str(), s["type"].as_str(), s["health"].as_str(), s["status"].as_str()),
        (Some("테스트 서비스"), Some("rest_api"), Some("healthy"), Some("running"))
    );
    assert_eq!(s["endpoint"], format!("http://127.0.0.1:{}", svc["host_port"]));
    let kinds: Vec<(&str, &str, &str, bool)> = data["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (n["name"].as_str().unwrap(), n["driver"].as_str().unwrap(), n["scope"].as_str().unwrap(), n["internal"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(kinds, vec![("plugin_network", "bridge", "local", false), ("plugin_isolated", "bridge", "local", true)]);
    assert!(data["networks"].as_array().unwrap().iter().all(|n| n["id"].is_string()));
    // The owner's real network, with Docker's id.
    let real = data["docker_networks"].as_array().unwrap();
    let mine = real.iter().find(|n| n["name"] == format!("addond_{daemon}_p_test.plugin")).unwrap_or_else(|| panic!("{real:#?}"));
    let docker_id = docker()
        .inspect_network(mine["name"].as_str().unwrap(), None::<bollard::query_parameters::InspectNetworkOptions>)
        .await
        .unwrap()
        .id;
    assert_eq!(mine["id"].as_str(), docker_id.as_deref());
    assert_eq!(
        (mine["driver"].as_str(), mine["scope"].as_str(), mine["kind"].as_str()),
        (Some("bridge"), Some("local"), Some("plugin_network"))
    );

    // A sentence on every success of these routes.
    for path in [
        SVC.to_string(),
        format!("{SVC}/{id}"),
        format!("{SVC}/{id}/metrics"),
        "/api/plugin-microservice/health".to_string(),
        "/api/plugin-microservice/templates".to_string(),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        assert!(message(&r).len() > 3, "{path}: empty message {:?}", r.body);
    }

    // The CLI's table shows the display name, aligned by its width.
    let o = ctl(&d, &["ls"]).await;
    let table = ok(&o, "addonctl ls");
    let row = table.lines().find(|l| l.contains("테스트 서비스")).unwrap_or_else(|| panic!("{table}"));
    let header = table.lines().next().unwrap();
    let col = |l: &str, at: &str| unicode_width::UnicodeWidthStr::width(&l[..l.find(at).unwrap()]);
    assert_eq!(col(header, "PLUGIN"), col(row, "test_plugin"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_templates_and_template_create_with_a_display_name() {
    let d = Daemon::start().await;
    let r = d.get("/api/plugin-microservice/templates").await;
    assert_eq!(r.status, 200);
    assert_eq!(message(&r), "4 templates available");
    let list = r.data().as_array().unwrap();
    let expect = [
        ("rest_api_basic", "rest_api", 8080, ["FLASK_ENV", "FLASK_DEBUG"], "512m", "0.5"),
        ("websocket_service", "websocket", 8081, ["WS_HOST", "WS_PORT"], "256m", "0.3"),
        ("background_worker", "background_worker", 8082, ["WORKER_POOL_SIZE", "TASK_TIMEOUT"], "1g", "1.0"),
        ("scheduler_service", "scheduler", 8083, ["SCHEDULER_INTERVAL", "MAX_JOBS"], "256m", "0.2"),
    ];
    assert_eq!(list.len(), expect.len());
    for (t, (id, typ, port, vars, mem, cpu)) in list.iter().zip(expect) {
        for k in ["id", "name", "description", "service_type", "port", "template"] {
            assert!(!t[k].is_null(), "{id} lacks `{k}`: {t:#}");
        }
        assert_eq!((t["id"].as_str(), t["service_type"].as_str(), t["port"].as_u64()), (Some(id), Some(typ), Some(port)));
        let inner = &t["template"];
        assert!(inner["name"].is_string());
        assert_eq!((inner["service_type"].as_str(), inner["port"].as_u64()), (Some(typ), Some(port)));
        let env = inner["environment"].as_object().unwrap();
        assert_eq!(env.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), vars.into_iter().collect());
        let hc = &inner["health_check"];
        assert_eq!(hc["url"], format!("http://localhost:{port}/health"));
        for k in ["interval", "timeout", "retries"] {
            assert!(hc[k].is_number(), "{id}: health_check.{k}: {hc}");
        }
        assert_eq!(inner["resource_limits"], json!({"memory": mem, "cpu": cpu}));
    }

    // The documented create body, verbatim.
    let r = d
        .post(
            "/api/plugin-microservice/templates/websocket_service/create?wait=started&timeout=180",
            json!({"plugin_id": "test_plugin", "name": "템플릿 서비스"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    assert_eq!(message(&r), "service 템플릿 서비스 created from template websocket_service");
    let s = r.data();
    assert_eq!(
        (s["name"].as_str(), s["service_type"].as_str(), s["port"].as_u64()),
        (Some("템플릿 서비스"), Some("websocket"), Some(8081))
    );
    assert_eq!(s["environment"]["WS_PORT"], "8081");
    assert_eq!(s["health_status"], "healthy", "{s:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_0_0_0_0_is_honoured_when_the_config_publishes_beyond_loopback() {
    let d = Daemon::start_with(Options { ports_extra: "publish_address = \"0.0.0.0\"\n".into(), ..Default::default() }).await;
    let r = d.post(&format!("{SVC}?wait=started&timeout=180"), documented_body()).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    assert_eq!(message(&r), "service 테스트 서비스 created", "no note when honoured");
    assert_eq!(r.data()["host"], "0.0.0.0");
    let id = r.data()["id"].as_str().unwrap().to_string();
    let bound = |info: bollard::models::ContainerInspectResponse| -> Vec<String> {
        info.host_config.unwrap().port_bindings.unwrap().values().flatten().flatten().filter_map(|b| b.host_ip.clone()).collect()
    };
    assert_eq!(bound(d.inspect(&format!("addond-{id}-0")).await), vec!["0.0.0.0".to_string()]);

    // A loopback host narrows what the config allows.
    let r = d.post(&format!("{SVC}?wait=started&timeout=180"), json!({"name": "로컬 서비스", "image": IMAGE, "host": "127.0.0.1"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.data()["host"], "127.0.0.1");
    let id = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(bound(d.inspect(&format!("addond-{id}-0")).await), vec!["127.0.0.1".to_string()]);
    assert_eq!(r.data()["health_status"], "healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn applications_take_display_names() {
    let d = Daemon::start().await;
    let r = d.post("/api/applications", json!({"name": "모바일 앱", "description": "모바일 애플리케이션"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.data()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("app_"));
    let r = d.get(&format!("/api/applications/{}", enc("모바일 앱"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["id"], id.as_str());
    let r = d.post("/api/applications", json!({"name": "모바일 앱"})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("conflict")));
    let r = d.post("/api/applications", json!({"name": "tab\there"})).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("name")));
    let o = ctl(&d, &["apps", "ls"]).await;
    assert!(ok(&o, "apps ls").contains("모바일 앱"));
}

/// Every success says what happened: the admin API's reads, an execute and a render (also
/// through the gateway), never an empty `message`.
#[tokio::test]
async fn every_success_has_a_message() {
    let d = Daemon::start().await;
    let m = json!({
        "name": "msgs", "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.2"}}],
        "actions": ["echo"], "widgets": [{"name": "checkout", "category": "form"}],
    });
    install_addon(&d, m, None).await;
    let r = d.post("/api/applications", json!({"name": "msgs-app"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": "msgs-app", "addon": "msgs"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (grant, key) = (r.data()["id"].as_str().unwrap().to_string(), r.data()["api_key"].as_str().unwrap().to_string());
    let mut paths: Vec<String> = [
        "/api/plugin-microservice/services",
        "/api/plugin-microservice/discovery",
        "/api/plugin-microservice/health",
        "/api/plugin-microservice/templates",
        "/api/addons",
        "/api/addons/msgs",
        "/api/addons/msgs/deployments",
        "/api/addons/msgs/environments",
        "/api/addons/msgs/schedules",
        "/api/addons/msgs/builds",
        "/api/widgets",
        "/api/applications",
        "/api/applications/msgs-app",
        "/api/application-grants",
        "/api/events",
        "/api/events/subscribers",
        "/api/ai-gateway/mcp-tools",
        "/api/ai-gateway/tools",
        "/api/audit",
        "/api/doctor",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.push(format!("/api/application-grants/{grant}"));
    let sid = d.get("/api/addons/msgs").await.data()["services"][0]["id"].as_str().unwrap().to_string();
    paths.push(format!("/api/plugin-microservice/services/{sid}"));
    paths.push(format!("/api/plugin-microservice/services/{sid}/logs"));
    for p in &paths {
        let r = d.get(p).await;
        assert_eq!(r.status, 200, "{p}: {:?}", r.body);
        assert!(!message(&r).trim().is_empty(), "{p} answered an empty message: {:?}", r.body);
    }
    let r = d.post("/api/addons/msgs/execute", json!({"action": "echo", "data": {"a": 1}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(message(&r).contains("echo"), "{:?}", r.body);
    let r = d.get("/api/widgets/msgs/checkout").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(message(&r).contains("checkout"), "{:?}", r.body);
    // Through the gateway, with the key, on a raw connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(d.gateway().await).await.unwrap();
    let body = json!({"action": "echo", "data": {}}).to_string();
    let req = format!(
        "POST /api/addons/msgs/execute HTTP/1.1\r\nhost: gw\r\nconnection: close\r\napikey: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert!(v["message"].as_str().unwrap_or_default().contains("echo"), "{v}");
}
