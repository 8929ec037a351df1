//! Small helpers for the integration tests: a real `addond` process on a temp data dir and
//! socket, with its own slice of the port range, a real client, the real `addonctl` run
//! against it ([`ctl`]), and Docker through bollard for checking what the daemon did behind
//! the API. The daemon's config and the port windows are in `daemon_config.rs`, shared
//! with the dashboard's end-to-end test.

#![allow(dead_code)]

mod daemon_config;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use addond::client::{Client, Response};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use serde_json::{json, Value};

pub use daemon_config::{config_toml, port_slice, Options};

pub const IMAGE: &str = "addond-sample:latest";
pub const SVC: &str = "/api/plugin-microservice/services";

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub client: Client,
    pub ports: (u16, u16),
    /// Extra environment for the next `spawn` (e.g. the debug hooks of the crash tests).
    pub env: Vec<(String, String)>,
    /// See [`Options::wait_for_docker`].
    pub wait_for_docker: bool,
    /// The descriptor limit the daemon process is started with, if not inherited.
    pub nofile: Option<u64>,
}

pub fn docker() -> Docker {
    Docker::connect_with_unix("/var/run/docker.sock", 60, &bollard::ClientVersion { major_version: 1, minor_version: 41 })
        .expect("docker socket")
}

pub fn addond_bin() -> &'static str {
    env!("CARGO_BIN_EXE_addond")
}

pub fn addonctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_addonctl")
}

/// Runs `addonctl --socket SOCKET ARGS` to its end and returns what it printed: stdin
/// empty (or `stdin`, written whole), `$ADDOND_SOCKET` removed so only `socket` counts.
/// Blocks; async tests use [`ctl`].
pub fn ctl_at(socket: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(addonctl_bin());
    cmd.arg("--socket").arg(socket).args(args).env_remove("ADDOND_SOCKET");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run addonctl");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs addonctl against the test daemon (off the async workers: it blocks until exit).
pub async fn ctl(d: &Daemon, args: &[&str]) -> Output {
    ctl_stdin(d, args, None).await
}

/// [`ctl`] with `stdin` as addonctl's standard input.
pub async fn ctl_stdin(d: &Daemon, args: &[&str], stdin: Option<String>) -> Output {
    let socket = d.socket.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_at(&socket, &args, stdin.as_deref())
    })
    .await
    .unwrap()
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
        let text = config_toml(dir.path(), &socket, &opts);
        std::fs::write(&config, text).unwrap();
        let mut d = Daemon {
            client: Client::new(socket.clone()),
            dir,
            socket,
            config,
            child: None,
            ports: opts.ports,
            env: Vec::new(),
            wait_for_docker: opts.wait_for_docker,
            nofile: opts.nofile,
        };
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
        let mut cmd = Command::new(addond_bin());
        cmd.arg("--config").arg(&self.config).env("RUST_LOG", "addond=debug").env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit { rlim_cur: n, rlim_max: n };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn addond");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get("/health").await {
                if r.status == 200 && (r.data()["docker"] == "reachable" || !self.wait_for_docker) {
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

/// The Python of a test venv (`$<env>`, else `default`) that can import `imports`; a
/// missing venv fails the test (it is not skipped), naming the script that makes it.
pub fn venv_python(env: &str, default: &str, imports: &str, script: &str) -> PathBuf {
    let venv = std::env::var(env).unwrap_or_else(|_| default.into());
    let python = PathBuf::from(&venv).join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the venv at {venv} cannot import {imports}: create it with `bash {script}` (scripts/test.sh does)");
    python
}

/// Raises this test process's soft `RLIMIT_NOFILE` to its hard limit (tests that open
/// thousands of connections need more than the usual 1024); returns the new limit.
pub fn raise_own_fd_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// One HTTP/1.1 exchange on an open connection, reading the answer by its Content-Length
/// (the connection stays usable): status, lower-cased headers and body, or what went wrong
/// (a failed write, a reset, the connection closing before a whole answer).
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
) -> Result<(u16, Vec<(String, String)>, String), String> {
    use tokio::io::AsyncWriteExt;
    s.write_all(request).await.map_err(|e| format!("write: {e}"))?;
    read_answer(s).await
}

/// Reads one answer (head, then a Content-Length body) from `s`.
pub async fn read_answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Result<(u16, Vec<(String, String)>, String), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("the connection closed before a whole answer ({} bytes)", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("not an HTTP answer: {head}"))?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .map_err(|_| "no body within 10 s".to_string())?
            .map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("the connection closed in the middle of a body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, headers, String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string()))
}

/// Waits until the peer closes `s` (EOF or reset): how long that took, or `None` if it is
/// still open after `limit`. Anything the peer sends meanwhile is read and dropped.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let t0 = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), s.read(&mut sink)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => {}
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
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
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

/// Registers the manifest `m` and installs it (as `instance` when given), waiting until
/// its services are Started; the install's answer.
pub async fn install_addon(d: &Daemon, m: Value, instance: Option<&str>) -> Value {
    let name = m["name"].as_str().unwrap().to_string();
    let r = d.post("/api/addons/register", m).await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
    let body = match instance {
        Some(i) => json!({"instance": i}),
        None => json!({}),
    };
    let r = d.post(&format!("/api/addons/{name}/install?wait=started&timeout=180"), body).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    r.data().clone()
}

/// A Unix-socket proxy in front of the Docker engine that a test can cut and restore.
pub struct DockerProxy {
    path: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DockerProxy {
    pub fn start(path: &Path) -> DockerProxy {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                conns.spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        DockerProxy { path: path.to_path_buf(), task: Some(task) }
    }

    /// Cuts every connection and refuses new ones, like an engine that went away.
    pub async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
