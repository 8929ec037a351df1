//! MCP on the admin socket: the registered tools (`/api/ai-gateway/mcp-tools`, the
//! platform's API) and, for `addonctl mcp`, every tool of every installed addon and a call
//! of one (`/api/ai-gateway/tools`). The catalogue and the calls are [`crate::mcp`]'s.

use super::*;
use crate::mcp::{CallError, RegisterRequest, Scope};

#[utoipa::path(get, path = "/api/ai-gateway/mcp-tools", tags = ["admin", "mcp"], responses((status = 200, description = "The registered MCP tools.", body = Success)))]
pub(super) async fn list_registered(State(st): State<AppState>) -> ApiResult {
    let list = st.gateway.mcp.list_registered();
    let msg = count_message(list.len(), "registered tool", "registered tools");
    ok(StatusCode::OK, Value::Array(list), &msg)
}

#[utoipa::path(post, path = "/api/ai-gateway/mcp-tools", tags = ["admin", "mcp"], request_body = RegisterRequest, responses((status = 201, description = "The registered tool.", body = Success), E404, E409))]
pub(super) async fn create_registered(State(st): State<AppState>, JsonBody(body): JsonBody<RegisterRequest>) -> ApiResult {
    let name = body.name.clone();
    let view = st.gateway.mcp.create(body, st.gateway_addr).await?;
    ok(StatusCode::CREATED, view, &format!("tool `{name}` registered"))
}

#[utoipa::path(get, path = "/api/ai-gateway/mcp-tools/{name}", tags = ["admin", "mcp"], params(("name" = String, Path, description = "The tool's name.")), responses((status = 200, description = "The registered tool.", body = Success), E404))]
pub(super) async fn show_registered(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    ok(StatusCode::OK, st.gateway.mcp.show_registered(&name)?, &format!("tool `{name}`"))
}

#[utoipa::path(delete, path = "/api/ai-gateway/mcp-tools/{name}", tags = ["admin", "mcp"], params(("name" = String, Path, description = "The tool's name.")), responses((status = 200, description = "The deleted tool.", body = Success), E404))]
pub(super) async fn delete_registered(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let view = st.gateway.mcp.delete_registered(&name).await?;
    ok(StatusCode::OK, view, &format!("tool `{name}` deleted"))
}

/// Every tool of every installed, Started addon, as MCP's `tools/list` shows them.
#[utoipa::path(get, path = "/api/ai-gateway/tools", tags = ["admin", "mcp"], responses((status = 200, description = "Every MCP tool the daemon serves.", body = Success)))]
pub(super) async fn list_tools(State(st): State<AppState>) -> ApiResult {
    let tools = st.gateway.mcp.tools(&Scope::All).await.map_err(call_error)?;
    let msg = count_message(tools.len(), "tool", "tools");
    ok(StatusCode::OK, serde_json::to_value(tools).unwrap_or(Value::Null), &msg)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CallBody {
    /// The tool's arguments (an object; none: `{}`).
    #[serde(default)]
    arguments: Option<serde_json::Map<String, Value>>,
}

/// Runs a tool; the answer is MCP's `CallToolResult` (an action's failure is one with
/// `isError`, as an MCP client sees it).
#[utoipa::path(post, path = "/api/ai-gateway/tools/{name}/call", tags = ["admin", "mcp"], params(("name" = String, Path, description = "The tool's name.")), request_body = CallBody, responses((status = 200, description = "MCP's `CallToolResult`.", body = Success), E403, E404, E502, E503, E504))]
pub(super) async fn call_tool(State(st): State<AppState>, Path(name): Path<String>, JsonBody(body): JsonBody<CallBody>) -> ApiResult {
    let result = st.gateway.mcp.call(&Scope::All, &name, body.arguments).await.map_err(call_error)?;
    ok(StatusCode::OK, serde_json::to_value(result).unwrap_or(Value::Null), &format!("tool `{name}` called"))
}

fn call_error(e: CallError) -> ApiError {
    match e {
        CallError::UnknownTool(m) => ApiError::new(ErrorCode::NotFound, m).field("name"),
        CallError::Internal(m) => ApiError::new(ErrorCode::Internal, m),
    }
}
