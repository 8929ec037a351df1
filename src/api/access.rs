//! Applications, their grants (API keys for the gateway) and the audit log. Creating and
//! changing them is [`crate::access`]'s job; these handlers read the request, call it and
//! shape the answer.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<u32>,
}

pub(super) async fn audit_log(State(st): State<AppState>, q: Result<Query<AuditQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let list = st.lifecycle.store().list_audit(q.limit.unwrap_or(100).min(10_000)).await?;
    ok(StatusCode::OK, serde_json::to_value(list).unwrap_or(Value::Null), "")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplicationBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    organization: String,
}

pub(super) fn app_view(a: &crate::store::ApplicationRow, grants: &[crate::store::GrantRow]) -> Value {
    json!({
        "id": a.id, "name": a.name, "description": a.description, "organization": a.organization,
        "created_at": ms_to_rfc3339(a.created_at),
        "grants": grants.iter().filter(|g| g.application_id == a.id).map(grant_view).collect::<Vec<_>>(),
    })
}

pub(super) fn grant_view(g: &crate::store::GrantRow) -> Value {
    json!({
        "id": g.id, "application_id": g.application_id, "addon": g.addon_instance,
        "key_prefix": format!("ak_{}_…", g.key_id),
        "rate_limit": g.rate_per_second.map(|r| json!({"requests_per_second": r, "burst": g.burst})),
        "allowed_origins": g.allowed_origins,
        "status": if g.revoked_at.is_some() { "revoked" } else { "active" },
        "revoked_at": g.revoked_at.map(ms_to_rfc3339),
        "rotated_at": g.rotated_at.map(ms_to_rfc3339),
        "old_key_valid_until": g.old_valid_until.filter(|t| *t > now_ms()).map(ms_to_rfc3339),
        "created_at": ms_to_rfc3339(g.created_at),
    })
}

pub(super) async fn find_application(st: &AppState, id_or_name: &str) -> Result<crate::store::ApplicationRow, ApiError> {
    st.lifecycle.store().list_applications().await?.into_iter().find(|a| a.id == id_or_name || a.name == id_or_name).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound,  format!("no application `{id_or_name}`; list them with `addonctl apps list`"))
    })
}

pub(super) async fn find_grant(st: &AppState, id: &str) -> Result<crate::store::GrantRow, ApiError> {
    st.lifecycle.store().list_grants().await?.into_iter().find(|g| g.id == id || g.key_id == id).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound,  format!("no grant `{id}`; list them with `addonctl grants list`"))
    })
}

/// The keyring must know about a change before the change is acknowledged.
pub(super) async fn reload_keys(st: &AppState) -> Result<(), ApiError> {
    st.gateway.reload_keys().await.map_err(ApiError::from)
}

pub(super) async fn list_applications(State(st): State<AppState>) -> ApiResult {
    let apps = st.lifecycle.store().list_applications().await?;
    let grants = st.lifecycle.store().list_grants().await?;
    ok(StatusCode::OK, Value::Array(apps.iter().map(|a| app_view(a, &grants)).collect()), &format!("{} application(s)", apps.len()))
}

pub(super) async fn create_application(State(st): State<AppState>, JsonBody(b): JsonBody<ApplicationBody>) -> ApiResult {
    if !crate::model::valid_name(&b.name) {
        return Err(ApiError::new(ErrorCode::ValidationFailed,  format!("`{}`: 1–63 lowercase letters, digits and `-`", b.name)).field("name"));
    }
    if b.description.len() > 1024 || b.organization.len() > 256 {
        return Err(ApiError::new(ErrorCode::ValidationFailed,  "description (1024) or organization (256) too long").field(if b.organization.len() > 256 { "organization" } else { "description" }));
    }
    let row = crate::store::ApplicationRow {
        id: format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        name: b.name,
        description: b.description,
        organization: b.organization,
        created_at: now_ms(),
    };
    st.lifecycle.store().insert_application(row.clone()).await.map_err(|e| match e {
        StoreError::NameTaken(n) => ApiError::new(ErrorCode::Conflict,  format!("an application named `{n}` exists")).field("name"),
        e => e.into(),
    })?;
    ok(StatusCode::CREATED, app_view(&row, &[]), "application created")
}

pub(super) async fn show_application(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let app = find_application(&st, &id).await?;
    let grants = st.lifecycle.store().list_grants().await?;
    ok(StatusCode::OK, app_view(&app, &grants), "")
}

pub(super) async fn delete_application(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let app = find_application(&st, &id).await?;
    st.lifecycle.store().delete_application(&app.id).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, json!({"id": app.id, "name": app.name}), "application and its grants deleted; their keys stop working now")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitBody {
    requests_per_second: f64,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    application: String,
    addon: String,
    rate_limit: Option<RateLimitBody>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

pub(super) fn check_limits(rate: &Option<RateLimitBody>, origins: &[String]) -> Result<(), ApiError> {
    if let Some(r) = rate {
        if !(r.requests_per_second > 0.0 && r.requests_per_second <= 1_000_000.0) {
            return Err(ApiError::new(ErrorCode::ValidationFailed,  "requests_per_second must be more than 0 and at most 1000000").field("rate_limit.requests_per_second"));
        }
        if r.burst == Some(0) {
            return Err(ApiError::new(ErrorCode::ValidationFailed,  "burst must be at least 1").field("rate_limit.burst"));
        }
    }
    for (i, o) in origins.iter().enumerate() {
        let ok = o == "*" || ((o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/') && !o.contains(char::is_whitespace));
        if !ok {
            return Err(ApiError::new(ErrorCode::ValidationFailed,  format!("`{o}` is not an origin like https://shop.example (scheme and host, no path)")).field(format!("allowed_origins[{i}]")));
        }
    }
    Ok(())
}

pub(super) async fn list_grants(State(st): State<AppState>, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let app = match q.get("application") {
        Some(a) => Some(find_application(&st, a).await?.id),
        None => None,
    };
    let grants = st.lifecycle.store().list_grants().await?;
    let list: Vec<Value> = grants.iter().filter(|g| app.as_ref().is_none_or(|a| &g.application_id == a)).map(grant_view).collect();
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{n} grant(s)"))
}

/// Creates a grant and returns its key, in clear, this once.
pub(super) async fn create_grant(State(st): State<AppState>, JsonBody(b): JsonBody<GrantBody>) -> ApiResult {
    let app = find_application(&st, &b.application).await.map_err(|e| e.field("application"))?;
    if st.lifecycle.store().get_install(&b.addon).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound,  format!("no addon is installed as `{}`", b.addon)).field("addon"));
    }
    check_limits(&b.rate_limit, &b.allowed_origins)?;
    let key = crate::secret::generate(None).map_err(|e| ApiError::new(ErrorCode::Internal,  format!("no randomness: {e}")))?;
    let row = crate::store::GrantRow {
        id: format!("grant_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        application_id: app.id.clone(),
        addon_instance: b.addon.clone(),
        rate_per_second: b.rate_limit.as_ref().map(|r| r.requests_per_second),
        burst: b.rate_limit.as_ref().and_then(|r| r.burst),
        allowed_origins: b.allowed_origins,
        key_id: key.key_id.clone(),
        key_hash: key.hash,
        old_key_hash: None,
        old_valid_until: None,
        revoked_at: None,
        created_at: now_ms(),
        rotated_at: None,
    };
    st.lifecycle.store().insert_grant(row.clone()).await.map_err(|e| match e {
        StoreError::NameTaken(_) => ApiError::new(ErrorCode::Conflict,  format!("`{}` already has a grant for `{}`; rotate its key instead", app.name, b.addon)),
        e => e.into(),
    })?;
    reload_keys(&st).await?;
    let mut v = grant_view(&row);
    v["api_key"] = json!(key.full);
    ok(StatusCode::CREATED, v, "grant created; store api_key now: it is never shown again")
}

pub(super) async fn show_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    ok(StatusCode::OK, grant_view(&find_grant(&st, &id).await?), "")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantUpdate {
    /// Absent: unchanged; `null`: no rate limit; an object: the new limit.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<RateLimitBody>>,
    allowed_origins: Option<Vec<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
pub(super) fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

pub(super) async fn update_grant(State(st): State<AppState>, Path(id): Path<String>, JsonBody(b): JsonBody<GrantUpdate>) -> ApiResult {
    let g = find_grant(&st, &id).await?;
    let rate = match b.rate_limit {
        Some(r) => r,
        None => g.rate_per_second.map(|r| RateLimitBody { requests_per_second: r, burst: g.burst }),
    };
    let origins = b.allowed_origins.unwrap_or(g.allowed_origins.clone());
    check_limits(&rate, &origins)?;
    st.lifecycle.store().update_grant_limits(&g.id, rate.as_ref().map(|r| r.requests_per_second), rate.as_ref().and_then(|r| r.burst), origins).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, grant_view(&find_grant(&st, &g.id).await?), "grant updated")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    grace_seconds: Option<f64>,
}

/// A new key for a grant; the old one keeps working for the grace period (default from
/// config, 0: refused from the next request).
pub(super) async fn rotate_grant(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> ApiResult {
    let bytes = read_body(req.into_body(), 64 * 1024, "64 KiB for this route").await?;
    let b: RotateBody = if bytes.iter().all(|c| c.is_ascii_whitespace()) { RotateBody::default() } else { parse_json(&bytes)? };
    let g = find_grant(&st, &id).await?;
    if g.revoked_at.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict,  "this grant is revoked; create a new grant instead"));
    }
    let grace = b.grace_seconds.unwrap_or(st.lifecycle.config().gateway.rotation_grace_seconds);
    if !(0.0..=30.0 * 86_400.0).contains(&grace) {
        return Err(ApiError::new(ErrorCode::ValidationFailed,  "grace_seconds must be between 0 and 2592000").field("grace_seconds"));
    }
    let key = crate::secret::generate(Some(&g.key_id)).map_err(|e| ApiError::new(ErrorCode::Internal,  format!("no randomness: {e}")))?;
    let until = (grace > 0.0).then(|| now_ms() + (grace * 1000.0) as i64);
    st.lifecycle.store().rotate_grant(&g.id, key.key_id.clone(), key.hash, until).await?;
    reload_keys(&st).await?;
    let mut v = grant_view(&find_grant(&st, &g.id).await?);
    v["api_key"] = json!(key.full);
    ok(StatusCode::OK, v, "key rotated; store api_key now: it is never shown again")
}

pub(super) async fn revoke_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let g = find_grant(&st, &id).await?;
    st.lifecycle.store().revoke_grant(&g.id).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, grant_view(&find_grant(&st, &g.id).await?), "grant revoked; its key is refused from now on")
}

pub(super) async fn delete_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let g = find_grant(&st, &id).await?;
    st.lifecycle.store().delete_grant(&g.id).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, json!({"id": g.id}), "grant deleted")
}
