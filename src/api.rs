//! The admin API on the Unix socket: every route is listed in [`router`], handlers are
//! plain async fns, and [`ApiError`] is the one mapping from any failure to the JSON
//! envelope of PRODUCT.md. [`serve`] owns the accept loop: it checks each peer's
//! credentials (SO_PEERCRED) before reading a byte of its request, tags the request with
//! the caller for the audit log, and drains connections on shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::addons::dispatch::DispatchError;
use crate::addons::manifest::ManifestRequest;
use crate::addons::{AddonError, Addons, InstallRequest};
use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::model::{template, CreateRequest, FieldError, Health, Phase, Service, TemplateCreateRequest, TEMPLATES};
use crate::ports::PortError;
use crate::runtime::RuntimeError;
use crate::store::{now_ms, AuditEntry, StoreError};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub lifecycle: Arc<Lifecycle>,
    pub addons: Arc<Addons>,
    pub gateway: Arc<crate::gateway::Gateway>,
    pub events: Arc<crate::events::Events>,
    /// Where the gateway listens (its configured port may be 0 in tests).
    pub gateway_addr: Option<std::net::SocketAddr>,
    /// For `uptime_seconds` in `/health`.
    pub started: Instant,
}

/// Who is calling, from the socket's peer credentials.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

// ---- errors and envelopes -------------------------------------------------------------

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }
    fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }

    /// Names the request field the error is about.
    pub fn field_name(self, f: impl Into<String>) -> Self {
        self.field(f)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            err["field"] = Value::String(f);
        }
        (self.status, axum::Json(json!({"success": false, "error": err}))).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message).field(e.field)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken(_) | StoreError::ApplicationNameTaken(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()).field("name"),
            StoreError::GrantTaken(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            StoreError::PortTaken(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            StoreError::DiskFull { .. } => {
                tracing::error!(error = %e, "database write refused: disk full");
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", e.to_string())
            }
            e => {
                tracing::error!(error = %e, "database error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e}; see the daemon log"))
            }
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use LifecycleError as L;
        match e {
            L::Store(e) => e.into(),
            L::Runtime(RuntimeError::Unavailable(_) | RuntimeError::Unresponsive { .. }) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "docker_unavailable", e.to_string()),
            L::Runtime(RuntimeError::ImageNotFound { .. }) => ApiError::new(StatusCode::NOT_FOUND, "image_not_found", e.to_string()).field("image"),
            L::Runtime(RuntimeError::InvalidVolume(m)) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_volume", m).field("volumes"),
            L::Runtime(RuntimeError::Api(m)) => ApiError::new(StatusCode::BAD_GATEWAY, "docker_error", m),
            L::Runtime(RuntimeError::NoSubnet(m)) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "subnets_exhausted", m),
            L::Ports(p @ PortError::Exhausted { .. }) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ports_exhausted", p.to_string()),
            L::Ports(p) => ApiError::new(StatusCode::CONFLICT, "conflict", p.to_string()).field("host_port"),
            L::NotFound(what) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no service `{what}`; list them with `addonctl services list`")),
            L::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            L::Failed { .. } => ApiError::new(StatusCode::BAD_GATEWAY, "service_failed", e.to_string()),
            L::WaitTimeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "wait_timeout", e.to_string()),
        }
    }
}

impl From<AddonError> for ApiError {
    fn from(e: AddonError) -> Self {
        match e {
            AddonError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            AddonError::Invalid(f) => f.into(),
            AddonError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AddonError::Lifecycle(l) => l.into(),
            AddonError::Store(s) => s.into(),
            AddonError::Dispatch(d @ (DispatchError::NoHealthy(_) | DispatchError::AllOpen(_))) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_healthy_instance", d.to_string()),
            AddonError::Dispatch(d @ DispatchError::Timeout(_)) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", d.to_string()),
            AddonError::Dispatch(d @ DispatchError::Upstream(_)) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", d.to_string()),
            AddonError::Addon { message, .. } => ApiError::new(StatusCode::BAD_GATEWAY, "addon_error", message),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        let text = e.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("the query string is not valid ({text}); send only this route's parameters, each with a value of its type"))
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn ok(status: StatusCode, data: Value, message: &str) -> ApiResult {
    Ok((status, axum::Json(json!({"success": true, "data": data, "message": message}))).into_response())
}

/// The success envelope around `data`, JSON text that is already known to be valid (an
/// addon's answer), spliced in without being parsed again.
pub(crate) fn ok_json(status: StatusCode, data: &[u8], message: &str) -> ApiResult {
    let message = serde_json::to_string(message).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut out = Vec::with_capacity(data.len() + message.len() + 40);
    out.extend_from_slice(b"{\"success\":true,\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"message\":");
    out.extend_from_slice(message.as_bytes());
    out.push(b'}');
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], out).into_response())
}

/// A JSON body read with the configured size limit and parsed so that a wrong shape names
/// the field at fault.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().copied().unwrap_or(BodyLimit(1 << 20, "api.max_body_bytes"));
        let bytes = read_body(req.into_body(), limit.0, limit.1).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a whole request body of at most `limit` bytes (`limit_key`: the setting that says
/// so): 413 when it is larger, 408 when it does not arrive in time, 400 when its framing is
/// broken (a malformed chunk).
pub(crate) async fn read_body(body: Body, limit: usize, limit_key: &str) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| body_read_error(&e, limit as u64, limit_key))
}

/// The answer for a request body that could not be read (see [`read_body`]).
pub(crate) fn body_read_error(e: &(dyn std::error::Error + 'static), limit: u64, limit_key: &str) -> ApiError {
    use crate::connections::{body_failure, error_chain, BodyFailure};
    match body_failure(e) {
        BodyFailure::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body is larger than {limit} bytes ({limit_key}); send a smaller body")).field("body"),
        BodyFailure::Timeout => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("{}; send the whole body right after the request head", error_chain(e).rsplit(": ").next().unwrap_or("the request body did not arrive in time")),
        )
        .field("body"),
        BodyFailure::Malformed => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the request body could not be read ({}); frame it with one Content-Length or with valid chunked encoding", error_chain(e)),
        )
        .field("body"),
    }
}

/// Parses a JSON body so that a wrong shape names the field at fault, and refuses anything
/// after the JSON value.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the request needs a JSON body: send a JSON object like {\"name\": \"…\"}").field("body"));
    }
    // Every route takes an object; serde would also read a struct from an array by position,
    // which only makes for confusing messages.
    if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()).filter(|b| **b != b'{') {
        let shape = match first {
            b'[' => "an array",
            b'"' => "a string",
            b'-' | b'0'..=b'9' => "a number",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            _ => "not JSON",
        };
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid request body: it is {shape}; send a JSON object like {{\"name\": \"…\"}}")).field("body"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(bytes, &path, e.inner())
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid request body: it goes on after its JSON value (at byte {}); send exactly one JSON object and nothing after it", json_error_offset(bytes, &e)),
        )
        .field("body")
    })?;
    Ok(value)
}

/// Where (0-based byte offset) a serde_json error points, from its line and column.
fn json_error_offset(bytes: &[u8], e: &serde_json::Error) -> usize {
    let mut line = 1;
    let mut offset = 0;
    for (i, b) in bytes.iter().enumerate() {
        if line == e.line() {
            offset = i;
            break;
        }
        if *b == b'\n' {
            line += 1;
        }
        offset = i + 1;
    }
    (offset + e.column()).saturating_sub(1).min(bytes.len())
}

/// A serde_json error's own text without its ` at line L column C` suffix.
pub(crate) fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

/// The 400 for a body that is not the JSON the route takes: syntax errors say where, data
/// errors name the field (see [`FieldError::from_serde`]).
fn json_error(bytes: &[u8], path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let path = path.trim_end_matches('?').trim_end_matches('.');
    let field = if path.is_empty() { "body".to_string() } else { path.to_string() };
    match e.classify() {
        Category::Eof => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid request body: it ends in the middle of its JSON (after {} byte{}); send a complete JSON object", bytes.len(), if bytes.len() == 1 { "" } else { "s" }),
        )
        .field(field),
        Category::Syntax | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid request body: not valid JSON at byte {} ({}); send a JSON object like {{\"name\": \"…\"}}", json_error_offset(bytes, e), json_error_text(e)),
        )
        .field(field),
        Category::Data => {
            let f = FieldError::from_serde(path, &json_error_text(e));
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid request body: {}", f.message)).field(f.field)
        }
    }
}

/// The body limit of a router's routes and the setting that sets it.
#[derive(Clone, Copy)]
pub(crate) struct BodyLimit(pub usize, pub &'static str);

// ---- routes ---------------------------------------------------------------------------

/// Every route of the admin API.
pub fn router(state: AppState) -> Router {
    const S: &str = "/api/plugin-microservice";
    let limit = BodyLimit(state.lifecycle.config().api.max_body_bytes, "api.max_body_bytes");
    Router::new()
        .route("/health", get(daemon_health))
        .route("/metrics", get(metrics))
        .route(&format!("{S}/services"), get(list_services).post(create_service))
        .route(&format!("{S}/services/{{id}}"), get(show_service).delete(delete_service))
        .route(&format!("{S}/services/{{id}}/start"), post(start_service))
        .route(&format!("{S}/services/{{id}}/stop"), post(stop_service))
        .route(&format!("{S}/services/{{id}}/restart"), post(restart_service))
        .route(&format!("{S}/services/{{id}}/scale"), post(scale_service))
        .route(&format!("{S}/services/{{id}}/logs"), get(service_logs))
        .route(&format!("{S}/services/{{id}}/metrics"), get(service_metrics))
        .route(&format!("{S}/discovery"), get(discovery))
        .route(&format!("{S}/health"), get(services_health))
        .route(&format!("{S}/watch"), get(watch_services))
        .route(&format!("{S}/templates"), get(list_templates))
        .route(&format!("{S}/templates/{{id}}/create"), post(create_from_template))
        .route(&format!("{S}/cleanup"), post(cleanup))
        .route(&format!("{S}/images/pull"), post(pull_image))
        .route("/api/addons", get(addon_catalogue))
        .route("/api/addons/register", post(register_addon))
        .route("/api/addons/{name}", get(show_addon).delete(uninstall_addon))
        .route("/api/addons/{name}/install", post(install_addon))
        .route("/api/addons/{name}/config", axum::routing::put(set_addon_config))
        .route("/api/addons/{name}/start", post(start_addon))
        .route("/api/addons/{name}/stop", post(stop_addon))
        .route("/api/addons/{name}/restart", post(restart_addon))
        .route("/api/addons/{name}/execute", post(execute_action))
        .route("/api/addons/{name}/schedules", get(schedule_runs))
        .route("/api/widgets", get(widget_catalogue))
        .route("/api/widgets/{addon}/{widget}", get(render_widget_get).post(render_widget_post))
        .route("/api/widgets/{addon}/{widget}/frame", get(widget_frame))
        .route("/api/applications", get(list_applications).post(create_application))
        .route("/api/applications/{id}", get(show_application).delete(delete_application))
        .route("/api/application-grants", get(list_grants).post(create_grant))
        .route("/api/application-grants/{id}", get(show_grant).patch(update_grant).delete(delete_grant))
        .route("/api/application-grants/{id}/rotate", post(rotate_grant))
        .route("/api/application-grants/{id}/revoke", post(revoke_grant))
        .route("/api/events", get(list_events).post(emit_event))
        .route("/api/events/stream", get(event_stream))
        .route("/api/events/subscribers", get(event_subscribers))
        .route("/api/events/redrive", post(redrive_events))
        .route("/api/audit", get(audit_log))
        .route("/api/backup", post(backup_archive))
        .route("/api/doctor", get(doctor_report))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), audit))
        .layer(Extension(limit))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{} is not allowed on {}", req.method(), req.uri().path()))
}

/// Records every change (any method but GET/HEAD) with the caller and the outcome.
async fn audit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // Reads change nothing. Emitted events are their own durable log (with the caller's uid
    // as source), and widget renders by POST are reads: auditing them would only put a
    // second write on the hot path.
    let path = req.uri().path();
    let not_a_change = method == Method::GET || method == Method::HEAD || (method == Method::POST && (path == "/api/events" || path.starts_with("/api/widgets/")));
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

// ---- views ----------------------------------------------------------------------------

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

fn health_summary(s: &Service) -> Health {
    let wanted: Vec<_> = s.instances.iter().filter(|i| i.wanted).collect();
    if s.phase == Phase::Failed {
        Health::Unhealthy
    } else if wanted.is_empty() || s.desired != crate::model::Desired::Started {
        Health::Unknown
    } else if wanted.iter().any(|i| i.health == Health::Unhealthy) {
        Health::Unhealthy
    } else if wanted.iter().all(|i| i.health == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Starting
    }
}

fn status_of(s: &Service) -> &'static str {
    let wanted = s.instances.iter().filter(|i| i.wanted).count();
    let running = s.instances.iter().filter(|i| i.wanted && i.container_id.is_some() && i.health != Health::Unknown).count();
    match s.phase {
        Phase::Failed => "failed",
        Phase::Stopped | Phase::Deleted => "stopped",
        _ if wanted > 0 && running == wanted => "running",
        _ if running > 0 => "partial",
        Phase::Started => "running",
        _ => "pending",
    }
}

fn endpoint(st: &AppState, port: u16) -> String {
    let addr = st.lifecycle.config().ports.publish_address;
    let host = if addr.is_unspecified() { "127.0.0.1".to_string() } else { addr.to_string() };
    format!("http://{host}:{port}")
}

fn instance_state(s: &Service, i: &crate::model::Instance) -> &'static str {
    if !i.wanted {
        "removing"
    } else if i.container_id.is_none() {
        "pending"
    } else if s.phase == Phase::Failed || i.next_restart_at.is_some() {
        "exited"
    } else if s.desired == crate::model::Desired::Started {
        "running"
    } else {
        "stopped"
    }
}

pub fn service_view(st: &AppState, s: &Service) -> Value {
    let spec = &s.spec;
    let wanted: Vec<_> = s.instances.iter().filter(|i| i.wanted).collect();
    let first_port = wanted.first().map(|i| i.host_port);
    json!({
        "id": s.id,
        "name": spec.name,
        "plugin_id": spec.plugin_id,
        "service_type": spec.service_type,
        "image": spec.image,
        "port": spec.port,
        "host": st.lifecycle.config().ports.publish_address.to_string(),
        "environment": spec.environment,
        "volumes": spec.volumes,
        "networks": spec.networks,
        "depends_on": spec.depends_on,
        "health_check": spec.health_check,
        "resource_limits": spec.resource_limits,
        "restart_policy": spec.restart_policy,
        "version": spec.version,
        "replicas": s.replicas,
        "desired": s.desired.as_str(),
        "phase": s.phase.as_str(),
        "status": status_of(s),
        "health_status": health_summary(s).as_str(),
        "host_port": first_port,
        "endpoint": first_port.map(|p| endpoint(st, p)),
        "last_error": s.last_error,
        "exit_code": s.exit_code,
        "created_at": ms_to_rfc3339(s.created_at),
        "updated_at": ms_to_rfc3339(s.updated_at),
        "instances": s.instances.iter().map(|i| json!({
            "id": i.id,
            "ordinal": i.ordinal,
            "container_id": i.container_id,
            "container_name": i.container_name(),
            "host_port": i.host_port,
            "health": i.health.as_str(),
            "restarts": i.restarts,
            "started_at": i.started_at.map(ms_to_rfc3339),
            "last_error": i.last_error,
            "exit_code": i.exit_code,
            "state": instance_state(s, i),
        })).collect::<Vec<_>>(),
    })
}

// ---- handlers -------------------------------------------------------------------------

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

fn wait_target(wait: Option<&str>, timeout: Option<f64>, max: u64) -> Result<Option<(Phase, Duration)>, ApiError> {
    let Some(w) = wait else { return Ok(None) };
    let phase = match w.to_ascii_lowercase().as_str() {
        "started" => Phase::Started,
        "stopped" => Phase::Stopped,
        "deleted" => Phase::Deleted,
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("wait=`{w}`: use started, stopped or deleted")).field("wait")),
    };
    let t = timeout.unwrap_or(60.0);
    if !(t > 0.0 && t <= max as f64) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("timeout={t}: must be more than 0 and at most {max} seconds")).field("timeout"));
    }
    Ok(Some((phase, Duration::from_secs_f64(t))))
}

/// Replies with the service, after waiting for a phase when the caller asked to.
async fn reply_service(st: &AppState, svc: Service, wait: Wait, status: StatusCode, message: &str) -> ApiResult {
    let Some((phase, timeout)) = wait.0 else {
        return ok(status, service_view(st, &svc), message);
    };
    match st.lifecycle.wait(&svc.id, phase, timeout).await? {
        Some(s) => ok(status, service_view(st, &s), message),
        None => {
            let mut v = service_view(st, &svc);
            v["phase"] = json!("Deleted");
            v["status"] = json!("stopped");
            ok(status, v, message)
        }
    }
}

async fn daemon_health(State(st): State<AppState>) -> ApiResult {
    let lc = &st.lifecycle;
    // Cheap on purpose (dashboards poll it): one query that proves the database answers.
    // The full integrity check runs at every start, and in `addonctl doctor`.
    let (db, services) = match lc.store().count_services().await {
        Ok(n) => ("ok".to_string(), n),
        Err(e) => (e.to_string(), 0),
    };
    ok(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": st.started.elapsed().as_secs(),
            "database": db,
            "docker": lc.runtime().state().as_str(),
            "services": services,
            "pid": std::process::id(),
            "gateway": st.gateway_addr.map(|a| a.to_string()),
            "ports": {"range_start": lc.port_range().0, "range_end": lc.port_range().1},
        }),
        "addond is running",
    )
}

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let lc = &st.lifecycle;
    let services = lc.store().list_services().await?;
    let mut out = String::new();
    let mut by_phase: HashMap<&str, usize> = HashMap::new();
    for s in &services {
        *by_phase.entry(s.phase.as_str()).or_default() += 1;
    }
    out.push_str("# HELP addond_services Services by lifecycle phase.\n# TYPE addond_services gauge\n");
    for p in ["Creating", "Created", "Starting", "Started", "Stopping", "Stopped", "Deleting", "Deleted", "Failed"] {
        out.push_str(&format!("addond_services{{phase=\"{p}\"}} {}\n", by_phase.get(p).copied().unwrap_or(0)));
    }
    let instances: Vec<_> = services.iter().flat_map(|s| s.instances.iter().map(move |i| (s, i))).collect();
    out.push_str("# HELP addond_instances Instances by health.\n# TYPE addond_instances gauge\n");
    for h in [Health::Unknown, Health::Starting, Health::Healthy, Health::Unhealthy] {
        out.push_str(&format!("addond_instances{{health=\"{}\"}} {}\n", h.as_str(), instances.iter().filter(|(_, i)| i.health == h).count()));
    }
    out.push_str("# HELP addond_instance_restarts_total Restarts of each instance by the daemon.\n# TYPE addond_instance_restarts_total counter\n");
    for (s, i) in &instances {
        out.push_str(&format!("addond_instance_restarts_total{{service=\"{}\",instance=\"{}\"}} {}\n", s.spec.name, i.ordinal, i.restarts));
    }
    let (start, end) = lc.port_range();
    let total = (end - start) as usize + 1;
    out.push_str(&format!(
        "# HELP addond_ports_in_use Host ports booked by addond.\n# TYPE addond_ports_in_use gauge\naddond_ports_in_use {}\n# HELP addond_ports_free Host ports of the range not booked by addond.\n# TYPE addond_ports_free gauge\naddond_ports_free {}\n",
        instances.len(),
        total.saturating_sub(instances.len())
    ));
    crate::metrics::render_docker_state(&mut out, lc.runtime().state());
    out.push_str(&format!(
        "# HELP addond_uptime_seconds Seconds since the daemon started.\n# TYPE addond_uptime_seconds gauge\naddond_uptime_seconds {}\n",
        st.started.elapsed().as_secs()
    ));
    st.addons.metrics.render_text(&mut out);
    crate::connections::render_metrics(&mut out);
    out.push_str(&format!(
        "# HELP addond_admin_refused_total Admin socket connections refused because the peer is not allowed.\n# TYPE addond_admin_refused_total counter\naddond_admin_refused_total {}\n",
        ADMIN_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
    ));
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], out).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    plugin_id: Option<String>,
    status: Option<String>,
}

async fn list_services(State(st): State<AppState>, q: Result<Query<ListQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let all = st.lifecycle.store().list_services().await?;
    let list: Vec<Value> = all
        .iter()
        .filter(|s| q.plugin_id.as_deref().is_none_or(|p| s.spec.plugin_id.as_deref() == Some(p)))
        .filter(|s| q.status.as_deref().is_none_or(|f| s.phase.as_str().eq_ignore_ascii_case(f) || status_of(s) == f.to_ascii_lowercase()))
        .map(|s| service_view(&st, s))
        .collect();
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{n} service(s)"))
}

async fn create_service(State(st): State<AppState>, wait: Wait, JsonBody(req): JsonBody<CreateRequest>) -> ApiResult {
    let (spec, replicas) = req.validate(&st.lifecycle.live_config())?;
    let svc = st.lifecycle.create(spec, replicas, None).await?;
    reply_service(&st, svc, wait, StatusCode::CREATED, "service created").await
}

async fn show_service(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let svc = st.lifecycle.store().get_service(&id).await?.ok_or_else(|| ApiError::from(LifecycleError::NotFound(id)))?;
    ok(StatusCode::OK, service_view(&st, &svc), "")
}

async fn delete_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let svc = st.lifecycle.delete(&id).await?;
    if let Some(instance) = &svc.addon_instance {
        st.addons.forget(instance);
    }
    reply_service(&st, svc, wait, StatusCode::OK, "service is being deleted").await
}

async fn start_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let svc = st.lifecycle.start(&id).await?;
    reply_service(&st, svc, wait, StatusCode::OK, "service is starting").await
}

async fn stop_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let svc = st.lifecycle.stop(&id).await?;
    reply_service(&st, svc, wait, StatusCode::OK, "service is stopping").await
}

async fn restart_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let svc = st.lifecycle.restart(&id).await?;
    reply_service(&st, svc, wait, StatusCode::OK, "service is restarting").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    replicas: i64,
}

async fn scale_service(
    State(st): State<AppState>,
    Path(id): Path<String>,
    wait: Wait,
    JsonBody(body): JsonBody<ScaleBody>,
) -> ApiResult {
    let max = st.lifecycle.config().limits.max_replicas;
    if body.replicas < 0 || body.replicas > max as i64 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", format!("replicas {} must be between 0 and {max}", body.replicas)).field("replicas"));
    }
    let svc = st.lifecycle.scale(&id, body.replicas as u32).await?;
    reply_service(&st, svc, wait, StatusCode::OK, &format!("scaling to {}", body.replicas)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    lines: Option<u32>,
    follow: Option<bool>,
    timestamps: Option<bool>,
    instance: Option<u32>,
}

async fn service_logs(State(st): State<AppState>, Path(id): Path<String>, q: Result<Query<LogsQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let lc = &st.lifecycle;
    let svc = lc.store().get_service(&id).await?.ok_or_else(|| ApiError::from(LifecycleError::NotFound(id)))?;
    if !lc.runtime().is_available() {
        return Err(LifecycleError::Runtime(lc.runtime().unavailable_error()).into());
    }
    let lines = q.lines.unwrap_or(100).min(100_000);
    let follow = q.follow.unwrap_or(false);
    let targets: Vec<_> = svc.instances.iter().filter(|i| i.wanted && q.instance.is_none_or(|k| i.ordinal == k)).collect();
    if targets.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("service `{}` has no instance{}", svc.spec.name, q.instance.map(|k| format!(" {k}")).unwrap_or_default())).field("instance"));
    }
    let multi = targets.len() > 1;
    let mut streams = Vec::new();
    for inst in &targets {
        let prefix = if multi { format!("[{}] ", inst.ordinal) } else { String::new() };
        let s = lc.runtime().logs(&inst.container_name(), lines, follow, q.timestamps.unwrap_or(false)).await.map_err(LifecycleError::from)?;
        streams.push(s.map(move |r| r.map(|b| prefix_lines(&prefix, &b))).boxed());
    }
    let merged = futures_util::stream::select_all(streams);
    if follow {
        let body = Body::from_stream(merged.map(|r| r.map_err(std::io::Error::other)));
        return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response());
    }
    let chunks: Vec<_> = merged.collect().await;
    let mut text = String::new();
    for c in chunks {
        match c {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            // A container without logs yet (just created) is not an error.
            Err(RuntimeError::Api(m)) if m.contains("No such container") => {}
            Err(e) => return Err(LifecycleError::from(e).into()),
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    ok(StatusCode::OK, json!({"lines": lines}), &format!("{} line(s)", lines.len()))
}

fn prefix_lines(prefix: &str, b: &[u8]) -> bytes::Bytes {
    if prefix.is_empty() {
        return bytes::Bytes::copy_from_slice(b);
    }
    let text = String::from_utf8_lossy(b);
    let mut out = String::with_capacity(text.len() + prefix.len());
    for line in text.split_inclusive('\n') {
        out.push_str(prefix);
        out.push_str(line);
    }
    bytes::Bytes::from(out)
}

async fn service_metrics(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let lc = &st.lifecycle;
    let svc = lc.store().get_service(&id).await?.ok_or_else(|| ApiError::from(LifecycleError::NotFound(id)))?;
    if !lc.runtime().is_available() {
        return Err(LifecycleError::Runtime(lc.runtime().unavailable_error()).into());
    }
    let running: Vec<_> = svc.instances.iter().filter(|i| i.wanted && i.container_id.is_some()).collect();
    let samples = futures_util::future::join_all(running.iter().map(|i| async move { (i.ordinal, lc.runtime().stats(&i.container_name()).await) })).await;
    let mut total = crate::runtime::StatsSample::default();
    let mut per = Vec::new();
    for (ordinal, s) in samples {
        let s = match s {
            Ok(s) => s,
            // No answer from the engine is not "no usage": say so rather than report zeros.
            Err(e @ (RuntimeError::Unavailable(_) | RuntimeError::Unresponsive { .. })) => return Err(LifecycleError::Runtime(e).into()),
            Err(_) => continue,
        };
        total.cpu_percent += s.cpu_percent;
        total.memory_usage_mb += s.memory_usage_mb;
        total.memory_limit_mb += s.memory_limit_mb;
        total.network_rx_mb += s.network_rx_mb;
        total.network_tx_mb += s.network_tx_mb;
        per.push(json!({"ordinal": ordinal, "metrics": s}));
    }
    if total.memory_limit_mb > 0.0 {
        total.memory_percent = (total.memory_usage_mb / total.memory_limit_mb * 10_000.0).round() / 100.0;
    }
    let r = |v: f64| (v * 100.0).round() / 100.0;
    ok(
        StatusCode::OK,
        json!({
            "cpu_percent": r(total.cpu_percent),
            "memory_usage_mb": r(total.memory_usage_mb),
            "memory_limit_mb": r(total.memory_limit_mb),
            "memory_percent": total.memory_percent,
            "network_rx_mb": r(total.network_rx_mb),
            "network_tx_mb": r(total.network_tx_mb),
            "timestamp": ms_to_rfc3339(now_ms()),
            "instances": per,
        }),
        "",
    )
}

async fn discovery(State(st): State<AppState>) -> ApiResult {
    let cfg = st.lifecycle.config();
    let all = st.lifecycle.store().list_services().await?;
    let mut healthy = 0;
    let mut unhealthy = 0;
    let mut instances = 0;
    let services: Vec<Value> = all
        .iter()
        .map(|s| {
            let wanted: Vec<_> = s.instances.iter().filter(|i| i.wanted).collect();
            instances += wanted.len();
            healthy += wanted.iter().filter(|i| i.health == Health::Healthy).count();
            unhealthy += wanted.iter().filter(|i| i.health == Health::Unhealthy).count();
            json!({
                "id": s.id, "name": s.spec.name, "plugin_id": s.spec.plugin_id, "service_type": s.spec.service_type,
                "endpoint": wanted.first().map(|i| endpoint(&st, i.host_port)),
                "endpoints": wanted.iter().filter(|i| i.health == Health::Healthy).map(|i| endpoint(&st, i.host_port)).collect::<Vec<_>>(),
                "health_status": health_summary(s).as_str(), "phase": s.phase.as_str(), "networks": s.spec.networks,
            })
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({
            "services": services,
            // The two kinds a service may ask for; each owner's network of that kind takes a
            // /subnet_prefix of this pool.
            "networks": [
                {"name": cfg.docker.network, "subnet": cfg.docker.subnet_pool, "subnet_prefix": cfg.docker.subnet_prefix, "internal": false},
                {"name": cfg.docker.isolated_network, "subnet": cfg.docker.subnet_pool, "subnet_prefix": cfg.docker.subnet_prefix, "internal": true},
            ],
            "totals": {"services": all.len(), "instances": instances, "healthy": healthy, "unhealthy": unhealthy},
        }),
        "",
    )
}

async fn services_health(State(st): State<AppState>) -> ApiResult {
    let all = st.lifecycle.store().list_services().await?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let list: Vec<Value> = all
        .iter()
        .map(|s| {
            let h = health_summary(s).as_str();
            *counts.entry(h).or_default() += 1;
            json!({"id": s.id, "name": s.spec.name, "health_status": h, "phase": s.phase.as_str()})
        })
        .collect();
    let c = |k| counts.get(k).copied().unwrap_or(0);
    ok(
        StatusCode::OK,
        json!({"total": all.len(), "healthy": c("healthy"), "unhealthy": c("unhealthy"), "starting": c("starting"), "unknown": c("unknown"), "services": list}),
        "",
    )
}

/// Server-sent events: one `service` event with the service's JSON (or `{"id", "deleted":
/// true}`) each time a service changes, so dashboards update without polling. A client
/// that falls behind gets a `resync` event and should list the services again.
async fn watch_services(State(st): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = st.lifecycle.subscribe();
    let stream = futures_util::stream::unfold((rx, st), |(mut rx, st)| async move {
        let event = match rx.recv().await {
            Ok(id) => match st.lifecycle.store().get_service(id.as_str()).await {
                Ok(Some(svc)) => Event::default().event("service").data(service_view(&st, &svc).to_string()),
                Ok(None) => Event::default().event("service").data(json!({"id": id, "deleted": true}).to_string()),
                Err(_) => Event::default().event("resync").data("{}"),
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), (rx, st)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

async fn list_templates(State(st): State<AppState>) -> ApiResult {
    let image = &st.lifecycle.config().templates.image;
    let list: Vec<Value> = TEMPLATES
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "name": t.name, "description": t.description, "service_type": t.service_type,
                "resource_limits": {"memory": t.memory, "cpu": t.cpu}, "port": t.port,
                "health_check": {"path": t.health_path}, "image": image,
            })
        })
        .collect();
    ok(StatusCode::OK, Value::Array(list), "")
}

async fn create_from_template(
    State(st): State<AppState>,
    Path(id): Path<String>,
    wait: Wait,
    JsonBody(body): JsonBody<TemplateCreateRequest>,
) -> ApiResult {
    let t = template(&id).ok_or_else(|| {
        let known: Vec<&str> = TEMPLATES.iter().map(|t| t.id).collect();
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no template `{id}`; known templates: {}", known.join(", "))).field("template")
    })?;
    let (spec, replicas) = t.request(body, &st.lifecycle.config().templates.image).validate(&st.lifecycle.live_config())?;
    let svc = st.lifecycle.create(spec, replicas, None).await?;
    reply_service(&st, svc, wait, StatusCode::CREATED, &format!("service created from template {id}")).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CleanupBody {
    days: f64,
}

async fn cleanup(State(st): State<AppState>, JsonBody(body): JsonBody<CleanupBody>) -> ApiResult {
    if !(body.days.is_finite() && body.days >= 0.0 && body.days <= 36_500.0) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "days must be between 0 and 36500").field("days"));
    }
    let removed = st.lifecycle.cleanup(body.days).await?;
    let list: Vec<Value> = removed.iter().map(|s| json!({"id": s.id, "name": s.spec.name, "phase": s.phase.as_str()})).collect();
    let n = list.len();
    ok(StatusCode::OK, json!({"removed": list}), &format!("{n} service(s) marked for deletion"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    image: String,
}

/// Pulls an image unless present. When a pull is needed, the reply is a stream of JSON
/// lines (`application/x-ndjson`): progress steps, then `{"done": …}` or `{"error": …}`,
/// so `addonctl` can show progress while a large image downloads.
async fn pull_image(State(st): State<AppState>, JsonBody(body): JsonBody<PullBody>) -> ApiResult {
    let image = body.image.trim().to_string();
    if let Err(why) = crate::image_ref::check(&image) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", crate::image_ref::message(&image, &why)).field("image"));
    }
    let lc = st.lifecycle.clone();
    if lc.runtime().image_present(&image).await.map_err(LifecycleError::from)? {
        return ok(StatusCode::OK, json!({"image": image, "present": true, "pulled": false}), "image is present");
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let result = lc
            .runtime()
            .pull_image(&image, move |p| {
                let _ = progress_tx.send(json!({"progress": p}).to_string());
            })
            .await;
        let last = match result {
            Ok(()) => json!({"done": true, "image": image}),
            Err(e) => json!({"error": {"code": "image_not_found", "message": e.to_string(), "field": "image"}}),
        };
        let _ = tx.send(last.to_string());
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|l| (Ok::<_, Infallible>(bytes::Bytes::from(l + "\n")), rx)) });
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))], Body::from_stream(lines)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit_log(State(st): State<AppState>, q: Result<Query<AuditQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let list = st.lifecycle.store().list_audit(q.limit.unwrap_or(100).min(10_000)).await?;
    ok(StatusCode::OK, serde_json::to_value(list).unwrap_or(Value::Null), "")
}

// ---- addons and widgets ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryQuery {
    category: Option<String>,
}

async fn addon_catalogue(State(st): State<AppState>, q: Result<Query<CategoryQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let list = st.addons.catalogue(q.category.as_deref()).await?;
    let installed = st.addons.installs().await?;
    let n = list.len();
    ok(StatusCode::OK, json!({"addons": list, "installed": installed}), &format!("{n} addon(s) registered"))
}

/// Registers a manifest; the body limit is the manifest limit, not the API's.
async fn register_addon(State(st): State<AppState>, req: Request) -> ApiResult {
    let limit = st.addons.config().addons.max_manifest_bytes;
    let bytes = read_body(req.into_body(), limit, "addons.max_manifest_bytes").await?;
    let manifest: ManifestRequest = parse_json(&bytes)?;
    let (m, new) = st.addons.register(manifest).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    let msg = if new { format!("registered {} {}", m.name, m.version) } else { format!("{} {} was already registered", m.name, m.version) };
    ok(status, serde_json::to_value(&m).unwrap_or(Value::Null), &msg)
}

async fn show_addon(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    ok(StatusCode::OK, st.addons.show(&name).await?, "")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UninstallQuery {
    force: Option<bool>,
    unregister: Option<bool>,
    wait: Option<String>,
    timeout: Option<f64>,
}

async fn uninstall_addon(State(st): State<AppState>, Path(name): Path<String>, q: Result<Query<UninstallQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    if q.unregister.unwrap_or(false) {
        let n = st.addons.unregister(&name).await?;
        return ok(StatusCode::OK, json!({"name": name, "versions_removed": n}), &format!("removed {name} from the catalogue"));
    }
    let wait = wait_target(q.wait.as_deref(), q.timeout, st.lifecycle.config().api.max_wait_seconds)?;
    let services = st.lifecycle.store().services_of_addon(&name).await?;
    let v = st.addons.uninstall(&name, q.force.unwrap_or(false)).await?;
    if let Some((phase, timeout)) = wait {
        for s in services {
            st.lifecycle.wait(&s.id, phase, timeout).await?;
        }
        let mut v = v;
        v["phase"] = json!("Deleted");
        return ok(StatusCode::OK, v, &format!("uninstalled {name}"));
    }
    ok(StatusCode::OK, v, &format!("uninstalling {name}"))
}

async fn install_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait, JsonBody(req): JsonBody<InstallRequest>) -> ApiResult {
    let v = st.addons.install(&name, req).await?;
    let instance = v["instance"].as_str().unwrap_or(&name).to_string();
    let v = match wait.0 {
        Some((phase, timeout)) => st.addons.wait(&instance, phase, timeout).await?,
        None => v,
    };
    ok(StatusCode::CREATED, v, &format!("installing {name} as {instance}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    config: Value,
}

async fn set_addon_config(State(st): State<AppState>, Path(name): Path<String>, JsonBody(body): JsonBody<ConfigBody>) -> ApiResult {
    let v = st.addons.set_config(&name, body.config).await?;
    ok(StatusCode::OK, v, "config stored and pushed")
}

async fn addon_op(st: &AppState, name: &str, op: &str, wait: Wait) -> ApiResult {
    let v = st.addons.lifecycle_op(name, op).await?;
    let v = match wait.0 {
        Some((phase, timeout)) => st.addons.wait(name, phase, timeout).await?,
        None => v,
    };
    ok(StatusCode::OK, v, &format!("{op} {name}"))
}

async fn start_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait) -> ApiResult {
    addon_op(&st, &name, "start", wait).await
}

async fn stop_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait) -> ApiResult {
    addon_op(&st, &name, "stop", wait).await
}

async fn restart_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait) -> ApiResult {
    addon_op(&st, &name, "restart", wait).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    pub action: String,
    /// Kept as text: without an input schema it goes to the addon as it came.
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
}

async fn execute_action(State(st): State<AppState>, Path(name): Path<String>, JsonBody(body): JsonBody<ExecuteBody>) -> ApiResult {
    let out = st.addons.execute_json(&name, &body.action, crate::addons::ActionInput::Raw(body.data.as_deref())).await?;
    ok_json(StatusCode::OK, &out, "")
}

/// The addon's schedules and their recent runs.
async fn schedule_runs(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let m = st.addons.installed_manifest(&name).await?;
    let runs = st.lifecycle.store().schedule_runs(&name, 100).await?;
    let runs: Vec<Value> = runs
        .into_iter()
        .map(|r| {
            json!({"action": r.action, "cron": r.cron, "scheduled_for": crate::time::rfc3339_ms(r.scheduled_for),
                   "ran_at": crate::time::rfc3339_ms(r.ran_at), "status": r.status, "detail": r.detail})
        })
        .collect();
    ok(StatusCode::OK, json!({"schedules": m.schedules, "runs": runs}), "")
}

async fn widget_catalogue(State(st): State<AppState>, q: Result<Query<CategoryQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    if let Some(c) = &q.category {
        if !crate::addons::manifest::WIDGET_CATEGORIES.contains(&c.as_str()) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("category `{c}` is not one of {}", crate::addons::manifest::WIDGET_CATEGORIES.join(", "))).field("category"));
        }
    }
    let list = st.addons.widgets(q.category.as_deref()).await?;
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{n} widget(s)"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenderQuery {
    config: Option<String>,
    context: Option<String>,
}

impl RenderQuery {
    pub(crate) fn parse(&self) -> Result<(Value, Value), ApiError> {
        let parse = |v: &Option<String>, field: &str| -> Result<Value, ApiError> {
            match v {
                None => Ok(json!({})),
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("`{field}` is not JSON ({}); send it URL-encoded, like {field}=%7B%22k%22%3A1%7D for {{\"k\":1}}", json_error_text(&e))).field(field)
                }),
            }
        };
        Ok((parse(&self.config, "config")?, parse(&self.context, "context")?))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenderBody {
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub context: Value,
}

async fn render_widget_get(
    State(st): State<AppState>,
    Path((addon, widget)): Path<(String, String)>,
    q: Result<Query<RenderQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> ApiResult {
    let Query(q) = q?;
    let (config, context) = q.parse()?;
    render_reply(&st.addons, &addon, &widget, config, context, &headers).await
}

async fn render_widget_post(
    State(st): State<AppState>,
    Path((addon, widget)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<RenderBody>,
) -> ApiResult {
    let config = if body.config.is_null() { json!({}) } else { body.config };
    let context = if body.context.is_null() { json!({}) } else { body.context };
    render_reply(&st.addons, &addon, &widget, config, context, &headers).await
}

/// The rendered widget with its ETag; 304 when the caller already has this version.
pub(crate) async fn render_reply(addons: &Addons, addon: &str, widget: &str, config: Value, context: Value, headers: &axum::http::HeaderMap) -> ApiResult {
    let r = addons.render(addon, widget, config, context).await?;
    let etag = HeaderValue::from_str(&r.widget.etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let cache = HeaderValue::from_static(if r.cached { "hit" } else { "miss" });
    let matches = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == r.widget.etag || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::HeaderName::from_static("x-cache"), cache)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json")), (header::ETAG, etag), (header::HeaderName::from_static("x-cache"), cache)],
        r.widget.envelope.clone(),
    )
        .into_response())
}

async fn widget_frame(State(st): State<AppState>, Path((addon, widget)): Path<(String, String)>, q: Result<Query<RenderQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let (config, context) = q.parse()?;
    frame_reply(&st.addons, &addon, &widget, config, context).await
}

/// The widget as a complete HTML document for a sandboxed iframe.
pub(crate) async fn frame_reply(addons: &Addons, addon: &str, widget: &str, config: Value, context: Value) -> ApiResult {
    let r = addons.render(addon, widget, config, context).await?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let (html, csp) = crate::addons::frame_document(&r.widget.widget, &nonce);
    let csp = HeaderValue::from_str(&csp).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        html,
    )
        .into_response())
}

// ---- applications and grants -----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    organization: String,
}

fn app_view(a: &crate::store::ApplicationRow, grants: &[crate::store::GrantRow]) -> Value {
    json!({
        "id": a.id, "name": a.name, "description": a.description, "organization": a.organization,
        "created_at": ms_to_rfc3339(a.created_at),
        "grants": grants.iter().filter(|g| g.application_id == a.id).map(grant_view).collect::<Vec<_>>(),
    })
}

fn grant_view(g: &crate::store::GrantRow) -> Value {
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

async fn find_application(st: &AppState, id_or_name: &str) -> Result<crate::store::ApplicationRow, ApiError> {
    st.lifecycle.store().list_applications().await?.into_iter().find(|a| a.id == id_or_name || a.name == id_or_name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no application `{id_or_name}`; list them with `addonctl apps list`"))
    })
}

async fn find_grant(st: &AppState, id: &str) -> Result<crate::store::GrantRow, ApiError> {
    st.lifecycle.store().list_grants().await?.into_iter().find(|g| g.id == id || g.key_id == id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no grant `{id}`; list them with `addonctl grants list`"))
    })
}

/// The keyring must know about a change before the change is acknowledged.
async fn reload_keys(st: &AppState) -> Result<(), ApiError> {
    st.gateway.reload_keys().await.map_err(ApiError::from)
}

async fn list_applications(State(st): State<AppState>) -> ApiResult {
    let apps = st.lifecycle.store().list_applications().await?;
    let grants = st.lifecycle.store().list_grants().await?;
    ok(StatusCode::OK, Value::Array(apps.iter().map(|a| app_view(a, &grants)).collect()), &format!("{} application(s)", apps.len()))
}

async fn create_application(State(st): State<AppState>, JsonBody(b): JsonBody<ApplicationBody>) -> ApiResult {
    if !crate::model::valid_name(&b.name) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", format!("`{}`: 1–63 lowercase letters, digits and `-`", b.name)).field("name"));
    }
    if b.description.len() > 1024 || b.organization.len() > 256 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "description (1024) or organization (256) too long").field(if b.organization.len() > 256 { "organization" } else { "description" }));
    }
    let row = crate::store::ApplicationRow {
        id: format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        name: b.name,
        description: b.description,
        organization: b.organization,
        created_at: now_ms(),
    };
    st.lifecycle.store().insert_application(row.clone()).await.map_err(|e| match e {
        StoreError::ApplicationNameTaken(n) => ApiError::new(StatusCode::CONFLICT, "conflict", format!("an application named `{n}` exists")).field("name"),
        e => e.into(),
    })?;
    ok(StatusCode::CREATED, app_view(&row, &[]), "application created")
}

async fn show_application(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let app = find_application(&st, &id).await?;
    let grants = st.lifecycle.store().list_grants().await?;
    ok(StatusCode::OK, app_view(&app, &grants), "")
}

async fn delete_application(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let app = find_application(&st, &id).await?;
    st.lifecycle.store().delete_application(&app.id).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, json!({"id": app.id, "name": app.name}), "application and its grants deleted; their keys stop working now")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    requests_per_second: f64,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    application: String,
    addon: String,
    rate_limit: Option<RateLimitBody>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

fn check_limits(rate: &Option<RateLimitBody>, origins: &[String]) -> Result<(), ApiError> {
    if let Some(r) = rate {
        if !(r.requests_per_second > 0.0 && r.requests_per_second <= 1_000_000.0) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "requests_per_second must be more than 0 and at most 1000000").field("rate_limit.requests_per_second"));
        }
        if r.burst == Some(0) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "burst must be at least 1").field("rate_limit.burst"));
        }
    }
    for (i, o) in origins.iter().enumerate() {
        let ok = o == "*" || ((o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/') && !o.contains(char::is_whitespace));
        if !ok {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", format!("`{o}` is not an origin like https://shop.example (scheme and host, no path)")).field(format!("allowed_origins[{i}]")));
        }
    }
    Ok(())
}

async fn list_grants(State(st): State<AppState>, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> ApiResult {
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
async fn create_grant(State(st): State<AppState>, JsonBody(b): JsonBody<GrantBody>) -> ApiResult {
    let app = find_application(&st, &b.application).await.map_err(|e| e.field("application"))?;
    if st.lifecycle.store().get_install(&b.addon).await?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no addon is installed as `{}`", b.addon)).field("addon"));
    }
    check_limits(&b.rate_limit, &b.allowed_origins)?;
    let key = crate::gateway::keys::generate(None).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("no randomness: {e}")))?;
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
        StoreError::GrantTaken(_) => ApiError::new(StatusCode::CONFLICT, "conflict", format!("`{}` already has a grant for `{}`; rotate its key instead", app.name, b.addon)),
        e => e.into(),
    })?;
    reload_keys(&st).await?;
    let mut v = grant_view(&row);
    v["api_key"] = json!(key.full);
    ok(StatusCode::CREATED, v, "grant created; store api_key now: it is never shown again")
}

async fn show_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    ok(StatusCode::OK, grant_view(&find_grant(&st, &id).await?), "")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantUpdate {
    /// Absent: unchanged; `null`: no rate limit; an object: the new limit.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<RateLimitBody>>,
    allowed_origins: Option<Vec<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

async fn update_grant(State(st): State<AppState>, Path(id): Path<String>, JsonBody(b): JsonBody<GrantUpdate>) -> ApiResult {
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
struct RotateBody {
    grace_seconds: Option<f64>,
}

/// A new key for a grant; the old one keeps working for the grace period (default from
/// config, 0: refused from the next request).
async fn rotate_grant(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> ApiResult {
    let bytes = read_body(req.into_body(), 64 * 1024, "64 KiB for this route").await?;
    let b: RotateBody = if bytes.iter().all(|c| c.is_ascii_whitespace()) { RotateBody::default() } else { parse_json(&bytes)? };
    let g = find_grant(&st, &id).await?;
    if g.revoked_at.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "this grant is revoked; create a new grant instead"));
    }
    let grace = b.grace_seconds.unwrap_or(st.lifecycle.config().gateway.rotation_grace_seconds);
    if !(0.0..=30.0 * 86_400.0).contains(&grace) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "grace_seconds must be between 0 and 2592000").field("grace_seconds"));
    }
    let key = crate::gateway::keys::generate(Some(&g.key_id)).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("no randomness: {e}")))?;
    let until = (grace > 0.0).then(|| now_ms() + (grace * 1000.0) as i64);
    st.lifecycle.store().rotate_grant(&g.id, key.key_id.clone(), key.hash, until).await?;
    reload_keys(&st).await?;
    let mut v = grant_view(&find_grant(&st, &g.id).await?);
    v["api_key"] = json!(key.full);
    ok(StatusCode::OK, v, "key rotated; store api_key now: it is never shown again")
}

async fn revoke_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let g = find_grant(&st, &id).await?;
    st.lifecycle.store().revoke_grant(&g.id).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, grant_view(&find_grant(&st, &g.id).await?), "grant revoked; its key is refused from now on")
}

async fn delete_grant(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let g = find_grant(&st, &id).await?;
    st.lifecycle.store().delete_grant(&g.id).await?;
    reload_keys(&st).await?;
    ok(StatusCode::OK, json!({"id": g.id}), "grant deleted")
}

// ---- events ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    name: String,
    #[serde(default)]
    data: Value,
}

async fn emit_event(State(st): State<AppState>, caller: Option<Extension<Caller>>, JsonBody(b): JsonBody<EmitBody>) -> ApiResult {
    if !crate::events::valid_name(&b.name) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", format!("`{}` is not an event name like payment.completed", b.name)).field("name"));
    }
    let source = match caller {
        Some(Extension(c)) => format!("admin:{}", c.uid),
        None => "admin".to_string(),
    };
    let ev = st.events.emit(&b.name, b.data, &source).await.map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    ok(StatusCode::CREATED, ev.to_json(), "event stored")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    name: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

fn check_pattern(p: &Option<String>) -> Result<(), ApiError> {
    if let Some(p) = p {
        let body = if p == "*" { "x" } else { p.strip_suffix(".*").unwrap_or(p) };
        if !crate::events::valid_name(body) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("name `{p}`: an event name, `prefix.*` or `*`")).field("name"));
        }
    }
    Ok(())
}

async fn list_events(State(st): State<AppState>, q: Result<Query<EventsQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    check_pattern(&q.name)?;
    let list = st.events.list(q.after.unwrap_or(0), q.name, q.limit.unwrap_or(100).min(10_000)).await?;
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list.iter().map(|e| e.to_json()).collect()), &format!("{n} event(s)"))
}

/// Server-sent events of the log: replays what follows `Last-Event-ID` (or `?after=`), then
/// follows live. Subscribes before replaying, so nothing falls between the two.
async fn event_stream(State(st): State<AppState>, q: Result<Query<EventsQuery>, QueryRejection>, headers: axum::http::HeaderMap) -> ApiResult {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let Query(q) = q?;
    check_pattern(&q.name)?;
    let last: i64 = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(v) => v.trim().parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "Last-Event-ID must be an event id").field("Last-Event-ID"))?,
        None => q.after.unwrap_or(0),
    };
    let live = st.events.subscribe();
    let pattern = q.name.clone();
    let to_sse = |e: &crate::events::Event| SseEvent::default().id(e.id.to_string()).event(e.name.clone()).data(e.to_json().to_string());
    struct S {
        events: Arc<crate::events::Events>,
        live: tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
        last: i64,
        pattern: Option<String>,
        backlog: std::collections::VecDeque<crate::events::Event>,
        replaying: bool,
    }
    let state = S { events: st.events.clone(), live, last, pattern, backlog: Default::default(), replaying: true };
    let stream = futures_util::stream::unfold(state, move |mut s| async move {
        loop {
            if let Some(e) = s.backlog.pop_front() {
                s.last = e.id;
                return Some((Ok::<_, Infallible>(to_sse(&e)), s));
            }
            if s.replaying {
                match s.events.list(s.last, s.pattern.clone(), 500).await {
                    Ok(page) if !page.is_empty() => {
                        s.backlog.extend(page);
                        continue;
                    }
                    Ok(_) => s.replaying = false,
                    Err(_) => return None,
                }
                continue;
            }
            match s.live.recv().await {
                Ok(e) if e.id > s.last && s.pattern.as_deref().is_none_or(|p| crate::events::matches(p, &e.name)) => {
                    s.last = e.id;
                    return Some((Ok(to_sse(&e)), s));
                }
                Ok(_) => continue,
                // Fell behind the bus: read the gap from the log.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => s.replaying = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

async fn event_subscribers(State(st): State<AppState>) -> ApiResult {
    ok(StatusCode::OK, st.events.status().await?, "")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    subscriber: Option<String>,
}

async fn redrive_events(State(st): State<AppState>, JsonBody(b): JsonBody<RedriveBody>) -> ApiResult {
    let n = st.lifecycle.store().mark_redrive(b.subscriber.clone()).await?;
    ok(StatusCode::OK, json!({"redriven": n, "subscriber": b.subscriber}), &format!("{n} dead letter(s) will be delivered again"))
}

// ---- the socket server ----------------------------------------------------------------

/// Who may use the admin socket.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub daemon_uid: u32,
    /// The socket group's gid, when the group exists.
    pub group: Option<u32>,
}

impl PeerPolicy {
    pub fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        let Some(group) = self.group else { return false };
        gid == group || pid.is_some_and(|p| supplementary_groups(p).contains(&group))
    }
}

impl PeerPolicy {
    /// [`PeerPolicy::allows`] with the peer's supplementary groups already known.
    pub fn allows_groups(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        self.group.is_some_and(|g| gid == g || groups.contains(&g))
    }
}

/// The supplementary groups the peer had when it connected (`SO_PEERGROUPS`, Linux 4.13+).
fn peer_groups(stream: &tokio::net::UnixStream) -> Option<Vec<u32>> {
    use std::os::unix::io::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut buf: Vec<libc::gid_t> = vec![0; 256];
    for _ in 0..2 {
        let mut len = (buf.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `buf`, which we own.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERGROUPS, buf.as_mut_ptr().cast(), &mut len) };
        if rc == 0 {
            buf.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
        buf = vec![0; len as usize / std::mem::size_of::<libc::gid_t>() + 1];
    }
    None
}

/// The peer process's supplementary groups, from /proc (what the kernel checks too).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Groups:")).map(|l| l[7..].split_whitespace().filter_map(|g| g.parse().ok()).collect()))
        .unwrap_or_default()
}

/// Looks a group up by name (or numeric id) in the system's group database.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null; read gr_gid at once.
    unsafe {
        let g = libc::getgrnam(cname.as_ptr());
        if g.is_null() {
            None
        } else {
            Some((*g).gr_gid)
        }
    }
}

const FORBIDDEN: &str = "{\"success\":false,\"error\":{\"code\":\"forbidden\",\"message\":\"permission denied: the admin socket serves root, the daemon's user and members of its group (daemon.socket_group); run as root or add your user to that group\"}}";

/// Connections the admin socket refused (peer not allowed), for `/metrics`.
pub static ADMIN_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A refused peer is logged and audited at most once per this long per uid; the refusals
/// in between are counted and reported with the next line.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Refused connections still being answered (their 403 written, what they send drained);
/// past this many a refusal is answered without draining, so refused peers cannot hold
/// descriptors the admin budget does not count.
const MAX_REFUSALS_IN_FLIGHT: usize = 16;

/// Rate-limits the log lines and audit records of refused admin connections: one per uid
/// per [`REFUSAL_REPORT_EVERY`], with how many more there were.
#[derive(Default)]
struct RefusalReports {
    /// uid → (when it was last reported, refusals since then).
    seen: HashMap<u32, (Instant, u64)>,
}

impl RefusalReports {
    /// Counts a refusal; `Some(n)` when it should be reported now (`n`: refusals from that
    /// uid since the last report, this one included).
    fn note(&mut self, uid: u32, now: Instant) -> Option<u64> {
        if self.seen.len() >= 1024 {
            self.seen.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_REPORT_EVERY);
        }
        match self.seen.get_mut(&uid) {
            Some((at, n)) if now.duration_since(*at) < REFUSAL_REPORT_EVERY => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let total = *n + 1;
                *at = now;
                *n = 0;
                Some(total)
            }
            None => {
                self.seen.insert(uid, (now, 0));
                Some(1)
            }
        }
    }
}

/// Serves the admin API on `listener` until `shutdown`, then lets in-flight requests finish.
/// Connections count against `registry` (the admin socket's own budget and timeouts).
/// Refused peers are logged and, when `audit` is given, written to the audit log — both
/// at most once per uid per minute, with a count.
pub async fn serve(listener: UnixListener, app: Router, policy: PeerPolicy, registry: Arc<crate::connections::Registry>, audit: Option<crate::store::Store>, shutdown: CancellationToken) {
    use crate::connections::{Admission, Listener};
    let tracker = TaskTracker::new();
    let mut reports = RefusalReports::default();
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    loop {
        registry.room().await;
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; refusing connection");
                continue;
            }
        };
        let caller = Caller { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() };
        // The peer's groups from the socket itself (SO_PEERGROUPS: no /proc, no pid reuse
        // race, works under ProtectProc=invisible); /proc only on kernels without it.
        let allowed = match peer_groups(&stream) {
            Some(groups) => policy.allows_groups(caller.uid, caller.gid, &groups),
            None => policy.allows(caller.uid, caller.gid, caller.pid),
        };
        if !allowed {
            ADMIN_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(n) = reports.note(caller.uid, Instant::now()) {
                tracing::warn!(uid = caller.uid, gid = caller.gid, pid = ?caller.pid, refused = n, "refused admin connection: peer is not root, the daemon's user or in daemon.socket_group ({n} from this uid since the last report; at most one report per uid per minute)");
                if let Some(store) = &audit {
                    let entry = AuditEntry {
                        at: now_ms(),
                        uid: Some(caller.uid),
                        pid: caller.pid,
                        method: "CONNECT".into(),
                        path: "/".into(),
                        status: 403,
                        detail: Some(format!("admin socket: peer not allowed (gid {}; {n} refused from this uid since the last record)", caller.gid)),
                        source: None,
                    };
                    let store = store.clone();
                    tracker.spawn(async move {
                        if let Err(e) = store.audit(entry).await {
                            tracing::warn!(error = %e, "cannot write audit record");
                        }
                    });
                }
            }
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{FORBIDDEN}",
                FORBIDDEN.len()
            );
            let Ok(permit) = refusals.clone().try_acquire_owned() else {
                let _ = stream.try_write(resp.as_bytes());
                continue;
            };
            tracker.spawn(async move {
                let _permit = permit;
                let mut stream = stream;
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
                // Drain (never parse) what the client sends until it hangs up, briefly: closing
                // with unread data would reset the connection and the client could lose the 403.
                let mut sink = [0u8; 4096];
                let drain = async {
                    let mut total = 0usize;
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                        total += n;
                        if n == 0 || total > 1 << 20 {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            });
            continue;
        }
        let slot = match registry.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                crate::connections::refuse_overloaded(stream, Listener::Admin);
                continue;
            }
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handler = move |mut req: axum::extract::Request| {
                req.extensions_mut().insert(caller);
                let app = app.clone();
                async move { app.oneshot(req).await.unwrap_or_else(|e| match e {}) }
            };
            crate::connections::serve_connection(stream, slot, &shutdown, handler).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

// ---- operator tools: backup and doctor ------------------------------------------------

/// `POST /api/backup`: a tar stream (see [`crate::backup`]) of a consistent database copy
/// taken now with `VACUUM INTO`, plus every directory volume. The database copy is made
/// before the first byte is sent, so a failure there is a proper error envelope; a failure
/// while streaming volumes ends the body abnormally and the client discards the file.
async fn backup_archive(State(st): State<AppState>) -> ApiResult {
    use crate::backup;
    let lc = st.lifecycle.clone();
    let data_dir = lc.config().daemon.data_dir.clone();
    let snapshot = data_dir.join(format!(".backup-{}.db", uuid::Uuid::new_v4().simple()));
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "backup: {what}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backup_failed", format!("{what}: {e}"))
    };
    let schema = match lc.store().snapshot_to(&snapshot).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&snapshot);
            return Err(internal("cannot copy the database (is the disk full?)", &e));
        }
    };
    let services = lc.store().list_services().await.map(|s| s.len()).unwrap_or(0);
    let daemon_id = lc.store().daemon_id().await?;
    let snap = snapshot.clone();
    let sum = tokio::task::spawn_blocking(move || backup::sha256_file(&snap)).await.map_err(|e| internal("checksum task failed", &e))?;
    let (sha, bytes) = match sum {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&snapshot);
            return Err(internal("cannot read the database copy", &e));
        }
    };
    let (uid, gid) = backup::owner_of(&data_dir);
    let created_at = now_ms();
    let manifest = backup::BackupManifest {
        format: backup::FORMAT,
        addond_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version: schema,
        created_at,
        daemon_id,
        data_dir_uid: uid,
        data_dir_gid: gid,
        database_bytes: bytes,
        database_sha256: sha,
        services,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut w = backup::ChannelWriter::new(tx);
        let res = backup::write_archive(&mut w, &manifest, &snapshot, &data_dir).and_then(|w| w.flush());
        let _ = std::fs::remove_file(&snapshot);
        match res {
            Ok(()) => tracing::info!(services = manifest.services, schema = manifest.schema_version, "backup streamed"),
            Err(e) => {
                tracing::error!(error = %e, "backup failed while streaming");
                w.fail(e);
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let name = format!("attachment; filename=\"addond-backup-{}.tar\"", crate::backup::timestamp_for_path(created_at));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("attachment"))),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/doctor`: the daemon's own view for `addonctl doctor`: the database's full
/// integrity check, Docker as reached by the daemon's user, the booked ports and the
/// config values the host checks need.
async fn doctor_report(State(st): State<AppState>) -> ApiResult {
    let lc = &st.lifecycle;
    let cfg = lc.config();
    let store = lc.store();
    let integrity = store.integrity_report().await.unwrap_or_else(|e| vec![e.to_string()]);
    let schema = store.schema_version().await.unwrap_or(-1);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let booked: Vec<u16> = {
        let mut v: Vec<u16> = store.booked_ports().await?.into_iter().collect();
        v.sort_unstable();
        v
    };
    let docker_state = lc.runtime().probe().await;
    let reachable = docker_state == crate::runtime::DockerState::Reachable;
    let docker_error = match docker_state {
        crate::runtime::DockerState::Reachable => Value::Null,
        crate::runtime::DockerState::Unresponsive => json!(format!("connected, but no answer to ping within {}s", cfg.docker.ping_timeout_seconds)),
        crate::runtime::DockerState::Unreachable => json!("no answer to ping"),
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    ok(
        StatusCode::OK,
        json!({
            "daemon": {"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(), "uid": uid, "gid": gid, "uptime_seconds": st.started.elapsed().as_secs()},
            "config": {
                "data_dir": cfg.daemon.data_dir,
                "socket_path": cfg.daemon.socket_path,
                "socket_group": cfg.daemon.socket_group,
                "port_range": [cfg.ports.range_start, cfg.ports.range_end],
                "publish_address": cfg.ports.publish_address.to_string(),
            },
            "docker": {"host": cfg.docker.host, "reachable": reachable, "state": docker_state.as_str(), "error": docker_error},
            "database": {
                "path": store.path,
                "integrity": integrity,
                "schema_version": schema,
                "known_schema_version": crate::store::Store::known_schema_version(),
                "size_bytes": size(&store.path),
                "wal_bytes": size(&store.path.with_extension("db-wal")),
            },
            "booked_ports": booked,
        }),
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_format() {
        assert_eq!(ms_to_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(ms_to_rfc3339(1_795_303_913_500), "2026-11-21T23:31:53Z");
        assert_eq!(ms_to_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn peer_policy() {
        let p = PeerPolicy { daemon_uid: 1000, group: Some(500) };
        assert!(p.allows(0, 0, None));
        assert!(p.allows(1000, 1000, None));
        assert!(p.allows(1234, 500, None));
        assert!(!p.allows(65534, 65534, None));
        let none = PeerPolicy { daemon_uid: 1000, group: None };
        assert!(!none.allows(1234, 500, None));
    }

    #[test]
    fn refused_peers_are_reported_once_a_minute_per_uid() {
        let mut r = RefusalReports::default();
        let t0 = Instant::now();
        assert_eq!(r.note(65534, t0), Some(1));
        for i in 0..5 {
            assert_eq!(r.note(65534, t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(r.note(1000, t0), Some(1), "another uid has its own report");
        assert_eq!(r.note(65534, t0 + Duration::from_secs(61)), Some(6), "the next report counts what was held back");
    }

    #[test]
    fn json_bodies_are_one_object_and_errors_name_the_field() {
        let err = |body: &str| parse_json::<CreateRequest>(body.as_bytes()).expect_err(body);
        let ok = parse_json::<CleanupBody>(br#" {"days": 3} "#).expect("one object, whitespace around it");
        assert_eq!(ok.days, 3.0);
        for (body, field, needle) in [
            (r#"{"name":"x"}{"name":"#, "body", "after its JSON value"),
            (r#"{"name":"x"} x"#, "body", "after its JSON value"),
            ("[1]", "body", "an array"),
            ("", "body", "needs a JSON body"),
            (r#"{"name": "#, "name", "ends in the middle"),
            (r#"{"nmae": "x"}"#, "nmae", "the fields are `name`"),
            (r#"{"port": "80"}"#, "port", "expected a whole number"),
            (r#"{"volumes": [1]}"#, "volumes[0]", "a string like"),
            (r#"{"volumes": [{"source": "a"}]}"#, "volumes[0].target", "is required"),
            (r#"{"volumes": [{"source": "a", "target": "/a", "readonly": true}]}"#, "volumes[0].readonly", "not a field"),
            (r#"{"resource_limits": {"cpu": []}}"#, "resource_limits.cpu", "a number like"),
            (r#"{"restart_policy": "sometimes"}"#, "restart_policy", "`on-failure`"),
        ] {
            let e = err(body);
            assert_eq!((e.status, e.field.as_deref()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {}", e.message);
            assert!(e.message.contains(needle), "{body}: {}", e.message);
            for raw in ["line 1", "column", "untagged", "struct ", "i64", "u16"] {
                assert!(!e.message.contains(raw), "{body}: parser text `{raw}` in {}", e.message);
            }
        }
    }

    #[test]
    fn prefixing_log_lines() {
        assert_eq!(&prefix_lines("[1] ", b"a\nb\n")[..], b"[1] a\n[1] b\n");
        assert_eq!(&prefix_lines("", b"a\n")[..], b"a\n");
    }
}
