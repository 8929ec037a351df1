//! The peer-checked Unix listener of the admin API: every connection's credentials
//! (SO_PEERCRED, and SO_PEERGROUPS for supplementary groups) are checked against
//! [`PeerPolicy`] before a byte of its request is read; refused peers get the `forbidden`
//! envelope and are reported at most once a minute per uid. Allowed requests are tagged
//! with their [`super::Caller`] for the audit log, and connections drain on shutdown.

use super::*;

/// Who may use the admin socket.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// The daemon's own uid, always allowed (besides root).
    pub daemon_uid: u32,
    /// The socket group's gid, when the group exists.
    pub group: Option<u32>,
}

impl PeerPolicy {
    pub fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        let Some(group) = self.group else { return false };
        gid == group || pid.is_some_and(|p| supplementary_groups(p).contains(&group))
    }
}

impl PeerPolicy {
    /// [`PeerPolicy::allows`] with the peer's supplementary groups already known.
    pub fn allows_groups(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        self.group.is_some_and(|g| gid == g || groups.contains(&g))
    }
}

/// The supplementary groups the peer had when it connected (`SO_PEERGROUPS`, Linux 4.13+).
pub(super) fn peer_groups(stream: &tokio::net::UnixStream) -> Option<Vec<u32>> {
    use std::os::unix::io::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut buf: Vec<libc::gid_t> = vec![0; 256];
    for _ in 0..2 {
        let mut len = (buf.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `buf`, which we own.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERGROUPS, buf.as_mut_ptr().cast(), &mut len) };
        if rc == 0 {
            buf.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
        buf = vec![0; len as usize / std::mem::size_of::<libc::gid_t>() + 1];
    }
    None
}

/// The peer process's supplementary groups, from /proc (what the kernel checks too).
pub(super) fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Groups:")).map(|l| l[7..].split_whitespace().filter_map(|g| g.parse().ok()).collect())
        })
        .unwrap_or_default()
}

/// What a refused peer reads: the envelope with `forbidden`, built once.
pub(super) static FORBIDDEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::http::error_body(
        ErrorCode::Forbidden,
        "permission denied: the admin socket serves root, the daemon's user and members of its group (daemon.socket_group); run as root or add your user to that group",
        None,
    )
    .to_string()
});

/// Connections the admin socket refused (peer not allowed), for `/metrics`.
pub use crate::metrics::ADMIN_REFUSED;

/// A refused peer is logged and audited at most once per this long per uid; the refusals
/// in between are counted and reported with the next line.
pub(super) const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Refused connections still being answered (their 403 written, what they send drained);
/// past this many a refusal is answered without draining, so refused peers cannot hold
/// descriptors the admin budget does not count.
pub(super) const MAX_REFUSALS_IN_FLIGHT: usize = 16;

/// Rate-limits the log lines and audit records of refused admin connections: one per uid
/// per [`REFUSAL_REPORT_EVERY`], with how many more there were.
#[derive(Default)]
pub(super) struct RefusalReports {
    /// uid → (when it was last reported, refusals since then).
    seen: HashMap<u32, (Instant, u64)>,
}

impl RefusalReports {
    /// Counts a refusal; `Some(n)` when it should be reported now (`n`: refusals from that
    /// uid since the last report, this one included).
    fn note(&mut self, uid: u32, now: Instant) -> Option<u64> {
        if self.seen.len() >= 1024 {
            self.seen.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_REPORT_EVERY);
        }
        match self.seen.get_mut(&uid) {
            Some((at, n)) if now.duration_since(*at) < REFUSAL_REPORT_EVERY => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let total = *n + 1;
                *at = now;
                *n = 0;
                Some(total)
            }
            None => {
                self.seen.insert(uid, (now, 0));
                Some(1)
            }
        }
    }
}

/// Serves the admin API on `listener` until `shutdown`, then lets in-flight requests finish.
/// Connections count against `registry` (the admin socket's own budget and timeouts).
/// Refused peers are logged and, when `audit` is given, written to the audit log — both
/// at most once per uid per minute, with a count.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    policy: PeerPolicy,
    registry: Arc<crate::http::conn::Registry>,
    audit: Option<crate::store::Store>,
    shutdown: CancellationToken,
) {
    use crate::http::conn::{Admission, Listener};
    let tracker = TaskTracker::new();
    let mut reports = RefusalReports::default();
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    while let Some((stream, _)) = registry.next_connection(&shutdown, || listener.accept()).await {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; refusing connection");
                continue;
            }
        };
        let caller = Caller { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() };
        // The peer's groups from the socket itself (SO_PEERGROUPS: no /proc, no pid reuse
        // race, works under ProtectProc=invisible); /proc only on kernels without it.
        let allowed = match peer_groups(&stream) {
            Some(groups) => policy.allows_groups(caller.uid, caller.gid, &groups),
            None => policy.allows(caller.uid, caller.gid, caller.pid),
        };
        if !allowed {
            ADMIN_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(n) = reports.note(caller.uid, Instant::now()) {
                tracing::warn!(uid = caller.uid, gid = caller.gid, pid = ?caller.pid, refused = n, "refused admin connection: peer is not root, the daemon's user or in daemon.socket_group ({n} from this uid since the last report; at most one report per uid per minute)");
                if let Some(store) = &audit {
                    let entry = AuditEntry {
                        at: now_ms(),
                        uid: Some(caller.uid),
                        pid: caller.pid,
                        method: "CONNECT".into(),
                        path: "/".into(),
                        status: 403,
                        detail: Some(format!(
                            "admin socket: peer not allowed (gid {}; {n} refused from this uid since the last record)",
                            caller.gid
                        )),
                        source: None,
                    };
                    let store = store.clone();
                    tracker.spawn(async move {
                        if let Err(e) = store.audit(entry).await {
                            tracing::warn!(error = %e, "cannot write audit record");
                        }
                    });
                }
            }
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                FORBIDDEN.len(),
                *FORBIDDEN
            );
            let Ok(permit) = refusals.clone().try_acquire_owned() else {
                let _ = stream.try_write(resp.as_bytes());
                continue;
            };
            tracker.spawn(async move {
                let _permit = permit;
                let mut stream = stream;
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
                // Drain (never parse) what the client sends until it hangs up, briefly: closing
                // with unread data would reset the connection and the client could lose the 403.
                let mut sink = [0u8; 4096];
                let drain = async {
                    let mut total = 0usize;
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                        total += n;
                        if n == 0 || total > 1 << 20 {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            });
            continue;
        }
        let slot = match registry.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                crate::http::conn::refuse_overloaded(stream, Listener::Admin);
                continue;
            }
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handler = move |mut req: axum::extract::Request| {
                req.extensions_mut().insert(caller);
                let app = app.clone();
                async move { app.oneshot(req).await.unwrap_or_else(|e| match e {}) }
            };
            crate::http::conn::serve_connection(stream, slot, &shutdown, handler).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policy() {
        let p = PeerPolicy { daemon_uid: 1000, group: Some(500) };
        assert!(p.allows(0, 0, None));
        assert!(p.allows(1000, 1000, None));
        assert!(p.allows(1234, 500, None));
        assert!(!p.allows(65534, 65534, None));
        let none = PeerPolicy { daemon_uid: 1000, group: None };
        assert!(!none.allows(1234, 500, None));
    }

    #[test]
    fn refused_peers_are_reported_once_a_minute_per_uid() {
        let mut r = RefusalReports::default();
        let t0 = Instant::now();
        assert_eq!(r.note(65534, t0), Some(1));
        for i in 0..5 {
            assert_eq!(r.note(65534, t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(r.note(1000, t0), Some(1), "another uid has its own report");
        assert_eq!(r.note(65534, t0 + Duration::from_secs(61)), Some(6), "the next report counts what was held back");
    }
}
