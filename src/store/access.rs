//! Who may call what and what was done: API applications, their grants (with key hashes,
//! never keys) and the audit log of every change.

use rusqlite::{params, Row};

use super::{is_unique_violation, now_ms, Store, StoreError};

/// One audit record: who changed what, and how it ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    /// When it happened (ms since the epoch).
    pub at: i64,
    /// The peer's uid on the admin socket (none for gateway requests).
    pub uid: Option<u32>,
    /// The peer's pid on the admin socket, to find the process that did it.
    pub pid: Option<i32>,
    /// For gateway requests: the client address.
    pub source: Option<String>,
    /// The HTTP method of the request.
    pub method: String,
    /// The request path: what was changed.
    pub path: String,
    /// The HTTP status it was answered with: how it ended.
    pub status: u16,
    /// A short note (the error, or what was made).
    pub detail: Option<String>,
}

/// An API consumer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplicationRow {
    /// The stable id grants refer to.
    pub id: String,
    /// Its unique name, what operators type.
    pub name: String,
    /// Free text for the operator.
    pub description: String,
    /// Who runs it, for the operator.
    pub organization: String,
    /// When it was registered (ms since the epoch).
    pub created_at: i64,
}

/// A grant: an application's permission to call one addon instance, with its key's hash.
#[derive(Debug, Clone)]
pub struct GrantRow {
    /// The grant's id, what rotate and revoke name.
    pub id: String,
    /// The application it belongs to (deleted with it).
    pub application_id: String,
    /// The one addon instance it lets the application call.
    pub addon_instance: String,
    /// Its own request rate limit, when it has one.
    pub rate_per_second: Option<f64>,
    /// Its own burst allowance, when it has one.
    pub burst: Option<u32>,
    /// Browser origins it may be used from (CORS); empty for none.
    pub allowed_origins: Vec<String>,
    /// The public part of the key, to find the grant without trying every hash.
    pub key_id: String,
    /// The hash of the key's secret: the key itself is never stored.
    pub key_hash: String,
    /// The previous key's hash during a rotation's grace period.
    pub old_key_hash: Option<String>,
    /// When the previous key stops working (ms since the epoch).
    pub old_valid_until: Option<i64>,
    /// When it was revoked; a revoked grant stays listed for the record.
    pub revoked_at: Option<i64>,
    /// When it was made (ms since the epoch).
    pub created_at: i64,
    /// When its key was last rotated.
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
    pub async fn audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.audit_batch(vec![e]).await
    }

    /// Writes several audit records in one transaction (the gateway batches its denials).
    pub async fn audit_batch(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO audit (at, uid, pid, method, path, status, detail, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
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
        self.query("SELECT at, uid, pid, method, path, status, detail, source FROM audit ORDER BY id DESC LIMIT ?1", [limit], |r| {
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
        })
        .await
    }

    pub async fn insert_application(&self, app: ApplicationRow) -> Result<(), StoreError> {
        self.call(move |c| {
            match c.execute(
                "INSERT INTO applications (id, name, description, organization, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![app.id, app.name, app.description, app.organization, app.created_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(StoreError::ApplicationNameTaken(app.name.clone())),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn list_applications(&self) -> Result<Vec<ApplicationRow>, StoreError> {
        self.query("SELECT id, name, description, organization, created_at FROM applications ORDER BY name", [], |r| {
            Ok(ApplicationRow { id: r.get(0)?, name: r.get(1)?, description: r.get(2)?, organization: r.get(3)?, created_at: r.get(4)? })
        })
        .await
    }

    /// Deletes an application and (by cascade) its grants; false if there was none.
    pub async fn delete_application(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM applications WHERE id = ?1", [id.to_string()]).await? == 1)
    }

    pub async fn insert_grant(&self, g: GrantRow) -> Result<(), StoreError> {
        self.call(move |c| {
            let origins = serde_json::to_string(&g.allowed_origins).unwrap_or_else(|_| "[]".into());
            match c.execute(
                &format!("INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![
                    g.id,
                    g.application_id,
                    g.addon_instance,
                    g.rate_per_second,
                    g.burst,
                    origins,
                    g.key_id,
                    g.key_hash,
                    g.old_key_hash,
                    g.old_valid_until,
                    g.revoked_at,
                    g.created_at,
                    g.rotated_at
                ],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(StoreError::GrantTaken(format!("{} → {}", g.application_id, g.addon_instance))),
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
        let n = self
            .exec(
                "UPDATE grants SET old_key_hash = CASE WHEN ?4 IS NULL THEN NULL ELSE key_hash END,
                   old_valid_until = ?4, key_id = ?2, key_hash = ?3, rotated_at = ?5
                 WHERE id = ?1 AND revoked_at IS NULL",
                (id.to_string(), key_id, key_hash, old_valid_until, now_ms()),
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("UPDATE grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", (id.to_string(), now_ms())).await? == 1)
    }

    pub async fn update_grant_limits(
        &self,
        id: &str,
        rate: Option<f64>,
        burst: Option<u32>,
        origins: Vec<String>,
    ) -> Result<bool, StoreError> {
        let origins = serde_json::to_string(&origins).unwrap_or_else(|_| "[]".into());
        Ok(self
            .exec(
                "UPDATE grants SET rate_per_second = ?2, burst = ?3, allowed_origins = ?4 WHERE id = ?1",
                (id.to_string(), rate, burst, origins),
            )
            .await?
            == 1)
    }

    pub async fn delete_grant(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM grants WHERE id = ?1", [id.to_string()]).await? == 1)
    }
}
