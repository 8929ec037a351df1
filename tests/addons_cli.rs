//! `addonctl addons …` and `addonctl widgets …` end to end: the real binary against a real
//! daemon and real containers of the sample addon, from a TOML manifest through install,
//! execute, render, live config, stop/start and uninstall, with the exit codes of the
//! failures an operator meets.

use std::process::Output;

use serde_json::{json, Value};

use crate::common::*;

/// The sample addon as a TOML manifest (the doc's example, small limits).
fn manifest(name: &str) -> String {
    format!(
        r#"# addonctl test manifest
name = "{name}"
version = "1.0.0"
description = "The sample addon, registered from TOML"
category = "ecommerce"
image = "{IMAGE}"
permissions = ["network.internet"]
actions = [
  {{ name = "add", input_schema = {{ type = "object", required = ["a", "b"], properties = {{ a = {{ type = "number" }}, b = {{ type = "number" }} }} }} }},
  "echo",
  "fail",
  "whoami",
  {{ name = "sleep", timeout_seconds = 1 }},
]

[[services]]
name = "api"
resource_limits = {{ memory = "32m", cpu = "0.2" }}

[[widgets]]
name = "checkout"
category = "form"
config_schema = {{ type = "object", additionalProperties = false, properties = {{ title = {{ type = "string", default = "Pay now" }} }} }}

[config_schema]
type = "object"
properties.currency = {{ type = "string", enum = ["EUR", "USD"], default = "EUR" }}
"#
    )
}

/// Failed with `code`, stdout empty, one `error: …` line on stderr; returns that line.
fn fails(o: &Output, code: i32, what: &str) -> String {
    let e = failed(o, code, what);
    assert!(e.ends_with('\n') && e.lines().count() == 1, "{what}: {e:?}");
    e
}

fn json_out(o: &Output, what: &str) -> Value {
    let text = ok(o, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Cells of the table line whose first cell is `first`.
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn addons_and_widgets_through_addonctl() {
    let d = Daemon::start().await;
    let dir = d.dir.path();
    let name = "cli-shop";
    let file = dir.join("cli-shop.toml");
    std::fs::write(&file, manifest(name)).unwrap();
    let file = file.to_str().unwrap();

    // Register from TOML; again is a no-op. The same manifest as JSON on stdin is the same
    // version with the same content (the daemon would answer 409 for any difference), so the
    // TOML became exactly this JSON.
    assert_eq!(ok(&ctl(&d, &["addons", "register", file]).await, "register"), "registered cli-shop 1.0.0\n");
    assert_eq!(ok(&ctl(&d, &["addons", "register", file]).await, "register again"), "cli-shop 1.0.0 was already registered\n");
    let as_json: toml::Table = toml::from_str(&manifest(name)).unwrap();
    let as_json = serde_json::to_string(&as_json).unwrap();
    let o = ctl_stdin(&d, &["addons", "register", "-"], Some(as_json)).await;
    assert_eq!(ok(&o, "register JSON from stdin"), "cli-shop 1.0.0 was already registered\n");

    // A manifest the daemon refuses: exit 1, the field named. A file that is not TOML: exit 2.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, manifest("cli-bad").replace(r#"type = "object", required"#, r#"oneOf = [], type = "object", required"#)).unwrap();
    let e = fails(&ctl(&d, &["addons", "register", bad.to_str().unwrap()]).await, 1, "bad manifest");
    assert!(e.contains("oneOf") && e.ends_with("(field: actions[0].input_schema)\n"), "{e}");
    std::fs::write(&bad, "name = \"cli-bad\"\nversion 1.0.0\n").unwrap();
    let e = fails(&ctl(&d, &["addons", "register", bad.to_str().unwrap()]).await, 2, "not TOML");
    assert!(e.contains("bad.toml is not valid TOML: line 2, column"), "{e}");
    let e = fails(&ctl(&d, &["addons", "register", dir.join("missing.toml").to_str().unwrap()]).await, 2, "no file");
    assert!(e.contains("cannot read manifest"), "{e}");

    // The catalogue: registered, not installed.
    let list = ok(&ctl(&d, &["addons", "list"]).await, "list");
    assert_eq!(row(&list, name), [name, "1.0.0", "1.0.0", "ecommerce", "add,echo,fail,whoami,sleep", "checkout", "-"]);
    assert!(list.ends_with("\nno addons installed\n"), "{list}");
    assert_eq!(ok(&ctl(&d, &["-q", "addons", "list", "--category", "ecommerce"]).await, "list -q"), "cli-shop\n");
    assert_eq!(ok(&ctl(&d, &["-q", "addons", "list", "--category", "analytics"]).await, "list other category"), "");
    let entry = ok(&ctl(&d, &["addons", "show", name]).await, "show entry");
    assert!(entry.contains(&format!("Image:         {IMAGE}\n")) && entry.contains("Installed:     -\n"), "{entry}");
    assert_eq!(row(&entry, "add")[..3], ["add", "a,", "b"], "{entry}");
    assert_eq!(row(&entry, "sleep")[..3], ["sleep", "-", "1s"], "{entry}");

    // Install with a config key from --set, waiting until it runs.
    let o = ctl(&d, &["addons", "install", name, "--set", "currency=USD", "--wait"]).await;
    let text = ok(&o, "install");
    assert!(text.starts_with("installed cli-shop 1.0.0: Started\n  cli-shop-api: Started, "), "{text}\nlog:\n{}", tail(&d.log(), 30));
    assert_eq!(json_out(&ctl(&d, &["addons", "config", name, "--show"]).await, "config --show"), json!({"currency": "USD"}));
    // A config the schema refuses: exit 1 naming the field; nothing installed under that name.
    let e = fails(&ctl(&d, &["addons", "install", name, "--instance", "cli-shop-2", "--set", "currency=GBP"]).await, 1, "bad config");
    assert!(e.ends_with("(field: config.currency)\n"), "{e}");
    let e = fails(&ctl(&d, &["addons", "install", name]).await, 1, "installed twice");
    assert!(e.contains("already installed as `cli-shop`"), "{e}");

    // Execute: the addon's JSON result, pretty.
    let o = ctl(&d, &["addons", "execute", name, "add", "--data", r#"{"a":1,"b":2}"#]).await;
    assert_eq!(ok(&o, "execute add"), "{\n  \"sum\": 3\n}\n");
    assert_eq!(
        json_out(&ctl(&d, &["addons", "exec", name, "add", "--set", "a=2", "--set", "b=40"]).await, "exec --set"),
        json!({"sum": 42})
    );
    let input = dir.join("echo.toml");
    std::fs::write(&input, "greeting = \"hi\"\n[order]\nid = 7\nitems = [\"a\", \"b\"]\n").unwrap();
    let o = ctl(&d, &["addons", "execute", name, "echo", "--data-file", input.to_str().unwrap(), "--set", "extra=true"]).await;
    assert_eq!(json_out(&o, "echo from TOML")["echo"], json!({"greeting": "hi", "order": {"id": 7, "items": ["a", "b"]}, "extra": true}));
    // Failures: exit 1 with the daemon's message.
    let e = fails(&ctl(&d, &["addons", "execute", name, "nope"]).await, 1, "unknown action");
    assert!(e.contains("no action `nope`") && e.contains("known actions: add, echo, fail, whoami, sleep"), "{e}");
    let e = fails(&ctl(&d, &["addons", "execute", name, "add", "--data", r#"{"a":"x","b":2}"#]).await, 1, "schema");
    assert!(e.ends_with("(field: data.a)\n"), "{e}");
    let e = fails(&ctl(&d, &["addons", "execute", name, "fail"]).await, 1, "fail");
    assert!(e.contains("failed on purpose"), "{e}");
    let e = fails(&ctl(&d, &["addons", "execute", name, "add", "--data", "{a:1}"]).await, 2, "not JSON");
    assert!(e.contains("--data is not valid JSON"), "{e}");
    let e = fails(&ctl(&d, &["addons", "execute", "no-such-addon", "add"]).await, 1, "not installed");
    assert!(e.contains("no addon is installed as `no-such-addon`"), "{e}");

    // Widgets: listed, rendered as JSON, and as the sandboxed frame document.
    let widgets = ok(&ctl(&d, &["widgets", "list"]).await, "widgets list");
    assert_eq!(row(&widgets, name), [name, "checkout", "form", "1.0.0", "title", "-"]);
    assert_eq!(
        ok(&ctl(&d, &["widgets", "list", "--category", "display"]).await, "no display widgets"),
        "no widgets (install an addon that has some)\n"
    );
    let o =
        ctl(&d, &["widgets", "render", name, "checkout", "--config", r#"{"title":"Hello CLI"}"#, "--context", r#"{"user":"ada"}"#]).await;
    let w = json_out(&o, "render");
    assert!(w["html"].as_str().unwrap().contains("Hello CLI") && w["html"].as_str().unwrap().contains("ada"), "{w}");
    assert!(w["css"].as_str().unwrap().contains(".addond-checkout") && w["javascript"].is_string(), "{w}");
    let w = json_out(&ctl(&d, &["widgets", "render", name, "checkout"]).await, "render with defaults");
    assert!(w["html"].as_str().unwrap().contains("Pay now"), "the schema's default title: {w}");
    let html = ok(&ctl(&d, &["widgets", "render", name, "checkout", "--config", r#"{"title":"Hello CLI"}"#, "--html"]).await, "frame");
    assert!(html.starts_with("<!doctype html>") && html.contains("Hello CLI") && html.contains("<script nonce="), "{html}");
    let e = fails(&ctl(&d, &["widgets", "render", name, "checkout", "--config", r#"{"title":3}"#]).await, 1, "widget config");
    assert!(e.ends_with("(field: config.title)\n"), "{e}");
    let e = fails(&ctl(&d, &["widgets", "render", name, "receipt", "--html"]).await, 1, "unknown widget");
    assert!(e.contains("known widgets: checkout"), "{e}");

    // Live config: --set changes one key of the current config and reports the push.
    let text = ok(&ctl(&d, &["addons", "config", name, "--set", "currency=EUR"]).await, "config --set");
    assert_eq!(text, "config of cli-shop: applied to 1 instance(s), replacing 0, failed 0\n");
    assert_eq!(json_out(&ctl(&d, &["addons", "config", name, "--show"]).await, "config --show"), json!({"currency": "EUR"}));
    let e = fails(&ctl(&d, &["addons", "config", name, "--config", r#"{"currency":"YEN"}"#]).await, 1, "config refused");
    assert!(e.ends_with("(field: config.currency)\n"), "{e}");

    // The installed instance: table, show, --json.
    let list = ok(&ctl(&d, &["addons", "list"]).await, "list installed");
    assert_eq!(row(&list, name)[6], name, "{list}");
    let inst = row(list.split("INSTANCE").nth(1).unwrap(), name);
    assert_eq!(inst[..5], [name, name, "1.0.0", "Started", "1"], "{list}");
    let show = ok(&ctl(&d, &["addons", "show", name]).await, "show instance");
    assert!(show.contains("Phase:         Started\n") && show.contains("Config:        {\"currency\":\"EUR\"}\n"), "{show}");
    let svc = row(&show, "cli-shop-api");
    assert_eq!(svc[..4], ["cli-shop-api", "Started", "1", "0"], "{show}");
    assert!(svc.contains(&"closed".to_string()), "breaker state: {show}");
    let v = json_out(&ctl(&d, &["--json", "addons", "show", name]).await, "show --json");
    assert_eq!((v["instance"].as_str(), v["phase"].as_str()), (Some(name), Some("Started")));

    // Stop and start, waiting.
    let text = ok(&ctl(&d, &["addons", "stop", name, "--wait"]).await, "stop");
    assert!(text.starts_with("cli-shop: Stopped\n  cli-shop-api: Stopped, "), "{text}");
    let e = fails(&ctl(&d, &["addons", "execute", name, "add", "--set", "a=1", "--set", "b=1"]).await, 1, "stopped");
    assert!(!e.is_empty());
    let text = ok(&ctl(&d, &["addons", "start", name, "--wait", "--timeout", "120"]).await, "start");
    assert!(text.starts_with("cli-shop: Started\n"), "{text}");

    // Unregister is refused while installed; uninstall, then unregister.
    let e = fails(&ctl(&d, &["addons", "unregister", name]).await, 1, "unregister installed");
    assert!(e.contains("uninstall first"), "{e}");
    assert_eq!(ok(&ctl(&d, &["addons", "uninstall", name, "--wait"]).await, "uninstall"), "uninstalled cli-shop 1.0.0: Deleted\n");
    assert!(d.containers().await.is_empty(), "containers left: {:?}", d.containers().await);
    assert!(ok(&ctl(&d, &["addons", "list"]).await, "list after").ends_with("\nno addons installed\n"));
    fails(&ctl(&d, &["addons", "execute", name, "echo"]).await, 1, "execute after uninstall");
    assert_eq!(ok(&ctl(&d, &["addons", "unregister", name]).await, "unregister"), "unregistered cli-shop (1 version(s))\n");
    let e = fails(&ctl(&d, &["addons", "show", name]).await, 1, "gone");
    assert!(e.contains("no addon `cli-shop`"), "{e}");
}

/// Without a daemon: exit 3, as everywhere else.
#[tokio::test(flavor = "multi_thread")]
async fn addons_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let file = dir.path().join("m.toml");
    std::fs::write(&file, manifest("cli-none")).unwrap();
    for args in [vec!["addons", "list"], vec!["addons", "register", file.to_str().unwrap()], vec!["widgets", "render", "a", "b"]] {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let o = tokio::task::spawn_blocking({
            let sock = sock.clone();
            move || ctl_at(&sock, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
        })
        .await
        .unwrap();
        assert_eq!(o.status.code(), Some(3), "{}", err(&o));
        assert!(err(&o).contains("addond is not running"), "{}", err(&o));
    }
}
