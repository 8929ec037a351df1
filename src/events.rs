//! Events: the durable log, the in-process bus, and delivery to subscribing addons.
//!
//! An emitted event is answered only after its transaction committed; concurrent emits are
//! committed together (group commit), so a burst costs one fsync per batch, not per event.
//! Ids are the log's strictly increasing row ids. Every committed event goes out on a tokio
//! broadcast bus (the SSE stream, the dashboard) and wakes the deliverers.
//!
//! Each installed addon that subscribes (`events.subscribes` in its manifest, names or a
//! trailing wildcard) has one deliverer task: it walks the log in id order from its stored
//! cursor, `POST /events` to a healthy instance, and moves the cursor only after the addon
//! acknowledged (2xx), persisting it after each batch — so delivery is at least once and in
//! order, and a crash resumes where it stopped (re-sending at most the unpersisted tail).
//! Failures back off exponentially; after `events.max_attempts` the event is dead-lettered
//! (visible, re-driven on request) and the subscriber moves on.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addons::Addons;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::model::backoff_ms;
use crate::store::{Cursor, EventRow, NewEvent, Store, StoreError};
use crate::time::now_ms;

/// An event as the API and subscribers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its place in the log.
    pub id: i64,
    /// The dotted name subscriptions match.
    pub name: String,
    /// The payload.
    pub data: Value,
    /// Who emitted it.
    pub source: String,
    /// When it was emitted (ms since the epoch).
    pub ts: i64,
}

/// Re-exported for the API, which formats event times as the events do.
pub use crate::time::rfc3339_ms;

impl Event {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "data": self.data, "source": self.source, "timestamp": rfc3339_ms(self.ts)})
    }

    fn from_row(r: EventRow) -> Event {
        Event { id: r.id, name: r.name, data: serde_json::from_str(&r.data).unwrap_or(Value::Null), source: r.source, ts: r.ts }
    }
}

/// Whether an event name matches a subscription pattern (`a.b`, `a.*`, `*`).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(prefix) => name.len() > prefix.len() + 1 && name.starts_with(prefix) && name.as_bytes()[prefix.len()] == b'.',
        None => pattern == name,
    }
}

/// Subscription patterns: an event name, `prefix.*` or `*`.
pub fn valid_pattern(pattern: &str) -> bool {
    pattern == "*" || valid_name(pattern.strip_suffix(".*").unwrap_or(pattern))
}

/// Event names: dotted lowercase words, 1–128 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.split('.').all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
}

struct EmitRequest {
    /// The event's name.
    name: String,
    /// The payload as JSON text.
    data: String,
    /// Who emitted it.
    source: String,
    /// When (ms since the epoch).
    ts: i64,
    /// Answers the emitter with the id once the batch holding it committed.
    reply: oneshot::Sender<Result<i64, String>>,
}

pub struct Events {
    /// Retention, batching and delivery limits.
    cfg: Arc<Config>,
    /// Its store holds the log and the cursors.
    lifecycle: Arc<Lifecycle>,
    /// Delivers events to subscribing addons.
    addons: Arc<Addons>,
    /// Emitters queue here; one writer commits them in batches.
    tx: mpsc::Sender<EmitRequest>,
    /// The writer's end, taken once when it starts.
    rx: Mutex<Option<mpsc::Receiver<EmitRequest>>>,
    /// Committed events for live followers (`addonctl events --follow`, the dashboard).
    bus: broadcast::Sender<Arc<Event>>,
    /// One deliverer per subscribing addon instance: its patterns and its stop switch.
    deliverers: Mutex<HashMap<String, (Vec<String>, CancellationToken)>>,
    /// The writer and deliverer tasks, so a stop waits for them.
    tracker: TaskTracker,
}

/// WASM guests emit through the bus like containers do through the addon API.
impl crate::addons::wasm::EventSink for Events {
    fn emit<'a>(&'a self, name: &'a str, data: Value, source: &'a str) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Events::emit(self, name, data, source).await.map(|_| ()) })
    }
}

impl Events {
    pub fn new(cfg: Arc<Config>, lifecycle: Arc<Lifecycle>, addons: Arc<Addons>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(65_536);
        let (bus, _) = broadcast::channel(4096);
        Arc::new(Events {
            cfg,
            lifecycle,
            addons,
            tx,
            rx: Mutex::new(Some(rx)),
            bus,
            deliverers: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
        })
    }

    fn store(&self) -> &Store {
        self.lifecycle.store()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.bus.subscribe()
    }

    /// Appends an event; returns once it is committed.
    pub async fn emit(&self, name: &str, data: Value, source: &str) -> Result<Event, String> {
        let (reply, wait) = oneshot::channel();
        let ts = now_ms();
        let req = EmitRequest { name: name.to_string(), data: data.to_string(), source: source.to_string(), ts, reply };
        self.tx.send(req).await.map_err(|_| "the event log is shutting down".to_string())?;
        let id = wait.await.map_err(|_| "the event log is shutting down".to_string())??;
        Ok(Event { id, name: name.to_string(), data, source: source.to_string(), ts })
    }

    /// Commits queued emits in batches and publishes them, until the senders are gone.
    async fn commit_loop(self: Arc<Self>, mut rx: mpsc::Receiver<EmitRequest>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                r = rx.recv() => r,
                _ = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let rows: Vec<NewEvent> =
                batch.iter().map(|r| NewEvent { name: r.name.clone(), data: r.data.clone(), source: r.source.clone(), ts: r.ts }).collect();
            match self.store().insert_events(rows).await {
                Ok(ids) => {
                    self.addons.metrics.events.emitted.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    for (req, id) in batch.into_iter().zip(ids) {
                        let ev = Arc::new(Event {
                            id,
                            name: req.name,
                            data: serde_json::from_str(&req.data).unwrap_or(Value::Null),
                            source: req.source,
                            ts: req.ts,
                        });
                        let _ = req.reply.send(Ok(id));
                        let _ = self.bus.send(ev);
                    }
                }
                Err(e) => {
                    for req in batch {
                        let _ = req.reply.send(Err(format!("the event could not be stored: {e}")));
                    }
                }
            }
        }
    }

    /// Events in the log after `after`, filtered by one pattern.
    pub async fn list(&self, after: i64, pattern: Option<String>, limit: u32) -> Result<Vec<Event>, StoreError> {
        Ok(self.store().events_after(after, pattern.map(|p| vec![p]), limit).await?.into_iter().map(Event::from_row).collect())
    }

    /// The log after `after` (`None`: from now on) matching any of `patterns` (none: every
    /// event), then the live events as they are committed: in id order, without gaps or
    /// repeats. It subscribes before reading the log, so nothing falls between the two, and
    /// reads the log again when it falls behind the bus. Ends when the log cannot be read.
    pub async fn follow(
        self: &Arc<Self>,
        after: Option<i64>,
        patterns: Vec<String>,
    ) -> Result<impl futures_util::Stream<Item = Event> + Send + 'static, StoreError> {
        struct Follow {
            events: Arc<Events>,
            live: broadcast::Receiver<Arc<Event>>,
            last: i64,
            patterns: Vec<String>,
            backlog: std::collections::VecDeque<Event>,
            replaying: bool,
        }
        let live = self.subscribe();
        let last = match after {
            Some(a) => a,
            None => self.store().max_event_id().await?,
        };
        let state = Follow { events: self.clone(), live, last, patterns, backlog: Default::default(), replaying: true };
        Ok(futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(e) = s.backlog.pop_front() {
                    s.last = e.id;
                    return Some((e, s));
                }
                if s.replaying {
                    let patterns = (!s.patterns.is_empty()).then(|| s.patterns.clone());
                    match s.events.store().events_after(s.last, patterns, 500).await {
                        Ok(page) if !page.is_empty() => s.backlog.extend(page.into_iter().map(Event::from_row)),
                        Ok(_) => s.replaying = false,
                        Err(_) => return None,
                    }
                    continue;
                }
                match s.live.recv().await {
                    Ok(e) if e.id > s.last && (s.patterns.is_empty() || s.patterns.iter().any(|p| matches(p, &e.name))) => {
                        s.last = e.id;
                        return Some((Event::clone(&e), s));
                    }
                    Ok(_) => continue,
                    // Fell behind the bus: read the gap from the log.
                    Err(broadcast::error::RecvError::Lagged(_)) => s.replaying = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }

    /// Runs the committer, the deliverers, lifecycle notices and retention until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.tracker.spawn(self.clone().commit_loop(rx, shutdown.clone()));
        }
        // Lifecycle notices become durable events from `addond`.
        let me = self.clone();
        let mut notices = self.lifecycle.notices();
        let sd = shutdown.clone();
        self.tracker.spawn(async move {
            loop {
                let n = tokio::select! {
                    n = notices.recv() => n,
                    _ = sd.cancelled() => return,
                };
                match n {
                    Ok((name, data)) => {
                        if let Err(e) = me.emit(&name, data, "addond").await {
                            tracing::warn!(event = %name, error = %e, "cannot record lifecycle event");
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "lifecycle events dropped"),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_prune = 0i64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sync_deliverers(&shutdown).await {
                tracing::warn!(error = %e, "cannot refresh event subscribers");
            }
            if now_ms() - last_prune > 60_000 {
                last_prune = now_ms();
                let before = now_ms() - (self.cfg.events.retention_days * 86_400_000.0) as i64;
                match self.store().prune_events(before, self.cfg.events.retention_max_events).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "pruned old events"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune events"),
                }
            }
        }
        for (_, (_, stop)) in self.deliverers.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            stop.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Starts a deliverer for every installed addon that subscribes, stops the others.
    async fn sync_deliverers(self: &Arc<Self>, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let subs = self.addons.subscriptions().await.map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let gone = {
            let mut running = self.deliverers.lock().unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            running.retain(|sub, (patterns, stop)| {
                let keep = subs.get(sub) == Some(patterns);
                if !keep {
                    stop.cancel();
                    if !subs.contains_key(sub) {
                        gone.push(sub.clone());
                    }
                }
                keep
            });
            for (sub, patterns) in subs {
                if running.contains_key(&sub) {
                    continue;
                }
                let stop = shutdown.child_token();
                running.insert(sub.clone(), (patterns.clone(), stop.clone()));
                self.tracker.spawn(self.clone().deliver_loop(sub, patterns, stop));
            }
            gone
        };
        for sub in gone {
            self.store().drop_subscriber(&sub).await?;
        }
        Ok(())
    }

    /// One delivery attempt, counted as delivered when acknowledged.
    async fn deliver(&self, sub: &str, ev: &Event) -> Result<(), String> {
        let body = Bytes::from(ev.to_json().to_string());
        let timeout = Duration::from_secs_f64(self.cfg.events.delivery_timeout_seconds);
        let r = self.addons.deliver_event(sub, body, timeout).await;
        if r.is_ok() {
            self.addons.metrics.events.delivered.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// `addond_event_subscriber_lag`: per running subscriber, the events of its patterns
    /// in the log after its cursor (what it has yet to receive).
    pub async fn render_lag(&self, out: &mut String) -> Result<(), StoreError> {
        use std::fmt::Write as _;
        let subs: Vec<(String, Vec<String>)> =
            self.deliverers.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(s, (p, _))| (s.clone(), p.clone())).collect();
        crate::metrics::family(
            out,
            "addond_event_subscriber_lag",
            "gauge",
            "Events a subscriber has yet to receive (of its patterns, after its cursor).",
        );
        let mut lines = Vec::with_capacity(subs.len());
        for (sub, patterns) in subs {
            let cur = self.store().cursor(&sub).await?;
            let n = self.store().count_events_after(cur.delivered_up_to, patterns).await?;
            lines.push((sub, n));
        }
        lines.sort();
        for (sub, n) in lines {
            let _ = writeln!(out, "addond_event_subscriber_lag{{subscriber=\"{}\"}} {n}", crate::metrics::escape(&sub));
        }
        Ok(())
    }

    async fn deliver_loop(self: Arc<Self>, sub: String, patterns: Vec<String>, stop: CancellationToken) {
        let mut wake = self.bus.subscribe();
        let store = self.store().clone();
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.deliver_some(&store, &sub, &patterns).await {
                Ok(Some(wait)) => {
                    // Backing off after a failure.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Ok(None) => {
                    // Caught up: wait for a new event (any: the query filters), or a minute.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = wake.recv() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(subscriber = %sub, error = %e, "event delivery stalled");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Delivers what is due. `Some(wait)` when backing off, `None` when caught up; loops
    /// internally while there is more to send.
    async fn deliver_some(&self, store: &Store, sub: &str, patterns: &[String]) -> Result<Option<Duration>, StoreError> {
        // Dead letters an operator asked to send again go first.
        for dl in store.dead_letters(Some(sub.to_string())).await?.into_iter().filter(|d| d.redrive) {
            let Some(row) = store.event(dl.event_id).await? else {
                store.delete_dead_letter(dl.id).await?;
                continue;
            };
            match self.deliver(sub, &Event::from_row(row)).await {
                Ok(()) => store.delete_dead_letter(dl.id).await?,
                Err(e) => {
                    self.addons.metrics.events.retried.fetch_add(1, Ordering::Relaxed);
                    store.dead_letter(sub, dl.event_id, dl.attempts + 1, e).await?;
                    return Ok(Some(Duration::from_secs_f64(self.cfg.events.retry_base_seconds)));
                }
            }
        }
        let mut cur = store.cursor(sub).await?;
        if let Some(t) = cur.next_attempt_at {
            if t > now_ms() {
                return Ok(Some(Duration::from_millis((t - now_ms()) as u64)));
            }
        }
        loop {
            let batch = store.events_after(cur.delivered_up_to, Some(patterns.to_vec()), 100).await?;
            if batch.is_empty() {
                return Ok(None);
            }
            let before = cur.delivered_up_to;
            for row in batch {
                let ev = Event::from_row(row);
                if !self.same_environment(&ev.source, sub).await {
                    cur = Cursor { delivered_up_to: ev.id, attempts: 0, next_attempt_at: None, last_error: None };
                    continue;
                }
                match self.deliver(sub, &ev).await {
                    Ok(()) => cur = Cursor { delivered_up_to: ev.id, attempts: 0, next_attempt_at: None, last_error: None },
                    Err(e) => {
                        let attempts = cur.attempts + 1;
                        if attempts >= self.cfg.events.max_attempts {
                            if cur.delivered_up_to != before {
                                store.set_cursor(sub, cur.clone()).await?;
                            }
                            tracing::warn!(subscriber = %sub, event = ev.id, error = %e, "event dead-lettered");
                            self.addons.metrics.events.dead_lettered.fetch_add(1, Ordering::Relaxed);
                            store.dead_letter(sub, ev.id, attempts, e).await?;
                            cur = store.cursor(sub).await?;
                            break;
                        }
                        self.addons.metrics.events.retried.fetch_add(1, Ordering::Relaxed);
                        let wait = backoff_ms(self.cfg.events.retry_base_seconds, self.cfg.events.retry_max_seconds, attempts - 1);
                        cur = Cursor { attempts, next_attempt_at: Some(now_ms() + wait), last_error: Some(e), ..cur };
                        store.set_cursor(sub, cur).await?;
                        return Ok(Some(Duration::from_millis(wait as u64)));
                    }
                }
            }
            if cur.delivered_up_to != before {
                store.set_cursor(sub, cur.clone()).await?;
            }
        }
    }

    /// Whether an event from `source` may reach the subscriber `sub`: an addon's events stay
    /// in its environment (`pay--dev`'s reach `inventory--dev`, never `inventory`); the
    /// daemon's and operators' reach every environment.
    async fn same_environment(&self, source: &str, sub: &str) -> bool {
        use crate::model::{split_environment, DEFAULT_ENVIRONMENT, ENVIRONMENT_SEPARATOR};
        let (_, sub_env) = split_environment(sub);
        if source.contains(ENVIRONMENT_SEPARATOR) {
            return split_environment(source).1 == sub_env;
        }
        // A plain source is `prod`'s when it is an installed addon instance.
        sub_env == DEFAULT_ENVIRONMENT || self.addons.installed_manifest(source).await.is_err()
    }

    /// Delivery progress of every subscriber.
    pub async fn status(&self) -> Result<Value, StoreError> {
        let max = self.store().max_event_id().await?;
        let dead = self.store().dead_letters(None).await?;
        let subs: Vec<Value> = self
            .store()
            .cursors()
            .await?
            .into_iter()
            .map(|(s, c)| {
                json!({
                    "subscriber": s, "delivered_up_to": c.delivered_up_to, "attempts": c.attempts,
                    "next_attempt_at": c.next_attempt_at.map(rfc3339_ms), "last_error": c.last_error,
                    "dead_letters": dead.iter().filter(|d| d.subscriber == s).count(),
                })
            })
            .collect();
        Ok(json!({"last_event_id": max, "subscribers": subs, "dead_letters": dead}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("payment.completed", "payment.completed"));
        assert!(!matches("payment.completed", "payment.failed"));
        assert!(matches("stock.*", "stock.low"));
        assert!(matches("stock.*", "stock.low.critical"));
        assert!(!matches("stock.*", "stock"));
        assert!(!matches("stock.*", "stockpile.x"));
        assert!(matches("*", "anything.at.all"));
        assert!(valid_name("payment.completed"));
        assert!(!valid_name("Payment"));
        assert!(!valid_name("a..b"));
        for ok in ["*", "payment.*", "payment.completed"] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in ["", ".*", "Payment.*", "payment.**", "*.x", "a b"] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn sql_patterns_agree_with_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).await.unwrap();
        let names = ["stock.low", "stock_x.low", "stockpile.x", "stock", "payment.completed", "stock.low.critical"];
        store
            .insert_events(names.iter().map(|n| NewEvent { name: n.to_string(), data: "{}".into(), source: "t".into(), ts: 0 }).collect())
            .await
            .unwrap();
        for pattern in ["stock.*", "stock_x.*", "payment.completed", "*"] {
            let got: Vec<String> =
                store.events_after(0, Some(vec![pattern.into()]), 100).await.unwrap().into_iter().map(|e| e.name).collect();
            let want: Vec<String> = names.iter().filter(|n| matches(pattern, n)).map(|n| n.to_string()).collect();
            assert_eq!(got, want, "{pattern}");
        }
    }
}
