//! The daemon's own HTTP health checks. Docker never judges health here: each running
//! instance is registered as a target, probed where the daemon calls it (its container's
//! address, or its published host port: `ports.instance_address`), and a change of
//! verdict is written to the store. Until an instance first passes, it is probed every few
//! milliseconds, so a fresh deploy is seen healthy as soon as it answers; after that, once
//! per interval. An instance that fails `retries` checks in a row (after its start period)
//! is reported unhealthy, and the reconciler restarts it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use crate::model::{Health, HealthCheck, InstanceId, ServiceId};

/// One instance to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: ServiceId,
    /// Where the daemon reaches the instance (probes and calls): the container's own
    /// address, or the published host port.
    pub addr: SocketAddr,
    pub check: HealthCheck,
    /// The verdict already known (e.g. from before a daemon restart).
    pub initial: Health,
}

#[derive(Debug)]
struct ProbeState {
    target: Target,
    registered: Instant,
    health: Health,
    fails: u32,
    ever_healthy: bool,
    next_due: Instant,
    in_flight: bool,
    /// When the last probe finished (Unix millis), whatever it found.
    last_check: Option<i64>,
}

/// A verdict change the monitor reports to its owner.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub instance: InstanceId,
    pub service: ServiceId,
    pub health: Health,
    pub detail: String,
}

pub struct HealthMonitor {
    targets: Mutex<HashMap<InstanceId, ProbeState>>,
    /// Wakes the prober when a target is registered, so a new instance is probed at once
    /// rather than at the next tick.
    added: tokio::sync::Notify,
    client: Client<HttpConnector, Empty<Bytes>>,
    startup_probe: Duration,
}

impl HealthMonitor {
    pub fn new(startup_probe_ms: u64) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        // Idle connections are dropped well before addons close them (the sample closes
        // after 60 s), so a probe never races a server-side close.
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(20)).build(conn);
        HealthMonitor {
            targets: Mutex::new(HashMap::new()),
            added: tokio::sync::Notify::new(),
            client,
            startup_probe: Duration::from_millis(startup_probe_ms),
        }
    }

    pub fn register(&self, id: InstanceId, target: Target) {
        let now = Instant::now();
        let mut t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        t.insert(
            id,
            ProbeState {
                registered: now,
                health: target.initial,
                fails: 0,
                ever_healthy: target.initial == Health::Healthy,
                next_due: now,
                in_flight: false,
                last_check: None,
                target,
            },
        );
        drop(t);
        self.added.notify_one();
    }

    pub fn unregister(&self, id: &InstanceId) {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    pub fn is_registered(&self, id: &InstanceId) -> bool {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// Every probed instance of a service with its address, whatever its health.
    pub fn endpoints_of(&self, service: &ServiceId) -> Vec<(InstanceId, SocketAddr)> {
        let t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = t.iter().filter(|(_, s)| &s.target.service == service).map(|(id, s)| (id.clone(), s.target.addr)).collect();
        out.sort();
        out
    }

    /// Instances of a service that passed their last check, with the address they answer on.
    pub fn healthy_of(&self, service: &ServiceId) -> Vec<(InstanceId, SocketAddr)> {
        let t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = t
            .iter()
            .filter(|(_, s)| &s.target.service == service && s.health == Health::Healthy)
            .map(|(id, s)| (id.clone(), s.target.addr))
            .collect();
        out.sort();
        out
    }

    /// When the instance was last probed (Unix millis), if it was since it was registered.
    pub fn last_check_of(&self, id: &InstanceId) -> Option<i64> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).get(id).and_then(|s| s.last_check)
    }

    pub fn health_of(&self, id: &InstanceId) -> Option<Health> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).get(id).map(|s| s.health)
    }

    /// Probes due targets until `shutdown`, sending verdict changes to `report`.
    pub async fn run(self: Arc<Self>, report: tokio::sync::mpsc::UnboundedSender<Verdict>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.startup_probe.min(Duration::from_millis(250)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.added.notified() => {}
            }
            let now = Instant::now();
            let due: Vec<(InstanceId, SocketAddr, String, Duration)> = {
                let mut t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
                t.iter_mut()
                    .filter(|(_, s)| !s.in_flight && s.next_due <= now)
                    .map(|(id, s)| {
                        s.in_flight = true;
                        (id.clone(), s.target.addr, s.target.check.path.clone(), Duration::from_secs_f64(s.target.check.timeout))
                    })
                    .collect()
            };
            for (id, addr, path, timeout) in due {
                let me = self.clone();
                let report = report.clone();
                tokio::spawn(async move {
                    let result = me.probe(addr, &path, timeout).await;
                    if let Some(v) = me.record(&id, result) {
                        let _ = report.send(v);
                    }
                });
            }
        }
    }

    async fn probe(&self, addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
        let uri: hyper::Uri = format!("http://{addr}{path}").parse().map_err(|e| format!("bad health URL: {e}"))?;
        match tokio::time::timeout(timeout, self.client.get(uri)).await {
            Err(_) => Err(format!("no answer within {:.1}s", timeout.as_secs_f64())),
            Ok(Err(e)) => Err(format!("request failed: {e}")),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("answered HTTP {}", resp.status().as_u16())),
        }
    }

    /// Applies one probe result; returns a verdict when the health changed.
    fn record(&self, id: &InstanceId, result: Result<(), String>) -> Option<Verdict> {
        let mut t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let s = t.get_mut(id)?;
        s.in_flight = false;
        s.last_check = Some(crate::time::now_ms());
        let now = Instant::now();
        let check = &s.target.check;
        let interval = Duration::from_secs_f64(check.interval);
        let before = s.health;
        let detail;
        match result {
            Ok(()) => {
                if !s.ever_healthy {
                    tracing::debug!(instance = %id, ms = now.duration_since(s.registered).as_millis() as u64, "first health check passed");
                }
                s.fails = 0;
                s.ever_healthy = true;
                s.health = Health::Healthy;
                s.next_due = now + interval;
                detail = "health check passed".to_string();
            }
            Err(e) => {
                let in_start_period = now.duration_since(s.registered) < Duration::from_secs_f64(check.start_period);
                if s.ever_healthy {
                    s.fails += 1;
                    s.next_due = now + interval;
                } else {
                    // Not yet up: probe fast, but judge it at the normal pace: unhealthy only
                    // once start period + retries × interval have passed without a pass.
                    s.next_due = now + self.startup_probe;
                    let grace = Duration::from_secs_f64(check.start_period + check.interval * check.retries as f64);
                    s.fails = if now.duration_since(s.registered) >= grace { check.retries } else { 0 };
                    if s.health != Health::Unhealthy {
                        s.health = Health::Starting;
                    }
                }
                if !in_start_period && s.fails >= check.retries {
                    s.health = Health::Unhealthy;
                }
                detail = format!("health check {} failed {} time(s): {e}", check.path, s.fails.max(1));
            }
        }
        (s.health != before).then(|| Verdict { instance: id.clone(), service: s.target.service.clone(), health: s.health, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(retries: u32, interval: f64) -> Target {
        Target {
            service: ServiceId("svc_x".into()),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            check: HealthCheck { path: "/health".into(), interval, timeout: 1.0, retries, start_period: 0.0 },
            initial: Health::Starting,
        }
    }

    #[test]
    fn healthy_then_unhealthy_after_retries() {
        let m = HealthMonitor::new(10);
        let id = InstanceId("inst_a".into());
        m.register(id.clone(), target(3, 0.0001));
        let v = m.record(&id, Ok(())).unwrap();
        assert_eq!(v.health, Health::Healthy);
        assert!(m.record(&id, Err("x".into())).is_none());
        assert!(m.record(&id, Err("x".into())).is_none());
        let v = m.record(&id, Err("boom".into())).unwrap();
        assert_eq!(v.health, Health::Unhealthy);
        assert!(v.detail.contains("boom"));
        assert_eq!(m.record(&id, Ok(())).unwrap().health, Health::Healthy);
    }

    #[test]
    fn startup_failures_are_judged_at_interval_pace() {
        let m = HealthMonitor::new(10);
        let id = InstanceId("inst_b".into());
        m.register(id.clone(), target(3, 60.0));
        for _ in 0..50 {
            let v = m.record(&id, Err("refused".into()));
            assert!(v.is_none() || v.unwrap().health == Health::Starting);
        }
        assert_eq!(m.health_of(&id), Some(Health::Starting));
    }

    #[tokio::test]
    async fn probes_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let status = if req.starts_with("GET /health ") { "200 OK" } else { "500 Oops" };
                    let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let m = HealthMonitor::new(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(m.probe(addr, "/health", Duration::from_secs(1)).await.is_ok());
        let e = m.probe(addr, "/other", Duration::from_secs(1)).await.unwrap_err();
        assert!(e.contains("500"), "{e}");
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(m.probe(SocketAddr::from(([127, 0, 0, 1], free)), "/health", Duration::from_secs(1)).await.is_err());
    }
}
