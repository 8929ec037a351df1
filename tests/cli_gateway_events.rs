//! `addonctl apps|grants|audit|events …` end to end: the real binary against a real daemon,
//! with a real addon behind the gateway. A key printed by `grants create` opens the
//! gateway, `grants rotate` prints another, `grants revoke` closes it, `audit` shows what
//! was done; `events emit` stores, `events list` shows, and `events follow` prints events
//! as they come, across a `kill -9` and restart of the daemon, none lost and none twice.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The table row (cells split on runs of 3+ spaces) whose first cell is `first`.
fn row(table: &str, first: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
}

/// `GET /gw/pay/health` through the gateway with `key`: (status, error code).
async fn gw_call(gw: SocketAddr, key: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    let head = format!("GET /gw/pay/health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\napikey: {key}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let code = serde_json::from_str::<Value>(body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string)).unwrap_or_default();
    (status, code)
}

/// The key set apart in the human output of `grants create` / `grants rotate`.
fn key_in(stdout: &str) -> String {
    let keys: Vec<&str> = stdout.lines().filter(|l| l.trim_start().starts_with("ak_")).map(str::trim).collect();
    assert_eq!(keys.len(), 1, "one key line: {stdout}");
    keys[0].to_string()
}

/// Registers the `pay` addon and installs it, waiting until it runs.
async fn install_pay(d: &Daemon) {
    let manifest = json!({"name": "pay", "version": "1.0.0", "image": IMAGE, "permissions": ["network.internet"],
        "services": [{"name": "api", "resource_limits": {"memory": "32m", "cpu": "0.2"}}], "actions": ["echo"]});
    let r = d.post("/api/addons/register", manifest).await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
    let r = d.post("/api/addons/pay/install?wait=started&timeout=60", json!({})).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_grants_keys_and_audit() {
    let d = Daemon::start().await;
    let gw = d.gateway().await;
    install_pay(&d).await;

    // Applications.
    let o = ok(&ctl(&d, &["apps", "create", "shop", "--organization", "Acme", "--description", "The shop"]).await, "apps create");
    assert!(o.starts_with("created application shop (app_"), "{o}");
    let blog = ok(&ctl(&d, &["-q", "apps", "create", "blog"]).await, "apps create -q");
    let blog = blog.trim().to_string();
    assert!(blog.starts_with("app_") && !blog.contains('\n'), "{blog}");
    let e = failed(&ctl(&d, &["apps", "create", "shop"]).await, 1, "a taken name");
    assert!(e.contains("shop") && e.contains("(field: name)"), "{e}");
    let list = ok(&ctl(&d, &["apps", "list"]).await, "apps list");
    assert_eq!(list.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(), ["ID", "NAME", "ORGANIZATION", "GRANTS"]);
    let shop_row = list.lines().find(|l| l.contains(" shop ")).unwrap_or_else(|| panic!("{list}"));
    assert_eq!(shop_row.split_whitespace().skip(1).collect::<Vec<_>>(), ["shop", "Acme", "0"]);
    assert_eq!(row(&list, &blog).unwrap()[1..], ["blog", "-", "0"]);

    // Create a grant: the key is printed once, set apart, with a warning on stderr.
    let o = ctl(&d, &["grants", "create", "--app", "shop", "--addon", "pay", "--rate", "50", "--origin", "https://shop.example"]).await;
    assert!(o.status.success(), "grants create: {}{}", out(&o), err(&o));
    let (stdout, stderr) = (out(&o), err(&o));
    assert!(stdout.starts_with("created grant grant_") && stdout.contains("for application shop on addon pay"), "{stdout}");
    let key = key_in(&stdout);
    assert_eq!(stdout.matches(&key).count(), 1, "{stdout}");
    assert!(stderr.starts_with("warning:") && stderr.contains("store it now") && !stderr.contains(&key), "{stderr}");
    assert_eq!(gw_call(gw, &key).await, (200, String::new()), "the printed key opens the gateway");

    let grant = ok(&ctl(&d, &["-q", "grants", "list", "--app", "shop"]).await, "grants list -q").trim().to_string();
    assert!(grant.starts_with("grant_") && !grant.contains('\n'), "{grant}");
    let list = ok(&ctl(&d, &["grants", "list"]).await, "grants list");
    let cells = row(&list, &grant).unwrap_or_else(|| panic!("{list}"));
    let key_id = key.split('_').nth(1).unwrap();
    assert_eq!(cells[1..], ["shop", "pay", &format!("ak_{key_id}_…"), "50/s", "https://shop.example", "active"]);
    let secret = key.rsplit('_').next().unwrap();
    assert!(!list.contains(secret), "the list never shows the key");
    let shown: Value = serde_json::from_str(&ok(&ctl(&d, &["grants", "show", &grant, "--json"]).await, "grants show")).unwrap();
    assert_eq!(shown["id"], grant.as_str());
    assert!(shown.get("api_key").is_none(), "{shown}");
    assert!(ok(&ctl(&d, &["apps", "list"]).await, "apps list").lines().any(|l| l.contains(" shop ") && l.ends_with(" 1")));

    // Rotate without grace (-q: the key alone): a different key; the old one is refused.
    let o = ctl(&d, &["-q", "grants", "rotate", &grant]).await;
    let key2 = ok(&o, "grants rotate -q");
    assert_eq!(key2.lines().count(), 1, "{key2}");
    let key2 = key2.trim().to_string();
    assert!(key2.starts_with("ak_") && key2 != key, "{key2}");
    assert_eq!(gw_call(gw, &key2).await.0, 200);
    assert_eq!(gw_call(gw, &key).await.0, 401, "the old key after a rotation without grace");

    // Rotate with a grace (--json: the grant with its key): both keys work for now.
    let o = ctl(&d, &["grants", "rotate", &grant, "--grace", "120", "--json"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).starts_with("warning:"), "{}", err(&o));
    let rotated: Value = serde_json::from_str(&out(&o)).unwrap();
    let key3 = rotated["api_key"].as_str().unwrap().to_string();
    assert!(rotated["old_key_valid_until"].is_string(), "{rotated}");
    assert_ne!(key3, key2);
    assert_eq!(gw_call(gw, &key3).await.0, 200);
    assert_eq!(gw_call(gw, &key2).await.0, 200, "the old key inside its grace");

    // Update: limits and origins; a burst without any rate is a usage error.
    let o = ok(&ctl(&d, &["grants", "update", &grant, "--rate", "20", "--burst", "40", "--origin", "https://b.example"]).await, "update");
    assert!(
        o.starts_with(&format!("updated grant {grant}\n"))
            && o.contains("20/s, burst 40")
            && o.contains("https://shop.example,https://b.example"),
        "{o}"
    );
    let o = ok(&ctl(&d, &["--json", "grants", "update", &grant, "--clear-origins"]).await, "update --clear-origins");
    let g: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(g["allowed_origins"], json!([]), "{g}");
    assert_eq!(g["rate_limit"], json!({"requests_per_second": 20.0, "burst": 40}), "{g}");
    // A second grant, without a rate limit: --burst alone has no rate to go with (exit 2);
    // then delete it.
    let o = ctl(&d, &["-q", "grants", "create", "--app", &blog, "--addon", "pay"]).await;
    let blog_key = ok(&o, "grants create -q").trim().to_string();
    assert_eq!(gw_call(gw, &blog_key).await.0, 200);
    let blog_grant = ok(&ctl(&d, &["-q", "grants", "list", "--app", "blog"]).await, "grants list -q").trim().to_string();
    assert!(blog_grant.starts_with("grant_") && blog_grant != grant, "{blog_grant}");
    let e = failed(&ctl(&d, &["grants", "update", &blog_grant, "--burst", "5"]).await, 2, "burst without a rate");
    assert!(e.contains("--rate"), "{e}");
    let o = ok(&ctl(&d, &["grants", "delete", &blog_grant]).await, "grants delete");
    assert_eq!(o, format!("deleted grant {blog_grant}: its key stops working now\n"));
    assert_eq!(gw_call(gw, &blog_key).await.0, 401, "a deleted grant's key");

    // Revoke: the key is refused at once; the grant stays, revoked.
    let o = ok(&ctl(&d, &["grants", "revoke", &grant]).await, "revoke");
    assert_eq!(o, format!("revoked grant {grant}: its key is refused from now on\n"));
    assert_eq!(gw_call(gw, &key3).await, (401, "revoked_api_key".to_string()));
    let list = ok(&ctl(&d, &["grants", "list"]).await, "grants list");
    assert_eq!(row(&list, &grant).unwrap().last().unwrap(), "revoked");
    let shown = ok(&ctl(&d, &["apps", "show", "shop"]).await, "apps show");
    assert!(shown.contains("Organization:  Acme") && shown.contains(&grant) && shown.contains("revoked"), "{shown}");

    // Errors: unknown grant or application (1), a revoked grant cannot rotate (1).
    let e = failed(&ctl(&d, &["grants", "show", "grant_nope"]).await, 1, "unknown grant");
    assert!(e.contains("no grant `grant_nope`"), "{e}");
    failed(&ctl(&d, &["grants", "revoke", "grant_nope"]).await, 1, "revoke an unknown grant");
    failed(&ctl(&d, &["grants", "list", "--app", "nope"]).await, 1, "unknown application");
    let e = failed(&ctl(&d, &["grants", "rotate", &grant]).await, 1, "rotate a revoked grant");
    assert!(e.contains("revoked"), "{e}");
    failed(&ctl(&d, &["grants", "create", "--app", "shop", "--addon", "nothere"]).await, 1, "grant for an addon not installed");

    // The audit log has the changes (uid:pid) and the gateway's refusals (client address).
    let deadline = Instant::now() + Duration::from_secs(15);
    let audit = loop {
        let a = ok(&ctl(&d, &["audit", "--limit", "200"]).await, "audit");
        if a.lines().any(|l| l.contains("127.0.0.1") && l.contains(" 401 ")) || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(audit.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(), ["AT", "WHO", "METHOD", "PATH", "STATUS", "DETAIL"]);
    let has = |method: &str, path: &str, status: &str| {
        audit.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() >= 5 && c[2] == method && c[3] == path && c[4] == status && c[1].contains(':')
        })
    };
    assert!(has("POST", "/api/applications", "201"), "{audit}");
    assert!(has("POST", "/api/applications", "409"), "{audit}");
    assert!(has("POST", "/api/application-grants", "201"), "{audit}");
    assert!(has("POST", &format!("/api/application-grants/{grant}/rotate"), "200"), "{audit}");
    assert!(has("PATCH", &format!("/api/application-grants/{grant}"), "200"), "{audit}");
    assert!(has("POST", &format!("/api/application-grants/{grant}/revoke"), "200"), "{audit}");
    assert!(audit.lines().any(|l| l.contains("127.0.0.1") && l.contains(" 401 ")), "a gateway refusal: {audit}");
    let entries: Value = serde_json::from_str(&ok(&ctl(&d, &["--json", "audit", "--limit", "3"]).await, "audit --json")).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 3);

    // Deleting the application deletes its grants.
    let o = ok(&ctl(&d, &["apps", "delete", "shop"]).await, "apps delete");
    assert!(o.starts_with("deleted application shop (app_"), "{o}");
    assert_eq!(ok(&ctl(&d, &["-q", "apps", "list"]).await, "apps list -q").trim(), blog);
    assert_eq!(ok(&ctl(&d, &["grants", "list"]).await, "grants list"), "no grants\n");
    failed(&ctl(&d, &["apps", "show", "shop"]).await, 1, "a deleted application");
}

/// `grants update --no-rate` removes the rate limit (`"rate_limit": null` in the PATCH, as
/// docs/api.md has it).
#[tokio::test(flavor = "multi_thread")]
async fn grants_update_no_rate_removes_the_limit() {
    let d = Daemon::start().await;
    install_pay(&d).await;
    ok(&ctl(&d, &["apps", "create", "shop"]).await, "apps create");
    let o = ctl(&d, &["--json", "grants", "create", "--app", "shop", "--addon", "pay", "--rate", "5"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let grant = serde_json::from_str::<Value>(&out(&o)).unwrap()["id"].as_str().unwrap().to_string();
    let g: Value =
        serde_json::from_str(&ok(&ctl(&d, &["--json", "grants", "update", &grant, "--no-rate"]).await, "update --no-rate")).unwrap();
    assert_eq!(g["rate_limit"], Value::Null, "{g}");
    let list = ok(&ctl(&d, &["grants", "list"]).await, "grants list");
    assert_eq!(row(&list, &grant).unwrap()[4], "-", "{list}");
}

/// An `events follow` process whose stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Follower {
    fn start(d: &Daemon, args: &[&str]) -> Follower {
        let mut child = Command::new(addonctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["events", "follow"])
            .args(args)
            .env_remove("ADDOND_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run addonctl events follow");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Follower { child, lines, stderr }
    }

    async fn next(&mut self, secs: u64) -> String {
        match tokio::time::timeout(Duration::from_secs(secs), self.lines.recv()).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!("events follow ended; stderr: {}", self.stderr.lock().unwrap()),
            Err(_) => panic!("no line from events follow in {secs}s; stderr: {}", self.stderr.lock().unwrap()),
        }
    }

    /// Nothing more arrives within `ms`.
    async fn quiet_for(&mut self, ms: u64) {
        if let Ok(Some(l)) = tokio::time::timeout(Duration::from_millis(ms), self.lines.recv()).await {
            panic!("unexpected line from events follow: {l}");
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ID TIME NAME SOURCE DATA`: the id, name, source and data of a followed line.
fn parts(line: &str) -> (u64, String, String, String) {
    let mut it = line.splitn(5, ' ');
    let id = it.next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"));
    let time = it.next().unwrap();
    assert!(time.len() >= 20 && time.as_bytes()[10] == b'T', "{line}");
    let (name, source, data) = (it.next().unwrap().to_string(), it.next().unwrap().to_string(), it.next().unwrap_or("").to_string());
    (id, name, source, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_emit_list_follow_and_reconnect() {
    let mut d = Daemon::start().await;

    // emit prints the stored id; list shows the event.
    let id1: u64 = ok(&ctl(&d, &["-q", "events", "emit", "test.one", "--set", "n=1"]).await, "emit -q").trim().parse().unwrap();
    let o = ok(&ctl(&d, &["events", "emit", "test.data", "--data", r#"{"amount": 5, "currency": "EUR"}"#]).await, "emit");
    assert!(o.starts_with("stored event ") && o.ends_with(" (test.data)\n"), "{o}");
    let e = failed(&ctl(&d, &["events", "emit", "Test.Bad"]).await, 1, "an invalid name");
    assert!(e.contains("(field: name)"), "{e}");
    failed(&ctl(&d, &["events", "emit", "test.x", "--data", "{not json"]).await, 2, "--data that is not JSON");

    let list = ok(&ctl(&d, &["events", "list", "--name", "test.*"]).await, "events list");
    assert_eq!(list.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(), ["ID", "TIME", "NAME", "SOURCE", "DATA"]);
    let cells = row(&list, &id1.to_string()).unwrap_or_else(|| panic!("{list}"));
    assert_eq!(cells[2], "test.one");
    assert!(cells[3].starts_with("admin:"), "{list}");
    assert_eq!(cells[4], r#"{"n":1}"#);
    assert!(list.contains(r#"{"amount":5,"currency":"EUR"}"#), "{list}");
    assert_eq!(ok(&ctl(&d, &["-q", "events", "list", "--name", "test.one"]).await, "list -q"), format!("{id1}\n"));
    let json: Value = serde_json::from_str(&ok(
        &ctl(&d, &["--json", "events", "list", "--after", &id1.to_string(), "--limit", "1"]).await,
        "list --json",
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert!(json[0]["id"].as_u64().unwrap() > id1);
    failed(&ctl(&d, &["events", "list", "--name", "Bad"]).await, 1, "a bad pattern");
    failed(&ctl(&d, &["events", "follow", "--name", "Bad"]).await, 1, "follow with a bad pattern");

    // follow: replays after --after, then prints new events live, only those matching.
    let mut f = Follower::start(&d, &["--name", "test.*", "--after", &(id1 - 1).to_string()]);
    let (id, name, source, data) = parts(&f.next(15).await);
    assert_eq!((id, name.as_str(), data.as_str()), (id1, "test.one", r#"{"n":1}"#));
    assert!(source.starts_with("admin:"), "{source}");
    assert_eq!(parts(&f.next(15).await).1, "test.data");
    let id2: u64 = ok(&ctl(&d, &["-q", "events", "emit", "test.two", "--set", "k=v"]).await, "emit").trim().parse().unwrap();
    ok(&ctl(&d, &["events", "emit", "other.event"]).await, "emit");
    let id3: u64 = ok(&ctl(&d, &["-q", "events", "emit", "test.three"]).await, "emit").trim().parse().unwrap();
    assert_eq!(parts(&f.next(15).await), (id2, "test.two".into(), source.clone(), r#"{"k":"v"}"#.into()));
    assert_eq!(parts(&f.next(15).await), (id3, "test.three".into(), source.clone(), "{}".into()));
    f.quiet_for(300).await;

    // The daemon dies and comes back: follow reconnects after the last event it printed;
    // one emitted while it was away and one after are printed once each.
    d.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.spawn().await;
    let id4: u64 = ok(&ctl(&d, &["-q", "events", "emit", "test.four"]).await, "emit").trim().parse().unwrap();
    let (id, name, _, _) = parts(&f.next(30).await);
    assert_eq!((id, name.as_str()), (id4, "test.four"), "the first line after the restart");
    let id5: u64 = ok(&ctl(&d, &["-q", "events", "emit", "test.five"]).await, "emit").trim().parse().unwrap();
    assert_eq!(parts(&f.next(15).await).0, id5);
    f.quiet_for(500).await;
    let stderr = f.stderr.lock().unwrap().clone();
    assert!(stderr.contains("reconnecting") && stderr.contains(&format!("after event {id3}")), "{stderr}");
    drop(f);

    // Without --after only new events print; --json prints one JSON object per line.
    let mut f = Follower::start(&d, &["--json", "--name", "test.six"]);
    // Nothing old is replayed; poll until the follower is connected by emitting until it sees one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        ok(&ctl(&d, &["events", "emit", "test.six"]).await, "emit");
        if let Ok(Some(l)) = tokio::time::timeout(Duration::from_millis(500), f.lines.recv()).await {
            break l;
        }
        assert!(Instant::now() < deadline, "follow without --after printed nothing");
    };
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["name"], "test.six");
    assert!(v["id"].as_u64().unwrap() > id5);
    drop(f);

    // Subscribers and redrive (no addon subscribes here).
    let s = ok(&ctl(&d, &["events", "subscribers"]).await, "subscribers");
    assert!(s.starts_with("last event id: ") && s.contains("no subscribers") && s.contains("no dead letters"), "{s}");
    let last: u64 = s.lines().next().unwrap().trim_start_matches("last event id: ").parse().unwrap();
    assert!(last > id5, "{s}");
    assert_eq!(ok(&ctl(&d, &["events", "redrive"]).await, "redrive"), "0 dead letter(s) will be delivered again\n");
    assert_eq!(
        ok(&ctl(&d, &["events", "redrive", "--subscriber", "mail"]).await, "redrive"),
        "0 dead letter(s) of mail will be delivered again\n"
    );

    // No daemon: exit 3.
    let o = ctl_at(std::path::Path::new("/nonexistent/addond.sock"), &["events", "list"], None);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
}
