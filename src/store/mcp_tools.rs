//! Registered MCP tools (`/api/ai-gateway/mcp-tools`): a name, a description, an input
//! schema and the addon route a call goes to. The tools made from addon actions are not
//! stored: they follow the installed manifests.

use rusqlite::{params, Row};

use super::{is_unique_violation, Store, StoreError};

/// One registered tool as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct McpToolRow {
    /// The tool's unique name, what `tools/call` names.
    pub name: String,
    /// What the tool does, shown to the agent.
    pub description: String,
    /// The addon instance a call goes to (a key sees the tool only if its grant covers it).
    pub addon: String,
    /// The action a call runs, when the tool is an action under another name.
    pub action: Option<String>,
    /// The path on the addon's service a call is POSTed to, when it is not an action.
    pub path: Option<String>,
    /// The JSON Schema of the arguments, as JSON text (an object schema).
    pub input_schema: String,
    /// When it was registered (ms since the epoch).
    pub created_at: i64,
}

const COLUMNS: &str = "name, description, addon_instance, action, path, input_schema, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<McpToolRow> {
    Ok(McpToolRow {
        name: r.get(0)?,
        description: r.get(1)?,
        addon: r.get(2)?,
        action: r.get(3)?,
        path: r.get(4)?,
        input_schema: r.get(5)?,
        created_at: r.get(6)?,
    })
}

impl Store {
    /// Stores a registered tool; false when one of that name exists already.
    pub async fn insert_mcp_tool(&self, t: McpToolRow) -> Result<bool, StoreError> {
        self.call(move |c| {
            match c.execute(
                &format!("INSERT INTO mcp_tools ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![t.name, t.description, t.addon, t.action, t.path, t.input_schema, t.created_at],
            ) {
                Ok(_) => Ok(true),
                Err(e) if is_unique_violation(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Every registered tool, by name.
    pub async fn list_mcp_tools(&self) -> Result<Vec<McpToolRow>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM mcp_tools ORDER BY name"))?;
            let rows = st.query_map([], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Deletes a registered tool; false if there was none of that name.
    pub async fn delete_mcp_tool(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM mcp_tools WHERE name = ?1", [name.to_string()]).await? == 1)
    }
}
