//! All SQL lives here: the schema and its numbered forward-only migrations, and every
//! query the daemon runs. SQLite runs in WAL mode with foreign keys on; every call goes
//! through `spawn_blocking`, so no SQLite call ever blocks the async runtime. A method
//! that changes something returns only after its transaction committed, so a reply built
//! from its result never announces a change that a crash could undo.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::model::{Desired, Health, Instance, InstanceId, Phase, Service, ServiceId, ServiceSpec};

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
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = if st.f_frsize > 0 { st.f_frsize as u64 } else { st.f_bsize as u64 };
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// True for SQLite's "database or disk is full".
fn is_disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Sql(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Numbered, forward-only. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: services, instances (each owning its unique host port), restart failures, audit.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE services (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        plugin_id   TEXT,
        spec        TEXT NOT NULL,
        replicas    INTEGER NOT NULL CHECK (replicas >= 0),
        desired     TEXT NOT NULL CHECK (desired IN ('started','stopped','deleted')),
        phase       TEXT NOT NULL,
        last_error  TEXT,
        exit_code   INTEGER,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE instances (
        id              TEXT PRIMARY KEY,
        service_id      TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        ordinal         INTEGER NOT NULL,
        host_port       INTEGER NOT NULL UNIQUE,
        wanted          INTEGER NOT NULL DEFAULT 1,
        container_id    TEXT,
        health          TEXT NOT NULL DEFAULT 'unknown',
        restarts        INTEGER NOT NULL DEFAULT 0,
        streak          INTEGER NOT NULL DEFAULT 0,
        started_at      INTEGER,
        healthy_since   INTEGER,
        next_restart_at INTEGER,
        last_error      TEXT,
        exit_code       INTEGER,
        UNIQUE (service_id, ordinal)
    );
    CREATE TABLE restart_failures (
        service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        at         INTEGER NOT NULL,
        reason     TEXT NOT NULL
    );
    CREATE INDEX restart_failures_by_service ON restart_failures (service_id, at);
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        uid     INTEGER,
        pid     INTEGER,
        method  TEXT NOT NULL,
        path    TEXT NOT NULL,
        status  INTEGER NOT NULL,
        detail  TEXT
    );
    "#,
    // 2: the addon catalogue (every registered version) and installed addon instances;
    // services remember which installed addon they belong to.
    r#"
    CREATE TABLE addon_manifests (
        name          TEXT NOT NULL,
        version       TEXT NOT NULL,
        manifest      TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE addon_installs (
        instance    TEXT PRIMARY KEY,
        addon       TEXT NOT NULL,
        version     TEXT NOT NULL,
        config      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        FOREIGN KEY (addon, version) REFERENCES addon_manifests (name, version)
    );
    ALTER TABLE services ADD COLUMN addon_instance TEXT;
    CREATE INDEX services_by_addon ON services (addon_instance);
    "#,
    // 3: API consumers and their grants (one key each, stored only as a hash); the audit
    // log learns where a gateway request came from.
    r#"
    CREATE TABLE applications (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        description  TEXT NOT NULL DEFAULT '',
        organization TEXT NOT NULL DEFAULT '',
        created_at   INTEGER NOT NULL
    );
    CREATE TABLE grants (
        id               TEXT PRIMARY KEY,
        application_id   TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
        addon_instance   TEXT NOT NULL,
        rate_per_second  REAL,
        burst            INTEGER,
        allowed_origins  TEXT NOT NULL DEFAULT '[]',
        key_id           TEXT NOT NULL UNIQUE,
        key_hash         TEXT NOT NULL,
        old_key_hash     TEXT,
        old_valid_until  INTEGER,
        revoked_at       INTEGER,
        created_at       INTEGER NOT NULL,
        rotated_at       INTEGER,
        UNIQUE (application_id, addon_instance)
    );
    ALTER TABLE audit ADD COLUMN source TEXT;
    "#,
    // 4: the durable event log, delivery progress per subscriber, dead letters, the tokens
    // addon instances use on the addon API, their key-value storage, and schedule runs.
    r#"
    CREATE TABLE events (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        name   TEXT NOT NULL,
        data   TEXT NOT NULL,
        source TEXT NOT NULL,
        ts     INTEGER NOT NULL
    );
    CREATE INDEX events_by_name ON events (name, id);
    CREATE TABLE event_cursors (
        subscriber      TEXT PRIMARY KEY,
        delivered_up_to INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_error      TEXT
    );
    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        subscriber  TEXT NOT NULL,
        event_id    INTEGER NOT NULL,
        attempts    INTEGER NOT NULL,
        last_error  TEXT,
        at          INTEGER NOT NULL,
        redrive     INTEGER NOT NULL DEFAULT 0,
        UNIQUE (subscriber, event_id)
    );
    CREATE TABLE instance_tokens (
        instance_id TEXT PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
        hash        TEXT NOT NULL
    );
    CREATE TABLE kv (
        addon_instance TEXT NOT NULL,
        key            TEXT NOT NULL,
        value          BLOB NOT NULL,
        updated_at     INTEGER NOT NULL,
        PRIMARY KEY (addon_instance, key)
    );
    CREATE TABLE schedule_runs (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        addon_instance TEXT NOT NULL,
        action         TEXT NOT NULL,
        cron           TEXT NOT NULL,
        scheduled_for  INTEGER NOT NULL,
        ran_at         INTEGER NOT NULL,
        status         TEXT NOT NULL,
        detail         TEXT
    );
    CREATE INDEX schedule_runs_last ON schedule_runs (addon_instance, action, cron, scheduled_for);
    "#,
];

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One audit record: who changed what, and how it ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    /// For gateway requests: the client address.
    pub source: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub detail: Option<String>,
}

/// A new instance to insert: its ordinal and the host port booked for it.
#[derive(Debug, Clone, Copy)]
pub struct NewInstance {
    pub ordinal: u32,
    pub host_port: u16,
}

/// A new service to insert with its instances (see [`Store::insert_services`]).
#[derive(Debug, Clone)]
pub struct NewService {
    pub id: ServiceId,
    pub spec: ServiceSpec,
    pub replicas: u32,
    pub desired: Desired,
    /// The phase it starts in (`Creating`, or `Started` with no replicas).
    pub phase: Phase,
    /// Its instance rows, each with the host port booked for it.
    pub instances: Vec<NewInstance>,
}

#[derive(Clone)]
pub struct Store {
    /// One connection: SQLite serialises writers anyway, and reads are short.
    conn: Arc<Mutex<Connection>>,
    pub path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database, migrates it and checks its integrity.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open_sync(&p))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))??;
        Ok(Store { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

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

    /// A random id made at first start; containers carry it so two daemons on one host
    /// never adopt or remove each other's containers.
    pub async fn daemon_id(&self) -> Result<String, StoreError> {
        self.call(|c| {
            let existing: Option<String> =
                c.query_row("SELECT value FROM meta WHERE key = 'daemon_id'", [], |r| r.get(0)).optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
            c.execute("INSERT INTO meta (key, value) VALUES ('daemon_id', ?1)", [&id])?;
            Ok(id)
        })
        .await
    }

    /// A value of the `meta` table (the daemon's own bookkeeping).
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.call(move |c| Ok(c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)).await
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(move |c| {
            c.execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])?;
            Ok(())
        })
        .await
    }

    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        self.call(|c| Ok(c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))?)).await
    }

    pub async fn count_services(&self) -> Result<usize, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT COUNT(*) FROM services", [], |r| r.get::<_, i64>(0))? as usize)).await
    }

    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)).await
    }

    pub async fn booked_ports(&self) -> Result<HashSet<u16>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached("SELECT host_port FROM instances")?;
            let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
            let mut set = HashSet::new();
            for r in rows {
                set.insert(r? as u16);
            }
            Ok(set)
        })
        .await
    }

    /// Inserts a service and its instances (with their booked ports) in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_service(
        &self,
        id: ServiceId,
        spec: ServiceSpec,
        replicas: u32,
        desired: Desired,
        phase: Phase,
        instances: Vec<NewInstance>,
        addon_instance: Option<String>,
    ) -> Result<Service, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let spec_json = serde_json::to_string(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let res = tx.execute(
                "INSERT INTO services (id, name, plugin_id, spec, replicas, desired, phase, created_at, updated_at, addon_instance)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                params![id.as_str(), spec.name, spec.plugin_id, spec_json, replicas, desired.as_str(), phase.as_str(), now, addon_instance],
            );
            if let Err(e) = res {
                return Err(if is_unique_violation(&e) { StoreError::NameTaken(spec.name.clone()) } else { e.into() });
            }
            for inst in &instances {
                insert_instance(&tx, &id, *inst)?;
            }
            tx.commit()?;
            load_service(c, id.as_str())?.ok_or_else(|| StoreError::Corrupt("service vanished after insert".into()))
        })
        .await
    }

    /// Inserts several services of one addon instance, and (for an install) the install
    /// row, in one transaction: an install is recorded whole or not at all, so a crash can
    /// never leave an addon installed with some of its services missing.
    pub async fn insert_services(&self, install: Option<InstallRow>, addon_instance: String, services: Vec<NewService>) -> Result<Vec<Service>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            if let Some(row) = &install {
                let res = tx.execute(
                    "INSERT INTO addon_installs (instance, addon, version, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![row.instance, row.addon, row.version, row.config, now],
                );
                match res {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::NameTaken(row.instance.clone())),
                    Err(e) => return Err(e.into()),
                }
            }
            for s in &services {
                let spec_json = serde_json::to_string(&s.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let res = tx.execute(
                    "INSERT INTO services (id, name, plugin_id, spec, replicas, desired, phase, created_at, updated_at, addon_instance)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                    params![s.id.as_str(), s.spec.name, s.spec.plugin_id, spec_json, s.replicas, s.desired.as_str(), s.phase.as_str(), now, addon_instance],
                );
                if let Err(e) = res {
                    return Err(if is_unique_violation(&e) { StoreError::NameTaken(s.spec.name.clone()) } else { e.into() });
                }
                for inst in &s.instances {
                    insert_instance(&tx, &s.id, *inst)?;
                }
            }
            tx.commit()?;
            let mut out = Vec::with_capacity(services.len());
            for s in &services {
                out.push(load_service(c, s.id.as_str())?.ok_or_else(|| StoreError::Corrupt("service vanished after insert".into()))?);
            }
            Ok(out)
        })
        .await
    }

    /// Uninstalls an addon instance in one transaction: the install row goes and every
    /// service of the instance is marked for deletion (the reconciler removes containers
    /// and rows). Returns the services marked, or `None` when nothing is installed there.
    pub async fn uninstall(&self, instance: &str) -> Result<Option<Vec<ServiceId>>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if tx.execute("DELETE FROM addon_installs WHERE instance = ?1", [&instance])? == 0 {
                return Ok(None);
            }
            let ids: Vec<ServiceId> = {
                let mut st = tx.prepare_cached("SELECT id FROM services WHERE addon_instance = ?1 ORDER BY created_at, id")?;
                let rows = st.query_map([&instance], |r| r.get::<_, String>(0))?;
                rows.map(|r| r.map(ServiceId)).collect::<Result<_, _>>()?
            };
            tx.execute(
                "UPDATE services SET desired = 'deleted', phase = 'Deleting', updated_at = ?2 WHERE addon_instance = ?1",
                params![instance, now_ms()],
            )?;
            tx.commit()?;
            Ok(Some(ids))
        })
        .await
    }

    /// Services that belong to an addon instance that is not installed (left by an older
    /// addond whose uninstall was cut short) and are not yet marked for deletion.
    pub async fn orphaned_addon_services(&self) -> Result<Vec<ServiceId>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT id FROM services WHERE addon_instance IS NOT NULL AND desired != 'deleted'
                   AND addon_instance NOT IN (SELECT instance FROM addon_installs) ORDER BY created_at, id",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.map(|r| r.map(ServiceId)).collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn list_services(&self) -> Result<Vec<Service>, StoreError> {
        self.call(|c| {
            let ids: Vec<String> = {
                let mut st = c.prepare_cached("SELECT id FROM services ORDER BY created_at, id")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(s) = load_service(c, &id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Looks a service up by id or, failing that, by name.
    pub async fn get_service(&self, id_or_name: &str) -> Result<Option<Service>, StoreError> {
        let key = id_or_name.to_string();
        self.call(move |c| {
            if let Some(s) = load_service(c, &key)? {
                return Ok(Some(s));
            }
            let id: Option<String> =
                c.query_row("SELECT id FROM services WHERE name = ?1", [&key], |r| r.get(0)).optional()?;
            match id {
                Some(id) => load_service(c, &id),
                None => Ok(None),
            }
        })
        .await
    }

    /// Sets what the operator wants and the phase that starts the way there; clears a
    /// previous failure so a start after `Failed` begins afresh.
    pub async fn set_desired(&self, id: &ServiceId, desired: Desired, phase: Phase) -> Result<Option<Service>, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE services SET desired = ?2, phase = ?3, updated_at = ?4,
                   last_error = CASE WHEN ?2 = 'started' THEN NULL ELSE last_error END,
                   exit_code = CASE WHEN ?2 = 'started' THEN NULL ELSE exit_code END
                 WHERE id = ?1",
                params![id.as_str(), desired.as_str(), phase.as_str(), now_ms()],
            )?;
            if n == 0 {
                return Ok(None);
            }
            if desired == Desired::Started {
                tx.execute("DELETE FROM restart_failures WHERE service_id = ?1", [id.as_str()])?;
                tx.execute(
                    "UPDATE instances SET streak = 0, next_restart_at = NULL WHERE service_id = ?1",
                    [id.as_str()],
                )?;
            }
            tx.commit()?;
            load_service(c, id.as_str())
        })
        .await
    }

    pub async fn set_phase(
        &self,
        id: &ServiceId,
        phase: Phase,
        last_error: Option<String>,
        exit_code: Option<i64>,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| {
            c.execute(
                "UPDATE services SET phase = ?2, last_error = ?3, exit_code = ?4, updated_at = ?5
                 WHERE id = ?1 AND (phase IS NOT ?2 OR last_error IS NOT ?3 OR exit_code IS NOT ?4)",
                params![id.as_str(), phase.as_str(), last_error, exit_code, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Sets the wanted replica count: ordinals below `replicas` are wanted (new ones are
    /// inserted with the ports in `new`), the rest are marked unwanted for removal.
    pub async fn scale(&self, id: &ServiceId, replicas: u32, new: Vec<NewInstance>) -> Result<Option<Service>, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE services SET replicas = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.as_str(), replicas, now_ms()],
            )?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute("UPDATE instances SET wanted = (ordinal < ?2) WHERE service_id = ?1", params![id.as_str(), replicas])?;
            for inst in &new {
                insert_instance(&tx, &id, *inst)?;
            }
            tx.commit()?;
            load_service(c, id.as_str())
        })
        .await
    }

    /// Writes the mutable fields of an instance (container, health, restart bookkeeping).
    pub async fn update_instance(&self, inst: &Instance) -> Result<(), StoreError> {
        let i = inst.clone();
        self.call(move |c| {
            c.prepare_cached(
                "UPDATE instances SET container_id = ?2, health = ?3, restarts = ?4, streak = ?5,
                   started_at = ?6, healthy_since = ?7, next_restart_at = ?8, last_error = ?9, exit_code = ?10
                 WHERE id = ?1",
            )?
            .execute(params![
                i.id.as_str(),
                i.container_id,
                i.health.as_str(),
                i.restarts,
                i.streak,
                i.started_at,
                i.healthy_since,
                i.next_restart_at,
                i.last_error,
                i.exit_code
            ])?;
            Ok(())
        })
        .await
    }

    /// Records a health transition without touching restart bookkeeping (called by the
    /// health monitor, which does not hold the service lease).
    pub async fn set_instance_health(&self, id: &InstanceId, health: Health, healthy_since: Option<i64>) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| {
            c.prepare_cached("UPDATE instances SET health = ?2, healthy_since = ?3 WHERE id = ?1")?
                .execute(params![id.as_str(), health.as_str(), healthy_since])?;
            Ok(())
        })
        .await
    }

    /// Moves an instance to another host port (its old one was taken by another program).
    pub async fn rebook_port(&self, id: &InstanceId, port: u16) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| match c.execute("UPDATE instances SET host_port = ?2 WHERE id = ?1", params![id.as_str(), port]) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::PortTaken(port)),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Removes an instance row, which frees its host port in the same commit.
    pub async fn delete_instance(&self, id: &InstanceId) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| {
            c.execute("DELETE FROM instances WHERE id = ?1", [id.as_str()])?;
            Ok(())
        })
        .await
    }

    /// Removes a service and (by cascade) its instances and port bookings.
    pub async fn delete_service(&self, id: &ServiceId) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| {
            c.execute("DELETE FROM services WHERE id = ?1", [id.as_str()])?;
            Ok(())
        })
        .await
    }

    /// Records a failed restart and returns how many fell inside the window.
    pub async fn record_restart_failure(&self, id: &ServiceId, reason: String, window_ms: i64) -> Result<u32, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let now = now_ms();
            let tx = c.transaction()?;
            tx.execute("INSERT INTO restart_failures (service_id, at, reason) VALUES (?1, ?2, ?3)", params![id.as_str(), now, reason])?;
            tx.execute("DELETE FROM restart_failures WHERE service_id = ?1 AND at < ?2", params![id.as_str(), now - window_ms])?;
            let n: u32 = tx.query_row("SELECT COUNT(*) FROM restart_failures WHERE service_id = ?1", [id.as_str()], |r| r.get(0))?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Services stopped or failed, unchanged for longer than `older_than_ms`.
    pub async fn stale_services(&self, older_than_ms: i64) -> Result<Vec<ServiceId>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT id FROM services WHERE phase IN ('Stopped','Failed') AND updated_at < ?1 AND desired != 'deleted'",
            )?;
            let rows = st.query_map([now_ms() - older_than_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.map(|r| r.map(ServiceId)).collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.audit_batch(vec![e]).await
    }

    /// Writes several audit records in one transaction (the gateway batches its denials).
    pub async fn audit_batch(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT INTO audit (at, uid, pid, method, path, status, detail, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
                for e in entries {
                    st.execute(params![e.at, e.uid, e.pid, e.method, e.path, e.status, e.detail, e.source])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare("SELECT at, uid, pid, method, path, status, detail, source FROM audit ORDER BY id DESC LIMIT ?1")?;
            let rows = st.query_map([limit], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    uid: r.get(1)?,
                    pid: r.get(2)?,
                    method: r.get(3)?,
                    path: r.get(4)?,
                    status: r.get(5)?,
                    detail: r.get(6)?,
                    source: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// A registered manifest version, as stored.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub name: String,
    pub version: String,
    pub manifest: String,
    pub registered_at: i64,
}

/// An installed addon instance.
#[derive(Debug, Clone)]
pub struct InstallRow {
    pub instance: String,
    pub addon: String,
    pub version: String,
    pub config: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// Adds a manifest version to the catalogue; `false` if that exact version exists.
    pub async fn insert_manifest(&self, name: &str, version: &str, manifest: String) -> Result<bool, StoreError> {
        let (name, version) = (name.to_string(), version.to_string());
        self.call(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO addon_manifests (name, version, manifest, registered_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, version, manifest, now_ms()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Every registered manifest version (all addons, or one addon's).
    pub async fn list_manifests(&self, name: Option<&str>) -> Result<Vec<ManifestRow>, StoreError> {
        let name = name.map(str::to_string);
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT name, version, manifest, registered_at FROM addon_manifests WHERE ?1 IS NULL OR name = ?1 ORDER BY name, registered_at",
            )?;
            let rows = st.query_map([name], |r| Ok(ManifestRow { name: r.get(0)?, version: r.get(1)?, manifest: r.get(2)?, registered_at: r.get(3)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Removes every registered version of an addon (none may be installed).
    pub async fn delete_manifests(&self, name: &str) -> Result<usize, StoreError> {
        let name = name.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM addon_manifests WHERE name = ?1", [name])?)).await
    }

    pub async fn list_installs(&self) -> Result<Vec<InstallRow>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached("SELECT instance, addon, version, config, created_at, updated_at FROM addon_installs ORDER BY instance")?;
            let rows = st.query_map([], install_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn get_install(&self, instance: &str) -> Result<Option<InstallRow>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            Ok(c
                .prepare_cached("SELECT instance, addon, version, config, created_at, updated_at FROM addon_installs WHERE instance = ?1")?
                .query_row([instance], install_from_row)
                .optional()?)
        })
        .await
    }

    pub async fn set_install_config(&self, instance: &str, config: String) -> Result<(), StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            c.execute("UPDATE addon_installs SET config = ?2, updated_at = ?3 WHERE instance = ?1", params![instance, config, now_ms()])?;
            Ok(())
        })
        .await
    }

    /// The services that belong to an installed addon instance.
    pub async fn services_of_addon(&self, instance: &str) -> Result<Vec<Service>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            let ids: Vec<String> = {
                let mut st = c.prepare_cached("SELECT id FROM services WHERE addon_instance = ?1 ORDER BY created_at, id")?;
                let rows = st.query_map([&instance], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::new();
            for id in ids {
                if let Some(s) = load_service(c, &id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }
}

/// An API consumer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplicationRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub organization: String,
    pub created_at: i64,
}

/// A grant: an application's permission to call one addon instance, with its key's hash.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: String,
    pub application_id: String,
    pub addon_instance: String,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub allowed_origins: Vec<String>,
    pub key_id: String,
    pub key_hash: String,
    pub old_key_hash: Option<String>,
    pub old_valid_until: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
}

const GRANT_COLUMNS: &str = "id, application_id, addon_instance, rate_per_second, burst, allowed_origins, key_id, key_hash, old_key_hash, old_valid_until, revoked_at, created_at, rotated_at";

fn grant_from_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    let origins: String = r.get(5)?;
    Ok(GrantRow {
        id: r.get(0)?,
        application_id: r.get(1)?,
        addon_instance: r.get(2)?,
        rate_per_second: r.get(3)?,
        burst: r.get(4)?,
        allowed_origins: serde_json::from_str(&origins).unwrap_or_default(),
        key_id: r.get(6)?,
        key_hash: r.get(7)?,
        old_key_hash: r.get(8)?,
        old_valid_until: r.get(9)?,
        revoked_at: r.get(10)?,
        created_at: r.get(11)?,
        rotated_at: r.get(12)?,
    })
}

impl Store {
    pub async fn insert_application(&self, app: ApplicationRow) -> Result<(), StoreError> {
        self.call(move |c| {
            match c.execute(
                "INSERT INTO applications (id, name, description, organization, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![app.id, app.name, app.description, app.organization, app.created_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken(app.name.clone())),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn list_applications(&self) -> Result<Vec<ApplicationRow>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached("SELECT id, name, description, organization, created_at FROM applications ORDER BY name")?;
            let rows = st.query_map([], |r| Ok(ApplicationRow { id: r.get(0)?, name: r.get(1)?, description: r.get(2)?, organization: r.get(3)?, created_at: r.get(4)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Deletes an application and (by cascade) its grants; false if there was none.
    pub async fn delete_application(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM applications WHERE id = ?1", [id])? == 1)).await
    }

    pub async fn insert_grant(&self, g: GrantRow) -> Result<(), StoreError> {
        self.call(move |c| {
            let origins = serde_json::to_string(&g.allowed_origins).unwrap_or_else(|_| "[]".into());
            match c.execute(
                &format!("INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![g.id, g.application_id, g.addon_instance, g.rate_per_second, g.burst, origins, g.key_id, g.key_hash, g.old_key_hash, g.old_valid_until, g.revoked_at, g.created_at, g.rotated_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken(format!("{} → {}", g.application_id, g.addon_instance))),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn list_grants(&self) -> Result<Vec<GrantRow>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY created_at, id"))?;
            let rows = st.query_map([], grant_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Replaces a grant's key: the new hash, and the old one valid until `old_valid_until`.
    pub async fn rotate_grant(&self, id: &str, key_id: String, key_hash: String, old_valid_until: Option<i64>) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE grants SET old_key_hash = CASE WHEN ?4 IS NULL THEN NULL ELSE key_hash END,
                   old_valid_until = ?4, key_id = ?2, key_hash = ?3, rotated_at = ?5
                 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, key_id, key_hash, old_valid_until, now_ms()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| Ok(c.execute("UPDATE grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now_ms()])? == 1)).await
    }

    pub async fn update_grant_limits(&self, id: &str, rate: Option<f64>, burst: Option<u32>, origins: Vec<String>) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let origins = serde_json::to_string(&origins).unwrap_or_else(|_| "[]".into());
            Ok(c.execute("UPDATE grants SET rate_per_second = ?2, burst = ?3, allowed_origins = ?4 WHERE id = ?1", params![id, rate, burst, origins])? == 1)
        })
        .await
    }

    pub async fn delete_grant(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM grants WHERE id = ?1", [id])? == 1)).await
    }
}

// ---- operations: watchdog, backup, doctor, clean close ---------------------------------

impl Store {
    /// The schema version this build migrates to; a database or backup above it is refused.
    pub fn known_schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    /// A trivial query through the one connection: answers only if no call is stuck
    /// holding it (the watchdog's liveness probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }

    /// Writes a consistent, compacted copy of the whole database to `dest` (`VACUUM INTO`,
    /// one read transaction: writers wait for its few milliseconds, readers do not).
    /// `dest` must not exist. Returns the schema version of the copy.
    pub async fn snapshot_to(&self, dest: &Path) -> Result<i64, StoreError> {
        let dest = dest.to_string_lossy().into_owned();
        self.call(move |c| {
            c.execute("VACUUM INTO ?1", [&dest])?;
            Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
        })
        .await
    }

    /// The full `PRAGMA integrity_check` (the start-up check reads every page too); "ok"
    /// when sound, else the problems it lists.
    pub async fn integrity_report(&self) -> Result<Vec<String>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Moves everything in the write-ahead log into the database file and empties the log,
    /// so the file alone is the whole state (called on a graceful stop).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Debug builds only: holds the connection for `d`, so every database call (and the
    /// watchdog probe) waits, as a wedged SQLite call would. For the watchdog tests.
    #[cfg(debug_assertions)]
    pub fn debug_stall(&self, d: std::time::Duration) {
        let conn = self.conn.clone();
        std::thread::spawn(move || {
            let _held = conn.lock();
            std::thread::sleep(d);
        });
    }
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub name: String,
    pub data: String,
    pub source: String,
    pub ts: i64,
}

/// A subscriber's delivery progress.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    pub delivered_up_to: i64,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub subscriber: String,
    pub event_id: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub at: i64,
    pub redrive: bool,
}

/// `name = ?`, `name LIKE 'x.%'` or everything, for subscription patterns.
fn pattern_sql(patterns: &[String], params: &mut Vec<String>) -> String {
    if patterns.iter().any(|p| p == "*") {
        return "1".to_string();
    }
    let mut parts = Vec::new();
    for p in patterns {
        match p.strip_suffix(".*") {
            Some(prefix) => {
                params.push(format!("{}.%", prefix.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%")));
                parts.push(format!("name LIKE ?{} ESCAPE '\\'", params.len()));
            }
            None => {
                params.push(p.clone());
                parts.push(format!("name = ?{}", params.len()));
            }
        }
    }
    if parts.is_empty() {
        "0".to_string()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

impl Store {
    /// Appends events in one transaction (group commit); returns their ids in order.
    pub async fn insert_events(&self, events: Vec<(String, String, String, i64)>) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(events.len());
            {
                let mut st = tx.prepare_cached("INSERT INTO events (name, data, source, ts) VALUES (?1, ?2, ?3, ?4)")?;
                for (name, data, source, ts) in events {
                    st.execute(params![name, data, source, ts])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// Events after `after` whose names match `patterns` (all names when `None`).
    pub async fn events_after(&self, after: i64, patterns: Option<Vec<String>>, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        self.call(move |c| {
            let mut params: Vec<String> = Vec::new();
            let filter = match &patterns {
                Some(p) => pattern_sql(p, &mut params),
                None => "1".to_string(),
            };
            let n = params.len();
            let sql = format!("SELECT id, name, data, source, ts FROM events WHERE id > ?{} AND {filter} ORDER BY id LIMIT ?{}", n + 1, n + 2);
            let mut st = c.prepare_cached(&sql)?;
            let mut values: Vec<rusqlite::types::Value> = params.into_iter().map(rusqlite::types::Value::from).collect();
            values.push(rusqlite::types::Value::from(after));
            values.push(rusqlite::types::Value::from(limit as i64));
            let rows = st.query_map(rusqlite::params_from_iter(values), |r| Ok(EventRow { id: r.get(0)?, name: r.get(1)?, data: r.get(2)?, source: r.get(3)?, ts: r.get(4)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        self.call(move |c| {
            Ok(c.prepare_cached("SELECT id, name, data, source, ts FROM events WHERE id = ?1")?
                .query_row([id], |r| Ok(EventRow { id: r.get(0)?, name: r.get(1)?, data: r.get(2)?, source: r.get(3)?, ts: r.get(4)? }))
                .optional()?)
        })
        .await
    }

    pub async fn max_event_id(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)).await
    }

    /// Removes events older than `before_ms`, and beyond the newest `keep`.
    pub async fn prune_events(&self, before_ms: i64, keep: u64) -> Result<usize, StoreError> {
        self.call(move |c| {
            let max: i64 = c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
            Ok(c.execute("DELETE FROM events WHERE ts < ?1 OR id <= ?2", params![before_ms, max - keep as i64])?)
        })
        .await
    }

    /// A subscriber's progress, created at the current end of the log when it is new (a new
    /// subscriber receives events from its subscription on, not the whole history).
    pub async fn cursor(&self, subscriber: &str) -> Result<Cursor, StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            c.execute("INSERT OR IGNORE INTO event_cursors (subscriber, delivered_up_to) SELECT ?1, COALESCE(MAX(id), 0) FROM events", [&sub])?;
            Ok(c.query_row("SELECT delivered_up_to, attempts, next_attempt_at, last_error FROM event_cursors WHERE subscriber = ?1", [&sub], |r| {
                Ok(Cursor { delivered_up_to: r.get(0)?, attempts: r.get(1)?, next_attempt_at: r.get(2)?, last_error: r.get(3)? })
            })?)
        })
        .await
    }

    pub async fn cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare("SELECT subscriber, delivered_up_to, attempts, next_attempt_at, last_error FROM event_cursors ORDER BY subscriber")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, Cursor { delivered_up_to: r.get(1)?, attempts: r.get(2)?, next_attempt_at: r.get(3)?, last_error: r.get(4)? })))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn set_cursor(&self, subscriber: &str, cur: Cursor) -> Result<(), StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            c.prepare_cached("UPDATE event_cursors SET delivered_up_to = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5 WHERE subscriber = ?1")?
                .execute(params![sub, cur.delivered_up_to, cur.attempts, cur.next_attempt_at, cur.last_error])?;
            Ok(())
        })
        .await
    }

    /// Gives up on one event for one subscriber: dead-letters it and moves the cursor past.
    pub async fn dead_letter(&self, subscriber: &str, event_id: i64, attempts: u32, error: String) -> Result<(), StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO dead_letters (subscriber, event_id, attempts, last_error, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (subscriber, event_id) DO UPDATE SET attempts = excluded.attempts, last_error = excluded.last_error, at = excluded.at, redrive = 0",
                params![sub, event_id, attempts, error, now_ms()],
            )?;
            tx.execute(
                "UPDATE event_cursors SET delivered_up_to = MAX(delivered_up_to, ?2), attempts = 0, next_attempt_at = NULL, last_error = ?3 WHERE subscriber = ?1",
                params![sub, event_id, error],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn dead_letters(&self, subscriber: Option<String>) -> Result<Vec<DeadLetter>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare("SELECT id, subscriber, event_id, attempts, last_error, at, redrive FROM dead_letters WHERE ?1 IS NULL OR subscriber = ?1 ORDER BY subscriber, event_id")?;
            let rows = st.query_map([subscriber], |r| {
                Ok(DeadLetter { id: r.get(0)?, subscriber: r.get(1)?, event_id: r.get(2)?, attempts: r.get(3)?, last_error: r.get(4)?, at: r.get(5)?, redrive: r.get(6)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Marks dead letters to be sent again; returns how many.
    pub async fn mark_redrive(&self, subscriber: Option<String>) -> Result<usize, StoreError> {
        self.call(move |c| Ok(c.execute("UPDATE dead_letters SET redrive = 1 WHERE ?1 IS NULL OR subscriber = ?1", [subscriber])?)).await
    }

    pub async fn delete_dead_letter(&self, id: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM dead_letters WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    /// Forgets a subscriber (uninstalled): its progress and dead letters.
    pub async fn drop_subscriber(&self, subscriber: &str) -> Result<(), StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            c.execute("DELETE FROM event_cursors WHERE subscriber = ?1", [&sub])?;
            c.execute("DELETE FROM dead_letters WHERE subscriber = ?1", [&sub])?;
            Ok(())
        })
        .await
    }

    pub async fn set_instance_token(&self, instance: &InstanceId, hash: String) -> Result<(), StoreError> {
        let id = instance.clone();
        self.call(move |c| {
            c.execute("INSERT INTO instance_tokens (instance_id, hash) VALUES (?1, ?2) ON CONFLICT (instance_id) DO UPDATE SET hash = excluded.hash", params![id.as_str(), hash])?;
            Ok(())
        })
        .await
    }

    /// The token hash of an instance, with the addon instance it belongs to.
    pub async fn instance_token(&self, instance: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        let id = instance.to_string();
        self.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT t.hash, s.addon_instance FROM instance_tokens t JOIN instances i ON i.id = t.instance_id JOIN services s ON s.id = i.service_id WHERE t.instance_id = ?1 AND i.wanted = 1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    pub async fn kv_get(&self, addon: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (a, k) = (addon.to_string(), key.to_string());
        self.call(move |c| Ok(c.prepare_cached("SELECT value FROM kv WHERE addon_instance = ?1 AND key = ?2")?.query_row([a, k], |r| r.get(0)).optional()?)).await
    }

    /// Stores a value unless that would exceed `max_keys` for the addon; false if it would.
    pub async fn kv_put(&self, addon: &str, key: &str, value: Vec<u8>, max_keys: u32) -> Result<bool, StoreError> {
        let (a, k) = (addon.to_string(), key.to_string());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM kv WHERE addon_instance = ?1 AND key = ?2)", [&a, &k], |r| r.get(0))?;
            if !exists {
                let n: u32 = tx.query_row("SELECT COUNT(*) FROM kv WHERE addon_instance = ?1", [&a], |r| r.get(0))?;
                if n >= max_keys {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO kv (addon_instance, key, value, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (addon_instance, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![a, k, value, now_ms()],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn kv_delete(&self, addon: &str, key: &str) -> Result<bool, StoreError> {
        let (a, k) = (addon.to_string(), key.to_string());
        self.call(move |c| Ok(c.execute("DELETE FROM kv WHERE addon_instance = ?1 AND key = ?2", [a, k])? == 1)).await
    }

    /// When a schedule last ran (its scheduled time), if ever.
    pub async fn last_schedule_run(&self, addon: &str, action: &str, cron: &str) -> Result<Option<i64>, StoreError> {
        let (a, ac, cr) = (addon.to_string(), action.to_string(), cron.to_string());
        self.call(move |c| {
            Ok(c.query_row("SELECT MAX(scheduled_for) FROM schedule_runs WHERE addon_instance = ?1 AND action = ?2 AND cron = ?3", [a, ac, cr], |r| r.get(0))?)
        })
        .await
    }

    pub async fn record_schedule_run(&self, addon: &str, action: &str, cron: &str, scheduled_for: i64, status: &str, detail: Option<String>) -> Result<(), StoreError> {
        let (a, ac, cr, st) = (addon.to_string(), action.to_string(), cron.to_string(), status.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO schedule_runs (addon_instance, action, cron, scheduled_for, ran_at, status, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![a, ac, cr, scheduled_for, now_ms(), st, detail],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn schedule_runs(&self, addon: &str, limit: u32) -> Result<Vec<serde_json::Value>, StoreError> {
        let a = addon.to_string();
        self.call(move |c| {
            let mut st = c.prepare("SELECT action, cron, scheduled_for, ran_at, status, detail FROM schedule_runs WHERE addon_instance = ?1 ORDER BY id DESC LIMIT ?2")?;
            let rows = st.query_map(params![a, limit], |r| {
                Ok(serde_json::json!({"action": r.get::<_, String>(0)?, "cron": r.get::<_, String>(1)?, "scheduled_for": r.get::<_, i64>(2)?, "ran_at": r.get::<_, i64>(3)?, "status": r.get::<_, String>(4)?, "detail": r.get::<_, Option<String>>(5)?}))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

fn install_from_row(r: &Row<'_>) -> rusqlite::Result<InstallRow> {
    Ok(InstallRow { instance: r.get(0)?, addon: r.get(1)?, version: r.get(2)?, config: r.get(3)?, created_at: r.get(4)?, updated_at: r.get(5)? })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn insert_instance(tx: &rusqlite::Transaction<'_>, service: &ServiceId, inst: NewInstance) -> Result<(), StoreError> {
    let res = tx.execute(
        "INSERT INTO instances (id, service_id, ordinal, host_port, wanted) VALUES (?1, ?2, ?3, ?4, 1)",
        params![InstanceId::generate().as_str(), service.as_str(), inst.ordinal, inst.host_port],
    );
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::PortTaken(inst.host_port)),
        Err(e) => Err(e.into()),
    }
}

fn open_sync(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a reply that says "done" must survive a power cut, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Integrity(check));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew { found: version, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn load_service(c: &Connection, id: &str) -> Result<Option<Service>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT id, spec, replicas, desired, phase, last_error, exit_code, created_at, updated_at, addon_instance FROM services WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .optional()?;
    let Some((id, spec, replicas, desired, phase, last_error, exit_code, created_at, updated_at, addon_instance)) = row else {
        return Ok(None);
    };
    let spec: ServiceSpec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("service {id} spec: {e}")))?;
    let desired = Desired::parse(&desired).ok_or_else(|| StoreError::Corrupt(format!("service {id} desired `{desired}`")))?;
    let phase = Phase::parse(&phase).ok_or_else(|| StoreError::Corrupt(format!("service {id} phase `{phase}`")))?;
    let mut st = c.prepare_cached(
        "SELECT id, service_id, ordinal, host_port, wanted, container_id, health, restarts, started_at, last_error,
                exit_code, next_restart_at, streak, healthy_since
         FROM instances WHERE service_id = ?1 ORDER BY ordinal",
    )?;
    let instances = st.query_map([&id], instance_from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Service {
        id: ServiceId(id),
        spec,
        replicas,
        desired,
        phase,
        last_error,
        exit_code,
        created_at,
        updated_at,
        addon_instance,
        instances,
    }))
}

fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<Instance> {
    Ok(Instance {
        id: InstanceId(r.get(0)?),
        service_id: ServiceId(r.get(1)?),
        ordinal: r.get(2)?,
        host_port: r.get::<_, i64>(3)? as u16,
        wanted: r.get(4)?,
        container_id: r.get(5)?,
        health: Health::parse(&r.get::<_, String>(6)?),
        restarts: r.get(7)?,
        started_at: r.get(8)?,
        last_error: r.get(9)?,
        exit_code: r.get(10)?,
        next_restart_at: r.get(11)?,
        streak: r.get(12)?,
        healthy_since: r.get(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::CreateRequest;

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
            .insert_service(id.clone(), spec("a"), 1, Desired::Started, Phase::Creating, vec![NewInstance { ordinal: 0, host_port: 8000 }], None)
            .await
            .unwrap();
        assert_eq!(s.instances.len(), 1);
        assert_eq!(store.get_service("a").await.unwrap().unwrap().id, id);
        // name and port uniqueness
        let dup = store.insert_service(ServiceId::generate(), spec("a"), 0, Desired::Started, Phase::Creating, vec![], None).await;
        assert!(matches!(dup, Err(StoreError::NameTaken(_))));
        let dup = store
            .insert_service(ServiceId::generate(), spec("b"), 1, Desired::Started, Phase::Creating, vec![NewInstance { ordinal: 0, host_port: 8000 }], None)
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
