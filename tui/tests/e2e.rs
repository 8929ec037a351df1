//! End to end: a real `addond` (temp data dir, socket and config, 51 ports of this
//! process's test window; the config and the ports are the daemon's own tests', from
//! `tests/common/daemon_config.rs`) with two services of the sample image, and the real
//! `addond-tui` running in tmux at 80×24. Keys go in with `tmux send-keys`, the screen comes back with
//! `tmux capture-pane -p`; the test asserts on both the screen and the daemon's state.
//!
//! Needs Docker, the image `addond-sample:latest` (built with scripts/build-sample-image.sh
//! if missing) and tmux (installed with apt-get when missing and running as root, as in CI).
//! The daemon binary is taken from next to `addond-tui` in the target dir, and built with
//! `cargo build --bin addond` when it is missing or older than the daemon's sources.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use addond::client::{Client, Response};
use serde_json::{json, Value};

/// The test daemon's config and port windows, the same as the daemon's own tests use.
#[allow(dead_code)]
#[path = "../../tests/common/daemon_config.rs"]
mod daemon_config;

const SVC: &str = "/api/plugin-microservice/services";
const IMAGE: &str = "addond-sample:latest";

/// The daemon's port range: a slice of this process's test window, which no other test
/// process is handed, so a concurrent run cannot take our ports between probe and start.
fn range() -> (u16, u16) {
    static RANGE: OnceLock<(u16, u16)> = OnceLock::new();
    *RANGE.get_or_init(|| daemon_config::port_slice(51))
}
/// What the "beta" service prints at start: a window title, a screen clear, colours and a
/// clipboard write around the visible text `EVIL-LINE`.
const EVIL: &str = "\u{1b}]0;pwned-title\u{7}\u{1b}[2J\u{1b}[H\u{1b}[31mEVIL\u{1b}[0m-LINE\u{1b}]52;c;cHduZWQ=\u{7}";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tui_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_addond-tui"))
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else { return newest };
    for e in entries.flatten() {
        let p = e.path();
        let t = if p.is_dir() { newest_mtime(&p) } else { e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH) };
        newest = newest.max(t);
    }
    newest
}

/// `addond` next to `addond-tui` (same target dir and profile), built if missing or stale.
/// `cargo test --workspace` has built it already (the daemon's own tests need it); this
/// covers `cargo test -p addond-tui`. Cargo does not hold its build lock while tests run,
/// so building from here does not deadlock.
fn addond_bin() -> PathBuf {
    let bin = tui_bin().with_file_name("addond");
    let root = workspace_root();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let sources = newest_mtime(&root.join("src"))
        .max(std::fs::metadata(root.join("Cargo.toml")).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH));
    if built.is_none_or(|b| b < sources) {
        eprintln!("e2e: building addond ({})", if built.is_none() { "missing" } else { "older than src/" });
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status =
            Command::new(cargo).current_dir(&root).args(["build", "--bin", "addond"]).status().expect("run cargo build --bin addond");
        // A tree being edited may not build; an existing binary is still a real daemon.
        assert!(status.success() || built.is_some(), "cargo build --bin addond failed");
        if !status.success() {
            eprintln!("e2e: cargo build --bin addond failed; using the existing {}", bin.display());
        }
    }
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn ensure_tmux() {
    if have("tmux") {
        return;
    }
    // CI runs as root on Debian: install it rather than skip the test.
    if unsafe { libc::geteuid() } == 0 && have("apt-get") {
        eprintln!("e2e: tmux is missing; installing it with apt-get");
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get").args(["install", "-y", "-qq", "tmux"]).env("DEBIAN_FRONTEND", "noninteractive").status();
    }
    assert!(have("tmux"), "this test drives addond-tui through tmux: install it (apt-get install tmux)");
}

fn ensure_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        eprintln!("e2e: building {IMAGE}");
        let status =
            Command::new("bash").arg(workspace_root().join("scripts/build-sample-image.sh")).status().expect("run build-sample-image.sh");
        assert!(status.success(), "scripts/build-sample-image.sh failed");
    }
}

// ---- tmux -----------------------------------------------------------------------------

struct Tmux {
    server: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux { server: format!("addond-tui-e2e-{name}-{}", std::process::id()) }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux").args(["-L", &self.server, "-f", "/dev/null"]).args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs the shell command `command` in a detached 80×24 pane.
    fn start(&self, command: &str) {
        self.run(&["new-session", "-d", "-s", "e2e", "-x", "80", "-y", "24", command]);
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "e2e", key]);
        // Keys apart, so an Escape is never read as Alt+the next key.
        std::thread::sleep(Duration::from_millis(250));
    }

    fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", "e2e", "-l", text]);
        std::thread::sleep(Duration::from_millis(250));
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "e2e"]).stdout).into_owned()
    }

    fn format(&self, f: &str) -> String {
        String::from_utf8_lossy(&self.run(&["display-message", "-p", "-t", "e2e", f]).stdout).trim().to_string()
    }

    fn wait(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.server, "kill-server"]).output();
    }
}

// ---- the daemon -----------------------------------------------------------------------

struct Daemon {
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: Client,
    /// Services created, for the cleanup.
    ids: Vec<String>,
}

impl Daemon {
    fn start(bin: PathBuf) -> Daemon {
        let dir = tempfile::Builder::new().prefix("addond-tui-e2e-").tempdir().unwrap();
        let socket = dir.path().join("addond.sock");
        let config = dir.path().join("config.toml");
        let text = daemon_config::config_toml(dir.path(), &socket, &daemon_config::Options { ports: range(), ..Default::default() });
        std::fs::write(&config, text).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = Client::new(socket.clone());
        let mut d = Daemon { dir, config, socket, bin, child: None, rt, client, ids: Vec::new() };
        d.spawn();
        d
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("addond.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("addond.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .env_remove("ADDOND_SOCKET")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn addond");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.rt.block_on(self.client.get("/health")) {
                if r.status == 200 && r.data()["docker"] == "reachable" {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("addond exited early ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "addond did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn get(&self, path: &str) -> Response {
        self.rt.block_on(self.client.get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn create(&mut self, body: Value) -> Value {
        let r = self.rt.block_on(self.client.post(&format!("{SVC}?wait=started&timeout=90"), Some(&body))).expect("create");
        assert_eq!(r.status, 201, "create {body}: {:?}\n{}", r.body, self.log());
        let svc = r.data().clone();
        self.ids.push(svc["id"].as_str().unwrap().to_string());
        svc
    }

    fn service(&self, name: &str) -> Value {
        let r = self.get(&format!("{SVC}/{name}"));
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.data().clone()
    }

    fn wait_for(&self, name: &str, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.service(name);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {name}: {what}\n{s:#}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes every service of this (private) daemon, waiting until the containers are
    /// gone; `ids` keeps those that could not be deleted. Returns every id it tried.
    fn delete_all(&mut self) -> Vec<String> {
        if let Ok(r) = self.rt.block_on(self.client.get(SVC)) {
            for s in r.data().as_array().into_iter().flatten() {
                if let Some(id) = s["id"].as_str().filter(|id| !self.ids.iter().any(|k| k == id)) {
                    self.ids.push(id.to_string());
                }
            }
        }
        let all = std::mem::take(&mut self.ids);
        for id in all.clone() {
            let r = self.rt.block_on(self.client.delete(&format!("{SVC}/{id}?wait=deleted&timeout=60")));
            match r {
                Ok(r) if r.status == 200 || r.status == 404 => {}
                other => {
                    eprintln!("e2e: delete {id}: {other:?}");
                    self.ids.push(id);
                }
            }
        }
        all
    }
}

/// Container ids carrying the label of one of these services (the `docker` CLI).
fn containers_of(ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        if let Ok(o) = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=addond.service={id}")]).output() {
            out.extend(String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string));
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Whatever happened: delete through the API if the daemon still answers, then
        // remove any container left by label.
        if self.child.is_none() && !self.ids.is_empty() {
            self.spawn_quietly();
        }
        let tried = self.delete_all();
        let left = containers_of(&tried);
        self.kill9();
        for c in left {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
    }
}

impl Daemon {
    fn spawn_quietly(&mut self) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
        if r.is_err() {
            eprintln!("e2e: could not restart the daemon for cleanup");
        }
    }
}

/// A port of the range nobody uses, held for the whole test so the port map has a
/// "held by another program" entry (the daemon skips it, as it skips any port in use).
fn hold_a_port() -> (u16, TcpListener) {
    let (first, last) = range();
    for p in (first + 30..=last).rev() {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", p)) {
            return (p, l);
        }
    }
    panic!("no free port in {:?} to hold", range());
}

#[test]
fn dashboard_against_a_real_daemon() {
    ensure_tmux();
    ensure_image();
    let (held_port, _held) = hold_a_port();
    let mut d = Daemon::start(addond_bin());
    d.create(json!({"name": "tui-alpha", "image": IMAGE}));
    d.create(json!({"name": "tui-beta", "image": IMAGE, "environment": {"SAMPLE_LOG_TEXT": EVIL, "SAMPLE_LOG_EVERY_MS": "200"}}));

    let tmux = Tmux::new("main");
    let status_file = d.dir.path().join("tui.status");
    let cmd = format!(
        "{} --socket {} --ports {}-{}; echo $? > {}; exec sleep 600",
        tui_bin().display(),
        d.socket.display(),
        range().0,
        range().1,
        status_file.display()
    );
    tmux.start(&cmd);
    let s = tmux
        .wait("both services and the connection", 30, |s| s.contains("● connected") && s.contains("tui-alpha") && s.contains("tui-beta"));
    assert!(s.contains("1:Services") && s.contains("NAME"), "{s}");
    assert!(s.contains("▶ tui-alpha"), "the first row starts selected:\n{s}");

    // Select: move down to tui-beta; the detail pane follows.
    tmux.key("j");
    let beta_id = d.service("tui-beta")["id"].as_str().unwrap().to_string();
    tmux.wait("tui-beta selected", 10, |s| s.contains("▶ tui-beta") && s.contains(&format!(" tui-beta {beta_id} ")));

    // Filter.
    tmux.key("/");
    tmux.text("beta");
    tmux.key("Enter");
    let s = tmux.wait("the filter", 10, |s| s.contains("Services 1/2 filter \"beta\"") && !s.contains("tui-alpha"));
    assert!(s.contains("▶ tui-beta"), "{s}");

    // Restart: the instance is restarted (a new start time), the screen says it was sent.
    let before = d.service("tui-beta")["instances"][0]["started_at"].clone();
    tmux.key("r");
    tmux.wait("the restart to be accepted", 30, |s| s.contains("restart tui-beta: accepted"));
    d.wait_for("tui-beta", "restarted and started again", 60, |s| {
        s["instances"][0]["started_at"] != before && s["phase"] == "Started" && s["health_status"] == "healthy"
    });

    // Scale to 2 through the prompt.
    tmux.key("=");
    tmux.wait("the scale prompt", 10, |s| s.contains("Scale tui-beta") && s.contains("replicas (0–64): 1█"));
    tmux.key("BSpace");
    tmux.text("2");
    tmux.key("Enter");
    tmux.wait("the scale to be accepted", 30, |s| s.contains("scale tui-beta to 2: accepted"));
    let svc = d.wait_for("tui-beta", "two healthy instances", 60, |s| {
        s["replicas"] == 2
            && s["phase"] == "Started"
            && s["instances"].as_array().is_some_and(|i| i.len() == 2 && i.iter().all(|i| i["state"] == "running"))
    });
    let ports: Vec<u64> = svc["instances"].as_array().unwrap().iter().map(|i| i["host_port"].as_u64().unwrap()).collect();
    tmux.wait("2/2 on screen, pushed by the daemon", 20, |s| {
        s.lines().any(|l| l.contains("tui-beta") && l.contains("2/2")) && s.contains(&format!("#1 :{}", ports[1]))
    });
    assert!(!ports.contains(&u64::from(held_port)), "the daemon skipped the held port {held_port}: {ports:?}");

    // Logs of all instances: the hostile line shows as plain text, nothing it asked for
    // (title, clear screen, clipboard) happened.
    tmux.key("l");
    let s = tmux.wait("the log stream", 30, |s| {
        s.contains("Logs: tui-beta (all instances)") && s.contains("EVIL-LINE") && s.contains("sample-addon log line")
    });
    assert!(s.contains("[0] ") && s.contains("[1] "), "both instances are prefixed:\n{s}");
    assert!(!s.contains("pwned") && !s.contains("cHduZWQ") && !s.contains("[31m") && !s.contains("]0;"), "{s}");
    assert!(s.contains("1:Services") && s.lines().count() >= 23, "the screen was not cleared by the log line:\n{s}");
    assert_ne!(tmux.format("#{pane_title}"), "pwned-title");

    // Search in the logs.
    tmux.key("/");
    tmux.text("evil-line");
    tmux.key("Enter");
    tmux.wait("the search result", 10, |s| s.contains("\"evil-line\": ") && s.contains("match(es)") && s.contains("paused"));
    tmux.key("f");
    tmux.wait("following again", 10, |s| s.contains("· following"));

    // Save what the view holds to a file: the sanitised text.
    let saved = d.dir.path().join("beta.log");
    tmux.key("s");
    tmux.wait("the save prompt", 10, |s| s.contains("file: addond-tui-beta-"));
    tmux.key("C-u");
    tmux.text(&saved.display().to_string());
    tmux.key("Enter");
    tmux.wait("the save report", 10, |s| s.contains("line(s) to") && s.contains("beta.log"));
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("EVIL-LINE") && text.contains("sample-addon log line"), "{text}");
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");

    // The port map: ours by service and instance, the held port as another program's.
    tmux.key("Escape");
    tmux.key("3");
    let s = tmux.wait("the port map", 20, |s| {
        s.contains(&format!("Port map {}–{} (from --ports)", range().0, range().1))
            && s.contains(&format!("{held_port}  held by another program"))
    });
    for p in &ports {
        assert!(s.contains(&format!("{p}  tui-beta #")), "port {p} missing:\n{s}");
    }
    assert!(s.contains("  tui-alpha #0  healthy"), "{s}");

    // Create a service from a template, then delete it (with the confirmation).
    tmux.key("1");
    tmux.key("Escape");
    tmux.wait("every service again", 10, |s| s.contains("Services 2/2") && s.contains("tui-alpha"));
    tmux.key("n");
    tmux.wait("the template picker", 20, |s| s.contains("▶ rest_api_basic"));
    tmux.key("Enter");
    tmux.wait("the name prompt", 10, |s| s.contains("New service from rest_api_basic"));
    tmux.text("tui-gamma");
    tmux.key("Enter");
    tmux.wait("the create to be accepted", 90, |s| s.contains("create tui-gamma from rest_api_basic: accepted"));
    d.ids.push(d.service("tui-gamma")["id"].as_str().unwrap().to_string());
    d.wait_for("tui-gamma", "started", 90, |s| s["phase"] == "Started");
    tmux.wait("tui-gamma healthy on screen", 20, |s| s.lines().any(|l| l.contains("tui-gamma") && l.contains("healthy")));
    tmux.key("/");
    tmux.text("gamma");
    tmux.key("Enter");
    tmux.wait("tui-gamma selected", 10, |s| s.contains("▶ tui-gamma"));
    tmux.key("D");
    tmux.wait("the confirmation", 10, |s| s.contains("Delete tui-gamma?"));
    tmux.key("y");
    tmux.wait("tui-gamma gone", 60, |s| s.contains("Services 0/2 filter \"gamma\""));
    assert_eq!(d.get(&format!("{SVC}/tui-gamma")).status, 404);
    tmux.key("Escape");

    // The daemon goes away and comes back: the dashboard says so and reconnects by itself.
    d.kill9();
    tmux.wait("the daemon to be shown down", 20, |s| s.contains("✖ offline") && s.contains("not running"));
    d.spawn();
    let s = tmux.wait("the reconnection", 30, |s| s.contains("● connected") && s.contains("tui-beta") && s.contains("2/2"));
    assert!(!s.contains("offline"), "{s}");
    tmux.key("4");
    tmux.wait("the event log", 10, |s| {
        let down = s.find("daemon unreachable");
        let up = s.rfind("connected to addond");
        matches!((down, up), (Some(d), Some(u)) if u > d)
    });
    // The daemon's event log is followed too (its own lifecycle events come from addond).
    tmux.wait("the event log's entries", 10, |s| s.contains("event #") && s.contains("from addond"));

    // Quit: exit status 0 and the terminal left the alternate screen (the pane's shell
    // records the status, then idles so tmux still has the pane to look at).
    tmux.key("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if s.ends_with('\n') {
                break s.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "addond-tui did not exit:\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, "0", "exit status of addond-tui; screen:\n{}", tmux.screen());
    assert_eq!(tmux.format("#{alternate_on}"), "0");
    let s = tmux.screen();
    assert!(!s.contains("1:Services"), "the dashboard is still on the normal screen:\n{s}");

    // Cleanup through the API: every container goes.
    let ids = d.delete_all();
    assert!(d.ids.is_empty(), "services left: {:?}", d.ids);
    assert!(ids.len() >= 2, "{ids:?}");
    assert!(containers_of(&ids).is_empty(), "containers left: {:?}", containers_of(&ids));
}

/// A panic on any thread ends the program with the terminal restored: normal screen, raw
/// mode off, and the panic message readable.
#[test]
fn a_panic_restores_the_terminal() {
    ensure_tmux();
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    let stty = dir.path().join("stty");
    let tmux = Tmux::new("panic");
    tmux.start(&format!(
        "RUST_BACKTRACE=0 ADDOND_TUI_TEST_PANIC_MS=1500 {} --socket {}; echo $? > {}; stty -a > {}; exec sleep 600",
        tui_bin().display(),
        dir.path().join("none.sock").display(),
        status.display(),
        stty.display()
    ));
    tmux.wait("the dashboard", 10, |s| s.contains("1:Services") && s.contains("offline"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&stty).is_ok_and(|s| s.contains("icanon")) {
        assert!(Instant::now() < deadline, "no exit after the panic:\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "101");
    let modes = std::fs::read_to_string(&stty).unwrap();
    assert!(modes.split_whitespace().any(|w| w == "icanon") && modes.split_whitespace().any(|w| w == "echo"), "raw mode still on: {modes}");
    assert_eq!(tmux.format("#{alternate_on}"), "0");
    let s = tmux.screen();
    assert!(s.contains("test panic requested by ADDOND_TUI_TEST_PANIC_MS"), "{s}");
    assert!(!s.contains("1:Services"), "{s}");
}
