//! Calls into addon containers: round robin over an addon service's healthy instances,
//! pooled keep-alive connections (`crate::upstream`), a circuit breaker per instance, a timeout per call, and
//! no retry of a call that may have run (only a connection that was refused, so the request
//! never reached the instance, moves on to the next one). The healthy set comes from the
//! daemon's own health checks and is cached until the lifecycle reports a change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::model::{InstanceId, ServiceId};
use crate::upstream;

/// Largest reply body read from an addon.
const MAX_REPLY_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no healthy instance of `{0}` can take the call; check `addonctl services list` for its health")]
    NoHealthy(String),
    #[error("every healthy instance of `{0}` has its circuit breaker open after repeated failures; retry shortly")]
    AllOpen(String),
    #[error("the addon did not answer within {0:.1}s")]
    Timeout(f64),
    #[error("{0}")]
    Upstream(String),
}

/// What the addon answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub instance: InstanceId,
}

struct Route {
    endpoints: Vec<(InstanceId, SocketAddr)>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
}

impl Breaker {
    fn allow(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(t) if now < t => false,
            // Half-open: one trial call at a time.
            Some(_) if self.trial => false,
            Some(_) => {
                self.trial = true;
                true
            }
        }
    }

    /// Counts a failure; true when this one opened the breaker.
    fn failure(&mut self, threshold: u32, cooldown: Duration) -> bool {
        self.failures += 1;
        if self.trial || (self.failures >= threshold && self.open_until.is_none()) {
            self.open_until = Some(Instant::now() + cooldown);
            self.trial = false;
            return true;
        }
        false
    }

    fn is_open(&self) -> bool {
        self.open_until.is_some()
    }
}

pub struct Dispatcher {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    routes: RwLock<HashMap<ServiceId, Arc<Route>>>,
    breakers: Mutex<HashMap<InstanceId, Breaker>>,
    /// The daemon's main runtime, where Docker is asked about a dead instance even when the
    /// call failed on a gateway worker: the Docker client's pooled connections then stay
    /// with the runtime that outlives the workers.
    main: Option<tokio::runtime::Handle>,
    /// Calls under way per instance, so a rollout retires an old instance only once the
    /// calls it already had are answered (see [`Dispatcher::wait_idle`]).
    inflight: Mutex<HashMap<InstanceId, Arc<AtomicUsize>>>,
}

/// Counts one call on an instance for as long as it lives.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Dispatcher {
    pub fn new(cfg: Arc<Config>, lifecycle: Arc<Lifecycle>, metrics: Arc<Metrics>) -> Arc<Self> {
        let main = tokio::runtime::Handle::try_current().ok();
        Arc::new(Dispatcher {
            cfg,
            metrics,
            lifecycle,
            routes: RwLock::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            main,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Drops cached routes whenever a service changes, and sweeps the shared pool of idle
    /// connections now and then, until shutdown.
    pub async fn follow_changes(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.lifecycle.subscribe();
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    upstream::sweep();
                    continue;
                }
                m = rx.recv() => m,
            };
            match msg {
                Ok(id) => {
                    self.routes.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.routes.write().unwrap_or_else(|e| e.into_inner()).clear(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn route(&self, service: &ServiceId) -> Arc<Route> {
        if let Some(r) = self.routes.read().unwrap_or_else(|e| e.into_inner()).get(service) {
            return r.clone();
        }
        let route = Arc::new(Route { endpoints: self.lifecycle.healthy_endpoints(service), next: AtomicUsize::new(0) });
        self.routes.write().unwrap_or_else(|e| e.into_inner()).insert(service.clone(), route.clone());
        route
    }

    /// Counts a call on `instance` until the guard is dropped.
    pub fn enter(&self, instance: &InstanceId) -> InFlight {
        let counter = self.inflight.lock().unwrap_or_else(|e| e.into_inner()).entry(instance.clone()).or_default().clone();
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter)
    }

    /// Waits until no call is under way on `instance` (true), or `timeout` passes (false).
    /// The caller has taken the instance out of routing first, so no new call starts there.
    pub async fn wait_idle(&self, instance: &InstanceId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let busy = self.inflight.lock().unwrap_or_else(|e| e.into_inner()).get(instance).map_or(0, |c| c.load(Ordering::Acquire));
            if busy == 0 {
                self.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(instance);
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether an instance's breaker is open (for views and tests).
    pub fn breaker_open(&self, instance: &InstanceId) -> bool {
        self.breakers.lock().unwrap_or_else(|e| e.into_inner()).get(instance).is_some_and(Breaker::is_open)
    }

    /// The healthy instances of a service, in round-robin order for this call.
    pub fn candidates(&self, service: &ServiceId) -> Candidates {
        let route = self.route(service);
        let start = route.next.fetch_add(1, Ordering::Relaxed);
        Candidates { route, start }
    }

    /// Whether the instance's breaker lets a call through now (half-open: one trial).
    pub fn admit(&self, instance: &InstanceId) -> bool {
        // No breaker yet is a closed one: the usual case costs no entry and no clock read.
        self.breakers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(instance).is_none_or(|b| b.allow(Instant::now()))
    }

    /// Records the outcome of a call for the instance's breaker.
    pub fn report(&self, service: &ServiceId, instance: &InstanceId, ok: bool) {
        let opened = {
            let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                // A success resets the breaker to closed, which is what no entry means.
                breakers.remove(instance);
                false
            } else {
                let b = breakers.entry(instance.clone()).or_default();
                b.failure(self.cfg.addons.breaker_failures, Duration::from_secs_f64(self.cfg.addons.breaker_cooldown_seconds))
            }
        };
        if opened {
            tracing::warn!(service = %service, instance = %instance, "circuit breaker opened");
            self.metrics.breaker_opened(service.as_str(), instance.as_str());
        }
    }

    /// Whether a failed call on `instance` that started at `started_ms` cannot have run
    /// there (its container was already gone), so the next instance may take it.
    pub async fn never_reached(&self, service: &ServiceId, instance: &InstanceId, started_ms: i64) -> bool {
        let Some(main) = &self.main else { return self.lifecycle.died_before(service, instance, started_ms).await };
        let (lifecycle, service, instance) = (self.lifecycle.clone(), service.clone(), instance.clone());
        main.spawn(async move { lifecycle.died_before(&service, &instance, started_ms).await }).await.unwrap_or(false)
    }

    /// POSTs `body` to `path` on one healthy instance of `service`.
    pub async fn post(&self, service: &ServiceId, label: &str, path: &str, body: Bytes, timeout: Duration) -> Result<Reply, DispatchError> {
        let candidates = self.candidates(service);
        if candidates.is_empty() {
            return Err(DispatchError::NoHealthy(label.to_string()));
        }
        let mut tried = 0;
        let mut last_refused = None;
        for (id, addr) in candidates.iter() {
            if !self.admit(id) {
                continue;
            }
            tried += 1;
            let started_ms = crate::store::now_ms();
            let counted = self.enter(id);
            let mut outcome = self.send(addr, path, body.clone(), timeout).await;
            drop(counted);
            if let Err(SendError::Broken(e)) = &outcome {
                // A pooled connection to an instance that died just before this call fails
                // on write; if the container was already gone when the call started, the
                // call cannot have run there, and the next instance may take it.
                if self.never_reached(service, id, started_ms).await {
                    outcome = Err(SendError::Refused(e.clone()));
                }
            }
            self.report(service, id, matches!(outcome, Ok((status, _)) if !matches!(status, 502..=504)));
            match outcome {
                Ok((status, body)) => return Ok(Reply { status, body, instance: id.clone() }),
                Err(SendError::Refused(e)) => last_refused = Some(e),
                Err(SendError::Timeout) => return Err(DispatchError::Timeout(timeout.as_secs_f64())),
                Err(SendError::Broken(e)) => {
                    return Err(DispatchError::Upstream(format!(
                        "the addon's connection failed mid-call (not retried: it may have run): {e}"
                    )));
                }
            }
        }
        match (tried, last_refused) {
            (0, _) => Err(DispatchError::AllOpen(label.to_string())),
            (_, Some(e)) => Err(DispatchError::Upstream(format!("no instance of `{label}` accepted the connection: {e}"))),
            (_, None) => Err(DispatchError::NoHealthy(label.to_string())),
        }
    }

    /// POSTs to one given instance (live config pushes go to every instance); the status.
    pub async fn post_to(&self, addr: SocketAddr, path: &str, body: Bytes, timeout: Duration) -> Result<u16, DispatchError> {
        match self.send(addr, path, body, timeout).await {
            Ok((status, _)) => Ok(status),
            Err(SendError::Timeout) => Err(DispatchError::Timeout(timeout.as_secs_f64())),
            Err(SendError::Refused(e) | SendError::Broken(e)) => Err(DispatchError::Upstream(e)),
        }
    }

    async fn send(&self, addr: SocketAddr, path: &str, body: Bytes, timeout: Duration) -> Result<(u16, Bytes), SendError> {
        let call =
            async {
                let resp = upstream::request(addr, &Method::POST, path, &JSON_HEADERS, upstream::OutBody::Full(body))
                    .await
                    .map_err(|e| if e.is_connect() { SendError::Refused(e.to_string()) } else { SendError::Broken(e.to_string()) })?;
                let status = resp.status.as_u16();
                let body = resp.body.collect(MAX_REPLY_BYTES).await.map_err(|e| SendError::Broken(format!("reading the reply: {e}")))?;
                Ok((status, body))
            };
        tokio::time::timeout(timeout, call).await.unwrap_or(Err(SendError::Timeout))
    }
}

/// The headers of every call into an addon.
static JSON_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
});

/// The healthy instances of a service for one call, in round-robin order.
pub struct Candidates {
    route: Arc<Route>,
    start: usize,
}

impl Candidates {
    pub fn is_empty(&self) -> bool {
        self.route.endpoints.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&InstanceId, SocketAddr)> {
        let n = self.route.endpoints.len();
        (0..n).map(move |k| {
            let (id, addr) = &self.route.endpoints[(self.start + k) % n];
            (id, *addr)
        })
    }
}

enum SendError {
    Refused(String),
    Timeout,
    Broken(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut b = Breaker::default();
        let now = Instant::now();
        for _ in 0..4 {
            assert!(!b.failure(5, Duration::from_millis(50)));
            assert!(b.allow(now), "still closed");
        }
        assert!(b.failure(5, Duration::from_millis(50)), "the fifth failure opens it");
        assert!(b.is_open());
        assert!(!b.allow(Instant::now()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(Instant::now()), "half-open: one trial");
        assert!(!b.allow(Instant::now()), "only one trial at a time");
        b.failure(5, Duration::from_millis(50));
        assert!(!b.allow(Instant::now()), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(Instant::now()));
        // A success forgets the breaker (`Dispatcher::report`): a new one is closed.
        let mut b = Breaker::default();
        assert!(!b.is_open());
        assert!(b.allow(Instant::now()));
    }
}
