//! addonctl: the operator's command line for addond. It parses the command line (clap),
//! turns it into admin API calls through `addond::client`, and renders the replies as
//! plain aligned text (or the raw `data` with `--json`). Everything the daemon sends is
//! sanitised before it reaches the terminal. Exit codes are listed in `EXIT_CODES` and in
//! docs/addonctl.md.
//!
//! This file holds the top-level command line, the wiring (`main` → [`run`] → an exit
//! code) and the [`Ctl`] every command runs on. Each command group lives in a module of
//! its own with its clap enum, its calls, its renderers and its tests: [`services`]
//! (services, templates, discovery, cleanup), [`images`], [`addons`] (addons and widgets),
//! [`deployments`] (upgrade, rollback, history),
//! [`access`] (applications, grants, the audit log), [`events`], [`mcp`] (the stdio MCP
//! server and the registered tools) and [`ops`] (health,
//! metrics, backup, restore, doctor). [`render`] has the table and text helpers they
//! share, [`input`] the values and documents a user hands over.

mod access;
mod addons;
mod builds;
mod deployments;
mod environments;
mod events;
mod images;
mod input;
mod mcp;
mod ops;
mod render;
mod services;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use addond::client::{self, ApiError, Client, ClientError, Method};
use addond::http::ErrorCode;
use addond::sanitize::sanitize_line;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::access::{AppCmd, GrantCmd};
use crate::addons::{AddonCmd, WidgetCmd};
use crate::events::EventCmd;
use crate::images::ImageCmd;
use crate::mcp::McpCmd;
use crate::render::StdoutClosed;
use crate::services::{IdArg, LifecycleArgs, ListArgs, LogsArgs, ScaleArgs, ServiceCmd, TemplateCmd};

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
    /// Serve MCP on stdin/stdout (every installed addon's actions as tools), for a local
    /// agent; or manage the registered tools (`mcp tools …`)
    Mcp {
        #[command(subcommand)]
        cmd: Option<McpCmd>,
    },
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

/// The exit code for an error envelope. It goes by the envelope's typed `code` (the
/// table in docs/api.md), never by its message, which is free to change wording; the
/// status only backs up `forbidden` for a 403 whose body is not our envelope.
fn api_exit_code(e: &ApiError) -> u8 {
    match ErrorCode::from_str(&e.code) {
        Some(ErrorCode::Forbidden) => EXIT_PERMISSION,
        Some(ErrorCode::WaitTimeout | ErrorCode::ServiceFailed) => EXIT_WAIT,
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

/// The sections of addonctl's pages clap does not know (the exit codes are the ones above).
fn page_extras() -> addond::cli_docs::PageExtras {
    use addond::cli_docs::PageExtras;
    PageExtras {
        files: PageExtras::pairs(&[
            ("/run/addond/addond.sock", "the admin socket of the system daemon (group addond may use it)"),
            ("./.addond/addond.sock", "the socket of a development daemon (addond --dev) in this directory, used when it exists"),
        ]),
        environment: PageExtras::pairs(&[("ADDOND_SOCKET", "the daemon's admin socket, unless --socket is given")]),
        exit_status: PageExtras::pairs(&[
            ("0", "ok"),
            ("1", "the daemon answered an error (printed as `error: <message>` on stderr), or another failure"),
            ("2", "usage error (bad flags, unreadable or invalid --file)"),
            ("3", "addond is not running (no socket, or nothing listening on it)"),
            ("4", "permission denied (socket not accessible, or the daemon answered 403 forbidden)"),
            ("5", "--wait ended in wait_timeout or service_failed"),
        ]),
        signals: PageExtras::pairs(&[
            ("SIGINT", "stops addonctl at once (a --wait, a follow); what was already sent is carried out by the daemon"),
            ("SIGPIPE", "a reader that goes away (addonctl logs -f | head) ends addonctl with status 0"),
        ]),
        see_also: ["addonctl(1)", "addond(8)", "addond-tui(1)", "addond.toml(5)"].map(String::from).to_vec(),
        ..Default::default()
    }
}

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
    let ctl = Ctl { client: Client::new(client::discover_socket(cli.socket)), json: cli.json, quiet: cli.quiet };
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
        Command::Mcp { cmd } => ctl.mcp(cmd).await,
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
            for p in addond::cli_docs::generate_man(<Cli as clap::CommandFactory>::command(), &dir, "1", &page_extras())? {
                println!("{}", p.display());
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// What every command runs on.

/// The context every command runs with: built once from the global flags in [`run`], then
/// lent to the command group's methods (`impl Ctl` blocks in each module).
struct Ctl {
    /// The admin socket client (one connection per request).
    client: Client,
    /// `--json`: print the reply's raw `data` instead of tables.
    json: bool,
    /// `--quiet`: print nothing on success, or only ids where a list or create asks for them.
    quiet: bool,
}

/// `?k=v&…` from the parameters that are set (values percent-encoded), or "" when none is.
fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> =
        params.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", client::encode_query_value(v)))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl Ctl {
    /// One admin API call: the envelope's `data`, or its error as an [`ApiError`].
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let reply = self.client.request(method, path, body).await?;
        Ok(reply.into_result()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::services::WaitArgs;
    use clap::CommandFactory;

    pub(crate) fn parse(args: &[&str]) -> Cli {
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
    fn queries() {
        assert_eq!(query(&[("plugin_id", Some("p&q".into())), ("status", None)]), "?plugin_id=p%26q");
        assert_eq!(query(&[("a", None)]), "");
    }
}
