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
use crate::store::{InstallRow, NewInstance, NewService, Store, StoreError};
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
        })
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
        install: Option<InstallRow>,
        addon_instance: &str,
        mut specs: Vec<(ServiceSpec, u32)>,
    ) -> Result<Vec<Service>, LifecycleError> {
        self.require_docker()?;
        for (spec, _) in &mut specs {
            self.prepare_create(spec, Some(addon_instance)).await?;
        }
        let install_name = install.as_ref().map(|r| r.instance.clone());
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
        if self.store.get_service(&spec.name).await?.is_some() {
            return Err(LifecycleError::Conflict(format!(
                "a service named `{}` already exists; pick another name or delete it first",
                spec.name
            )));
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

    // ---- reconciler -----------------------------------------------------------------

    /// Queues a reconcile pass for one service (coalesced with one already queued).
    pub fn trigger(&self, id: &ServiceId) {
        let first = self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
        if !first {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            let id = id.clone();
            self.tracker.spawn(async move {
                let lease = me.lease(&id);
                let held = lease.lock().await;
                me.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Err(e) = me.reconcile_one(&id).await {
                    tracing::warn!(service = %id, error = %e, "reconcile failed; will retry");
                    drop(held);
                    me.trigger_later(&id, Duration::from_secs(2));
                }
            });
        }
    }

    fn trigger_later(&self, id: &ServiceId, after: Duration) {
        if let Some(me) = self.me.upgrade() {
            let id = id.clone();
            let shutdown = self.shutdown.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(after) => me.trigger(&id),
                }
            });
        }
    }

    /// Brings one service's containers in line with its desired state. Idempotent.
    async fn reconcile_one(&self, id: &ServiceId) -> Result<(), LifecycleError> {
        if !self.runtime.is_available() {
            tracing::debug!(service = %id, "reconcile deferred: Docker unreachable");
            return Ok(()); // resumed by the Docker watcher when the engine is back
        }
        let Some(svc) = self.store.get_service(id.as_str()).await? else {
            return Ok(());
        };
        tracing::debug!(service = %svc.spec.name, desired = svc.desired.as_str(), phase = svc.phase.as_str(), "reconcile");
        match svc.desired {
            Desired::Deleted => {
                for inst in &svc.instances {
                    self.health.unregister(&inst.id);
                    self.runtime.remove(&inst.container_name()).await?;
                }
                self.store.delete_service(&svc.id).await?;
                self.release_network(&svc);
                self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(&svc.id);
                tracing::info!(service = %svc.spec.name, "deleted");
                self.service_notice("service.deleted", &svc, serde_json::json!({}));
            }
            Desired::Stopped => {
                for inst in &svc.instances {
                    self.health.unregister(&inst.id);
                    if !inst.wanted {
                        self.runtime.remove(&inst.container_name()).await?;
                        self.store.delete_instance(&inst.id).await?;
                        continue;
                    }
                    self.runtime.stop(&inst.container_name()).await?;
                    // Stopped on purpose: the next start is a start, not a crash restart.
                    if inst.health != Health::Unknown || inst.started_at.is_some() {
                        let mut i = inst.clone();
                        i.health = Health::Unknown;
                        i.healthy_since = None;
                        i.started_at = None;
                        self.store.update_instance(&i).await?;
                    }
                }
                let phase = if svc.phase == Phase::Failed { Phase::Failed } else { Phase::Stopped };
                self.store.set_phase(&svc.id, phase, svc.last_error.clone(), svc.exit_code).await?;
                if phase == Phase::Stopped && svc.phase != Phase::Stopped {
                    self.service_notice("service.stopped", &svc, serde_json::json!({}));
                }
            }
            Desired::Started => self.reconcile_running(svc).await?,
        }
        self.changed(id);
        Ok(())
    }

    async fn reconcile_running(&self, svc: Service) -> Result<(), LifecycleError> {
        let mut failed: Option<(String, Option<i64>)> =
            if svc.phase == Phase::Failed { Some((svc.last_error.clone().unwrap_or_default(), svc.exit_code)) } else { None };
        let mut creating = false;
        let mut instances = Vec::new();
        let mut net = None;
        if failed.is_none() && svc.instances.iter().any(|i| i.wanted) {
            match self.network_for(&svc).await {
                Ok(n) => net = Some(n),
                Err(RuntimeError::NoSubnet(m)) => failed = Some((m, None)),
                Err(e) => return Err(e.into()),
            }
        }
        for inst in svc.instances.iter().cloned() {
            if !inst.wanted {
                self.health.unregister(&inst.id);
                self.runtime.remove(&inst.container_name()).await?;
                self.store.delete_instance(&inst.id).await?;
                continue;
            }
            if failed.is_some() {
                // A failed service stays down until the operator starts it again.
                self.health.unregister(&inst.id);
                self.runtime.stop(&inst.container_name()).await?;
                if inst.started_at.is_some() {
                    // When the operator starts it again, that is a start, not a restart.
                    let mut i = inst.clone();
                    i.started_at = None;
                    i.health = Health::Unknown;
                    self.store.update_instance(&i).await?;
                }
                instances.push(inst);
                continue;
            }
            let Some(net) = net.as_ref() else {
                instances.push(inst);
                continue;
            };
            let (inst, outcome) = self.reconcile_instance(&svc, inst, net).await?;
            match outcome {
                Outcome::Running | Outcome::Starting => {}
                Outcome::Creating => creating = true,
                Outcome::Failed(reason, code) => failed = Some((reason, code)),
                Outcome::Exited => {}
            }
            instances.push(inst);
        }
        let (phase, err, code) = match failed {
            Some((reason, code)) => {
                for i in &instances {
                    self.health.unregister(&i.id);
                    let _ = self.runtime.stop(&i.container_name()).await;
                }
                (Phase::Failed, Some(reason), code)
            }
            None if creating => (Phase::Creating, None, None),
            None => (running_phase(&instances, false), None, None),
        };
        if phase == Phase::Failed && svc.phase != Phase::Failed {
            tracing::error!(service = %svc.spec.name, error = err.as_deref().unwrap_or(""), "service failed");
            self.service_notice("service.failed", &svc, serde_json::json!({"error": err, "exit_code": code}));
        }
        self.store.set_phase(&svc.id, phase, err, code).await?;
        // Usually announced with the verdict that completes it; here when that verdict
        // could not be written and this pass wrote it instead.
        if phase == Phase::Started && svc.phase != Phase::Started && svc.replicas > 0 {
            self.service_notice("service.started", &svc, serde_json::json!({"replicas": svc.replicas}));
        }
        Ok(())
    }

    async fn reconcile_instance(&self, svc: &Service, mut inst: Instance, net: &Net) -> Result<(Instance, Outcome), LifecycleError> {
        let name = inst.container_name();
        let now = now_ms();
        let unhealthy = self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()).remove(&inst.id);
        let requested = self.restart_requested.lock().unwrap_or_else(|e| e.into_inner()).remove(&inst.id);
        let mut info = self.runtime.inspect(&name).await?;
        if let Some(i) = info.as_ref().filter(|i| !i.networks.contains(&net.plan.name)) {
            // Made by an addond that put every container on one shared network: made again
            // on its owner's own network (with a new token), like a missing one.
            tracing::info!(service = %svc.spec.name, instance = inst.ordinal, from = ?i.networks, to = %net.plan.name, "moving container to its own network");
            self.health.unregister(&inst.id);
            self.runtime.remove(&name).await?;
            inst.container_id = None;
            inst.started_at = None;
            info = None;
        }
        if let (true, Some(info)) = (requested, info.as_ref()) {
            self.health.unregister(&inst.id);
            self.runtime.stop(&name).await?;
            if let Some(reason) = refused(self.runtime.start(&info.id, &svc.spec).await)? {
                return Ok((inst, Outcome::Failed(reason, None)));
            }
            inst.container_id = Some(info.id.clone());
            inst.started_at = Some(now);
            inst.health = Health::Starting;
            inst.healthy_since = None;
            self.store.update_instance(&inst).await?;
            self.register_health(&svc.spec, &inst).await;
            return Ok((inst, Outcome::Starting));
        }
        let info = match (info, unhealthy) {
            (Some(info), Some(reason)) if info.running => {
                // Judged unhealthy: stop it, then treat it like a crash (charged, backoff).
                tracing::warn!(service = %svc.spec.name, instance = %inst.ordinal, %reason, "unhealthy; restarting");
                self.health.unregister(&inst.id);
                self.runtime.stop(&name).await?;
                inst.last_error = Some(reason);
                let mut i = self.runtime.inspect(&name).await?;
                if let Some(i) = i.as_mut() {
                    i.running = false;
                    i.oom_killed = false;
                    i.exit_code = None;
                }
                i
            }
            (info, _) => info,
        };
        match info {
            None => {
                // Missing: first creation, a crash between booking and creating, or removed
                // behind our back. Create and start it.
                self.health.unregister(&inst.id);
                // An addon's containers get its installed config; plain services get `{}`.
                let config_json = match &svc.addon_instance {
                    Some(a) => self.store.get_install(a).await?.map(|i| i.config).unwrap_or_else(|| "{}".into()),
                    None => "{}".to_string(),
                };
                // A fresh addon API token per container, its hash stored before the
                // container exists; the old one (if any) stops working.
                let (api_url, token) = match &svc.addon_instance {
                    Some(_) => {
                        let api = net.api.map(|a| format!("http://{a}"));
                        let key = crate::secret::generate(Some(inst.id.as_str()))
                            .map_err(|e| RuntimeError::Api(format!("no randomness: {e}")))?;
                        self.store.set_instance_token(&inst.id, key.hash).await?;
                        (api, Some(key.full.replacen("ak_", "at_", 1)))
                    }
                    None => (None, None),
                };
                let ctx = InstanceContext {
                    daemon_id: &self.daemon_id,
                    service_id: svc.id.as_str(),
                    instance: &inst,
                    config_json: &config_json,
                    api_url,
                    token,
                    network: &net.info,
                    addon_instance: svc.addon_instance.as_deref(),
                };
                let cid = match self.create_container_pulling(&svc.spec, &ctx).await {
                    Ok(c) => c,
                    Err(e @ (RuntimeError::ImageNotFound { .. } | RuntimeError::InvalidVolume(_))) => {
                        return Ok((inst, Outcome::Failed(e.to_string(), None)));
                    }
                    Err(e) => return Err(e.into()),
                };
                inst.container_id = Some(cid.clone());
                if let Err(e) = self.runtime.start(&cid, &svc.spec).await {
                    inst.last_error = Some(e.to_string());
                    if self.moved_off_taken_port(svc, &mut inst, &cid, &e).await? {
                        return Ok((inst, Outcome::Creating));
                    }
                    self.store.update_instance(&inst).await?;
                    match &e {
                        RuntimeError::Api(msg) => return Ok((inst, Outcome::Failed(format!("cannot start container: {msg}"), None))),
                        RuntimeError::InvalidVolume(msg) => return Ok((inst, Outcome::Failed(msg.clone(), None))),
                        _ => return Err(e.into()),
                    }
                }
                inst.started_at = Some(now);
                inst.health = Health::Starting;
                inst.healthy_since = None;
                self.store.update_instance(&inst).await?;
                self.register_health(&svc.spec, &inst).await;
                Ok((inst, Outcome::Creating))
            }
            Some(info) if info.running => {
                let mut dirty = false;
                if inst.container_id.as_deref() != Some(info.id.as_str()) {
                    inst.container_id = Some(info.id.clone());
                    dirty = true;
                }
                if inst.started_at.is_none() {
                    inst.started_at = Some(now);
                    dirty = true;
                }
                match self.health.health_of(&inst.id) {
                    // Adopted after a daemon restart: re-probe it quickly, keeping its verdict.
                    None => self.register_health(&svc.spec, &inst).await,
                    // The monitor's verdict is the truth; one that could not be written
                    // (a full disk) is written now, or the service would stay Starting
                    // until its health changed again.
                    Some(h) if h != inst.health => {
                        inst.health = h;
                        if h == Health::Healthy && inst.healthy_since.is_none() {
                            inst.healthy_since = Some(now);
                        }
                        dirty = true;
                    }
                    Some(_) => {}
                }
                // A long healthy run forgets the restart streak.
                if inst.streak > 0 && inst.healthy_since.is_some_and(|t| now - t >= (self.cfg.restart.reset_after_seconds * 1000.0) as i64)
                {
                    inst.streak = 0;
                    dirty = true;
                }
                if dirty {
                    self.store.update_instance(&inst).await?;
                }
                Ok((inst, Outcome::Running))
            }
            Some(info) => {
                self.health.unregister(&inst.id);
                if inst.container_id.is_none() || inst.started_at.is_none() {
                    // Created but not started (a crash in between), or stopped on purpose:
                    // start it; this is not a crash restart.
                    inst.container_id = Some(info.id.clone());
                    if let Err(e) = self.runtime.start(&info.id, &svc.spec).await {
                        if self.moved_off_taken_port(svc, &mut inst, &info.id, &e).await? {
                            return Ok((inst, Outcome::Creating));
                        }
                        if let RuntimeError::InvalidVolume(msg) = e {
                            self.store.update_instance(&inst).await?;
                            return Ok((inst, Outcome::Failed(msg, None)));
                        }
                        return Err(e.into());
                    }
                    inst.started_at = Some(now);
                    inst.health = Health::Starting;
                    self.store.update_instance(&inst).await?;
                    self.register_health(&svc.spec, &inst).await;
                    return Ok((inst, Outcome::Creating));
                }
                let code = info.exit_code;
                let reason = if info.oom_killed {
                    format!("killed: out of memory (limit {})", svc.spec.resource_limits.memory)
                } else if let Some(r) = inst.last_error.clone().filter(|r| r.starts_with("health check")) {
                    r
                } else {
                    format!("exited with code {}{}", code.unwrap_or(-1), info.error.map(|e| format!(": {e}")).unwrap_or_default())
                };
                if !svc.spec.restart_policy.restarts_after(code.unwrap_or(1)) && !reason.starts_with("health check") {
                    inst.last_error = Some(reason.clone());
                    inst.exit_code = code;
                    inst.health = Health::Unknown;
                    self.store.update_instance(&inst).await?;
                    return Ok((inst, Outcome::Failed(format!("{reason} (restart policy {})", svc.spec.restart_policy.as_str()), code)));
                }
                let finished = info.finished_at.as_deref().and_then(parse_rfc3339_ms).unwrap_or(now);
                let uncharged = finished <= self.docker_back_at.load(Ordering::SeqCst);
                if inst.next_restart_at.is_none() {
                    inst.last_error = Some(reason.clone());
                    inst.exit_code = code;
                    inst.health = Health::Unhealthy;
                    if !uncharged {
                        let window = (self.cfg.restart.failure_window_seconds * 1000.0) as i64;
                        let n = self.store.record_restart_failure(&svc.id, reason.clone(), window).await?;
                        if n >= self.cfg.restart.max_failures {
                            self.store.update_instance(&inst).await?;
                            return Ok((
                                inst,
                                // `n` counts failures (exits and unhealthy verdicts), not the
                                // restarts between them: say what is counted.
                                Outcome::Failed(
                                    format!("{reason}; gave up after {n} failures within {}s", self.cfg.restart.failure_window_seconds),
                                    code,
                                ),
                            ));
                        }
                    }
                    // First restart at once, then base × 2^n, capped.
                    let delay = if inst.streak == 0 || uncharged {
                        0
                    } else {
                        backoff_ms(self.cfg.restart.backoff_base_seconds, self.cfg.restart.backoff_max_seconds, inst.streak - 1)
                    };
                    if !uncharged {
                        inst.streak += 1;
                    }
                    inst.next_restart_at = Some(now + delay);
                    self.store.update_instance(&inst).await?;
                }
                let due = inst.next_restart_at.unwrap_or(now);
                if due > now {
                    self.trigger_later(&svc.id, Duration::from_millis((due - now) as u64));
                    return Ok((inst, Outcome::Exited));
                }
                tracing::info!(service = %svc.spec.name, instance = inst.ordinal, %reason, "restarting");
                if let Some(refusal) = refused(self.runtime.start(&info.id, &svc.spec).await)? {
                    inst.next_restart_at = None;
                    self.store.update_instance(&inst).await?;
                    return Ok((inst, Outcome::Failed(refusal, code)));
                }
                self.service_notice(
                    "service.restarted",
                    svc,
                    serde_json::json!({"instance": inst.ordinal, "reason": reason, "restarts": inst.restarts + 1}),
                );
                inst.restarts += 1;
                inst.next_restart_at = None;
                inst.started_at = Some(now);
                inst.health = Health::Starting;
                inst.healthy_since = None;
                self.store.update_instance(&inst).await?;
                self.register_health(&svc.spec, &inst).await;
                Ok((inst, Outcome::Starting))
            }
        }
    }

    /// Creates an instance's container, pulling its image first when the engine lacks it:
    /// a create recorded while the engine was not answering had its image checked by
    /// nobody, and one removed behind our back is fetched again like at create time.
    async fn create_container_pulling(&self, spec: &ServiceSpec, ctx: &InstanceContext<'_>) -> Result<String, RuntimeError> {
        match self.runtime.create_container(spec, ctx).await {
            Err(RuntimeError::ImageNotFound { .. }) => {
                self.runtime.ensure_image(&spec.image).await?;
                self.runtime.create_container(spec, ctx).await
            }
            r => r,
        }
    }

    /// When a start failed because the instance's host port is in use: a container just
    /// removed may still hold it for a moment (its proxy exits asynchronously), so the start
    /// is retried briefly; if another program keeps it, the container is removed and another
    /// port booked (the next pass creates the container again). True when the start went
    /// through after all, or the instance moved.
    async fn moved_off_taken_port(&self, svc: &Service, inst: &mut Instance, cid: &str, e: &RuntimeError) -> Result<bool, LifecycleError> {
        let RuntimeError::Api(msg) = e else { return Ok(false) };
        if !(msg.contains("port is already allocated") || msg.contains("address already in use")) {
            return Ok(false);
        }
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.runtime.start(cid, &svc.spec).await.is_ok() {
                inst.container_id = Some(cid.to_string());
                inst.started_at = Some(now_ms());
                inst.health = Health::Starting;
                inst.healthy_since = None;
                inst.last_error = None;
                self.store.update_instance(inst).await?;
                self.register_health(&svc.spec, inst).await;
                return Ok(true);
            }
        }
        let old = inst.host_port;
        self.runtime.remove(cid).await?;
        let store = self.store.clone();
        let id = inst.id.clone();
        let new_port = self
            .ports
            .allocate(
                1,
                None,
                || async { store.booked_ports().await.map_err(LifecycleError::from) },
                |ports| async move {
                    let p = ports[0];
                    self.store.rebook_port(&id, p).await?;
                    Ok::<u16, LifecycleError>(p)
                },
            )
            .await?;
        tracing::warn!(service = %svc.spec.name, old, new = new_port, "host port taken by another program; moved to another port");
        inst.host_port = new_port;
        inst.container_id = None;
        inst.started_at = None;
        self.store.update_instance(inst).await?;
        self.trigger_later(&svc.id, Duration::from_millis(50));
        Ok(true)
    }

    /// Starts probing an instance where the daemon reaches it (`ports.instance_address`):
    /// its container's address on its network, or its published host port. On the internal
    /// network, where Docker publishes no ports, always the container's address.
    async fn register_health(&self, spec: &ServiceSpec, inst: &Instance) {
        let isolated = spec.networks.first() == Some(&self.cfg.docker.isolated_network);
        let addr = if isolated || self.cfg.ports.instance_address == InstanceAddress::Container {
            match self.runtime.inspect(&inst.container_name()).await {
                Ok(Some(ContainerInfo { ip: Some(ip), .. })) => SocketAddr::new(ip, spec.port),
                _ => return, // no address yet: the next pass registers it
            }
        } else {
            let publish = self.cfg.ports.publish_address;
            let host = if publish.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { publish };
            SocketAddr::new(host, inst.host_port)
        };
        self.health.register(
            inst.id.clone(),
            Target { service: inst.service_id.clone(), addr, check: spec.health_check.clone(), initial: inst.health },
        );
    }

    /// Applies a health verdict: persist it, recompute the phase, restart if unhealthy.
    async fn on_verdict(&self, v: Verdict) {
        let lease = self.lease(&v.service);
        let _held = lease.lock().await;
        let healthy_since = (v.health == Health::Healthy).then(now_ms);
        if self.health.health_of(&v.instance) != Some(v.health) {
            return; // superseded (unregistered or re-registered since)
        }
        if v.health == Health::Unhealthy {
            // Queued before the write: an unhealthy instance is restarted even when its
            // verdict cannot be recorded.
            self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()).insert(v.instance.clone(), v.detail.clone());
        }
        if let Err(e) = self.store.set_instance_health(&v.instance, v.health, healthy_since).await {
            tracing::warn!(error = %e, "cannot record health; the reconciler writes it later");
            // The monitor reports a verdict once; the reconciler copies it from the
            // monitor when this pass can write again.
            drop(_held);
            self.trigger_later(&v.service, Duration::from_secs(1));
            return;
        }
        if let Ok(Some(svc)) = self.store.get_service(v.service.as_str()).await {
            if svc.desired == Desired::Started && svc.phase != Phase::Failed {
                let phase = running_phase(&svc.instances, false);
                match self.store.set_phase(&svc.id, phase, None, None).await {
                    Ok(()) if phase == Phase::Started && svc.phase != Phase::Started => {
                        self.service_notice("service.started", &svc, serde_json::json!({"replicas": svc.replicas}));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(service = %svc.spec.name, error = %e, "cannot record the phase; the reconciler writes it later");
                        self.trigger_later(&svc.id, Duration::from_secs(1));
                    }
                }
            }
            if v.health == Health::Unhealthy {
                self.service_notice("service.unhealthy", &svc, serde_json::json!({"instance": v.instance, "detail": v.detail}));
            }
        }
        self.changed(&v.service);
        drop(_held);
        if v.health == Health::Unhealthy {
            self.trigger(&v.service);
        }
    }

    /// Full resync: adopt our labelled containers, remove strays (containers, then the
    /// networks no service wants), and queue every service.
    pub async fn resync(&self) -> Result<(), LifecycleError> {
        let services = self.store.list_services().await?;
        let known: HashSet<String> = services.iter().flat_map(|s| s.instances.iter().map(|i| i.container_name())).collect();
        for c in self.runtime.list_owned(&self.daemon_id).await? {
            if !known.contains(&c.name) {
                tracing::info!(container = %c.name, "removing stray container");
                self.runtime.remove(&c.id).await?;
            }
        }
        // A network that cannot be swept now must not keep the services from their passes.
        if let Err(e) = self.sweep_networks().await {
            tracing::warn!(error = %e, "cannot sweep networks; the next resync retries");
        }
        for s in &services {
            self.trigger(&s.id);
        }
        Ok(())
    }

    /// Runs the background parts until shutdown: health monitor, verdicts, Docker watcher
    /// and events, periodic resync. Returns when all of them (and queued passes) ended.
    pub async fn run(self: Arc<Self>) {
        let (vtx, mut vrx) = tokio::sync::mpsc::unbounded_channel();
        self.tracker.spawn(self.health.clone().run(vtx, self.shutdown.clone()));
        let me = self.clone();
        self.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = me.shutdown.cancelled() => return,
                    v = vrx.recv() => match v {
                        Some(v) => me.on_verdict(v).await,
                        None => return,
                    }
                }
            }
        });
        let me = self.clone();
        self.tracker.spawn(async move { me.watch_docker().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.follow_events().await });
        self.shutdown.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Pings Docker; on (re)connection prepares networks and resyncs; resyncs periodically.
    async fn watch_docker(self: Arc<Self>) {
        let mut was_up = false;
        let mut last_resync = tokio::time::Instant::now();
        loop {
            let period = Duration::from_secs_f64(self.live_config().reconcile.interval_seconds);
            let up = self.runtime.ping().await;
            if up && !was_up {
                self.docker_back_at.store(now_ms(), Ordering::SeqCst);
                if let Err(e) = self.resync().await {
                    tracing::warn!(error = %e, "resync failed");
                }
                self.first_resync.send_replace(true);
                last_resync = tokio::time::Instant::now();
            } else if up && last_resync.elapsed() >= period {
                if let Err(e) = self.resync().await {
                    tracing::warn!(error = %e, "resync failed");
                }
                last_resync = tokio::time::Instant::now();
            }
            was_up = up;
            let pause = if up { Duration::from_secs(2).min(period) } else { Duration::from_millis(500) };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
                _ = self.runtime.availability_changed() => {}
            }
        }
    }

    /// Reacts to container deaths and removals at once, rather than at the next resync.
    async fn follow_events(self: Arc<Self>) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            // Subscribed only while the engine answers, and dropped when it stops: a stream
            // opened on a hung engine could stay silent after the engine recovered.
            let events = if self.runtime.is_available() { self.runtime.events(&self.daemon_id).await.ok() } else { None };
            if let Some(mut events) = events {
                loop {
                    let ev = tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = self.runtime.until_unavailable() => break,
                        ev = events.next() => ev,
                    };
                    let Some(Ok(ev)) = ev else { break };
                    let action = ev.action.unwrap_or_default();
                    if matches!(action.as_str(), "die" | "oom" | "destroy" | "stop" | "kill" | "start") {
                        if let Some(svc) = ev.actor.and_then(|a| a.attributes).and_then(|mut a| a.remove(crate::runtime::LABEL_SERVICE)) {
                            self.trigger(&ServiceId(svc));
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

enum Outcome {
    Running,
    /// A new container was created for the instance.
    Creating,
    /// An existing container was (re)started.
    Starting,
    Exited,
    Failed(String, Option<i64>),
}

/// A start the volume check refused: its reason (the service's Failed reason); other
/// errors stay errors (the pass is retried).
fn refused(r: Result<(), RuntimeError>) -> Result<Option<String>, RuntimeError> {
    match r {
        Ok(()) => Ok(None),
        Err(RuntimeError::InvalidVolume(m)) => Ok(Some(m)),
        Err(e) => Err(e),
    }
}
