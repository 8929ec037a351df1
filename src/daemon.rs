//! Assembles a running daemon from a config: the data-dir lock, the store, the Docker
//! runtime, the lifecycle and the admin socket, and owns their tasks from start to a
//! graceful stop. `addond`'s `main` only parses flags and calls [`run`].

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::addons::Addons;
use crate::api::{self, AppState, PeerPolicy};
use crate::metrics::Metrics;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::runtime::Runtime;
use crate::store::Store;

/// Holds `<data_dir>/addond.pid` locked for the daemon's lifetime; a second daemon on the
/// same data dir is refused with the first one's pid.
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join("addond.pid");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        bail!(
            "another addond (pid {}) is already using data dir {}; stop it first",
            pid.trim().parse::<u32>().map(|p| p.to_string()).unwrap_or_else(|_| "unknown".into()),
            data_dir.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(DataDirLock { _file: file, path })
}

/// Binds the admin socket: mode 0660, group from the config. A leftover socket file from a
/// crashed daemon is replaced; one that still answers belongs to a live daemon and is not.
fn bind_socket(cfg: &Config) -> anyhow::Result<(tokio::net::UnixListener, Option<u32>)> {
    let path = &cfg.daemon.socket_path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("socket {} is in use by another running daemon; stop it or set daemon.socket_path", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let group = api::group_id(&cfg.daemon.socket_group);
    match group {
        Some(gid) => {
            if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
                tracing::warn!(group = %cfg.daemon.socket_group, error = %e, "cannot give the socket to its group; only root and the daemon's user can use it");
            }
        }
        None => tracing::warn!(group = %cfg.daemon.socket_group, "socket group does not exist; only root and the daemon's user can use the socket"),
    }
    Ok((listener, group))
}

/// Runs the daemon until `shutdown` is cancelled. Addon containers keep running after it
/// returns; the next start adopts them.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let cfg = Arc::new(cfg);
    let _lock = lock_data_dir(&cfg.daemon.data_dir)?;
    let store = Store::open(&cfg.daemon.data_dir.join("addond.db")).await.context("cannot open the database")?;
    let daemon_id = store.daemon_id().await?;
    let runtime = Arc::new(Runtime::new(cfg.clone()));
    if !runtime.ping().await {
        tracing::warn!(docker = %cfg.docker.host, "Docker is not reachable; serving the API and retrying");
    }
    let lifecycle = Lifecycle::new(cfg.clone(), store, runtime, daemon_id, shutdown.clone());
    let (listener, group) = bind_socket(&cfg)?;
    // SAFETY: getuid cannot fail.
    let policy = PeerPolicy { daemon_uid: unsafe { libc::getuid() }, group };
    let addons = Addons::new(cfg.clone(), lifecycle.clone(), Arc::new(Metrics::default()));
    let app = api::router(AppState { lifecycle: lifecycle.clone(), addons: addons.clone(), started });
    tracing::info!(socket = %cfg.daemon.socket_path.display(), data_dir = %cfg.daemon.data_dir.display(), "addond ready");
    let lc_task = tokio::spawn(lifecycle.clone().run());
    let routes_task = tokio::spawn(addons.dispatcher.clone().follow_changes(shutdown.clone()));
    api::serve(listener, app, policy, shutdown.clone()).await;
    let _ = lc_task.await;
    let _ = routes_task.await;
    let _ = std::fs::remove_file(&cfg.daemon.socket_path);
    tracing::info!("addond stopped");
    Ok(())
}
