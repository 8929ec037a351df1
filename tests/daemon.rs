//! The daemon as a process: one per data dir, graceful stop that leaves addon containers
//! running for the next start to adopt, a Docker engine that goes away and comes back or
//! hangs, and a data dir whose disk fills up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_data_dir_is_refused_naming_the_first() {
    let d = Daemon::start().await;
    let pid = d.child.as_ref().unwrap().id();
    let out = std::process::Command::new(addond_bin()).arg("--config").arg(&d.config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert_eq!(d.get("/health").await.status, 200, "the first daemon must be unaffected");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leaves_containers_running_and_the_next_start_adopts_them() {
    let mut d = Daemon::start().await;
    let svc = d.create_started("keeper", json!({"replicas": 2})).await;
    let before: Vec<String> =
        svc["instances"].as_array().unwrap().iter().map(|i| i["container_id"].as_str().unwrap().to_string()).collect();
    // A request in flight when SIGTERM arrives is finished: a backup streaming 32 MiB.
    let big = d.data_dir().join("volumes/keeper/big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("blob.bin"), vec![7u8; 32 << 20]).unwrap();
    let mut stream = d.client.stream(addond::client::Method::POST, "/api/backup").await.unwrap();
    let mut archive = stream.next_chunk().await.unwrap().unwrap().to_vec();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.as_ref().unwrap().id() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(chunk) = stream.next_chunk().await {
        archive.extend_from_slice(&chunk.expect("the backup in flight is finished, not cut"));
    }
    let file = d.dir.path().join("inflight.tar");
    std::fs::write(&file, &archive).unwrap();
    let summary = addond::backup::inspect_archive(&file).expect("a complete, valid archive");
    assert!(summary.volume_bytes >= 32 << 20, "{summary:?}");
    let status = d.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "graceful exit expected, got {status}");
    assert!(!d.socket.exists(), "socket removed on graceful stop");
    // The database was closed cleanly: nothing left in the write-ahead log.
    let wal = d.data_dir().join("addond.db-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true), "WAL not checkpointed at stop");
    assert!(d.log().contains("stopping: finishing requests in flight"), "{}", tail(&d.log(), 20));
    for p in ports_of(&svc) {
        assert_eq!(http_get(p, "/health").await.map(|r| r.0), Some(200), "containers keep serving while the daemon is down");
    }
    d.spawn().await;
    let s = d.wait_for("keeper", 10, |s| s.is_some_and(|s| s["phase"] == "Started")).await.unwrap();
    let after: Vec<String> = s["instances"].as_array().unwrap().iter().map(|i| i["container_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(before, after, "the same containers are adopted, not recreated");
    assert!(s["instances"].as_array().unwrap().iter().all(|i| i["restarts"] == 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_outage_answers_503_keeps_the_api_up_and_charges_no_restart() {
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_path = proxy_dir.path().join("docker.sock");
    let mut proxy = DockerProxy::start(&proxy_path);
    let d = Daemon::start_with(Options { docker_host: format!("unix://{}", proxy_path.display()), ..Default::default() }).await;
    let svc = d.create_started("survivor", json!({})).await;
    let name = svc["instances"][0]["container_name"].as_str().unwrap().to_string();

    proxy.cut().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/health").await.data()["docker"] != "unreachable" {
        assert!(Instant::now() < deadline, "daemon never noticed Docker going away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the container dies while the daemon cannot see Docker
    docker().kill_container(&name, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    // read-only routes keep answering; Docker-dependent ones say why they cannot
    assert_eq!(d.get(SVC).await.status, 200);
    assert_eq!(d.get(&format!("{SVC}/survivor")).await.status, 200);
    let r = d.post(SVC, json!({"name": "during-outage", "image": IMAGE})).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "docker_unavailable");
    let r = d.post(&format!("{SVC}/survivor/restart"), json!({})).await;
    assert_eq!(r.body["error"]["code"], "docker_unavailable");
    let r = d.get(&format!("{SVC}/survivor/logs")).await;
    assert_eq!(r.body["error"]["code"], "docker_unavailable");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Docker comes back: the instance is restarted, and the restart is not charged.
    let _proxy2 = DockerProxy::start(&proxy_path);
    let s = d
        .wait_for("survivor", 15, |s| {
            s.is_some_and(|s| s["phase"] == "Started" && s["instances"][0]["health"] == "healthy" && s["instances"][0]["restarts"] == 1)
        })
        .await
        .unwrap();
    assert_eq!(s["last_error"], serde_json::Value::Null);
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let charged: i64 = db.query_row("SELECT COUNT(*) FROM restart_failures", [], |r| r.get(0)).unwrap();
    assert_eq!(charged, 0, "a crash during a Docker outage must not count toward Failed");
    assert_eq!(d.get("/health").await.data()["docker"], "reachable");
}

/// A proxy in front of the Docker engine that can start swallowing requests: from `hang()`
/// on, connections are accepted and kept open but nothing more is forwarded or answered,
/// like an engine that is stuck; `resume()` forwards new connections again.
struct HangingProxy {
    hang: Arc<tokio::sync::watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl HangingProxy {
    fn start(path: &Path) -> HangingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let hang = Arc::new(tokio::sync::watch::channel(false).0);
        let h = hang.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let mut hung = h.subscribe();
                tokio::spawn(async move {
                    let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await else { return };
                    let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
                    loop {
                        if *hung.borrow() {
                            // hold both ends open and never say anything again
                            std::future::pending::<()>().await;
                        }
                        tokio::select! {
                            n = client.read(&mut a) => match n {
                                Ok(n) if n > 0 && !*hung.borrow() => if engine.write_all(&a[..n]).await.is_err() { return },
                                Ok(n) if n > 0 => continue,
                                _ => return,
                            },
                            n = engine.read(&mut b) => match n {
                                Ok(n) if n > 0 && !*hung.borrow() => if client.write_all(&b[..n]).await.is_err() { return },
                                Ok(n) if n > 0 => continue,
                                _ => return,
                            },
                            _ = hung.changed() => {}
                        }
                    }
                });
            }
        });
        HangingProxy { hang, task }
    }

    fn hang(&self) {
        self.hang.send_replace(true);
    }

    fn resume(&self) {
        self.hang.send_replace(false);
    }
}

impl Drop for HangingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs a request and says how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t0 = Instant::now();
    let r = f.await;
    (r, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_docker_engine_is_reported_and_no_request_waits_on_it() {
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_path = proxy_dir.path().join("docker.sock");
    let proxy = HangingProxy::start(&proxy_path);
    let d = Daemon::start_with(Options { docker_host: format!("unix://{}", proxy_path.display()), ..Default::default() }).await;
    d.create_started("steady", json!({})).await;

    proxy.hang();
    // Before the daemon has noticed, a call that needs Docker's answer is bounded by the
    // per-call deadline, not by docker.timeout_seconds (120 s).
    let (r, took) = timed(tokio::time::timeout(Duration::from_secs(15), d.get(&format!("{SVC}/steady/logs")))).await;
    let r = r.unwrap_or_else(|_| panic!("logs still waiting on a hung engine after {took:?}"));
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "docker_unavailable");
    assert!(took < Duration::from_secs(7), "logs waited {took:?} on a hung engine");
    eprintln!("logs answered 503 after {took:?} on a hung engine");
    // /health says so within a few seconds
    let t0 = Instant::now();
    loop {
        let h = d.get("/health").await;
        if h.data()["docker"] == "unresponsive" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(8), "still {:?} after {:?}", h.data()["docker"], t0.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("unresponsive noticed after {:?}", t0.elapsed());
    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8_lossy(&raw.body);
    assert!(text.contains("addond_docker_up 0"), "{text}");
    assert!(text.contains("addond_docker_state{state=\"unresponsive\"} 1"), "{text}");
    // calls that need Docker's answer: 503 at once
    for path in [format!("{SVC}/steady/logs"), format!("{SVC}/steady/metrics")] {
        let (r, took) = timed(d.get(&path)).await;
        assert_eq!(r.status, 503, "{path}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "docker_unavailable", "{path}");
        assert!(r.body["error"]["message"].as_str().unwrap().contains("not answering"), "{path}: {:?}", r.body);
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
        eprintln!("{path} answered 503 in {took:?}");
    }
    // lifecycle requests record the desired state and answer at once; the reconciler acts
    // when the engine answers again
    let (r, took) = timed(d.post(&format!("{SVC}/steady/scale"), json!({"replicas": 2}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(took < Duration::from_millis(1500), "scale took {took:?}");
    eprintln!("scale answered in {took:?}");
    assert_eq!(d.service("steady").await.unwrap()["replicas"], 2);
    let (r, took) = timed(d.post(SVC, json!({"name": "queued", "image": IMAGE}))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(took < Duration::from_millis(1500), "create took {took:?}");
    eprintln!("create answered in {took:?}");
    assert_eq!(d.service("queued").await.unwrap()["phase"], "Creating");
    // the running instance keeps serving and stays healthy meanwhile
    assert_eq!(d.service("steady").await.unwrap()["instances"][0]["health"], "healthy");

    proxy.resume();
    // generous: a loaded machine slows Docker down, and speed is not the point here
    d.wait_for("steady", 120, |s| {
        s.is_some_and(|s| {
            s["phase"] == "Started" && s["instances"].as_array().unwrap().iter().filter(|i| i["health"] == "healthy").count() == 2
        })
    })
    .await;
    d.wait_for("queued", 120, |s| s.is_some_and(|s| s["phase"] == "Started")).await;
    assert_eq!(d.get("/health").await.data()["docker"], "reachable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_started_on_a_hung_engine_comes_up_and_says_so() {
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_path = proxy_dir.path().join("docker.sock");
    let proxy = HangingProxy::start(&proxy_path);
    proxy.hang();
    let t0 = Instant::now();
    let d = Daemon::start_with(Options {
        docker_host: format!("unix://{}", proxy_path.display()),
        wait_for_docker: false,
        ..Default::default()
    })
    .await;
    // serving within the probe's deadline, not after docker.timeout_seconds
    assert!(t0.elapsed() < Duration::from_secs(10), "came up after {:?}", t0.elapsed());
    assert_eq!(d.get("/health").await.data()["docker"], "unresponsive");
    let (r, took) = timed(d.post(SVC, json!({"name": "early", "image": IMAGE}))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(took < Duration::from_millis(1500), "create took {took:?}");
    proxy.resume();
    // generous: a loaded machine slows Docker down, and speed is not the point here
    d.wait_for("early", 120, |s| s.is_some_and(|s| s["phase"] == "Started")).await;
    assert_eq!(d.get("/health").await.data()["docker"], "reachable");
}

/// A tmpfs mounted over a test daemon's data dir, unmounted (and removed) when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Moves a (stopped) daemon's data dir onto a fresh tmpfs of `bytes`.
    fn mount(data: &Path, bytes: u64) -> SmallDisk {
        let _ = std::fs::remove_dir_all(data);
        std::fs::create_dir_all(data).unwrap();
        let st =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"]).arg(data).status().unwrap();
        assert!(st.success(), "mount a tmpfs (the tests run as root)");
        SmallDisk(data.to_path_buf())
    }

    /// Fills the disk to the last byte; returns the file holding it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("fill.bin");
        let mut f = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 512, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        // The daemon's temp dir could not remove the mount point while it was mounted.
        if let Some(parent) = self.0.parent().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("addond-test-"))) {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// A daemon whose data dir is a 16 MiB tmpfs (`SmallDisk` is declared first, so it is
/// unmounted after the daemon is gone).
async fn daemon_on_small_disk(disk: &mut Option<SmallDisk>) -> Daemon {
    let mut d = Daemon::start().await;
    d.kill9();
    *disk = Some(SmallDisk::mount(&d.data_dir(), 16 << 20));
    d.spawn().await;
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_507_naming_the_data_dir_and_the_free_space() {
    let mut disk = None;
    let d = daemon_on_small_disk(&mut disk).await;
    let fill = disk.as_ref().unwrap().fill();
    let r = d.post(SVC, json!({"name": "nospace", "image": IMAGE})).await;
    assert_eq!(r.status, 507, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "insufficient_storage");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&d.data_dir().display().to_string()) && msg.contains("free"), "{msg}");
    // reads keep answering
    assert_eq!(d.get(SVC).await.status, 200);
    assert_eq!(d.get("/health").await.status, 200);
    std::fs::remove_file(fill).unwrap();
    let r = d.post(SVC, json!({"name": "nospace", "image": IMAGE, "replicas": 0})).await;
    assert_eq!(r.status, 201, "once space is freed the same request goes through: {:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_lost_to_a_full_disk_is_written_once_space_is_freed() {
    let mut disk = None;
    let d = daemon_on_small_disk(&mut disk).await;
    // Healthy only 3 s after it starts (and not judged before 30 s): the disk fills while
    // the service is Starting.
    let r = d.post(SVC, json!({"name": "late", "image": IMAGE, "environment": {"SAMPLE_HEALTH_DELAY_MS": "3000"}, "health_check": {"start_period": 30}})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // The phase too: the pass that created the container wrote `Creating`, and the next
    // one writes `Starting`; a disk filled between the two would keep `Creating`.
    let s =
        d.wait_for("late", 20, |s| s.is_some_and(|s| s["phase"] == "Starting" && s["instances"][0]["health"] == "starting")).await.unwrap();
    let port = s["instances"][0]["host_port"].as_u64().unwrap() as u16;
    let fill = disk.as_ref().unwrap().fill();
    // the instance turns healthy while nothing can be written
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(port, "/health").await.map(|r| r.0) != Some(200) || !d.log().contains("cannot record health") {
        assert!(Instant::now() < deadline, "the verdict was never attempted; log:\n{}", tail(&d.log(), 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.service("late").await.unwrap()["phase"], "Starting");
    std::fs::remove_file(fill).unwrap();
    let t0 = Instant::now();
    d.wait_for("late", 10, |s| s.is_some_and(|s| s["phase"] == "Started" && s["instances"][0]["health"] == "healthy")).await;
    eprintln!("caught up {:?} after the space was freed", t0.elapsed());
}
