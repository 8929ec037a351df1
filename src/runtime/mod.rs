//! The Docker side, through bollard: containers (create with the sandbox of docs/product.md,
//! start, stop, remove, inspect, logs, stats), the per-owner networks and named volumes
//! (`crate::isolation` decides which), images, volume directories (checked again before
//! every start, `crate::voldirs`), and the engine's event stream. It also owns "how is
//! Docker": reachable, unresponsive (it accepts connections but does not answer a `/_ping`
//! within `docker.ping_timeout_seconds`) or unreachable. Every call that fails at the
//! connection level, and every probe, updates that state, so the rest of the daemon can
//! answer 503 `docker_unavailable` and refrain from charging restarts while the engine is
//! away. Calls go through addond's own transport (one connection per request, as bollard's
//! Unix client does) so that, while the engine is unresponsive, a call fails at once
//! instead of waiting `docker.timeout_seconds` with a service's lease held.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerStatsResponse, EndpointSettings, EventMessage, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, Mount,
    MountType, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ImportImageOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::{BollardRequest, ClientVersion, Docker};
use futures_util::{Stream, StreamExt};
use tokio::sync::{watch, RwLock};

use crate::config::{parse_size, Config};
use crate::isolation::{self, NetworkPlan, Subnet, LABEL_OWNER};
use crate::model::{Instance, ServiceSpec, VolumeKind};

mod build;
mod images;
mod networks;

pub use build::BuildParams;
pub use images::BUILT_PREFIX;

pub const LABEL_MANAGED: &str = "addond.managed";
pub const LABEL_DAEMON: &str = "addond.daemon";
pub const LABEL_SERVICE: &str = "addond.service";
pub const LABEL_SERVICE_NAME: &str = "addond.service_name";
pub const LABEL_INSTANCE: &str = "addond.instance";
pub const LABEL_ORDINAL: &str = "addond.ordinal";
pub const LABEL_PLUGIN: &str = "addond.plugin";

/// Oldest engine API we speak; newer engines accept it, so no negotiation round trip.
const API_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the Docker engine is not reachable at {0}; start it (e.g. `systemctl start docker`) — addond retries by itself")]
    Unavailable(String),
    /// The engine accepts connections but did not answer in time.
    #[error("the Docker engine at {host} accepts connections but is not answering (nothing within {secs}s); check it with `systemctl status docker` and `journalctl -u docker` — addond keeps probing and carries on when it answers")]
    Unresponsive { host: String, secs: f64 },
    #[error("image `{image}` is not present locally and could not be pulled: {reason}. Build or load it (`docker build -t {image} …` / `docker load`), or check the registry")]
    ImageNotFound { image: String, reason: String },
    #[error("volume: {0}")]
    InvalidVolume(String),
    /// No subnet of `docker.subnet_pool` is free for a new network.
    #[error("{0}")]
    NoSubnet(String),
    #[error("docker: {0}")]
    Api(String),
}

/// What the daemon needs to know about one of its containers.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    /// Address on its (first) network; how the daemon reaches a container whose network
    /// publishes no host ports (Docker ignores port bindings on internal networks).
    pub ip: Option<std::net::IpAddr>,
    /// The networks it is attached to (one, unless made by an older addond).
    pub networks: Vec<String>,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A labelled container found by listing, for adoption and stray removal.
#[derive(Debug, Clone)]
pub struct OwnedContainer {
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub instance_id: String,
    pub running: bool,
}

/// One aggregated resource sample of a container.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsSample {
    pub cpu_percent: f64,
    pub memory_usage_mb: f64,
    pub memory_limit_mb: f64,
    pub memory_percent: f64,
    pub network_rx_mb: f64,
    pub network_tx_mb: f64,
}

/// One step of an image pull, as the engine reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullProgress {
    pub layer: Option<String>,
    pub status: String,
    pub current: Option<i64>,
    pub total: Option<i64>,
}

/// Everything a container needs beyond the service spec: who it belongs to.
pub struct InstanceContext<'a> {
    pub daemon_id: &'a str,
    pub service_id: &'a str,
    pub instance: &'a Instance,
    pub config_json: &'a str,
    /// The addon API's address on this container's network, and its token for it.
    pub api_url: Option<String>,
    pub token: Option<String>,
    /// The network it joins (made by [`Runtime::ensure_network`] first).
    pub network: &'a NetInfo,
    /// The addon instance the service belongs to: its services also answer to their short
    /// names (`worker` besides `shop-worker`) on the addon's network.
    pub addon_instance: Option<&'a str>,
}

/// One of this daemon's networks as Docker has it.
#[derive(Debug, Clone)]
pub struct NetInfo {
    /// `addond_<daemon id>_<owner>[_internal]` (see `crate::isolation::network_plan`).
    pub name: String,
    /// Docker's id: containers name their network by it, as Docker before 25 may let a
    /// second network take the same name (a create sent just before a `kill -9` can land
    /// after the next daemon made the network again).
    pub id: String,
    /// Its IPv4 subnet, from `docker.subnet_pool`.
    pub subnet: Subnet,
    /// The bridge's address on it: where containers reach the host (the addon API).
    pub gateway: std::net::Ipv4Addr,
}

/// A network carrying this daemon's label, found by listing.
#[derive(Debug, Clone)]
pub struct OwnedNetwork {
    /// The network's name (two networks may share one; see [`NetInfo::id`]).
    pub name: String,
    /// Its [`LABEL_OWNER`].
    pub owner: String,
    /// Subnet and gateway, when it has an IPv4 one.
    pub info: Option<NetInfo>,
}

/// What the daemon last saw of the Docker engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerState {
    /// It answered.
    Reachable,
    /// It accepts connections but did not answer a probe in time: calls fail at once
    /// until a probe is answered again.
    Unresponsive,
    /// Its socket is missing or refuses connections.
    Unreachable,
}

impl DockerState {
    pub fn as_str(self) -> &'static str {
        match self {
            DockerState::Reachable => "reachable",
            DockerState::Unresponsive => "unresponsive",
            DockerState::Unreachable => "unreachable",
        }
    }
}

pub struct Runtime {
    cfg: Arc<Config>,
    /// Made on first use, through [`send_to_engine`].
    docker: RwLock<Option<Docker>>,
    /// The engine's state; its receivers wake on every change (the reconciler's watcher,
    /// and calls in flight, which give up when the engine turns unresponsive).
    state: watch::Sender<DockerState>,
    /// The networks made or found since start, by name.
    networks: std::sync::Mutex<HashMap<String, NetInfo>>,
    /// One lock per network name, held while that network is made, and while deciding to
    /// remove it and removing it: a network being made is never removed as unwanted.
    net_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Subnets seen on Docker's networks (refreshed at most every few seconds: Docker itself
    /// refuses an overlapping subnet, so a stale list costs a retry, not a clash) and those
    /// being handed out right now, so two networks made at once never get the same one.
    subnets: std::sync::Mutex<SubnetBook>,
}

/// See [`Runtime::subnets`].
#[derive(Default)]
struct SubnetBook {
    /// Subnets of Docker's networks at the last look, plus those made since.
    seen: Vec<Subnet>,
    /// When Docker's list was last read.
    seen_at: Option<std::time::Instant>,
    /// Subnets picked for networks being made right now.
    reserved: Vec<Subnet>,
    /// Subnets Docker refused as overlapping though no network lists them (Docker 20.10's
    /// address allocator can keep a removed network's pool), and when: skipped for a while,
    /// so a retry goes on to the next ones instead of trying the same again.
    refused: Vec<(Subnet, std::time::Instant)>,
}

impl Runtime {
    pub fn new(cfg: Arc<Config>) -> Self {
        Runtime {
            cfg,
            docker: RwLock::new(None),
            state: watch::channel(DockerState::Unreachable).0,
            networks: Default::default(),
            net_locks: Default::default(),
            subnets: Default::default(),
        }
    }

    pub fn is_available(&self) -> bool {
        self.state() == DockerState::Reachable
    }

    pub fn state(&self) -> DockerState {
        *self.state.borrow()
    }

    /// Returns at the next change of the engine's state.
    pub async fn availability_changed(&self) {
        let _ = self.state.subscribe().changed().await;
    }

    /// Returns once the engine is not reachable (at once if it is not now).
    pub async fn until_unavailable(&self) {
        let _ = self.state.subscribe().wait_for(|s| *s != DockerState::Reachable).await;
    }

    fn set_state(&self, new: DockerState) {
        // Waiters wake on a change only, not on every call that confirms the state.
        let changed = self.state.send_if_modified(|s| std::mem::replace(s, new) != new);
        if changed {
            match new {
                DockerState::Reachable => tracing::info!("Docker engine reachable"),
                DockerState::Unresponsive => tracing::warn!(
                    waited_s = self.cfg.docker.ping_timeout_seconds,
                    "Docker engine not answering (it accepts connections, but no answer in time)"
                ),
                DockerState::Unreachable => tracing::warn!("Docker engine unreachable"),
            }
        }
    }

    fn unresponsive(&self, secs: f64) -> RuntimeError {
        RuntimeError::Unresponsive { host: self.cfg.docker.host.clone(), secs }
    }

    /// The error for "no Docker now", as the state says.
    pub fn unavailable_error(&self) -> RuntimeError {
        match self.state() {
            DockerState::Unresponsive => self.unresponsive(self.cfg.docker.ping_timeout_seconds),
            _ => RuntimeError::Unavailable(self.cfg.docker.host.clone()),
        }
    }

    /// A bollard client on addond's transport; `guarded`: refused at once, or abandoned,
    /// while the engine is unresponsive (every call but the probe).
    fn engine(&self, guarded: bool) -> Result<Docker, RuntimeError> {
        let socket = PathBuf::from(self.cfg.docker.host.trim_start_matches("unix://"));
        let guard = guarded.then(|| self.state.subscribe());
        let transport = move |req: BollardRequest| send_to_engine(socket.clone(), guard.clone(), req);
        Docker::connect_with_custom_transport(transport, Some("http://docker"), self.cfg.docker.timeout_seconds, &API_VERSION)
            .map_err(|e| RuntimeError::Api(format!("cannot make a Docker client: {e}")))
    }

    async fn client(&self) -> Result<Docker, RuntimeError> {
        if let Some(d) = self.docker.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut slot = self.docker.write().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = self.engine(true)?;
        *slot = Some(d.clone());
        Ok(d)
    }

    /// A call a request handler waits on, bounded by `docker.call_timeout_seconds`: the
    /// engine can hang before a probe notices, and a handler must not wait the full
    /// `docker.timeout_seconds` for it.
    pub async fn within<T>(&self, call: impl std::future::Future<Output = Result<T, RuntimeError>>) -> Result<T, RuntimeError> {
        let secs = self.cfg.docker.call_timeout_seconds;
        tokio::time::timeout(Duration::from_secs_f64(secs), call).await.unwrap_or_else(|_| Err(self.unresponsive(secs)))
    }

    /// Maps a bollard error, noting connection-level failures as "Docker unreachable" and
    /// requests without an answer as "Docker unresponsive".
    fn map_err(&self, e: bollard::errors::Error) -> RuntimeError {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError { status_code, message } => {
                self.set_state(DockerState::Reachable);
                RuntimeError::Api(format!("{message} (HTTP {status_code})"))
            }
            E::RequestTimeoutError => {
                self.set_state(DockerState::Unresponsive);
                self.unresponsive(self.cfg.docker.ping_timeout_seconds)
            }
            E::IOError { .. } | E::HyperResponseError { .. } | E::HyperLegacyError { .. } | E::SocketNotFoundError(_) => {
                self.set_state(DockerState::Unreachable);
                RuntimeError::Unavailable(self.cfg.docker.host.clone())
            }
            other => RuntimeError::Api(other.to_string()),
        }
    }

    fn status_of(e: &bollard::errors::Error) -> Option<u16> {
        match e {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
            _ => None,
        }
    }

    /// Pings the engine; true when it answered.
    pub async fn ping(&self) -> bool {
        self.probe().await == DockerState::Reachable
    }

    /// Asks the engine's `/_ping` within `docker.ping_timeout_seconds` and records what it
    /// saw: an answer (even an error status) is reachable, a connection that gets no answer
    /// in time is unresponsive, no connection at all is unreachable.
    pub async fn probe(&self) -> DockerState {
        let deadline = Duration::from_secs_f64(self.cfg.docker.ping_timeout_seconds);
        let state = match self.engine(false) {
            Err(_) => DockerState::Unreachable,
            Ok(d) => match tokio::time::timeout(deadline, d.ping()).await {
                Ok(Ok(_)) | Ok(Err(bollard::errors::Error::DockerResponseServerError { .. })) => DockerState::Reachable,
                Ok(Err(bollard::errors::Error::RequestTimeoutError)) | Err(_) => DockerState::Unresponsive,
                Ok(Err(_)) => DockerState::Unreachable,
            },
        };
        self.set_state(state);
        state
    }

    /// Whether the engine has an image (bounded by the per-call deadline: request
    /// handlers ask it).
    pub async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let d = self.client().await?;
        self.within(async {
            match d.inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(e) if Self::status_of(&e) == Some(404) => Ok(false),
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }

    /// Pulls an image from its registry, handing each progress step to `progress`.
    pub async fn pull_image(&self, image: &str, mut progress: impl FnMut(PullProgress) + Send) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        tracing::info!(%image, "pulling image");
        let (repo, tag) = split_image(image);
        let opts = CreateImageOptions { from_image: Some(repo), tag: Some(tag), ..Default::default() };
        let pull = async {
            let mut stream = d.create_image(Some(opts), None, None);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(err) = info.error_detail.and_then(|e| e.message) {
                            return Err(err);
                        }
                        let detail = info.progress_detail.unwrap_or_default();
                        progress(PullProgress {
                            layer: info.id,
                            status: info.status.unwrap_or_default(),
                            current: detail.current,
                            total: detail.total,
                        });
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(self.cfg.docker.pull_timeout_seconds), pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(RuntimeError::ImageNotFound { image: image.to_string(), reason }),
            Err(_) => Err(RuntimeError::ImageNotFound { image: image.to_string(), reason: "pull timed out".into() }),
        }
    }

    /// Makes sure an image is present, pulling it when a registry is reachable.
    pub async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        if self.image_present(image).await? {
            return Ok(());
        }
        self.pull_image(image, |p| tracing::debug!(status = %p.status, layer = ?p.layer, "pull")).await
    }

    /// Loads a `docker save` archive (plain or gzip-compressed tar) into the engine, as
    /// `docker load -i` does, streamed from the file. Bounded by `docker.pull_timeout_seconds`.
    /// The error is a reason for a person (the caller says what it was loading for).
    pub async fn load_image_archive(&self, path: &Path) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
        let d = self.client().await.map_err(|e| e.to_string())?;
        tracing::info!(archive = %path.display(), "loading image archive");
        // The file in 64 KiB pieces; after a read error the stream ends with that error.
        let body = futures_util::stream::unfold(Some(file), |f| async move {
            let mut f = f?;
            let mut buf = vec![0u8; 64 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        let load = async {
            let mut stream = d.import_image_stream(ImportImageOptions { quiet: true, ..Default::default() }, body, None);
            while let Some(item) = stream.next().await {
                item.map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(self.cfg.docker.pull_timeout_seconds), load).await {
            Ok(r) => r,
            Err(_) => Err(format!("not loaded within {} s (docker.pull_timeout_seconds)", self.cfg.docker.pull_timeout_seconds)),
        }
    }

    /// Makes sure `templates.image` is present for a template that names no image: when
    /// Docker lacks it, `templates.image_archive` (the archive the packages ship) is loaded,
    /// then a pull is tried. When none of that gives the image, the error says how to get it.
    pub async fn ensure_template_image(&self) -> Result<(), RuntimeError> {
        let image = &self.cfg.templates.image;
        let archive = self.cfg.templates.image_archive.trim();
        if self.image_present(image).await? {
            return Ok(());
        }
        let loaded = if archive.is_empty() {
            "templates.image_archive is empty, so no archive was loaded".to_string()
        } else {
            match self.load_image_archive(Path::new(archive)).await {
                Ok(()) if self.image_present(image).await? => {
                    tracing::info!(%image, %archive, "template image loaded from its archive");
                    return Ok(());
                }
                Ok(()) => format!("`{archive}` (templates.image_archive) was loaded but holds no `{image}`"),
                Err(why) => format!("`{archive}` (templates.image_archive) could not be loaded: {why}"),
            }
        };
        match self.pull_image(image, |p| tracing::debug!(status = %p.status, layer = ?p.layer, "pull")).await {
            Err(RuntimeError::ImageNotFound { reason, .. }) => Err(RuntimeError::ImageNotFound {
                image: image.clone(),
                reason: format!(
                    "{reason}; {loaded}. To get it: `docker load -i {}` (the archive the addond package installs), or \
                     scripts/build-sample-image.sh in the source tree; or set templates.image to an image Docker has; or \
                     name one with \"image\" in the request (`addonctl templates create … --image IMAGE`)",
                    if archive.is_empty() { "/usr/share/addond/addond-sample.tar.gz" } else { archive }
                ),
            }),
            r => r,
        }
    }

    /// Host directory backing a `Dir` volume, created on demand and checked not to
    /// escape `<data_dir>/volumes/<service>/` through a symlink.
    pub fn prepare_volume_dir(&self, service_name: &str, rel: &str) -> Result<PathBuf, RuntimeError> {
        prepare_volume_dir(&self.cfg.daemon.data_dir, service_name, rel, &self.cfg.sandbox.user)
    }

    /// What must hold before a container of `spec` is created or started: no directory
    /// volume inside another (refused for new services; a service stored before that rule
    /// is refused here), and every one a real directory all the way from the data dir.
    /// Returns the host path of each directory volume, in order (`None` for named ones).
    pub fn check_volumes(&self, spec: &ServiceSpec) -> Result<Vec<Option<PathBuf>>, RuntimeError> {
        if let Some((outer, inner)) = crate::model::nested_dir_volumes(&spec.volumes) {
            return Err(RuntimeError::InvalidVolume(format!(
                "{}; refusing to start `{}`: recreate it with the new volumes",
                crate::model::nested_volumes_message(&spec.volumes, outer, inner),
                spec.name
            )));
        }
        spec.volumes
            .iter()
            .enumerate()
            .map(|(i, v)| match v.kind {
                VolumeKind::Named => Ok(None),
                VolumeKind::Dir => self.prepare_volume_dir(&spec.name, &v.source).map(Some).map_err(|e| {
                    let RuntimeError::InvalidVolume(m) = e else { return e };
                    RuntimeError::InvalidVolume(format!(
                        "volumes[{i}] (`./{}` → {}): {m}; refusing to start `{}` rather than let Docker follow it. Put a real directory there and start the service again",
                        v.source, v.target, spec.name
                    ))
                }),
            })
            .collect()
    }

    /// Creates the container of one instance with the full sandbox. A container of that
    /// name left from before a crash is replaced: its environment (token, config) is stale.
    pub async fn create_container(&self, spec: &ServiceSpec, ctx: &InstanceContext<'_>) -> Result<String, RuntimeError> {
        let d = self.client().await?;
        let name = ctx.instance.container_name();
        let body = self.container_body(spec, ctx)?;
        for v in spec.volumes.iter().filter(|v| v.kind == VolumeKind::Named) {
            if let Some(docker_name) = &v.docker_name {
                let (_, owner) = isolation::volume_name(ctx.daemon_id, spec, ctx.addon_instance, v);
                self.ensure_volume(docker_name, ctx.daemon_id, &owner).await?;
            }
        }
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        match d.create_container(Some(opts.clone()), body.clone()).await {
            Ok(r) => Ok(r.id),
            Err(e) if Self::status_of(&e) == Some(409) => {
                self.remove(&name).await?;
                d.create_container(Some(opts), body).await.map(|r| r.id).map_err(|e| self.map_err(e))
            }
            // The network went behind our back: forgotten, so the next pass makes it again.
            Err(e) if Self::status_of(&e) == Some(404) && e.to_string().contains("network") => {
                self.networks.lock().unwrap_or_else(|e| e.into_inner()).remove(&ctx.network.name);
                Err(self.map_err(e))
            }
            Err(e) if Self::status_of(&e) == Some(404) => {
                Err(RuntimeError::ImageNotFound { image: spec.image.clone(), reason: "not present locally".into() })
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    fn container_body(&self, spec: &ServiceSpec, ctx: &InstanceContext<'_>) -> Result<ContainerCreateBody, RuntimeError> {
        let inst = ctx.instance;
        let cport = format!("{}/tcp", spec.port);
        let mut env: Vec<String> = spec.environment.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("PORT={}", spec.port));
        env.push(format!("ADDOND_ADDON={}", spec.plugin_id.as_deref().unwrap_or("")));
        env.push(format!("ADDOND_SERVICE={}", spec.name));
        // The version it runs, so an addon (and a test watching an upgrade) can tell.
        env.push(format!("ADDOND_VERSION={}", spec.version.as_deref().unwrap_or("")));
        env.push(format!("ADDOND_INSTANCE={}", inst.id));
        env.push(format!("ADDOND_CONFIG={}", ctx.config_json));
        if let Some(api) = &ctx.api_url {
            env.push(format!("ADDOND_API={api}"));
        }
        if let Some(token) = &ctx.token {
            env.push(format!("ADDOND_TOKEN={token}"));
        }
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_DAEMON.to_string(), ctx.daemon_id.to_string()),
            (LABEL_SERVICE.to_string(), ctx.service_id.to_string()),
            (LABEL_SERVICE_NAME.to_string(), spec.name.clone()),
            (LABEL_INSTANCE.to_string(), inst.id.to_string()),
            (LABEL_ORDINAL.to_string(), inst.ordinal.to_string()),
            (LABEL_PLUGIN.to_string(), spec.plugin_id.clone().unwrap_or_default()),
        ]);
        let mut mounts = Vec::new();
        for (v, dir) in spec.volumes.iter().zip(self.check_volumes(spec)?) {
            let (typ, source) = match dir {
                // Services stored before volumes were scoped keep their global volume.
                None => (MountType::VOLUME, v.docker_name.clone().unwrap_or_else(|| format!("addond_{}", v.source))),
                Some(dir) => (MountType::BIND, dir.display().to_string()),
            };
            mounts.push(Mount {
                target: Some(v.target.clone()),
                source: Some(source),
                typ: Some(typ),
                read_only: Some(v.read_only),
                ..Default::default()
            });
        }
        let sb = &self.cfg.sandbox;
        let tmpfs_bytes = parse_size(&sb.tmpfs_size).unwrap_or(64 << 20);
        let network = ctx.network.id.clone();
        let mut aliases = vec![spec.name.clone()];
        if let Some(short) = ctx.addon_instance.and_then(|a| spec.name.strip_prefix(&format!("{a}-"))) {
            aliases.push(short.to_string());
        }
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                cport.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(crate::model::bind_address(spec.host, self.cfg.ports.publish_address).to_string()),
                    host_port: Some(inst.host_port.to_string()),
                }]),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_string(), format!("rw,noexec,nosuid,nodev,size={tmpfs_bytes}"))])),
            memory: Some(spec.resource_limits.memory_bytes()),
            // Same as memory: no swap beyond the limit, so the limit means what it says.
            memory_swap: Some(spec.resource_limits.memory_bytes()),
            nano_cpus: Some(spec.resource_limits.nano_cpus()),
            pids_limit: Some(spec.resource_limits.pids),
            privileged: Some(false),
            // The daemon restarts containers itself (health, backoff, Failed); Docker never does.
            restart_policy: Some(DockerRestart { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
            network_mode: Some(network.clone()),
            mounts: Some(mounts),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), sb.log_max_size.clone()),
                    ("max-file".to_string(), sb.log_max_files.to_string()),
                ])),
            }),
            init: Some(false),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(sb.user.clone()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(vec![cport]),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network, EndpointSettings { aliases: Some(aliases), ..Default::default() })])),
            }),
            stop_timeout: Some(self.cfg.docker.stop_timeout_seconds as i64),
            ..Default::default()
        })
    }

    /// Starts a container of `spec`, after checking its directory volumes again on disk:
    /// Docker resolves bind sources anew at every start, so what was checked when the
    /// container was made proves nothing now. A refusal is `InvalidVolume`.
    pub async fn start(&self, id: &str, spec: &ServiceSpec) -> Result<(), RuntimeError> {
        self.check_volumes(spec)?;
        let d = self.client().await?;
        for attempt in 0..2 {
            match d.start_container(id, None).await {
                Ok(()) => return Ok(()),
                Err(e) if Self::status_of(&e) == Some(304) => return Ok(()),
                // Docker before 25 finds a container's network by name when it starts it.
                Err(e) if attempt == 0 && self.resolve_ambiguity(&e).await? => continue,
                Err(e) => return Err(self.map_err(e)),
            }
        }
        Ok(())
    }

    /// When Docker refused because two networks share a name (see [`NetInfo::id`]): leaves
    /// one and says so (the call is worth repeating).
    async fn resolve_ambiguity(&self, e: &bollard::errors::Error) -> Result<bool, RuntimeError> {
        let text = e.to_string();
        let Some(name) =
            text.split("network ").nth(1).and_then(|t| t.split(" is ambiguous").next()).filter(|_| text.contains(" is ambiguous"))
        else {
            return Ok(false);
        };
        let _held = self.network_lock(name).await;
        self.dedupe_network(name).await?;
        Ok(true)
    }

    pub async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        let opts = StopContainerOptions { t: Some(self.cfg.docker.stop_timeout_seconds as i32), ..Default::default() };
        match d.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(Self::status_of(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Removes a container (forcefully); a missing one counts as removed.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        let opts = RemoveContainerOptions { force: true, ..Default::default() };
        match d.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if Self::status_of(&e) == Some(404) => Ok(()),
            // "removal already in progress"
            Err(e) if Self::status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Inspects by id or name; `None` when no such container exists.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let d = self.client().await?;
        match d.inspect_container(id, None).await {
            Ok(c) => {
                let st = c.state.unwrap_or_default();
                let nets = c.network_settings.and_then(|n| n.networks).unwrap_or_default();
                let ip = nets.values().find_map(|e| e.ip_address.clone().filter(|a| !a.is_empty())).and_then(|a| a.parse().ok());
                Ok(Some(ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    ip,
                    networks: nets.into_keys().collect(),
                    running: st.running.unwrap_or(false) || st.restarting.unwrap_or(false),
                    exit_code: st.exit_code,
                    oom_killed: st.oom_killed.unwrap_or(false),
                    error: st.error.filter(|e| !e.is_empty()),
                    started_at: st.started_at,
                    finished_at: st.finished_at,
                }))
            }
            Err(e) if Self::status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Every container carrying this daemon's label, running or not.
    pub async fn list_owned(&self, daemon_id: &str) -> Result<Vec<OwnedContainer>, RuntimeError> {
        let d = self.client().await?;
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![format!("{LABEL_DAEMON}={daemon_id}")])])),
            ..Default::default()
        };
        let list = d.list_containers(Some(opts)).await.map_err(|e| self.map_err(e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                OwnedContainer {
                    id: c.id.unwrap_or_default(),
                    name: c.names.and_then(|n| n.into_iter().next()).unwrap_or_default().trim_start_matches('/').to_string(),
                    service_id: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
                    instance_id: labels.get(LABEL_INSTANCE).cloned().unwrap_or_default(),
                    running: state == "running" || state == "restarting",
                }
            })
            .collect())
    }

    /// Log lines of a container: the last `tail` lines, then more while `follow`.
    pub async fn logs(
        &self,
        id: &str,
        tail: u32,
        follow: bool,
        timestamps: bool,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, RuntimeError>> + Send + 'static, RuntimeError> {
        let d = self.client().await?;
        // A followed stream may rightly stay silent, so a hung engine is told apart by
        // something that must answer: the container, asked within the per-call deadline.
        self.within(self.inspect(id)).await?;
        let opts = LogsOptions { follow, stdout: true, stderr: true, timestamps, tail: tail.to_string(), ..Default::default() };
        let host = self.cfg.docker.host.clone();
        Ok(d.logs(id, Some(opts)).map(move |r| match r {
            Ok(out) => Ok(out.into_bytes()),
            Err(e) => Err(match e {
                bollard::errors::Error::DockerResponseServerError { message, .. } => RuntimeError::Api(message),
                _ => RuntimeError::Unavailable(host.clone()),
            }),
        }))
    }

    /// One resource sample (the engine takes about a second to measure CPU).
    pub async fn stats(&self, id: &str) -> Result<StatsSample, RuntimeError> {
        let d = self.client().await?;
        let opts = StatsOptions { stream: false, one_shot: false };
        let mut s = d.stats(id, Some(opts));
        self.within(async {
            match s.next().await {
                Some(Ok(st)) => Ok(sample_from(&st)),
                Some(Err(e)) => Err(self.map_err(e)),
                None => Err(RuntimeError::Api(format!("no stats for container {id}"))),
            }
        })
        .await
    }

    /// The engine's container events for this daemon's containers.
    pub async fn events(
        &self,
        daemon_id: &str,
    ) -> Result<impl Stream<Item = Result<EventMessage, RuntimeError>> + Send + 'static, RuntimeError> {
        let d = self.client().await?;
        let opts = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![format!("{LABEL_DAEMON}={daemon_id}")]),
            ])),
            ..Default::default()
        };
        let host = self.cfg.docker.host.clone();
        Ok(d.events(Some(opts)).map(move |r| r.map_err(|_| RuntimeError::Unavailable(host.clone()))))
    }
}

/// Sends one request to the engine over a fresh connection to its Unix socket (bollard's
/// own Unix client keeps no idle connections either). With `guard`, the request is refused
/// at once while the engine is known to be unresponsive, and abandoned when it is found so
/// while this one waits: nobody waits `docker.timeout_seconds` on a hung engine, least of
/// all the reconciler, which holds a service's lease meanwhile.
async fn send_to_engine<B>(
    socket: PathBuf,
    guard: Option<watch::Receiver<DockerState>>,
    req: hyper::Request<B>,
) -> Result<hyper::Response<hyper::body::Incoming>, bollard::errors::Error>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async move {
        let stream = tokio::net::UnixStream::connect(&socket).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // Drives the connection until the answer's body is read (or dropped).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let (mut parts, body) = req.into_parts();
        parts.uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse::<hyper::Uri>()?;
        parts.headers.insert(hyper::header::HOST, hyper::header::HeaderValue::from_static("docker"));
        Ok(sender.send_request(hyper::Request::from_parts(parts, body)).await?)
    };
    let Some(mut state) = guard else { return exchange.await };
    let hung = async move {
        if state.wait_for(|s| *s == DockerState::Unresponsive).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        _ = hung => Err(bollard::errors::Error::RequestTimeoutError),
        r = exchange => r,
    }
}

fn sample_from(st: &ContainerStatsResponse) -> StatsSample {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let cpu = st.cpu_stats.as_ref();
    let pre = st.precpu_stats.as_ref();
    let total =
        |c: Option<&bollard::models::ContainerCpuStats>| c.and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0);
    let system = |c: Option<&bollard::models::ContainerCpuStats>| c.and_then(|c| c.system_cpu_usage).unwrap_or(0);
    let cpu_delta = total(cpu).saturating_sub(total(pre)) as f64;
    let sys_delta = system(cpu).saturating_sub(system(pre)) as f64;
    let cpus = cpu.and_then(|c| c.online_cpus).unwrap_or(1).max(1) as f64;
    let cpu_percent = if sys_delta > 0.0 { cpu_delta / sys_delta * cpus * 100.0 } else { 0.0 };
    let mem = st.memory_stats.as_ref();
    let raw = mem.and_then(|m| m.usage).unwrap_or(0);
    // Page cache is reclaimable; `docker stats` subtracts it too.
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")).or_else(|| s.get("cache")).copied())
        .unwrap_or(0);
    let usage = raw.saturating_sub(cache);
    let limit = mem.and_then(|m| m.limit).unwrap_or(0);
    let (rx, tx) = st
        .networks
        .as_ref()
        .map(|n| n.values().fold((0, 0), |(rx, tx), v| (rx + v.rx_bytes.unwrap_or(0), tx + v.tx_bytes.unwrap_or(0))))
        .unwrap_or((0, 0));
    StatsSample {
        cpu_percent: round2(cpu_percent),
        memory_usage_mb: round2(mb(usage)),
        memory_limit_mb: round2(mb(limit)),
        memory_percent: if limit > 0 { round2(usage as f64 / limit as f64 * 100.0) } else { 0.0 },
        network_rx_mb: round2(mb(rx)),
        network_tx_mb: round2(mb(tx)),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `repo[:tag]` → (repo, tag), leaving a registry's `host:port/` alone.
pub fn split_image(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

/// See [`Runtime::prepare_volume_dir`] and [`crate::voldirs::prepare`].
pub fn prepare_volume_dir(data_dir: &Path, service_name: &str, rel: &str, user: &str) -> Result<PathBuf, RuntimeError> {
    crate::voldirs::prepare(data_dir, service_name, rel, user).map_err(|e| RuntimeError::InvalidVolume(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_of_a_subnet() {
        let first_host = |s: &str| Subnet::parse(s).map(|s| s.gateway());
        assert_eq!(first_host("172.20.0.0/16").unwrap().to_string(), "172.20.0.1");
        assert_eq!(first_host("10.1.2.0/24").unwrap().to_string(), "10.1.2.1");
    }

    #[test]
    fn image_split() {
        assert_eq!(split_image("addond-sample:latest"), ("addond-sample".into(), "latest".into()));
        assert_eq!(split_image("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(split_image("reg:5000/x/y"), ("reg:5000/x/y".into(), "latest".into()));
        assert_eq!(split_image("reg:5000/x/y:1.2"), ("reg:5000/x/y".into(), "1.2".into()));
    }

    #[test]
    fn volume_dirs_stay_inside_and_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare_volume_dir(dir.path(), "svc", "files/sub", "65534:65534").unwrap();
        assert!(p.ends_with("volumes/svc/files/sub"));
        assert!(p.is_dir());
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("volumes/svc/escape")).unwrap();
        let e = prepare_volume_dir(dir.path(), "svc", "escape", "65534").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let e = prepare_volume_dir(dir.path(), "svc", "escape/deeper", "65534").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
