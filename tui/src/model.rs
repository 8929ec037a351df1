//! What the dashboard knows about the daemon's objects, read leniently from the JSON of
//! docs/api.md (a field the daemon drops or adds never breaks the dashboard). Every string
//! an addon or its operator chose goes through [`sanitize`] here, once, so the drawing code
//! only ever sees clean text.

use serde_json::Value;

use crate::sanitize::sanitize;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instance {
    pub ordinal: u32,
    pub host_port: Option<u16>,
    pub health: String,
    pub restarts: u64,
    /// Unix seconds.
    pub started_at: Option<i64>,
    pub last_error: Option<String>,
    /// `running`, `pending`, `exited`, `stopped`, `removing`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub plugin_id: Option<String>,
    pub service_type: String,
    pub image: String,
    pub port: Option<u16>,
    pub networks: Vec<String>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub replicas: u32,
    pub desired: String,
    pub phase: String,
    pub status: String,
    pub health: String,
    pub last_error: Option<String>,
    pub exit_code: Option<i64>,
    pub instances: Vec<Instance>,
}

fn text(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) => Some(sanitize(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

fn num(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

impl Service {
    /// A service object of the admin API; `None` without an `id`.
    pub fn from_json(v: &Value) -> Option<Service> {
        let id = text(v, "id")?;
        let instances =
            v.get("instances").and_then(Value::as_array).map(|list| list.iter().map(Instance::from_json).collect()).unwrap_or_default();
        let limits = v.get("resource_limits").unwrap_or(&Value::Null);
        Some(Service {
            name: text(v, "name").unwrap_or_else(|| id.clone()),
            id,
            plugin_id: text(v, "plugin_id"),
            service_type: text(v, "service_type").unwrap_or_default(),
            image: text(v, "image").unwrap_or_default(),
            port: num(v, "port").and_then(|p| u16::try_from(p).ok()),
            networks: v
                .get("networks")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(sanitize).collect())
                .unwrap_or_default(),
            memory: text(limits, "memory"),
            cpu: text(limits, "cpu"),
            replicas: num(v, "replicas").unwrap_or(0) as u32,
            desired: text(v, "desired").unwrap_or_default(),
            phase: text(v, "phase").unwrap_or_else(|| "?".into()),
            status: text(v, "status").unwrap_or_default(),
            health: text(v, "health_status").unwrap_or_else(|| "unknown".into()),
            last_error: text(v, "last_error"),
            exit_code: v.get("exit_code").and_then(Value::as_i64),
            instances,
        })
    }

    /// Instances that are up (the `running/desired` column).
    pub fn running(&self) -> usize {
        self.instances.iter().filter(|i| i.state == "running").count()
    }

    /// Host ports of every instance, in ordinal order.
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<(u32, u16)> = self.instances.iter().filter_map(|i| Some((i.ordinal, i.host_port?))).collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    pub fn restarts(&self) -> u64 {
        self.instances.iter().map(|i| i.restarts).sum()
    }

    /// When the longest-running instance that is up started (Unix seconds).
    pub fn up_since(&self) -> Option<i64> {
        self.instances.iter().filter(|i| i.state == "running").filter_map(|i| i.started_at).min()
    }

    /// The service's last error, or else the first instance error.
    pub fn error(&self) -> Option<&str> {
        self.last_error.as_deref().or_else(|| self.instances.iter().find_map(|i| i.last_error.as_deref()))
    }
}

impl Instance {
    pub fn from_json(v: &Value) -> Instance {
        Instance {
            ordinal: num(v, "ordinal").unwrap_or(0) as u32,
            host_port: num(v, "host_port").and_then(|p| u16::try_from(p).ok()),
            health: text(v, "health").unwrap_or_else(|| "unknown".into()),
            restarts: num(v, "restarts").unwrap_or(0),
            started_at: v.get("started_at").and_then(Value::as_str).and_then(parse_rfc3339).map(|(s, _)| s),
            last_error: text(v, "last_error"),
            state: text(v, "state").unwrap_or_default(),
        }
    }
}

/// `GET …/services/{id}/metrics`, the totals over the service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MetricsSample {
    pub cpu_percent: f64,
    pub memory_usage_mb: f64,
    pub memory_limit_mb: f64,
    pub memory_percent: f64,
    pub network_rx_mb: f64,
    pub network_tx_mb: f64,
}

impl MetricsSample {
    pub fn from_json(v: &Value) -> MetricsSample {
        let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        MetricsSample {
            cpu_percent: f("cpu_percent"),
            memory_usage_mb: f("memory_usage_mb"),
            memory_limit_mb: f("memory_limit_mb"),
            memory_percent: f("memory_percent"),
            network_rx_mb: f("network_rx_mb"),
            network_tx_mb: f("network_tx_mb"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub id: String,
    pub description: String,
    pub service_type: String,
}

impl Template {
    pub fn from_json(v: &Value) -> Option<Template> {
        Some(Template {
            id: text(v, "id")?,
            description: text(v, "description").or_else(|| text(v, "name")).unwrap_or_default(),
            service_type: text(v, "service_type").unwrap_or_default(),
        })
    }
}

/// One addon of the catalogue (`GET /api/addons`).
#[derive(Debug, Clone, PartialEq)]
pub struct Addon {
    pub name: String,
    pub version: String,
    pub category: String,
    pub description: String,
    pub image: Option<String>,
    /// `container` or `wasm` (a daemon before WebAssembly addons sends none: `container`).
    pub runtime: String,
    /// Instances it is installed as (`name@version`).
    pub installed: Vec<String>,
    /// Each installed instance with its deployments (loaded after the catalogue).
    pub instances: Vec<InstalledAddon>,
}

/// An installed addon instance as the addon view shows it: its version and phase, whether a
/// deployment is under way, and its history, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstalledAddon {
    pub instance: String,
    pub version: String,
    pub phase: String,
    pub deploying: bool,
    pub history: Vec<Deployment>,
    /// The installation it is an environment of (its `prod` instance's name).
    pub base: String,
    /// Its environment (`prod` unless installed into another).
    pub environment: String,
    /// Its instances' health: `healthy`, `degraded` (some), `unhealthy` or `none`.
    pub health: String,
}

/// One deployment (`GET /api/addons/{name}/deployments`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deployment {
    pub id: i64,
    pub kind: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at: String,
    pub who: String,
}

impl Deployment {
    pub fn from_json(v: &Value) -> Option<Deployment> {
        Some(Deployment {
            id: v.get("id")?.as_i64()?,
            kind: text(v, "kind").unwrap_or_default(),
            from_version: text(v, "from_version"),
            to_version: text(v, "to_version").unwrap_or_default(),
            outcome: text(v, "outcome").unwrap_or_default(),
            reason: text(v, "reason"),
            started_at: text(v, "started_at").unwrap_or_default(),
            who: text(v, "who").unwrap_or_default(),
        })
    }
}

/// How many of an instance view's instances are healthy, in a word.
fn health_of(view: &Value) -> String {
    let all: Vec<&Value> =
        view["services"].as_array().into_iter().flatten().flat_map(|s| s["instances"].as_array().into_iter().flatten()).collect();
    let healthy = all.iter().filter(|i| i["health"] == "healthy").count();
    match (healthy, all.len()) {
        (_, 0) => "none",
        (h, n) if h == n => "healthy",
        (0, _) => "unhealthy",
        _ => "degraded",
    }
    .to_string()
}

impl InstalledAddon {
    /// From `GET /api/addons/{instance}` and its `…/deployments` (oldest first there).
    pub fn from_json(view: &Value, history: &Value) -> Option<InstalledAddon> {
        let mut h: Vec<Deployment> = history.as_array().map(|a| a.iter().filter_map(Deployment::from_json).collect()).unwrap_or_default();
        h.reverse();
        Some(InstalledAddon {
            instance: text(view, "instance")?,
            version: text(view, "version").unwrap_or_default(),
            phase: text(view, "phase").unwrap_or_default(),
            deploying: view.get("deploying").and_then(Value::as_bool).unwrap_or(false),
            history: h,
            base: text(view, "base").or_else(|| text(view, "instance")).unwrap_or_default(),
            environment: text(view, "environment").unwrap_or_else(|| "prod".into()),
            health: health_of(view),
        })
    }
}

impl Addon {
    pub fn from_json(v: &Value) -> Option<Addon> {
        Some(Addon {
            name: text(v, "name")?,
            version: text(v, "version").unwrap_or_default(),
            category: text(v, "category").unwrap_or_default(),
            description: text(v, "description").unwrap_or_default(),
            image: text(v, "image"),
            runtime: text(v, "runtime").unwrap_or_else(|| "container".into()),
            installed: v
                .get("installed")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|i| text(i, "instance")).collect())
                .unwrap_or_default(),
            instances: Vec::new(),
        })
    }

    /// The catalogue reply: `{"addons": [...], "installed": [...]}` (or a bare array).
    pub fn list_from_json(data: &Value) -> Vec<Addon> {
        let list = data.get("addons").unwrap_or(data);
        list.as_array().map(|a| a.iter().filter_map(Addon::from_json).collect()).unwrap_or_default()
    }
}

/// One grant of an application (`GET /api/applications` → `grants`). The key itself is
/// never listed, only its prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub id: String,
    pub addon: String,
    pub key_prefix: String,
    pub status: String,
    /// `10/s burst 20`, or `-` without a limit of its own.
    pub rate: String,
    pub origins: Vec<String>,
}

/// An API consumer with its grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub organization: String,
    pub grants: Vec<Grant>,
}

impl Application {
    pub fn from_json(v: &Value) -> Option<Application> {
        let grants = v.get("grants").and_then(Value::as_array).map(|g| g.iter().filter_map(Grant::from_json).collect()).unwrap_or_default();
        Some(Application {
            name: text(v, "name").or_else(|| text(v, "id"))?,
            id: text(v, "id").unwrap_or_default(),
            organization: text(v, "organization").unwrap_or_default(),
            grants,
        })
    }

    pub fn list_from_json(data: &Value) -> Vec<Application> {
        let list = data.get("applications").unwrap_or(data);
        list.as_array().map(|a| a.iter().filter_map(Application::from_json).collect()).unwrap_or_default()
    }
}

impl Grant {
    pub fn from_json(v: &Value) -> Option<Grant> {
        let rl = v.get("rate_limit").unwrap_or(&Value::Null);
        let rate = match (rl.get("requests_per_second").and_then(Value::as_f64), rl.get("burst").and_then(Value::as_u64)) {
            (Some(r), Some(b)) => format!("{r}/s burst {b}"),
            (Some(r), None) => format!("{r}/s"),
            _ => "-".to_string(),
        };
        Some(Grant {
            id: text(v, "id")?,
            addon: text(v, "addon").unwrap_or_default(),
            key_prefix: text(v, "key_prefix").unwrap_or_default(),
            status: text(v, "status").unwrap_or_default(),
            rate,
            origins: v
                .get("allowed_origins")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(sanitize).collect())
                .unwrap_or_default(),
        })
    }
}

/// One event of the daemon's event log (`GET /api/events/stream`).
#[derive(Debug, Clone, PartialEq)]
pub struct AddonEvent {
    pub id: i64,
    pub name: String,
    pub source: String,
    /// Unix seconds.
    pub at: Option<i64>,
    /// The data as compact JSON, cut to 300 characters.
    pub data: String,
}

impl AddonEvent {
    pub fn from_json(v: &Value) -> Option<AddonEvent> {
        let data = match v.get("data") {
            None | Some(Value::Null) => String::new(),
            Some(d) => sanitize(&d.to_string()).chars().take(300).collect(),
        };
        Some(AddonEvent {
            id: v.get("id").and_then(Value::as_i64)?,
            name: text(v, "name").unwrap_or_else(|| "?".into()),
            source: text(v, "source").unwrap_or_default(),
            at: v.get("timestamp").and_then(Value::as_str).and_then(parse_rfc3339).map(|t| t.0),
            data,
        })
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into Unix seconds and nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos()))
}

/// `HH:MM:SS` (UTC) of a Unix time.
pub fn clock(unix: i64) -> String {
    let s = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A duration in its two largest units: `45s`, `12m05s`, `3h07m`, `4d02h`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// Megabytes as `512K`, `37.4M`, `1.2G`.
pub fn megabytes(mb: f64) -> String {
    if mb < 1.0 {
        format!("{:.0}K", mb * 1024.0)
    } else if mb < 1024.0 {
        format!("{mb:.1}M")
    } else {
        format!("{:.1}G", mb / 1024.0)
    }
}

/// A rate in bytes per second as `0B/s`, `12K/s`, `1.5M/s`.
pub fn rate(bytes_per_sec: f64) -> String {
    let b = bytes_per_sec.max(0.0);
    if b < 1024.0 {
        format!("{b:.0}B/s")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.0}K/s", b / 1024.0)
    } else {
        format!("{:.1}M/s", b / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_from_the_documented_object() {
        let v = json!({
            "id": "svc_3f9c", "name": "payments-api", "plugin_id": "payment-gateway", "service_type": "rest_api",
            "image": "addond-sample:latest", "port": 8080, "networks": ["addond"],
            "resource_limits": {"memory": "512m", "cpu": "0.5", "pids": 256},
            "replicas": 2, "desired": "started", "phase": "Started", "status": "partial", "health_status": "unhealthy",
            "host_port": 8000, "last_error": null, "exit_code": null, "new_field": [1, 2],
            "instances": [
                {"ordinal": 1, "host_port": 8003, "health": "unhealthy", "restarts": 2, "started_at": "2026-11-21T23:40:00Z",
                 "last_error": "health check failed", "state": "running"},
                {"ordinal": 0, "host_port": 8000, "health": "healthy", "restarts": 1, "started_at": "2026-11-21T23:30:00Z", "state": "running"}
            ]
        });
        let s = Service::from_json(&v).unwrap();
        assert_eq!((s.name.as_str(), s.plugin_id.as_deref(), s.replicas, s.running()), ("payments-api", Some("payment-gateway"), 2, 2));
        assert_eq!(s.ports(), vec![8000, 8003]);
        assert_eq!(s.restarts(), 3);
        assert_eq!(s.memory.as_deref(), Some("512m"));
        assert_eq!(s.error(), Some("health check failed"));
        assert_eq!(s.up_since(), parse_rfc3339("2026-11-21T23:30:00Z").map(|t| t.0));
        assert!(Service::from_json(&json!({"name": "no id"})).is_none());
    }

    #[test]
    fn strings_are_sanitised_on_the_way_in() {
        let v = json!({"id": "svc_1", "name": "evil\u{1b}[2J\u{1b}]0;t\u{7}name", "last_error": "boom\u{1b}[31m\nnext",
                       "instances": [{"ordinal": 0, "last_error": "\u{9b}1A"}]});
        let s = Service::from_json(&v).unwrap();
        assert_eq!(s.name, "evilname");
        assert_eq!(s.last_error.as_deref(), Some("boom next"));
        assert_eq!(s.instances[0].last_error, None);
    }

    #[test]
    fn applications_and_grants() {
        let v = json!([{"id": "app_1", "name": "shop-front", "organization": "ACME", "grants": [
            {"id": "grant_1", "addon": "payments", "key_prefix": "ak_abc_…", "status": "active",
             "rate_limit": {"requests_per_second": 10.0, "burst": 20}, "allowed_origins": ["https://shop.example"]},
            {"id": "grant_2", "addon": "mailer", "key_prefix": "ak_def_…", "status": "revoked", "rate_limit": null}
        ]}]);
        let a = Application::list_from_json(&v);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].name.as_str(), a[0].grants.len()), ("shop-front", 2));
        assert_eq!(a[0].grants[0].rate, "10/s burst 20");
        assert_eq!(a[0].grants[1].rate, "-");
        assert_eq!(a[0].grants[0].origins, ["https://shop.example"]);
    }

    #[test]
    fn addon_events() {
        let e = AddonEvent::from_json(&json!({"id": 42, "name": "payment.completed", "source": "payment",
            "timestamp": "2026-11-22T00:01:02.345Z", "data": {"order": "A\u{1b}[2J1"}}))
        .unwrap();
        assert_eq!((e.id, e.name.as_str(), e.source.as_str()), (42, "payment.completed", "payment"));
        // JSON escapes the control character: shown as text, harmless.
        assert_eq!(e.data, r#"{"order":"A\u001b[2J1"}"#);
        assert!(!e.data.chars().any(char::is_control));
        assert_eq!(e.at, parse_rfc3339("2026-11-22T00:01:02Z").map(|t| t.0));
        assert!(AddonEvent::from_json(&json!({"name": "no id"})).is_none());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some((951_868_800, 0)));
        assert_eq!(parse_rfc3339("2026-11-21T23:40:01.5Z"), Some((1_795_304_401, 500_000_000)));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00.123456789Z"), Some((1_709_208_000, 123_456_789)));
        assert_eq!(parse_rfc3339("2024-02-29T13:00:00+01:00"), Some((1_709_208_000, 0)));
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn formats() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m05s");
        assert_eq!(duration(3 * 3600 + 7 * 60), "3h07m");
        assert_eq!(duration(4 * 86_400 + 2 * 3600), "4d02h");
        assert_eq!(megabytes(0.5), "512K");
        assert_eq!(megabytes(37.44), "37.4M");
        assert_eq!(megabytes(2048.0), "2.0G");
        assert_eq!(rate(100.0), "100B/s");
        assert_eq!(rate(4096.0), "4K/s");
        assert_eq!(clock(3661), "01:01:01");
    }
}

/// The Docker engine as the daemon sees it (`docker` in `/health`, `addond_docker_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerState {
    Reachable,
    /// It accepts connections but does not answer in time: a hung engine.
    Unresponsive,
    Unreachable,
}

impl DockerState {
    /// The daemon's word for it; anything unknown counts as unreachable.
    pub fn parse(s: &str) -> DockerState {
        match s {
            "reachable" => DockerState::Reachable,
            "unresponsive" => DockerState::Unresponsive,
            _ => DockerState::Unreachable,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DockerState::Reachable => "reachable",
            DockerState::Unresponsive => "unresponsive",
            DockerState::Unreachable => "unreachable",
        }
    }
}
