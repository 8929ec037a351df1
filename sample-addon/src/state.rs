//! The state of the running addon: the settings read at start (the contract's variables and
//! the knobs that change how the routes answer) and what the routes change (configuration,
//! received events, failure switches).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How many delivered events `GET /events` keeps (oldest dropped first).
pub const MAX_EVENTS: usize = 1000;

/// A string kept out of `Debug` output (the addon API token).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Settings read from the environment once at start.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `ADDOND_ADDON`: the addon this container belongs to (`None` outside addond).
    pub addon: Option<String>,
    /// `ADDOND_SERVICE`: the addon's service this container runs.
    pub service: Option<String>,
    /// `ADDOND_INSTANCE`: this container's instance id, echoed so tests can tell replicas apart.
    pub instance: Option<String>,
    /// `ADDOND_VERSION`: the addon version it runs, echoed so tests can watch an upgrade.
    pub version: Option<String>,
    /// `ADDOND_API`: base URL of the daemon's addon API (`http://ip:port`).
    pub api: Option<String>,
    /// `ADDOND_TOKEN`, sent as `Authorization: Bearer …` to the addon API.
    pub token: Option<Secret>,
    /// `PORT`: where to listen (8080 when unset).
    pub port: u16,
    /// `ADDOND_CONFIG`: the service's configuration at start (`{}` when unset or not JSON).
    pub initial_config: Value,
    /// `SAMPLE_HEALTH_DELAY_MS`: /health answers 503 until this long after start.
    pub health_delay: Duration,
    /// `SAMPLE_RENDER_CPU_US`: CPU every widget render burns.
    pub render_cpu: Duration,
    /// `SAMPLE_CONFIG_RESTART=1`: `POST /config` answers 404 ("restart me").
    pub config_restart: bool,
    /// `SAMPLE_EVENTS_FAIL=1`: `POST /events` answers 500 (toggled by `/admin/events/*`).
    pub events_fail: bool,
}

impl Settings {
    /// Whether addond gave this container an addon API token (the token itself is never shown).
    pub fn token_present(&self) -> bool {
        self.token.is_some()
    }
}

/// Shared, mutable state of the running addon.
pub struct State {
    /// What the environment said at start; never changes.
    pub settings: Settings,
    /// Process start, for `/health`'s `uptime_ms` and `SAMPLE_HEALTH_DELAY_MS`.
    pub started: Instant,
    /// Set by `POST /admin/health/fail`: `/health` answers 500 until `/admin/health/ok`.
    pub health_fail: AtomicBool,
    /// `SAMPLE_EVENTS_FAIL`, toggled by `/admin/events/*`: `POST /events` answers 500.
    pub events_fail: AtomicBool,
    /// The live configuration: `ADDOND_CONFIG` at start, replaced by `POST /config`.
    pub config: Mutex<Value>,
    /// How many times `POST /config` replaced it.
    pub config_updates: AtomicU64,
    /// The last [`MAX_EVENTS`] events delivered to `POST /events`, oldest first.
    pub events: Mutex<VecDeque<Value>>,
    /// Events accepted since start (including those dropped from `events`).
    pub events_total: AtomicU64,
    /// Deliveries answered 500 on purpose.
    pub events_rejected: AtomicU64,
}

impl State {
    pub fn new(settings: Settings) -> Self {
        let config = settings.initial_config.clone();
        State {
            events_fail: AtomicBool::new(settings.events_fail),
            settings,
            started: Instant::now(),
            health_fail: AtomicBool::new(false),
            config: Mutex::new(config),
            config_updates: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            events_total: AtomicU64::new(0),
            events_rejected: AtomicU64::new(0),
        }
    }

    /// Milliseconds since start.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// A poisoned lock still holds usable state: a panicking handler must not take the addon down.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
