//! Crash points for the crash tests. A leaf: the domain code that calls it (addon installs
//! and uninstalls) must not depend on the daemon that assembles it.

/// Debug builds, with `ADDOND_DEBUG_HOOKS=1`: when `ADDOND_DEBUG_ABORT_AT` names `point`,
/// the daemon kills itself there with SIGKILL, exactly as a `kill -9` at that moment would,
/// so the crash tests can stop it between two writes every time instead of by chance.
/// Release builds have no such hook.
pub fn debug_failpoint(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ADDOND_DEBUG_HOOKS").as_deref() == Ok("1") && std::env::var("ADDOND_DEBUG_ABORT_AT").as_deref() == Ok(point) {
        tracing::warn!("debug hook: failpoint {point}, killing the daemon");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
