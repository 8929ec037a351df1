//! `addonctl addons upgrade|rollback|history`: health-gated deployments of an installed
//! addon and their history, through `/api/addons/{name}/upgrade|rollback|deployments`.

use addond::client::Method;
use addond::sanitize::sanitize as cell;
use clap::Args;
use serde_json::{json, Map, Value};

use crate::addons::{addon_path, config_base, ConfigInput};
use crate::input::apply_sets;
use crate::render::{render_table, text};
use crate::Ctl;

#[derive(Args, Debug, Clone)]
pub(crate) struct UpgradeArgs {
    /// Installed addon instance
    pub(crate) name: String,
    /// A registered version (default: the newest)
    pub(crate) version: Option<String>,
    /// Run this image for the services that take the addon's image (e.g. a rebuilt tag)
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// New instances started at once per service (default: the daemon's deploy.surge)
    #[arg(long, value_name = "N")]
    pub(crate) surge: Option<u32>,
    #[command(flatten)]
    pub(crate) config: ConfigInput,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct RollbackArgs {
    /// Installed addon instance
    pub(crate) name: String,
    /// The deployment to go back to (default: the succeeded one before the current)
    #[arg(long, value_name = "DEPLOYMENT")]
    pub(crate) to: Option<i64>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct PublishArgs {
    /// Installed WASM addon instance
    pub(crate) name: String,
    /// The module (.wasm) to publish
    pub(crate) file: std::path::PathBuf,
    /// Move the instance to this registered version of its manifest as well
    #[arg(long)]
    pub(crate) version: Option<String>,
}

impl Ctl {
    /// Sends the module as it is; the daemon validates and compiles it before it changes
    /// anything, and the deployment swaps it in.
    pub(crate) async fn addon_publish(&self, a: &PublishArgs) -> anyhow::Result<()> {
        let bytes = std::fs::read(&a.file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.file.display()))?;
        let mut path = addon_path(&a.name, "publish");
        if let Some(v) = &a.version {
            path.push_str(&format!("?version={}", addond::client::encode_query_value(v)));
        }
        let reply = self.client.request_bytes(Method::POST, &path, "application/wasm", bytes.into()).await?;
        let data = reply.into_result()?;
        self.deployment_outcome(&data)
    }

    pub(crate) async fn addon_upgrade(&self, a: &UpgradeArgs) -> anyhow::Result<()> {
        let mut body = Map::new();
        if let Some(v) = &a.version {
            body.insert("version".into(), json!(v));
        }
        if let Some(i) = &a.image {
            body.insert("image".into(), json!(i));
        }
        if let Some(s) = a.surge {
            body.insert("surge".into(), json!(s));
        }
        let base = config_base(&a.config)?;
        if base.is_some() || !a.config.set.is_empty() {
            body.insert("config".into(), apply_sets(base.unwrap_or_else(|| json!({})), &a.config.set, "the config")?);
        }
        let data = self.call(Method::POST, &addon_path(&a.name, "upgrade"), Some(&Value::Object(body))).await?;
        self.deployment_outcome(&data)
    }

    pub(crate) async fn addon_rollback(&self, a: &RollbackArgs) -> anyhow::Result<()> {
        let body = match a.to {
            Some(id) => json!({"to": id}),
            None => json!({}),
        };
        let data = self.call(Method::POST, &addon_path(&a.name, "rollback"), Some(&body)).await?;
        self.deployment_outcome(&data)
    }

    pub(crate) async fn addon_history(&self, name: &str) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &addon_path(name, "deployments"), None).await?;
        self.show(&data, render_history)
    }

    /// Prints the deployment's outcome; a rolled-back one is an error (exit status 1), so a
    /// script that upgrades notices.
    pub(crate) fn deployment_outcome(&self, data: &Value) -> anyhow::Result<()> {
        self.show(data, render_outcome)?;
        let d = &data["deployment"];
        match d["outcome"].as_str() {
            Some("succeeded") => Ok(()),
            _ => Err(anyhow::anyhow!(
                "deployment {} {}: {}",
                d["id"],
                d["outcome"].as_str().unwrap_or("did not finish"),
                d["reason"].as_str().unwrap_or("no reason recorded")
            )),
        }
    }
}

fn render_outcome(d: &Value) -> String {
    let dep = &d["deployment"];
    let (id, to) = (dep["id"].to_string(), cell(&text(dep, "to_version")));
    match dep["outcome"].as_str() {
        Some("succeeded") => {
            format!("{} is on {to} (deployment {id}, {} ms)\n", cell(&text(d, "instance")), dep["duration_ms"].as_i64().unwrap_or(0))
        }
        _ => format!(
            "deployment {id} to {to} was rolled back: {}\n{} stays on {}\n",
            cell(&text(dep, "reason")),
            cell(&text(d, "instance")),
            cell(&text(d, "version"))
        ),
    }
}

pub(crate) fn render_history(d: &Value) -> String {
    let rows: Vec<Vec<String>> = d
        .as_array()
        .map(|list| {
            list.iter()
                .map(|x| {
                    let from = x["from_version"].as_str().map(|f| format!("{f} → ")).unwrap_or_default();
                    vec![
                        x["id"].to_string(),
                        match x["promoted_from"]["environment"].as_str() {
                            Some(env) => format!("promotion from {}", cell(env)),
                            None => text(x, "kind"),
                        },
                        format!("{from}{}", text(x, "to_version")),
                        text(x, "outcome"),
                        text(x, "started_at"),
                        x["duration_ms"].as_i64().map(|m| format!("{m} ms")).unwrap_or_else(|| "-".into()),
                        text(x, "who"),
                        x["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render_table(&["ID", "KIND", "VERSION", "OUTCOME", "STARTED", "TOOK", "WHO", "REASON"], &rows)
}
