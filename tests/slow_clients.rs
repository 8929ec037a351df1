//! Slow and idle clients against the real daemon: a bounded slowloris on the gateway while
//! both listeners keep answering, and the header, idle and body timeouts.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

/// A fresh connection's `GET /health` to the gateway: the status, or what went wrong.
async fn gateway_health(gw: std::net::SocketAddr) -> Result<u16, String> {
    let mut s = TcpStream::connect(gw).await.map_err(|e| format!("connect: {e}"))?;
    exchange(&mut s, b"GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n").await.map(|(st, _, _)| st)
}

/// A metric's value for one listener, from the admin socket's `/metrics`.
async fn metric(d: &Daemon, name: &str, listener: &str) -> u64 {
    let text = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.expect("metrics").body;
    let text = String::from_utf8_lossy(&text).to_string();
    let prefix = format!("{name}{{listener=\"{listener}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_on_the_gateway_leaves_both_listeners_answering() {
    // The daemon gets the kernel's usual soft limit as a hard one, so raising it cannot
    // help: the budgets have to. This process needs a few thousand descriptors itself.
    assert!(raise_own_fd_limit() >= 4096, "the test needs 4096 descriptors");
    let d = Daemon::start_with(Options { nofile: Some(1024), ..Default::default() }).await;
    let gw = d.gateway().await;

    // 1,200 idle connections and 200 that send half a request head and stop. A daemon that
    // stops accepting shows here as connections the kernel can no longer queue; the flood
    // carries on without them, and the checks below say what that did to the listeners.
    let mut flood = Vec::new();
    let mut unconnected = Vec::new();
    for i in 0..1400 {
        // 1.5 s: a SYN the kernel drops is sent again after 1 s.
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(1500), TcpStream::connect(gw)).await else {
            unconnected.push(i);
            if unconnected.len() >= 10 {
                break;
            }
            continue;
        };
        if i >= 1200 {
            s.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\nx-slow: ").await.expect("half a head");
        }
        flood.push(s);
    }

    // Both listeners answer /health at once, again and again, while the flood holds on.
    for round in 0..10 {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), d.client.get("/health")).await;
        let took = t.elapsed();
        match r {
            Ok(Ok(r)) => assert_eq!(r.status, 200, "admin /health in round {round}: {:?}", r.body),
            other => panic!("admin /health in round {round} did not answer: {other:?}\nlog:\n{}", tail(&d.log(), 20)),
        }
        assert!(took < Duration::from_millis(100), "admin /health took {took:?} in round {round}");
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), gateway_health(gw)).await;
        let took = t.elapsed();
        assert!(matches!(r, Ok(Ok(200))), "gateway /health in round {round}: {r:?}\nlog:\n{}", tail(&d.log(), 20));
        assert!(took < Duration::from_millis(100), "gateway /health took {took:?} in round {round}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(unconnected.is_empty(), "the gateway stopped accepting connections: {unconnected:?} could not connect");
    // The gateway stayed within its budget by closing the oldest idle connections.
    let open = metric(&d, "addond_http_connections", "gateway").await;
    let shed = metric(&d, "addond_http_connections_shed_total", "gateway").await;
    // While 64 connections picked to make room have not closed yet, new ones wait (100 ms at
    // most) and are then refused with 503 rather than taken in beyond the budget.
    let refused = metric(&d, "addond_http_connections_refused_total", "gateway").await;
    assert!(open < 1024 / 2, "the gateway holds {open} connections under a 1024-descriptor limit");
    assert!(shed + refused >= 1200 + 200 - open, "{shed} connections shed, {refused} refused, {open} open");
    assert!(!d.log().contains("Too many open files"), "the daemon ran out of descriptors:\n{}", tail(&d.log(), 20));
    let mut closed = 0;
    for s in flood.iter_mut().take(1200) {
        if closed_within(s, Duration::from_millis(1)).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 800, "only {closed} of the oldest idle connections were closed");
    drop(flood);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_are_closed_after_their_timeouts() {
    let d = Daemon::start_with(Options {
        extra: "[http]\nheader_read_timeout_seconds = 1.0\nkeep_alive_idle_seconds = 2.0\nbody_read_timeout_seconds = 1.0\n".into(),
        ..Default::default()
    })
    .await;
    let gw = d.gateway().await;

    // Half a request head, then nothing: closed after the header timeout, unanswered.
    let mut partial = TcpStream::connect(gw).await.expect("connect");
    partial.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n").await.expect("write");
    let took = closed_within(&mut partial, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(800) && t < Duration::from_secs(3)),
        "a partial head was closed after {took:?}"
    );

    // A head sent one byte every 300 ms never completes in time either.
    let mut dribble = TcpStream::connect(gw).await.expect("connect");
    let t0 = Instant::now();
    let mut cut = None;
    for b in b"GET /health HTTP/1.1\r\nhost: gw\r\nx-slow: 1234567890\r\n\r\n" {
        if dribble.write_all(&[*b]).await.is_err() {
            cut = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cut = match cut {
        Some(t) => Some(t),
        None => closed_within(&mut dribble, Duration::from_secs(3)).await.map(|_| t0.elapsed()),
    };
    assert!(cut.is_some_and(|t| t < Duration::from_secs(4)), "a dribbled head was still open after {cut:?}");

    // A keep-alive connection serves requests while it is used, and is closed once it
    // has been idle for the idle timeout.
    let mut ka = TcpStream::connect(gw).await.expect("connect");
    for _ in 0..4 {
        let (st, _, _) = exchange(&mut ka, b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n").await.expect("keep-alive request");
        assert_eq!(st, 200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let took = closed_within(&mut ka, Duration::from_secs(8)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(900) && t < Duration::from_secs(4)),
        "an idle keep-alive connection was closed after {took:?} (idle timeout 2 s, 0.7 s already idle)"
    );
    // A connection that never sends anything is idle too.
    let mut silent = TcpStream::connect(gw).await.expect("connect");
    let took = closed_within(&mut silent, Duration::from_secs(8)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(1500) && t < Duration::from_secs(4)),
        "a silent connection was closed after {took:?}"
    );

    // The admin socket has the same timeouts; a body that stops coming is answered 408.
    let mut admin = tokio::net::UnixStream::connect(&d.socket).await.expect("admin socket");
    let t0 = Instant::now();
    let r = exchange(
        &mut admin,
        format!("POST {SVC} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":").as_bytes(),
    )
    .await;
    let (st, headers, body) = r.expect("an answer");
    assert_eq!(st, 408, "{body}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(body.contains("\"code\":\"request_timeout\"") && body.contains("body_read_timeout_seconds"), "{body}");
    assert!(headers.iter().any(|(k, v)| k == "connection" && v == "close"), "{headers:?}");
    let mut admin_partial = tokio::net::UnixStream::connect(&d.socket).await.expect("admin socket");
    admin_partial.write_all(b"GET /health HTTP/1.1\r\n").await.expect("write");
    let took = closed_within(&mut admin_partial, Duration::from_secs(6)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(3)), "a partial head on the admin socket was closed after {took:?}");
}
