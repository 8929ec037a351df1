//! Deployments of an installed addon instance: upgrades, rollbacks and their history.
//!
//! An upgrade validates everything it can before it changes anything (the version is
//! registered, the current config validates against the new schema, no dependent's version
//! requirement breaks), records a `running` deployment, then replaces the instances of each
//! service `surge` at a time: a new instance beside the old one, on its own port, until it is
//! healthy (and answers the manifest's `smoke` action), then one old instance out of routing,
//! its calls finished, and retired. The commit that makes the new spec the service's also
//! moves the install row to the new version and marks the deployment succeeded, in one
//! transaction. Any failure before it rolls back: the old instances are restored to their
//! count first, then the new ones go; the addon ends on its old version. A daemon killed
//! meanwhile finds the deployment still `running` at its next start and rolls it back the
//! same way ([`Addons::recover_deployments_once`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::manifest::Manifest;
use super::{canonical_hash, invalid, schema, AddonError, Addons};
use crate::lifecycle::LifecycleError;
use crate::model::{InstanceId, Phase, Service, ServiceId, ServiceSpec};
use crate::store::{DeploymentRow, NewDeployment, RolloutCommit};

/// `POST /api/addons/{name}/upgrade`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// A registered version (default: the newest).
    pub version: Option<String>,
    /// An image for the services that take the addon's image (a rebuilt tag, a digest).
    pub image: Option<String>,
    /// A new config, validated against the new version's schema (default: the current one).
    pub config: Option<Value>,
    /// New instances started at once per service (default `deploy.surge`).
    pub surge: Option<u32>,
}

/// `POST /api/addons/{name}/rollback`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The deployment to go back to (default: the succeeded one before the current).
    pub to: Option<i64>,
}

/// `POST /api/addons/{name}/promote`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The environment whose version and images go.
    pub from: String,
    /// The environment they go to; it keeps its own config.
    pub to: String,
    /// Go even when it skips a stage of `environments.pipeline` or goes backwards.
    #[serde(default)]
    pub force: bool,
}

/// What one service ran in a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The service's full name (`<instance>-<short name>`).
    pub service: String,
    /// The image reference its spec named.
    pub image: String,
    /// The image id that reference named when it was deployed, when Docker told.
    pub image_id: Option<String>,
}

/// What the recovery after a crash needs to undo a deployment that did not commit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Plan {
    /// Each service rolled, with the replica count to restore.
    services: Vec<(ServiceId, u32)>,
}

/// A deployment to run: where to go and why.
struct Target {
    kind: &'static str,
    manifest: Manifest,
    config: Value,
    /// Images by service full name (a rollback's), over the manifest's.
    images: HashMap<String, String>,
    /// A single image for every service that takes the addon's own (an upgrade's `image`).
    image: Option<String>,
    surge: u32,
    source: Option<i64>,
    who: String,
}

/// Removes the instance from the set of running deployments when dropped.
pub(super) struct Running<'a> {
    addons: &'a Addons,
    instance: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.addons.deploying.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.instance);
    }
}

pub(super) fn config_hash(config: &Value) -> String {
    canonical_hash(&[config])
}

impl Addons {
    /// Whether a deployment of the instance is under way (uninstall and scale refuse then).
    pub fn is_deploying(&self, instance: &str) -> bool {
        self.deploying.lock().unwrap_or_else(|e| e.into_inner()).contains(instance)
    }

    pub(super) fn claim(&self, instance: &str) -> Result<Running<'_>, AddonError> {
        if !self.deploying.lock().unwrap_or_else(|e| e.into_inner()).insert(instance.to_string()) {
            return Err(AddonError::DeploymentRunning(format!(
                "a deployment of `{instance}` is under way; wait for it (addonctl addons history {instance}) and send this again"
            )));
        }
        Ok(Running { addons: self, instance: instance.to_string() })
    }

    /// Upgrades an installed instance to a registered version (the newest by default).
    pub async fn upgrade(self: &Arc<Self>, instance: &str, req: UpgradeRequest, who: String) -> Result<Value, AddonError> {
        let inst = self.installed(instance).await?;
        let manifest = self.manifest(&inst.row.addon, req.version.as_deref()).await?;
        if let Some(image) = &req.image {
            crate::model::check_image(image).map_err(|m| invalid("image", m))?;
        }
        let current: Value = serde_json::from_str(&inst.row.config).unwrap_or_else(|_| json!({}));
        if manifest.version == inst.row.version && req.image.is_none() && req.config.is_none() {
            return Err(AddonError::Conflict(format!(
                "`{instance}` already runs {} {}; register a newer version (or send \"image\" or \"config\") to upgrade",
                manifest.name, manifest.version
            )));
        }
        let surge = req.surge.unwrap_or(self.cfg.deploy.surge);
        if !(1..=64).contains(&surge) {
            return Err(invalid("surge", format!("{surge}: must be between 1 and 64")));
        }
        let target = Target {
            kind: "upgrade",
            config: req.config.unwrap_or(current),
            manifest,
            images: HashMap::new(),
            image: req.image,
            surge,
            source: None,
            who,
        };
        self.deploy(instance, target).await
    }

    /// Redeploys an earlier deployment's version, images and config through the same
    /// health-gated path as an upgrade.
    pub async fn rollback(self: &Arc<Self>, instance: &str, req: RollbackRequest, who: String) -> Result<Value, AddonError> {
        let inst = self.installed(instance).await?;
        let history = self.lifecycle.store().deployments_of(instance).await?;
        let succeeded: Vec<&DeploymentRow> = history.iter().filter(|d| d.outcome == "succeeded").collect();
        let to = match req.to {
            Some(id) => history
                .iter()
                .find(|d| d.id == id)
                .ok_or_else(|| invalid("to", format!("`{instance}` has no deployment {id}; see addonctl addons history {instance}")))?,
            // The current deployment is the newest succeeded one; go to the one before.
            None => succeeded
                .iter()
                .rev()
                .nth(1)
                .copied()
                .ok_or_else(|| AddonError::Conflict(format!("`{instance}` has no earlier succeeded deployment to roll back to")))?,
        };
        if to.outcome != "succeeded" {
            return Err(invalid("to", format!("deployment {} {}; only a succeeded deployment can be rolled back to", to.id, to.outcome)));
        }
        let manifest = self.manifest(&inst.row.addon, Some(&to.to_version)).await.map_err(|_| {
            AddonError::Conflict(format!(
                "{} {} (deployment {}) is no longer registered; register it again to roll back to it",
                inst.row.addon, to.to_version, to.id
            ))
        })?;
        let records: Vec<ImageRecord> = serde_json::from_str(&to.images).unwrap_or_default();
        let mut images = HashMap::new();
        for r in records {
            // The exact image that ran, when Docker still has it; else the reference.
            let exact = match &r.image_id {
                Some(id) if self.lifecycle.runtime().image_id(id).await.ok().flatten().is_some() => id.clone(),
                _ => r.image.clone(),
            };
            images.insert(r.service, exact);
        }
        let config = serde_json::from_str(&to.config).unwrap_or_else(|_| json!({}));
        let target =
            Target { kind: "rollback", manifest, config, images, image: None, surge: self.cfg.deploy.surge, source: Some(to.id), who };
        self.deploy(instance, target).await
    }

    /// Deploys the version and the exact images environment `from` of `base` runs into
    /// environment `to`, which keeps its own config (validated against that version's
    /// schema), through the same health-gated path as an upgrade.
    pub async fn promote(self: &Arc<Self>, base: &str, req: PromoteRequest, who: String) -> Result<Value, AddonError> {
        if req.from == req.to {
            return Err(invalid("to", format!("`{}` is both from and to; name two environments", req.to)));
        }
        let from = self.environment_row(base, &req.from, "from").await?;
        let to = self.environment_row(base, &req.to, "to").await?;
        if !req.force {
            let have: Vec<String> = self.environment_rows(base).await?.into_iter().map(|r| r.environment).collect();
            if let Some(why) = super::environments::pipeline_gap(&self.cfg.environments.pipeline, &have, &req.from, &req.to) {
                return Err(AddonError::Conflict(why));
            }
        }
        // What `from` runs: its newest succeeded deployment recorded each service's image id.
        let history = self.lifecycle.store().deployments_of(&from.instance).await?;
        let current =
            history.iter().rev().find(|d| d.outcome == "succeeded").ok_or_else(|| {
                AddonError::Conflict(format!("`{}` ({}) has no succeeded deployment to promote", from.instance, req.from))
            })?;
        let manifest = self.manifest(&from.addon, Some(&from.version)).await?;
        let records: Vec<ImageRecord> = serde_json::from_str(&current.images).unwrap_or_default();
        let mut images = HashMap::new();
        let prefix = format!("{}-", from.instance);
        for r in records {
            let Some(short) = r.service.strip_prefix(&prefix) else { continue };
            let exact = match &r.image_id {
                Some(id) if self.lifecycle.runtime().image_id(id).await.ok().flatten().is_some() => id.clone(),
                Some(id) => {
                    return Err(AddonError::Conflict(format!(
                        "the image {id} that `{}` runs for {} is no longer present; upgrade {} again to rebuild it",
                        from.instance, r.service, req.from
                    )))
                }
                None => r.image.clone(),
            };
            images.insert(format!("{}-{short}", to.instance), exact);
        }
        let config = serde_json::from_str(&to.config).unwrap_or_else(|_| json!({}));
        let target = Target {
            kind: "promotion",
            manifest,
            config,
            images,
            image: None,
            surge: self.cfg.deploy.surge,
            source: Some(current.id),
            who,
        };
        let mut v = self.deploy(&to.instance, target).await?;
        self.annotate_promotion(&mut v["deployment"]).await;
        Ok(v)
    }

    /// Adds `promoted_from` (environment, instance, deployment) to a promotion's view.
    async fn annotate_promotion(&self, v: &mut Value) {
        if v["kind"] != "promotion" {
            return;
        }
        let Some(src) = v["source"].as_i64() else { return };
        if let Ok(Some(row)) = self.lifecycle.store().get_deployment(src).await {
            let (_, env) = crate::model::split_environment(&row.instance);
            v["promoted_from"] = json!({"environment": env, "instance": row.instance, "deployment": src, "version": row.to_version});
        }
    }

    /// The deployments of an instance, oldest first.
    pub async fn deployments(&self, instance: &str) -> Result<Vec<Value>, AddonError> {
        let rows = self.lifecycle.store().deployments_of(instance).await?;
        if rows.is_empty() && self.lifecycle.store().get_install(instance).await?.is_none() {
            return Err(AddonError::NotFound(format!("no addon installed as `{instance}` and no deployment history for it")));
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut v = deployment_view(r);
            self.annotate_promotion(&mut v).await;
            out.push(v);
        }
        Ok(out)
    }

    /// The newest deployment of an instance, for `addons show`.
    pub(super) async fn last_deployment(&self, instance: &str) -> Option<Value> {
        let rows = self.lifecycle.store().deployments_of(instance).await.ok()?;
        let mut v = rows.last().map(deployment_view)?;
        self.annotate_promotion(&mut v).await;
        Some(v)
    }

    async fn deploy(self: &Arc<Self>, instance: &str, t: Target) -> Result<Value, AddonError> {
        if t.manifest.is_wasm() {
            // A rollback names the module it redeploys; an upgrade keeps the current one.
            let module = match t.images.get(super::wasm::SERVICE) {
                Some(image) => super::wasm::ModuleChoice::Hash(image.trim_start_matches("sha256:").to_string()),
                None => super::wasm::ModuleChoice::Current,
            };
            let target =
                super::wasm::WasmTarget { kind: t.kind, manifest: t.manifest, config: t.config, module, source: t.source, who: t.who };
            return self.deploy_wasm(instance, target).await;
        }
        let _running = self.claim(instance)?;
        // One a killed daemon left is rolled back by the recovery first (it may not have
        // run yet right after a start).
        if let Some(d) = self.lifecycle.store().running_deployments().await?.into_iter().find(|d| d.instance == instance) {
            return Err(AddonError::DeploymentRunning(format!(
                "deployment {} of `{instance}` was cut short by a restart and is being rolled back; send this again in a moment",
                d.id
            )));
        }
        let inst = self.installed(instance).await?;
        let from_version = inst.row.version.clone();
        let m = &t.manifest;
        if m.name != inst.row.addon {
            return Err(invalid("version", format!("`{instance}` is {}, not {}", inst.row.addon, m.name)));
        }
        let config = schema::normalize(&m.config_schema, t.config.clone(), "config").map_err(|msg| {
            let field = msg.split(':').next().unwrap_or("config").to_string();
            invalid(&field, format!("{msg} (the config no longer validates against {} {}'s schema)", m.name, m.version))
        })?;
        self.check_dependents(instance, m).await?;
        // The new specs, matched to the running services by name.
        let mut specs = self.service_specs(m, instance)?;
        for (spec, _) in &mut specs {
            if let Some(img) = t.images.get(&spec.name) {
                spec.image = img.clone();
            } else if let (Some(img), None) = (&t.image, inst_image_override(m, &spec.name, instance)) {
                spec.image = img.clone();
            }
        }
        let services = self.lifecycle.store().services_of_addon(instance).await?;
        let by_name: HashMap<&str, &Service> = services.iter().map(|s| (s.spec.name.as_str(), s)).collect();
        let new_names: HashSet<&str> = specs.iter().map(|(s, _)| s.name.as_str()).collect();
        let added: Vec<&str> = new_names.iter().filter(|n| !by_name.contains_key(*n)).copied().collect();
        let removed: Vec<&str> = by_name.keys().filter(|n| !new_names.contains(*n)).copied().collect();
        if !added.is_empty() || !removed.is_empty() {
            return Err(AddonError::Conflict(format!(
                "{} {} has other services than the installed {} (new: {}; gone: {}); an upgrade replaces the instances of the same services, so uninstall and install to change them",
                m.name,
                m.version,
                from_version,
                if added.is_empty() { "none".to_string() } else { added.join(", ") },
                if removed.is_empty() { "none".to_string() } else { removed.join(", ") },
            )));
        }
        if let Some(s) = services.iter().find(|s| s.desired != crate::model::Desired::Started || s.phase == Phase::Failed) {
            return Err(AddonError::Conflict(format!(
                "service `{}` is {} ({}); start the addon (addonctl addons start {instance}) before deploying to it",
                s.spec.name,
                s.phase.as_str(),
                s.desired.as_str()
            )));
        }
        // Prepared before anything is recorded: a missing image is a refusal, not a rollback.
        let mut plan_services = Vec::new();
        let mut work: Vec<(Service, ServiceSpec)> = Vec::new();
        for (mut spec, _) in specs {
            let svc = by_name[spec.name.as_str()].clone();
            self.lifecycle.prepare_rollout_spec(&mut spec, Some(instance)).await.map_err(|e| match e {
                LifecycleError::Runtime(r) => invalid("image", format!("{r}")),
                e => e.into(),
            })?;
            plan_services.push((svc.id.clone(), svc.replicas));
            work.push((svc, spec));
        }
        let mut records = Vec::new();
        for (_, spec) in &work {
            let image_id = self.lifecycle.runtime().image_id(&spec.image).await.ok().flatten();
            records.push(ImageRecord { service: spec.name.clone(), image: spec.image.clone(), image_id });
        }
        let config_text = config.to_string();
        let id = self
            .lifecycle
            .store()
            .insert_deployment(NewDeployment {
                instance: instance.to_string(),
                addon: m.name.clone(),
                kind: t.kind,
                from_version: Some(from_version.clone()),
                to_version: m.version.clone(),
                images: serde_json::to_string(&records).unwrap_or_else(|_| "[]".into()),
                config: config_text.clone(),
                config_hash: config_hash(&config),
                who: t.who.clone(),
                outcome: "running",
                source: t.source,
                plan: serde_json::to_string(&Plan { services: plan_services.clone() }).ok(),
            })
            .await?;
        let base = json!({"deployment": id, "instance": instance, "environment": inst.row.environment, "addon": m.name, "from": from_version, "to": m.version, "kind": t.kind});
        self.lifecycle.notice("deployment.started", base.clone());
        tracing::info!(%instance, from = %from_version, to = %m.version, deployment = id, "deployment started");
        self.lifecycle.set_rollout_config(instance, Some(config_text.clone()));
        let started = std::time::Instant::now();
        match self.roll(instance, m, &work, t.surge).await {
            Ok(()) => {
                crate::failpoint::debug_failpoint("deploy.before_commit");
                let commit = RolloutCommit {
                    instance: instance.to_string(),
                    version: m.version.clone(),
                    config: config_text,
                    deployment: id,
                    services: work.iter().map(|(s, spec)| (s.id.clone(), spec.clone(), s.replicas)).collect(),
                };
                self.lifecycle.commit_rollout(commit).await?;
                self.bump_generation(instance);
                let mut done = base.clone();
                done["duration_ms"] = json!(started.elapsed().as_millis() as u64);
                self.lifecycle.notice("deployment.succeeded", done);
                tracing::info!(%instance, to = %m.version, deployment = id, "deployment succeeded");
                self.collect_images().await;
            }
            Err(reason) => {
                tracing::warn!(%instance, deployment = id, %reason, "deployment failed; rolling back");
                self.undo(instance, id, &plan_services, "rolled_back", reason.clone()).await?;
                self.bump_generation(instance);
                let mut failed = base.clone();
                failed["reason"] = json!(reason);
                self.lifecycle.notice("deployment.failed", failed.clone());
                self.lifecycle.notice("deployment.rolled_back", failed);
            }
        }
        self.deployment_answer(instance, id).await
    }

    /// What a deployment answers: the instance's view with the deployment's row.
    pub(super) async fn deployment_answer(&self, instance: &str, id: i64) -> Result<Value, AddonError> {
        let row = self.lifecycle.store().get_deployment(id).await?.ok_or_else(|| AddonError::NotFound(format!("deployment {id}")))?;
        let mut v = self.instance_view(instance).await?;
        v["deployment"] = deployment_view(&row);
        Ok(v)
    }

    /// Replaces every instance of every service; the reason when something failed.
    async fn roll(&self, instance: &str, m: &Manifest, work: &[(Service, ServiceSpec)], surge: u32) -> Result<(), String> {
        let health_timeout = Duration::from_secs_f64(self.cfg.deploy.health_timeout_seconds);
        let drain_timeout = Duration::from_secs_f64(self.cfg.deploy.drain_timeout_seconds);
        for (svc, spec) in work {
            let mut old: Vec<InstanceId> = svc.instances.iter().filter(|i| i.wanted && !i.is_candidate()).map(|i| i.id.clone()).collect();
            old.reverse(); // highest ordinals go first
            let mut left = svc.replicas as usize;
            while left > 0 {
                let batch = left.min(surge as usize);
                let new = self.lifecycle.add_candidates(&svc.id, spec, batch).await.map_err(|e| e.to_string())?;
                crate::failpoint::debug_failpoint("deploy.candidates_added");
                let t0 = std::time::Instant::now();
                let waits = new.iter().map(|iid| self.lifecycle.wait_candidate(&svc.id, iid, health_timeout));
                for r in futures_util::future::join_all(waits).await {
                    r.map_err(|e| match e {
                        LifecycleError::Failed { name, reason } => format!("{name}: {reason}"),
                        e => e.to_string(),
                    })?;
                }
                tracing::debug!(%instance, service = %svc.spec.name, batch, ms = t0.elapsed().as_millis() as u64, "new instances healthy");
                if let Some(action) = &m.smoke {
                    for iid in &new {
                        self.smoke(svc, iid, action).await?;
                    }
                }
                // The new ones take traffic now; as many old ones leave together, once the
                // calls they were serving finished.
                let leaving: Vec<InstanceId> = (0..batch).map_while(|_| old.pop()).collect();
                for o in &leaving {
                    self.lifecycle.drain(&svc.id, o);
                }
                // A call that chose one just before the drain is counted within moments.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let idle = futures_util::future::join_all(leaving.iter().map(|o| self.dispatcher.wait_idle(o, drain_timeout))).await;
                for (o, idle) in leaving.iter().zip(idle) {
                    if !idle {
                        tracing::warn!(instance = %instance, old = %o, "calls still under way after the drain timeout; stopping it anyway");
                    }
                }
                self.lifecycle.retire(&svc.id, &leaving).await.map_err(|e| e.to_string())?;
                tracing::debug!(%instance, service = %svc.spec.name, batch, ms = t0.elapsed().as_millis() as u64, "old instances drained and retired");
                left -= batch;
            }
            // Scaled up since the plan was made: those go too (the commit retires them).
            for o in &old {
                self.lifecycle.drain(&svc.id, o);
            }
            futures_util::future::join_all(old.iter().map(|o| self.dispatcher.wait_idle(o, drain_timeout))).await;
        }
        Ok(())
    }

    /// Calls the manifest's smoke action on one new instance; the reason when it is not 2xx.
    async fn smoke(&self, svc: &Service, instance: &InstanceId, action: &str) -> Result<(), String> {
        let addr = self
            .lifecycle
            .endpoint_of(&svc.id, instance)
            .ok_or_else(|| format!("{}: the new instance has no address to call `{action}` on", svc.spec.name))?;
        let timeout = Duration::from_secs_f64(self.cfg.addons.execute_timeout_seconds);
        match self.dispatcher.post_to(addr, &format!("/execute/{action}"), Bytes::from_static(b"{}"), timeout).await {
            Ok(s) if (200..300).contains(&s) => Ok(()),
            Ok(s) => Err(format!("{}: smoke action `{action}` answered HTTP {s} on the new instance", svc.spec.name)),
            Err(e) => Err(format!("{}: smoke action `{action}` failed on the new instance: {e}", svc.spec.name)),
        }
    }

    /// Rolls a deployment that did not commit back: the old instances back to their count
    /// (restored before the new ones go, so capacity never drops below what it was), then
    /// every new instance retired, and the deployment finished with `outcome`.
    async fn undo(
        &self,
        instance: &str,
        id: i64,
        plan: &[(ServiceId, u32)],
        outcome: &'static str,
        reason: String,
    ) -> Result<(), AddonError> {
        let timeout = Duration::from_secs_f64(self.cfg.deploy.health_timeout_seconds);
        for (sid, replicas) in plan {
            match self.lifecycle.scale(sid.as_str(), *replicas).await {
                Ok(_) => {
                    let _ = self.lifecycle.undrain(sid).await;
                    if let Err(e) = self.lifecycle.wait(sid, Phase::Started, timeout).await {
                        tracing::warn!(%instance, service = %sid, error = %e, "old version not back to full strength yet");
                    }
                }
                Err(LifecycleError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(%instance, service = %sid, error = %e, "cannot restore the old instances; the reconciler keeps trying")
                }
            }
        }
        let ids: Vec<ServiceId> = plan.iter().map(|(s, _)| s.clone()).collect();
        self.lifecycle.abort_rollout(instance, &ids, id, outcome, reason).await?;
        Ok(())
    }

    /// Rolls back, once per start, every deployment a killed daemon left running. Runs
    /// after the first resync, before the instance takes new deployments.
    pub async fn recover_deployments_once(self: Arc<Self>) {
        self.lifecycle.first_resync().await;
        let running = match self.lifecycle.store().running_deployments().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read running deployments; they are rolled back at the next start");
                return;
            }
        };
        for d in running {
            let Ok(_claim) = self.claim(&d.instance) else { continue };
            let plan: Plan = d.plan.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
            let reason = "the daemon stopped while it ran; rolled back at the next start".to_string();
            tracing::warn!(instance = %d.instance, deployment = d.id, "rolling back a deployment the daemon did not finish");
            match self.undo(&d.instance, d.id, &plan.services, "rolled_back", reason.clone()).await {
                Ok(()) => {
                    self.bump_generation(&d.instance);
                    let data = json!({"deployment": d.id, "instance": d.instance, "addon": d.addon, "from": d.from_version, "to": d.to_version, "kind": d.kind, "reason": reason});
                    self.lifecycle.notice("deployment.rolled_back", data);
                }
                Err(e) => {
                    tracing::warn!(instance = %d.instance, deployment = d.id, error = %e, "cannot roll back yet; retried at the next start")
                }
            }
        }
    }

    /// Refuses a version that breaks what an installed dependent requires of this addon.
    pub(super) async fn check_dependents(&self, instance: &str, m: &Manifest) -> Result<(), AddonError> {
        let new = semver::Version::parse(&m.version).map_err(|e| invalid("version", e.to_string()))?;
        for row in self.lifecycle.store().list_installs().await? {
            if row.instance == instance {
                continue;
            }
            let Ok(dm) = self.manifest(&row.addon, Some(&row.version)).await else { continue };
            let Some(req) = dm.dependencies.get(&m.name) else { continue };
            let Ok(want) = semver::VersionReq::parse(req) else { continue };
            if !want.matches(&new) {
                return Err(AddonError::Conflict(format!(
                    "`{}` ({} {}) requires {} {req}, which {} does not satisfy; upgrade or uninstall `{}` first",
                    row.instance, row.addon, row.version, m.name, m.version, row.instance
                )));
            }
        }
        Ok(())
    }

    /// Removes built images (`addond/…`) that an older deployment ran and that neither a
    /// service runs now nor one of the newest `deploy.keep_deployments` succeeded deployments
    /// of any instance (nor a running one) could go back to. An image no deployment ever ran
    /// (built, not yet deployed) is left alone.
    pub async fn collect_images(&self) {
        let keep_n = self.cfg.deploy.keep_deployments as usize;
        let runtime = self.lifecycle.runtime();
        let Ok(built) = runtime.built_images().await else { return };
        if built.is_empty() {
            return;
        }
        let mut keep: HashSet<String> = HashSet::new();
        if let Ok(services) = self.lifecycle.store().list_services().await {
            for s in &services {
                keep.insert(s.spec.image.clone());
                for i in &s.instances {
                    if let Some(spec) = &i.spec {
                        keep.insert(spec.image.clone());
                    }
                }
            }
        }
        let Ok(rows) = self.lifecycle.store().deployment_images().await else { return };
        let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
        let mut old: HashSet<String> = HashSet::new();
        for (instance, outcome, images) in rows {
            let records = serde_json::from_str::<Vec<ImageRecord>>(&images).unwrap_or_default();
            // A running deployment's images are all kept; succeeded ones up to N per instance.
            let kept = match outcome.as_str() {
                "running" => true,
                "succeeded" => {
                    let n = per_instance.entry(instance).or_default();
                    *n += 1;
                    *n <= keep_n
                }
                _ => continue,
            };
            for r in records {
                if kept {
                    keep.insert(r.image);
                    keep.extend(r.image_id);
                } else {
                    old.insert(r.image);
                }
            }
        }
        for (tag, id) in built {
            if !old.contains(&tag) || keep.contains(&tag) || keep.contains(&id) {
                continue;
            }
            match runtime.remove_built_image(&tag).await {
                Ok(true) => tracing::info!(image = %tag, "removed an image no deployment kept for rollback needs"),
                Ok(false) => {}
                Err(e) => tracing::warn!(image = %tag, error = %e, "cannot remove an old built image"),
            }
        }
    }
}

/// Whether the manifest's service declaration names its own image (then an upgrade's
/// `image` leaves it alone): `Some(image)` if so.
fn inst_image_override(m: &Manifest, full_name: &str, instance: &str) -> Option<String> {
    m.services.iter().find_map(|v| {
        let short = v.get("name").and_then(Value::as_str).unwrap_or("main");
        (format!("{instance}-{short}") == full_name).then(|| v.get("image").and_then(Value::as_str).map(str::to_string)).flatten()
    })
}

/// A deployment as the API shows it.
pub fn deployment_view(d: &DeploymentRow) -> Value {
    let images: Value = serde_json::from_str(&d.images).unwrap_or_else(|_| json!([]));
    let config: Value = serde_json::from_str(&d.config).unwrap_or_else(|_| json!({}));
    json!({
        "id": d.id,
        "instance": d.instance,
        "addon": d.addon,
        "kind": d.kind,
        "from_version": d.from_version,
        "to_version": d.to_version,
        "images": images,
        "config": config,
        "config_hash": d.config_hash,
        "who": d.who,
        "started_at": crate::time::rfc3339_ms(d.started_at),
        "finished_at": d.finished_at.map(crate::time::rfc3339_ms),
        "duration_ms": d.finished_at.map(|f| f - d.started_at),
        "outcome": d.outcome,
        "reason": d.reason,
        "source": d.source,
        "environment": crate::model::split_environment(&d.instance).1,
    })
}
