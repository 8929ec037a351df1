//! sample-addon: a std-only HTTP/1.1 server implementing the addond container contract, and
//! a test double for addond's own tests. See `sample-addon/README.md`.
//!
//! Where things are: [`contract`] (what every addon must answer, and the variables addond
//! sets), [`actions`] (what this addon's `/execute` does), [`knobs`] (test-only behaviour:
//! every `SAMPLE_*` variable and `/admin/*` route), [`app`] (the one list of routes),
//! [`state`] (settings and what the routes change), [`env`] (reading variables), [`net`]
//! (HTTP parsing, connections, streaming routes, WebSocket, the API client). This file reads
//! the environment, does what the knobs ask at start, and serves.

mod actions;
mod app;
mod contract;
mod env;
mod knobs;
mod net;
#[cfg(test)]
mod serve_tests;
mod state;

use std::net::{SocketAddr, TcpListener};
use std::os::raw::{c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

use env::Env;
use net::server::ServerConfig;
use state::{Settings, State};

// Signal handling without the libc crate: std already links the C library.
extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn _exit(status: c_int) -> !;
}

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

/// Async-signal-safe: one write(2) and _exit(2). Exit code 0 on SIGTERM (a clean stop), 130 on SIGINT.
extern "C" fn on_signal(sig: c_int) {
    let (msg, code): (&[u8], c_int) =
        if sig == SIGTERM { (b"sample-addon: SIGTERM received, exiting\n", 0) } else { (b"sample-addon: SIGINT received, exiting\n", 130) };
    unsafe {
        write(2, msg.as_ptr().cast(), msg.len());
        _exit(code);
    }
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(c_int) as usize;
    unsafe {
        signal(SIGTERM, handler);
        signal(SIGINT, handler);
    }
}

/// Everything read from the environment.
#[derive(Debug)]
struct Startup {
    /// What the routes see: the contract's variables and the knobs that change the answers.
    settings: Settings,
    /// Connection limits (knobs, else defaults).
    server: ServerConfig,
    /// `SAMPLE_EXIT_ON_START`.
    exit_on_start: Option<i32>,
    /// `SAMPLE_LOG_EVERY_MS`.
    log_every: Option<Duration>,
    /// `SAMPLE_SWAP_SYMLINK=LINK=TARGET`.
    swap_symlink: Option<(String, String)>,
    /// `SAMPLE_WRITE_PROBE=PATH`.
    write_probe: Option<String>,
    /// Printed at start; not fatal.
    warnings: Vec<String>,
}

/// Parse the environment through `get` (so tests need not touch the process env).
/// Empty values count as unset. Errors name the variable and are fatal.
fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<Startup, String> {
    let env = Env::new(&get);
    let mut warnings = Vec::new();
    let contract = contract::read_env(&env, &mut warnings)?;
    let knobs = knobs::read_env(&env)?;
    let settings = Settings {
        addon: contract.addon,
        service: contract.service,
        version: contract.version,
        instance: contract.instance,
        api: contract.api,
        token: contract.token,
        port: contract.port,
        initial_config: contract.initial_config,
        health_delay: knobs.health_delay,
        render_cpu: knobs.render_cpu,
        config_restart: knobs.config_restart,
        events_fail: knobs.events_fail,
    };
    Ok(Startup {
        settings,
        server: knobs.server_config(),
        exit_on_start: knobs.exit_on_start,
        log_every: knobs.log_every,
        swap_symlink: knobs.swap_symlink,
        write_probe: knobs.write_probe,
        warnings,
    })
}

fn main() {
    install_signal_handlers();
    let startup = match parse_env(|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sample-addon: {e}");
            std::process::exit(2);
        }
    };
    if let Some(code) = startup.exit_on_start {
        eprintln!("sample-addon: SAMPLE_EXIT_ON_START={code}, exiting with code {code}");
        std::process::exit(code);
    }
    for w in &startup.warnings {
        eprintln!("sample-addon: warning: {w}");
    }
    if let Some((link, target)) = &startup.swap_symlink {
        knobs::swap_symlink(link, target);
    }
    if let Some(path) = &startup.write_probe {
        knobs::write_probe(path, startup.settings.instance.as_deref());
    }
    knobs::print_log_text();

    let port = startup.settings.port;
    let listener = match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sample-addon: cannot listen on 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    println!("sample-addon listening on :{bound} instance={}", startup.settings.instance.as_deref().unwrap_or("-"));

    if let Some(every) = startup.log_every {
        knobs::start_ticker(every);
    }

    let state = State::new(startup.settings);
    net::server::serve(listener, Arc::new(move |req: &net::http::Request| app::route(&state, req)), Arc::new(startup.server));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Secret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Startup, String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_env(move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = env(&[]).unwrap();
        assert_eq!(s.settings.port, 8080);
        assert_eq!(s.settings.initial_config, serde_json::json!({}));
        assert_eq!(s.settings.instance, None);
        assert!(!s.settings.token_present());
        assert!(!s.settings.events_fail);
        assert_eq!(s.exit_on_start, None);
        assert_eq!(s.log_every, None);
        assert!(s.warnings.is_empty());
        assert_eq!(s.server.max_connections, 48);
        assert_eq!(s.server.max_upload_bytes, 256 << 20);
        assert_eq!(s.server.ws_max_message_bytes, 1 << 20);
        assert_eq!(s.server.ws_idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn contract_and_knobs() {
        let s = env(&[
            ("PORT", "9000"),
            ("ADDOND_ADDON", "shop"),
            ("ADDOND_SERVICE", "api"),
            ("ADDOND_INSTANCE", "inst_1"),
            ("ADDOND_CONFIG", r#"{"title":"T"}"#),
            ("ADDOND_TOKEN", "secret"),
            ("ADDOND_API", ""),
            ("SAMPLE_HEALTH_DELAY_MS", "1500"),
            ("SAMPLE_CONFIG_RESTART", "1"),
            ("SAMPLE_EVENTS_FAIL", "1"),
            ("SAMPLE_EXIT_ON_START", "2"),
            ("SAMPLE_LOG_EVERY_MS", "100"),
            ("SAMPLE_QUIET", "1"),
            ("SAMPLE_MAX_UPLOAD_BYTES", "1000"),
            ("SAMPLE_WS_MAX_MESSAGE_BYTES", "64"),
            ("SAMPLE_WS_IDLE_TIMEOUT_MS", "2500"),
            ("SAMPLE_SWAP_SYMLINK", "/d/inner=/srv/x"),
            ("SAMPLE_WRITE_PROBE", "/inner/probe"),
        ])
        .unwrap();
        assert_eq!(s.settings.port, 9000);
        assert_eq!(s.settings.addon.as_deref(), Some("shop"));
        assert_eq!(s.settings.api, None);
        assert_eq!(s.settings.initial_config["title"], "T");
        assert!(s.settings.token_present());
        assert_eq!(s.settings.token, Some(Secret("secret".into())));
        assert!(!format!("{:?}", s.settings).contains("secret"));
        assert!(s.settings.events_fail);
        assert_eq!(s.settings.health_delay, Duration::from_millis(1500));
        assert!(s.settings.config_restart && s.server.quiet);
        assert_eq!(s.exit_on_start, Some(2));
        assert_eq!(s.log_every, Some(Duration::from_millis(100)));
        assert_eq!(s.server.max_upload_bytes, 1000);
        assert_eq!(s.server.ws_max_message_bytes, 64);
        assert_eq!(s.server.ws_idle_timeout, Duration::from_millis(2500));
        assert_eq!(s.swap_symlink, Some(("/d/inner".into(), "/srv/x".into())));
        assert_eq!(s.write_probe.as_deref(), Some("/inner/probe"));
    }

    #[test]
    fn bad_values() {
        assert!(env(&[("PORT", "70000")]).unwrap_err().contains("PORT"));
        assert!(env(&[("PORT", "x")]).is_err());
        assert!(env(&[("SAMPLE_EXIT_ON_START", "256")]).is_err());
        assert!(env(&[("SAMPLE_LOG_EVERY_MS", "-5")]).is_err());
        assert!(env(&[("SAMPLE_SWAP_SYMLINK", "/d/inner")]).unwrap_err().contains("SAMPLE_SWAP_SYMLINK"));
        let s = env(&[("ADDOND_CONFIG", "{nope")]).unwrap();
        assert_eq!(s.settings.initial_config, serde_json::json!({}));
        assert_eq!(s.warnings.len(), 1);
    }
}
