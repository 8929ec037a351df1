//! The sandbox every container gets, and who may use the admin socket.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_container_is_sandboxed() {
    let d = Daemon::start().await;
    let svc = d.create_started("boxed", json!({"replicas": 2, "volumes": ["boxdata:/data", "./files:/files"], "resource_limits": {"memory": "128m", "cpu": "0.25", "pids": 64}})).await;
    for inst in svc["instances"].as_array().unwrap() {
        let c = d.inspect(inst["container_name"].as_str().unwrap()).await;
        let cfg = c.config.unwrap();
        let hc = c.host_config.unwrap();
        let user = cfg.user.unwrap();
        assert!(!user.is_empty() && !user.starts_with("0") && user != "root", "user {user}");
        assert_eq!(hc.cap_drop.unwrap(), vec!["ALL".to_string()]);
        assert!(hc.cap_add.unwrap_or_default().is_empty());
        assert!(hc.security_opt.unwrap().iter().any(|o| o.starts_with("no-new-privileges")));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert!(hc.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.memory, Some(128 << 20));
        assert_eq!(hc.nano_cpus, Some(250_000_000));
        assert_eq!(hc.pids_limit, Some(64));
        // its own network (named for this daemon and the service), and only that one
        let nets = c.network_settings.clone().unwrap().networks.unwrap();
        assert_eq!(nets.keys().collect::<Vec<_>>(), vec![&format!("addond_{}_s_boxed", d.daemon_id().unwrap())]);
        assert!(hc.network_mode.is_some_and(|m| m == nets.values().next().unwrap().network_id.clone().unwrap()));
        // default seccomp: no "seccomp=unconfined" and no apparmor override
        assert!(!c.app_armor_profile.unwrap_or_default().contains("unconfined"));
        let binds = hc.port_bindings.unwrap();
        for (_, b) in binds {
            for pb in b.unwrap() {
                assert_eq!(pb.host_ip.as_deref(), Some("127.0.0.1"));
            }
        }
        // never the Docker socket, volumes only named or under the data dir
        for m in c.mounts.unwrap_or_default() {
            let src = m.source.unwrap_or_default();
            assert!(!src.contains("docker.sock"));
            if m.typ.map(|t| t.to_string()) == Some("bind".into()) {
                assert!(src.starts_with(d.data_dir().canonicalize().unwrap().to_str().unwrap()), "bind {src}");
            }
        }
        let labels = cfg.labels.unwrap();
        assert_eq!(labels["addond.service"], svc["id"].as_str().unwrap());
        assert_eq!(labels["addond.instance"], inst["id"].as_str().unwrap());
        // and the process really runs unprivileged
        let port = inst["host_port"].as_u64().unwrap() as u16;
        let (st, body) = http(port, "POST", "/execute/whoami", "{}").await.unwrap();
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("\"uid\":65534") || body.contains("\"uid\": 65534") || body.contains("65534"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_outside_the_allowed_users_get_403() {
    if unsafe { libc::getuid() } != 0 {
        eprintln!("needs root to switch to uid 65534");
        return;
    }
    let d = Daemon::start().await;
    // The socket is 0660; give "other" access so the refusal comes from the daemon's own
    // peer-credential check, not from file permissions.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "curl", "-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://addond/api/plugin-microservice/services")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("403"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"code\":\"forbidden\""), "{text}");
    // addonctl maps it to exit code 4
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", addonctl_bin(), "--socket"])
        .arg(&d.socket)
        .args(["services", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    // A burst of refused connections: logged and audited once (with uid and pid, and how
    // many there were), counted every time.
    for _ in 0..10 {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "curl", "-s", "-o", "/dev/null", "--unix-socket"])
            .arg(&d.socket)
            .arg("http://addond/health")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("refused admin connection")).collect();
    assert_eq!(lines.len(), 1, "one report per uid per minute, not one per connection:\n{}", lines.join("\n"));
    assert!(lines[0].contains("uid=65534") && lines[0].contains("pid=Some("), "{}", lines[0]);
    let metrics = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap().body;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    let refused: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("addond_admin_refused_total ")).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(refused >= 12, "every refusal is counted: {refused}");
    let audit = d.get("/api/audit?limit=50").await;
    let denied: Vec<&serde_json::Value> =
        audit.data().as_array().unwrap().iter().filter(|e| e["uid"] == 65534 && e["status"] == 403).collect();
    assert_eq!(denied.len(), 1, "{:?}", audit.body);
    assert!(denied[0]["pid"].is_number() && denied[0]["detail"].as_str().unwrap().contains("admin socket"), "{:?}", denied[0]);
    // root is served
    assert_eq!(d.get("/health").await.status, 200);
}

/// A host directory outside the data dir that the sandbox user could write to: where an
/// escaped volume would lead.
fn outside_dir(d: &Daemon) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = d.dir.path().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    out
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

/// Waits until the service is Failed or `escaped` holds; returns the service. The budget is
/// generous: while another test churns networks, Docker makes this one's network late.
async fn failed_or_escaped(d: &Daemon, name: &str, secs: u64, escaped: impl Fn() -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let s = d.service(name).await.unwrap();
        if s["phase"] == "Failed" || escaped() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{name} neither failed nor escaped: {s:#}\n{}", tail(&d.log(), 30));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_directory_volumes_are_refused() {
    let d = Daemon::start().await;
    for (vols, field) in [
        (json!(["./d:/d", "./d/inner:/inner"]), "volumes[1]"),
        (json!(["./d/inner:/inner", "./d:/d"]), "volumes[1]"),
        (json!(["./d:/a", "./d:/b:ro"]), "volumes[1]"),
        (json!(["data:/data", "./d:/d", {"source": "./d/x/y", "target": "/y"}]), "volumes[2]"),
    ] {
        let r = d.post(SVC, json!({"name": "nest", "image": IMAGE, "volumes": vols})).await;
        assert_eq!(r.status, 400, "{vols}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_volume", "{vols}");
        assert_eq!(r.body["error"]["field"], field, "{vols}: {:?}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("sibling"), "{:?}", r.body);
    }
    assert!(d.service("nest").await.is_none());
    // siblings and look-alike prefixes are fine
    let r = d.post(SVC, json!({"name": "sib", "image": IMAGE, "replicas": 0, "volumes": ["./d:/d", "./inner:/inner", "./dd:/dd"]})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // and an addon manifest with nested volumes is refused when registered
    let m = json!({"name": "nester", "version": "1.0.0", "image": IMAGE, "services": [{"name": "main", "volumes": ["./d:/d", "./d/inner:/inner"]}]});
    let r = d.post("/api/addons/register", m).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "services[0].volumes[1]", "{:?}", r.body);
}

/// Issue 12 §1: a service whose directory volumes nest (stored before nesting was refused)
/// swaps the inner one for a symlink to a host directory through the outer one and exits;
/// the restart must not follow the link.
#[tokio::test(flavor = "multi_thread")]
async fn a_nested_volume_swapped_for_a_symlink_does_not_escape_on_restart() {
    let mut d = Daemon::start().await;
    let outside = outside_dir(&d);
    let env = json!({"SAMPLE_SWAP_SYMLINK": format!("/d/inner={}", outside.display()), "SAMPLE_WRITE_PROBE": "/inner/probe"});
    let r = d
        .post(SVC, json!({"name": "escape", "image": IMAGE, "replicas": 0, "environment": env, "volumes": ["./d:/d", "./e:/inner"]}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Make the row what an older daemon stored: `./d/inner` nested in `./d`.
    assert!(d.terminate().success());
    let db = rusqlite::Connection::open(d.data_dir().join("addond.db")).unwrap();
    let n = db.execute("UPDATE services SET spec = json_set(spec, '$.volumes[1].source', 'd/inner') WHERE name = 'escape'", []).unwrap();
    assert_eq!(n, 1);
    drop(db);
    let inner = d.data_dir().join("volumes/escape/d/inner");
    std::fs::create_dir_all(&inner).unwrap();
    std::os::unix::fs::chown(&inner, Some(65534), Some(65534)).unwrap();
    d.spawn().await;
    let r = d.post(&format!("{SVC}/escape/scale"), json!({"replicas": 1})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = failed_or_escaped(&d, "escape", 120, || outside.join("probe").exists()).await;
    assert!(entries(&outside).is_empty(), "the container wrote outside its volumes: {:?}\n{}", entries(&outside), tail(&d.log(), 30));
    assert_eq!(s["phase"], "Failed", "{s:#}");
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("volumes[1]") && err.contains("sibling"), "{err}");
}

/// Layer two: every start re-checks each directory volume on disk, component by component,
/// so a bind source replaced by a symlink (by whatever means) is never handed to Docker —
/// not on a crash restart, and not when an adopted container is started after the daemon
/// restarted.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_replaced_by_a_symlink_is_refused_at_every_start() {
    let mut d = Daemon::start().await;
    let outside = outside_dir(&d);
    let svc = d.create_started("swapped", json!({"volumes": ["./data:/data"], "environment": {"SAMPLE_WRITE_PROBE": "/data/probe"}})).await;
    let base = d.data_dir().join("volumes/swapped");
    assert!(base.join("data/probe").exists(), "the probe lands in the volume");
    let swap = || {
        std::fs::rename(base.join("data"), base.join("data.orig")).unwrap();
        std::os::unix::fs::symlink(&outside, base.join("data")).unwrap();
    };
    let unswap = || {
        std::fs::remove_file(base.join("data")).unwrap();
        std::fs::rename(base.join("data.orig"), base.join("data")).unwrap();
    };
    let cname = svc["instances"][0]["container_name"].as_str().unwrap().to_string();
    // 1. crash restart
    swap();
    docker().kill_container(&cname, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    let s = failed_or_escaped(&d, "swapped", 120, || outside.join("probe").exists()).await;
    assert!(entries(&outside).is_empty(), "restart followed the symlink: {:?}", entries(&outside));
    assert_eq!(s["phase"], "Failed", "{s:#}");
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("volumes[0]") && err.contains("symlink"), "{err}");
    // Put right, it starts again.
    unswap();
    let r = d.post(&format!("{SVC}/swapped/start?wait=started&timeout=60"), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // 2. the container stopped while the daemon was down, adopted and started at its return
    d.kill9();
    swap();
    docker().stop_container(&cname, None::<bollard::query_parameters::StopContainerOptions>).await.unwrap();
    d.spawn().await;
    let s = failed_or_escaped(&d, "swapped", 120, || outside.join("probe").exists()).await;
    assert!(entries(&outside).is_empty(), "adoption followed the symlink: {:?}", entries(&outside));
    assert_eq!(s["phase"], "Failed", "{s:#}");
    // 3. a missing volume directory is made again, not refused
    unswap();
    std::fs::remove_dir_all(base.join("data")).unwrap();
    let r = d.post(&format!("{SVC}/swapped/start?wait=started&timeout=60"), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(base.join("data/probe").exists());
}
