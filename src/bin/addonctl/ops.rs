//! The daemon as a whole: `health`, `metrics` (Prometheus text), and the operator tools
//! `backup`, `restore` and `doctor`, whose work is in `addond::backup` and
//! `addond::doctor`.

use std::path::Path;

use addond::client::{self, Method};
use addond::sanitize::sanitize_line;
use serde_json::Value;

use crate::render::{duration_long, emit, num, render_kv, text};
use crate::Ctl;

/// `doctor` found something wrong (exit 1; the report says what).
#[derive(Debug, thiserror::Error)]
#[error("doctor found {0} problem(s)")]
pub(crate) struct DoctorFailed(usize);

impl Ctl {
    pub(crate) async fn backup(&self, file: &Path) -> anyhow::Result<()> {
        let s = addond::backup::download(&self.client, file).await?;
        let data = serde_json::to_value(&s)?;
        self.show(&data, |_| {
            format!(
                "wrote {}: {} service(s), database schema {} ({} KiB), {} volume entries ({:.1} MiB)\n",
                file.display(),
                s.manifest.services,
                s.manifest.schema_version,
                s.manifest.database_bytes / 1024,
                s.volume_entries,
                s.volume_bytes as f64 / 1048576.0
            )
        })
    }

    pub(crate) fn restore(&self, file: &Path, config: Option<&Path>) -> anyhow::Result<()> {
        let (path, cfg) = addond::doctor::resolve_config(config, self.client.socket());
        let cfg = cfg.map_err(|e| anyhow::anyhow!("cannot read addond's config {}: {e}", path.display()))?;
        if std::os::unix::net::UnixStream::connect(self.client.socket()).is_ok() {
            anyhow::bail!(
                "addond is running (it answers on {}); stop it first (systemctl stop addond), then restore",
                self.client.socket().display()
            );
        }
        let r = addond::backup::restore(file, &cfg.daemon.data_dir, &cfg.daemon.socket_path)?;
        let data = serde_json::to_value(&r)?;
        self.show(&data, |_| {
            let mut out = format!(
                "restored {} into {}: {} service(s), database schema {}, {} volume entries\n",
                file.display(),
                r.data_dir.display(),
                r.manifest.services,
                r.manifest.schema_version,
                r.volume_entries
            );
            if let Some(p) = &r.previous {
                out.push_str(&format!("the data that was there is in {} (remove it when satisfied)\n", p.display()));
            }
            if !r.ownership_restored {
                out.push_str("not root: volume files belong to you now, not to their original owners\n");
            }
            out.push_str("start addond (systemctl start addond): it adopts the containers that still run and recreates the rest\n");
            out
        })
    }

    pub(crate) async fn doctor(&self, config: Option<&Path>) -> anyhow::Result<()> {
        let (config_path, config) = addond::doctor::resolve_config(config, self.client.socket());
        let inputs = addond::doctor::Inputs { client: self.client.clone(), config, config_path };
        let findings = addond::doctor::run(&inputs).await;
        if self.json {
            emit(&format!("{}\n", serde_json::to_string_pretty(&findings)?))?;
        } else {
            emit(&addond::doctor::render(&findings))?;
        }
        match addond::doctor::exit_code(&findings) {
            0 => Ok(()),
            _ => Err(DoctorFailed(findings.iter().filter(|f| f.level == addond::doctor::Level::Fail).count()).into()),
        }
    }
}

impl Ctl {
    pub(crate) async fn health(&self) -> anyhow::Result<()> {
        let data = self.call(Method::GET, "/health", None).await?;
        self.show(&data, render_health)
    }

    pub(crate) async fn daemon_metrics(&self) -> anyhow::Result<()> {
        let raw = self.client.request_raw(Method::GET, "/metrics", None).await?;
        if !(200..300).contains(&raw.status) {
            // Errors still come as an envelope.
            let body: Value = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
            let reply = client::Response { status: raw.status, body };
            if let Some(e) = reply.error() {
                return Err(e.into());
            }
        }
        if self.quiet {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&raw.body);
        let mut out = String::new();
        for line in text.lines() {
            out.push_str(&sanitize_line(line));
            out.push('\n');
        }
        emit(&out)
    }
}

pub(crate) fn render_health(d: &Value) -> String {
    render_kv(&[
        ("version", text(d, "version")),
        ("uptime", num(d, "uptime_seconds").map(|s| duration_long(s as u64)).unwrap_or_else(|| "-".into())),
        ("database", text(d, "database")),
        ("docker", text(d, "docker")),
        ("services", text(d, "services")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_block() {
        let h = render_health(&json!({"version": "0.1.0", "uptime_seconds": 3725, "database": "ok", "docker": "reachable", "services": 2}));
        assert_eq!(h, "version:   0.1.0\nuptime:    1h 2m 5s\ndatabase:  ok\ndocker:    reachable\nservices:  2\n");
    }
}
