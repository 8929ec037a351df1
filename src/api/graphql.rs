//! GraphQL on the admin socket (`crate::graphql`, everything): `POST /graphql` runs a query
//! or mutation, `GET /graphql` upgrades to the subscriptions' WebSocket. Mutations are
//! audited like REST changes, with the fields they ran.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;

use super::*;
use crate::graphql::{Actor, AdminSchema, Mutations, Scope};

fn actor(caller: Option<&Caller>) -> Actor {
    Actor(caller.map_or_else(|| "admin".to_string(), |c| format!("uid:{}", c.uid)))
}

/// Writes the audit record of a mutation made through GraphQL (the middleware leaves
/// `/graphql` alone: most of its requests are reads).
async fn audit_mutation(st: &AppState, caller: Option<Caller>, method: &str, fields: Vec<String>, status: u16) {
    let entry = AuditEntry {
        at: now_ms(),
        uid: caller.map(|c| c.uid),
        pid: caller.and_then(|c| c.pid),
        method: method.to_string(),
        path: "/graphql".to_string(),
        status,
        detail: Some(format!("graphql mutation {}", fields.join(", "))),
        source: None,
    };
    if let Err(e) = st.lifecycle.store().audit(entry).await {
        tracing::warn!(error = %e, "cannot write audit record");
    }
}

/// Runs a GraphQL query or mutation. The answer is GraphQL's own (`data`, `errors` with a
/// `code` in each error's `extensions`), not the envelope; a body that is not a request is
/// refused with the envelope.
#[utoipa::path(post, path = "/graphql", tags = ["admin", "graphql"], request_body = crate::graphql::GraphqlBody,
    responses((status = 200, description = "GraphQL's answer: `data` and, when something failed, `errors`.", body = crate::http::openapi::GraphqlAnswer)))]
pub(super) async fn graphql_post(
    State(st): State<AppState>,
    Extension(schema): Extension<AdminSchema>,
    caller: Option<Extension<Caller>>,
    req: Request,
) -> ApiResult {
    let caller = caller.map(|Extension(c)| c);
    let limit = st.lifecycle.config().api.max_body_bytes;
    let bytes = read_body(req.into_body(), limit, "api.max_body_bytes").await?;
    let mutations = Mutations::default();
    let request = crate::graphql::request(&bytes)?.data(Scope::All).data(actor(caller.as_ref())).data(mutations.clone());
    let resp = schema.execute(request).await;
    let fields = mutations.fields();
    if !fields.is_empty() {
        // The outcome as the REST route would have answered it: the first error's status.
        let status = resp.errors.first().map_or(200, |e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("status"))
                .and_then(|s| s.clone().into_json().ok())
                .and_then(|s| s.as_u64())
                .unwrap_or(400) as u16
        });
        audit_mutation(&st, caller, "POST", fields, status).await;
    }
    Ok(crate::graphql::answer(resp))
}

/// The WebSocket of GraphQL subscriptions (`graphql-transport-ws`).
#[utoipa::path(get, path = "/graphql", tags = ["admin", "graphql"],
    responses((status = 101, description = "Switched to the WebSocket (`Sec-WebSocket-Protocol: graphql-transport-ws`)."),
        (status = 400, description = "`invalid_request`: not a WebSocket upgrade (send queries and mutations by POST).", body = crate::http::openapi::ErrorBody),
        (status = 426, description = "`invalid_request`: the connection cannot be upgraded.", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn graphql_ws(
    State(st): State<AppState>,
    Extension(schema): Extension<AdminSchema>,
    caller: Option<Extension<Caller>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    let ws = ws.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("GET /graphql is the WebSocket of GraphQL subscriptions ({e}); send queries and mutations by POST"),
        )
        .with_status(e.status())
    })?;
    let caller = caller.map(|Extension(c)| c);
    let limit = st.lifecycle.config().api.max_body_bytes;
    let shutdown = st.lifecycle.shutdown_token();
    let audit_state = st.clone();
    let audit = move |fields: Vec<String>| {
        let st = audit_state.clone();
        tokio::spawn(async move { audit_mutation(&st, caller, "WS", fields, 200).await });
    };
    Ok(crate::graphql::ws::upgrade(ws, schema, actor(caller.as_ref()), limit, shutdown, audit))
}
