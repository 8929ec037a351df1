//! Framing of the two byte streams the dashboard reads: server-sent events from
//! `GET …/watch` ([`SseParser`]) and log lines from `GET …/logs?follow=true`
//! ([`LineSplitter`]). Both take chunks exactly as they arrive (split anywhere, even inside
//! a UTF-8 character) and bound what they hold, so a misbehaving peer cannot grow memory.

/// Longest line either parser holds while waiting for its end; longer lines are cut.
pub const MAX_LINE: usize = 256 * 1024;

/// One server-sent event: its type (`message` when the stream named none) and its data
/// (the `data:` lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Incremental parser for the `text/event-stream` format (the WHATWG rules: lines end in
/// CRLF, LF or CR; `:` starts a comment; a blank line dispatches; one space after the
/// colon is dropped; an event without data is not dispatched).
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut bytes = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                self.pending.extend_from_slice(&bytes[start..i]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line, &mut out);
                if b == b'\r' {
                    if i + 1 == bytes.len() {
                        self.after_cr = true;
                    } else if bytes[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.pending.extend_from_slice(&bytes[start..]);
        if self.pending.len() > MAX_LINE {
            // A line that never ends: drop it rather than grow without bound.
            self.pending.clear();
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                let event = std::mem::take(&mut self.event);
                out.push(SseEvent { event: if event.is_empty() { "message".into() } else { event }, data });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
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
            "event" => self.event = value.to_string(),
            "data" => {
                if self.data.len() + value.len() <= MAX_LINE * 16 {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields: nothing to do for us.
        }
    }
}

/// Splits a byte stream into lines, holding a partial line (and a partial UTF-8 character)
/// until its newline arrives. Lines are returned raw (not sanitised) without the `\n`.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..nl]);
            out.push(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
            rest = &rest[nl + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() >= MAX_LINE {
            out.push(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
        }
        out
    }

    /// What is left when the stream ends (a last line without a newline).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            let s = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            Some(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into() }
    }

    #[test]
    fn sse_events_as_axum_sends_them() {
        let mut p = SseParser::default();
        let got = p.push(b"event: service\ndata: {\"id\":\"svc_1\"}\n\nevent: resync\ndata: {}\n\n");
        assert_eq!(got, vec![ev("service", "{\"id\":\"svc_1\"}"), ev("resync", "{}")]);
    }

    #[test]
    fn sse_split_anywhere_gives_the_same_events() {
        let text = "event: service\r\ndata: {\"name\":\"caf\u{e9}\"}\r\n\r\n: keep-alive\n\nevent:resync\rdata:{}\r\r";
        let whole = SseParser::default().push(text.as_bytes());
        assert_eq!(whole, vec![ev("service", "{\"name\":\"caf\u{e9}\"}"), ev("resync", "{}")]);
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
    fn sse_multi_line_data_comments_and_defaults() {
        let mut p = SseParser::default();
        let got = p.push(b": hello\ndata: a\ndata: b\ndata\n\nevent: x\n\nid: 7\ndata:  two spaces\n\n");
        assert_eq!(got, vec![ev("message", "a\nb\n"), ev("message", " two spaces")]);
        // An event with no data is not dispatched, and its type does not leak into the next.
        let got = p.push(b"event: lonely\n\ndata: 1\n\n");
        assert_eq!(got, vec![ev("message", "1")]);
    }

    #[test]
    fn sse_unbounded_line_is_dropped() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_LINE + 10];
        assert!(p.push(&big).is_empty());
        assert!(p.pending.is_empty());
        assert_eq!(p.push(b"\nevent: service\ndata: 1\n\n"), vec![ev("service", "1")]);
    }

    #[test]
    fn lines_are_split_across_chunks_and_utf8() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\ntw"), vec!["one"]);
        assert_eq!(s.push(b"o\n\nthr"), vec!["two", ""]);
        let euro = "€".as_bytes();
        assert!(s.push(&euro[..1]).is_empty());
        assert_eq!(s.push(&[&euro[1..], b"\n"].concat()), vec!["thr€"]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn overlong_line_is_cut() {
        let mut s = LineSplitter::default();
        let got = s.push(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_LINE + 1);
        assert!(s.push(b"b\n") == vec!["b"]);
    }
}
