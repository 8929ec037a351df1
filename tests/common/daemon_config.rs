//! How the tests run a daemon: the config file a test daemon gets and the ports it may
//! use. Shared by the daemon's integration tests (`tests/common/mod.rs`) and the
//! dashboard's end-to-end test (`tui/tests/e2e.rs` includes this file by path), so both run
//! the daemon the same way and a change of the config lands in one place. Only `std` and
//! `libc`, which both test crates have.

use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

/// Port slices handed to test daemons, so parallel tests never compete for ports. They come
/// from 20000–30000, away from the default 8000–9000 a dev daemon or a benchmark may be
/// using on the same machine, and below the kernel's ephemeral ports. Each test process
/// first takes one 1,000-port window of that range under an exclusive `flock`, so two test
/// runs on one machine (two checkouts, CI beside a developer) never hand out the same port.
static NEXT_SLICE: AtomicU16 = AtomicU16::new(0);
static WINDOW: std::sync::OnceLock<(u16, std::fs::File)> = std::sync::OnceLock::new();

fn window() -> u16 {
    use std::os::fd::AsRawFd;
    WINDOW
        .get_or_init(|| {
            for n in 0..10u16 {
                let path = std::env::temp_dir().join(format!("addond-test-ports-{n}.lock"));
                let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
                // The lock lives as long as the process: the file stays open in the static.
                if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    return (20000 + n * 1000, f);
                }
            }
            panic!("all ten test port windows of 20000–30000 are held by other test processes");
        })
        .0
}

/// `len` consecutive ports of this process's window that no other test of any process is
/// handed: `(first, last)`.
pub fn port_slice(len: u16) -> (u16, u16) {
    let base = window();
    let start = base + NEXT_SLICE.fetch_add(len, Ordering::SeqCst);
    assert!(start + len - 1 < base + 1000, "this test process used up its port window {base}–{}", base + 999);
    (start, start + len - 1)
}

/// What a test may change in the daemon's config; [`config_toml`] writes the rest.
pub struct Options {
    /// The daemon's host port range (`ports.range_start`, `ports.range_end`).
    pub ports: (u16, u16),
    /// Extra TOML appended to the generated config.
    pub extra: String,
    /// Docker endpoint (default the real engine's socket).
    pub docker_host: String,
    /// Extra keys for the `[gateway]` section (which always listens on an ephemeral port).
    pub gateway_extra: String,
    /// More keys of the `[ports]` section.
    pub ports_extra: String,
    /// Extra keys for the `[events]` section.
    pub events_extra: String,
    /// Whether `spawn` waits for the daemon to report Docker reachable (not when the test
    /// starts it on a Docker that does not answer).
    pub wait_for_docker: bool,
    /// Start the daemon with this soft and hard `RLIMIT_NOFILE` (as the kernel's default
    /// soft limit of 1024 would be without the unit's `LimitNOFILE=`).
    pub nofile: Option<u64>,
    /// `docker.subnet_pool` and `docker.subnet_prefix`: where this daemon's networks come
    /// from. By default one pool all test daemons share (172.24.0.0/14: clear of docker0,
    /// of the production default 172.20.0.0/14 a dev daemon may use, and of the fixed
    /// 172.30/172.31 test networks of older checkouts), in /26s; the daemon skips subnets
    /// that other networks (other daemons, other test processes) already hold.
    pub subnet_pool: (String, u8),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ports: port_slice(12),
            extra: String::new(),
            docker_host: "unix:///var/run/docker.sock".into(),
            gateway_extra: String::new(),
            events_extra: String::new(),
            ports_extra: String::new(),
            wait_for_docker: true,
            nofile: None,
            subnet_pool: ("172.24.0.0/14".into(), 26),
        }
    }
}

/// The config file of a test daemon whose data lives in `dir/data` and whose admin socket
/// is `socket`: short health, restart, reconcile and event-retry periods so tests run
/// fast, ephemeral gateway and addon API ports, and the test networks.
pub fn config_toml(dir: &Path, socket: &Path, opts: &Options) -> String {
    format!(
        r#"
[daemon]
data_dir = "{data}"
socket_path = "{sock}"
log_level = "debug"

[ports]
range_start = {start}
range_end = {end}
{ports_extra}

[docker]
host = "{docker_host}"
network = "addond_test"
isolated_network = "addond_test_isolated"
subnet_pool = "{pool}"
subnet_prefix = {prefix}
stop_timeout_seconds = 2

[health]
interval_seconds = 1.0
timeout_seconds = 1.0
retries = 2

[restart]
backoff_base_seconds = 0.5
backoff_max_seconds = 2.0
max_failures = 4
failure_window_seconds = 120.0

[reconcile]
interval_seconds = 2.0

[gateway]
listen = "127.0.0.1:0"
{gateway_extra}

[addon_api]
port = 0

[events]
retry_base_seconds = 0.2
retry_max_seconds = 1.0
{events_extra}

{extra}
"#,
        data = dir.join("data").display(),
        sock = socket.display(),
        start = opts.ports.0,
        end = opts.ports.1,
        extra = opts.extra,
        docker_host = opts.docker_host,
        gateway_extra = opts.gateway_extra,
        ports_extra = opts.ports_extra,
        events_extra = opts.events_extra,
        pool = opts.subnet_pool.0,
        prefix = opts.subnet_pool.1,
    )
}
