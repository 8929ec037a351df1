//! Webhook notifications: what an operator must hear about without watching the event log
//! — a service that gave up (`service.failed`), the Docker engine gone and back
//! (`docker.unreachable`, `docker.recovered`), a deployment that failed or was rolled back
//! — POSTed as JSON to `notify.webhook_url`, with a timeout, retries with a doubling
//! backoff and an optional HMAC signature.
//!
//! The notifier consumes the lifecycle's notices by name ([`NOTIFIED`]), so a new kind is
//! one line there. Nothing that raises a notice waits for it: notices go into a bounded
//! queue (`notify.queue_size`) that drops its oldest entry when full (counted in
//! `addond_notifications_dropped_total`), and one sender task works through it, one
//! notification at a time, in order. Only `http://` is spoken (addond has no TLS client);
//! a receiver elsewhere sits behind a relay on the host.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::NotifyConfig;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::runtime::DockerState;

/// The notices that become notifications. The deployment notices come from the
/// deployments' rollout (`deployment.failed`, `deployment.rolled_back`).
pub const NOTIFIED: &[&str] = &["service.failed", "docker.unreachable", "docker.recovered", "deployment.failed", "deployment.rolled_back"];

/// One notification waiting to be sent.
#[derive(Debug, Clone)]
struct Notification {
    /// The notice's name (`service.failed`, …).
    event: String,
    /// Its payload as the notice carried it.
    data: Value,
    /// When it was raised (ms since the epoch).
    at_ms: i64,
    /// Stays the same across retries, so a receiver can tell a retry from a new one.
    id: String,
}

/// Where the webhook goes, parsed once.
struct Target {
    /// Host and port to connect to.
    host: String,
    port: u16,
    /// The `Host` header (`host[:port]` as written).
    authority: String,
    /// Path and query of the request.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let uri: Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
        Some(Target {
            port: uri.port_u16().unwrap_or(80),
            authority: uri.authority()?.to_string(),
            path: uri.path_and_query().map_or("/".to_string(), |p| p.to_string()),
            host,
        })
    }
}

pub struct Notifier {
    /// URL, timeout, retries, secret, queue size.
    cfg: NotifyConfig,
    /// Where the POSTs go.
    target: Target,
    /// `addond_notifications_*`.
    metrics: Arc<Metrics>,
    /// Notifications not sent yet, oldest first.
    queue: Mutex<VecDeque<Notification>>,
    /// Wakes the sender when the queue gets an entry.
    wake: tokio::sync::Notify,
    /// This host's name, in every body (one receiver may serve several hosts).
    host: String,
}

impl Notifier {
    /// `None` when `notify.webhook_url` is empty (notifications off).
    pub fn new(cfg: &NotifyConfig, metrics: Arc<Metrics>) -> Option<Arc<Notifier>> {
        if cfg.webhook_url.is_empty() {
            return None;
        }
        let Some(target) = Target::parse(&cfg.webhook_url) else {
            tracing::error!(url = %cfg.webhook_url, "notify.webhook_url is not an http:// URL; notifications are off");
            return None;
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Some(Arc::new(Notifier {
            cfg: cfg.clone(),
            target,
            metrics,
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            host,
        }))
    }

    /// Queues a notification; never waits. A full queue drops its oldest entry.
    pub fn push(&self, event: &str, data: Value) {
        let n = Notification { event: event.to_string(), data, at_ms: crate::time::now_ms(), id: uuid::Uuid::new_v4().to_string() };
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() >= self.cfg.queue_size.max(1) {
            if let Some(old) = q.pop_front() {
                self.metrics.notify.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(event = %old.event, "notification queue full; dropped the oldest notification");
            }
        }
        q.push_back(n);
        self.metrics.notify.queued.store(q.len() as u64, Ordering::Relaxed);
        drop(q);
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Notification> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.pop_front();
        self.metrics.notify.queued.store(q.len() as u64, Ordering::Relaxed);
        n
    }

    /// Listens for the notices in [`NOTIFIED`] (from now on: the subscription is taken
    /// before this returns) and for the Docker engine's state, and sends what they raise,
    /// until `shutdown` (what is still queued then is not sent).
    pub fn spawn(self: Arc<Self>, lifecycle: Arc<Lifecycle>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let notices = lifecycle.notices();
        tokio::spawn(self.run(notices, lifecycle, shutdown))
    }

    async fn run(self: Arc<Self>, notices: broadcast::Receiver<(String, Value)>, lifecycle: Arc<Lifecycle>, shutdown: CancellationToken) {
        tracing::info!(url = %self.cfg.webhook_url, "webhook notifications on");
        let tracker = tokio_util::task::TaskTracker::new();
        tracker.spawn(self.clone().follow_notices(notices, shutdown.clone()));
        tracker.spawn(self.clone().follow_docker(lifecycle.clone(), shutdown.clone()));
        tracker.spawn(self.clone().send_loop(shutdown.clone()));
        tracker.close();
        tracker.wait().await;
    }

    async fn follow_notices(self: Arc<Self>, mut notices: broadcast::Receiver<(String, Value)>, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                n = notices.recv() => n,
                _ = shutdown.cancelled() => return,
            };
            match n {
                Ok((name, data)) if NOTIFIED.contains(&name.as_str()) => self.push(&name, data),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "notifier: lifecycle notices dropped"),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// `docker.unreachable` when the engine stops answering (unreachable or unresponsive,
    /// also at start), `docker.recovered` when it answers again.
    async fn follow_docker(self: Arc<Self>, lifecycle: Arc<Lifecycle>, shutdown: CancellationToken) {
        let rt = lifecycle.runtime();
        let host = lifecycle.config().docker.host.clone();
        let mut up = true;
        loop {
            let state = rt.state();
            let now_up = state == DockerState::Reachable;
            if now_up != up {
                let event = if now_up { "docker.recovered" } else { "docker.unreachable" };
                self.push(event, json!({"state": state.as_str(), "docker": host}));
                up = now_up;
            }
            tokio::select! {
                _ = rt.availability_changed() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn send_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let Some(n) = self.pop() else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = shutdown.cancelled() => return,
                }
            };
            let body = Bytes::from(
                json!({
                    "event": n.event,
                    "id": n.id,
                    "timestamp": crate::time::rfc3339_ms(n.at_ms),
                    "host": self.host,
                    "data": n.data,
                })
                .to_string(),
            );
            let mut attempt = 0u32;
            loop {
                // A stop does not wait for a receiver that is slow to answer.
                let sent = tokio::select! {
                    r = self.post(&n, body.clone()) => r,
                    _ = shutdown.cancelled() => return,
                };
                match sent {
                    Ok(()) => {
                        self.metrics.notify.sent.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(event = %n.event, id = %n.id, attempts = attempt + 1, "notification sent");
                        break;
                    }
                    Err(e) if attempt >= self.cfg.retries => {
                        self.metrics.notify.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(event = %n.event, id = %n.id, attempts = attempt + 1, error = %e, "notification given up");
                        break;
                    }
                    Err(e) => {
                        self.metrics.notify.retried.fetch_add(1, Ordering::Relaxed);
                        let wait = crate::model::backoff_ms(self.cfg.retry_base_seconds, self.cfg.retry_max_seconds, attempt);
                        tracing::warn!(event = %n.event, id = %n.id, attempt = attempt + 1, retry_in_ms = wait, error = %e, "notification failed; retrying");
                        attempt += 1;
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
            }
        }
    }

    /// One POST, within `notify.timeout_seconds`; a 2xx answer is success.
    async fn post(&self, n: &Notification, body: Bytes) -> Result<(), String> {
        let timeout = Duration::from_secs_f64(self.cfg.timeout_seconds);
        match tokio::time::timeout(timeout, self.post_once(n, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s (notify.timeout_seconds)", self.cfg.timeout_seconds)),
        }
    }

    async fn post_once(&self, n: &Notification, body: Bytes) -> Result<(), String> {
        let t = &self.target;
        let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::post(t.path.as_str())
            .header(hyper::header::HOST, t.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("addond/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::CONNECTION, "close")
            .header("x-addond-event", n.event.as_str())
            .header("x-addond-delivery", n.id.as_str());
        if !self.cfg.secret.is_empty() {
            let sig = crate::secret::hmac_sha256_hex(self.cfg.secret.as_bytes(), &body);
            req = req.header("x-addond-signature", format!("sha256={sig}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let result = sender.send_request(req).await;
        driver.abort();
        let resp = result.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", resp.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(size: usize) -> NotifyConfig {
        NotifyConfig { webhook_url: "http://127.0.0.1:9/hook?x=1".into(), queue_size: size, ..NotifyConfig::default() }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let metrics = Arc::new(Metrics::default());
        let n = Notifier::new(&cfg(2), metrics.clone()).expect("on");
        for i in 0..5 {
            n.push("service.failed", json!({"n": i}));
        }
        assert_eq!(metrics.notify.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.notify.queued.load(Ordering::Relaxed), 2);
        assert_eq!(n.pop().map(|x| x.data["n"].clone()), Some(json!(3)));
        assert_eq!(n.pop().map(|x| x.data["n"].clone()), Some(json!(4)));
        assert!(n.pop().is_none());
    }

    #[test]
    fn targets_and_off() {
        let t = Target::parse("http://127.0.0.1:9/hook?x=1").expect("parses");
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()), ("127.0.0.1", 9, "127.0.0.1:9", "/hook?x=1"));
        let t = Target::parse("http://[::1]/").expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(Target::parse("https://example.com/").is_none());
        assert!(Notifier::new(&NotifyConfig::default(), Arc::new(Metrics::default())).is_none(), "off without a URL");
    }
}
