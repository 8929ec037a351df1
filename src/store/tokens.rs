//! Instance tokens: the hash of the token each addon container presents to the addon API.

use rusqlite::OptionalExtension;

use super::{Store, StoreError};
use crate::model::InstanceId;

/// An instance's addon API token as stored: what a presented token is checked against.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// SHA-256 of the token's secret (the token itself is never stored).
    pub hash: String,
    /// The installed addon instance the container belongs to; `None` for a plain service,
    /// which gets no addon API.
    pub addon_instance: Option<String>,
}

impl Store {
    pub async fn set_instance_token(&self, instance: &InstanceId, hash: String) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO instance_tokens (instance_id, hash) VALUES (?1, ?2) ON CONFLICT (instance_id) DO UPDATE SET hash = excluded.hash",
            (instance.0.clone(), hash),
        )
        .await?;
        Ok(())
    }

    /// The token hash of an instance, with the addon instance it belongs to.
    pub async fn instance_token(&self, instance: &str) -> Result<Option<TokenRow>, StoreError> {
        let id = instance.to_string();
        self.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT t.hash, s.addon_instance FROM instance_tokens t JOIN instances i ON i.id = t.instance_id JOIN services s ON s.id = i.service_id WHERE t.instance_id = ?1 AND i.wanted = 1",
            )?
            .query_row([id], |r| Ok(TokenRow { hash: r.get(0)?, addon_instance: r.get(1)? }))
            .optional()?)
        })
        .await
    }
}
