//! `kill -9` of the daemon at random points during creates, scales, deletes, addon installs
//! and uninstalls, then a restart: the database and Docker must agree, every acknowledged
//! change must be there, every installed addon must have all its services, and every
//! service must be back in its desired phase within 10 s. Two failpoint tests stop the
//! daemon exactly between the writes of an install and of an uninstall, and one starts a
//! daemon on a half install that an older version left behind.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// xorshift: reproducible rounds from a printed seed, without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a service must look like after the crash: the last acknowledged state, or the
/// state of the request that was in flight when the daemon died (it may have committed).
/// For an addon instance: `Replicas(1)` means installed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Gone,
    Replicas(u64),
}

/// The addon the crash tests install: two services, so an install or an uninstall that is
/// cut short between them shows.
const ADDON: &str = "crashpair";
const ADDON_SERVICES: [&str; 2] = ["api", "worker"];

fn addon_manifest() -> Value {
    let limits = json!({"memory": "16m", "cpu": "0.05"});
    json!({
        "name": ADDON, "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": ADDON_SERVICES.iter().map(|s| json!({"name": s, "resource_limits": limits})).collect::<Vec<_>>(),
    })
}

async fn register_addon(d: &Daemon) {
    let r = d.post("/api/addons/register", addon_manifest()).await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

/// Every installed addon has all its manifest's services, and no service belongs to an
/// addon instance that is not installed. Returns the installed instances.
fn addon_invariant(d: &Daemon) -> Result<HashSet<String>, String> {
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).map_err(|e| e.to_string())?;
    let installs: HashSet<String> = db
        .prepare("SELECT instance FROM addon_installs")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| e.to_string())?;
    let services: Vec<(String, Option<String>)> = db
        .prepare("SELECT name, addon_instance FROM services")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(|e| e.to_string())?;
    for inst in &installs {
        for short in ADDON_SERVICES {
            let name = format!("{inst}-{short}");
            if !services.iter().any(|(n, a)| *n == name && a.as_deref() == Some(inst)) {
                return Err(format!("addon `{inst}` is installed but its service `{name}` is missing"));
            }
        }
    }
    for (name, addon) in &services {
        if let Some(a) = addon.as_ref().filter(|a| !installs.contains(*a)) {
            return Err(format!("service `{name}` belongs to addon `{a}`, which is not installed"));
        }
    }
    Ok(installs)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_at_random_points_loses_nothing() {
    let seed = std::env::var("ADDOND_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("crash test seed {seed} (rerun with ADDOND_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let mut d = Daemon::start_with(Options { ports: port_slice(48), ..Default::default() }).await;
    register_addon(&d).await;
    let names = ["k0", "k1", "k2", "k3", "k4", "k5"];
    // addon instances of ADDON, installed and uninstalled
    let addons = ["a0", "a1"];
    // acknowledged state, and the possibly-committed in-flight state, per name
    let mut acked: HashMap<&str, Want> = names.iter().chain(addons.iter()).map(|n| (*n, Want::Gone)).collect();
    let rounds = 20;
    for round in 0..rounds {
        let mut maybe: HashMap<&str, Want> = HashMap::new();
        // fire a burst of operations, one per name, concurrently
        let mut tasks = Vec::new();
        for name in names {
            let op = match acked[name] {
                Want::Gone => Want::Replicas(1 + rng.below(2)),
                Want::Replicas(_) if rng.below(3) == 0 => Want::Gone,
                Want::Replicas(_) => Want::Replicas(rng.below(4)),
            };
            maybe.insert(name, op);
            let client = d.client.clone();
            let was = acked[name];
            tasks.push(tokio::spawn(async move {
                let r = match (was, op) {
                    (Want::Gone, Want::Replicas(n)) => client
                        .post(
                            SVC,
                            Some(
                                &json!({"name": name, "image": IMAGE, "replicas": n, "resource_limits": {"memory": "16m", "cpu": "0.05"}}),
                            ),
                        )
                        .await,
                    (_, Want::Gone) => client.delete(&format!("{SVC}/{name}")).await,
                    (_, Want::Replicas(n)) => client.post(&format!("{SVC}/{name}/scale"), Some(&json!({"replicas": n}))).await,
                };
                (name, op, r)
            }));
        }
        for name in addons {
            let op = match acked[name] {
                Want::Gone => Want::Replicas(1),
                _ if rng.below(2) == 0 => Want::Gone,
                _ => continue,
            };
            maybe.insert(name, op);
            let client = d.client.clone();
            tasks.push(tokio::spawn(async move {
                let r = match op {
                    Want::Gone => client.delete(&format!("/api/addons/{name}")).await,
                    _ => client.post(&format!("/api/addons/{ADDON}/install"), Some(&json!({"instance": name}))).await,
                };
                (name, op, r)
            }));
        }
        // kill at a random point of the burst
        tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
        d.kill9();
        for t in tasks {
            let (name, op, r) = t.await.unwrap();
            if let Ok(r) = r {
                if r.is_success() {
                    acked.insert(name, op);
                    maybe.remove(name);
                } else if r.status == 404 && op == Want::Gone {
                    acked.insert(name, Want::Gone);
                    maybe.remove(name);
                } else {
                    panic!("round {round}: {name} {op:?} refused: {:?}", r.body);
                }
            }
        }
        d.spawn().await;
        let t0 = Instant::now();
        // converge within 10 s to a state that matches acked (or the in-flight op)
        let deadline = t0 + Duration::from_secs(10);
        let mut last_problem;
        loop {
            match check(&d, &names, &acked, &maybe).await {
                Ok(resolved) => {
                    for (name, want) in resolved {
                        acked.insert(name, want);
                    }
                    break;
                }
                Err(p) => last_problem = p,
            }
            assert!(
                Instant::now() < deadline,
                "round {round} (seed {seed}) did not converge in 10 s: {last_problem}\n{}",
                tail(&d.log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let installed: Vec<&str> = addons.iter().copied().filter(|a| acked[a] != Want::Gone).collect();
        eprintln!("round {round}: converged in {:?}; installed now: {installed:?}", t0.elapsed());
    }
    // the database passed its integrity check on every start; ask once more
    let h = d.get("/health").await;
    assert_eq!(h.data()["database"], "ok");
}

/// Checks every invariant; returns the resolved state of each name when all hold.
async fn check<'a>(
    d: &Daemon,
    services_named: &[&str],
    acked: &HashMap<&'a str, Want>,
    maybe: &HashMap<&'a str, Want>,
) -> Result<Vec<(&'a str, Want)>, String> {
    // the list first, the invariant second: a service on its way out that the list still
    // shows as settled is then seen missing by the invariant
    let list = d.get(SVC).await;
    let services = list.data().as_array().unwrap().clone();
    let installed = addon_invariant(d)?;
    let by_name: HashMap<String, serde_json::Value> =
        services.iter().map(|s| (s["name"].as_str().unwrap().to_string(), s.clone())).collect();
    let mut resolved = Vec::new();
    for (name, want) in acked {
        let have = if services_named.contains(name) {
            match by_name.get(*name) {
                None => Want::Gone,
                Some(s) => Want::Replicas(s["replicas"].as_u64().unwrap()),
            }
        } else if installed.contains(*name) {
            Want::Replicas(1)
        } else {
            Want::Gone
        };
        if have != *want && maybe.get(name) != Some(&have) {
            return Err(format!("{name}: acknowledged {want:?} (in flight {:?}) but found {have:?}", maybe.get(name)));
        }
        resolved.push((*name, have));
    }
    // every service, the addons' too, is back where it should be
    for s in &services {
        let name = s["name"].as_str().unwrap();
        if s["phase"] != "Started" {
            return Err(format!("{name} is {} not Started", s["phase"]));
        }
        let inst = s["instances"].as_array().unwrap();
        if inst.len() as u64 != s["replicas"].as_u64().unwrap() || inst.iter().any(|i| i["health"] != "healthy") {
            return Err(format!("{name}: instances not settled: {inst:?}"));
        }
    }
    // Docker and the database agree: no container without its row, no row without it.
    let containers = d.containers().await;
    let rows: HashSet<String> = services
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().iter().map(|i| i["container_name"].as_str().unwrap().to_string()))
        .collect();
    let names: HashSet<String> = containers.keys().cloned().collect();
    if names != rows {
        return Err(format!("containers {names:?} != rows {rows:?}"));
    }
    if containers.values().any(|r| !r) {
        return Err(format!("stopped containers: {containers:?}"));
    }
    // no duplicate or leaked port
    let ports: Vec<u64> =
        services.iter().flat_map(|s| s["instances"].as_array().unwrap().iter().map(|i| i["host_port"].as_u64().unwrap())).collect();
    let uniq: HashSet<u64> = ports.iter().copied().collect();
    if uniq.len() != ports.len() {
        return Err(format!("duplicate ports {ports:?}"));
    }
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let booked: i64 = db.query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0)).unwrap();
    if booked as usize != ports.len() {
        return Err(format!("{booked} ports booked but {} instances listed", ports.len()));
    }
    Ok(resolved)
}

/// Restarts the daemon with the failpoint `point` armed (debug builds: the daemon kills
/// itself with SIGKILL when it gets there), sends `request`, waits for the daemon to die,
/// and starts it again without the failpoint.
async fn cut_short(d: &mut Daemon, point: &str, request: impl std::future::Future<Output = ()>) {
    d.kill9();
    d.env = vec![("ADDOND_DEBUG_HOOKS".into(), "1".into()), ("ADDOND_DEBUG_ABORT_AT".into(), point.into())];
    d.spawn().await;
    request.await;
    let mut child = d.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the daemon never reached the failpoint `{point}`; log:\n{}", tail(&d.log(), 40));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.log().contains(&format!("debug hook: failpoint {point}")), "{}", tail(&d.log(), 40));
    d.env.clear();
    d.spawn().await;
}

/// Waits until the addon invariant holds and every service is Started and healthy.
async fn settled(d: &Daemon, secs: u64) -> HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        // the list first, the invariant second (see `check`)
        let services = d.get(SVC).await.data().as_array().unwrap().clone();
        let problem = match (
            addon_invariant(d),
            services
                .iter()
                .find(|s| s["phase"] != "Started" || s["instances"].as_array().unwrap().iter().any(|i| i["health"] != "healthy")),
        ) {
            (Err(p), _) => p,
            (Ok(installed), None) => return installed,
            (Ok(_), Some(s)) => format!("{} is {}", s["name"], s["phase"]),
        };
        assert!(Instant::now() < deadline, "not settled after {secs} s: {problem}\n{}", tail(&d.log(), 40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_install_killed_after_its_first_write_is_whole_or_absent() {
    let mut d = Daemon::start().await;
    register_addon(&d).await;
    let client = d.client.clone();
    cut_short(&mut d, "install", async move {
        let r = client.post(&format!("/api/addons/{ADDON}/install"), Some(&json!({"instance": "cut"}))).await;
        assert!(r.as_ref().map_or(true, |r| !r.is_success()), "the daemon answered before dying: {:?}", r.map(|r| r.body));
    })
    .await;
    let installed = settled(&d, 30).await;
    eprintln!("after the cut install: installed {installed:?}");
    // whichever it is, the instance name is usable: installed whole, or free to install
    if !installed.contains("cut") {
        let r = d.post(&format!("/api/addons/{ADDON}/install?wait=started&timeout=60"), json!({"instance": "cut"})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uninstall_killed_after_its_first_write_is_whole_or_absent() {
    let mut d = Daemon::start().await;
    register_addon(&d).await;
    let r = d.post(&format!("/api/addons/{ADDON}/install?wait=started&timeout=60"), json!({"instance": "cut"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let client = d.client.clone();
    cut_short(&mut d, "uninstall", async move {
        let r = client.delete("/api/addons/cut").await;
        assert!(r.as_ref().map_or(true, |r| !r.is_success()), "the daemon answered before dying: {:?}", r.map(|r| r.body));
    })
    .await;
    let installed = settled(&d, 30).await;
    eprintln!("after the cut uninstall: installed {installed:?}");
    if installed.contains("cut") {
        let r = d.delete("/api/addons/cut?wait=deleted&timeout=60").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = d.post(&format!("/api/addons/{ADDON}/install?wait=started&timeout=60"), json!({"instance": "cut"})).await;
    assert_eq!(r.status, 201, "the instance name is free again: {:?}", r.body);
}

/// A database from an older addond can hold an install with services missing (an install
/// or an uninstall cut short) or services of an addon that is no longer installed: the
/// next start repairs both.
#[tokio::test(flavor = "multi_thread")]
async fn half_installs_left_by_an_older_daemon_are_repaired_at_start() {
    let mut d = Daemon::start().await;
    register_addon(&d).await;
    for inst in ["half", "orphan"] {
        let r = d.post(&format!("/api/addons/{ADDON}/install?wait=started&timeout=60"), json!({"instance": inst})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    d.kill9();
    {
        let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
        db.pragma_update(None, "foreign_keys", "ON").unwrap();
        assert_eq!(db.execute("DELETE FROM services WHERE name = 'half-worker'", []).unwrap(), 1);
        assert_eq!(db.execute("DELETE FROM addon_installs WHERE instance = 'orphan'", []).unwrap(), 1);
        // an older addond's database carries no mark that its installs were checked
        db.execute("DELETE FROM meta WHERE key = 'addon_installs_checked'", []).unwrap();
    }
    d.spawn().await;
    let installed = settled(&d, 30).await;
    assert_eq!(installed, HashSet::from(["half".to_string()]));
    let names: HashSet<String> =
        d.get(SVC).await.data().as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, HashSet::from(["half-api".to_string(), "half-worker".to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.containers().await.len() != 2 {
        assert!(Instant::now() < deadline, "containers of the orphaned services stay: {:?}", d.containers().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
