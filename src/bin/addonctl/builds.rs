//! `addonctl addons build DIR`: writes the directory as a tar build context (leaving out
//! `.git`, a top-level `target` and what `.dockerignore` lists; refusing symlinks that leave
//! it), sends it to `POST /api/addons/{name}/builds` and follows the NDJSON progress: on a
//! terminal one redrawn line with a spinner and `step n/m`, otherwise one plain line per
//! step on stderr; `--json` prints the stream's lines as they arrive. A failed build
//! prints its failing step's last lines and exits 1 (`build_failed`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use addond::build::context::{pack_dir, MANIFEST_FILES};
use addond::client::{self, ApiError, ClientError, LineSplitter, Method};
use addond::sanitize::sanitize as cell;
use clap::Args;
use serde_json::Value;

use crate::addons::addon_path;
use crate::input::read_document;
use crate::render::{emit, note};
use crate::{query, Ctl, UsageError};

/// The most `addonctl` packs before giving up; the daemon's own limit
/// (`build.max_context_bytes`) is usually far lower and answers 413.
const PACK_LIMIT: u64 = 4 << 30;

#[derive(Args, Debug, Clone)]
pub(crate) struct BuildArgs {
    /// Directory with the Dockerfile and the manifest (addon.toml or addon.json) at its root
    pub(crate) dir: PathBuf,
    /// Addon name (default: the manifest's `name`)
    #[arg(long, value_name = "N")]
    pub(crate) name: Option<String>,
    /// Version to build and register (default: the manifest's `version`)
    #[arg(long, value_name = "V")]
    pub(crate) version: Option<String>,
    /// Replace the registered version if its manifest differs (versions are otherwise immutable)
    #[arg(long)]
    pub(crate) replace: bool,
}

/// The addon name a directory's manifest gives.
fn manifest_name(dir: &Path) -> Result<Option<String>, UsageError> {
    for file in MANIFEST_FILES {
        let path = dir.join(file);
        if path.is_file() {
            let doc = read_document(&path, "manifest")?;
            // The addon-server's `id` is the slug when present (its `name` is then a display name).
            return Ok(doc.get("id").or_else(|| doc.get("name")).and_then(Value::as_str).map(str::to_string));
        }
    }
    Ok(None)
}

/// Follows the stream: progress for a person, the outcome for the caller.
#[derive(Default)]
pub(crate) struct BuildStream {
    /// Splits the stream into its JSON lines.
    lines: LineSplitter,
    /// The step shown (`step n/m: text`).
    pub(crate) current: Option<String>,
    /// The last line: `succeeded` or `failed`.
    pub(crate) outcome: Option<Value>,
}

impl BuildStream {
    fn new() -> Self {
        BuildStream { lines: LineSplitter::with_max_line(usize::MAX), ..Default::default() }
    }

    /// Feeds a chunk; returns its complete lines with their parsed values.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<(String, Option<Value>)> {
        let mut out = Vec::new();
        for line in self.lines.push(chunk) {
            let v = self.seen(&line);
            out.push((line, v));
        }
        out
    }

    pub(crate) fn finish(&mut self) -> Option<(String, Option<Value>)> {
        let line = self.lines.finish()?;
        let v = self.seen(&line);
        Some((line, v))
    }

    fn seen(&mut self, line: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(line).ok()?;
        match v.get("type").and_then(Value::as_str) {
            Some("step") => {
                let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
                let text = cell(v.get("text").and_then(Value::as_str).unwrap_or(""));
                self.current = Some(format!("step {}/{}: {text}", n("step"), n("of")));
            }
            Some("succeeded" | "failed") if self.outcome.is_none() => self.outcome = Some(v.clone()),
            _ => {}
        }
        Some(v)
    }
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Ctl {
    pub(crate) async fn addon_build(&self, a: BuildArgs) -> anyhow::Result<()> {
        if !a.dir.is_dir() {
            return Err(UsageError(format!("{} is not a directory; give the directory holding the Dockerfile", a.dir.display())).into());
        }
        let name = match a.name.clone() {
            Some(n) => n,
            None => manifest_name(&a.dir)?
                .ok_or_else(|| UsageError(format!("{} has no addon.toml or addon.json naming the addon; give --name", a.dir.display())))?,
        };
        let dir = a.dir.clone();
        let tar = tokio::task::spawn_blocking(move || pack_dir(&dir, PACK_LIMIT))
            .await
            .map_err(|e| anyhow::anyhow!("packing the directory failed: {e}"))?
            .map_err(|e| UsageError(format!("{}: {e}", a.dir.display())))?;
        let q = query(&[("version", a.version.clone()), ("replace", a.replace.then(|| "true".to_string()))]);
        let path = format!("{}{q}", addon_path(&name, "builds"));
        let (_, mut body) = self.client.stream_bytes(Method::POST, &path, "application/x-tar", bytes::Bytes::from(tar)).await?;
        let tty = std::io::stderr().is_terminal() && !self.json && !self.quiet;
        let mut stream = BuildStream::new();
        let mut tick = tokio::time::interval(Duration::from_millis(120));
        let mut frame = 0usize;
        let mut shown = None::<String>;
        loop {
            tokio::select! {
                chunk = body.next_chunk() => {
                    let Some(Ok(chunk)) = chunk else { break };
                    for (line, _) in stream.push(&chunk) {
                        self.progress_line(&line, &stream, tty, &mut shown)?;
                    }
                }
                _ = tick.tick(), if tty => {
                    frame = (frame + 1) % SPINNER.len();
                    if let Some(step) = &stream.current {
                        note(&format!("\r\x1b[2K{} {step}", SPINNER[frame]));
                    }
                }
            }
        }
        if let Some((line, _)) = stream.finish() {
            self.progress_line(&line, &stream, tty, &mut shown)?;
        }
        if tty {
            note("\r\x1b[2K");
        }
        let Some(outcome) = stream.outcome else {
            return Err(ClientError::Protocol(format!(
                "the build of {} ended without a result (the daemon stopped or the connection broke)",
                cell(&name)
            ))
            .into());
        };
        let s = |k: &str| cell(outcome.get(k).and_then(Value::as_str).unwrap_or(""));
        if outcome.get("type").and_then(Value::as_str) == Some("succeeded") {
            if !self.json {
                let secs = outcome.get("duration_ms").and_then(Value::as_u64).unwrap_or(0) as f64 / 1000.0;
                emit(&format!("built {} {}: {} ({}) in {secs:.1}s\n", cell(&name), s("version"), s("image"), s("image_id")))?;
            }
            return Ok(());
        }
        let step = outcome.get("step").and_then(Value::as_u64).unwrap_or(0);
        if !self.json {
            let log: Vec<String> =
                outcome.get("log").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(cell).collect();
            if !log.is_empty() {
                note(&format!("step {step} failed; its last lines:\n"));
                for l in log {
                    note(&format!("  {l}\n"));
                }
            }
        }
        let err = outcome.get("error").cloned().unwrap_or(Value::Null);
        let reply = client::Response { status: 422, body: serde_json::json!({"success": false, "error": err}) };
        let api: ApiError = reply.error().unwrap_or(ApiError {
            status: 422,
            code: "build_failed".into(),
            message: format!("the build failed at step {step}"),
            field: None,
        });
        Err(api.into())
    }

    /// One line of the stream: printed as it is with `--json`; else the step it starts is
    /// shown (redrawn on a terminal, one line each otherwise).
    fn progress_line(&self, line: &str, stream: &BuildStream, tty: bool, shown: &mut Option<String>) -> anyhow::Result<()> {
        if self.json {
            return emit(&format!("{line}\n"));
        }
        if self.quiet || stream.current == *shown {
            return Ok(());
        }
        *shown = stream.current.clone();
        if let Some(step) = &stream.current {
            if tty {
                note(&format!("\r\x1b[2K{} {step}", SPINNER[0]));
            } else {
                note(&format!("{step}\n"));
            }
            let _ = std::io::stderr().flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_followed_across_chunks() {
        let mut s = BuildStream::new();
        let body = concat!(
            r#"{"type":"step","step":1,"of":2,"text":"FROM scratch"}"#,
            "\n",
            r#"{"type":"log","text":" ---> Running"}"#,
            "\n",
            r#"{"type":"step","step":2,"of":2,"text":"COPY \u001b[2Jx /x"}"#,
            "\n",
            r#"{"type":"failed","step":2,"error":{"code":"build_failed","message":"COPY failed"},"log":["Step 2/2 : COPY x /x"]}"#,
        );
        let (a, b) = body.as_bytes().split_at(70);
        let mut lines = s.push(a);
        assert_eq!(s.current.as_deref(), Some("step 1/2: FROM scratch"));
        lines.extend(s.push(b));
        assert_eq!(lines.len(), 3);
        // Escapes from the daemon never reach the terminal.
        assert_eq!(s.current.as_deref(), Some("step 2/2: COPY x /x"));
        assert!(s.outcome.is_none(), "the last line has no newline yet");
        let (_, v) = s.finish().unwrap();
        assert_eq!(v.unwrap()["type"], "failed");
        assert_eq!(s.outcome.unwrap()["error"]["code"], "build_failed");
    }
}
