//! The daemon as a process: one per data dir, graceful stop that leaves addon containers
//! running for the next start to adopt, and a Docker engine that goes away and comes back.

use std::path::{Path, PathBuf};
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
    let before: Vec<String> = svc["instances"].as_array().unwrap().iter().map(|i| i["container_id"].as_str().unwrap().to_string()).collect();
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

/// A Unix-socket proxy in front of the Docker engine that a test can cut and restore.
struct DockerProxy {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl DockerProxy {
    fn start(path: &Path) -> DockerProxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        DockerProxy { path: path.to_path_buf(), task: Some(task) }
    }

    /// Cuts every connection and refuses new ones, like an engine that went away.
    async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
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
        .wait_for("survivor", 15, |s| s.is_some_and(|s| s["phase"] == "Started" && s["instances"][0]["health"] == "healthy" && s["instances"][0]["restarts"] == 1))
        .await
        .unwrap();
    assert_eq!(s["last_error"], serde_json::Value::Null);
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let charged: i64 = db.query_row("SELECT COUNT(*) FROM restart_failures", [], |r| r.get(0)).unwrap();
    assert_eq!(charged, 0, "a crash during a Docker outage must not count toward Failed");
    assert_eq!(d.get("/health").await.data()["docker"], "reachable");
}
