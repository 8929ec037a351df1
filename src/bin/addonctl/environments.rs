//! `addonctl addons env add|list` and `addonctl addons promote`: the environments of an
//! installed addon (each its own instance) and promotions between them, through
//! `/api/addons/{name}/environments|promote`.

use addond::client::Method;
use addond::sanitize::sanitize as cell;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::addons::{addon_path, config_base, ConfigInput};
use crate::input::apply_sets;
use crate::render::{render_table, text};
use crate::services::{wait_query, Op, WaitArgs};
use crate::Ctl;

#[derive(Subcommand, Debug)]
pub(crate) enum EnvCmd {
    /// Add an environment to an installed addon: its own instance, config, ports and data
    Add(EnvAddArgs),
    /// Every environment of an installed addon with its version, phase and health
    #[command(visible_alias = "ls")]
    List {
        /// The addon's installed name (its prod instance's)
        name: String,
    },
}

#[derive(Args, Debug, Clone)]
pub(crate) struct EnvAddArgs {
    /// The addon's installed name
    pub(crate) name: String,
    /// The new environment (e.g. staging)
    pub(crate) environment: String,
    /// The version it starts on (default: the one prod runs)
    #[arg(long)]
    pub(crate) version: Option<String>,
    #[command(flatten)]
    pub(crate) config: ConfigInput,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct PromoteArgs {
    /// The addon's installed name
    pub(crate) name: String,
    /// The environment whose version and exact images go (e.g. dev)
    pub(crate) from: String,
    /// The environment they go to; it keeps its own config (e.g. staging)
    pub(crate) to: String,
    /// Promote even when it skips a stage of environments.pipeline or goes backwards
    #[arg(long)]
    pub(crate) force: bool,
}

impl Ctl {
    pub(crate) async fn addon_env(&self, cmd: &EnvCmd) -> anyhow::Result<()> {
        match cmd {
            EnvCmd::List { name } => {
                let data = self.call(Method::GET, &addon_path(name, "environments"), None).await?;
                self.show(&data, render_environments)
            }
            EnvCmd::Add(a) => {
                let mut body = Map::new();
                body.insert("name".into(), json!(a.environment));
                if let Some(v) = &a.version {
                    body.insert("version".into(), json!(v));
                }
                let base = config_base(&a.config)?;
                if base.is_some() || !a.config.set.is_empty() {
                    body.insert("config".into(), apply_sets(base.unwrap_or_else(|| json!({})), &a.config.set, "the config")?);
                }
                let path = format!("{}{}", addon_path(&a.name, "environments"), wait_query(Op::Create, &a.wait));
                let data = self.call(Method::POST, &path, Some(&Value::Object(body))).await?;
                self.show(&data, |d| {
                    format!(
                        "added {} to {} as {} ({} {})\n",
                        cell(&a.environment),
                        cell(&a.name),
                        cell(&text(d, "instance")),
                        cell(&text(d, "version")),
                        cell(&text(d, "phase"))
                    )
                })
            }
        }
    }

    pub(crate) async fn addon_promote(&self, a: &PromoteArgs) -> anyhow::Result<()> {
        let body = json!({"from": a.from, "to": a.to, "force": a.force});
        let data = self.call(Method::POST, &addon_path(&a.name, "promote"), Some(&body)).await?;
        self.deployment_outcome(&data)
    }
}

pub(crate) fn render_environments(d: &Value) -> String {
    let rows: Vec<Vec<String>> = d["environments"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    let last = &e["last_deployment"];
                    let last = match last["kind"].as_str() {
                        Some(k) => format!("{} {} ({})", last["id"], k, text(last, "outcome")),
                        None => "-".into(),
                    };
                    vec![
                        text(e, "environment"),
                        text(e, "instance"),
                        text(e, "version"),
                        text(e, "phase"),
                        format!("{} ({}/{})", text(e, "health"), e["healthy_instances"], e["instances"]),
                        last,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render_table(&["ENVIRONMENT", "INSTANCE", "VERSION", "PHASE", "HEALTH", "LAST DEPLOYMENT"], &rows)
}
