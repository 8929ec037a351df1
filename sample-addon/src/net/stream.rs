//! Routes that stream instead of buffering, for testing a proxy's passthrough:
//! `POST|PUT /upload` (counts and hashes the body), `GET /download?bytes=N` (a deterministic
//! byte pattern), and the dispatch deciding which requests bypass the route handler.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{BodyReader, ReadError, Request};
use super::response::Response;
use super::ws;

/// Default cap of `/upload` bodies (`SAMPLE_MAX_UPLOAD_BYTES`).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;
/// Largest `bytes` accepted by `/download` (1 TiB: nothing is allocated per byte).
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 40;
pub const DEFAULT_DOWNLOAD_CHUNK: usize = 64 * 1024;
pub const MAX_DOWNLOAD_CHUNK: usize = 1024 * 1024;
pub const MAX_DOWNLOAD_DELAY_MS: u64 = 10_000;
/// The download pattern: byte `i` is `(i % PATTERN_PERIOD) as u8`.
pub const PATTERN_PERIOD: u64 = 251;

/// How the connection handler serves a request whose head has been read.
#[derive(Debug)]
pub enum Plan {
    /// Read the body (normal cap) and dispatch with the route handler.
    Route,
    /// Stream the body through FNV-1a (upload cap) and answer its size and hash.
    Upload,
    /// Discard the body, then stream the pattern.
    Download(Download),
    /// Write this `101 Switching Protocols` head and run the WebSocket echo.
    WebSocket(Vec<u8>),
    /// Discard the body, then answer this (bad parameters, wrong method, failed handshake).
    Respond(Response),
}

pub fn plan(req: &Request) -> Plan {
    if ws::is_ws_path(&req.path) {
        return match ws::handshake(req) {
            Ok(head) => Plan::WebSocket(head),
            Err(r) => Plan::Respond(r),
        };
    }
    match req.path.as_str() {
        "/upload" => match req.method.as_str() {
            "POST" | "PUT" => Plan::Upload,
            _ => Plan::Respond(method_not_allowed("POST, PUT")),
        },
        "/download" => match req.method.as_str() {
            "GET" | "HEAD" => match parse_download(req) {
                Ok(d) => Plan::Download(d),
                Err(r) => Plan::Respond(r),
            },
            _ => Plan::Respond(method_not_allowed("GET")),
        },
        _ => Plan::Route,
    }
}

fn method_not_allowed(allow: &str) -> Response {
    let mut r = Response::error(405, format!("method not allowed; use {allow}"));
    r.headers.push(("Allow", allow.to_string()));
    r
}

// ---------------------------------------------------------------------------------------------
// Upload

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a64(pub u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    /// 16 lower-case hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h = Fnv1a64::default();
    h.update(data);
    h.0
}

/// Read the whole body through `body` without keeping it; answer its size and FNV-1a 64.
pub fn consume_upload<R: BufRead>(reader: &mut R, body: &mut BodyReader) -> Result<Value, ReadError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut hash = Fnv1a64::default();
    loop {
        let n = body.read(reader, &mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(json!({
        "bytes": body.total(),
        "fnv1a64": hash.hex(),
        "chunked": body.is_chunked(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Download

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub bytes: u64,
    /// `framing=chunked` (default) or `framing=length` (Content-Length).
    pub chunked: bool,
    /// Bytes per write (and per chunk when chunked).
    pub chunk: usize,
    /// Pause between writes.
    pub delay: Duration,
}

fn num_param(req: &Request, key: &str, max: u64) -> Result<Option<u64>, Response> {
    match req.query_param(key) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(Response::error(400, format!("{key} must be an integer between 0 and {max}"))),
        },
    }
}

pub fn parse_download(req: &Request) -> Result<Download, Response> {
    let bytes = num_param(req, "bytes", MAX_DOWNLOAD_BYTES)?
        .ok_or_else(|| Response::error(400, "download expects ?bytes=N (optional: framing=chunked|length, chunk=N, delay_ms=N)"))?;
    let chunked = match req.query_param("framing").as_deref() {
        None | Some("chunked") => true,
        Some("length") => false,
        Some(_) => return Err(Response::error(400, "framing must be chunked or length")),
    };
    let chunk = match num_param(req, "chunk", MAX_DOWNLOAD_CHUNK as u64)? {
        None => DEFAULT_DOWNLOAD_CHUNK,
        Some(0) => return Err(Response::error(400, "chunk must be at least 1")),
        Some(n) => n as usize,
    };
    let delay = Duration::from_millis(num_param(req, "delay_ms", MAX_DOWNLOAD_DELAY_MS)?.unwrap_or(0));
    Ok(Download { bytes, chunked, chunk, delay })
}

pub fn pattern_byte(i: u64) -> u8 {
    (i % PATTERN_PERIOD) as u8
}

/// Write the download response. HTTP/1.0 requests always get Content-Length (no chunked
/// coding in 1.0). `head_only` sends the head alone (HEAD).
pub fn write_download<W: Write>(w: &mut W, d: &Download, http10: bool, keep_alive: bool, head_only: bool) -> io::Result<()> {
    let chunked = d.chunked && !http10;
    let framing = if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {}", d.bytes) };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Pattern: byte[i] = i % 251\r\n{framing}\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    );
    w.write_all(head.as_bytes())?;
    if head_only {
        return w.flush();
    }
    // The pattern repeats every 251 bytes: any window of `chunk` bytes is a slice of this.
    let pattern: Vec<u8> = (0..d.chunk as u64 + PATTERN_PERIOD).map(pattern_byte).collect();
    let mut out = Vec::with_capacity(if chunked { d.chunk + 32 } else { 0 });
    let mut sent = 0u64;
    while sent < d.bytes {
        if sent > 0 && !d.delay.is_zero() {
            w.flush()?;
            std::thread::sleep(d.delay);
        }
        let n = (d.bytes - sent).min(d.chunk as u64) as usize;
        let start = (sent % PATTERN_PERIOD) as usize;
        let data = &pattern[start..start + n];
        if chunked {
            out.clear();
            let _ = write!(out, "{n:x}\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            w.write_all(&out)?;
        } else {
            w.write_all(data)?;
        }
        sent += n as u64;
    }
    if chunked {
        w.write_all(b"0\r\n\r\n")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::http::{read_request_head, ReadOutcome};
    use std::io::{Cursor, Read};

    #[test]
    fn fnv_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        let mut h = Fnv1a64::default();
        h.update(b"foo");
        h.update(b"bar");
        assert_eq!(h.hex(), "85944171f73967e8");
        assert_eq!(Fnv1a64(0xab).hex(), "00000000000000ab");
    }

    fn head(raw: &[u8]) -> (Request, Cursor<Vec<u8>>) {
        let mut c = Cursor::new(raw.to_vec());
        match read_request_head(&mut c) {
            ReadOutcome::Request(r) => (r, c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upload_streams_length_and_chunked() {
        let (req, mut c) = head(b"POST /upload HTTP/1.1\r\nContent-Length: 6\r\n\r\nfoobarGET /next");
        let mut b = BodyReader::start(&req, &mut Vec::new(), 100).unwrap();
        let v = consume_upload(&mut c, &mut b).unwrap();
        assert_eq!(v, json!({ "bytes": 6, "fnv1a64": "85944171f73967e8", "chunked": false }));
        let mut rest = String::new();
        c.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "GET /next"); // positioned at the next request

        let (req, mut c) = head(b"PUT /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo\r\n3;x=y\r\nbar\r\n0\r\nT: 1\r\n\r\n");
        let mut b = BodyReader::start(&req, &mut Vec::new(), 100).unwrap();
        let v = consume_upload(&mut c, &mut b).unwrap();
        assert_eq!(v, json!({ "bytes": 6, "fnv1a64": "85944171f73967e8", "chunked": true }));

        // Over the cap: 413 up front (Content-Length) or when the chunk arrives (chunked).
        let (req, _) = head(b"POST /upload HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
        assert!(matches!(
            BodyReader::start(&req, &mut Vec::new(), 100),
            Err(ReadError::Bad(e)) if e.status == 413
        ));
        let (req, mut c) = head(b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n");
        let mut b = BodyReader::start(&req, &mut Vec::new(), 10).unwrap();
        assert!(matches!(consume_upload(&mut c, &mut b), Err(ReadError::Bad(e)) if e.status == 413));
        // Truncated body: 400.
        let (req, mut c) = head(b"POST /upload HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        let mut b = BodyReader::start(&req, &mut Vec::new(), 100).unwrap();
        assert!(matches!(consume_upload(&mut c, &mut b), Err(ReadError::Bad(e)) if e.status == 400));
    }

    #[test]
    fn plans() {
        let p = |raw: &[u8]| plan(&head(raw).0);
        assert!(matches!(p(b"POST /upload HTTP/1.1\r\n\r\n"), Plan::Upload));
        assert!(matches!(p(b"PUT /upload HTTP/1.1\r\n\r\n"), Plan::Upload));
        assert!(matches!(p(b"GET /upload HTTP/1.1\r\n\r\n"), Plan::Respond(r) if r.status == 405));
        assert!(matches!(p(b"GET /download HTTP/1.1\r\n\r\n"), Plan::Respond(r) if r.status == 400));
        assert!(matches!(p(b"POST /download?bytes=1 HTTP/1.1\r\n\r\n"), Plan::Respond(r) if r.status == 405));
        assert!(matches!(p(b"GET /ws HTTP/1.1\r\n\r\n"), Plan::Respond(r) if r.status == 426));
        assert!(matches!(p(b"GET /health HTTP/1.1\r\n\r\n"), Plan::Route));
        assert!(matches!(p(b"GET /uploads HTTP/1.1\r\n\r\n"), Plan::Route));
        let d = |q: &str| parse_download(&head(format!("GET /download?{q} HTTP/1.1\r\n\r\n").as_bytes()).0);
        assert_eq!(d("bytes=5").unwrap(), Download { bytes: 5, chunked: true, chunk: DEFAULT_DOWNLOAD_CHUNK, delay: Duration::ZERO });
        assert_eq!(
            d("bytes=5&framing=length&chunk=2&delay_ms=7").unwrap(),
            Download { bytes: 5, chunked: false, chunk: 2, delay: Duration::from_millis(7) }
        );
        for bad in ["bytes=-1", "bytes=x", "bytes=1&framing=gzip", "bytes=1&chunk=0", "bytes=1&delay_ms=99999", "bytes=2000000000000"] {
            assert_eq!(d(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    /// Decode a chunked body, checking the framing.
    fn dechunk(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let nl = raw.iter().position(|b| *b == b'\n').unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..nl - 1]).unwrap(), 16).unwrap();
            raw = &raw[nl + 1..];
            if size == 0 {
                assert_eq!(raw, b"\r\n");
                return out;
            }
            out.extend_from_slice(&raw[..size]);
            assert_eq!(&raw[size..size + 2], b"\r\n");
            raw = &raw[size + 2..];
        }
    }

    fn split_head(out: &[u8]) -> (String, &[u8]) {
        let i = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8(out[..i].to_vec()).unwrap(), &out[i..])
    }

    #[test]
    fn download_pattern_and_framing() {
        let expect: Vec<u8> = (0..1000u64).map(|i| (i % 251) as u8).collect();
        let d = Download { bytes: 1000, chunked: true, chunk: 300, delay: Duration::ZERO };
        let mut out = Vec::new();
        write_download(&mut out, &d, false, true, false).unwrap();
        let (h, body) = split_head(&out);
        assert!(h.contains("Transfer-Encoding: chunked\r\n") && h.contains("Connection: keep-alive"));
        assert_eq!(dechunk(body), expect);

        let mut out = Vec::new();
        write_download(&mut out, &Download { chunked: false, ..d.clone() }, false, false, false).unwrap();
        let (h, body) = split_head(&out);
        assert!(h.contains("Content-Length: 1000\r\n") && h.contains("Connection: close"));
        assert_eq!(body, expect);

        // HTTP/1.0 gets Content-Length even when chunked was asked for; HEAD gets no body.
        let mut out = Vec::new();
        write_download(&mut out, &d, true, false, false).unwrap();
        assert_eq!(split_head(&out).1, expect);
        let mut out = Vec::new();
        write_download(&mut out, &d, false, true, true).unwrap();
        assert!(split_head(&out).1.is_empty());

        let mut out = Vec::new();
        write_download(&mut out, &Download { bytes: 0, ..d }, false, true, false).unwrap();
        assert_eq!(split_head(&out).1, b"0\r\n\r\n");
    }
}
