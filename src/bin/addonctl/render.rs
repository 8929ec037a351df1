//! What every command group prints with: plain aligned tables and `key: value` blocks,
//! field accessors that turn JSON into display text, times and ages, and the two
//! writers (stdout, which may be closed under us, and stderr for progress and notes).
//! What the daemon sends reaches the terminal only through `addond::sanitize`
//! (`sanitize_line` for lines, `cell` for one-line table cells and labels).

use std::io::{self, Write};

use addond::sanitize::{sanitize as cell, sanitize_line};
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use crate::Ctl;

/// Whoever reads our stdout went away: stop quietly (only stdout, never the socket).
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub(crate) struct StdoutClosed;

impl Ctl {
    /// Prints `data` as JSON when `--json`, else the human rendering (unless `--quiet`).
    pub(crate) fn show(&self, data: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        if self.json {
            return emit(&format!("{}\n", serde_json::to_string_pretty(data)?));
        }
        if self.quiet {
            return Ok(());
        }
        emit(&human(data))
    }
}

/// Writes progress and notes to stderr; a closed stderr is not worth failing for.
pub(crate) fn note(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Writes to stdout. A closed pipe (`addonctl logs -f | head`) becomes [`StdoutClosed`],
/// which `main` treats as success.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other?),
    }
}

/// Lines split off a stream (by `addond::client::LineSplitter`) as terminal text: each one
/// sanitised and ended with a newline.
pub(crate) fn sanitized_lines(lines: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&sanitize_line(&line));
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Rendering.

/// Plain aligned columns, three spaces apart, no trailing spaces. Cells are sanitised.
/// Widths are terminal columns (`unicode-width`), not characters: a CJK name or an emoji
/// takes two, a combining mark none.
pub(crate) fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.width());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate().take(widths.len()) {
            if i > 0 {
                l.push_str("   ");
            }
            l.push_str(c);
            if i + 1 < widths.len() {
                l.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(c.width())));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for r in &rows {
        let mut cells: Vec<&str> = r.iter().map(String::as_str).collect();
        cells.resize(headers.len(), "");
        line(cells);
    }
    out
}

/// `key: value` lines with the values aligned; values are sanitised.
pub(crate) fn render_kv(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&format!("{key:<width$}  {}\n", cell(v)));
    }
    out
}

/// A field as display text: strings as they are, numbers and booleans printed, null or
/// missing as `-`.
pub(crate) fn text(v: &Value, key: &str) -> String {
    display(v.get(key))
}

pub(crate) fn display(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a.iter().map(|x| display(Some(x))).collect::<Vec<_>>().join(", "),
        // 30.0 → "30": seconds and counts read better without a fraction.
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

pub(crate) fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(|x| x.as_f64().or_else(|| x.as_str().and_then(|s| s.parse().ok())))
}

pub(crate) fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_else(|| "-".into())
}

pub(crate) fn ids(data: &Value) -> String {
    let mut out = String::new();
    for item in data.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            out.push_str(&cell(id));
            out.push('\n');
        }
    }
    out
}

/// One `key` per line from a list of objects (`--quiet` lists).
pub(crate) fn names(list: &Value, key: &str) -> String {
    let mut out = String::new();
    for item in list.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(n) = item.get(key).and_then(Value::as_str) {
            out.push_str(&cell(n));
            out.push('\n');
        }
    }
    out
}

pub(crate) fn list_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// A list of strings (or of objects with a `name`) as `a,b,c`, or `-`.
pub(crate) fn joined(v: &Value, key: &str) -> String {
    let items: Vec<String> = list_of(v, key)
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => display(other.get("name").or(Some(other))),
        })
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// At most `max` terminal columns (a CJK character takes two), with `…` in place of the rest.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    if s.width() <= max {
        return s.to_string();
    }
    let mut t = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        used += w;
        t.push(c);
    }
    t.push('…');
    t
}

// ---------------------------------------------------------------------------------------
// Time.

pub(crate) use addond::time::{local_offset, now_secs, rfc3339_secs as rfc3339};

/// Unix seconds from an RFC 3339 timestamp (`2026-11-21T23:40:00Z`, fractions and offsets
/// allowed) or a number (seconds, or milliseconds when it is that large).
pub(crate) fn timestamp(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(if n > 100_000_000_000 { n / 1000 } else { n });
    }
    let s = v.as_str()?.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let hh: i64 = o[1..3].parse().ok()?;
            let mm: i64 = o[4..6].parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, u32::try_from(mo).ok()?, u32::try_from(d).ok()?)?;
    Some(i64::from(date.to_epoch_days()) * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Compact age: `45s`, `12m`, `5h`, `3d`.
pub(crate) fn age(v: Option<&Value>, now: i64) -> String {
    let Some(t) = v.and_then(timestamp) else { return "-".into() };
    let s = (now - t).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Long duration: `3d 4h 5m`, `2h 0m 7s`, `42s`.
pub(crate) fn duration_long(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m {sec}s")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// A timestamp (RFC 3339 text, or Unix seconds or milliseconds) as RFC 3339 in the local
/// time zone, to the second (`2026-11-22T01:01:02+01:00`; `Z` where local time is UTC).
pub(crate) fn local_time(v: Option<&Value>) -> String {
    match v.and_then(timestamp) {
        Some(t) => rfc3339_offset(t, local_offset(t)),
        None => "-".into(),
    }
}

/// Unix seconds as RFC 3339 at a UTC offset in seconds (`Z` for 0).
pub(crate) fn rfc3339_offset(t: i64, offset: i64) -> String {
    let utc = rfc3339(t + offset);
    if offset == 0 {
        return utc;
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let o = offset.abs();
    format!("{}{sign}{:02}:{:02}", utc.trim_end_matches('Z'), o / 3600, (o % 3600) / 60)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use addond::client::LineSplitter;
    use serde_json::json;

    pub(crate) fn rows(table: &str) -> Vec<Vec<String>> {
        // Columns are three or more spaces apart; cells may hold single spaces.
        table.lines().map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()).collect()
    }

    #[test]
    fn sanitising() {
        // The rules are tested in `addond::sanitize`; here, that addonctl's lines and cells use them.
        assert_eq!(sanitize_line("\x1b]0;pwned\x07title\tok\x1b[0m"), "title\tok");
        assert_eq!(cell("two\nlines\tand\x1b[1mbold"), "two lines andbold");
    }

    #[test]
    fn split_lines_are_sanitised() {
        let mut b = LineSplitter::with_max_line(usize::MAX);
        assert_eq!(sanitized_lines(b.push(b"one\ntw")), "one\n");
        let e = "é".as_bytes();
        assert_eq!(sanitized_lines(b.push(&[b'o', e[0]])), "");
        assert_eq!(sanitized_lines(b.push(&[e[1], b'\n', b'\x1b', b'[', b'3', b'1', b'm', b'r', b'\n', b'x'])), "two\u{e9}\nr\n");
        assert_eq!(sanitized_lines(b.finish()), "x\n");
        assert_eq!(sanitized_lines(b.finish()), "");
    }

    #[test]
    fn table_alignment() {
        let t = render_table(
            &["ID", "NAME", "X"],
            &[vec!["a".into(), "longer-name".into(), "1".into()], vec!["bbbb".into(), "n\x1b[31m".into(), "".into()]],
        );
        assert_eq!(t, "ID     NAME          X\na      longer-name   1\nbbbb   n\n");
    }

    #[test]
    fn table_alignment_by_display_width() {
        // CJK ideographs and most emoji take two terminal columns; combining marks none.
        let t = render_table(
            &["NAME", "PHASE"],
            &[
                vec!["商店-api".into(), "Running".into()],
                vec!["🚀rocket".into(), "Failed".into()],
                vec!["cafe\u{301}".into(), "Stopped".into()],
                vec!["plain".into(), "Running".into()],
            ],
        );
        assert_eq!(t, "NAME       PHASE\n商店-api   Running\n🚀rocket   Failed\ncafe\u{301}       Stopped\nplain      Running\n");
        // Every second column starts at the same terminal column.
        let starts: Vec<usize> = t.lines().map(|l| UnicodeWidthStr::width(&l[..l.rfind("   ").unwrap() + 3])).collect();
        assert!(starts.iter().all(|&s| s == starts[0]), "{starts:?}\n{t}");
    }

    #[test]
    fn korean_display_names_align_and_truncate_by_width() {
        let t = render_table(&["NAME", "ID"], &[vec!["테스트 서비스".into(), "svc_1".into()], vec!["api".into(), "svc_2".into()]]);
        assert_eq!(t, "NAME            ID\n테스트 서비스   svc_1\napi             svc_2\n");
        // Seven columns: three syllables (six) and the ellipsis.
        assert_eq!(truncate("테스트 서비스", 7), "테스트…");
        assert_eq!(UnicodeWidthStr::width(truncate("모바일 앱", 6).as_str()), 5);
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn timestamps_and_ages() {
        assert_eq!(timestamp(&json!("1970-01-01T00:00:00Z")), Some(0));
        assert_eq!(timestamp(&json!("2000-03-01T00:00:00Z")), Some(951_868_800));
        assert_eq!(timestamp(&json!("2026-11-21T23:40:00.123456Z")), timestamp(&json!("2026-11-21T23:40:00Z")));
        assert_eq!(timestamp(&json!("2026-11-22T01:40:00+02:00")), timestamp(&json!("2026-11-21T23:40:00Z")));
        assert_eq!(timestamp(&json!(1_700_000_000_123i64)), Some(1_700_000_000));
        assert_eq!(timestamp(&json!("yesterday")), None);
        let now = 1_000_000;
        assert_eq!(age(Some(&json!(now - 5)), now), "5s");
        assert_eq!(age(Some(&json!(now - 600)), now), "10m");
        assert_eq!(age(Some(&json!(now - 3 * 3600)), now), "3h");
        assert_eq!(age(Some(&json!(now - 3 * 86400)), now), "3d");
        assert_eq!(age(None, now), "-");
        assert_eq!(duration_long(90061), "1d 1h 1m");
        for t in ["1970-01-01T00:00:00Z", "2000-02-29T12:34:56Z", "2026-11-21T23:40:00Z", "1969-12-31T23:59:59Z", "2100-03-01T00:00:00Z"] {
            assert_eq!(rfc3339(timestamp(&json!(t)).unwrap()), t);
        }
        assert_eq!(rfc3339(timestamp(&json!(1_795_306_810_362i64)).unwrap()), "2026-11-22T00:20:10Z");
        assert_eq!(duration_long(59), "59s");
    }

    #[test]
    fn times_with_offsets() {
        assert_eq!(rfc3339_offset(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_offset(1_795_305_662, 3600), "2026-11-22T01:01:02+01:00");
        assert_eq!(rfc3339_offset(1_795_305_662, -(5 * 3600 + 1800)), "2026-11-21T18:31:02-05:30");
        // Text and milliseconds name the same second.
        assert_eq!(local_time(Some(&json!("2026-11-22T00:01:02.345Z"))), local_time(Some(&json!(1_795_305_662_345i64))));
        assert_eq!(local_time(None), "-");
        assert_eq!(local_time(Some(&Value::Null)), "-");
    }
}
