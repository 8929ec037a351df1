//! Applications and their grants: who may call which addon through the gateway, with what
//! rate limit and from which browser origins. This module owns the rules — validation,
//! minting a grant's key, building its row, writing it and reloading the gateway's keyring
//! before the change is acknowledged (so a revoked key is refused from the very next
//! request). The admin API's handlers only read the request and shape the answer.

use crate::secret::NewKey;
use crate::store::{now_ms, ApplicationRow, GrantRow, Store, StoreError};

/// Whatever checks keys and must hear of every change before it is acknowledged (the
/// gateway's keyring). A trait so this module does not depend on the gateway, which
/// depends on the HTTP layer that maps this module's errors.
#[allow(async_fn_in_trait)]
pub trait Keyring {
    /// Reloads every application and grant from the store.
    async fn reload_keys(&self) -> Result<(), StoreError>;
}

/// Why a change to applications or grants was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No such application or grant; `field` names the request field that pointed at it.
    #[error("{message}")]
    NotFound { field: Option<&'static str>, message: String },
    /// A value breaks a rule; `field` is where it is (`allowed_origins[2]`).
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// The change contradicts what exists (a second grant for the same pair, a revoked
    /// grant rotated).
    #[error("{message}")]
    Conflict { field: Option<&'static str>, message: String },
    /// The operating system gave no randomness for a key.
    #[error("no randomness: {0}")]
    Randomness(getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> AccessError {
    AccessError::Invalid { field: field.into(), message: message.into() }
}

/// A grant's rate limit as the operator sets it.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests a second.
    #[schema(exclusive_minimum = 0, maximum = 1000000)]
    pub requests_per_second: f64,
    /// Requests allowed at once above the rate; the gateway's default when absent.
    pub burst: Option<u32>,
}

/// A new application, as the operator describes it.
pub struct NewApplication {
    pub name: String,
    pub description: String,
    pub organization: String,
}

pub async fn find_application(store: &Store, id_or_name: &str) -> Result<ApplicationRow, AccessError> {
    store.list_applications().await?.into_iter().find(|a| a.id == id_or_name || a.name == id_or_name).ok_or_else(|| AccessError::NotFound {
        field: None,
        message: format!("no application `{id_or_name}`; list them with `addonctl apps list`"),
    })
}

pub async fn find_grant(store: &Store, id: &str) -> Result<GrantRow, AccessError> {
    store
        .list_grants()
        .await?
        .into_iter()
        .find(|g| g.id == id || g.key_id == id)
        .ok_or_else(|| AccessError::NotFound { field: None, message: format!("no grant `{id}`; list them with `addonctl grants list`") })
}

pub async fn create_application(store: &Store, b: NewApplication) -> Result<ApplicationRow, AccessError> {
    // A display name ("모바일 앱"): the generated id is what URLs and keys carry.
    if let Err(m) = crate::model::check_display_name(&b.name) {
        return Err(invalid("name", m));
    }
    if b.description.len() > 1024 || b.organization.len() > 256 {
        return Err(invalid(
            if b.organization.len() > 256 { "organization" } else { "description" },
            "description (1024) or organization (256) too long",
        ));
    }
    let row = ApplicationRow {
        id: format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        name: b.name,
        description: b.description,
        organization: b.organization,
        created_at: now_ms(),
    };
    store.insert_application(row.clone()).await.map_err(|e| match e {
        StoreError::ApplicationNameTaken(n) => {
            AccessError::Conflict { field: Some("name"), message: format!("an application named `{n}` exists") }
        }
        e => e.into(),
    })?;
    Ok(row)
}

/// Deletes an application with its grants; their keys stop working before this returns.
pub async fn delete_application(store: &Store, gateway: &impl Keyring, id_or_name: &str) -> Result<ApplicationRow, AccessError> {
    let app = find_application(store, id_or_name).await?;
    store.delete_application(&app.id).await?;
    gateway.reload_keys().await?;
    Ok(app)
}

/// Checks a rate limit and a list of allowed origins.
pub fn check_limits(rate: &Option<RateLimit>, origins: &[String]) -> Result<(), AccessError> {
    if let Some(r) = rate {
        if !(r.requests_per_second > 0.0 && r.requests_per_second <= 1_000_000.0) {
            return Err(invalid("rate_limit.requests_per_second", "requests_per_second must be more than 0 and at most 1000000"));
        }
        if r.burst == Some(0) {
            return Err(invalid("rate_limit.burst", "burst must be at least 1"));
        }
    }
    for (i, o) in origins.iter().enumerate() {
        let ok =
            o == "*" || ((o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/') && !o.contains(char::is_whitespace));
        if !ok {
            return Err(invalid(
                format!("allowed_origins[{i}]"),
                format!("`{o}` is not an origin like https://shop.example (scheme and host, no path)"),
            ));
        }
    }
    Ok(())
}

/// Creates a grant for an application on an installed addon; the key comes back in clear
/// this once, and works before this returns.
pub async fn create_grant(
    store: &Store,
    gateway: &impl Keyring,
    application: &str,
    addon: &str,
    environment: Option<&str>,
    rate: Option<RateLimit>,
    origins: Vec<String>,
) -> Result<(GrantRow, NewKey), AccessError> {
    let app = find_application(store, application).await.map_err(|e| match e {
        AccessError::NotFound { message, .. } => AccessError::NotFound { field: Some("application"), message },
        e => e,
    })?;
    // A grant covers one environment of the addon: the instance that is that environment.
    let target = match environment {
        Some(env) => {
            crate::model::check_environment(env).map_err(|m| invalid("environment", m))?;
            crate::model::environment_instance(addon, env)
        }
        None => addon.to_string(),
    };
    if store.get_install(&target).await?.is_none() {
        return Err(match environment {
            Some(env) => AccessError::NotFound {
                field: Some("environment"),
                message: format!("`{addon}` has no environment `{env}` (no addon is installed as `{target}`)"),
            },
            None => AccessError::NotFound { field: Some("addon"), message: format!("no addon is installed as `{addon}`") },
        });
    }
    let addon = target.as_str();
    check_limits(&rate, &origins)?;
    let key = crate::secret::generate(None).map_err(AccessError::Randomness)?;
    let row = GrantRow {
        id: format!("grant_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        application_id: app.id.clone(),
        addon_instance: addon.to_string(),
        rate_per_second: rate.as_ref().map(|r| r.requests_per_second),
        burst: rate.as_ref().and_then(|r| r.burst),
        allowed_origins: origins,
        key_id: key.key_id.clone(),
        key_hash: key.hash.clone(),
        old_key_hash: None,
        old_valid_until: None,
        revoked_at: None,
        created_at: now_ms(),
        rotated_at: None,
    };
    store.insert_grant(row.clone()).await.map_err(|e| match e {
        StoreError::GrantTaken(_) => AccessError::Conflict {
            field: None,
            message: format!("`{}` already has a grant for `{addon}`; rotate its key instead", app.name),
        },
        e => e.into(),
    })?;
    gateway.reload_keys().await?;
    Ok((row, key))
}

/// Changes a grant's limits: `rate` absent keeps the current one, `Some(None)` removes it;
/// `origins` absent keeps the current list.
pub async fn update_grant(
    store: &Store,
    gateway: &impl Keyring,
    id: &str,
    rate: Option<Option<RateLimit>>,
    origins: Option<Vec<String>>,
) -> Result<GrantRow, AccessError> {
    let g = find_grant(store, id).await?;
    let rate = match rate {
        Some(r) => r,
        None => g.rate_per_second.map(|r| RateLimit { requests_per_second: r, burst: g.burst }),
    };
    let origins = origins.unwrap_or(g.allowed_origins.clone());
    check_limits(&rate, &origins)?;
    store.update_grant_limits(&g.id, rate.as_ref().map(|r| r.requests_per_second), rate.as_ref().and_then(|r| r.burst), origins).await?;
    gateway.reload_keys().await?;
    find_grant(store, &g.id).await
}

/// A new key for a grant; the old one keeps working for `grace_seconds` (0: refused from
/// the next request).
pub async fn rotate_grant(store: &Store, gateway: &impl Keyring, id: &str, grace_seconds: f64) -> Result<(GrantRow, NewKey), AccessError> {
    let g = find_grant(store, id).await?;
    if g.revoked_at.is_some() {
        return Err(AccessError::Conflict { field: None, message: "this grant is revoked; create a new grant instead".into() });
    }
    if !(0.0..=30.0 * 86_400.0).contains(&grace_seconds) {
        return Err(invalid("grace_seconds", "grace_seconds must be between 0 and 2592000"));
    }
    let key = crate::secret::generate(Some(&g.key_id)).map_err(AccessError::Randomness)?;
    let until = (grace_seconds > 0.0).then(|| now_ms() + (grace_seconds * 1000.0) as i64);
    store.rotate_grant(&g.id, key.key_id.clone(), key.hash.clone(), until).await?;
    gateway.reload_keys().await?;
    Ok((find_grant(store, &g.id).await?, key))
}

pub async fn revoke_grant(store: &Store, gateway: &impl Keyring, id: &str) -> Result<GrantRow, AccessError> {
    let g = find_grant(store, id).await?;
    store.revoke_grant(&g.id).await?;
    gateway.reload_keys().await?;
    find_grant(store, &g.id).await
}

pub async fn delete_grant(store: &Store, gateway: &impl Keyring, id: &str) -> Result<GrantRow, AccessError> {
    let g = find_grant(store, id).await?;
    store.delete_grant(&g.id).await?;
    gateway.reload_keys().await?;
    Ok(g)
}
