//! The steps a rollout is made of, for `crate::addons::deploy` to drive: a new instance
//! started beside the old ones with the new spec (its own ordinal and port), a wait until it
//! is healthy or has failed, an old instance taken out of routing and then retired, and the
//! commit (or the abort) that ends it. Each step is recorded before it is acted on, so a
//! crash leaves rows the reconciler and the restart's recovery know what to do with.
//!
//! A rollout's new instance ("candidate") never fails its service: a crash or a failed check
//! is the rollout's failure, which removes the candidates and leaves the old instances, which
//! were never stopped before their replacement was healthy, serving.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Lifecycle, LifecycleError};
use crate::model::{Health, InstanceId, ServiceId, ServiceSpec};
use crate::store::{NewInstance, RolloutCommit};

impl Lifecycle {
    /// The config a rollout's new instances of `addon_instance` get (the install row keeps
    /// the old one until the commit); `None` ends it.
    pub fn set_rollout_config(&self, addon_instance: &str, config: Option<String>) {
        let mut m = self.rollout_configs.lock().unwrap_or_else(|e| e.into_inner());
        match config {
            Some(c) => m.insert(addon_instance.to_string(), c),
            None => m.remove(addon_instance),
        };
    }

    pub(super) fn rollout_config(&self, addon_instance: &str) -> Option<String> {
        self.rollout_configs.lock().unwrap_or_else(|e| e.into_inner()).get(addon_instance).cloned()
    }

    /// What a new spec needs before an instance of it is created: its named volumes are the
    /// service's (same Docker volumes), its directory volumes exist, and its image is here.
    pub async fn prepare_rollout_spec(&self, spec: &mut ServiceSpec, addon_instance: Option<&str>) -> Result<(), LifecycleError> {
        self.require_docker()?;
        self.prepare_spec(spec, addon_instance).await
    }

    /// Starts `n` new instances of `service` running `spec`, beside the old ones, on the
    /// lowest free ordinals and newly booked ports. The reconciler creates their containers
    /// in one pass, side by side, so a batch costs about one container start, not `n`.
    pub async fn add_candidates(&self, service: &ServiceId, spec: &ServiceSpec, n: usize) -> Result<Vec<InstanceId>, LifecycleError> {
        self.require_docker()?;
        let lease = self.lease(service);
        let held = lease.lock().await;
        let svc = self.get(service.as_str()).await?;
        let used: HashSet<u32> = svc.instances.iter().map(|i| i.ordinal).collect();
        let ordinals: Vec<u32> = (0..).filter(|o| !used.contains(o)).take(n).collect();
        let store = self.store.clone();
        let ids = self
            .ports
            .allocate(
                n,
                None,
                || async { store.booked_ports().await.map_err(LifecycleError::from) },
                |ports| async move {
                    if ports.len() != ordinals.len() {
                        return Err(LifecycleError::Conflict(format!(
                            "{} ports were booked for {} new instances",
                            ports.len(),
                            ordinals.len()
                        )));
                    }
                    let insts = ordinals.into_iter().zip(ports).map(|(ordinal, host_port)| NewInstance { ordinal, host_port }).collect();
                    self.store.add_candidates(service, insts, spec).await.map_err(LifecycleError::from)
                },
            )
            .await?;
        drop(held);
        self.changed(service);
        self.trigger(service);
        Ok(ids)
    }

    /// Waits until a rollout's new instance is healthy; an error with the reason when its
    /// container exits, it cannot be created, or `timeout` passes first.
    pub async fn wait_candidate(&self, service: &ServiceId, instance: &InstanceId, timeout: Duration) -> Result<(), LifecycleError> {
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let svc = self.get(service.as_str()).await?;
            let Some(inst) = svc.instances.iter().find(|i| &i.id == instance) else {
                return Err(LifecycleError::NotFound(instance.to_string()));
            };
            if inst.container_id.is_some() && inst.health == Health::Healthy && self.health.health_of(instance) == Some(Health::Healthy) {
                return Ok(());
            }
            if inst.restarts > 0
                || inst.exit_code.is_some()
                || self.candidate_failures.lock().unwrap_or_else(|e| e.into_inner()).contains(instance)
            {
                let reason = inst.last_error.clone().unwrap_or_else(|| "its container exited".into());
                return Err(LifecycleError::Failed { name: svc.spec.name, reason: format!("the new instance failed: {reason}") });
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    let why = inst.last_error.clone().map(|e| format!(" (last error: {e})")).unwrap_or_default();
                    return Err(LifecycleError::Failed {
                        name: svc.spec.name,
                        reason: format!(
                            "the new instance was not healthy within {}s (health {}){why}",
                            timeout.as_secs(),
                            inst.health.as_str()
                        ),
                    });
                }
                Ok(_) => continue,
            }
        }
    }

    /// Where an instance answers, once the health monitor probes it.
    pub fn endpoint_of(&self, service: &ServiceId, instance: &InstanceId) -> Option<SocketAddr> {
        self.health.endpoints_of(service).into_iter().find(|(i, _)| i == instance).map(|(_, a)| a)
    }

    /// Takes an instance out of routing for good (the reconciler will not probe it again),
    /// so calls stop choosing it while the ones under way finish.
    pub fn drain(&self, service: &ServiceId, instance: &InstanceId) {
        self.draining.lock().unwrap_or_else(|e| e.into_inner()).insert(instance.clone());
        self.health.unregister(instance);
        self.changed(service);
    }

    /// Puts a service's drained instances back into routing (a rollback wants them again):
    /// the next reconcile pass probes them like any other.
    pub async fn undrain(&self, service: &ServiceId) -> Result<(), LifecycleError> {
        let svc = self.get(service.as_str()).await?;
        {
            let mut d = self.draining.lock().unwrap_or_else(|e| e.into_inner());
            for i in svc.instances.iter().filter(|i| i.wanted) {
                d.remove(&i.id);
            }
        }
        self.trigger(service);
        Ok(())
    }

    /// Marks instances unwanted: the reconciler removes their containers, then their rows,
    /// in one pass (one at a time, each retire would wait for the pass removing the last).
    pub async fn retire(&self, service: &ServiceId, instances: &[InstanceId]) -> Result<(), LifecycleError> {
        {
            let lease = self.lease(service);
            let _held = lease.lock().await;
            for instance in instances {
                self.store.retire_instance(instance).await?;
            }
        }
        self.changed(service);
        self.trigger(service);
        Ok(())
    }

    /// Makes the rollout's outcome the services' own (see `Store::commit_rollout`).
    pub async fn commit_rollout(&self, commit: RolloutCommit) -> Result<(), LifecycleError> {
        let ids: Vec<ServiceId> = commit.services.iter().map(|(id, _, _)| id.clone()).collect();
        let leases: Vec<_> = ids.iter().map(|id| self.lease(id)).collect();
        let mut held = Vec::with_capacity(leases.len());
        for l in &leases {
            held.push(l.lock().await);
        }
        let instance = commit.instance.clone();
        self.store.commit_rollout(commit).await?;
        drop(held);
        self.set_rollout_config(&instance, None);
        for id in &ids {
            self.changed(id);
            self.trigger(id);
        }
        Ok(())
    }

    /// Retires every new instance of the services and finishes the deployment with
    /// `outcome` (see `Store::abort_rollout`).
    pub async fn abort_rollout(
        &self,
        addon_instance: &str,
        services: &[ServiceId],
        deployment: i64,
        outcome: &'static str,
        reason: String,
    ) -> Result<(), LifecycleError> {
        let leases: Vec<_> = services.iter().map(|id| self.lease(id)).collect();
        let mut held = Vec::with_capacity(leases.len());
        for l in &leases {
            held.push(l.lock().await);
        }
        self.store.abort_rollout(services.to_vec(), deployment, outcome, reason).await?;
        drop(held);
        self.set_rollout_config(addon_instance, None);
        for id in services {
            self.changed(id);
            self.trigger(id);
        }
        Ok(())
    }
}
