//! addond as a system service: systemd notifications against a notify socket the test
//! binds (readiness, status, watchdog and its stop when the loop stalls, reload, stop),
//! SIGHUP reloads, backup → wipe → restore with a running service, the doctor, the unit's
//! exposure score, and the .deb/.rpm packages built, linted, installed and purged here.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use serde_json::json;

use crate::common::*;

// ---- a notify socket ---------------------------------------------------------------

/// The service manager's side of `sd_notify`: a datagram socket and a thread that hands
/// every message over with the moment it arrived.
struct NotifySocket {
    path: PathBuf,
    rx: mpsc::Receiver<(Instant, String)>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if tx.send((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                        // the receiver went away: stop
                        if tx.send((Instant::now(), String::new())).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        NotifySocket { path, rx, _dir: dir }
    }

    /// Waits for a message containing `what`, returning it and everything before it.
    fn wait_for(&self, what: &str, secs: u64) -> (Instant, String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no `{what}` within {secs}s; got {before:?}");
            if let Ok((at, msg)) = self.rx.recv_timeout(left) {
                if msg.is_empty() {
                    continue;
                }
                if msg.lines().any(|l| l.starts_with(what)) {
                    return (at, msg, before);
                }
                before.push(msg);
            }
        }
    }

    /// Every message received during `d`, with its arrival time.
    fn collect(&self, d: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok((at, msg)) = self.rx.recv_timeout(left) {
                if !msg.is_empty() {
                    out.push((at, msg));
                }
            }
        }
        out
    }
}

/// Starts the daemon process like the harness does, with extra environment and without
/// waiting for it: the test decides what "up" means.
fn spawn_raw(d: &mut Daemon, env: &[(&str, &str)]) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.log_path()).unwrap();
    let mut cmd = Command::new(addond_bin());
    cmd.arg("--config").arg(&d.config).env_remove("RUST_LOG").env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    d.child = Some(cmd.spawn().expect("spawn addond"));
}

fn signal(d: &Daemon, sig: i32) {
    let pid = d.child.as_ref().expect("daemon running").id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, sig) };
}

async fn wait_log(d: &Daemon, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !d.log().contains(needle) {
        assert!(Instant::now() < deadline, "log never said `{needle}`:\n{}", tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

// ---- readiness, status, watchdog, reload, stop ------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn notify_ready_only_when_serving_then_watchdog_status_reload_and_stop() {
    // A first run makes the database and a service, then stops gracefully.
    let mut d = Daemon::start().await;
    let svc = d.create_started("ready-probe", json!({})).await;
    let container = svc["instances"][0]["container_id"].as_str().unwrap().to_string();
    assert!(d.terminate().success());
    let wal = d.data_dir().join("addond.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "a graceful stop leaves no WAL to replay");
    assert!(d.log().contains("database checkpointed"), "debug log of the first run (RUST_LOG=addond=debug)");

    // A stray container with this daemon's label: the first resync removes it, so seeing it
    // gone at READY proves READY came after the resync.
    let daemon_id = d.daemon_id().unwrap();
    let stray = format!("addond-stray-{}", &daemon_id[..8]);
    let labels = HashMap::from([
        ("addond.managed".to_string(), "true".to_string()),
        ("addond.daemon".to_string(), daemon_id.clone()),
        ("addond.service".to_string(), "svc_000000000000".to_string()),
    ]);
    let body = bollard::models::ContainerCreateBody { image: Some(IMAGE.into()), labels: Some(labels), ..Default::default() };
    docker().create_container(Some(CreateContainerOptions { name: Some(stray.clone()), ..Default::default() }), body).await.unwrap();

    let notify = NotifySocket::bind();
    let notify_path = notify.path.display().to_string();
    spawn_raw(
        &mut d,
        &[("NOTIFY_SOCKET", &notify_path), ("WATCHDOG_USEC", "600000"), ("ADDOND_DEBUG_HOOKS", "1"), ("ADDOND_DEBUG_STALL_MS", "2000")],
    );
    let (_, ready, before) = notify.wait_for("READY=1", 30);
    // Right at READY: the socket serves, the stray is gone, the database is migrated.
    let health = d.client.get("/health").await.expect("the admin socket serves at READY");
    assert_eq!(health.status, 200);
    let gone = docker().inspect_container(&stray, None::<bollard::query_parameters::InspectContainerOptions>).await.is_err();
    if !gone {
        let _ = docker().remove_container(&stray, Some(RemoveContainerOptions { force: true, ..Default::default() })).await;
    }
    assert!(gone, "READY was sent before the first resync removed the stray container");
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, addond::store::Store::known_schema_version());
    drop(db);
    // The way there was reported, and READY carries the counts.
    let steps = before.join("\n");
    for s in ["STATUS=opening the database", "STATUS=probing Docker", "STATUS=adopting containers"] {
        assert!(steps.contains(s), "missing `{s}` before READY: {before:?}");
    }
    assert!(ready.contains("STATUS=1 services (1 started") && ready.contains("Docker reachable"), "{ready}");
    // The container was adopted, not recreated.
    let s = d.wait_for("ready-probe", 10, |s| s.is_some_and(|s| s["phase"] == "Started")).await.unwrap();
    assert_eq!(s["instances"][0]["container_id"], container.as_str());

    // Watchdog: WATCHDOG_USEC=600ms → a ping about every 300 ms.
    let pings: Vec<Instant> =
        notify.collect(Duration::from_millis(1600)).into_iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| t).collect();
    assert!(pings.len() >= 4, "expected a ping every ~300ms, got {}", pings.len());
    assert!(
        pings.windows(2).all(|w| w[1] - w[0] < Duration::from_millis(600)),
        "gaps: {:?}",
        pings.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    );

    // A status change is reported without being asked: scale the service.
    let r = d.post(&format!("{SVC}/ready-probe/scale?wait=started&timeout=60"), json!({"replicas": 2})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    notify.wait_for("STATUS=1 services (1 started, 0 failed, 0 stopped, 0 changing), 2/2 instances healthy", 15);

    // Stall the main loop's database (debug hook): the pings stop, then resume.
    #[cfg(debug_assertions)]
    {
        let _ = notify.collect(Duration::from_millis(50));
        let sent = Instant::now();
        signal(&d, libc::SIGUSR1);
        let msgs = notify.collect(Duration::from_millis(3500));
        let pings: Vec<Duration> = msgs.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| t.saturating_duration_since(sent)).collect();
        let gap =
            pings.iter().zip(pings.iter().skip(1)).map(|(a, b)| *b - *a).chain(pings.first().copied()).max().unwrap_or(Duration::ZERO);
        assert!(gap >= Duration::from_millis(1500), "pings went on while the database was held: {pings:?}");
        assert!(pings.last().is_some_and(|t| *t >= Duration::from_millis(2000)), "pings did not resume: {pings:?}");
        assert!(d.log().contains("not feeding the watchdog"), "{}", tail(&d.log(), 20));
    }

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC) … READY=1; the log level is live.
    let cfg = std::fs::read_to_string(&d.config).unwrap().replace("log_level = \"debug\"", "log_level = \"info\"");
    std::fs::write(&d.config, cfg).unwrap();
    signal(&d, libc::SIGHUP);
    let (t_reload, reloading, _) = notify.wait_for("RELOADING=1", 10);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let (t_ready, _, _) = notify.wait_for("READY=1", 10);
    assert!(t_ready >= t_reload);
    wait_log(&d, "configuration reloaded changed=daemon.log_level", 10).await;

    // SIGTERM: STOPPING=1, a clean exit, and (level now info) no debug line at the end.
    let debug_lines_before = count(&d.log(), "database checkpointed");
    signal(&d, libc::SIGTERM);
    notify.wait_for("STOPPING=1", 10);
    let status = d.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    let log = d.log();
    assert!(log.contains("addond stopped"));
    assert_eq!(count(&log, "database checkpointed"), debug_lines_before, "debug lines after the reload to info");
    // The containers kept running.
    let running = d.containers().await;
    assert_eq!(running.values().filter(|r| **r).count(), 2, "{running:?}");
}

// ---- journald ------------------------------------------------------------------------------

/// Parses one datagram of journald's native protocol (`KEY=value\n`, or `KEY\n` + a
/// little-endian u64 length + the bytes + `\n`).
fn journal_fields(mut b: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|c| *c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|c| *c == b'=') {
            out.insert(String::from_utf8_lossy(&line[..eq]).into_owned(), String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn under_systemd_logs_go_to_the_journal_with_structured_fields() {
    let mut d = Daemon::start().await;
    assert!(d.terminate().success());
    // A stand-in journal: our datagram socket, bind-mounted over /run/systemd/journal/socket
    // in a mount namespace of the daemon's own (the host's /run is not touched).
    let jdir = tempfile::tempdir().unwrap();
    let jsock = jdir.path().join("journal.sock");
    let journal = UnixDatagram::bind(&jsock).unwrap();
    journal.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.log_path()).unwrap();
    let meta = log.metadata().unwrap();
    let before = d.log();
    let script = format!(
        "mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && touch /run/systemd/journal/socket \
         && mount --bind {} /run/systemd/journal/socket && exec {} --config {}",
        jsock.display(),
        addond_bin(),
        d.config.display()
    );
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    d.child = Some(child);
    let mut buf = vec![0u8; 1 << 16];
    let ready = loop {
        let n = journal.recv(&mut buf).unwrap_or_else(|e| panic!("no journal entry: {e}; stderr:\n{}", tail(&d.log(), 20)));
        let f = journal_fields(&buf[..n]);
        if f.get("MESSAGE").map(String::as_str) == Some("addond ready") {
            break f;
        }
    };
    assert_eq!(ready["PRIORITY"], "6", "info is priority 6: {ready:?}");
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "addond");
    assert_eq!(ready["TARGET"], "addond::daemon");
    assert!(ready.contains_key("CODE_FILE") && ready.contains_key("CODE_LINE"), "{ready:?}");
    assert_eq!(ready["ADDOND_SOCKET"], d.socket.display().to_string(), "event fields become ADDOND_<FIELD>: {ready:?}");
    assert!(ready["ADDOND_STATUS"].contains("services"), "{ready:?}");
    // Nothing of it went to stderr as text.
    assert_eq!(count(&d.log(), "addond ready"), count(&before, "addond ready"), "{}", tail(&d.log(), 10));
    assert_eq!(d.client.get("/health").await.unwrap().status, 200);
    signal(&d, libc::SIGTERM);
    assert!(d.child.take().unwrap().wait().unwrap().success());
}

// ---- SIGHUP --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_live_keys_and_refuses_a_reload_that_changes_others() {
    let d = Daemon::start().await;
    async fn health_of(d: &Daemon, name: &str) -> serde_json::Value {
        let r = d.post(SVC, json!({"name": name, "image": IMAGE, "replicas": 0})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.data()["health_check"].clone()
    }
    assert_eq!(health_of(&d, "before-reload").await["interval"], 1.0);

    // Live keys: the health defaults of new services and the resync period.
    let original = std::fs::read_to_string(&d.config).unwrap();
    let live = original
        .replace("interval_seconds = 1.0\ntimeout_seconds = 1.0\nretries = 2", "interval_seconds = 7.0\ntimeout_seconds = 1.0\nretries = 5")
        .replace("[reconcile]\ninterval_seconds = 2.0", "[reconcile]\ninterval_seconds = 3.0");
    assert_ne!(live, original, "the harness config changed; update this test");
    std::fs::write(&d.config, &live).unwrap();
    signal(&d, libc::SIGHUP);
    wait_log(&d, "configuration reloaded changed=health.interval_seconds,health.retries,reconcile.interval_seconds", 10).await;
    let hc = health_of(&d, "after-reload").await;
    assert_eq!((hc["interval"].as_f64(), hc["retries"].as_i64()), (Some(7.0), Some(5)), "{hc}");

    // A non-live key in the same file: the whole reload is refused, the live keys stay.
    let mixed = live
        .replace("interval_seconds = 7.0", "interval_seconds = 9.0")
        .replace(&format!("range_end = {}", d.ports.1), &format!("range_end = {}", d.ports.1 - 1));
    std::fs::write(&d.config, &mixed).unwrap();
    signal(&d, libc::SIGHUP);
    wait_log(&d, "reload refused: ports.range_end cannot change while addond runs", 10).await;
    assert!(!d.log().contains("health.interval_seconds cannot change"), "live keys are not named as refused");
    assert_eq!(health_of(&d, "after-refusal").await["interval"], 7.0);

    // An invalid file: kept running on the old config, the key named.
    std::fs::write(&d.config, live.replace("retries = 5", "retries = 0")).unwrap();
    signal(&d, libc::SIGHUP);
    wait_log(&d, "the new configuration is invalid", 10).await;
    assert!(d.log().contains("health.retries"), "{}", tail(&d.log(), 5));
    assert_eq!(d.get("/health").await.status, 200);
    assert_eq!(health_of(&d, "after-invalid").await["retries"], 5);
}

// ---- backup and restore -------------------------------------------------------------------

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_wipe_restore_round_trip_with_a_running_service() {
    let mut d = Daemon::start().await;
    let svc = d.create_started("vault", json!({"volumes": ["./files:/files"]})).await;
    let id = svc["id"].as_str().unwrap().to_string();
    let container = svc["instances"][0]["container_id"].as_str().unwrap().to_string();
    // Volume content owned by the sandbox user, private to it.
    let vol = d.data_dir().join("volumes/vault/files");
    std::fs::create_dir_all(vol.join("nested")).unwrap();
    std::fs::write(vol.join("nested/secret.txt"), b"kept across the restore").unwrap();
    std::fs::set_permissions(vol.join("nested/secret.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(vol.join("nested/secret.txt"), Some(65534), Some(65534)).unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("addond.tar");
    let o = ctl_at(&d.socket, &["backup", file.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 service(s)"), "{}", text(&o));
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600, "a backup holds secrets: 0600");
    assert!(!out_dir.path().join("addond.tar.partial").exists());
    let summary = addond::backup::inspect_archive(&file).unwrap();
    assert_eq!(summary.manifest.daemon_id, d.daemon_id().unwrap());
    assert!(summary.volume_entries >= 3, "{summary:?}");
    assert!(d.get("/api/audit?limit=5").await.body.to_string().contains("/api/backup"), "backups are audited");

    // Changes after the backup are undone by the restore.
    let later = d.create_started("after-backup", json!({})).await;
    let later_container = later["instances"][0]["container_name"].as_str().unwrap().to_string();

    // A restore is refused while the daemon runs.
    let cfg = d.config.to_str().unwrap().to_string();
    let o = ctl_at(&d.socket, &["restore", file.to_str().unwrap(), "--config", &cfg], None);
    assert!(!o.status.success() && text(&o).contains("addond is running"), "{}", text(&o));

    // Stop (containers keep running), wipe the data directory, restore, start.
    assert!(d.terminate().success());
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    let o = ctl_at(&d.socket, &["restore", file.to_str().unwrap(), "--config", &cfg], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("restored"), "{}", text(&o));
    let restored = vol.join("nested/secret.txt");
    assert_eq!(std::fs::read(&restored).unwrap(), b"kept across the restore");
    let meta = std::fs::metadata(&restored).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (65534, 65534, 0o600), "owner and mode restored");

    d.spawn().await;
    let s = d.wait_for("vault", 15, |s| s.is_some_and(|s| s["phase"] == "Started")).await.unwrap();
    assert_eq!(s["id"], id.as_str(), "the same service, by id");
    assert_eq!(s["instances"][0]["container_id"], container.as_str(), "its running container was adopted");
    assert!(d.service("after-backup").await.is_none(), "a service created after the backup is not in it");
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.containers().await.contains_key(&later_container) {
        assert!(Instant::now() < deadline, "the container of the service made after the backup was not removed as a stray");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = s["instances"][0]["host_port"].as_u64().unwrap() as u16;
    assert_eq!(http_get(p, "/health").await.map(|r| r.0), Some(200));

    // A backup from a newer addond (schema above ours) is refused, and nothing is touched.
    let newer = out_dir.path().join("newer.tar");
    rewrite_manifest(&file, &newer, |m| {
        m["schema_version"] = json!(addond::store::Store::known_schema_version() + 1);
        m["addond_version"] = json!("99.0.0");
    });
    assert!(d.terminate().success());
    let o = ctl_at(&d.socket, &["restore", newer.to_str().unwrap(), "--config", &cfg], None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("newer addond") && text(&o).contains("99.0.0"), "{}", text(&o));
    assert!(d.data_dir().join("addond.db").exists());
    d.spawn().await;
    assert!(d.service("vault").await.is_some());
}

/// Copies an archive, changing its manifest with `f`.
fn rewrite_manifest(src: &Path, dst: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut ar = tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    let mut f = Some(f);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut header = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if e.path().unwrap() == Path::new(addond::backup::MANIFEST_NAME) {
            let mut m: serde_json::Value = serde_json::from_slice(&data).unwrap();
            (f.take().unwrap())(&mut m);
            data = serde_json::to_vec(&m).unwrap();
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        b.append(&header, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

// ---- doctor -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_each_finding_with_a_fix_and_fails_when_something_is_wrong() {
    let mut d = Daemon::start().await;
    // Another program listening inside the daemon's port range.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", d.ports.1)).unwrap();
    let cfg = d.config.to_str().unwrap().to_string();
    let o = ctl_at(&d.socket, &["--json", "doctor", "--config", &cfg], None);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let by = |check: &str| findings.iter().filter(|f| f["check"] == check).cloned().collect::<Vec<_>>();
    for check in ["config", "daemon", "socket", "docker", "ports", "disk", "database"] {
        assert!(!by(check).is_empty(), "no `{check}` finding: {findings:#?}");
    }
    assert_eq!(by("daemon")[0]["level"], "ok");
    assert_eq!(by("docker")[0]["level"], "ok");
    assert_eq!(by("database")[0]["level"], "ok", "{findings:#?}");
    let ports = &by("ports")[0];
    assert_eq!(ports["level"], "warn");
    assert!(ports["message"].as_str().unwrap().contains(&d.ports.1.to_string()), "{ports}");
    assert!(ports["fix"].as_str().unwrap().contains("range"), "{ports}");
    // Warnings alone pass.
    let failed: Vec<_> = findings.iter().filter(|f| f["level"] == "fail").collect();
    assert_eq!(o.status.success(), failed.is_empty(), "{}", text(&o));
    drop(squatter);

    // The daemon down: the doctor fails, says so with a fix, and checks the database itself.
    assert!(d.terminate().success());
    let o = ctl_at(&d.socket, &["doctor", "--config", &cfg], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("addond is not running") && t.contains("fix: start it"), "{t}");
    assert!(t.contains("(checked directly)"), "{t}");

    // A damaged database is found and the fix names the restore.
    let db = d.data_dir().join("addond.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    for b in bytes.iter_mut().skip(page * 2).take(page) {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let o = ctl_at(&d.socket, &["doctor", "--config", &cfg], None);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  database") && t.contains("addonctl restore"), "{t}");
}

// ---- the unit --------------------------------------------------------------------------------

fn ensure_apt(cmd: &str, package: &str) {
    if Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().unwrap().status.success() {
        return;
    }
    let run = |args: &[&str]| Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status().unwrap().success();
    if !run(&["install", "-y", "-qq", "--no-install-recommends", package]) {
        assert!(run(&["update", "-qq"]) && run(&["install", "-y", "-qq", "--no-install-recommends", package]), "cannot install {package}");
    }
}

#[test]
fn unit_exposure_is_at_most_two() {
    ensure_apt("systemd-analyze", "systemd");
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/addond.service");
    let out = Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for addond.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=addond",
        "RuntimeDirectory=addond",
        "ConfigurationDirectory=addond",
        "User=addond",
        "Group=addond",
        "SupplementaryGroups=docker",
        "LimitNOFILE=",
    ] {
        assert!(unit_text.lines().any(|l| l.starts_with(line)), "unit lacks {line}");
    }
}

// ---- packages --------------------------------------------------------------------------------

fn sh(cmd: &str) -> (bool, String) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "`{cmd}` failed:\n{out}");
    out
}

/// Purges the package (data included) however the test ends.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = sh("ADDOND_PURGE_DATA=yes dpkg -P addond >/dev/null 2>&1");
    }
}

fn mode_owner(path: &str) -> (u32, String, String) {
    let out = must(&format!("stat -c '%a %U %G' {path}"));
    let mut it = out.split_whitespace();
    (u32::from_str_radix(it.next().unwrap(), 8).unwrap(), it.next().unwrap().into(), it.next().unwrap().into())
}

/// Every page the packages ship (addond(8), addonctl(1) and each of its subcommands,
/// addond-tui(1), addond.toml(5)) has the sections a man page is expected to have, and
/// groff reads each without a warning. addond.toml(5) has every section of the example
/// config; addond-tui(1) has its keys.
#[test]
fn man_pages_have_the_standard_sections() {
    ensure_apt("groff", "groff-base");
    let target_dir = package_target_dir();
    let dir = tempfile::tempdir().unwrap();
    let (m1, m5, m8) = (dir.path().join("man1"), dir.path().join("man5"), dir.path().join("man8"));
    let run = |bin: PathBuf, args: &[&std::ffi::OsStr]| {
        let o = Command::new(&bin).args(args).output().unwrap();
        assert!(o.status.success(), "{} {args:?}: {o:?}", bin.display());
        String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect::<Vec<_>>()
    };
    let mut pages = run(PathBuf::from(addond_bin()), &["generate-man".as_ref(), m8.as_os_str(), "--man5".as_ref(), m5.as_os_str()]);
    pages.extend(run(PathBuf::from(addonctl_bin()), &["generate-man".as_ref(), m1.as_os_str()]));
    pages.extend(run(target_dir.join("debug/addond-tui"), &["generate-man".as_ref(), m1.as_os_str()]));
    for name in ["man8/addond.8", "man5/addond.toml.5", "man1/addonctl.1", "man1/addonctl-services-create.1", "man1/addond-tui.1"] {
        assert!(pages.contains(&dir.path().join(name)), "{name} not written: {pages:?}");
    }
    for p in &pages {
        let text = std::fs::read_to_string(p).unwrap();
        let sections: Vec<&str> = if p.ends_with("addond.toml.5") {
            vec![".SH NAME", ".SH DESCRIPTION", ".SH FILES", ".SH \"SEE ALSO\""]
        } else {
            vec![
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH \"FILES\"",
                ".SH \"ENVIRONMENT\"",
                ".SH \"EXIT STATUS\"",
                ".SH \"SIGNALS\"",
                ".SH \"SEE ALSO\"",
            ]
        };
        for s in sections {
            assert!(text.lines().any(|l| l == s), "{} lacks {s}", p.display());
        }
        let o = Command::new("groff").args(["-k", "-man", "-ww", "-z"]).arg(p).output().unwrap();
        assert!(o.status.success() && o.stderr.is_empty(), "groff on {}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
    }
    let config = std::fs::read_to_string(m5.join("addond.toml.5")).unwrap();
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")).unwrap();
    for section in example.lines().filter(|l| l.starts_with('[')) {
        assert!(config.contains(&format!(".SS \"{section}\"")), "addond.toml.5 lacks {section}");
    }
    assert!(config.contains("\\fBimage_archive\\fR"), "addond.toml.5 lacks templates.image_archive");
    let tui = std::fs::read_to_string(m1.join("addond-tui.1")).unwrap();
    assert!(tui.contains(".SH \"KEYS\"") && tui.contains("\\fB?\\fR") && tui.contains("scale (asks for N)"), "{tui}");
    let addond = std::fs::read_to_string(m8.join("addond.8")).unwrap();
    assert!(addond.contains("\\fBSIGHUP\\fR") && addond.contains("addond.toml(5)"), "{addond}");
}

/// `scripts/package.sh` stages its files in one place (`target/dist/`): one run at a time.
static PACKAGING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The target dir this test run was built in, with the dashboard built too: the package
/// tests package these debug binaries.
fn package_target_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = Path::new(addond_bin()).parent().unwrap().parent().unwrap().to_path_buf();
    if repo.join("tui/Cargo.toml").exists() && !target_dir.join("debug/addond-tui").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo).args(["build", "-q", "-p", "addond-tui", "--bin", "addond-tui"]).current_dir(repo).status().unwrap();
        assert!(st.success());
    }
    target_dir
}

/// `--lint` on a machine that has never run the script: rpm, rpmlint, rpm2cpio and
/// lintian are hidden from its PATH and a stand-in apt-get "installs" each one asked for
/// (links the real one into that PATH), so the test sees what the script installs, and
/// that the linters then pass. The .rpm carries the project's URL (rpmlint `no-url-tag`).
#[test]
fn package_lint_installs_what_the_linters_need() {
    let _one = PACKAGING.lock().unwrap_or_else(|e| e.into_inner());
    ensure_apt("rpm", "rpm");
    ensure_apt("rpmlint", "rpmlint");
    ensure_apt("lintian", "lintian");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = package_target_dir();
    let shim = tempfile::tempdir().unwrap();
    let bin = shim.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let hidden = ["rpm", "rpmlint", "rpm2cpio", "lintian", "apt-get"];
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if hidden.iter().any(|h| name == *h) || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    let asked = shim.path().join("apt-get.log");
    let fake = format!(
        "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in -*|install|update) ;; *) echo \"$a\" >>{log}; ln -sf /usr/bin/$a {bin}/$a ;; esac; done\n",
        log = asked.display(),
        bin = bin.display()
    );
    std::fs::write(bin.join("apt-get"), fake).unwrap();
    std::fs::set_permissions(bin.join("apt-get"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(repo.join("scripts/package.sh"))
        .args(["--profile", "debug", "--no-build", "--lint", "--out"])
        .arg(out.path())
        .env("PATH", &bin)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let installed = std::fs::read_to_string(&asked).unwrap_or_default();
    assert!(
        o.status.success(),
        "scripts/package.sh --lint failed on a PATH without the linters (apt-get asked for: {installed:?}):\n{log}"
    );
    for p in ["lintian", "rpmlint", "rpm", "rpm2cpio"] {
        assert!(installed.lines().any(|l| l == p), "--lint did not install {p} (asked for {installed:?}):\n{log}");
    }
    let rpm = String::from_utf8_lossy(&o.stdout).lines().find(|l| l.ends_with(".rpm")).expect("an .rpm").to_string();
    let url = must(&format!("rpm -qp --qf '%{{URL}}' {rpm} 2>/dev/null"));
    assert!(url.starts_with("https://"), "the .rpm has no URL tag: {url:?}");
    assert!(!log.contains("no-url-tag"), "{log}");
    let deb = String::from_utf8_lossy(&o.stdout).lines().find(|l| l.ends_with(".deb")).expect("a .deb").to_string();
    assert!(must(&format!("dpkg-deb -f {deb} Homepage")).trim() == url, "the .deb's Homepage is not the .rpm's URL");
}

#[test]
fn deb_and_rpm_build_lint_install_and_purge_cleanly() {
    let _one = PACKAGING.lock().unwrap_or_else(|e| e.into_inner());
    let (installed, _) = sh("dpkg-query -W -f '${Status}' addond 2>/dev/null | grep -q 'install ok'");
    assert!(!installed, "the addond package is installed on this machine; this test installs and purges it, so run it elsewhere");
    assert!(!Path::new("/var/lib/addond/addond.db").exists(), "/var/lib/addond holds a database; not touching it");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = package_target_dir();
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(repo.join("scripts/package.sh"))
        .args(["--profile", "debug", "--no-build", "--lint", "--out"])
        .arg(out.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "scripts/package.sh --lint failed (lintian/rpmlint errors or a build problem):\n{log}");
    let made: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect();
    let deb = made.iter().find(|p| p.extension().is_some_and(|e| e == "deb")).expect("a .deb").display().to_string();
    let rpm = made.iter().find(|p| p.extension().is_some_and(|e| e == "rpm")).expect("an .rpm").display().to_string();
    assert!(!log.contains("\nE: "), "lintian errors:\n{log}");

    // The .rpm: contents, modes and owners, scriptlets, dependencies.
    ensure_apt("rpm", "rpm");
    let files = must(&format!("rpm -qlp {rpm} 2>/dev/null"));
    for f in [
        "/usr/sbin/addond",
        "/usr/bin/addonctl",
        "/usr/bin/addond-tui",
        "/etc/addond/config.toml",
        "/usr/lib/systemd/system/addond.service",
        "/usr/lib/sysusers.d/addond.conf",
        "/usr/lib/tmpfiles.d/addond.conf",
        "/usr/share/man/man8/addond.8.gz",
        "/usr/share/man/man1/addonctl.1.gz",
        "/usr/share/man/man1/addond-tui.1.gz",
        "/usr/share/man/man5/addond.toml.5.gz",
        "/usr/share/addond/addond-sample.tar.gz",
        "/usr/share/doc/addond/README.md",
        "/usr/share/doc/addond/config.example.toml",
        "/usr/share/doc/addond/openapi.json",
        "/usr/share/bash-completion/completions/addonctl",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} missing from the rpm:\n{files}");
    }
    let modes = must(&format!("rpm -qp --qf '[%{{FILEMODES:perms}} %{{FILEUSERNAME}}:%{{FILEGROUPNAME}} %{{FILEFLAGS:fflags}} %{{FILENAMES}}\\n]' {rpm} 2>/dev/null"));
    assert!(modes.lines().any(|l| l == "-rw-r----- root:addond cn /etc/addond/config.toml"), "{modes}");
    assert!(modes.lines().any(|l| l.starts_with("-rwxr-xr-x root:root") && l.ends_with("/usr/sbin/addond")), "{modes}");
    let scripts = must(&format!("rpm -qp --scripts {rpm} 2>/dev/null"));
    assert!(
        scripts.contains("useradd -r -g addond")
            && scripts.contains("systemctl enable --now addond.service")
            && scripts.contains("try-restart"),
        "{scripts}"
    );
    let requires = must(&format!("rpm -qp --requires {rpm} 2>/dev/null"));
    assert!(
        requires.contains("libsystemd.so.0") && requires.contains("(docker-ce or moby-engine or docker)") && requires.contains("nftables"),
        "{requires}"
    );

    // The .deb: metadata, then a real install on this machine.
    let info = must(&format!("dpkg-deb -f {deb} Depends Section"));
    assert!(info.contains("docker.io | docker-ce") && info.contains("libsystemd0") && info.contains("nftables"), "{info}");
    let _cleanup = Uninstall;
    // Docker may be installed without a package (static binaries): dpkg cannot see it then.
    let (docker_pkg, _) = sh("dpkg-query -W -f '${Status}' docker.io docker-ce 2>/dev/null | grep -q 'install ok'");
    let force = if docker_pkg { "" } else { "--force-depends" };
    must(&format!("dpkg -i {force} {deb}"));
    let user = must("getent passwd addond");
    assert!(user.contains(":/var/lib/addond:") && user.trim_end().ends_with("nologin"), "{user}");
    must("getent group addond");
    for (path, mode, owner, group) in [
        ("/usr/sbin/addond", 0o755, "root", "root"),
        ("/usr/bin/addonctl", 0o755, "root", "root"),
        ("/usr/bin/addond-tui", 0o755, "root", "root"),
        ("/etc/addond/config.toml", 0o640, "root", "addond"),
        ("/var/lib/addond", 0o750, "addond", "addond"),
        ("/usr/lib/systemd/system/addond.service", 0o644, "root", "root"),
        ("/usr/lib/sysusers.d/addond.conf", 0o644, "root", "root"),
        ("/usr/lib/tmpfiles.d/addond.conf", 0o644, "root", "root"),
        ("/usr/share/man/man8/addond.8.gz", 0o644, "root", "root"),
        ("/usr/share/man/man1/addonctl.1.gz", 0o644, "root", "root"),
        ("/usr/share/man/man5/addond.toml.5.gz", 0o644, "root", "root"),
        ("/usr/share/addond/addond-sample.tar.gz", 0o644, "root", "root"),
        ("/usr/share/doc/addond/README.md", 0o644, "root", "root"),
        ("/usr/share/doc/addond/config.example.toml", 0o644, "root", "root"),
        ("/usr/share/doc/addond/openapi.json", 0o644, "root", "root"),
        ("/usr/share/bash-completion/completions/addonctl", 0o644, "root", "root"),
    ] {
        assert_eq!(mode_owner(path), (mode, owner.to_string(), group.to_string()), "{path}");
    }
    assert!(must("dpkg-query -W -f '${Conffiles}' addond").contains("/etc/addond/config.toml"));
    // The archive the templates load (templates.image_archive's default) holds the image
    // templates.image names by default, in `docker load`'s format.
    let manifest = must("tar -xzOf /usr/share/addond/addond-sample.tar.gz manifest.json");
    assert!(manifest.contains("\"addond-sample:latest\""), "{manifest}");
    assert!(must("/usr/sbin/addond print-config").contains("image_archive = \"/usr/share/addond/addond-sample.tar.gz\""));
    assert!(Path::new("/etc/systemd/system/multi-user.target.wants/addond.service").exists(), "enabled on install");
    assert!(must("/usr/sbin/addond --version").contains(env!("CARGO_PKG_VERSION")));
    // The daemon's user can read its config (and the shipped config is valid).
    must("runuser -u addond -- /usr/sbin/addond check-config");
    let (ok, verify) = sh("systemd-analyze verify --man=no /usr/lib/systemd/system/addond.service");
    assert!(ok && !verify.contains("addond.service:"), "systemd-analyze verify:\n{verify}");
    std::fs::write("/var/lib/addond/operator-data", b"x").unwrap();

    // Remove keeps config and data; purge removes the config and keeps the data …
    must("dpkg -r addond");
    assert!(!Path::new("/usr/sbin/addond").exists());
    assert!(Path::new("/etc/addond/config.toml").exists(), "remove keeps the conffile");
    let purge = must("dpkg -P addond");
    assert!(!Path::new("/etc/addond").exists(), "purge removes /etc/addond");
    assert!(Path::new("/var/lib/addond/operator-data").exists(), "purge keeps the data unless asked");
    assert!(purge.contains("ADDOND_PURGE_DATA=yes"), "purge says how to remove the data: {purge}");
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/addond.service").exists(), "purge disables the unit");
    // … unless asked.
    must(&format!("dpkg -i {force} {deb}"));
    must("ADDOND_PURGE_DATA=yes dpkg -P addond");
    assert!(!Path::new("/var/lib/addond").exists(), "ADDOND_PURGE_DATA=yes removes the data");
    let (still, _) = sh("dpkg-query -W -f '${Status}' addond 2>/dev/null | grep -q 'install ok'");
    assert!(!still);
}
