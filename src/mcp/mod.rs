//! MCP (Model Context Protocol) over the addon catalogue: which tools exist, who may see
//! them and what a call does. Every action of every installed, Started addon instance is a
//! tool named `<instance>.<action>` (neither part can hold a `.`, so the name is unique and
//! within MCP's tool-name rules); registered tools (`/api/ai-gateway/mcp-tools`, stored in
//! the database) add names without a `.`, each bound to one addon's action or to a path on
//! its service. A caller sees the tools of the addons its [`Scope`] covers: one addon for a
//! gateway key, all of them for the operator. A call runs through the same path as the
//! gateway's `execute` ([`Addons::execute_json`]: round robin, breakers, timeouts, metrics);
//! an action's failure is a tool result with `isError` and the envelope's message, not a
//! protocol error. When the set of tools changes, [`Mcp::changes`] ticks, and the sessions
//! of [`server`] tell their clients `notifications/tools/list_changed`.

pub mod fast;
pub mod server;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::addons::dispatch::DispatchError;
use crate::addons::{schema, ActionInput, AddonError, Addons};
use crate::http::{ApiError, ErrorCode};
use crate::lifecycle::Lifecycle;
use crate::model::{valid_name, ServiceType};
use crate::store::{now_ms, McpToolRow};

/// Which addons' tools a caller may see and call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every installed addon: the operator on the admin socket (`addonctl mcp`).
    All,
    /// One addon instance: what a gateway key's grant covers.
    Addon(String),
    /// Nothing (a request that reached the MCP service without an admitted key).
    Nothing,
}

impl Scope {
    pub fn covers(&self, addon: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Addon(a) => a == addon,
            Scope::Nothing => false,
        }
    }
}

/// Why a `tools/call` was not run at all (a protocol error, not a tool result).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No tool of that name is visible to this caller (missing, or outside its scope).
    #[error("{0}")]
    UnknownTool(String),
    /// The catalogue could not be read.
    #[error("{0}")]
    Internal(String),
}

/// Where a registered tool's call goes.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Action(String),
    Path(String),
}

/// A registered tool, held in memory so a call does not read the database.
#[derive(Debug, Clone)]
struct Registered {
    row: McpToolRow,
    target: Target,
    schema: Value,
}

impl Registered {
    fn from_row(row: McpToolRow) -> Registered {
        let target = match (&row.action, &row.path) {
            (Some(a), _) => Target::Action(a.clone()),
            (None, p) => Target::Path(p.clone().unwrap_or_else(|| "/".into())),
        };
        let schema = serde_json::from_str(&row.input_schema).unwrap_or_else(|_| json!({"type": "object"}));
        Registered { row, target, schema }
    }

    fn view(&self) -> Value {
        let mut v = json!({
            "name": self.row.name,
            "description": self.row.description,
            "addon": self.row.addon,
            "inputSchema": self.schema,
            "created_at": crate::time::rfc3339_ms(self.row.created_at),
        });
        match &self.target {
            Target::Action(a) => {
                v["action"] = json!(a);
                v["functionUrl"] = json!(format!("/api/addons/{}/execute?action={a}", self.row.addon));
            }
            Target::Path(p) => {
                v["path"] = json!(p);
                v["functionUrl"] = json!(format!("/gw/{}{p}", self.row.addon));
            }
        }
        v
    }
}

/// `POST /api/ai-gateway/mcp-tools`: the platform's shape, plus `addon` with `action` or
/// `path` as the explicit form of `functionUrl`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The tool's name: letters, digits, `_` and `-` (no `.`: those are the actions' tools).
    pub name: String,
    /// What the tool does, for the agent.
    #[serde(default)]
    pub description: Option<String>,
    /// A path into the gateway's addon routes: `/gw/<addon>/…` or
    /// `/api/addons/<addon>/execute?action=<action>`.
    #[serde(default)]
    pub function_url: Option<String>,
    /// The addon instance (with `action` or `path`).
    #[serde(default)]
    pub addon: Option<String>,
    /// The action the tool runs.
    #[serde(default)]
    pub action: Option<String>,
    /// The path on the addon's service the arguments are POSTed to.
    #[serde(default)]
    pub path: Option<String>,
    /// The arguments' JSON Schema (default `{"type": "object"}`).
    #[serde(default)]
    pub input_schema: Option<Value>,
}

/// The MCP catalogue of one daemon.
pub struct Mcp {
    /// Installed addons, their manifests, and the execute path calls go through.
    addons: Arc<Addons>,
    /// The store (installs, registered tools) and the lifecycle notices that change the catalogue.
    lifecycle: Arc<Lifecycle>,
    /// Registered tools by name, loaded at start and kept in step with the database.
    registered: RwLock<HashMap<String, Arc<Registered>>>,
    /// Ticks whenever the set of tool names changes.
    changed: watch::Sender<u64>,
    /// The tool names as last computed, to tick only on a real change.
    last: std::sync::Mutex<BTreeSet<String>>,
    /// Cancelled at shutdown: ends the open MCP sessions and their streams.
    pub closing: CancellationToken,
}

/// The name of an action's tool.
pub fn tool_name(addon: &str, action: &str) -> String {
    format!("{addon}.{action}")
}

/// A registered tool's name: MCP's tool-name characters without `.`, 1 to 128 of them.
fn valid_registered_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An input schema as MCP wants it: an object schema (`{}` becomes `{"type": "object"}`).
fn object_schema(schema: &Value) -> Arc<JsonObject> {
    let mut obj = schema.as_object().cloned().unwrap_or_default();
    obj.entry("type").or_insert_with(|| json!("object"));
    Arc::new(obj)
}

fn tool(name: String, description: &str, schema: &Value) -> Tool {
    Tool::new(name, description.to_string(), object_schema(schema))
}

/// A tool error: the envelope's message as text, the envelope's `error` as structured content.
fn tool_error(e: ApiError) -> CallToolResult {
    let mut err = json!({"code": e.code.as_str(), "message": e.message});
    if let Some(f) = &e.field {
        err["field"] = json!(f);
    }
    let mut r = CallToolResult::error(vec![ContentBlock::text(e.message.clone())]);
    r.structured_content = Some(json!({"error": err}));
    r
}

/// An action's answer as a tool result: structured content (an object; anything else is
/// wrapped as `{"result": …}`) and the same JSON as text.
fn tool_success(body: &Bytes) -> CallToolResult {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let structured = if value.is_object() { value } else { json!({"result": value}) };
    let mut r = CallToolResult::success(vec![ContentBlock::text(String::from_utf8_lossy(body).into_owned())]);
    r.structured_content = Some(structured);
    r
}

/// The metrics outcome of an action error (as `addon_executions_total` counts it).
fn outcome(e: &AddonError) -> &'static str {
    match e {
        AddonError::Dispatch(DispatchError::Timeout(_)) => "timeout",
        AddonError::Dispatch(_) => "unavailable",
        _ => "error",
    }
}

impl Mcp {
    pub fn new(addons: Arc<Addons>, lifecycle: Arc<Lifecycle>) -> Arc<Mcp> {
        Arc::new(Mcp {
            addons,
            lifecycle,
            registered: RwLock::new(HashMap::new()),
            changed: watch::channel(0).0,
            last: std::sync::Mutex::new(BTreeSet::new()),
            closing: CancellationToken::new(),
        })
    }

    /// Ticks when the set of tools changes (install, uninstall, stop, start, upgrade,
    /// registered tools created or deleted).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Loads the registered tools, then follows lifecycle notices until `shutdown`,
    /// recomputing the tool names after each burst of them; at shutdown ends every MCP session.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut notices = self.lifecycle.notices();
        if let Err(e) = self.reload_registered().await {
            tracing::warn!(error = %e, "mcp: cannot load the registered tools");
        }
        self.recompute().await;
        loop {
            let n = tokio::select! {
                n = notices.recv() => n,
                _ = shutdown.cancelled() => break,
            };
            let relevant = match &n {
                // An upgrade or rollback may change an addon's actions.
                Ok((name, _)) => {
                    (name.starts_with("addon.") && name != "addon.config_changed")
                        || name.starts_with("service.")
                        || name == "deployment.succeeded"
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            if !relevant {
                continue;
            }
            // A burst (an install starts several services) is one recomputation.
            let settle = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    _ = &mut settle => break,
                    n = notices.recv() => if matches!(n, Err(tokio::sync::broadcast::error::RecvError::Closed)) { break },
                }
            }
            self.recompute().await;
        }
        self.closing.cancel();
    }

    /// Recomputes every tool name; ticks [`Mcp::changes`] if the set differs.
    async fn recompute(&self) {
        let names: BTreeSet<String> = match self.tools(&Scope::All).await {
            Ok(tools) => tools.into_iter().map(|t| t.name.into_owned()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "mcp: cannot list the tools");
                return;
            }
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last != names {
            *last = names;
            self.changed.send_modify(|n| *n += 1);
        }
    }

    async fn reload_registered(&self) -> Result<(), crate::store::StoreError> {
        let rows = self.lifecycle.store().list_mcp_tools().await?;
        let map = rows.into_iter().map(|r| (r.name.clone(), Arc::new(Registered::from_row(r)))).collect();
        *self.registered.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    fn registered(&self, name: &str) -> Option<Arc<Registered>> {
        self.registered.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The tools `scope` may see: the actions of covered, Started addons, then the
    /// registered tools of those addons.
    pub async fn tools(&self, scope: &Scope) -> Result<Vec<Tool>, CallError> {
        let installs = self.lifecycle.store().list_installs().await.map_err(|e| CallError::Internal(e.to_string()))?;
        let mut started = BTreeSet::new();
        let mut out = Vec::new();
        for row in installs.iter().filter(|r| scope.covers(&r.instance)) {
            if !self.addons.is_started(&row.instance).await {
                continue;
            }
            started.insert(row.instance.clone());
            let Ok(m) = self.addons.installed_manifest(&row.instance).await else { continue };
            for a in &m.actions {
                let mut t = tool(tool_name(&row.instance, &a.name), &a.description, &a.input_schema);
                if let Some(o) = a.output_schema.as_object() {
                    t.output_schema = Some(Arc::new(o.clone()));
                }
                out.push(t);
            }
        }
        let mut registered: Vec<Arc<Registered>> = self
            .registered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| started.contains(&r.row.addon))
            .cloned()
            .collect();
        registered.sort_by(|a, b| a.row.name.cmp(&b.row.name));
        out.extend(registered.iter().map(|r| tool(r.row.name.clone(), &r.row.description, &r.schema)));
        Ok(out)
    }

    /// Runs the tool `name` with `arguments` for a caller of `scope`.
    pub async fn call(&self, scope: &Scope, name: &str, arguments: Option<JsonObject>) -> Result<CallToolResult, CallError> {
        let unknown = || CallError::UnknownTool(format!("no tool `{name}`; list the tools you may call with tools/list"));
        let args = Value::Object(arguments.unwrap_or_default());
        let t0 = Instant::now();
        let (addon, label, result) = if let Some((addon, action)) = name.split_once('.') {
            if !scope.covers(addon) || !valid_name(addon) {
                return Err(unknown());
            }
            let r = self.addons.execute_json(addon, action, ActionInput::Value(args)).await;
            if let Err(AddonError::NotFound(_)) = r {
                return Err(unknown());
            }
            (addon.to_string(), action.to_string(), r)
        } else {
            let Some(reg) = self.registered(name).filter(|r| scope.covers(&r.row.addon)) else { return Err(unknown()) };
            let addon = reg.row.addon.clone();
            let r = match schema::normalize(&reg.schema, args, "arguments") {
                Err(msg) => {
                    let field = msg.split(':').next().unwrap_or("arguments").to_string();
                    Err(AddonError::Invalid(crate::model::FieldError { field, message: msg, code: "validation_failed" }))
                }
                Ok(args) => match &reg.target {
                    Target::Action(a) => self.addons.execute_json(&addon, a, ActionInput::Value(args)).await,
                    Target::Path(p) => self.post_path(&addon, p, args).await,
                },
            };
            (addon, name.to_string(), r)
        };
        let secs = t0.elapsed().as_secs_f64();
        let (status, out) = match result {
            Ok(body) => ("success", tool_success(&body)),
            Err(e) => (outcome(&e), tool_error(e.into())),
        };
        self.addons.metrics.tool_call(&addon, &label, status, secs);
        Ok(out)
    }

    /// POSTs `args` to `path` on the addon's entry service (its first `rest_api` service),
    /// through the dispatcher the actions use; a non-2xx answer is an addon error.
    async fn post_path(&self, addon: &str, path: &str, args: Value) -> Result<Bytes, AddonError> {
        let services = self.addons.services_of(addon).await?;
        let entry = services.iter().find(|(_, t)| *t == ServiceType::RestApi).or(services.first()).map(|(id, _)| id.clone());
        let Some(svc) = entry else { return Err(AddonError::NotFound(format!("addon `{addon}` has no services"))) };
        let timeout = Duration::from_secs_f64(self.addons.config().addons.execute_timeout_seconds);
        let reply = self.addons.dispatcher.post(&svc, addon, path, Bytes::from(args.to_string()), timeout).await?;
        if !(200..300).contains(&reply.status) {
            let text: String = String::from_utf8_lossy(&reply.body).chars().take(500).collect();
            return Err(AddonError::Addon {
                status: reply.status,
                message: format!("addon `{addon}` answered {path} with HTTP {}: {text}", reply.status),
            });
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body).is_err() {
            return Err(AddonError::Addon { status: 502, message: format!("addon `{addon}` answered {path} with invalid JSON") });
        }
        Ok(reply.body)
    }

    // ---- registered tools ---------------------------------------------------------------

    /// Registers a tool; its target must be an installed addon's action or a path on it.
    pub async fn create(&self, req: RegisterRequest, gateway: Option<std::net::SocketAddr>) -> Result<Value, ApiError> {
        let invalid = |field: &str, msg: String| ApiError::new(ErrorCode::ValidationFailed, msg).field(field);
        if !valid_registered_name(&req.name) {
            return Err(invalid(
                "name",
                format!(
                    "`{}`: 1 to 128 letters, digits, `_` and `-` (no `.`: `<addon>.<action>` names are the actions' own tools)",
                    req.name
                ),
            ));
        }
        let (addon, target) = match (req.function_url, req.addon, req.action, req.path) {
            (Some(url), None, None, None) => {
                parse_function_url(&url, gateway).map_err(|m| invalid("functionUrl", format!("functionUrl {m}")))?
            }
            (None, Some(addon), Some(action), None) => (addon, Target::Action(action)),
            (None, Some(addon), None, Some(path)) => {
                let path = check_path(&path).map_err(|m| invalid("path", m))?;
                (addon, Target::Path(path))
            }
            (None, Some(_), None, None) => return Err(invalid("action", "send `action` or `path` with `addon`".into())),
            (None, None, _, _) => {
                return Err(invalid("functionUrl", "send `functionUrl` (/gw/<addon>/…), or `addon` with `action` or `path`".into()))
            }
            _ => {
                return Err(invalid(
                    "functionUrl",
                    "send one target: `functionUrl`, or `addon` with `action`, or `addon` with `path`".into(),
                ))
            }
        };
        let manifest = self.addons.installed_manifest(&addon).await.map_err(|e| {
            let e: ApiError = e.into();
            e.field("addon")
        })?;
        let schema = match (&target, req.input_schema) {
            (_, Some(s)) => s,
            // An action's tool under another name takes the action's own schema by default.
            (Target::Action(a), None) => manifest.action(a).map(|a| a.input_schema.clone()).unwrap_or_else(|| json!({})),
            (Target::Path(_), None) => json!({}),
        };
        if let Target::Action(a) = &target {
            if manifest.action(a).is_none() {
                let known: Vec<&str> = manifest.actions.iter().map(|a| a.name.as_str()).collect();
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("addon `{addon}` has no action `{a}`; known actions: {}", known.join(", ")),
                )
                .field("action"));
            }
        }
        if !schema.is_object() || schema.get("type").is_some_and(|t| t != "object") {
            return Err(invalid(
                "inputSchema",
                "must be a JSON Schema object of type \"object\", like {\"type\": \"object\", \"properties\": {…}}".into(),
            ));
        }
        schema::check_schema(&schema, "inputSchema").map_err(|m| invalid("inputSchema", m))?;
        let row = McpToolRow {
            name: req.name.clone(),
            description: req.description.unwrap_or_default(),
            addon,
            action: match &target {
                Target::Action(a) => Some(a.clone()),
                Target::Path(_) => None,
            },
            path: match &target {
                Target::Path(p) => Some(p.clone()),
                Target::Action(_) => None,
            },
            input_schema: Value::Object(object_schema(&schema).as_ref().clone()).to_string(),
            created_at: now_ms(),
        };
        if !self.lifecycle.store().insert_mcp_tool(row.clone()).await? {
            return Err(
                ApiError::new(ErrorCode::Conflict, format!("a tool named `{}` exists already; delete it first", req.name)).field("name")
            );
        }
        let reg = Arc::new(Registered::from_row(row));
        self.registered.write().unwrap_or_else(|e| e.into_inner()).insert(reg.row.name.clone(), reg.clone());
        self.recompute().await;
        // An event too, so `addonctl mcp` (which follows the event stream) hears of it.
        self.lifecycle.notice("mcp.tool_registered", json!({"name": reg.row.name, "addon": reg.row.addon}));
        Ok(reg.view())
    }

    pub fn list_registered(&self) -> Vec<Value> {
        let mut all: Vec<Arc<Registered>> = self.registered.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.row.name.cmp(&b.row.name));
        all.iter().map(|r| r.view()).collect()
    }

    pub fn show_registered(&self, name: &str) -> Result<Value, ApiError> {
        self.registered(name).map(|r| r.view()).ok_or_else(|| not_registered(name))
    }

    pub async fn delete_registered(&self, name: &str) -> Result<Value, ApiError> {
        let Some(reg) = self.registered(name) else { return Err(not_registered(name)) };
        if !self.lifecycle.store().delete_mcp_tool(name).await? {
            return Err(not_registered(name));
        }
        self.registered.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        self.recompute().await;
        self.lifecycle.notice("mcp.tool_deleted", json!({"name": name, "addon": reg.row.addon}));
        Ok(reg.view())
    }
}

fn not_registered(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no registered tool `{name}`; list them with `addonctl mcp tools list`"))
}

/// A path on an addon's service: absolute, no `..` segment, no fragment.
fn check_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') || p.starts_with("//") {
        return Err(format!("`{p}`: a path on the addon's service, starting with one `/`"));
    }
    if p.contains('#') || p.split(['/', '?']).any(|s| s == ".." || s == ".") || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("`{p}`: no `.`/`..` segments, fragments, spaces or control characters"));
    }
    Ok(p.to_string())
}

/// Reads a `functionUrl`: a path into the gateway's addon routes (`/gw/<addon>/…`, or
/// `/api/addons/<addon>/execute?action=<action>`), or such a URL on the gateway's own
/// address. Any other host is refused: registered tools are not an open proxy.
fn parse_function_url(url: &str, gateway: Option<std::net::SocketAddr>) -> Result<(String, Target), String> {
    let refuse_host = |host: &str| {
        format!(
            "`{url}` points at `{host}`, not at this gateway; use a path into its addon routes: /gw/<addon>/… or /api/addons/<addon>/execute?action=<action>"
        )
    };
    let path = if let Some((scheme, rest)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(format!("`{url}`: only a path into this gateway (or an http URL of it) is accepted"));
        }
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let own = gateway.is_some_and(|g| {
            let names = [g.to_string(), format!("localhost:{}", g.port())];
            names.iter().any(|n| n.eq_ignore_ascii_case(authority))
        });
        if !own || authority.contains('@') {
            return Err(refuse_host(authority));
        }
        path
    } else if url.starts_with("//") {
        return Err(refuse_host(url.trim_start_matches('/').split('/').next().unwrap_or("")));
    } else {
        url
    };
    if let Some(rest) = path.strip_prefix("/gw/") {
        let (addon, tail) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, t)| (a, format!("/{t}")));
        if !valid_name(addon) {
            return Err(format!("`{url}`: `{addon}` is not an addon instance name"));
        }
        return Ok((addon.to_string(), Target::Path(check_path(&tail)?)));
    }
    if let Some(rest) = path.strip_prefix("/api/addons/") {
        if let Some((addon, query)) = rest.split_once("/execute?") {
            let action = query.split('&').find_map(|kv| kv.strip_prefix("action=")).unwrap_or("");
            if valid_name(addon) && !action.is_empty() {
                return Ok((addon.to_string(), Target::Action(action.to_string())));
            }
        }
        return Err(format!("`{url}`: an action is named as /api/addons/<addon>/execute?action=<action>"));
    }
    Err(format!("`{url}`: only the gateway's addon routes can be tools: /gw/<addon>/… or /api/addons/<addon>/execute?action=<action>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_urls_stay_inside_the_gateway() {
        let gw: std::net::SocketAddr = "127.0.0.1:7080".parse().unwrap();
        assert_eq!(parse_function_url("/gw/pay/charge", None).unwrap(), ("pay".into(), Target::Path("/charge".into())));
        assert_eq!(parse_function_url("/gw/pay", None).unwrap(), ("pay".into(), Target::Path("/".into())));
        assert_eq!(parse_function_url("/api/addons/pay/execute?action=add", None).unwrap(), ("pay".into(), Target::Action("add".into())));
        assert_eq!(parse_function_url("http://127.0.0.1:7080/gw/pay/x", Some(gw)).unwrap().0, "pay");
        for bad in [
            "https://evil.example/gw/pay/x",
            "http://127.0.0.1:7080@evil.example/gw/pay/x",
            "//evil.example/gw/pay",
            "http://127.0.0.1:9999/gw/pay/x",
            "file:///etc/passwd",
            "/gw/pay/../admin",
            "/gw/Pay/x",
            "/api/applications",
            "/api/addons/pay/execute",
        ] {
            assert!(parse_function_url(bad, Some(gw)).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn names_and_scopes() {
        assert_eq!(tool_name("pay", "add"), "pay.add");
        assert!(valid_registered_name("calculate_tax-2"));
        assert!(!valid_registered_name("pay.add"));
        assert!(!valid_registered_name(""));
        assert!(!valid_registered_name(&"a".repeat(129)));
        assert!(Scope::All.covers("x"));
        assert!(Scope::Addon("pay".into()).covers("pay"));
        assert!(!Scope::Addon("pay".into()).covers("other"));
        assert!(!Scope::Nothing.covers("pay"));
        assert_eq!(object_schema(&json!({})).get("type"), Some(&json!("object")));
    }
}
