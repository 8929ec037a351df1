//! The gateway: the web platform's TCP entry point (default 127.0.0.1:7080), separate from
//! the admin socket. Every route is declared in [`ROUTES`] with its auth rule, and requests
//! are matched against that table alone, so no route can exist without one. A request needs
//! an API key (`apikey:` or `Authorization: Bearer`) whose grant covers the addon in its
//! path, and passes the grant's rate limit; failed authentications are limited per source
//! address (IPv6 per /64) and per trusted proxy, and `X-Forwarded-For` counts only from
//! configured proxies. Denials are audited (batched, so a flood cannot stall the database);
//! a refusal reads a small request body first, so the connection stays usable, and closes
//! it (`Connection: close`) when the body is larger. Connections are bounded like every
//! listener's (`crate::http::conn`): a cap with the oldest idle shed first, and timeouts.
//! `/graphql` answers GraphQL queries over the key's addon (`crate::graphql`). `/gw/{addon}/…` streams requests and
//! responses to the addon's service, with WebSocket upgrades spliced through.
//!
//! It runs like nginx does: one worker thread per core (`gateway.workers`), each with its own
//! single-threaded runtime serving the connections handed to it and its own pool of
//! connections to addons (`crate::upstream`), so a request is served start to end on one
//! thread without waking another. Routing and auth are plain code rather than a router and
//! middleware stack: on the 2-core machine of BENCHMARKS.md both cost more than the work
//! they did.

pub mod keys;
pub mod limits;
pub mod openapi;
mod proxy;
pub mod stats;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::addons::Addons;
use crate::config::{cidr_contains, parse_any_cidr, Config};
use crate::http::conn::{Admission, Listener, Registry, Slot};
use crate::http::{self, ApiError, ErrorCode, ExecuteBody, RenderBody, RenderQuery};
use crate::lifecycle::Lifecycle;
use crate::mcp::server::{GrantScope, McpServer};
use crate::mcp::Mcp;
use crate::store::{now_ms, AuditEntry, Store};
use keys::{GrantAuth, KeyError, Keyring};
use limits::FailureLimiter;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::StreamableHttpService;

/// How a route is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRule {
    /// Anyone (only the gateway's own liveness).
    Public,
    /// An API key whose grant covers the `{addon}` of the path, within its rate limit.
    GrantForAddon,
    /// Any valid API key within its grant's rate limit; what it reaches is its grant's
    /// addon (the MCP endpoint shows and runs only that addon's tools).
    AnyGrant,
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Health,
    Execute,
    Render,
    Frame,
    Passthrough,
    Mcp,
    OpenApi,
    Graphql,
}

/// One gateway route: path pattern, an example path for tests, its auth rule, the methods
/// it answers (none listed: any) and its handler.
pub struct RouteSpec {
    pub path: &'static str,
    pub example: &'static str,
    pub auth: AuthRule,
    pub methods: &'static [&'static str],
    handler: Handler,
}

/// Every gateway route. Nothing else is served: the admin API never is. In a pattern,
/// `{name}` is one path segment and `{*rest}` the rest of the path (possibly empty).
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec { path: "/health", example: "/health", auth: AuthRule::Public, methods: &["GET", "HEAD"], handler: Handler::Health },
    RouteSpec {
        path: "/openapi.json",
        example: "/openapi.json",
        auth: AuthRule::Public,
        methods: &["GET", "HEAD"],
        handler: Handler::OpenApi,
    },
    RouteSpec {
        path: "/api/addons/{addon}/execute",
        example: "/api/addons/pay/execute",
        auth: AuthRule::GrantForAddon,
        methods: &["POST"],
        handler: Handler::Execute,
    },
    RouteSpec {
        path: "/api/widgets/{addon}/{widget}",
        example: "/api/widgets/pay/checkout",
        auth: AuthRule::GrantForAddon,
        methods: &["GET", "HEAD", "POST"],
        handler: Handler::Render,
    },
    RouteSpec {
        path: "/api/widgets/{addon}/{widget}/frame",
        example: "/api/widgets/pay/checkout/frame",
        auth: AuthRule::GrantForAddon,
        methods: &["GET", "HEAD"],
        handler: Handler::Frame,
    },
    RouteSpec { path: "/mcp", example: "/mcp", auth: AuthRule::AnyGrant, methods: &["GET", "POST", "DELETE"], handler: Handler::Mcp },
    // Queries over the key's addon only (`crate::graphql`); no mutations, no subscriptions.
    RouteSpec { path: "/graphql", example: "/graphql", auth: AuthRule::AnyGrant, methods: &["POST"], handler: Handler::Graphql },
    RouteSpec { path: "/gw/{addon}", example: "/gw/pay", auth: AuthRule::GrantForAddon, methods: &[], handler: Handler::Passthrough },
    RouteSpec {
        path: "/gw/{addon}/{*rest}",
        example: "/gw/pay/some/path",
        auth: AuthRule::GrantForAddon,
        methods: &[],
        handler: Handler::Passthrough,
    },
];

/// The path parameters of a matched route, as they appear in the path (not yet decoded).
#[derive(Debug, Default, PartialEq, Eq)]
struct Params<'p> {
    addon: &'p str,
    widget: &'p str,
    /// What follows `{*rest}`'s position, without its leading `/`.
    rest: Option<&'p str>,
}

/// Matches `path` against a route pattern of [`ROUTES`].
fn match_route<'p>(pattern: &str, path: &'p str) -> Option<Params<'p>> {
    let mut params = Params::default();
    // What is left of the path: `None` once every segment has been taken.
    let mut left = Some(path.strip_prefix('/')?);
    for seg in pattern.strip_prefix('/')?.split('/') {
        let remaining = left?;
        if seg.starts_with("{*") {
            params.rest = Some(remaining);
            return Some(params);
        }
        let (head, tail) = match remaining.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (remaining, None),
        };
        match seg {
            "{addon}" if !head.is_empty() => params.addon = head,
            "{widget}" if !head.is_empty() => params.widget = head,
            lit if lit == head => {}
            _ => return None,
        }
        left = tail;
    }
    left.is_none().then_some(params)
}

/// `%XX` escapes of a path segment decoded (as a router would); `None` if that is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

pub struct Gateway {
    /// Limits, timeouts, CORS and proxy settings, read on every request.
    cfg: Arc<Config>,
    /// Where `/gw/{addon}/execute` and widget renders go, with their caches and breakers.
    addons: Arc<Addons>,
    /// The store and the instances' addresses, for proxied calls and the keyring reload.
    lifecycle: Arc<Lifecycle>,
    /// The keys in memory, so a request is authenticated without a database read.
    pub keyring: Keyring,
    /// Failed authentications per address and per proxy, to slow down key guessing.
    failures: FailureLimiter,
    /// The proxies (`gateway.trusted_proxies`) whose `X-Forwarded-For` is believed.
    trusted: Vec<(IpAddr, u8)>,
    /// Refusals to audit, queued so a request never waits on a database write.
    audit_tx: mpsc::Sender<AuditEntry>,
    /// The other end of `audit_tx`, taken once by [`Gateway::run_audit_writer`].
    audit_rx: std::sync::Mutex<Option<mpsc::Receiver<AuditEntry>>>,
    /// Requests by route and status, failed authentications, rate-limit refusals.
    stats: stats::GatewayStats,
    /// The MCP tools of the installed addons (shared with the admin API).
    pub mcp: Arc<Mcp>,
    /// rmcp's Streamable HTTP service behind `/mcp`, called once the key is checked.
    mcp_http: StreamableHttpService<McpServer<Mcp>, LocalSessionManager>,
    /// The GraphQL schema behind `/graphql` (queries only), scoped per request by the key.
    graphql: crate::graphql::GatewaySchema,
}

/// What the auth rule decided for a request.
enum Gate {
    /// Admitted under this grant; answers carry CORS headers for `cors_origin`. `source` is
    /// the client's address (see [`Gateway::client_ip`]).
    Admitted { grant: Arc<GrantAuth>, cors_origin: Option<String>, source: IpAddr },
    /// Answered already: a refusal, or a CORS preflight.
    Answered(Response),
}

impl Gateway {
    pub fn new(cfg: Arc<Config>, addons: Arc<Addons>, lifecycle: Arc<Lifecycle>) -> Arc<Self> {
        let (audit_tx, audit_rx) = mpsc::channel(10_000);
        let trusted = cfg.gateway.trusted_proxies.iter().filter_map(|p| parse_any_cidr(p)).collect();
        let mcp = Mcp::new(addons.clone(), lifecycle.clone());
        let mcp_http = crate::mcp::server::http_service(mcp.clone(), mcp_allowed_hosts(&cfg), cfg.gateway.max_body_bytes as usize);
        let graphql = crate::graphql::gateway_schema(addons.clone(), &cfg.graphql);
        Arc::new(Gateway {
            mcp,
            mcp_http,
            graphql,
            failures: FailureLimiter::new(cfg.gateway.failed_auth_per_minute, cfg.gateway.failed_auth_per_proxy_per_minute),
            cfg,
            addons,
            lifecycle,
            keyring: Keyring::default(),
            trusted,
            audit_tx,
            audit_rx: std::sync::Mutex::new(Some(audit_rx)),
            stats: stats::GatewayStats::new(ROUTES.len()),
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

    /// The client's address, and the trusted proxy the request came through (if any). From
    /// an untrusted peer it is the peer, whatever `X-Forwarded-For` says. From a trusted
    /// proxy, the header's hops are walked from the right (the nearest first) past trusted
    /// proxies: the first hop that is not trusted is the client. A hop that cannot be read
    /// ends the walk at the last trusted address (nothing trustworthy vouched for what is
    /// left of it); when every hop is trusted, the leftmost is the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, Option<IpAddr>) {
        let trusted = |ip: IpAddr| self.trusted.iter().any(|(n, l)| cidr_contains(*n, *l, ip));
        if !trusted(peer) {
            return (peer, None);
        }
        let lines: Vec<&str> = headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("?")).collect();
        let mut last_trusted = peer;
        for hop in lines.iter().flat_map(|v| v.split(',')).rev() {
            let hop = hop.trim();
            let ip = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()));
            match ip {
                Some(ip) if trusted(ip) => last_trusted = ip,
                Some(ip) => return (ip, Some(peer)),
                None => break,
            }
        }
        (last_trusted, Some(peer))
    }

    fn deny(&self, source: IpAddr, method: &Method, path: &str, status: StatusCode, reason: &str, key_id: Option<&str>) {
        let entry = AuditEntry {
            at: now_ms(),
            uid: None,
            pid: None,
            source: Some(source.to_string()),
            method: method.to_string(),
            path: path.to_string(),
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

    /// The gateway's series for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let routes: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
        self.stats.render(out, &routes);
    }

    /// Serves one request and counts its answer by route and status.
    async fn handle(self: Arc<Self>, req: axum::extract::Request, peer: SocketAddr) -> Response {
        let mut route = ROUTES.len();
        let resp = self.route_request(req, peer, &mut route).await;
        self.stats.request(route, resp.status().as_u16());
        resp
    }

    /// Serves one request: the route from [`ROUTES`] (its index goes to `route`), its auth
    /// rule, its handler.
    async fn route_request(self: &Arc<Self>, req: axum::extract::Request, peer: SocketAddr, route: &mut usize) -> Response {
        let matched = ROUTES.iter().enumerate().find_map(|(i, r)| match_route(r.path, req.uri().path()).map(|p| (i, r, p)));
        let Some((index, spec, params)) = matched else {
            let resp = ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no gateway route {} {}; the gateway serves /health, /api/addons/{{addon}}/execute, /api/widgets/…, /mcp, /graphql and /gw/{{addon}}/…",
                    req.method(),
                    req.uri().path()
                ),
            )
            .into_response();
            return refuse(req, resp).await;
        };
        *route = index;
        let (Some(addon), Some(widget)) = (percent_decode(params.addon), percent_decode(params.widget)) else {
            let resp = ApiError::new(ErrorCode::InvalidPath, "the path is not valid UTF-8 once decoded; percent-encode UTF-8 text only")
                .field_name("path")
                .into_response();
            return refuse(req, resp).await;
        };
        let (addon, widget) = (addon.into_owned(), widget.into_owned());
        let rest = params.rest.map(str::to_string);
        let (grant, cors_origin) = match spec.auth {
            AuthRule::Public => (None, None),
            AuthRule::GrantForAddon => match self.admit(peer, Some(&addon), &req) {
                Gate::Admitted { grant, cors_origin, source } => (Some((grant, source)), cors_origin),
                Gate::Answered(resp) => return refuse(req, resp).await,
            },
            AuthRule::AnyGrant => match self.admit(peer, None, &req) {
                Gate::Admitted { grant, cors_origin, source } => (Some((grant, source)), cors_origin),
                Gate::Answered(resp) => return refuse(req, resp).await,
            },
        };
        // The call goes to the environment the key's grant covers (`pay` → `pay--dev` for a
        // dev key): never to another, whatever the path says.
        let addon = grant.as_ref().map_or(addon, |(g, _)| g.addon_instance.clone());
        if !spec.methods.is_empty() && !spec.methods.contains(&req.method().as_str()) {
            let allow = spec.methods.join(", ");
            let mut resp =
                ApiError::new(ErrorCode::MethodNotAllowed, format!("{} is not served on {}; use {allow}", req.method(), spec.path))
                    .into_response();
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return refuse(req, resp).await;
        }
        let result = match spec.handler {
            Handler::Health => {
                http::ok(StatusCode::OK, json!({"status": "ok", "docker": self.lifecycle.runtime().is_available()}), "gateway is up")
            }
            Handler::OpenApi => {
                Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], openapi::document_text()).into_response())
            }
            Handler::Execute => self.execute(&addon, req).await,
            Handler::Render => self.render(&addon, &widget, req).await,
            Handler::Frame => self.frame(&addon, &widget, req.uri()).await,
            Handler::Mcp => self.mcp(req, grant.as_ref().map(|(g, _)| g.addon_instance.clone())).await,
            Handler::Graphql => self.graphql(req, grant.as_ref().map(|(g, _)| g.addon_instance.clone())).await,
            Handler::Passthrough => {
                let (application, source) = grant.as_ref().map_or(("", peer.ip()), |(g, source)| (g.application.as_str(), *source));
                Ok(proxy::forward(self, &addon, rest.as_deref().unwrap_or(""), peer, source, application, req).await)
            }
        };
        let mut resp = result.unwrap_or_else(IntoResponse::into_response);
        if let Some(o) = cors_origin {
            cors_headers(&mut resp, &o);
        }
        resp
    }

    /// The auth rules `GrantForAddon` (`addon` given: the grant must cover it) and
    /// `AnyGrant`: CORS preflight, key, scope, rate limit.
    fn admit(&self, peer: SocketAddr, addon: Option<&str>, req: &axum::extract::Request) -> Gate {
        let (source, proxy) = self.client_ip(peer.ip(), req.headers());
        let (method, path) = (req.method(), req.uri().path());
        let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());

        // Preflights carry no credentials: answer them for origins some grant of this addon allows.
        if method == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            let Some(origin) = origin.filter(|o| self.keyring.any_origin_allowed(o, addon)) else {
                self.stats.auth_failure(ErrorCode::CorsForbidden);
                self.deny(source, method, path, StatusCode::FORBIDDEN, "CORS preflight from an origin no grant allows", None);
                return Gate::Answered(
                    ApiError::new(
                        ErrorCode::CorsForbidden,
                        "this origin is not allowed to call this addon; add it to a grant's allowed_origins",
                    )
                    .into_response(),
                );
            };
            let mut resp = StatusCode::NO_CONTENT.into_response();
            cors_headers(&mut resp, origin);
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("apikey, authorization, content-type, if-none-match"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            return Gate::Answered(resp);
        }

        let presented = presented_key(req.headers());
        let grant = match self.keyring.check(presented) {
            Ok(g) => g,
            Err(e) => {
                let key_id = presented.and_then(keys::parse).map(|(id, _)| id);
                let (code, msg) = match e {
                    KeyError::Missing => {
                        (ErrorCode::MissingApiKey, "this route needs an API key: send it as `apikey: …` or `Authorization: Bearer …`")
                    }
                    KeyError::Malformed | KeyError::Unknown => {
                        (ErrorCode::InvalidApiKey, "the API key is not valid; ask the operator for a key (`addonctl grants create`)")
                    }
                    KeyError::Revoked => (ErrorCode::RevokedApiKey, "this API key has been revoked; ask the operator for a new one"),
                };
                if let Err(wait) = self.failures.fail(source, proxy) {
                    self.stats.auth_failure(ErrorCode::TooManyFailures);
                    self.deny(
                        source,
                        method,
                        path,
                        StatusCode::TOO_MANY_REQUESTS,
                        &format!("too many failed authentications ({code})"),
                        key_id,
                    );
                    return Gate::Answered(with_retry_after(
                        ApiError::new(
                            ErrorCode::TooManyFailures,
                            "too many failed authentications from your address; wait and retry with a valid key",
                        ),
                        wait,
                    ));
                }
                self.stats.auth_failure(code);
                self.deny(source, method, path, StatusCode::UNAUTHORIZED, code.as_str(), key_id);
                // RFC 9110 asks a 401 to name the scheme; MCP clients read it too.
                let mut resp = ApiError::new(code, msg).into_response();
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"addond\""));
                return Gate::Answered(resp);
            }
        };
        // MCP names no addon in its path: its tools are filtered by the grant instead.
        if let Some(addon) = addon {
            // The path names the addon (`pay`) or one environment of it (`pay--dev`, `pay--prod`);
            // with `gateway.base_domain`, the Host `pay.dev.<base_domain>` names one too.
            let (base, path_env) = crate::model::split_environment(addon);
            let path_env = addon.contains(crate::model::ENVIRONMENT_SEPARATOR).then_some(path_env);
            let host_env = self.host_environment(req.headers(), base);
            let (grant_base, grant_env) = crate::model::split_environment(&grant.addon_instance);
            let contradicts = path_env.zip(host_env.as_deref()).is_some_and(|(p, h)| p != h);
            let wanted = path_env.or(host_env.as_deref());
            if contradicts || grant_base != base || wanted.is_some_and(|w| w != grant_env) {
                let asked = match wanted {
                    Some(w) => format!("`{base}` in environment `{w}`"),
                    None => format!("`{base}`"),
                };
                self.stats.auth_failure(ErrorCode::Forbidden);
                self.deny(
                    source,
                    method,
                    path,
                    StatusCode::FORBIDDEN,
                    &format!("grant {} covers `{grant_base}` in `{grant_env}`, not {asked}", grant.grant_id),
                    None,
                );
                return Gate::Answered(
                    ApiError::new(
                        ErrorCode::Forbidden,
                        format!("this key's grant covers the addon `{grant_base}` in environment `{grant_env}`, not {asked}"),
                    )
                    .into_response(),
                );
            }
        }
        if let Some(limiter) = &grant.limiter {
            if let Err(wait) = limiter.try_take() {
                self.stats.rate_limited();
                self.deny(source, method, path, StatusCode::TOO_MANY_REQUESTS, &format!("rate limit of grant {}", grant.grant_id), None);
                return Gate::Answered(with_retry_after(
                    ApiError::new(ErrorCode::RateLimited, format!("rate limit of {} requests/s reached; retry later", limiter.rate())),
                    wait,
                ));
            }
        }
        let cors_origin = origin.filter(|o| grant.allowed_origins.iter().any(|a| a == o || a == "*")).map(str::to_string);
        Gate::Admitted { grant, cors_origin, source }
    }

    /// The environment a Host `<addon>.<env>.<gateway.base_domain>` names for `addon`.
    fn host_environment(&self, headers: &HeaderMap, addon: &str) -> Option<String> {
        let domain = &self.cfg.gateway.base_domain;
        if domain.is_empty() {
            return None;
        }
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let prefix = host.strip_suffix(domain.as_str())?.strip_suffix('.')?;
        let (a, env) = prefix.split_once('.')?;
        (a == addon && !env.contains('.')).then(|| env.to_string())
    }

    /// A JSON request body, at most `gateway.max_body_bytes`.
    async fn json_body<T: serde::de::DeserializeOwned>(&self, body: Body) -> Result<T, ApiError> {
        let limit = self.cfg.gateway.max_body_bytes as usize;
        let bytes = http::read_body(body, limit, "gateway.max_body_bytes").await?;
        http::parse_json(&bytes)
    }

    async fn execute(&self, addon: &str, req: axum::extract::Request) -> http::ApiResult {
        let body: ExecuteBody = self.json_body(req.into_body()).await?;
        let out = self.addons.execute_json(addon, &body.action, crate::addons::ActionInput::Raw(body.data.as_deref())).await?;
        http::ok_json(StatusCode::OK, &out, &format!("`{}` of {addon} answered", body.action))
    }

    /// `/mcp` for a key whose grant covers `addon`: a stateless `tools/call` by the fast
    /// path when it can take it (`crate::mcp::fast`), everything else by rmcp's service.
    async fn mcp(&self, mut req: axum::extract::Request, addon: Option<String>) -> http::ApiResult {
        let scope = addon.clone().map_or(crate::mcp::Scope::Nothing, crate::mcp::Scope::Addon);
        if let Some(a) = addon {
            req.extensions_mut().insert(GrantScope(a));
        }
        if req.method() != Method::POST {
            return Ok(typed(self.mcp_http.handle(req).await.map(Body::new)));
        }
        let (parts, body) = req.into_parts();
        let bytes = http::read_body(body, self.cfg.gateway.max_body_bytes as usize, "gateway.max_body_bytes").await?;
        match crate::mcp::fast::try_call(&self.mcp, &scope, parts, bytes, &self.mcp_http.config.allowed_hosts).await {
            Ok(resp) => Ok(resp),
            Err((parts, bytes)) => {
                Ok(typed(self.mcp_http.handle(axum::extract::Request::from_parts(parts, Body::from(bytes))).await.map(Body::new)))
            }
        }
    }

    /// `/graphql` for a key whose grant covers `addon`: the request is scoped to it.
    async fn graphql(&self, req: axum::extract::Request, addon: Option<String>) -> http::ApiResult {
        // The route's auth rule admits keys only, so there is always a grant here.
        let Some(addon) = addon else {
            return Err(ApiError::new(ErrorCode::MissingApiKey, "this route needs an API key"));
        };
        let bytes = http::read_body(req.into_body(), self.cfg.gateway.max_body_bytes as usize, "gateway.max_body_bytes").await?;
        let request = crate::graphql::request(&bytes)?.data(crate::graphql::Scope::Addon(addon));
        Ok(crate::graphql::answer(self.graphql.execute(request).await))
    }

    async fn render(&self, addon: &str, widget: &str, req: axum::extract::Request) -> http::ApiResult {
        let (parts, body) = req.into_parts();
        let query = (parts.method != Method::POST).then(|| parts.uri.query().unwrap_or(""));
        if let Some(q) = query {
            if let Some(hit) = self.addons.render_cached_query(addon, widget, q).await? {
                return Ok(http::rendered_reply(&hit, &parts.headers));
            }
        }
        let (config, context) = if parts.method == Method::POST {
            let body: RenderBody = self.json_body(body).await?;
            body.inputs()?
        } else {
            let Query(q) = Query::<RenderQuery>::try_from_uri(&parts.uri)?;
            q.parse()?
        };
        http::render_reply(&self.addons, addon, widget, config, context, &parts.headers, query).await
    }

    async fn frame(&self, addon: &str, widget: &str, uri: &axum::http::Uri) -> http::ApiResult {
        let Query(q) = Query::<RenderQuery>::try_from_uri(uri)?;
        let (config, context) = q.parse()?;
        http::frame_reply(&self.addons, addon, widget, config, context).await
    }
}

/// rmcp's refusals (400, 404, 406, 415…) are plain text without a `Content-Type`; say so,
/// as every other answer of the gateway does (and the OpenAPI document promises).
fn typed(mut resp: Response) -> Response {
    if !resp.status().is_success() && !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    resp
}

/// A connection handed to a worker, its place in the gateway's connection budget, and the
/// count it adds to while it lasts.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    load: Arc<AtomicUsize>,
}

/// Takes one off a worker's count of open connections when the connection ends.
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves the gateway on `listener` until `shutdown`: `gateway.workers` threads (0: one per
/// core), each running its own single-threaded runtime. Connections are accepted here and
/// handed to the worker with the fewest open ones (a shared listener lets one worker grab
/// most of a burst of connections, and it then works alone). Returns when every worker has
/// finished the requests it had in flight.
pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>, shutdown: CancellationToken) {
    let registry = Registry::for_listener(Listener::Gateway, &gw.cfg.http);
    // Failed-auth buckets back at full budget are forgotten here, on a timer, rather than
    // by whichever request happens to find the map large.
    let sweeper = {
        let (gw, shutdown) = (gw.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => gw.failures.sweep(),
                }
            }
        })
    };
    let workers = match gw.cfg.gateway.workers {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        n => n,
    };
    let mut handoffs = Vec::new();
    let mut finished = Vec::new();
    for i in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (gw, shutdown) = (gw.clone(), shutdown.clone());
        let spawned = std::thread::Builder::new().name(format!("gateway-{i}")).spawn(move || {
            // Blocking work (a database read on a cold cache) is rare here: two threads.
            match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(2).build() {
                Ok(rt) => {
                    rt.block_on(worker(rx, gw, shutdown));
                    drop(rt);
                }
                Err(e) => tracing::error!(error = %e, "gateway: cannot start the runtime of worker {i}"),
            }
            let _ = done_tx.send(());
        });
        match spawned {
            Ok(_) => {
                handoffs.push((tx, Arc::new(AtomicUsize::new(0))));
                finished.push(done_rx);
            }
            Err(e) => tracing::error!(error = %e, "gateway: cannot start worker {i}"),
        }
    }
    let mut next = 0usize;
    while !handoffs.is_empty() {
        let Some((stream, peer)) = registry.next_connection(&shutdown, || listener.accept()).await else { break };
        let slot = match registry.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                crate::http::conn::refuse_overloaded(stream, Listener::Gateway);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "gateway: cannot hand a connection to a worker");
                continue;
            }
        };
        // The least loaded worker, ties broken in turn; a worker that has stopped (its
        // thread died) is dropped from the list and the connection goes to another.
        let mut handoff = Handoff { stream, peer, slot, load: Arc::default() };
        while !handoffs.is_empty() {
            next = next.wrapping_add(1);
            let n = handoffs.len();
            let pick = (0..n).map(|k| (next + k) % n).min_by_key(|i| handoffs[*i].1.load(Ordering::Relaxed)).unwrap_or(0);
            let (tx, load) = &handoffs[pick];
            load.fetch_add(1, Ordering::Relaxed);
            handoff.load = load.clone();
            match tx.send(handoff) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    back.load.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!("gateway: a worker has stopped; its connections go to the others");
                    handoffs.remove(pick);
                    handoff = back;
                }
            }
        }
    }
    if handoffs.is_empty() && !shutdown.is_cancelled() {
        tracing::error!("gateway: every worker has stopped; the gateway no longer answers");
    }
    // Closing the hand-offs tells the workers to finish.
    drop(handoffs);
    for done in finished {
        let _ = done.await;
    }
    sweeper.abort();
}

/// One worker: serves the connections handed to it on this thread until `shutdown`, then
/// lets requests in flight finish (10 s at most).
async fn worker(mut handoffs: mpsc::UnboundedReceiver<Handoff>, gw: Arc<Gateway>, shutdown: CancellationToken) {
    crate::upstream::own_thread_pool();
    let tracker = tokio_util::task::TaskTracker::new();
    // A timer that always fires within a second: tokio wakes its own driver (an eventfd
    // write and an extra epoll_wait) whenever a new timer is the earliest one, which every
    // call's timeout otherwise is on a worker with nothing else scheduled. It also sweeps
    // this worker's idle connections now and then.
    let keeper = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = keeper.cancelled() => return,
                _ = tick.tick() => crate::upstream::sweep(),
            }
        }
    });
    loop {
        let Handoff { stream, peer, slot, load } = tokio::select! {
            _ = shutdown.cancelled() => break,
            h = handoffs.recv() => match h {
                Some(h) => h,
                None => break,
            },
        };
        let guard = LoadGuard(load);
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "gateway: cannot take over a connection");
                continue;
            }
        };
        let (gw, shutdown) = (gw.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _guard = guard;
            let handler = move |req| gw.clone().handle(req, peer);
            crate::http::conn::serve_connection(stream, slot, &shutdown, handler).await;
        });
    }
    tracker.close();
    tracker.wait().await;
    crate::upstream::clear_thread_pool();
}

/// The `Host` values `/mcp` accepts: `gateway.mcp_allowed_hosts`, or when that is empty
/// the loopback names and the listen address.
fn mcp_allowed_hosts(cfg: &Config) -> Vec<String> {
    if !cfg.gateway.mcp_allowed_hosts.is_empty() {
        return cfg.gateway.mcp_allowed_hosts.clone();
    }
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].iter().map(|s| s.to_string()).collect();
    let ip = cfg.gateway.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        hosts.push(ip.to_string());
    }
    hosts
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("apikey").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Request bodies up to this size are read (and dropped) before a refusal is answered, so
/// the client's keep-alive connection stays usable; a larger one is not read, and the
/// refusal says `Connection: close`.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// Answers `resp`, a refusal given before the request's body was read: a small body is read
/// first so the connection can carry the next request; a larger (or malformed, or slow)
/// one is left, and [`crate::http::conn::serve_connection`] closes the connection after
/// the answer, lingering so the client reads it.
async fn refuse(req: axum::extract::Request, resp: Response) -> Response {
    // A client that asked `Expect: 100-continue` has not sent its body: reading it would
    // make hyper invite it first. The refusal goes at once, and the connection closes.
    let expects = req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        crate::http::conn::drain(req.into_body(), REFUSAL_DRAIN_BYTES).await;
    }
    resp
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {limit} bytes (gateway.max_body_bytes)"))
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

impl crate::access::Keyring for Gateway {
    async fn reload_keys(&self) -> Result<(), crate::store::StoreError> {
        Gateway::reload_keys(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(path: &str) -> Option<(&'static str, Params<'_>)> {
        ROUTES.iter().find_map(|r| match_route(r.path, path).map(|p| (r.path, p)))
    }

    #[test]
    fn paths_match_the_route_table_only() {
        assert_eq!(route_of("/health").map(|r| r.0), Some("/health"));
        let (p, params) = route_of("/api/addons/pay/execute").expect("execute");
        assert_eq!((p, params.addon), ("/api/addons/{addon}/execute", "pay"));
        let (p, params) = route_of("/api/widgets/pay/checkout").expect("render");
        assert_eq!((p, params.addon, params.widget), ("/api/widgets/{addon}/{widget}", "pay", "checkout"));
        assert_eq!(route_of("/api/widgets/pay/checkout/frame").map(|r| r.0), Some("/api/widgets/{addon}/{widget}/frame"));
        let (p, params) = route_of("/gw/pay").expect("gw root");
        assert_eq!((p, params.rest), ("/gw/{addon}", None));
        let (p, params) = route_of("/gw/pay/").expect("gw slash");
        assert_eq!((p, params.rest), ("/gw/{addon}/{*rest}", Some("")));
        let (_, params) = route_of("/gw/pay/a/b%20c/").expect("gw rest");
        assert_eq!(params.rest, Some("a/b%20c/"), "the rest stays as sent");
        for miss in [
            "/",
            "",
            "/health/",
            "/healthz",
            "/api/addons/pay",
            "/api/addons//execute",
            "/api/addons/pay/execute/x",
            "/api/widgets/pay",
            "/api/widgets/pay/checkout/frame/x",
            "/gw",
            "/gw/",
            "/metrics",
            "/api/applications",
        ] {
            assert!(route_of(miss).is_none(), "{miss} must not match");
        }
        for r in ROUTES {
            assert!(match_route(r.path, r.example).is_some(), "{}'s example matches it", r.path);
        }
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("pay").as_deref(), Some("pay"));
        assert_eq!(percent_decode("p%61y").as_deref(), Some("pay"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
    }
}
