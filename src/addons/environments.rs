//! Environments of an installed addon: `dev`, `staging`, `prod` and whatever else the
//! operator names. An environment is an addon instance of its own — `prod` keeps the plain
//! instance name, another environment `E` of `pay` is the instance `pay--E` — so its
//! services, ports, health, config, replicas, storage, event cursors and tokens are apart
//! from the others' by what is already keyed by instance. This module installs them, lists
//! them grouped under their base name, and knows the pipeline's order for promotions
//! (which run through [`super::deploy`]).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{addon_phase, check_base_name, invalid, AddonError, Addons, InstallRequest};
use crate::model::{check_environment, environment_instance, Health, DEFAULT_ENVIRONMENT};
use crate::store::InstallRow;

/// `POST /api/addons/{name}/environments`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRequest {
    /// The environment's name (`staging`).
    pub name: String,
    /// Its own config (default: the schema's defaults).
    pub config: Option<Value>,
    /// The version it starts on (default: the one `prod` runs, else the first environment's).
    pub version: Option<String>,
}

/// Why a promotion from `from` to `to` breaks the pipeline's order, if it does: `to` before
/// `from`, or a stage between them that the addon has (`have`) left out. Environments
/// outside the pipeline have no order to break.
pub fn pipeline_gap(pipeline: &[String], have: &[String], from: &str, to: &str) -> Option<String> {
    let pos = |e: &str| pipeline.iter().position(|p| p == e);
    let (f, t) = (pos(from)?, pos(to)?);
    if t < f {
        return Some(format!(
            "`{to}` comes before `{from}` in environments.pipeline ({}); promote forward, or force it",
            pipeline.join(" → ")
        ));
    }
    let missing: Vec<&str> = pipeline[f + 1..t].iter().filter(|e| have.contains(e)).map(String::as_str).collect();
    let first = missing.first()?;
    Some(format!(
        "promoting {from} → {to} skips the stage {}; promote {from} → {first} first, or force it",
        missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
    ))
}

impl Addons {
    /// The installs that are environments of `base`, in pipeline order (others after, by name).
    pub(super) async fn environment_rows(&self, base: &str) -> Result<Vec<InstallRow>, AddonError> {
        let mut rows: Vec<InstallRow> = self.lifecycle.store().list_installs().await?.into_iter().filter(|r| r.base == base).collect();
        let pipeline = &self.cfg.environments.pipeline;
        let rank = |e: &str| pipeline.iter().position(|p| p == e).unwrap_or(usize::MAX);
        rows.sort_by(|a, b| rank(&a.environment).cmp(&rank(&b.environment)).then(a.environment.cmp(&b.environment)));
        if rows.is_empty() {
            return Err(AddonError::NotFound(format!(
                "no addon is installed as `{base}` in any environment; install it with `addonctl addons install NAME`"
            )));
        }
        Ok(rows)
    }

    /// The install of environment `env` of `base`; `field` names the request field.
    pub(super) async fn environment_row(&self, base: &str, env: &str, field: &str) -> Result<InstallRow, AddonError> {
        let instance = environment_instance(base, env);
        match self.lifecycle.store().get_install(&instance).await? {
            Some(r) => Ok(r),
            None => {
                let have: Vec<String> = self.environment_rows(base).await?.into_iter().map(|r| r.environment).collect();
                Err(AddonError::NotFound(format!(
                    "`{base}` has no environment `{env}` ({field}); it has {}; add one with `addonctl addons env add {base} {env}`",
                    have.join(", ")
                )))
            }
        }
    }

    /// Every environment of `base` with its version, phase, health and last deployment.
    pub async fn environments(&self, base: &str) -> Result<Value, AddonError> {
        let rows = self.environment_rows(base).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let services = self.lifecycle.store().services_of_addon(&row.instance).await?;
            let instances: Vec<_> = services.iter().flat_map(|s| s.instances.iter().filter(|i| i.wanted && !i.is_candidate())).collect();
            let healthy = instances.iter().filter(|i| i.health == Health::Healthy).count();
            let health = if instances.is_empty() {
                "none"
            } else if healthy == instances.len() {
                "healthy"
            } else if healthy > 0 {
                "degraded"
            } else {
                "unhealthy"
            };
            let config: Value = serde_json::from_str(&row.config).unwrap_or(Value::Null);
            out.push(json!({
                "environment": row.environment,
                "instance": row.instance,
                "name": row.addon,
                "version": row.version,
                "phase": addon_phase(&services).as_str(),
                "health": health,
                "healthy_instances": healthy,
                "instances": instances.len(),
                "host_ports": instances.iter().map(|i| i.host_port).collect::<Vec<_>>(),
                "config": config,
                "deploying": self.is_deploying(&row.instance),
                "last_deployment": self.last_deployment(&row.instance).await,
            }));
        }
        Ok(json!({"addon": base, "pipeline": self.cfg.environments.pipeline, "environments": out}))
    }

    /// Installs several environments of an addon at once (`"environments"` of an install):
    /// each is its own instance with the same version and config. Stops at the first that
    /// fails; the ones before stay installed (each install is whole or nothing).
    pub async fn install_environments(&self, name: &str, mut req: InstallRequest, who: String) -> Result<Value, AddonError> {
        let mut envs = req.environments.take().unwrap_or_default();
        if envs.is_empty() {
            envs = self.cfg.environments.pipeline.clone();
        }
        for (i, e) in envs.iter().enumerate() {
            check_environment(e).map_err(|m| invalid(&format!("environments[{i}]"), m))?;
            if envs[..i].contains(e) {
                return Err(invalid(&format!("environments[{i}]"), format!("`{e}` is listed twice")));
            }
        }
        let base = req.instance.clone().unwrap_or_else(|| name.to_string());
        check_base_name(&base)?;
        for e in &envs {
            if self.lifecycle.store().get_install(&environment_instance(&base, e)).await?.is_some() {
                return Err(AddonError::Conflict(format!(
                    "`{base}` already has the environment `{e}`; leave it out, or give this installation another name with \"instance\""
                )));
            }
        }
        for e in &envs {
            let one = InstallRequest {
                instance: None,
                name: req.name.clone(),
                version: req.version.clone(),
                config: req.config.clone(),
                environments: None,
            };
            self.install_environment(name, one, &base, e, who.clone()).await?;
        }
        self.environments(&base).await
    }

    /// Adds one environment to an installed addon, on the version `prod` runs unless told.
    pub async fn add_environment(&self, base: &str, req: EnvironmentRequest, who: String) -> Result<Value, AddonError> {
        check_environment(&req.name).map_err(|m| invalid("name", m))?;
        let rows = self.environment_rows(base).await?;
        if rows.iter().any(|r| r.environment == req.name) {
            return Err(AddonError::Conflict(format!("`{base}` already has the environment `{}`", req.name)));
        }
        let like = rows.iter().find(|r| r.environment == DEFAULT_ENVIRONMENT).unwrap_or(&rows[0]);
        let version = req.version.unwrap_or_else(|| like.version.clone());
        let one = InstallRequest {
            instance: None,
            name: like.display_name.clone(),
            version: Some(version),
            config: req.config,
            environments: None,
        };
        let addon = like.addon.clone();
        self.install_environment(&addon, one, base, &req.name, who).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pipeline_refuses_skips_and_backwards_only() {
        let p = v(&["dev", "staging", "prod"]);
        let all = v(&["dev", "staging", "prod"]);
        assert_eq!(pipeline_gap(&p, &all, "dev", "staging"), None);
        assert_eq!(pipeline_gap(&p, &all, "staging", "prod"), None);
        assert!(pipeline_gap(&p, &all, "dev", "prod").is_some_and(|m| m.contains("`staging`")));
        assert!(pipeline_gap(&p, &all, "prod", "dev").is_some_and(|m| m.contains("before")));
        // A stage the addon does not have is not skipped.
        assert_eq!(pipeline_gap(&p, &v(&["dev", "prod"]), "dev", "prod"), None);
        // Outside the pipeline: no order.
        assert_eq!(pipeline_gap(&p, &all, "qa", "prod"), None);
    }
}
