//! `addond`: the daemon. Parses flags, loads the config, sets up logging (the journal under
//! systemd, stderr otherwise) and signals, and hands over to `daemon::run_with`.

use std::path::PathBuf;

use addond::config::Config;
use addond::daemon::RunOptions;
use addond::systemd::Notifier;
use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// jemalloc instead of glibc's malloc: every proxied request allocates and frees buffers,
/// and glibc's allocator was a sixth of the daemon's CPU under gateway load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, built in (no environment needed): a background thread returns freed
/// pages to the kernel within seconds even when the daemon is idle, and two arenas (one per
/// core of a small host) keep the idle footprint small.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &u8 = &b"background_thread:true,narenas:2,dirty_decay_ms:2000,muzzy_decay_ms:0\0"[0];

#[derive(Parser)]
#[command(
    name = "addond",
    version,
    about = "Self-hosted addon appliance daemon",
    long_about = "Self-hosted addon appliance daemon: runs addon services as sandboxed Docker containers \
and serves the admin API on a Unix socket (addonctl, addond-tui). Under systemd it reports readiness, \
feeds the watchdog and logs to the journal. SIGHUP reloads the live keys of the config \
(daemon.log_level, reconcile.interval_seconds, health.* and limits.* defaults); SIGTERM stops it \
gracefully and leaves addon containers running for the next start to adopt.",
    after_help = "Files: /etc/addond/config.toml (every key documented in /usr/share/doc/addond/config.example.toml), \
/var/lib/addond/ (database, volumes), /run/addond/addond.sock (admin API)."
)]
struct Cli {
    /// Config file (default /etc/addond/config.toml, or ./.addond/config.toml with --dev).
    #[arg(long, global = true, env = "ADDOND_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// Development mode: data dir, socket and config under ./.addond/, no root needed.
    #[arg(long, global = true)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration and exit (0 when valid).
    CheckConfig,
    /// Print the effective configuration (file, environment and defaults) as TOML.
    PrintConfig,
    /// Apply the nftables table that keeps the addon networks of docker.subnet_pool apart,
    /// and exit (needs root or CAP_NET_ADMIN; the unit runs it before the daemon starts).
    Firewall {
        /// Print the table as an `nft -f` script instead of applying it.
        #[arg(long)]
        print: bool,
    },
    /// Write the man page (addond.8) into DIR, and addond.toml.5 into --man5 (for packaging).
    #[command(hide = true)]
    GenerateMan {
        dir: PathBuf,
        /// Where the config file's page (addond.toml.5) goes.
        #[arg(long, value_name = "DIR")]
        man5: Option<PathBuf>,
    },
    /// Print the OpenAPI 3.1 document of everything addond serves (admin API, gateway, addon
    /// API), as `GET /openapi.json` on the admin socket answers it; needs no configuration.
    Openapi,
    /// Print a shell completion script.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: addond::cli_docs::Shell,
    },
}

/// The sections of addond(8) clap does not know.
fn page_extras() -> addond::cli_docs::PageExtras {
    use addond::cli_docs::PageExtras;
    PageExtras {
        files: PageExtras::pairs(&[
            ("/etc/addond/config.toml", "the configuration, every key described in addond.toml(5)"),
            ("/var/lib/addond/addond.db", "the SQLite database (WAL): services, instances, addons, grants, events"),
            ("/var/lib/addond/volumes/", "directory volumes of each service"),
            ("/run/addond/addond.sock", "the admin API (mode 0660, group addond), used by addonctl and addond-tui"),
            ("/usr/share/addond/addond-sample.tar.gz", "the sample addon image the templates run, loaded into Docker when it lacks it (templates.image_archive)"),
            ("./.addond/", "with --dev: config.toml, the data dir and addond.sock"),
        ]),
        environment: PageExtras::pairs(&[
            ("ADDOND_CONFIG_FILE", "the config file, as --config"),
            ("ADDOND_<SECTION>_<KEY>", "overrides one config key, e.g. ADDOND_DAEMON_LOG_LEVEL=debug (see addond.toml(5))"),
            ("RUST_LOG", "a log filter that wins over daemon.log_level"),
            ("ADDOND_UPSTREAM_CLIENT", "hyper: call addons with hyper's HTTP/1.1 client instead of addond's own (an experiment, issue 19; read at start)"),
            ("NO_COLOR", "no colours in the log on a terminal"),
            ("NOTIFY_SOCKET, WATCHDOG_USEC", "set by systemd: readiness, status and watchdog notifications"),
            ("JOURNAL_STREAM", "set by systemd: log to the journal with structured fields"),
        ]),
        exit_status: PageExtras::pairs(&[
            ("0", "stopped cleanly (SIGTERM or SIGINT), or check-config found the configuration valid"),
            ("1", "an error, printed on stderr: an invalid configuration (the key is named), the data dir locked by another daemon, a socket or port that cannot be bound, a database that cannot be opened"),
            ("2", "usage error (unknown flag or subcommand)"),
        ]),
        signals: PageExtras::pairs(&[
            ("SIGTERM, SIGINT", "stop: refuse new connections, finish requests in flight (10 s at most), checkpoint the database and exit; addon containers keep running and are adopted at the next start"),
            ("SIGHUP", "reload the config file and environment and apply the live keys (daemon.log_level, reconcile.interval_seconds, the health.* and limits.* defaults); a change to any other key refuses the whole reload"),
            ("SIGKILL", "loses nothing: every change is in the database before it is answered, and the next start finds the containers"),
        ]),
        see_also: ["addonctl(1)", "addond-tui(1)", "addond.toml(5)", "systemctl(1)", "journalctl(1)", "docker(1)"].map(String::from).to_vec(),
        ..Default::default()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::GenerateMan { dir, man5 }) => {
            // The hidden subcommands stay out of the page.
            for p in addond::cli_docs::generate_man(Cli::command(), dir, "8", &page_extras())? {
                println!("{}", p.display());
            }
            if let Some(d) = man5 {
                std::fs::create_dir_all(d)?;
                let p = d.join("addond.toml.5");
                std::fs::write(&p, addond::cli_docs::config_page())?;
                println!("{}", p.display());
            }
            return Ok(());
        }
        Some(Command::Completions { shell }) => {
            addond::cli_docs::completions(Cli::command(), *shell, &mut std::io::stdout());
            return Ok(());
        }
        Some(Command::Openapi) => {
            print!("{}", addond::api::openapi_text());
            return Ok(());
        }
        _ => {}
    }
    let cfg = Config::load(cli.config.as_deref(), cli.dev).context("invalid configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("configuration is valid");
            Ok(())
        }
        Command::PrintConfig => {
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Command::Firewall { print } => {
            let table = addond::firewall::Table::for_pool(&cfg.docker.subnet_pool)?;
            if print {
                print!("{}", table.ruleset());
                return Ok(());
            }
            table.apply().with_context(|| format!("cannot apply the nftables table ip {}", table.name))?;
            // The daemon reads this to know the table is in place (it may not read the firewall).
            if let Err(e) = addond::firewall::write_record(&cfg.daemon.data_dir, &table, "addond firewall") {
                eprintln!("note: cannot record it in {}: {e}", cfg.daemon.data_dir.display());
            }
            println!(
                "applied the nftables table ip {} (docker.subnet_pool {}): traffic between two networks of the pool is dropped",
                table.name, table.pool
            );
            Ok(())
        }
        Command::GenerateMan { .. } | Command::Completions { .. } | Command::Openapi => Ok(()),
        Command::Run => {
            let log = addond::systemd::init_logging(&cfg.daemon.log_level);
            // Every connection is a descriptor: the soft default (1024) would let a flood of
            // idle gateway connections starve the admin socket and the database.
            match addond::http::conn::raise_fd_limit() {
                Ok((before, after)) if after > before => {
                    tracing::debug!(before, after, "raised the soft file-descriptor limit to the hard one")
                }
                Ok((before, _)) => tracing::debug!(limit = before, "file-descriptor limit"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
            }
            let notifier = Notifier::from_env();
            tracing::debug!(logs = log.sink, systemd = notifier.is_enabled(), "starting");
            let (path, dev) = (cli.config.clone(), cli.dev);
            let opts = RunOptions { notifier, reload: Some(Box::new(move || Config::load(path.as_deref(), dev))), log: Some(log) };
            // Every SQLite call waits on one connection, so more blocking threads than a few
            // would only queue there (and each costs memory): cap them.
            let rt = tokio::runtime::Builder::new_multi_thread().max_blocking_threads(8).enable_all().build()?;
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                let signals = shutdown.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    tracing::info!("shutting down");
                    signals.cancel();
                });
                addond::daemon::run_with(cfg, shutdown, opts).await
            })
        }
    }
}
