//! `addonctl addons …` and `addonctl widgets …`: register manifests (TOML or JSON),
//! install, configure live, start and stop, run actions, and list and render widgets,
//! through `/api/addons` and `/api/widgets`.

use std::path::PathBuf;

use addond::client::{self, ApiError, ClientError, LineSplitter, Method};
use addond::sanitize::sanitize as cell;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::input::{apply_sets, parse_json_arg, parse_set, read_document};
use crate::render::{
    age, display, emit, joined, list_of, names, now_secs, render_kv, render_table, rfc3339, sanitized_lines, text, timestamp,
};
use crate::services::{wait_query, Op, WaitArgs};
use crate::{query, Ctl, UsageError};

pub(crate) const ADDONS: &str = "/api/addons";
pub(crate) const WIDGETS: &str = "/api/widgets";

pub(crate) const ADDON_CATEGORIES: [&str; 5] = ["ecommerce", "analytics", "marketing", "communication", "utilities"];
pub(crate) const WIDGET_CATEGORIES: [&str; 5] = ["content", "form", "display", "interactive", "layout"];

#[derive(Subcommand, Debug)]
pub(crate) enum AddonCmd {
    /// Register a manifest: FILE.toml, FILE.json, or '-' for JSON on stdin
    Register {
        /// Manifest file (.toml or .json; '-' reads JSON from stdin)
        file: PathBuf,
    },
    /// The catalogue of registered addons, then the installed instances
    #[command(visible_alias = "ls")]
    List {
        /// Only addons of this category
        #[arg(long, value_name = "C", value_parser = ADDON_CATEGORIES)]
        category: Option<String>,
    },
    /// An installed addon (services, instances, breakers) or a catalogue entry
    Show(AddonNameArg),
    /// Install an addon from the catalogue and create its services
    Install(Box<InstallArgs>),
    /// Uninstall an addon instance and delete its services
    Uninstall(UninstallArgs),
    /// Remove every version of an addon from the catalogue
    Unregister(AddonNameArg),
    /// Start every service of an installed addon
    Start(AddonLifecycleArgs),
    /// Stop every service of an installed addon
    Stop(AddonLifecycleArgs),
    /// Restart every service of an installed addon
    Restart(AddonLifecycleArgs),
    /// Change an installed addon's config live (or print it with --show)
    Config(AddonConfigArgs),
    /// Run an action of an installed addon and print its JSON result
    #[command(visible_alias = "exec")]
    Execute(ExecuteArgs),
    /// Replace every instance with a registered version, health-gated, rolled back on failure
    Upgrade(Box<crate::deployments::UpgradeArgs>),
    /// Redeploy an earlier deployment's version, images and config
    Rollback(crate::deployments::RollbackArgs),
    /// Every install, upgrade, config change, rollback and promotion of an addon instance
    History(AddonNameArg),
    /// Environments of an installed addon (dev, staging, prod…): add, list
    #[command(subcommand)]
    Env(crate::environments::EnvCmd),
    /// Deploy the version and exact images one environment runs into another
    Promote(crate::environments::PromoteArgs),
    /// Build an addon's image from a directory (Dockerfile + addon.toml) and register it
    Build(crate::builds::BuildArgs),
    /// Publish a WebAssembly module to an installed runtime = "wasm" addon (live at once)
    Publish(crate::deployments::PublishArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum WidgetCmd {
    /// Widgets of every installed addon
    #[command(visible_alias = "ls")]
    List {
        /// Only widgets of this category
        #[arg(long, value_name = "C", value_parser = WIDGET_CATEGORIES)]
        category: Option<String>,
    },
    /// Render a widget: its JSON {html, css, javascript}, or the frame document (--html)
    Render(RenderArgs),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct AddonNameArg {
    /// Addon instance (installed) or addon name (catalogue)
    pub(crate) name: String,
}

#[derive(Args, Debug, Clone, Default, PartialEq)]
pub(crate) struct ConfigInput {
    /// The addon's config as a JSON object
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    pub(crate) config: Option<String>,
    /// The config from a file (.json or .toml; '-' reads JSON from stdin)
    #[arg(long, value_name = "FILE")]
    pub(crate) config_file: Option<PathBuf>,
    /// Set a top-level config key (repeatable); VALUE is JSON if it parses, else a string
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub(crate) set: Vec<(String, Value)>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct InstallArgs {
    /// Addon name in the catalogue
    pub(crate) name: String,
    /// Install under this name (default: the addon's name), to install it more than once
    #[arg(long, value_name = "NAME")]
    pub(crate) instance: Option<String>,
    /// Version to install (default: the newest registered)
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// Install these environments, each its own instance (e.g. dev,staging,prod)
    #[arg(long, value_name = "ENV,...", value_delimiter = ',')]
    pub(crate) environments: Option<Vec<String>>,
    #[command(flatten)]
    pub(crate) config: ConfigInput,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct UninstallArgs {
    /// Installed addon instance
    pub(crate) name: String,
    /// Uninstall even though installed addons depend on it
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct AddonLifecycleArgs {
    /// Installed addon instance
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["config", "config_file", "set", "show"])))]
pub(crate) struct AddonConfigArgs {
    /// Installed addon instance
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) input: ConfigInput,
    /// Print the current config instead of changing it
    #[arg(long, conflicts_with_all = ["config", "config_file", "set"])]
    pub(crate) show: bool,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ExecuteArgs {
    /// Installed addon instance
    pub(crate) name: String,
    /// Action name (see `addonctl addons show NAME`)
    pub(crate) action: String,
    /// The action's input as JSON
    #[arg(long, value_name = "JSON", conflicts_with = "data_file")]
    pub(crate) data: Option<String>,
    /// The input from a file (.json or .toml; '-' reads JSON from stdin)
    #[arg(long, value_name = "FILE")]
    pub(crate) data_file: Option<PathBuf>,
    /// Set a top-level input key (repeatable); VALUE is JSON if it parses, else a string
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub(crate) set: Vec<(String, Value)>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct RenderArgs {
    /// Installed addon instance
    pub(crate) addon: String,
    /// Widget name
    pub(crate) widget: String,
    /// The widget's config as a JSON object (checked against its schema, defaults applied)
    #[arg(long, value_name = "JSON")]
    pub(crate) config: Option<String>,
    /// Context for the render as a JSON object (user, page, …)
    #[arg(long, value_name = "JSON")]
    pub(crate) context: Option<String>,
    /// Print the complete HTML document for a sandboxed iframe instead of the JSON
    #[arg(long)]
    pub(crate) html: bool,
}

pub(crate) fn addon_path(name: &str, action: &str) -> String {
    let mut p = format!("{ADDONS}/{}", client::encode_path_segment(name));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

impl Ctl {
    pub(crate) async fn addons(&self, cmd: AddonCmd) -> anyhow::Result<()> {
        match cmd {
            AddonCmd::Register { file } => {
                let manifest = read_document(&file, "manifest")?;
                let reply = self.client.post(&format!("{ADDONS}/register"), Some(&manifest)).await?;
                let status = reply.status;
                let data = reply.into_result()?;
                self.show(&data, |d| {
                    let (name, version) = (cell(&text(d, "name")), cell(&text(d, "version")));
                    if status == 201 {
                        format!("registered {name} {version}\n")
                    } else {
                        format!("{name} {version} was already registered\n")
                    }
                })
            }
            AddonCmd::List { category } => {
                let q = query(&[("category", category.clone())]);
                let mut data = self.call(Method::GET, &format!("{ADDONS}{q}"), None).await?;
                // The daemon filters the catalogue; the installed list follows the same filter.
                if let (Some(c), Some(list)) = (&category, data.get_mut("installed").and_then(Value::as_array_mut)) {
                    list.retain(|i| i.get("category").and_then(Value::as_str) == Some(c.as_str()));
                }
                if self.quiet && !self.json {
                    return emit(&names(data.get("addons").unwrap_or(&Value::Null), "name"));
                }
                self.show(&data, render_addon_list)
            }
            AddonCmd::Show(a) => {
                let data = self.call(Method::GET, &addon_path(&a.name, ""), None).await?;
                self.show(&data, |d| if is_instance(d) { render_addon_instance(d, now_secs()) } else { render_addon_entry(d) })
            }
            AddonCmd::Install(a) => {
                let mut body = Map::new();
                if let Some(i) = &a.instance {
                    body.insert("instance".into(), Value::from(i.clone()));
                }
                if let Some(v) = &a.version {
                    body.insert("version".into(), Value::from(v.clone()));
                }
                let base = config_base(&a.config)?;
                if base.is_some() || !a.config.set.is_empty() {
                    let config = apply_sets(base.unwrap_or_else(|| json!({})), &a.config.set, "the config")?;
                    body.insert("config".into(), config);
                }
                if let Some(envs) = &a.environments {
                    body.insert("environments".into(), json!(envs));
                }
                let path = format!("{}{}", addon_path(&a.name, "install"), wait_query(Op::Create, &a.wait));
                let data = self.call(Method::POST, &path, Some(&Value::Object(body))).await?;
                if a.environments.is_some() {
                    if self.quiet && !self.json {
                        let names: Vec<String> = data["environments"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|e| {
                                format!(
                                    "{}
",
                                    cell(&text(e, "instance"))
                                )
                            })
                            .collect();
                        return emit(&names.concat());
                    }
                    return self.show(&data, crate::environments::render_environments);
                }
                if self.quiet && !self.json {
                    return emit(&format!("{}\n", cell(&text(&data, "instance"))));
                }
                self.show(&data, |d| render_addon_report("installed", d))
            }
            AddonCmd::Uninstall(a) => {
                let mut path = format!("{}{}", addon_path(&a.name, ""), wait_query(Op::Delete, &a.wait));
                if a.force {
                    path.push_str(if path.contains('?') { "&force=true" } else { "?force=true" });
                }
                let data = self.call(Method::DELETE, &path, None).await?;
                self.show(&data, |d| render_addon_report("uninstalled", d))
            }
            AddonCmd::Unregister(a) => {
                let data = self.call(Method::DELETE, &format!("{}?unregister=true", addon_path(&a.name, "")), None).await?;
                self.show(&data, |d| {
                    format!("unregistered {} ({} version(s))\n", cell(&text(d, "name")), cell(&text(d, "versions_removed")))
                })
            }
            AddonCmd::Start(a) => self.addon_lifecycle(Op::Start, "start", &a).await,
            AddonCmd::Stop(a) => self.addon_lifecycle(Op::Stop, "stop", &a).await,
            AddonCmd::Restart(a) => self.addon_lifecycle(Op::Restart, "restart", &a).await,
            AddonCmd::Config(a) => self.addon_config(&a).await,
            AddonCmd::Upgrade(a) => self.addon_upgrade(&a).await,
            AddonCmd::Rollback(a) => self.addon_rollback(&a).await,
            AddonCmd::Publish(a) => self.addon_publish(&a).await,
            AddonCmd::History(a) => self.addon_history(&a.name).await,
            AddonCmd::Env(c) => self.addon_env(&c).await,
            AddonCmd::Promote(a) => self.addon_promote(&a).await,
            AddonCmd::Build(a) => self.addon_build(a).await,
            AddonCmd::Execute(a) => {
                let base = match (&a.data, &a.data_file) {
                    (Some(text), _) => Some(parse_json_arg("--data", text)?),
                    (None, Some(path)) => Some(read_document(path, "--data-file")?),
                    (None, None) => None,
                };
                // No input given: an empty object (the daemon applies the schema's defaults).
                let data = apply_sets(base.unwrap_or_else(|| json!({})), &a.set, "the input")?;
                let body = json!({"action": a.action, "data": data});
                let out = self.call(Method::POST, &addon_path(&a.name, "execute"), Some(&body)).await?;
                // The result is JSON whatever the flags: print it as such.
                if self.quiet && !self.json {
                    return Ok(());
                }
                emit(&format!("{}\n", serde_json::to_string_pretty(&out)?))
            }
        }
    }

    pub(crate) async fn addon_lifecycle(&self, op: Op, action: &str, a: &AddonLifecycleArgs) -> anyhow::Result<()> {
        let path = format!("{}{}", addon_path(&a.name, action), wait_query(op, &a.wait));
        let data = self.call(Method::POST, &path, None).await?;
        self.show(&data, |d| render_addon_report("", d))
    }

    /// `addons config NAME --show`, or a new config: `--config`/`--config-file` with the
    /// `--set` keys laid over it, or (only `--set`) the current config with those keys changed.
    pub(crate) async fn addon_config(&self, a: &AddonConfigArgs) -> anyhow::Result<()> {
        let base = config_base(&a.input)?;
        let current = if a.show || base.is_none() {
            let d = self.call(Method::GET, &addon_path(&a.name, ""), None).await?;
            if !is_instance(&d) {
                return Err(ApiError {
                    status: 404,
                    code: addond::http::ErrorCode::NotFound.as_str().into(),
                    message: format!(
                        "addon `{0}` is registered but not installed; install it with `addonctl addons install {0}`",
                        cell(&a.name)
                    ),
                    field: None,
                }
                .into());
            }
            Some(d.get("config").cloned().unwrap_or_else(|| json!({})))
        } else {
            None
        };
        if a.show {
            if self.quiet && !self.json {
                return Ok(());
            }
            return emit(&format!("{}\n", serde_json::to_string_pretty(&current.unwrap_or(Value::Null))?));
        }
        let start = match (base, current) {
            (Some(b), _) => b,
            (None, Some(Value::Null)) | (None, None) => json!({}),
            (None, Some(c)) => c,
        };
        let config = apply_sets(start, &a.input.set, "the config")?;
        let data = self.call(Method::PUT, &addon_path(&a.name, "config"), Some(&json!({"config": config}))).await?;
        self.show(&data, render_config_result)
    }

    pub(crate) async fn widgets(&self, cmd: WidgetCmd) -> anyhow::Result<()> {
        match cmd {
            WidgetCmd::List { category } => {
                let data = self.call(Method::GET, &format!("{WIDGETS}{}", query(&[("category", category)])), None).await?;
                if self.quiet && !self.json {
                    let mut out = String::new();
                    for w in data.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        out.push_str(&format!("{}/{}\n", cell(&text(w, "addon")), cell(&text(w, "widget"))));
                    }
                    return emit(&out);
                }
                self.show(&data, render_widget_list)
            }
            WidgetCmd::Render(a) => {
                let config = a.config.as_deref().map(|t| parse_json_arg("--config", t)).transpose()?;
                let context = a.context.as_deref().map(|t| parse_json_arg("--context", t)).transpose()?;
                let path = format!("{WIDGETS}/{}/{}", client::encode_path_segment(&a.addon), client::encode_path_segment(&a.widget));
                if a.html {
                    return self.widget_frame(&path, config, context).await;
                }
                let body = json!({"config": config.unwrap_or_else(|| json!({})), "context": context.unwrap_or_else(|| json!({}))});
                let data = self.call(Method::POST, &path, Some(&body)).await?;
                if self.quiet && !self.json {
                    return Ok(());
                }
                emit(&format!("{}\n", serde_json::to_string_pretty(&data)?))
            }
        }
    }

    /// `GET …/frame`: a `text/html` document, printed line by line (sanitised) as it came.
    pub(crate) async fn widget_frame(&self, path: &str, config: Option<Value>, context: Option<Value>) -> anyhow::Result<()> {
        let q = query(&[("config", config.map(|c| c.to_string())), ("context", context.map(|c| c.to_string()))]);
        let raw = self.client.request_raw(Method::GET, &format!("{path}/frame{q}"), None).await?;
        if !(200..300).contains(&raw.status) {
            let body: Value = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
            let reply = client::Response { status: raw.status, body };
            return Err(match reply.error() {
                Some(e) => e.into(),
                None => ClientError::Protocol(format!("the daemon answered HTTP {}", raw.status)).into(),
            });
        }
        if self.quiet {
            return Ok(());
        }
        let mut lines = LineSplitter::with_max_line(usize::MAX);
        let mut out = sanitized_lines(lines.push(&raw.body));
        out.push_str(&sanitized_lines(lines.finish()));
        emit(&out)
    }
}

/// The object `--config JSON` or `--config-file FILE` gives, if either does.
pub(crate) fn config_base(input: &ConfigInput) -> Result<Option<Value>, UsageError> {
    let v = match (&input.config, &input.config_file) {
        (Some(text), _) => parse_json_arg("--config", text)?,
        (None, Some(path)) => read_document(path, "--config-file")?,
        (None, None) => return Ok(None),
    };
    if !v.is_object() {
        return Err(UsageError("the config must be a JSON object ({\"key\": value, …})".into()));
    }
    Ok(Some(v))
}

// ---------------------------------------------------------------------------------------
// Rendering.

/// `GET /api/addons/{name}` answers an installed instance or a catalogue entry.
pub(crate) fn is_instance(d: &Value) -> bool {
    d.get("instance").is_some_and(|i| !i.is_null())
}

/// `inventory ^1.0, mail >=2` from a dependencies object, or `-`.
pub(crate) fn dependencies(v: &Value) -> String {
    match v.get("dependencies").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m.iter().map(|(k, r)| format!("{k} {}", display(Some(r)))).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    }
}

/// Healthy instances over desired replicas, summed over an installed addon's services.
pub(crate) fn addon_health(d: &Value) -> (u64, u64) {
    let services = list_of(d, "services");
    let healthy = services
        .iter()
        .flat_map(|s| list_of(s, "instances"))
        .filter(|i| i.get("health").and_then(Value::as_str) == Some("healthy"))
        .count() as u64;
    let replicas = services.iter().filter_map(|s| s.get("replicas").and_then(Value::as_u64)).sum();
    (healthy, replicas)
}

pub(crate) fn render_addon_list(d: &Value) -> String {
    let addons = list_of(d, "addons");
    let mut out = String::new();
    if addons.is_empty() {
        out.push_str("no addons registered\n");
    } else {
        let rows: Vec<Vec<String>> = addons
            .iter()
            .map(|a| {
                let installed: Vec<String> = list_of(a, "installed")
                    .iter()
                    .map(|i| {
                        let (inst, ver) = (text(i, "instance"), text(i, "version"));
                        if ver == text(a, "version") {
                            inst
                        } else {
                            format!("{inst}@{ver}")
                        }
                    })
                    .collect();
                vec![
                    text(a, "name"),
                    text(a, "version"),
                    joined(a, "versions"),
                    text(a, "category"),
                    joined(a, "actions"),
                    joined(a, "widgets"),
                    if installed.is_empty() { "-".into() } else { installed.join(",") },
                ]
            })
            .collect();
        out.push_str(&render_table(&["NAME", "VERSION", "VERSIONS", "CATEGORY", "ACTIONS", "WIDGETS", "INSTALLED"], &rows));
    }
    let installed = list_of(d, "installed");
    out.push('\n');
    if installed.is_empty() {
        out.push_str("no addons installed\n");
        return out;
    }
    let rows: Vec<Vec<String>> = installed
        .iter()
        .map(|i| {
            let (healthy, replicas) = addon_health(i);
            vec![
                text(i, "instance"),
                text(i, "name"),
                text(i, "version"),
                text(i, "phase"),
                list_of(i, "services").len().to_string(),
                format!("{healthy}/{replicas}"),
            ]
        })
        .collect();
    out.push_str(&render_table(&["INSTANCE", "ADDON", "VERSION", "PHASE", "SERVICES", "HEALTHY"], &rows));
    out
}

pub(crate) fn render_addon_instance(d: &Value, now: i64) -> String {
    let (healthy, replicas) = addon_health(d);
    let config = match d.get("config") {
        Some(c) if !c.is_null() => c.to_string(),
        _ => "-".into(),
    };
    // The daemon may send seconds, milliseconds or RFC 3339: print RFC 3339 either way.
    let installed = match d.get("installed_at") {
        Some(v) if !v.is_null() => match timestamp(v) {
            Some(t) => format!("{} ({} ago)", rfc3339(t), age(Some(v), now)),
            None => display(Some(v)),
        },
        _ => "-".into(),
    };
    let mut out = render_kv(&[
        ("Instance", text(d, "instance")),
        ("Addon", text(d, "name")),
        ("Version", text(d, "version")),
        ("Category", text(d, "category")),
        ("Phase", text(d, "phase")),
        ("Healthy", format!("{healthy}/{replicas} instance(s)")),
        ("Config", config),
        ("Actions", text(d, "actions")),
        ("Widgets", text(d, "widgets")),
        ("Permissions", text(d, "permissions")),
        ("Dependencies", dependencies(d)),
        ("Installed", installed),
    ]);
    out.push('\n');
    let services = list_of(d, "services");
    if services.is_empty() {
        out.push_str("no services\n");
        return out;
    }
    let mut rows = Vec::new();
    for s in services {
        let service = vec![text(s, "name"), text(s, "phase"), text(s, "replicas")];
        let inst = list_of(s, "instances");
        if inst.is_empty() {
            rows.push([service.clone(), vec!["-".into(); 6], vec![text(s, "last_error")]].concat());
        }
        for (n, i) in inst.iter().enumerate() {
            // The service's columns and last error once, on its first instance's row.
            let lead = if n == 0 { service.clone() } else { vec![String::new(); 3] };
            let last_error = if n == 0 { text(s, "last_error") } else { String::new() };
            rows.push(
                [
                    lead,
                    vec![
                        text(i, "ordinal"),
                        text(i, "id"),
                        text(i, "host_port"),
                        text(i, "health"),
                        text(i, "restarts"),
                        text(i, "breaker"),
                    ],
                    vec![last_error],
                ]
                .concat(),
            );
        }
    }
    out.push_str(&render_table(
        &["SERVICE", "PHASE", "REPLICAS", "#", "INSTANCE", "PORT", "HEALTH", "RESTARTS", "BREAKER", "LAST ERROR"],
        &rows,
    ));
    out
}

pub(crate) fn render_addon_entry(d: &Value) -> String {
    let installed: Vec<String> =
        list_of(d, "installed").iter().map(|i| format!("{} ({})", text(i, "instance"), text(i, "version"))).collect();
    let m = d.get("manifest").unwrap_or(&Value::Null);
    let mut out = render_kv(&[
        ("Name", text(d, "name")),
        ("Version", text(d, "version")),
        ("Versions", text(d, "versions")),
        ("Description", text(d, "description")),
        ("Author", text(d, "author")),
        ("Category", text(d, "category")),
        ("Image", text(d, "image")),
        ("Permissions", text(d, "permissions")),
        ("Dependencies", dependencies(d)),
        ("Installed", if installed.is_empty() { "-".into() } else { installed.join(", ") }),
    ]);
    let actions = list_of(m, "actions");
    if !actions.is_empty() {
        let rows: Vec<Vec<String>> = actions
            .iter()
            .map(|a| {
                let required = a.get("input_schema").map(|s| text(s, "required")).unwrap_or_else(|| "-".into());
                let timeout = match a.get("timeout_seconds") {
                    Some(t) if !t.is_null() => format!("{}s", display(Some(t))),
                    _ => "-".into(),
                };
                vec![text(a, "name"), required, timeout, text(a, "description")]
            })
            .collect();
        out.push('\n');
        out.push_str(&render_table(&["ACTION", "REQUIRED INPUT", "TIMEOUT", "DESCRIPTION"], &rows));
    }
    let widgets = list_of(m, "widgets");
    if !widgets.is_empty() {
        let rows: Vec<Vec<String>> = widgets
            .iter()
            .map(|w| vec![text(w, "name"), text(w, "category"), schema_keys(w.get("config_schema")), text(w, "description")])
            .collect();
        out.push('\n');
        out.push_str(&render_table(&["WIDGET", "CATEGORY", "CONFIG", "DESCRIPTION"], &rows));
    }
    let services = list_of(m, "services");
    if !services.is_empty() {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                let rl = s.get("resource_limits").unwrap_or(&Value::Null);
                vec![
                    text(s, "name"),
                    text(s, "service_type"),
                    match s.get("replicas") {
                        Some(r) if !r.is_null() => display(Some(r)),
                        _ => "1".into(),
                    },
                    text(s, "port"),
                    text(rl, "memory"),
                    text(rl, "cpu"),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&render_table(&["SERVICE", "TYPE", "REPLICAS", "PORT", "MEMORY", "CPU"], &rows));
    }
    out
}

/// The property names of an object schema (`title,currency`), or `-`.
pub(crate) fn schema_keys(schema: Option<&Value>) -> String {
    match schema.and_then(|s| s.get("properties")).and_then(Value::as_object) {
        Some(p) if !p.is_empty() => p.keys().cloned().collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

/// `installed shop 1.0.0 as shop-eu: Started` (or `uninstalled …`, or for start/stop/restart
/// just `shop-eu: Started`), then one line per service with its phase and health.
pub(crate) fn render_addon_report(verb: &str, d: &Value) -> String {
    let instance = cell(&text(d, "instance"));
    let name = cell(&text(d, "name"));
    let phase = cell(&text(d, "phase"));
    let version = cell(&text(d, "version"));
    let mut out = match verb {
        "" => format!("{instance}: {phase}\n"),
        _ if name == "-" || (name == instance && version == "-") => format!("{verb} {instance}: {phase}\n"),
        _ if name == instance => format!("{verb} {name} {version}: {phase}\n"),
        _ => format!("{verb} {name} {version} as {instance}: {phase}\n"),
    };
    for s in list_of(d, "services") {
        if !s.is_object() {
            continue;
        }
        let inst = list_of(s, "instances");
        let healthy = inst.iter().filter(|i| i.get("health").and_then(Value::as_str) == Some("healthy")).count();
        out.push_str(&format!(
            "  {}: {}, {healthy}/{} healthy\n",
            cell(&text(s, "name")),
            cell(&text(s, "phase")),
            cell(&text(s, "replicas"))
        ));
    }
    out
}

/// The reply of `PUT …/config`: how many instances took the config live, how many are
/// being replaced to pick it up, and which could not be reached.
pub(crate) fn render_config_result(d: &Value) -> String {
    let failed = list_of(d, "failed");
    let mut out = format!(
        "config of {}: applied to {} instance(s), replacing {}, failed {}\n",
        cell(&text(d, "instance")),
        cell(&text(d, "applied")),
        cell(&text(d, "replacing")),
        failed.len()
    );
    for f in failed {
        out.push_str(&format!("  {}: {}\n", cell(&text(f, "instance")), cell(&text(f, "error"))));
    }
    out
}

pub(crate) fn render_widget_list(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no widgets (install an addon that has some)\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let (addon, name) = (text(w, "addon"), text(w, "addon_name"));
            vec![
                if name == addon || name == "-" { addon } else { format!("{addon} ({name})") },
                text(w, "widget"),
                text(w, "category"),
                text(w, "version"),
                schema_keys(w.get("config_schema")),
                text(w, "description"),
            ]
        })
        .collect();
    render_table(&["ADDON", "WIDGET", "CATEGORY", "VERSION", "CONFIG", "DESCRIPTION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::parse;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn addon_command_lines() {
        let c = parse(&[
            "addons",
            "install",
            "shop",
            "--instance",
            "shop-eu",
            "--version",
            "1.0.0",
            "--set",
            "currency=USD",
            "--set",
            "n=2",
            "--wait",
        ]);
        let Command::Addons(AddonCmd::Install(a)) = c.command else { panic!() };
        assert_eq!((a.name.as_str(), a.instance.as_deref(), a.version.as_deref()), ("shop", Some("shop-eu"), Some("1.0.0")));
        assert_eq!(a.config.set, vec![("currency".to_string(), json!("USD")), ("n".to_string(), json!(2))]);
        assert_eq!(config_base(&a.config).unwrap(), None);
        assert_eq!(wait_query(Op::Create, &a.wait), "?wait=started");

        let c = parse(&["addons", "install", "shop", "--config", r#"{"currency":"EUR"}"#, "--timeout", "90"]);
        let Command::Addons(AddonCmd::Install(a)) = c.command else { panic!() };
        assert_eq!(config_base(&a.config).unwrap(), Some(json!({"currency": "EUR"})));
        assert_eq!(wait_query(Op::Create, &a.wait), "?wait=started&timeout=90");
        let c = parse(&["addons", "install", "shop", "--config", "[1]"]);
        let Command::Addons(AddonCmd::Install(a)) = c.command else { panic!() };
        assert!(config_base(&a.config).unwrap_err().0.contains("JSON object"));
        let c = parse(&["addons", "install", "shop", "--config", "{nope"]);
        let Command::Addons(AddonCmd::Install(a)) = c.command else { panic!() };
        assert!(config_base(&a.config).unwrap_err().0.starts_with("--config is not valid JSON"));

        let c = parse(&["addons", "config", "shop", "--show"]);
        assert!(matches!(c.command, Command::Addons(AddonCmd::Config(ref a)) if a.show && a.input == ConfigInput::default()));
        let c = parse(&["addons", "config", "shop", "--config-file", "c.toml", "--set", "a=1"]);
        assert!(matches!(c.command, Command::Addons(AddonCmd::Config(ref a)) if !a.show && a.input.config_file.is_some()));
        let c = parse(&["addons", "exec", "shop", "add", "--set", "a=1", "--set", "b=2"]);
        assert!(matches!(c.command, Command::Addons(AddonCmd::Execute(ref a)) if a.action == "add" && a.set.len() == 2));
        let c = parse(&["addons", "uninstall", "shop", "--force", "--wait"]);
        assert!(matches!(c.command, Command::Addons(AddonCmd::Uninstall(ref a)) if a.force && a.wait.wait));
        assert!(matches!(
            parse(&["addons", "ls", "--category", "ecommerce"]).command,
            Command::Addons(AddonCmd::List { category: Some(_) })
        ));
        let c = parse(&["widgets", "render", "shop", "checkout", "--config", "{}", "--context", "{\"user\":\"a\"}", "--html"]);
        assert!(matches!(c.command, Command::Widgets(WidgetCmd::Render(ref a)) if a.html && a.widget == "checkout"));
        assert!(matches!(parse(&["widgets", "ls"]).command, Command::Widgets(WidgetCmd::List { category: None })));

        for bad in [
            vec!["addons", "register"],
            vec!["addons", "config", "shop"],
            vec!["addons", "config", "shop", "--show", "--set", "a=1"],
            vec!["addons", "config", "shop", "--config", "{}", "--config-file", "c.json"],
            vec!["addons", "install", "shop", "--set", "novalue"],
            vec!["addons", "execute", "shop"],
            vec!["addons", "execute", "shop", "add", "--data", "{}", "--data-file", "d.json"],
            vec!["addons", "list", "--category", "games"],
            vec!["widgets", "list", "--category", "sidebar"],
            vec!["widgets", "render", "shop"],
            vec!["addons", "start", "shop", "--timeout", "601"],
        ] {
            let e = Cli::try_parse_from(std::iter::once("addonctl").chain(bad.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(addon_path("shop eu", "execute"), "/api/addons/shop%20eu/execute");
        assert_eq!(addon_path("shop", ""), "/api/addons/shop");
    }

    fn sample_instance() -> Value {
        json!({"instance": "shop-eu", "name": "shop", "version": "1.0.0", "category": "ecommerce",
            "phase": "Started", "config": {"currency": "EUR"}, "actions": ["add", "echo"], "widgets": ["checkout"],
            "permissions": ["network.internet"], "dependencies": {"inventory": "^1.0"}, "installed_at": 1_795_304_400_000i64,
            "services": [{"id": "svc_1", "name": "shop-eu-api", "service_type": "rest_api", "phase": "Started",
                "replicas": 3, "last_error": null, "instances": [
                    {"id": "inst_a", "ordinal": 0, "host_port": 8004, "health": "healthy", "restarts": 0, "breaker": "closed"},
                    {"id": "inst_b", "ordinal": 1, "host_port": 8005, "health": "unhealthy", "restarts": 2, "breaker": "open"},
                    {"id": "inst_c", "ordinal": 2, "host_port": 8006, "health": "healthy", "restarts": 0, "breaker": "closed"}]}]})
    }

    #[test]
    fn addon_list_tables() {
        let norm = |s: &str| s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
        let data = json!({
            "addons": [
                {"name": "shop", "version": "1.1.0", "versions": ["1.0.0", "1.1.0"], "category": "ecommerce",
                 "actions": ["add", "echo"], "widgets": ["checkout"],
                 "installed": [{"instance": "shop", "version": "1.1.0"}, {"instance": "shop-eu", "version": "1.0.0"}]},
                {"name": "evil\u{1b}[2J", "version": "0.1.0", "versions": ["0.1.0"], "category": "utilities",
                 "actions": [], "widgets": [], "installed": []}],
            "installed": [sample_instance()]});
        let out = render_addon_list(&data);
        assert_eq!(
            norm(&out),
            norm(
                "NAME VERSION VERSIONS CATEGORY ACTIONS WIDGETS INSTALLED\n\
                  shop 1.1.0 1.0.0,1.1.0 ecommerce add,echo checkout shop,shop-eu@1.0.0\n\
                  evil 0.1.0 0.1.0 utilities - - -\n\
                  \n\
                  INSTANCE ADDON VERSION PHASE SERVICES HEALTHY\n\
                  shop-eu shop 1.0.0 Started 1 2/3"
            )
        );
        assert!(!out.contains('\u{1b}'));
        assert_eq!(render_addon_list(&json!({"addons": [], "installed": []})), "no addons registered\n\nno addons installed\n");
        assert_eq!(names(&data["addons"], "name"), "shop\nevil\n");
    }

    #[test]
    fn addon_show_blocks() {
        let now = timestamp(&json!("2026-11-21T23:45:00Z")).unwrap();
        let d = sample_instance();
        assert!(is_instance(&d));
        let out = render_addon_instance(&d, now);
        assert!(out.contains("Instance:      shop-eu\n"), "{out}");
        assert!(out.contains("Healthy:       2/3 instance(s)\n"), "{out}");
        assert!(out.contains("Config:        {\"currency\":\"EUR\"}\n"), "{out}");
        assert!(out.contains("Dependencies:  inventory ^1.0\n"), "{out}");
        assert!(out.contains("Installed:     2026-11-21T23:40:00Z (5m ago)\n"), "{out}");
        let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("SERVICE")).collect();
        assert_eq!(table.len(), 4, "{out}");
        assert_eq!(
            table[1].split_whitespace().collect::<Vec<_>>(),
            ["shop-eu-api", "Started", "3", "0", "inst_a", "8004", "healthy", "0", "closed", "-"]
        );
        // Further instances of a service leave its columns blank.
        assert_eq!(table[2].split_whitespace().collect::<Vec<_>>(), ["1", "inst_b", "8005", "unhealthy", "2", "open"]);

        let entry = json!({"name": "shop", "version": "1.1.0", "versions": ["1.0.0", "1.1.0"], "description": "A shop",
            "author": "me", "category": "ecommerce", "image": "addond-sample:latest", "actions": ["add"], "widgets": ["checkout"],
            "permissions": [], "dependencies": {}, "installed": [],
            "manifest": {"actions": [{"name": "add", "description": "", "input_schema": {"type": "object", "required": ["a", "b"]}, "timeout_seconds": null},
                                     {"name": "sleep", "description": "waits", "input_schema": {}, "timeout_seconds": 1}],
                         "widgets": [{"name": "checkout", "category": "form", "description": "", "config_schema": {"properties": {"title": {}}}}],
                         "services": [{"name": "api", "replicas": 3, "resource_limits": {"memory": "32m"}}]}});
        assert!(!is_instance(&entry));
        let out = render_addon_entry(&entry);
        assert!(
            out.contains("Versions:      1.0.0, 1.1.0\n") && out.contains("Installed:     -\n") && out.contains("Dependencies:  -\n"),
            "{out}"
        );
        let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.contains(&vec!["add", "a,", "b", "-", "-"]), "{out}");
        assert!(rows.contains(&vec!["sleep", "-", "1s", "waits"]), "{out}");
        assert!(rows.contains(&vec!["checkout", "form", "title", "-"]), "{out}");
        assert!(rows.contains(&vec!["api", "-", "3", "-", "32m", "-"]), "{out}");
    }

    #[test]
    fn addon_reports_and_results() {
        let d = sample_instance();
        assert_eq!(render_addon_report("installed", &d), "installed shop 1.0.0 as shop-eu: Started\n  shop-eu-api: Started, 2/3 healthy\n");
        let mut same = d.clone();
        same["instance"] = json!("shop");
        assert!(render_addon_report("installed", &same).starts_with("installed shop 1.0.0: Started\n"));
        assert!(render_addon_report("", &d).starts_with("shop-eu: Started\n"));
        // Uninstall replies: service names only; after --wait only the instance and phase.
        let gone = json!({"instance": "shop-eu", "name": "shop", "version": "1.0.0", "phase": "Deleting", "services": ["shop-eu-api"]});
        assert_eq!(render_addon_report("uninstalled", &gone), "uninstalled shop 1.0.0 as shop-eu: Deleting\n");
        assert_eq!(
            render_addon_report("uninstalled", &json!({"instance": "shop-eu", "phase": "Deleted"})),
            "uninstalled shop-eu: Deleted\n"
        );

        let r = render_config_result(&json!({"instance": "shop", "config": {}, "applied": 2, "replacing": 1,
            "failed": [{"instance": "inst_c", "error": "connection \u{1b}[31mrefused"}]}));
        assert_eq!(r, "config of shop: applied to 2 instance(s), replacing 1, failed 1\n  inst_c: connection refused\n");

        let w = render_widget_list(&json!([
            {"addon": "shop", "addon_name": "shop", "version": "1.0.0", "widget": "checkout", "category": "form", "description": "Pay", "config_schema": {"properties": {"title": {}}}},
            {"addon": "shop-eu", "addon_name": "shop", "version": "1.0.0", "widget": "receipt", "category": "content", "description": "", "config_schema": {}}]));
        let rows: Vec<Vec<&str>> = w.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["ADDON", "WIDGET", "CATEGORY", "VERSION", "CONFIG", "DESCRIPTION"]);
        assert_eq!(rows[1], ["shop", "checkout", "form", "1.0.0", "title", "Pay"]);
        assert_eq!(rows[2], ["shop-eu", "(shop)", "receipt", "content", "1.0.0", "-", "-"]);
        assert!(render_widget_list(&json!([])).starts_with("no widgets"));
    }
}
