//! All SQL lives here, one file per area: `services` (services and instances), `addons`
//! (catalogue and installs), `builds` (image builds), `deployments` (the history of each addon
//! instance), `access` (applications, grants, audit), `events` (log, cursors, dead letters),
//! `tokens`, `kv`, `mcp_tools` (registered MCP tools), `schedules` (run records), `meta` and `ops` (the database
//! as a whole), and `migrations` (the schema). Each returns typed rows, never API shapes.
//! SQLite runs in WAL mode with foreign keys on; every call goes through `spawn_blocking`,
//! so no SQLite call ever blocks the async runtime. A method that changes something returns
//! only after its transaction committed, so a reply built from its result never announces
//! a change that a crash could undo.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Params, Row};

mod access;
mod addons;
mod builds;
mod deployments;
mod events;
mod kv;
mod mcp_tools;
mod meta;
mod migrations;
mod ops;
mod schedules;
mod services;
mod tokens;

pub use access::{ApplicationRow, AuditEntry, GrantRow};
pub use addons::{InstallRow, ManifestRow};
pub use builds::{BuildRow, BuiltManifest, Recorded};
pub use deployments::{DeploymentRow, NewDeployment};
pub use events::{Cursor, DeadLetter, EventRow, NewEvent};
pub use mcp_tools::McpToolRow;
pub use schedules::ScheduleRun;
pub use services::{NewInstance, NewService, RolloutCommit};
pub use tokens::TokenRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database integrity check failed: {0}")]
    Integrity(String),
    #[error("database schema version {found} is newer than this addond understands ({known}); upgrade addond")]
    TooNew { found: i64, known: i64 },
    #[error("a service named `{0}` already exists")]
    NameTaken(String),
    /// A lookup by display name matched several services.
    #[error("`{name}` is the name of several services ({}); name one by its id", ids.join(", "))]
    AmbiguousName {
        /// The display name looked up.
        name: String,
        /// The ids of the services that carry it.
        ids: Vec<String>,
    },
    #[error("an application named `{0}` already exists")]
    ApplicationNameTaken(String),
    /// An application already has a grant for this addon (`<application id> → <addon>`).
    #[error("a grant {0} already exists")]
    GrantTaken(String),
    #[error("host port {0} is already booked")]
    PortTaken(u16),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database task failed: {0}")]
    Join(String),
    /// SQLite could not grow its files: the disk holding the data directory is full.
    #[error("{}", disk_full_message(dir, *free, *total))]
    DiskFull {
        /// The directory holding the database (the daemon's data dir).
        dir: PathBuf,
        /// Bytes still free there for the daemon's user, when `statvfs` could tell.
        free: Option<u64>,
        /// The filesystem's size, when `statvfs` could tell.
        total: Option<u64>,
    },
}

fn disk_full_message(dir: &Path, free: Option<u64>, total: Option<u64>) -> String {
    let space = match (free, total) {
        (Some(f), Some(t)) => format!("{} free of {}", human_bytes(f), human_bytes(t)),
        (Some(f), None) => format!("{} free", human_bytes(f)),
        _ => "free space unknown".to_string(),
    };
    format!(
        "the disk holding the data directory {} is full ({space}); nothing was changed. Free space on that filesystem (or move daemon.data_dir to a larger one) and send the request again",
        dir.display()
    )
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Free bytes (for an unprivileged writer) and total bytes of the filesystem holding `dir`.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frsize = if st.fragment_size() > 0 { st.fragment_size() as u64 } else { st.block_size() as u64 };
    Some((st.blocks_available() as u64 * frsize, st.blocks() as u64 * frsize))
}

/// True for SQLite's "database or disk is full".
fn is_disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Sql(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Re-exported: the store stamps rows with it, and its callers reached it here first.
pub use crate::time::now_ms;

#[derive(Clone)]
pub struct Store {
    /// One connection: SQLite serialises writers anyway, and reads are short.
    conn: Arc<Mutex<Connection>>,
    /// The database file: its directory is where backups snapshot and where free space is measured.
    pub path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database, migrates it and checks its integrity.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || migrations::open_sync(&p)).await.map_err(|e| StoreError::Join(e.to_string()))??;
        Ok(Store { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

    /// Runs `f` on the connection off the async runtime; a full disk becomes
    /// [`StoreError::DiskFull`] with the space measured at that moment.
    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Join("database lock poisoned".into()))?;
            f(&mut guard).map_err(|e| {
                if !is_disk_full(&e) {
                    return e;
                }
                // Measured now, so the reply says how much is free at the moment it failed.
                let space = disk_space(&dir);
                StoreError::DiskFull { free: space.map(|s| s.0), total: space.map(|s| s.1), dir }
            })
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Runs one statement and answers how many rows it changed: the whole body of most
    /// writes. `params` is owned (a tuple or an array) because it crosses to the blocking pool.
    async fn exec<P>(&self, sql: &'static str, params: P) -> Result<usize, StoreError>
    where
        P: Params + Send + 'static,
    {
        self.call(move |c| Ok(c.prepare_cached(sql)?.execute(params)?)).await
    }

    /// Runs one query and maps every row with `row`: the whole body of most listings.
    async fn query<T, P>(&self, sql: &'static str, params: P, row: fn(&Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        P: Params + Send + 'static,
    {
        self.call(move |c| {
            let mut st = c.prepare_cached(sql)?;
            let rows = st.query_map(params, row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

#[cfg(test)]
mod tests {
    use super::migrations::MIGRATIONS;
    use super::*;
    use crate::config::Config;
    use crate::model::{CreateRequest, Desired, Phase, ServiceId, ServiceSpec};

    fn spec(name: &str) -> ServiceSpec {
        let req: CreateRequest = serde_json::from_value(serde_json::json!({"name": name, "image": "img:1"})).unwrap();
        req.validate(&Config::default()).unwrap().0
    }

    #[tokio::test]
    async fn migrate_insert_scale_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        let id = ServiceId::generate();
        let s = store
            .insert_service(
                id.clone(),
                spec("a"),
                1,
                Desired::Started,
                Phase::Creating,
                vec![NewInstance { ordinal: 0, host_port: 8000 }],
                None,
            )
            .await
            .unwrap();
        assert_eq!(s.instances.len(), 1);
        assert_eq!(store.get_service("a").await.unwrap().unwrap().id, id);
        // name and port uniqueness
        let dup = store.insert_service(ServiceId::generate(), spec("a"), 0, Desired::Started, Phase::Creating, vec![], None).await;
        assert!(matches!(dup, Err(StoreError::NameTaken(_))));
        let dup = store
            .insert_service(
                ServiceId::generate(),
                spec("b"),
                1,
                Desired::Started,
                Phase::Creating,
                vec![NewInstance { ordinal: 0, host_port: 8000 }],
                None,
            )
            .await;
        assert!(matches!(dup, Err(StoreError::PortTaken(8000))));
        assert!(store.get_service("b").await.unwrap().is_none(), "failed insert must roll back");
        let s = store
            .scale(&id, 3, vec![NewInstance { ordinal: 1, host_port: 8001 }, NewInstance { ordinal: 2, host_port: 8002 }])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.instances.len(), 3);
        let s = store.scale(&id, 1, vec![]).await.unwrap().unwrap();
        assert_eq!(s.instances.iter().filter(|i| i.wanted).count(), 1);
        assert_eq!(store.booked_ports().await.unwrap().len(), 3);
        store.delete_service(&id).await.unwrap();
        assert!(store.booked_ports().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let store = Store::open(&path).await.unwrap();
            store.insert_service(ServiceId::generate(), spec("keep"), 0, Desired::Stopped, Phase::Stopped, vec![], None).await.unwrap();
            let d1 = store.daemon_id().await.unwrap();
            assert_eq!(d1, store.daemon_id().await.unwrap());
        }
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.list_services().await.unwrap().len(), 1);
        drop(store);
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(Store::open(&path).await, Err(StoreError::TooNew { found: 99, .. })));
    }

    #[tokio::test]
    async fn restart_failures_count_in_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).await.unwrap();
        let id = ServiceId::generate();
        store.insert_service(id.clone(), spec("r"), 0, Desired::Started, Phase::Creating, vec![], None).await.unwrap();
        for n in 1..=3 {
            assert_eq!(store.record_restart_failure(&id, "x".into(), 60_000).await.unwrap(), n);
        }
        store.set_desired(&id, Desired::Started, Phase::Starting).await.unwrap();
        assert_eq!(store.record_restart_failure(&id, "x".into(), 60_000).await.unwrap(), 1);
    }
}
