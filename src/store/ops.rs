//! Operations on the database as a whole: schema version, integrity, the watchdog's probe,
//! backup snapshots and the checkpoint of a clean close.

use std::path::Path;

use super::migrations::MIGRATIONS;
use super::{Store, StoreError};

impl Store {
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        self.call(|c| Ok(c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))?)).await
    }

    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)).await
    }

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
