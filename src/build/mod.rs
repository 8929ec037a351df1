//! Builds: from addon code to a tagged image. A build context (checked and rewritten by
//! [`context`]) is built by the engine's classic builder with no network unless the
//! manifest grants `network.internet`, within `build.memory`, `build.cpus` and
//! `build.timeout_seconds`; one build per addon (or plugin) at a time. Its progress goes
//! out as [`BuildEvent`]s while it runs. An addon build registers its manifest with the
//! built tag as `image`, in the same transaction that records the success; a plugin build
//! (a service created with a `plugin_id` and no image) only tags the image.
//!
//! Crash safety: the engine tags the result `addond/<addon>:build-<id>` first; the success
//! and the catalogue entry are committed; only then does the final tag
//! `addond/<addon>:<version>` move onto the image. A `kill -9` anywhere leaves either a
//! `building` row (marked failed at the next start, its temporary tag removed) or a
//! committed success whose final tag the next start puts on (the row says whether it was).

pub mod context;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::addons::manifest::{Manifest, ManifestRequest, MAX_ADDON_NAME};
use crate::addons::Addons;
use crate::lifecycle::Lifecycle;
use crate::model::{valid_name, FieldError};
use crate::runtime::{BuildParams, RuntimeError};
use crate::store::{BuildRow, BuiltManifest, Recorded, StoreError};
use context::ContextError;

/// What is built: an addon's code, or a plugin directory under the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Addon,
    Plugin,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Addon => "addon",
            Kind::Plugin => "plugin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The context was refused (too large, a hostile entry, no Dockerfile).
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The manifest or a request field is wrong.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// Another build of the same addon or plugin is running.
    #[error("a build of {what} is already running (build {id}); wait for it to finish")]
    Running { what: String, id: String },
    /// The version is registered with a different manifest or image.
    #[error("{0}")]
    Conflict(String),
    /// No plugin directory for a service created without an image.
    #[error("a service needs an image, e.g. addond-sample:latest, or a plugin source directory: {dir}/ does not exist; put the plugin's source (a Dockerfile at its root) there, or send `image`")]
    NoPluginDir { dir: String },
    /// The build ran and failed (for callers that wait for the result).
    #[error("the build failed at step {step}: {message}")]
    Failed { step: u32, message: String, log: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn invalid(field: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid(FieldError { field: field.to_string(), message: message.into(), code: "validation_failed" })
}

/// What a running build reports, in order; the last is `Succeeded` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildEvent {
    /// A Dockerfile step began (1-based, of `of`).
    Step {
        step: u32,
        of: u32,
        text: String,
    },
    /// A line of output.
    Log(String),
    Succeeded {
        build: i64,
        image: String,
        image_id: String,
        version: String,
        duration_ms: u64,
    },
    Failed {
        build: i64,
        step: u32,
        message: String,
        log: Vec<String>,
    },
}

/// An addon build as asked for.
pub struct AddonBuild {
    /// The addon (the route's `{name}`; it replaces the manifest's `name`).
    pub name: String,
    /// `?version=`, which replaces the manifest's.
    pub version: Option<String>,
    /// `?replace=true`: a registered version with a different manifest is replaced.
    pub replace: bool,
    /// The context as sent (tar or tar.gz).
    pub body: Bytes,
    /// The caller's uid, recorded with the build.
    pub uid: Option<u32>,
}

/// A build that passed its checks and is about to run.
struct Job {
    /// The build's row.
    id: i64,
    /// What is built, and its name (addon or plugin id) and version.
    kind: Kind,
    target: String,
    version: String,
    /// The final tag, `addond/<addon>:<version>`.
    image: String,
    /// The checked context, as the tar the engine gets.
    context: Bytes,
    /// The Dockerfile's path in it.
    dockerfile: String,
    /// Whether build steps may reach the network (`network.internet`).
    network: bool,
    /// For addon builds: what to register on success.
    manifest: Option<BuiltManifest>,
    /// When the build was claimed, for `duration_ms`.
    started: Instant,
}

pub struct Builds {
    /// The store, the engine and the config.
    lifecycle: Arc<Lifecycle>,
    /// Told to forget cached manifests when a build replaces a version.
    addons: Arc<Addons>,
    /// Targets with a build running in this daemon, and its id.
    running: Mutex<HashMap<(Kind, String), i64>>,
    /// Rows a previous run left `building`, whose temporary tags go once Docker answers.
    interrupted: Mutex<Vec<BuildRow>>,
}

/// Frees a target's slot when its build ends, however it ends.
struct Slot {
    builds: Arc<Builds>,
    key: (Kind, String),
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.builds.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

/// The tag an image of `target` gets for `version` (`+` is not allowed in a tag).
pub fn image_tag(kind: Kind, target: &str, version: &str) -> String {
    match kind {
        Kind::Addon => format!("addond/{target}:{}", version.replace('+', "_")),
        Kind::Plugin => format!("addond/plugin-{target}:{}", version.replace('+', "_")),
    }
}

fn temp_tag(kind: Kind, target: &str, id: i64) -> String {
    image_tag(kind, target, &format!("build-{id}"))
}

/// `Step 2/5 : COPY x /y` → (2, 5, "COPY x /y").
pub fn parse_step(line: &str) -> Option<(u32, u32, String)> {
    let rest = line.strip_prefix("Step ")?;
    let (nums, text) = rest.split_once(" : ").unwrap_or((rest, ""));
    let (n, of) = nums.split_once('/')?;
    Some((n.trim().parse().ok()?, of.trim().parse().ok()?, text.trim().to_string()))
}

/// A manifest file's text as a JSON value (TOML or JSON by its name).
fn manifest_value(file: &str, text: &str) -> Result<Value, BuildError> {
    let v: Value = if file.ends_with(".toml") {
        let table: toml::Table = toml::from_str(text).map_err(|e| invalid(file, format!("{file} is not valid TOML: {}", e.message())))?;
        serde_json::to_value(table).map_err(|e| invalid(file, format!("{file}: {e}")))?
    } else {
        serde_json::from_str(text).map_err(|e| invalid(file, format!("{file} is not valid JSON: {e}")))?
    };
    if !v.is_object() {
        return Err(invalid(file, format!("{file} must hold a manifest object")));
    }
    Ok(v)
}

/// Names the manifest as the build route says: its `id` when it has one (the
/// addon-server's slug, beside a display `name`), else its `name`.
fn set_slug(v: &mut Value, name: &str) {
    let key = if v.get("id").is_some() { "id" } else { "name" };
    v[key] = Value::String(name.to_string());
}

impl Builds {
    /// Marks the builds a previous run left `building` as failed, before any request is
    /// served, so none of them blocks a new build.
    pub async fn open(lifecycle: Arc<Lifecycle>, addons: Arc<Addons>) -> Result<Arc<Builds>, StoreError> {
        let interrupted = lifecycle.store().fail_interrupted_builds().await?;
        for b in &interrupted {
            tracing::warn!(build = b.id, kind = %b.kind, target = %b.target, "a build was cut short by the daemon stopping; marked failed");
        }
        Ok(Arc::new(Builds { lifecycle, addons, running: Mutex::new(HashMap::new()), interrupted: Mutex::new(interrupted) }))
    }

    /// Once Docker answers: removes the temporary tags of interrupted builds, and puts
    /// the final tag on images whose success was recorded but not yet tagged.
    pub async fn repair(self: Arc<Self>) {
        self.lifecycle.first_resync().await;
        let rt = self.lifecycle.runtime();
        let interrupted = std::mem::take(&mut *self.interrupted.lock().unwrap_or_else(|e| e.into_inner()));
        for b in interrupted {
            let kind = if b.kind == "plugin" { Kind::Plugin } else { Kind::Addon };
            if let Err(e) = rt.untag_image(&temp_tag(kind, &b.target, b.id)).await {
                tracing::warn!(build = b.id, error = %e, "cannot remove an interrupted build's temporary tag");
            }
        }
        let untagged = match self.lifecycle.store().untagged_builds().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read builds whose tag was not set");
                return;
            }
        };
        for b in untagged {
            let Some(image_id) = b.image_id.as_deref() else { continue };
            let kind = if b.kind == "plugin" { Kind::Plugin } else { Kind::Addon };
            let done = async {
                rt.tag_image(image_id, &b.image).await?;
                self.lifecycle.store().mark_build_tagged(b.id).await.map_err(|e| RuntimeError::Api(e.to_string()))?;
                rt.untag_image(&temp_tag(kind, &b.target, b.id)).await
            };
            match done.await {
                Ok(()) => tracing::info!(build = b.id, image = %b.image, "put the tag of a build recorded before a restart"),
                Err(e) => tracing::warn!(build = b.id, image = %b.image, error = %e, "cannot tag a recorded build"),
            }
        }
    }

    /// The newest builds of an addon or plugin, newest first.
    pub async fn list(&self, kind: Kind, target: &str, limit: u32) -> Result<Vec<BuildRow>, BuildError> {
        Ok(self.lifecycle.store().list_builds(kind.as_str(), target, limit).await?)
    }

    /// Checks an addon build (context, manifest, version, slot) and starts it; the events
    /// come on the receiver. Every refusal happens here, before anything runs.
    pub async fn start_addon(self: &Arc<Self>, req: AddonBuild) -> Result<(i64, mpsc::UnboundedReceiver<BuildEvent>), BuildError> {
        let cfg = self.lifecycle.config();
        let name = req.name.clone();
        if !valid_name(&name) || name.len() > MAX_ADDON_NAME {
            return Err(invalid(
                "name",
                format!("`{name}` is not a valid addon name: 1–{MAX_ADDON_NAME} lowercase letters, digits and `-`"),
            ));
        }
        let limit = cfg.build.max_context_bytes;
        let body = req.body.clone();
        let checked =
            tokio::task::spawn_blocking(move || context::check(&body, limit)).await.map_err(|e| StoreError::Join(e.to_string()))??;
        let Some((file, text)) = &checked.manifest else {
            return Err(ContextError::Entry {
                entry: "addon.toml".into(),
                reason: "missing: the context needs its manifest, addon.toml or addon.json, at its root".into(),
            }
            .into());
        };
        let mut v = manifest_value(file, text)?;
        set_slug(&mut v, &name);
        if let Some(ver) = &req.version {
            v["version"] = Value::String(ver.clone());
        }
        let Some(version) = v.get("version").and_then(Value::as_str).map(str::to_string) else {
            return Err(invalid("version", format!("{file} names no version; put `version` in it or send ?version=1.0.0")));
        };
        if semver::Version::parse(&version).is_err() {
            return Err(invalid("version", format!("`{version}` is not a semantic version like 1.2.3")));
        }
        let image = image_tag(Kind::Addon, &name, &version);
        v["image"] = Value::String(image.clone());
        let mreq = ManifestRequest::from_value(&v).map_err(BuildError::Invalid)?;
        let dockerfile = mreq.dockerfile.clone();
        let m: Manifest = mreq.validate(cfg).map_err(BuildError::Invalid)?;
        let dockerfile = self.dockerfile(&checked, dockerfile.as_deref(), file)?;
        let text = serde_json::to_string(&m).map_err(|e| invalid("manifest", e.to_string()))?;
        // Refused now rather than after a build whose result could not be registered.
        let registered = self.lifecycle.store().list_manifests(Some(&name)).await?;
        if let Some(r) = registered.iter().find(|r| r.version == version) {
            if r.manifest != text && !req.replace {
                return Err(BuildError::Conflict(format!(
                    "{name} {version} is already registered with a different manifest; versions are immutable, so bump the version (or send ?replace=true to replace it)"
                )));
            }
        }
        let network = m.permissions.iter().any(|p| p == "network.internet");
        let manifest = BuiltManifest { name: name.clone(), version: version.clone(), text, replace: req.replace };
        let (job, slot) =
            self.claim(Kind::Addon, &name, &version, image, req.replace, req.uid, checked.tar, dockerfile, network, Some(manifest)).await?;
        let id = job.id;
        let (tx, rx) = mpsc::unbounded_channel();
        let me = self.clone();
        tokio::spawn(async move {
            me.run(job, tx).await;
            drop(slot);
        });
        Ok((id, rx))
    }

    /// Builds `<data_dir>/plugins/<plugin_id>/` and answers its tag when the build
    /// succeeded (a service without an image gets it).
    pub async fn build_plugin(self: &Arc<Self>, plugin_id: &str, uid: Option<u32>) -> Result<String, BuildError> {
        let cfg = self.lifecycle.config();
        let dir = cfg.daemon.data_dir.join("plugins").join(plugin_id);
        if !crate::model::valid_plugin_id(plugin_id) || !dir.is_dir() {
            return Err(BuildError::NoPluginDir { dir: dir.display().to_string() });
        }
        let limit = cfg.build.max_context_bytes;
        let checked = tokio::task::spawn_blocking(move || context::pack_dir(&dir, limit).and_then(|tar| context::check(&tar, limit)))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))??;
        // A manifest beside the code may name the Dockerfile and grant the network; the
        // plugin is not registered as an addon.
        let (dockerfile, network) = match &checked.manifest {
            Some((file, text)) => {
                let v = manifest_value(file, text)?;
                let net = v.get("permissions").and_then(Value::as_array).is_some_and(|p| p.iter().any(|x| x == "network.internet"));
                (v.get("dockerfile").and_then(Value::as_str).map(str::to_string), net)
            }
            None => (None, false),
        };
        let dockerfile = self.dockerfile(&checked, dockerfile.as_deref(), "addon.toml")?;
        let image = image_tag(Kind::Plugin, plugin_id, "latest");
        let (job, slot) =
            self.claim(Kind::Plugin, plugin_id, "latest", image.clone(), false, uid, checked.tar, dockerfile, network, None).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let me = self.clone();
        let run = tokio::spawn(async move {
            me.run(job, tx).await;
            drop(slot);
        });
        let mut outcome = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                BuildEvent::Step { step, of, text } => tracing::info!(plugin = %plugin_id, "build step {step}/{of}: {text}"),
                BuildEvent::Log(l) => tracing::debug!(plugin = %plugin_id, "build: {l}"),
                BuildEvent::Succeeded { .. } => outcome = Some(Ok(image.clone())),
                BuildEvent::Failed { step, message, log, .. } => outcome = Some(Err(BuildError::Failed { step, message, log })),
            }
        }
        let _ = run.await;
        outcome.unwrap_or_else(|| Err(BuildError::Failed { step: 0, message: "the build ended without a result".into(), log: vec![] }))
    }

    /// The Dockerfile's normalised path: the one the manifest names, else `Dockerfile`,
    /// which must be a file of the context.
    fn dockerfile(&self, checked: &context::Checked, named: Option<&str>, manifest_file: &str) -> Result<String, BuildError> {
        let raw = named.unwrap_or("Dockerfile");
        let path = match context::normalize(raw) {
            Ok(Some(p)) => p,
            Ok(None) => return Err(invalid("dockerfile", format!("`dockerfile` in {manifest_file} names no file"))),
            Err(why) => return Err(invalid("dockerfile", format!("`dockerfile` = `{raw}` in {manifest_file}: {why}"))),
        };
        if !checked.files.contains_key(&path) {
            let how = if named.is_some() {
                format!("named by `dockerfile` in {manifest_file}, it is not a file of the context")
            } else {
                format!("missing: put a Dockerfile at the context's root, or name one with `dockerfile` in {manifest_file}")
            };
            return Err(ContextError::Entry { entry: path, reason: how }.into());
        }
        Ok(path)
    }

    /// Takes the target's slot (here and in the store) and records the build as started.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        self: &Arc<Self>,
        kind: Kind,
        target: &str,
        version: &str,
        image: String,
        replace: bool,
        uid: Option<u32>,
        context: Vec<u8>,
        dockerfile: String,
        network: bool,
        manifest: Option<BuiltManifest>,
    ) -> Result<(Job, Slot), BuildError> {
        // Nothing would come of a build now: say so instead of starting one that fails.
        let rt = self.lifecycle.runtime();
        if !rt.is_available() {
            return Err(rt.unavailable_error().into());
        }
        let key = (kind, target.to_string());
        let what = match kind {
            Kind::Addon => format!("addon `{target}`"),
            Kind::Plugin => format!("plugin `{target}`"),
        };
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = running.get(&key) {
                return Err(BuildError::Running { what, id: id.to_string() });
            }
            running.insert(key.clone(), 0);
        }
        let slot = Slot { builds: self.clone(), key: key.clone() };
        let id = match self.lifecycle.store().start_build(kind.as_str(), target, version, &image, replace, uid).await? {
            Some(id) => id,
            None => return Err(BuildError::Running { what, id: "recorded in the database".into() }),
        };
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(key, id);
        let job = Job {
            id,
            kind,
            target: target.to_string(),
            version: version.to_string(),
            image,
            context: Bytes::from(context),
            dockerfile,
            network,
            manifest,
            started: Instant::now(),
        };
        Ok((job, slot))
    }

    /// Runs a claimed build to its end, reporting on `tx` (a gone receiver does not stop
    /// it: the outcome is recorded either way).
    async fn run(self: Arc<Self>, job: Job, tx: mpsc::UnboundedSender<BuildEvent>) {
        let cfg = self.lifecycle.config();
        let rt = self.lifecycle.runtime();
        let store = self.lifecycle.store();
        let keep = cfg.build.log_lines;
        let temp = temp_tag(job.kind, &job.target, job.id);
        tracing::info!(build = job.id, kind = job.kind.as_str(), target = %job.target, version = %job.version, "build started");
        let mut step = 0u32;
        let mut steps = 0u32;
        let mut step_log: std::collections::VecDeque<String> = Default::default();
        let params =
            BuildParams { context: job.context.clone(), dockerfile: job.dockerfile.clone(), tag: temp.clone(), network: job.network };
        let timeout = Duration::from_secs_f64(cfg.build.timeout_seconds);
        let built = tokio::time::timeout(
            timeout,
            rt.build_image(params, |line| {
                let line = crate::sanitize::sanitize(line.trim_end());
                if line.trim().is_empty() {
                    return;
                }
                if let Some((n, of, text)) = parse_step(&line) {
                    (step, steps) = (n, of);
                    step_log.clear();
                    step_log.push_back(line.clone());
                    let _ = tx.send(BuildEvent::Step { step: n, of, text });
                    return;
                }
                // The `Step` line stays first; the oldest output after it goes.
                if step_log.len() >= keep {
                    if step_log.len() > 1 {
                        step_log.remove(1);
                    } else {
                        step_log.pop_front();
                    }
                }
                step_log.push_back(line.clone());
                let _ = tx.send(BuildEvent::Log(line));
            }),
        )
        .await;
        let failure = match built {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(crate::sanitize::sanitize(message.trim())),
            Err(_) => Some(format!("the build ran longer than build.timeout_seconds ({}s) and was stopped", cfg.build.timeout_seconds)),
        };
        let log: Vec<String> = step_log.into_iter().collect();
        let outcome = match failure {
            Some(message) => Err(message),
            None => self.record_success(&job, steps, &temp).await,
        };
        match outcome {
            Ok(image_id) => {
                let duration_ms = job.started.elapsed().as_millis() as u64;
                tracing::info!(build = job.id, image = %job.image, %image_id, duration_ms, "build succeeded");
                if job.kind == Kind::Addon {
                    self.lifecycle.notice(
                        "addon.built",
                        serde_json::json!({"addon": job.target, "version": job.version, "image": job.image, "image_id": image_id, "build": job.id}),
                    );
                }
                let _ = tx.send(BuildEvent::Succeeded {
                    build: job.id,
                    image: job.image.clone(),
                    image_id,
                    version: job.version.clone(),
                    duration_ms,
                });
            }
            Err(message) => {
                // A partial result must not stay behind under our temporary tag.
                if let Err(e) = rt.untag_image(&temp).await {
                    tracing::warn!(build = job.id, error = %e, "cannot remove a failed build's temporary tag");
                }
                let log_text = serde_json::to_string(&log).unwrap_or_else(|_| "[]".into());
                if let Err(e) = store.fail_build(job.id, step as i64, steps as i64, message.clone(), log_text).await {
                    tracing::warn!(build = job.id, error = %e, "cannot record a failed build");
                }
                tracing::info!(build = job.id, step, error = %message, "build failed");
                if job.kind == Kind::Addon {
                    self.lifecycle.notice(
                        "addon.build_failed",
                        serde_json::json!({"addon": job.target, "version": job.version, "build": job.id, "step": step, "error": message}),
                    );
                }
                let _ = tx.send(BuildEvent::Failed { build: job.id, step, message, log });
            }
        }
    }

    /// After the engine built the image under its temporary tag: records the success (and
    /// registers the manifest) in one transaction, then moves the final tag onto it.
    async fn record_success(&self, job: &Job, steps: u32, temp: &str) -> Result<String, String> {
        let rt = self.lifecycle.runtime();
        let store = self.lifecycle.store();
        let image_id = match rt.image_id(temp).await {
            Ok(Some(id)) => id,
            Ok(None) => return Err(format!("the engine reported success but there is no image {temp}")),
            Err(e) => return Err(e.to_string()),
        };
        let manifest = job.manifest.as_ref().map(|m| BuiltManifest {
            name: m.name.clone(),
            version: m.version.clone(),
            text: m.text.clone(),
            replace: m.replace,
        });
        let replaced = job.manifest.as_ref().is_some_and(|m| m.replace);
        match store.succeed_build(job.id, steps as i64, &image_id, manifest).await {
            Ok(Recorded::Done) => {}
            Ok(Recorded::VersionTaken) => {
                return Err(format!(
                    "{} {} was registered with a different manifest while this build ran; bump the version (or send ?replace=true)",
                    job.target, job.version
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        crate::failpoint::debug_failpoint("build_recorded");
        // Recorded: from here on a restart finishes the tagging if this does not.
        match rt.tag_image(&image_id, &job.image).await {
            Ok(()) => {
                if let Err(e) = store.mark_build_tagged(job.id).await {
                    tracing::warn!(build = job.id, error = %e, "cannot record that a build was tagged; the next start tags it again");
                }
                if let Err(e) = rt.untag_image(temp).await {
                    tracing::warn!(build = job.id, error = %e, "cannot remove a build's temporary tag");
                }
            }
            Err(e) => tracing::warn!(build = job.id, error = %e, "cannot tag a built image; the next start tags it"),
        }
        if replaced {
            if let Ok(installs) = store.list_installs().await {
                for i in installs.iter().filter(|i| i.addon == job.target && i.version == job.version) {
                    self.addons.forget(&i.instance);
                }
            }
        }
        Ok(image_id)
    }

    /// The refusal for a target whose build is running in this daemon, if one is: lets
    /// a request be refused before its context is read.
    pub fn running(&self, kind: Kind, target: &str) -> Result<(), BuildError> {
        match self.running.lock().unwrap_or_else(|e| e.into_inner()).get(&(kind, target.to_string())) {
            Some(id) => Err(BuildError::Running { what: format!("{} `{target}`", kind.as_str()), id: id.to_string() }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_tags() {
        assert_eq!(parse_step("Step 2/5 : COPY x /y"), Some((2, 5, "COPY x /y".into())));
        assert_eq!(parse_step("Step 1/1 : FROM scratch"), Some((1, 1, "FROM scratch".into())));
        assert_eq!(parse_step(" ---> Running in abc"), None);
        assert_eq!(parse_step("Step x/5 : RUN"), None);
        assert_eq!(image_tag(Kind::Addon, "shop", "1.2.3+git.abc"), "addond/shop:1.2.3_git.abc");
        assert_eq!(image_tag(Kind::Plugin, "p1", "latest"), "addond/plugin-p1:latest");
        assert_eq!(temp_tag(Kind::Addon, "shop", 7), "addond/shop:build-7");
    }

    #[test]
    fn manifests_are_read_as_toml_or_json() {
        let v = manifest_value("addon.toml", "name = \"a\"\nversion = \"1.0.0\"\npermissions = [\"storage\"]\n").unwrap();
        assert_eq!(v["permissions"][0], "storage");
        assert!(manifest_value("addon.json", "[1]").is_err());
        let e = manifest_value("addon.toml", "name = ").unwrap_err().to_string();
        assert!(e.contains("addon.toml is not valid TOML"), "{e}");
        // The route's name replaces the slug: `id` when there is one, keeping the display `name`.
        let mut v = manifest_value("addon.toml", "id = \"a\"\nname = \"가게\"\nversion = \"1.0.0\"\n").unwrap();
        set_slug(&mut v, "shop");
        let m = ManifestRequest::from_value(&v).unwrap().validate(&crate::config::Config::default()).unwrap();
        assert_eq!((m.name.as_str(), m.display_name.as_deref()), ("shop", Some("가게")));
        let mut v = manifest_value("addon.toml", "name = \"a\"\nversion = \"1.0.0\"\n").unwrap();
        set_slug(&mut v, "shop");
        assert_eq!((v["name"].as_str(), v.get("id")), (Some("shop"), None));
    }
}
