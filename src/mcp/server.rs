//! The MCP server itself (rmcp's `ServerHandler`), over any [`ToolSource`]: the daemon's own
//! catalogue for the gateway's `/mcp`, or the admin socket for `addonctl mcp`. It answers
//! `tools/list` and `tools/call` for the caller's [`Scope`] and, in sessions (protocol
//! revisions before 2026-07-28, and stdio), sends `notifications/tools/list_changed` when
//! the source's tool set changes. [`http_service`] mounts it as the tower service the
//! gateway calls after its key check.

use std::future::Future;
use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use tokio::sync::watch;

use super::{CallError, Mcp, Scope};

/// Where the tools come from and where calls go.
pub trait ToolSource: Send + Sync + 'static {
    /// The tools `scope` may see.
    fn list(&self, scope: Scope) -> impl Future<Output = Result<Vec<Tool>, CallError>> + Send;
    /// Runs a tool for a caller of `scope`.
    fn call(
        &self,
        scope: Scope,
        name: String,
        arguments: Option<JsonObject>,
    ) -> impl Future<Output = Result<CallToolResult, CallError>> + Send;
    /// Ticks when the set of tools changes.
    fn changes(&self) -> watch::Receiver<u64>;
}

impl ToolSource for Mcp {
    async fn list(&self, scope: Scope) -> Result<Vec<Tool>, CallError> {
        self.tools(&scope).await
    }

    async fn call(&self, scope: Scope, name: String, arguments: Option<JsonObject>) -> Result<CallToolResult, CallError> {
        Mcp::call(self, &scope, &name, arguments).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        Mcp::changes(self)
    }
}

/// The scope of the key the gateway admitted, put into the request's extensions before
/// the MCP service sees it.
#[derive(Debug, Clone)]
pub struct GrantScope(pub String);

/// How a server finds its caller's scope.
#[derive(Clone)]
enum ScopeFrom {
    /// The same for every request (stdio: the operator).
    Fixed(Scope),
    /// From the [`GrantScope`] of each HTTP request; none: [`Scope::Nothing`].
    Request,
}

/// One MCP server instance (rmcp makes one per session, or per request when stateless).
pub struct McpServer<S: ToolSource> {
    source: Arc<S>,
    scope: ScopeFrom,
}

impl<S: ToolSource> McpServer<S> {
    /// A server whose every caller has `scope` (stdio).
    pub fn fixed(source: Arc<S>, scope: Scope) -> Self {
        McpServer { source, scope: ScopeFrom::Fixed(scope) }
    }

    /// A server that takes each request's scope from the gateway's [`GrantScope`].
    pub fn per_request(source: Arc<S>) -> Self {
        McpServer { source, scope: ScopeFrom::Request }
    }

    fn scope_of(&self, ext: &rmcp::model::Extensions) -> Scope {
        match &self.scope {
            ScopeFrom::Fixed(s) => s.clone(),
            ScopeFrom::Request => ext
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<GrantScope>())
                .map_or(Scope::Nothing, |g| Scope::Addon(g.0.clone())),
        }
    }
}

fn protocol_error(e: CallError) -> ErrorData {
    match e {
        CallError::UnknownTool(m) => ErrorData::invalid_params(m, None),
        CallError::Internal(m) => ErrorData::internal_error(m, None),
    }
}

impl<S: ToolSource> ServerHandler for McpServer<S> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
            .with_server_info(Implementation::new("addond", env!("CARGO_PKG_VERSION")))
            .with_instructions("Each tool runs one action of an addon installed on this addond appliance: `<addon>.<action>`, or a tool the operator registered.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.source.list(self.scope_of(&context.extensions)).await.map_err(protocol_error)?;
        // Tools follow installs and the caller's key: never cached for long, never shared.
        Ok(ListToolsResult::with_all_items(tools).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let scope = self.scope_of(&context.extensions);
        let r = self.source.call(scope, request.name.into_owned(), request.arguments).await.map_err(protocol_error)?;
        Ok(r.into())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // A session (handshake-era revisions, stdio) hears of every change to the tool set
        // until its client goes away.
        let mut changes = self.source.changes();
        changes.mark_unchanged();
        let peer = context.peer;
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if peer.is_transport_closed() || peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The Streamable HTTP service of `/mcp`: the 2026-07-28 revision statelessly, and the
/// session-based revisions before it (2024-11-05 to 2025-11-25) with sessions kept in
/// memory. `allowed_hosts` guards against DNS rebinding; the key check runs before.
pub fn http_service(
    mcp: Arc<Mcp>,
    allowed_hosts: Vec<String>,
    max_body_bytes: usize,
) -> StreamableHttpService<McpServer<Mcp>, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts)
        .with_legacy_session_mode(true)
        .with_json_response(true)
        .with_cancellation_token(mcp.closing.child_token())
        .with_max_request_body_bytes(max_body_bytes);
    config.sse_keep_alive = Some(std::time::Duration::from_secs(15));
    let source = mcp.clone();
    StreamableHttpService::new(move || Ok(McpServer::per_request(source.clone())), Arc::new(LocalSessionManager::default()), config)
}
