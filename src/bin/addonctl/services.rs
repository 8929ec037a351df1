//! `addonctl services …` (and its top-level shorthands `ls`, `show`, `start`, …),
//! `templates …`, `discovery` and `cleanup`: the service API under
//! `/api/plugin-microservice`. The create body is built from flags laid over an optional
//! JSON file; lifecycle commands can wait (`--wait`) for the phase they aim for.

use std::io::{self, Read};
use std::path::PathBuf;

use addond::client::{self, LineSplitter, Method};
use addond::sanitize::{sanitize as cell, sanitize_line};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::input::parse_seconds;
use crate::render::{age, display, emit, fixed, ids, now_secs, num, render_kv, render_table, sanitized_lines, text};
use crate::{query, Ctl, UsageError};

pub(crate) const SERVICES: &str = "/api/plugin-microservice/services";
pub(crate) const API: &str = "/api/plugin-microservice";

#[derive(Subcommand, Debug)]
pub(crate) enum ServiceCmd {
    /// List services
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create a service from flags and/or a JSON body
    Create(Box<CreateArgs>),
    /// Show one service and its instances
    Show(IdArg),
    /// Start a service
    Start(LifecycleArgs),
    /// Stop a service
    Stop(LifecycleArgs),
    /// Restart a service
    Restart(LifecycleArgs),
    /// Delete a service and its containers
    #[command(visible_alias = "rm")]
    Delete(LifecycleArgs),
    /// Run N instances, each on its own host port
    Scale(ScaleArgs),
    /// Print a service's container logs
    Logs(LogsArgs),
    /// A service's CPU, memory and network usage
    Metrics(IdArg),
    /// Health of every service
    Health,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TemplateCmd {
    /// List templates
    #[command(visible_alias = "ls")]
    List,
    /// Create a service from a template
    Create(TemplateCreateArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ListArgs {
    /// Only services of this plugin
    #[arg(long, value_name = "ID")]
    pub(crate) plugin_id: Option<String>,
    /// Only services in this phase (Started, Failed, …) or status (running, partial, …)
    #[arg(long, value_name = "S")]
    pub(crate) status: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct IdArg {
    /// Service id or name
    pub(crate) id: String,
}

#[derive(Args, Debug, Clone, Default, PartialEq)]
pub(crate) struct WaitArgs {
    /// Wait until the service (or addon) reaches the phase this command aims for
    #[arg(long)]
    pub(crate) wait: bool,
    /// Seconds to wait (1-600, daemon default 60); implies --wait
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=600))]
    pub(crate) timeout: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct LifecycleArgs {
    /// Service id or name
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ScaleArgs {
    /// Service id or name
    pub(crate) id: String,
    /// Number of instances (0-64)
    #[arg(value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) replicas: u32,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct LogsArgs {
    /// Service id or name
    pub(crate) id: String,
    /// Number of lines from the end
    #[arg(short = 'n', long, default_value_t = 100)]
    pub(crate) lines: u32,
    /// Keep printing new lines until interrupted
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Prefix each line with its timestamp
    #[arg(long)]
    pub(crate) timestamps: bool,
    /// Instance ordinal (default 0)
    #[arg(long, value_name = "K")]
    pub(crate) instance: Option<u32>,
}

pub(crate) const SERVICE_TYPES: [&str; 5] = ["rest_api", "websocket", "background_worker", "scheduler", "worker"];
pub(crate) const RESTART_POLICIES: [&str; 4] = ["no", "on-failure", "unless-stopped", "always"];

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct CreateArgs {
    /// Service name: a slug like payments-api, or any text of 1–100 characters (a display name), which gets a slug of its own
    #[arg(long, required_unless_present = "file")]
    pub(crate) name: Option<String>,
    /// Container image (without one, --plugin-id builds <data_dir>/plugins/ID/ on the daemon's host)
    #[arg(long, required_unless_present_any = ["file", "plugin_id"])]
    pub(crate) image: Option<String>,
    /// Plugin (addon) the service belongs to
    #[arg(long, value_name = "ID")]
    pub(crate) plugin_id: Option<String>,
    /// Service type
    #[arg(long = "type", value_name = "TYPE", value_parser = SERVICE_TYPES)]
    pub(crate) service_type: Option<String>,
    /// Container port (default 8080)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,
    /// Preferred host port for the first instance
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) host_port: Option<u16>,
    /// Number of instances (0-64)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) replicas: Option<u32>,
    /// Environment variable (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,
    /// Volume: named volume or relative directory, SRC:DST[:ro] (repeatable)
    #[arg(long = "volume", short = 'v', value_name = "SRC:DST[:ro]", value_parser = parse_volume)]
    pub(crate) volumes: Vec<Value>,
    /// Network to join (repeatable)
    #[arg(long = "network", value_name = "N")]
    pub(crate) networks: Vec<String>,
    /// Service this one depends on (repeatable)
    #[arg(long = "depends-on", value_name = "NAME")]
    pub(crate) depends_on: Vec<String>,
    /// Memory limit (512m, 1g)
    #[arg(long)]
    pub(crate) memory: Option<String>,
    /// CPU limit in cores (0.5)
    #[arg(long, value_parser = parse_cpu)]
    pub(crate) cpu: Option<String>,
    /// Process limit
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) pids: Option<u32>,
    /// Health check path (/health)
    #[arg(long, value_name = "PATH")]
    pub(crate) health_path: Option<String>,
    /// Seconds between health checks
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub(crate) health_interval: Option<f64>,
    /// Seconds before a health check times out
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub(crate) health_timeout: Option<f64>,
    /// Failed checks before an instance is unhealthy
    #[arg(long, value_name = "N")]
    pub(crate) health_retries: Option<u32>,
    /// Restart policy
    #[arg(long, value_name = "P", value_parser = RESTART_POLICIES)]
    pub(crate) restart_policy: Option<String>,
    /// Version label
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// JSON create body ('-' for stdin); the other flags override its keys
    #[arg(long, value_name = "PATH")]
    pub(crate) file: Option<PathBuf>,
    /// Do not pull the image before creating (the daemon still pulls a missing one)
    #[arg(long)]
    pub(crate) no_pull: bool,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TemplateCreateArgs {
    /// Template id (see `addonctl templates list`)
    pub(crate) template: String,
    /// Service name
    #[arg(long)]
    pub(crate) name: String,
    /// Container image (default: the template's)
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Plugin (addon) the service belongs to
    #[arg(long, value_name = "ID")]
    pub(crate) plugin_id: Option<String>,
    /// Container port
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,
    /// Number of instances (0-64)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) replicas: Option<u32>,
    /// Environment variable (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,
    /// Do not pull --image before creating (the daemon still pulls a missing one)
    #[arg(long)]
    pub(crate) no_pull: bool,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

pub(crate) fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    let mut chars = k.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{k}` is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub(crate) fn parse_volume(s: &str) -> Result<Value, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        [_, _, mode] => return Err(format!("volume mode must be `ro` or `rw`, got `{mode}`")),
        _ => return Err(format!("expected SRC:DST[:ro], got `{s}`")),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(format!("expected SRC:DST[:ro], got `{s}`"));
    }
    Ok(json!({"source": src, "target": dst, "read_only": ro}))
}

pub(crate) fn parse_cpu(s: &str) -> Result<String, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(s.trim().to_string()),
        _ => Err(format!("expected a positive number of cores (0.5), got `{s}`")),
    }
}

/// What a lifecycle call is for; decides the phase `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Start,
    Stop,
    Restart,
    Delete,
    Scale,
}

pub(crate) fn wait_phase(op: Op) -> &'static str {
    match op {
        Op::Create | Op::Start | Op::Restart | Op::Scale => "started",
        Op::Stop => "stopped",
        Op::Delete => "deleted",
    }
}

/// The `?wait=…&timeout=…` query for `op`, or "" when not waiting.
pub(crate) fn wait_query(op: Op, w: &WaitArgs) -> String {
    if !w.wait && w.timeout.is_none() {
        return String::new();
    }
    let mut q = format!("?wait={}", wait_phase(op));
    if let Some(t) = w.timeout {
        q.push_str(&format!("&timeout={t}"));
    }
    q
}

pub(crate) fn waiting(w: &WaitArgs) -> bool {
    w.wait || w.timeout.is_some()
}

pub(crate) fn svc_path(id: &str, action: &str) -> String {
    let mut p = format!("{SERVICES}/{}", client::encode_path_segment(id));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

impl Ctl {
    pub(crate) async fn services(&self, cmd: ServiceCmd) -> anyhow::Result<()> {
        match cmd {
            ServiceCmd::List(a) => {
                let q = query(&[("plugin_id", a.plugin_id), ("status", a.status)]);
                let data = self.call(Method::GET, &format!("{SERVICES}{q}"), None).await?;
                if self.quiet && !self.json {
                    return emit(&ids(&data));
                }
                self.show(&data, |d| render_service_list(d, now_secs()))
            }
            ServiceCmd::Create(a) => {
                let file = match &a.file {
                    Some(p) => Some(read_body_file(p)?),
                    None => None,
                };
                let body = build_create_body(&a, file)?;
                // build_create_body made sure `image` is a non-empty string, or that a
                // plugin id stands in for it (the daemon builds that image).
                if let (false, Some(image)) = (a.no_pull, body.get("image").and_then(Value::as_str)) {
                    self.pull_before_create(image).await?;
                }
                let path = format!("{SERVICES}{}", wait_query(Op::Create, &a.wait));
                let data = self.call(Method::POST, &path, Some(&body)).await?;
                self.report(Op::Create, waiting(&a.wait), &data)
            }
            ServiceCmd::Show(a) => {
                let data = self.call(Method::GET, &svc_path(&a.id, ""), None).await?;
                self.show(&data, |d| render_service(d, now_secs()))
            }
            ServiceCmd::Start(a) => self.lifecycle(Op::Start, &a.id, "start", &a.wait).await,
            ServiceCmd::Stop(a) => self.lifecycle(Op::Stop, &a.id, "stop", &a.wait).await,
            ServiceCmd::Restart(a) => self.lifecycle(Op::Restart, &a.id, "restart", &a.wait).await,
            ServiceCmd::Delete(a) => {
                let path = format!("{}{}", svc_path(&a.id, ""), wait_query(Op::Delete, &a.wait));
                let data = self.call(Method::DELETE, &path, None).await?;
                self.report(Op::Delete, waiting(&a.wait), &data)
            }
            ServiceCmd::Scale(a) => {
                let path = format!("{}{}", svc_path(&a.id, "scale"), wait_query(Op::Scale, &a.wait));
                let data = self.call(Method::POST, &path, Some(&json!({"replicas": a.replicas}))).await?;
                self.report(Op::Scale, waiting(&a.wait), &data)
            }
            ServiceCmd::Logs(a) => self.logs(&a).await,
            ServiceCmd::Metrics(a) => self.service_metrics(&a.id).await,
            ServiceCmd::Health => {
                let data = self.call(Method::GET, &format!("{API}/health"), None).await?;
                self.show(&data, render_services_health)
            }
        }
    }

    pub(crate) async fn lifecycle(&self, op: Op, id: &str, action: &str, w: &WaitArgs) -> anyhow::Result<()> {
        let path = format!("{}{}", svc_path(id, action), wait_query(op, w));
        let data = self.call(Method::POST, &path, None).await?;
        self.report(op, waiting(w), &data)
    }

    /// Output of create/start/stop/restart/delete/scale: the service's phase, and its
    /// endpoints once started. `--quiet` prints the id of a created service only.
    pub(crate) fn report(&self, op: Op, waited: bool, data: &Value) -> anyhow::Result<()> {
        if self.json {
            return emit(&format!("{}\n", serde_json::to_string_pretty(data)?));
        }
        if self.quiet {
            if op == Op::Create {
                return emit(&format!("{}\n", cell(data.get("id").and_then(Value::as_str).unwrap_or(""))));
            }
            return Ok(());
        }
        emit(&render_report(op, waited, data))
    }

    pub(crate) async fn logs(&self, a: &LogsArgs) -> anyhow::Result<()> {
        let q = query(&[
            ("lines", Some(a.lines.to_string())),
            ("follow", a.follow.then(|| "true".to_string())),
            ("timestamps", a.timestamps.then(|| "true".to_string())),
            ("instance", a.instance.map(|i| i.to_string())),
        ]);
        let path = format!("{}{q}", svc_path(&a.id, "logs"));
        if !a.follow {
            let data = self.call(Method::GET, &path, None).await?;
            if self.json {
                return emit(&format!("{}\n", serde_json::to_string_pretty(&data)?));
            }
            return emit(&render_log_lines(&data));
        }
        let mut stream = self.client.stream(Method::GET, &path).await?;
        // Lines as long as the container wrote them: nothing is cut.
        let mut lines = LineSplitter::with_max_line(usize::MAX);
        while let Some(chunk) = stream.next_chunk().await {
            let out = sanitized_lines(lines.push(&chunk?));
            if !out.is_empty() {
                emit(&out)?;
            }
        }
        emit(&sanitized_lines(lines.finish()))
    }

    pub(crate) async fn service_metrics(&self, id: &str) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &svc_path(id, "metrics"), None).await?;
        self.show(&data, render_metrics)
    }

    pub(crate) async fn discovery(&self) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &format!("{API}/discovery"), None).await?;
        self.show(&data, render_discovery)
    }

    pub(crate) async fn templates(&self) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &format!("{API}/templates"), None).await?;
        if self.quiet && !self.json {
            return emit(&ids(&data));
        }
        self.show(&data, render_templates)
    }

    pub(crate) async fn template_create(&self, a: &TemplateCreateArgs) -> anyhow::Result<()> {
        let body = build_template_body(a);
        // Without --image the daemon uses its configured template image: nothing to pull here.
        if let (Some(image), false) = (&a.image, a.no_pull) {
            self.pull_before_create(image).await?;
        }
        let path = format!("{API}/templates/{}/create{}", client::encode_path_segment(&a.template), wait_query(Op::Create, &a.wait));
        let data = self.call(Method::POST, &path, Some(&body)).await?;
        self.report(Op::Create, waiting(&a.wait), &data)
    }

    pub(crate) async fn cleanup(&self, days: u32) -> anyhow::Result<()> {
        let data = self.call(Method::POST, &format!("{API}/cleanup"), Some(&json!({"days": days}))).await?;
        self.show(&data, render_cleanup)
    }
}

pub(crate) fn read_body_file(path: &PathBuf) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        io::stdin().read_to_string(&mut s).context("reading the body from stdin")?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read --file {}: {e}", path.display())))?
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| UsageError(format!("--file {} is not valid JSON: {e}", path.display())))?;
    if !v.is_object() {
        return Err(UsageError(format!("--file {} must hold a JSON object", path.display())).into());
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Request bodies.

/// The create body: the `--file` object (if any) with the flags laid over it. Scalar flags
/// replace keys; `--env` is merged into `environment` (the flag wins per variable);
/// `--volume`, `--network` and `--depends-on` are appended to the file's lists;
/// `--memory/--cpu/--pids` and `--health-*` are merged into their objects.
pub(crate) fn build_create_body(a: &CreateArgs, file: Option<Value>) -> Result<Value, UsageError> {
    let mut body = match file {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(UsageError("--file must hold a JSON object".into())),
        None => Map::new(),
    };
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.to_string(), v);
        }
    };
    set("name", a.name.clone().map(Value::from));
    set("image", a.image.clone().map(Value::from));
    set("plugin_id", a.plugin_id.clone().map(Value::from));
    set("service_type", a.service_type.clone().map(Value::from));
    set("port", a.port.map(Value::from));
    set("host_port", a.host_port.map(Value::from));
    set("replicas", a.replicas.map(Value::from));
    set("restart_policy", a.restart_policy.clone().map(Value::from));
    set("version", a.version.clone().map(Value::from));

    if !a.env.is_empty() {
        let env = object_at(&mut body, "environment")?;
        for (k, v) in &a.env {
            env.insert(k.clone(), Value::from(v.clone()));
        }
    }
    append(&mut body, "volumes", a.volumes.iter().cloned())?;
    append(&mut body, "networks", a.networks.iter().cloned().map(Value::from))?;
    append(&mut body, "depends_on", a.depends_on.iter().cloned().map(Value::from))?;

    let limits: Vec<(&str, Value)> =
        [("memory", a.memory.clone().map(Value::from)), ("cpu", a.cpu.clone().map(Value::from)), ("pids", a.pids.map(Value::from))]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
    if !limits.is_empty() {
        let obj = object_at(&mut body, "resource_limits")?;
        for (k, v) in limits {
            obj.insert(k.into(), v);
        }
    }
    let health: Vec<(&str, Value)> = [
        ("path", a.health_path.clone().map(Value::from)),
        ("interval", a.health_interval.map(Value::from)),
        ("timeout", a.health_timeout.map(Value::from)),
        ("retries", a.health_retries.map(Value::from)),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if !health.is_empty() {
        let obj = object_at(&mut body, "health_check")?;
        for (k, v) in health {
            obj.insert(k.into(), v);
        }
    }
    // Without an image, a plugin id makes the daemon build one from its plugin directory.
    let plugin = matches!(body.get("plugin_id"), Some(Value::String(s)) if !s.is_empty());
    for key in ["name", "image"] {
        let present = matches!(body.get(key), Some(Value::String(s)) if !s.is_empty());
        let built = key == "image" && plugin && body.get("image").is_none();
        if !present && !built {
            return Err(UsageError(format!("--{key} is required (as a flag or in --file)")));
        }
    }
    Ok(Value::Object(body))
}

pub(crate) fn object_at<'a>(body: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>, UsageError> {
    let slot = body.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(|| UsageError(format!("`{key}` in --file must be an object")))
}

pub(crate) fn append(body: &mut Map<String, Value>, key: &str, items: impl Iterator<Item = Value>) -> Result<(), UsageError> {
    let items: Vec<Value> = items.collect();
    if items.is_empty() {
        return Ok(());
    }
    let slot = body.entry(key.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    let list = slot.as_array_mut().ok_or_else(|| UsageError(format!("`{key}` in --file must be a list")))?;
    list.extend(items);
    Ok(())
}

pub(crate) fn build_template_body(a: &TemplateCreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), Value::from(a.name.clone()));
    if let Some(v) = &a.image {
        body.insert("image".into(), Value::from(v.clone()));
    }
    if let Some(v) = &a.plugin_id {
        body.insert("plugin_id".into(), Value::from(v.clone()));
    }
    if let Some(v) = a.port {
        body.insert("port".into(), Value::from(v));
    }
    if let Some(v) = a.replicas {
        body.insert("replicas".into(), Value::from(v));
    }
    if !a.env.is_empty() {
        let env: Map<String, Value> = a.env.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        body.insert("environment".into(), Value::Object(env));
    }
    Value::Object(body)
}

pub(crate) fn instances(svc: &Value) -> &[Value] {
    svc.get("instances").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Endpoints of a service: one per instance host port. Only a reply without an
/// `instances` list falls back to `endpoint` (a service scaled to 0 has none).
pub(crate) fn endpoints(svc: &Value) -> Vec<String> {
    let host = svc.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()).unwrap_or("127.0.0.1");
    if svc.get("instances").is_some_and(Value::is_array) {
        return instances(svc)
            .iter()
            .filter_map(|i| i.get("host_port").and_then(Value::as_u64))
            .map(|p| format!("http://{host}:{p}"))
            .collect();
    }
    svc.get("endpoint").and_then(Value::as_str).filter(|e| !e.is_empty()).map(|e| vec![e.to_string()]).unwrap_or_default()
}

pub(crate) fn service_row(s: &Value, now: i64) -> Vec<String> {
    let inst = instances(s);
    let running = inst.iter().filter(|i| i.get("state").and_then(Value::as_str) == Some("running")).count();
    let desired = s.get("replicas").and_then(Value::as_u64).map(|r| r.to_string()).unwrap_or_else(|| "-".into());
    let ports: Vec<String> = inst.iter().filter_map(|i| i.get("host_port").and_then(Value::as_u64)).map(|p| p.to_string()).collect();
    let restarts: u64 = inst.iter().filter_map(|i| i.get("restarts").and_then(Value::as_u64)).sum();
    vec![
        text(s, "id"),
        text(s, "name"),
        text(s, "plugin_id"),
        text(s, "service_type"),
        text(s, "phase"),
        text(s, "health_status"),
        format!("{running}/{desired}"),
        if ports.is_empty() { "-".into() } else { ports.join(",") },
        restarts.to_string(),
        age(s.get("created_at"), now),
    ]
}

pub(crate) fn render_service_list(data: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = data.as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|s| service_row(s, now)).collect();
    if rows.is_empty() {
        return "no services\n".into();
    }
    render_table(&["ID", "NAME", "PLUGIN", "TYPE", "PHASE", "HEALTH", "REPLICAS", "PORTS", "RESTARTS", "AGE"], &rows)
}

pub(crate) fn render_service(s: &Value, now: i64) -> String {
    let env = s
        .get("environment")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", display(Some(v)))).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "-".into());
    let volumes = s
        .get("volumes")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .map(|vs| {
            vs.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    _ => {
                        let ro = if v.get("read_only").and_then(Value::as_bool) == Some(true) { ":ro" } else { "" };
                        let kind = v.get("kind").and_then(Value::as_str).map(|k| format!(" ({k})")).unwrap_or_default();
                        format!("{}:{}{ro}{kind}", text(v, "source"), text(v, "target"))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".into());
    let hc = s.get("health_check").unwrap_or(&Value::Null);
    let health_check = if hc.is_object() {
        format!(
            "GET {} every {}s, timeout {}s, {} retries",
            text(hc, "path"),
            text(hc, "interval"),
            text(hc, "timeout"),
            text(hc, "retries")
        )
    } else {
        "-".into()
    };
    let rl = s.get("resource_limits").unwrap_or(&Value::Null);
    let limits = if rl.is_object() {
        format!("memory {}, cpu {}, pids {}", text(rl, "memory"), text(rl, "cpu"), text(rl, "pids"))
    } else {
        "-".into()
    };
    let eps = endpoints(s);
    let when = |k: &str| match s.get(k) {
        Some(v) if !v.is_null() => format!("{} ({} ago)", display(Some(v)), age(Some(v), now)),
        _ => "-".into(),
    };
    let mut out = render_kv(&[
        ("ID", text(s, "id")),
        ("Name", text(s, "name")),
        ("Plugin", text(s, "plugin_id")),
        ("Type", text(s, "service_type")),
        ("Image", text(s, "image")),
        ("Version", text(s, "version")),
        ("Phase", format!("{} (desired: {})", text(s, "phase"), text(s, "desired"))),
        ("Status", text(s, "status")),
        ("Health", text(s, "health_status")),
        ("Replicas", text(s, "replicas")),
        ("Endpoints", if eps.is_empty() { "-".into() } else { eps.join(", ") }),
        ("Container port", text(s, "port")),
        ("Environment", env),
        ("Volumes", volumes),
        ("Networks", text(s, "networks")),
        ("Depends on", text(s, "depends_on")),
        ("Health check", health_check),
        ("Limits", limits),
        ("Restart policy", text(s, "restart_policy")),
        ("Last error", text(s, "last_error")),
        ("Exit code", text(s, "exit_code")),
        ("Created", when("created_at")),
        ("Updated", when("updated_at")),
    ]);
    let inst = instances(s);
    out.push('\n');
    if inst.is_empty() {
        out.push_str("no instances\n");
        return out;
    }
    let rows: Vec<Vec<String>> = inst
        .iter()
        .map(|i| {
            let container: String = text(i, "container_id").chars().take(12).collect();
            vec![
                text(i, "ordinal"),
                text(i, "id"),
                container,
                text(i, "state"),
                text(i, "health"),
                text(i, "host_port"),
                text(i, "restarts"),
                match i.get("started_at") {
                    Some(v) if !v.is_null() => age(Some(v), now),
                    _ => "-".into(),
                },
                text(i, "last_error"),
            ]
        })
        .collect();
    out.push_str(&render_table(&["#", "INSTANCE", "CONTAINER", "STATE", "HEALTH", "PORT", "RESTARTS", "UPTIME", "LAST ERROR"], &rows));
    out
}

pub(crate) fn render_report(op: Op, waited: bool, s: &Value) -> String {
    let name = cell(&text(s, "name"));
    let id = cell(&text(s, "id"));
    let phase = cell(&text(s, "phase"));
    let mut out = match op {
        Op::Create => format!("created {name} ({id}): {phase}\n"),
        Op::Scale => format!("{name} ({id}): {phase}, {} replica(s)\n", cell(&text(s, "replicas"))),
        _ => format!("{name} ({id}): {phase}\n"),
    };
    let show_endpoints = match op {
        Op::Stop | Op::Delete => false,
        _ => waited || phase == "Started",
    };
    if show_endpoints {
        for e in endpoints(s) {
            out.push_str(&format!("  {}\n", cell(&e)));
        }
    }
    out
}

pub(crate) fn render_log_lines(data: &Value) -> String {
    let mut out = String::new();
    // `data` is the list of lines; older daemons answered `{"lines": [...]}`.
    let lines = data.as_array().or_else(|| data.get("lines").and_then(Value::as_array)).map(Vec::as_slice).unwrap_or(&[]);
    for l in lines {
        // A "line" may still carry a newline (a multi-line record): split it.
        let t = l.as_str().map(str::to_string).unwrap_or_else(|| l.to_string());
        for part in t.trim_end_matches(['\n', '\r']).split('\n') {
            out.push_str(&sanitize_line(part));
            out.push('\n');
        }
    }
    out
}

pub(crate) fn render_metrics(d: &Value) -> String {
    let mut out = render_kv(&[
        ("CPU", format!("{}%", fixed(num(d, "cpu_percent"), 1))),
        (
            "Memory",
            format!(
                "{} MB / {} MB ({}%)",
                fixed(num(d, "memory_usage_mb"), 1),
                fixed(num(d, "memory_limit_mb"), 0),
                fixed(num(d, "memory_percent"), 1)
            ),
        ),
        ("Network", format!("rx {} MB, tx {} MB", fixed(num(d, "network_rx_mb"), 2), fixed(num(d, "network_tx_mb"), 2))),
        ("Time", text(d, "timestamp")),
    ]);
    let inst = d.get("instances").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if !inst.is_empty() {
        let rows: Vec<Vec<String>> = inst
            .iter()
            .map(|inst| {
                // Per-instance figures may sit in a nested `metrics` object.
                let i = inst.get("metrics").filter(|m| m.is_object()).unwrap_or(inst);
                vec![
                    text(inst, "ordinal"),
                    fixed(num(i, "cpu_percent"), 1),
                    fixed(num(i, "memory_usage_mb"), 1),
                    fixed(num(i, "memory_percent"), 1),
                    fixed(num(i, "network_rx_mb"), 2),
                    fixed(num(i, "network_tx_mb"), 2),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&render_table(&["#", "CPU%", "MEM MB", "MEM%", "RX MB", "TX MB"], &rows));
    }
    out
}

pub(crate) fn render_discovery(d: &Value) -> String {
    let services = d.get("services").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut out = String::new();
    if services.is_empty() {
        out.push_str("no services\n");
    } else {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                let eps = match s.get("endpoints") {
                    Some(Value::Array(a)) if !a.is_empty() => display(s.get("endpoints")),
                    _ => text(s, "endpoint"),
                };
                vec![
                    text(s, "id"),
                    text(s, "name"),
                    text(s, "plugin_id"),
                    text(s, "service_type"),
                    text(s, "phase"),
                    text(s, "health_status"),
                    eps,
                ]
            })
            .collect();
        out.push_str(&render_table(&["ID", "NAME", "PLUGIN", "TYPE", "PHASE", "HEALTH", "ENDPOINTS"], &rows));
    }
    let networks = d.get("networks").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if !networks.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = networks.iter().map(|n| vec![text(n, "name"), text(n, "subnet"), text(n, "internal")]).collect();
        out.push_str(&render_table(&["NETWORK", "SUBNET", "INTERNAL"], &rows));
    }
    if let Some(t) = d.get("totals").filter(|t| t.is_object()) {
        out.push_str(&format!(
            "\n{} services, {} instances, {} healthy, {} unhealthy\n",
            cell(&text(t, "services")),
            cell(&text(t, "instances")),
            cell(&text(t, "healthy")),
            cell(&text(t, "unhealthy"))
        ));
    }
    out
}

pub(crate) fn render_services_health(d: &Value) -> String {
    let mut out = format!(
        "{} services: {} healthy, {} unhealthy, {} starting, {} unknown\n",
        cell(&text(d, "total")),
        cell(&text(d, "healthy")),
        cell(&text(d, "unhealthy")),
        cell(&text(d, "starting")),
        cell(&text(d, "unknown"))
    );
    let services = d.get("services").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if !services.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> =
            services.iter().map(|s| vec![text(s, "id"), text(s, "name"), text(s, "phase"), text(s, "health_status")]).collect();
        out.push_str(&render_table(&["ID", "NAME", "PHASE", "HEALTH"], &rows));
    }
    out
}

pub(crate) fn render_templates(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no templates\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let rl = t.get("resource_limits").unwrap_or(&Value::Null);
            let hc = t.get("health_check").unwrap_or(&Value::Null);
            vec![
                text(t, "id"),
                text(t, "service_type"),
                text(t, "port"),
                text(rl, "memory"),
                text(rl, "cpu"),
                text(hc, "path"),
                text(t, "description"),
            ]
        })
        .collect();
    render_table(&["ID", "TYPE", "PORT", "MEMORY", "CPU", "HEALTH", "DESCRIPTION"], &rows)
}

pub(crate) fn render_cleanup(d: &Value) -> String {
    let removed = d.get("removed").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if removed.is_empty() {
        return "nothing to remove\n".into();
    }
    let rows: Vec<Vec<String>> = removed.iter().map(|s| vec![text(s, "id"), text(s, "name"), text(s, "phase")]).collect();
    format!("removed {} service(s)\n{}", removed.len(), render_table(&["ID", "NAME", "PHASE"], &rows))
}

#[cfg(test)]
mod tests;
