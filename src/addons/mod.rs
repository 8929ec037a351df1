//! Addons: the catalogue of registered manifests, installed addon instances and their
//! services, live config, action execution and widget rendering (behind a cache). The
//! services themselves are run by the lifecycle like any other; this module decides which
//! services an addon has, and talks to them through the dispatcher.

pub mod cron;
pub mod deploy;
pub mod dispatch;
pub mod environments;
mod frame;
pub mod manifest;
pub mod schema;
pub mod wasm;
mod widgets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::metrics::Metrics;
pub use crate::model::addon_phase;
use crate::model::{valid_name, FieldError, Phase, ServiceId, ServiceType};
use crate::store::{InstallRow, StoreError};
use dispatch::{DispatchError, Dispatcher};
pub use frame::frame_document;

/// An action's input as it arrived: the JSON text of an HTTP body's `data` (`None`: left
/// out), or a value made in the daemon.
pub enum ActionInput<'a> {
    Raw(Option<&'a serde_json::value::RawValue>),
    Value(Value),
}
use manifest::{Manifest, ManifestRequest};

#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    #[error("{0}")]
    NotFound(String),
    #[error("{}", .0.message)]
    Invalid(FieldError),
    #[error("{0}")]
    Conflict(String),
    /// Another deployment of the same addon instance is under way.
    #[error("{0}")]
    DeploymentRunning(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The addon answered, with an error of its own.
    #[error("{message}")]
    Addon { status: u16, message: String },
    /// A WebAssembly addon's module or call failed.
    #[error(transparent)]
    Wasm(#[from] crate::wasm::WasmError),
}

impl From<FieldError> for AddonError {
    fn from(e: FieldError) -> Self {
        AddonError::Invalid(e)
    }
}

/// Checks an instance name a user chose: the environment separator is the daemon's.
fn check_base_name(instance: &str) -> Result<(), AddonError> {
    if !valid_name(instance) || instance.len() > manifest::MAX_ADDON_NAME {
        return Err(invalid("instance", format!("`{instance}`: 1–{} lowercase letters, digits and `-`", manifest::MAX_ADDON_NAME)));
    }
    if instance.contains(crate::model::ENVIRONMENT_SEPARATOR) {
        return Err(invalid(
            "instance",
            format!("`{instance}` contains `--`, which names an environment (`pay--dev`); choose a name without it and install environments with \"environments\""),
        ));
    }
    Ok(())
}

fn invalid(field: &str, message: impl Into<String>) -> AddonError {
    AddonError::Invalid(FieldError { field: field.to_string(), message: message.into(), code: "validation_failed" })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The instance name (default: the addon's name): the slug URLs and containers use.
    pub instance: Option<String>,
    /// Human text for the installed addon (`"모바일 앱"`: 1–100 characters, no control
    /// characters), unique among installed addons; lookups accept it URL-encoded.
    #[serde(alias = "display_name", alias = "displayName")]
    pub name: Option<String>,
    /// The version to install (default: the newest registered).
    pub version: Option<String>,
    /// Its configuration, checked against the manifest's schema.
    pub config: Option<Value>,
    /// Install these environments of it (each its own instance, same version and config);
    /// an empty list: `environments.pipeline`. Absent: the one environment `prod`.
    pub environments: Option<Vec<String>>,
}

/// A rendered widget: the addon's `{html, css, javascript}`, its ETag, and the success
/// envelope around it already serialised (a cache hit is answered with those bytes as
/// they are).
pub struct Rendered {
    /// The render, shared with the cache.
    pub widget: Arc<RenderedWidget>,
    /// Whether it came from the cache (told to the client in a header).
    pub cached: bool,
}

pub struct RenderedWidget {
    /// The addon's `{html, css, javascript}`.
    pub widget: Value,
    /// Its ETag, so an unchanged widget is answered `304`.
    pub etag: String,
    /// The success envelope already serialised: a cache hit is these bytes.
    pub envelope: Bytes,
}

/// What the hot paths need about an installed instance.
pub struct Installed {
    /// The install as stored.
    pub row: InstallRow,
    /// The installed version's manifest, parsed once.
    pub manifest: Manifest,
    /// Its services and their types, to find the one that takes calls.
    pub services: Vec<(ServiceId, ServiceType)>,
}

impl Installed {
    /// The service that takes an addon's calls: its first `rest_api` service, else its first.
    fn entry(&self) -> Result<&ServiceId, AddonError> {
        self.services
            .iter()
            .find(|(_, t)| *t == ServiceType::RestApi)
            .or(self.services.first())
            .map(|(id, _)| id)
            .ok_or_else(|| AddonError::NotFound(format!("addon `{}` has no services", self.row.instance)))
    }
}

pub struct Addons {
    /// The daemon's config (limits, timeouts).
    cfg: Arc<Config>,
    /// Installed instances by name, read on every call without touching the database.
    installed: std::sync::RwLock<HashMap<String, Arc<Installed>>>,
    /// Runs the addons' services.
    lifecycle: Arc<Lifecycle>,
    /// Sends calls to the addon containers (bounded, with timeouts).
    pub dispatcher: Arc<Dispatcher>,
    /// Counts calls and renders for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Rendered widgets by instance, generation and widget, so a dashboard refresh does not call the addon.
    cache: moka::sync::Cache<String, Arc<RenderedWidget>>,
    /// Bumped on config change, upgrade and uninstall: part of every cache key, so old
    /// renders of that addon instance are unreachable at once.
    generations: Mutex<HashMap<String, u64>>,
    /// Serialises installs and uninstalls, so dependency checks see a settled catalogue.
    install_lock: tokio::sync::Mutex<()>,
    /// Addon instances with a deployment under way: one at a time each.
    deploying: Mutex<std::collections::HashSet<String>>,
    /// The WebAssembly runtime (none if this host cannot run it: WASM calls are then 503).
    wasm: Option<Arc<crate::wasm::Wasm>>,
    /// The module each WASM addon instance runs; a publish replaces the entry, and calls
    /// under way keep the `Arc` of the module they started with.
    modules: std::sync::RwLock<HashMap<String, Arc<crate::wasm::LoadedModule>>>,
    /// One module load from disk at a time (the first call after a start loads it).
    module_load: tokio::sync::Mutex<()>,
    /// Where WASM guests' events go (the events bus, set by the daemon once it exists).
    event_sink: std::sync::OnceLock<Arc<dyn wasm::EventSink>>,
    /// Lets `&self` hand the guests' host functions an owning handle.
    me: std::sync::Weak<Addons>,
}

fn canonical_hash(parts: &[&Value]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // serde_json's map is ordered by key, so this text is canonical.
        h.update(p.to_string().as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

impl Addons {
    pub fn new(cfg: Arc<Config>, lifecycle: Arc<Lifecycle>, metrics: Arc<Metrics>) -> Arc<Self> {
        let cache = moka::sync::Cache::builder()
            .max_capacity(cfg.widgets.cache_max_entries)
            .time_to_live(Duration::from_secs_f64(cfg.widgets.cache_ttl_seconds))
            .build();
        let wasm = match crate::wasm::Wasm::new(&cfg) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "WebAssembly addons cannot run on this host");
                None
            }
        };
        Arc::new_cyclic(|me| Addons {
            wasm,
            modules: std::sync::RwLock::new(HashMap::new()),
            module_load: tokio::sync::Mutex::new(()),
            event_sink: std::sync::OnceLock::new(),
            me: me.clone(),
            dispatcher: Dispatcher::new(cfg.clone(), lifecycle.clone(), metrics.clone()),
            cfg,
            lifecycle,
            metrics,
            cache,
            generations: Mutex::new(HashMap::new()),
            installed: std::sync::RwLock::new(HashMap::new()),
            install_lock: tokio::sync::Mutex::new(()),
            deploying: Mutex::new(std::collections::HashSet::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn bump_generation(&self, instance: &str) {
        self.forget(instance);
        *self.generations.lock().unwrap_or_else(|e| e.into_inner()).entry(instance.to_string()).or_default() += 1;
    }

    fn generation(&self, instance: &str) -> u64 {
        self.generations.lock().unwrap_or_else(|e| e.into_inner()).get(instance).copied().unwrap_or(0)
    }

    // ---- catalogue ----------------------------------------------------------------------

    /// Adds a manifest version. Registering the same version again with the same content is
    /// a no-op; with different content it is a conflict (versions are immutable).
    pub async fn register(&self, req: ManifestRequest) -> Result<(Manifest, bool), AddonError> {
        let m = req.validate(&self.cfg)?;
        let text = serde_json::to_string(&m).map_err(|e| invalid("", e.to_string()))?;
        let store = self.lifecycle.store();
        if store.insert_manifest(&m.name, &m.version, text.clone()).await? {
            return Ok((m, true));
        }
        let existing = store.list_manifests(Some(&m.name)).await?.into_iter().find(|r| r.version == m.version);
        match existing {
            Some(r) if r.manifest == text => Ok((m, false)),
            _ => Err(AddonError::Conflict(format!(
                "{} {} is already registered with a different manifest; versions are immutable, so bump the version",
                m.name, m.version
            ))),
        }
    }

    async fn manifests(&self, name: Option<&str>) -> Result<Vec<Manifest>, AddonError> {
        let rows = self.lifecycle.store().list_manifests(name).await?;
        let mut out = Vec::new();
        for r in rows {
            let m: Manifest =
                serde_json::from_str(&r.manifest).map_err(|e| StoreError::Corrupt(format!("manifest {} {}: {e}", r.name, r.version)))?;
            out.push(m);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.semver().cmp(&b.semver())));
        Ok(out)
    }

    /// A version of an addon: the one asked for, or the newest.
    async fn manifest(&self, name: &str, version: Option<&str>) -> Result<Manifest, AddonError> {
        let all = self.manifests(Some(name)).await?;
        let found = match version {
            Some(v) => all.into_iter().find(|m| m.version == v),
            None => all.into_iter().last(),
        };
        found.ok_or_else(|| {
            AddonError::NotFound(match version {
                Some(v) => format!("addon `{name}` has no registered version {v}; list versions with `addonctl addons show {name}`"),
                None => format!("no addon `{name}` is registered; register its manifest with `addonctl addons register FILE`"),
            })
        })
    }

    async fn install_row(&self, instance: &str) -> Result<InstallRow, AddonError> {
        self.lifecycle.store().get_install(instance).await?.ok_or_else(|| {
            AddonError::NotFound(format!("no addon is installed as `{instance}`; install it with `addonctl addons install NAME`"))
        })
    }

    /// An installed instance with its manifest and services, from memory after the first
    /// call: the hot paths (execute, render, passthrough) must not read SQLite per request.
    async fn installed(&self, instance: &str) -> Result<Arc<Installed>, AddonError> {
        if let Some(i) = self.installed.read().unwrap_or_else(|e| e.into_inner()).get(instance) {
            return Ok(i.clone());
        }
        let row = self.install_row(instance).await?;
        let manifest = self.manifest(&row.addon, Some(&row.version)).await?;
        // A service on its way out (deleted through the services API) is no target any more.
        let services = self
            .lifecycle
            .store()
            .services_of_addon(instance)
            .await?
            .into_iter()
            .filter(|s| s.desired != crate::model::Desired::Deleted)
            .map(|s| (s.id, s.spec.service_type))
            .collect();
        let i = Arc::new(Installed { row, manifest, services });
        self.installed.write().unwrap_or_else(|e| e.into_inner()).insert(instance.to_string(), i.clone());
        Ok(i)
    }

    /// Forgets what is cached about an instance: on install, uninstall and config change, and
    /// when one of its services is deleted through the services API.
    pub fn forget(&self, instance: &str) {
        self.installed.write().unwrap_or_else(|e| e.into_inner()).remove(instance);
    }

    /// The services of an installed instance with their types (for the gateway).
    pub async fn services_of(&self, instance: &str) -> Result<Vec<(ServiceId, ServiceType)>, AddonError> {
        Ok(self.installed(instance).await?.services.clone())
    }

    /// The catalogue: the newest version of each addon, its other versions and where it is
    /// installed.
    pub async fn catalogue(&self, category: Option<&str>) -> Result<Vec<Value>, AddonError> {
        let all = self.manifests(None).await?;
        let installs = self.lifecycle.store().list_installs().await?;
        let mut by_name: Vec<(String, Vec<Manifest>)> = Vec::new();
        for m in all {
            match by_name.last_mut() {
                Some((n, v)) if *n == m.name => v.push(m),
                _ => by_name.push((m.name.clone(), vec![m])),
            }
        }
        Ok(by_name
            .into_iter()
            .filter_map(|(name, versions)| {
                let latest = versions.last()?.clone();
                if category.is_some_and(|c| c != latest.category) {
                    return None;
                }
                let installed: Vec<Value> =
                    installs.iter().filter(|i| i.addon == name).map(|i| json!({"instance": i.instance, "version": i.version})).collect();
                Some(json!({
                    "name": name,
                    "version": latest.version,
                    "versions": versions.iter().map(|m| m.version.clone()).collect::<Vec<_>>(),
                    "description": latest.description,
                    "author": latest.author,
                    "category": latest.category,
                    "image": latest.image,
                    "runtime": latest.runtime_name(),
                    "actions": latest.actions.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                    "widgets": latest.widgets.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
                    "permissions": latest.permissions,
                    "dependencies": latest.dependencies,
                    "installed": installed,
                }))
            })
            .collect())
    }

    /// The instance name an API path means: an installed instance's own name, else the
    /// instance whose display name it is (the `prod` environment's when its environments
    /// share it), else the name as given (a catalogue name, or one that is not found).
    pub async fn resolve(&self, name: &str) -> Result<String, AddonError> {
        // The hot paths (execute, render) find their instance in memory, without SQLite.
        if self.installed.read().unwrap_or_else(|e| e.into_inner()).contains_key(name) {
            return Ok(name.to_string());
        }
        let store = self.lifecycle.store();
        if store.get_install(name).await?.is_some() {
            return Ok(name.to_string());
        }
        let named: Vec<InstallRow> = store.list_installs().await?.into_iter().filter(|r| r.display_name.as_deref() == Some(name)).collect();
        let found = named.iter().find(|r| r.environment == crate::model::DEFAULT_ENVIRONMENT).or(named.first());
        Ok(found.map_or_else(|| name.to_string(), |r| r.instance.clone()))
    }

    /// An installed instance with its services and its version's manifest, or (if none is
    /// installed under that name) the catalogue entry.
    pub async fn show(&self, name: &str) -> Result<Value, AddonError> {
        if self.lifecycle.store().get_install(name).await?.is_some() {
            let mut v = self.instance_view(name).await?;
            v["manifest"] = self.installed(name).await?.manifest.view();
            return Ok(v);
        }
        let entry = self.catalogue(None).await?.into_iter().find(|e| e["name"] == name);
        let mut entry = entry.ok_or_else(|| AddonError::NotFound(format!("no addon `{name}` is registered or installed")))?;
        let m = self.manifest(name, None).await?;
        entry["manifest"] = m.view();
        Ok(entry)
    }

    pub async fn instance_view(&self, instance: &str) -> Result<Value, AddonError> {
        let inst = self.installed(instance).await?;
        let (row, m) = (&inst.row, &inst.manifest);
        let services = self.lifecycle.store().services_of_addon(instance).await?;
        let config: Value = serde_json::from_str(&row.config).unwrap_or(Value::Null);
        let last_deployment = self.last_deployment(instance).await;
        let module = if m.is_wasm() { self.module_view(instance).await } else { Value::Null };
        let phase = if m.is_wasm() {
            if module.is_null() {
                "Stopped"
            } else {
                "Started"
            }
        } else {
            addon_phase(&services).as_str()
        };
        Ok(json!({
            "runtime": m.runtime_name(),
            "module": module,
            "deploying": self.is_deploying(instance),
            "last_deployment": last_deployment,
            "instance": row.instance,
            "display_name": row.display_name.as_deref().unwrap_or(&row.instance),
            "base": row.base,
            "environment": row.environment,
            "name": row.addon,
            "version": row.version,
            "category": m.category,
            "phase": phase,
            "config": config,
            "actions": m.actions.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
            "widgets": m.widgets.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
            "permissions": m.permissions,
            "dependencies": m.dependencies,
            "services": services.iter().map(|s| json!({
                "id": s.id,
                "name": s.spec.name,
                "service_type": s.spec.service_type,
                "phase": s.phase.as_str(),
                "replicas": s.replicas,
                "last_error": s.last_error,
                "instances": s.instances.iter().filter(|i| i.wanted).map(|i| json!({
                    "id": i.id,
                    "ordinal": i.ordinal,
                    "version": i.spec.as_ref().map_or(&s.spec.version, |spec| &spec.version),
                    "new": i.is_candidate(),
                    "host_port": i.host_port,
                    "health": i.health.as_str(),
                    "restarts": i.restarts,
                    "breaker": if self.dispatcher.breaker_open(&i.id) { "open" } else { "closed" },
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "installed_at": row.created_at,
        }))
    }

    pub async fn installs(&self) -> Result<Vec<Value>, AddonError> {
        let mut out = Vec::new();
        for row in self.lifecycle.store().list_installs().await? {
            out.push(self.instance_view(&row.instance).await?);
        }
        Ok(out)
    }

    // ---- install / uninstall ------------------------------------------------------------

    /// Installs a registered version; `who` is recorded in its first deployment.
    pub async fn install(&self, name: &str, req: InstallRequest, req_who: String) -> Result<Value, AddonError> {
        let base = req.instance.clone().unwrap_or_else(|| name.to_string());
        check_base_name(&base)?;
        self.install_environment(name, req, &base, crate::model::DEFAULT_ENVIRONMENT, req_who).await
    }

    /// Installs environment `env` of the addon installed as `base` (the instance
    /// [`crate::model::environment_instance`] names).
    async fn install_environment(
        &self,
        name: &str,
        req: InstallRequest,
        base: &str,
        env: &str,
        req_who: String,
    ) -> Result<Value, AddonError> {
        let _guard = self.install_lock.lock().await;
        let m = self.manifest(name, req.version.as_deref()).await?;
        let instance = crate::model::environment_instance(base, env);
        let store = self.lifecycle.store();
        if store.get_install(&instance).await?.is_some() {
            return Err(AddonError::Conflict(format!(
                "an addon is already installed as `{instance}`; give this one another name with \"instance\""
            )));
        }
        if let Some(d) = &req.name {
            crate::model::check_display_name(d).map_err(|m| invalid("name", m))?;
            // Unique, so a lookup by it finds one installation (its environments share it).
            if let Some(other) = store.list_installs().await?.into_iter().find(|r| r.display_name.as_ref() == Some(d) && r.base != base) {
                return Err(AddonError::Conflict(format!(
                    "the name `{d}` is already used by the installed addon `{}`; choose another \"name\"",
                    other.instance
                )));
            }
        }
        let config = schema::normalize(&m.config_schema, req.config.unwrap_or_else(|| json!({})), "config").map_err(|msg| {
            let field = msg.split(':').next().unwrap_or("config").to_string();
            invalid(&field, msg)
        })?;
        // Dependencies: installed, in a matching version.
        let installs = store.list_installs().await?;
        let mut missing = Vec::new();
        for (dep, req) in &m.dependencies {
            let want = semver::VersionReq::parse(req).map_err(|e| invalid(&format!("dependencies.{dep}"), e.to_string()))?;
            let ok = installs.iter().any(|i| &i.addon == dep && semver::Version::parse(&i.version).is_ok_and(|v| want.matches(&v)));
            if !ok {
                let have: Vec<String> = installs.iter().filter(|i| &i.addon == dep).map(|i| i.version.clone()).collect();
                missing.push(if have.is_empty() {
                    format!("{dep} {req} (not installed)")
                } else {
                    format!("{dep} {req} (installed: {})", have.join(", "))
                });
            }
        }
        if !missing.is_empty() {
            return Err(AddonError::Conflict(format!("missing dependencies: {}; install them first", missing.join("; "))));
        }
        let specs = self.service_specs(&m, &instance)?;
        // The install row and every service in one transaction: a crash leaves the addon
        // installed whole or not at all.
        let row = InstallRow {
            instance: instance.clone(),
            addon: m.name.clone(),
            version: m.version.clone(),
            config: config.to_string(),
            created_at: 0,
            updated_at: 0,
            base: base.to_string(),
            environment: env.to_string(),
            display_name: req.name.clone(),
        };
        let images: Vec<deploy::ImageRecord> =
            specs.iter().map(|(s, _)| deploy::ImageRecord { service: s.name.clone(), image: s.image.clone(), image_id: None }).collect();
        let mut images_with_ids = Vec::with_capacity(images.len());
        for mut r in images {
            r.image_id = self.lifecycle.runtime().image_id(&r.image).await.ok().flatten();
            images_with_ids.push(r);
        }
        let deployment = crate::store::NewDeployment {
            instance: instance.clone(),
            addon: m.name.clone(),
            kind: "install",
            from_version: None,
            to_version: m.version.clone(),
            images: serde_json::to_string(&images_with_ids).unwrap_or_else(|_| "[]".into()),
            config: config.to_string(),
            config_hash: deploy::config_hash(&config),
            who: req_who.clone(),
            outcome: "succeeded",
            source: None,
            plan: None,
        };
        self.lifecycle.create_group(Some((row, deployment)), &instance, specs).await?;
        self.drop_module(&instance);
        crate::failpoint::debug_failpoint("install");
        self.bump_generation(&instance);
        tracing::info!(addon = %m.name, version = %m.version, %instance, "installed");
        self.lifecycle.notice("addon.installed", json!({"addon": m.name, "version": m.version, "instance": instance, "environment": env}));
        self.instance_view(&instance).await
    }

    /// The services an addon instance runs, validated like a create request.
    fn service_specs(&self, m: &Manifest, instance: &str) -> Result<Vec<(crate::model::ServiceSpec, u32)>, AddonError> {
        Ok(m.service_requests(instance, &self.cfg)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.validate(&self.lifecycle.live_config()).map_err(|e| FieldError { field: format!("services[{i}].{}", e.field), ..e })
            })
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Repairs, once per database, what an older addond could leave when it was killed in
    /// the middle of an install or an uninstall (it wrote the install row and each service
    /// in transactions of their own): an installed addon with services missing gets them
    /// created from its installed version, and services of an addon that is no longer
    /// installed are deleted. This addond records both in one transaction, so a database
    /// it wrote needs no repair; the check runs after the first resync (Docker answers).
    pub async fn repair_installs_once(self: Arc<Self>) {
        const MARK: &str = "addon_installs_checked";
        self.lifecycle.first_resync().await;
        let store = self.lifecycle.store();
        match store.meta(MARK).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whether installed addons were checked");
                return;
            }
        }
        match self.repair_installs().await {
            Ok(()) => {
                if let Err(e) = store.set_meta(MARK, "1").await {
                    tracing::warn!(error = %e, "cannot record that installed addons were checked; they are checked again at the next start");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot repair installed addons; trying again at the next start"),
        }
    }

    async fn repair_installs(&self) -> Result<(), AddonError> {
        let _guard = self.install_lock.lock().await;
        let store = self.lifecycle.store();
        for id in store.orphaned_addon_services().await? {
            tracing::warn!(service = %id, "deleting a service of an addon that is no longer installed (an uninstall was cut short)");
            match self.lifecycle.delete(id.as_str()).await {
                Ok(_) | Err(LifecycleError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for row in store.list_installs().await? {
            let m = match self.manifest(&row.addon, Some(&row.version)).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(instance = %row.instance, error = %e, "cannot check an installed addon");
                    continue;
                }
            };
            let have: std::collections::HashSet<String> =
                store.services_of_addon(&row.instance).await?.into_iter().map(|s| s.spec.name).collect();
            let missing: Vec<_> =
                self.service_specs(&m, &row.instance)?.into_iter().filter(|(spec, _)| !have.contains(&spec.name)).collect();
            if missing.is_empty() {
                continue;
            }
            let names: Vec<String> = missing.iter().map(|(s, _)| s.name.clone()).collect();
            tracing::warn!(instance = %row.instance, services = %names.join(", "), "addon was installed with services missing (an install was cut short); creating them");
            self.lifecycle.create_group(None, &row.instance, missing).await?;
            self.bump_generation(&row.instance);
        }
        Ok(())
    }

    /// Uninstalls an instance: its services are deleted. Refused while another installed
    /// addon depends on this addon (and no other instance of it would remain), unless forced.
    pub async fn uninstall(&self, instance: &str, force: bool) -> Result<Value, AddonError> {
        let _guard = self.install_lock.lock().await;
        if self.is_deploying(instance) {
            return Err(AddonError::DeploymentRunning(format!(
                "a deployment of `{instance}` is under way; uninstall it once that finished (addonctl addons history {instance})"
            )));
        }
        let row = self.installed(instance).await?.row.clone();
        let store = self.lifecycle.store();
        if !force {
            let installs = store.list_installs().await?;
            let others_of_same = installs.iter().any(|i| i.addon == row.addon && i.instance != row.instance);
            if !others_of_same {
                let mut dependents = Vec::new();
                for i in installs.iter().filter(|i| i.instance != row.instance) {
                    if let Ok(dm) = self.manifest(&i.addon, Some(&i.version)).await {
                        if dm.dependencies.contains_key(&row.addon) {
                            dependents.push(i.instance.clone());
                        }
                    }
                }
                if !dependents.is_empty() {
                    return Err(AddonError::Conflict(format!(
                        "{} depends on `{}`; uninstall {} first or force it (?force=true)",
                        dependents.join(", "),
                        row.addon,
                        if dependents.len() == 1 { "it" } else { "them" }
                    )));
                }
            }
        }
        let services = store.services_of_addon(instance).await?;
        // The install row goes and every service is marked for deletion in one
        // transaction: a crash leaves the addon installed whole or gone.
        if self.lifecycle.uninstall(instance).await?.is_none() {
            return Err(AddonError::NotFound(format!("no addon is installed as `{instance}`")));
        }
        crate::failpoint::debug_failpoint("uninstall");
        self.drop_module(instance);
        self.bump_generation(instance);
        tracing::info!(%instance, "uninstalled");
        self.lifecycle.notice("addon.uninstalled", json!({"addon": row.addon, "version": row.version, "instance": instance}));
        Ok(
            json!({"instance": instance, "name": row.addon, "version": row.version, "phase": "Deleting", "services": services.iter().map(|s| s.spec.name.clone()).collect::<Vec<_>>()}),
        )
    }

    /// Removes an addon from the catalogue (every version); refused while installed.
    pub async fn unregister(&self, name: &str) -> Result<usize, AddonError> {
        let _guard = self.install_lock.lock().await;
        let installs = self.lifecycle.store().list_installs().await?;
        let inst: Vec<String> = installs.iter().filter(|i| i.addon == name).map(|i| i.instance.clone()).collect();
        if !inst.is_empty() {
            return Err(AddonError::Conflict(format!("`{name}` is installed as {}; uninstall first", inst.join(", "))));
        }
        let n = self.lifecycle.store().delete_manifests(name).await?;
        if n == 0 {
            return Err(AddonError::NotFound(format!("no addon `{name}` is registered")));
        }
        Ok(n)
    }

    /// Start, stop or restart every service of an installed addon.
    pub async fn lifecycle_op(&self, instance: &str, op: &str) -> Result<Value, AddonError> {
        self.install_row(instance).await?;
        for s in self.lifecycle.store().services_of_addon(instance).await? {
            match op {
                "start" => self.lifecycle.start(s.id.as_str()).await?,
                "stop" => self.lifecycle.stop(s.id.as_str()).await?,
                _ => self.lifecycle.restart(s.id.as_str()).await?,
            };
        }
        self.instance_view(instance).await
    }

    /// Waits until every service of an installed addon is in `want`.
    pub async fn wait(&self, instance: &str, want: Phase, timeout: Duration) -> Result<Value, AddonError> {
        for s in self.lifecycle.store().services_of_addon(instance).await? {
            self.lifecycle.wait(&s.id, want, timeout).await?;
        }
        if want == Phase::Deleted {
            return Ok(json!({"instance": instance, "phase": "Deleted"}));
        }
        self.instance_view(instance).await
    }

    // ---- live config ----------------------------------------------------------------------

    /// Validates and stores a new config, pushes it to every running instance, and replaces
    /// (one at a time, in the background) the instances that cannot apply it live.
    pub async fn set_config(self: &Arc<Self>, instance: &str, config: Value, who: String) -> Result<Value, AddonError> {
        let inst = self.installed(instance).await?;
        let m = &inst.manifest;
        let config = schema::normalize(&m.config_schema, config, "config").map_err(|msg| {
            let field = msg.split(':').next().unwrap_or("config").to_string();
            invalid(&field, msg)
        })?;
        if self.is_deploying(instance) {
            return Err(AddonError::DeploymentRunning(format!(
                "a deployment of `{instance}` is under way; change the config once it finished, or pass it with the upgrade"
            )));
        }
        let last = self.lifecycle.store().deployments_of(instance).await?.into_iter().rev().find(|d| d.outcome == "succeeded");
        let deployment = crate::store::NewDeployment {
            instance: instance.to_string(),
            addon: m.name.clone(),
            kind: "config",
            from_version: Some(inst.row.version.clone()),
            to_version: inst.row.version.clone(),
            images: last.map(|d| d.images).unwrap_or_else(|| "[]".into()),
            config: config.to_string(),
            config_hash: deploy::config_hash(&config),
            who,
            outcome: "succeeded",
            source: None,
            plan: None,
        };
        self.lifecycle.store().set_install_config(instance, config.to_string(), deployment).await?;
        self.bump_generation(instance);
        let body = Bytes::from(config.to_string());
        let timeout = Duration::from_secs_f64(self.cfg.addons.config_push_timeout_seconds);
        let services = self.lifecycle.store().services_of_addon(instance).await?;
        let mut pushes = Vec::new();
        for s in &services {
            for (iid, addr) in self.lifecycle.endpoints(&s.id) {
                let d = self.dispatcher.clone();
                let body = body.clone();
                let sid = s.id.clone();
                pushes.push(async move { (sid, iid, d.post_to(addr, "/config", body, timeout).await) });
            }
        }
        let results = futures_util::future::join_all(pushes).await;
        let mut applied = 0;
        let mut replace = Vec::new();
        let mut failed = Vec::new();
        for (sid, iid, r) in results {
            match r {
                Ok(st) if (200..300).contains(&st) => applied += 1,
                Ok(404) => replace.push((sid, iid)),
                Ok(st) => failed.push(json!({"instance": iid, "error": format!("answered HTTP {st}")})),
                Err(e) => failed.push(json!({"instance": iid, "error": e.to_string()})),
            }
        }
        let replacing = replace.len();
        self.lifecycle.notice("addon.config_changed", json!({"instance": instance, "applied": applied, "replacing": replacing}));
        if !replace.is_empty() {
            let me = self.clone();
            tokio::spawn(async move {
                for (sid, iid) in replace {
                    if let Err(e) = me.lifecycle.recreate_instance(&sid, &iid, Duration::from_secs(120)).await {
                        tracing::warn!(instance = %iid, error = %e, "could not replace instance with the new config");
                    }
                }
            });
        }
        Ok(json!({"instance": instance, "config": config, "applied": applied, "replacing": replacing, "failed": failed}))
    }

    // ---- events --------------------------------------------------------------------------

    /// Installed instances whose manifests subscribe to events, with their patterns.
    pub async fn subscriptions(&self) -> Result<HashMap<String, Vec<String>>, AddonError> {
        let mut out = HashMap::new();
        for row in self.lifecycle.store().list_installs().await? {
            let Ok(m) = self.manifest(&row.addon, Some(&row.version)).await else { continue };
            if !m.events.subscribes.is_empty() {
                out.insert(row.instance, m.events.subscribes);
            }
        }
        Ok(out)
    }

    /// `POST /events` on one healthy instance of a subscriber; Ok only on 2xx.
    pub async fn deliver_event(&self, instance: &str, body: Bytes, timeout: Duration) -> Result<(), String> {
        let inst = self.installed(instance).await.map_err(|e| e.to_string())?;
        if inst.manifest.is_wasm() {
            return self.deliver_event_wasm(&inst, &body, timeout).await.map_err(|e| e.to_string());
        }
        let svc = inst.entry().map_err(|e| e.to_string())?;
        match self.dispatcher.post(svc, instance, "/events", body, timeout).await {
            Ok(r) if (200..300).contains(&r.status) => Ok(()),
            Ok(r) => Err(format!("`{instance}` answered HTTP {}", r.status)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether every service of an installed addon instance is Started.
    pub async fn is_started(&self, instance: &str) -> bool {
        if let Ok(inst) = self.installed(instance).await {
            if inst.manifest.is_wasm() {
                return self.module(instance).await.is_ok();
            }
        }
        match self.lifecycle.store().services_of_addon(instance).await {
            Ok(services) => addon_phase(&services) == Phase::Started,
            Err(_) => false,
        }
    }

    /// The manifest of an installed instance (for the addon API's permission checks).
    pub async fn installed_manifest(&self, instance: &str) -> Result<Manifest, AddonError> {
        Ok(self.installed(instance).await?.manifest.clone())
    }

    // ---- execute ------------------------------------------------------------------------

    /// Runs an action and returns the addon's answer as a value.
    pub async fn execute(&self, instance: &str, action: &str, data: Value) -> Result<Value, AddonError> {
        let reply = self.execute_json(instance, action, ActionInput::Value(data)).await?;
        serde_json::from_slice(&reply)
            .map_err(|_| AddonError::Addon { status: 502, message: format!("addon `{instance}` answered `{action}` with invalid JSON") })
    }

    /// Runs an action and returns the addon's answer as JSON text, checked to be JSON but
    /// not taken apart: the HTTP routes put it into their reply as it is.
    pub async fn execute_json(&self, instance: &str, action: &str, input: ActionInput<'_>) -> Result<Bytes, AddonError> {
        let inst = self.installed(instance).await?;
        let (row, m) = (&inst.row, &inst.manifest);
        let Some(a) = m.action(action) else {
            let known: Vec<&str> = m.actions.iter().map(|a| a.name.as_str()).collect();
            return Err(AddonError::NotFound(format!(
                "addon `{instance}` has no action `{action}`; known actions: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let body = match input {
            // Without a schema there are no defaults to apply and nothing to check: the
            // caller's JSON goes to the addon as it came.
            ActionInput::Raw(raw) if schema::is_empty(&a.input_schema) => match raw.map(|r| r.get()) {
                None | Some("null") => Bytes::from_static(b"{}"),
                Some(text) => Bytes::copy_from_slice(text.as_bytes()),
            },
            input => {
                let data = match input {
                    ActionInput::Value(v) => v,
                    ActionInput::Raw(None) => Value::Null,
                    ActionInput::Raw(Some(raw)) => serde_json::from_str(raw.get()).map_err(|e| invalid("data", format!("data: {e}")))?,
                };
                let data = if data.is_null() { json!({}) } else { data };
                let data = schema::normalize(&a.input_schema, data, "data").map_err(|msg| {
                    let field = msg.split(':').next().unwrap_or("data").to_string();
                    invalid(&field, msg)
                })?;
                Bytes::from(data.to_string())
            }
        };
        let timeout = Duration::from_secs_f64(a.timeout_seconds.unwrap_or(self.cfg.addons.execute_timeout_seconds));
        let t0 = Instant::now();
        if m.is_wasm() {
            let r = self.call_wasm(&inst, crate::wasm::Entry::Execute { action, input: &body }, timeout).await;
            let status = match &r {
                Ok(_) => "success",
                Err(AddonError::Wasm(crate::wasm::WasmError::Timeout(_))) => "timeout",
                Err(_) => "error",
            };
            self.metrics.execution(&row.addon, action, status, t0.elapsed().as_secs_f64());
            return r.map(Bytes::from);
        }
        let svc = inst.entry()?;
        let result = self.dispatcher.post(svc, instance, &format!("/execute/{action}"), body, timeout).await;
        let secs = t0.elapsed().as_secs_f64();
        let (status, out) = match result {
            Ok(reply) if (200..300).contains(&reply.status) => match serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body) {
                Ok(_) => ("success", Ok(reply.body)),
                Err(_) => (
                    "error",
                    Err(AddonError::Addon { status: 502, message: format!("addon `{instance}` answered `{action}` with invalid JSON") }),
                ),
            },
            Ok(reply) => {
                let msg = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| {
                        v.get("error")
                            .map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string()))
                            .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_string))
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).chars().take(500).collect());
                (
                    "error",
                    Err(AddonError::Addon {
                        status: reply.status,
                        message: format!("addon `{instance}` failed `{action}` (HTTP {}): {msg}", reply.status),
                    }),
                )
            }
            Err(e @ DispatchError::Timeout(_)) => ("timeout", Err(e.into())),
            Err(e) => ("unavailable", Err(e.into())),
        };
        self.metrics.execution(&crate::metrics::addon_key(&row.addon, &row.environment), action, status, secs);
        out
    }
}

#[cfg(test)]
mod tests;
