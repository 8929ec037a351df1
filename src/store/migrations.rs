//! The schema: numbered, forward-only migrations, and opening a database (WAL, foreign keys,
//! integrity check, then every migration it has not seen, each in its own transaction).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Numbered, forward-only. Never edit a released entry: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 5: deployments (every install, upgrade, config change and rollback of an addon
    // instance, kept after an uninstall as its history), and the spec a rollout's new
    // instance runs until the rollout commits (NULL: the service's own spec).
    r#"
    ALTER TABLE instances ADD COLUMN spec TEXT;
    CREATE TABLE deployments (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        instance     TEXT NOT NULL,
        addon        TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('install','upgrade','config','rollback','promotion')),
        from_version TEXT,
        to_version   TEXT NOT NULL,
        images       TEXT NOT NULL,
        config       TEXT NOT NULL,
        config_hash  TEXT NOT NULL,
        who          TEXT NOT NULL,
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER,
        outcome      TEXT NOT NULL CHECK (outcome IN ('running','succeeded','rolled_back','failed')),
        reason       TEXT,
        source       INTEGER,
        plan         TEXT
    );
    CREATE INDEX deployments_by_instance ON deployments (instance, id);
    "#,
    // 6: image builds: one row per build of an addon (kind `addon`) or a plugin directory
    // (kind `plugin`). At most one `building` row per target, so two daemons' requests or a
    // row left by a `kill -9` can never let a second build of it run.
    r#"
    CREATE TABLE builds (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,
        target      TEXT NOT NULL,
        version     TEXT NOT NULL,
        image       TEXT NOT NULL,
        status      TEXT NOT NULL,
        image_id    TEXT,
        tagged      INTEGER NOT NULL DEFAULT 0,
        replace     INTEGER NOT NULL DEFAULT 0,
        step        INTEGER NOT NULL DEFAULT 0,
        steps       INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        log         TEXT,
        uid         INTEGER,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX builds_by_target ON builds (kind, target, id);
    CREATE UNIQUE INDEX builds_one_running ON builds (kind, target) WHERE status = 'building';
    "#,
    // 7: registered MCP tools (src/mcp): each calls one addon's action or a path on its service.
    r#"
    CREATE TABLE mcp_tools (
        name           TEXT PRIMARY KEY,
        description    TEXT NOT NULL,
        addon_instance TEXT NOT NULL,
        action         TEXT,
        path           TEXT,
        input_schema   TEXT NOT NULL,
        created_at     INTEGER NOT NULL
    );
    "#,
    // 8: environments: an installed instance is one environment (`environment`) of an
    // addon installed as `base`; installs made before are their own base, in `prod`.
    r#"
    ALTER TABLE addon_installs ADD COLUMN base TEXT NOT NULL DEFAULT '';
    ALTER TABLE addon_installs ADD COLUMN environment TEXT NOT NULL DEFAULT 'prod';
    UPDATE addon_installs SET base = instance WHERE base = '';
    "#,
    // 9: an installed addon's display name (any human text; the instance name stays the
    // slug that URLs and containers use). Installs made before have none.
    r#"
    ALTER TABLE addon_installs ADD COLUMN display_name TEXT;
    "#,
];

pub(super) fn open_sync(path: &Path) -> Result<Connection, StoreError> {
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
