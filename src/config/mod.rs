//! Daemon configuration: the TOML file, `ADDOND_<SECTION>_<KEY>` environment overrides,
//! dev-mode paths and validation. Every key has a default and is documented in
//! `config.example.toml`; an unknown key or a bad value is refused at start with the key
//! and the reason, because a silently ignored typo on a production box is worse than a
//! daemon that does not start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod platform;
pub use platform::*;

/// Default location of the system configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/addond/config.toml";
/// Directory dev mode keeps everything in, relative to the working directory.
pub const DEV_DIR: &str = ".addond";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), reason: reason.into() }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub api: ApiConfig,
    pub ports: PortsConfig,
    pub docker: DockerConfig,
    pub sandbox: SandboxConfig,
    pub limits: LimitsConfig,
    pub health: HealthConfig,
    pub restart: RestartConfig,
    pub reconcile: ReconcileConfig,
    pub templates: TemplatesConfig,
    pub addons: AddonsConfig,
    pub deploy: DeployConfig,
    pub widgets: WidgetsConfig,
    pub gateway: GatewayConfig,
    pub events: EventsConfig,
    pub addon_api: AddonApiConfig,
    pub http: HttpConfig,
    pub build: BuildConfig,
    pub metrics: MetricsConfig,
    pub notify: NotifyConfig,
    pub wasm: WasmConfig,
    pub environments: EnvironmentsConfig,
    pub graphql: GraphqlConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Holds the SQLite database, the lock file and the volume directories.
    pub data_dir: PathBuf,
    /// The admin API socket; the only way to manage the daemon.
    pub socket_path: PathBuf,
    /// Members of this group may use the admin socket (besides root and the daemon's uid).
    pub socket_group: String,
    /// Default tracing filter when `RUST_LOG` is not set.
    pub log_level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Request bodies above this are answered 413 before they are parsed.
    pub max_body_bytes: usize,
    /// Upper bound for `?timeout=` on `?wait=` requests.
    pub max_wait_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PortsConfig {
    /// First host port handed to addon instances (inclusive).
    pub range_start: u16,
    /// Last host port handed to addon instances (inclusive).
    pub range_end: u16,
    /// Host address container ports are published on; loopback unless the operator opts out.
    pub publish_address: IpAddr,
    /// Where the daemon itself reaches instances (health checks, actions, widgets, event
    /// deliveries, passthrough).
    pub instance_address: InstanceAddress,
}

/// How the daemon reaches an instance.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InstanceAddress {
    /// The container's own address on its addon network: no hop through Docker's userland
    /// port proxy, which on a small host costs as much CPU as the call itself.
    Container,
    /// The published host port, like any other client.
    HostPort,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Docker engine endpoint: `unix:///path` (only Unix sockets are supported).
    pub host: String,
    /// Request timeout for Docker API calls, in seconds.
    pub timeout_seconds: u64,
    /// Grace given to a container on stop before it is killed, in seconds.
    pub stop_timeout_seconds: u64,
    /// What a service names in `networks` to get a network with a route out. Not a Docker
    /// network any more: each addon instance and each plain service gets a network of its own
    /// (see `subnet_pool`); the name only says which kind.
    pub network: String,
    /// No longer used (the single shared bridge it sized is gone); accepted so that older
    /// config files still load. Networks come from `subnet_pool`.
    pub subnet: String,
    /// What a service names in `networks` to get an internal network (no route out); addons
    /// without the `network.internet` permission always get this kind.
    pub isolated_network: String,
    /// No longer used, like `subnet`.
    pub isolated_subnet: String,
    /// IPv4 range the per-addon and per-service networks take their subnets from. Subnets
    /// that overlap any existing Docker network or host route are skipped. The firewall
    /// table that keeps them apart is named after it (`firewall::Table`).
    pub subnet_pool: String,
    /// Prefix length of each network's subnet within `subnet_pool` (24: 253 containers).
    pub subnet_prefix: u8,
    /// Timeout for pulling a missing image, in seconds.
    pub pull_timeout_seconds: u64,
    /// How long the engine's `/_ping` may take before the engine counts as unresponsive.
    pub ping_timeout_seconds: f64,
    /// How long a request handler waits on a Docker call whose answer it needs (image
    /// inspect, logs, stats) before answering 503 `docker_unavailable`.
    pub call_timeout_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// uid:gid every container runs as; must not be root.
    pub user: String,
    /// Size of the writable tmpfs mounted at /tmp.
    pub tmpfs_size: String,
    /// Docker json-file log rotation, so a chatty addon cannot fill the disk.
    pub log_max_size: String,
    pub log_max_files: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Defaults applied when a service names no limit.
    pub memory: String,
    pub cpu: f64,
    pub pids: i64,
    /// Ceilings a service may ask for; empty / 0 means the host's memory and CPU count.
    pub max_memory: String,
    pub max_cpu: f64,
    pub max_pids: i64,
    pub max_replicas: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub retries: u32,
    pub start_period_seconds: f64,
    /// While an instance has not yet passed its first check, it is probed this often, so a
    /// fresh deploy becomes visible in milliseconds rather than a full interval later.
    pub startup_probe_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    pub backoff_base_seconds: f64,
    pub backoff_max_seconds: f64,
    /// A restart streak is forgotten after an instance has been healthy this long.
    pub reset_after_seconds: f64,
    /// This many failures (exits and unhealthy verdicts) within `failure_window_seconds`
    /// put a service in `Failed`; every failure but the last is restarted.
    pub max_failures: u32,
    pub failure_window_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Full resync of every service against Docker, besides the event-driven ones.
    pub interval_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// Image used by `templates/{id}/create` when the request names none.
    pub image: String,
    /// A `docker save` archive loaded when Docker lacks `image` at a template create (the
    /// packages install the sample image's here); empty: none.
    pub image_archive: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AddonsConfig {
    /// Largest manifest accepted by `POST /api/addons/register`.
    pub max_manifest_bytes: usize,
    /// Time an action may run before the caller gets 504 (a manifest may set its own).
    pub execute_timeout_seconds: f64,
    /// Consecutive failures that open an instance's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps traffic away before one trial call.
    pub breaker_cooldown_seconds: f64,
    /// How long a live config push (`POST /config` on each instance) may take.
    pub config_push_timeout_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetsConfig {
    /// How long a rendered widget is served from memory.
    pub cache_ttl_seconds: f64,
    /// Most rendered widgets kept in memory.
    pub cache_max_entries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The web platform's entry point; serves only gateway routes, never the admin API.
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    /// Request bodies above this are refused with 413 (passthrough included).
    pub max_body_bytes: u64,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs); from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
    /// Failed authentications allowed per source address per minute before 429 (IPv6
    /// sources count per /64).
    pub failed_auth_per_minute: u32,
    /// Failed authentications allowed per minute through one trusted proxy, whatever
    /// client addresses its `X-Forwarded-For` names, so rotating that header hits a limit.
    pub failed_auth_per_proxy_per_minute: u32,
    /// After a key rotation the old key keeps working this long (seconds).
    pub rotation_grace_seconds: f64,
    /// Worker threads serving the gateway, each a whole request start to end (0: one per
    /// CPU core the daemon may use).
    pub workers: usize,
    /// `Host` values the MCP endpoint (`/mcp`) accepts, as `host` or `host:port`; empty:
    /// the loopback names and the listen address only (a guard against DNS rebinding).
    pub mcp_allowed_hosts: Vec<String>,
    /// When set (`addons.example.com`), a request to `<addon>.<environment>.<base_domain>`
    /// is for that environment of the addon; empty: environments only by the key's grant.
    pub base_domain: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events older than this are removed (days).
    pub retention_days: f64,
    /// At most this many events are kept; the oldest go first.
    pub retention_max_events: u64,
    /// Deliveries of one event to one subscriber before it is dead-lettered.
    pub max_attempts: u32,
    /// Backoff between delivery attempts: base, doubling, capped (seconds).
    pub retry_base_seconds: f64,
    pub retry_max_seconds: f64,
    /// Time a subscriber's `POST /events` may take.
    pub delivery_timeout_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AddonApiConfig {
    /// Port of the addon API on each addon network's gateway address (0: any free port).
    pub port: u16,
    /// Storage quotas per installed addon instance.
    pub kv_max_value_bytes: usize,
    pub kv_max_keys: u32,
}

/// Timeouts and connection budgets of the daemon's three HTTP listeners (the admin socket,
/// the gateway, the addon API). A slow or idle client holds a connection (a file
/// descriptor) until one of these ends it, so they bound what a flood can hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A request's head (request line and headers) must arrive within this many seconds of
    /// its first byte; else the connection is closed.
    pub header_read_timeout_seconds: f64,
    /// A request's body must arrive within this many seconds of its head; else 408.
    pub body_read_timeout_seconds: f64,
    /// A keep-alive connection with no request for this many seconds is closed.
    pub keep_alive_idle_seconds: f64,
    /// Most connections the gateway holds at once; at the cap the oldest idle one is closed
    /// for a new one (scaled down at start when the file-descriptor limit is lower).
    pub gateway_max_connections: usize,
    /// Most connections the admin socket holds at once (its own budget: a flooded gateway
    /// never takes it).
    pub admin_max_connections: usize,
    /// Most connections the addon API holds at once, over all its addresses.
    pub addon_api_max_connections: usize,
    /// Most connections the metrics listener (`metrics.listen`) holds at once.
    pub metrics_max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_seconds: 10.0,
            body_read_timeout_seconds: 60.0,
            keep_alive_idle_seconds: 60.0,
            gateway_max_connections: 8192,
            admin_max_connections: 1024,
            addon_api_max_connections: 512,
            metrics_max_connections: 64,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_days: 7.0,
            retention_max_events: 1_000_000,
            max_attempts: 10,
            retry_base_seconds: 1.0,
            retry_max_seconds: 300.0,
            delivery_timeout_seconds: 10.0,
        }
    }
}

impl Default for AddonApiConfig {
    fn default() -> Self {
        AddonApiConfig { port: 7081, kv_max_value_bytes: 64 * 1024, kv_max_keys: 1000 }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7080)),
            max_body_bytes: 10 * 1024 * 1024,
            trusted_proxies: Vec::new(),
            failed_auth_per_minute: 30,
            failed_auth_per_proxy_per_minute: 600,
            rotation_grace_seconds: 0.0,
            workers: 0,
            mcp_allowed_hosts: Vec::new(),
            base_domain: String::new(),
        }
    }
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address into (network, prefix length).
pub fn parse_any_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse::<std::net::IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip: std::net::IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Whether `addr` falls in the CIDR `(net, len)`.
pub fn cidr_contains(net: std::net::IpAddr, len: u8, addr: std::net::IpAddr) -> bool {
    match (net, addr) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl Default for AddonsConfig {
    fn default() -> Self {
        AddonsConfig {
            max_manifest_bytes: 64 * 1024,
            execute_timeout_seconds: 30.0,
            breaker_failures: 5,
            breaker_cooldown_seconds: 10.0,
            config_push_timeout_seconds: 5.0,
        }
    }
}

impl Default for WidgetsConfig {
    fn default() -> Self {
        WidgetsConfig { cache_ttl_seconds: 300.0, cache_max_entries: 10_000 }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: PathBuf::from("/var/lib/addond"),
            socket_path: PathBuf::from("/run/addond/addond.sock"),
            socket_group: "addond".into(),
            log_level: "info".into(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { max_body_bytes: 1024 * 1024, max_wait_seconds: 600 }
    }
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            range_start: 8000,
            range_end: 9000,
            publish_address: IpAddr::from([127, 0, 0, 1]),
            instance_address: InstanceAddress::Container,
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".into(),
            timeout_seconds: 120,
            stop_timeout_seconds: 10,
            network: "addond".into(),
            subnet: "172.20.0.0/16".into(),
            isolated_network: "addond_isolated".into(),
            isolated_subnet: "172.21.0.0/16".into(),
            subnet_pool: "172.20.0.0/14".into(),
            subnet_prefix: 24,
            pull_timeout_seconds: 300,
            ping_timeout_seconds: 2.0,
            call_timeout_seconds: 5.0,
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig { user: "65534:65534".into(), tmpfs_size: "64m".into(), log_max_size: "10m".into(), log_max_files: 3 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory: "512m".into(),
            cpu: 0.5,
            pids: 256,
            max_memory: String::new(),
            max_cpu: 0.0,
            max_pids: 4096,
            max_replicas: 64,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval_seconds: 30.0, timeout_seconds: 10.0, retries: 3, start_period_seconds: 0.0, startup_probe_ms: 25 }
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            backoff_base_seconds: 10.0,
            backoff_max_seconds: 300.0,
            reset_after_seconds: 600.0,
            max_failures: 5,
            failure_window_seconds: 1800.0,
        }
    }
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig { interval_seconds: 30.0 }
    }
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        TemplatesConfig { image: "addond-sample:latest".into(), image_archive: "/usr/share/addond/addond-sample.tar.gz".into() }
    }
}

/// Parses a Docker-style size (`512m`, `1g`, `65536`, `64k`) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        c if c.is_ascii_digit() => (s, 1),
        _ => return None,
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let v: f64 = num.parse().ok()?;
    let bytes = v * mult as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses an IPv4 CIDR (`172.20.0.0/16`).
pub fn parse_cidr(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 30).then_some((ip, len))
}

/// The netmask of an IPv4 prefix length, as a number.
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// Total host memory in bytes, from /proc/meminfo.
pub fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30)
}

pub fn host_cpus() -> f64 {
    std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
}

impl Config {
    /// Loads the config: file (if `path` exists or was named explicitly), then environment
    /// overrides, then validation. In dev mode the default paths move under `./.addond/`.
    pub fn load(path: Option<&Path>, dev: bool) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, dev, &env)
    }

    pub fn load_with_env(path: Option<&Path>, dev: bool, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let default_path = if dev { PathBuf::from(DEV_DIR).join("config.toml") } else { PathBuf::from(DEFAULT_CONFIG_PATH) };
        let (file_path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_path, false),
        };
        let mut table = match std::fs::read_to_string(&file_path) {
            Ok(text) => text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse { path: file_path.display().to_string(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => toml::Table::new(),
            Err(source) => return Err(ConfigError::Read { path: file_path, source }),
        };
        if dev {
            let base = std::env::current_dir().map_err(|e| invalid("daemon.data_dir", e.to_string()))?.join(DEV_DIR);
            let daemon = table.entry("daemon").or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(d) = daemon {
                d.entry("data_dir").or_insert_with(|| base.join("data").display().to_string().into());
                d.entry("socket_path").or_insert_with(|| base.join("addond.sock").display().to_string().into());
            }
        }
        apply_env(&mut table, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            invalid(&key, inner.trim().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values that would make the daemon misbehave later, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, env) in self.environments.pipeline.iter().enumerate() {
            check_environment(env).map_err(|m| invalid(&format!("environments.pipeline[{i}]"), m))?;
            if self.environments.pipeline[..i].contains(env) {
                return Err(invalid(&format!("environments.pipeline[{i}]"), format!("`{env}` is listed twice")));
            }
        }
        let bd = &self.gateway.base_domain;
        if !bd.is_empty()
            && (bd.starts_with('.') || bd.ends_with('.') || bd.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')))
        {
            return Err(invalid("gateway.base_domain", format!("`{bd}` is not a domain name like addons.example.com")));
        }
        let g = &self.graphql;
        for (key, v) in [("graphql.max_depth", g.max_depth), ("graphql.max_complexity", g.max_complexity)] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let p = &self.ports;
        if p.range_start == 0 || p.range_start > p.range_end {
            return Err(invalid("ports.range_start", format!("must be between 1 and ports.range_end ({})", p.range_end)));
        }
        if p.range_start < 1024 {
            return Err(invalid("ports.range_start", "ports below 1024 are privileged; use 1024 or more"));
        }
        if !self.docker.host.starts_with("unix://") {
            return Err(invalid("docker.host", "only unix:///path/to/docker.sock is supported"));
        }
        for (key, val) in [("docker.subnet", &self.docker.subnet), ("docker.isolated_subnet", &self.docker.isolated_subnet)] {
            if parse_cidr(val).is_none() {
                return Err(invalid(key, format!("`{val}` is not an IPv4 CIDR like 172.20.0.0/16")));
            }
        }
        if self.docker.subnet == self.docker.isolated_subnet {
            return Err(invalid("docker.isolated_subnet", "must differ from docker.subnet"));
        }
        for (key, val) in [("docker.network", &self.docker.network), ("docker.isolated_network", &self.docker.isolated_network)] {
            if val.is_empty() || !val.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                return Err(invalid(key, "use letters, digits, `_`, `-` or `.`"));
            }
        }
        if self.docker.network == self.docker.isolated_network {
            return Err(invalid("docker.isolated_network", "must differ from docker.network"));
        }
        let pool = &self.docker.subnet_pool;
        let Some((pool_ip, pool_len)) = parse_cidr(pool).filter(|(_, l)| *l >= 8) else {
            return Err(invalid("docker.subnet_pool", format!("`{pool}` must be an IPv4 range like 172.20.0.0/14 (prefix 8 to 30)")));
        };
        if u32::from(pool_ip) & !prefix_mask(pool_len) != 0 {
            return Err(invalid(
                "docker.subnet_pool",
                format!(
                    "`{pool}` must be written from its first address, like {}/{pool_len}",
                    std::net::Ipv4Addr::from(u32::from(pool_ip) & prefix_mask(pool_len))
                ),
            ));
        }
        let prefix = self.docker.subnet_prefix;
        if prefix < pool_len || prefix > 28 {
            return Err(invalid("docker.subnet_prefix", format!("must be between the pool's own prefix ({pool_len}) and 28")));
        }
        if self.docker.timeout_seconds == 0 {
            return Err(invalid("docker.timeout_seconds", "must be at least 1"));
        }
        for (key, v) in [
            ("docker.ping_timeout_seconds", self.docker.ping_timeout_seconds),
            ("docker.call_timeout_seconds", self.docker.call_timeout_seconds),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= self.docker.timeout_seconds as f64) {
                return Err(invalid(
                    key,
                    format!("must be more than 0 and at most docker.timeout_seconds ({})", self.docker.timeout_seconds),
                ));
            }
        }
        let user_ok = self
            .sandbox
            .user
            .split(':')
            .map(|part| part.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map(|ids| (1..=2).contains(&ids.len()) && ids[0] != 0)
            .unwrap_or(false);
        if !user_ok {
            return Err(invalid("sandbox.user", "must be a numeric non-root uid[:gid], like 65534:65534"));
        }
        for (key, val) in [
            ("sandbox.tmpfs_size", &self.sandbox.tmpfs_size),
            ("sandbox.log_max_size", &self.sandbox.log_max_size),
            ("limits.memory", &self.limits.memory),
        ] {
            if parse_size(val).is_none() {
                return Err(invalid(key, format!("`{val}` is not a size like 64m or 1g")));
            }
        }
        if !self.limits.max_memory.is_empty() && parse_size(&self.limits.max_memory).is_none() {
            return Err(invalid("limits.max_memory", "not a size like 8g (or empty for the host's memory)"));
        }
        if parse_size(&self.limits.memory).unwrap_or(0) < 6 * 1024 * 1024 {
            return Err(invalid("limits.memory", "Docker needs at least 6m"));
        }
        if !(self.limits.cpu > 0.0 && self.limits.cpu.is_finite()) {
            return Err(invalid("limits.cpu", "must be a positive number of CPUs, like 0.5"));
        }
        if self.limits.max_cpu < 0.0 || !self.limits.max_cpu.is_finite() {
            return Err(invalid("limits.max_cpu", "must be 0 (host CPUs) or a positive number"));
        }
        if self.limits.pids < 1 || self.limits.pids > self.limits.max_pids {
            return Err(invalid("limits.pids", format!("must be between 1 and limits.max_pids ({})", self.limits.max_pids)));
        }
        if self.limits.max_replicas == 0 || self.limits.max_replicas > 1000 {
            return Err(invalid("limits.max_replicas", "must be between 1 and 1000"));
        }
        let h = &self.health;
        for (key, v) in [("health.interval_seconds", h.interval_seconds), ("health.timeout_seconds", h.timeout_seconds)] {
            if !(v > 0.0 && v <= 3600.0) {
                return Err(invalid(key, "must be more than 0 and at most 3600"));
            }
        }
        if !(0.0..=3600.0).contains(&h.start_period_seconds) {
            return Err(invalid("health.start_period_seconds", "must be between 0 and 3600"));
        }
        if h.retries == 0 || h.retries > 100 {
            return Err(invalid("health.retries", "must be between 1 and 100"));
        }
        if h.startup_probe_ms == 0 || h.startup_probe_ms > 10_000 {
            return Err(invalid("health.startup_probe_ms", "must be between 1 and 10000"));
        }
        let r = &self.restart;
        if !(r.backoff_base_seconds > 0.0 && r.backoff_base_seconds <= r.backoff_max_seconds) {
            return Err(invalid("restart.backoff_base_seconds", "must be more than 0 and at most restart.backoff_max_seconds"));
        }
        if r.max_failures == 0 {
            return Err(invalid("restart.max_failures", "must be at least 1"));
        }
        for (key, v) in [
            ("restart.reset_after_seconds", r.reset_after_seconds),
            ("restart.failure_window_seconds", r.failure_window_seconds),
            ("reconcile.interval_seconds", self.reconcile.interval_seconds),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(key, "must be a positive number of seconds"));
            }
        }
        if self.api.max_body_bytes < 1024 {
            return Err(invalid("api.max_body_bytes", "must be at least 1024"));
        }
        let a = &self.addons;
        if a.max_manifest_bytes < 1024 || a.max_manifest_bytes > self.api.max_body_bytes {
            return Err(invalid("addons.max_manifest_bytes", "must be between 1024 and api.max_body_bytes"));
        }
        if a.breaker_failures == 0 {
            return Err(invalid("addons.breaker_failures", "must be at least 1"));
        }
        if !(1..=64).contains(&self.deploy.surge) {
            return Err(invalid("deploy.surge", "must be between 1 and 64"));
        }
        if !(1..=4096).contains(&self.wasm.max_concurrent) {
            return Err(invalid("wasm.max_concurrent", "must be between 1 and 4096"));
        }
        if self.wasm.fuel_per_call == 0 {
            return Err(invalid("wasm.fuel_per_call", "must be at least 1"));
        }
        if self.wasm.max_module_bytes < 64 {
            return Err(invalid("wasm.max_module_bytes", "must be at least 64 bytes"));
        }
        if self.wasm.max_memory_bytes < 65536 || self.wasm.max_memory_bytes > (4 << 30) {
            return Err(invalid("wasm.max_memory_bytes", "must be between 64 KiB (one page) and 4 GiB"));
        }
        if self.wasm.default_memory_bytes < 65536 || self.wasm.default_memory_bytes > self.wasm.max_memory_bytes {
            return Err(invalid("wasm.default_memory_bytes", "must be between 64 KiB and wasm.max_memory_bytes"));
        }
        if self.deploy.keep_deployments == 0 {
            return Err(invalid("deploy.keep_deployments", "must be at least 1 (the running deployment)"));
        }
        for (key, v) in [
            ("addons.execute_timeout_seconds", a.execute_timeout_seconds),
            ("addons.breaker_cooldown_seconds", a.breaker_cooldown_seconds),
            ("addons.config_push_timeout_seconds", a.config_push_timeout_seconds),
            ("deploy.health_timeout_seconds", self.deploy.health_timeout_seconds),
            ("deploy.drain_timeout_seconds", self.deploy.drain_timeout_seconds),
            ("widgets.cache_ttl_seconds", self.widgets.cache_ttl_seconds),
        ] {
            if !(v > 0.0 && v <= 86_400.0) {
                return Err(invalid(key, "must be more than 0 and at most 86400 seconds"));
            }
        }
        for (i, p) in self.gateway.trusted_proxies.iter().enumerate() {
            if parse_any_cidr(p).is_none() {
                return Err(invalid(&format!("gateway.trusted_proxies[{i}]"), format!("`{p}` is not an address or CIDR like 10.0.0.0/8")));
            }
        }
        if self.gateway.max_body_bytes < 1024 {
            return Err(invalid("gateway.max_body_bytes", "must be at least 1024"));
        }
        if !(0.0..=30.0 * 86_400.0).contains(&self.gateway.rotation_grace_seconds) {
            return Err(invalid("gateway.rotation_grace_seconds", "must be between 0 and 2592000 (30 days)"));
        }
        if self.gateway.workers > 256 {
            return Err(invalid("gateway.workers", "must be at most 256 (0: one per CPU core)"));
        }
        let e = &self.events;
        if e.retention_days.is_nan() || e.retention_days <= 0.0 {
            return Err(invalid("events.retention_days", "must be more than 0"));
        }
        if e.retention_max_events == 0 {
            return Err(invalid("events.retention_max_events", "must be at least 1"));
        }
        if e.max_attempts == 0 {
            return Err(invalid("events.max_attempts", "must be at least 1"));
        }
        if !(e.retry_base_seconds > 0.0 && e.retry_base_seconds <= e.retry_max_seconds) {
            return Err(invalid("events.retry_base_seconds", "must be more than 0 and at most events.retry_max_seconds"));
        }
        if e.delivery_timeout_seconds.is_nan() || e.delivery_timeout_seconds <= 0.0 {
            return Err(invalid("events.delivery_timeout_seconds", "must be more than 0"));
        }
        let b = &self.build;
        if b.max_context_bytes < 1024 {
            return Err(invalid("build.max_context_bytes", "must be at least 1024"));
        }
        if !(b.timeout_seconds > 0.0 && b.timeout_seconds <= 86_400.0) {
            return Err(invalid("build.timeout_seconds", "must be more than 0 and at most 86400 seconds"));
        }
        // Docker's build API takes the memory limit as a 32-bit number of bytes.
        match parse_size(&b.memory) {
            Some(m) if (6 * 1024 * 1024..=i32::MAX as u64).contains(&m) => {}
            _ => return Err(invalid("build.memory", format!("`{}` must be a size from 6m to 2047m, like 1g", b.memory))),
        }
        if !(b.cpus > 0.0 && b.cpus <= 1024.0) {
            return Err(invalid("build.cpus", "must be a positive number of CPUs, like 1.0"));
        }
        if b.log_lines == 0 || b.log_lines > 10_000 {
            return Err(invalid("build.log_lines", "must be between 1 and 10000"));
        }
        if self.addon_api.kv_max_value_bytes == 0 {
            return Err(invalid("addon_api.kv_max_value_bytes", "must be at least 1"));
        }
        if self.addon_api.kv_max_keys == 0 {
            return Err(invalid("addon_api.kv_max_keys", "must be at least 1"));
        }
        let h = &self.http;
        for (key, v) in [
            ("http.header_read_timeout_seconds", h.header_read_timeout_seconds),
            ("http.body_read_timeout_seconds", h.body_read_timeout_seconds),
            ("http.keep_alive_idle_seconds", h.keep_alive_idle_seconds),
        ] {
            if !(0.1..=86_400.0).contains(&v) {
                return Err(invalid(key, "must be between 0.1 and 86400 seconds"));
            }
        }
        for (key, v) in [
            ("http.gateway_max_connections", h.gateway_max_connections),
            ("http.admin_max_connections", h.admin_max_connections),
            ("http.addon_api_max_connections", h.addon_api_max_connections),
        ] {
            if !(8..=1_000_000).contains(&v) {
                return Err(invalid(key, "must be between 8 and 1000000 connections"));
            }
        }
        if !(1..=128).contains(&h.metrics_max_connections) {
            // Taken from the descriptors kept beside the budgets, so it stays small.
            return Err(invalid("http.metrics_max_connections", "must be between 1 and 128 connections"));
        }
        if self.templates.image.trim().is_empty() {
            return Err(invalid("templates.image", "must name an image"));
        }
        if !self.metrics.listen.trim().is_empty() {
            let Some(addr) = self.metrics.listen_addr() else {
                return Err(invalid(
                    "metrics.listen",
                    format!("`{}` is not an address and port like 127.0.0.1:9464 (empty: off)", self.metrics.listen),
                ));
            };
            if !addr.ip().is_loopback() && !self.metrics.allow_non_loopback {
                return Err(invalid(
                    "metrics.listen",
                    format!("`{addr}` is not a loopback address; the series need no key, so listen on 127.0.0.1 or ::1, or set metrics.allow_non_loopback = true to serve them to other hosts"),
                ));
            }
        }
        self.validate_notify()
    }

    fn validate_notify(&self) -> Result<(), ConfigError> {
        let n = &self.notify;
        if !n.webhook_url.is_empty() {
            if n.webhook_url.starts_with("https://") {
                return Err(invalid(
                    "notify.webhook_url",
                    "https:// is not supported (addond has no TLS client); use an http:// URL, such as a receiver or relay on this host",
                ));
            }
            let ok = n.webhook_url.starts_with("http://")
                && n.webhook_url.parse::<hyper::Uri>().ok().and_then(|u| u.host().map(|h| !h.is_empty())).unwrap_or(false);
            if !ok {
                return Err(invalid("notify.webhook_url", format!("`{}` is not a URL like http://127.0.0.1:9000/hook", n.webhook_url)));
            }
        }
        if !(n.timeout_seconds > 0.0 && n.timeout_seconds <= 300.0) {
            return Err(invalid("notify.timeout_seconds", "must be more than 0 and at most 300"));
        }
        if n.retries > 100 {
            return Err(invalid("notify.retries", "must be at most 100"));
        }
        if !(n.retry_base_seconds > 0.0 && n.retry_base_seconds <= n.retry_max_seconds && n.retry_max_seconds <= 86_400.0) {
            return Err(invalid("notify.retry_base_seconds", "must be more than 0 and at most notify.retry_max_seconds (at most 86400)"));
        }
        if !(1..=100_000).contains(&n.queue_size) {
            return Err(invalid("notify.queue_size", "must be between 1 and 100000"));
        }
        Ok(())
    }

    /// Ceiling for a service's memory limit in bytes.
    pub fn max_memory_bytes(&self) -> u64 {
        parse_size(&self.limits.max_memory).unwrap_or_else(host_memory_bytes)
    }

    pub fn max_cpu(&self) -> f64 {
        if self.limits.max_cpu > 0.0 {
            self.limits.max_cpu
        } else {
            host_cpus()
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

const SECTIONS: &[&str] = &[
    "daemon",
    "api",
    "ports",
    "docker",
    "sandbox",
    "limits",
    "health",
    "restart",
    "reconcile",
    "templates",
    "addons",
    "widgets",
    "gateway",
    "events",
    "addon_api",
    "http",
    "metrics",
    "notify",
];

/// Applies `ADDOND_<SECTION>_<KEY>=value` overrides. The value is read as a TOML literal
/// when it parses as one (numbers, booleans), else as a string. Variables that do not start
/// with a known section (like `ADDOND_SOCKET`, read by the clients) are left alone.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("ADDOND_") else { continue };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        // A string-typed key (e.g. a path that happens to parse as a number) stays a string:
        // decided by the default config's type for that key.
        let defaults = toml::Value::try_from(Config::default()).map_err(|e| invalid(name, e.to_string()))?;
        let default_val = defaults.get(section).and_then(|s| s.get(key));
        let Some(default_val) = default_val else {
            return Err(invalid(&format!("{section}.{key}"), format!("unknown key (from environment variable {name})")));
        };
        let val = match (default_val, parsed) {
            (toml::Value::String(_), toml::Value::String(s)) => toml::Value::String(s),
            (toml::Value::String(_), _) => toml::Value::String(value.clone()),
            (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (_, v) => v,
        };
        let sec = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = sec {
            t.insert(key.to_string(), val);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
