//! WebAssembly addons inside the catalogue: publishing a module (a deployment like an
//! upgrade, which swaps the module atomically: calls under way finish on the old code),
//! finding the module an instance runs (from memory, else from its newest succeeded
//! deployment, loaded from the on-disk cache), calling it with the manifest's limits and
//! permissions, and the host side of its imports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::deploy::{config_hash, ImageRecord};
use super::manifest::Manifest;
use super::{invalid, schema, AddonError, Addons, Installed};
use crate::store::{NewDeployment, RolloutCommit};
use crate::wasm::host::{CallCtx, Host, HostError};
use crate::wasm::{Entry, LoadedModule, Wasm, WasmError};

/// The service name a WASM addon's module is recorded under in a deployment's images.
pub const SERVICE: &str = "wasm";

/// Where guests' events go: the events bus (which depends on the addons, so it is handed
/// in as this trait once it exists).
pub trait EventSink: Send + Sync {
    fn emit<'a>(&'a self, name: &'a str, data: Value, source: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// Which module a WASM deployment runs.
pub(super) enum ModuleChoice {
    /// Just published (validated and compiled).
    New(crate::wasm::LoadedModule),
    /// One published before, by hash (a rollback).
    Hash(String),
    /// The one running now (an upgrade of the manifest only).
    Current,
}

/// A WASM deployment to run.
pub(super) struct WasmTarget {
    pub kind: &'static str,
    pub manifest: Manifest,
    pub config: Value,
    pub module: ModuleChoice,
    pub source: Option<i64>,
    pub who: String,
}

/// The module hash a deployment's images record, if any.
fn recorded_module(images: &str) -> Option<String> {
    let records: Vec<ImageRecord> = serde_json::from_str(images).ok()?;
    records.into_iter().find(|r| r.service == SERVICE).map(|r| r.image.trim_start_matches("sha256:").to_string())
}

impl Addons {
    /// Hands the guests' `emit_event` the events bus.
    pub fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        let _ = self.event_sink.set(sink);
    }

    fn runtime(&self) -> Result<Arc<Wasm>, WasmError> {
        self.wasm.clone().ok_or_else(|| WasmError::Unpublished("this host cannot run WebAssembly addons (see the daemon's log)".into()))
    }

    /// Modules compiled since the daemon started (none after a restart that found them all
    /// in the cache).
    pub fn wasm_compiles(&self) -> u64 {
        self.wasm.as_ref().map_or(0, |w| w.compiles.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(super) fn drop_module(&self, instance: &str) {
        self.modules.write().unwrap_or_else(|e| e.into_inner()).remove(instance);
    }

    /// The module an instance runs: from memory, else loaded from its newest succeeded
    /// deployment (the first call after a start).
    pub(super) async fn module(&self, instance: &str) -> Result<Arc<LoadedModule>, AddonError> {
        if let Some(m) = self.modules.read().unwrap_or_else(|e| e.into_inner()).get(instance) {
            return Ok(m.clone());
        }
        let _one = self.module_load.lock().await;
        if let Some(m) = self.modules.read().unwrap_or_else(|e| e.into_inner()).get(instance) {
            return Ok(m.clone());
        }
        let rows = self.lifecycle.store().deployments_of(instance).await?;
        let hash = rows.iter().rev().find(|d| d.outcome == "succeeded").and_then(|d| recorded_module(&d.images)).ok_or_else(|| {
            WasmError::Unpublished(format!(
                "no module is published for `{instance}` yet; publish one with `addonctl addons publish {instance} FILE.wasm`"
            ))
        })?;
        let rt = self.runtime()?;
        let loaded = tokio::task::spawn_blocking(move || rt.load_blocking(&hash))
            .await
            .map_err(|e| WasmError::Io(format!("loading the module ended abnormally: {e}")))??;
        let loaded = Arc::new(loaded);
        self.modules.write().unwrap_or_else(|e| e.into_inner()).insert(instance.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// What `addons show` tells about a WASM instance's module (null: none published).
    pub(super) async fn module_view(&self, instance: &str) -> Value {
        match self.module(instance).await {
            Ok(m) => json!({
                "hash": format!("sha256:{}", m.hash),
                "source": m.source.as_str(),
                "load_ms": m.load_time.as_secs_f64() * 1e3,
                "render": m.has_render,
                "on_event": m.has_on_event,
                "compiled_since_start": self.wasm_compiles(),
            }),
            Err(_) => Value::Null,
        }
    }

    /// Calls a WASM instance's module with its manifest's limits and permissions.
    pub(super) async fn call_wasm(&self, inst: &Installed, entry: Entry<'_>, timeout: Duration) -> Result<Vec<u8>, AddonError> {
        let module = self.module(&inst.row.instance).await?;
        let config: Value = serde_json::from_str(&inst.row.config).unwrap_or_else(|_| json!({}));
        self.call_module(&inst.row.instance, &inst.manifest, config, module, entry, timeout).await
    }

    /// Calls `module` as `instance` with `m`'s limits and permissions and `config`: the
    /// running module, or one a deployment is about to swap in (its smoke call).
    async fn call_module(
        &self,
        instance: &str,
        m: &Manifest,
        config: Value,
        module: Arc<LoadedModule>,
        entry: Entry<'_>,
        timeout: Duration,
    ) -> Result<Vec<u8>, AddonError> {
        let rt = self.runtime()?;
        if matches!(entry, Entry::Render { .. }) && !module.has_render {
            return Err(AddonError::NotFound(format!("the module of `{instance}` exports no `render`; it cannot render widgets")));
        }
        let host: Arc<dyn Host> = self.me.upgrade().ok_or_else(|| WasmError::Unpublished("the daemon is shutting down".into()))?;
        let ctx = Arc::new(CallCtx {
            instance: instance.to_string(),
            permissions: m.permissions.clone(),
            emits: m.events.emits.clone(),
            dependencies: m.dependencies.keys().cloned().collect(),
            config,
            host,
            rt: tokio::runtime::Handle::current(),
        });
        let memory = m.memory_bytes.unwrap_or(self.cfg.wasm.default_memory_bytes);
        Ok(rt.call(module, ctx, entry, memory, timeout).await?)
    }

    /// Calls the manifest's smoke action on a module before it is swapped in; the reason
    /// when it does not answer `ok`.
    async fn smoke_wasm(
        &self,
        instance: &str,
        m: &Manifest,
        config: &Value,
        module: &Arc<LoadedModule>,
        action: &str,
    ) -> Result<(), String> {
        let timeout = m
            .actions
            .iter()
            .find(|a| a.name == action)
            .and_then(|a| a.timeout_seconds)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| Duration::from_secs_f64(self.cfg.addons.execute_timeout_seconds));
        let input = m
            .actions
            .iter()
            .find(|a| a.name == action)
            .map(|a| schema::normalize(&a.input_schema, json!({}), "data"))
            .unwrap_or(Ok(json!({})))
            .map_err(|e| format!("smoke action `{action}`: its input schema refuses an empty input: {e}"))?;
        let input = input.to_string();
        let entry = Entry::Execute { action, input: input.as_bytes() };
        match self.call_module(instance, m, config.clone(), module.clone(), entry, timeout).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("smoke action `{action}` failed on the new module: {e}")),
        }
    }

    /// Hands an event to the module's `on_event` (a module without it takes none).
    pub(super) async fn deliver_event_wasm(&self, inst: &Installed, body: &Bytes, timeout: Duration) -> Result<(), AddonError> {
        let module = self.module(&inst.row.instance).await?;
        if !module.has_on_event {
            tracing::debug!(instance = %inst.row.instance, "the module has no on_event; event dropped");
            return Ok(());
        }
        let r = self.call_wasm(inst, Entry::OnEvent { event: body }, timeout).await;
        tracing::debug!(instance = %inst.row.instance, ok = r.is_ok(), answer = ?r.as_ref().map(|a| String::from_utf8_lossy(a).into_owned()), "event handed to on_event");
        r.map(|_| ())
    }

    /// Publishes a module to an installed WASM addon instance (optionally moving it to
    /// another registered version of its manifest): validated and compiled first, then
    /// recorded as an `upgrade` deployment and swapped in.
    pub async fn publish(self: &Arc<Self>, instance: &str, version: Option<&str>, bytes: Bytes, who: String) -> Result<Value, AddonError> {
        let inst = self.installed(instance).await?;
        if !inst.manifest.is_wasm() {
            return Err(AddonError::Conflict(format!(
                "`{instance}` runs containers; publish is for addons with runtime = \"wasm\" (upgrade a container addon with `addonctl addons upgrade`)"
            )));
        }
        let manifest = match version {
            Some(v) => self.manifest(&inst.row.addon, Some(v)).await?,
            None => inst.manifest.clone(),
        };
        if !manifest.is_wasm() {
            return Err(invalid(
                "version",
                format!("{} {} is not a WASM addon (its manifest has no runtime = \"wasm\")", manifest.name, manifest.version),
            ));
        }
        if bytes.is_empty() {
            return Err(invalid("body", "send the module's bytes as the body (Content-Type: application/wasm)"));
        }
        let rt = self.runtime()?;
        let loaded = tokio::task::spawn_blocking(move || rt.publish_blocking(&bytes))
            .await
            .map_err(|e| WasmError::Io(format!("compiling the module ended abnormally: {e}")))??;
        let config: Value = serde_json::from_str(&inst.row.config).unwrap_or_else(|_| json!({}));
        let target = WasmTarget { kind: "upgrade", manifest, config, module: ModuleChoice::New(loaded), source: None, who };
        self.deploy_wasm(instance, target).await
    }

    /// Records and commits a WASM deployment, then swaps the module in: from the next call
    /// on, the new code answers.
    pub(super) async fn deploy_wasm(self: &Arc<Self>, instance: &str, t: WasmTarget) -> Result<Value, AddonError> {
        let _running = self.claim(instance)?;
        let inst = self.installed(instance).await?;
        let m = &t.manifest;
        if !inst.manifest.is_wasm() {
            return Err(AddonError::Conflict(format!(
                "`{instance}` runs containers and {} {} is a WASM addon; uninstall and install to change the runtime",
                m.name, m.version
            )));
        }
        if m.name != inst.row.addon {
            return Err(invalid("version", format!("`{instance}` is {}, not {}", inst.row.addon, m.name)));
        }
        let config = schema::normalize(&m.config_schema, t.config.clone(), "config").map_err(|msg| {
            let field = msg.split(':').next().unwrap_or("config").to_string();
            invalid(&field, format!("{msg} (the config no longer validates against {} {}'s schema)", m.name, m.version))
        })?;
        self.check_dependents(instance, m).await?;
        let module: Option<Arc<LoadedModule>> = match t.module {
            ModuleChoice::New(l) => Some(Arc::new(l)),
            ModuleChoice::Current => self.module(instance).await.ok(),
            ModuleChoice::Hash(hash) => {
                let rt = self.runtime()?;
                let loaded = tokio::task::spawn_blocking(move || rt.load_blocking(&hash))
                    .await
                    .map_err(|e| WasmError::Io(format!("loading the module ended abnormally: {e}")))?
                    .map_err(|e| AddonError::Conflict(format!("the module of that deployment cannot be loaded any more: {e}")))?;
                Some(Arc::new(loaded))
            }
        };
        let records: Vec<ImageRecord> = module
            .iter()
            .map(|l| ImageRecord { service: SERVICE.to_string(), image: format!("sha256:{}", l.hash), image_id: None })
            .collect();
        let store = self.lifecycle.store();
        let config_text = config.to_string();
        let from_version = inst.row.version.clone();
        let id = store
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
                plan: None,
            })
            .await?;
        if let (Some(action), Some(module)) = (&m.smoke, &module) {
            if let Err(reason) = self.smoke_wasm(instance, m, &config, module, action).await {
                // Nothing was swapped: the running module keeps serving.
                tracing::warn!(%instance, deployment = id, %reason, "WebAssembly deployment failed its smoke call");
                self.lifecycle.abort_rollout(instance, &[], id, "rolled_back", reason.clone()).await?;
                let failed = json!({"deployment": id, "instance": instance, "addon": m.name, "from": from_version, "to": m.version, "kind": t.kind, "reason": reason});
                self.lifecycle.notice("deployment.failed", failed.clone());
                self.lifecycle.notice("deployment.rolled_back", failed);
                return self.deployment_answer(instance, id).await;
            }
        }
        let commit = RolloutCommit {
            instance: instance.to_string(),
            version: m.version.clone(),
            config: config_text,
            deployment: id,
            services: Vec::new(),
        };
        self.lifecycle.commit_rollout(commit).await?;
        if let Some(module) = &module {
            self.modules.write().unwrap_or_else(|e| e.into_inner()).insert(instance.to_string(), module.clone());
        }
        self.bump_generation(instance);
        let base = json!({"deployment": id, "instance": instance, "addon": m.name, "from": from_version, "to": m.version, "kind": t.kind, "module": module.as_ref().map(|l| format!("sha256:{}", l.hash))});
        self.lifecycle.notice("deployment.succeeded", base);
        tracing::info!(%instance, to = %m.version, deployment = id, module = ?module.as_ref().map(|l| &l.hash), "WebAssembly deployment succeeded");
        self.collect_modules().await;
        self.deployment_answer(instance, id).await
    }

    /// Removes module files no deployment keeps: the modules of the newest
    /// `deploy.keep_deployments` succeeded deployments of each instance stay, and every
    /// module in memory.
    async fn collect_modules(&self) {
        let Some(rt) = self.wasm.clone() else { return };
        let rows = match self.lifecycle.store().deployment_images().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list deployments to clean up WebAssembly modules");
                return;
            }
        };
        let mut keep: HashSet<String> = self.modules.read().unwrap_or_else(|e| e.into_inner()).values().map(|m| m.hash.clone()).collect();
        let mut per_instance: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for (instance, outcome, images) in rows {
            let Some(hash) = recorded_module(&images) else { continue };
            if outcome == "running" {
                keep.insert(hash);
                continue;
            }
            if outcome != "succeeded" {
                continue;
            }
            let n = per_instance.entry(instance).or_default();
            if *n < self.cfg.deploy.keep_deployments {
                keep.insert(hash);
            }
            *n += 1;
        }
        let _ = tokio::task::spawn_blocking(move || rt.files.retain(&keep)).await;
    }
}

impl Host for Addons {
    fn kv_get<'a>(&'a self, instance: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { self.lifecycle.store().kv_get(instance, key).await.map_err(|e| e.to_string()) })
    }

    fn kv_set<'a>(&'a self, instance: &'a str, key: &'a str, value: Vec<u8>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let max = self.cfg.addon_api.kv_max_value_bytes;
            if value.len() > max {
                return Err(format!("values are at most {max} bytes (addon_api.kv_max_value_bytes); store a smaller value"));
            }
            let max_keys = self.cfg.addon_api.kv_max_keys;
            match self.lifecycle.store().kv_put(instance, key, value, max_keys).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("this addon already stores {max_keys} keys (addon_api.kv_max_keys)")),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn emit<'a>(&'a self, instance: &'a str, name: &'a str, data: Value) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let sink = self.event_sink.get().ok_or_else(|| "events are not running yet".to_string())?;
            sink.emit(name, data, instance).await
        })
    }

    fn execute<'a>(
        &'a self,
        _instance: &'a str,
        dependencies: &'a [String],
        target: &'a str,
        action: &'a str,
        input: Value,
    ) -> BoxFuture<'a, Result<Value, HostError>> {
        Box::pin(async move {
            let tm = self.installed_manifest(target).await.map_err(|e| HostError::Failed(e.to_string()))?;
            if !dependencies.iter().any(|d| d == &tm.name) {
                return Err(HostError::Denied(format!(
                    "`{target}` ({}) is not among this addon's dependencies; declare it in the manifest's dependencies",
                    tm.name
                )));
            }
            self.execute(target, action, input).await.map_err(|e| HostError::Failed(e.to_string()))
        })
    }
}
