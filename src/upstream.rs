//! The HTTP/1.1 client addond calls addon containers with: actions, widget renders, config
//! pushes, event deliveries and the gateway's passthrough. A call runs entirely inside the
//! caller's task — no connection task and no channel between the two — and idle keep-alive
//! connections wait in a pool: one of its own for each gateway worker, so a call made there
//! never wakes or waits for another thread (each wake-up across threads cost more than the
//! request itself; BENCHMARKS.md, section 4), and one shared by the other threads. It speaks what the container contract needs:
//! HTTP/1.1 (or 1.0) answers framed by a length, by chunks or by closing, with interim 1xx
//! answers skipped. WebSocket upgrades do not come here; the gateway splices those itself.
//! Framing is read as strictly as hyper reads it (RFC 9112): a Content-Length is digits
//! only and every copy of it agrees, chunk sizes are parsed by `httparse`, and every line
//! of the chunked framing ends in CRLF. An answer framed any other way is refused rather
//! than guessed at, because a client and a proxy that read one answer differently are how
//! responses get smuggled. `ADDOND_UPSTREAM_CLIENT=hyper` swaps in the same interface on
//! hyper's connection-level client instead (`hyper_client`: an experiment, issue 19).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod hyper_client;

/// Which client carries the calls: chosen once, from `ADDOND_UPSTREAM_CLIENT` (`hyper`, else
/// the hand-written one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// This module's own client.
    Own,
    /// hyper's `client::conn::http1` (`hyper_client`).
    Hyper,
}

static CLIENT: std::sync::LazyLock<Client> = std::sync::LazyLock::new(|| match std::env::var("ADDOND_UPSTREAM_CLIENT").as_deref() {
    Ok("hyper") => Client::Hyper,
    _ => Client::Own,
});

#[cfg(test)]
thread_local! {
    /// Tests run the same calls through either client on one thread.
    static TEST_CLIENT: std::cell::Cell<Option<Client>> = const { std::cell::Cell::new(None) };
}

/// The client in use (the daemon reads it at start, which fixes it).
pub fn client() -> Client {
    #[cfg(test)]
    if let Some(c) = TEST_CLIENT.with(std::cell::Cell::get) {
        return c;
    }
    *CLIENT
}

/// An idle connection older than this is closed rather than reused: addons close theirs
/// after a while (the sample after 60 s, Node's default after 5 s), and a connection the
/// server closed is noticed before reuse anyway (see [`Conn::is_reusable`]).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle connections kept per instance address and thread.
const MAX_IDLE_PER_ADDR: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An answer's status line and headers together may not be larger than this.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with extensions) or trailer line longer than this is malformed.
const MAX_LINE_BYTES: usize = 4096;
/// Bodies up to this size are written together with the request head, in one syscall.
const INLINE_BODY_BYTES: usize = 16 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Headers that belong to one connection, not to the message (never forwarded).
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: the request never left addond.
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    /// The connection failed or the answer was malformed once the request may have been sent.
    #[error("{0}")]
    Broken(String),
    /// The caller's request body was larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// The caller's request body could not be read.
    #[error("reading the request body: {0}")]
    ClientBody(String),
    /// The caller's request body did not arrive in time (`http.body_read_timeout_seconds`).
    #[error("{0}")]
    ClientBodyTimeout(String),
    /// The answer's body was larger than the limit.
    #[error("the addon's answer is larger than {0} bytes")]
    ReplyTooLarge(usize),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }
}

fn broken(what: &str, e: io::Error) -> UpstreamError {
    UpstreamError::Broken(format!("{what}: {e}"))
}

/// One connection to an instance, with what was read from it and not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    addr: SocketAddr,
}

/// What an idle pool keeps: a connection that can tell whether it may carry another request.
pub(crate) trait Pooled {
    /// The instance it goes to (the pool's key).
    fn addr(&self) -> SocketAddr;
    /// Whether it can carry another request (not closed, nothing unasked for on it).
    fn reusable(&self) -> bool;
}

struct Idle<C> {
    /// The connection.
    conn: C,
    /// When it went idle.
    since: Instant,
}

/// Idle connections by instance address, the most recently used last; shared by both
/// clients (the hand-written one's sockets, hyper's senders).
pub(crate) struct Pool<C> {
    idle: HashMap<SocketAddr, Vec<Idle<C>>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool { idle: HashMap::new() }
    }
}

impl<C: Pooled> Pool<C> {
    pub(crate) fn take(&mut self, addr: SocketAddr) -> Option<C> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < IDLE_TIMEOUT && idle.conn.reusable() {
                return Some(idle.conn);
            }
        }
        None
    }

    pub(crate) fn put(&mut self, conn: C) {
        let list = self.idle.entry(conn.addr()).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(Idle { conn, since: Instant::now() });
        }
    }

    /// Closes idle connections that are too old or were closed by the addon.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.idle.retain(|_, list| {
            list.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT && i.conn.reusable());
            !list.is_empty()
        });
    }

    /// Connections kept.
    pub(crate) fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

impl Pooled for Conn {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn reusable(&self) -> bool {
        self.is_reusable()
    }
}

/// A TCP connection to `addr` within [`CONNECT_TIMEOUT`], Nagle off.
pub(crate) async fn dial(addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) => return Err(UpstreamError::Connect { addr, source: io::Error::new(io::ErrorKind::TimedOut, "no connection within 2 s") }),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Refuses a path that cannot go on a request line as it is.
pub(crate) fn check_path(path: &str) -> Result<(), UpstreamError> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UpstreamError::Broken(format!("`{path}` cannot be sent as a request path")));
    }
    Ok(())
}

impl Conn {
    /// Whether an idle connection can carry another request: nothing arrived on it while it
    /// sat in the pool (a close, a reset, or bytes nobody asked for all make it readable).
    /// Asks tokio's readiness first, which costs no syscall in the usual case.
    fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        }
    }

    /// Reads more into the buffer; 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

thread_local! {
    /// The pool of a thread that owns one (a gateway worker: its tasks never leave it).
    static OWN: RefCell<Option<Pool<Conn>>> = const { RefCell::new(None) };
}

/// The pool of every other thread: tasks of the multi-threaded runtime move between its
/// threads, so a connection taken on one is often put back on another.
static SHARED: std::sync::LazyLock<std::sync::Mutex<Pool<Conn>>> = std::sync::LazyLock::new(Default::default);

fn with_pool<R>(f: impl FnOnce(&mut Pool<Conn>) -> R) -> R {
    OWN.with(|own| match own.borrow_mut().as_mut() {
        Some(pool) => f(pool),
        None => f(&mut SHARED.lock().unwrap_or_else(|e| e.into_inner())),
    })
}

/// Gives the calling thread a pool of its own. For threads that run a single-threaded
/// runtime, whose tasks — and so the connections they hold — never move to another thread.
pub fn own_thread_pool() {
    OWN.with(|own| *own.borrow_mut() = Some(Pool::default()));
    hyper_client::own_thread_pool();
}

/// Closes the idle connections of the calling thread's own pool and gives it up (a worker
/// calls it before its runtime goes away, so no socket outlives the driver it is
/// registered with).
pub fn clear_thread_pool() {
    let _ = OWN.try_with(|own| own.borrow_mut().take());
    hyper_client::clear_thread_pool();
}

/// Closes idle connections that are too old or were closed by the addon, in the calling
/// thread's pool (its own, or the shared one). The gateway workers call it every second and
/// the dispatcher every 5 s for the shared pool, so no pool keeps the sockets of
/// connections the addons have closed, traffic or not.
pub fn sweep() {
    with_pool(|p| p.sweep(Instant::now()));
    hyper_client::sweep();
}

/// Idle connections in the calling thread's pool (for tests).
pub fn idle_connections() -> usize {
    with_pool(|p| p.len()) + hyper_client::idle_connections()
}

async fn checkout(addr: SocketAddr) -> Result<Conn, UpstreamError> {
    if let Some(c) = with_pool(|p| p.take(addr)) {
        return Ok(c);
    }
    let stream = dial(addr).await?;
    Ok(Conn { stream, buf: BytesMut::with_capacity(READ_CHUNK), addr })
}

/// The body of a request to an addon.
pub enum OutBody {
    Empty,
    Full(Bytes),
    /// Streamed from the caller: `length` when the caller declared one, else sent chunked.
    Stream {
        body: axum::body::Body,
        length: Option<u64>,
        limit: u64,
    },
}

/// An addon's answer: status, headers (hop-by-hop ones removed) and the body, still to read.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyReader,
}

/// A connection to an instance, ready for one request. Made before the request is sent,
/// so a caller whose connection was refused still has its request (body included) to send
/// to another instance.
pub struct Connection(Via);

/// The connection of the client in use.
enum Via {
    Own(Conn),
    Hyper(hyper_client::Conn),
}

/// A pooled or new connection to `addr`. An error here means the request never left addond.
pub async fn connect(addr: SocketAddr) -> Result<Connection, UpstreamError> {
    Ok(Connection(match client() {
        Client::Own => Via::Own(checkout(addr).await?),
        Client::Hyper => Via::Hyper(hyper_client::checkout(addr).await?),
    }))
}

/// Sends one request to `addr` and reads the answer's head (see [`Connection::send`]),
/// without the answer's headers: for callers that only want the status and the body.
pub async fn request(addr: SocketAddr, method: &Method, path: &str, headers: &HeaderMap, body: OutBody) -> Result<Response, UpstreamError> {
    connect(addr).await?.send_inner(method, path, headers, body, false).await
}

impl Connection {
    /// Sends one request and reads the answer's head. `path` is the path and query as it
    /// goes on the request line; `headers` are sent as they are (the caller removed what
    /// must not be forwarded), after `host` and before the framing header.
    pub async fn send(self, method: &Method, path: &str, headers: &HeaderMap, body: OutBody) -> Result<Response, UpstreamError> {
        self.send_inner(method, path, headers, body, true).await
    }

    async fn send_inner(
        self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: OutBody,
        want_headers: bool,
    ) -> Result<Response, UpstreamError> {
        match self.0 {
            Via::Own(conn) => send_own(conn, method, path, headers, body, want_headers).await,
            Via::Hyper(conn) => conn.send(method, path, headers, body, want_headers).await,
        }
    }
}

/// [`Connection::send`] on the hand-written client.
async fn send_own(
    mut conn: Conn,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: OutBody,
    want_headers: bool,
) -> Result<Response, UpstreamError> {
    use std::io::Write as _;
    check_path(path)?;
    let mut head = Vec::with_capacity(256 + headers.len() * 48);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    // Writes into a Vec cannot fail.
    let _ = write!(head, " HTTP/1.1\r\nhost: {}\r\n", conn.addr);
    for (k, v) in headers {
        if k == header::HOST || k == header::CONTENT_LENGTH || k == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let write = |e| broken("sending the request to the addon", e);
    match body {
        OutBody::Empty => {
            if method_allows_body(method) {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
            head.extend_from_slice(b"\r\n");
            conn.stream.write_all(&head).await.map_err(write)?;
        }
        OutBody::Full(b) => {
            let _ = write!(head, "content-length: {}\r\n\r\n", b.len());
            if b.len() <= INLINE_BODY_BYTES {
                head.extend_from_slice(&b);
                conn.stream.write_all(&head).await.map_err(write)?;
            } else {
                conn.stream.write_all(&head).await.map_err(write)?;
                conn.stream.write_all(&b).await.map_err(write)?;
            }
        }
        OutBody::Stream { body, length, limit } => {
            match length {
                Some(n) => head.extend_from_slice(format!("content-length: {n}\r\n\r\n").as_bytes()),
                None => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
            }
            if let Err(e) = stream_body(&mut conn, head, body, length, limit).await {
                // The addon may have answered early (and closed): its answer is worth
                // more than our write error.
                if matches!(e, UpstreamError::Broken(_)) {
                    if let Ok(resp) = read_head(conn, method, want_headers).await {
                        return Ok(resp);
                    }
                }
                return Err(e);
            }
        }
    }
    read_head(conn, method, want_headers).await
}

/// Writes the request head and then the caller's body to the addon, chunked when no length
/// was declared. When the body's first frame is ready at once (a small body, already read
/// with the head), it goes out in the same write as the head: one segment, so the addon
/// reads the whole request in one go instead of waking again for its body. Otherwise the
/// head goes out alone before the body is waited for.
async fn stream_body(
    conn: &mut Conn,
    mut head: Vec<u8>,
    mut body: axum::body::Body,
    length: Option<u64>,
    limit: u64,
) -> Result<(), UpstreamError> {
    use futures_util::FutureExt as _;
    let mut sent: u64 = 0;
    let write = |e| broken("sending the request body to the addon", e);
    loop {
        let next = if head.is_empty() {
            body.frame().await
        } else {
            match body.frame().now_or_never() {
                Some(f) => f,
                None => {
                    conn.stream.write_all(&head).await.map_err(write)?;
                    head.clear();
                    body.frame().await
                }
            }
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|e| match crate::body_error::body_failure(&e) {
            crate::body_error::BodyFailure::Timeout => UpstreamError::ClientBodyTimeout(crate::body_error::error_chain(&e)),
            _ => UpstreamError::ClientBody(crate::body_error::error_chain(&e)),
        })?;
        let Ok(data) = frame.into_data() else { continue }; // trailers are not forwarded
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if sent > limit {
            return Err(UpstreamError::BodyTooLarge(limit));
        }
        if length.is_some_and(|n| sent > n) {
            return Err(UpstreamError::ClientBody("more bytes than its content-length".into()));
        }
        match length {
            Some(_) if head.is_empty() => conn.stream.write_all(&data).await.map_err(write)?,
            Some(_) => {
                head.extend_from_slice(&data);
                conn.stream.write_all(&head).await.map_err(write)?;
                head.clear();
            }
            None => {
                head.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                head.extend_from_slice(&data);
                head.extend_from_slice(b"\r\n");
                conn.stream.write_all(&head).await.map_err(write)?;
                head.clear();
            }
        }
    }
    match length {
        Some(n) if sent != n => Err(UpstreamError::ClientBody(format!("{sent} bytes instead of the declared {n}"))),
        Some(_) if head.is_empty() => Ok(()),
        Some(_) => conn.stream.write_all(&head).await.map_err(write),
        None => {
            head.extend_from_slice(b"0\r\n\r\n");
            conn.stream.write_all(&head).await.map_err(write)
        }
    }
}

fn method_allows_body(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE)
}

/// Reads the answer's head (skipping interim 1xx answers) and decides how its body is framed.
async fn read_head(mut conn: Conn, method: &Method, want_headers: bool) -> Result<Response, UpstreamError> {
    loop {
        if !conn.buf.is_empty() {
            if let Some((consumed, parsed)) = parse_head(&conn.buf, method, want_headers)? {
                conn.buf.advance(consumed);
                let Some((status, headers, framing, keep_alive)) = parsed else { continue }; // 1xx
                return Ok(Response {
                    status,
                    headers,
                    body: BodyReader(Reader::Own(OwnReader { conn: Some(conn), framing, keep_alive })),
                });
            }
            if conn.buf.len() > MAX_HEAD_BYTES {
                return Err(UpstreamError::Broken(format!("the addon's answer has a head larger than {MAX_HEAD_BYTES} bytes")));
            }
        }
        let n = conn.fill().await.map_err(|e| broken("reading the addon's answer", e))?;
        if n == 0 {
            return Err(UpstreamError::Broken(if conn.buf.is_empty() {
                "the addon closed the connection without answering".into()
            } else {
                "the addon closed the connection in the middle of its answer".into()
            }));
        }
    }
}

type Head = (StatusCode, HeaderMap, Framing, bool);

/// Parses a complete head at the start of `buf`: `None` when more bytes are needed, else
/// the bytes it took and the head (`None` for an interim 1xx answer, which is skipped).
fn parse_head(buf: &[u8], method: &Method, want_headers: bool) -> Result<Option<(usize, Option<Head>)>, UpstreamError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let consumed = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(UpstreamError::Broken(format!("the addon's answer is not valid HTTP/1.1: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        return Ok(Some((consumed, None)));
    }
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamError::Broken(format!("the addon answered with status {code}")))?;
    let http11 = resp.version == Some(1);
    let mut connection_close = !http11;
    let mut codings: Vec<&str> = Vec::new();
    let mut has_te = false;
    let mut length: Option<u64> = None;
    let mut has_cl = false;
    let mut named: Vec<&str> = Vec::new();
    let malformed = |what: &str| UpstreamError::Broken(format!("the addon's answer has {what}"));
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            let v = std::str::from_utf8(h.value).unwrap_or("");
            for token in v.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    connection_close = false;
                }
                named.push(token);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            let v = std::str::from_utf8(h.value).map_err(|_| malformed("a transfer-encoding that is not text"))?;
            codings.extend(v.split(',').map(str::trim).filter(|c| !c.is_empty()));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_cl = true;
            let v = std::str::from_utf8(h.value).map_err(|_| malformed("an invalid content-length"))?;
            // Like hyper: each comma-separated copy is digits only (no sign, no spaces
            // inside), and every copy says the same.
            for piece in v.split(',') {
                let n = content_length_digits(piece.trim_matches([' ', '\t'])).ok_or_else(|| malformed("an invalid content-length"))?;
                match length {
                    None => length = Some(n),
                    Some(m) if m == n => {}
                    Some(_) => return Err(malformed("content-lengths that disagree")),
                }
            }
        }
    }
    if has_te && !http11 {
        return Err(malformed("a transfer-encoding in an HTTP/1.0 answer"));
    }
    let chunked_count = codings.iter().filter(|c| c.eq_ignore_ascii_case("chunked")).count();
    if chunked_count > 1 {
        return Err(malformed("chunked applied more than once"));
    }
    let chunked = codings.last().is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
    if has_te && chunked_count == 1 && !chunked {
        return Err(malformed("a transfer-encoding that does not end in chunked"));
    }
    // Both framings at once: the transfer-encoding wins (RFC 9112 §6.3), and the
    // connection is not used again, as a message that might be smuggling.
    if has_te && has_cl {
        connection_close = true;
    }
    let other_coding = has_te && !chunked;
    let no_body = *method == Method::HEAD || code == 204 || code == 304 || code == 101;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunk::Size)
    } else if other_coding {
        // A coding other than chunked and no chunked at all: the body ends when the
        // connection does.
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let keep_alive = !connection_close && !matches!(framing, Framing::UntilClose) && code != 101;
    let mut headers = HeaderMap::new();
    for h in resp.headers.iter().filter(|_| want_headers) {
        let lower = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || named.iter().any(|n| n.eq_ignore_ascii_case(&lower)) {
            continue;
        }
        if lower == "content-length" && !matches!(framing, Framing::Length(_)) {
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(lower.as_bytes()), HeaderValue::from_bytes(h.value)) else {
            return Err(UpstreamError::Broken(format!("the addon's answer has an invalid header `{}`", h.name)));
        };
        headers.append(name, value);
    }
    Ok(Some((consumed, Some((status, headers, framing, keep_alive)))))
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the addon closes the connection.
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one (this many so far).
    Trailer(u32),
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

/// A Content-Length value: ASCII digits only (`+5`, `-1`, `0x5`, `5 5` and empty are not
/// lengths), as hyper reads it.
fn content_length_digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.bytes().try_fold(0u64, |n, b| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// One line (without its CRLF) from the front of `buf`, if complete. A line must end in
/// CRLF: a bare LF is malformed framing.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, String> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(i) if i > MAX_LINE_BYTES => Err("a chunk-size or trailer line is too long".into()),
        Some(i) if i == 0 || buf[i - 1] != b'\r' => Err("a line of the chunked framing ends in a bare LF instead of CRLF".into()),
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i - 1);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err("a chunk-size or trailer line is too long".into()),
        None => Ok(None),
    }
}

/// The size of the chunk whose size line starts `buf` and the bytes the line takes (CRLF
/// included), parsed by `httparse` as hyper does: hex digits only (no sign, no leading
/// space, at most 15), optional whitespace and extensions, CRLF. `None` until the line is
/// complete.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
    // httparse reads an empty line as size 0 (the end of the body); hyper wants a digit.
    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        let end = buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1).min(40);
        return Err(format!("`{}` is not a chunk-size line", String::from_utf8_lossy(&buf[..end]).escape_debug()));
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((n, _))) if n > MAX_LINE_BYTES => Err("a chunk-size line is too long".into()),
        // httparse lets anything through inside an extension; a bare LF there is a line
        // end to some readers, so it is refused (as hyper does).
        Ok(httparse::Status::Complete((n, _))) if buf[..n - 2].contains(&b'\n') => Err("a chunk extension contains a bare LF".into()),
        Ok(httparse::Status::Complete((n, size))) => Ok(Some((n, size))),
        Ok(httparse::Status::Partial) if buf.len() > MAX_LINE_BYTES => Err("a chunk-size line is too long".into()),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => {
            let end = buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1).min(40);
            Err(format!("`{}` is not a chunk-size line", String::from_utf8_lossy(&buf[..end]).escape_debug()))
        }
    }
}

/// Trailer fields (after the last chunk) a chunked answer may carry at most.
const MAX_TRAILERS: u32 = 100;

impl Framing {
    /// Takes the next piece of body out of `buf`.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        match self {
            Framing::Length(0) => Ok(Step::Done),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Framing::UntilClose => Ok(if buf.is_empty() { Step::NeedMore } else { Step::Data(buf.split().freeze()) }),
            Framing::Chunked(state) => loop {
                match *state {
                    Chunk::Size => {
                        let Some((n, size)) = chunk_size(buf)? else { return Ok(Step::NeedMore) };
                        buf.advance(n);
                        *state = if size == 0 { Chunk::Trailer(0) } else { Chunk::Data(size) };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Step::NeedMore);
                        }
                        let n = left.min(buf.len() as u64) as usize;
                        *state = if n as u64 == left { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
                        return Ok(Step::Data(buf.split_to(n).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Step::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err("a chunk is not followed by CRLF (longer than its size?)".into());
                        }
                        buf.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Trailer(seen) => {
                        let Some(line) = take_line(buf)? else { return Ok(Step::NeedMore) };
                        if line.is_empty() {
                            *state = Chunk::Done;
                            continue;
                        }
                        // A trailer is a header field: a token, a colon, a value; a line
                        // starting with whitespace is an obsolete fold, refused like
                        // everywhere else.
                        let name_ok = line.iter().position(|b| *b == b':').is_some_and(|i| {
                            i > 0 && line[..i].iter().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
                        });
                        if !name_ok {
                            return Err("a trailer line is not a header field".into());
                        }
                        if seen + 1 > MAX_TRAILERS {
                            return Err("too many trailer fields".into());
                        }
                        *state = Chunk::Trailer(seen + 1);
                    }
                    Chunk::Done => return Ok(Step::Done),
                }
            },
        }
    }
}

/// The body of an answer, read from its connection; the connection goes back to the pool
/// once the body has been read to its end (and not if the reader is dropped before).
pub struct BodyReader(Reader);

/// The body reader of the client in use.
enum Reader {
    Own(OwnReader),
    Hyper(hyper_client::Reader),
}

/// The hand-written client's body reader.
struct OwnReader {
    /// The connection, until the body ended.
    conn: Option<Conn>,
    /// How the body ends, and how far it is.
    framing: Framing,
    /// Whether the connection may carry another request.
    keep_alive: bool,
}

impl BodyReader {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match &mut self.0 {
            Reader::Own(r) => r.next().await,
            Reader::Hyper(r) => r.next().await,
        }
    }

    /// The whole body, at most `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, UpstreamError> {
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut total = 0usize;
        while let Some(b) = self.next().await? {
            total += b.len();
            if total > limit {
                return Err(UpstreamError::ReplyTooLarge(limit));
            }
            match &first {
                None => first = Some(b),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&b);
                }
            }
        }
        Ok(if rest.is_empty() { first.unwrap_or_default() } else { rest.freeze() })
    }

    /// The body as a streamed HTTP body for the gateway's answer.
    pub fn into_body(self) -> axum::body::Body {
        match self.0 {
            Reader::Own(r) => r.into_body(),
            Reader::Hyper(r) => r.into_body(),
        }
    }
}

impl OwnReader {
    async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Ok(None) };
            match self.framing.decode(&mut conn.buf).map_err(|e| UpstreamError::Broken(format!("the addon's answer is malformed: {e}")))? {
                Step::Data(b) => return Ok(Some(b)),
                Step::Done => {
                    self.finish();
                    return Ok(None);
                }
                Step::NeedMore => {
                    let n = conn.fill().await.map_err(|e| broken("reading the addon's answer", e))?;
                    if n == 0 {
                        self.conn = None;
                        if self.framing == Framing::UntilClose {
                            return Ok(None);
                        }
                        return Err(UpstreamError::Broken("the addon closed the connection in the middle of its answer".into()));
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Bytes after the end of the answer were never asked for: such a connection is
            // out of step and is closed.
            if self.keep_alive && conn.buf.is_empty() {
                with_pool(|p| p.put(conn));
            }
        }
    }

    fn into_body(mut self) -> axum::body::Body {
        // A body that is in the buffer already (the usual small answer) needs no stream.
        if let (Some(conn), Framing::Length(n)) = (self.conn.as_mut(), self.framing) {
            if let Some(n) = usize::try_from(n).ok().filter(|n| *n <= conn.buf.len()) {
                let data = conn.buf.split_to(n).freeze();
                self.framing = Framing::Length(0);
                self.finish();
                return axum::body::Body::from(data);
            }
        }
        let stream = futures_util::stream::unfold((self, false), |(mut reader, failed)| async move {
            if failed {
                return None;
            }
            match reader.next().await {
                Ok(Some(b)) => Some((Ok(b), (reader, false))),
                Ok(None) => None,
                Err(e) => Some((Err(e), (reader, true))),
            }
        });
        axum::body::Body::from_stream(stream)
    }
}

#[cfg(test)]
mod tests;
