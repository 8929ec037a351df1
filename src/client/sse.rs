//! Server-sent events (`text/event-stream`), read incrementally: the one parser behind
//! `addonctl events follow` and the dashboard's `…/watch` and event-log streams. It takes
//! the body's chunks exactly as they arrive (split anywhere, even inside a line ending or
//! a UTF-8 character) and follows the WHATWG parsing rules: lines end in CRLF, LF or CR;
//! a line starting with `:` is a comment (the daemon's keep-alives); `data` lines
//! accumulate, joined with `\n`; a blank line dispatches the event if it has data; the
//! `id` persists from one event to the next; `retry` sets the reconnection time; one
//! leading space after the colon is dropped; a byte-order mark at the start is skipped.
//! What it holds is bounded, so a peer that never ends a line cannot grow memory.

use std::time::Duration;

/// Longest line the parser holds by default while waiting for its end; longer lines are
/// dropped whole.
pub const MAX_LINE: usize = 256 * 1024;

/// The byte-order mark a stream may open with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id the stream set (`id:`) when this event was dispatched: it carries
    /// over to later events until the stream sets another.
    pub id: Option<String>,
    /// The event type the stream named (`event:`), if any; see [`SseEvent::kind`].
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The event type, `message` when the stream named none (or an empty one).
    pub fn kind(&self) -> &str {
        self.event.as_deref().filter(|e| !e.is_empty()).unwrap_or("message")
    }
}

/// The incremental parser: feed it with [`SseParser::push`], which returns the events
/// each chunk completes.
#[derive(Debug)]
pub struct SseParser {
    /// A line whose end has not arrived yet.
    pending: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting the next one ends the same line.
    after_cr: bool,
    /// The first bytes went by (a byte-order mark is only skipped before them).
    started: bool,
    /// The current line grew past `max_line`: its bytes are dropped until its end.
    skipping: bool,
    /// Longest line held (bytes, without its ending).
    max_line: usize,
    /// The last event id (`id:`), which every later event carries.
    last_id: Option<String>,
    /// The `event:` of the event being read.
    event: Option<String>,
    /// The `data:` of the event being read (`None` until a `data` line arrives).
    data: Option<String>,
    /// The reconnection time the stream asked for (`retry:`, milliseconds).
    retry: Option<u64>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_line(MAX_LINE)
    }
}

impl SseParser {
    /// A parser that drops lines longer than `max_line` bytes (and an event's data beyond
    /// 16 such lines). `usize::MAX` holds whatever the stream sends.
    pub fn with_max_line(max_line: usize) -> Self {
        SseParser {
            pending: Vec::new(),
            after_cr: false,
            started: false,
            skipping: false,
            max_line,
            last_id: None,
            event: None,
            data: None,
            retry: None,
        }
    }

    /// The last event id the stream set, for a reconnection's `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the stream asked for with `retry:`, if it did.
    pub fn retry(&self) -> Option<Duration> {
        self.retry.map(Duration::from_millis)
    }

    /// Feeds the next chunk of the body; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let opening;
        let mut bytes = chunk;
        if !self.started {
            // The mark itself may arrive split across chunks: hold a prefix of it.
            self.pending.extend_from_slice(bytes);
            if self.pending.len() < BOM.len() && BOM.starts_with(&self.pending) {
                return out;
            }
            self.started = true;
            let mut held = std::mem::take(&mut self.pending);
            if held.starts_with(BOM) {
                held.drain(..BOM.len());
            }
            opening = held;
            bytes = &opening;
        }
        if std::mem::take(&mut self.after_cr) {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                if std::mem::take(&mut self.skipping) || self.pending.len() + (i - start) > self.max_line {
                    self.pending.clear();
                } else {
                    self.pending.extend_from_slice(&bytes[start..i]);
                    let line = std::mem::take(&mut self.pending);
                    self.line(&line, &mut out);
                }
                if b == b'\r' {
                    match bytes.get(i + 1) {
                        Some(b'\n') => i += 1,
                        Some(_) => {}
                        None => self.after_cr = true,
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        if !self.skipping {
            let rest = &bytes[start..];
            if self.pending.len() + rest.len() > self.max_line {
                // A line that does not end: drop it rather than grow without bound.
                self.pending.clear();
                self.skipping = true;
            } else {
                self.pending.extend_from_slice(rest);
            }
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent { id: self.last_id.clone(), event: self.event.take(), data });
            }
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    if d.len() + value.len() < self.max_line.saturating_mul(16) {
                        d.push('\n');
                        d.push_str(value);
                    }
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().or(self.retry);
            }
            _ => {} // unknown fields are ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        chunks.iter().flat_map(|c| p.push(c)).collect()
    }

    fn ev(id: Option<&str>, event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { id: id.map(str::to_string), event: event.map(str::to_string), data: data.to_string() }
    }

    #[test]
    fn events_as_axum_sends_them() {
        let mut p = SseParser::default();
        let got = p.push(b"event: service\ndata: {\"id\":\"svc_1\"}\n\nevent: resync\ndata: {}\n\n");
        assert_eq!(got, vec![ev(None, Some("service"), "{\"id\":\"svc_1\"}"), ev(None, Some("resync"), "{}")]);
        assert_eq!((got[0].kind(), got[1].kind()), ("service", "resync"));
    }

    #[test]
    fn events_across_any_chunking() {
        let stream = "id: 7\nevent: payment.completed\ndata: {\"id\":7,\"name\":\"payment.completed\",\"data\":{\"amount\":\"€5\"}}\n\n\
                      :\n\n\
                      id: 8\nevent: order.created\ndata: {\"id\":8}\n\n";
        let want = vec![
            ev(Some("7"), Some("payment.completed"), "{\"id\":7,\"name\":\"payment.completed\",\"data\":{\"amount\":\"€5\"}}"),
            ev(Some("8"), Some("order.created"), "{\"id\":8}"),
        ];
        assert_eq!(sse_all(&[stream.as_bytes()]), want);
        // Every way of cutting it in two, and one byte at a time (through the `€`, too).
        let bytes = stream.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(sse_all(&[&bytes[..cut], &bytes[cut..]]), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(sse_all(&singles), want);
        // A partial event is held back until its blank line arrives.
        let mut p = SseParser::default();
        assert!(p.push(b"id: 1\ndata: {\"a\"").is_empty());
        assert!(p.push(b":1}\n").is_empty());
        assert_eq!(p.push(b"\n"), vec![ev(Some("1"), None, "{\"a\":1}")]);
    }

    #[test]
    fn crlf_split_anywhere_gives_the_same_events() {
        let text = "event: service\r\ndata: {\"name\":\"caf\u{e9}\"}\r\n\r\n: keep-alive\n\nevent:resync\rdata:{}\r\r";
        let whole = SseParser::default().push(text.as_bytes());
        assert_eq!(whole, vec![ev(None, Some("service"), "{\"name\":\"caf\u{e9}\"}"), ev(None, Some("resync"), "{}")]);
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&bytes[..cut]);
            got.extend(p.push(&bytes[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
        // One byte at a time.
        let mut p = SseParser::default();
        let got: Vec<_> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn multi_line_data_comments_and_line_endings() {
        // data lines join with \n; comments and keep-alives (`:` lines) are skipped, even
        // inside an event; a field without a colon has an empty value; one leading space goes.
        let got = sse_all(&[b": keep-alive\n\ndata: line one\n: in between\ndata:line two\ndata\ndata:  two spaces\n\n"]);
        assert_eq!(got, vec![ev(None, None, "line one\nline two\n\n two spaces")]);
        let got = sse_all(&[b": hello\ndata: a\ndata: b\ndata\n\nevent: x\n\nid: 7\ndata:  two spaces\n\n"]);
        assert_eq!(got, vec![ev(None, None, "a\nb\n"), ev(Some("7"), None, " two spaces")]);
        assert_eq!(got[0].kind(), "message");
        // An event without data is not dispatched, and its type does not leak into the next.
        let mut p = SseParser::default();
        assert_eq!(p.push(b"event: lonely\n\ndata: 1\n\n"), vec![ev(None, None, "1")]);
        // CRLF and lone CR end lines as LF does, also when CR and LF arrive apart.
        assert_eq!(sse_all(&[b"id: 3\r\ndata: x\r\n\r\n"]), vec![ev(Some("3"), None, "x")]);
        assert_eq!(sse_all(&[b"id: 3\rdata: x\r\r"]), vec![ev(Some("3"), None, "x")]);
        assert_eq!(sse_all(&[b"data: x\r", b"\n", b"\r", b"\ndata: y\n\n"]), vec![ev(None, None, "x"), ev(None, None, "y")]);
        // A blank line without data dispatches nothing; `id` persists, `event` does not.
        assert_eq!(
            sse_all(&[b"id: 9\nevent: a\n\ndata: 1\n\nevent: b\ndata: 2\n\n"]),
            vec![ev(Some("9"), None, "1"), ev(Some("9"), Some("b"), "2")]
        );
        // An empty `event:` is a `message`.
        assert_eq!(sse_all(&[b"event:\ndata: 1\n\n"])[0].kind(), "message");
        // A byte-order mark at the start is skipped, however it is split; unknown fields are ignored.
        assert_eq!(sse_all(&[b"\xEF", b"\xBB\xBFdata: a\nretry: 10\nfoo: bar\n\n"]), vec![ev(None, None, "a")]);
        // Only at the start: later, the same bytes are part of a line.
        assert_eq!(sse_all(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]), vec![ev(None, None, "a")]);
        // Nothing but keep-alives: no events.
        assert!(sse_all(&[b":\n\n", b":\n\n"]).is_empty());
    }

    #[test]
    fn id_and_retry() {
        let mut p = SseParser::default();
        assert_eq!(p.last_event_id(), None);
        assert_eq!(p.retry(), None);
        let got = p.push(b"retry: 1500\nid: 41\n\nid: 42\ndata: a\n\n");
        // An `id` without data dispatches nothing but is remembered.
        assert_eq!(got, vec![ev(Some("42"), None, "a")]);
        assert_eq!(p.last_event_id(), Some("42"));
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
        // `retry` that is not all digits is ignored; an `id` holding NUL is ignored; an
        // empty `id` resets it.
        p.push(b"retry: 2s\nretry:\nid: 4\x003\n\n");
        assert_eq!((p.retry(), p.last_event_id()), (Some(Duration::from_millis(1500)), Some("42")));
        assert_eq!(p.push(b"id\ndata: b\n\n"), vec![ev(Some(""), None, "b")]);
        // Split across chunks like any other field.
        let mut p = SseParser::default();
        p.push(b"ret");
        p.push(b"ry: 2");
        assert_eq!(p.retry(), None);
        p.push(b"50\r");
        assert_eq!(p.retry(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn unbounded_line_is_dropped() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_LINE + 10];
        assert!(p.push(&big).is_empty());
        assert!(p.pending.is_empty());
        // The rest of that line is dropped too, however it ends.
        assert!(p.push(b"data: not a field of ours").is_empty());
        assert_eq!(p.push(b"\nevent: service\ndata: 1\n\n"), vec![ev(None, Some("service"), "1")]);
        // Also when the whole long line comes in one chunk with its ending.
        let mut p = SseParser::with_max_line(8);
        assert_eq!(p.push(b"data: 123456789\ndata: ok\n\n"), vec![ev(None, None, "ok")]);
        // Without a bound, nothing is dropped.
        let mut p = SseParser::with_max_line(usize::MAX);
        let long = "y".repeat(MAX_LINE * 2);
        assert_eq!(p.push(format!("data: {long}\n\n").as_bytes()), vec![ev(None, None, &long)]);
    }
}
