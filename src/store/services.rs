//! Services and their instances: the rows the reconciler drives, each instance owning its
//! unique host port (booked by the same commit that inserts the row), and the restart
//! failures that decide when a crashing service is given up on.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::addons::InstallRow;
use super::{is_unique_violation, now_ms, Store, StoreError};
use crate::model::{Desired, Health, Instance, InstanceId, Phase, Service, ServiceId, ServiceSpec};

/// A new instance to insert: its ordinal and the host port booked for it.
#[derive(Debug, Clone, Copy)]
pub struct NewInstance {
    /// Its place in the service (0-based): instances at or above the replica count are the ones scaled away.
    pub ordinal: u32,
    /// The host port booked for it; the row holds it, so a crash cannot leave it booked twice.
    pub host_port: u16,
}

/// What [`Store::commit_rollout`] writes.
#[derive(Debug, Clone)]
pub struct RolloutCommit {
    /// The addon instance rolled out.
    pub instance: String,
    /// Its new version, for the install row.
    pub version: String,
    /// Its config (JSON text) as the new version validated it.
    pub config: String,
    /// The deployment row marked succeeded in the same commit.
    pub deployment: i64,
    /// Each service with its new spec and replica count.
    pub services: Vec<(ServiceId, ServiceSpec, u32)>,
}

/// A new service to insert with its instances (see [`Store::insert_services`]).
#[derive(Debug, Clone)]
pub struct NewService {
    /// Chosen by the caller, so it can name the service before the commit returns.
    pub id: ServiceId,
    /// What the operator or the manifest asked for, stored as JSON.
    pub spec: ServiceSpec,
    /// How many instances are wanted.
    pub replicas: u32,
    /// Started or stopped: what the reconciler drives it towards.
    pub desired: Desired,
    /// The phase it starts in (`Creating`, or `Started` with no replicas).
    pub phase: Phase,
    /// Its instance rows, each with the host port booked for it.
    pub instances: Vec<NewInstance>,
}

impl Store {
    pub async fn count_services(&self) -> Result<usize, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT COUNT(*) FROM services", [], |r| r.get::<_, i64>(0))? as usize)).await
    }

    pub async fn booked_ports(&self) -> Result<HashSet<u16>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached("SELECT host_port FROM instances")?;
            let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
            let mut set = HashSet::new();
            for r in rows {
                set.insert(r? as u16);
            }
            Ok(set)
        })
        .await
    }

    /// Inserts a service and its instances (with their booked ports) in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_service(
        &self,
        id: ServiceId,
        spec: ServiceSpec,
        replicas: u32,
        desired: Desired,
        phase: Phase,
        instances: Vec<NewInstance>,
        addon_instance: Option<String>,
    ) -> Result<Service, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let spec_json = serde_json::to_string(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let res = tx.execute(
                "INSERT INTO services (id, name, plugin_id, spec, replicas, desired, phase, created_at, updated_at, addon_instance)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                params![id.as_str(), spec.name, spec.plugin_id, spec_json, replicas, desired.as_str(), phase.as_str(), now, addon_instance],
            );
            if let Err(e) = res {
                return Err(if is_unique_violation(&e) { StoreError::NameTaken(spec.name.clone()) } else { e.into() });
            }
            for inst in &instances {
                insert_instance(&tx, &id, *inst)?;
            }
            tx.commit()?;
            load_service(c, id.as_str())?.ok_or_else(|| StoreError::Corrupt("service vanished after insert".into()))
        })
        .await
    }

    /// Inserts several services of one addon instance, and (for an install) the install
    /// row, in one transaction: an install is recorded whole or not at all, so a crash can
    /// never leave an addon installed with some of its services missing.
    pub async fn insert_services(
        &self,
        install: Option<(InstallRow, super::NewDeployment)>,
        addon_instance: String,
        services: Vec<NewService>,
    ) -> Result<Vec<Service>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            if let Some((row, deployment)) = &install {
                super::deployments::insert(&tx, deployment)?;
                let res = tx.execute(
                    "INSERT INTO addon_installs (instance, addon, version, config, created_at, updated_at, base, environment, display_name) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
                    params![row.instance, row.addon, row.version, row.config, now, row.base, row.environment, row.display_name],
                );
                match res {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::NameTaken(row.instance.clone())),
                    Err(e) => return Err(e.into()),
                }
            }
            for s in &services {
                let spec_json = serde_json::to_string(&s.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let res = tx.execute(
                    "INSERT INTO services (id, name, plugin_id, spec, replicas, desired, phase, created_at, updated_at, addon_instance)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                    params![
                        s.id.as_str(),
                        s.spec.name,
                        s.spec.plugin_id,
                        spec_json,
                        s.replicas,
                        s.desired.as_str(),
                        s.phase.as_str(),
                        now,
                        addon_instance
                    ],
                );
                if let Err(e) = res {
                    return Err(if is_unique_violation(&e) { StoreError::NameTaken(s.spec.name.clone()) } else { e.into() });
                }
                for inst in &s.instances {
                    insert_instance(&tx, &s.id, *inst)?;
                }
            }
            tx.commit()?;
            let mut out = Vec::with_capacity(services.len());
            for s in &services {
                out.push(load_service(c, s.id.as_str())?.ok_or_else(|| StoreError::Corrupt("service vanished after insert".into()))?);
            }
            Ok(out)
        })
        .await
    }

    /// Uninstalls an addon instance in one transaction: the install row goes and every
    /// service of the instance is marked for deletion (the reconciler removes containers
    /// and rows). Returns the services marked, or `None` when nothing is installed there.
    pub async fn uninstall(&self, instance: &str) -> Result<Option<Vec<ServiceId>>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if tx.execute("DELETE FROM addon_installs WHERE instance = ?1", [&instance])? == 0 {
                return Ok(None);
            }
            let ids: Vec<ServiceId> = {
                let mut st = tx.prepare_cached("SELECT id FROM services WHERE addon_instance = ?1 ORDER BY created_at, id")?;
                let rows = st.query_map([&instance], |r| r.get::<_, String>(0))?;
                rows.map(|r| r.map(ServiceId)).collect::<Result<_, _>>()?
            };
            tx.execute(
                "UPDATE services SET desired = 'deleted', phase = 'Deleting', updated_at = ?2 WHERE addon_instance = ?1",
                params![instance, now_ms()],
            )?;
            tx.commit()?;
            Ok(Some(ids))
        })
        .await
    }

    /// Services that belong to an addon instance that is not installed (left by an older
    /// addond whose uninstall was cut short) and are not yet marked for deletion.
    pub async fn orphaned_addon_services(&self) -> Result<Vec<ServiceId>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT id FROM services WHERE addon_instance IS NOT NULL AND desired != 'deleted'
                   AND addon_instance NOT IN (SELECT instance FROM addon_installs) ORDER BY created_at, id",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.map(|r| r.map(ServiceId)).collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn list_services(&self) -> Result<Vec<Service>, StoreError> {
        self.call(|c| {
            let ids: Vec<String> = {
                let mut st = c.prepare_cached("SELECT id FROM services ORDER BY created_at, id")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(s) = load_service(c, &id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Looks a service up by id, failing that by slug (the `name` column), failing that by
    /// display name; a display name that several services share is
    /// [`StoreError::AmbiguousName`], naming their ids.
    pub async fn get_service(&self, id_or_name: &str) -> Result<Option<Service>, StoreError> {
        let key = id_or_name.to_string();
        self.call(move |c| {
            if let Some(s) = load_service(c, &key)? {
                return Ok(Some(s));
            }
            let id: Option<String> = c.query_row("SELECT id FROM services WHERE name = ?1", [&key], |r| r.get(0)).optional()?;
            if let Some(id) = id {
                return load_service(c, &id);
            }
            // Display names live in the spec; there are few services, so no index.
            let mut st = c.prepare("SELECT id FROM services WHERE json_extract(spec, '$.display_name') = ?1 ORDER BY created_at, id")?;
            let ids = st.query_map([&key], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            match ids.as_slice() {
                [] => Ok(None),
                [id] => load_service(c, id),
                _ => Err(StoreError::AmbiguousName { name: key, ids }),
            }
        })
        .await
    }

    /// Sets what the operator wants and the phase that starts the way there; clears a
    /// previous failure so a start after `Failed` begins afresh.
    pub async fn set_desired(&self, id: &ServiceId, desired: Desired, phase: Phase) -> Result<Option<Service>, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE services SET desired = ?2, phase = ?3, updated_at = ?4,
                   last_error = CASE WHEN ?2 = 'started' THEN NULL ELSE last_error END,
                   exit_code = CASE WHEN ?2 = 'started' THEN NULL ELSE exit_code END
                 WHERE id = ?1",
                params![id.as_str(), desired.as_str(), phase.as_str(), now_ms()],
            )?;
            if n == 0 {
                return Ok(None);
            }
            if desired == Desired::Started {
                tx.execute("DELETE FROM restart_failures WHERE service_id = ?1", [id.as_str()])?;
                tx.execute("UPDATE instances SET streak = 0, next_restart_at = NULL WHERE service_id = ?1", [id.as_str()])?;
            }
            tx.commit()?;
            load_service(c, id.as_str())
        })
        .await
    }

    pub async fn set_phase(
        &self,
        id: &ServiceId,
        phase: Phase,
        last_error: Option<String>,
        exit_code: Option<i64>,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE services SET phase = ?2, last_error = ?3, exit_code = ?4, updated_at = ?5
             WHERE id = ?1 AND (phase IS NOT ?2 OR last_error IS NOT ?3 OR exit_code IS NOT ?4)",
            (id.0.clone(), phase.as_str(), last_error, exit_code, now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Sets the wanted replica count: the `replicas` lowest ordinals are wanted (new ones are
    /// inserted with the ports in `new`), the rest are marked unwanted for removal.
    pub async fn scale(&self, id: &ServiceId, replicas: u32, new: Vec<NewInstance>) -> Result<Option<Service>, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n =
                tx.execute("UPDATE services SET replicas = ?2, updated_at = ?3 WHERE id = ?1", params![id.as_str(), replicas, now_ms()])?;
            if n == 0 {
                return Ok(None);
            }
            // The `replicas` lowest ordinals are wanted: after a rollout the instances need not
            // be numbered from 0, so it is a count, not `ordinal < replicas`.
            tx.execute(
                "UPDATE instances SET wanted = (id IN (SELECT id FROM instances WHERE service_id = ?1 AND spec IS NULL
                                                       ORDER BY ordinal LIMIT ?2))
                 WHERE service_id = ?1 AND spec IS NULL",
                params![id.as_str(), replicas],
            )?;
            for inst in &new {
                insert_instance(&tx, &id, *inst)?;
            }
            tx.commit()?;
            load_service(c, id.as_str())
        })
        .await
    }

    /// Writes the mutable fields of an instance (container, health, restart bookkeeping).
    pub async fn update_instance(&self, inst: &Instance) -> Result<(), StoreError> {
        let i = inst.clone();
        self.call(move |c| {
            c.prepare_cached(
                "UPDATE instances SET container_id = ?2, health = ?3, restarts = ?4, streak = ?5,
                   started_at = ?6, healthy_since = ?7, next_restart_at = ?8, last_error = ?9, exit_code = ?10
                 WHERE id = ?1",
            )?
            .execute(params![
                i.id.as_str(),
                i.container_id,
                i.health.as_str(),
                i.restarts,
                i.streak,
                i.started_at,
                i.healthy_since,
                i.next_restart_at,
                i.last_error,
                i.exit_code
            ])?;
            Ok(())
        })
        .await
    }

    /// Records a health transition without touching restart bookkeeping (called by the
    /// health monitor, which does not hold the service lease).
    pub async fn set_instance_health(&self, id: &InstanceId, health: Health, healthy_since: Option<i64>) -> Result<(), StoreError> {
        self.exec("UPDATE instances SET health = ?2, healthy_since = ?3 WHERE id = ?1", (id.0.clone(), health.as_str(), healthy_since))
            .await?;
        Ok(())
    }

    /// Moves an instance to another host port (its old one was taken by another program).
    pub async fn rebook_port(&self, id: &InstanceId, port: u16) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| match c.execute("UPDATE instances SET host_port = ?2 WHERE id = ?1", params![id.as_str(), port]) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::PortTaken(port)),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Removes an instance row, which frees its host port in the same commit.
    pub async fn delete_instance(&self, id: &InstanceId) -> Result<(), StoreError> {
        self.exec("DELETE FROM instances WHERE id = ?1", [id.0.clone()]).await?;
        Ok(())
    }

    /// Removes a service and (by cascade) its instances and port bookings.
    pub async fn delete_service(&self, id: &ServiceId) -> Result<(), StoreError> {
        self.exec("DELETE FROM services WHERE id = ?1", [id.0.clone()]).await?;
        Ok(())
    }

    /// Records a failed restart and returns how many fell inside the window.
    pub async fn record_restart_failure(&self, id: &ServiceId, reason: String, window_ms: i64) -> Result<u32, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let now = now_ms();
            let tx = c.transaction()?;
            tx.execute("INSERT INTO restart_failures (service_id, at, reason) VALUES (?1, ?2, ?3)", params![id.as_str(), now, reason])?;
            tx.execute("DELETE FROM restart_failures WHERE service_id = ?1 AND at < ?2", params![id.as_str(), now - window_ms])?;
            let n: u32 = tx.query_row("SELECT COUNT(*) FROM restart_failures WHERE service_id = ?1", [id.as_str()], |r| r.get(0))?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// The services that belong to an installed addon instance.
    pub async fn services_of_addon(&self, instance: &str) -> Result<Vec<Service>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            let ids: Vec<String> = {
                let mut st = c.prepare_cached("SELECT id FROM services WHERE addon_instance = ?1 ORDER BY created_at, id")?;
                let rows = st.query_map([&instance], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::new();
            for id in ids {
                if let Some(s) = load_service(c, &id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Adds a rollout's new instances beside the old ones, all or none: each with its own
    /// ordinal and booked port, running `spec` until [`Store::commit_rollout`] makes that
    /// the service's.
    pub async fn add_candidates(
        &self,
        service: &ServiceId,
        insts: Vec<NewInstance>,
        spec: &ServiceSpec,
    ) -> Result<Vec<InstanceId>, StoreError> {
        let (service, spec) = (service.clone(), serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(insts.len());
            for inst in insts {
                let id = InstanceId::generate();
                let res = tx.execute(
                    "INSERT INTO instances (id, service_id, ordinal, host_port, wanted, spec) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                    params![id.as_str(), service.as_str(), inst.ordinal, inst.host_port, spec],
                );
                match res {
                    Ok(_) => ids.push(id),
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::PortTaken(inst.host_port)),
                    Err(e) => return Err(e.into()),
                }
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// Marks one instance unwanted: the reconciler removes its container, then the row.
    pub async fn retire_instance(&self, id: &InstanceId) -> Result<(), StoreError> {
        self.exec("UPDATE instances SET wanted = 0 WHERE id = ?1", [id.0.clone()]).await?;
        Ok(())
    }

    /// Makes a rollout's outcome the services' own, in one transaction: each service gets
    /// its new spec (and replica count), its new instances become ordinary ones and any old
    /// one still there is retired; the install row gets the new version and config, and the
    /// deployment is marked succeeded. A crash before this commit leaves the old version
    /// recorded, which the restart's recovery rolls back to.
    pub async fn commit_rollout(&self, commit: RolloutCommit) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            for (id, spec, replicas) in &commit.services {
                let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                tx.execute(
                    "UPDATE services SET spec = ?2, plugin_id = ?3, replicas = ?4, updated_at = ?5 WHERE id = ?1",
                    params![id.as_str(), spec_json, spec.plugin_id, replicas, now],
                )?;
                tx.execute("UPDATE instances SET wanted = 0 WHERE service_id = ?1 AND spec IS NULL", [id.as_str()])?;
                tx.execute("UPDATE instances SET spec = NULL WHERE service_id = ?1 AND spec IS NOT NULL", [id.as_str()])?;
            }
            tx.execute(
                "UPDATE addon_installs SET version = ?2, config = ?3, updated_at = ?4 WHERE instance = ?1",
                params![commit.instance, commit.version, commit.config, now],
            )?;
            tx.execute(
                "UPDATE deployments SET outcome = 'succeeded', finished_at = ?2 WHERE id = ?1 AND outcome = 'running'",
                params![commit.deployment, now],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Undoes a rollout that did not commit, in one transaction: every new instance of the
    /// services is retired (the reconciler removes them) and the deployment is marked with
    /// its outcome and reason. The old instances are untouched.
    pub async fn abort_rollout(
        &self,
        services: Vec<ServiceId>,
        deployment: i64,
        outcome: &'static str,
        reason: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for id in &services {
                tx.execute("UPDATE instances SET wanted = 0 WHERE service_id = ?1 AND spec IS NOT NULL", [id.as_str()])?;
            }
            tx.execute(
                "UPDATE deployments SET outcome = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1 AND outcome = 'running'",
                params![deployment, outcome, reason, now_ms()],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Services stopped or failed, unchanged for longer than `older_than_ms`.
    pub async fn stale_services(&self, older_than_ms: i64) -> Result<Vec<ServiceId>, StoreError> {
        self.call(move |c| {
            let mut st =
                c.prepare("SELECT id FROM services WHERE phase IN ('Stopped','Failed') AND updated_at < ?1 AND desired != 'deleted'")?;
            let rows = st.query_map([now_ms() - older_than_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.map(|r| r.map(ServiceId)).collect::<Result<_, _>>()?)
        })
        .await
    }
}

fn insert_instance(tx: &rusqlite::Transaction<'_>, service: &ServiceId, inst: NewInstance) -> Result<(), StoreError> {
    let res = tx.execute(
        "INSERT INTO instances (id, service_id, ordinal, host_port, wanted) VALUES (?1, ?2, ?3, ?4, 1)",
        params![InstanceId::generate().as_str(), service.as_str(), inst.ordinal, inst.host_port],
    );
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::PortTaken(inst.host_port)),
        Err(e) => Err(e.into()),
    }
}

fn load_service(c: &Connection, id: &str) -> Result<Option<Service>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT id, spec, replicas, desired, phase, last_error, exit_code, created_at, updated_at, addon_instance FROM services WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .optional()?;
    let Some((id, spec, replicas, desired, phase, last_error, exit_code, created_at, updated_at, addon_instance)) = row else {
        return Ok(None);
    };
    let spec: ServiceSpec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("service {id} spec: {e}")))?;
    let desired = Desired::parse(&desired).ok_or_else(|| StoreError::Corrupt(format!("service {id} desired `{desired}`")))?;
    let phase = Phase::parse(&phase).ok_or_else(|| StoreError::Corrupt(format!("service {id} phase `{phase}`")))?;
    let mut st = c.prepare_cached(
        "SELECT id, service_id, ordinal, host_port, wanted, container_id, health, restarts, started_at, last_error,
                exit_code, next_restart_at, streak, healthy_since, spec
         FROM instances WHERE service_id = ?1 ORDER BY ordinal",
    )?;
    let instances = st.query_map([&id], instance_from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Service {
        id: ServiceId(id),
        spec,
        replicas,
        desired,
        phase,
        last_error,
        exit_code,
        created_at,
        updated_at,
        addon_instance,
        instances,
    }))
}

fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<Instance> {
    Ok(Instance {
        id: InstanceId(r.get(0)?),
        service_id: ServiceId(r.get(1)?),
        ordinal: r.get(2)?,
        host_port: r.get::<_, i64>(3)? as u16,
        wanted: r.get(4)?,
        container_id: r.get(5)?,
        health: Health::parse(&r.get::<_, String>(6)?),
        restarts: r.get(7)?,
        started_at: r.get(8)?,
        last_error: r.get(9)?,
        exit_code: r.get(10)?,
        next_restart_at: r.get(11)?,
        streak: r.get(12)?,
        healthy_since: r.get(13)?,
        spec: match r.get::<_, Option<String>>(14)? {
            None => None,
            Some(text) => Some(Box::new(
                serde_json::from_str(&text)
                    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(14, rusqlite::types::Type::Text, Box::new(e)))?,
            )),
        },
    })
}
