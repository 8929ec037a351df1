//! The addon API: what addon containers call (`ADDOND_API`). It listens only on the
//! gateway address of each addon network, starting when the lifecycle makes (or finds) the
//! network and stopping when it removes it, so other hosts never reach it; each listener
//! serves only peers on its own network (a container can send to another network's gateway
//! address, which is the host's too). Every request carries the instance's own token (`ADDOND_TOKEN`, stored hashed, replaced with each new
//! container and gone with its instance). What an instance may do is what its addon's
//! manifest declares: `events.emit` (only names listed in `emits`), `storage` (a key-value
//! store per installed addon instance, with quotas), `addons.execute` (only addons it depends
//! on). Anything else is a 403 that names the missing permission.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addons::manifest::Manifest;
use crate::addons::Addons;
use crate::config::Config;
use crate::events::Events;
use crate::http::conn::{Admission, Listener, Registry};
use crate::http::openapi::{finish, ErrorBody, Success, E400, E403, E404, E502, E503, E504};
use crate::http::{self, ApiError, ApiResult, BodyLimit, ErrorCode, JsonBody};
use crate::isolation::Subnet;
use crate::lifecycle::{AddonNetworks, Lifecycle};
use crate::runtime::NetInfo;
use crate::secret::{ct_eq, hash_secret};

pub struct AddonApi {
    cfg: Arc<Config>,
    lifecycle: Arc<Lifecycle>,
    addons: Arc<Addons>,
    events: Arc<Events>,
    /// Where it listens, per addon network; one at a time is bound or dropped.
    listeners: tokio::sync::Mutex<HashMap<String, Listening>>,
    /// The daemon's shutdown; each listener stops with it (or when its network goes).
    shutdown: CancellationToken,
    /// The servers, waited for at shutdown.
    servers: TaskTracker,
    /// Lets `&self` hand the router an owning handle.
    me: std::sync::Weak<AddonApi>,
    /// One connection budget for all the addresses: addons share it, and the gateway and
    /// the admin socket have their own.
    registry: Arc<Registry>,
}

/// One listener of the addon API, on one network's gateway.
struct Listening {
    /// Where it listens: the network's gateway, `addon_api.port`.
    addr: SocketAddr,
    /// Cancelled when the network goes (a child of the daemon's shutdown).
    stop: CancellationToken,
}

/// The calling instance, as its token proves.
struct Caller {
    addon_instance: String,
    manifest: Manifest,
}

fn forbidden(permission: &str, detail: &str) -> ApiError {
    ApiError::new(ErrorCode::PermissionDenied, format!("{detail}: the addon's manifest lacks the `{permission}` permission"))
}

impl FromRequestParts<Arc<AddonApi>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AddonApi>) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(ErrorCode::InvalidToken, m.to_string());
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| unauthorized("send ADDOND_TOKEN as `Authorization: Bearer …`"))?;
        let (id, secret) = token.strip_prefix("at_").and_then(|t| t.rsplit_once('_')).ok_or_else(|| unauthorized("malformed token"))?;
        let crate::store::TokenRow { hash, addon_instance: addon } =
            st.lifecycle.store().instance_token(id).await?.ok_or_else(|| unauthorized("unknown or revoked token"))?;
        if !ct_eq(hash_secret(secret).as_bytes(), hash.as_bytes()) {
            return Err(unauthorized("unknown or revoked token"));
        }
        let addon_instance = addon.ok_or_else(|| ApiError::new(ErrorCode::PermissionDenied, "only installed addons use the addon API"))?;
        let manifest = st.addons.installed_manifest(&addon_instance).await?;
        Ok(Caller { addon_instance, manifest })
    }
}

impl Caller {
    fn require(&self, permission: &str, detail: &str) -> Result<(), ApiError> {
        if self.manifest.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(forbidden(permission, detail))
        }
    }
}

impl AddonApi {
    /// Made before the first resync and handed to the lifecycle, which has it listen on
    /// each addon network as the network appears.
    pub fn new(
        cfg: Arc<Config>,
        lifecycle: Arc<Lifecycle>,
        addons: Arc<Addons>,
        events: Arc<Events>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let registry = Registry::for_listener(Listener::AddonApi, &cfg.http);
        let api = Arc::new_cyclic(|me| AddonApi {
            cfg,
            lifecycle: lifecycle.clone(),
            addons,
            events,
            listeners: Default::default(),
            shutdown,
            servers: TaskTracker::new(),
            me: me.clone(),
            registry,
        });
        lifecycle.set_addon_networks(api.clone());
        api
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let limit = BodyLimit(self.cfg.addon_api.kv_max_value_bytes.max(64 * 1024) + 4096, "addon_api.kv_max_value_bytes, plus 4 KiB");
        Router::new()
            .route("/v1/health", get(health))
            .route("/v1/events", post(emit))
            .route("/v1/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
            .route("/v1/addons/{name}/execute", post(execute))
            .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such addon API route") })
            .layer(Extension(limit))
            .with_state(self.clone())
    }

    /// Binds on a network's gateway address, retrying briefly: the bridge may take a moment
    /// to carry its address after Docker made the network.
    async fn bind(&self, net: &NetInfo) -> Option<tokio::net::TcpListener> {
        let addr = SocketAddr::new(net.gateway.into(), self.cfg.addon_api.port);
        for attempt in 0..20 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return Some(l),
                Err(e) if attempt == 19 => {
                    tracing::warn!(network = %net.name, %addr, error = %e, "cannot bind the addon API; its containers get no ADDOND_API")
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Serves until the daemon or the network goes, refusing peers from other networks.
    fn serve(&self, l: tokio::net::TcpListener, net: &NetInfo, stop: CancellationToken) {
        let Some(me) = self.me.upgrade() else { return };
        let subnet = net.subnet;
        let name = net.name.clone();
        let app = me.router().layer(axum::middleware::from_fn(move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: axum::middleware::Next| {
            let name = name.clone();
            async move {
                if !on_network(subnet, peer) {
                    return ApiError::new(
                        ErrorCode::PermissionDenied,
                        format!("this address serves the containers of network {name}; call the addon API at ADDOND_API, on your own network's gateway"),
                    )
                    .into_response();
                }
                next.run(req).await
            }
        }));
        self.servers.spawn(serve(l, app, self.registry.clone(), stop));
    }

    /// Waits for the daemon's shutdown, then for every listener to finish.
    pub async fn run(self: Arc<Self>) {
        self.shutdown.cancelled().await;
        self.servers.close();
        self.servers.wait().await;
    }
}

/// A peer of the listener on `subnet`'s gateway is on that network.
fn on_network(subnet: Subnet, peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => subnet.contains(ip),
        std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some_and(|ip| subnet.contains(ip)),
    }
}

impl AddonNetworks for AddonApi {
    fn network_up<'a>(&'a self, net: &'a NetInfo) -> futures_util::future::BoxFuture<'a, Option<SocketAddr>> {
        Box::pin(async move {
            let mut listeners = self.listeners.lock().await;
            if let Some(l) = listeners.get(&net.name) {
                if l.addr.ip() == std::net::IpAddr::V4(net.gateway) {
                    return Some(l.addr);
                }
                // The network was made again with another subnet behind our back.
                l.stop.cancel();
                listeners.remove(&net.name);
            }
            if self.shutdown.is_cancelled() {
                return None;
            }
            let l = self.bind(net).await?;
            let addr = l.local_addr().ok()?;
            let stop = self.shutdown.child_token();
            tracing::info!(network = %net.name, %addr, "addon API listening");
            self.serve(l, net, stop.clone());
            listeners.insert(net.name.clone(), Listening { addr, stop });
            Some(addr)
        })
    }

    fn network_down<'a>(&'a self, network: &'a str) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(l) = self.listeners.lock().await.remove(network) {
                tracing::info!(%network, addr = %l.addr, "addon API no longer listening");
                l.stop.cancel();
            }
        })
    }
}

/// Serves one addon API address until `shutdown`, with the connection budget and timeouts
/// of every listener, then lets requests in flight finish.
async fn serve(listener: tokio::net::TcpListener, app: Router, registry: Arc<Registry>, shutdown: CancellationToken) {
    use tower::ServiceExt;
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((stream, peer)) = registry.next_connection(&shutdown, || listener.accept()).await {
        let slot = match registry.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                crate::http::conn::refuse_overloaded(stream, Listener::AddonApi);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tracker.spawn(async move {
            let handler = move |mut req: axum::extract::Request| {
                let app = app.clone();
                // What axum's own server would give the peer check in `AddonApi::serve`.
                req.extensions_mut().insert(ConnectInfo(peer));
                async move { app.oneshot(req).await.unwrap_or_else(|e| match e {}) }
            };
            crate::http::conn::serve_connection(stream, slot, &shutdown, handler).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

#[utoipa::path(get, path = "/v1/health", tags = ["addon-api"], security(("addonToken" = [])), responses((status = 200, description = "The calling instance: its name, addon and permissions.", body = Success)))]
async fn health(caller: Caller) -> ApiResult {
    http::ok(
        StatusCode::OK,
        json!({"addon": caller.addon_instance, "name": caller.manifest.name, "permissions": caller.manifest.permissions}),
        "",
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AddonEventBody)]
struct EmitBody {
    name: String,
    #[serde(default)]
    data: Value,
}

#[utoipa::path(post, path = "/v1/events", tags = ["addon-api"], security(("addonToken" = [])), request_body = EmitBody, responses((status = 201, description = "The stored event.", body = Success), E403, E503))]
async fn emit(State(st): State<Arc<AddonApi>>, caller: Caller, JsonBody(b): JsonBody<EmitBody>) -> ApiResult {
    caller.require("events.emit", "emitting events")?;
    if !caller.manifest.events.emits.iter().any(|e| e == &b.name) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("`{}` is not among the events this addon's manifest emits ({})", b.name, caller.manifest.events.emits.join(", ")),
        )
        .field_name("name"));
    }
    let ev = st.events.emit(&b.name, b.data, &caller.addon_instance).await.map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
    http::ok(StatusCode::CREATED, ev.to_json(), "event stored")
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control()) {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "keys are 1–256 printable characters").field_name("key"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/kv/{key}", tags = ["addon-api"], security(("addonToken" = [])), params(("key" = String, Path, description = "The key: 1–256 printable characters.")), responses((status = 200, description = "The value as it was stored.", content_type = "application/octet-stream", body = Vec<u8>), E400, E403, E404))]
async fn kv_get(State(st): State<Arc<AddonApi>>, caller: Caller, Path(key): Path<String>) -> Result<Response, ApiError> {
    caller.require("storage", "reading storage")?;
    check_key(&key)?;
    match st.lifecycle.store().kv_get(&caller.addon_instance, &key).await? {
        Some(v) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()),
        None => Err(ApiError::new(ErrorCode::NotFound, format!("no key `{key}`"))),
    }
}

#[utoipa::path(put, path = "/v1/kv/{key}", tags = ["addon-api"], security(("addonToken" = [])), params(("key" = String, Path, description = "The key: 1–256 printable characters.")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 200, description = "`{key, bytes}`: stored.", body = Success), E400, E403, (status = 413, description = "`quota_exceeded`: the value is larger than `addon_api.kv_max_value_bytes`.", body = ErrorBody), (status = 507, description = "`quota_exceeded`: the addon stores `addon_api.kv_max_keys` keys already.", body = ErrorBody)))]
async fn kv_put(State(st): State<Arc<AddonApi>>, caller: Caller, Path(key): Path<String>, req: axum::extract::Request) -> ApiResult {
    caller.require("storage", "writing storage")?;
    check_key(&key)?;
    let max = st.cfg.addon_api.kv_max_value_bytes;
    // One byte more than the quota tells "over the quota" apart from "exactly at it".
    let body: Bytes = match http::read_body(req.into_body(), max + 1, "addon_api.kv_max_value_bytes").await {
        Ok(b) => b,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => return Err(quota_exceeded(max)),
        Err(e) => return Err(e),
    };
    if body.len() > max {
        return Err(quota_exceeded(max));
    }
    let n = body.len();
    if !st.lifecycle.store().kv_put(&caller.addon_instance, &key, body.to_vec(), st.cfg.addon_api.kv_max_keys).await? {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!("this addon already stores {} keys (addon_api.kv_max_keys)", st.cfg.addon_api.kv_max_keys),
        ));
    }
    http::ok(StatusCode::OK, json!({"key": key, "bytes": n}), "stored")
}

fn quota_exceeded(max: usize) -> ApiError {
    ApiError::new(ErrorCode::QuotaExceeded, format!("values are at most {max} bytes (addon_api.kv_max_value_bytes); store a smaller value"))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .field_name("body")
}

#[utoipa::path(delete, path = "/v1/kv/{key}", tags = ["addon-api"], security(("addonToken" = [])), params(("key" = String, Path, description = "The key: 1–256 printable characters.")), responses((status = 200, description = "`{key, deleted}`: whether it existed.", body = Success), E400, E403))]
async fn kv_delete(State(st): State<Arc<AddonApi>>, caller: Caller, Path(key): Path<String>) -> ApiResult {
    caller.require("storage", "deleting from storage")?;
    check_key(&key)?;
    let existed = st.lifecycle.store().kv_delete(&caller.addon_instance, &key).await?;
    let msg = if existed { format!("key `{key}` deleted") } else { format!("key `{key}` was not set") };
    http::ok(StatusCode::OK, json!({"key": key, "deleted": existed}), &msg)
}

#[utoipa::path(post, path = "/v1/addons/{name}/execute", tags = ["addon-api"], security(("addonToken" = [])), params(("name" = String, Path, description = "The addon to call; one of the caller's dependencies, in its own environment.")), request_body = http::ExecuteBody, responses((status = 200, description = "What the action answered.", body = Success), E403, E404, E502, E503, E504))]
async fn execute(
    State(st): State<Arc<AddonApi>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<http::ExecuteBody>,
) -> ApiResult {
    caller.require("addons.execute", "calling other addons")?;
    // An addon calls the other addons of its own environment: `inventory` from `pay--dev`
    // is `inventory--dev`; naming another environment's instance is refused.
    let (_, own_env) = crate::model::split_environment(&caller.addon_instance);
    let (base, env) = crate::model::split_environment(&name);
    if name.contains(crate::model::ENVIRONMENT_SEPARATOR) && env != own_env {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("`{name}` is in the environment `{env}`, not this addon's (`{own_env}`); addons call addons of their own environment"),
        ));
    }
    let name = crate::model::environment_instance(base, own_env);
    let target = st.addons.installed_manifest(&name).await?;
    if !caller.manifest.dependencies.contains_key(&target.name) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("`{}` ({}) is not among this addon's dependencies; declare it in the manifest's dependencies", name, target.name),
        ));
    }
    let out = st.addons.execute_json(&name, &b.action, crate::addons::ActionInput::Raw(b.data.as_deref())).await?;
    http::ok_json(StatusCode::OK, &out, &format!("`{}` of {name} answered", b.action))
}

/// The addon API's routes (tag `addon-api`), for the admin socket's whole document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(health, emit, kv_get, kv_put, kv_delete, execute))]
struct AddonApiDoc;

/// The addon API's OpenAPI document, finished: the token scheme, the layers' answers.
pub fn openapi_document() -> Value {
    let mut doc = serde_json::to_value(<AddonApiDoc as utoipa::OpenApi>::openapi()).unwrap_or(Value::Null);
    finish(&mut doc, crate::http::openapi::Listener::AddonApi);
    doc["components"]["securitySchemes"] = json!({
        "addonToken": {"type": "http", "scheme": "bearer", "description": "The instance's own token (`ADDOND_TOKEN`), as `Authorization: Bearer …`."}
    });
    doc
}
