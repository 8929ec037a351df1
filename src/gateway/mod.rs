//! The gateway: the web platform's TCP entry point (default 127.0.0.1:7080), separate from
//! the admin socket. Every route is declared in [`ROUTES`] with its auth rule, so no route
//! can exist without one. A request needs an API key (`apikey:` or `Authorization: Bearer`)
//! whose grant covers the addon in its path, and passes the grant's rate limit; failed
//! authentications are limited per source address, and `X-Forwarded-For` counts only from
//! configured proxies. Denials are audited (batched, so a flood cannot stall the database).
//! `/gw/{addon}/…` streams requests and responses to the addon's service, with WebSocket
//! upgrades spliced through.

pub mod keys;
pub mod limits;
mod proxy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::{Extension, Router};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::addons::Addons;
use crate::api::{self, ApiError, ApiResult, BodyLimit, ExecuteBody, JsonBody, RenderBody, RenderQuery};
use crate::config::{cidr_contains, parse_any_cidr, Config};
use crate::lifecycle::Lifecycle;
use crate::store::{now_ms, AuditEntry, Store};
use keys::{GrantAuth, KeyError, Keyring};
use limits::FailureLimiter;

/// How a route is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRule {
    /// Anyone (only the gateway's own liveness).
    Public,
    /// An API key whose grant covers the `{addon}` of the path, within its rate limit.
    GrantForAddon,
}

/// One gateway route: path, an example path for tests, its auth rule and its handler.
pub struct RouteSpec {
    pub path: &'static str,
    pub example: &'static str,
    pub auth: AuthRule,
    handler: fn() -> MethodRouter<Arc<Gateway>>,
}

/// Every gateway route. Nothing else is served: the admin API never is.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec { path: "/health", example: "/health", auth: AuthRule::Public, handler: || get(health) },
    RouteSpec { path: "/api/addons/{addon}/execute", example: "/api/addons/pay/execute", auth: AuthRule::GrantForAddon, handler: || post(execute) },
    RouteSpec { path: "/api/widgets/{addon}/{widget}", example: "/api/widgets/pay/checkout", auth: AuthRule::GrantForAddon, handler: || get(render_get).post(render_post) },
    RouteSpec { path: "/api/widgets/{addon}/{widget}/frame", example: "/api/widgets/pay/checkout/frame", auth: AuthRule::GrantForAddon, handler: || get(frame) },
    RouteSpec { path: "/gw/{addon}", example: "/gw/pay", auth: AuthRule::GrantForAddon, handler: || any(proxy::passthrough_root) },
    RouteSpec { path: "/gw/{addon}/{*rest}", example: "/gw/pay/some/path", auth: AuthRule::GrantForAddon, handler: || any(proxy::passthrough) },
];

pub struct Gateway {
    cfg: Arc<Config>,
    addons: Arc<Addons>,
    lifecycle: Arc<Lifecycle>,
    pub keyring: Keyring,
    failures: FailureLimiter,
    trusted: Vec<(IpAddr, u8)>,
    audit_tx: mpsc::Sender<AuditEntry>,
    audit_rx: std::sync::Mutex<Option<mpsc::Receiver<AuditEntry>>>,
    client: proxy::ProxyClient,
}

/// The grant a request was admitted under.
#[derive(Clone)]
pub struct Admitted(pub Arc<GrantAuth>);

impl Gateway {
    pub fn new(cfg: Arc<Config>, addons: Arc<Addons>, lifecycle: Arc<Lifecycle>) -> Arc<Self> {
        let (audit_tx, audit_rx) = mpsc::channel(10_000);
        let trusted = cfg.gateway.trusted_proxies.iter().filter_map(|p| parse_any_cidr(p)).collect();
        Arc::new(Gateway {
            failures: FailureLimiter::new(cfg.gateway.failed_auth_per_minute),
            client: proxy::client(),
            cfg,
            addons,
            lifecycle,
            keyring: Keyring::default(),
            trusted,
            audit_tx,
            audit_rx: std::sync::Mutex::new(Some(audit_rx)),
        })
    }

    pub fn store(&self) -> &Store {
        self.lifecycle.store()
    }

    /// Rebuilds the keyring from the store; call after every change to apps or grants.
    pub async fn reload_keys(&self) -> Result<(), crate::store::StoreError> {
        let apps = self.store().list_applications().await?;
        let grants = self.store().list_grants().await?;
        self.keyring.load(&apps, &grants);
        Ok(())
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the last
    /// address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted.iter().any(|(n, l)| cidr_contains(*n, *l, ip));
        if !trusted(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.into_iter().rev().find(|ip| !trusted(*ip)).unwrap_or(peer)
    }

    fn deny(&self, source: IpAddr, req: &Request, status: StatusCode, reason: &str, key_id: Option<&str>) {
        let entry = AuditEntry {
            at: now_ms(),
            uid: None,
            pid: None,
            source: Some(source.to_string()),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            status: status.as_u16(),
            detail: Some(match key_id {
                Some(k) => format!("gateway: {reason} (key ak_{k}_…)"),
                None => format!("gateway: {reason}"),
            }),
        };
        if self.audit_tx.try_send(entry).is_err() {
            tracing::warn!("gateway audit queue full; a denied request was not recorded individually");
        }
    }

    /// Writes queued audit records in batches until shutdown, then the rest.
    pub async fn run_audit_writer(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut rx) = self.audit_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        loop {
            let first = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.cancelled() => None,
            };
            let mut batch: Vec<AuditEntry> = first.into_iter().collect();
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
                if batch.len() >= 1000 {
                    break;
                }
            }
            if batch.is_empty() {
                return;
            }
            if let Err(e) = self.store().audit_batch(batch).await {
                tracing::warn!(error = %e, "cannot write gateway audit records");
            }
        }
    }

    /// The router: every route of [`ROUTES`] behind its auth rule.
    pub fn router(self: &Arc<Self>) -> Router {
        let mut r = Router::new();
        for spec in ROUTES {
            let handler = (spec.handler)();
            let handler = match spec.auth {
                AuthRule::Public => handler,
                AuthRule::GrantForAddon => handler.layer(middleware::from_fn_with_state(self.clone(), require_grant)),
            };
            r = r.route(spec.path, handler);
        }
        r.fallback(not_found).layer(Extension(BodyLimit(self.cfg.gateway.max_body_bytes as usize))).with_state(self.clone())
    }
}

/// Serves the gateway on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>, shutdown: CancellationToken) {
    let app = gw.router().into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(error = %e, "gateway server failed");
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no gateway route {} {}", req.method(), req.uri().path()))
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("apikey").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn with_retry_after(err: ApiError, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = err.into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn cors_headers(resp: &mut Response, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("etag, retry-after, x-cache"));
    }
}

/// The auth rule `GrantForAddon`, as middleware: CORS preflight, key, scope, rate limit.
async fn require_grant(State(gw): State<Arc<Gateway>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, params: RawPathParams, mut req: Request, next: Next) -> Response {
    let source = gw.client_ip(peer.ip(), req.headers());
    let addon = params.iter().find(|(k, _)| *k == "addon").map(|(_, v)| v.to_string()).unwrap_or_default();
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);

    // Preflights carry no credentials: answer them for origins some grant of this addon allows.
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let Some(origin) = origin.filter(|o| gw.keyring.any_origin_allowed(o, Some(&addon))) else {
            gw.deny(source, &req, StatusCode::FORBIDDEN, "CORS preflight from an origin no grant allows", None);
            return ApiError::new(StatusCode::FORBIDDEN, "cors_forbidden", "this origin is not allowed to call this addon; add it to a grant's allowed_origins").into_response();
        };
        let mut resp = StatusCode::NO_CONTENT.into_response();
        cors_headers(&mut resp, &origin);
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("apikey, authorization, content-type, if-none-match"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return resp;
    }

    let presented = presented_key(req.headers()).map(str::to_string);
    let grant = match gw.keyring.check(presented.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            let key_id = presented.as_deref().and_then(keys::parse).map(|(id, _)| id.to_string());
            let (code, msg) = match e {
                KeyError::Missing => ("missing_api_key", "this route needs an API key: send it as `apikey: …` or `Authorization: Bearer …`".to_string()),
                KeyError::Malformed | KeyError::Unknown => ("invalid_api_key", "the API key is not valid; ask the operator for a key (`addonctl grants create`)".to_string()),
                KeyError::Revoked => ("revoked_api_key", "this API key has been revoked; ask the operator for a new one".to_string()),
            };
            if let Err(wait) = gw.failures.fail(source) {
                gw.deny(source, &req, StatusCode::TOO_MANY_REQUESTS, &format!("too many failed authentications ({code})"), key_id.as_deref());
                return with_retry_after(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_failures", "too many failed authentications from your address; wait and retry with a valid key"), wait);
            }
            gw.deny(source, &req, StatusCode::UNAUTHORIZED, code, key_id.as_deref());
            return ApiError::new(StatusCode::UNAUTHORIZED, code, msg).into_response();
        }
    };
    if grant.addon_instance != addon {
        gw.deny(source, &req, StatusCode::FORBIDDEN, &format!("grant {} covers `{}`, not `{addon}`", grant.grant_id, grant.addon_instance), None);
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this key's grant covers the addon `{}`, not `{addon}`", grant.addon_instance)).into_response();
    }
    if let Some(limiter) = &grant.limiter {
        if let Err(wait) = limiter.try_take() {
            gw.deny(source, &req, StatusCode::TOO_MANY_REQUESTS, &format!("rate limit of grant {}", grant.grant_id), None);
            return with_retry_after(
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("rate limit of {} requests/s reached; retry later", limiter.rate())),
                wait,
            );
        }
    }
    let allowed_origin = origin.filter(|o| grant.allowed_origins.iter().any(|a| a == o || a == "*"));
    req.extensions_mut().insert(Admitted(grant));
    let mut resp = next.run(req).await;
    if let Some(o) = allowed_origin {
        cors_headers(&mut resp, &o);
    }
    resp
}

async fn health(State(gw): State<Arc<Gateway>>) -> ApiResult {
    api::ok(StatusCode::OK, json!({"status": "ok", "docker": gw.lifecycle.runtime().is_available()}), "gateway is up")
}

async fn execute(State(gw): State<Arc<Gateway>>, Path(addon): Path<String>, JsonBody(body): JsonBody<ExecuteBody>) -> ApiResult {
    let data = if body.data.is_null() { json!({}) } else { body.data };
    let out = gw.addons.execute(&addon, &body.action, data).await?;
    api::ok(StatusCode::OK, out, "")
}

async fn render_get(State(gw): State<Arc<Gateway>>, Path((addon, widget)): Path<(String, String)>, q: Result<Query<RenderQuery>, QueryRejection>, headers: HeaderMap) -> ApiResult {
    let Query(q) = q?;
    let (config, context) = q.parse()?;
    api::render_reply(&gw.addons, &addon, &widget, config, context, &headers).await
}

async fn render_post(State(gw): State<Arc<Gateway>>, Path((addon, widget)): Path<(String, String)>, headers: HeaderMap, JsonBody(body): JsonBody<RenderBody>) -> ApiResult {
    let config = if body.config.is_null() { json!({}) } else { body.config };
    let context = if body.context.is_null() { json!({}) } else { body.context };
    api::render_reply(&gw.addons, &addon, &widget, config, context, &headers).await
}

async fn frame(State(gw): State<Arc<Gateway>>, Path((addon, widget)): Path<(String, String)>, q: Result<Query<RenderQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let (config, context) = q.parse()?;
    api::frame_reply(&gw.addons, &addon, &widget, config, context).await
}
