//! Splits a byte stream into lines: the one splitter behind `addonctl logs --follow`, the
//! image-pull progress stream and the dashboard's log view. It takes chunks exactly as they
//! arrive, holding a partial line (and a partial UTF-8 character) until its `\n` comes,
//! and bounds what it holds, so a peer that never ends a line cannot grow memory. Lines are
//! handed back raw, without the `\n`: making them safe for a terminal is the caller's job
//! (`crate::sanitize`).

/// Longest line held by default; a longer one is handed on in pieces of this size.
pub const MAX_LINE: usize = 256 * 1024;

/// The incremental splitter: [`LineSplitter::push`] each chunk, then
/// [`LineSplitter::finish`] at the end of the stream.
#[derive(Debug)]
pub struct LineSplitter {
    /// The start of a line whose `\n` has not arrived yet.
    pending: Vec<u8>,
    /// Longest line held; at this size the held part is handed on as a line of its own.
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::with_max_line(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter that cuts lines at `max_line` bytes; `usize::MAX` never cuts.
    pub fn with_max_line(max_line: usize) -> Self {
        LineSplitter { pending: Vec::new(), max_line }
    }

    /// Feeds the next chunk; returns the lines it completed, in order.
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
        if self.pending.len() >= self.max_line {
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
        // A character split right before the newline, and a CR kept as it came.
        let e = "é".as_bytes();
        assert!(s.push(&[b'o', e[0]]).is_empty());
        assert_eq!(s.push(&[e[1], b'\r', b'\n']), vec!["o\u{e9}\r"]);
    }

    #[test]
    fn overlong_line_is_cut() {
        let mut s = LineSplitter::default();
        let got = s.push(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_LINE + 1);
        assert!(s.push(b"b\n") == vec!["b"]);
        // Without a bound, a long line stays whole.
        let mut s = LineSplitter::with_max_line(usize::MAX);
        assert!(s.push(&vec![b'a'; MAX_LINE * 2]).is_empty());
        assert_eq!(s.push(b"\n")[0].len(), MAX_LINE * 2);
    }
}
