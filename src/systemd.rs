//! systemd integration: readiness and state notifications (`sd_notify` through libsystemd),
//! the watchdog period, and logging to the journal with structured fields.
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` no notification is
//! sent, without `WATCHDOG_USEC` there is no watchdog, and without `JOURNAL_STREAM` pointing
//! at our stderr the logs go to stderr as plain text. Tests drive the same code by setting
//! those variables to a datagram socket of their own.

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Sends state changes to the service manager. Cheap to clone; every method is a no-op when
/// the daemon was not started by systemd (no `NOTIFY_SOCKET`).
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier { enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty()) }
    }

    /// A notifier that never sends (for embedding the daemon in other programs).
    pub fn disabled() -> Notifier {
        Notifier { enabled: false }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, pairs: &[(&str, &str)]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = ::systemd::daemon::notify(pairs.iter()) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    /// `READY=1`: the database is migrated, Docker probed, the first resync done and the
    /// admin socket accepting connections.
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.send(&[("READY", "1"), ("STATUS", &status)]);
    }

    /// `RELOADING=1` (with `MONOTONIC_USEC`, which systemd ≥ 253 wants); end it with `ready`.
    pub fn reloading(&self) {
        let now = crate::time::monotonic_usec().to_string();
        self.send(&[("RELOADING", "1"), ("MONOTONIC_USEC", &now), ("STATUS", "reloading the configuration")]);
    }

    pub fn stopping(&self) {
        self.send(&[("STOPPING", "1"), ("STATUS", "stopping: finishing requests; addon containers keep running")]);
    }

    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.send(&[("STATUS", &status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[("WATCHDOG", "1")]);
    }
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (as systemd recommends), or
/// `None` when the watchdog is off or meant for another process (`WATCHDOG_PID`).
pub fn watchdog_period() -> Option<Duration> {
    match ::systemd::daemon::watchdog_enabled() {
        Ok(usec) if usec > 0 => Some(Duration::from_micros(usec / 2).max(Duration::from_millis(10))),
        _ => None,
    }
}

/// True when stderr is connected to the journal: systemd sets `JOURNAL_STREAM=<dev>:<ino>`
/// of the stream it hands us, and we check that stderr still is that stream (a child whose
/// stderr was redirected inherits the variable but not the stream).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else { return false };
    st.st_dev == dev && st.st_ino == ino
}

/// Changes the log filter of a running daemon (`daemon.log_level` on SIGHUP).
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it wins over `daemon.log_level`, also after a reload.
    pub env_override: bool,
    /// Where the logs go: "journal" or "stderr".
    pub sink: &'static str,
}

impl LogControl {
    /// Applies a new `daemon.log_level` (ignored while `RUST_LOG` is set).
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        if self.env_override {
            return Ok(());
        }
        self.handle.reload(filter_for(level)).map_err(|e| anyhow::anyhow!("cannot change the log filter: {e}"))
    }
}

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!("warn,addond={level}"))
}

/// Installs the global subscriber: the journal (native protocol, fields as
/// `ADDOND_<FIELD>=…`, priorities info=6, debug=7) when stderr is the journal, else plain
/// text on stderr. `RUST_LOG` overrides `level`.
pub fn init_logging(level: &str) -> LogControl {
    let (filter, env_override) = match EnvFilter::try_from_default_env() {
        Ok(f) if std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty()) => (f, true),
        _ => (filter_for(level), false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let journal = if stderr_is_journal() {
        tracing_journald::layer().ok().map(|l| {
            let mut prio = tracing_journald::PriorityMappings::new();
            prio.info = tracing_journald::Priority::Informational;
            prio.debug = tracing_journald::Priority::Debug;
            prio.trace = tracing_journald::Priority::Debug;
            l.with_field_prefix(Some("ADDOND".into())).with_syslog_identifier("addond".into()).with_priority_mappings(prio)
        })
    } else {
        None
    };
    let sink = if journal.is_some() { "journal" } else { "stderr" };
    let fmt = journal.is_none().then(|| {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)
    });
    Registry::default().with(filter).with(journal).with(fmt).init();
    LogControl { handle, env_override, sink }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
    }

    #[test]
    fn monotonic_clock_moves() {
        let a = crate::time::monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        assert!(crate::time::monotonic_usec() > a);
    }
}
