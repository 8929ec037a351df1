//! MCP through real clients: the official MCP Python client (`mcp`, in the venv
//! `scripts/mcp-venv.sh` makes) drives a real daemon with the sample addon installed, over
//! Streamable HTTP on the gateway (with an API key covering one addon) and over stdio
//! (`addonctl mcp`, spawned by the client). What it checks is in tests/mcp/client_check.py;
//! this side sets the daemon up and then checks the metrics and the audit log it left.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::common::*;

fn manifest(name: &str) -> Value {
    json!({
        "name": name, "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "actions": [
            {"name": "add", "description": "Adds a and b", "input_schema": {
                "type": "object", "required": ["a", "b"],
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}}
            }, "output_schema": {"type": "object", "properties": {"sum": {"type": "number"}}}},
            "echo"
        ]
    })
}

/// The venv's Python with the official MCP client; a missing venv fails the test (it is
/// not skipped), saying how to make it.
pub fn mcp_python() -> PathBuf {
    venv_python("ADDOND_MCP_VENV", "/var/tmp/addond-mcp-venv", "mcp", "scripts/mcp-venv.sh")
}

/// A grant of a new application on `addon`: its API key.
async fn key_for(d: &Daemon, app: &str, addon: &str) -> String {
    let r = d.post("/api/applications", json!({"name": app, "organization": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": app, "addon": addon})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.data()["api_key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn official_client_over_http_and_stdio() {
    let python = mcp_python();
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    install_addon(&d, manifest("pay"), None).await;
    install_addon(&d, manifest("other"), None).await;
    // Installed by the client's script while its sessions are open.
    let r = d.post("/api/addons/register", manifest("late")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = key_for(&d, "shop", "pay").await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client_check.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script)
        .env("MCP_URL", format!("http://{gw}/mcp"))
        .env("MCP_KEY", &key)
        .env("ADDONCTL", addonctl_bin())
        .env("ADDOND_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The script bounds its own waits (60 s each); its installs take what an install takes.
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run the MCP client script");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the MCP client's checks failed:\n{stdout}\n{stderr}\ndaemon log:\n{}", tail(&d.log(), 40));
    assert!(stdout.contains("all MCP checks passed"), "{stdout}");

    // Tool calls are counted by addon, tool and outcome.
    let raw = d.client.request_raw(addond::client::Method::GET, "/metrics", None).await.unwrap();
    let metrics = String::from_utf8_lossy(&raw.body);
    for line in [
        "addond_mcp_tool_calls_total{addon_id=\"pay\",tool=\"add\",status=\"success\"} 2",
        "addond_mcp_tool_calls_total{addon_id=\"pay\",tool=\"add\",status=\"error\"} 2",
        "addond_mcp_tool_calls_total{addon_id=\"other\",tool=\"add\",status=\"success\"} 1",
        "addond_mcp_tool_calls_total{addon_id=\"pay\",tool=\"calculate_sum\",status=\"success\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Refused keys on /mcp are audited like every gateway route's.
    let audit = d.get("/api/audit?limit=1000").await;
    let denied = audit.data().as_array().unwrap().iter().filter(|e| e["path"] == "/mcp" && e["status"] == 401).count();
    assert!(denied >= 3, "{:?}", audit.body);
}
