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
        assert_eq!(hc.network_mode.as_deref(), Some("addond_test"));
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
    let refused: u64 = metrics.lines().find_map(|l| l.strip_prefix("addond_admin_refused_total ")).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(refused >= 12, "every refusal is counted: {refused}");
    let audit = d.get("/api/audit?limit=50").await;
    let denied: Vec<&serde_json::Value> = audit.data().as_array().unwrap().iter().filter(|e| e["uid"] == 65534 && e["status"] == 403).collect();
    assert_eq!(denied.len(), 1, "{:?}", audit.body);
    assert!(denied[0]["pid"].is_number() && denied[0]["detail"].as_str().unwrap().contains("admin socket"), "{:?}", denied[0]);
    // root is served
    assert_eq!(d.get("/health").await.status, 200);
}
