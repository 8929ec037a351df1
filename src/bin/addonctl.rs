//! addonctl: the operator's command line for addond. It parses the command line (clap),
//! turns it into admin API calls through `addond::client`, and renders the replies as
//! plain aligned text (or the raw `data` with `--json`). Everything the daemon sends is
//! sanitised before it reaches the terminal. Exit codes are listed in `EXIT_CODES` and in
//! docs/addonctl.md.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use addond::client::{self, ApiError, Client, ClientError, Method};
use addond::sanitize::{sanitize as cell, sanitize_line};
use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  the daemon answered an error (printed as `error: <message>` on stderr), or another failure
  2  usage error (bad flags, unreadable or invalid --file)
  3  addond is not running (no socket, or nothing listening on it)
  4  permission denied (socket not accessible, or the daemon answered 403 forbidden)
  5  --wait ended in wait_timeout or service_failed

Socket: --socket PATH, else $ADDOND_SOCKET, else ./.addond/addond.sock when it exists
(addond --dev), else /run/addond/addond.sock.";

const SERVICES: &str = "/api/plugin-microservice/services";
const API: &str = "/api/plugin-microservice";
const PULL: &str = "/api/plugin-microservice/images/pull";
const ADDONS: &str = "/api/addons";
const WIDGETS: &str = "/api/widgets";

// ---------------------------------------------------------------------------------------
// Command line.

#[derive(Parser, Debug)]
#[command(
    name = "addonctl",
    version,
    about = "Control addond: create, scale, watch and remove addon services",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Path of the daemon's admin socket
    #[arg(long, global = true, value_name = "PATH", display_order = 900)]
    socket: Option<PathBuf>,
    /// Print the reply's raw `data` as pretty JSON instead of tables
    #[arg(long, global = true, display_order = 901)]
    json: bool,
    /// Print nothing on success (lists and create print only ids)
    #[arg(short, long, global = true, display_order = 902)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Daemon health: version, uptime, database, Docker
    Health,
    /// Manage services (list, create, show, start, stop, restart, delete, scale, logs, metrics)
    #[command(subcommand, visible_alias = "svc")]
    Services(ServiceCmd),
    /// Daemon metrics (Prometheus text); with ID, one service's resource usage
    Metrics {
        /// Service id or name
        id: Option<String>,
    },
    /// Services with their endpoints and health, networks and totals
    Discovery,
    /// Service templates
    #[command(subcommand)]
    Templates(TemplateCmd),
    /// Container images on the daemon's Docker engine
    #[command(subcommand)]
    Images(ImageCmd),
    /// Addons: register manifests, install, configure, start/stop, run actions
    #[command(subcommand)]
    Addons(AddonCmd),
    /// Widgets of installed addons: list and render
    #[command(subcommand)]
    Widgets(WidgetCmd),
    /// Applications: the gateway's clients
    #[command(subcommand)]
    Apps(AppCmd),
    /// Grants: which application may call which addon, with its API key and limits
    #[command(subcommand)]
    Grants(GrantCmd),
    /// The audit log of changes, newest first
    Audit {
        /// At most N records (daemon default 100)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: Option<u32>,
    },
    /// Events: emit, list, follow live, subscribers and dead letters
    #[command(subcommand)]
    Events(EventCmd),
    /// Remove services stopped or dead for longer than N days
    Cleanup {
        /// Age in days
        #[arg(long)]
        days: u32,
    },
    /// Same as `services list`
    Ls(ListArgs),
    /// Same as `services show`
    Show(IdArg),
    /// Same as `services start`
    Start(LifecycleArgs),
    /// Same as `services stop`
    Stop(LifecycleArgs),
    /// Same as `services restart`
    Restart(LifecycleArgs),
    /// Same as `services delete`
    #[command(visible_alias = "rm")]
    Delete(LifecycleArgs),
    /// Same as `services scale`
    Scale(ScaleArgs),
    /// Same as `services logs`
    Logs(LogsArgs),
    /// Write a backup (database copy and directory volumes, taken online) to FILE
    Backup {
        /// The tar archive to write (kept only when complete and checked)
        file: PathBuf,
    },
    /// Restore a backup into the data directory; addond must be stopped first
    Restore {
        /// An archive written by `addonctl backup`
        file: PathBuf,
        /// addond's config file, for the data directory (default /etc/addond/config.toml)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check Docker, socket permissions, the port range, disk space and the database; exit 1 on a problem
    Doctor {
        /// addond's config file, used when the daemon does not answer
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: addond::cli_docs::Shell,
    },
    /// Write the man pages into DIR (for packaging)
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum ServiceCmd {
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
enum TemplateCmd {
    /// List templates
    #[command(visible_alias = "ls")]
    List,
    /// Create a service from a template
    Create(TemplateCreateArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Pull an image unless it is present, with progress on stderr
    Pull {
        /// Image reference (name:tag)
        image: String,
    },
}

const ADDON_CATEGORIES: [&str; 5] = ["ecommerce", "analytics", "marketing", "communication", "utilities"];
const WIDGET_CATEGORIES: [&str; 5] = ["content", "form", "display", "interactive", "layout"];

#[derive(Subcommand, Debug)]
enum AddonCmd {
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
}

#[derive(Subcommand, Debug)]
enum WidgetCmd {
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
struct AddonNameArg {
    /// Addon instance (installed) or addon name (catalogue)
    name: String,
}

#[derive(Args, Debug, Clone, Default, PartialEq)]
struct ConfigInput {
    /// The addon's config as a JSON object
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    config: Option<String>,
    /// The config from a file (.json or .toml; '-' reads JSON from stdin)
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Set a top-level config key (repeatable); VALUE is JSON if it parses, else a string
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, Value)>,
}

#[derive(Args, Debug, Clone)]
struct InstallArgs {
    /// Addon name in the catalogue
    name: String,
    /// Install under this name (default: the addon's name), to install it more than once
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
    /// Version to install (default: the newest registered)
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    config: ConfigInput,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
struct UninstallArgs {
    /// Installed addon instance
    name: String,
    /// Uninstall even though installed addons depend on it
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
struct AddonLifecycleArgs {
    /// Installed addon instance
    name: String,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["config", "config_file", "set", "show"])))]
struct AddonConfigArgs {
    /// Installed addon instance
    name: String,
    #[command(flatten)]
    input: ConfigInput,
    /// Print the current config instead of changing it
    #[arg(long, conflicts_with_all = ["config", "config_file", "set"])]
    show: bool,
}

#[derive(Args, Debug, Clone)]
struct ExecuteArgs {
    /// Installed addon instance
    name: String,
    /// Action name (see `addonctl addons show NAME`)
    action: String,
    /// The action's input as JSON
    #[arg(long, value_name = "JSON", conflicts_with = "data_file")]
    data: Option<String>,
    /// The input from a file (.json or .toml; '-' reads JSON from stdin)
    #[arg(long, value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// Set a top-level input key (repeatable); VALUE is JSON if it parses, else a string
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, Value)>,
}

#[derive(Args, Debug, Clone)]
struct RenderArgs {
    /// Installed addon instance
    addon: String,
    /// Widget name
    widget: String,
    /// The widget's config as a JSON object (checked against its schema, defaults applied)
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Context for the render as a JSON object (user, page, …)
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// Print the complete HTML document for a sandboxed iframe instead of the JSON
    #[arg(long)]
    html: bool,
}

#[derive(Args, Debug, Clone, Default)]
struct ListArgs {
    /// Only services of this plugin
    #[arg(long, value_name = "ID")]
    plugin_id: Option<String>,
    /// Only services in this phase (Started, Failed, …) or status (running, partial, …)
    #[arg(long, value_name = "S")]
    status: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct IdArg {
    /// Service id or name
    id: String,
}

#[derive(Args, Debug, Clone, Default, PartialEq)]
struct WaitArgs {
    /// Wait until the service (or addon) reaches the phase this command aims for
    #[arg(long)]
    wait: bool,
    /// Seconds to wait (1-600, daemon default 60); implies --wait
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=600))]
    timeout: Option<u32>,
}

#[derive(Args, Debug, Clone)]
struct LifecycleArgs {
    /// Service id or name
    id: String,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
struct ScaleArgs {
    /// Service id or name
    id: String,
    /// Number of instances (0-64)
    #[arg(value_parser = clap::value_parser!(u32).range(0..=64))]
    replicas: u32,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
struct LogsArgs {
    /// Service id or name
    id: String,
    /// Number of lines from the end
    #[arg(short = 'n', long, default_value_t = 100)]
    lines: u32,
    /// Keep printing new lines until interrupted
    #[arg(short, long)]
    follow: bool,
    /// Prefix each line with its timestamp
    #[arg(long)]
    timestamps: bool,
    /// Instance ordinal (default 0)
    #[arg(long, value_name = "K")]
    instance: Option<u32>,
}

const SERVICE_TYPES: [&str; 5] = ["rest_api", "websocket", "background_worker", "scheduler", "worker"];
const RESTART_POLICIES: [&str; 4] = ["no", "on-failure", "unless-stopped", "always"];

#[derive(Args, Debug, Clone, Default)]
struct CreateArgs {
    /// Service name: [a-z0-9][a-z0-9-]{0,62}, unique
    #[arg(long, required_unless_present = "file")]
    name: Option<String>,
    /// Container image
    #[arg(long, required_unless_present = "file")]
    image: Option<String>,
    /// Plugin (addon) the service belongs to
    #[arg(long, value_name = "ID")]
    plugin_id: Option<String>,
    /// Service type
    #[arg(long = "type", value_name = "TYPE", value_parser = SERVICE_TYPES)]
    service_type: Option<String>,
    /// Container port (default 8080)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Preferred host port for the first instance
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    host_port: Option<u16>,
    /// Number of instances (0-64)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    replicas: Option<u32>,
    /// Environment variable (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Volume: named volume or relative directory, SRC:DST[:ro] (repeatable)
    #[arg(long = "volume", short = 'v', value_name = "SRC:DST[:ro]", value_parser = parse_volume)]
    volumes: Vec<Value>,
    /// Network to join (repeatable)
    #[arg(long = "network", value_name = "N")]
    networks: Vec<String>,
    /// Service this one depends on (repeatable)
    #[arg(long = "depends-on", value_name = "NAME")]
    depends_on: Vec<String>,
    /// Memory limit (512m, 1g)
    #[arg(long)]
    memory: Option<String>,
    /// CPU limit in cores (0.5)
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<String>,
    /// Process limit
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pids: Option<u32>,
    /// Health check path (/health)
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// Seconds between health checks
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    health_interval: Option<f64>,
    /// Seconds before a health check times out
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    health_timeout: Option<f64>,
    /// Failed checks before an instance is unhealthy
    #[arg(long, value_name = "N")]
    health_retries: Option<u32>,
    /// Restart policy
    #[arg(long, value_name = "P", value_parser = RESTART_POLICIES)]
    restart_policy: Option<String>,
    /// Version label
    #[arg(long)]
    version: Option<String>,
    /// JSON create body ('-' for stdin); the other flags override its keys
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Do not pull the image before creating (the daemon still pulls a missing one)
    #[arg(long)]
    no_pull: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug, Clone, Default)]
struct TemplateCreateArgs {
    /// Template id (see `addonctl templates list`)
    template: String,
    /// Service name
    #[arg(long)]
    name: String,
    /// Container image (default: the template's)
    #[arg(long)]
    image: Option<String>,
    /// Plugin (addon) the service belongs to
    #[arg(long, value_name = "ID")]
    plugin_id: Option<String>,
    /// Container port
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Number of instances (0-64)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    replicas: Option<u32>,
    /// Environment variable (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Do not pull --image before creating (the daemon still pulls a missing one)
    #[arg(long)]
    no_pull: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    let mut chars = k.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{k}` is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_volume(s: &str) -> Result<Value, String> {
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

/// `--set KEY=VALUE`: the value is JSON when it parses as JSON (`3`, `true`, `[1,2]`,
/// `{"a":1}`, `"quoted"`), else the text as a string (`USD`, `hello world`, ``).
fn parse_set(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("expected KEY=VALUE with a non-empty KEY, got `{s}`"));
    }
    let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

fn parse_cpu(s: &str) -> Result<String, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(s.trim().to_string()),
        _ => Err(format!("expected a positive number of cores (0.5), got `{s}`")),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('s').parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected seconds (30), got `{s}`")),
    }
}

// ---------------------------------------------------------------------------------------
// Errors and exit codes.

/// A mistake in what the user gave us that clap could not see (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_PERMISSION: u8 = 4;
const EXIT_WAIT: u8 = 5;

fn api_exit_code(e: &ApiError) -> u8 {
    match e.code.as_str() {
        "forbidden" => EXIT_PERMISSION,
        "wait_timeout" | "service_failed" => EXIT_WAIT,
        _ if e.status == 403 => EXIT_PERMISSION,
        _ => EXIT_ERROR,
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return match c {
            ClientError::NotRunning { .. } => EXIT_NOT_RUNNING,
            ClientError::PermissionDenied { .. } => EXIT_PERMISSION,
            ClientError::Api(a) => api_exit_code(a),
            ClientError::Io { .. } | ClientError::Protocol(_) => EXIT_ERROR,
        };
    }
    if let Some(a) = e.downcast_ref::<ApiError>() {
        return api_exit_code(a);
    }
    if e.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    EXIT_ERROR
}

/// Whoever reads our stdout went away: stop quietly (only stdout, never the socket).
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
struct StdoutClosed;

// ---------------------------------------------------------------------------------------
// Main: wiring only.

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sanitize_line(&format!("{e:#}")));
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctl = Ctl {
        client: Client::new(client::discover_socket(cli.socket)),
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Health => ctl.health().await,
        Command::Services(cmd) => ctl.services(cmd).await,
        Command::Metrics { id: Some(id) } => ctl.service_metrics(&id).await,
        Command::Metrics { id: None } => ctl.daemon_metrics().await,
        Command::Discovery => ctl.discovery().await,
        Command::Templates(TemplateCmd::List) => ctl.templates().await,
        Command::Templates(TemplateCmd::Create(a)) => ctl.template_create(&a).await,
        Command::Images(ImageCmd::Pull { image }) => ctl.image_pull(&image).await,
        Command::Addons(cmd) => ctl.addons(cmd).await,
        Command::Widgets(cmd) => ctl.widgets(cmd).await,
        Command::Apps(cmd) => ctl.apps(cmd).await,
        Command::Grants(cmd) => ctl.grants(cmd).await,
        Command::Audit { limit } => ctl.audit(limit).await,
        Command::Events(cmd) => ctl.events(cmd).await,
        Command::Cleanup { days } => ctl.cleanup(days).await,
        Command::Ls(a) => ctl.services(ServiceCmd::List(a)).await,
        Command::Show(a) => ctl.services(ServiceCmd::Show(a)).await,
        Command::Start(a) => ctl.services(ServiceCmd::Start(a)).await,
        Command::Stop(a) => ctl.services(ServiceCmd::Stop(a)).await,
        Command::Restart(a) => ctl.services(ServiceCmd::Restart(a)).await,
        Command::Delete(a) => ctl.services(ServiceCmd::Delete(a)).await,
        Command::Scale(a) => ctl.services(ServiceCmd::Scale(a)).await,
        Command::Logs(a) => ctl.services(ServiceCmd::Logs(a)).await,
        Command::Backup { file } => ctl.backup(&file).await,
        Command::Restore { file, config } => ctl.restore(&file, config.as_deref()),
        Command::Doctor { config } => ctl.doctor(config.as_deref()).await,
        Command::Completions { shell } => {
            addond::cli_docs::completions(<Cli as clap::CommandFactory>::command(), shell, &mut io::stdout());
            Ok(())
        }
        Command::GenerateMan { dir } => {
            for p in addond::cli_docs::generate_man(<Cli as clap::CommandFactory>::command(), &dir, "1")? {
                println!("{}", p.display());
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Operator tools: backup, restore, doctor (the work is in addond::backup / addond::doctor).

/// `doctor` found something wrong (exit 1; the report says what).
#[derive(Debug, thiserror::Error)]
#[error("doctor found {0} problem(s)")]
struct DoctorFailed(usize);

impl Ctl {
    async fn backup(&self, file: &Path) -> anyhow::Result<()> {
        let s = addond::backup::download(&self.client, file).await?;
        let data = serde_json::to_value(&s)?;
        self.show(&data, |_| {
            format!(
                "wrote {}: {} service(s), database schema {} ({} KiB), {} volume entries ({:.1} MiB)\n",
                file.display(),
                s.manifest.services,
                s.manifest.schema_version,
                s.manifest.database_bytes / 1024,
                s.volume_entries,
                s.volume_bytes as f64 / 1048576.0
            )
        })
    }

    fn restore(&self, file: &Path, config: Option<&Path>) -> anyhow::Result<()> {
        let (path, cfg) = addond::doctor::resolve_config(config, self.client.socket());
        let cfg = cfg.map_err(|e| anyhow::anyhow!("cannot read addond's config {}: {e}", path.display()))?;
        if std::os::unix::net::UnixStream::connect(self.client.socket()).is_ok() {
            anyhow::bail!("addond is running (it answers on {}); stop it first (systemctl stop addond), then restore", self.client.socket().display());
        }
        let r = addond::backup::restore(file, &cfg.daemon.data_dir, &cfg.daemon.socket_path)?;
        let data = serde_json::to_value(&r)?;
        self.show(&data, |_| {
            let mut out = format!(
                "restored {} into {}: {} service(s), database schema {}, {} volume entries\n",
                file.display(),
                r.data_dir.display(),
                r.manifest.services,
                r.manifest.schema_version,
                r.volume_entries
            );
            if let Some(p) = &r.previous {
                out.push_str(&format!("the data that was there is in {} (remove it when satisfied)\n", p.display()));
            }
            if !r.ownership_restored {
                out.push_str("not root: volume files belong to you now, not to their original owners\n");
            }
            out.push_str("start addond (systemctl start addond): it adopts the containers that still run and recreates the rest\n");
            out
        })
    }

    async fn doctor(&self, config: Option<&Path>) -> anyhow::Result<()> {
        let (config_path, config) = addond::doctor::resolve_config(config, self.client.socket());
        let inputs = addond::doctor::Inputs { client: self.client.clone(), config, config_path };
        let findings = addond::doctor::run(&inputs).await;
        if self.json {
            emit(&format!("{}\n", serde_json::to_string_pretty(&findings)?))?;
        } else {
            emit(&addond::doctor::render(&findings))?;
        }
        match addond::doctor::exit_code(&findings) {
            0 => Ok(()),
            _ => Err(DoctorFailed(findings.iter().filter(|f| f.level == addond::doctor::Level::Fail).count()).into()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands.

struct Ctl {
    client: Client,
    json: bool,
    quiet: bool,
}

/// What a lifecycle call is for; decides the phase `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Start,
    Stop,
    Restart,
    Delete,
    Scale,
}

fn wait_phase(op: Op) -> &'static str {
    match op {
        Op::Create | Op::Start | Op::Restart | Op::Scale => "started",
        Op::Stop => "stopped",
        Op::Delete => "deleted",
    }
}

/// The `?wait=…&timeout=…` query for `op`, or "" when not waiting.
fn wait_query(op: Op, w: &WaitArgs) -> String {
    if !w.wait && w.timeout.is_none() {
        return String::new();
    }
    let mut q = format!("?wait={}", wait_phase(op));
    if let Some(t) = w.timeout {
        q.push_str(&format!("&timeout={t}"));
    }
    q
}

fn waiting(w: &WaitArgs) -> bool {
    w.wait || w.timeout.is_some()
}

fn svc_path(id: &str, action: &str) -> String {
    let mut p = format!("{SERVICES}/{}", client::encode_path_segment(id));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

fn addon_path(name: &str, action: &str) -> String {
    let mut p = format!("{ADDONS}/{}", client::encode_path_segment(name));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", client::encode_query_value(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl Ctl {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let reply = self.client.request(method, path, body).await?;
        Ok(reply.into_result()?)
    }

    /// Prints `data` as JSON when `--json`, else the human rendering (unless `--quiet`).
    fn show(&self, data: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        if self.json {
            return emit(&format!("{}\n", serde_json::to_string_pretty(data)?));
        }
        if self.quiet {
            return Ok(());
        }
        emit(&human(data))
    }

    async fn health(&self) -> anyhow::Result<()> {
        let data = self.call(Method::GET, "/health", None).await?;
        self.show(&data, render_health)
    }

    async fn services(&self, cmd: ServiceCmd) -> anyhow::Result<()> {
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
                if !a.no_pull {
                    // build_create_body made sure `image` is a non-empty string.
                    self.pull_before_create(body["image"].as_str().unwrap_or_default()).await?;
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

    async fn lifecycle(&self, op: Op, id: &str, action: &str, w: &WaitArgs) -> anyhow::Result<()> {
        let path = format!("{}{}", svc_path(id, action), wait_query(op, w));
        let data = self.call(Method::POST, &path, None).await?;
        self.report(op, waiting(w), &data)
    }

    /// Output of create/start/stop/restart/delete/scale: the service's phase, and its
    /// endpoints once started. `--quiet` prints the id of a created service only.
    fn report(&self, op: Op, waited: bool, data: &Value) -> anyhow::Result<()> {
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

    async fn logs(&self, a: &LogsArgs) -> anyhow::Result<()> {
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
        let mut lines = LineBuffer::default();
        while let Some(chunk) = stream.next_chunk().await {
            let out = lines.push(&chunk?);
            if !out.is_empty() {
                emit(&out)?;
            }
        }
        emit(&lines.finish())
    }

    async fn service_metrics(&self, id: &str) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &svc_path(id, "metrics"), None).await?;
        self.show(&data, render_metrics)
    }

    async fn daemon_metrics(&self) -> anyhow::Result<()> {
        let raw = self.client.request_raw(Method::GET, "/metrics", None).await?;
        if !(200..300).contains(&raw.status) {
            // Errors still come as an envelope.
            let body: Value = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
            let reply = client::Response { status: raw.status, body };
            if let Some(e) = reply.error() {
                return Err(e.into());
            }
        }
        if self.quiet {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&raw.body);
        let mut out = String::new();
        for line in text.lines() {
            out.push_str(&sanitize_line(line));
            out.push('\n');
        }
        emit(&out)
    }

    async fn discovery(&self) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &format!("{API}/discovery"), None).await?;
        self.show(&data, render_discovery)
    }

    async fn templates(&self) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &format!("{API}/templates"), None).await?;
        if self.quiet && !self.json {
            return emit(&ids(&data));
        }
        self.show(&data, render_templates)
    }

    async fn template_create(&self, a: &TemplateCreateArgs) -> anyhow::Result<()> {
        let body = build_template_body(a);
        // Without --image the daemon uses its configured template image: nothing to pull here.
        if let (Some(image), false) = (&a.image, a.no_pull) {
            self.pull_before_create(image).await?;
        }
        let path = format!(
            "{API}/templates/{}/create{}",
            client::encode_path_segment(&a.template),
            wait_query(Op::Create, &a.wait)
        );
        let data = self.call(Method::POST, &path, Some(&body)).await?;
        self.report(Op::Create, waiting(&a.wait), &data)
    }

    async fn cleanup(&self, days: u32) -> anyhow::Result<()> {
        let data = self.call(Method::POST, &format!("{API}/cleanup"), Some(&json!({"days": days}))).await?;
        self.show(&data, render_cleanup)
    }

    async fn addons(&self, cmd: AddonCmd) -> anyhow::Result<()> {
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
                let path = format!("{}{}", addon_path(&a.name, "install"), wait_query(Op::Create, &a.wait));
                let data = self.call(Method::POST, &path, Some(&Value::Object(body))).await?;
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

    async fn addon_lifecycle(&self, op: Op, action: &str, a: &AddonLifecycleArgs) -> anyhow::Result<()> {
        let path = format!("{}{}", addon_path(&a.name, action), wait_query(op, &a.wait));
        let data = self.call(Method::POST, &path, None).await?;
        self.show(&data, |d| render_addon_report("", d))
    }

    /// `addons config NAME --show`, or a new config: `--config`/`--config-file` with the
    /// `--set` keys laid over it, or (only `--set`) the current config with those keys changed.
    async fn addon_config(&self, a: &AddonConfigArgs) -> anyhow::Result<()> {
        let base = config_base(&a.input)?;
        let current = if a.show || base.is_none() {
            let d = self.call(Method::GET, &addon_path(&a.name, ""), None).await?;
            if !is_instance(&d) {
                return Err(ApiError {
                    status: 404,
                    code: "not_found".into(),
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

    async fn widgets(&self, cmd: WidgetCmd) -> anyhow::Result<()> {
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
                let path = format!(
                    "{WIDGETS}/{}/{}",
                    client::encode_path_segment(&a.addon),
                    client::encode_path_segment(&a.widget)
                );
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
    async fn widget_frame(&self, path: &str, config: Option<Value>, context: Option<Value>) -> anyhow::Result<()> {
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
        let mut lines = LineBuffer::default();
        let mut out = lines.push(&raw.body);
        out.push_str(&lines.finish());
        emit(&out)
    }

    /// `images pull`: the result on stdout, progress on stderr (none with `--quiet`).
    async fn image_pull(&self, image: &str) -> anyhow::Result<()> {
        match self.pull(image).await? {
            Pulled::Present(data) => self.show(&data, |d| {
                format!("image {} is present\n", cell(d.get("image").and_then(Value::as_str).unwrap_or(image)))
            }),
            Pulled::Pulled(name) => {
                self.show(&json!({"image": name, "present": false, "pulled": true}), |_| format!("pulled {}\n", cell(&name)))
            }
        }
    }

    /// The pull step of `services create` and `templates create`: silent when the image is
    /// present; progress and `pulled IMAGE` on stderr (stdout carries the create's output)
    /// when it had to be pulled; an error stops the create before it is sent.
    async fn pull_before_create(&self, image: &str) -> anyhow::Result<()> {
        if let Pulled::Pulled(name) = self.pull(image).await? {
            if !self.quiet {
                note(&format!("pulled {}\n", cell(&name)));
            }
        }
        Ok(())
    }

    /// `POST …/images/pull`. A present image is answered with an envelope; otherwise the
    /// reply is the ndjson stream of the pull, whose progress goes to stderr (throttled,
    /// sanitised) as it arrives, unless `--quiet`. A failed pull is an [`ApiError`] (exit 1).
    async fn pull(&self, image: &str) -> anyhow::Result<Pulled> {
        self.pull_to(image, |progress| {
            if !self.quiet {
                note(progress)
            }
        })
        .await
    }

    /// [`Ctl::pull`] with the progress handed to `progress` (one or more complete lines per
    /// call, as each chunk of the stream arrives).
    async fn pull_to(&self, image: &str, mut progress: impl FnMut(&str)) -> anyhow::Result<Pulled> {
        let (content_type, mut body) = self.client.stream_with(Method::POST, PULL, Some(&json!({"image": image}))).await?;
        let ndjson = content_type.as_deref().is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("application/x-ndjson"));
        if !ndjson {
            // The envelope: the image is present (errors came back as ClientError::Api).
            let bytes = body.into_bytes().await?;
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Protocol(format!(
                    "the daemon answered with a body that is not JSON ({e}): {}",
                    cell(&String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))
                ))
            })?;
            let data = client::Response { status: 200, body }.into_result()?;
            return Ok(Pulled::Present(data));
        }
        let mut stream = PullStream::new(image);
        while let Some(chunk) = body.next_chunk().await {
            let chunk = match chunk {
                Ok(c) => c,
                // A broken stream ends the pull; `finish` reports it unless a result came.
                Err(_) => break,
            };
            let lines = stream.push(&chunk, Instant::now());
            if !lines.is_empty() {
                progress(&lines);
            }
        }
        Ok(Pulled::Pulled(stream.finish(200)?))
    }
}

/// Writes progress and notes to stderr; a closed stderr is not worth failing for.
fn note(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Writes to stdout. A closed pipe (`addonctl logs -f | head`) becomes [`StdoutClosed`],
/// which `main` treats as success.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other?),
    }
}

fn read_body_file(path: &PathBuf) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        io::stdin().read_to_string(&mut s).context("reading the body from stdin")?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read --file {}: {e}", path.display())))?
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("--file {} is not valid JSON: {e}", path.display())))?;
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
fn build_create_body(a: &CreateArgs, file: Option<Value>) -> Result<Value, UsageError> {
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

    let limits: Vec<(&str, Value)> = [
        ("memory", a.memory.clone().map(Value::from)),
        ("cpu", a.cpu.clone().map(Value::from)),
        ("pids", a.pids.map(Value::from)),
    ]
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
    for key in ["name", "image"] {
        let present = matches!(body.get(key), Some(Value::String(s)) if !s.is_empty());
        if !present {
            return Err(UsageError(format!("--{key} is required (as a flag or in --file)")));
        }
    }
    Ok(Value::Object(body))
}

fn object_at<'a>(body: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>, UsageError> {
    let slot = body.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(|| UsageError(format!("`{key}` in --file must be an object")))
}

fn append(body: &mut Map<String, Value>, key: &str, items: impl Iterator<Item = Value>) -> Result<(), UsageError> {
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

fn build_template_body(a: &TemplateCreateArgs) -> Value {
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

/// A JSON value given on the command line (`--data`, `--config`, `--context`).
fn parse_json_arg(flag: &str, text: &str) -> Result<Value, UsageError> {
    serde_json::from_str(text).map_err(|e| UsageError(format!("{flag} is not valid JSON: {e}")))
}

/// A document from a file: TOML when the name ends in `.toml`, JSON otherwise; `-` is
/// JSON on stdin. TOML becomes the same JSON (tables → objects, datetimes → strings).
/// `what` names the file in errors (`manifest`, `--config-file`). Errors are usage errors.
fn read_document(path: &Path, what: &str) -> Result<Value, UsageError> {
    let stdin = path.as_os_str() == "-";
    let text = if stdin {
        let mut s = String::new();
        io::stdin().read_to_string(&mut s).map_err(|e| UsageError(format!("cannot read the {what} from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read {what} {}: {e}", path.display())))?
    };
    let name = if stdin { "stdin".to_string() } else { path.display().to_string() };
    let is_toml = !stdin && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        return toml_to_json_document(&text).map_err(|e| UsageError(format!("{what} {name} is not valid TOML: {e}")));
    }
    serde_json::from_str(&text).map_err(|e| {
        let hint = match path.extension() {
            Some(x) if x.eq_ignore_ascii_case("json") => "",
            _ if stdin => "",
            _ => " (name it .toml for TOML)",
        };
        UsageError(format!("{what} {name} is not valid JSON: {e}{hint}"))
    })
}

/// Parses a TOML document into the JSON object it describes. Errors name the line and
/// column (one line: the error printer keeps messages on one line).
fn toml_to_json_document(text: &str) -> Result<Value, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        }
    })?;
    toml_to_json(toml::Value::Table(table), "")
}

/// TOML value → JSON value. `path` (`services[0].replicas`) names a float JSON cannot
/// hold (nan, inf).
fn toml_to_json(v: toml::Value, path: &str) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => return Err(format!("`{}` is {f}, which JSON cannot represent", if path.is_empty() { "value" } else { path })),
        },
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items.into_iter().enumerate().map(|(i, x)| toml_to_json(x, &format!("{path}[{i}]"))).collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut m = Map::new();
            for (k, x) in t {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                m.insert(k, toml_to_json(x, &p)?);
            }
            Value::Object(m)
        }
    })
}

/// The object `--config JSON` or `--config-file FILE` gives, if either does.
fn config_base(input: &ConfigInput) -> Result<Option<Value>, UsageError> {
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

/// Lays `--set KEY=VALUE` pairs over `base` (top-level keys; a later one wins).
fn apply_sets(base: Value, sets: &[(String, Value)], what: &str) -> Result<Value, UsageError> {
    if sets.is_empty() {
        return Ok(base);
    }
    let Value::Object(mut m) = base else {
        return Err(UsageError(format!("--set needs {what} to be a JSON object")));
    };
    for (k, v) in sets {
        m.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(m))
}

// ---------------------------------------------------------------------------------------
// What the daemon sends reaches the terminal only through `addond::sanitize`
// (`sanitize_line` for lines, `cell` for one-line table cells and labels).

/// Splits a byte stream into sanitised lines, holding a partial line (and a partial UTF-8
/// character) until its newline arrives.
#[derive(Default)]
struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let Some(last_nl) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return String::new();
        };
        let rest = self.pending.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        let mut out = String::new();
        for line in String::from_utf8_lossy(&complete).split_terminator('\n') {
            out.push_str(&sanitize_line(line));
            out.push('\n');
        }
        out
    }

    fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let line = sanitize_line(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        format!("{line}\n")
    }
}

// ---------------------------------------------------------------------------------------
// Image pulls.

/// How `POST …/images/pull` ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
enum Pulled {
    /// The image was already present: the envelope's `data`.
    Present(Value),
    /// The daemon pulled it: the image its `done` line names.
    Pulled(String),
}

/// At most one progress line per layer in this interval, unless the status changes.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Reads the ndjson reply of a pull: `{"progress": …}` lines become (throttled) progress
/// lines, and the stream ends with `{"done": true, "image": …}` or `{"error": {…}}`.
/// Chunks may split lines anywhere; blank and unparsable lines are skipped.
struct PullStream {
    image: String,
    pending: Vec<u8>,
    throttle: ProgressThrottle,
    /// `Ok(image)` after `done`, `Err(error object)` after `error`; nothing after counts.
    outcome: Option<Result<String, Value>>,
}

impl PullStream {
    fn new(image: &str) -> Self {
        PullStream { image: image.to_string(), pending: Vec::new(), throttle: ProgressThrottle::default(), outcome: None }
    }

    /// Feeds a chunk received at `now`; returns the progress lines to print (sanitised,
    /// each ending in a newline).
    fn push(&mut self, chunk: &[u8], now: Instant) -> String {
        self.pending.extend_from_slice(chunk);
        let Some(last_nl) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return String::new();
        };
        let rest = self.pending.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        let mut out = String::new();
        for line in complete.split(|b| *b == b'\n') {
            if let Some(l) = self.line(line, now) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }

    fn line(&mut self, line: &[u8], now: Instant) -> Option<String> {
        if self.outcome.is_some() {
            return None;
        }
        let v: Value = serde_json::from_slice(line).ok()?;
        if let Some(p) = v.get("progress") {
            return self.throttle.line(p, now);
        }
        if let Some(e) = v.get("error") {
            self.outcome = Some(Err(e.clone()));
        } else if v.get("done").and_then(Value::as_bool) == Some(true) {
            let image = v.get("image").and_then(Value::as_str).unwrap_or(&self.image).to_string();
            self.outcome = Some(Ok(image));
        }
        None
    }

    /// The end of the stream (`status` is the reply's HTTP status): the pulled image, the
    /// daemon's error, or a protocol error when the stream stopped without either.
    fn finish(mut self, status: u16) -> anyhow::Result<String> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.line(&last, Instant::now());
        }
        match self.outcome {
            Some(Ok(image)) => Ok(image),
            Some(Err(e)) => {
                // Read like an envelope's error object (code, message, field, with fallbacks).
                let reply = client::Response { status, body: json!({"success": false, "error": e}) };
                let err = reply.error().ok_or_else(|| ClientError::Protocol("the pull failed".into()))?;
                Err(err.into())
            }
            None => Err(ClientError::Protocol(format!(
                "the pull of {} ended without a result (the daemon stopped or the connection broke)",
                cell(&self.image)
            ))
            .into()),
        }
    }
}

/// Decides which progress steps to print: every status change of a layer, and otherwise
/// at most one line per layer per [`PROGRESS_INTERVAL`], and never the same line twice.
#[derive(Default)]
struct ProgressThrottle {
    /// Per layer ("" for steps without one): its status, last line printed and when.
    layers: std::collections::HashMap<String, (String, String, Instant)>,
}

impl ProgressThrottle {
    fn line(&mut self, p: &Value, now: Instant) -> Option<String> {
        let layer = cell(p.get("layer").and_then(Value::as_str).unwrap_or(""));
        let status = cell(p.get("status").and_then(Value::as_str).unwrap_or(""));
        if layer.is_empty() && status.is_empty() {
            return None;
        }
        let count = |k: &str| p.get(k).and_then(Value::as_u64);
        let line = progress_line(&layer, &status, count("current"), count("total"));
        match self.layers.get_mut(&layer) {
            Some((last_status, last_line, at)) if *last_status == status => {
                if *last_line == line || now.saturating_duration_since(*at) < PROGRESS_INTERVAL {
                    return None;
                }
                *last_line = line.clone();
                *at = now;
            }
            _ => {
                self.layers.insert(layer, (status, line.clone(), now));
            }
        }
        Some(line)
    }
}

/// `abc123: Downloading 12.3/45.6 MB`, `abc123: Pull complete`, `Digest: sha256:…`.
/// Inputs are already sanitised.
fn progress_line(layer: &str, status: &str, current: Option<u64>, total: Option<u64>) -> String {
    let mut out = String::new();
    if !layer.is_empty() {
        out.push_str(layer);
        out.push(':');
    }
    if !status.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(status);
    }
    if let Some(sizes) = progress_sizes(current, total) {
        out.push(' ');
        out.push_str(&sizes);
    }
    out
}

/// `12.3/45.6 MB`, `512 B`, or `None` when the step carries no sizes. Decimal units, as
/// `docker pull` prints them; the unit follows the larger number.
fn progress_sizes(current: Option<u64>, total: Option<u64>) -> Option<String> {
    let total = total.filter(|t| *t > 0);
    let current = current.filter(|c| *c > 0 || total.is_some());
    if current.is_none() && total.is_none() {
        return None;
    }
    let (div, unit) = match current.unwrap_or(0).max(total.unwrap_or(0)) {
        1_000_000_000.. => (1e9, "GB"),
        1_000_000.. => (1e6, "MB"),
        1_000.. => (1e3, "kB"),
        _ => (1.0, "B"),
    };
    let n = |v: u64| if unit == "B" { v.to_string() } else { format!("{:.1}", v as f64 / div) };
    let current = current.map_or_else(|| "?".to_string(), n);
    Some(match total {
        Some(t) => format!("{current}/{} {unit}", n(t)),
        None => format!("{current} {unit}"),
    })
}

// ---------------------------------------------------------------------------------------
// Rendering.

/// Plain aligned columns, three spaces apart, no trailing spaces. Cells are sanitised.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate().take(widths.len()) {
            if i > 0 {
                l.push_str("   ");
            }
            l.push_str(c);
            if i + 1 < widths.len() {
                l.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count()));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for r in &rows {
        let mut cells: Vec<&str> = r.iter().map(String::as_str).collect();
        cells.resize(headers.len(), "");
        line(cells);
    }
    out
}

/// `key: value` lines with the values aligned; values are sanitised.
fn render_kv(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&format!("{key:<width$}  {}\n", cell(v)));
    }
    out
}

/// A field as display text: strings as they are, numbers and booleans printed, null or
/// missing as `-`.
fn text(v: &Value, key: &str) -> String {
    display(v.get(key))
}

fn display(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a.iter().map(|x| display(Some(x))).collect::<Vec<_>>().join(", "),
        // 30.0 → "30": seconds and counts read better without a fraction.
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(|x| x.as_f64().or_else(|| x.as_str().and_then(|s| s.parse().ok())))
}

fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_else(|| "-".into())
}

fn instances(svc: &Value) -> &[Value] {
    svc.get("instances").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Endpoints of a service: one per instance host port. Only a reply without an
/// `instances` list falls back to `endpoint` (a service scaled to 0 has none).
fn endpoints(svc: &Value) -> Vec<String> {
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

fn ids(data: &Value) -> String {
    let mut out = String::new();
    for item in data.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            out.push_str(&cell(id));
            out.push('\n');
        }
    }
    out
}

fn render_health(d: &Value) -> String {
    render_kv(&[
        ("version", text(d, "version")),
        ("uptime", num(d, "uptime_seconds").map(|s| duration_long(s as u64)).unwrap_or_else(|| "-".into())),
        ("database", text(d, "database")),
        ("docker", text(d, "docker")),
        ("services", text(d, "services")),
    ])
}

fn service_row(s: &Value, now: i64) -> Vec<String> {
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

fn render_service_list(data: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = data.as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|s| service_row(s, now)).collect();
    if rows.is_empty() {
        return "no services\n".into();
    }
    render_table(&["ID", "NAME", "PLUGIN", "TYPE", "PHASE", "HEALTH", "REPLICAS", "PORTS", "RESTARTS", "AGE"], &rows)
}

fn render_service(s: &Value, now: i64) -> String {
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
    out.push_str(&render_table(
        &["#", "INSTANCE", "CONTAINER", "STATE", "HEALTH", "PORT", "RESTARTS", "UPTIME", "LAST ERROR"],
        &rows,
    ));
    out
}

fn render_report(op: Op, waited: bool, s: &Value) -> String {
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

fn render_log_lines(data: &Value) -> String {
    let mut out = String::new();
    let lines = data.get("lines").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
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

fn render_metrics(d: &Value) -> String {
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

fn render_discovery(d: &Value) -> String {
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
        let rows: Vec<Vec<String>> =
            networks.iter().map(|n| vec![text(n, "name"), text(n, "subnet"), text(n, "internal")]).collect();
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

fn render_services_health(d: &Value) -> String {
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
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| vec![text(s, "id"), text(s, "name"), text(s, "phase"), text(s, "health_status")])
            .collect();
        out.push_str(&render_table(&["ID", "NAME", "PHASE", "HEALTH"], &rows));
    }
    out
}

fn render_templates(d: &Value) -> String {
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

fn render_cleanup(d: &Value) -> String {
    let removed = d.get("removed").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if removed.is_empty() {
        return "nothing to remove\n".into();
    }
    let rows: Vec<Vec<String>> = removed.iter().map(|s| vec![text(s, "id"), text(s, "name"), text(s, "phase")]).collect();
    format!("removed {} service(s)\n{}", removed.len(), render_table(&["ID", "NAME", "PHASE"], &rows))
}

// ---------------------------------------------------------------------------------------
// Rendering addons and widgets.

/// `GET /api/addons/{name}` answers an installed instance or a catalogue entry.
fn is_instance(d: &Value) -> bool {
    d.get("instance").is_some_and(|i| !i.is_null())
}

/// One `key` per line from a list of objects (`--quiet` lists).
fn names(list: &Value, key: &str) -> String {
    let mut out = String::new();
    for item in list.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(n) = item.get(key).and_then(Value::as_str) {
            out.push_str(&cell(n));
            out.push('\n');
        }
    }
    out
}

fn list_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// A list of strings (or of objects with a `name`) as `a,b,c`, or `-`.
fn joined(v: &Value, key: &str) -> String {
    let items: Vec<String> = list_of(v, key)
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => display(other.get("name").or(Some(other))),
        })
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// `inventory ^1.0, mail >=2` from a dependencies object, or `-`.
fn dependencies(v: &Value) -> String {
    match v.get("dependencies").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m.iter().map(|(k, r)| format!("{k} {}", display(Some(r)))).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    }
}

/// Healthy instances over desired replicas, summed over an installed addon's services.
fn addon_health(d: &Value) -> (u64, u64) {
    let services = list_of(d, "services");
    let healthy = services
        .iter()
        .flat_map(|s| list_of(s, "instances"))
        .filter(|i| i.get("health").and_then(Value::as_str) == Some("healthy"))
        .count() as u64;
    let replicas = services.iter().filter_map(|s| s.get("replicas").and_then(Value::as_u64)).sum();
    (healthy, replicas)
}

fn render_addon_list(d: &Value) -> String {
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
                        if ver == text(a, "version") { inst } else { format!("{inst}@{ver}") }
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

fn render_addon_instance(d: &Value, now: i64) -> String {
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

fn render_addon_entry(d: &Value) -> String {
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
fn schema_keys(schema: Option<&Value>) -> String {
    match schema.and_then(|s| s.get("properties")).and_then(Value::as_object) {
        Some(p) if !p.is_empty() => p.keys().cloned().collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

/// `installed shop 1.0.0 as shop-eu: Started` (or `uninstalled …`, or for start/stop/restart
/// just `shop-eu: Started`), then one line per service with its phase and health.
fn render_addon_report(verb: &str, d: &Value) -> String {
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
fn render_config_result(d: &Value) -> String {
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

fn render_widget_list(d: &Value) -> String {
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

// ---------------------------------------------------------------------------------------
// Time.

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Unix seconds from an RFC 3339 timestamp (`2026-11-21T23:40:00Z`, fractions and offsets
/// allowed) or a number (seconds, or milliseconds when it is that large).
fn timestamp(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(if n > 100_000_000_000 { n / 1000 } else { n });
    }
    let s = v.as_str()?.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let hh: i64 = o[1..3].parse().ok()?;
            let mm: i64 = o[4..6].parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, u32::try_from(mo).ok()?, u32::try_from(d).ok()?)?;
    Some(i64::from(date.to_epoch_days()) * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Unix seconds as `2026-11-21T23:40:00Z` (UTC).
fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Compact age: `45s`, `12m`, `5h`, `3d`.
fn age(v: Option<&Value>, now: i64) -> String {
    let Some(t) = v.and_then(timestamp) else { return "-".into() };
    let s = (now - t).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Long duration: `3d 4h 5m`, `2h 0m 7s`, `42s`.
fn duration_long(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m {sec}s")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

// ---------------------------------------------------------------------------------------
// Applications, grants, the audit log and events (docs/api.md, "Applications, grants and
// the gateway" and "Events").

const APPLICATIONS: &str = "/api/applications";
const GRANTS: &str = "/api/application-grants";
const EVENTS: &str = "/api/events";

#[derive(Subcommand, Debug)]
enum AppCmd {
    /// Applications (the gateway's clients) and how many grants each has
    #[command(visible_alias = "ls")]
    List,
    /// Create an application
    Create {
        /// Application name: [a-z0-9][a-z0-9-]{0,62}, unique
        name: String,
        /// What the application is
        #[arg(long, value_name = "D")]
        description: Option<String>,
        /// Who runs it
        #[arg(long, value_name = "O")]
        organization: Option<String>,
    },
    /// One application and its grants
    Show(AppArg),
    /// Delete an application and its grants (their keys stop working at once)
    #[command(visible_alias = "rm")]
    Delete(AppArg),
}

#[derive(Args, Debug, Clone)]
struct AppArg {
    /// Application id (app_…) or name
    app: String,
}

#[derive(Subcommand, Debug)]
enum GrantCmd {
    /// Grants: which application may call which addon through the gateway
    #[command(visible_alias = "ls")]
    List {
        /// Only the grants of this application (id or name)
        #[arg(long, value_name = "A")]
        app: Option<String>,
    },
    /// Let an application call an addon through the gateway; prints its API key once
    Create(GrantCreateArgs),
    /// One grant
    Show(GrantArg),
    /// Give a grant a new API key (printed once); the old key works for --grace seconds
    Rotate {
        /// Grant id
        id: String,
        /// Seconds the old key keeps working (default: the daemon's gateway.rotation_grace_seconds)
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        grace: Option<f64>,
    },
    /// Refuse a grant's key from now on (the grant stays, revoked)
    Revoke(GrantArg),
    /// Change a grant's rate limit or allowed origins
    Update(GrantUpdateArgs),
    /// Delete a grant (its key stops working at once)
    #[command(visible_alias = "rm")]
    Delete(GrantArg),
}

#[derive(Args, Debug, Clone)]
struct GrantArg {
    /// Grant id (grant_…)
    id: String,
}

#[derive(Args, Debug, Clone)]
struct GrantCreateArgs {
    /// Application (id or name)
    #[arg(long, value_name = "A")]
    app: String,
    /// Installed addon instance the key may call
    #[arg(long, value_name = "INSTANCE")]
    addon: String,
    /// Rate limit in requests per second
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Requests allowed at once (default: one second's worth); needs --rate
    #[arg(long, value_name = "B", requires = "rate", value_parser = clap::value_parser!(u32).range(1..))]
    burst: Option<u32>,
    /// Browser origin allowed to use the key (https://shop.example; repeatable)
    #[arg(long = "origin", value_name = "URL")]
    origins: Vec<String>,
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["rate", "no_rate", "burst", "origins", "clear_origins"])))]
struct GrantUpdateArgs {
    /// Grant id
    id: String,
    /// New rate limit in requests per second (the burst stays unless --burst)
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with = "no_rate")]
    rate: Option<f64>,
    /// Remove the rate limit
    #[arg(long)]
    no_rate: bool,
    /// New burst (with --rate, or on the grant's current rate limit)
    #[arg(long, value_name = "B", conflicts_with = "no_rate", value_parser = clap::value_parser!(u32).range(1..))]
    burst: Option<u32>,
    /// Add an allowed browser origin (repeatable)
    #[arg(long = "origin", value_name = "URL")]
    origins: Vec<String>,
    /// Start from no allowed origins (with --origin: replace the list)
    #[arg(long)]
    clear_origins: bool,
}

#[derive(Subcommand, Debug)]
enum EventCmd {
    /// Store an event (delivered to its subscribers) and print its id
    Emit {
        /// Event name (payment.completed)
        name: String,
        /// The event's data as JSON (default {})
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
        /// Set a top-level data key (repeatable); VALUE is JSON if it parses, else a string
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<(String, Value)>,
    },
    /// Stored events in id order (the oldest first; --after to page)
    #[command(visible_alias = "ls")]
    List {
        /// Event name, `prefix.*` or `*`
        #[arg(long, value_name = "PATTERN")]
        name: Option<String>,
        /// Only events after this id
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// At most N events (daemon default 100)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: Option<u32>,
    },
    /// Print events as they are stored, until interrupted; reconnects without losing any
    Follow {
        /// Event name, `prefix.*` or `*`
        #[arg(long, value_name = "PATTERN")]
        name: Option<String>,
        /// Replay the events after this id first (default: only new events)
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
    },
    /// Delivery state of each subscriber, and the dead letters
    Subscribers,
    /// Deliver the dead letters again
    Redrive {
        /// Only this subscriber's dead letters
        #[arg(long, value_name = "S")]
        subscriber: Option<String>,
    },
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected requests per second, more than 0 (10, 0.5), got `{s}`")),
    }
}

/// The body of `POST /api/application-grants`.
fn grant_create_body(a: &GrantCreateArgs) -> Value {
    let mut body = json!({"application": a.app, "addon": a.addon});
    if let Some(rate) = a.rate {
        let mut limit = json!({"requests_per_second": rate});
        if let Some(b) = a.burst {
            limit["burst"] = json!(b);
        }
        body["rate_limit"] = limit;
    }
    if !a.origins.is_empty() {
        body["allowed_origins"] = json!(a.origins);
    }
    body
}

/// The body of `PATCH /api/application-grants/{id}` from the flags and the grant as it is:
/// `--rate` keeps the current burst unless `--burst`; `--burst` alone keeps the current
/// rate; `--origin` adds to the current origins, or to none after `--clear-origins`.
fn grant_update_body(a: &GrantUpdateArgs, current: &Value) -> Result<Value, UsageError> {
    let mut body = Map::new();
    let limit = current.get("rate_limit").filter(|l| l.is_object());
    if a.no_rate {
        body.insert("rate_limit".into(), Value::Null);
    } else if a.rate.is_some() || a.burst.is_some() {
        let rate = match (a.rate, limit.and_then(|l| l.get("requests_per_second")).and_then(Value::as_f64)) {
            (Some(r), _) | (None, Some(r)) => r,
            (None, None) => return Err(UsageError("the grant has no rate limit: give --rate N with --burst".into())),
        };
        let mut new = json!({"requests_per_second": rate});
        match (a.burst.map(u64::from), limit.and_then(|l| l.get("burst")).and_then(Value::as_u64)) {
            (Some(b), _) | (None, Some(b)) => new["burst"] = json!(b),
            (None, None) => {}
        }
        body.insert("rate_limit".into(), new);
    }
    if a.clear_origins || !a.origins.is_empty() {
        let mut origins: Vec<Value> = if a.clear_origins { Vec::new() } else { list_of(current, "allowed_origins").to_vec() };
        for o in &a.origins {
            if !origins.iter().any(|x| x.as_str() == Some(o.as_str())) {
                origins.push(Value::from(o.clone()));
            }
        }
        body.insert("allowed_origins".into(), Value::Array(origins));
    }
    Ok(Value::Object(body))
}

/// How long to wait before the next attempt to reconnect `events follow`.
fn follow_backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(5)).min(5000))
}

/// Whether `events follow` should try again after this error (the daemon went away or is
/// restarting) rather than give up (a refusal, a bad pattern).
fn reconnectable(e: &ClientError) -> bool {
    match e {
        ClientError::NotRunning { .. } | ClientError::Io { .. } | ClientError::Protocol(_) => true,
        ClientError::Api(a) => a.status >= 500,
        ClientError::PermissionDenied { .. } => false,
    }
}

impl Ctl {
    async fn apps(&self, cmd: AppCmd) -> anyhow::Result<()> {
        match cmd {
            AppCmd::List => {
                let data = self.call(Method::GET, APPLICATIONS, None).await?;
                if self.quiet && !self.json {
                    return emit(&ids(&data));
                }
                self.show(&data, render_app_list)
            }
            AppCmd::Create { name, description, organization } => {
                let mut body = json!({"name": name});
                if let Some(d) = description {
                    body["description"] = json!(d);
                }
                if let Some(o) = organization {
                    body["organization"] = json!(o);
                }
                let data = self.call(Method::POST, APPLICATIONS, Some(&body)).await?;
                if self.quiet && !self.json {
                    return emit(&format!("{}\n", cell(&text(&data, "id"))));
                }
                self.show(&data, |d| format!("created application {} ({})\n", cell(&text(d, "name")), cell(&text(d, "id"))))
            }
            AppCmd::Show(a) => {
                let data = self.call(Method::GET, &app_path(&a.app), None).await?;
                self.show(&data, render_app)
            }
            AppCmd::Delete(a) => {
                let data = self.call(Method::DELETE, &app_path(&a.app), None).await?;
                self.show(&data, |d| {
                    format!(
                        "deleted application {} ({}) and its grants; their keys stop working now\n",
                        cell(&text(d, "name")),
                        cell(&text(d, "id"))
                    )
                })
            }
        }
    }

    async fn grants(&self, cmd: GrantCmd) -> anyhow::Result<()> {
        match cmd {
            GrantCmd::List { app } => {
                let data = self.call(Method::GET, &format!("{GRANTS}{}", query(&[("application", app)])), None).await?;
                if self.quiet && !self.json {
                    return emit(&ids(&data));
                }
                if self.json {
                    return self.show(&data, |_| String::new());
                }
                // Application names for the APP column (ids if that list cannot be had).
                let apps = self.call(Method::GET, APPLICATIONS, None).await.unwrap_or(Value::Null);
                self.show(&data, |d| render_grant_list(d, &apps))
            }
            GrantCmd::Create(a) => {
                let data = self.call(Method::POST, GRANTS, Some(&grant_create_body(&a))).await?;
                let head = format!(
                    "created grant {} for application {} on addon {}",
                    cell(&text(&data, "id")),
                    cell(&a.app),
                    cell(&text(&data, "addon"))
                );
                self.show_key(&data, &head)
            }
            GrantCmd::Show(a) => {
                let data = self.call(Method::GET, &grant_path(&a.id, ""), None).await?;
                self.show(&data, render_grant)
            }
            GrantCmd::Rotate { id, grace } => {
                let body = match grace {
                    Some(g) => json!({"grace_seconds": g}),
                    None => json!({}),
                };
                let data = self.call(Method::POST, &grant_path(&id, "rotate"), Some(&body)).await?;
                let old = match data.get("old_key_valid_until").and_then(Value::as_str) {
                    Some(_) => format!("the old key works until {}", local_time(data.get("old_key_valid_until"))),
                    None => "the old key is refused from now on".to_string(),
                };
                let head = format!("rotated the key of grant {}; {old}", cell(&text(&data, "id")));
                self.show_key(&data, &head)
            }
            GrantCmd::Revoke(a) => {
                let data = self.call(Method::POST, &grant_path(&a.id, "revoke"), None).await?;
                self.show(&data, |d| format!("revoked grant {}: its key is refused from now on\n", cell(&text(d, "id"))))
            }
            GrantCmd::Update(a) => {
                let current = self.call(Method::GET, &grant_path(&a.id, ""), None).await?;
                let body = grant_update_body(&a, &current)?;
                // The id the daemon resolved, so the PATCH hits the grant we read.
                let id = current.get("id").and_then(Value::as_str).unwrap_or(&a.id).to_string();
                let data = self.call(Method::PATCH, &grant_path(&id, ""), Some(&body)).await?;
                self.show(&data, |d| format!("updated grant {}\n{}", cell(&text(d, "id")), render_grant(d)))
            }
            GrantCmd::Delete(a) => {
                let data = self.call(Method::DELETE, &grant_path(&a.id, ""), None).await?;
                self.show(&data, |d| format!("deleted grant {}: its key stops working now\n", cell(&text(d, "id"))))
            }
        }
    }

    /// A reply carrying a new `api_key` (grant created or rotated): the key once, set apart
    /// on stdout, and a warning on stderr. `--quiet`: the key alone, no warning; `--json`:
    /// the whole grant, key included (and the warning).
    fn show_key(&self, data: &Value, head: &str) -> anyhow::Result<()> {
        let key = cell(data.get("api_key").and_then(Value::as_str).unwrap_or(""));
        if key.is_empty() {
            return Err(ClientError::Protocol("the daemon's reply has no api_key".into()).into());
        }
        if self.quiet && !self.json {
            return emit(&format!("{key}\n"));
        }
        if !self.quiet {
            note(&format!(
                "warning: this API key is shown only now and cannot be read back: store it now; \
                 if it is lost, `addonctl grants rotate {}` makes a new one\n",
                cell(&text(data, "id"))
            ));
        }
        if self.json {
            return emit(&format!("{}\n", serde_json::to_string_pretty(data)?));
        }
        emit(&render_new_key(head, &key))
    }

    async fn audit(&self, limit: Option<u32>) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &format!("/api/audit{}", query(&[("limit", limit.map(|l| l.to_string()))])), None).await?;
        self.show(&data, render_audit)
    }

    async fn events(&self, cmd: EventCmd) -> anyhow::Result<()> {
        match cmd {
            EventCmd::Emit { name, data, set } => {
                let base = data.as_deref().map(|t| parse_json_arg("--data", t)).transpose()?;
                let data = apply_sets(base.unwrap_or_else(|| json!({})), &set, "the data")?;
                let ev = self.call(Method::POST, EVENTS, Some(&json!({"name": name, "data": data}))).await?;
                if self.quiet && !self.json {
                    return emit(&format!("{}\n", cell(&text(&ev, "id"))));
                }
                self.show(&ev, |e| format!("stored event {} ({})\n", cell(&text(e, "id")), cell(&text(e, "name"))))
            }
            EventCmd::List { name, after, limit } => {
                let q = query(&[
                    ("name", name),
                    ("after", after.map(|a| a.to_string())),
                    ("limit", limit.map(|l| l.to_string())),
                ]);
                let data = self.call(Method::GET, &format!("{EVENTS}{q}"), None).await?;
                if self.quiet && !self.json {
                    return emit(&event_ids(&data));
                }
                self.show(&data, render_event_list)
            }
            EventCmd::Follow { name, after } => self.events_follow(name, after).await,
            EventCmd::Subscribers => {
                let data = self.call(Method::GET, &format!("{EVENTS}/subscribers"), None).await?;
                self.show(&data, render_subscribers)
            }
            EventCmd::Redrive { subscriber } => {
                let body = match &subscriber {
                    Some(s) => json!({"subscriber": s}),
                    None => json!({}),
                };
                let data = self.call(Method::POST, &format!("{EVENTS}/redrive"), Some(&body)).await?;
                self.show(&data, |d| {
                    let whose = subscriber.as_deref().map(|s| format!(" of {}", cell(s))).unwrap_or_default();
                    format!("{} dead letter(s){whose} will be delivered again\n", cell(&text(d, "redriven")))
                })
            }
        }
    }

    /// `events follow`: `GET /api/events/stream` from `after` (default: the newest stored
    /// event, so only new ones print), one line per event. When the connection drops it
    /// reconnects, asking for the events after the last one printed, so none is lost or
    /// printed twice. Ends with Ctrl-C (or a refusal from the daemon).
    async fn events_follow(&self, name: Option<String>, after: Option<u64>) -> anyhow::Result<()> {
        let mut last = match after {
            Some(a) => a,
            None => {
                let d = self.call(Method::GET, &format!("{EVENTS}/subscribers"), None).await?;
                d.get("last_event_id").and_then(Value::as_u64).unwrap_or(0)
            }
        };
        let mut attempt = 0u32;
        let mut connected_once = false;
        loop {
            // `?after=` is the query form of `Last-Event-ID` (docs/api.md).
            let path = format!("{EVENTS}/stream{}", query(&[("name", name.clone()), ("after", Some(last.to_string()))]));
            let mut stream = match self.client.stream(Method::GET, &path).await {
                Ok(s) => s,
                Err(e) if connected_once && reconnectable(&e) => {
                    tokio::time::sleep(follow_backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if connected_once && !self.quiet {
                note(&format!("reconnected; following after event {last}\n"));
            }
            connected_once = true;
            attempt = 0;
            let mut parser = SseParser::default();
            while let Some(chunk) = stream.next_chunk().await {
                let Ok(chunk) = chunk else { break };
                let mut out = String::new();
                for ev in parser.push(&chunk) {
                    let Some((id, event)) = followed_event(&ev) else { continue };
                    if id <= last {
                        continue; // already printed before a reconnect
                    }
                    last = id;
                    out.push_str(&if self.json {
                        format!("{}\n", serde_json::to_string(&event)?)
                    } else if self.quiet {
                        format!("{id}\n")
                    } else {
                        follow_line(&event)
                    });
                }
                if !out.is_empty() {
                    emit(&out)?;
                }
            }
            if !self.quiet {
                note(&format!("lost the connection to addond; reconnecting (after event {last})\n"));
            }
        }
    }
}

fn app_path(id: &str) -> String {
    format!("{APPLICATIONS}/{}", client::encode_path_segment(id))
}

fn grant_path(id: &str, action: &str) -> String {
    let mut p = format!("{GRANTS}/{}", client::encode_path_segment(id));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

// ---------------------------------------------------------------------------------------
// Server-sent events.

/// One server-sent event: the last `id` seen when it was dispatched, its `event` type and
/// its `data` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads a `text/event-stream` body chunk by chunk (the WHATWG parsing rules): lines end in
/// LF, CRLF or CR, wherever the chunks split them (a UTF-8 character too); lines starting
/// with `:` are comments (keep-alives); `data` lines accumulate; a blank line dispatches
/// the event if it has data; `id` persists from one event to the next.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    /// The last chunk ended in CR: a LF starting the next one ends the same line.
    after_cr: bool,
    /// Before the first line: a byte-order mark is skipped.
    started: bool,
    last_id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn push(&mut self, mut chunk: &[u8]) -> Vec<SseEvent> {
        if std::mem::take(&mut self.after_cr) && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        if !self.started {
            if buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&buf) {
                self.pending = buf;
                return Vec::new();
            }
            self.started = true;
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
        }
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < buf.len() {
            match buf[i] {
                b'\n' => {
                    self.line(&buf[start..i], &mut out);
                    start = i + 1;
                }
                b'\r' => {
                    self.line(&buf[start..i], &mut out);
                    match buf.get(i + 1) {
                        Some(b'\n') => i += 1,
                        Some(_) => {}
                        None => self.after_cr = true,
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        buf.drain(..start);
        self.pending = buf;
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent { id: self.last_id.clone(), event: self.event.take(), data });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
    }
}

/// The id and JSON of an event from the stream (the JSON's `id`, else the SSE `id`);
/// `None` for anything that is not one of our events.
fn followed_event(ev: &SseEvent) -> Option<(u64, Value)> {
    let event: Value = serde_json::from_str(&ev.data).ok()?;
    let id = event.get("id").and_then(Value::as_u64).or_else(|| ev.id.as_deref()?.trim().parse().ok())?;
    Some((id, event))
}

/// `ID TIME NAME SOURCE DATA`, one line, every field sanitised.
fn follow_line(e: &Value) -> String {
    format!(
        "{} {} {} {} {}\n",
        cell(&text(e, "id")),
        local_time(e.get("timestamp")),
        cell(&text(e, "name")),
        cell(&text(e, "source")),
        cell(&event_data(e))
    )
}

// ---------------------------------------------------------------------------------------
// Rendering applications, grants, the audit log and events.

fn render_app_list(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no applications\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| vec![text(a, "id"), text(a, "name"), text(a, "organization"), list_of(a, "grants").len().to_string()])
        .collect();
    render_table(&["ID", "NAME", "ORGANIZATION", "GRANTS"], &rows)
}

fn render_app(a: &Value) -> String {
    let mut out = render_kv(&[
        ("ID", text(a, "id")),
        ("Name", text(a, "name")),
        ("Description", text(a, "description")),
        ("Organization", text(a, "organization")),
        ("Created", local_time(a.get("created_at"))),
    ]);
    out.push('\n');
    let name = a.get("name").and_then(Value::as_str).unwrap_or("-");
    out.push_str(&grant_table(list_of(a, "grants"), &|_| name.to_string()));
    out
}

/// `10/s`, `10/s, burst 20`, or `-` (no limit).
fn rate(g: &Value) -> String {
    let Some(l) = g.get("rate_limit").filter(|l| l.is_object()) else { return "-".into() };
    let mut s = format!("{}/s", display(l.get("requests_per_second")));
    if let Some(b) = l.get("burst").filter(|b| !b.is_null()) {
        s.push_str(&format!(", burst {}", display(Some(b))));
    }
    s
}

fn grant_table(grants: &[Value], app_name: &dyn Fn(&Value) -> String) -> String {
    if grants.is_empty() {
        return "no grants\n".into();
    }
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                text(g, "id"),
                app_name(g),
                text(g, "addon"),
                text(g, "key_prefix"),
                rate(g),
                joined(g, "allowed_origins"),
                text(g, "status"),
            ]
        })
        .collect();
    render_table(&["ID", "APP", "ADDON", "KEY", "RATE", "ORIGINS", "STATUS"], &rows)
}

/// The grants table; `apps` (the application list) turns application ids into names.
fn render_grant_list(d: &Value, apps: &Value) -> String {
    let name_of = |g: &Value| {
        let id = g.get("application_id").and_then(Value::as_str).unwrap_or("");
        apps.as_array()
            .and_then(|l| l.iter().find(|a| a.get("id").and_then(Value::as_str) == Some(id)))
            .map(|a| text(a, "name"))
            .unwrap_or_else(|| text(g, "application_id"))
    };
    grant_table(d.as_array().map(Vec::as_slice).unwrap_or(&[]), &name_of)
}

fn render_grant(g: &Value) -> String {
    let mut pairs = vec![
        ("ID", text(g, "id")),
        ("Application", text(g, "application_id")),
        ("Addon", text(g, "addon")),
        ("Key", text(g, "key_prefix")),
        ("Rate limit", rate(g)),
        ("Origins", joined(g, "allowed_origins")),
        ("Status", text(g, "status")),
        ("Created", local_time(g.get("created_at"))),
        ("Rotated", local_time(g.get("rotated_at"))),
    ];
    if g.get("old_key_valid_until").is_some_and(|v| !v.is_null()) {
        pairs.push(("Old key until", local_time(g.get("old_key_valid_until"))));
    }
    if g.get("revoked_at").is_some_and(|v| !v.is_null()) {
        pairs.push(("Revoked", local_time(g.get("revoked_at"))));
    }
    render_kv(&pairs)
}

/// A new key, set apart so it cannot be missed (it is never shown again).
fn render_new_key(head: &str, key: &str) -> String {
    format!("{head}\n\nAPI key (shown only this once):\n\n    {key}\n\n")
}

/// Who made an audited request: `uid:pid` on the admin socket, the client address for
/// the gateway.
fn audit_who(e: &Value) -> String {
    match (e.get("uid").and_then(Value::as_u64), e.get("pid").and_then(Value::as_i64)) {
        (Some(u), Some(p)) => format!("{u}:{p}"),
        (Some(u), None) => u.to_string(),
        (None, _) => text(e, "source"),
    }
}

fn render_audit(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no audit records\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![local_time(e.get("at")), audit_who(e), text(e, "method"), text(e, "path"), text(e, "status"), text(e, "detail")]
        })
        .collect();
    render_table(&["AT", "WHO", "METHOD", "PATH", "STATUS", "DETAIL"], &rows)
}

/// An event's data as compact JSON (`-` when there is none).
fn event_data(e: &Value) -> String {
    match e.get("data") {
        None | Some(Value::Null) => "-".into(),
        Some(d) => d.to_string(),
    }
}

/// At most `max` characters, with `…` in place of the rest.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

const EVENT_DATA_WIDTH: usize = 60;

fn render_event_list(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no events\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                text(e, "id"),
                local_time(e.get("timestamp")),
                text(e, "name"),
                text(e, "source"),
                truncate(&cell(&event_data(e)), EVENT_DATA_WIDTH),
            ]
        })
        .collect();
    render_table(&["ID", "TIME", "NAME", "SOURCE", "DATA"], &rows)
}

/// Event ids, one per line (`events list --quiet`).
fn event_ids(d: &Value) -> String {
    d.as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|e| format!("{}\n", cell(&text(e, "id")))).collect()
}

fn render_subscribers(d: &Value) -> String {
    let mut out = format!("last event id: {}\n\n", cell(&text(d, "last_event_id")));
    let subs = list_of(d, "subscribers");
    if subs.is_empty() {
        out.push_str("no subscribers\n");
    } else {
        let rows: Vec<Vec<String>> = subs
            .iter()
            .map(|s| {
                vec![
                    text(s, "subscriber"),
                    text(s, "delivered_up_to"),
                    text(s, "attempts"),
                    text(s, "last_error"),
                    text(s, "dead_letters"),
                ]
            })
            .collect();
        out.push_str(&render_table(&["SUBSCRIBER", "DELIVERED_UP_TO", "ATTEMPTS", "LAST_ERROR", "DEAD_LETTERS"], &rows));
    }
    out.push('\n');
    let dead = list_of(d, "dead_letters");
    if dead.is_empty() {
        out.push_str("no dead letters\n");
    } else {
        let rows: Vec<Vec<String>> = dead
            .iter()
            .map(|l| {
                let redrive = if l.get("redrive").and_then(Value::as_bool) == Some(true) { "pending" } else { "-" };
                vec![
                    text(l, "subscriber"),
                    text(l, "event_id"),
                    text(l, "attempts"),
                    local_time(l.get("at")),
                    redrive.to_string(),
                    text(l, "last_error"),
                ]
            })
            .collect();
        out.push_str(&format!("dead letters: {}\n", dead.len()));
        out.push_str(&render_table(&["SUBSCRIBER", "EVENT", "ATTEMPTS", "AT", "REDRIVE", "LAST_ERROR"], &rows));
    }
    out
}

/// A timestamp (RFC 3339 text, or Unix seconds or milliseconds) as RFC 3339 in the local
/// time zone, to the second (`2026-11-22T01:01:02+01:00`; `Z` where local time is UTC).
fn local_time(v: Option<&Value>) -> String {
    match v.and_then(timestamp) {
        Some(t) => rfc3339_offset(t, local_offset(t)),
        None => "-".into(),
    }
}

/// Unix seconds as RFC 3339 at a UTC offset in seconds (`Z` for 0).
fn rfc3339_offset(t: i64, offset: i64) -> String {
    let utc = rfc3339(t + offset);
    if offset == 0 {
        return utc;
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let o = offset.abs();
    format!("{}{sign}{:02}:{:02}", utc.trim_end_matches('Z'), o / 3600, (o % 3600) / 60)
}

/// The local time zone's offset from UTC at `t`, in seconds (0 when it cannot be known).
fn local_offset(t: i64) -> i64 {
    // time_t is 64 bits on the targets addond supports.
    let tt = t as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r only reads `tt` and writes
    // into `tm`, both owned here, and is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("addonctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:") && help.contains("5  --wait ended"), "{help}");
    }

    #[test]
    fn aliases_and_global_flags() {
        let c = parse(&["ls", "--status", "failed", "--json"]);
        assert!(c.json);
        assert!(matches!(c.command, Command::Ls(ListArgs { status: Some(ref s), .. }) if s == "failed"));
        let c = parse(&["services", "ls", "--plugin-id", "pay", "-q"]);
        assert!(c.quiet);
        assert!(matches!(c.command, Command::Services(ServiceCmd::List(_))));
        let c = parse(&["--socket", "/tmp/s.sock", "svc", "rm", "x", "--wait", "--timeout", "30"]);
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/s.sock")));
        match c.command {
            Command::Services(ServiceCmd::Delete(a)) => {
                assert_eq!(a.id, "x");
                assert_eq!(a.wait, WaitArgs { wait: true, timeout: Some(30) });
            }
            other => panic!("{other:?}"),
        }
        let c = parse(&["logs", "svc1", "-n", "5", "-f", "--instance", "2"]);
        assert!(matches!(c.command, Command::Logs(LogsArgs { lines: 5, follow: true, instance: Some(2), .. })));
        assert!(matches!(parse(&["metrics"]).command, Command::Metrics { id: None }));
        assert!(matches!(parse(&["scale", "a", "3"]).command, Command::Scale(ScaleArgs { replicas: 3, .. })));
        // Usage errors are clap's (exit 2).
        for bad in [
            vec!["scale", "a", "65"],
            vec!["services", "create", "--name", "a"],
            vec!["services", "create", "--name", "a", "--image", "i", "--env", "NOEQUALS"],
            vec!["services", "create", "--name", "a", "--image", "i", "--volume", "a:b:rx"],
            vec!["services", "create", "--name", "a", "--image", "i", "--type", "lambda"],
            vec!["start", "x", "--timeout", "0"],
            vec!["cleanup"],
        ] {
            let e = Cli::try_parse_from(std::iter::once("addonctl").chain(bad.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn create_body_from_flags() {
        let c = parse(&[
            "services", "create", "--name", "payments-api", "--image", "addond-sample:latest", "--plugin-id", "pay",
            "--type", "rest_api", "--port", "8080", "--replicas", "2", "--env", "A=B", "--env", "URL=http://x?a=b",
            "--volume", "data:/data:ro", "-v", "./files:/files", "--network", "addond", "--memory", "256m", "--cpu",
            "0.5", "--pids", "64", "--health-path", "/healthz", "--health-interval", "5", "--health-retries", "2",
            "--restart-policy", "on-failure", "--version", "1.2.3",
        ]);
        let Command::Services(ServiceCmd::Create(a)) = c.command else { panic!() };
        let body = build_create_body(&a, None).unwrap();
        assert_eq!(
            body,
            json!({
                "name": "payments-api", "image": "addond-sample:latest", "plugin_id": "pay",
                "service_type": "rest_api", "port": 8080, "replicas": 2,
                "environment": {"A": "B", "URL": "http://x?a=b"},
                "volumes": [{"source": "data", "target": "/data", "read_only": true},
                            {"source": "./files", "target": "/files", "read_only": false}],
                "networks": ["addond"],
                "resource_limits": {"memory": "256m", "cpu": "0.5", "pids": 64},
                "health_check": {"path": "/healthz", "interval": 5.0, "retries": 2},
                "restart_policy": "on-failure", "version": "1.2.3"
            })
        );
    }

    #[test]
    fn create_body_flags_override_file() {
        let c = parse(&["services", "create", "--file", "body.json", "--replicas", "3", "--env", "A=flag", "--memory", "1g", "--volume", "b:/b"]);
        let Command::Services(ServiceCmd::Create(a)) = c.command else { panic!() };
        let file = json!({
            "name": "from-file", "image": "img", "replicas": 1, "environment": {"A": "file", "B": "keep"},
            "resource_limits": {"memory": "512m", "cpu": "0.5"}, "volumes": ["a:/a"], "depends_on": ["db"]
        });
        let body = build_create_body(&a, Some(file)).unwrap();
        assert_eq!(
            body,
            json!({
                "name": "from-file", "image": "img", "replicas": 3, "environment": {"A": "flag", "B": "keep"},
                "resource_limits": {"memory": "1g", "cpu": "0.5"},
                "volumes": ["a:/a", {"source": "b", "target": "/b", "read_only": false}], "depends_on": ["db"]
            })
        );
        // A file without a name and no --name: a usage error.
        let e = build_create_body(&a, Some(json!({"image": "img"}))).unwrap_err();
        assert!(e.0.contains("--name"), "{e}");
        // Wrong shapes in the file are named.
        let c = parse(&["services", "create", "--file", "f", "--env", "A=1"]);
        let Command::Services(ServiceCmd::Create(a)) = c.command else { panic!() };
        let e = build_create_body(&a, Some(json!({"name": "n", "image": "i", "environment": []}))).unwrap_err();
        assert!(e.0.contains("environment"), "{e}");
    }

    #[test]
    fn template_body() {
        let c = parse(&["templates", "create", "rest_api_basic", "--name", "t1", "--port", "9000", "-e", "X=1", "--wait"]);
        let Command::Templates(TemplateCmd::Create(a)) = c.command else { panic!() };
        assert_eq!(build_template_body(&a), json!({"name": "t1", "port": 9000, "environment": {"X": "1"}}));
        assert_eq!(wait_query(Op::Create, &a.wait), "?wait=started");
    }

    #[test]
    fn wait_phase_mapping() {
        assert_eq!(wait_phase(Op::Create), "started");
        assert_eq!(wait_phase(Op::Start), "started");
        assert_eq!(wait_phase(Op::Restart), "started");
        assert_eq!(wait_phase(Op::Scale), "started");
        assert_eq!(wait_phase(Op::Stop), "stopped");
        assert_eq!(wait_phase(Op::Delete), "deleted");
        assert_eq!(wait_query(Op::Stop, &WaitArgs::default()), "");
        assert_eq!(wait_query(Op::Stop, &WaitArgs { wait: true, timeout: None }), "?wait=stopped");
        assert_eq!(wait_query(Op::Delete, &WaitArgs { wait: false, timeout: Some(9) }), "?wait=deleted&timeout=9");
    }

    #[test]
    fn exit_codes() {
        let api = |status, code: &str| anyhow::Error::from(ApiError { status, code: code.into(), message: "m".into(), field: None });
        assert_eq!(exit_code(&api(404, "not_found")), 1);
        assert_eq!(exit_code(&api(403, "forbidden")), 4);
        assert_eq!(exit_code(&api(504, "wait_timeout")), 5);
        assert_eq!(exit_code(&api(502, "service_failed")), 5);
        assert_eq!(exit_code(&ClientError::NotRunning { socket: "/s".into() }.into()), 3);
        assert_eq!(exit_code(&ClientError::PermissionDenied { socket: "/s".into() }.into()), 4);
        assert_eq!(exit_code(&UsageError("x".into()).into()), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
        // A broken pipe on the socket is an error; only a closed stdout is not.
        let sock = ClientError::Io { socket: "/s".into(), error: io::Error::from(io::ErrorKind::BrokenPipe) };
        assert_eq!(exit_code(&sock.into()), 1);
        assert!(anyhow::Error::from(StdoutClosed).is::<StdoutClosed>());
    }

    #[test]
    fn sanitising() {
        // The rules are tested in `addond::sanitize`; here, that addonctl's lines and cells use them.
        assert_eq!(sanitize_line("\x1b]0;pwned\x07title\tok\x1b[0m"), "title\tok");
        assert_eq!(cell("two\nlines\tand\x1b[1mbold"), "two lines andbold");
    }

    #[test]
    fn line_buffer_splits_chunks_and_utf8() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"one\ntw"), "one\n");
        let e = "é".as_bytes();
        assert_eq!(b.push(&[b'o', e[0]]), "");
        assert_eq!(b.push(&[e[1], b'\n', b'\x1b', b'[', b'3', b'1', b'm', b'r', b'\n', b'x']), "two\u{e9}\nr\n");
        assert_eq!(b.finish(), "x\n");
        assert_eq!(b.finish(), "");
    }

    #[test]
    fn table_alignment() {
        let t = render_table(&["ID", "NAME", "X"], &[vec!["a".into(), "longer-name".into(), "1".into()], vec!["bbbb".into(), "n\x1b[31m".into(), "".into()]]);
        assert_eq!(t, "ID     NAME          X\na      longer-name   1\nbbbb   n\n");
    }

    fn sample_service() -> Value {
        json!({
            "id": "svc_3f9c2a7b1d04", "name": "payments-api", "plugin_id": "payment-gateway",
            "service_type": "rest_api", "image": "addond-sample:latest", "port": 8080, "host": "127.0.0.1",
            "environment": {"KEY": "value"},
            "volumes": [{"source": "data", "target": "/data", "read_only": true, "kind": "named"}],
            "networks": ["addond"], "depends_on": [],
            "health_check": {"path": "/health", "interval": 30, "timeout": 10, "retries": 3, "start_period": 0},
            "resource_limits": {"memory": "512m", "cpu": "0.5", "pids": 256},
            "restart_policy": "unless-stopped", "version": "1.0.0", "replicas": 2, "desired": "started",
            "phase": "Started", "status": "partial", "health_status": "unhealthy", "host_port": 8000,
            "endpoint": "http://127.0.0.1:8000", "last_error": null, "exit_code": null,
            "created_at": "2026-11-21T23:40:00Z", "updated_at": "2026-11-21T23:40:01.5+00:00",
            "instances": [
                {"id": "inst_a", "ordinal": 0, "container_id": "9c1e0123456789abcdef", "host_port": 8000, "health": "healthy",
                 "restarts": 1, "started_at": "2026-11-21T23:40:01Z", "last_error": null, "state": "running"},
                {"id": "inst_b", "ordinal": 1, "container_id": null, "host_port": 8001, "health": "unhealthy",
                 "restarts": 2, "started_at": null, "last_error": "exited \x1b[31mcode 1", "state": "exited"}
            ]
        })
    }

    #[test]
    fn service_list_table() {
        let now = timestamp(&json!("2026-11-22T02:40:00Z")).unwrap();
        let mut evil = sample_service();
        evil["id"] = json!("svc_2");
        evil["name"] = json!("evil\x1b]0;owned\x07-name\n");
        evil["plugin_id"] = Value::Null;
        evil["instances"] = json!([]);
        evil["created_at"] = json!("2026-11-22T02:39:15Z");
        let out = render_service_list(&json!([sample_service(), evil]), now);
        let expected = "\
ID                NAME           PLUGIN            TYPE       PHASE     HEALTH      REPLICAS   PORTS       RESTARTS   AGE
svc_3f9c2a7b1d04  payments-api   payment-gateway   rest_api   Started   unhealthy   1/2        8000,8001   3          3h
svc_2             evil-name      -                 rest_api   Started   unhealthy   0/2        -           0          45s
";
        // Columns are three spaces apart; compare after normalising our expectation's spacing.
        let norm = |s: &str| s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
        assert_eq!(norm(&out), norm(expected));
        let header_end = out.lines().next().unwrap();
        assert!(header_end.starts_with("ID                 NAME"), "{out}");
        assert!(!out.contains('\x1b') && !out.contains("owned"));
        assert_eq!(render_service_list(&json!([]), now), "no services\n");
        assert_eq!(ids(&json!([sample_service()])), "svc_3f9c2a7b1d04\n");
    }

    #[test]
    fn service_show_block() {
        let now = timestamp(&json!("2026-11-21T23:45:00Z")).unwrap();
        let out = render_service(&sample_service(), now);
        assert!(out.contains("Phase:           Started (desired: started)\n"), "{out}");
        assert!(out.contains("Endpoints:       http://127.0.0.1:8000, http://127.0.0.1:8001\n"), "{out}");
        assert!(out.contains("Volumes:         data:/data:ro (named)\n"), "{out}");
        assert!(out.contains("Health check:    GET /health every 30s, timeout 10s, 3 retries\n"), "{out}");
        let mut floats = sample_service();
        floats["health_check"] = json!({"path": "/h", "interval": 30.0, "timeout": 2.5, "retries": 3});
        assert!(render_service(&floats, now).contains("GET /h every 30s, timeout 2.5s, 3 retries"));
        assert!(out.contains("Created:         2026-11-21T23:40:00Z (5m ago)\n"), "{out}");
        assert!(out.contains("Depends on:      -\n"), "{out}");
        let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with('#')).collect();
        assert_eq!(table.len(), 3, "{out}");
        assert!(table[1].contains("9c1e01234567") && !table[1].contains("9c1e0123456789"), "{out}");
        assert!(table[2].contains("exited code 1") && !out.contains('\x1b'), "{out}");
    }

    #[test]
    fn reports() {
        let s = sample_service();
        assert_eq!(
            render_report(Op::Start, true, &s),
            "payments-api (svc_3f9c2a7b1d04): Started\n  http://127.0.0.1:8000\n  http://127.0.0.1:8001\n"
        );
        let mut stopped = s.clone();
        stopped["phase"] = json!("Stopped");
        stopped["instances"] = json!([]);
        assert_eq!(render_report(Op::Stop, true, &stopped), "payments-api (svc_3f9c2a7b1d04): Stopped\n");
        let mut creating = s.clone();
        creating["phase"] = json!("Creating");
        assert_eq!(render_report(Op::Create, false, &creating), "created payments-api (svc_3f9c2a7b1d04): Creating\n");
        assert!(render_report(Op::Scale, false, &s).starts_with("payments-api (svc_3f9c2a7b1d04): Started, 2 replica(s)\n"));
        // Scaled to zero: no endpoint, even if the daemon still names one.
        let mut zero = s.clone();
        zero["replicas"] = json!(0);
        zero["instances"] = json!([]);
        assert_eq!(render_report(Op::Scale, true, &zero), "payments-api (svc_3f9c2a7b1d04): Started, 0 replica(s)\n");
        let mut bare = s.clone();
        bare.as_object_mut().unwrap().remove("instances");
        assert_eq!(endpoints(&bare), vec!["http://127.0.0.1:8000".to_string()]);
    }

    #[test]
    fn logs_metrics_discovery_templates_cleanup() {
        assert_eq!(render_log_lines(&json!({"lines": ["a\x1b[0m", "b\tc\n", "d\ne"]})), "a\nb\tc\nd\ne\n");
        let m = render_metrics(&json!({"cpu_percent": 1.234, "memory_usage_mb": 45.25, "memory_limit_mb": 512.0,
            "memory_percent": 8.8, "network_rx_mb": 0.1, "network_tx_mb": 0.02, "timestamp": "t",
            "instances": [{"ordinal": 0, "cpu_percent": 1.2}, {"ordinal": 1, "metrics": {"cpu_percent": 2.5, "memory_usage_mb": 3.0}}]}));
        assert!(m.contains("\n1   2.5    3.0 "), "{m}");
        assert!(m.contains("CPU:      1.2%\n") && m.contains("Memory:   45.2 MB / 512 MB (8.8%)\n"), "{m}");
        assert!(m.contains("#   CPU%   MEM MB"), "{m}");
        let d = render_discovery(&json!({
            "services": [{"id": "svc_1", "name": "a", "plugin_id": null, "service_type": "rest_api",
                "endpoint": "http://127.0.0.1:8000", "endpoints": ["http://127.0.0.1:8000", "http://127.0.0.1:8001"],
                "health_status": "healthy", "phase": "Started", "networks": ["addond"]}],
            "networks": [{"name": "addond", "subnet": "172.30.0.0/16", "internal": false}],
            "totals": {"services": 1, "instances": 2, "healthy": 2, "unhealthy": 0}}));
        assert!(d.contains("http://127.0.0.1:8000, http://127.0.0.1:8001"), "{d}");
        assert!(d.contains("addond    172.30.0.0/16   false"), "{d}");
        assert!(d.ends_with("\n1 services, 2 instances, 2 healthy, 0 unhealthy\n"), "{d}");
        let t = render_templates(&json!([{"id": "rest_api_basic", "name": "REST API", "description": "A basic REST API",
            "service_type": "rest_api", "resource_limits": {"memory": "512m", "cpu": "0.5"}, "health_check": {"path": "/health"}, "port": 8080}]));
        assert_eq!(t.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(),
            ["rest_api_basic", "rest_api", "8080", "512m", "0.5", "/health", "A", "basic", "REST", "API"]);
        assert_eq!(render_cleanup(&json!({"removed": []})), "nothing to remove\n");
        assert!(render_cleanup(&json!({"removed": [{"id": "svc_1", "name": "a", "phase": "Stopped"}]})).starts_with("removed 1 service(s)\nID"));
        let h = render_health(&json!({"version": "0.1.0", "uptime_seconds": 3725, "database": "ok", "docker": "reachable", "services": 2}));
        assert_eq!(h, "version:   0.1.0\nuptime:    1h 2m 5s\ndatabase:  ok\ndocker:    reachable\nservices:  2\n");
    }

    #[test]
    fn timestamps_and_ages() {
        assert_eq!(timestamp(&json!("1970-01-01T00:00:00Z")), Some(0));
        assert_eq!(timestamp(&json!("2000-03-01T00:00:00Z")), Some(951_868_800));
        assert_eq!(timestamp(&json!("2026-11-21T23:40:00.123456Z")), timestamp(&json!("2026-11-21T23:40:00Z")));
        assert_eq!(timestamp(&json!("2026-11-22T01:40:00+02:00")), timestamp(&json!("2026-11-21T23:40:00Z")));
        assert_eq!(timestamp(&json!(1_700_000_000_123i64)), Some(1_700_000_000));
        assert_eq!(timestamp(&json!("yesterday")), None);
        let now = 1_000_000;
        assert_eq!(age(Some(&json!(now - 5)), now), "5s");
        assert_eq!(age(Some(&json!(now - 600)), now), "10m");
        assert_eq!(age(Some(&json!(now - 3 * 3600)), now), "3h");
        assert_eq!(age(Some(&json!(now - 3 * 86400)), now), "3d");
        assert_eq!(age(None, now), "-");
        assert_eq!(duration_long(90061), "1d 1h 1m");
        for t in ["1970-01-01T00:00:00Z", "2000-02-29T12:34:56Z", "2026-11-21T23:40:00Z", "1969-12-31T23:59:59Z", "2100-03-01T00:00:00Z"] {
            assert_eq!(rfc3339(timestamp(&json!(t)).unwrap()), t);
        }
        assert_eq!(rfc3339(timestamp(&json!(1_795_306_810_362i64)).unwrap()), "2026-11-22T00:20:10Z");
        assert_eq!(duration_long(59), "59s");
    }

    #[test]
    fn image_commands_and_no_pull() {
        assert!(matches!(parse(&["images", "pull", "my/img:1"]).command, Command::Images(ImageCmd::Pull { ref image }) if image == "my/img:1"));
        let c = parse(&["services", "create", "--name", "a", "--image", "i", "--no-pull"]);
        assert!(matches!(c.command, Command::Services(ServiceCmd::Create(ref a)) if a.no_pull));
        let c = parse(&["services", "create", "--name", "a", "--image", "i"]);
        assert!(matches!(c.command, Command::Services(ServiceCmd::Create(ref a)) if !a.no_pull));
        let c = parse(&["templates", "create", "rest_api_basic", "--name", "t", "--no-pull"]);
        let Command::Templates(TemplateCmd::Create(a)) = c.command else { panic!() };
        assert!(a.no_pull);
        // --no-pull is ours, not a body key.
        assert_eq!(build_template_body(&a), json!({"name": "t"}));
        assert!(Cli::try_parse_from(["addonctl", "images", "pull"]).is_err());
    }

    #[test]
    fn progress_lines() {
        let mb = |x: f64| Some((x * 1e6) as u64);
        assert_eq!(progress_line("abc123", "Downloading", mb(12.3), mb(45.6)), "abc123: Downloading 12.3/45.6 MB");
        assert_eq!(progress_line("abc123", "Extracting", mb(0.5), mb(45.6)), "abc123: Extracting 0.5/45.6 MB");
        assert_eq!(progress_line("abc123", "Pull complete", None, None), "abc123: Pull complete");
        assert_eq!(progress_line("", "Digest: sha256:0f0f", None, None), "Digest: sha256:0f0f");
        assert_eq!(progress_line("abc123", "", None, None), "abc123:");
        // Units follow the larger number; bytes print whole.
        assert_eq!(progress_sizes(Some(512), Some(900)).as_deref(), Some("512/900 B"));
        assert_eq!(progress_sizes(Some(1_500), Some(32_000)).as_deref(), Some("1.5/32.0 kB"));
        assert_eq!(progress_sizes(Some(900_000), Some(1_200_000_000)).as_deref(), Some("0.0/1.2 GB"));
        assert_eq!(progress_sizes(Some(2_500_000), None).as_deref(), Some("2.5 MB"));
        assert_eq!(progress_sizes(None, Some(2_000_000)).as_deref(), Some("?/2.0 MB"));
        assert_eq!(progress_sizes(Some(0), Some(2_000_000)).as_deref(), Some("0.0/2.0 MB"));
        // Nothing worth showing: no sizes, a zero total, a bare zero.
        assert_eq!(progress_sizes(None, None), None);
        assert_eq!(progress_sizes(Some(0), None), None);
        assert_eq!(progress_sizes(Some(0), Some(0)), None);
    }

    #[test]
    fn progress_is_throttled_per_layer_but_status_changes_always_print() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let step = |layer: Option<&str>, status: &str, cur: Option<u64>| {
            json!({"layer": layer, "status": status, "current": cur, "total": cur.map(|_| 10_000_000u64)})
        };
        let mut t = ProgressThrottle::default();
        // The first step of a layer prints.
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(1_000_000)), at(0)).as_deref(), Some("aaa: Downloading 1.0/10.0 MB"));
        // Within 500 ms of it: dropped, whatever the bytes.
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(2_000_000)), at(100)), None);
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(3_000_000)), at(499)), None);
        // Another layer has its own clock.
        assert_eq!(t.line(&step(Some("bbb"), "Downloading", Some(5_000_000)), at(200)).as_deref(), Some("bbb: Downloading 5.0/10.0 MB"));
        // 500 ms after the last printed line: printed.
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(4_000_000)), at(500)).as_deref(), Some("aaa: Downloading 4.0/10.0 MB"));
        // A status change prints at once, and restarts the layer's clock.
        assert_eq!(t.line(&step(Some("aaa"), "Download complete", None), at(510)).as_deref(), Some("aaa: Download complete"));
        assert_eq!(t.line(&step(Some("aaa"), "Extracting", Some(1_000_000)), at(520)).as_deref(), Some("aaa: Extracting 1.0/10.0 MB"));
        assert_eq!(t.line(&step(Some("aaa"), "Extracting", Some(9_000_000)), at(900)), None);
        // The same line again, even much later: not repeated ("Waiting" sent over and over).
        assert_eq!(t.line(&step(Some("ccc"), "Waiting", None), at(0)).as_deref(), Some("ccc: Waiting"));
        assert_eq!(t.line(&step(Some("ccc"), "Waiting", None), at(5_000)), None);
        // Steps without a layer: one bucket, each new status prints.
        assert_eq!(t.line(&step(None, "Pulling from library/x", None), at(0)).as_deref(), Some("Pulling from library/x"));
        assert_eq!(t.line(&step(None, "Digest: sha256:1", None), at(1)).as_deref(), Some("Digest: sha256:1"));
        assert_eq!(t.line(&step(None, "Status: Downloaded newer image", None), at(2)).as_deref(), Some("Status: Downloaded newer image"));
        // Nothing to say: nothing printed.
        assert_eq!(t.line(&json!({"layer": null, "status": ""}), at(3)), None);
        // Daemon text is sanitised: escapes and line breaks never reach the terminal.
        let evil = json!({"layer": "d\u{1b}[2Jd\u{1b}]0;pwned\u{7}", "status": "Down\nloading\u{202e}", "current": 5, "total": 10});
        assert_eq!(t.line(&evil, at(0)).as_deref(), Some("dd: Down loading 5/10 B"));
    }

    #[test]
    fn pull_stream_reads_ndjson_across_chunks() {
        let t0 = Instant::now();
        let mut s = PullStream::new("my/img:1");
        let body = concat!(
            r#"{"progress":{"layer":"abc123","status":"Pulling fs layer","current":null,"total":null}}"#, "\n",
            r#"{"progress":{"layer":"abc123","status":"Downloading","current":1000000,"total":4000000}}"#, "\n",
            r#"{"progress":{"layer":"abc123","status":"Downloading","current":2000000,"total":4000000}}"#, "\n",
            "not json\n\n",
            r#"{"progress":{"layer":"abc123","status":"Pull complete","current":null,"total":null}}"#, "\n",
            r#"{"done":true,"image":"my/img:1"}"#, "\n",
            r#"{"progress":{"layer":"late","status":"ignored","current":null,"total":null}}"#, "\n",
        );
        // Split mid-line (and mid-number) to check the buffering.
        let (a, b) = body.as_bytes().split_at(130);
        let mut out = s.push(a, t0);
        out.push_str(&s.push(b, t0));
        assert_eq!(out, "abc123: Pulling fs layer\nabc123: Downloading 1.0/4.0 MB\nabc123: Pull complete\n");
        assert_eq!(s.finish(200).unwrap(), "my/img:1");

        // A last line without its newline still counts; `done` without an image names ours.
        let mut s = PullStream::new("my/img:1");
        assert_eq!(s.push(br#"{"done":true}"#, t0), "");
        assert_eq!(s.finish(200).unwrap(), "my/img:1");
    }

    #[test]
    fn pull_stream_errors() {
        let t0 = Instant::now();
        let mut s = PullStream::new("no-such-image:404");
        let line = r#"{"error":{"code":"image_not_found","message":"image `no-such-image:404` is not present locally and could not be pulled: denied","field":"image"}}"#;
        assert_eq!(s.push(format!("{line}\n").as_bytes(), t0), "");
        // Nothing after the error changes the outcome.
        s.push(b"{\"done\":true}\n", t0);
        let err = s.finish(200).unwrap_err();
        let api = err.downcast_ref::<ApiError>().expect("an ApiError");
        assert_eq!((api.code.as_str(), api.field.as_deref()), ("image_not_found", Some("image")));
        assert!(api.message.contains("no-such-image:404"), "{api}");
        assert_eq!(exit_code(&err), 1);
        assert_eq!(err.to_string(), "image `no-such-image:404` is not present locally and could not be pulled: denied (field: image)");

        // A bare error string still yields a message.
        let mut s = PullStream::new("x:1");
        s.push(b"{\"error\":\"registry down\"}\n", t0);
        let err = s.finish(200).unwrap_err();
        assert_eq!(err.downcast_ref::<ApiError>().unwrap().message, "registry down");

        // The stream stopped without `done` or `error`: a protocol error naming the image.
        let mut s = PullStream::new("x:1");
        s.push(b"{\"progress\":{\"layer\":\"a\",\"status\":\"Downloading\"}}\n", t0);
        let err = s.finish(200).unwrap_err();
        assert!(matches!(err.downcast_ref::<ClientError>(), Some(ClientError::Protocol(m)) if m.contains("x:1")), "{err}");
        assert_eq!(exit_code(&err), 1);
    }

    /// A fake daemon answering `images/pull` as the real one does: an envelope for
    /// `present:1`, an ndjson stream (close-delimited, in pieces) for `streamed:1` and
    /// `broken:1`, a 400 envelope otherwise.
    async fn fake_pull_daemon(listener: tokio::net::UnixListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("post /api/plugin-microservice/images/pull "), "{head}");
                let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).unwrap().trim().parse().unwrap();
                if buf.len() >= end + 4 + len {
                    break serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + len]).unwrap();
                }
            };
            let image = body["image"].as_str().unwrap().to_string();
            let head = |status: &str, ctype: &str| format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\nconnection: close\r\n\r\n");
            let parts: Vec<String> = match image.as_str() {
                "present:1" => vec![
                    head("200 OK", "application/json"),
                    json!({"success": true, "data": {"image": image, "present": true, "pulled": false}, "message": "image is present"}).to_string(),
                ],
                "streamed:1" | "broken:1" => {
                    let mut v = vec![head("200 OK", "application/x-ndjson")];
                    v.push(r#"{"progress":{"layer":"abc123","status":"Downloading","current":1000000,"total":2000000}}"#.to_string() + "\n{\"progr");
                    v.push(r#"ess":{"layer":"abc123","status":"Pull complete","current":null,"total":null}}"#.to_string() + "\n");
                    if image == "streamed:1" {
                        v.push(format!("{}\n", json!({"done": true, "image": image})));
                    }
                    v
                }
                _ => vec![
                    head("400 Bad Request", "application/json"),
                    json!({"success": false, "error": {"code": "validation_failed", "message": "not an image", "field": "image"}}).to_string(),
                ],
            };
            for p in parts {
                s.write_all(p.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
            }
            let _ = s.shutdown().await;
        }
    }

    #[tokio::test]
    async fn pull_tells_the_envelope_from_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let server = tokio::spawn(fake_pull_daemon(tokio::net::UnixListener::bind(&path).unwrap()));
        // Quiet: progress would go to the real stderr, which the test harness does not capture.
        let ctl = Ctl { client: Client::new(path), json: false, quiet: true };

        match ctl.pull("present:1").await.unwrap() {
            Pulled::Present(d) => assert_eq!(d, json!({"image": "present:1", "present": true, "pulled": false})),
            other => panic!("{other:?}"),
        }
        assert_eq!(ctl.pull("streamed:1").await.unwrap(), Pulled::Pulled("streamed:1".into()));
        // The stream ends without `done`: an error, not a success.
        let err = ctl.pull("broken:1").await.unwrap_err();
        assert!(err.to_string().contains("broken:1") && err.to_string().contains("without a result"), "{err}");
        // A refusal envelope: the daemon's error with its field, exit code 1.
        let err = ctl.pull("Bad!").await.unwrap_err();
        assert_eq!(err.to_string(), "not an image (field: image)");
        assert_eq!(exit_code(&err), 1);
        server.abort();
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(svc_path("a b", "logs"), "/api/plugin-microservice/services/a%20b/logs");
        assert_eq!(svc_path("svc_1", ""), "/api/plugin-microservice/services/svc_1");
        assert_eq!(query(&[("plugin_id", Some("p&q".into())), ("status", None)]), "?plugin_id=p%26q");
        assert_eq!(query(&[("a", None)]), "");
    }

    /// The progress of a pull is handed on as each chunk arrives, not when the reply ends:
    /// this daemon holds back the end of its stream until the first line was seen.
    #[tokio::test]
    async fn pull_progress_is_live() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).unwrap().trim().parse().unwrap();
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n").await.unwrap();
            s.write_all(b"{\"progress\":{\"layer\":\"abc123\",\"status\":\"Pulling fs layer\"}}\n").await.unwrap();
            s.flush().await.unwrap();
            // Only once addonctl has shown the first line does the pull "finish".
            seen_rx.await.unwrap();
            s.write_all(b"{\"done\":true,\"image\":\"slow:1\"}\n").await.unwrap();
            let _ = s.shutdown().await;
        });
        let ctl = Ctl { client: Client::new(path), json: false, quiet: true };
        let mut seen_tx = Some(seen_tx);
        let mut lines = String::new();
        let pulled = tokio::time::timeout(
            Duration::from_secs(10),
            ctl.pull_to("slow:1", |p| {
                lines.push_str(p);
                if let Some(tx) = seen_tx.take() {
                    let _ = tx.send(());
                }
            }),
        )
        .await
        .expect("the progress was held back until the reply ended")
        .unwrap();
        assert_eq!(pulled, Pulled::Pulled("slow:1".into()));
        assert_eq!(lines, "abc123: Pulling fs layer\n");
        server.await.unwrap();
    }

    // ---- addons and widgets ----------------------------------------------------------

    const MANIFEST_TOML: &str = r#"
name = "shop"
version = "1.2.0"
category = "ecommerce"
image = "addond-sample:latest"
permissions = ["network.internet"]
# Mixed arrays (TOML 1.0): strings and inline tables.
actions = ["echo", { name = "sleep", timeout_seconds = 1.5 }]

[[services]]
name = "api"
replicas = 2
resource_limits = { memory = "32m", cpu = "0.2" }

[[widgets]]
name = "checkout"
category = "form"
config_schema = { type = "object", properties = { title = { type = "string", default = "Pay now" } } }

[events]
emits = ["payment.completed"]

[dependencies]
inventory = "^1.0"

[config_schema]
type = "object"
properties.currency = { type = "string", enum = ["EUR", "USD"], default = "EUR" }

[[schedules]]
cron = "*/5 * * * *"
action = "echo"
"#;

    #[test]
    fn toml_manifests_become_the_same_json() {
        let v = toml_to_json_document(MANIFEST_TOML).unwrap();
        assert_eq!(
            v,
            json!({
                "name": "shop", "version": "1.2.0", "category": "ecommerce", "image": "addond-sample:latest",
                "permissions": ["network.internet"],
                "actions": ["echo", {"name": "sleep", "timeout_seconds": 1.5}],
                "services": [{"name": "api", "replicas": 2, "resource_limits": {"memory": "32m", "cpu": "0.2"}}],
                "widgets": [{"name": "checkout", "category": "form",
                    "config_schema": {"type": "object", "properties": {"title": {"type": "string", "default": "Pay now"}}}}],
                "events": {"emits": ["payment.completed"]},
                "dependencies": {"inventory": "^1.0"},
                "config_schema": {"type": "object", "properties": {"currency": {"type": "string", "enum": ["EUR", "USD"], "default": "EUR"}}},
                "schedules": [{"cron": "*/5 * * * *", "action": "echo"}]
            })
        );
        // Integers stay integers, datetimes become strings, sub-tables of array elements land
        // in the last element.
        let v = toml_to_json_document("n = 3\nf = 2.0\nt = true\nd = 1979-05-27T07:32:00Z\n[[a]]\nx = 1\n[[a]]\nx = 2\n[a.sub]\ny = -1\n").unwrap();
        assert_eq!(v, json!({"n": 3, "f": 2.0, "t": true, "d": "1979-05-27T07:32:00Z", "a": [{"x": 1}, {"x": 2, "sub": {"y": -1}}]}));
        assert!(v["n"].is_i64() && v["f"].is_f64());
        // What JSON cannot hold is named by its path.
        let e = toml_to_json_document("[[services]]\nname = \"a\"\n[services.limits]\ncpu = nan\n").unwrap_err();
        assert!(e.contains("services[0].limits.cpu") && e.contains("NaN"), "{e}");
        // Syntax errors name the line and column, on one line.
        let e = toml_to_json_document("name = \"shop\"\nversion 1.0.0\n").unwrap_err();
        assert!(e.starts_with("line 2, column "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = toml_to_json_document("a = 1\na = 2\n").unwrap_err();
        assert!(e.starts_with("line 2,"), "{e}");
    }

    #[test]
    fn documents_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let t = write("addon.TOML", "name = \"x\"\nversion = \"1.0.0\"\n");
        assert_eq!(read_document(&t, "manifest").unwrap(), json!({"name": "x", "version": "1.0.0"}));
        let j = write("addon.json", r#"{"name": "x"}"#);
        assert_eq!(read_document(&j, "manifest").unwrap(), json!({"name": "x"}));
        // Any other name is read as JSON; a failure hints at .toml.
        let other = write("addon.manifest", r#"{"name": "y"}"#);
        assert_eq!(read_document(&other, "manifest").unwrap(), json!({"name": "y"}));
        let e = read_document(&write("addon.txt", "name = \"x\""), "manifest").unwrap_err();
        assert!(e.0.contains("is not valid JSON") && e.0.contains("name it .toml"), "{e}");
        let e = read_document(&write("bad.json", "{"), "manifest").unwrap_err();
        assert!(e.0.contains("bad.json is not valid JSON") && !e.0.contains(".toml"), "{e}");
        let e = read_document(&write("bad.toml", "name = "), "--config-file").unwrap_err();
        assert!(e.0.starts_with("--config-file ") && e.0.contains("bad.toml is not valid TOML: line 1"), "{e}");
        let e = read_document(&dir.path().join("missing.toml"), "manifest").unwrap_err();
        assert!(e.0.starts_with("cannot read manifest "), "{e}");
        assert_eq!(exit_code(&e.into()), 2);
    }

    #[test]
    fn set_values_are_json_or_text() {
        let ok = |s: &str| parse_set(s).unwrap();
        assert_eq!(ok("currency=USD"), ("currency".into(), json!("USD")));
        assert_eq!(ok("n=3"), ("n".into(), json!(3)));
        assert_eq!(ok("ratio=0.5"), ("ratio".into(), json!(0.5)));
        assert_eq!(ok("live=true"), ("live".into(), json!(true)));
        assert_eq!(ok("none=null"), ("none".into(), Value::Null));
        assert_eq!(ok("tags=[\"a\",1]"), ("tags".into(), json!(["a", 1])));
        assert_eq!(ok("o={\"a\":{\"b\":1}}"), ("o".into(), json!({"a": {"b": 1}})));
        // A JSON string keeps what a bare word cannot say: "3" as text.
        assert_eq!(ok("zip=\"01234\""), ("zip".into(), json!("01234")));
        assert_eq!(ok("zip=01234"), ("zip".into(), json!("01234")), "not JSON (leading zero): text");
        assert_eq!(ok("title=Pay now"), ("title".into(), json!("Pay now")));
        assert_eq!(ok("url=http://x/?a=b"), ("url".into(), json!("http://x/?a=b")), "split at the first =");
        assert_eq!(ok("empty="), ("empty".into(), json!("")));
        assert_eq!(ok("a.b=1"), ("a.b".into(), json!(1)), "top-level keys only: dots are literal");
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("=x").is_err());
        assert!(parse_set(" =x").is_err());

        let sets = vec![("currency".to_string(), json!("USD")), ("n".to_string(), json!(1)), ("n".to_string(), json!(2))];
        assert_eq!(apply_sets(json!({"currency": "EUR", "keep": true}), &sets, "the config").unwrap(), json!({"currency": "USD", "keep": true, "n": 2}));
        assert_eq!(apply_sets(json!([1]), &[], "the input").unwrap(), json!([1]), "nothing to set: left as it is");
        let e = apply_sets(json!([1]), &sets, "the input").unwrap_err();
        assert!(e.0.contains("--set needs the input to be a JSON object"), "{e}");
    }

    #[test]
    fn addon_command_lines() {
        let c = parse(&["addons", "install", "shop", "--instance", "shop-eu", "--version", "1.0.0", "--set", "currency=USD", "--set", "n=2", "--wait"]);
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
        assert!(matches!(parse(&["addons", "ls", "--category", "ecommerce"]).command, Command::Addons(AddonCmd::List { category: Some(_) })));
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
            norm("NAME VERSION VERSIONS CATEGORY ACTIONS WIDGETS INSTALLED\n\
                  shop 1.1.0 1.0.0,1.1.0 ecommerce add,echo checkout shop,shop-eu@1.0.0\n\
                  evil 0.1.0 0.1.0 utilities - - -\n\
                  \n\
                  INSTANCE ADDON VERSION PHASE SERVICES HEALTHY\n\
                  shop-eu shop 1.0.0 Started 1 2/3")
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
        assert_eq!(table[1].split_whitespace().collect::<Vec<_>>(), ["shop-eu-api", "Started", "3", "0", "inst_a", "8004", "healthy", "0", "closed", "-"]);
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
        assert!(out.contains("Versions:      1.0.0, 1.1.0\n") && out.contains("Installed:     -\n") && out.contains("Dependencies:  -\n"), "{out}");
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
        assert_eq!(render_addon_report("uninstalled", &json!({"instance": "shop-eu", "phase": "Deleted"})), "uninstalled shop-eu: Deleted\n");

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

    // ---- applications, grants, audit, events ------------------------------------------

    fn sse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        chunks.iter().flat_map(|c| p.push(c)).collect()
    }

    fn ev(id: Option<&str>, event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { id: id.map(str::to_string), event: event.map(str::to_string), data: data.to_string() }
    }

    #[test]
    fn sse_events_across_any_chunking() {
        let stream = "id: 7\nevent: payment.completed\ndata: {\"id\":7,\"name\":\"payment.completed\",\"data\":{\"amount\":\"€5\"}}\n\n\
                      :\n\n\
                      id: 8\nevent: order.created\ndata: {\"id\":8}\n\n";
        let want = vec![
            ev(Some("7"), Some("payment.completed"), "{\"id\":7,\"name\":\"payment.completed\",\"data\":{\"amount\":\"€5\"}}"),
            ev(Some("8"), Some("order.created"), "{\"id\":8}"),
        ];
        assert_eq!(sse_all(&[stream.as_bytes()]), want);
        // Every way of cutting it in two, and one byte at a time (through the `€`, too).
        let bytes = stream.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(sse_all(&[&bytes[..cut], &bytes[cut..]]), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(sse_all(&singles), want);
        // A partial event is held back until its blank line arrives.
        let mut p = SseParser::default();
        assert!(p.push(b"id: 1\ndata: {\"a\"").is_empty());
        assert!(p.push(b":1}\n").is_empty());
        assert_eq!(p.push(b"\n"), vec![ev(Some("1"), None, "{\"a\":1}")]);
    }

    #[test]
    fn sse_multi_line_data_comments_and_line_endings() {
        // data lines join with \n; comments and keep-alives (`:` lines) are skipped, even
        // inside an event; a field without a colon has an empty value; one leading space goes.
        let got = sse_all(&[b": keep-alive\n\ndata: line one\n: in between\ndata:line two\ndata\ndata:  two spaces\n\n"]);
        assert_eq!(got, vec![ev(None, None, "line one\nline two\n\n two spaces")]);
        // CRLF and lone CR end lines as LF does, also when CR and LF arrive apart.
        assert_eq!(sse_all(&[b"id: 3\r\ndata: x\r\n\r\n"]), vec![ev(Some("3"), None, "x")]);
        assert_eq!(sse_all(&[b"id: 3\rdata: x\r\r"]), vec![ev(Some("3"), None, "x")]);
        assert_eq!(sse_all(&[b"data: x\r", b"\n", b"\r", b"\ndata: y\n\n"]), vec![ev(None, None, "x"), ev(None, None, "y")]);
        // A blank line without data dispatches nothing; `id` persists, `event` does not.
        assert_eq!(
            sse_all(&[b"id: 9\nevent: a\n\ndata: 1\n\nevent: b\ndata: 2\n\n"]),
            vec![ev(Some("9"), None, "1"), ev(Some("9"), Some("b"), "2")]
        );
        // A byte-order mark at the start is skipped, however it is split; unknown fields are ignored.
        assert_eq!(sse_all(&[b"\xEF", b"\xBB\xBFdata: a\nretry: 10\nfoo: bar\n\n"]), vec![ev(None, None, "a")]);
        // Nothing but keep-alives: no events.
        assert!(sse_all(&[b":\n\n", b":\n\n"]).is_empty());
    }

    #[test]
    fn followed_events_and_their_lines() {
        let e = ev(Some("12"), Some("payment.completed"), r#"{"id":12,"name":"payment.completed","source":"admin:0","timestamp":"2026-11-22T00:01:02.345Z","data":{"amount":5,"note":"a\u001b[31mb\nc"}}"#);
        let (id, v) = followed_event(&e).unwrap();
        assert_eq!(id, 12);
        assert_eq!(
            follow_line(&v),
            format!("12 {} payment.completed admin:0 {{\"amount\":5,\"note\":\"a\\u001b[31mb\\nc\"}}\n", local_time(Some(&json!("2026-11-22T00:01:02.345Z"))))
        );
        // The SSE id when the JSON has none; not JSON: skipped.
        assert_eq!(followed_event(&ev(Some("5"), None, r#"{"name":"x"}"#)).unwrap().0, 5);
        assert!(followed_event(&ev(Some("5"), None, "not json")).is_none());
        assert!(followed_event(&ev(None, None, "{}")).is_none());
        // Reconnect policy: the daemon going away is retried; a refusal is not.
        assert!(reconnectable(&ClientError::NotRunning { socket: "/s".into() }));
        assert!(reconnectable(&ClientError::Protocol("stream broken".into())));
        assert!(!reconnectable(&ClientError::PermissionDenied { socket: "/s".into() }));
        let api = |status| ClientError::Api(ApiError { status, code: "x".into(), message: "m".into(), field: None });
        assert!(!reconnectable(&api(400)));
        assert!(reconnectable(&api(503)));
        assert_eq!(follow_backoff(0), Duration::from_millis(250));
        assert_eq!(follow_backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn times_with_offsets() {
        assert_eq!(rfc3339_offset(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_offset(1_795_305_662, 3600), "2026-11-22T01:01:02+01:00");
        assert_eq!(rfc3339_offset(1_795_305_662, -(5 * 3600 + 1800)), "2026-11-21T18:31:02-05:30");
        // Text and milliseconds name the same second.
        assert_eq!(local_time(Some(&json!("2026-11-22T00:01:02.345Z"))), local_time(Some(&json!(1_795_305_662_345i64))));
        assert_eq!(local_time(None), "-");
        assert_eq!(local_time(Some(&Value::Null)), "-");
    }

    fn rows(table: &str) -> Vec<Vec<String>> {
        // Columns are three or more spaces apart; cells may hold single spaces.
        table
            .lines()
            .map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect())
            .collect()
    }

    fn sample_grant() -> Value {
        json!({"id": "grant_1", "application_id": "app_1", "addon": "pay", "key_prefix": "ak_0123456789ab_…",
               "rate_limit": {"requests_per_second": 10.0, "burst": 20}, "allowed_origins": ["https://a.example", "https://b.example"],
               "status": "active", "revoked_at": null, "rotated_at": null, "old_key_valid_until": null,
               "created_at": "2026-11-22T00:00:00Z"})
    }

    #[test]
    fn app_and_grant_tables() {
        let g = sample_grant();
        let apps = json!([{"id": "app_1", "name": "shop", "description": "", "organization": "Acme \u{1b}[1mCorp",
                           "created_at": "2026-11-22T00:00:00Z", "grants": [g.clone()]},
                          {"id": "app_2", "name": "blog", "description": "x", "organization": "", "grants": []}]);
        assert_eq!(
            rows(&render_app_list(&apps)),
            vec![vec!["ID", "NAME", "ORGANIZATION", "GRANTS"], vec!["app_1", "shop", "Acme Corp", "1"], vec!["app_2", "blog", "-", "0"]]
        );
        assert_eq!(render_app_list(&json!([])), "no applications\n");

        let mut revoked = g.clone();
        revoked["id"] = json!("grant_2");
        revoked["application_id"] = json!("app_gone");
        revoked["rate_limit"] = Value::Null;
        revoked["allowed_origins"] = json!([]);
        revoked["status"] = json!("revoked");
        let mut no_burst = g.clone();
        no_burst["id"] = json!("grant_3");
        no_burst["rate_limit"] = json!({"requests_per_second": 0.5, "burst": null});
        let t = render_grant_list(&json!([g, revoked, no_burst]), &apps);
        assert_eq!(
            rows(&t),
            vec![
                vec!["ID", "APP", "ADDON", "KEY", "RATE", "ORIGINS", "STATUS"],
                vec!["grant_1", "shop", "pay", "ak_0123456789ab_…", "10/s, burst 20", "https://a.example,https://b.example", "active"],
                vec!["grant_2", "app_gone", "pay", "ak_0123456789ab_…", "-", "-", "revoked"],
                vec!["grant_3", "shop", "pay", "ak_0123456789ab_…", "0.5/s", "https://a.example,https://b.example", "active"],
            ]
        );
        assert!(t.lines().all(|l| !l.ends_with(' ')), "{t}");
        assert_eq!(render_grant_list(&json!([]), &Value::Null), "no grants\n");

        // show: the application block with its grants; a grant block.
        let a = render_app(&apps[0]);
        assert!(a.starts_with("ID:            app_1\nName:          shop\nDescription:   -\nOrganization:  Acme Corp\n"), "{a}");
        assert!(a.contains("\nID        APP    ADDON"), "{a}");
        let b = render_grant(&sample_grant());
        assert!(b.contains("\nRate limit:   10/s, burst 20\n") && b.contains("\nStatus:       active\n"), "{b}");
        assert!(!b.contains("Revoked") && !b.contains("Old key"), "{b}");
        let mut r = sample_grant();
        r["revoked_at"] = json!("2026-11-22T00:00:05Z");
        assert!(render_grant(&r).contains("Revoked:"));
        // The new key stands on a line of its own, between blank lines.
        assert_eq!(render_new_key("created grant g", "ak_1_2"), "created grant g\n\nAPI key (shown only this once):\n\n    ak_1_2\n\n");
    }

    #[test]
    fn audit_and_event_tables() {
        let audit = json!([
            {"at": 1_795_305_662_000i64, "uid": 0, "pid": 4242, "source": null, "method": "POST", "path": "/api/application-grants", "status": 201, "detail": null},
            {"at": 1_795_305_663_000i64, "uid": null, "pid": null, "source": "127.0.0.1", "method": "GET", "path": "/gw/pay/health", "status": 401, "detail": "invalid_api_key"},
            {"at": 1_795_305_664_000i64, "uid": 1000, "pid": null, "source": null, "method": "DELETE", "path": "/api/applications/shop", "status": 200, "detail": null}
        ]);
        let t = rows(&render_audit(&audit));
        assert_eq!(t[0], ["AT", "WHO", "METHOD", "PATH", "STATUS", "DETAIL"]);
        assert_eq!(t[1][1..], ["0:4242", "POST", "/api/application-grants", "201", "-"]);
        assert_eq!(t[2][1..], ["127.0.0.1", "GET", "/gw/pay/health", "401", "invalid_api_key"]);
        assert_eq!(t[3][1..], ["1000", "DELETE", "/api/applications/shop", "200", "-"]);
        assert_eq!(t[1][0], local_time(Some(&json!(1_795_305_662i64))));
        assert_eq!(render_audit(&json!([])), "no audit records\n");

        let long = "x".repeat(100);
        let events = json!([
            {"id": 1, "name": "payment.completed", "source": "admin:0", "timestamp": "2026-11-22T00:01:02.345Z", "data": {"amount": 5}},
            {"id": 2, "name": "service.started", "source": "addond", "timestamp": "2026-11-22T00:01:03Z", "data": {"note": long}},
            {"id": 3, "name": "x.y", "source": "pay", "timestamp": "2026-11-22T00:01:04Z", "data": null}
        ]);
        let out = render_event_list(&events);
        let t = rows(&out);
        assert_eq!(t[0], ["ID", "TIME", "NAME", "SOURCE", "DATA"]);
        assert_eq!(t[1], ["1", &local_time(Some(&json!("2026-11-22T00:01:02Z"))), "payment.completed", "admin:0", "{\"amount\":5}"]);
        assert_eq!(t[2][4].chars().count(), EVENT_DATA_WIDTH);
        assert!(t[2][4].starts_with("{\"note\":\"xxx") && t[2][4].ends_with('…'), "{out}");
        assert_eq!(t[3][4], "-");
        assert_eq!(event_ids(&events), "1\n2\n3\n");
        assert_eq!(render_event_list(&json!([])), "no events\n");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn subscribers_and_dead_letters() {
        let d = json!({"last_event_id": 42, "subscribers": [
            {"subscriber": "mail", "delivered_up_to": 40, "attempts": 3, "next_attempt_at": null, "last_error": "HTTP 500", "dead_letters": 1},
            {"subscriber": "stock", "delivered_up_to": 42, "attempts": 0, "next_attempt_at": null, "last_error": null, "dead_letters": 0}],
            "dead_letters": [{"id": 1, "subscriber": "mail", "event_id": 39, "attempts": 5, "last_error": "HTTP 500", "at": 1_795_305_662_000i64, "redrive": false}]});
        let out = render_subscribers(&d);
        let t = rows(&out);
        assert_eq!(t[0], ["last event id: 42"]);
        assert_eq!(t[2], ["SUBSCRIBER", "DELIVERED_UP_TO", "ATTEMPTS", "LAST_ERROR", "DEAD_LETTERS"]);
        assert_eq!(t[3], ["mail", "40", "3", "HTTP 500", "1"]);
        assert_eq!(t[4], ["stock", "42", "0", "-", "0"]);
        assert_eq!(t[6], ["dead letters: 1"]);
        assert_eq!(t[7], ["SUBSCRIBER", "EVENT", "ATTEMPTS", "AT", "REDRIVE", "LAST_ERROR"]);
        assert_eq!(t[8], ["mail", "39", "5", &local_time(Some(&json!(1_795_305_662i64))), "-", "HTTP 500"]);
        let none = render_subscribers(&json!({"last_event_id": null, "subscribers": [], "dead_letters": []}));
        assert_eq!(none, "last event id: -\n\nno subscribers\n\nno dead letters\n");
    }

    #[test]
    fn gateway_and_event_command_lines() {
        let c = parse(&["grants", "create", "--app", "shop", "--addon", "pay", "--rate", "10", "--burst", "20", "--origin", "https://a.example", "--origin", "https://b.example"]);
        let Command::Grants(GrantCmd::Create(a)) = c.command else { panic!() };
        assert_eq!(
            grant_create_body(&a),
            json!({"application": "shop", "addon": "pay", "rate_limit": {"requests_per_second": 10.0, "burst": 20},
                   "allowed_origins": ["https://a.example", "https://b.example"]})
        );
        let c = parse(&["grants", "create", "--app", "shop", "--addon", "pay"]);
        let Command::Grants(GrantCmd::Create(a)) = c.command else { panic!() };
        assert_eq!(grant_create_body(&a), json!({"application": "shop", "addon": "pay"}));

        let update = |args: &[&str]| {
            let mut all = vec!["grants", "update", "grant_1"];
            all.extend_from_slice(args);
            let Command::Grants(GrantCmd::Update(a)) = parse(&all).command else { panic!() };
            a
        };
        let g = sample_grant();
        // --rate keeps the burst; --burst alone keeps the rate; --no-rate removes the limit.
        assert_eq!(grant_update_body(&update(&["--rate", "5"]), &g).unwrap(), json!({"rate_limit": {"requests_per_second": 5.0, "burst": 20}}));
        assert_eq!(grant_update_body(&update(&["--burst", "3"]), &g).unwrap(), json!({"rate_limit": {"requests_per_second": 10.0, "burst": 3}}));
        assert_eq!(grant_update_body(&update(&["--no-rate"]), &g).unwrap(), json!({"rate_limit": null}));
        let mut unlimited = g.clone();
        unlimited["rate_limit"] = Value::Null;
        assert!(grant_update_body(&update(&["--burst", "3"]), &unlimited).unwrap_err().0.contains("--rate"));
        assert_eq!(grant_update_body(&update(&["--rate", "1"]), &unlimited).unwrap(), json!({"rate_limit": {"requests_per_second": 1.0}}));
        // --origin adds (once); --clear-origins starts from none.
        assert_eq!(
            grant_update_body(&update(&["--origin", "https://c.example", "--origin", "https://a.example"]), &g).unwrap(),
            json!({"allowed_origins": ["https://a.example", "https://b.example", "https://c.example"]})
        );
        assert_eq!(grant_update_body(&update(&["--clear-origins"]), &g).unwrap(), json!({"allowed_origins": []}));
        assert_eq!(
            grant_update_body(&update(&["--clear-origins", "--origin", "https://c.example"]), &g).unwrap(),
            json!({"allowed_origins": ["https://c.example"]})
        );

        assert!(matches!(parse(&["grants", "rotate", "g", "--grace", "30"]).command, Command::Grants(GrantCmd::Rotate { grace: Some(g), .. }) if g == 30.0));
        assert!(matches!(parse(&["apps", "ls"]).command, Command::Apps(AppCmd::List)));
        assert!(matches!(parse(&["apps", "create", "shop", "--organization", "Acme"]).command,
            Command::Apps(AppCmd::Create { ref name, organization: Some(ref o), description: None }) if name == "shop" && o == "Acme"));
        assert!(matches!(parse(&["audit", "--limit", "5"]).command, Command::Audit { limit: Some(5) }));
        assert!(matches!(parse(&["events", "emit", "a.b", "--set", "n=1"]).command, Command::Events(EventCmd::Emit { ref set, .. }) if set[0] == ("n".to_string(), json!(1))));
        assert!(matches!(parse(&["events", "follow", "--name", "a.*", "--after", "7"]).command,
            Command::Events(EventCmd::Follow { name: Some(_), after: Some(7) })));
        assert!(matches!(parse(&["events", "redrive", "--subscriber", "mail"]).command, Command::Events(EventCmd::Redrive { subscriber: Some(_) })));
        for bad in [
            vec!["grants", "update", "g"],
            vec!["grants", "update", "g", "--rate", "5", "--no-rate"],
            vec!["grants", "update", "g", "--burst", "5", "--no-rate"],
            vec!["grants", "create", "--app", "a", "--addon", "b", "--burst", "5"],
            vec!["grants", "create", "--app", "a", "--addon", "b", "--rate", "0"],
            vec!["grants", "create", "--app", "a", "--addon", "b", "--rate", "5", "--burst", "0"],
            vec!["grants", "create", "--addon", "b"],
            vec!["grants", "rotate", "g", "--grace", "soon"],
            vec!["audit", "--limit", "0"],
            vec!["events", "emit", "a.b", "--set", "noequals"],
            vec!["events", "list", "--after", "-1"],
        ] {
            let e = Cli::try_parse_from(std::iter::once("addonctl").chain(bad.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(grant_path("grant_1", "rotate"), "/api/application-grants/grant_1/rotate");
        assert_eq!(app_path("a b"), "/api/applications/a%20b");
    }
}
