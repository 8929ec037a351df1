//! Assembles a running daemon from a config: the data-dir lock, the store, the Docker
//! runtime, the lifecycle and the admin socket, and owns their tasks from start to a
//! graceful stop. `addond`'s `main` only parses flags and calls [`run`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::addon_api::AddonApi;
use crate::addons::Addons;
use crate::api::{self, AppState, PeerPolicy};
use crate::config::Config;
use crate::data_dir::lock_data_dir;
use crate::events::Events;
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::systemd::{LogControl, Notifier};

/// Binds the admin socket: mode 0660, group from the config. A leftover socket file from a
/// crashed daemon is replaced; one that still answers belongs to a live daemon and is not.
fn bind_socket(cfg: &Config) -> anyhow::Result<(tokio::net::UnixListener, Option<u32>)> {
    let path = &cfg.daemon.socket_path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("socket {} is in use by another running daemon; stop it or set daemon.socket_path", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let group = crate::users::group_id(&cfg.daemon.socket_group);
    match group {
        Some(gid) => {
            if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
                tracing::warn!(group = %cfg.daemon.socket_group, error = %e, "cannot give the socket to its group; only root and the daemon's user can use it");
            }
        }
        None => {
            tracing::warn!(group = %cfg.daemon.socket_group, "socket group does not exist; only root and the daemon's user can use the socket")
        }
    }
    Ok((listener, group))
}

/// Re-reads the configuration on SIGHUP (the file and environment `addond` started from).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

/// How the daemon talks to its service manager and what a SIGHUP may change.
pub struct RunOptions {
    pub notifier: Notifier,
    /// Without it a SIGHUP is logged and ignored.
    pub reload: Option<ConfigSource>,
    /// Without it `daemon.log_level` is not reloadable.
    pub log: Option<LogControl>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { notifier: Notifier::disabled(), reload: None, log: None }
    }
}

/// The keys a SIGHUP applies to the running daemon. Any other changed key makes the whole
/// reload refused (and logged), because the parts that read them (sockets, the data dir,
/// networks, the sandbox, the gateway, caches sized at start) cannot change underneath
/// running requests and containers without a restart.
pub const LIVE_KEYS: &[&str] = &[
    "daemon.log_level",
    "reconcile.interval_seconds",
    "health.interval_seconds",
    "health.timeout_seconds",
    "health.retries",
    "health.start_period_seconds",
    "limits.memory",
    "limits.cpu",
    "limits.pids",
];

/// `section.key` of every value that differs between two configs.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) = (toml::Value::try_from(old), toml::Value::try_from(new)) else {
        return vec!["<config>".into()];
    };
    let mut out = Vec::new();
    let sections: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for sec in sections {
        match (a.get(sec), b.get(sec)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    if x.get(k) != y.get(k) {
                        out.push(format!("{sec}.{k}"));
                    }
                }
            }
            (x, y) if x != y => out.push(sec.clone()),
            _ => {}
        }
    }
    out
}

/// Runs the daemon until `shutdown` is cancelled. Addon containers keep running after it
/// returns; the next start adopts them.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(cfg, shutdown, RunOptions::default()).await
}

/// [`run`], telling systemd how it goes: `READY=1` once the database is migrated, Docker
/// probed, the first resync done and every listener accepting; `STATUS=` with counts;
/// `WATCHDOG=1` from the main loop while the database answers; `RELOADING=1` around a
/// SIGHUP reload; `STOPPING=1` when the stop begins.
pub async fn run_with(cfg: Config, shutdown: CancellationToken, opts: RunOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    // Signals the main loop handles, registered first: a SIGHUP during start-up waits for
    // the loop instead of killing the process (its default action).
    let signals =
        LoopSignals { hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(), stall: debug_stall_signal() };
    let notifier = opts.notifier.clone();
    let cfg = Arc::new(cfg);
    let _lock = lock_data_dir(&cfg.daemon.data_dir)?;
    remove_stale_snapshots(&cfg.daemon.data_dir);
    notifier.status("opening the database");
    let store = Store::open(&cfg.daemon.data_dir.join("addond.db")).await.context("cannot open the database")?;
    let daemon_id = store.daemon_id().await?;
    let db = store.clone();
    // Before any container is made or started: the table that keeps addon networks apart
    // while Docker rewrites its own rules (`firewall`). Without the privilege to apply it,
    // the daemon says whether `addond firewall` did and carries on.
    notifier.status("applying the firewall table");
    let (pool, dir) = (cfg.docker.subnet_pool.clone(), cfg.daemon.data_dir.clone());
    tokio::task::spawn_blocking(move || crate::firewall::ensure_at_start(&pool, &dir)).await??;
    notifier.status("probing Docker");
    let runtime = Arc::new(Runtime::new(cfg.clone()));
    let docker_up = runtime.ping().await;
    if !docker_up {
        tracing::warn!(docker = %cfg.docker.host, "Docker is not reachable; serving the API and retrying");
    }
    let lifecycle = Lifecycle::new(cfg.clone(), store, runtime, daemon_id, shutdown.clone());
    let (listener, group) = bind_socket(&cfg)?;
    let policy = PeerPolicy { daemon_uid: nix::unistd::getuid().as_raw(), group };
    let metrics = Arc::new(Metrics::default());
    let addons = Addons::new(cfg.clone(), lifecycle.clone(), metrics.clone());
    // Before the first resync, so a service found failed there is notified too.
    let notify_task = crate::notify::Notifier::new(&cfg.notify, metrics.clone()).map(|n| n.spawn(lifecycle.clone(), shutdown.clone()));
    let gateway = Gateway::new(cfg.clone(), addons.clone(), lifecycle.clone());
    gateway.reload_keys().await?;
    let gateway_listener = if cfg.gateway.enabled {
        Some(
            tokio::net::TcpListener::bind(cfg.gateway.listen)
                .await
                .with_context(|| format!("cannot listen on {} (gateway.listen)", cfg.gateway.listen))?,
        )
    } else {
        None
    };
    let gateway_addr = gateway_listener.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_listener = match cfg.metrics.listen_addr() {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?),
        None => None,
    };
    let events = Events::new(cfg.clone(), lifecycle.clone(), addons.clone());
    addons.set_event_sink(events.clone());
    // Handed to the lifecycle before the first resync: it listens on each addon network as
    // the reconciler makes (or finds) it, before that network's first container is made, so
    // containers get ADDOND_API.
    let addon_api = AddonApi::new(cfg.clone(), lifecycle.clone(), addons.clone(), events.clone(), shutdown.clone());
    // Builds a previous run left `building` are marked failed before anything is served.
    let builds = crate::build::Builds::open(lifecycle.clone(), addons.clone()).await?;
    let app = api::router(AppState {
        lifecycle: lifecycle.clone(),
        addons: addons.clone(),
        builds: builds.clone(),
        gateway: gateway.clone(),
        events: events.clone(),
        gateway_addr,
        started,
    });
    let lc_task = tokio::spawn(lifecycle.clone().run());
    let routes_task = tokio::spawn(addons.dispatcher.clone().follow_changes(shutdown.clone()));
    let audit_task = tokio::spawn(gateway.clone().run_audit_writer(shutdown.clone()));
    let events_task = tokio::spawn(events.clone().run(shutdown.clone()));
    // The MCP catalogue follows installs and stops, and ends MCP sessions at shutdown.
    let mcp_task = tokio::spawn(gateway.mcp.clone().run(shutdown.clone()));
    let addon_api_task = tokio::spawn(addon_api.run());
    let schedules_task = tokio::spawn(crate::schedules::Scheduler::new(lifecycle.clone(), addons.clone()).run(shutdown.clone()));
    // Half installs an older addond may have left, then deployments a killed daemon left
    // running (both wait for the first resync).
    tokio::spawn({
        let (addons, shutdown) = (addons.clone(), shutdown.clone());
        async move {
            tokio::select! {
                _ = async {
                    addons.clone().repair_installs_once().await;
                    addons.recover_deployments_once().await;
                } => {}
                _ = shutdown.cancelled() => {}
            }
        }
    });
    // Tags a build recorded before a restart did not get (it waits for the first resync).
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = builds.repair() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    });
    let metrics_task = metrics_listener.map(|l| {
        tracing::info!(listen = ?l.local_addr().ok(), "metrics listening");
        let sources = crate::scrape::Sources {
            lifecycle: lifecycle.clone(),
            addons: addons.clone(),
            gateway: gateway.clone(),
            events: events.clone(),
            started,
        };
        tokio::spawn(crate::scrape::listener::serve(l, sources, shutdown.clone()))
    });
    // Read once here, before any call: the client stays the same for the daemon's life.
    tracing::info!(client = ?crate::upstream::client(), "upstream client");
    let gateway_task = gateway_listener.map(|l| {
        tracing::info!(listen = ?gateway_addr, "gateway listening");
        tokio::spawn(crate::gateway::serve(l, gateway.clone(), shutdown.clone()))
    });
    let budgets = crate::http::conn::Budgets::for_config(&cfg.http);
    if budgets.scaled {
        tracing::warn!(
            fd_limit = budgets.fd_limit, gateway = budgets.gateway, admin = budgets.admin, addon_api = budgets.addon_api,
            "the file-descriptor limit cannot hold http.*_max_connections; the caps are scaled down to fit (raise LimitNOFILE= to keep them)"
        );
    }
    let admin_registry = crate::http::conn::Registry::for_listener(crate::http::conn::Listener::Admin, &cfg.http);
    let api_task = tokio::spawn(api::serve(listener, app, policy, admin_registry, Some(db.clone()), shutdown.clone()));
    if docker_up {
        notifier.status("adopting containers (first resync)");
        tokio::select! {
            _ = lifecycle.first_resync() => {}
            _ = shutdown.cancelled() => {}
        }
    }
    let sup = Supervisor { lifecycle: lifecycle.clone(), store: db.clone(), notifier: notifier.clone(), opts };
    if !shutdown.is_cancelled() {
        let status = sup.status_line().await;
        notifier.ready(&status);
        tracing::info!(socket = %cfg.daemon.socket_path.display(), data_dir = %cfg.daemon.data_dir.display(), %status, "addond ready");
        sup.main_loop(&shutdown, signals).await;
    }
    notifier.stopping();
    tracing::info!("stopping: finishing requests in flight; addon containers keep running");
    let _ = api_task.await;
    let _ = lc_task.await;
    let _ = routes_task.await;
    if let Some(t) = gateway_task {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(t) = notify_task {
        let _ = t.await;
    }
    let _ = audit_task.await;
    let _ = events_task.await;
    let _ = mcp_task.await;
    let _ = addon_api_task.await;
    let _ = schedules_task.await;
    let _ = std::fs::remove_file(&cfg.daemon.socket_path);
    // Close the database cleanly: the WAL folded into the file, nothing left to replay.
    match db.checkpoint().await {
        Ok(()) => tracing::debug!("database checkpointed"),
        Err(e) => tracing::warn!(error = %e, "cannot checkpoint the database; it is replayed at the next start"),
    }
    drop(sup);
    drop(db);
    tracing::info!("addond stopped");
    Ok(())
}

/// Removes database snapshots a backup left behind when the daemon died during it.
fn remove_stale_snapshots(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".backup-") && name.ends_with(".db") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

struct LoopSignals {
    hup: Option<tokio::signal::unix::Signal>,
    stall: Option<(tokio::signal::unix::Signal, Duration)>,
}

/// The daemon's main loop: watchdog, status, reloads.
struct Supervisor {
    lifecycle: Arc<Lifecycle>,
    store: Store,
    notifier: Notifier,
    opts: RunOptions,
}

impl Supervisor {
    /// `3 services (2 started, 1 failed, 0 changing), 4/4 instances healthy, Docker reachable`
    async fn status_line(&self) -> String {
        let docker = match self.lifecycle.runtime().state() {
            crate::runtime::DockerState::Reachable => "reachable",
            crate::runtime::DockerState::Unresponsive => "unresponsive, retrying",
            crate::runtime::DockerState::Unreachable => "unreachable, retrying",
        };
        match self.store.list_services().await {
            Ok(all) => {
                use crate::model::{Health, Phase};
                let started = all.iter().filter(|s| s.phase == Phase::Started).count();
                let failed = all.iter().filter(|s| s.phase == Phase::Failed).count();
                let stopped = all.iter().filter(|s| s.phase == Phase::Stopped).count();
                let changing = all.len() - started - failed - stopped;
                let wanted: Vec<_> =
                    all.iter().filter(|s| s.phase != Phase::Stopped).flat_map(|s| s.instances.iter().filter(|i| i.wanted)).collect();
                let healthy = wanted.iter().filter(|i| i.health == Health::Healthy).count();
                format!(
                    "{} services ({started} started, {failed} failed, {stopped} stopped, {changing} changing), {healthy}/{} instances healthy, Docker {docker}",
                    all.len(),
                    wanted.len()
                )
            }
            Err(e) => format!("database error: {e}"),
        }
    }

    async fn main_loop(&self, shutdown: &CancellationToken, signals: LoopSignals) {
        use tokio::time::MissedTickBehavior;
        let wd_period = crate::systemd::watchdog_period().filter(|_| self.notifier.is_enabled());
        let mut watchdog = wd_period.map(|p| {
            let mut t = tokio::time::interval(p);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        if let Some(p) = wd_period {
            tracing::info!(every_ms = p.as_millis() as u64, "feeding the systemd watchdog");
        }
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut changes = self.lifecycle.subscribe();
        let mut dirty = false;
        let mut last_status = String::new();
        let mut last_sent = Instant::now();
        let LoopSignals { mut hup, mut stall } = signals;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async { match watchdog.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                    // Fed only while the loop runs and the database answers in time: a wedged
                    // database (or runtime) stops the pings and systemd restarts us.
                    let deadline = wd_period.unwrap_or(Duration::from_secs(1));
                    match tokio::time::timeout(deadline, self.store.ping()).await {
                        Ok(Ok(())) => self.notifier.watchdog(),
                        Ok(Err(e)) => tracing::error!(error = %e, "database probe failed; not feeding the watchdog"),
                        Err(_) => tracing::error!(waited_ms = deadline.as_millis() as u64, "database did not answer; not feeding the watchdog"),
                    }
                }
                r = changes.recv() => {
                    if !matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        dirty = true;
                    }
                }
                _ = status_tick.tick() => {
                    if dirty || last_sent.elapsed() >= Duration::from_secs(10) {
                        dirty = false;
                        last_sent = Instant::now();
                        let status = self.status_line().await;
                        if status != last_status {
                            self.notifier.status(&status);
                            last_status = status;
                        }
                    }
                }
                _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                    self.reload().await;
                    last_status.clear();
                }
                _ = async { match stall.as_mut() { Some((s, _)) => { s.recv().await; } None => std::future::pending().await } } => {
                    #[cfg(debug_assertions)]
                    if let Some((_, d)) = &stall {
                        tracing::warn!(ms = d.as_millis() as u64, "debug hook: holding the database");
                        self.store.debug_stall(*d);
                    }
                }
            }
        }
    }

    /// SIGHUP: re-read the configuration and apply the keys in [`LIVE_KEYS`]; refuse the
    /// whole reload when any other key changed.
    async fn reload(&self) {
        let Some(source) = &self.opts.reload else {
            tracing::warn!("SIGHUP ignored: this daemon was started without a config source");
            return;
        };
        self.notifier.reloading();
        let current = self.lifecycle.live_config();
        let outcome = match source() {
            Err(e) => Err(format!("the new configuration is invalid, keeping the running one: {e}")),
            Ok(new) => {
                let changed = changed_keys(&current, &new);
                let fixed: Vec<&String> = changed.iter().filter(|k| !LIVE_KEYS.contains(&k.as_str())).collect();
                if changed.is_empty() {
                    Ok(changed)
                } else if !fixed.is_empty() {
                    Err(format!(
                        "reload refused: {} cannot change while addond runs (restart it to apply them: systemctl restart addond); nothing was changed",
                        fixed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    let level_ok = match (&self.opts.log, new.daemon.log_level != current.daemon.log_level) {
                        (Some(log), true) => log.set_level(&new.daemon.log_level).map_err(|e| e.to_string()),
                        _ => Ok(()),
                    };
                    match level_ok {
                        Err(e) => Err(e),
                        Ok(()) => {
                            self.lifecycle.set_live_config(Arc::new(new));
                            Ok(changed)
                        }
                    }
                }
            }
        };
        match outcome {
            Ok(keys) if keys.is_empty() => tracing::info!("configuration reloaded: nothing changed"),
            Ok(keys) => tracing::info!(changed = %keys.join(","), "configuration reloaded"),
            Err(e) => tracing::error!("{e}"),
        }
        let status = self.status_line().await;
        self.notifier.ready(&status);
    }
}

/// Debug builds, with `ADDOND_DEBUG_HOOKS=1`: SIGUSR1 makes the daemon hold its database
/// for `ADDOND_DEBUG_STALL_MS` (default 3000), as a wedged SQLite call would, so the tests
/// can watch the watchdog pings stop. Release builds have no such hook.
#[cfg(debug_assertions)]
fn debug_stall_signal() -> Option<(tokio::signal::unix::Signal, Duration)> {
    if std::env::var("ADDOND_DEBUG_HOOKS").as_deref() != Ok("1") {
        return None;
    }
    let ms = std::env::var("ADDOND_DEBUG_STALL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok()?;
    Some((sig, Duration::from_millis(ms)))
}

#[cfg(not(debug_assertions))]
fn debug_stall_signal() -> Option<(tokio::signal::unix::Signal, Duration)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_each_difference() {
        let a = Config::default();
        assert!(changed_keys(&a, &a).is_empty());
        let mut b = a.clone();
        b.health.retries = 9;
        b.ports.range_end = 8500;
        b.daemon.log_level = "debug".into();
        assert_eq!(changed_keys(&a, &b), ["daemon.log_level", "health.retries", "ports.range_end"]);
        let fixed: Vec<_> = changed_keys(&a, &b).into_iter().filter(|k| !LIVE_KEYS.contains(&k.as_str())).collect();
        assert_eq!(fixed, ["ports.range_end"]);
    }
}
