//! `addonctl images pull` and the pull step of `services create` and `templates create`:
//! `POST …/images/pull` answers an envelope when the image is present, else an ndjson
//! stream of progress that ends in `done` or `error`. Progress goes to stderr, throttled
//! per layer and sanitised, as each chunk arrives.

use std::time::{Duration, Instant};

use addond::client::{self, ClientError, LineSplitter, Method};
use addond::sanitize::sanitize as cell;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::render::note;
use crate::Ctl;

pub(crate) const PULL: &str = "/api/plugin-microservice/images/pull";

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Pull an image unless it is present, with progress on stderr
    Pull {
        /// Image reference (name:tag)
        image: String,
    },
}

impl Ctl {
    /// `images pull`: the result on stdout, progress on stderr (none with `--quiet`).
    pub(crate) async fn image_pull(&self, image: &str) -> anyhow::Result<()> {
        match self.pull(image).await? {
            Pulled::Present(data) => {
                self.show(&data, |d| format!("image {} is present\n", cell(d.get("image").and_then(Value::as_str).unwrap_or(image))))
            }
            Pulled::Pulled(name) => {
                self.show(&json!({"image": name, "present": false, "pulled": true}), |_| format!("pulled {}\n", cell(&name)))
            }
        }
    }

    /// The pull step of `services create` and `templates create`: silent when the image is
    /// present; progress and `pulled IMAGE` on stderr (stdout carries the create's output)
    /// when it had to be pulled; an error stops the create before it is sent.
    pub(crate) async fn pull_before_create(&self, image: &str) -> anyhow::Result<()> {
        if let Pulled::Pulled(name) = self.pull(image).await? {
            if !self.quiet {
                note(&format!("pulled {}\n", cell(&name)));
            }
        }
        Ok(())
    }

    /// `POST …/images/pull`. A present image is answered with an envelope; otherwise the
    /// reply is the ndjson stream of the pull, whose progress goes to stderr (throttled,
    /// sanitised) as it arrives, unless `--quiet`. A failed pull is an [`ApiError`] (exit 1).
    pub(crate) async fn pull(&self, image: &str) -> anyhow::Result<Pulled> {
        self.pull_to(image, |progress| {
            if !self.quiet {
                note(progress)
            }
        })
        .await
    }

    /// [`Ctl::pull`] with the progress handed to `progress` (one or more complete lines per
    /// call, as each chunk of the stream arrives).
    pub(crate) async fn pull_to(&self, image: &str, mut progress: impl FnMut(&str)) -> anyhow::Result<Pulled> {
        let (content_type, mut body) = self.client.stream_with(Method::POST, PULL, Some(&json!({"image": image}))).await?;
        let ndjson = content_type.as_deref().is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("application/x-ndjson"));
        if !ndjson {
            // The envelope: the image is present (errors came back as ClientError::Api).
            let bytes = body.into_bytes().await?;
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Protocol(format!(
                    "the daemon answered with a body that is not JSON ({e}): {}",
                    cell(&String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))
                ))
            })?;
            let data = client::Response { status: 200, body }.into_result()?;
            return Ok(Pulled::Present(data));
        }
        let mut stream = PullStream::new(image);
        while let Some(chunk) = body.next_chunk().await {
            let chunk = match chunk {
                Ok(c) => c,
                // A broken stream ends the pull; `finish` reports it unless a result came.
                Err(_) => break,
            };
            let lines = stream.push(&chunk, Instant::now());
            if !lines.is_empty() {
                progress(&lines);
            }
        }
        Ok(Pulled::Pulled(stream.finish(200)?))
    }
}

// ---------------------------------------------------------------------------------------
// Image pulls.

/// How `POST …/images/pull` ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pulled {
    /// The image was already present: the envelope's `data`.
    Present(Value),
    /// The daemon pulled it: the image its `done` line names.
    Pulled(String),
}

/// At most one progress line per layer in this interval, unless the status changes.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Reads the ndjson reply of a pull: `{"progress": …}` lines become (throttled) progress
/// lines, and the stream ends with `{"done": true, "image": …}` or `{"error": {…}}`.
/// Chunks may split lines anywhere; blank and unparsable lines are skipped.
pub(crate) struct PullStream {
    /// The image asked for, named when the stream ends without a result.
    image: String,
    /// Splits the stream into its JSON lines.
    lines: LineSplitter,
    /// Which progress steps are worth a line.
    throttle: ProgressThrottle,
    /// `Ok(image)` after `done`, `Err(error object)` after `error`; nothing after counts.
    outcome: Option<Result<String, Value>>,
}

impl PullStream {
    fn new(image: &str) -> Self {
        PullStream {
            image: image.to_string(),
            lines: LineSplitter::with_max_line(usize::MAX),
            throttle: ProgressThrottle::default(),
            outcome: None,
        }
    }

    /// Feeds a chunk received at `now`; returns the progress lines to print (sanitised,
    /// each ending in a newline).
    fn push(&mut self, chunk: &[u8], now: Instant) -> String {
        let mut out = String::new();
        for line in self.lines.push(chunk) {
            if let Some(l) = self.line(&line, now) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }

    fn line(&mut self, line: &str, now: Instant) -> Option<String> {
        if self.outcome.is_some() {
            return None;
        }
        let v: Value = serde_json::from_str(line).ok()?;
        if let Some(p) = v.get("progress") {
            return self.throttle.line(p, now);
        }
        if let Some(e) = v.get("error") {
            self.outcome = Some(Err(e.clone()));
        } else if v.get("done").and_then(Value::as_bool) == Some(true) {
            let image = v.get("image").and_then(Value::as_str).unwrap_or(&self.image).to_string();
            self.outcome = Some(Ok(image));
        }
        None
    }

    /// The end of the stream (`status` is the reply's HTTP status): the pulled image, the
    /// daemon's error, or a protocol error when the stream stopped without either.
    fn finish(mut self, status: u16) -> anyhow::Result<String> {
        if let Some(last) = self.lines.finish() {
            self.line(&last, Instant::now());
        }
        match self.outcome {
            Some(Ok(image)) => Ok(image),
            Some(Err(e)) => {
                // Read like an envelope's error object (code, message, field, with fallbacks).
                let reply = client::Response { status, body: json!({"success": false, "error": e}) };
                let err = reply.error().ok_or_else(|| ClientError::Protocol("the pull failed".into()))?;
                Err(err.into())
            }
            None => Err(ClientError::Protocol(format!(
                "the pull of {} ended without a result (the daemon stopped or the connection broke)",
                cell(&self.image)
            ))
            .into()),
        }
    }
}

/// Decides which progress steps to print: every status change of a layer, and otherwise
/// at most one line per layer per [`PROGRESS_INTERVAL`], and never the same line twice.
#[derive(Default)]
pub(crate) struct ProgressThrottle {
    /// Per layer ("" for steps without one): its status, last line printed and when.
    layers: std::collections::HashMap<String, (String, String, Instant)>,
}

impl ProgressThrottle {
    fn line(&mut self, p: &Value, now: Instant) -> Option<String> {
        let layer = cell(p.get("layer").and_then(Value::as_str).unwrap_or(""));
        let status = cell(p.get("status").and_then(Value::as_str).unwrap_or(""));
        if layer.is_empty() && status.is_empty() {
            return None;
        }
        let count = |k: &str| p.get(k).and_then(Value::as_u64);
        let line = progress_line(&layer, &status, count("current"), count("total"));
        match self.layers.get_mut(&layer) {
            Some((last_status, last_line, at)) if *last_status == status => {
                if *last_line == line || now.saturating_duration_since(*at) < PROGRESS_INTERVAL {
                    return None;
                }
                *last_line = line.clone();
                *at = now;
            }
            _ => {
                self.layers.insert(layer, (status, line.clone(), now));
            }
        }
        Some(line)
    }
}

/// `abc123: Downloading 12.3/45.6 MB`, `abc123: Pull complete`, `Digest: sha256:…`.
/// Inputs are already sanitised.
pub(crate) fn progress_line(layer: &str, status: &str, current: Option<u64>, total: Option<u64>) -> String {
    let mut out = String::new();
    if !layer.is_empty() {
        out.push_str(layer);
        out.push(':');
    }
    if !status.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(status);
    }
    if let Some(sizes) = progress_sizes(current, total) {
        out.push(' ');
        out.push_str(&sizes);
    }
    out
}

/// `12.3/45.6 MB`, `512 B`, or `None` when the step carries no sizes. Decimal units, as
/// `docker pull` prints them; the unit follows the larger number.
pub(crate) fn progress_sizes(current: Option<u64>, total: Option<u64>) -> Option<String> {
    let total = total.filter(|t| *t > 0);
    let current = current.filter(|c| *c > 0 || total.is_some());
    if current.is_none() && total.is_none() {
        return None;
    }
    let (div, unit) = match current.unwrap_or(0).max(total.unwrap_or(0)) {
        1_000_000_000.. => (1e9, "GB"),
        1_000_000.. => (1e6, "MB"),
        1_000.. => (1e3, "kB"),
        _ => (1.0, "B"),
    };
    let n = |v: u64| if unit == "B" { v.to_string() } else { format!("{:.1}", v as f64 / div) };
    let current = current.map_or_else(|| "?".to_string(), n);
    Some(match total {
        Some(t) => format!("{current}/{} {unit}", n(t)),
        None => format!("{current} {unit}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{build_template_body, ServiceCmd, TemplateCmd};
    use crate::tests::parse;
    use crate::{exit_code, Cli, Command};
    use addond::client::{ApiError, Client};
    use clap::Parser;

    #[test]
    fn image_commands_and_no_pull() {
        assert!(
            matches!(parse(&["images", "pull", "my/img:1"]).command, Command::Images(ImageCmd::Pull { ref image }) if image == "my/img:1")
        );
        let c = parse(&["services", "create", "--name", "a", "--image", "i", "--no-pull"]);
        assert!(matches!(c.command, Command::Services(ServiceCmd::Create(ref a)) if a.no_pull));
        let c = parse(&["services", "create", "--name", "a", "--image", "i"]);
        assert!(matches!(c.command, Command::Services(ServiceCmd::Create(ref a)) if !a.no_pull));
        let c = parse(&["templates", "create", "rest_api_basic", "--name", "t", "--no-pull"]);
        let Command::Templates(TemplateCmd::Create(a)) = c.command else { panic!() };
        assert!(a.no_pull);
        // --no-pull is ours, not a body key.
        assert_eq!(build_template_body(&a), json!({"name": "t"}));
        assert!(Cli::try_parse_from(["addonctl", "images", "pull"]).is_err());
    }

    #[test]
    fn progress_lines() {
        let mb = |x: f64| Some((x * 1e6) as u64);
        assert_eq!(progress_line("abc123", "Downloading", mb(12.3), mb(45.6)), "abc123: Downloading 12.3/45.6 MB");
        assert_eq!(progress_line("abc123", "Extracting", mb(0.5), mb(45.6)), "abc123: Extracting 0.5/45.6 MB");
        assert_eq!(progress_line("abc123", "Pull complete", None, None), "abc123: Pull complete");
        assert_eq!(progress_line("", "Digest: sha256:0f0f", None, None), "Digest: sha256:0f0f");
        assert_eq!(progress_line("abc123", "", None, None), "abc123:");
        // Units follow the larger number; bytes print whole.
        assert_eq!(progress_sizes(Some(512), Some(900)).as_deref(), Some("512/900 B"));
        assert_eq!(progress_sizes(Some(1_500), Some(32_000)).as_deref(), Some("1.5/32.0 kB"));
        assert_eq!(progress_sizes(Some(900_000), Some(1_200_000_000)).as_deref(), Some("0.0/1.2 GB"));
        assert_eq!(progress_sizes(Some(2_500_000), None).as_deref(), Some("2.5 MB"));
        assert_eq!(progress_sizes(None, Some(2_000_000)).as_deref(), Some("?/2.0 MB"));
        assert_eq!(progress_sizes(Some(0), Some(2_000_000)).as_deref(), Some("0.0/2.0 MB"));
        // Nothing worth showing: no sizes, a zero total, a bare zero.
        assert_eq!(progress_sizes(None, None), None);
        assert_eq!(progress_sizes(Some(0), None), None);
        assert_eq!(progress_sizes(Some(0), Some(0)), None);
    }

    #[test]
    fn progress_is_throttled_per_layer_but_status_changes_always_print() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let step = |layer: Option<&str>, status: &str, cur: Option<u64>| json!({"layer": layer, "status": status, "current": cur, "total": cur.map(|_| 10_000_000u64)});
        let mut t = ProgressThrottle::default();
        // The first step of a layer prints.
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(1_000_000)), at(0)).as_deref(), Some("aaa: Downloading 1.0/10.0 MB"));
        // Within 500 ms of it: dropped, whatever the bytes.
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(2_000_000)), at(100)), None);
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(3_000_000)), at(499)), None);
        // Another layer has its own clock.
        assert_eq!(t.line(&step(Some("bbb"), "Downloading", Some(5_000_000)), at(200)).as_deref(), Some("bbb: Downloading 5.0/10.0 MB"));
        // 500 ms after the last printed line: printed.
        assert_eq!(t.line(&step(Some("aaa"), "Downloading", Some(4_000_000)), at(500)).as_deref(), Some("aaa: Downloading 4.0/10.0 MB"));
        // A status change prints at once, and restarts the layer's clock.
        assert_eq!(t.line(&step(Some("aaa"), "Download complete", None), at(510)).as_deref(), Some("aaa: Download complete"));
        assert_eq!(t.line(&step(Some("aaa"), "Extracting", Some(1_000_000)), at(520)).as_deref(), Some("aaa: Extracting 1.0/10.0 MB"));
        assert_eq!(t.line(&step(Some("aaa"), "Extracting", Some(9_000_000)), at(900)), None);
        // The same line again, even much later: not repeated ("Waiting" sent over and over).
        assert_eq!(t.line(&step(Some("ccc"), "Waiting", None), at(0)).as_deref(), Some("ccc: Waiting"));
        assert_eq!(t.line(&step(Some("ccc"), "Waiting", None), at(5_000)), None);
        // Steps without a layer: one bucket, each new status prints.
        assert_eq!(t.line(&step(None, "Pulling from library/x", None), at(0)).as_deref(), Some("Pulling from library/x"));
        assert_eq!(t.line(&step(None, "Digest: sha256:1", None), at(1)).as_deref(), Some("Digest: sha256:1"));
        assert_eq!(t.line(&step(None, "Status: Downloaded newer image", None), at(2)).as_deref(), Some("Status: Downloaded newer image"));
        // Nothing to say: nothing printed.
        assert_eq!(t.line(&json!({"layer": null, "status": ""}), at(3)), None);
        // Daemon text is sanitised: escapes and line breaks never reach the terminal.
        let evil = json!({"layer": "d\u{1b}[2Jd\u{1b}]0;pwned\u{7}", "status": "Down\nloading\u{202e}", "current": 5, "total": 10});
        assert_eq!(t.line(&evil, at(0)).as_deref(), Some("dd: Down loading 5/10 B"));
    }

    #[test]
    fn pull_stream_reads_ndjson_across_chunks() {
        let t0 = Instant::now();
        let mut s = PullStream::new("my/img:1");
        let body = concat!(
            r#"{"progress":{"layer":"abc123","status":"Pulling fs layer","current":null,"total":null}}"#,
            "\n",
            r#"{"progress":{"layer":"abc123","status":"Downloading","current":1000000,"total":4000000}}"#,
            "\n",
            r#"{"progress":{"layer":"abc123","status":"Downloading","current":2000000,"total":4000000}}"#,
            "\n",
            "not json\n\n",
            r#"{"progress":{"layer":"abc123","status":"Pull complete","current":null,"total":null}}"#,
            "\n",
            r#"{"done":true,"image":"my/img:1"}"#,
            "\n",
            r#"{"progress":{"layer":"late","status":"ignored","current":null,"total":null}}"#,
            "\n",
        );
        // Split mid-line (and mid-number) to check the buffering.
        let (a, b) = body.as_bytes().split_at(130);
        let mut out = s.push(a, t0);
        out.push_str(&s.push(b, t0));
        assert_eq!(out, "abc123: Pulling fs layer\nabc123: Downloading 1.0/4.0 MB\nabc123: Pull complete\n");
        assert_eq!(s.finish(200).unwrap(), "my/img:1");

        // A last line without its newline still counts; `done` without an image names ours.
        let mut s = PullStream::new("my/img:1");
        assert_eq!(s.push(br#"{"done":true}"#, t0), "");
        assert_eq!(s.finish(200).unwrap(), "my/img:1");
    }

    #[test]
    fn pull_stream_errors() {
        let t0 = Instant::now();
        let mut s = PullStream::new("no-such-image:404");
        let line = r#"{"error":{"code":"image_not_found","message":"image `no-such-image:404` is not present locally and could not be pulled: denied","field":"image"}}"#;
        assert_eq!(s.push(format!("{line}\n").as_bytes(), t0), "");
        // Nothing after the error changes the outcome.
        s.push(b"{\"done\":true}\n", t0);
        let err = s.finish(200).unwrap_err();
        let api = err.downcast_ref::<ApiError>().expect("an ApiError");
        assert_eq!((api.code.as_str(), api.field.as_deref()), ("image_not_found", Some("image")));
        assert!(api.message.contains("no-such-image:404"), "{api}");
        assert_eq!(exit_code(&err), 1);
        assert_eq!(err.to_string(), "image `no-such-image:404` is not present locally and could not be pulled: denied (field: image)");

        // A bare error string still yields a message.
        let mut s = PullStream::new("x:1");
        s.push(b"{\"error\":\"registry down\"}\n", t0);
        let err = s.finish(200).unwrap_err();
        assert_eq!(err.downcast_ref::<ApiError>().unwrap().message, "registry down");

        // The stream stopped without `done` or `error`: a protocol error naming the image.
        let mut s = PullStream::new("x:1");
        s.push(b"{\"progress\":{\"layer\":\"a\",\"status\":\"Downloading\"}}\n", t0);
        let err = s.finish(200).unwrap_err();
        assert!(matches!(err.downcast_ref::<ClientError>(), Some(ClientError::Protocol(m)) if m.contains("x:1")), "{err}");
        assert_eq!(exit_code(&err), 1);
    }

    /// A fake daemon answering `images/pull` as the real one does: an envelope for
    /// `present:1`, an ndjson stream (close-delimited, in pieces) for `streamed:1` and
    /// `broken:1`, a 400 envelope otherwise.
    async fn fake_pull_daemon(listener: tokio::net::UnixListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("post /api/plugin-microservice/images/pull "), "{head}");
                let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).unwrap().trim().parse().unwrap();
                if buf.len() >= end + 4 + len {
                    break serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + len]).unwrap();
                }
            };
            let image = body["image"].as_str().unwrap().to_string();
            let head = |status: &str, ctype: &str| format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\nconnection: close\r\n\r\n");
            let parts: Vec<String> = match image.as_str() {
                "present:1" => vec![
                    head("200 OK", "application/json"),
                    json!({"success": true, "data": {"image": image, "present": true, "pulled": false}, "message": "image is present"})
                        .to_string(),
                ],
                "streamed:1" | "broken:1" => {
                    let mut v = vec![head("200 OK", "application/x-ndjson")];
                    v.push(
                        r#"{"progress":{"layer":"abc123","status":"Downloading","current":1000000,"total":2000000}}"#.to_string()
                            + "\n{\"progr",
                    );
                    v.push(r#"ess":{"layer":"abc123","status":"Pull complete","current":null,"total":null}}"#.to_string() + "\n");
                    if image == "streamed:1" {
                        v.push(format!("{}\n", json!({"done": true, "image": image})));
                    }
                    v
                }
                _ => vec![
                    head("400 Bad Request", "application/json"),
                    json!({"success": false, "error": {"code": "validation_failed", "message": "not an image", "field": "image"}})
                        .to_string(),
                ],
            };
            for p in parts {
                s.write_all(p.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
            }
            let _ = s.shutdown().await;
        }
    }

    #[tokio::test]
    async fn pull_tells_the_envelope_from_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let server = tokio::spawn(fake_pull_daemon(tokio::net::UnixListener::bind(&path).unwrap()));
        // Quiet: progress would go to the real stderr, which the test harness does not capture.
        let ctl = Ctl { client: Client::new(path), json: false, quiet: true };

        match ctl.pull("present:1").await.unwrap() {
            Pulled::Present(d) => assert_eq!(d, json!({"image": "present:1", "present": true, "pulled": false})),
            other => panic!("{other:?}"),
        }
        assert_eq!(ctl.pull("streamed:1").await.unwrap(), Pulled::Pulled("streamed:1".into()));
        // The stream ends without `done`: an error, not a success.
        let err = ctl.pull("broken:1").await.unwrap_err();
        assert!(err.to_string().contains("broken:1") && err.to_string().contains("without a result"), "{err}");
        // A refusal envelope: the daemon's error with its field, exit code 1.
        let err = ctl.pull("Bad!").await.unwrap_err();
        assert_eq!(err.to_string(), "not an image (field: image)");
        assert_eq!(exit_code(&err), 1);
        server.abort();
    }

    /// The progress of a pull is handed on as each chunk arrives, not when the reply ends:
    /// this daemon holds back the end of its stream until the first line was seen.
    #[tokio::test]
    async fn pull_progress_is_live() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).unwrap().trim().parse().unwrap();
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n").await.unwrap();
            s.write_all(b"{\"progress\":{\"layer\":\"abc123\",\"status\":\"Pulling fs layer\"}}\n").await.unwrap();
            s.flush().await.unwrap();
            // Only once addonctl has shown the first line does the pull "finish".
            seen_rx.await.unwrap();
            s.write_all(b"{\"done\":true,\"image\":\"slow:1\"}\n").await.unwrap();
            let _ = s.shutdown().await;
        });
        let ctl = Ctl { client: Client::new(path), json: false, quiet: true };
        let mut seen_tx = Some(seen_tx);
        let mut lines = String::new();
        let pulled = tokio::time::timeout(
            Duration::from_secs(10),
            ctl.pull_to("slow:1", |p| {
                lines.push_str(p);
                if let Some(tx) = seen_tx.take() {
                    let _ = tx.send(());
                }
            }),
        )
        .await
        .expect("the progress was held back until the reply ended")
        .unwrap();
        assert_eq!(pulled, Pulled::Pulled("slow:1".into()));
        assert_eq!(lines, "abc123: Pulling fs layer\n");
        server.await.unwrap();
    }
}
