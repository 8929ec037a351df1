//! Service lifecycle: the phases, the reconciler that drives Docker toward what the store
//! says is desired, restarts with backoff, and the verdicts of the health monitor.
//!
//! Requests only write the desired state (after commit) and wake the reconciler; they never
//! touch Docker for a lifecycle step themselves. Each service has a lease (an async mutex),
//! so a request and a reconcile pass never act on one service at once. Every reconcile step
//! is idempotent and keyed by deterministic container names and labels, so a crash at any
//! point is repaired by the next pass: at start, periodically, and on Docker events.
//!
//! Each service's containers join its owner's network (`crate::isolation`), made before the
//! first container and removed with the owner's last service; the addon API is told as an
//! addon's network appears and goes. Every container start goes through the runtime's check
//! of the directory volumes, and a refusal fails the service with the reason.

pub mod health;
mod reconcile;
mod rollout;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, InstanceAddress};
use crate::isolation::{network_plan, NetworkPlan};
use crate::model::{backoff_ms, running_phase, Desired, Health, Instance, InstanceId, Phase, Service, ServiceId, ServiceSpec};
use crate::ports::{PortAllocator, PortError};
use crate::runtime::{ContainerInfo, DockerState, InstanceContext, NetInfo, Runtime, RuntimeError};
use crate::store::{InstallRow, NewDeployment, NewInstance, NewService, Store, StoreError};
use crate::time::{now_ms, parse_rfc3339_ms};
use health::{HealthMonitor, Target, Verdict};

/// Where the addon API listens: told as addon networks appear and go, so it listens on the
/// gateway of exactly the networks that exist (implemented by `crate::addon_api`).
pub trait AddonNetworks: Send + Sync {
    /// Listens on the network's gateway (at once when it already does); where, if it can.
    fn network_up<'a>(&'a self, network: &'a NetInfo) -> futures_util::future::BoxFuture<'a, Option<SocketAddr>>;
    /// Stops listening on a network that was removed.
    fn network_down<'a>(&'a self, network: &'a str) -> futures_util::future::BoxFuture<'a, ()>;
}

/// A service's network as the reconciler made sure of it, and the addon API's address on it.
struct Net {
    /// Which network, of which owner and kind.
    plan: NetworkPlan,
    /// The network as Docker has it (its id, subnet, gateway).
    info: NetInfo,
    /// The addon API on it (addon networks only, once bound).
    api: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("no service `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("service `{name}` failed: {reason}")]
    Failed { name: String, reason: String },
    #[error("timed out after {secs}s waiting for `{name}` to reach {want}; it is {phase}")]
    WaitTimeout { name: String, want: &'static str, phase: &'static str, secs: u64 },
}

pub struct Lifecycle {
    /// The config the daemon started with (see `live` for what a reload may change).
    cfg: Arc<Config>,
    /// Where services, instances and their ports are recorded before anything is done.
    store: Store,
    /// Docker: containers, networks and volumes.
    runtime: Arc<Runtime>,
    /// Books host ports for new instances, never two alike.
    ports: PortAllocator,
    /// Probes running instances and reports the unhealthy ones.
    health: Arc<HealthMonitor>,
    /// This daemon's id: its containers carry it, so two daemons never adopt each other's.
    daemon_id: String,
    /// The per-service lease.
    leases: Mutex<HashMap<ServiceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Services with a reconcile pass queued; a trigger for one already queued is a no-op.
    pending: Mutex<HashSet<ServiceId>>,
    /// Instances the health monitor judged unhealthy, awaiting a restart by the reconciler.
    unhealthy: Mutex<HashMap<InstanceId, String>>,
    /// Instances an operator asked to restart; done by the next pass, not charged.
    restart_requested: Mutex<HashSet<InstanceId>>,
    /// Tells waiters (`?wait=`) and, later, the dashboard that a service changed.
    changes: broadcast::Sender<ServiceId>,
    /// When Docker last came back: containers that died before that were taken down with
    /// the engine, and restarting them is not charged to the service.
    docker_back_at: AtomicI64,
    /// Every background task, so a stop waits for them.
    tracker: TaskTracker,
    /// Cancelled when the daemon stops: background loops end on it.
    shutdown: CancellationToken,
    /// The config as last reloaded (SIGHUP): only the keys `daemon::LIVE_KEYS` lists may
    /// differ from `cfg`, which keeps the values the daemon started with.
    live: Mutex<Arc<Config>>,
    /// Turns true once the first resync against Docker has run (readiness waits for it).
    first_resync: tokio::sync::watch::Sender<bool>,
    /// The addon API, told about addon networks (set once at start).
    addon_networks: std::sync::OnceLock<Arc<dyn AddonNetworks>>,
    /// Networks of deleted services are removed in the background, two at a time: Docker
    /// does network and container changes one after the other, and 200 removals at once
    /// would hold up the container removals that deletes wait for.
    network_removals: Arc<tokio::sync::Semaphore>,
    /// Lifecycle events (`service.failed`, `addon.installed`, …) for the event log.
    notices: broadcast::Sender<(String, serde_json::Value)>,
    /// Lets `&self` methods hand an owning handle to the tasks they spawn.
    me: std::sync::Weak<Lifecycle>,
    /// The config a rollout's new instances get, per addon instance, while it runs (the
    /// install row keeps the old config until the commit). Not persisted: a crash aborts
    /// the rollout, whose new instances go.
    rollout_configs: Mutex<HashMap<String, String>>,
    /// Instances a rollout took out of routing before retiring them: never probed (so never
    /// routed to) again, whatever a reconcile pass finds.
    draining: Mutex<HashSet<InstanceId>>,
    /// A rollout's new instances that failed: they are not restarted, and the rollout that
    /// waits on them is told.
    candidate_failures: Mutex<HashSet<InstanceId>>,
}

impl Lifecycle {
    pub fn new(cfg: Arc<Config>, store: Store, runtime: Arc<Runtime>, daemon_id: String, shutdown: CancellationToken) -> Arc<Self> {
        let (changes, _) = broadcast::channel(1024);
        Arc::new_cyclic(|me| Lifecycle {
            me: me.clone(),
            ports: PortAllocator::new(&cfg.ports),
            health: Arc::new(HealthMonitor::new(cfg.health.startup_probe_ms)),
            live: Mutex::new(cfg.clone()),
            cfg,
            store,
            runtime,
            daemon_id,
            leases: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
            unhealthy: Mutex::new(HashMap::new()),
            restart_requested: Mutex::new(HashSet::new()),
            changes,
            docker_back_at: AtomicI64::new(0),
            tracker: TaskTracker::new(),
            shutdown,
            first_resync: tokio::sync::watch::channel(false).0,
            notices: broadcast::channel(1024).0,
            addon_networks: std::sync::OnceLock::new(),
            network_removals: Arc::new(tokio::sync::Semaphore::new(2)),
            rollout_configs: Mutex::new(HashMap::new()),
            draining: Mutex::new(HashSet::new()),
            candidate_failures: Mutex::new(HashSet::new()),
        })
    }

    /// The daemon's shutdown signal, for long-lived sessions (GraphQL subscriptions) that
    /// should end with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The config with the live-reloadable keys as last reloaded: what new services get as
    /// defaults (health, limits) and the resync period.
    pub fn live_config(&self) -> Arc<Config> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_live_config(&self, cfg: Arc<Config>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    /// Returns once the first resync against Docker has run (containers adopted, strays
    /// removed, every service queued).
    pub async fn first_resync(&self) {
        let mut rx = self.first_resync.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    pub fn port_range(&self) -> (u16, u16) {
        self.ports.range()
    }

    /// Healthy instances of a service and where they answer (for calls into addons).
    /// This daemon's id, which names its networks and volumes.
    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    /// When the health monitor last probed an instance (Unix millis).
    pub fn last_health_check(&self, instance: &InstanceId) -> Option<i64> {
        self.health.last_check_of(instance)
    }

    pub fn healthy_endpoints(&self, service: &ServiceId) -> Vec<(InstanceId, SocketAddr)> {
        self.health.healthy_of(service)
    }

    /// True when the instance's container is known to have died before `t_ms`: a call that
    /// started after that cannot have run on it, so it may be sent elsewhere.
    pub async fn died_before(&self, service: &ServiceId, instance: &InstanceId, t_ms: i64) -> bool {
        let Ok(Some(svc)) = self.store.get_service(service.as_str()).await else { return false };
        let Some(inst) = svc.instances.iter().find(|i| &i.id == instance) else { return false };
        // A caller waits on this: bounded by the per-call deadline.
        match self.runtime.within(self.runtime.inspect(&inst.container_name())).await {
            Ok(Some(info)) if !info.running => info.finished_at.as_deref().and_then(parse_rfc3339_ms).is_some_and(|f| f <= t_ms),
            Ok(None) => true,
            _ => false,
        }
    }

    /// Every running instance of a service and where it answers, healthy or not.
    pub fn endpoints(&self, service: &ServiceId) -> Vec<(InstanceId, SocketAddr)> {
        self.health.endpoints_of(service)
    }

    /// Replaces one instance's container (so it starts with the current config) and waits
    /// until the new one is healthy. Used to roll a config change out one at a time.
    pub async fn recreate_instance(&self, service: &ServiceId, instance: &InstanceId, timeout: Duration) -> Result<(), LifecycleError> {
        self.require_docker()?;
        let mut rx = self.changes.subscribe();
        {
            let lease = self.lease(service);
            let _held = lease.lock().await;
            let svc = self.get(service.as_str()).await?;
            let Some(mut inst) = svc.instances.into_iter().find(|i| &i.id == instance) else {
                return Err(LifecycleError::NotFound(instance.to_string()));
            };
            self.health.unregister(&inst.id);
            self.runtime.remove(&inst.container_name()).await?;
            inst.container_id = None;
            inst.health = Health::Unknown;
            inst.healthy_since = None;
            self.store.update_instance(&inst).await?;
            self.store.set_phase(&svc.id, Phase::Starting, None, None).await?;
        }
        self.trigger(service);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let svc = self.get(service.as_str()).await?;
            if svc.phase == Phase::Failed {
                return Err(LifecycleError::Failed { name: svc.spec.name, reason: svc.last_error.unwrap_or_default() });
            }
            if svc.instances.iter().any(|i| &i.id == instance && i.container_id.is_some() && i.health == Health::Healthy) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    return Err(LifecycleError::WaitTimeout {
                        name: svc.spec.name,
                        want: "healthy",
                        phase: svc.phase.as_str(),
                        secs: timeout.as_secs(),
                    })
                }
                Ok(_) => continue,
            }
        }
    }

    /// Hands over the addon API, to be told about addon networks; containers created from
    /// then on get its address on their network as `ADDOND_API`.
    pub fn set_addon_networks(&self, api: Arc<dyn AddonNetworks>) {
        let _ = self.addon_networks.set(api);
    }

    fn plan_of(&self, svc: &Service) -> NetworkPlan {
        network_plan(&self.cfg.docker, &self.daemon_id, &svc.spec, svc.addon_instance.as_deref())
    }

    /// Makes sure the service's network exists (and, for an addon, that the addon API
    /// listens on it).
    async fn network_for(&self, svc: &Service) -> Result<Net, RuntimeError> {
        let plan = self.plan_of(svc);
        let info = self.runtime.ensure_network(&plan, &self.daemon_id).await?;
        let api = match (plan.addon, self.addon_networks.get()) {
            (true, Some(api)) => api.network_up(&info).await,
            _ => None,
        };
        Ok(Net { plan, info, api })
    }

    /// Runs `work` in the background on the daemon's task tracker, so the shutdown waits
    /// for it (or cancels it, at the shutdown's token) instead of leaving it detached.
    pub fn spawn_background<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Removes a deleted service's network, in the background, unless another service still
    /// joins it. One left behind by a shutdown meanwhile goes at the next resync.
    fn release_network(&self, svc: &Service) {
        let plan = self.plan_of(svc);
        let Some(me) = self.me.upgrade() else { return };
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let work = async {
                let Ok(_permit) = me.network_removals.clone().acquire_owned().await else { return };
                let _held = me.runtime.network_lock(&plan.name).await;
                me.remove_if_unwanted(&plan.name, plan.addon).await;
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Removes a network no service wants any more (the caller holds its lock, so none is
    /// being made for it meanwhile), and has the addon API stop listening there. Failures are
    /// logged: the next resync tries again.
    async fn remove_if_unwanted(&self, name: &str, addon: bool) {
        match self.store.list_services().await {
            Ok(all) if all.iter().any(|s| self.plan_of(s).name == name) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(network = %name, error = %e, "cannot tell whether the network is still used; the next resync decides");
                return;
            }
        }
        match self.runtime.remove_network(name).await {
            Ok(true) => {
                if let (true, Some(api)) = (addon, self.addon_networks.get()) {
                    api.network_down(name).await;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(network = %name, error = %e, "cannot remove network; the next resync retries"),
        }
    }

    /// Removes networks of ours that no service wants any more (like stray containers),
    /// and has the addon API listen on the addon networks that stay.
    async fn sweep_networks(&self) -> Result<(), LifecycleError> {
        let services = self.store.list_services().await?;
        let wanted: HashMap<String, bool> = services.iter().map(|s| self.plan_of(s)).map(|p| (p.name, p.addon)).collect();
        let owned = self.runtime.list_owned_networks(&self.daemon_id).await?;
        let mut seen = HashSet::new();
        for n in owned.iter().filter(|n| !seen.insert(n.name.clone())) {
            let _held = self.runtime.network_lock(&n.name).await;
            self.runtime.dedupe_network(&n.name).await?;
        }
        let mut done = HashSet::new();
        for n in owned.into_iter().filter(|n| done.insert(n.name.clone())) {
            match wanted.get(&n.name) {
                None => {
                    // Checked again under its lock: a service created since the list above
                    // may be making it right now.
                    let _held = self.runtime.network_lock(&n.name).await;
                    tracing::info!(network = %n.name, owner = %n.owner, "removing stray network");
                    self.remove_if_unwanted(&n.name, n.owner.starts_with("a_")).await;
                }
                Some(true) => {
                    if let (Some(info), Some(api)) = (&n.info, self.addon_networks.get()) {
                        api.network_up(info).await;
                    }
                }
                Some(false) => {}
            }
        }
        Ok(())
    }

    /// Lifecycle events, to be recorded in the event log.
    pub fn notices(&self) -> broadcast::Receiver<(String, serde_json::Value)> {
        self.notices.subscribe()
    }

    /// Announces a lifecycle event (`service.failed`, `addon.installed`, …).
    pub fn notice(&self, name: &str, data: serde_json::Value) {
        let _ = self.notices.send((name.to_string(), data));
    }

    fn service_notice(&self, name: &str, svc: &Service, extra: serde_json::Value) {
        let mut data = serde_json::json!({"service": svc.spec.name, "id": svc.id, "addon": svc.addon_instance});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        self.notice(name, data);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ServiceId> {
        self.changes.subscribe()
    }

    fn changed(&self, id: &ServiceId) {
        let _ = self.changes.send(id.clone());
    }

    fn lease(&self, id: &ServiceId) -> Arc<tokio::sync::Mutex<()>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).entry(id.clone()).or_default().clone()
    }

    /// Lifecycle requests are refused while the engine is unreachable (nothing would come
    /// of them until it is back, and the operator should know now). While it is merely
    /// unresponsive they are recorded and answered at once: the reconciler acts when the
    /// engine answers again, and a busy engine must not make the API refuse work.
    fn require_docker(&self) -> Result<(), LifecycleError> {
        match self.runtime.state() {
            DockerState::Unreachable => Err(RuntimeError::Unavailable(self.cfg.docker.host.clone()).into()),
            DockerState::Reachable | DockerState::Unresponsive => Ok(()),
        }
    }

    async fn get(&self, id_or_name: &str) -> Result<Service, LifecycleError> {
        self.store.get_service(id_or_name).await?.ok_or_else(|| LifecycleError::NotFound(id_or_name.to_string()))
    }

    // ---- requests -------------------------------------------------------------------

    /// Books ports and stores the service; containers come from the reconciler.
    pub async fn create(&self, mut spec: ServiceSpec, replicas: u32, addon_instance: Option<String>) -> Result<Service, LifecycleError> {
        self.require_docker()?;
        self.prepare_create(&mut spec, addon_instance.as_deref()).await?;
        let id = ServiceId::generate();
        let store = self.store.clone();
        let preferred = spec.preferred_host_port;
        let svc = self
            .ports
            .allocate(
                replicas as usize,
                preferred,
                || async { store.booked_ports().await.map_err(LifecycleError::from) },
                |ports| async move {
                    let instances = ports.iter().enumerate().map(|(i, p)| NewInstance { ordinal: i as u32, host_port: *p }).collect();
                    let phase = if replicas == 0 { Phase::Started } else { Phase::Creating };
                    self.store.insert_service(id.clone(), spec, replicas, Desired::Started, phase, instances, addon_instance).await.map_err(
                        |e| match e {
                            StoreError::NameTaken(n) => LifecycleError::Conflict(format!("a service named `{n}` already exists")),
                            e => e.into(),
                        },
                    )
                },
            )
            .await?;
        self.service_notice("service.created", &svc, serde_json::json!({"replicas": svc.replicas}));
        self.trigger(&svc.id);
        Ok(svc)
    }

    /// Stores the services of an addon instance in one transaction, with its install row
    /// when it is an install (`install`), so the install is recorded whole or not at all;
    /// containers come from the reconciler. Without `install` it adds services to an
    /// instance that is installed already (the repair of an older database).
    pub async fn create_group(
        &self,
        install: Option<(InstallRow, NewDeployment)>,
        addon_instance: &str,
        mut specs: Vec<(ServiceSpec, u32)>,
    ) -> Result<Vec<Service>, LifecycleError> {
        self.require_docker()?;
        for (spec, _) in &mut specs {
            self.prepare_create(spec, Some(addon_instance)).await?;
        }
        let install_name = install.as_ref().map(|(r, _)| r.instance.clone());
        let wants: Vec<(usize, Option<u16>)> = specs.iter().map(|(s, r)| (*r as usize, s.preferred_host_port)).collect();
        let store = self.store.clone();
        let addon_instance = addon_instance.to_string();
        let created = self
            .ports
            .allocate_many(
                &wants,
                || async { store.booked_ports().await.map_err(LifecycleError::from) },
                |groups| async move {
                    let new = specs
                        .into_iter()
                        .zip(groups)
                        .map(|((spec, replicas), ports)| NewService {
                            id: ServiceId::generate(),
                            spec,
                            replicas,
                            desired: Desired::Started,
                            phase: if replicas == 0 { Phase::Started } else { Phase::Creating },
                            instances: ports.iter().enumerate().map(|(i, p)| NewInstance { ordinal: i as u32, host_port: *p }).collect(),
                        })
                        .collect();
                    self.store.insert_services(install, addon_instance, new).await.map_err(|e| match e {
                        StoreError::NameTaken(n) if install_name.as_deref() == Some(n.as_str()) => LifecycleError::Conflict(format!(
                            "an addon is already installed as `{n}`; give this one another name with \"instance\""
                        )),
                        StoreError::NameTaken(n) => LifecycleError::Conflict(format!(
                            "a service named `{n}` already exists; delete it or install under another instance name"
                        )),
                        e => e.into(),
                    })
                },
            )
            .await?;
        for svc in &created {
            self.service_notice("service.created", svc, serde_json::json!({"replicas": svc.replicas}));
            self.trigger(&svc.id);
        }
        Ok(created)
    }

    /// Uninstalls an addon instance in one transaction (its install row removed, every
    /// service of it marked for deletion) under the leases of those services; the
    /// reconciler removes the containers. `None` when nothing is installed under that name.
    pub async fn uninstall(&self, addon_instance: &str) -> Result<Option<Vec<ServiceId>>, LifecycleError> {
        self.require_docker()?;
        let services = self.store.services_of_addon(addon_instance).await?;
        let leases: Vec<_> = services.iter().map(|s| self.lease(&s.id)).collect();
        let mut held = Vec::with_capacity(leases.len());
        for l in &leases {
            held.push(l.lock().await);
        }
        let ids = self.store.uninstall(addon_instance).await?;
        drop(held);
        for id in ids.iter().flatten() {
            self.changed(id);
            self.trigger(id);
        }
        Ok(ids)
    }

    /// What a create needs before anything is stored: the name is free, the volume
    /// directories exist, and the image is present (pulled now if missing).
    async fn prepare_create(&self, spec: &mut ServiceSpec, addon_instance: Option<&str>) -> Result<(), LifecycleError> {
        if self.store.get_service(&spec.name).await?.is_some() {
            return Err(LifecycleError::Conflict(format!(
                "a service named `{}` already exists; pick another name or delete it first",
                spec.name
            )));
        }
        self.prepare_spec(spec, addon_instance).await
    }

    /// What any container of `spec` needs: volume names fixed, volume directories made,
    /// the image present.
    async fn prepare_spec(&self, spec: &mut ServiceSpec, addon_instance: Option<&str>) -> Result<(), LifecycleError> {
        // Each named volume's Docker volume is fixed now (scoped to this daemon and the
        // service, or its owner when shared) and kept in the spec.
        let names: Vec<Option<String>> = spec
            .volumes
            .iter()
            .map(|v| {
                (v.kind == crate::model::VolumeKind::Named)
                    .then(|| crate::isolation::volume_name(&self.daemon_id, spec, addon_instance, v).0)
            })
            .collect();
        for (v, name) in spec.volumes.iter_mut().zip(names) {
            v.docker_name = name;
        }
        for v in spec.volumes.iter().filter(|v| v.kind == crate::model::VolumeKind::Dir) {
            self.runtime.prepare_volume_dir(&spec.name, &v.source)?;
        }
        match self.runtime.ensure_image(&spec.image).await {
            // The engine is up but not answering: the reconciler checks (and pulls) the
            // image before it creates the container, so the request does not wait on it.
            Err(RuntimeError::Unresponsive { .. }) => {
                tracing::warn!(image = %spec.image, "Docker is not answering; the image is checked when the container is created");
                Ok(())
            }
            r => Ok(r?),
        }
    }

    pub async fn start(&self, id_or_name: &str) -> Result<Service, LifecycleError> {
        self.set_desired(id_or_name, Desired::Started, Phase::Starting, false).await
    }

    pub async fn stop(&self, id_or_name: &str) -> Result<Service, LifecycleError> {
        self.set_desired(id_or_name, Desired::Stopped, Phase::Stopping, false).await
    }

    pub async fn delete(&self, id_or_name: &str) -> Result<Service, LifecycleError> {
        self.set_desired(id_or_name, Desired::Deleted, Phase::Deleting, false).await
    }

    /// `restart`: also restart every running instance, and announce `phase` even if the
    /// service already is where `desired` leads (it goes through Starting again).
    async fn set_desired(&self, id_or_name: &str, desired: Desired, phase: Phase, restart: bool) -> Result<Service, LifecycleError> {
        self.require_docker()?;
        let svc = self.get(id_or_name).await?;
        let lease = self.lease(&svc.id);
        let _held = lease.lock().await;
        let cur = self.get(svc.id.as_str()).await?;
        if cur.desired == Desired::Deleted && desired != Desired::Deleted {
            return Err(LifecycleError::Conflict(format!("service `{}` is being deleted", cur.spec.name)));
        }
        if restart {
            // Queued under the lease, so the pass this request triggers sees it.
            let mut req = self.restart_requested.lock().unwrap_or_else(|e| e.into_inner());
            req.extend(cur.instances.iter().filter(|i| i.wanted).map(|i| i.id.clone()));
        }
        let phase = match (desired, cur.phase) {
            _ if restart => phase,
            // Already there: keep the settled phase instead of announcing a transition.
            (Desired::Started, Phase::Started) if cur.desired == Desired::Started => Phase::Started,
            (Desired::Stopped, Phase::Stopped) => Phase::Stopped,
            (Desired::Started, _) if cur.replicas == 0 => Phase::Started,
            _ => phase,
        };
        let svc = self.store.set_desired(&cur.id, desired, phase).await?.ok_or_else(|| LifecycleError::NotFound(id_or_name.to_string()))?;
        self.changed(&svc.id);
        self.trigger(&svc.id);
        Ok(svc)
    }

    /// Restarts every instance, one at a time, through the reconciler (which holds the
    /// lease), so the phase goes Starting → Started as the instances pass their checks.
    pub async fn restart(&self, id_or_name: &str) -> Result<Service, LifecycleError> {
        self.set_desired(id_or_name, Desired::Started, Phase::Starting, true).await
    }

    pub async fn scale(&self, id_or_name: &str, replicas: u32) -> Result<Service, LifecycleError> {
        self.require_docker()?;
        let svc = self.get(id_or_name).await?;
        let lease = self.lease(&svc.id);
        let _held = lease.lock().await;
        let cur = self.get(svc.id.as_str()).await?;
        if cur.desired == Desired::Deleted {
            return Err(LifecycleError::Conflict(format!("service `{}` is being deleted", cur.spec.name)));
        }
        // Ordinals below `replicas` are wanted; reuse rows that exist (even if marked for
        // removal and not yet removed), book ports only for the missing ordinals.
        let have: HashSet<u32> = cur.instances.iter().map(|i| i.ordinal).collect();
        let missing: Vec<u32> = (0..replicas).filter(|o| !have.contains(o)).collect();
        let store = self.store.clone();
        let svc = self
            .ports
            .allocate(
                missing.len(),
                None,
                || async { store.booked_ports().await.map_err(LifecycleError::from) },
                |ports| async {
                    let new = missing.iter().zip(ports).map(|(o, p)| NewInstance { ordinal: *o, host_port: p }).collect();
                    self.store.scale(&cur.id, replicas, new).await.map_err(LifecycleError::from)
                },
            )
            .await?
            .ok_or_else(|| LifecycleError::NotFound(id_or_name.to_string()))?;
        if svc.desired == Desired::Started
            && svc.phase == Phase::Started
            && replicas as usize > cur.instances.iter().filter(|i| i.wanted).count()
        {
            self.store.set_phase(&svc.id, Phase::Starting, None, None).await?;
        }
        self.changed(&svc.id);
        self.trigger(&svc.id);
        self.get(svc.id.as_str()).await
    }

    /// Marks services stopped or failed for longer than `days` for deletion.
    pub async fn cleanup(&self, days: f64) -> Result<Vec<Service>, LifecycleError> {
        let ids = self.store.stale_services((days * 86_400_000.0) as i64).await?;
        let mut out = Vec::new();
        for id in ids {
            if let Ok(s) = self.set_desired(id.as_str(), Desired::Deleted, Phase::Deleting, false).await {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Waits until the service reaches `want` (or is gone, for `Deleted`).
    pub async fn wait(&self, id: &ServiceId, want: Phase, timeout: Duration) -> Result<Option<Service>, LifecycleError> {
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut last, mut name);
        loop {
            match self.store.get_service(id.as_str()).await? {
                None if want == Phase::Deleted => return Ok(None),
                None => return Err(LifecycleError::NotFound(id.to_string())),
                Some(s) => {
                    if s.phase == want {
                        return Ok(Some(s));
                    }
                    if s.phase == Phase::Failed {
                        return Err(LifecycleError::Failed {
                            name: s.spec.name,
                            reason: s.last_error.unwrap_or_else(|| "unknown error".into()),
                        });
                    }
                    last = s.phase;
                    name = s.spec.name;
                }
            }
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Err(_) => {
                        return Err(LifecycleError::WaitTimeout {
                            name,
                            want: want.as_str(),
                            phase: last.as_str(),
                            secs: timeout.as_secs(),
                        });
                    }
                    Ok(Ok(changed)) if &changed != id => continue,
                    Ok(_) => break,
                }
            }
        }
    }
}
