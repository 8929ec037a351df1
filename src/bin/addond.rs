//! `addond`: the daemon. Parses flags, loads the config, and hands over to `daemon::run`.

use std::path::PathBuf;

use addond::config::Config;
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "addond", version, about = "Self-hosted addon appliance daemon")]
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
        Command::Run => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,addond={}", cfg.daemon.log_level)));
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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
                addond::daemon::run(cfg, shutdown).await
            })
        }
    }
}
