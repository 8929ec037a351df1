//! The domain types every part shares: ids, phases, a service's validated spec, instances,
//! and the pure validation of a create request. Nothing here does I/O, so the rules that
//! decide what a user may ask for are unit-tested on their own.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{parse_size, Config};

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn generate() -> Self {
                let u = uuid::Uuid::new_v4().simple().to_string();
                $name(format!("{}{}", $prefix, &u[..12]))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(ServiceId, "svc_");
id_type!(InstanceId, "inst_");

/// Lifecycle phase of a service, persisted; the reconciler moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Creating,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Deleting,
    Deleted,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Created => "Created",
            Phase::Starting => "Starting",
            Phase::Started => "Started",
            Phase::Stopping => "Stopping",
            Phase::Stopped => "Stopped",
            Phase::Deleting => "Deleting",
            Phase::Deleted => "Deleted",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        const ALL: [Phase; 9] = [
            Phase::Creating,
            Phase::Created,
            Phase::Starting,
            Phase::Started,
            Phase::Stopping,
            Phase::Stopped,
            Phase::Deleting,
            Phase::Deleted,
            Phase::Failed,
        ];
        ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

/// What the operator asked for; the reconciler drives the phase toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Started,
    Stopped,
    Deleted,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Started => "started",
            Desired::Stopped => "stopped",
            Desired::Deleted => "deleted",
        }
    }
    pub fn parse(s: &str) -> Option<Desired> {
        match s {
            "started" => Some(Desired::Started),
            "stopped" => Some(Desired::Stopped),
            "deleted" => Some(Desired::Deleted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceType {
    RestApi,
    Websocket,
    BackgroundWorker,
    Scheduler,
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[serde(rename = "no")]
    No,
    #[serde(rename = "on-failure")]
    OnFailure,
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
    #[serde(rename = "always")]
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::Always => "always",
        }
    }

    /// Whether an instance that exited with `exit_code` while it should run is restarted.
    pub fn restarts_after(self, exit_code: i64) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::UnlessStopped | RestartPolicy::Always => true,
        }
    }
}

/// Health of one instance as the daemon's own probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
    pub fn parse(s: &str) -> Health {
        match s {
            "starting" => Health::Starting,
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Path probed on the instance's host port (a `url` in the request is reduced to its path).
    pub path: String,
    pub interval: f64,
    pub timeout: f64,
    pub retries: u32,
    pub start_period: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub memory: String,
    pub cpu: String,
    pub pids: i64,
}

impl ResourceLimits {
    pub fn memory_bytes(&self) -> i64 {
        parse_size(&self.memory).unwrap_or(512 << 20) as i64
    }
    pub fn nano_cpus(&self) -> i64 {
        (self.cpu.parse::<f64>().unwrap_or(0.5) * 1e9) as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A Docker named volume of this daemon, scoped to the service (or, `shared`, to its
    /// group): see `crate::isolation::volume_name`.
    Named,
    /// A directory the daemon owns under `<data_dir>/volumes/<service>/`.
    Dir,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub kind: VolumeKind,
    /// Named volumes: seen by every service of the same addon instance (or plain services
    /// with the same `plugin_id`) that declares it shared; otherwise the service's own.
    #[serde(default)]
    pub shared: bool,
    /// Named volumes: the Docker volume, fixed when the service is created. Services stored
    /// before volumes were scoped have none and keep the old global `addond_<source>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_name: Option<String>,
}

/// A service's validated definition, stored as JSON in the `services` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The service's slug: what container labels, volume and network owner keys,
    /// `depends_on` and DNS aliases use. A name that is a valid slug is its own slug.
    pub name: String,
    /// The name people gave it when that is not a slug itself (`"테스트 서비스"`); shown as
    /// `name` in every answer. `None` for services named by their slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The host address the request asked to publish on (`host`), kept so the answer can
    /// say where the port was bound; see [`bind_address`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<std::net::IpAddr>,
    pub plugin_id: Option<String>,
    pub service_type: ServiceType,
    pub image: String,
    pub port: u16,
    pub preferred_host_port: Option<u16>,
    pub environment: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
    pub networks: Vec<String>,
    pub depends_on: Vec<String>,
    pub health_check: HealthCheck,
    pub resource_limits: ResourceLimits,
    pub restart_policy: RestartPolicy,
    pub version: Option<String>,
}

impl ServiceSpec {
    /// What people call it: the display name, else the slug.
    pub fn display(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// Where a service's ports are published: the config's `ports.publish_address` is the
/// widest a service may get. A loopback `host` narrows it; any other `host` is honoured
/// only when the config publishes on every address (`0.0.0.0`/`::`).
pub fn bind_address(requested: Option<std::net::IpAddr>, publish: std::net::IpAddr) -> std::net::IpAddr {
    match requested {
        Some(h) if h.is_loopback() => h,
        Some(h) if publish.is_unspecified() => h,
        _ => publish,
    }
}

/// A service row with its instances, as the store returns it.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: ServiceId,
    pub spec: ServiceSpec,
    pub replicas: u32,
    pub desired: Desired,
    pub phase: Phase,
    pub last_error: Option<String>,
    pub exit_code: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The installed addon instance this service belongs to, if any.
    pub addon_instance: Option<String>,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: InstanceId,
    pub service_id: ServiceId,
    pub ordinal: u32,
    pub host_port: u16,
    /// False once a scale-down marked it; the reconciler removes its container, then the row.
    pub wanted: bool,
    pub container_id: Option<String>,
    pub health: Health,
    pub restarts: u32,
    pub started_at: Option<i64>,
    pub last_error: Option<String>,
    pub exit_code: Option<i64>,
    /// Unix millis before which a crashed instance is not restarted (backoff).
    pub next_restart_at: Option<i64>,
    /// Consecutive failed restarts since the last healthy period (backoff exponent).
    pub streak: u32,
    pub healthy_since: Option<i64>,
    /// The spec of a rollout's new instance, until the rollout commits and it becomes the
    /// service's; `None` for every other instance (it runs the service's spec).
    pub spec: Option<Box<ServiceSpec>>,
}

impl Instance {
    pub fn container_name(&self) -> String {
        container_name(&self.service_id, self.ordinal)
    }

    /// True for a rollout's new instance that has not been committed yet.
    pub fn is_candidate(&self) -> bool {
        self.spec.is_some()
    }
}

/// Deterministic, so a container created just before a crash is found again by name.
pub fn container_name(service: &ServiceId, ordinal: u32) -> String {
    format!("addond-{}-{}", service.as_str(), ordinal)
}

// ---------------------------------------------------------------------------------------
// Create requests and their validation.

/// Request body for creating a service; compatible with the documents addond grew from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub plugin_id: Option<String>,
    pub service_type: Option<ServiceType>,
    pub image: Option<String>,
    pub port: Option<i64>,
    pub host_port: Option<i64>,
    pub host: Option<String>,
    pub environment: Option<BTreeMap<String, String>>,
    pub volumes: Option<Vec<VolumeRequest>>,
    pub networks: Option<Vec<String>>,
    pub depends_on: Option<Vec<String>>,
    pub health_check: Option<HealthCheckRequest>,
    pub resource_limits: Option<LimitsRequest>,
    pub restart_policy: Option<RestartPolicy>,
    pub version: Option<String>,
    pub replicas: Option<i64>,
}

/// A volume as requested: `"SOURCE:TARGET[:ro]"` or `{"source", "target", "read_only", "shared"}`.
/// Deserialized by hand rather than as an untagged enum, so a wrong shape is told what the
/// two accepted shapes are instead of "did not match any variant".
#[derive(Debug, Clone)]
pub enum VolumeRequest {
    Short(String),
    Long {
        source: String,
        target: String,
        read_only: bool,
        /// Shared with the other services of the addon that declare it (named volumes only).
        shared: bool,
    },
}

impl<'de> Deserialize<'de> for VolumeRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = VolumeRequest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a volume: a string like \"data:/data\" or \"./dir:/dir:ro\", or an object like {\"source\": \"data\", \"target\": \"/data\", \"read_only\": false, \"shared\": false}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VolumeRequest, E> {
                Ok(VolumeRequest::Short(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<VolumeRequest, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Long {
                    source: String,
                    target: String,
                    #[serde(default)]
                    read_only: bool,
                    #[serde(default)]
                    shared: bool,
                }
                let l = Long::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(VolumeRequest::Long { source: l.source, target: l.target, read_only: l.read_only, shared: l.shared })
            }
        }
        d.deserialize_any(Shape)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckRequest {
    pub url: Option<String>,
    pub path: Option<String>,
    pub interval: Option<f64>,
    pub timeout: Option<f64>,
    pub retries: Option<i64>,
    pub start_period: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    pub memory: Option<StringOrNumber>,
    pub cpu: Option<StringOrNumber>,
    pub pids: Option<i64>,
}

/// A limit given as text (`"512m"`, `"0.5"`) or as a number (`0.5`).
#[derive(Debug, Clone)]
pub enum StringOrNumber {
    S(String),
    N(f64),
}

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl serde::de::Visitor<'_> for Shape {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string like \"512m\" or \"0.5\", or a number like 0.5")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber::S(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber::N(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber::N(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber::N(v as f64))
            }
        }
        d.deserialize_any(Shape)
    }
}

impl StringOrNumber {
    pub fn text(&self) -> String {
        match self {
            StringOrNumber::S(s) => s.trim().to_string(),
            StringOrNumber::N(n) => n.to_string(),
        }
    }
}

/// A rejected field: the path and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// `invalid_volume` for volume refusals, `validation_failed` otherwise.
    pub code: &'static str,
}

impl FieldError {
    /// A serde data error (wrong type, unknown or missing field, unknown value) at `path`
    /// (`.` for the top level, else like `volumes[0].target`), told in terms of the JSON
    /// the caller sends: the field it is about and what to send instead, without Rust type
    /// names.
    pub fn from_serde(path: &str, text: &str) -> FieldError {
        FieldError::from_serde_in("", path, text)
    }

    /// [`FieldError::from_serde`] for a value found at `prefix` of the request (like
    /// `services[0]`); an empty prefix is the request body itself.
    pub fn from_serde_in(prefix: &str, path: &str, text: &str) -> FieldError {
        // serde_path_to_error writes `?` for a place it could not name: the level above.
        let path = path.trim_end_matches('?').trim_end_matches('.');
        let path = if path == "." { "" } else { path };
        let here = match (prefix, path) {
            ("", "") => "body".to_string(),
            ("", p) => p.to_string(),
            (pre, "") => pre.to_string(),
            (pre, p) => format!("{pre}.{p}"),
        };
        let join = |name: &str| if here == "body" { name.to_string() } else { format!("{here}.{name}") };
        let what = if here == "body" { "the request body".to_string() } else { format!("`{here}`") };
        if let Some(rest) = text.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or("");
            let allowed =
                rest.split_once(", expected ").map(|(_, e)| e.trim_start_matches("one of ").replace("` or `", "`, `")).unwrap_or_default();
            // The path already ends at the unknown key.
            let field = if here == name || here.ends_with(&format!(".{name}")) { here.clone() } else { join(name) };
            let message = if allowed.is_empty() || allowed.starts_with("there are no fields") {
                format!("`{field}` is not a field here; remove it")
            } else {
                format!("`{field}` is not a field here; the fields are {allowed}")
            };
            return field_err(field, message);
        }
        if let Some(rest) = text.strip_prefix("missing field `") {
            let field = join(rest.split('`').next().unwrap_or(""));
            return field_err(field.clone(), format!("`{field}` is required; send it"));
        }
        if let Some(rest) = text.strip_prefix("unknown variant `") {
            let value = rest.split('`').next().unwrap_or("");
            let allowed =
                rest.split_once(", expected ").map(|(_, e)| e.trim_start_matches("one of ").replace("` or `", "`, `")).unwrap_or_default();
            return field_err(here, format!("{what}: `{value}` is not one of its values; use {allowed}"));
        }
        let text = humanize_serde(text);
        if path.is_empty() && text.starts_with("invalid type:") {
            return field_err(here, format!("{what} must be a JSON object ({text})"));
        }
        field_err(here, format!("{what}: {text}"))
    }
}

/// Serde's wording with JSON's names for things: `struct X` and `map` are objects,
/// `sequence` is an array, Rust's integer and float types are numbers.
fn humanize_serde(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut words = text.split(' ').peekable();
    while let Some(w) = words.next() {
        let (core, tail) = match w.find([',', ';']) {
            Some(i) => (&w[..i], &w[i..]),
            None => (w, ""),
        };
        let replaced = match core {
            "struct" | "enum" if words.peek().is_some() => {
                // `struct CreateRequest` → the JSON shape, whatever the Rust name.
                let name = words.next().unwrap_or("");
                let tail = name.find([',', ';']).map(|i| &name[i..]).unwrap_or("");
                out.push_str(if core == "struct" { "a JSON object" } else { "one of its names as a string" });
                out.push_str(tail);
                out.push(' ');
                continue;
            }
            "map" => "object",
            "sequence" => "array",
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more",
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
            "f32" | "f64" => "a number",
            other => other,
        };
        out.push_str(replaced);
        out.push_str(tail);
        out.push(' ');
    }
    let out = out.trim_end().replace("a object", "an object").replace("a array", "an array").replace("a sequence", "an array");
    if out.contains(" like ") {
        out // the expectation shows an example already
    } else {
        format!("{out}; send a value of that type")
    }
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into(), code: "validation_failed" }
}

fn volume_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into(), code: "invalid_volume" }
}

/// An image reference Docker accepts (see [`crate::image_ref`]); the error is the API
/// message for the `image` field.
pub fn check_image(s: &str) -> Result<(), String> {
    crate::image_ref::check(s).map_err(|why| crate::image_ref::message(s, &why))
}

fn valid_env_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 256
}

/// Parses `src:dst[:ro|rw]` or the long form, and decides the volume's kind. Host paths
/// are refused here; symlink escapes are checked again on disk by the runtime.
pub fn parse_volume(v: &VolumeRequest, field: &str) -> Result<Volume, FieldError> {
    let (source, target, read_only, shared) = match v {
        VolumeRequest::Short(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [src, dst] => (src.to_string(), dst.to_string(), false, false),
                [src, dst, "ro"] => (src.to_string(), dst.to_string(), true, false),
                [src, dst, "rw"] => (src.to_string(), dst.to_string(), false, false),
                _ => return Err(volume_err(field, format!("`{s}` is not SOURCE:TARGET[:ro]"))),
            }
        }
        VolumeRequest::Long { source, target, read_only, shared } => (source.clone(), target.clone(), *read_only, *shared),
    };
    if source.contains("docker.sock") || target.contains("docker.sock") {
        return Err(volume_err(field, "the Docker socket is never mounted into an addon container"));
    }
    if source.starts_with('/') || source.starts_with('~') {
        return Err(volume_err(
            field,
            format!("host path `{source}` is not allowed: use a named volume (`data`) or a relative directory (`./data`) kept under the daemon's data dir"),
        ));
    }
    if source.split('/').any(|c| c == "..") {
        return Err(volume_err(field, format!("`{source}` contains `..`: a volume may not leave its service's directory")));
    }
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") || target == "/" {
        return Err(volume_err(field, format!("target `{target}` must be an absolute path inside the container, not `/`, without `..`")));
    }
    if ["/proc", "/sys", "/dev"].iter().any(|p| target == *p || target.starts_with(&format!("{p}/"))) {
        return Err(volume_err(field, format!("target `{target}` would shadow a kernel filesystem")));
    }
    let is_named = !source.contains('/') && !source.starts_with('.') && valid_name(&source.replace('_', "-"));
    if is_named {
        return Ok(Volume { source, target, read_only, kind: VolumeKind::Named, shared, docker_name: None });
    }
    if shared {
        return Err(volume_err(
            format!("{field}.shared"),
            format!("`{source}` is a directory volume, which is always its service's own; share a named volume instead (a bare name like `data`)"),
        ));
    }
    let rel = source.trim_start_matches("./");
    if rel.is_empty()
        || rel.split('/').any(|c| c.is_empty() || c == ".")
        || !rel.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    {
        return Err(volume_err(field, format!("`{source}` is neither a volume name nor a clean relative directory like `./data`")));
    }
    Ok(Volume { source: rel.to_string(), target, read_only, kind: VolumeKind::Dir, shared: false, docker_name: None })
}

/// The first directory volume whose source lies inside (or is) an earlier one's: `(outer,
/// inner)` indices. A container that can write the outer directory could replace the inner
/// one with a symlink, which Docker would follow when it starts the container again.
pub fn nested_dir_volumes(volumes: &[Volume]) -> Option<(usize, usize)> {
    let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    for (j, b) in volumes.iter().enumerate().filter(|(_, v)| v.kind == VolumeKind::Dir) {
        for (i, a) in volumes[..j].iter().enumerate().filter(|(_, v)| v.kind == VolumeKind::Dir) {
            if inside(&a.source, &b.source) || inside(&b.source, &a.source) {
                return Some((i, j));
            }
        }
    }
    None
}

/// The message for [`nested_dir_volumes`], naming both and what to do.
pub fn nested_volumes_message(volumes: &[Volume], outer: usize, inner: usize) -> String {
    let (a, b) = (&volumes[outer].source, &volumes[inner].source);
    format!(
        "volumes[{inner}] (`./{b}`) lies in or on volumes[{outer}] (`./{a}`): a container that can write one could swap the other for a symlink to any host directory before a restart. Use sibling directories, neither inside the other, like `./data` and `./cache`"
    )
}

impl CreateRequest {
    /// Validates every field, naming the first bad one, and fills defaults from the config.
    pub fn validate(self, cfg: &Config) -> Result<(ServiceSpec, u32), FieldError> {
        let given = self.name.ok_or_else(|| field_err("name", "a service needs a name"))?;
        let (name, display_name) = service_names(&given)?;
        if let Some(p) = &self.plugin_id {
            if !valid_plugin_id(p) {
                return Err(field_err(
                    "plugin_id",
                    format!(
                        "`{p}` is not a valid plugin id: use 1–63 lowercase letters, digits, `-` and `_`, starting with a letter or digit"
                    ),
                ));
            }
        }
        let image = self.image.ok_or_else(|| field_err("image", "a service needs an image, e.g. addond-sample:latest"))?;
        check_image(&image).map_err(|m| field_err("image", m))?;
        let port = self.port.unwrap_or(8080);
        if !(1..=65535).contains(&port) {
            return Err(field_err("port", format!("container port {port} is outside 1–65535")));
        }
        let preferred_host_port = match self.host_port {
            None => None,
            Some(p) if p >= cfg.ports.range_start as i64 && p <= cfg.ports.range_end as i64 => Some(p as u16),
            Some(p) => {
                return Err(field_err(
                    "host_port",
                    format!("host port {p} is outside the configured range {}–{}", cfg.ports.range_start, cfg.ports.range_end),
                ))
            }
        };
        let host = match self.host.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("localhost") => Some(std::net::IpAddr::from([127, 0, 0, 1])),
            Some(h) => match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                // A host name other than localhost says nothing about where to bind: the
                // config's address applies, as it always did.
                Err(_) if valid_name(h) => None,
                Err(_) => return Err(field_err("host", format!("`{h}` is not an address: send an IP address like 0.0.0.0 or 127.0.0.1"))),
            },
        };
        let mut environment = BTreeMap::new();
        for (k, v) in self.environment.unwrap_or_default() {
            if !valid_env_key(&k) {
                return Err(field_err(format!("environment.{k}"), "variable names are letters, digits and `_`, not starting with a digit"));
            }
            if k.starts_with("ADDOND_") || k == "PORT" {
                return Err(field_err(format!("environment.{k}"), "ADDOND_* and PORT are set by addond itself"));
            }
            if v.len() > 32 * 1024 || v.contains('\0') {
                return Err(field_err(format!("environment.{k}"), "value too long (32 KiB max) or contains NUL"));
            }
            environment.insert(k, v);
        }
        let mut volumes = Vec::new();
        for (i, v) in self.volumes.unwrap_or_default().iter().enumerate() {
            let vol = parse_volume(v, &format!("volumes[{i}]"))?;
            if volumes.iter().any(|o: &Volume| o.target == vol.target) {
                return Err(volume_err(format!("volumes[{i}].target"), format!("two volumes mount at `{}`", vol.target)));
            }
            volumes.push(vol);
        }
        if let Some((outer, inner)) = nested_dir_volumes(&volumes) {
            return Err(volume_err(format!("volumes[{inner}]"), nested_volumes_message(&volumes, outer, inner)));
        }
        if let Some(i) = volumes.iter().position(|v| v.shared) {
            if self.plugin_id.is_none() {
                return Err(volume_err(
                    format!("volumes[{i}].shared"),
                    "a volume is shared within a group: declare it in an addon's services, or give the plain services that share it one plugin_id",
                ));
            }
        }
        let networks = self.networks.unwrap_or_else(|| vec![cfg.docker.network.clone()]);
        let known =
            format!("`{PLUGIN_NETWORK}` (or `{}`) or `{PLUGIN_ISOLATED}` (or `{}`)", cfg.docker.network, cfg.docker.isolated_network);
        if networks.len() != 1 {
            return Err(field_err("networks", format!("name exactly one network: {known}")));
        }
        for (i, n) in networks.iter().enumerate() {
            if network_kind(&cfg.docker, n).is_none() {
                return Err(field_err(format!("networks[{i}]"), format!("unknown network `{n}`: use {known}")));
            }
        }
        let depends_on = self.depends_on.unwrap_or_default();
        for (i, d) in depends_on.iter().enumerate() {
            if !valid_name(d) {
                return Err(field_err(format!("depends_on[{i}]"), format!("`{d}` is not a service name")));
            }
        }
        let hc = self.health_check.unwrap_or_default();
        let path = match (hc.path, hc.url) {
            (Some(p), _) => p,
            (None, Some(u)) => url_path(&u).ok_or_else(|| field_err("health_check.url", format!("`{u}` is not an http URL")))?,
            (None, None) => "/health".to_string(),
        };
        if !path.starts_with('/') || path.len() > 1024 || path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(field_err("health_check.path", format!("`{path}` must be an absolute path like /health")));
        }
        let secs = |v: Option<f64>, d: f64, f: &str, max: f64| -> Result<f64, FieldError> {
            let v = v.unwrap_or(d);
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(v)
            } else {
                Err(field_err(format!("health_check.{f}"), format!("{v} is outside 0–{max} seconds")))
            }
        };
        let interval = secs(hc.interval, cfg.health.interval_seconds, "interval", 3600.0)?;
        let timeout = secs(hc.timeout, cfg.health.timeout_seconds, "timeout", 3600.0)?;
        let start_period = match hc.start_period {
            None => cfg.health.start_period_seconds,
            Some(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => v,
            Some(v) => return Err(field_err("health_check.start_period", format!("{v} is outside 0–3600 seconds"))),
        };
        let retries = hc.retries.unwrap_or(cfg.health.retries as i64);
        if !(1..=100).contains(&retries) {
            return Err(field_err("health_check.retries", format!("{retries} is outside 1–100")));
        }
        let lim = self.resource_limits.unwrap_or_default();
        let memory = lim.memory.map(|m| m.text()).unwrap_or_else(|| cfg.limits.memory.clone());
        let mem_bytes =
            parse_size(&memory).ok_or_else(|| field_err("resource_limits.memory", format!("`{memory}` is not a size like 512m or 1g")))?;
        if mem_bytes < 6 << 20 || mem_bytes > cfg.max_memory_bytes() {
            return Err(field_err(
                "resource_limits.memory",
                format!("`{memory}` must be between 6m and {} MiB", cfg.max_memory_bytes() >> 20),
            ));
        }
        let cpu = lim.cpu.map(|c| c.text()).unwrap_or_else(|| cfg.limits.cpu.to_string());
        let cpu_v: f64 = cpu.parse().map_err(|_| field_err("resource_limits.cpu", format!("`{cpu}` is not a number of CPUs like 0.5")))?;
        if !(cpu_v.is_finite() && cpu_v >= 0.01 && cpu_v <= cfg.max_cpu()) {
            return Err(field_err("resource_limits.cpu", format!("{cpu} must be between 0.01 and {}", cfg.max_cpu())));
        }
        let pids = lim.pids.unwrap_or(cfg.limits.pids);
        if pids < 1 || pids > cfg.limits.max_pids {
            return Err(field_err("resource_limits.pids", format!("{pids} must be between 1 and {}", cfg.limits.max_pids)));
        }
        let replicas = self.replicas.unwrap_or(1);
        if replicas < 0 || replicas > cfg.limits.max_replicas as i64 {
            return Err(field_err("replicas", format!("{replicas} must be between 0 and {}", cfg.limits.max_replicas)));
        }
        if let Some(v) = &self.version {
            if v.is_empty() || v.len() > 64 || v.chars().any(|c| c.is_control() || c == ' ') {
                return Err(field_err("version", "a version is a short token like 1.0.0"));
            }
        }
        let spec = ServiceSpec {
            name,
            display_name,
            host,
            plugin_id: self.plugin_id,
            service_type: self.service_type.unwrap_or(ServiceType::RestApi),
            image,
            port: port as u16,
            preferred_host_port,
            environment,
            volumes,
            networks,
            depends_on,
            health_check: HealthCheck { path, interval, timeout, retries: retries as u32, start_period },
            resource_limits: ResourceLimits { memory, cpu, pids },
            restart_policy: self.restart_policy.unwrap_or(RestartPolicy::UnlessStopped),
            version: self.version,
        };
        Ok((spec, replicas as u32))
    }
}

/// `http://host:port/health?x=1` → `/health?x=1`; the host part is replaced by the
/// instance's own published port when probing.
fn url_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    Some(match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    })
}

/// Exponential restart backoff: base × 2^streak, capped.
pub fn backoff_ms(base_s: f64, max_s: f64, streak: u32) -> i64 {
    let factor = 2f64.powi(streak.min(30) as i32);
    ((base_s * factor).min(max_s) * 1000.0) as i64
}

/// The service phase that follows from its instances, for a service that should run.
pub fn running_phase(instances: &[Instance], failed: bool) -> Phase {
    if failed {
        return Phase::Failed;
    }
    // A rollout's new instances do not count until it commits: the service keeps its phase
    // while its replacement proves itself beside it.
    let wanted: Vec<&Instance> = instances.iter().filter(|i| i.wanted && !i.is_candidate()).collect();
    // Instances still being removed after a scale-down keep the service in transition.
    let removing = instances.iter().any(|i| !i.wanted && !i.is_candidate());
    if !removing && wanted.iter().all(|i| i.container_id.is_some() && i.health == Health::Healthy) {
        Phase::Started
    } else {
        Phase::Starting
    }
}

mod names;
mod templates;

pub use names::*;
pub use templates::*;

#[cfg(test)]
mod tests;

/// The phase of an addon follows from its services'.
pub fn addon_phase(services: &[Service]) -> Phase {
    let all = |p: Phase| !services.is_empty() && services.iter().all(|s| s.phase == p);
    let any = |p: Phase| services.iter().any(|s| s.phase == p);
    if services.is_empty() {
        Phase::Deleted
    } else if any(Phase::Failed) {
        Phase::Failed
    } else if all(Phase::Started) {
        Phase::Started
    } else if all(Phase::Stopped) {
        Phase::Stopped
    } else if any(Phase::Deleting) {
        Phase::Deleting
    } else if any(Phase::Stopping) {
        Phase::Stopping
    } else if any(Phase::Creating) {
        Phase::Creating
    } else {
        Phase::Starting
    }
}
