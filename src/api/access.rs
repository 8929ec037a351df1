//! Applications, their grants (API keys for the gateway) and the audit log. Creating and
//! changing them is [`crate::access`]'s job; these handlers read the request, call it and
//! shape the answer.

use super::*;
use crate::access::{self, RateLimit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/audit", tags = ["admin", "operations"], params(("limit" = Option<i64>, Query, minimum = 0, maximum = 4294967295.0, description = "At most this many (default 100).")), responses((status = 200, description = "The audit log, newest first.", body = super::openapi::AuditAnswer)))]
pub(super) async fn audit_log(State(st): State<AppState>, q: Result<Query<AuditQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let list = st.lifecycle.store().list_audit(q.limit.unwrap_or(100).min(10_000)).await?;
    let msg = count_message(list.len(), "audit entry", "audit entries");
    ok(StatusCode::OK, serde_json::to_value(list).unwrap_or(Value::Null), &msg)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
        "id": g.id, "application_id": g.application_id, "addon": crate::model::split_environment(&g.addon_instance).0,
        "environment": crate::model::split_environment(&g.addon_instance).1, "instance": g.addon_instance,
        "grantId": g.id, "applicationId": g.application_id, "credentialId": g.key_id,
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

#[utoipa::path(get, path = "/api/applications", tags = ["admin", "applications"], responses((status = 200, description = "The applications with their grants.", body = super::openapi::ApplicationListAnswer)))]
pub(super) async fn list_applications(State(st): State<AppState>) -> ApiResult {
    let apps = st.lifecycle.store().list_applications().await?;
    let grants = st.lifecycle.store().list_grants().await?;
    ok(StatusCode::OK, Value::Array(apps.iter().map(|a| app_view(a, &grants)).collect()), &format!("{} application(s)", apps.len()))
}

#[utoipa::path(post, path = "/api/applications", tags = ["admin", "applications"], request_body = ApplicationBody, responses((status = 201, description = "The application.", body = super::openapi::ApplicationAnswer), E409))]
pub(super) async fn create_application(State(st): State<AppState>, JsonBody(b): JsonBody<ApplicationBody>) -> ApiResult {
    let new = access::NewApplication { name: b.name, description: b.description, organization: b.organization };
    let row = access::create_application(st.lifecycle.store(), new).await?;
    ok(StatusCode::CREATED, app_view(&row, &[]), "application created")
}

#[utoipa::path(get, path = "/api/applications/{id}", tags = ["admin", "applications"], params(("id" = String, Path, description = "The application's id or name.")), responses((status = 200, description = "The application with its grants.", body = super::openapi::ApplicationAnswer), E404))]
pub(super) async fn show_application(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let app = access::find_application(st.lifecycle.store(), &id).await?;
    let grants = st.lifecycle.store().list_grants().await?;
    ok(StatusCode::OK, app_view(&app, &grants), &format!("application {}", app.name))
}

#[utoipa::path(delete, path = "/api/applications/{id}", tags = ["admin", "applications"], params(("id" = String, Path, description = "The application's id or name.")), responses((status = 200, description = "The deleted application's id and name.", body = super::openapi::DeletedAnswer), E404))]
pub(super) async fn delete_application(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let app = access::delete_application(st.lifecycle.store(), st.gateway.as_ref(), &id).await?;
    ok(StatusCode::OK, json!({"id": app.id, "name": app.name}), "application and its grants deleted; their keys stop working now")
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    #[serde(alias = "applicationId")]
    application: String,
    #[serde(alias = "gatewayId")]
    addon: String,
    /// The environment of the addon the key reaches (default `prod`).
    environment: Option<String>,
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[utoipa::path(get, path = "/api/application-grants", tags = ["admin", "grants"], params(("application" = Option<String>, Query, description = "Only this application's grants."), ("addon" = Option<String>, Query, description = "Only grants for this addon.")), responses((status = 200, description = "The grants.", body = super::openapi::GrantListAnswer), E404))]
pub(super) async fn list_grants(State(st): State<AppState>, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let app = match q.get("application") {
        Some(a) => Some(access::find_application(st.lifecycle.store(), a).await?.id),
        None => None,
    };
    let grants = st.lifecycle.store().list_grants().await?;
    let list: Vec<Value> = grants.iter().filter(|g| app.as_ref().is_none_or(|a| &g.application_id == a)).map(grant_view).collect();
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{n} grant(s)"))
}

/// Creates a grant and returns its key, in clear, this once.
#[utoipa::path(post, path = "/api/application-grants", tags = ["admin", "grants"], request_body = GrantBody, responses((status = 201, description = "The grant with its `api_key`, shown only this once.", body = super::openapi::GrantKeyAnswer), E404, E409))]
pub(super) async fn create_grant(State(st): State<AppState>, JsonBody(b): JsonBody<GrantBody>) -> ApiResult {
    let (row, key) = access::create_grant(
        st.lifecycle.store(),
        st.gateway.as_ref(),
        &b.application,
        &b.addon,
        b.environment.as_deref(),
        b.rate_limit,
        b.allowed_origins,
    )
    .await?;
    let mut v = grant_view(&row);
    v["api_key"] = json!(key.full);
    v["apiKey"] = json!(key.full);
    ok(StatusCode::CREATED, v, "grant created; store api_key now: it is never shown again")
}

#[utoipa::path(get, path = "/api/application-grants/{id}", tags = ["admin", "grants"], params(("id" = String, Path, description = "The grant's id.")), responses((status = 200, description = "The grant.", body = super::openapi::GrantAnswer), E404))]
pub(super) async fn show_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    ok(StatusCode::OK, grant_view(&access::find_grant(st.lifecycle.store(), &id).await?), &format!("grant {id}"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantUpdate {
    /// Absent: unchanged; `null`: no rate limit; an object: the new limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimit>, nullable)]
    rate_limit: Option<Option<RateLimit>>,
    allowed_origins: Option<Vec<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
pub(super) fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[utoipa::path(patch, path = "/api/application-grants/{id}", tags = ["admin", "grants"], params(("id" = String, Path, description = "The grant's id.")), request_body = GrantUpdate, responses((status = 200, description = "The grant, updated.", body = super::openapi::GrantAnswer), E404))]
pub(super) async fn update_grant(State(st): State<AppState>, Path(id): Path<String>, JsonBody(b): JsonBody<GrantUpdate>) -> ApiResult {
    let g = access::update_grant(st.lifecycle.store(), st.gateway.as_ref(), &id, b.rate_limit, b.allowed_origins).await?;
    ok(StatusCode::OK, grant_view(&g), "grant updated")
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    grace_seconds: Option<f64>,
}

/// A new key for a grant; the old one keeps working for the grace period (default from
/// config, 0: refused from the next request).
#[utoipa::path(post, path = "/api/application-grants/{id}/rotate", tags = ["admin", "grants"], params(("id" = String, Path, description = "The grant's id.")), request_body = Option<RotateBody>, responses((status = 200, description = "The grant with its new `api_key`, shown only this once.", body = super::openapi::GrantKeyAnswer), E404))]
pub(super) async fn rotate_grant(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> ApiResult {
    let bytes = read_body(req.into_body(), 64 * 1024, "64 KiB for this route").await?;
    let b: RotateBody = if bytes.iter().all(|c| c.is_ascii_whitespace()) { RotateBody::default() } else { parse_json(&bytes)? };
    let grace = b.grace_seconds.unwrap_or(st.lifecycle.config().gateway.rotation_grace_seconds);
    let (g, key) = access::rotate_grant(st.lifecycle.store(), st.gateway.as_ref(), &id, grace).await?;
    let mut v = grant_view(&g);
    v["api_key"] = json!(key.full);
    v["apiKey"] = json!(key.full);
    ok(StatusCode::OK, v, "key rotated; store api_key now: it is never shown again")
}

#[utoipa::path(post, path = "/api/application-grants/{id}/revoke", tags = ["admin", "grants"], params(("id" = String, Path, description = "The grant's id.")), responses((status = 200, description = "The grant, revoked.", body = super::openapi::GrantAnswer), E404))]
pub(super) async fn revoke_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let g = access::revoke_grant(st.lifecycle.store(), st.gateway.as_ref(), &id).await?;
    ok(StatusCode::OK, grant_view(&g), "grant revoked; its key is refused from now on")
}

#[utoipa::path(delete, path = "/api/application-grants/{id}", tags = ["admin", "grants"], params(("id" = String, Path, description = "The grant's id.")), responses((status = 200, description = "The deleted grant's id.", body = super::openapi::DeletedAnswer), E404))]
pub(super) async fn delete_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let g = access::delete_grant(st.lifecycle.store(), st.gateway.as_ref(), &id).await?;
    ok(StatusCode::OK, json!({"id": g.id}), "grant deleted")
}
