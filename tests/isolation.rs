//! Issue 12 §2: addons and plain services are isolated from each other. Each addon instance
//! (and each plain service) has its own Docker network, so a container cannot call another
//! one directly past the gateway's keys and grants; named volumes belong to the service (or,
//! declared `shared`, to the services of one addon); networks come and go with their owners,
//! and stray ones of this daemon (never another daemon's) are removed. The networks stay
//! apart while Docker rewrites its own rules, thanks to addond's firewall table, which the
//! daemon applies at start (or `addond firewall` as root), and the doctor checks.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use serde_json::{json, Value};

use crate::common::*;

fn manifest(name: &str, services: Value, permissions: Value) -> Value {
    json!({
        "name": name, "version": "1.0.0", "image": IMAGE, "permissions": permissions,
        "services": services,
        "actions": ["fetch", "env", "whoami", "read_file", "write_file"],
    })
}

fn svc(name: &str, extra: Value) -> Value {
    let mut s = json!({"name": name, "resource_limits": {"memory": "32m", "cpu": "0.2"}});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// An action run in a container through its published port: `(status, body)`.
async fn action(port: u16, name: &str, input: Value) -> (u16, Value) {
    let (st, body) = http(port, "POST", &format!("/execute/{name}"), &input.to_string()).await.expect("the instance answers");
    (st, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// The one network a container is on: (name, address).
async fn network_of(container: &str) -> (String, String) {
    let c = docker().inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>).await.unwrap();
    let nets = c.network_settings.unwrap().networks.unwrap();
    assert_eq!(nets.len(), 1, "{container} is on {:?}", nets.keys());
    let (name, ep) = nets.into_iter().next().unwrap();
    (name, ep.ip_address.unwrap())
}

/// The first instance of an installed addon's service (by its short name): its container
/// and its published port.
fn first_instance(view: &Value, short: &str) -> (String, u16) {
    let s = view["services"].as_array().unwrap().iter().find(|s| s["name"].as_str().unwrap().ends_with(&format!("-{short}"))).expect(short);
    let i = &s["instances"][0];
    (format!("addond-{}-{}", s["id"].as_str().unwrap(), i["ordinal"]), i["host_port"].as_u64().unwrap() as u16)
}

/// Networks carrying this daemon's id: name → labels.
async fn our_networks(d: &Daemon) -> HashMap<String, HashMap<String, String>> {
    let id = d.daemon_id().unwrap();
    let opts = ListNetworksOptions { filters: Some(HashMap::from([("label".to_string(), vec![format!("addond.daemon={id}")])])) };
    docker().list_networks(Some(opts)).await.unwrap().into_iter().map(|n| (n.name.unwrap(), n.labels.unwrap_or_default())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_cannot_call_other_addons_or_services_directly() {
    let d = Daemon::start().await;
    let alpha =
        install_addon(&d, manifest("alpha", json!([svc("main", json!({})), svc("worker", json!({}))]), json!(["network.internet"])), None)
            .await;
    let beta = install_addon(&d, manifest("beta", json!([svc("main", json!({}))]), json!([])), None).await;
    let loner = d.create_started("loner", json!({"resource_limits": {"memory": "32m", "cpu": "0.2"}})).await;
    let (alpha_main, alpha_port) = first_instance(&alpha, "main");
    let (alpha_worker, _) = first_instance(&alpha, "worker");
    let (beta_main, _) = first_instance(&beta, "main");
    let loner_c = loner["instances"][0]["container_name"].as_str().unwrap();
    let loner_port = loner["instances"][0]["host_port"].as_u64().unwrap() as u16;
    let (alpha_net, alpha_ip) = network_of(&alpha_main).await;
    let (alpha_worker_net, _) = network_of(&alpha_worker).await;
    let (beta_net, beta_ip) = network_of(&beta_main).await;
    let (loner_net, loner_ip) = network_of(loner_c).await;
    assert_eq!(alpha_net, alpha_worker_net, "the services of one addon share its network");
    assert!(alpha_net != beta_net && alpha_net != loner_net && beta_net != loner_net, "{alpha_net} {beta_net} {loner_net}");

    let fetch = |url: String, path: &str| json!({"url": url, "path": path, "method": "POST", "body": {}, "timeout_ms": 1500});
    // alpha → beta, alpha → loner, by address and by name: nothing answers
    for (url, what) in [
        (format!("http://{beta_ip}:8080"), "beta by address"),
        (format!("http://{loner_ip}:8080"), "a plain service by address"),
        ("http://beta-main:8080".to_string(), "beta by name"),
        ("http://loner:8080".to_string(), "a plain service by name"),
    ] {
        let (st, b) = action(alpha_port, "fetch", fetch(url, "/execute/whoami")).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["ok"], false, "alpha reached {what}: {b}");
    }
    // alpha's own services reach each other by name (full and short)
    for host in ["worker", "alpha-worker"] {
        let (_, b) = action(alpha_port, "fetch", fetch(format!("http://{host}:8080"), "/execute/whoami")).await;
        assert_eq!(b["ok"], true, "{host}: {b}");
        assert_eq!(b["body"]["service"], "alpha-worker", "{b}");
    }
    // a plain service reaches neither addon
    let (_, b) = action(loner_port, "fetch", fetch(format!("http://{alpha_ip}:8080"), "/execute/whoami")).await;
    assert_eq!(b["ok"], false, "loner reached alpha: {b}");
    // beta (no internet, internal network) reaches nobody either
    let r = d
        .post("/api/addons/beta/execute", json!({"action": "fetch", "data": fetch(format!("http://{alpha_ip}:8080"), "/execute/whoami")}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["ok"], false, "beta reached alpha: {:?}", r.body);

    // The addon API: each addon's own address works; another network's address refuses it.
    let (_, env) = action(alpha_port, "env", json!({})).await;
    let alpha_api = env["api"].as_str().expect("alpha has ADDOND_API").to_string();
    let r = d.post("/api/addons/beta/execute", json!({"action": "env", "data": {}})).await;
    let beta_api = r.data()["api"].as_str().expect("beta has ADDOND_API").to_string();
    assert_ne!(alpha_api, beta_api);
    let (_, b) = action(alpha_port, "api", json!({"method": "GET", "path": "/v1/health"})).await;
    assert_eq!(b["status"], 200, "alpha's own addon API: {b}");
    let (_, b) = action(alpha_port, "fetch", json!({"url": beta_api, "path": "/v1/health", "timeout_ms": 1500})).await;
    assert!(b["ok"] == false || b["status"] == 403, "alpha used beta's addon API address: {b}");
}

/// The Docker volume mounted at `target` in a container, and where its files are on the host.
/// (A new named volume's root belongs to root, so the tests put files there from the host.)
async fn volume_at(container: &str, target: &str) -> (String, std::path::PathBuf) {
    let c = docker().inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>).await.unwrap();
    let m = c.mounts.unwrap().into_iter().find(|m| m.destination.as_deref() == Some(target)).expect(target);
    let name = m.name.unwrap();
    let v = docker().inspect_volume(&name).await.unwrap();
    (name, std::path::PathBuf::from(v.mountpoint))
}

#[tokio::test(flavor = "multi_thread")]
async fn named_volumes_belong_to_their_service_unless_an_addon_shares_them() {
    let d = Daemon::start().await;
    let lim = json!({"memory": "32m", "cpu": "0.2"});
    let va = d.create_started("va", json!({"volumes": ["shared:/shared"], "resource_limits": lim})).await;
    let vb = d.create_started("vb", json!({"volumes": ["shared:/shared"], "resource_limits": lim})).await;
    let port = |s: &Value| s["instances"][0]["host_port"].as_u64().unwrap() as u16;
    let (vol, dir) = volume_at(va["instances"][0]["container_name"].as_str().unwrap(), "/shared").await;
    std::fs::write(dir.join("f"), "from va").unwrap();
    let (st, b) = action(port(&va), "read_file", json!({"path": "/shared/f"})).await;
    assert_eq!((st, b["text"].as_str()), (200, Some("from va")), "{b}");
    let (st, b) = action(port(&vb), "read_file", json!({"path": "/shared/f"})).await;
    assert_eq!(st, 404, "two unrelated services naming `shared` see one volume: {b}");
    // the Docker volume names the daemon and the service, and carries the daemon's label
    let id = d.daemon_id().unwrap();
    assert!(vol.contains(&id) && vol.contains("va") && vol != "addond_shared", "{vol}");
    let v = docker().inspect_volume(&vol).await.unwrap();
    assert_eq!(v.labels.get("addond.daemon"), Some(&id), "{:?}", v.labels);

    // Inside one addon, a volume declared `shared` is seen by each of its services; others
    // stay each service's own, and another instance of the addon has its own.
    let vols = json!([{"source": "common", "target": "/common", "shared": true}, "own:/own"]);
    let m =
        manifest("vault", json!([svc("one", json!({"volumes": vols})), svc("two", json!({"volumes": vols}))]), json!(["network.internet"]));
    let v1 = install_addon(&d, m, None).await;
    let (one_c, _) = first_instance(&v1, "one");
    let (_, two) = first_instance(&v1, "two");
    let (_, common) = volume_at(&one_c, "/common").await;
    let (_, own) = volume_at(&one_c, "/own").await;
    std::fs::write(common.join("f"), "from one").unwrap();
    std::fs::write(own.join("g"), "mine").unwrap();
    let (st, b) = action(two, "read_file", json!({"path": "/common/f"})).await;
    assert_eq!((st, b["text"].as_str()), (200, Some("from one")), "{b}");
    assert_eq!(action(two, "read_file", json!({"path": "/own/g"})).await.0, 404, "a volume not declared shared is the service's own");
    let r = d.post("/api/addons/vault/install?wait=started&timeout=180", json!({"instance": "vault2"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (_, other) = first_instance(r.data(), "one");
    assert_eq!(action(other, "read_file", json!({"path": "/common/f"})).await.0, 404, "another instance of the addon shares nothing");

    // `shared` needs a group to share within
    let r = d.post(SVC, json!({"name": "lonely", "image": IMAGE, "volumes": [{"source": "x", "target": "/x", "shared": true}]})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "volumes[0].shared", "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn networks_come_and_go_with_their_owners_and_strays_are_removed() {
    let d = Daemon::start().await;
    let id = d.daemon_id().unwrap();
    install_addon(&d, manifest("netty", json!([svc("main", json!({})), svc("side", json!({}))]), json!([])), None).await;
    d.create_started("solo", json!({"resource_limits": {"memory": "32m", "cpu": "0.2"}})).await;
    let nets = our_networks(&d).await;
    assert_eq!(nets.len(), 2, "one network for the addon, one for the plain service: {nets:?}");
    let (addon_net, labels) =
        nets.iter().find(|(_, l)| l.get("addond.owner").is_some_and(|o| o.contains("netty"))).expect("the addon's network");
    assert_eq!(labels.get("addond.managed").map(String::as_str), Some("true"));
    let inspected = docker().inspect_network(addon_net, None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap();
    assert_eq!(inspected.internal, Some(true), "an addon without network.internet gets an internal network");
    let subnet = inspected.ipam.unwrap().config.unwrap()[0].subnet.clone().unwrap();
    assert!(
        ["172.24.", "172.25.", "172.26.", "172.27."].iter().any(|p| subnet.starts_with(p)) && subnet.ends_with("/26"),
        "from the configured pool: {subnet}"
    );

    let r = d.delete("/api/addons/netty?wait=deleted&timeout=60").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = d.delete(&format!("{SVC}/solo?wait=deleted&timeout=60")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !our_networks(&d).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "networks left behind: {:?}", our_networks(&d).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // A stray network of ours goes at the next resync; another daemon's stays.
    let make = |name: String, daemon: String| async move {
        let labels = HashMap::from([
            ("addond.managed".to_string(), "true".to_string()),
            ("addond.daemon".to_string(), daemon),
            ("addond.owner".to_string(), "s_ghost".to_string()),
        ]);
        // A subnet of its own, out of every pool the tests use.
        for n in 0..64u32 {
            let subnet = format!("10.251.{}.{}/29", (std::process::id() + n) % 250, (n % 32) * 8);
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam { config: Some(vec![IpamConfig { subnet: Some(subnet), ..Default::default() }]), ..Default::default() }),
                labels: Some(labels.clone()),
                ..Default::default()
            };
            if docker().create_network(req).await.is_ok() {
                return;
            }
        }
        panic!("cannot create test network {name}");
    };
    let ours = format!("addond_{id}_s_ghost");
    let theirs = format!("addond_0123456789abcdef_s_ghost_{}", std::process::id());
    make(ours.clone(), id.clone()).await;
    make(theirs.clone(), "0123456789abcdef".into()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while docker().inspect_network(&ours, None::<bollard::query_parameters::InspectNetworkOptions>).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "our stray network was not removed\n{}", tail(&d.log(), 20));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let kept = docker().inspect_network(&theirs, None::<bollard::query_parameters::InspectNetworkOptions>).await;
    let _ = docker().remove_network(&theirs).await;
    assert!(kept.is_ok(), "another daemon's network was removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn subnets_in_use_are_skipped() {
    // A pool of its own, whose first subnet another network already holds.
    let third = 10 + std::process::id() % 200;
    let pool = format!("10.244.{third}.0/24");
    let blocker = format!("addond-test-blocker-{}", std::process::id());
    let req = NetworkCreateRequest {
        name: blocker.clone(),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig { subnet: Some(format!("10.244.{third}.0/28")), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker().create_network(req).await.unwrap();
    // The daemon applies a firewall table for its pool; this pool is the test's own.
    let _table = DropTable(format!("addond_10_244_{third}_0_24"));
    let d = Daemon::start_with(Options { subnet_pool: (pool, 28), ..Default::default() }).await;
    let s = d.create_started("skipper", json!({"resource_limits": {"memory": "32m", "cpu": "0.2"}})).await;
    let (net, ip) = network_of(s["instances"][0]["container_name"].as_str().unwrap()).await;
    let _ = docker().remove_network(&blocker).await;
    let inspected = docker().inspect_network(&net, None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap();
    let subnet = inspected.ipam.unwrap().config.unwrap()[0].subnet.clone().unwrap();
    assert_ne!(subnet, format!("10.244.{third}.0/28"), "took a subnet in use");
    assert!(subnet.starts_with(&format!("10.244.{third}.")) && subnet.ends_with("/28"), "{subnet}");
    assert!(ip.starts_with(&format!("10.244.{third}.")), "{ip}");
}

/// Deletes an nftables table when the test ends, however it ends.
struct DropTable(String);

impl Drop for DropTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &self.0]).output();
    }
}

/// Docker 20.10 takes its isolation jump out of `FORWARD` and puts it back each time it
/// makes or removes a network; for that moment traffic between two bridges passes. Here
/// addon `knock` keeps calling addon `target`'s container by address while the test makes
/// and removes networks: not one call may get through.
#[tokio::test(flavor = "multi_thread")]
async fn isolation_holds_while_docker_rewrites_its_rules() {
    // A pool of this test's own, so the table protecting it is this daemon's alone (and
    // removed when the test ends); the churned networks lie outside it.
    let third = 10 + std::process::id() % 200;
    let pool = format!("10.243.{third}.0/24");
    let table = format!("addond_10_243_{third}_0_24");
    let _cleanup = DropTable(table.clone());
    let d = Daemon::start_with(Options { subnet_pool: (pool.clone(), 28), ..Default::default() }).await;
    let internet = json!(["network.internet"]);
    let knock = install_addon(
        &d,
        manifest("knock", json!([svc("main", json!({"environment": {"SAMPLE_MAX_CONNECTIONS": "64"}}))]), internet.clone()),
        None,
    )
    .await;
    let target = install_addon(&d, manifest("target", json!([svc("main", json!({}))]), internet), None).await;
    let (knock_c, knock_port) = first_instance(&knock, "main");
    let (target_c, _) = first_instance(&target, "main");
    let (_, knock_ip) = network_of(&knock_c).await;
    let (_, target_ip) = network_of(&target_c).await;
    let probe = |ip: String| json!({"url": format!("http://{ip}:8080"), "path": "/health", "timeout_ms": 250});
    // The probe itself works: the container reaches its own address.
    let (st, b) = action(knock_port, "fetch", probe(knock_ip.clone())).await;
    assert_eq!((st, &b["ok"]), (200, &json!(true)), "{b}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut cycles = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("addond-test-churn-{}-{}", std::process::id(), cycles % 4);
                let req = NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    ipam: Some(Ipam {
                        config: Some(vec![IpamConfig {
                            subnet: Some(format!("10.242.{third}.{}/29", (cycles % 4) * 8)),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                if docker().create_network(req).await.is_ok() {
                    let _ = docker().remove_network(&name).await;
                    cycles += 1;
                } else {
                    let _ = docker().remove_network(&name).await;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
            cycles
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let mut knockers = Vec::new();
    for _ in 0..32 {
        let target_ip = target_ip.clone();
        knockers.push(tokio::spawn(async move {
            let (mut tries, mut through) = (0u32, Vec::new());
            while std::time::Instant::now() < deadline {
                let (st, b) = action(knock_port, "fetch", probe(target_ip.clone())).await;
                assert_eq!(st, 200, "{b}");
                tries += 1;
                if b["ok"] == true {
                    through.push(b);
                }
            }
            (tries, through)
        }));
    }
    let (mut tries, mut through) = (0u32, Vec::new());
    for k in knockers {
        let (t, th) = k.await.unwrap();
        tries += t;
        through.extend(th);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let cycles = churn.await.unwrap();
    eprintln!("{tries} calls from {knock_ip} to {target_ip} while {cycles} networks were made and removed; {} got through", through.len());
    assert!(cycles >= 20 && tries >= 1000, "too little happened to tell: {cycles} networks, {tries} calls");
    assert!(through.is_empty(), "{} of {tries} calls reached the other addon's container, e.g. {}", through.len(), through[0]);
    // The doctor names the table and counts what it dropped.
    let f = firewall_finding(&d).await;
    assert_eq!(f["level"], "ok", "{f}");
    let msg = f["message"].as_str().unwrap();
    let dropped: u64 = msg.split("; ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(msg.contains(&table) && dropped > 0, "{msg}");
}

/// The doctor's `firewall` finding.
async fn firewall_finding(d: &Daemon) -> Value {
    let cfg = d.config.to_str().unwrap().to_string();
    let o = ctl(d, &["--json", "doctor", "--config", &cfg]).await;
    let findings: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(&o)));
    findings.into_iter().find(|f| f["check"] == "firewall").expect("a firewall finding")
}

fn nft_table(name: &str) -> Option<String> {
    let o = std::process::Command::new("nft").args(["list", "table", "ip", name]).output().unwrap();
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The table is applied at start and outlives the daemon; `addond firewall` applies it
/// (and only as root); the doctor fails while it is missing.
#[tokio::test(flavor = "multi_thread")]
async fn the_firewall_table_is_applied_at_start_and_the_doctor_misses_it() {
    let third = 10 + std::process::id() % 200;
    let table = format!("addond_10_241_{third}_0_24");
    let _cleanup = DropTable(table.clone());
    let mut d = Daemon::start_with(Options { subnet_pool: (format!("10.241.{third}.0/24"), 28), ..Default::default() }).await;
    let listed = nft_table(&table).expect("the table is there once the daemon runs");
    assert!(
        listed.contains("hook forward") && listed.contains(&format!("ip saddr 10.241.{third}.0/24 ip daddr 10.241.{third}.0/24")),
        "{listed}"
    );
    assert!(d.log().contains("applied the firewall table"), "{}", tail(&d.log(), 20));
    assert_eq!(firewall_finding(&d).await["level"], "ok");

    // Gone (a firewall tool flushed it): the doctor fails and says how to put it back.
    let o = std::process::Command::new("nft").args(["delete", "table", "ip", &table]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = firewall_finding(&d).await;
    assert_eq!(f["level"], "fail", "{f}");
    assert!(f["message"].as_str().unwrap().contains("missing") && f["fix"].as_str().unwrap().contains("addond firewall"), "{f}");

    // `addond firewall` puts it back; `--print` shows it without applying.
    let cfg = d.config.to_str().unwrap().to_string();
    let run = |args: &[&str]| std::process::Command::new(addond_bin()).args(args).env_remove("ADDOND_CONFIG_FILE").output().unwrap();
    let o = run(&["firewall", "--print", "--config", &cfg]);
    assert!(o.status.success() && out(&o).contains(&format!("table ip {table} {{")), "{}", err(&o));
    assert!(nft_table(&table).is_none(), "--print applies nothing");
    let o = run(&["firewall", "--config", &cfg]);
    assert!(o.status.success() && out(&o).contains(&table), "{}{}", out(&o), err(&o));
    assert!(nft_table(&table).is_some());
    assert_eq!(firewall_finding(&d).await["level"], "ok");

    // Not as an unprivileged user: it says what is needed.
    let open = tempfile::Builder::new().prefix("addond-fw-").tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copy = open.path().join("config.toml");
    std::fs::copy(&d.config, &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", addond_bin(), "firewall", "--config"])
        .arg(&copy)
        .env_remove("ADDOND_CONFIG_FILE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("not permitted") && err(&o).contains("root"), "{}", err(&o));

    // The daemon leaves it when it stops: containers it leaves running stay apart.
    assert!(d.terminate().success());
    assert!(nft_table(&table).is_some(), "the table went with the daemon");
}

/// The packaged daemon runs as an unprivileged user, which may neither change nor read the
/// firewall: it warns when nothing says the table was applied during this boot, and
/// trusts the record that `addond firewall`, run as root before it, leaves.
#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_daemon_warns_unless_addond_firewall_applied_the_table() {
    use std::os::unix::fs::PermissionsExt as _;
    let third = 10 + std::process::id() % 200;
    let table = format!("addond_10_240_{third}_0_24");
    let _cleanup = DropTable(table.clone());
    let dir = tempfile::Builder::new().prefix("addond-fw-").tempdir().unwrap();
    let opts = Options {
        subnet_pool: (format!("10.240.{third}.0/24"), 28),
        docker_host: format!("unix://{}/no-docker.sock", dir.path().display()),
        wait_for_docker: false,
        ..Default::default()
    };
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_toml(dir.path(), &dir.path().join("addond.sock"), &opts)).unwrap();
    for p in [dir.path(), cfg.as_path()] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Runs the daemon as uid 65534 until it has said what it knows of the table: that line.
    let firewall_line = |round: u32| {
        let log_path = dir.path().join(format!("run{round}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", addond_bin(), "run", "--config"])
            .arg(&cfg)
            .env_remove("ADDOND_CONFIG_FILE")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let line = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("addond::firewall")) {
                break l.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "the daemon said nothing of the firewall:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        line
    };
    let line = firewall_line(1);
    assert!(line.contains("WARN") && line.contains(&table), "{line}");
    assert!(line.contains("was not applied during this boot") && line.contains("sudo addond firewall"), "{line}");
    assert!(nft_table(&table).is_none(), "an unprivileged daemon applied the table");

    // `addond firewall` as root (the unit's ExecStartPre=+), then the daemon again.
    let o = std::process::Command::new(addond_bin())
        .args(["firewall", "--config"])
        .arg(&cfg)
        .env_remove("ADDOND_CONFIG_FILE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let record = dir.path().join("data/firewall.json");
    assert_eq!(std::fs::metadata(&record).unwrap().permissions().mode() & 0o777, 0o644, "readable by the daemon's user");
    let line = firewall_line(2);
    assert!(line.contains("INFO") && line.contains("was applied by `addond firewall`") && line.contains("(this boot)"), "{line}");
}
