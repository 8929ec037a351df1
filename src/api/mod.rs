//! The admin API on the Unix socket. This file holds the state every handler shares, the
//! request extractors they share (the caller, `?wait=`), the audit middleware and the ONE
//! list of routes ([`router`]): a new route is one line here and one handler in its area's
//! file — `services`, `addons` (and widgets), `builds`, `access` (applications, grants, audit),
//! `events`, `mcp` (registered MCP tools, and the tools `addonctl mcp` serves), `ops`
//! (health, metrics, backup, doctor) and `graphql` (`/graphql`, over `crate::graphql`).
//! Handlers are thin: the work is in the domain modules, and the envelope and error codes are in [`crate::http`].
//! [`serve`] (in `socket`) owns the peer-checked accept loop.
mod access;
mod addons;
mod builds;
mod events;
mod graphql;
mod mcp;
mod openapi;
mod ops;
mod services;
mod socket;

pub use openapi::{document as openapi_document, document_text as openapi_text};
pub use services::service_view;
pub use socket::{serve, PeerPolicy, ADMIN_REFUSED};

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::addons::deploy::{PromoteRequest, RollbackRequest, UpgradeRequest};
use crate::addons::environments::EnvironmentRequest;
use crate::addons::manifest::ManifestRequest;
use crate::addons::{Addons, InstallRequest};
use crate::http::openapi::{Success, E400, E403, E404, E409, E422, E502, E503, E504};
use crate::http::{
    frame_reply, ok, ok_json, parse_json, read_body, render_reply, ApiError, ApiResult, BodyLimit, ErrorCode, ExecuteBody, JsonBody,
    RenderBody, RenderQuery,
};
use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::model::{template, CreateRequest, Health, Phase, Service, TemplateCreateRequest, TEMPLATES};
use crate::runtime::RuntimeError;
use crate::store::{now_ms, AuditEntry};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// Services: their specs, phases and containers.
    pub lifecycle: Arc<Lifecycle>,
    /// Addons and widgets.
    pub addons: Arc<Addons>,
    /// Image builds from addon code and plugin directories.
    pub builds: Arc<crate::build::Builds>,
    /// Its keyring hears of every change to applications or grants before it is answered.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// The event log, its stream and its subscribers.
    pub events: Arc<crate::events::Events>,
    /// Where the gateway listens (its configured port may be 0 in tests).
    pub gateway_addr: Option<std::net::SocketAddr>,
    /// For `uptime_seconds` in `/health`.
    pub started: Instant,
}

/// Who is calling, from the socket's peer credentials.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The peer's uid, recorded in the audit log.
    pub uid: u32,
    /// The peer's primary gid, checked against the socket group.
    pub gid: u32,
    /// The peer's pid when the kernel knows it, for the audit log.
    pub pid: Option<i32>,
}

/// "1 service", "3 services": a success message's count.
fn count_message(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    wait: Option<String>,
    timeout: Option<f64>,
}

/// `?wait=PHASE&timeout=S`, validated before the request changes anything.
struct Wait(Option<(Phase, Duration)>);

impl FromRequestParts<AppState> for Wait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<WaitQuery>::from_request_parts(parts, st).await?;
        wait_target(q.wait.as_deref(), q.timeout, st.lifecycle.config().api.max_wait_seconds).map(Wait)
    }
}

impl Wait {
    /// Refuses a wait for a phase that `op` never leads to (`restart?wait=deleted`): it could
    /// only end in a 504 after the change was made.
    fn toward(self, phases: &[Phase], op: &str) -> Result<Self, ApiError> {
        match self.0 {
            Some((phase, _)) if !phases.contains(&phase) => {
                let want: Vec<String> = phases.iter().map(|p| p.as_str().to_ascii_lowercase()).collect();
                Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("wait={}: {op} never leads there; use wait={}", phase.as_str().to_ascii_lowercase(), want.join(" or wait=")),
                )
                .field("wait"))
            }
            _ => Ok(self),
        }
    }
}

fn wait_target(wait: Option<&str>, timeout: Option<f64>, max: u64) -> Result<Option<(Phase, Duration)>, ApiError> {
    let Some(w) = wait else { return Ok(None) };
    let phase = match w.to_ascii_lowercase().as_str() {
        "started" => Phase::Started,
        "stopped" => Phase::Stopped,
        "deleted" => Phase::Deleted,
        _ => return Err(ApiError::new(ErrorCode::InvalidQuery, format!("wait=`{w}`: use started, stopped or deleted")).field("wait")),
    };
    let t = timeout.unwrap_or(60.0);
    if !(t > 0.0 && t <= max as f64) {
        return Err(
            ApiError::new(ErrorCode::InvalidQuery, format!("timeout={t}: must be more than 0 and at most {max} seconds")).field("timeout")
        );
    }
    Ok(Some((phase, Duration::from_secs_f64(t))))
}

/// Every route of the admin API.
pub fn router(state: AppState) -> Router {
    const S: &str = "/api/plugin-microservice";
    let limit = BodyLimit(state.lifecycle.config().api.max_body_bytes, "api.max_body_bytes");
    let graphql = crate::graphql::admin_schema(state.addons.clone(), state.events.clone(), &state.lifecycle.config().graphql);
    Router::new()
        .route("/health", get(ops::daemon_health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route(&format!("{S}/services"), get(services::list_services).post(services::create_service))
        .route(&format!("{S}/services/{{id}}"), get(services::show_service).delete(services::delete_service))
        .route(&format!("{S}/services/{{id}}/start"), post(services::start_service))
        .route(&format!("{S}/services/{{id}}/stop"), post(services::stop_service))
        .route(&format!("{S}/services/{{id}}/restart"), post(services::restart_service))
        .route(&format!("{S}/services/{{id}}/scale"), post(services::scale_service))
        .route(&format!("{S}/services/{{id}}/logs"), get(services::service_logs))
        .route(&format!("{S}/services/{{id}}/metrics"), get(services::service_metrics))
        .route(&format!("{S}/discovery"), get(services::discovery))
        .route(&format!("{S}/health"), get(services::services_health))
        .route(&format!("{S}/watch"), get(services::watch_services))
        .route(&format!("{S}/templates"), get(services::list_templates))
        .route(&format!("{S}/templates/{{id}}/create"), post(services::create_from_template))
        .route(&format!("{S}/cleanup"), post(services::cleanup))
        .route(&format!("{S}/images/pull"), post(services::pull_image))
        .route("/api/addons", get(addons::addon_catalogue))
        .route("/api/addons/register", post(addons::register_addon))
        .route("/api/addons/{name}", get(addons::show_addon).delete(addons::uninstall_addon))
        .route("/api/addons/{name}/install", post(addons::install_addon))
        .route("/api/addons/{name}/builds", get(builds::list_builds).post(builds::start_build))
        .route("/api/addons/{name}/config", axum::routing::put(addons::set_addon_config))
        .route("/api/addons/{name}/start", post(addons::start_addon))
        .route("/api/addons/{name}/stop", post(addons::stop_addon))
        .route("/api/addons/{name}/restart", post(addons::restart_addon))
        .route("/api/addons/{name}/execute", post(addons::execute_action))
        .route("/api/addons/{name}/upgrade", post(addons::upgrade_addon))
        .route("/api/addons/{name}/rollback", post(addons::rollback_addon))
        .route("/api/addons/{name}/publish", post(addons::publish_addon))
        .route("/api/addons/{name}/deployments", get(addons::addon_deployments))
        .route("/api/addons/{name}/environments", get(addons::list_environments).post(addons::add_environment))
        .route("/api/addons/{name}/promote", post(addons::promote_addon))
        .route("/api/addons/{name}/schedules", get(addons::schedule_runs))
        .route("/api/widgets", get(addons::widget_catalogue))
        .route("/api/widgets/{addon}/{widget}", get(addons::render_widget_get).post(addons::render_widget_post))
        .route("/api/widgets/{addon}/{widget}/frame", get(addons::widget_frame))
        .route("/api/applications", get(access::list_applications).post(access::create_application))
        .route("/api/applications/{id}", get(access::show_application).delete(access::delete_application))
        .route("/api/application-grants", get(access::list_grants).post(access::create_grant))
        .route("/api/application-grants/{id}", get(access::show_grant).patch(access::update_grant).delete(access::delete_grant))
        .route("/api/application-grants/{id}/rotate", post(access::rotate_grant))
        .route("/api/application-grants/{id}/revoke", post(access::revoke_grant))
        .route("/api/events", get(events::list_events).post(events::emit_event))
        .route("/api/events/stream", get(events::event_stream))
        .route("/api/events/subscribers", get(events::event_subscribers))
        .route("/api/events/redrive", post(events::redrive_events))
        .route("/api/ai-gateway/mcp-tools", get(mcp::list_registered).post(mcp::create_registered))
        .route("/api/ai-gateway/mcp-tools/{name}", get(mcp::show_registered).delete(mcp::delete_registered))
        .route("/api/ai-gateway/tools", get(mcp::list_tools))
        .route("/api/ai-gateway/tools/{name}/call", post(mcp::call_tool))
        .route("/api/audit", get(access::audit_log))
        .route("/api/backup", post(ops::backup_archive))
        .route("/api/doctor", get(ops::doctor_report))
        .route("/graphql", get(graphql::graphql_ws).post(graphql::graphql_post))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), audit))
        .layer(Extension(limit))
        .layer(Extension(graphql))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.uri().path()))
}

/// Records every change (any method but GET/HEAD) with the caller and the outcome.
async fn audit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // Reads change nothing. Emitted events are their own durable log (with the caller's uid
    // as source), and widget renders by POST are reads: auditing them would only put a
    // second write on the hot path. GraphQL audits its mutations itself (most of its POSTs
    // are reads).
    let path = req.uri().path();
    let not_a_change = method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && (path == "/api/events" || path == "/graphql" || path.starts_with("/api/widgets/")));
    if not_a_change {
        return next.run(req).await;
    }
    let caller = req.extensions().get::<Caller>().copied();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let entry = AuditEntry {
        at: now_ms(),
        uid: caller.map(|c| c.uid),
        pid: caller.and_then(|c| c.pid),
        method: method.to_string(),
        path,
        status: resp.status().as_u16(),
        detail: None,
        source: None,
    };
    if let Err(e) = st.lifecycle.store().audit(entry).await {
        tracing::warn!(error = %e, "cannot write audit record");
    }
    resp
}
