//! The per-addon key-value store addons reach through the addon API.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{now_ms, Store, StoreError};

impl Store {
    pub async fn kv_get(&self, addon: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (a, k) = (addon.to_string(), key.to_string());
        self.call(move |c| {
            Ok(c.prepare_cached("SELECT value FROM kv WHERE addon_instance = ?1 AND key = ?2")?
                .query_row([a, k], |r| r.get(0))
                .optional()?)
        })
        .await
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
        Ok(self.exec("DELETE FROM kv WHERE addon_instance = ?1 AND key = ?2", [addon.to_string(), key.to_string()]).await? == 1)
    }
}
