//! The OpenAPI document: the committed copy (`docs/openapi.json`) is what `addond openapi`
//! prints and what both listeners serve; the route tables and the documents list the same
//! (method, path) pairs; and schemathesis (PyPI, in the venv `scripts/schemathesis-venv.sh`
//! makes) fuzzes a live daemon's admin socket (through a loopback relay: schemathesis
//! speaks TCP) and its gateway (with a key) without finding a server error, an undocumented
//! status, an answer its schema rejects, or a crash.
//!
//! After changing a handler's annotation, regenerate the copy with
//! `addond openapi > docs/openapi.json` (or run this test with `ADDOND_UPDATE_OPENAPI=1`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

fn generated() -> String {
    let o = Command::new(addond_bin()).arg("openapi").output().expect("run addond openapi");
    assert!(o.status.success(), "addond openapi: {}", err(&o));
    out(&o)
}

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let doc = generated();
    if std::env::var_os("ADDOND_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path(), &doc).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/openapi.json is not the generated document: run `addond openapi > docs/openapi.json` (or this test with ADDOND_UPDATE_OPENAPI=1)"
    );
    let v: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    // Every schema a reference names is in the components.
    for part in doc.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(v["components"]["schemas"][name].is_object(), "{name} is referenced but not defined");
    }
    // Every response says what it is, and every error answer is the envelope.
    for (method, path) in addond::http::openapi::operations(&v) {
        let responses = v["paths"][&path][method.to_lowercase()]["responses"].as_object().unwrap();
        let success = ["200", "201", "101", "default"];
        assert!(success.iter().any(|s| responses.contains_key(*s)), "{method} {path}: no success answer");
        for (status, r) in responses {
            assert!(r["description"].as_str().is_some_and(|d| !d.is_empty()), "{method} {path} {status}: no description");
            let envelope = r["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error";
            let mcp = path == "/mcp";
            if status.starts_with('4') || status.starts_with('5') {
                assert!(envelope || mcp, "{method} {path} {status}: not the error envelope");
            }
        }
    }
}

/// The admin router's routes, read from its one route list (`src/api/mod.rs`): axum cannot
/// list a router's routes, and that list is the source of truth the module doc names.
fn axum_routes(source: &str, prefix: Option<(&str, &str)>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(")) {
        let path_start = line.find('"').expect("a quoted path") + 1;
        let path_end = path_start + line[path_start..].find('"').unwrap();
        let mut path = line[path_start..path_end].replace("{{", "{").replace("}}", "}");
        if let Some((var, value)) = prefix {
            path = path.replace(var, value);
        }
        let handlers = &line[path_end..];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = [format!(" {method}("), format!(".{method}("), format!("::{method}("), format!("({method}(")];
            if called.iter().any(|c| handlers.contains(c.as_str())) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn documented(doc: &Value, tag: &str) -> BTreeSet<(String, String)> {
    addond::http::openapi::operations(doc)
        .into_iter()
        .filter(|(m, p)| doc["paths"][p][m.to_lowercase()]["tags"].as_array().unwrap().iter().any(|t| t == tag))
        .collect()
}

#[test]
fn the_route_tables_and_the_documents_list_the_same_routes() {
    let all: Value = serde_json::from_str(&generated()).unwrap();
    let admin = axum_routes(include_str!("../src/api/mod.rs"), Some(("{S}", "/api/plugin-microservice")));
    assert!(admin.len() > 50, "the route list was read: {admin:?}");
    assert_eq!(documented(&all, "admin"), admin, "admin API: router (right) vs document (left)");

    let addon_api = axum_routes(include_str!("../src/addon_api.rs"), None);
    assert_eq!(documented(&all, "addon-api"), addon_api, "addon API: router vs document");

    // The gateway's table; `{*rest}` is `{rest}` in OpenAPI, and no methods means any.
    let any = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];
    let mut gateway = BTreeSet::new();
    for r in addond::gateway::ROUTES {
        let path = r.path.replace("{*rest}", "{rest}");
        let methods: Vec<&str> = if r.methods.is_empty() { any.to_vec() } else { r.methods.to_vec() };
        for m in methods {
            gateway.insert((m.to_string(), path.clone()));
        }
    }
    let own: Value = serde_json::from_str(addond::gateway::openapi::document_text()).unwrap();
    let own_ops: BTreeSet<_> = addond::http::openapi::operations(&own).into_iter().collect();
    assert_eq!(own_ops, gateway, "gateway: ROUTES vs its document");
    // The whole document has the gateway's operations too (HEAD beside GET is implicit
    // on the admin socket, so a shared GET path may carry the gateway's HEAD).
    assert_eq!(documented(&all, "gateway"), gateway, "gateway: ROUTES vs the whole document");
}

/// A loopback TCP port that relays each connection to the admin socket, for clients that
/// speak only TCP.
async fn relay(socket: PathBuf) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    port
}

/// The venv's schemathesis; a missing venv fails the test (scripts/test.sh makes it).
fn schemathesis() -> PathBuf {
    let venv = std::env::var("ADDOND_SCHEMATHESIS_VENV").unwrap_or_else(|_| "/var/tmp/addond-schemathesis-venv".into());
    let bin = PathBuf::from(&venv).join("bin/schemathesis");
    assert!(bin.exists(), "schemathesis is missing at {venv}: create it with `bash scripts/schemathesis-venv.sh` (scripts/test.sh does)");
    bin
}

/// The failure codes schemathesis must not report: ST1xx (a server error, an undocumented
/// status, a content type or a body its schema does not allow), ST204/ST205 (methods), the
/// stateful ST3xx and ST401 (a route that needs a key served without one).
fn forbidden_code(code: &str) -> bool {
    code.starts_with("ST1") || code == "ST204" || code == "ST205" || code.starts_with("ST3") || code == "ST401"
}

/// Runs schemathesis on the document at `base/openapi.json` with `args` and the config file
/// `config` (TOML); panics on any forbidden failure or error, with its report.
fn fuzz(what: &str, base: &str, args: &[&str], config: &str, dir: &Path) {
    let out_dir = dir.join(format!("schemathesis-{what}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let config_file = out_dir.join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let o = Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", base, "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
        // One worker: hypothesis' lambda descriptions are not thread-safe on Python 3.11 (an
        // "AST constructor recursion depth mismatch" error in the tool, not in addond).
        .args(["--seed", "20261206", "--max-examples", "40", "--workers", "1", "--request-timeout", "30", "--no-color"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&out_dir)
        .args(args)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let text = out(&o);
    let summary = text.rsplit("SUMMARY").next().unwrap_or("");
    let mut failures = Vec::new();
    for line in summary.lines() {
        let line = line.trim().trim_start_matches('❌').trim();
        if let Some(code) = line.split_whitespace().next().filter(|c| c.starts_with("ST") && c.len() == 5) {
            failures.push((code.to_string(), line.to_string()));
        }
    }
    let bad: Vec<_> = failures.iter().filter(|(c, _)| forbidden_code(c)).collect();
    let crashed = summary.contains("Errors:") || o.status.code().is_none_or(|c| c > 1) || !summary.contains("Test cases:");
    eprintln!(
        "schemathesis on the {what}: {}",
        summary.lines().filter(|l| l.contains("ST") || l.contains("generated")).collect::<Vec<_>>().join(" | ")
    );
    let start = text.char_indices().map(|(i, _)| i).find(|&i| i >= text.len().saturating_sub(20_000)).unwrap_or(0);
    let report = &text[start..];
    assert!(bad.is_empty() && !crashed, "schemathesis on the {what} (exit {:?}):\n{report}\n{}", o.status.code(), tail(&err(&o), 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_a_live_daemon() {
    let d = Daemon::start().await;
    // Both listeners serve the generated document.
    let doc: Value = serde_json::from_str(&generated()).unwrap();
    let r = d.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, doc, "the admin socket serves the whole document");
    let gw = d.gateway().await;
    let (status, body) = http(gw.port(), "GET", "/openapi.json", "").await.expect("gateway answers");
    assert_eq!(status, 200);
    let own: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(own, serde_json::from_str::<Value>(addond::gateway::openapi::document_text()).unwrap());

    // An addon to reach and a key for it, so the gateway's handlers run past the key check
    // (with a rate limit the fuzzer does not reach: it would see mostly 429s).
    let m = json!({
        "name": "oa", "version": "1.0.0", "image": IMAGE,
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.3"}}],
        "actions": ["add", "echo"],
        "widgets": [{"name": "checkout", "category": "form"}]
    });
    install_addon(&d, m, None).await;
    let r = d.post("/api/applications", json!({"name": "fuzzer"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = d
        .post("/api/application-grants", json!({"application": "fuzzer", "addon": "oa", "rate_limit": {"requests_per_second": 100000}}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.data()["api_key"].as_str().unwrap().to_string();

    let port = relay(d.socket.clone()).await;
    let dir = d.dir.path().to_path_buf();
    let admin = format!("http://127.0.0.1:{port}");
    // The two endless streams are left out (a fuzzer waits for the end of an answer), and so
    // is the image pull (it would go to a registry on the internet).
    let admin_args = [
        "--include-tag",
        "admin",
        "--exclude-path",
        "/api/plugin-microservice/watch",
        "--exclude-path",
        "/api/events/stream",
        "--exclude-path",
        "/api/plugin-microservice/images/pull",
    ];
    // The gateway first, while the addon its key reaches is installed: its routes' addon and
    // widget are that addon's, so requests get past the key check to the handlers. The one
    // route that documents OPTIONS is the passthrough, whose answer (its `Allow` included)
    // is the addon's own, so the check of `Allow` against the document is off here.
    let gateway = format!("http://{gw}");
    let header = format!("apikey: {key}");
    let config = "[parameters]\n\"path.addon\" = \"oa\"\n\"path.widget\" = \"checkout\"\n";
    let args = ["--header", &header, "--exclude-checks", "allow_header_conformance"].map(String::from);
    tokio::task::spawn_blocking(move || fuzz("gateway", &gateway, &args.iter().map(String::as_str).collect::<Vec<_>>(), config, &dir))
        .await
        .unwrap();
    let dir = d.dir.path().to_path_buf();
    // The widget routes render that addon's widget too; `{name}` stays random (a fixed one
    // would have the fuzzer uninstall the addon at once). `follow=true` makes the logs an
    // endless stream (like the two left out above), and a waiting change gets a timeout it
    // can meet: a change asked to wait a microsecond answers 504, as documented.
    let admin_config = format!("{config}\"query.follow\" = false\n\"query.timeout\" = 20\n");
    tokio::task::spawn_blocking(move || fuzz("admin socket", &admin, &admin_args, &admin_config, &dir)).await.unwrap();
    // The daemon is still well.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(d.get("/health").await.status, 200, "{}", tail(&d.log(), 40));
}
