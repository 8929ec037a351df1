//! The reconciler: the passes that drive Docker toward what the store says is desired, one
//! service at a time under its lease: containers made, started, restarted with backoff or
//! removed, the owner's network made first and removed after, health verdicts written, and
//! the periodic resync that adopts what exists and removes strays. Requests (in the parent
//! module) only write the desired state and wake it.

use super::*;

impl Lifecycle {
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
        let mut todo = Vec::new();
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
                self.draining.lock().unwrap_or_else(|e| e.into_inner()).remove(&inst.id);
                self.candidate_failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&inst.id);
                continue;
            }
            if inst.is_candidate() && self.candidate_failures.lock().unwrap_or_else(|e| e.into_inner()).contains(&inst.id) {
                // Failed once: left stopped until its rollout removes it.
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
            if net.is_none() {
                instances.push(inst);
                continue;
            }
            todo.push(inst);
        }
        // Side by side: a container's create and start are mostly Docker's waiting, and a
        // rollout's batch of new instances should cost one start, not one per instance.
        let results = match net.as_ref() {
            Some(net) => futures_util::future::join_all(todo.into_iter().map(|inst| self.reconcile_instance(&svc, inst, net))).await,
            None => Vec::new(),
        };
        for r in results {
            let (mut inst, outcome) = r?;
            match outcome {
                Outcome::Running | Outcome::Starting => {}
                Outcome::Creating if inst.is_candidate() => {}
                Outcome::Creating => creating = true,
                Outcome::Failed(reason, code) if inst.is_candidate() => {
                    // A rollout's new instance fails alone: its rollout is told and removes
                    // it; the service and its old instances are untouched.
                    tracing::warn!(service = %svc.spec.name, instance = inst.ordinal, %reason, "new instance of a rollout failed");
                    self.health.unregister(&inst.id);
                    let _ = self.runtime.stop(&inst.container_name()).await;
                    inst.last_error = Some(reason);
                    inst.exit_code = code;
                    self.store.update_instance(&inst).await?;
                    self.candidate_failures.lock().unwrap_or_else(|e| e.into_inner()).insert(inst.id.clone());
                }
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
        // A rollout's new instance runs its own spec; everything else about it is the service's.
        let view;
        let svc = match &inst.spec {
            Some(spec) => {
                view = Service { spec: (**spec).clone(), instances: Vec::new(), ..svc.clone() };
                &view
            }
            None => svc,
        };
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
                // A rollout's new instance gets the config the rollout validated.
                let config_json = match &svc.addon_instance {
                    Some(a) => match self.rollout_config(a).filter(|_| inst.is_candidate()) {
                        Some(c) => c,
                        None => self.store.get_install(a).await?.map(|i| i.config).unwrap_or_else(|| "{}".into()),
                    },
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
                let t0 = std::time::Instant::now();
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
                tracing::debug!(service = %svc.spec.name, instance = inst.ordinal, ms = t0.elapsed().as_millis() as u64, "container created and started");
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
                // A rollout's new instance is not restarted: its first exit fails the rollout.
                if inst.is_candidate()
                    || (!svc.spec.restart_policy.restarts_after(code.unwrap_or(1)) && !reason.starts_with("health check"))
                {
                    inst.last_error = Some(reason.clone());
                    inst.exit_code = code;
                    inst.health = Health::Unknown;
                    self.store.update_instance(&inst).await?;
                    let why = if inst.is_candidate() {
                        reason
                    } else {
                        format!("{reason} (restart policy {})", svc.spec.restart_policy.as_str())
                    };
                    return Ok((inst, Outcome::Failed(why, code)));
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
        if self.draining.lock().unwrap_or_else(|e| e.into_inner()).contains(&inst.id) {
            return; // taken out of routing by a rollout, for good
        }
        let isolated = crate::model::wants_isolated(&self.cfg.docker, spec);
        let addr = if isolated || self.cfg.ports.instance_address == InstanceAddress::Container {
            match self.runtime.inspect(&inst.container_name()).await {
                Ok(Some(ContainerInfo { ip: Some(ip), .. })) => SocketAddr::new(ip, spec.port),
                _ => return, // no address yet: the next pass registers it
            }
        } else {
            let bound = crate::model::bind_address(spec.host, self.cfg.ports.publish_address);
            let host = if bound.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { bound };
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
