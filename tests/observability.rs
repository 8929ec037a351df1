//! What operators watch: the TCP metrics listener (only `GET /metrics`, the exposition
//! `promtool check metrics` accepts, with gateway, event, build and process series after
//! real traffic) and the webhook notifications (a service crashing until `Failed`, Docker
//! unreachable, a receiver that fails first and is retried).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// One request over a fresh TCP connection: (status, body).
async fn tcp(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await.expect("answer in time").unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_string())
}

/// The value of the first sample whose series (name and labels, as written) is `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` over `text`; fails the test when promtool is missing.
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("promtool is needed to check the exposition ({e}); scripts/test.sh installs it (Debian package `prometheus`)"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest(name: &str, extra: Value) -> Value {
    let mut m = json!({
        "name": name, "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "actions": ["add"]
    });
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            m[k] = v.clone();
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_metrics_listener_serves_only_metrics_and_promtool_accepts_the_series() {
    let (port, _) = port_slice(1);
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_with(Options {
        extra: format!("[metrics]\nlisten = \"{metrics}\"\n"),
        events_extra: "max_attempts = 2".into(),
        ..Options::default()
    })
    .await;

    // Gateway traffic: one call, one bad key, one path no route serves.
    install_addon(&d, manifest("meter", json!({"events": {"subscribes": ["tick.*"]}})), None).await;
    let r = d.post("/api/applications", json!({"name": "shop", "organization": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": "shop", "addon": "meter"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.data()["api_key"].as_str().unwrap().to_string();
    let gw = d.gateway().await;
    let (st, b) = tcp(gw, "POST", "/api/addons/meter/execute", &[("apikey", &key)], r#"{"action":"add","data":{"a":1,"b":2}}"#).await;
    assert_eq!(st, 200, "{b}");
    let (st, _) = tcp(gw, "POST", "/api/addons/meter/execute", &[("apikey", "ak_nope_nope")], "{}").await;
    assert_eq!(st, 401);
    let (st, _) = tcp(gw, "GET", "/nowhere", &[], "").await;
    assert_eq!(st, 404);

    // Event traffic: three events the subscriber acknowledges, one it does not want.
    tokio::time::sleep(Duration::from_millis(1500)).await; // the deliverer starts within a second
    for n in 0..3 {
        let r = d.post("/api/events", json!({"name": "tick.second", "data": {"n": n}})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let r = d.post("/api/events", json!({"name": "other.thing", "data": {}})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (st, text) = tcp(metrics, "GET", "/metrics", &[], "").await;
        assert_eq!(st, 200, "{text}");
        if sample(&text, "addond_event_deliveries_total") >= Some(3.0)
            && sample(&text, "addond_event_subscriber_lag{subscriber=\"meter\"}") == Some(0.0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "the deliveries never showed up:\n{text}\n{}", tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let route = |r: &str, s: u16| sample(&text, &format!("addond_gateway_requests_total{{route=\"{r}\",status=\"{s}\"}}"));
    assert_eq!(route("/api/addons/{addon}/execute", 200), Some(1.0), "{text}");
    assert_eq!(route("/api/addons/{addon}/execute", 401), Some(1.0), "{text}");
    assert_eq!(route("none", 404), Some(1.0), "{text}");
    assert_eq!(sample(&text, "addond_gateway_auth_failures_total{reason=\"invalid_api_key\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "addond_gateway_rate_limited_total"), Some(0.0), "{text}");
    // the three ticks, the other event, and the lifecycle's own (service.created, …)
    assert!(sample(&text, "addond_events_emitted_total") >= Some(4.0), "{text}");
    assert_eq!(sample(&text, "addond_events_dead_lettered_total"), Some(0.0), "{text}");
    assert!(text.contains(&format!("addond_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(sample(&text, "process_resident_memory_bytes") > Some(1e6), "{text}");
    assert!(sample(&text, "process_open_fds") > Some(3.0), "{text}");
    assert!(sample(&text, "process_start_time_seconds") > Some(1.7e9), "{text}");
    assert!(text.contains("process_cpu_seconds_total "), "{text}");
    assert!(sample(&text, "addond_http_connections{listener=\"metrics\"}") >= Some(1.0), "the scrape's own connection\n{text}");
    // the documented names stay, and the daemon's other series are all addond_
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            ["addond_", "process_", "addon_executions_total", "addon_response_time_seconds", "widget_render_time_seconds"]
                .iter()
                .any(|p| l.starts_with(p)),
            "unprefixed series: {l}"
        );
    }
    assert!(text.contains("addon_executions_total{addon_id=\"meter\",function_name=\"add\",status=\"success\"} 1"), "{text}");
    let t0 = Instant::now();
    let (_, again) = tcp(metrics, "GET", "/metrics", &[], "").await;
    eprintln!("scrape over TCP: {} bytes, {} lines in {:?}", again.len(), again.lines().count(), t0.elapsed());
    promtool_check(&text);

    // A subscriber that is down: one retry, then a dead letter.
    let r = d.post("/api/addons/meter/stop?wait=stopped&timeout=30", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = d.post("/api/events", json!({"name": "tick.late", "data": {}})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, text) = tcp(metrics, "GET", "/metrics", &[], "").await;
        if sample(&text, "addond_events_dead_lettered_total") == Some(1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "never dead-lettered:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&text, "addond_event_delivery_retries_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "addond_event_deliveries_total"), Some(3.0), "{text}");
    promtool_check(&text);

    // The same exposition on the admin socket.
    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let admin = String::from_utf8_lossy(&raw.body).to_string();
    assert!(admin.contains("addond_gateway_requests_total{route=\"none\",status=\"404\"} 1"), "{admin}");

    // Nothing else is served there.
    let (st, body) = tcp(metrics, "GET", "/api/plugin-microservice/services", &[], "").await;
    assert_eq!(st, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found", "{body}");
    assert!(v["error"]["message"].as_str().unwrap().contains("only GET /metrics"), "{body}");
    let (st, body) = tcp(metrics, "POST", "/metrics", &[], "{}").await;
    assert_eq!(st, 405, "{body}");
    let (st, _) = tcp(metrics, "GET", "/health", &[], "").await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_listener_is_off_by_default_and_refuses_a_public_address() {
    let d = Daemon::start().await;
    assert!(!d.log().contains("metrics listening"), "{}", d.log());
    let cfg = d.dir.path().join("public.toml");
    std::fs::write(&cfg, "[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap();
    let o = std::process::Command::new(addond_bin()).arg("check-config").arg("--config").arg(&cfg).output().unwrap();
    assert!(!o.status.success());
    let e = err(&o);
    assert!(e.contains("metrics.listen") && e.contains("metrics.allow_non_loopback"), "{e}");
    std::fs::write(&cfg, "[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_non_loopback = true\n").unwrap();
    let o = std::process::Command::new(addond_bin()).arg("check-config").arg("--config").arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
}

/// Every POST a [`Receiver`] got: its headers (with `:method` and `:path`) and its body.
type Posts = std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

/// A webhook receiver on loopback: records every POST (its headers and JSON body) and
/// answers 500 to the first `fail_first` of them, 200 after.
struct Receiver {
    addr: SocketAddr,
    got: Posts,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Posts = Default::default();
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (g, seen) = (g.clone(), seen.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, seen) = (g.clone(), seen.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect::<std::collections::HashMap<_, _>>();
                            let headers = {
                                let mut h = headers;
                                h.insert(":path".into(), req.uri().to_string());
                                h.insert(":method".into(), req.method().to_string());
                                h
                            };
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            g.lock().unwrap().push((headers, String::from_utf8_lossy(&body).to_string()));
                            let n = seen.fetch_add(1, Ordering::SeqCst);
                            let status = if n < fail_first { 500 } else { 200 };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder().status(status).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, got }
    }

    fn posts(&self) -> Vec<(std::collections::HashMap<String, String>, Value)> {
        self.got.lock().unwrap().iter().map(|(h, b)| (h.clone(), serde_json::from_str(b).unwrap_or(Value::Null))).collect()
    }

    /// Waits until `n` POSTs of `event` arrived; all POSTs so far.
    async fn wait_for(&self, event: &str, n: usize, secs: u64, d: &Daemon) -> Vec<(std::collections::HashMap<String, String>, Value)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let posts = self.posts();
            if posts.iter().filter(|(_, b)| b["event"] == event).count() >= n {
                return posts;
            }
            assert!(Instant::now() < deadline, "{n} POST(s) of {event} never arrived: {posts:?}\n{}", tail(&d.log(), 40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn notify_config(r: &Receiver, extra: &str) -> String {
    format!("[notify]\nwebhook_url = \"http://{}/hooks/addond?k=1\"\nretry_base_seconds = 0.2\nretry_max_seconds = 1.0\n{extra}", r.addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_crashing_until_failed_is_posted_and_a_failing_receiver_is_retried() {
    let receiver = Receiver::start(2).await;
    let d = Daemon::start_with(Options { extra: notify_config(&receiver, "secret = \"s3cret\"\n"), ..Options::default() }).await;
    let r = d
        .post(
            "/api/plugin-microservice/services",
            json!({"name": "crasher", "image": IMAGE, "environment": {"SAMPLE_EXIT_ON_START": "3"}, "restart_policy": "always"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    d.wait_for("crasher", 40, |s| s.is_some_and(|s| s["phase"] == "Failed")).await.expect("the service fails");
    let failed_at = Instant::now();
    receiver.wait_for("service.failed", 1, 20, &d).await;
    eprintln!("first POST {:?} after Failed was seen", failed_at.elapsed());
    // two 500s, then the third attempt is taken
    let posts = receiver.wait_for("service.failed", 3, 20, &d).await;
    eprintln!("third (accepted) POST {:?} after Failed was seen", failed_at.elapsed());
    assert_eq!(posts.len(), 3, "only the failure is notified (not the restarts): {posts:?}");
    let (h, body) = &posts[2];
    assert_eq!(h[":method"], "POST");
    assert_eq!(h[":path"], "/hooks/addond?k=1");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-addond-event"], "service.failed");
    assert_eq!(body["event"], "service.failed");
    assert_eq!(body["data"]["service"], "crasher");
    assert_eq!(body["data"]["exit_code"], 3);
    assert!(body["data"]["error"].as_str().unwrap().contains("gave up after"), "{body}");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
    // a retry is the same notification: same id, same body, same signature
    let ids: Vec<&String> = posts.iter().map(|(h, _)| &h["x-addond-delivery"]).collect();
    assert!(ids.iter().all(|i| *i == ids[0]) && ids[0] == body["id"].as_str().unwrap(), "{ids:?}");
    let raw = receiver.got.lock().unwrap()[2].1.clone();
    assert_eq!(h["x-addond-signature"], format!("sha256={}", addond::secret::hmac_sha256_hex(b"s3cret", raw.as_bytes())));
    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8_lossy(&raw.body).to_string();
    assert_eq!(sample(&text, "addond_notifications_sent_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "addond_notification_retries_total"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "addond_notifications_dropped_total"), Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_going_away_and_coming_back_is_posted() {
    let receiver = Receiver::start(0).await;
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_path = proxy_dir.path().join("docker.sock");
    let mut proxy = DockerProxy::start(&proxy_path);
    let d = Daemon::start_with(Options {
        docker_host: format!("unix://{}", proxy_path.display()),
        extra: notify_config(&receiver, ""),
        ..Options::default()
    })
    .await;
    proxy.cut().await;
    let cut_at = Instant::now();
    let posts = receiver.wait_for("docker.unreachable", 1, 15, &d).await;
    eprintln!("docker.unreachable POST {:?} after the engine went away", cut_at.elapsed());
    assert_eq!(posts[0].1["data"]["state"], "unreachable", "{posts:?}");
    assert_eq!(posts[0].1["data"]["docker"], format!("unix://{}", proxy_path.display()));
    let _back = DockerProxy::start(&proxy_path);
    let back_at = Instant::now();
    let posts = receiver.wait_for("docker.recovered", 1, 15, &d).await;
    eprintln!("docker.recovered POST {:?} after the engine came back", back_at.elapsed());
    let events: Vec<&Value> = posts.iter().map(|(_, b)| &b["event"]).collect();
    assert_eq!(events, ["docker.unreachable", "docker.recovered"], "{posts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_holds_up_nothing_and_the_queue_drops_the_oldest() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    let extra = format!("[notify]\nwebhook_url = \"http://{addr}/\"\ntimeout_seconds = 120\nqueue_size = 1\n");
    let d = Daemon::start_with(Options { extra, ..Options::default() }).await;
    let t0 = Instant::now();
    for n in 0..3 {
        let body =
            json!({"name": format!("once{n}"), "image": IMAGE, "environment": {"SAMPLE_EXIT_ON_START": "7"}, "restart_policy": "no"});
        let r = d.post("/api/plugin-microservice/services", body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    for n in 0..3 {
        let s = d.wait_for(&format!("once{n}"), 30, |s| s.is_some_and(|s| s["phase"] == "Failed")).await;
        assert!(s.is_some(), "once{n} never reached Failed while the receiver hung\n{}", tail(&d.log(), 30));
    }
    eprintln!("three services Failed in {:?} with the receiver hanging", t0.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
        let text = String::from_utf8_lossy(&raw.body).to_string();
        let dropped = sample(&text, "addond_notifications_dropped_total").unwrap_or(0.0);
        if dropped >= 1.0 {
            assert_eq!(sample(&text, "addond_notifications_sent_total"), Some(0.0), "{text}");
            assert!(sample(&text, "addond_notifications_queued") <= Some(1.0), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "nothing was dropped from a full queue:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held.lock().unwrap().len(), 1, "one POST at a time, the first still waiting");
    // The admin API answers meanwhile, and a stop does not wait for the receiver.
    assert_eq!(d.get("/health").await.status, 200);
    let mut d = d;
    let t0 = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "{status}");
    eprintln!("stopped in {:?} with a POST hanging", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(15), "the stop waited {:?} for the receiver", t0.elapsed());
}
