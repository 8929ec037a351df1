//! GraphQL through a real client: `gql` (PyPI, with its aiohttp and websockets transports,
//! in the venv `scripts/graphql-venv.sh` makes) drives `/graphql` of a real daemon with the
//! sample addon installed, on the gateway with a key covering one addon and on the admin
//! socket itself (HTTP and the subscriptions' WebSocket over the Unix socket). What it
//! checks is in tests/graphql/client_check.py; this side sets the daemon up and then checks
//! what the requests left in the audit log.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::common::*;

fn manifest(name: &str) -> Value {
    json!({
        "name": name, "version": "1.0.0", "image": IMAGE,
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "config_schema": {"type": "object", "additionalProperties": false, "properties": {"greeting": {"type": "string"}}},
        "actions": [
            {"name": "add", "description": "Adds a and b", "input_schema": {
                "type": "object", "required": ["a", "b"],
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}}
            }},
            "echo"
        ],
        "widgets": [{"name": "checkout", "category": "form", "config_schema": {
            "type": "object", "additionalProperties": false, "properties": {"title": {"type": "string", "default": "Pay now"}}
        }}]
    })
}

/// The venv's Python with the GraphQL client; a missing venv fails the test (it is not
/// skipped), saying how to make it.
fn gql_python() -> PathBuf {
    venv_python("ADDOND_GQL_VENV", "/var/tmp/addond-gql-venv", "gql, aiohttp, websockets", "scripts/graphql-venv.sh")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_client_on_the_gateway_and_the_admin_socket() {
    let python = gql_python();
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    install_addon(&d, manifest("pay"), None).await;
    install_addon(&d, manifest("other"), None).await;
    // Installed by the client's script, through installAddon.
    let r = d.post("/api/addons/register", manifest("late")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/applications", json!({"name": "shop", "organization": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d.post("/api/application-grants", json!({"application": "shop", "addon": "pay"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.data()["api_key"].as_str().unwrap().to_string();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/graphql/client_check.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script)
        .env("GQL_GATEWAY", format!("http://{gw}/graphql"))
        .env("GQL_KEY", &key)
        .env("ADDOND_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The script bounds its own waits (60 s each, 150 s for the install to start).
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run the GraphQL client script");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the GraphQL client's checks failed:\n{stdout}\n{stderr}\ndaemon log:\n{}", tail(&d.log(), 40));
    assert!(stdout.contains("all GraphQL checks passed"), "{stdout}");

    // Mutations are audited with the fields they ran and the outcome; queries are not.
    let audit = d.get("/api/audit?limit=1000").await;
    let graphql: Vec<&Value> = audit.data().as_array().unwrap().iter().filter(|e| e["path"] == "/graphql").collect();
    let has = |detail: &str, status: u64| graphql.iter().any(|e| e["detail"] == detail && e["status"] == status);
    assert!(has("graphql mutation installAddon", 200), "{graphql:?}");
    assert!(has("graphql mutation updateAddonConfig", 200), "{graphql:?}");
    assert!(has("graphql mutation updateAddonConfig", 400), "a refused change is audited with its status: {graphql:?}");
    assert!(has("graphql mutation installAddon", 409), "{graphql:?}");
    // On the admin socket only mutations; the gateway audits its refusals as on every route.
    let admin = graphql.iter().filter(|e| e["source"].is_null());
    assert!(
        admin.clone().count() >= 5 && admin.clone().all(|e| e["detail"].as_str().is_some_and(|d| d.starts_with("graphql mutation"))),
        "{graphql:?}"
    );
    assert!(graphql.iter().any(|e| e["detail"] == "gateway: missing_api_key" && e["status"] == 401), "{graphql:?}");
    // The instance installed through GraphQL has the config it was given.
    let late = d.get("/api/addons/late").await;
    assert_eq!(late.data()["config"], json!({"greeting": "hi"}), "{:?}", late.body);
}
