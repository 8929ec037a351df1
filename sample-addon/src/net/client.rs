//! A minimal HTTP/1.1 client for the addon API (`ADDOND_API`), std only: one request per
//! connection (`Connection: close`), a `Content-Length` request body, and a response body
//! framed by `Content-Length`, `Transfer-Encoding: chunked` or the end of the connection.
//! Every step (connect, write, each read) shares one overall deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Deadline of one whole request (connect to last response byte).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 200;

/// Where the API is, parsed from `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host as written (IPv6 without brackets), for connecting.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written in the URL, for the `Host` header.
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

/// Parse a base URL such as `http://172.30.0.1:7081`. Only `http` is supported.
pub fn parse_base(url: &str) -> Result<Endpoint, String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err(format!("unsupported URL scheme {scheme:?} in {url:?}")),
        None => return Err(format!("{url:?} is not an http:// URL")),
    };
    let (authority, prefix) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let prefix = prefix.split(['?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("unterminated IPv6 address in {url:?}"))?;
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("malformed authority in {url:?}")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => 80,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port {p:?} in {url:?}"))?,
    };
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("bad host in {url:?}"));
    }
    Ok(Endpoint { host: host.to_string(), port, authority: authority.to_string(), prefix: prefix.trim_end_matches('/').to_string() })
}

/// Percent-encode what may not appear raw in a request target: controls, space, `#`, DEL
/// and non-ASCII bytes (so `"/v1/kv/a b"` works). Existing `%XX` escapes are left alone.
pub fn encode_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b <= b' ' || b == b'#' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request to send; `path` starts with `/` (it is appended to the endpoint's prefix).
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub method: String,
    pub path: String,
    /// Extra headers (after `Host`); `Content-Length` and `Connection` are set by the client.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Names lower-cased, values trimmed, in order of arrival.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The request itself is unusable (bad method, path or header).
    Invalid(String),
    /// Connecting, sending or receiving failed, timed out, or the reply was malformed.
    Failed(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Invalid(m) | ClientError::Failed(m) => f.write_str(m),
        }
    }
}

/// Build the request bytes (validating method, path and headers).
pub fn encode_request(ep: &Endpoint, req: &Outgoing) -> Result<Vec<u8>, ClientError> {
    let invalid = |m: String| ClientError::Invalid(m);
    if req.method.is_empty() || req.method.len() > 32 || !req.method.bytes().all(is_tchar) {
        return Err(invalid(format!("malformed method {:?}", req.method)));
    }
    if !req.path.starts_with('/') {
        return Err(invalid(format!("path must start with '/': {:?}", req.path)));
    }
    let mut head = format!("{} {}{} HTTP/1.1\r\nHost: {}\r\n", req.method, ep.prefix, encode_target(&req.path), ep.authority);
    for (name, value) in &req.headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(invalid(format!("malformed header name {name:?}")));
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(invalid(format!("control character in header {name}")));
        }
        if ["host", "content-length", "transfer-encoding", "connection"].iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return Err(invalid(format!("header {name} is set by the client")));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let anticipates_body = matches!(req.method.as_str(), "POST" | "PUT" | "PATCH");
    match &req.body {
        Some(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        None if anticipates_body => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    if let Some(b) = &req.body {
        bytes.extend_from_slice(b);
    }
    Ok(bytes)
}

/// A stream whose reads and writes fail with `TimedOut` once `deadline` has passed.
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
}

impl Deadlined {
    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
        } else {
            Ok(left)
        }
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn resolve(ep: &Endpoint) -> Result<Vec<SocketAddr>, ClientError> {
    if let Ok(ip) = ep.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, ep.port)]);
    }
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Failed(format!("cannot resolve {}: {e}", ep.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::Failed(format!("{} has no address", ep.host)));
    }
    Ok(addrs)
}

/// Send `req` to the API at `base` and read the whole reply, all within `timeout`.
pub fn send(base: &str, req: &Outgoing, timeout: Duration) -> Result<Reply, ClientError> {
    let ep = parse_base(base).map_err(ClientError::Failed)?;
    let bytes = encode_request(&ep, req)?;
    let deadline = Instant::now() + timeout;
    let failed = |what: &str, e: io::Error| ClientError::Failed(format!("{what} {}:{}: {e}", ep.host, ep.port));
    let mut last_err = None;
    let mut stream = None;
    for addr in resolve(&ep)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let stream = stream
        .ok_or_else(|| failed("cannot connect to", last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out"))))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Deadlined { stream, deadline };
    conn.write_all(&bytes).and_then(|_| conn.flush()).map_err(|e| failed("cannot send the request to", e))?;
    let head_only = req.method == "HEAD";
    read_reply(&mut BufReader::new(conn), head_only)
        .map_err(|e| ClientError::Failed(format!("reading the reply from {}:{}: {e}", ep.host, ep.port)))
}

/// Read one line (ending in LF, at most `limit` bytes) without its CRLF/LF; `None` at EOF.
fn read_line<R: BufRead>(r: &mut R, limit: usize) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    let n = r.by_ref().take(limit as u64 + 1).read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > limit { "line too long".into() } else { "connection closed in the middle of a line".into() });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Status line and headers.
fn read_head<R: BufRead>(r: &mut R) -> Result<(u16, Vec<(String, String)>), String> {
    let status_line = read_line(r, MAX_HEAD_BYTES)?.ok_or("connection closed before a reply")?;
    let status_line = String::from_utf8_lossy(&status_line);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("malformed status line {status_line:?}"));
    }
    let status =
        code.parse::<u16>().ok().filter(|s| (100..=999).contains(s)).ok_or_else(|| format!("malformed status line {status_line:?}"))?;
    let mut headers = Vec::new();
    let mut used = status_line.len();
    loop {
        let line = read_line(r, MAX_HEAD_BYTES)?.ok_or("connection closed in the reply head")?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        used += line.len();
        if used > MAX_HEAD_BYTES || headers.len() >= MAX_HEADERS {
            return Err("reply head too large".into());
        }
        let line = String::from_utf8_lossy(&line);
        let (name, value) = line.split_once(':').ok_or_else(|| format!("malformed header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim_matches([' ', '\t']).to_string()));
    }
}

/// Read a reply: skip interim (1xx) replies, then the final head and its body.
pub fn read_reply<R: BufRead>(r: &mut R, head_only: bool) -> Result<Reply, String> {
    let (status, headers) = loop {
        let (status, headers) = read_head(r)?;
        match status {
            101 => return Err("unexpected 101 Switching Protocols".into()),
            100..=199 => continue,
            _ => break (status, headers),
        }
    };
    fn all<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    let get_all = |name: &'static str| all(&headers, name);
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if let Some(te) = get_all("transfer-encoding").last() {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            read_chunked(r)?
        } else {
            read_to_end(r)?
        }
    } else if get_all("content-length").next().is_some() {
        let mut len: Option<u64> = None;
        for v in get_all("content-length").flat_map(|v| v.split(',')) {
            let n = v.trim().parse::<u64>().map_err(|_| format!("malformed Content-Length {v:?}"))?;
            if len.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            len = Some(n);
        }
        let len = len.unwrap_or(0);
        if len > MAX_RESPONSE_BYTES as u64 {
            return Err(format!("reply body of {len} bytes is too large"));
        }
        let mut body = vec![0u8; len as usize];
        r.read_exact(&mut body).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                format!("connection closed before the {len}-byte body was complete")
            } else {
                e.to_string()
            }
        })?;
        body
    } else {
        read_to_end(r)?
    };
    Ok(Reply { status, headers, body })
}

fn read_to_end<R: Read>(r: &mut R) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    r.take(MAX_RESPONSE_BYTES as u64 + 1).read_to_end(&mut body).map_err(|e| e.to_string())?;
    if body.len() > MAX_RESPONSE_BYTES {
        return Err("reply body is too large".into());
    }
    Ok(body)
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, String> {
    let eof = || "connection closed in the middle of a chunked body".to_string();
    let mut body = Vec::new();
    loop {
        let line = read_line(r, 1024)?.ok_or_else(eof)?;
        let line = String::from_utf8_lossy(&line);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        if size_hex.is_empty() || size_hex.len() > 15 || !size_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("malformed chunk size {line:?}"));
        }
        let size = usize::from_str_radix(size_hex, 16).map_err(|e| e.to_string())?;
        if size == 0 {
            // Trailers, discarded.
            let mut used = 0;
            loop {
                let t = read_line(r, MAX_HEAD_BYTES)?.ok_or_else(eof)?;
                if t.is_empty() {
                    return Ok(body);
                }
                used += t.len();
                if used > MAX_HEAD_BYTES {
                    return Err("trailers too large".into());
                }
            }
        }
        if body.len() + size > MAX_RESPONSE_BYTES {
            return Err("reply body is too large".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { eof() } else { e.to_string() })?;
        match read_line(r, 2)? {
            Some(l) if l.is_empty() => {}
            Some(_) => return Err("chunk data not followed by CRLF".into()),
            None => return Err(eof()),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A one-shot server: accepts one connection, reads the request head and its
    /// Content-Length body, sends it through the channel and answers `reply` verbatim
    /// (in pieces, to exercise partial reads), then closes.
    pub fn one_shot(reply: Vec<u8>) -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(&stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = tx.send((head, body));
            let mut w = &stream;
            for piece in reply.chunks(7) {
                let _ = w.write_all(piece);
                let _ = w.flush();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        (base, rx)
    }

    #[test]
    fn parses_base_urls() {
        let ep = parse_base("http://172.30.0.1:7081").unwrap();
        assert_eq!(ep, Endpoint { host: "172.30.0.1".into(), port: 7081, authority: "172.30.0.1:7081".into(), prefix: String::new() });
        let ep = parse_base("HTTP://[::1]:9/base/").unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.prefix.as_str()), ("::1", 9, "/base"));
        assert_eq!(ep.authority, "[::1]:9");
        let ep = parse_base("http://api.local").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("api.local", 80));
        for bad in
            ["", "172.30.0.1:7081", "https://x:1", "http://", "http://:80", "http://x:0", "http://x:99999", "http://u@x:1", "http://[::1"]
        {
            assert!(parse_base(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encodes_requests() {
        let ep = parse_base("http://10.0.0.1:7081").unwrap();
        let req = Outgoing {
            method: "PUT".into(),
            path: "/v1/kv/a b#ü".into(),
            headers: vec![("Authorization".into(), "Bearer t".into())],
            body: Some(b"xyz".to_vec()),
        };
        let bytes = String::from_utf8(encode_request(&ep, &req).unwrap()).unwrap();
        assert_eq!(
            bytes,
            "PUT /v1/kv/a%20b%23%C3%BC HTTP/1.1\r\nHost: 10.0.0.1:7081\r\nAuthorization: Bearer t\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\nxyz"
        );
        let get = Outgoing { method: "GET".into(), path: "/v1/health".into(), ..Outgoing::default() };
        let bytes = String::from_utf8(encode_request(&ep, &get).unwrap()).unwrap();
        assert!(!bytes.contains("Content-Length"), "{bytes}");
        let post = Outgoing { method: "POST".into(), ..get.clone() };
        let bytes = String::from_utf8(encode_request(&ep, &post).unwrap()).unwrap();
        assert!(bytes.contains("Content-Length: 0\r\n"), "{bytes}");
        let invalid = |r: Outgoing| matches!(encode_request(&ep, &r), Err(ClientError::Invalid(_)));
        assert!(invalid(Outgoing { method: "G T".into(), ..get.clone() }));
        assert!(invalid(Outgoing { path: "v1/health".into(), ..get.clone() }));
        assert!(invalid(Outgoing { headers: vec![("X-A".into(), "a\r\nb".into())], ..get.clone() }));
        assert!(invalid(Outgoing { headers: vec![("Content-Length".into(), "5".into())], ..get.clone() }));
    }

    #[test]
    fn reads_replies_from_bytes() {
        let parse = |s: &[u8]| read_reply(&mut Cursor::new(s.to_vec()), false);
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b \r\n\r\nokEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"abc0123456789");
        let r = parse(b"HTTP/1.0 200 OK\r\n\r\nuntil eof").unwrap();
        assert_eq!(r.body, b"until eof");
        let r = parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        let r = read_reply(&mut Cursor::new(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n".to_vec()), true).unwrap();
        assert!(r.body.is_empty());
        for bad in [
            &b""[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn round_trip_content_length() {
        let (base, rx) =
            one_shot(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"success\":true}".to_vec());
        let req = Outgoing {
            method: "POST".into(),
            path: "/v1/events".into(),
            headers: vec![("Authorization".into(), "Bearer tok".into())],
            body: Some(br#"{"name":"x"}"#.to_vec()),
        };
        let reply = send(&base, &req, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.body, br#"{"success":true}"#);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let (head, body) = rx.recv().unwrap();
        assert!(head.starts_with("POST /v1/events HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Authorization: Bearer tok\r\n"), "{head}");
        assert!(head.contains(&format!("Host: {}\r\n", base.trim_start_matches("http://"))));
        assert_eq!(body, br#"{"name":"x"}"#);
    }

    #[test]
    fn round_trip_chunked() {
        let (base, rx) = one_shot(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        );
        let req = Outgoing { method: "GET".into(), path: "/v1/kv/k".into(), ..Outgoing::default() };
        let reply = send(&base, &req, DEFAULT_TIMEOUT).unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello world"[..]));
        assert!(rx.recv().unwrap().0.starts_with("GET /v1/kv/k HTTP/1.1\r\n"));
    }

    #[test]
    fn connection_failures_and_timeouts() {
        // Nothing listens on a port just freed.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let req = Outgoing { method: "GET".into(), path: "/v1/health".into(), ..Outgoing::default() };
        let err = send(&format!("http://127.0.0.1:{port}"), &req, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(&err, ClientError::Failed(m) if m.contains("cannot connect")), "{err:?}");
        // A server that accepts but never answers: the deadline ends the request.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", silent.local_addr().unwrap());
        let t = Instant::now();
        let err = send(&base, &req, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ClientError::Failed(_)), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
        drop(silent);
        // The server closes after a partial body.
        let (base, _rx) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec());
        assert!(matches!(send(&base, &req, DEFAULT_TIMEOUT), Err(ClientError::Failed(_))));
    }
}
