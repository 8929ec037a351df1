//! sample-addon: a tiny HTTP/1.1 server implementing the addond addon container contract.
//!
//! Contract env: ADDOND_ADDON, ADDOND_SERVICE, ADDOND_INSTANCE, ADDOND_CONFIG (JSON),
//! ADDOND_API, ADDOND_TOKEN, PORT (default 8080).
//! Test knobs: SAMPLE_HEALTH_DELAY_MS, SAMPLE_CONFIG_RESTART, SAMPLE_EVENTS_FAIL,
//! SAMPLE_EXIT_ON_START, SAMPLE_LOG_EVERY_MS, SAMPLE_LOG_TEXT, SAMPLE_QUIET, SAMPLE_IDLE_TIMEOUT_MS,
//! SAMPLE_MAX_CONNECTIONS, SAMPLE_MAX_BODY_BYTES, SAMPLE_OOM_MAX_MB, SAMPLE_MAX_UPLOAD_BYTES,
//! SAMPLE_WS_MAX_MESSAGE_BYTES, SAMPLE_WS_IDLE_TIMEOUT_MS, SAMPLE_SWAP_SYMLINK, SAMPLE_WRITE_PROBE.
//!
//! The last two play a hostile addon for the sandbox tests: `SAMPLE_SWAP_SYMLINK=LINK=TARGET`
//! moves `LINK` aside (`LINK.orig`), puts a symlink to `TARGET` in its place and exits 1,
//! unless `LINK` already is a symlink (then it starts normally); `SAMPLE_WRITE_PROBE=PATH`
//! writes `instance=<id>` to `PATH` at every start, so a test can see where a volume led.

mod app;
mod net;
#[cfg(test)]
mod serve_tests;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::raw::{c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use app::{Secret, Settings, State};
use net::server::ServerConfig;

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
    let (msg, code): (&[u8], c_int) = if sig == SIGTERM {
        (b"sample-addon: SIGTERM received, exiting\n", 0)
    } else {
        (b"sample-addon: SIGINT received, exiting\n", 130)
    };
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
    settings: Settings,
    server: ServerConfig,
    exit_on_start: Option<i32>,
    log_every: Option<Duration>,
    /// `SAMPLE_SWAP_SYMLINK=LINK=TARGET`.
    swap_symlink: Option<(String, String)>,
    /// `SAMPLE_WRITE_PROBE=PATH`.
    write_probe: Option<String>,
    warnings: Vec<String>,
}

/// Parse the environment through `get` (so tests need not touch the process env).
/// Empty values count as unset. Errors name the variable and are fatal.
fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<Startup, String> {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    let num = |k: &str, max: u64| -> Result<Option<u64>, String> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(format!("{k}={v:?} is not an integer between 0 and {max}")),
            },
        }
    };
    let flag = |k: &str| get(k).is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"));
    let mut warnings = Vec::new();

    let port = num("PORT", 65535)?.unwrap_or(8080) as u16;
    let initial_config = match get("ADDOND_CONFIG") {
        None => serde_json::json!({}),
        Some(raw) => serde_json::from_str(&raw).unwrap_or_else(|e| {
            warnings.push(format!(
                "ADDOND_CONFIG is not valid JSON ({e}); starting with {{}}"
            ));
            serde_json::json!({})
        }),
    };
    let quiet = flag("SAMPLE_QUIET");
    let swap_symlink = match get("SAMPLE_SWAP_SYMLINK") {
        None => None,
        Some(v) => match v.split_once('=') {
            Some((link, target)) if !link.is_empty() && !target.is_empty() => {
                Some((link.to_string(), target.to_string()))
            }
            _ => return Err(format!("SAMPLE_SWAP_SYMLINK={v:?} is not LINK=TARGET")),
        },
    };
    let write_probe = get("SAMPLE_WRITE_PROBE");
    let settings = Settings {
        addon: get("ADDOND_ADDON"),
        service: get("ADDOND_SERVICE"),
        instance: get("ADDOND_INSTANCE"),
        api: get("ADDOND_API"),
        token: get("ADDOND_TOKEN").map(Secret),
        port,
        initial_config,
        health_delay: Duration::from_millis(
            num("SAMPLE_HEALTH_DELAY_MS", 86_400_000)?.unwrap_or(0),
        ),
        config_restart: flag("SAMPLE_CONFIG_RESTART"),
        events_fail: flag("SAMPLE_EVENTS_FAIL"),
    };
    let defaults = ServerConfig::default();
    let server = ServerConfig {
        idle_timeout: num("SAMPLE_IDLE_TIMEOUT_MS", 86_400_000)?
            .filter(|n| *n > 0)
            .map(Duration::from_millis)
            .unwrap_or(defaults.idle_timeout),
        max_body_bytes: num("SAMPLE_MAX_BODY_BYTES", 1 << 30)?
            .map(|n| n as usize)
            .unwrap_or(defaults.max_body_bytes),
        max_connections: num("SAMPLE_MAX_CONNECTIONS", 100_000)?
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .unwrap_or(defaults.max_connections),
        max_upload_bytes: num("SAMPLE_MAX_UPLOAD_BYTES", 1 << 40)?
            .unwrap_or(defaults.max_upload_bytes),
        ws_max_message_bytes: num("SAMPLE_WS_MAX_MESSAGE_BYTES", 1 << 30)?
            .map(|n| n as usize)
            .unwrap_or(defaults.ws_max_message_bytes),
        ws_idle_timeout: num("SAMPLE_WS_IDLE_TIMEOUT_MS", 86_400_000)?
            .filter(|n| *n > 0)
            .map(Duration::from_millis)
            .unwrap_or(defaults.ws_idle_timeout),
        oom_max_mb: num("SAMPLE_OOM_MAX_MB", 1 << 20)?
            .map(|n| n as usize)
            .unwrap_or(defaults.oom_max_mb),
        quiet,
    };
    Ok(Startup {
        settings,
        server,
        exit_on_start: num("SAMPLE_EXIT_ON_START", 255)?.map(|n| n as i32),
        log_every: num("SAMPLE_LOG_EVERY_MS", 86_400_000)?
            .filter(|n| *n > 0)
            .map(Duration::from_millis),
        swap_symlink,
        write_probe,
        warnings,
    })
}

/// What a hostile addon does to a directory volume nested in another one it can write:
/// replace the inner directory with a symlink to a host path, then exit so that the daemon
/// starts the container again (and, unguarded, Docker follows the link).
fn swap_symlink(link: &str, target: &str) {
    if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
        eprintln!("sample-addon: {link} already is a symlink; starting normally");
        return;
    }
    let aside = format!("{link}.orig");
    if let Err(e) = std::fs::rename(link, &aside) {
        eprintln!("sample-addon: cannot move {link} to {aside}: {e}");
    }
    match std::os::unix::fs::symlink(target, link) {
        Ok(()) => eprintln!("sample-addon: {link} now points to {target}; exiting 1"),
        Err(e) => eprintln!("sample-addon: cannot make {link} a symlink: {e}; exiting 1"),
    }
    std::process::exit(1);
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
        swap_symlink(link, target);
    }
    if let Some(path) = &startup.write_probe {
        let text = format!("instance={}\n", startup.settings.instance.as_deref().unwrap_or("-"));
        match std::fs::write(path, text) {
            Ok(()) => eprintln!("sample-addon: wrote probe {path}"),
            Err(e) => eprintln!("sample-addon: cannot write probe {path}: {e}"),
        }
    }
    if let Some(text) = std::env::var_os("SAMPLE_LOG_TEXT") {
        // Printed verbatim (raw bytes, escape sequences included).
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    let port = startup.settings.port;
    let listener = match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sample-addon: cannot listen on 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    println!(
        "sample-addon listening on :{bound} instance={}",
        startup.settings.instance.as_deref().unwrap_or("-")
    );

    if let Some(every) = startup.log_every {
        let spawned = std::thread::Builder::new()
            .name("ticker".into())
            .spawn(move || {
                let mut n: u64 = 0;
                loop {
                    std::thread::sleep(every);
                    n += 1;
                    println!("sample-addon log line {n}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("sample-addon: warning: cannot start the SAMPLE_LOG_EVERY_MS thread: {e}");
        }
    }

    let state = State::new(startup.settings);
    net::server::serve(
        listener,
        Arc::new(move |req: &net::http::Request| app::route(&state, req)),
        Arc::new(startup.server),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Startup, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
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
