//! Schedule expressions of addon manifests, as pure functions: parsing (five fields, or
//! six with seconds first; the message says what is wrong) and which occurrence is due.
//! Times are UTC, in milliseconds. The manifest checks expressions with [`parse`]; the
//! scheduler (`crate::schedules`) runs what [`due`] answers.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

/// Parses a schedule expression; the message says what is wrong.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!("`{expr}` has {fields} fields; use 5 (minute hour day month weekday) or 6 (seconds first)"));
    }
    Cron::from_str(expr).map_err(|e| format!("`{expr}`: {e}"))
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The occurrence to run now, if one is due: the latest occurrence in (`last`, `now`].
pub fn due(cron: &Cron, last_ms: i64, now_ms: i64) -> Option<i64> {
    let next = cron.find_next_occurrence(&at(last_ms), false).ok()?;
    if next.timestamp_millis() > now_ms {
        return None;
    }
    let latest = cron.find_previous_occurrence(&at(now_ms), true).ok()?;
    Some(latest.timestamp_millis().max(next.timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert!(parse("*/5 * * * *").is_ok());
        assert!(parse("*/2 * * * * *").is_ok());
        assert!(parse("* * *").unwrap_err().contains("3 fields"));
        assert!(parse("61 * * * *").is_err());
    }

    #[test]
    fn due_runs_the_latest_missed_occurrence_once() {
        let every_min = parse("* * * * *").unwrap();
        let t0 = 1_795_000_000_000 - 1_795_000_000_000 % 60_000; // a whole minute
        assert_eq!(due(&every_min, t0, t0 + 30_000), None, "next occurrence not yet");
        assert_eq!(due(&every_min, t0, t0 + 60_000), Some(t0 + 60_000));
        // down for ten minutes: one run, for the latest occurrence
        assert_eq!(due(&every_min, t0, t0 + 600_500), Some(t0 + 600_000));
        assert_eq!(due(&every_min, t0 + 600_000, t0 + 600_500), None);
    }
}
