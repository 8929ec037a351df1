//! How the tests run a daemon: the config file a test daemon gets and the ports it may
//! use. Shared by the daemon's integration tests (`tests/common/mod.rs`) and the
//! dashboard's end-to-end test (`tui/tests/e2e.rs` includes this file by path), so both run
//! the daemon the same way and a change of the config lands in one place. Only `std` and
//! `libc`, which both test crates have.

use std::path::Path;

/// Port slices handed to test daemons, so parallel tests never compete for ports. They come
/// from 20000–30000, away from the default 8000–9000 a dev daemon or a benchmark may be
/// using on the same machine, and below the kernel's ephemeral ports. The range is cut into
/// 20 blocks of 500; a test process takes a block under an exclusive `flock` (held until it
/// exits) and another one when its block runs out, so two test runs on one machine (two
/// checkouts, CI beside a developer) never hand out the same port.
const BLOCK: u16 = 500;
static BLOCKS: std::sync::Mutex<Blocks> = std::sync::Mutex::new(Blocks { held: Vec::new(), base: 0, used: BLOCK });

/// The blocks this process holds and how much of the newest one is handed out.
struct Blocks {
    /// Open lock files: the locks live as long as the process.
    held: Vec<std::fs::File>,
    /// First port of the newest block.
    base: u16,
    /// Ports of the newest block handed out.
    used: u16,
}

fn take_block() -> (u16, std::fs::File) {
    use std::os::fd::AsRawFd;
    // A block this process holds already is refused like any other held one.
    for n in 0..20u16 {
        let path = std::env::temp_dir().join(format!("addond-test-ports-{n}.lock"));
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (20000 + n * BLOCK, f);
        }
    }
    panic!("no free test port block in 20000–30000: other test processes hold them all");
}

/// `len` (at most 500) consecutive ports that no other test of any process is handed:
/// `(first, last)`.
pub fn port_slice(len: u16) -> (u16, u16) {
    assert!(len <= BLOCK, "a port slice is at most {BLOCK} ports");
    let mut b = BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    if b.used + len > BLOCK {
        let (base, f) = take_block();
        b.held.push(f);
        b.base = base;
        b.used = 0;
    }
    let start = b.base + b.used;
    b.used += len;
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
