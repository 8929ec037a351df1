//! The sections of the config that the platform features added: builds, deployments,
//! environments, WebAssembly addons, GraphQL, the TCP metrics listener and notifications. Re-exported
//! by `crate::config`, which validates them with the rest.

use serde::{Deserialize, Serialize};

/// Longest environment name.
pub const MAX_ENVIRONMENT_NAME: usize = 12;

/// Checks an environment name: a short name without the separator.
pub fn check_environment(env: &str) -> Result<(), String> {
    if !env.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || env.is_empty()
        || env.starts_with('-')
        || env.ends_with('-')
        || env.len() > MAX_ENVIRONMENT_NAME
        || env.contains("--")
    {
        return Err(format!(
            "`{env}` is not an environment name: 1–{MAX_ENVIRONMENT_NAME} lowercase letters, digits and single `-` (like dev, staging, prod)"
        ));
    }
    Ok(())
}

/// Environments of installed addons (`[environments]`, docs/deployments.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentsConfig {
    /// The promotion order: a promotion may only go to the next of these environments the
    /// addon has (unless forced). An install with an empty `"environments"` list installs these.
    pub pipeline: Vec<String>,
}

impl Default for EnvironmentsConfig {
    fn default() -> Self {
        EnvironmentsConfig { pipeline: vec!["dev".into(), "staging".into(), "prod".into()] }
    }
}

/// The TCP metrics listener: `GET /metrics` for Prometheus, off unless `listen` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics` over TCP (`127.0.0.1:9464`); empty: only on the
    /// admin socket. Read with [`MetricsConfig::listen_addr`].
    pub listen: String,
    /// Lets `listen` be an address other hosts reach. The series name services, addons
    /// and subscribers and need no key, so loopback is the rule unless the operator says so.
    pub allow_non_loopback: bool,
}

impl MetricsConfig {
    /// `listen` as an address; `None` when it is empty (or invalid, which validation refuses).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.trim().parse().ok()
    }
}

/// Webhook notifications of what an operator must hear about (a service `Failed`, Docker
/// gone and back, a rolled-back deployment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `http://` URL that receives one JSON `POST` per notification; empty: off.
    pub webhook_url: String,
    /// Time one `POST` may take, connecting included (seconds).
    pub timeout_seconds: f64,
    /// Attempts after a failed first one (an error, a timeout or a non-2xx answer).
    pub retries: u32,
    /// Backoff between attempts: base, doubling, capped (seconds).
    pub retry_base_seconds: f64,
    pub retry_max_seconds: f64,
    /// When set, every `POST` carries `X-Addond-Signature: sha256=<hex HMAC-SHA256 of the
    /// body under this secret>`, so the receiver can tell addond's posts from anyone's.
    pub secret: String,
    /// Notifications waiting at most; when it is full the oldest is dropped (and counted).
    pub queue_size: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook_url: String::new(),
            timeout_seconds: 5.0,
            retries: 5,
            retry_base_seconds: 1.0,
            retry_max_seconds: 60.0,
            secret: String::new(),
            queue_size: 256,
        }
    }
}

/// Upgrades, rollbacks and the images they keep (`[deploy]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// How long a new instance may take to pass its health check before the deployment is
    /// rolled back.
    pub health_timeout_seconds: f64,
    /// How long an old instance taken out of routing may finish the calls it has before it
    /// is stopped anyway.
    pub drain_timeout_seconds: f64,
    /// New instances started at once per service (each replacing one old instance); 1 is
    /// one at a time. A request may ask for more with `"surge"`.
    pub surge: u32,
    /// Built images (`addond/…`) of this many newest succeeded deployments per addon
    /// instance are kept for rollbacks; older ones no service runs are removed.
    pub keep_deployments: u32,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig { health_timeout_seconds: 120.0, drain_timeout_seconds: 30.0, surge: 1, keep_deployments: 5 }
    }
}

/// WebAssembly addons (`[wasm]`): the limits every call of a guest runs under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WasmConfig {
    /// Fuel (roughly one unit per WebAssembly instruction) a single call may burn; a call
    /// that runs out is stopped like one past its deadline.
    pub fuel_per_call: u64,
    /// Guest instances alive at once, across every WASM addon; calls beyond it wait (up
    /// to their deadline) for a free slot. Also sizes the pooling allocator.
    pub max_concurrent: u32,
    /// Largest module `POST /api/addons/{name}/publish` accepts, in bytes.
    pub max_module_bytes: usize,
    /// Linear memory of a guest when its manifest sets no `resource_limits.memory`, and the
    /// most a manifest may ask for (bytes: the pool's slot size).
    pub default_memory_bytes: u64,
    /// The largest `resource_limits.memory` a WASM manifest may set (bytes).
    pub max_memory_bytes: u64,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            fuel_per_call: 10_000_000_000,
            max_concurrent: 64,
            max_module_bytes: 16 << 20,
            default_memory_bytes: 64 << 20,
            max_memory_bytes: 256 << 20,
        }
    }
}

/// Image builds from addon code (`POST /api/addons/{name}/builds`, plugin directories).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// Largest build context accepted, counted while it streams in and again once
    /// unpacked (a small tar.gz cannot expand past it); 413 above.
    pub max_context_bytes: u64,
    /// A build running longer is stopped, its partial result removed, and recorded as failed.
    pub timeout_seconds: f64,
    /// Memory (and memory + swap: no swap) of each build step's container.
    pub memory: String,
    /// CPUs each build step's container may use.
    pub cpus: f64,
    /// Lines of the failing step's output kept with a failed build and sent in its
    /// `failed` line.
    pub log_lines: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig { max_context_bytes: 64 * 1024 * 1024, timeout_seconds: 600.0, memory: "1g".into(), cpus: 1.0, log_lines: 50 }
    }
}

/// The limits of `/graphql` (docs/graphql.md), on the admin socket and the gateway alike.
/// Bodies are bounded by each listener's own `max_body_bytes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// Deepest selection a query may nest (a client's introspection query needs 15).
    pub max_depth: usize,
    /// Most fields a query may select, counted over its fragments expanded.
    pub max_complexity: usize,
    /// Most aliased fields a document may hold, so one request cannot run the same
    /// resolver (an addon call) hundreds of times under different names.
    pub max_aliases: usize,
    /// Whether the gateway answers introspection (`__schema`, `__type`); the admin socket
    /// always does.
    pub gateway_introspection: bool,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig { max_depth: 20, max_complexity: 500, max_aliases: 30, gateway_introspection: false }
    }
}
