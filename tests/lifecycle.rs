//! A service's life through the admin API: create from a template, stop, start, restart,
//! scale, delete; self-healing when containers die behind the daemon's back; restart
//! backoff ending in Failed; health checks that start failing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn template_to_started_then_stop_start_restart_scale_delete() {
    let d = Daemon::start().await;
    let r = d.post("/api/plugin-microservice/templates/rest_api_basic/create?wait=started&timeout=60", json!({"name": "shop-api"})).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    let svc = r.data().clone();
    assert_eq!(svc["phase"], "Started");
    assert_eq!(svc["health_status"], "healthy");
    assert_eq!(svc["resource_limits"]["memory"], "512m");
    let port = svc["host_port"].as_u64().unwrap() as u16;
    assert!((d.ports.0..=d.ports.1).contains(&port));
    let (status, body) = http_get(port, "/health").await.expect("instance answers on its host port");
    assert_eq!(status, 200, "{body}");

    // stop → Stopped, container stopped, port kept
    let r = d.post(&format!("{SVC}/shop-api/stop?wait=stopped&timeout=30"), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["phase"], "Stopped");
    assert!(http_get(port, "/health").await.is_none(), "stopped instance must not answer");
    assert_eq!(d.containers().await.values().filter(|r| **r).count(), 0);

    // start → Started on the same port
    let r = d.post(&format!("{SVC}/shop-api/start?wait=started&timeout=30"), json!({})).await;
    assert_eq!(r.data()["phase"], "Started", "{:?}", r.body);
    assert_eq!(r.data()["host_port"].as_u64().unwrap() as u16, port);
    assert_eq!(http_get(port, "/health").await.unwrap().0, 200);

    // restart → a new process (uptime resets)
    let before: serde_json::Value = serde_json::from_str(&http_get(port, "/health").await.unwrap().1).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = d.post(&format!("{SVC}/shop-api/restart?wait=started&timeout=30"), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = d.wait_for("shop-api", 20, |s| s.is_some_and(|s| s["phase"] == "Started")).await.unwrap();
    let after: serde_json::Value = serde_json::from_str(&http_get(port, "/health").await.unwrap().1).unwrap();
    assert!(after["uptime_ms"].as_u64().unwrap() < before["uptime_ms"].as_u64().unwrap() + 300, "{before} → {after}");
    assert_eq!(s["phase"], "Started");

    // scale 1 → 3: three distinct ports, all answering
    let r = d.post(&format!("{SVC}/shop-api/scale?wait=started&timeout=60"), json!({"replicas": 3})).await;
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, tail(&d.log(), 30));
    let ports = ports_of(r.data());
    assert_eq!(ports.len(), 3);
    let mut uniq = ports.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "{ports:?}");
    for p in &ports {
        assert_eq!(http_get(*p, "/health").await.map(|r| r.0), Some(200), "port {p}");
    }
    assert_eq!(d.containers().await.len(), 3);

    // scale 3 → 1: the extra containers and their ports go
    let r = d.post(&format!("{SVC}/shop-api/scale"), json!({"replicas": 1})).await;
    assert_eq!(r.status, 200);
    let s = d.wait_for("shop-api", 20, |s| s.is_some_and(|s| s["instances"].as_array().unwrap().len() == 1)).await.unwrap();
    assert_eq!(ports_of(&s), vec![ports[0]]);
    assert_eq!(d.containers().await.len(), 1);
    for p in &ports[1..] {
        assert!(http_get(*p, "/health").await.is_none(), "port {p} still answers after scale-down");
    }

    // delete: containers gone, row gone, ports free
    let r = d.delete(&format!("{SVC}/shop-api?wait=deleted&timeout=30")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["phase"], "Deleted");
    assert!(d.service("shop-api").await.is_none());
    assert!(d.containers().await.is_empty());
    assert!(addond::ports::port_is_free("127.0.0.1".parse().unwrap(), port));
    let r = d.get(&format!("{SVC}/shop-api")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_removed_or_killed_behind_our_back_come_back() {
    let d = Daemon::start().await;
    let svc = d.create_started("healer", json!({"replicas": 2})).await;
    let names: Vec<String> =
        svc["instances"].as_array().unwrap().iter().map(|i| i["container_name"].as_str().unwrap().to_string()).collect();
    let dk = docker();
    dk.remove_container(&names[0], Some(bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() }))
        .await
        .unwrap();
    dk.kill_container(&names[1], None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    let t0 = Instant::now();
    d.wait_for("healer", 20, |s| {
        s.is_some_and(|s| s["phase"] == "Started" && s["instances"].as_array().unwrap().iter().all(|i| i["health"] == "healthy"))
    })
    .await;
    let running = d.containers().await;
    assert_eq!(running.len(), 2);
    assert!(running.values().all(|r| *r), "{running:?}");
    for p in ports_of(&svc) {
        assert_eq!(http_get(p, "/health").await.map(|r| r.0), Some(200));
    }
    eprintln!("healed in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loop_backs_off_and_ends_failed() {
    let d = Daemon::start().await;
    let r = d
        .post(SVC, json!({"name": "crasher", "image": IMAGE, "environment": {"SAMPLE_EXIT_ON_START": "3"}, "restart_policy": "always"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let t0 = Instant::now();
    let s = d.wait_for("crasher", 40, |s| s.is_some_and(|s| s["phase"] == "Failed")).await.unwrap();
    let took = t0.elapsed();
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("exited with code 3"), "{err}");
    // max_failures = 4: four exits, the first three of them restarted; the message counts
    // what it names
    assert!(err.contains("gave up after 4 failures within 120s"), "{err}");
    assert_eq!(s["exit_code"], 3);
    // Backoff: restarts at 0, 0.5, 1.0 s after each crash → at least 1.5 s before giving up.
    assert!(took >= Duration::from_millis(1400), "gave up too fast: {took:?}");
    let restarts = s["instances"][0]["restarts"].as_u64().unwrap();
    assert_eq!(restarts, 3, "{s:#}");
    // Failed is sticky: nothing restarts it until the operator does.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = d.service("crasher").await.unwrap();
    assert_eq!(again["phase"], "Failed");
    assert_eq!(again["instances"][0]["restarts"], restarts);
    // wait=started on a failed service says so
    let r = d.post(&format!("{SVC}/crasher/start?wait=started&timeout=30"), json!({})).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "service_failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policy_no_fails_at_first_exit() {
    let d = Daemon::start().await;
    let r =
        d.post(SVC, json!({"name": "once", "image": IMAGE, "environment": {"SAMPLE_EXIT_ON_START": "7"}, "restart_policy": "no"})).await;
    assert_eq!(r.status, 201);
    let s = d.wait_for("once", 20, |s| s.is_some_and(|s| s["phase"] == "Failed")).await.unwrap();
    assert!(s["last_error"].as_str().unwrap().contains("exited with code 7"), "{s:#}");
    assert_eq!(s["instances"][0]["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_health_check_triggers_restart() {
    let d = Daemon::start().await;
    let svc = d.create_started("sickly", json!({})).await;
    let port = svc["host_port"].as_u64().unwrap() as u16;
    let (st, _) = http(port, "POST", "/admin/health/fail", "").await.unwrap();
    assert_eq!(st, 200);
    let t0 = Instant::now();
    // interval 1 s × retries 2 + margin
    let s = d
        .wait_for("sickly", 10, |s| s.is_some_and(|s| s["instances"][0]["restarts"].as_u64() == Some(1) && s["phase"] == "Started"))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "restart took {took:?}");
    assert!(s["instances"][0]["last_error"].as_str().unwrap_or("").contains("health check"), "{s:#}");
    assert_eq!(http_get(port, "/health").await.map(|r| r.0), Some(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_metrics_discovery_and_health_endpoints() {
    let d = Daemon::start().await;
    let svc = d.create_started("chatty", json!({"environment": {"SAMPLE_LOG_TEXT": "hello-from-chatty"}})).await;
    let r = d.get(&format!("{SVC}/chatty/logs?lines=50")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // `data` is the list of lines (the documented shape).
    let lines: Vec<String> = r.data().as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    assert!(lines.iter().any(|l| l.contains("hello-from-chatty")), "{lines:?}");

    let r = d.get(&format!("{SVC}/chatty/metrics")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for k in ["cpu_percent", "memory_usage_mb", "memory_limit_mb", "memory_percent", "network_rx_mb", "network_tx_mb", "timestamp"] {
        assert!(!r.data()[k].is_null(), "metrics lack {k}: {:?}", r.data());
    }
    assert_eq!(r.data()["memory_limit_mb"].as_f64().unwrap(), 512.0);

    let r = d.get("/api/plugin-microservice/discovery").await;
    let port = svc["host_port"].as_u64().unwrap();
    assert_eq!(r.data()["services"][0]["endpoint"], format!("http://127.0.0.1:{port}"));
    assert_eq!(r.data()["totals"]["healthy"], 1);
    // The kinds by their documented names; the config's name is an alias of the first.
    assert_eq!(r.data()["networks"][0]["name"], "plugin_network");
    assert_eq!(r.data()["networks"][0]["aliases"], json!(["addond_test"]));

    let r = d.get("/api/plugin-microservice/health").await;
    assert_eq!(r.data()["healthy"], 1);

    let r = d.get(&format!("{SVC}?status=started")).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    let r = d.get(&format!("{SVC}?plugin_id=nope")).await;
    assert_eq!(r.data().as_array().unwrap().len(), 0);

    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8_lossy(&raw.body);
    assert!(text.contains("addond_services{phase=\"Started\"} 1"), "{text}");
    assert!(text.contains("addond_docker_up 1"));

    // follow streams new lines
    // (`lines=0` shows only lines logged after Docker attached the follow, which may be a
    // moment after the reply's headers: the marked request is repeated until one shows.)
    let mut stream = d.client.stream(addond::client::Method::GET, &format!("{SVC}/chatty/logs?follow=true&lines=0")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains("/marker-path") {
        assert!(Instant::now() < deadline, "follow never showed the request line: {seen}");
        http_get(port as u16, "/marker-path").await;
        if let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(1), stream.next_chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    // audit trail of the create, with our uid
    let r = d.get("/api/audit?limit=10").await;
    let entries = r.data().as_array().unwrap();
    assert!(entries.iter().any(|e| e["method"] == "POST" && e["path"] == SVC && e["uid"] == unsafe { libc::getuid() }), "{entries:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_kill_is_named() {
    let d = Daemon::start().await;
    let svc = d.create_started("hungry", json!({"resource_limits": {"memory": "16m"}, "restart_policy": "no"})).await;
    let port = svc["host_port"].as_u64().unwrap() as u16;
    let _ = http(port, "POST", "/admin/oom", "").await;
    let s = d.wait_for("hungry", 30, |s| s.is_some_and(|s| s["phase"] == "Failed")).await.unwrap();
    assert!(s["last_error"].as_str().unwrap().contains("out of memory"), "{s:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn isolated_network_services_are_checked_on_their_own_address() {
    let d = Daemon::start().await;
    let svc = d.create_started("offline", json!({"networks": ["addond_test_isolated"]})).await;
    assert_eq!(svc["health_status"], "healthy");
    // the service's own network of the internal kind
    let own = format!("addond_{}_s_offline_internal", d.daemon_id().unwrap());
    let net = docker().inspect_network(&own, None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap();
    assert_eq!(net.internal, Some(true), "the isolated network has no route out");
    let c = d.inspect(svc["instances"][0]["container_name"].as_str().unwrap()).await;
    let nets = c.network_settings.unwrap().networks.unwrap();
    assert_eq!(nets.keys().collect::<Vec<_>>(), vec![&own]);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_service_changes() {
    let d = Daemon::start().await;
    let mut stream = d.client.stream(addond::client::Method::GET, "/api/plugin-microservice/watch").await.unwrap();
    d.create_started("watched", json!({})).await;
    d.delete(&format!("{SVC}/watched?wait=deleted")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !(seen.contains("\"phase\":\"Started\"") && seen.contains("\"deleted\":true")) {
        assert!(Instant::now() < deadline, "watch missed changes: {seen}");
        if let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(5), stream.next_chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("event: service"));
    assert!(seen.contains("\"name\":\"watched\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_start_is_not_a_restart_and_a_port_taken_meanwhile_is_replaced() {
    let d = Daemon::start().await;
    let svc = d.create_started("mover", json!({})).await;
    let port = svc["host_port"].as_u64().unwrap() as u16;
    let r = d.post(&format!("{SVC}/mover/stop?wait=stopped&timeout=30"), json!({})).await;
    assert_eq!(r.status, 200);
    // another program takes the port while the service is stopped
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let r = d.post(&format!("{SVC}/mover/start?wait=started&timeout=30"), json!({})).await;
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, tail(&d.log(), 20));
    let s = r.data();
    let new_port = s["host_port"].as_u64().unwrap() as u16;
    assert_ne!(new_port, port, "moved off the taken port");
    assert_eq!(http_get(new_port, "/health").await.map(|r| r.0), Some(200));
    assert_eq!(s["instances"][0]["restarts"], 0, "a stop and a start are not a crash restart");
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let charged: i64 = db.query_row("SELECT COUNT(*) FROM restart_failures", [], |r| r.get(0)).unwrap();
    assert_eq!(charged, 0);
}
