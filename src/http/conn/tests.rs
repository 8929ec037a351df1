use super::*;

fn cfg() -> HttpConfig {
    HttpConfig::default()
}

#[test]
fn budgets_fit_the_descriptor_limit() {
    let b = Budgets::compute(&cfg(), 65536);
    assert!(!b.scaled);
    assert_eq!((b.admin, b.gateway, b.addon_api), (1024, 8192, 512));
    for limit in [1024u64, 2048, 4096, 16384] {
        let b = Budgets::compute(&cfg(), limit);
        assert!(b.scaled, "{limit}");
        let used = (b.admin + 2 * b.gateway + 2 * b.addon_api) as u64;
        assert!(used + FD_RESERVE <= limit, "{limit}: {b:?}");
    }
    // Below what the floors need, every listener still gets a few.
    let b = Budgets::compute(&cfg(), 300);
    assert!(b.admin >= 8 && b.gateway >= 8 && b.addon_api >= 8, "{b:?}");
    let b = Budgets::compute(&cfg(), 1024);
    assert_eq!(b.admin, 48);
    assert!(b.gateway > 300 && b.addon_api < b.gateway, "{b:?}");
}

fn registry(max: usize) -> Arc<Registry> {
    Registry::new(
        Listener::Admin,
        Limits {
            max_connections: max,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        },
    )
}

fn admitted(a: Admission) -> Slot {
    match a {
        Admission::Admitted(s) => s,
        Admission::Refused => panic!("refused"),
    }
}

#[test]
fn the_cap_sheds_the_oldest_idle_connection_then_head_then_refuses() {
    let r = registry(3);
    let a = admitted(r.admit());
    let b = admitted(r.admit());
    let c = admitted(r.admit());
    a.state.request(); // busy
    std::thread::sleep(Duration::from_millis(2));
    b.state.bytes_in(); // sending its head (older idle clock than c's)
    c.state.enter(Phase::Idle);
    let d = admitted(r.admit());
    assert!(c.state.killed.load(Ordering::Acquire), "the idle one goes first");
    assert!(!b.state.killed.load(Ordering::Acquire) && !a.state.killed.load(Ordering::Acquire));
    drop(c);
    d.state.request();
    let e = admitted(r.admit());
    e.state.request();
    assert!(b.state.killed.load(Ordering::Acquire), "then the one still sending its head");
    assert_eq!(r.dying.load(Ordering::Acquire), 1, "b is on its way out");
    drop(b);
    assert_eq!(r.dying.load(Ordering::Acquire), 0);
    assert!(matches!(r.admit(), Admission::Refused), "only busy connections left");
    drop(a);
    assert_eq!(r.len(), 2);
}

#[tokio::test]
async fn new_connections_wait_briefly_while_many_are_closing() {
    let r = registry(1);
    let first = admitted(r.admit());
    r.dying.store(MAX_DYING, Ordering::Release);
    let t0 = Instant::now();
    r.room().await;
    assert!(t0.elapsed() >= Duration::from_millis(90), "waited for room: {:?}", t0.elapsed());
    let waiter = {
        let r = r.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            r.room().await;
            t0.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    first.state.killed.store(true, Ordering::Release);
    drop(first); // one of the closing connections closes
    let waited = waiter.await.expect("waiter");
    assert!(waited < Duration::from_millis(90), "woken when room was made: {waited:?}");
}

#[test]
fn phases_follow_requests_and_flushes() {
    let s = ConnState::new();
    assert_eq!(s.phase(), Phase::Idle);
    s.bytes_in();
    assert_eq!(s.phase(), Phase::Head);
    s.request();
    s.bytes_in();
    assert_eq!(s.phase(), Phase::Busy, "body bytes do not restart the head clock");
    s.answered();
    assert_eq!(s.phase(), Phase::Draining);
    s.bytes_in(); // the next request, pipelined before the flush
    s.flushed();
    assert_eq!(s.phase(), Phase::Head);
    s.request();
    s.answered();
    s.flushed();
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn hypers_refusals_become_envelopes() {
    let out = String::from_utf8(protocol_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").expect("400")).expect("utf8");
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n") && out.contains("connection: close"), "{out}");
    let body: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "bad_request");
    let out = String::from_utf8(protocol_refusal(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n").expect("431")).expect("utf8");
    assert!(out.contains("\"field\":\"headers\""), "{out}");
    assert!(protocol_refusal(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
    assert!(protocol_refusal(b"HTTP/1.1 5").is_none());
}

#[tokio::test]
async fn body_failures_are_told_apart() {
    use http_body_util::BodyExt;
    let over =
        http_body_util::Limited::new(http_body_util::Full::new(Bytes::from_static(b"abc")), 1).collect().await.expect_err("over the limit");
    assert_eq!(body_failure(&*over), BodyFailure::TooLarge);
    let over = axum::body::to_bytes(Body::from("abc"), 1).await.expect_err("over the limit");
    assert_eq!(body_failure(&over), BodyFailure::TooLarge, "through axum's error too");
    let wrapped = axum::Error::new(BodyTimeout(Duration::from_secs(1)));
    assert_eq!(body_failure(&wrapped), BodyFailure::Timeout);
    assert_eq!(body_failure(&io::Error::other("bad chunk")), BodyFailure::Malformed);
}
