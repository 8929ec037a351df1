//! Builds from addon code against the real engine: a `FROM scratch` context carrying the
//! sample addon's static binary builds into a working addon (installed, executed); a
//! failing step reports that step's log; hostile contexts are refused naming the entry;
//! a second build of the same addon is 409; a build outlives neither `build.timeout_seconds`
//! nor a `kill -9` of the daemon (no `building` row left to block the next); `addonctl
//! addons build` end to end; services created with a `plugin_id` and no image are built
//! from `<data_dir>/plugins/<plugin_id>/`.

use std::time::{Duration, Instant};

use addond::client::{ApiError, ByteStream, ClientError, Method};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{DownloadFromContainerOptions, ListContainersOptions, RemoveContainerOptions, RemoveImageOptions};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::common::*;

/// The sample addon's static binary, taken out of the sample image (the same file its
/// `FROM scratch` image is built from).
async fn sample_binary() -> Vec<u8> {
    static BIN: tokio::sync::OnceCell<Vec<u8>> = tokio::sync::OnceCell::const_new();
    BIN.get_or_init(|| async {
        let dk = docker();
        let c = dk.create_container(None, ContainerCreateBody { image: Some(IMAGE.into()), ..Default::default() }).await.unwrap();
        let mut s = dk.download_from_container(&c.id, Some(DownloadFromContainerOptions { path: "/sample-addon".into() }));
        let mut tar = Vec::new();
        while let Some(chunk) = s.next().await {
            tar.extend_from_slice(&chunk.unwrap());
        }
        let _ = dk.remove_container(&c.id, Some(RemoveContainerOptions { force: true, ..Default::default() })).await;
        let mut a = tar::Archive::new(tar.as_slice());
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let mut bin = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bin).unwrap();
        assert!(bin.len() > 100_000, "the sample binary");
        bin
    })
    .await
    .clone()
}

/// A name no other test process uses (image tags are global to the engine).
fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

const DOCKERFILE: &str = "FROM scratch\nCOPY sample-addon /sample-addon\nUSER 65534:65534\nEXPOSE 8080\nENTRYPOINT [\"/sample-addon\"]\n";

/// A tar of `(path, contents)` files, executable.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar with raw headers, so hostile names can be written (tar's builder refuses them).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn manifest(name: &str) -> String {
    format!("name = \"{name}\"\nversion = \"1.0.0\"\nactions = [\"add\"]\n\n[[services]]\nname = \"main\"\nservice_type = \"rest_api\"\nport = 8080\n")
}

async fn send(d: &Daemon, path: &str, body: Vec<u8>) -> Result<ByteStream, ApiError> {
    match d.client.stream_bytes(Method::POST, path, "application/x-tar", bytes::Bytes::from(body)).await {
        Ok((ct, s)) => {
            assert_eq!(ct.as_deref(), Some("application/x-ndjson"));
            Ok(s)
        }
        Err(ClientError::Api(e)) => Err(e),
        Err(e) => panic!("{e}"),
    }
}

/// A request the daemon must refuse before building: its error.
async fn refused(d: &Daemon, path: &str, body: Vec<u8>) -> ApiError {
    match send(d, path, body).await {
        Ok(_) => panic!("{path}: the build started"),
        Err(e) => e,
    }
}

/// Reads a build's stream to its end (or until it breaks): every complete line, parsed.
async fn lines(mut s: ByteStream) -> Vec<Value> {
    let mut text = Vec::new();
    while let Some(Ok(c)) = s.next_chunk().await {
        text.extend_from_slice(&c);
    }
    String::from_utf8(text).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Reads a stream until a line matches; the lines so far, and the stream.
async fn until(mut s: ByteStream, pred: impl Fn(&Value) -> bool) -> (Vec<Value>, ByteStream) {
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = tokio::time::timeout_at(deadline.into(), s.next_chunk()).await.expect("the line came").expect("the stream went on");
        buf.extend_from_slice(&c.unwrap());
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            let hit = pred(&v);
            seen.push(v);
            if hit {
                return (seen, s);
            }
        }
    }
}

async fn remove_images(tags: &[String]) {
    for t in tags {
        let _ = docker().remove_image(t, Some(RemoveImageOptions { force: false, ..Default::default() }), None).await;
    }
}

#[tokio::test]
async fn build_install_execute_and_a_failing_step() {
    let d = Daemon::start().await;
    let name = unique("bt");
    let bin = sample_binary().await;
    let m = manifest(&name);
    let ctx = tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", m.as_bytes()), ("sample-addon", &bin)]);
    let s = send(&d, &format!("/api/addons/{name}/builds"), ctx.clone()).await.unwrap();
    let all = lines(s).await;
    let last = all.last().unwrap();
    assert_eq!(last["type"], "succeeded", "{all:?}");
    let image = format!("addond/{name}:1.0.0");
    assert_eq!(last["image"], image.as_str());
    assert_eq!(last["version"], "1.0.0");
    let steps: Vec<(u64, u64)> =
        all.iter().filter(|l| l["type"] == "step").map(|l| (l["step"].as_u64().unwrap(), l["of"].as_u64().unwrap())).collect();
    assert_eq!(steps, vec![(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]);
    // The engine has the tag on exactly the image id reported; no temporary tag is left.
    let inspect = docker().inspect_image(&image).await.unwrap();
    assert_eq!(inspect.id.as_deref(), last["image_id"].as_str());
    let tags = inspect.repo_tags.unwrap_or_default();
    // (The same layers as the sample image: the engine's cache may give both one id.)
    let temp_prefix = format!("addond/{name}:build-");
    assert!(tags.contains(&image) && !tags.iter().any(|t| t.starts_with(&temp_prefix)), "the final tag only: {tags:?}");

    // Registered with the built image; it installs and answers.
    let shown = d.get(&format!("/api/addons/{name}")).await;
    assert_eq!(shown.data()["manifest"]["image"], image.as_str(), "{:?}", shown.body);
    let r = d.post(&format!("/api/addons/{name}/install?wait=started&timeout=120"), json!({})).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    let r = d.post(&format!("/api/addons/{name}/execute"), json!({"action": "add", "data": {"a": 2, "b": 40}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["sum"], 42);

    // The same context again: the same manifest, registered already, builds fine (cached).
    let again = lines(send(&d, &format!("/api/addons/{name}/builds"), ctx).await.unwrap()).await;
    assert_eq!(again.last().unwrap()["type"], "succeeded", "{again:?}");
    // Another manifest under the registered version: 409 before anything is built, unless replacing.
    let m2 = m.replace("actions = [\"add\"]", "actions = [\"add\", \"echo\"]");
    let ctx2 = tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", m2.as_bytes()), ("sample-addon", &bin)]);
    let e = refused(&d, &format!("/api/addons/{name}/builds"), ctx2.clone()).await;
    assert_eq!((e.status, e.code.as_str(), e.field.as_deref()), (409, "conflict", Some("version")), "{e}");
    assert!(e.message.contains("replace=true"), "{e}");
    // ?version= overrides the manifest's.
    let v2 = lines(send(&d, &format!("/api/addons/{name}/builds?version=1.1.0"), ctx2).await.unwrap()).await;
    assert_eq!(v2.last().unwrap()["image"], format!("addond/{name}:1.1.0").as_str(), "{v2:?}");

    // The Dockerfile the manifest names, elsewhere in the context.
    let m5 = m.replace("1.0.0", "1.2.0").replace("actions = [\"add\"]\n", "actions = [\"add\"]\ndockerfile = \"./build/Containerfile\"\n");
    let ctx5 = tar_of(&[("build/Containerfile", DOCKERFILE.as_bytes()), ("addon.toml", m5.as_bytes()), ("sample-addon", &bin)]);
    let v3 = lines(send(&d, &format!("/api/addons/{name}/builds"), ctx5).await.unwrap()).await;
    assert_eq!(v3.last().unwrap()["type"], "succeeded", "{v3:?}");
    let ctx6 = tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", m5.replace("1.2.0", "1.3.0").as_bytes())]);
    let e = refused(&d, &format!("/api/addons/{name}/builds"), ctx6).await;
    assert_eq!((e.status, e.field.as_deref()), (400, Some("build/Containerfile")), "{e}");
    assert!(e.message.contains("named by `dockerfile` in addon.toml"), "{e}");

    // A failing step: its number, and its log, in the last line.
    let bad = "FROM scratch\nCOPY sample-addon /sample-addon\nCOPY missing-file /x\nENTRYPOINT [\"/sample-addon\"]\n";
    let m3 = m.replace("1.0.0", "2.0.0");
    let ctx3 = tar_of(&[("Dockerfile", bad.as_bytes()), ("addon.toml", m3.as_bytes()), ("sample-addon", &bin)]);
    let failed = lines(send(&d, &format!("/api/addons/{name}/builds"), ctx3).await.unwrap()).await;
    let last = failed.last().unwrap();
    assert_eq!(last["type"], "failed", "{failed:?}");
    assert_eq!(last["step"], 3);
    assert_eq!(last["error"]["code"], "build_failed");
    assert!(last["error"]["message"].as_str().unwrap().contains("missing-file"), "{last}");
    let log: Vec<&str> = last["log"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(log.first().copied(), Some("Step 3/4 : COPY missing-file /x"), "{log:?}");
    // Nothing registered, no tag.
    let cat = d.get("/api/addons").await;
    let entry = cat.data()["addons"].as_array().unwrap().iter().find(|a| a["name"] == name.as_str()).unwrap().clone();
    assert_eq!(entry["versions"], json!(["1.0.0", "1.1.0", "1.2.0"]), "{entry}");
    assert!(docker().inspect_image(&format!("addond/{name}:2.0.0")).await.is_err());
    let temp = format!("addond/{name}:build-{}", last["build"]);
    assert!(docker().inspect_image(&temp).await.is_err(), "the temporary tag went");

    // A Dockerfile the engine cannot parse fails before its first step: step 0.
    let ctx4 = tar_of(&[("Dockerfile", b"FROM scratch\nBOGUS x\n"), ("addon.toml", m3.as_bytes())]);
    let parse = lines(send(&d, &format!("/api/addons/{name}/builds"), ctx4).await.unwrap()).await;
    let last4 = parse.last().unwrap();
    assert_eq!((last4["type"].as_str(), last4["step"].as_u64()), (Some("failed"), Some(0)), "{parse:?}");
    assert!(last4["error"]["message"].as_str().unwrap().to_lowercase().contains("bogus"), "{last4}");

    // Both ends of a build are events.
    let ev = d.get("/api/events?name=addon.*&limit=100").await;
    let evs: Vec<(String, String)> = ev
        .data()
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", ev.body))
        .iter()
        .filter(|e| e["data"]["addon"] == name.as_str())
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["data"]["version"].as_str().unwrap_or("").to_string()))
        .collect();
    for want in [("addon.built", "1.0.0"), ("addon.built", "1.1.0"), ("addon.build_failed", "2.0.0")] {
        assert!(evs.iter().any(|(n, v)| (n.as_str(), v.as_str()) == want), "{want:?} in {evs:?}");
    }

    // The history, newest first.
    let r = d.get(&format!("/api/addons/{name}/builds")).await;
    let builds = r.data()["builds"].as_array().unwrap().clone();
    let statuses: Vec<(&str, &str)> = builds.iter().map(|b| (b["version"].as_str().unwrap(), b["status"].as_str().unwrap())).collect();
    assert_eq!(
        statuses,
        vec![
            ("2.0.0", "failed"),
            ("2.0.0", "failed"),
            ("1.2.0", "succeeded"),
            ("1.1.0", "succeeded"),
            ("1.0.0", "succeeded"),
            ("1.0.0", "succeeded")
        ]
    );
    assert_eq!(builds[1]["step"], 3);
    assert_eq!(builds[1]["log"][0], "Step 3/4 : COPY missing-file /x");

    let r = d.delete(&format!("/api/addons/{name}?wait=deleted&timeout=60")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    remove_images(&[image, format!("addond/{name}:1.1.0"), format!("addond/{name}:1.2.0")]).await;
}

#[tokio::test]
async fn hostile_contexts_are_refused_naming_the_entry() {
    let d = Daemon::start_with(Options { extra: "[build]\nmax_context_bytes = 65536\n".into(), ..Default::default() }).await;
    let name = unique("bh");
    let m = manifest(&name);
    let ok_files: Vec<(&str, tar::EntryType, &str, &[u8])> =
        vec![("Dockerfile", tar::EntryType::Regular, "", DOCKERFILE.as_bytes()), ("addon.toml", tar::EntryType::Regular, "", m.as_bytes())];
    let with = |extra: (&'static str, tar::EntryType, &'static str, &'static [u8])| {
        let mut v = ok_files.clone();
        v.push(extra);
        raw_tar(&v)
    };
    let cases = [
        (with(("/etc/cron.d/x", tar::EntryType::Regular, "", b"x")), "/etc/cron.d/x", "absolute"),
        (with(("../x", tar::EntryType::Regular, "", b"x")), "../x", ".."),
        (with(("etc", tar::EntryType::Symlink, "/etc", b"")), "etc", "outside"),
        (with(("up", tar::EntryType::Symlink, "../../../etc/passwd", b"")), "up", "outside"),
        (with(("null", tar::EntryType::Char, "", b"")), "null", "device"),
        (with(("hard", tar::EntryType::Link, "/etc/shadow", b"")), "hard", "hard link"),
        (raw_tar(&ok_files[1..]), "Dockerfile", "missing"),
        (raw_tar(&ok_files[..1]), "addon.toml", "missing"),
    ];
    for (body, entry, why) in cases {
        let e = refused(&d, &format!("/api/addons/{name}/builds"), body).await;
        assert_eq!((e.status, e.code.as_str(), e.field.as_deref()), (400, "invalid_build_context", Some(entry)), "{e}");
        assert!(e.message.contains(&format!("`{entry}`")) && e.message.contains(why), "{entry}: {e}");
    }
    // Over build.max_context_bytes: as sent, and once unpacked from a small tar.gz.
    let big = vec![7u8; 100 * 1024];
    let e = refused(&d, &format!("/api/addons/{name}/builds"), tar_of(&[("big", &big)])).await;
    assert_eq!((e.status, e.code.as_str()), (413, "payload_too_large"), "{e}");
    assert!(e.message.contains("build.max_context_bytes"), "{e}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", m.as_bytes()), ("big", &big)]))
        .unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 65536);
    let e = refused(&d, &format!("/api/addons/{name}/builds"), gz).await;
    assert_eq!((e.status, e.code.as_str()), (413, "payload_too_large"), "{e}");
    assert!(e.message.contains("once unpacked"), "{e}");
    // A manifest error names its field.
    let bad = tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", b"version = \"one\"\n")]);
    let e = refused(&d, &format!("/api/addons/{name}/builds"), bad).await;
    assert_eq!((e.status, e.field.as_deref()), (400, Some("version")), "{e}");
    // Not a context at all.
    let r = d.client.stream_bytes(Method::POST, &format!("/api/addons/{name}/builds"), "application/json", "{}".into()).await;
    let Err(ClientError::Api(e)) = r else { panic!("accepted JSON as a context") };
    assert_eq!((e.status, e.field.as_deref()), (400, Some("Content-Type")), "{e}");
    // Nothing was built or recorded.
    let r = d.get(&format!("/api/addons/{name}/builds")).await;
    assert_eq!(r.data()["builds"], json!([]));
}

/// Containers of the classic builder still running `/sample-addon` (build steps carry no
/// addond label; the addon's own containers do).
async fn build_step_containers() -> Vec<String> {
    let list = docker().list_containers(Some(ListContainersOptions { all: true, ..Default::default() })).await.unwrap();
    list.into_iter()
        .filter(|c| c.command.as_deref().is_some_and(|cmd| cmd.contains("/sample-addon --build-step")))
        .filter(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key("addond.daemon")))
        .filter_map(|c| c.id)
        .collect()
}

/// The one build step container running, once it runs.
async fn wait_for_step_container() -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(id) = build_step_containers().await.into_iter().next() {
            return id;
        }
        assert!(Instant::now() < deadline, "no build step container appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_build_at_a_time_a_time_limit_and_kill_9() {
    let mut d = Daemon::start_with(Options { extra: "[build]\ntimeout_seconds = 6.0\n".into(), ..Default::default() }).await;
    let name = unique("bk");
    let bin = sample_binary().await;
    let m = manifest(&name);
    // The sample addon serves until stopped: a build step that never ends by itself.
    let slow = "FROM scratch\nCOPY sample-addon /sample-addon\nRUN [\"/sample-addon\", \"--build-step\"]\n";
    let ctx = tar_of(&[("Dockerfile", slow.as_bytes()), ("addon.toml", m.as_bytes()), ("sample-addon", &bin)]);
    let path = format!("/api/addons/{name}/builds");
    let s = send(&d, &path, ctx.clone()).await.unwrap();
    let (_, s) = until(s, |l| l["type"] == "step" && l["step"] == 3).await;
    // The step runs with no network and the build limits (`build.memory` 1g, `build.cpus` 1).
    let step = wait_for_step_container().await;
    let hc = docker().inspect_container(&step, None).await.unwrap().host_config.unwrap();
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!((hc.memory, hc.memory_swap), (Some(1 << 30), Some(1 << 30)));
    assert_eq!((hc.cpu_period, hc.cpu_quota), (Some(100_000), Some(100_000)));
    // A second build of the same addon meanwhile: 409.
    let e = refused(&d, &path, ctx.clone()).await;
    assert_eq!((e.status, e.code.as_str()), (409, "build_running"), "{e}");
    // kill -9 mid-build: after the restart the build is failed, and blocks nothing.
    d.kill9();
    drop(s);
    d.spawn().await;
    let r = d.get(&path).await;
    let b = &r.data()["builds"][0];
    assert_eq!(b["status"], "failed", "{:?}", r.body);
    assert!(b["error"].as_str().unwrap().contains("interrupted"), "{b}");
    // The engine stopped that build when its connection went: its step container goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !build_step_containers().await.is_empty() {
        assert!(Instant::now() < deadline, "the killed build's step container stayed: {:?}", build_step_containers().await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The next build runs (no 409), into build.timeout_seconds: stopped, failed, cleaned up.
    // Its manifest grants the internet, so its steps get the engine's default network.
    let m = m.replace("actions = [\"add\"]\n", "actions = [\"add\"]\npermissions = [\"network.internet\"]\n");
    let ctx = tar_of(&[("Dockerfile", slow.as_bytes()), ("addon.toml", m.as_bytes()), ("sample-addon", &bin)]);
    let t0 = Instant::now();
    let s = send(&d, &path, ctx).await.unwrap();
    let step = wait_for_step_container().await;
    let hc = docker().inspect_container(&step, None).await.unwrap().host_config.unwrap();
    assert_ne!(hc.network_mode.as_deref(), Some("none"));
    let all = lines(s).await;
    let last = all.last().unwrap();
    assert_eq!(last["type"], "failed", "{all:?}");
    assert_eq!(last["step"], 3);
    assert!(last["error"]["message"].as_str().unwrap().contains("build.timeout_seconds"), "{last}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !build_step_containers().await.is_empty() {
        assert!(Instant::now() < deadline, "the timed-out build's step container stayed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = d.get(&path).await;
    let statuses: Vec<&str> = r.data()["builds"].as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["failed", "failed"]);
    assert!(docker().inspect_image(&format!("addond/{name}:1.0.0")).await.is_err(), "no tag from failed builds");
}

#[tokio::test]
async fn addonctl_builds_a_directory() {
    let d = Daemon::start().await;
    let name = unique("bc");
    let bin = sample_binary().await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(p.join("addon.toml"), manifest(&name)).unwrap();
    std::fs::write(p.join("sample-addon"), &bin).unwrap();
    std::fs::set_permissions(p.join("sample-addon"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(p.join(".git/HEAD"), "ref").unwrap();
    let dirs = p.to_str().unwrap();

    // Plain: one line per step on stderr, the result on stdout, exit 0.
    let o = ctl(&d, &["addons", "build", dirs]).await;
    assert!(o.status.success(), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).starts_with(&format!("built {name} 1.0.0: addond/{name}:1.0.0 (sha256:")), "{}", out(&o));
    assert!(err(&o).contains("step 1/5: FROM scratch\n") && err(&o).contains("step 5/5: "), "{}", err(&o));

    // --json: every stdout line is the daemon's NDJSON, the last `succeeded`; --version overrides.
    let o = ctl(&d, &["--json", "addons", "build", dirs, "--version", "1.0.1"]).await;
    assert!(o.status.success(), "{}\n{}", out(&o), err(&o));
    let ls: Vec<Value> = out(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(ls.first().unwrap()["type"], "step");
    assert_eq!(ls.last().unwrap()["type"], "succeeded");
    assert_eq!(ls.last().unwrap()["image"], format!("addond/{name}:1.0.1").as_str());

    // A failing step: its log on stderr, exit 1; with --json the failed line on stdout.
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nCOPY not-there /x\n").unwrap();
    let o = ctl(&d, &["addons", "build", dirs, "--name", &name, "--version", "3.0.0"]).await;
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    assert!(err(&o).contains("step 2 failed; its last lines:\n  Step 2/2 : COPY not-there /x"), "{}", err(&o));
    assert!(err(&o).contains("error: ") && err(&o).contains("not-there"), "{}", err(&o));
    let o = ctl(&d, &["--json", "addons", "build", dirs, "--version", "3.0.0"]).await;
    assert_eq!(o.status.code(), Some(1));
    let last: Value = serde_json::from_str(out(&o).lines().last().unwrap()).unwrap();
    assert_eq!((last["type"].as_str(), last["step"].as_u64()), (Some("failed"), Some(2)));

    // A symlink leaving the directory is refused before anything is sent (usage, exit 2).
    std::os::unix::fs::symlink("/etc/passwd", p.join("passwd")).unwrap();
    let o = ctl(&d, &["addons", "build", dirs]).await;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("`passwd`") && err(&o).contains("outside"), "{}", err(&o));
    // Not a directory: usage error.
    let o = ctl(&d, &["addons", "build", "/nonexistent-dir"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    remove_images(&[format!("addond/{name}:1.0.0"), format!("addond/{name}:1.0.1")]).await;
}

#[tokio::test]
async fn plugin_services_are_built_from_the_data_dir() {
    let d = Daemon::start().await;
    let id = unique("pl");
    let bin = sample_binary().await;
    let dir = d.data_dir().join("plugins").join(&id);
    // No directory: 400 naming it.
    let r = d.post(SVC, json!({"name": format!("{id}-svc"), "plugin_id": id})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let e = r.error().unwrap();
    assert_eq!(e.field.as_deref(), Some("plugin_id"));
    assert!(e.message.contains(&format!("{}/ does not exist", dir.display())), "{e}");
    // Neither image nor plugin: the message it always had.
    let r = d.post(SVC, json!({"name": format!("{id}-svc")})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error().unwrap().message, "a service needs an image, e.g. addond-sample:latest");

    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("sample-addon"), &bin).unwrap();
    std::fs::set_permissions(dir.join("sample-addon"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = d.post(&format!("{SVC}?wait=started&timeout=120"), json!({"name": format!("{id}-svc"), "plugin_id": id})).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 20));
    let image = format!("addond/plugin-{id}:latest");
    assert_eq!(r.data()["image"], image.as_str(), "{:?}", r.body);
    let port = ports_of(r.data())[0];
    let (st, _) = http_get(port, "/health").await.expect("the built plugin answers");
    assert_eq!(st, 200);

    // addonctl takes --plugin-id in place of --image.
    let o = ctl(&d, &["services", "create", "--name", &format!("{id}-ctl"), "--plugin-id", &id, "--wait"]).await;
    assert!(o.status.success(), "{}\n{}", out(&o), err(&o));
    let svc = d.service(&format!("{id}-ctl")).await.unwrap();
    assert_eq!(svc["image"], image.as_str());
    let o = ctl(&d, &["services", "create", "--name", &format!("{id}-none")]).await;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--image"), "{}", err(&o));

    // A plugin whose build fails: 422 with the failing step's lines, no service.
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY nope /x\n").unwrap();
    let r = d.post(SVC, json!({"name": format!("{id}-two"), "plugin_id": id})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let e = r.error().unwrap();
    assert_eq!(e.code, "build_failed");
    assert!(e.message.contains("Step 2/2 : COPY nope /x"), "{e}");
    assert!(d.service(&format!("{id}-two")).await.is_none());

    for svc in ["svc", "ctl"] {
        let r = d.delete(&format!("{SVC}/{id}-{svc}?wait=deleted&timeout=60")).await;
        assert_eq!(r.status, 200);
    }
    remove_images(&[image]).await;
}

/// `kill -9` after a build's success was committed but before its tag was set: the next
/// start puts the tag on the recorded image; the catalogue and the engine agree.
#[tokio::test]
async fn a_build_recorded_before_a_crash_is_tagged_at_the_next_start() {
    let mut d = Daemon::start().await;
    let name = unique("br");
    let bin = sample_binary().await;
    let m = manifest(&name).replace("1.0.0", "4.0.0");
    let ctx = tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", m.as_bytes()), ("sample-addon", &bin)]);
    d.kill9();
    d.env = vec![("ADDOND_DEBUG_HOOKS".into(), "1".into()), ("ADDOND_DEBUG_ABORT_AT".into(), "build_recorded".into())];
    d.spawn().await;
    let all = lines(send(&d, &format!("/api/addons/{name}/builds"), ctx).await.unwrap()).await;
    assert!(!all.iter().any(|l| l["type"] == "succeeded"), "the daemon died before answering: {all:?}");
    let image = format!("addond/{name}:4.0.0");
    assert!(docker().inspect_image(&image).await.is_err(), "killed before the tag");
    d.kill9();
    d.env.clear();
    d.spawn().await;
    let r = d.get(&format!("/api/addons/{name}/builds")).await;
    let b = r.data()["builds"][0].clone();
    assert_eq!(b["status"], "succeeded", "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        if let Ok(i) = docker().inspect_image(&image).await {
            break i.id.unwrap();
        }
        assert!(Instant::now() < deadline, "the tag was never set\n{}", tail(&d.log(), 20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(Some(id.as_str()), b["image_id"].as_str());
    let temp = format!("addond/{name}:build-{}", b["build"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while docker().inspect_image(&temp).await.is_ok() {
        assert!(Instant::now() < deadline, "the temporary tag stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = d.get(&format!("/api/addons/{name}")).await;
    assert_eq!(shown.data()["manifest"]["image"], image.as_str());
    remove_images(&[image]).await;
}

/// Without Docker a build is refused at once (503), not started to fail.
#[tokio::test]
async fn no_build_starts_without_docker() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("no-docker.sock");
    let d = Daemon::start_with(Options { docker_host: format!("unix://{}", sock.display()), wait_for_docker: false, ..Default::default() })
        .await;
    let name = unique("bd");
    let m = manifest(&name);
    let ctx = tar_of(&[("Dockerfile", DOCKERFILE.as_bytes()), ("addon.toml", m.as_bytes())]);
    let e = refused(&d, &format!("/api/addons/{name}/builds"), ctx).await;
    assert_eq!((e.status, e.code.as_str()), (503, "docker_unavailable"), "{e}");
    let r = d.get(&format!("/api/addons/{name}/builds")).await;
    assert_eq!(r.data()["builds"], json!([]), "nothing recorded");
}

/// A directory over `build.max_context_bytes`: addonctl reports the daemon's 413, naming
/// the key, even though the daemon answers before reading the whole context.
#[tokio::test]
async fn addonctl_reports_an_oversize_context() {
    let d = Daemon::start_with(Options { extra: "[build]\nmax_context_bytes = 65536\n".into(), ..Default::default() }).await;
    let name = unique("bo");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.path().join("addon.toml"), manifest(&name)).unwrap();
    std::fs::write(dir.path().join("big"), vec![1u8; 40 << 20]).unwrap();
    let o = ctl(&d, &["addons", "build", dir.path().to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("build.max_context_bytes"), "{}", err(&o));
}

/// On a terminal (a pty from util-linux's `script`), progress is one line redrawn with a
/// spinner, and cleared before the result.
#[tokio::test]
async fn addonctl_shows_a_spinner_on_a_terminal() {
    let d = Daemon::start().await;
    let name = unique("bs");
    let bin = sample_binary().await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(p.join("addon.toml"), manifest(&name)).unwrap();
    std::fs::write(p.join("sample-addon"), &bin).unwrap();
    std::fs::set_permissions(p.join("sample-addon"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cmd = format!("{} --socket {} addons build {}", addonctl_bin(), d.socket.display(), p.display());
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new("script").args(["-qefc", &cmd, "/dev/null"]).env_remove("ADDOND_SOCKET").output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}");
    assert!(text.contains("\r\x1b[2K⠋ step 1/5: FROM scratch"), "{text:?}");
    assert!(text.contains("step 5/5: "), "{text:?}");
    assert!(!text.contains("step 1/5: FROM scratch\n"), "no plain step lines on a terminal: {text:?}");
    assert!(text.contains(&format!("\r\x1b[2Kbuilt {name} 1.0.0: addond/{name}:1.0.0")), "{text:?}");
    remove_images(&[format!("addond/{name}:1.0.0")]).await;
}
