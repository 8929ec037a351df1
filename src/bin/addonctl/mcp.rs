//! `addonctl mcp`: an MCP server on stdin/stdout for a local agent (a desktop client
//! configured with this command), exposing every tool of every installed addon through the
//! admin socket; and `addonctl mcp tools …` for the registered tools
//! (`/api/ai-gateway/mcp-tools`). The server is the library's
//! [`addond::mcp::server::McpServer`] over a source that asks the daemon; it follows the
//! daemon's event stream to tell its client `notifications/tools/list_changed`.

use std::collections::BTreeSet;
use std::sync::Arc;

use addond::client::{Client, ClientError, Method, SseParser};
use addond::mcp::server::{McpServer, ToolSource};
use addond::mcp::{CallError, Scope};
use addond::sanitize::sanitize as cell;
use clap::Subcommand;
use rmcp::model::{CallToolResult, JsonObject, Tool};
use rmcp::ServiceExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::input::parse_json_arg;
use crate::render::{render_table, text};
use crate::Ctl;

const TOOLS: &str = "/api/ai-gateway/tools";
const REGISTERED: &str = "/api/ai-gateway/mcp-tools";

#[derive(Subcommand, Debug)]
pub(crate) enum McpCmd {
    /// Registered tools (tools made from addon actions need no registration)
    #[command(subcommand)]
    Tools(ToolCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum ToolCmd {
    /// Every registered tool
    #[command(visible_alias = "ls")]
    List,
    /// One registered tool
    Show { name: String },
    /// Register a tool that runs an addon's action or POSTs to a path on it
    Create {
        /// The tool's name: letters, digits, `_` and `-`
        name: String,
        /// What the tool does, for the agent
        #[arg(long)]
        description: Option<String>,
        /// A path into the gateway's addon routes: /gw/ADDON/… or /api/addons/ADDON/execute?action=A
        #[arg(long, value_name = "URL", conflicts_with_all = ["addon", "action", "path"])]
        function_url: Option<String>,
        /// The addon instance (with --action or --path)
        #[arg(long)]
        addon: Option<String>,
        /// The action the tool runs
        #[arg(long, requires = "addon", conflicts_with = "path")]
        action: Option<String>,
        /// The path on the addon's service the arguments are POSTed to
        #[arg(long, requires = "addon")]
        path: Option<String>,
        /// The arguments' JSON Schema (default: the action's, or {"type":"object"})
        #[arg(long, value_name = "JSON")]
        input_schema: Option<String>,
    },
    /// Delete a registered tool
    #[command(visible_alias = "rm")]
    Delete { name: String },
}

impl Ctl {
    /// `addonctl mcp` (no subcommand: serve stdio) and `addonctl mcp tools …`.
    pub(crate) async fn mcp(&self, cmd: Option<McpCmd>) -> anyhow::Result<()> {
        let Some(McpCmd::Tools(cmd)) = cmd else { return serve_stdio(self.client.clone()).await };
        match cmd {
            ToolCmd::List => {
                let data = self.call(Method::GET, REGISTERED, None).await?;
                self.show(&data, render_tools)
            }
            ToolCmd::Show { name } => {
                let data = self.call(Method::GET, &format!("{REGISTERED}/{}", addond::client::encode_path_segment(&name)), None).await?;
                self.show(&data, |t| format!("{}\n", serde_json::to_string_pretty(t).unwrap_or_default()))
            }
            ToolCmd::Create { name, description, function_url, addon, action, path, input_schema } => {
                let mut body = json!({"name": name});
                let fields =
                    [("description", description), ("functionUrl", function_url), ("addon", addon), ("action", action), ("path", path)];
                for (k, v) in fields {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                if let Some(s) = input_schema {
                    body["inputSchema"] = parse_json_arg("--input-schema", &s)?;
                }
                let data = self.call(Method::POST, REGISTERED, Some(&body)).await?;
                self.show(&data, |t| format!("registered tool {} → {}\n", cell(&text(t, "name")), cell(&text(t, "functionUrl"))))
            }
            ToolCmd::Delete { name } => {
                let data = self.call(Method::DELETE, &format!("{REGISTERED}/{}", addond::client::encode_path_segment(&name)), None).await?;
                self.show(&data, |t| format!("deleted tool {}\n", cell(&text(t, "name"))))
            }
        }
    }
}

fn render_tools(data: &Value) -> String {
    let rows: Vec<Vec<String>> = data
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|t| vec![text(t, "name"), text(t, "addon"), text(t, "functionUrl"), text(t, "description")])
        .collect();
    render_table(&["NAME", "ADDON", "TARGET", "DESCRIPTION"], &rows)
}

/// The daemon's tools through the admin socket.
struct AdminSource {
    client: Client,
    /// Ticks when the tool names change (see [`follow_changes`]).
    changed: watch::Sender<u64>,
}

fn internal(e: ClientError) -> CallError {
    CallError::Internal(e.to_string())
}

impl AdminSource {
    async fn tools(&self) -> Result<Vec<Tool>, CallError> {
        let data = self.client.get(TOOLS).await.map_err(internal)?.into_result().map_err(|e| internal(ClientError::Api(e)))?;
        serde_json::from_value(data).map_err(|e| CallError::Internal(format!("the daemon's tool list: {e}")))
    }
}

impl ToolSource for AdminSource {
    async fn list(&self, _scope: Scope) -> Result<Vec<Tool>, CallError> {
        self.tools().await
    }

    async fn call(&self, _scope: Scope, name: String, arguments: Option<JsonObject>) -> Result<CallToolResult, CallError> {
        let path = format!("{TOOLS}/{}/call", addond::client::encode_path_segment(&name));
        let reply = self.client.post(&path, Some(&json!({"arguments": arguments}))).await.map_err(internal)?;
        match reply.into_result() {
            Ok(data) => serde_json::from_value(data).map_err(|e| CallError::Internal(format!("the daemon's tool result: {e}"))),
            Err(e) if e.status == 404 => Err(CallError::UnknownTool(e.message)),
            Err(e) => Err(CallError::Internal(e.message)),
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Follows the daemon's event stream; after each addon, service or tool event, lists the
/// tools again and ticks when their names changed. Reconnects when the stream drops.
async fn follow_changes(source: Arc<AdminSource>) {
    let names = |tools: &[Tool]| tools.iter().map(|t| t.name.to_string()).collect::<BTreeSet<_>>();
    let mut last = source.tools().await.map(|t| names(&t)).unwrap_or_default();
    let mut attempt = 0u32;
    loop {
        let mut stream = match source.client.stream(Method::GET, "/api/events/stream?name=*").await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(crate::events::follow_backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        attempt = 0;
        let mut parser = SseParser::with_max_line(1 << 20);
        while let Some(Ok(chunk)) = stream.next_chunk().await {
            let relevant = parser.push(&chunk).iter().filter_map(crate::events::followed_event).any(|(_, e)| {
                let n = e.get("name").and_then(Value::as_str).unwrap_or("");
                n.starts_with("addon.") || n.starts_with("service.") || n.starts_with("mcp.")
            });
            if !relevant {
                continue;
            }
            if let Ok(tools) = source.tools().await {
                let now = names(&tools);
                if now != last {
                    last = now;
                    source.changed.send_modify(|n| *n += 1);
                }
            }
        }
    }
}

/// Serves MCP on stdin/stdout until the client closes it.
async fn serve_stdio(client: Client) -> anyhow::Result<()> {
    // Fail early, with addonctl's own message, when the daemon is not there.
    client.get("/health").await?;
    let source = Arc::new(AdminSource { client, changed: watch::channel(0).0 });
    let follower = tokio::spawn(follow_changes(source.clone()));
    let server = McpServer::fixed(source, Scope::All).serve(rmcp::transport::stdio()).await?;
    let ended = server.waiting().await;
    follower.abort();
    ended?;
    Ok(())
}
