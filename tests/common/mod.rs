//! Small helpers for the integration tests: a real `addond` process on a temp data dir and
//! socket, with its own slice of the port range, a real client, and Docker through bollard
//! for checking what the daemon did behind the API.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use addond::client::{Client, Response};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use serde_json::{json, Value};

pub const IMAGE: &str = "addond-sample:latest";
pub const SVC: &str = "/api/plugin-microservice/services";

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

pub fn port_slice(len: u16) -> (u16, u16) {
    let base = window();
    let start = base + NEXT_SLICE.fetch_add(len, Ordering::SeqCst);
    assert!(start + len - 1 < base + 1000, "this test process used up its port window {base}–{}", base + 999);
    (start, start + len - 1)
}

pub struct Options {
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
    /// `docker.subnet_pool` and `docker.subnet_prefix`: where this daemon's networks come
    /// from. By default one pool all test daemons share (172.24.0.0/14: clear of docker0,
    /// of the production default 172.20.0.0/14 a dev daemon may use, and of the fixed
    /// 172.30/172.31 test networks of older checkouts), in /26s; the daemon skips subnets
    /// that other networks (other daemons, other test processes) already hold.
    pub subnet_pool: (String, u8),
}

impl Default for Options {
    fn default() -> Self {
        Options { ports: port_slice(12), extra: String::new(), docker_host: "unix:///var/run/docker.sock".into(), gateway_extra: String::new(), events_extra: String::new(), ports_extra: String::new(), subnet_pool: ("172.24.0.0/14".into(), 26) }
    }
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub client: Client,
    pub ports: (u16, u16),
}

pub fn docker() -> Docker {
    Docker::connect_with_unix("/var/run/docker.sock", 60, &bollard::ClientVersion { major_version: 1, minor_version: 41 }).expect("docker socket")
}

pub fn addond_bin() -> &'static str {
    env!("CARGO_BIN_EXE_addond")
}

pub fn addonctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_addonctl")
}

/// A finished `addonctl`'s stdout, as text.
pub fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished `addonctl`'s stderr, as text.
pub fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Succeeded, with nothing on stderr; returns stdout.
pub fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), out(o), err(o));
    assert_eq!(err(o), "", "{what}: stderr");
    out(o)
}

/// Failed with `code`, saying `error: …` on stderr and nothing on stdout; returns stderr.
pub fn failed(o: &std::process::Output, code: i32, what: &str) -> String {
    assert_eq!(o.status.code(), Some(code), "{what}\nstdout: {}\nstderr: {}", out(o), err(o));
    assert_eq!(out(o), "", "{what}: stdout");
    let e = err(o);
    assert!(e.starts_with("error: "), "{what}: {e}");
    e
}

impl Daemon {
    pub async fn start() -> Daemon {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Daemon {
        let dir = tempfile::Builder::new().prefix("addond-test-").tempdir().unwrap();
        let socket = dir.path().join("addond.sock");
        let config = dir.path().join("config.toml");
        let text = format!(
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
            data = dir.path().join("data").display(),
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
        );
        std::fs::write(&config, text).unwrap();
        let mut d = Daemon { client: Client::new(socket.clone()), dir, socket, config, child: None, ports: opts.ports };
        d.spawn().await;
        d
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("addond.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the daemon process and waits until its socket answers.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(addond_bin())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "addond=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn addond");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get("/health").await {
                if r.status == 200 && r.data()["docker"] == "reachable" {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("addond exited early ({status}); log:\n{}", self.log());
                }
            }
            assert!(Instant::now() < deadline, "addond did not come up; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's address (the daemon binds an ephemeral port in tests).
    pub async fn gateway(&self) -> std::net::SocketAddr {
        self.get("/health").await.data()["gateway"].as_str().expect("gateway enabled").parse().unwrap()
    }

    /// SIGKILL: no cleanup of any kind runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client.post(path, Some(&body)).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client.delete(path).await.unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    /// Creates a service from the sample image and waits until it is Started.
    pub async fn create_started(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({"name": name, "image": IMAGE});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                body[k] = v.clone();
            }
        }
        // generous: a loaded machine (the 200-creation test, a benchmark) slows Docker down
        let r = self.post(&format!("{SVC}?wait=started&timeout=180"), body).await;
        assert_eq!(r.status, 201, "create {name}: {:?}\nlog:\n{}", r.body, tail(&self.log(), 40));
        r.data().clone()
    }

    pub async fn service(&self, name: &str) -> Option<Value> {
        let r = self.get(&format!("{SVC}/{name}")).await;
        (r.status == 200).then(|| r.data().clone())
    }

    /// Polls until `pred` holds for the service (`None` once it is gone).
    pub async fn wait_for(&self, name: &str, secs: u64, pred: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.service(name).await;
            if pred(s.as_ref()) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {name}: {s:#?}\nlog tail:\n{}", tail(&self.log(), 40));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn daemon_id(&self) -> Option<String> {
        let c = rusqlite::Connection::open(self.data_dir().join("addond.db")).ok()?;
        c.query_row("SELECT value FROM meta WHERE key = 'daemon_id'", [], |r| r.get(0)).ok()
    }

    /// Containers carrying this daemon's label: name → running.
    pub async fn containers(&self) -> HashMap<String, bool> {
        let Some(id) = self.daemon_id() else { return HashMap::new() };
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![format!("addond.daemon={id}")])])),
            ..Default::default()
        };
        docker()
            .list_containers(Some(opts))
            .await
            .unwrap()
            .into_iter()
            .map(|c| {
                let name = c.names.unwrap_or_default().into_iter().next().unwrap_or_default().trim_start_matches('/').to_string();
                let running = c.state.map(|s| s.to_string() == "running").unwrap_or(false);
                (name, running)
            })
            .collect()
    }

    pub async fn inspect(&self, name: &str) -> bollard::models::ContainerInspectResponse {
        docker().inspect_container(name, None::<InspectContainerOptions>).await.unwrap()
    }
}

/// Removes every container a test daemon left (by its daemon label), then its networks and
/// named volumes (which a real daemon keeps: volumes hold data, networks outlive a stop).
fn remove_containers(daemon_id: String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let d = docker();
        let label = || Some(HashMap::from([("label".to_string(), vec![format!("addond.daemon={daemon_id}")])]));
        let opts = ListContainersOptions { all: true, filters: label(), ..Default::default() };
        for c in d.list_containers(Some(opts)).await.unwrap_or_default() {
            let _ = d.remove_container(&c.id.unwrap_or_default(), Some(RemoveContainerOptions { force: true, ..Default::default() })).await;
        }
        let opts = bollard::query_parameters::ListNetworksOptions { filters: label() };
        for n in d.list_networks(Some(opts)).await.unwrap_or_default() {
            let _ = d.remove_network(&n.id.unwrap_or_default()).await;
        }
        let opts = bollard::query_parameters::ListVolumesOptions { filters: label() };
        for v in d.list_volumes(Some(opts)).await.ok().and_then(|r| r.volumes).unwrap_or_default() {
            let _ = d.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
        }
    });
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Leave no containers behind, whatever the test did.
        if let Some(id) = self.daemon_id() {
            let _ = std::thread::spawn(move || remove_containers(id)).join();
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// GET over plain loopback TCP (an instance's published port).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path, "").await
}

pub async fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(("127.0.0.1", port))).await.ok()?.ok()?;
    let req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

pub fn ports_of(svc: &Value) -> Vec<u16> {
    svc["instances"].as_array().unwrap().iter().map(|i| i["host_port"].as_u64().unwrap() as u16).collect()
}
