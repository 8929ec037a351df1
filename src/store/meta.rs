//! The daemon's own bookkeeping in the `meta` table (its id, markers of one-time work).

use rusqlite::OptionalExtension;

use super::{Store, StoreError};

impl Store {
    /// A random id made at first start; containers carry it so two daemons on one host
    /// never adopt or remove each other's containers.
    pub async fn daemon_id(&self) -> Result<String, StoreError> {
        self.call(|c| {
            let existing: Option<String> = c.query_row("SELECT value FROM meta WHERE key = 'daemon_id'", [], |r| r.get(0)).optional()?;
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
        self.exec("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])
            .await?;
        Ok(())
    }
}
