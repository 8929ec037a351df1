//! Every clock reading and time format of the crate, in one leaf: the wall clock in
//! milliseconds or seconds, RFC 3339 text in and out (UTC, or at the local offset for what
//! `addonctl` shows a person), the compact stamp of backup directory names, and the
//! monotonic clock systemd's watchdog protocol speaks. Nothing here imports the crate.

use chrono::{DateTime, Datelike as _, Local, Offset as _, SecondsFormat, TimeZone as _};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Wall-clock seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Milliseconds as `2026-11-21T23:40:00.000Z`: what the API answers.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_default()
}

/// Unix seconds as `2026-11-21T23:40:00Z` (UTC).
pub fn rfc3339_secs(t: i64) -> String {
    DateTime::from_timestamp(t, 0).map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Milliseconds from RFC 3339 text; `None` for Docker's zero time (year 1), which means
/// "never", and for anything before 1970.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    (t.year() >= 1970).then(|| t.timestamp_millis())
}

/// `20261121-234000` (UTC) for directory names.
pub fn timestamp_for_path(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y%m%d-%H%M%S").to_string()).unwrap_or_default()
}

/// The local time zone's offset from UTC at `t` (Unix seconds), in seconds (0 when it
/// cannot be known).
pub fn local_offset(t: i64) -> i64 {
    match Local.timestamp_opt(t, 0) {
        chrono::LocalResult::Single(d) | chrono::LocalResult::Ambiguous(d, _) => i64::from(d.offset().fix().local_minus_utc()),
        chrono::LocalResult::None => 0,
    }
}

/// Microseconds of the monotonic clock (`CLOCK_MONOTONIC`), the clock systemd's
/// `MONOTONIC_USEC=` is read against.
pub fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("2026-11-21T23:31:53.5Z"), Some(1_795_303_913_500));
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
    }
}
