//! Test-only behaviour: nothing here is part of the addon contract ([`crate::contract`]).
//! Test writers turn these knobs to make the addon slow, failing, hostile or chatty.
//!
//! Variables are read once at start ([`read_env`]); an empty value counts as unset, and a
//! value out of range stops the addon with exit code 2 and a message naming the variable.
//! Routes under `/admin/` change the running addon; `GET`/`DELETE /events` and `/headers`
//! let a test see what addond delivered or forwarded. The streaming routes (`/upload`,
//! `/download`, `/ws`) are served on the connection itself: see [`crate::net::stream`] and
//! [`crate::net::ws`].

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::env::Env;
use crate::net::http::Request;
use crate::net::response::{join_headers, After, Response};
use crate::net::server::ServerConfig;
use crate::state::{lock, State};

/// `/health` answers 503 "starting" for this many milliseconds after start.
pub const SAMPLE_HEALTH_DELAY_MS: &str = "SAMPLE_HEALTH_DELAY_MS";
/// On: `POST /config` answers 404, asking addond to restart the container.
pub const SAMPLE_CONFIG_RESTART: &str = "SAMPLE_CONFIG_RESTART";
/// On: `POST /events` answers 500 from the start (toggled by `/admin/events/*`).
pub const SAMPLE_EVENTS_FAIL: &str = "SAMPLE_EVENTS_FAIL";
/// Exit at once with this code (0-255), before listening: a crash loop.
pub const SAMPLE_EXIT_ON_START: &str = "SAMPLE_EXIT_ON_START";
/// Print `sample-addon log line N` every this many milliseconds, for the log tests.
pub const SAMPLE_LOG_EVERY_MS: &str = "SAMPLE_LOG_EVERY_MS";
/// Print this text verbatim (raw bytes, escape sequences included) once at start.
pub const SAMPLE_LOG_TEXT: &str = "SAMPLE_LOG_TEXT";
/// On: no per-request log lines.
pub const SAMPLE_QUIET: &str = "SAMPLE_QUIET";
/// Close a connection idle (no complete request) for this many milliseconds (default 60 s).
pub const SAMPLE_IDLE_TIMEOUT_MS: &str = "SAMPLE_IDLE_TIMEOUT_MS";
/// Answer 503 to connections beyond this many (default 48).
pub const SAMPLE_MAX_CONNECTIONS: &str = "SAMPLE_MAX_CONNECTIONS";
/// Largest buffered request body; larger ones get 413 (default 1 MiB).
pub const SAMPLE_MAX_BODY_BYTES: &str = "SAMPLE_MAX_BODY_BYTES";
/// Cap of `POST /admin/oom` when no memory limit kills the addon first (default 4096 MiB).
pub const SAMPLE_OOM_MAX_MB: &str = "SAMPLE_OOM_MAX_MB";
/// Largest streamed `/upload` body (default 256 MiB).
pub const SAMPLE_MAX_UPLOAD_BYTES: &str = "SAMPLE_MAX_UPLOAD_BYTES";
/// Largest WebSocket message on `/ws`; larger ones close with 1009 (default 1 MiB).
pub const SAMPLE_WS_MAX_MESSAGE_BYTES: &str = "SAMPLE_WS_MAX_MESSAGE_BYTES";
/// Close a silent WebSocket after this many milliseconds with 1001 (default 300 s).
pub const SAMPLE_WS_IDLE_TIMEOUT_MS: &str = "SAMPLE_WS_IDLE_TIMEOUT_MS";
/// `LINK=TARGET`: play a hostile addon against nested volumes, see [`swap_symlink`].
pub const SAMPLE_SWAP_SYMLINK: &str = "SAMPLE_SWAP_SYMLINK";
/// Burn this many microseconds of CPU in every widget render (0–1 000 000), so a
/// benchmark can give the widget cache a render worth caching.
pub const SAMPLE_RENDER_CPU_US: &str = "SAMPLE_RENDER_CPU_US";
/// `PATH`: write `instance=<id>` there at every start, so a test sees where a volume led.
pub const SAMPLE_WRITE_PROBE: &str = "SAMPLE_WRITE_PROBE";

/// The knobs as read at start; `None` leaves the server's default.
#[derive(Debug)]
pub struct Knobs {
    /// [`SAMPLE_HEALTH_DELAY_MS`] (zero when unset).
    pub health_delay: Duration,
    /// [`SAMPLE_RENDER_CPU_US`] (zero when unset).
    pub render_cpu: Duration,
    /// [`SAMPLE_CONFIG_RESTART`].
    pub config_restart: bool,
    /// [`SAMPLE_EVENTS_FAIL`].
    pub events_fail: bool,
    /// [`SAMPLE_QUIET`].
    pub quiet: bool,
    /// [`SAMPLE_IDLE_TIMEOUT_MS`] (0 means the default).
    pub idle_timeout: Option<Duration>,
    /// [`SAMPLE_MAX_BODY_BYTES`].
    pub max_body_bytes: Option<usize>,
    /// [`SAMPLE_MAX_CONNECTIONS`] (0 means the default).
    pub max_connections: Option<usize>,
    /// [`SAMPLE_MAX_UPLOAD_BYTES`].
    pub max_upload_bytes: Option<u64>,
    /// [`SAMPLE_WS_MAX_MESSAGE_BYTES`].
    pub ws_max_message_bytes: Option<usize>,
    /// [`SAMPLE_WS_IDLE_TIMEOUT_MS`] (0 means the default).
    pub ws_idle_timeout: Option<Duration>,
    /// [`SAMPLE_OOM_MAX_MB`].
    pub oom_max_mb: Option<usize>,
    /// [`SAMPLE_EXIT_ON_START`].
    pub exit_on_start: Option<i32>,
    /// [`SAMPLE_LOG_EVERY_MS`] (0 means off).
    pub log_every: Option<Duration>,
    /// [`SAMPLE_SWAP_SYMLINK`] as `(LINK, TARGET)`.
    pub swap_symlink: Option<(String, String)>,
    /// [`SAMPLE_WRITE_PROBE`].
    pub write_probe: Option<String>,
}

/// Read every `SAMPLE_*` variable but [`SAMPLE_LOG_TEXT`] (printed raw by [`print_log_text`]).
pub fn read_env(env: &Env) -> Result<Knobs, String> {
    let swap_symlink = match env.get(SAMPLE_SWAP_SYMLINK) {
        None => None,
        Some(v) => match v.split_once('=') {
            Some((link, target)) if !link.is_empty() && !target.is_empty() => Some((link.to_string(), target.to_string())),
            _ => return Err(format!("SAMPLE_SWAP_SYMLINK={v:?} is not LINK=TARGET")),
        },
    };
    Ok(Knobs {
        quiet: env.flag(SAMPLE_QUIET),
        write_probe: env.get(SAMPLE_WRITE_PROBE),
        swap_symlink,
        health_delay: Duration::from_millis(env.num(SAMPLE_HEALTH_DELAY_MS, 86_400_000)?.unwrap_or(0)),
        render_cpu: Duration::from_micros(env.num(SAMPLE_RENDER_CPU_US, 1_000_000)?.unwrap_or(0)),
        config_restart: env.flag(SAMPLE_CONFIG_RESTART),
        events_fail: env.flag(SAMPLE_EVENTS_FAIL),
        idle_timeout: env.num(SAMPLE_IDLE_TIMEOUT_MS, 86_400_000)?.filter(|n| *n > 0).map(Duration::from_millis),
        max_body_bytes: env.num(SAMPLE_MAX_BODY_BYTES, 1 << 30)?.map(|n| n as usize),
        max_connections: env.num(SAMPLE_MAX_CONNECTIONS, 100_000)?.filter(|n| *n > 0).map(|n| n as usize),
        max_upload_bytes: env.num(SAMPLE_MAX_UPLOAD_BYTES, 1 << 40)?,
        ws_max_message_bytes: env.num(SAMPLE_WS_MAX_MESSAGE_BYTES, 1 << 30)?.map(|n| n as usize),
        ws_idle_timeout: env.num(SAMPLE_WS_IDLE_TIMEOUT_MS, 86_400_000)?.filter(|n| *n > 0).map(Duration::from_millis),
        oom_max_mb: env.num(SAMPLE_OOM_MAX_MB, 1 << 20)?.map(|n| n as usize),
        exit_on_start: env.num(SAMPLE_EXIT_ON_START, 255)?.map(|n| n as i32),
        log_every: env.num(SAMPLE_LOG_EVERY_MS, 86_400_000)?.filter(|n| *n > 0).map(Duration::from_millis),
    })
}

impl Knobs {
    /// The server's limits: the knobs that are set, the defaults for the rest.
    pub fn server_config(&self) -> ServerConfig {
        let defaults = ServerConfig::default();
        ServerConfig {
            idle_timeout: self.idle_timeout.unwrap_or(defaults.idle_timeout),
            max_body_bytes: self.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_upload_bytes: self.max_upload_bytes.unwrap_or(defaults.max_upload_bytes),
            ws_max_message_bytes: self.ws_max_message_bytes.unwrap_or(defaults.ws_max_message_bytes),
            ws_idle_timeout: self.ws_idle_timeout.unwrap_or(defaults.ws_idle_timeout),
            oom_max_mb: self.oom_max_mb.unwrap_or(defaults.oom_max_mb),
            quiet: self.quiet,
        }
    }
}

/// What a hostile addon does to a directory volume nested in another one it can write:
/// replace the inner directory with a symlink to a host path, then exit so that the daemon
/// starts the container again (and, unguarded, Docker follows the link).
pub fn swap_symlink(link: &str, target: &str) {
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

/// [`SAMPLE_WRITE_PROBE`]: write `instance=<id>` to `path`; a failure is only logged.
pub fn write_probe(path: &str, instance: Option<&str>) {
    let text = format!("instance={}\n", instance.unwrap_or("-"));
    match std::fs::write(path, text) {
        Ok(()) => eprintln!("sample-addon: wrote probe {path}"),
        Err(e) => eprintln!("sample-addon: cannot write probe {path}: {e}"),
    }
}

/// [`SAMPLE_LOG_TEXT`], read raw from the process environment: it may hold any bytes.
pub fn print_log_text() {
    if let Some(text) = std::env::var_os(SAMPLE_LOG_TEXT) {
        // Printed verbatim (raw bytes, escape sequences included).
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// [`SAMPLE_LOG_EVERY_MS`]: a thread printing a numbered line every `every`.
pub fn start_ticker(every: Duration) {
    let spawned = std::thread::Builder::new().name("ticker".into()).spawn(move || {
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

/// `POST /admin/health/fail` (`fail`) and `/admin/health/ok`: `/health` answers 500 or not.
/// Spins on this thread until it has used `cpu` of CPU time (the thread's own clock, so a
/// busy machine stretches the wall time, not the work).
pub fn burn_cpu(cpu: Duration) {
    if cpu.is_zero() {
        return;
    }
    let start = thread_cpu();
    let mut x: u64 = 1;
    while thread_cpu().saturating_sub(start) < cpu {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
    }
}

fn thread_cpu() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub fn set_health_failing(state: &State, fail: bool) -> Response {
    state.health_fail.store(fail, Ordering::SeqCst);
    Response::json(200, json!({ "ok": true, "health": if fail { "failing" } else { "ok" } }))
}

/// `POST /admin/events/fail` (`fail`) and `/admin/events/ok`: `POST /events` answers 500 or not.
pub fn set_events_failing(state: &State, fail: bool) -> Response {
    state.events_fail.store(fail, Ordering::SeqCst);
    Response::json(200, json!({ "ok": true, "events": if fail { "failing" } else { "ok" } }))
}

/// `POST /admin/exit?code=N`: answer, then exit with `N` (default 0), as a crash would.
pub fn admin_exit(req: &Request) -> Response {
    let code = match req.query_param("code") {
        None => 0,
        Some(s) => match s.parse::<i32>() {
            Ok(n) if (0..=255).contains(&n) => n,
            _ => return Response::error(400, "code must be an integer 0-255"),
        },
    };
    let mut r = Response::json(200, json!({ "ok": true, "exiting_with": code }));
    r.after = After::Exit(code);
    r.close = true;
    r
}

/// `POST /admin/oom`: answer, then allocate until the kernel kills the process (the server
/// does it after the response, capped by [`SAMPLE_OOM_MAX_MB`]).
pub fn admin_oom() -> Response {
    let mut r = Response::json(200, json!({ "ok": true, "oom": "allocating until killed" }));
    r.after = After::Oom;
    r
}

/// `GET /events`: what `POST /events` received (the last [`crate::state::MAX_EVENTS`]), with counters.
pub fn get_events(state: &State) -> Response {
    let events: Vec<Value> = lock(&state.events).iter().cloned().collect();
    Response::json(
        200,
        json!({
            "count": events.len(),
            "total_received": state.events_total.load(Ordering::SeqCst),
            "rejected": state.events_rejected.load(Ordering::SeqCst),
            "failing": state.events_fail.load(Ordering::SeqCst),
            "events": events,
        }),
    )
}

/// `DELETE /events`: forget what `POST /events` received (the counters stay).
pub fn clear_events(state: &State) -> Response {
    lock(&state.events).clear();
    Response::json(200, json!({ "ok": true }))
}

/// `/headers`, any method: the request headers as received (names lower-cased; repeated
/// headers joined with ", " in order of arrival), to check what a proxy forwards.
pub fn headers(req: &Request) -> Response {
    Response::json(200, Value::Object(join_headers(&req.headers)))
}
