//! A deliberately small HTTP/1.1 request parser and response writer.
//!
//! Supported: HTTP/1.0 and HTTP/1.1, keep-alive (1.1 default, 1.0 with
//! `Connection: keep-alive`), `Content-Length` bodies, `Transfer-Encoding: chunked`
//! request bodies (trailers are read and discarded), `Expect: 100-continue`. Bodies are either
//! read whole ([`read_request`]) or streamed after the head ([`read_request_head`] +
//! [`BodyReader`], for routes that take large bodies).
//! Everything else that is malformed is reported as an [`HttpError`] carrying the
//! status code to answer with; the connection is closed after such an error.

use std::io::{self, BufRead, Read, Write};

/// Maximum size of the request line plus all header lines.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Maximum number of header lines.
pub const MAX_HEADERS: usize = 100;
/// Default maximum request body size.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Raw path (no query string), as sent, always starting with `/`.
    pub path: String,
    /// Raw query string without the leading `?` (empty when absent).
    pub query: String,
    /// `(1, 0)` or `(1, 1)`.
    pub version: (u8, u8),
    /// Header names lower-cased, values trimmed, in order of arrival.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the connection may be reused after this request.
    pub fn keep_alive(&self) -> bool {
        let tokens = self.connection_tokens();
        if tokens.iter().any(|t| t == "close") {
            return false;
        }
        if self.version == (1, 0) {
            return tokens.iter().any(|t| t == "keep-alive");
        }
        true
    }

    fn connection_tokens(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Value of a query parameter (first occurrence, percent-decoded).
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).as_deref() == Some(key)).then(|| percent_decode(v).unwrap_or_default())
        })
    }
}

/// A request that could not be read; `status` is what to answer (the connection is then closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError { status, message: message.into() }
    }
}

/// Outcome of trying to read a request from a connection.
#[derive(Debug)]
pub enum ReadOutcome {
    Request(Request),
    /// The peer closed the connection cleanly between requests.
    Closed,
    /// The request is malformed; answer with this error and close.
    Bad(HttpError),
    /// An I/O error (including read timeouts); just close.
    Io,
}

/// Read one request (head and whole body) from `reader`. `interim` receives the `100 Continue`
/// interim response when the client asked for it (tests pass a `Vec`). The server itself reads
/// the head first and then the body, to pick the body's handling by route.
#[cfg(test)]
pub fn read_request<R: BufRead, W: Write>(reader: &mut R, interim: &mut W, max_body: usize) -> ReadOutcome {
    let mut req = match read_request_head(reader) {
        ReadOutcome::Request(r) => r,
        other => return other,
    };
    match BodyReader::start(&req, interim, max_body as u64).and_then(|mut b| b.read_to_vec(reader)) {
        Ok(body) => {
            req.body = body;
            ReadOutcome::Request(req)
        }
        Err(ReadError::Io) => ReadOutcome::Io,
        Err(ReadError::Bad(e)) => ReadOutcome::Bad(e),
    }
}

/// Read the request line and headers only; the body (if any) is left in `reader` for a
/// [`BodyReader`]. The body framing is validated here already.
pub fn read_request_head<R: BufRead>(reader: &mut R) -> ReadOutcome {
    let head = match read_head(reader) {
        Ok(Some(h)) => h,
        Ok(None) => return ReadOutcome::Closed,
        Err(ReadError::Io) => return ReadOutcome::Io,
        Err(ReadError::Bad(e)) => return ReadOutcome::Bad(e),
    };
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(e) => return ReadOutcome::Bad(e),
    };
    if let Err(e) = body_framing(&req) {
        return ReadOutcome::Bad(e);
    }
    ReadOutcome::Request(req)
}

/// Streams a request body (Content-Length or chunked) without buffering it, enforcing a size
/// limit. Call [`BodyReader::read`] until it returns `Ok(0)`: only then is the connection
/// positioned at the next request.
#[derive(Debug)]
pub struct BodyReader {
    framing: BodyFraming,
    /// Bytes left: of the whole body (Length) or of the current chunk (Chunked).
    remaining: u64,
    /// Chunked: the current chunk's data must be followed by CRLF.
    need_crlf: bool,
    done: bool,
    total: u64,
    max: u64,
}

impl BodyReader {
    /// Check the announced length against `max` (413), answer `Expect: 100-continue` on
    /// `interim` when a body is expected, and return a reader positioned at the body.
    pub fn start<W: Write>(req: &Request, interim: &mut W, max: u64) -> Result<Self, ReadError> {
        let framing = body_framing(req).map_err(ReadError::Bad)?;
        if let BodyFraming::Length(n) = framing {
            if n > max {
                return Err(ReadError::Bad(HttpError::new(413, format!("request body of {n} bytes exceeds the limit of {max} bytes"))));
            }
        }
        let expects_body = !matches!(framing, BodyFraming::Length(0));
        if expects_body && req.version == (1, 1) {
            if let Some(expect) = req.header("expect") {
                if expect.eq_ignore_ascii_case("100-continue") {
                    interim.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|_| interim.flush()).map_err(|_| ReadError::Io)?;
                } else {
                    return Err(ReadError::Bad(HttpError::new(417, format!("unsupported Expect: {expect}"))));
                }
            }
        }
        let remaining = match framing {
            BodyFraming::Length(n) => n,
            BodyFraming::Chunked => 0,
        };
        Ok(BodyReader { framing, remaining, need_crlf: false, done: false, total: 0, max })
    }

    /// Read the rest of the body into memory (bounded by the reader's limit).
    pub fn read_to_vec<R: BufRead>(&mut self, reader: &mut R) -> Result<Vec<u8>, ReadError> {
        let mut body = match self.framing {
            BodyFraming::Length(n) => Vec::with_capacity(n.min(self.max) as usize),
            BodyFraming::Chunked => Vec::new(),
        };
        let mut buf = [0u8; 8192];
        loop {
            let n = self.read(reader, &mut buf)?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&buf[..n]);
        }
    }

    /// Read and drop the rest of the body.
    pub fn discard<R: BufRead>(&mut self, reader: &mut R) -> Result<(), ReadError> {
        let mut buf = [0u8; 8192];
        while self.read(reader, &mut buf)? > 0 {}
        Ok(())
    }

    pub fn is_chunked(&self) -> bool {
        self.framing == BodyFraming::Chunked
    }

    /// Body bytes returned so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Read body bytes into `buf`; `Ok(0)` at the end of the body (trailers consumed).
    pub fn read<R: BufRead>(&mut self, reader: &mut R, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            match self.framing {
                BodyFraming::Length(_) => {
                    self.done = true;
                    return Ok(0);
                }
                BodyFraming::Chunked => {
                    if !self.next_chunk(reader)? {
                        self.done = true;
                        return Ok(0);
                    }
                }
            }
        }
        let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = loop {
            match reader.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Err(ReadError::Bad(HttpError::new(400, "connection closed in the middle of a request body")));
        }
        self.remaining -= n as u64;
        self.total += n as u64;
        Ok(n)
    }

    /// Chunked: read the CRLF after the previous chunk and the next size line (and, after the
    /// last chunk, the trailers). Returns false at the end of the body.
    fn next_chunk<R: BufRead>(&mut self, reader: &mut R) -> Result<bool, ReadError> {
        let bad = |m: &str| ReadError::Bad(HttpError::new(400, m.to_string()));
        let eof = || bad("connection closed in the middle of a chunked body");
        if self.need_crlf {
            let end = read_line(reader, 2, "chunk terminator", 400)?.ok_or_else(eof)?;
            if !end.is_empty() {
                return Err(bad("chunk data not followed by CRLF"));
            }
            self.need_crlf = false;
        }
        let line = read_line(reader, 1024, "chunk size line", 400)?.ok_or_else(eof)?;
        let line = std::str::from_utf8(&line).map_err(|_| bad("malformed chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or("").trim_matches([' ', '\t']);
        if size_hex.is_empty() || size_hex.len() > 15 || !size_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("malformed chunk size"));
        }
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| bad("malformed chunk size"))?;
        if size == 0 {
            // Trailer section: header lines until an empty line; discarded.
            let mut trailer_bytes = 0usize;
            loop {
                let t = read_line(reader, MAX_HEAD_BYTES, "trailer", 431)?.ok_or_else(eof)?;
                if t.is_empty() {
                    return Ok(false);
                }
                trailer_bytes += t.len();
                if trailer_bytes > MAX_HEAD_BYTES {
                    return Err(ReadError::Bad(HttpError::new(431, "trailers too large")));
                }
            }
        }
        if self.total + size > self.max {
            return Err(ReadError::Bad(HttpError::new(413, format!("request body exceeds the limit of {} bytes", self.max))));
        }
        self.remaining = size;
        self.need_crlf = true;
        Ok(true)
    }
}

/// Why a request (head or body) could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Read failed or timed out (the error itself is not interesting: the connection is closed).
    Io,
    /// Malformed or over a limit: answer with this error and close.
    Bad(HttpError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Bad(HttpError::new(400, "connection closed in the middle of a request"))
        } else {
            ReadError::Io
        }
    }
}

/// Read one line (ending in LF) of at most `limit` bytes. Returns the line without CRLF/LF.
/// `Ok(None)` means EOF before any byte.
fn read_line<R: BufRead>(reader: &mut R, limit: usize, what: &str, too_long: u16) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(limit as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > limit {
            return Err(ReadError::Bad(HttpError::new(too_long, format!("{what} too long"))));
        }
        return Err(ReadError::Bad(HttpError::new(400, "connection closed in the middle of a request")));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Read the request line and headers (up to and including the empty line) as raw lines.
fn read_head<R: BufRead>(reader: &mut R) -> Result<Option<Vec<Vec<u8>>>, ReadError> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut used = 0usize;
    let mut skipped_blank = 0;
    loop {
        let remaining = MAX_HEAD_BYTES.saturating_sub(used);
        if remaining == 0 {
            return Err(ReadError::Bad(HttpError::new(431, "request head too large")));
        }
        let line = match read_line(reader, remaining, "request head", 431)? {
            Some(l) => l,
            None if lines.is_empty() => return Ok(None),
            None => return Err(ReadError::Bad(HttpError::new(400, "connection closed in the middle of a request"))),
        };
        used += line.len() + 2;
        if line.is_empty() {
            if lines.is_empty() {
                // RFC 9112 §2.2: ignore (a few) empty lines before the request line.
                skipped_blank += 1;
                if skipped_blank > 4 {
                    return Err(ReadError::Bad(HttpError::new(400, "empty request line")));
                }
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
        if lines.len() > MAX_HEADERS + 1 {
            return Err(ReadError::Bad(HttpError::new(431, "too many header lines")));
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse the raw head lines (request line first) into a [`Request`] with an empty body.
fn parse_head(lines: &[Vec<u8>]) -> Result<Request, HttpError> {
    let bad = |m: &str| HttpError::new(400, m.to_string());
    let (first, rest) = lines.split_first().ok_or_else(|| bad("empty request"))?;
    let first = std::str::from_utf8(first).map_err(|_| bad("request line is not valid UTF-8"))?;
    let mut parts = first.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(bad("malformed request line")),
    };
    if !method.bytes().all(is_tchar) {
        return Err(bad("malformed method"));
    }
    let version = match version {
        "HTTP/1.1" => (1, 1),
        "HTTP/1.0" => (1, 0),
        v if v.starts_with("HTTP/") => return Err(HttpError::new(505, format!("unsupported HTTP version {v}"))),
        _ => return Err(bad("malformed HTTP version")),
    };
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("malformed request target"));
    }
    // Accept absolute-form (`http://host/path`) by dropping scheme and authority.
    let target = match target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        Some(rest) => match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_string(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_string(),
        },
        None => target.to_string(),
    };
    if !target.starts_with('/') {
        return Err(bad("request target must start with '/'"));
    }
    let target = target.split('#').next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        version,
        headers: parse_headers(rest)?,
        body: Vec::new(),
    })
}

fn parse_headers(lines: &[Vec<u8>]) -> Result<Vec<(String, String)>, HttpError> {
    let bad = |m: String| HttpError::new(400, m);
    let mut headers = Vec::with_capacity(lines.len());
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(bad("obsolete header line folding is not supported".into()));
        }
        let colon = line.iter().position(|b| *b == b':').ok_or_else(|| bad("header line without ':'".into()))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(bad("malformed header name".into()));
        }
        if value.iter().any(|b| (*b < b' ' && *b != b'\t') || *b == 0x7f) {
            return Err(bad("control character in header value".into()));
        }
        // Header names are ASCII (checked above); values may be obs-text, keep them lossily.
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value).trim_matches([' ', '\t']).to_string();
        headers.push((name, value));
    }
    Ok(headers)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    Length(u64),
    Chunked,
}

fn body_framing(req: &Request) -> Result<BodyFraming, HttpError> {
    let te: Vec<&str> = req.headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.as_str()).collect();
    let cl: Vec<&str> = req.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(HttpError::new(400, "both Transfer-Encoding and Content-Length present"));
        }
        if req.version == (1, 0) {
            return Err(HttpError::new(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        let codings: Vec<String> =
            te.iter().flat_map(|v| v.split(',')).map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty()).collect();
        return if codings == ["chunked"] {
            Ok(BodyFraming::Chunked)
        } else {
            Err(HttpError::new(501, format!("unsupported Transfer-Encoding: {}", codings.join(", "))))
        };
    }
    let mut length: Option<u64> = None;
    for v in cl.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::new(400, "malformed Content-Length"));
        }
        let n: u64 = v.parse().map_err(|_| HttpError::new(400, "malformed Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(HttpError::new(400, "conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(BodyFraming::Length(length.unwrap_or(0)))
}

/// Percent-decode a URL component (`+` is left as is). `None` for invalid escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Serialize a complete response (status line, headers, body) into one buffer.
/// `head_only` omits the body but keeps its `Content-Length` (for HEAD requests).
pub fn encode_response(status: u16, headers: &[(&str, String)], body: &[u8], keep_alive: bool, head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n", body.len());
    let _ = write!(out, "Connection: {}\r\n\r\n", if keep_alive { "keep-alive" } else { "close" });
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read(raw: &[u8]) -> (ReadOutcome, Vec<u8>) {
        let mut cur = Cursor::new(raw.to_vec());
        let mut interim = Vec::new();
        let out = read_request(&mut cur, &mut interim, DEFAULT_MAX_BODY_BYTES);
        (out, interim)
    }

    fn ok(raw: &[u8]) -> Request {
        match read(raw).0 {
            ReadOutcome::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn bad(raw: &[u8]) -> u16 {
        match read(raw).0 {
            ReadOutcome::Bad(e) => e.status,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let r = ok(b"GET /health?x=1&code=3 HTTP/1.1\r\nHost: a\r\nX-Thing:  v  \r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/health");
        assert_eq!(r.query, "x=1&code=3");
        assert_eq!(r.query_param("code").as_deref(), Some("3"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.header("x-thing"), Some("v"));
        assert_eq!(r.header("HOST"), Some("a"));
        assert!(r.keep_alive());
        assert!(r.body.is_empty());
    }

    #[test]
    fn bare_lf_and_leading_blank_lines_are_tolerated() {
        let r = ok(b"\r\nGET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(r.path, "/");
    }

    #[test]
    fn content_length_body_and_pipelining() {
        let raw = b"POST /execute/echo HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET /health HTTP/1.1\r\n\r\n";
        let mut cur = Cursor::new(raw.to_vec());
        let mut sink = Vec::new();
        let ReadOutcome::Request(first) = read_request(&mut cur, &mut sink, 1024) else { panic!() };
        assert_eq!(first.body, b"{\"a\":1}");
        let ReadOutcome::Request(second) = read_request(&mut cur, &mut sink, 1024) else { panic!() };
        assert_eq!(second.path, "/health");
        assert!(matches!(read_request(&mut cur, &mut sink, 1024), ReadOutcome::Closed));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let r =
            ok(b"POST /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: y\r\n\r\n");
        assert_eq!(r.body, b"Wikipedia");
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), 400);
        let mut cur = Cursor::new(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n".to_vec());
        match read_request(&mut cur, &mut Vec::new(), 8) {
            ReadOutcome::Bad(e) => assert_eq!(e.status, 413),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_heads() {
        assert_eq!(bad(b"GET /\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1 extra\r\n\r\n"), 400);
        assert_eq!(bad(b"G(T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad(b"GET / FOO/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET nopath HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n"), 400);
        assert_eq!(bad(b"\xff\xfe / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a\r\n"), 400); // EOF inside the head
    }

    #[test]
    fn content_length_errors() {
        assert_eq!(bad(b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"), 413);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort"), 400);
        // Identical duplicates are fine.
        assert_eq!(ok(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab").body, b"ab");
    }

    #[test]
    fn head_too_large() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b"X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 500).flatten());
        raw.extend_from_slice(b"\r\n");
        assert_eq!(bad(&raw), 431);
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(bad(&long), 431);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!ok(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!ok(b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive());
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(ok(b"GET / HTTP/1.1\r\n\r\n").keep_alive());
    }

    #[test]
    fn expect_continue() {
        let (out, interim) = read(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
        assert!(matches!(out, ReadOutcome::Request(ref r) if r.body == b"hi"));
        assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        // No interim response when there is no body.
        let (_, interim) = read(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
        assert!(interim.is_empty());
        assert_eq!(bad(b"POST /x HTTP/1.1\r\nExpect: something\r\nContent-Length: 2\r\n\r\nhi"), 417);
    }

    #[test]
    fn absolute_form_target() {
        let r = ok(b"GET http://example.com/health?a=b HTTP/1.1\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/health", "a=b"));
        let r = ok(b"GET http://example.com?a=b HTTP/1.1\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/", "a=b"));
        let r = ok(b"GET http://example.com HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/");
    }

    #[test]
    fn clean_eof_is_closed() {
        assert!(matches!(read(b"").0, ReadOutcome::Closed));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn encodes_response() {
        let out = encode_response(404, &[("Content-Type", "application/json".into())], b"{}", true, false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
        );
        let head = encode_response(200, &[], b"abc", false, true);
        assert!(head.ends_with(b"Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }
}
