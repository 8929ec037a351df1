//! `POST …/images/pull` and addonctl's pull step: a present image is an envelope, a missing
//! one a stream of JSON lines ending in `error` (no registry is reachable in the tests),
//! and a create whose image cannot be pulled is never sent.

use addond::client::Method;
use serde_json::{json, Value};

use crate::common::*;

const PULL: &str = "/api/plugin-microservice/images/pull";
const MISSING: &str = "no-such-image:404";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How often the daemon started a pull (one `pulling image` log line each).
fn pulls(d: &Daemon) -> usize {
    d.log().matches("pulling image").count()
}

async fn service_count(d: &Daemon) -> usize {
    let r = d.get(SVC).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.data().as_array().expect("a list").len()
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_reports_present_images_and_streams_failures() {
    let d = Daemon::start().await;

    // Present: an envelope, and addonctl says so (plain, --json, --quiet).
    let r = d.post(PULL, json!({"image": IMAGE})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data(), &json!({"image": IMAGE, "present": true, "pulled": false}));
    let out = ctl(&d, &["images", "pull", IMAGE]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), format!("image {IMAGE} is present\n"));
    assert_eq!(text(&out.stderr), "");
    let out = ctl(&d, &["--json", "images", "pull", IMAGE]).await;
    assert!(out.status.success(), "{out:?}");
    let data: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(data["present"], true);
    let out = ctl(&d, &["-q", "images", "pull", IMAGE]).await;
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");

    // Missing: the raw reply is ndjson, progress lines then an `error` line naming the image.
    let raw = d.client.request_raw(Method::POST, PULL, Some(&json!({"image": MISSING}))).await.unwrap();
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type.as_deref(), Some("application/x-ndjson"));
    let body = text(&raw.body);
    let lines: Vec<Value> =
        body.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let (last, progress) = lines.split_last().unwrap_or_else(|| panic!("empty stream: {body:?}"));
    assert!(progress.iter().all(|l| l.get("progress").is_some()), "{body}");
    assert_eq!(last["error"]["code"], "image_not_found", "{body}");
    assert_eq!(last["error"]["field"], "image", "{body}");
    assert!(last["error"]["message"].as_str().unwrap().contains(MISSING), "{body}");

    // addonctl: exit 1, `error: …` naming the image, nothing on stdout.
    let out = ctl(&d, &["images", "pull", MISSING]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.lines().last().unwrap_or("").starts_with("error: ") && err.contains(MISSING), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // An invalid reference: the daemon's 400 envelope, field `image`.
    let r = d.post(PULL, json!({"image": "Not An Image!"})).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("image")), "{:?}", r.body);
    let out = ctl(&d, &["images", "pull", "Not An Image!"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("(field: image)"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_pulls_first_and_is_not_sent_when_the_pull_fails() {
    let d = Daemon::start().await;

    // services create: the pull fails, so the create is never sent (it would pull again).
    let before = pulls(&d);
    let out = ctl(&d, &["services", "create", "--name", "x", "--image", MISSING]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("error: ") && err.contains(MISSING), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(service_count(&d).await, 0);
    assert_eq!(pulls(&d), before + 1, "one pull (addonctl's), no create; log:\n{}", tail(&d.log(), 30));

    // templates create with an image: the same.
    let out = ctl(&d, &["templates", "create", "rest_api_basic", "--name", "t", "--image", MISSING]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains(MISSING), "{out:?}");
    assert_eq!(service_count(&d).await, 0);
    assert_eq!(pulls(&d), before + 2, "log:\n{}", tail(&d.log(), 30));

    // --no-pull: the create is sent, and the daemon refuses it (it tried to pull itself).
    let out = ctl(&d, &["services", "create", "--name", "x", "--image", MISSING, "--no-pull"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains(MISSING), "{out:?}");
    assert_eq!(service_count(&d).await, 0);
    assert_eq!(pulls(&d), before + 3, "log:\n{}", tail(&d.log(), 30));

    // A present image: the pull step is silent and the create goes ahead.
    let out = ctl(&d, &["-q", "services", "create", "--name", "ok", "--image", IMAGE, "--replicas", "0"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).trim().starts_with("svc_"), "{out:?}");
    assert_eq!(text(&out.stderr), "", "{out:?}");
    assert_eq!(service_count(&d).await, 1);
    assert_eq!(pulls(&d), before + 3, "a present image is not pulled");
}

/// References Docker would refuse are refused before Docker sees them: 400 naming `image`
/// (not a 502 `docker_error`), on create, on pull and in a manifest; nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_image_references_are_refused_naming_the_field() {
    let d = Daemon::start().await;
    let bad = [
        "UPPER:latest",
        "alpine@sha256:bad",
        "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeF",
        "alpine:-dash",
        "alpine:",
        "library//alpine",
        "alpine___x:1",
        "registry.example.com:port/app",
    ];
    for image in bad {
        let r = d.post(SVC, json!({"name": "img", "image": image})).await;
        assert_eq!(r.status, 400, "{image}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "validation_failed", "{image}: {:?}", r.body);
        assert_eq!(r.body["error"]["field"], "image", "{image}: {:?}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(image) && msg.contains("e.g."), "{image}: the message names it and shows a valid one: {msg}");
        let r = d.post(PULL, json!({"image": image})).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("image")), "{image}: {:?}", r.body);
    }
    let r = d.post("/api/addons/register", json!({"name": "badimg", "version": "1.0.0", "image": "Bad:Image"})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "image", "{:?}", r.body);
    assert_eq!(service_count(&d).await, 0);
    // what Docker accepts still goes through validation (and then fails only for being absent)
    // (port 1 of localhost refuses at once: no registry is reachable in the tests)
    for image in [
        "localhost:1/team/app:v1.2_3",
        "localhost:1/a.b_c__d-e---f:1",
        "localhost:1/alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let r = d.post(SVC, json!({"name": "img", "image": image})).await;
        assert_eq!(r.body["error"]["code"], "image_not_found", "{image}: {:?}", r.body);
    }
}

/// Removes a private image tag however the test ends (the image itself stays: the shared
/// sample tag still names it).
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rmi", &self.0]).output();
    }
}

fn docker_has(image: &str) -> bool {
    std::process::Command::new("docker").args(["image", "inspect", image]).output().unwrap().status.success()
}

/// On a packaged install Docker lacks the template image until something loads it: a
/// template create loads `templates.image_archive` (the `docker save` archive the packages
/// ship) and goes ahead. With neither the image nor the archive, the refusal says how to
/// get one. A private tag stands in for the sample image, which other tests share.
#[tokio::test(flavor = "multi_thread")]
async fn templates_load_their_image_from_the_archive_when_docker_lacks_it() {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let tag = format!("addond-template-test-{}-{stamp}:packaged", std::process::id());
    let _untag = Untag(tag.clone());
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("addond-sample.tar.gz");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker tag {IMAGE} {tag} && docker save {tag} | gzip -1 > {} && docker rmi {tag} >/dev/null", archive.display()))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    assert!(!docker_has(&tag), "the private tag is gone before the test");

    let d = Daemon::start_with(Options {
        extra: format!("[templates]\nimage = \"{tag}\"\nimage_archive = \"{}\"\n", archive.display()),
        ..Options::default()
    })
    .await;
    let out = ctl(&d, &["templates", "create", "rest_api_basic", "--name", "x", "--wait"]).await;
    assert!(out.status.success(), "{out:?}\nlog:\n{}", tail(&d.log(), 30));
    assert!(docker_has(&tag), "the archive was loaded");
    assert!(d.log().contains("template image loaded from its archive"), "{}", tail(&d.log(), 30));
    let r = d.get(&format!("{SVC}/x")).await;
    assert_eq!(
        (r.status, r.data()["image"].as_str(), r.data()["phase"].as_str()),
        (200, Some(tag.as_str()), Some("Started")),
        "{:?}",
        r.body
    );
    let out = ctl(&d, &["delete", "x", "--wait"]).await;
    assert!(out.status.success(), "{out:?}");
    drop(d);

    // Neither the image nor the archive: refused, saying how to get an image.
    let missing = format!("addond-template-test-{}-{stamp}:absent", std::process::id());
    let gone = dir.path().join("gone.tar.gz");
    let d = Daemon::start_with(Options {
        extra: format!("[templates]\nimage = \"{missing}\"\nimage_archive = \"{}\"\n", gone.display()),
        ..Options::default()
    })
    .await;
    let out = ctl(&d, &["templates", "create", "rest_api_basic", "--name", "y"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    for want in [missing.as_str(), "templates.image_archive", &format!("docker load -i {}", gone.display()), "--image"] {
        assert!(err.contains(want), "the refusal lacks {want:?}: {err}");
    }
    assert_eq!(service_count(&d).await, 0);
}
