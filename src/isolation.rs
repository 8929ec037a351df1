//! What each container may see besides itself: the network it sits on and the named
//! volumes it mounts, both derived from who owns the service. An addon instance owns the
//! services it installed; plain services with the same `plugin_id` form a group; any other
//! plain service stands alone. Each owner gets a Docker network of its own (two when its
//! services ask for both kinds), so containers of different owners cannot reach each other
//! (Docker drops traffic between bridges), and a named volume belongs to its service unless
//! it is declared `shared`, then to the owner. Names carry the daemon's id, so two daemons
//! on one engine never share a network or a volume. The subnets of those networks come
//! from `docker.subnet_pool`, skipping every subnet an existing network or host route
//! overlaps.

use std::net::Ipv4Addr;

use crate::config::{prefix_mask, DockerConfig};
use crate::model::{ServiceSpec, Volume};

/// Label on networks and volumes naming their owner key (`a_<instance>`, …).
pub const LABEL_OWNER: &str = "addond.owner";

/// The group a service belongs to, for its network and its shared volumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The addon instance that installed the service.
    Addon(String),
    /// Plain services naming the same `plugin_id`.
    Plugin(String),
    /// A plain service on its own.
    Service(String),
}

impl Owner {
    pub fn of(spec: &ServiceSpec, addon_instance: Option<&str>) -> Owner {
        match (addon_instance, &spec.plugin_id) {
            (Some(a), _) => Owner::Addon(a.to_string()),
            (None, Some(p)) => Owner::Plugin(p.clone()),
            (None, None) => Owner::Service(spec.name.clone()),
        }
    }

    /// `a_<instance>`, `p_<plugin>` or `s_<service>`: unambiguous, as `_` separates the
    /// parts of network and volume names. Instance and service names never contain `_`;
    /// a plugin id may (`test_plugin`), so its `_` is written `.`, which no name, plugin id
    /// or volume name contains (`p_test.plugin`). Plugin ids without `_` keep their key.
    pub fn key(&self) -> String {
        match self {
            Owner::Addon(n) => format!("a_{n}"),
            Owner::Plugin(n) => format!("p_{}", n.replace('_', ".")),
            Owner::Service(n) => format!("s_{n}"),
        }
    }
}

/// The network a service's containers join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// `addond_<daemon id>_<owner key>`, with `_internal` for the kind without a route out.
    pub name: String,
    /// [`Owner::key`], put on the network as [`LABEL_OWNER`].
    pub owner: String,
    /// Internal: no route out of the host.
    pub internal: bool,
    /// Owned by an addon instance: the addon API listens on its gateway.
    pub addon: bool,
}

/// Where a service's containers go: its owner's network of the kind the service asked for
/// (`plugin_isolated` or `docker.isolated_network` in `networks` means internal).
pub fn network_plan(cfg: &DockerConfig, daemon_id: &str, spec: &ServiceSpec, addon_instance: Option<&str>) -> NetworkPlan {
    let owner = Owner::of(spec, addon_instance);
    let internal = crate::model::wants_isolated(cfg, spec);
    let key = owner.key();
    NetworkPlan {
        name: format!("addond_{daemon_id}_{key}{}", if internal { "_internal" } else { "" }),
        owner: key,
        internal,
        addon: matches!(owner, Owner::Addon(_)),
    }
}

/// The Docker volume behind a named volume, and the owner key it is labelled with: the
/// service's own (`addond_<daemon id>_s_<service>_<name>`) or, declared `shared`, its
/// owner's (`addond_<daemon id>_a_<instance>_<name>`).
pub fn volume_name(daemon_id: &str, spec: &ServiceSpec, addon_instance: Option<&str>, vol: &Volume) -> (String, String) {
    let scope = if vol.shared { Owner::of(spec, addon_instance) } else { Owner::Service(spec.name.clone()) }.key();
    (format!("addond_{daemon_id}_{scope}_{}", vol.source), scope)
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address, host bits clear.
    pub addr: u32,
    /// Prefix length, 0–32.
    pub len: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, len: u8) -> Subnet {
        let len = len.min(32);
        Subnet { addr: u32::from(addr) & prefix_mask(len), len }
    }

    /// `10.1.2.0/24`; IPv6 and garbage give `None`.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(Subnet::new(ip, len))
    }

    fn last(&self) -> u32 {
        self.addr | !prefix_mask(self.len)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.addr <= other.last() && other.addr <= self.last()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & prefix_mask(self.len) == self.addr
    }

    /// The first host address, where Docker puts the bridge (the network's gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr + 1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// The first `/prefix` of `pool` that overlaps nothing in `used`.
pub fn pick(pool: Subnet, prefix: u8, used: &[Subnet]) -> Option<Subnet> {
    pick_from(pool, prefix, used, 0)
}

/// [`pick`], starting the search at the `hint`-th subnet of the pool (modulo their number)
/// and wrapping around: daemons sharing a pool, each starting where its network's name
/// hashes to, rarely race for the same subnet (from the lowest one they all would).
pub fn pick_from(pool: Subnet, prefix: u8, used: &[Subnet], hint: u64) -> Option<Subnet> {
    if prefix < pool.len || prefix > 30 {
        return None;
    }
    let size = 1u64 << (32 - prefix);
    let slots = 1u64 << (prefix - pool.len);
    let start = u64::from(pool.addr) + (hint % slots) * size;
    pick_between(start, u64::from(pool.last()) + 1, prefix, used).or_else(|| pick_between(u64::from(pool.addr), start, prefix, used))
}

/// The first `prefix` subnet in `[at, end)` that overlaps nothing in `used`.
fn pick_between(mut at: u64, end: u64, prefix: u8, used: &[Subnet]) -> Option<Subnet> {
    let size = 1u64 << (32 - prefix);
    while at + size <= end {
        let cand = Subnet { addr: at as u32, len: prefix };
        match used.iter().filter(|u| u.overlaps(&cand)).map(|u| u64::from(u.last()) + 1).max() {
            None => return Some(cand),
            // Past everything in the way, to the next aligned candidate.
            Some(past) => at = past.max(at + size).div_ceil(size) * size,
        }
    }
    None
}

/// The host's IPv4 routes other than the default one (from `/proc/net/route`): a network
/// on one of them would hide part of the host's own network from it.
pub fn host_routes() -> Vec<Subnet> {
    std::fs::read_to_string("/proc/net/route").map(|t| parse_routes(&t)).unwrap_or_default()
}

fn parse_routes(text: &str) -> Vec<Subnet> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask …: each address is
            // its bytes in network order read as a native number, printed in hex.
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.to_ne_bytes();
            let mask = u32::from_be_bytes(u32::from_str_radix(f.get(7)?, 16).ok()?.to_ne_bytes());
            (mask != 0).then(|| Subnet::new(Ipv4Addr::from(dest), mask.leading_ones() as u8))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::CreateRequest;

    fn spec(v: serde_json::Value) -> ServiceSpec {
        serde_json::from_value::<CreateRequest>(v).unwrap().validate(&Config::default()).unwrap().0
    }

    #[test]
    fn owners_networks_and_volumes() {
        let cfg = Config::default().docker;
        let plain = spec(serde_json::json!({"name": "web", "image": "i", "volumes": ["data:/data"]}));
        let p = network_plan(&cfg, "d1", &plain, None);
        assert_eq!((p.name.as_str(), p.owner.as_str(), p.internal, p.addon), ("addond_d1_s_web", "s_web", false, false));
        let offline = spec(serde_json::json!({"name": "web", "image": "i", "networks": ["addond_isolated"]}));
        assert_eq!(network_plan(&cfg, "d1", &offline, None).name, "addond_d1_s_web_internal");
        let grouped = spec(
            serde_json::json!({"name": "web", "image": "i", "plugin_id": "shop", "volumes": [{"source": "c", "target": "/c", "shared": true}, "own:/own"]}),
        );
        assert_eq!(network_plan(&cfg, "d1", &grouped, None).name, "addond_d1_p_shop");
        let p = network_plan(&cfg, "d1", &grouped, Some("shop-eu"));
        assert_eq!((p.name.as_str(), p.addon), ("addond_d1_a_shop-eu", true));
        assert_eq!(volume_name("d1", &plain, None, &plain.volumes[0]), ("addond_d1_s_web_data".into(), "s_web".into()));
        assert_eq!(volume_name("d1", &grouped, Some("shop-eu"), &grouped.volumes[0]).0, "addond_d1_a_shop-eu_c");
        assert_eq!(volume_name("d1", &grouped, Some("shop-eu"), &grouped.volumes[1]).0, "addond_d1_s_web_own");
        assert_eq!(volume_name("d1", &grouped, None, &grouped.volumes[0]).0, "addond_d1_p_shop_c");
        // The documented names choose the same kinds.
        let documented = spec(serde_json::json!({"name": "web", "image": "i", "networks": ["plugin_isolated"]}));
        assert_eq!(network_plan(&cfg, "d1", &documented, None).name, "addond_d1_s_web_internal");
        let documented = spec(serde_json::json!({"name": "web", "image": "i", "networks": ["plugin_network"]}));
        assert_eq!(network_plan(&cfg, "d1", &documented, None).name, "addond_d1_s_web");
        // A plugin id with `_` cannot pass for another owner's internal network or volume.
        let under = spec(serde_json::json!({"name": "web", "image": "i", "plugin_id": "x_internal", "networks": ["plugin_network"]}));
        let plain_x = spec(serde_json::json!({"name": "web", "image": "i", "plugin_id": "x", "networks": ["plugin_isolated"]}));
        assert_eq!(network_plan(&cfg, "d1", &under, None).name, "addond_d1_p_x.internal");
        assert_ne!(network_plan(&cfg, "d1", &under, None).name, network_plan(&cfg, "d1", &plain_x, None).name);
        let a_b = spec(
            serde_json::json!({"name": "web", "image": "i", "plugin_id": "a_b", "volumes": [{"source": "c", "target": "/c", "shared": true}]}),
        );
        let a = spec(
            serde_json::json!({"name": "web", "image": "i", "plugin_id": "a", "volumes": [{"source": "b_c", "target": "/c", "shared": true}]}),
        );
        assert_ne!(volume_name("d1", &a_b, None, &a_b.volumes[0]).0, volume_name("d1", &a, None, &a.volumes[0]).0);
    }

    #[test]
    fn subnets() {
        let s = Subnet::parse("10.1.2.3/24").unwrap();
        assert_eq!(s.to_string(), "10.1.2.0/24");
        assert_eq!(s.gateway().to_string(), "10.1.2.1");
        assert!(s.contains("10.1.2.200".parse().unwrap()) && !s.contains("10.1.3.1".parse().unwrap()));
        assert!(s.overlaps(&Subnet::parse("10.0.0.0/8").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("10.1.3.0/24").unwrap()));
        assert!(Subnet::parse("fd00::/64").is_none());
    }

    #[test]
    fn picking_skips_what_is_used() {
        let pool = Subnet::parse("172.20.0.0/14").unwrap();
        let p = |used: &[&str]| pick(pool, 24, &used.iter().map(|u| Subnet::parse(u).unwrap()).collect::<Vec<_>>()).map(|s| s.to_string());
        assert_eq!(p(&[]).as_deref(), Some("172.20.0.0/24"));
        assert_eq!(p(&["172.20.0.0/24"]).as_deref(), Some("172.20.1.0/24"));
        // a bigger network in the way is jumped over whole
        assert_eq!(p(&["172.20.0.0/16", "172.21.0.0/16"]).as_deref(), Some("172.22.0.0/24"));
        // a smaller one still makes its /24 unusable
        assert_eq!(p(&["172.20.0.17/28"]).as_deref(), Some("172.20.1.0/24"));
        assert_eq!(p(&["172.16.0.0/12"]), None);
        assert_eq!(p(&["0.0.0.0/1", "128.0.0.0/1"]), None);
        let small = Subnet::parse("10.9.9.0/24").unwrap();
        assert_eq!(pick(small, 28, &[Subnet::parse("10.9.9.0/28").unwrap()]).unwrap().to_string(), "10.9.9.16/28");
        assert_eq!(pick(small, 23, &[]), None);
        // From a hint: the hinted slot, then on, then wrapping round to the start.
        let used = [Subnet::parse("10.9.9.32/28").unwrap()];
        assert_eq!(pick_from(small, 28, &used, 1).unwrap().to_string(), "10.9.9.16/28");
        assert_eq!(pick_from(small, 28, &used, 2).unwrap().to_string(), "10.9.9.48/28");
        assert_eq!(pick_from(small, 28, &used, 2 + 16).unwrap().to_string(), "10.9.9.48/28");
        let full: Vec<Subnet> = (1..16).map(|k| Subnet::parse(&format!("10.9.9.{}/28", k * 16)).unwrap()).collect();
        assert_eq!(pick_from(small, 28, &full, 7).unwrap().to_string(), "10.9.9.0/28");
    }

    #[test]
    fn routes_from_proc() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r: Vec<String> = parse_routes(text).iter().map(|s| s.to_string()).collect();
        assert_eq!(r, vec!["172.17.0.0/16", "192.0.2.0/24"]);
    }
}
