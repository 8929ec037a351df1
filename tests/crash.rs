//! `kill -9` of the daemon at random points during creates, scales and deletes, then a
//! restart: the database and Docker must agree, every acknowledged change must be there,
//! and every service must be back in its desired phase within 10 s.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

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
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Gone,
    Replicas(u64),
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_at_random_points_loses_nothing() {
    let seed = std::env::var("ADDOND_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("crash test seed {seed} (rerun with ADDOND_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let mut d = Daemon::start_with(Options { ports: port_slice(40), ..Default::default() }).await;
    let names = ["k0", "k1", "k2", "k3", "k4", "k5"];
    // acknowledged state, and the possibly-committed in-flight state, per name
    let mut acked: HashMap<&str, Want> = names.iter().map(|n| (*n, Want::Gone)).collect();
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
                    (Want::Gone, Want::Replicas(n)) => {
                        client.post(SVC, Some(&json!({"name": name, "image": IMAGE, "replicas": n, "resource_limits": {"memory": "16m", "cpu": "0.05"}}))).await
                    }
                    (_, Want::Gone) => client.delete(&format!("{SVC}/{name}")).await,
                    (_, Want::Replicas(n)) => client.post(&format!("{SVC}/{name}/scale"), Some(&json!({"replicas": n}))).await,
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
            match check(&d, &acked, &maybe).await {
                Ok(resolved) => {
                    for (name, want) in resolved {
                        acked.insert(name, want);
                    }
                    break;
                }
                Err(p) => last_problem = p,
            }
            assert!(Instant::now() < deadline, "round {round} (seed {seed}) did not converge in 10 s: {last_problem}\n{}", tail(&d.log(), 60));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("round {round}: converged in {:?}", t0.elapsed());
    }
    // the database passed its integrity check on every start; ask once more
    let h = d.get("/health").await;
    assert_eq!(h.data()["database"], "ok");
}

/// Checks every invariant; returns the resolved state of each name when all hold.
async fn check<'a>(d: &Daemon, acked: &HashMap<&'a str, Want>, maybe: &HashMap<&'a str, Want>) -> Result<Vec<(&'a str, Want)>, String> {
    let list = d.get(SVC).await;
    let services = list.data().as_array().unwrap().clone();
    let by_name: HashMap<String, serde_json::Value> = services.iter().map(|s| (s["name"].as_str().unwrap().to_string(), s.clone())).collect();
    let mut resolved = Vec::new();
    for (name, want) in acked {
        let have = match by_name.get(*name) {
            None => Want::Gone,
            Some(s) => Want::Replicas(s["replicas"].as_u64().unwrap()),
        };
        if have != *want && maybe.get(name) != Some(&have) {
            return Err(format!("{name}: acknowledged {want:?} (in flight {:?}) but found {have:?}", maybe.get(name)));
        }
        resolved.push((*name, have));
        if let Some(s) = by_name.get(*name) {
            if s["phase"] != "Started" {
                return Err(format!("{name} is {} not Started", s["phase"]));
            }
            let inst = s["instances"].as_array().unwrap();
            if inst.len() as u64 != s["replicas"].as_u64().unwrap() || inst.iter().any(|i| i["health"] != "healthy") {
                return Err(format!("{name}: instances not settled: {inst:?}"));
            }
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
    let ports: Vec<u64> = services.iter().flat_map(|s| s["instances"].as_array().unwrap().iter().map(|i| i["host_port"].as_u64().unwrap())).collect();
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
