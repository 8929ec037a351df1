//! The runtime's networks and named volumes: each owner's network made from a free subnet
//! of `docker.subnet_pool` (one lock per name, a book of subnets being handed out, duplicates
//! of one name reduced to one), found again after a restart by its labels, and removed with
//! its owner; named volumes made with this daemon's labels.

use super::*;

impl Runtime {
    /// The lock of one network name: taken while deciding whether that network is still
    /// wanted and removing it; [`Runtime::ensure_network`] takes it itself.
    pub async fn network_lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.net_locks.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_string()).or_default().clone();
        lock.lock_owned().await
    }

    fn net_info(name: &str, id: &str, ipam: Option<&Ipam>) -> Option<NetInfo> {
        let cfg = ipam?.config.as_ref()?;
        cfg.iter().find_map(|c| {
            let subnet = Subnet::parse(c.subnet.as_deref()?)?;
            // Docker leaves the gateway out when it was not asked for one: the first host.
            let gateway = c.gateway.as_deref().and_then(|g| g.parse().ok()).unwrap_or_else(|| subnet.gateway());
            Some(NetInfo { name: name.to_string(), id: id.to_string(), subnet, gateway })
        })
    }

    /// The networks named exactly `name` (Docker before 25 lets two have one name, e.g. when
    /// a create sent by a daemon killed meanwhile lands after its successor made one).
    async fn networks_named(&self, d: &Docker, name: &str) -> Result<Vec<bollard::models::Network>, RuntimeError> {
        let opts = ListNetworksOptions { filters: Some(HashMap::from([("name".to_string(), vec![name.to_string()])])) };
        let list = d.list_networks(Some(opts)).await.map_err(|e| self.map_err(e))?;
        Ok(list.into_iter().filter(|n| n.name.as_deref() == Some(name)).collect())
    }

    /// Keeps one of several networks sharing a name (the one with containers, else the one
    /// known already, else the oldest) and removes the others.
    async fn dedupe(&self, d: &Docker, name: &str, found: Vec<bollard::models::Network>) -> Result<(), RuntimeError> {
        let known = self.network(name).map(|n| n.id);
        let mut ranked = Vec::new();
        for n in found {
            let id = n.id.clone().unwrap_or_default();
            let attached = match d.inspect_network(&id, None).await {
                Ok(i) => i.containers.map(|c| c.len()).unwrap_or(0),
                Err(e) if Self::status_of(&e) == Some(404) => continue,
                Err(e) => return Err(self.map_err(e)),
            };
            let unknown = known.as_deref() != Some(id.as_str());
            ranked.push((std::cmp::Reverse(attached), unknown, n.created.map(|c| c.to_string()).unwrap_or_default(), id));
        }
        ranked.sort();
        for (_, _, _, id) in ranked.into_iter().skip(1) {
            if known.as_deref() == Some(id.as_str()) {
                self.networks.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
            }
            tracing::warn!(network = %name, %id, "removing a second network of the same name");
            match d.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if Self::status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.map_err(e)),
            }
        }
        Ok(())
    }

    /// A free `/subnet_prefix` of the pool, reserved until [`Runtime::unreserve`].
    async fn reserve_subnet(&self, d: &Docker, name: &str, refused: &[Subnet]) -> Result<Subnet, RuntimeError> {
        let stale = {
            let book = self.subnets.lock().unwrap_or_else(|e| e.into_inner());
            book.seen_at.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) || !refused.is_empty()
        };
        if stale {
            let mut seen = Vec::new();
            for n in d.list_networks(None::<ListNetworksOptions>).await.map_err(|e| self.map_err(e))? {
                seen.extend(
                    n.ipam.and_then(|i| i.config).unwrap_or_default().iter().filter_map(|c| c.subnet.as_deref().and_then(Subnet::parse)),
                );
            }
            let mut book = self.subnets.lock().unwrap_or_else(|e| e.into_inner());
            book.seen = seen;
            book.seen_at = Some(std::time::Instant::now());
        }
        let pool = Subnet::parse(&self.cfg.docker.subnet_pool)
            .ok_or_else(|| RuntimeError::NoSubnet("docker.subnet_pool is not an IPv4 range".into()))?;
        let prefix = self.cfg.docker.subnet_prefix;
        let mut used = isolation::host_routes();
        used.extend_from_slice(refused);
        let mut book = self.subnets.lock().unwrap_or_else(|e| e.into_inner());
        book.refused.retain(|(_, at)| at.elapsed() < Duration::from_secs(600));
        used.extend(book.seen.iter().chain(book.reserved.iter()).copied());
        used.extend(book.refused.iter().map(|(s, _)| *s));
        // Where the name hashes to: daemons sharing a pool then rarely race for one subnet.
        let hint = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let subnet = isolation::pick_from(pool, prefix, &used, hint).ok_or_else(|| {
            RuntimeError::NoSubnet(format!(
                "no /{prefix} of docker.subnet_pool ({pool}) is free for network {name}: every one overlaps a Docker network or a host route. Widen the pool (and the unit's IPAddressAllow=) or remove networks no longer used"
            ))
        })?;
        book.reserved.push(subnet);
        Ok(subnet)
    }

    /// Ends a reservation; `made` puts the subnet among those seen (Docker's list may be
    /// older than the network).
    fn unreserve(&self, subnet: Subnet, made: bool) {
        let mut book = self.subnets.lock().unwrap_or_else(|e| e.into_inner());
        book.reserved.retain(|s| *s != subnet);
        if made {
            book.seen.push(subnet);
        }
    }

    /// The network a service's containers join, made when missing: bridge, internal when
    /// the plan says so, a subnet of `docker.subnet_pool` that overlaps no other network
    /// and no host route, labelled with this daemon and the owner. A network of that name
    /// that is not this daemon's is never used.
    pub async fn ensure_network(&self, plan: &NetworkPlan, daemon_id: &str) -> Result<NetInfo, RuntimeError> {
        let _held = self.network_lock(&plan.name).await;
        if let Some(n) = self.networks.lock().unwrap_or_else(|e| e.into_inner()).get(&plan.name) {
            return Ok(n.clone());
        }
        let d = self.client().await?;
        // Subnets Docker refused as overlapping (taken by another daemon just now).
        let mut refused: Vec<Subnet> = Vec::new();
        for _ in 0..16 {
            let found = self.networks_named(&d, &plan.name).await?;
            if found.len() > 1 {
                self.dedupe(&d, &plan.name, found).await?;
                continue;
            }
            if let Some(n) = found.into_iter().next() {
                let labels = n.labels.clone().unwrap_or_default();
                if labels.get(LABEL_DAEMON).map(String::as_str) != Some(daemon_id) {
                    return Err(RuntimeError::Api(format!(
                        "network {} exists but is not this daemon's (label {LABEL_DAEMON}); remove it (`docker network rm {}`) or move the other daemon's data",
                        plan.name, plan.name
                    )));
                }
                let info = Self::net_info(&plan.name, n.id.as_deref().unwrap_or_default(), n.ipam.as_ref())
                    .ok_or_else(|| RuntimeError::Api(format!("network {} has no IPv4 subnet", plan.name)))?;
                self.networks.lock().unwrap_or_else(|e| e.into_inner()).insert(plan.name.clone(), info.clone());
                return Ok(info);
            }
            let subnet = self.reserve_subnet(&d, &plan.name, &refused).await?;
            let req = NetworkCreateRequest {
                name: plan.name.clone(),
                driver: Some("bridge".into()),
                internal: Some(plan.internal),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(subnet.gateway().to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                labels: Some(HashMap::from([
                    (LABEL_MANAGED.to_string(), "true".to_string()),
                    (LABEL_DAEMON.to_string(), daemon_id.to_string()),
                    (LABEL_OWNER.to_string(), plan.owner.clone()),
                ])),
                ..Default::default()
            };
            let made = d.create_network(req).await;
            self.unreserve(subnet, made.is_ok());
            match made {
                Ok(r) => {
                    tracing::info!(network = %plan.name, %subnet, internal = plan.internal, "created network");
                    let info = NetInfo { name: plan.name.clone(), id: r.id, subnet, gateway: subnet.gateway() };
                    self.networks.lock().unwrap_or_else(|e| e.into_inner()).insert(plan.name.clone(), info.clone());
                    return Ok(info);
                }
                // Made by someone else in between: found on the next round.
                Err(e) if Self::status_of(&e) == Some(409) => {}
                // Another daemon took that subnet in between: the next free one.
                Err(e) if Self::status_of(&e) == Some(403) || e.to_string().contains("overlap") => {
                    tracing::debug!(network = %plan.name, %subnet, error = %e, "subnet taken meanwhile; trying the next");
                    refused.push(subnet);
                    self.subnets.lock().unwrap_or_else(|e| e.into_inner()).refused.push((subnet, std::time::Instant::now()));
                }
                Err(e) => return Err(self.map_err(e)),
            }
        }
        Err(RuntimeError::Api(format!("cannot make network {}: every subnet tried was taken meanwhile", plan.name)))
    }

    /// Leaves one network of that name (the caller holds its [`Runtime::network_lock`]).
    pub async fn dedupe_network(&self, name: &str) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        let found = self.networks_named(&d, name).await?;
        if found.len() > 1 {
            self.dedupe(&d, name, found).await?;
        }
        Ok(())
    }

    /// A network made or found since start.
    pub fn network(&self, name: &str) -> Option<NetInfo> {
        self.networks.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Removes one of our networks, every one of that name (the caller holds its
    /// [`Runtime::network_lock`] and has checked that nothing wants it). False when Docker
    /// refuses because containers are still attached; a missing network counts as removed.
    pub async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        let d = self.client().await?;
        self.networks.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        let mut all = true;
        for n in self.networks_named(&d, name).await? {
            match d.remove_network(n.id.as_deref().unwrap_or(name)).await {
                Ok(()) => tracing::info!(network = %name, "removed network"),
                Err(e) if Self::status_of(&e) == Some(404) => {}
                Err(e) if Self::status_of(&e) == Some(403) || Self::status_of(&e) == Some(409) => {
                    tracing::debug!(network = %name, error = %e, "network still in use");
                    all = false;
                }
                Err(e) => return Err(self.map_err(e)),
            }
        }
        Ok(all)
    }

    /// Every network carrying this daemon's label.
    pub async fn list_owned_networks(&self, daemon_id: &str) -> Result<Vec<OwnedNetwork>, RuntimeError> {
        let d = self.client().await?;
        let opts =
            ListNetworksOptions { filters: Some(HashMap::from([("label".to_string(), vec![format!("{LABEL_DAEMON}={daemon_id}")])])) };
        let list = d.list_networks(Some(opts)).await.map_err(|e| self.map_err(e))?;
        Ok(list
            .into_iter()
            .filter_map(|n| {
                let name = n.name.clone()?;
                let owner = n.labels.as_ref().and_then(|l| l.get(LABEL_OWNER).cloned()).unwrap_or_default();
                let info = Self::net_info(&name, n.id.as_deref().unwrap_or_default(), n.ipam.as_ref());
                Some(OwnedNetwork { name, owner, info })
            })
            .collect())
    }

    /// Makes a named volume with this daemon's labels (Docker would make it unlabelled at
    /// the first mount); one that exists is left as it is.
    pub(super) async fn ensure_volume(&self, name: &str, daemon_id: &str, owner: &str) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some("local".into()),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_DAEMON.to_string(), daemon_id.to_string()),
                (LABEL_OWNER.to_string(), owner.to_string()),
            ])),
            ..Default::default()
        };
        d.create_volume(req).await.map(|_| ()).map_err(|e| self.map_err(e))
    }
}
