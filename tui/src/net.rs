//! The network side: tokio tasks that talk to the daemon and report through the same
//! channel as the keyboard. Nothing here touches the terminal, and nothing on the UI
//! thread waits for the daemon.
//!
//! - the **watcher** opens `GET …/watch` (server-sent events), loads the service list once
//!   the stream is open (so no change can fall between the two), applies `service` events
//!   and reloads the list only on `resync` or after a reconnect; when the daemon goes away
//!   it reports so and retries with exponential backoff (0.5 s doubling to 10 s);
//! - the **metrics poller** fetches `…/metrics` of the one selected service every 2 s;
//! - one **log follower** at a time streams `…/logs?follow=true`, reopening it when it
//!   ends (a restarted container) without repeating lines it already delivered;
//! - the **event follower** streams the daemon's event log (`GET /api/events/stream`),
//!   starting a few events back and resuming after the last id it saw when it reconnects;
//! - a **port prober** (only while the port map is shown) tries to bind each port of the
//!   range, as the daemon's allocator does, to find ports other programs hold;
//! - every action is its own short task.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use addond::client::{encode_path_segment, Client, ClientError, LineSplitter, Method, Response, SseParser};
use addond::http::ErrorCode;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use crate::app::{Avail, Command, DockerState, Event, LogLine, Op, Update};
use crate::model::{parse_rfc3339, Addon, AddonEvent, Application, InstalledAddon, MetricsSample, Service, Template};
use crate::sanitize::{sanitize, sanitize_log_line};

pub const SVC: &str = "/api/plugin-microservice/services";
pub const WATCH: &str = "/api/plugin-microservice/watch";
pub const TEMPLATES: &str = "/api/plugin-microservice/templates";

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const METRICS_EVERY: Duration = Duration::from_secs(2);
const REFRESH_EVERY: Duration = Duration::from_secs(10);
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Reads (list, health, metrics) and opening a stream.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Actions that may pull an image first (create, install).
const SLOW_TIMEOUT: Duration = Duration::from_secs(600);
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines gathered into one update: at most this long, or this many lines.
const LOG_BATCH: Duration = Duration::from_millis(50);
const LOG_BATCH_LINES: usize = 2_000;

pub type Tx = mpsc::Sender<Event>;

async fn send(tx: &Tx, u: Update) {
    let _ = tx.send(Event::Daemon(u)).await;
}

async fn limited<T>(d: Duration, what: &str, f: impl Future<Output = Result<T, ClientError>>) -> Result<T, String> {
    match timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(sanitize(&e.to_string())),
        Err(_) => Err(format!("{what}: the daemon did not answer within {}s", d.as_secs())),
    }
}

fn api_error(r: &Response) -> Option<String> {
    r.error().map(|e| sanitize(&e.to_string()))
}

/// A 404 for the route itself: the daemon has no such API. Asked only of collection
/// routes (`/api/addons`, `/api/applications`, `/api/events/…`), which answer 404 only
/// when the route is missing, so the envelope's typed code decides; its message is for
/// people and is never read.
fn no_route(r: &Response) -> bool {
    r.status == 404 && r.error().is_some_and(|e| e.code == ErrorCode::NotFound.as_str())
}

/// Owns the background tasks; [`Net::dispatch`] carries out the app's commands.
pub struct Net {
    client: Client,
    tx: Tx,
    metrics: watch::Sender<Option<String>>,
    logs: Option<JoinHandle<()>>,
    probe: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Net {
    /// Starts the watcher and the metrics poller. Must run inside a tokio runtime.
    pub fn start(client: Client, tx: Tx) -> Net {
        let (mtx, mrx) = watch::channel(None);
        let tasks = vec![
            tokio::spawn(watcher(client.clone(), tx.clone())),
            tokio::spawn(metrics_poller(client.clone(), tx.clone(), mrx)),
            tokio::spawn(event_follower(client.clone(), tx.clone())),
        ];
        Net { client, tx, metrics: mtx, logs: None, probe: None, tasks }
    }

    pub fn dispatch(&mut self, cmd: Command) {
        let (client, tx) = (self.client.clone(), self.tx.clone());
        match cmd {
            Command::WatchMetrics(target) => {
                let _ = self.metrics.send(target);
            }
            Command::OpenLogs { session, id, instance } => {
                if let Some(h) = self.logs.take() {
                    h.abort();
                }
                self.logs = Some(tokio::spawn(follow_logs(client, tx, session, id, instance)));
            }
            Command::CloseLogs => {
                if let Some(h) = self.logs.take() {
                    h.abort();
                }
            }
            Command::ProbePorts(range) => {
                if let Some(h) = self.probe.take() {
                    h.abort();
                }
                if let Some(r) = range {
                    self.probe = Some(tokio::spawn(probe_ports(tx, r)));
                }
            }
            Command::Lifecycle { id, name, op } => {
                tokio::spawn(async move {
                    let path = format!("{SVC}/{}", encode_path_segment(&id));
                    let r = match op {
                        Op::Delete => limited(ACTION_TIMEOUT, "delete", client.delete(&path)).await,
                        _ => limited(ACTION_TIMEOUT, op.verb(), client.post(&format!("{path}/{}", op.verb()), None)).await,
                    };
                    report(&tx, r, &format!("{} {name}", op.verb())).await;
                });
            }
            Command::Scale { id, name, replicas } => {
                tokio::spawn(async move {
                    let path = format!("{SVC}/{}/scale", encode_path_segment(&id));
                    let r = limited(ACTION_TIMEOUT, "scale", client.post(&path, Some(&json!({"replicas": replicas})))).await;
                    report(&tx, r, &format!("scale {name} to {replicas}")).await;
                });
            }
            Command::CreateFromTemplate { template, name } => {
                tokio::spawn(async move {
                    let path = format!("{TEMPLATES}/{}/create", encode_path_segment(&template));
                    let r = limited(SLOW_TIMEOUT, "create", client.post(&path, Some(&json!({"name": name})))).await;
                    report(&tx, r, &format!("create {name} from {template}")).await;
                });
            }
            Command::InstallAddon { addon, instance } => {
                tokio::spawn(async move {
                    let path = format!("/api/addons/{}/install", encode_path_segment(&addon));
                    let r = limited(SLOW_TIMEOUT, "install", client.post(&path, Some(&json!({"instance": instance})))).await;
                    report(&tx, r, &format!("install {addon} as {instance}")).await;
                    load_addons(&client, &tx).await;
                });
            }
            Command::Promote { base, from, to } => {
                tokio::spawn(async move {
                    let path = format!("/api/addons/{}/promote", encode_path_segment(&base));
                    let r = limited(SLOW_TIMEOUT, "promote", client.post(&path, Some(&json!({"from": from, "to": to})))).await;
                    let what = format!("promote {base} {from} → {to}");
                    let (ok, message) = match r {
                        Ok(resp) => match api_error(&resp) {
                            Some(e) => (false, format!("{what} failed: {e}")),
                            None => {
                                let d = &resp.data()["deployment"];
                                let outcome = d["outcome"].as_str().unwrap_or("finished");
                                let reason = d["reason"].as_str().map(|r| format!(": {}", sanitize(r))).unwrap_or_default();
                                (outcome == "succeeded", format!("{what}: {}{reason}", sanitize(outcome)))
                            }
                        },
                        Err(e) => (false, format!("{what} failed: {e}")),
                    };
                    send(&tx, Update::ActionDone { ok, message }).await;
                    load_addons(&client, &tx).await;
                });
            }
            Command::SaveLogs { path, text } => {
                tokio::spawn(async move {
                    let n = text.lines().count();
                    let (ok, message) = match tokio::fs::write(&path, text).await {
                        Ok(()) => (true, format!("saved {n} line(s) to {}", path.display())),
                        Err(e) => (false, format!("could not save to {}: {e}", path.display())),
                    };
                    send(&tx, Update::ActionDone { ok, message }).await;
                });
            }
            Command::LoadTemplates => {
                tokio::spawn(async move {
                    let r = match limited(READ_TIMEOUT, "templates", client.get(TEMPLATES)).await {
                        Ok(resp) => match api_error(&resp) {
                            Some(e) => Err(e),
                            None => {
                                Ok(resp.data().as_array().map(|a| a.iter().filter_map(Template::from_json).collect()).unwrap_or_default())
                            }
                        },
                        Err(e) => Err(e),
                    };
                    send(&tx, Update::Templates(r)).await;
                });
            }
            Command::LoadAddons => {
                tokio::spawn(async move { load_addons(&client, &tx).await });
            }
            Command::LoadGrants => {
                tokio::spawn(async move {
                    let a = match limited(READ_TIMEOUT, "applications", client.get("/api/applications")).await {
                        Ok(r) if no_route(&r) => Avail::NotAvailable,
                        Ok(r) => match api_error(&r) {
                            Some(e) => Avail::Error(e),
                            None => Avail::Ready(Application::list_from_json(r.data())),
                        },
                        Err(e) => Avail::Error(e),
                    };
                    send(&tx, Update::Grants(a)).await;
                });
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in self.tasks.drain(..).chain(self.logs.take()).chain(self.probe.take()) {
            h.abort();
        }
    }
}

/// Reports an action's outcome; `what` names it (`restart web`).
async fn report(tx: &Tx, r: Result<Response, String>, what: &str) {
    let (ok, message) = match r {
        Ok(resp) => match api_error(&resp) {
            Some(e) => (false, format!("{what} failed: {e}")),
            None => {
                let phase =
                    resp.data().get("phase").and_then(Value::as_str).map(|p| format!(" (phase {})", sanitize(p))).unwrap_or_default();
                (true, format!("{what}: accepted{phase}"))
            }
        },
        Err(e) => (false, format!("{what} failed: {e}")),
    };
    send(tx, Update::ActionDone { ok, message }).await;
}

async fn load_addons(client: &Client, tx: &Tx) {
    let a = match limited(READ_TIMEOUT, "addons", client.get("/api/addons")).await {
        Ok(r) if no_route(&r) => Avail::NotAvailable,
        Ok(r) => match api_error(&r) {
            Some(e) => Avail::Error(e),
            None => Avail::Ready(Addon::list_from_json(r.data())),
        },
        Err(e) => Avail::Error(e),
    };
    let a = match a {
        Avail::Ready(mut list) => {
            for addon in &mut list {
                addon.instances = load_installed(client, &addon.installed).await;
            }
            Avail::Ready(list)
        }
        other => other,
    };
    send(tx, Update::Addons(a)).await;
}

/// Each installed instance's view and deployments; one that cannot be read is left out
/// (an older daemon has no deployments: its instances show without history).
async fn load_installed(client: &Client, instances: &[String]) -> Vec<InstalledAddon> {
    let mut out = Vec::new();
    for i in instances {
        let base = format!("/api/addons/{}", encode_path_segment(i));
        let Ok(view) = limited(READ_TIMEOUT, "addon", client.get(&base)).await else { continue };
        if api_error(&view).is_some() {
            continue;
        }
        let history = match limited(READ_TIMEOUT, "deployments", client.get(&format!("{base}/deployments"))).await {
            Ok(r) if api_error(&r).is_none() => r.data().clone(),
            _ => Value::Null,
        };
        out.extend(InstalledAddon::from_json(view.data(), &history));
    }
    out
}

// ---- watcher --------------------------------------------------------------------------

async fn watcher(client: Client, tx: Tx) {
    let mut backoff = MIN_BACKOFF;
    loop {
        send(&tx, Update::Connecting).await;
        let began = Instant::now();
        let error = match session(&client, &tx).await {
            Ok(()) => "the daemon closed the connection".to_string(),
            Err(e) => e,
        };
        if began.elapsed() > Duration::from_secs(10) {
            backoff = MIN_BACKOFF;
        }
        send(&tx, Update::Down { error, retry_in: backoff }).await;
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: open the stream, load the state, apply events until the stream ends.
async fn session(client: &Client, tx: &Tx) -> Result<(), String> {
    let mut stream = match timeout(READ_TIMEOUT, client.stream(Method::GET, WATCH)).await {
        Err(_) => return Err("the daemon did not answer within 15s".into()),
        Ok(Err(ClientError::Api(e))) if e.status == 404 => return poll_session(client, tx).await,
        Ok(Err(e)) => return Err(sanitize(&e.to_string())),
        Ok(Ok(s)) => s,
    };
    let (version, docker) = health(client, tx).await?;
    send(tx, Update::Connected { version, docker, polling: false }).await;
    load_services(client, tx).await?;
    let mut parser = SseParser::default();
    let mut tick = tokio::time::interval_at(Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
    loop {
        tokio::select! {
            chunk = stream.next_chunk() => match chunk {
                None => return Ok(()),
                Some(Err(e)) => return Err(format!("lost the connection to the daemon ({})", sanitize(&e.to_string()))),
                Some(Ok(bytes)) => {
                    for ev in parser.push(&bytes) {
                        match ev.kind() {
                            "service" => {
                                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                                if v.get("deleted").and_then(Value::as_bool) == Some(true) {
                                    if let Some(id) = v.get("id").and_then(Value::as_str) {
                                        send(tx, Update::Deleted(sanitize(id))).await;
                                    }
                                } else if let Some(s) = Service::from_json(&v) {
                                    send(tx, Update::Service(s)).await;
                                }
                            }
                            "resync" => {
                                send(tx, Update::Resync).await;
                                load_services(client, tx).await?;
                            }
                            _ => {}
                        }
                    }
                }
            },
            _ = tick.tick() => refresh(client, tx).await,
        }
    }
}

/// A daemon without `/watch`: list every 2 s.
async fn poll_session(client: &Client, tx: &Tx) -> Result<(), String> {
    let (version, docker) = health(client, tx).await?;
    send(tx, Update::Connected { version, docker, polling: true }).await;
    load_services(client, tx).await?;
    loop {
        sleep(Duration::from_secs(2)).await;
        load_services(client, tx).await?;
    }
}

async fn load_services(client: &Client, tx: &Tx) -> Result<(), String> {
    let r = limited(READ_TIMEOUT, "list", client.get(SVC)).await?;
    if let Some(e) = api_error(&r) {
        return Err(e);
    }
    let list = r.data().as_array().map(|a| a.iter().filter_map(Service::from_json).collect()).unwrap_or_default();
    send(tx, Update::Services(list)).await;
    Ok(())
}

/// At connect: `GET /health` (version, Docker, the port range if the daemon reports it),
/// then [`refresh`].
async fn health(client: &Client, tx: &Tx) -> Result<(Option<String>, Option<DockerState>), String> {
    let r = limited(READ_TIMEOUT, "health", client.get("/health")).await?;
    if let Some(e) = api_error(&r) {
        return Err(e);
    }
    let d = r.data();
    let version = d.get("version").and_then(Value::as_str).map(sanitize);
    let docker = d.get("docker").and_then(Value::as_str).map(DockerState::parse);
    // A daemon that reports its range: `"ports": {"range_start": A, "range_end": B}`.
    let port = |k: &str| d.get("ports").and_then(|p| p.get(k)).and_then(Value::as_u64).and_then(|v| u16::try_from(v).ok());
    if let (Some(a), Some(b)) = (port("range_start"), port("range_end")) {
        send(tx, Update::PortRange(a, b)).await;
    }
    refresh(client, tx).await;
    Ok((version, docker))
}

/// Every few seconds while connected: `GET /metrics` only (`/health` checks the database's
/// integrity on every call, too heavy to poll): Docker reachability and the port totals.
async fn refresh(client: &Client, tx: &Tx) {
    let Ok(raw) = limited(READ_TIMEOUT, "metrics", client.request_raw(Method::GET, "/metrics", None)).await else { return };
    if raw.status != 200 {
        return;
    }
    let text = String::from_utf8_lossy(&raw.body);
    if let Some((in_use, free)) = port_totals(&text) {
        send(tx, Update::PortTotals { in_use, free }).await;
    }
    if let Some(docker) = docker_state(&text) {
        send(tx, Update::Health { version: None, docker: Some(docker) }).await;
    }
}

/// The value of an unlabelled sample in Prometheus text.
pub fn prom_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
}

/// The engine's state from `addond_docker_state{state="…"} 1`, or from `addond_docker_up`
/// on a daemon that has only that.
pub fn docker_state(text: &str) -> Option<DockerState> {
    let labelled = text.lines().find_map(|l| {
        let rest = l.strip_prefix("addond_docker_state{state=\"")?;
        let (state, value) = rest.split_once("\"} ")?;
        (value.trim().parse::<f64>().ok()? > 0.0).then(|| DockerState::parse(state))
    });
    labelled
        .or_else(|| prom_value(text, "addond_docker_up").map(|up| if up > 0.0 { DockerState::Reachable } else { DockerState::Unreachable }))
}

/// `addond_ports_in_use` and `addond_ports_free` from the Prometheus text.
pub fn port_totals(text: &str) -> Option<(usize, usize)> {
    Some((prom_value(text, "addond_ports_in_use")? as usize, prom_value(text, "addond_ports_free")? as usize))
}

// ---- the event log ----------------------------------------------------------------

/// Events replayed when the dashboard starts, for context.
const EVENTS_BACKLOG: i64 = 20;

enum EventsEnd {
    /// The daemon has no event log API: look again much later (it may be upgraded).
    NotAvailable,
    /// Down or cut: the watcher reports the connection; just try again.
    Broken,
}

async fn event_follower(client: Client, tx: Tx) {
    let mut last: Option<i64> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let began = Instant::now();
        match follow_events(&client, &tx, &mut last).await {
            EventsEnd::NotAvailable => {
                send(&tx, Update::EventsApi(false)).await;
                sleep(Duration::from_secs(60)).await;
                continue;
            }
            EventsEnd::Broken => {}
        }
        if began.elapsed() > Duration::from_secs(10) {
            backoff = MIN_BACKOFF;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn follow_events(client: &Client, tx: &Tx, last: &mut Option<i64>) -> EventsEnd {
    let after = match *last {
        Some(id) => id,
        None => match limited(READ_TIMEOUT, "events", client.get("/api/events/subscribers")).await {
            Ok(r) if no_route(&r) => return EventsEnd::NotAvailable,
            Ok(r) => (r.data().get("last_event_id").and_then(Value::as_i64).unwrap_or(0) - EVENTS_BACKLOG).max(0),
            Err(_) => return EventsEnd::Broken,
        },
    };
    let mut stream = match timeout(READ_TIMEOUT, client.stream(Method::GET, &format!("/api/events/stream?after={after}"))).await {
        Ok(Ok(s)) => s,
        Ok(Err(ClientError::Api(e))) if e.status == 404 && e.code == ErrorCode::NotFound.as_str() => return EventsEnd::NotAvailable,
        Ok(Err(_)) => return EventsEnd::Broken,
        Err(_) => return EventsEnd::Broken,
    };
    send(tx, Update::EventsApi(true)).await;
    let mut parser = SseParser::default();
    loop {
        match stream.next_chunk().await {
            None | Some(Err(_)) => return EventsEnd::Broken,
            Some(Ok(bytes)) => {
                let events: Vec<AddonEvent> = parser
                    .push(&bytes)
                    .iter()
                    .filter_map(|ev| serde_json::from_str::<Value>(&ev.data).ok())
                    .filter_map(|v| AddonEvent::from_json(&v))
                    .filter(|e| last.is_none_or(|l| e.id > l))
                    .collect();
                if let Some(e) = events.last() {
                    *last = Some(e.id);
                }
                if last.is_none() {
                    // Nothing seen yet: resume from where this stream started.
                    *last = Some(after);
                }
                if !events.is_empty() {
                    send(tx, Update::AddonEvents(events)).await;
                }
            }
        }
    }
}

// ---- metrics ------------------------------------------------------------------------

async fn metrics_poller(client: Client, tx: Tx, mut rx: watch::Receiver<Option<String>>) {
    loop {
        let target = rx.borrow_and_update().clone();
        let Some(id) = target else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let next = Instant::now() + METRICS_EVERY;
        let path = format!("{SVC}/{}/metrics", encode_path_segment(&id));
        let result = match limited(READ_TIMEOUT, "metrics", client.get(&path)).await {
            Ok(r) => match api_error(&r) {
                Some(e) => Err(e),
                None => Ok(MetricsSample::from_json(r.data())),
            },
            Err(e) => Err(e),
        };
        send(&tx, Update::Metrics { id, result }).await;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

// ---- logs ---------------------------------------------------------------------------

/// Parses one line of `logs?follow=true&timestamps=true`: an optional `[k] ` instance
/// prefix (the daemon adds it when several instances are merged), Docker's RFC 3339
/// timestamp, then the text.
pub fn parse_log_line(raw: &str) -> LogLine {
    let mut rest = raw;
    let mut instance = None;
    if let Some(r) = rest.strip_prefix('[') {
        if let Some((k, after)) = r.split_once("] ") {
            if let Ok(k) = k.parse::<u32>() {
                instance = Some(k);
                rest = after;
            }
        }
    }
    let mut ts = None;
    if let Some((first, after)) = rest.split_once(' ') {
        if let Some(t) = parse_rfc3339(first) {
            ts = Some(t);
            rest = after;
        }
    } else if let Some(t) = parse_rfc3339(rest.trim_end_matches('\r')) {
        ts = Some(t);
        rest = "";
    }
    LogLine { instance, ts, text: sanitize_log_line(rest) }
}

/// Drops lines a reopened stream repeats: per instance, anything not newer than the last
/// timestamp delivered.
#[derive(Default)]
pub struct Dedup {
    last: HashMap<Option<u32>, (i64, u32)>,
}

impl Dedup {
    pub fn keep(&mut self, l: &LogLine) -> bool {
        let Some(ts) = l.ts else { return true };
        match self.last.get(&l.instance) {
            Some(prev) if ts <= *prev => false,
            _ => {
                self.last.insert(l.instance, ts);
                true
            }
        }
    }
}

async fn follow_logs(client: Client, tx: Tx, session: u64, id: String, instance: Option<u32>) {
    let inst = instance.map(|k| format!("&instance={k}")).unwrap_or_default();
    let path = format!("{SVC}/{}/logs?follow=true&lines=200&timestamps=true{inst}", encode_path_segment(&id));
    let mut dedup = Dedup::default();
    let mut backoff = Duration::from_secs(1);
    loop {
        let status = match limited(READ_TIMEOUT, "logs", client.stream(Method::GET, &path)).await {
            Ok(mut stream) => {
                send(&tx, Update::LogStatus { session, status: "streaming".into(), live: true }).await;
                backoff = Duration::from_secs(1);
                let mut splitter = LineSplitter::default();
                let end = loop {
                    let first = match stream.next_chunk().await {
                        None => break None,
                        Some(Err(e)) => break Some(e.to_string()),
                        Some(Ok(b)) => b,
                    };
                    let mut raw = splitter.push(&first);
                    // Gather what else arrives within a moment into the same update.
                    let until = Instant::now() + LOG_BATCH;
                    let mut ended = None;
                    while raw.len() < LOG_BATCH_LINES {
                        match tokio::time::timeout_at(until, stream.next_chunk()).await {
                            Err(_) => break,
                            Ok(Some(Ok(b))) => raw.extend(splitter.push(&b)),
                            Ok(Some(Err(e))) => {
                                ended = Some(Some(e.to_string()));
                                break;
                            }
                            Ok(None) => {
                                ended = Some(None);
                                break;
                            }
                        }
                    }
                    if ended.is_some() {
                        raw.extend(splitter.finish());
                    }
                    let lines: Vec<LogLine> = raw.iter().map(|l| parse_log_line(l)).filter(|l| dedup.keep(l)).collect();
                    if !lines.is_empty() {
                        send(&tx, Update::LogLines { session, lines }).await;
                    }
                    if let Some(e) = ended {
                        break e;
                    }
                };
                match end {
                    None => "stream ended (container stopped?), reopening".to_string(),
                    Some(e) => format!("stream broken: {}", sanitize(&e)),
                }
            }
            Err(e) => e,
        };
        send(&tx, Update::LogStatus { session, status, live: false }).await;
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

// ---- ports --------------------------------------------------------------------------

/// Ports of the range that something on this host holds (a bind on the publish address
/// or the wildcard fails), found the way the daemon's allocator finds them.
pub fn held_ports(range: (u16, u16)) -> BTreeSet<u16> {
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    (range.0..=range.1).filter(|p| !addond::ports::port_is_free(local, *p)).collect()
}

async fn probe_ports(tx: Tx, range: (u16, u16)) {
    loop {
        if let Ok(held) = tokio::task::spawn_blocking(move || held_ports(range)).await {
            send(&tx, Update::PortsHeld { range, held }).await;
        }
        sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_with_and_without_prefixes() {
        let l = parse_log_line("[1] 2024-02-29T12:00:00.5Z hello\tworld\x1b[31m!");
        assert_eq!((l.instance, l.ts, l.text.as_str()), (Some(1), Some((1_709_208_000, 500_000_000)), "hello   world!"));
        let l = parse_log_line("2024-02-29T12:00:00Z plain");
        assert_eq!((l.instance, l.ts.is_some(), l.text.as_str()), (None, true, "plain"));
        let l = parse_log_line("no timestamp here");
        assert_eq!((l.instance, l.ts, l.text.as_str()), (None, None, "no timestamp here"));
        let l = parse_log_line("[x] 2024-02-29T12:00:00Z");
        assert_eq!((l.instance, l.ts, l.text.as_str()), (None, None, "[x] 2024-02-29T12:00:00Z"));
        let l = parse_log_line("2024-02-29T12:00:00Z");
        assert_eq!((l.ts.is_some(), l.text.as_str()), (true, ""));
    }

    #[test]
    fn reopened_streams_do_not_repeat_lines() {
        let mut d = Dedup::default();
        let a = parse_log_line("[0] 2024-02-29T12:00:00.1Z a");
        let b = parse_log_line("[0] 2024-02-29T12:00:00.12Z b");
        let c = parse_log_line("[1] 2024-02-29T12:00:00.05Z c");
        assert!(d.keep(&a) && d.keep(&b) && d.keep(&c));
        // Replayed after a reopen: dropped; a new line passes.
        assert!(!d.keep(&a) && !d.keep(&b) && !d.keep(&c));
        assert!(d.keep(&parse_log_line("[0] 2024-02-29T12:00:01Z new")));
        assert!(d.keep(&parse_log_line("untimed")));
    }

    #[test]
    fn port_totals_from_prometheus_text() {
        let text = "# HELP addond_ports_in_use x\naddond_ports_in_use 3\naddond_ports_in_use_total 9\naddond_ports_free 998\n";
        assert_eq!(port_totals(text), Some((3, 998)));
        assert_eq!(port_totals("addond_up 1\n"), None);
        assert_eq!(prom_value("addond_docker_up 1\n", "addond_docker_up"), Some(1.0));
        let m = "addond_docker_up 0\naddond_docker_state{state=\"reachable\"} 0\naddond_docker_state{state=\"unresponsive\"} 1\naddond_docker_state{state=\"unreachable\"} 0\n";
        assert_eq!(docker_state(m), Some(DockerState::Unresponsive));
        assert_eq!(docker_state("addond_docker_up 1\n"), Some(DockerState::Reachable));
        assert_eq!(docker_state("addond_docker_up 0\n"), Some(DockerState::Unreachable));
        assert_eq!(docker_state("other 1\n"), None);
    }

    #[test]
    fn probe_finds_a_held_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        assert!(held_ports((p, p)).contains(&p));
        drop(l);
    }

    /// Only collection routes are probed, which answer 404 only when the route itself is
    /// missing: the typed code decides, whatever the message says.
    #[test]
    fn missing_route_by_code_not_message() {
        let r = |status: u16, code: &str, msg: &str| Response {
            status,
            body: json!({"success": false, "error": {"code": code, "message": msg}}),
        };
        assert!(no_route(&r(404, "not_found", "no route GET /api/applications")));
        assert!(no_route(&r(404, "not_found", "this daemon has no /api/applications")), "a reworded message");
        assert!(!no_route(&r(404, "image_not_found", "no route to the registry")), "another code");
        assert!(!no_route(&r(403, "forbidden", "no route for uid 1000")));
        assert!(!no_route(&Response { status: 200, body: json!({"success": true, "data": []}) }));
    }
}
