//! The experiment of issue 19: the same upstream interface on hyper's
//! `client::conn::http1`, chosen at start with `ADDOND_UPSTREAM_CLIENT=hyper`, so the
//! hand-written client can be measured against it like for like (BENCHMARKS.md, section
//! 11). Each connection is driven by a task of its own spawned on the calling runtime (on a
//! gateway worker, that worker's thread) and requests are handed to it through hyper's
//! `SendRequest`; idle senders wait in a pool of the same shape as the hand-written
//! client's (one per gateway worker, one shared), are checked with `ready()` before reuse,
//! and go back only once the answer's body was read to its end. Timeouts, limits,
//! hop-by-hop headers and error kinds are the hand-written client's.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Request, Uri, Version};
use hyper_util::rt::TokioIo;

use super::{check_path, dial, method_allows_body, OutBody, Pool, Pooled, Response, UpstreamError, HOP_BY_HOP, MAX_HEAD_BYTES};

type Sender = SendRequest<OutgoingBody>;

thread_local! {
    /// The pool of a thread that owns one (a gateway worker).
    static OWN: RefCell<Option<Pool<Conn>>> = const { RefCell::new(None) };
}

/// The pool of every other thread.
static SHARED: std::sync::LazyLock<std::sync::Mutex<Pool<Conn>>> = std::sync::LazyLock::new(Default::default);

fn with_pool<R>(f: impl FnOnce(&mut Pool<Conn>) -> R) -> R {
    OWN.with(|own| match own.borrow_mut().as_mut() {
        Some(pool) => f(pool),
        None => f(&mut SHARED.lock().unwrap_or_else(|e| e.into_inner())),
    })
}

pub(super) fn own_thread_pool() {
    OWN.with(|own| *own.borrow_mut() = Some(Pool::default()));
}

pub(super) fn clear_thread_pool() {
    let _ = OWN.try_with(|own| own.borrow_mut().take());
}

pub(super) fn sweep() {
    with_pool(|p| p.sweep(Instant::now()));
}

pub(super) fn idle_connections() -> usize {
    with_pool(|p| p.len())
}

/// A connection ready for one request.
pub(super) struct Conn {
    /// Hands the request to the connection's task.
    sender: Sender,
    /// The instance it goes to (the `host` header and the pool's key).
    addr: SocketAddr,
}

impl Pooled for Conn {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn reusable(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// A pooled connection that is still open and ready, else a new one.
pub(super) async fn checkout(addr: SocketAddr) -> Result<Conn, UpstreamError> {
    while let Some(mut conn) = with_pool(|p| p.take(addr)) {
        if conn.sender.ready().await.is_ok() {
            return Ok(conn);
        }
    }
    let stream = dial(addr).await?;
    let (sender, conn) = Builder::new()
        .max_header_size(MAX_HEAD_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect { addr, source: io::Error::other(e) })?;
    // Ends on its own when the sender is dropped or the addon closes the connection.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "upstream connection ended");
        }
    });
    Ok(Conn { sender, addr })
}

impl Conn {
    pub(super) async fn send(
        mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: OutBody,
        want_headers: bool,
    ) -> Result<Response, UpstreamError> {
        check_path(path)?;
        let uri: Uri = path.parse().map_err(|_| UpstreamError::Broken(format!("`{path}` cannot be sent as a request path")))?;
        let mut out = HeaderMap::with_capacity(headers.len() + 2);
        let host = HeaderValue::from_str(&self.addr.to_string()).map_err(|e| UpstreamError::Broken(e.to_string()))?;
        out.insert(header::HOST, host);
        for (k, v) in headers {
            if k == header::HOST || k == header::CONTENT_LENGTH || k == header::TRANSFER_ENCODING {
                continue;
            }
            out.append(k.clone(), v.clone());
        }
        let body = match body {
            OutBody::Empty => {
                if method_allows_body(method) {
                    out.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                }
                OutgoingBody::Empty
            }
            OutBody::Full(b) => {
                out.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
                OutgoingBody::Full(Some(b))
            }
            OutBody::Stream { body, length, limit } => {
                match length {
                    Some(n) => out.insert(header::CONTENT_LENGTH, HeaderValue::from(n)),
                    None => out.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked")),
                };
                OutgoingBody::Stream { body, sent: 0, length, limit }
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = out;
        let resp = self.sender.send_request(req).await.map_err(send_error)?;
        let (parts, incoming) = resp.into_parts();
        let mut connection_close = parts.version != Version::HTTP_11;
        let mut named: Vec<String> = Vec::new();
        for v in parts.headers.get_all(header::CONNECTION) {
            for token in v.to_str().unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && parts.version != Version::HTTP_11 {
                    connection_close = false;
                }
                named.push(token.to_ascii_lowercase());
            }
        }
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        let length_framed = !chunked && (incoming.size_hint().exact().is_some() || incoming.is_end_stream());
        // Both framings, or one that ends with the connection: not used again (as the
        // hand-written client decides).
        if chunked && parts.headers.contains_key(header::CONTENT_LENGTH) || !(chunked || length_framed) {
            connection_close = true;
        }
        let mut headers = HeaderMap::new();
        if want_headers {
            for (k, v) in &parts.headers {
                let name = k.as_str();
                if HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name) || (k == header::CONTENT_LENGTH && !length_framed) {
                    continue;
                }
                headers.append(k.clone(), v.clone());
            }
        }
        let mut reader = Reader { body: incoming, sender: Some(self.sender), addr: self.addr, keep_alive: !connection_close };
        if reader.body.is_end_stream() {
            reader.finish();
        }
        Ok(Response { status: parts.status, headers, body: super::BodyReader(super::Reader::Hyper(reader)) })
    }
}

/// What a failed `send_request` means, in the hand-written client's terms.
fn send_error(e: hyper::Error) -> UpstreamError {
    if let Some(ours) = own_cause(&e) {
        return ours;
    }
    if e.is_parse() || e.is_parse_status() {
        UpstreamError::Broken(format!("the addon's answer is not valid HTTP/1.1: {e}"))
    } else if e.is_incomplete_message() {
        UpstreamError::Broken("the addon closed the connection without answering".into())
    } else if e.is_canceled() || e.is_closed() {
        UpstreamError::Broken(format!("sending the request to the addon: {e}"))
    } else {
        UpstreamError::Broken(format!("the addon's connection failed: {}", chain(&e)))
    }
}

/// The request body's own error (over the limit, the caller's body failed), which hyper
/// carries as the cause of its error.
fn own_cause(e: &hyper::Error) -> Option<UpstreamError> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(ours) = c.downcast_ref::<UpstreamError>() {
            return Some(match ours {
                UpstreamError::BodyTooLarge(n) => UpstreamError::BodyTooLarge(*n),
                UpstreamError::ClientBody(s) => UpstreamError::ClientBody(s.clone()),
                UpstreamError::ClientBodyTimeout(s) => UpstreamError::ClientBodyTimeout(s.clone()),
                other => UpstreamError::Broken(other.to_string()),
            });
        }
        cause = c.source();
    }
    None
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn body_error(e: hyper::Error) -> UpstreamError {
    let mut cause = std::error::Error::source(&e);
    let mut eof = false;
    while let Some(c) = cause {
        eof |= c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof);
        cause = c.source();
    }
    if eof || e.is_incomplete_message() {
        UpstreamError::Broken("the addon closed the connection in the middle of its answer".into())
    } else {
        UpstreamError::Broken(format!("the addon's answer is malformed: {}", chain(&e)))
    }
}

/// The body of an answer; its connection goes back to the pool once the body was read to
/// its end (and not if the reader is dropped before).
pub(super) struct Reader {
    /// The answer's body, read by the connection's task.
    body: Incoming,
    /// The connection, until the body ended.
    sender: Option<Sender>,
    /// The instance (the pool's key).
    addr: SocketAddr,
    /// Whether the connection may carry another request.
    keep_alive: bool,
}

impl Reader {
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match self.body.frame().await {
                None => {
                    self.finish();
                    return Ok(None);
                }
                Some(Err(e)) => {
                    self.sender = None;
                    return Err(body_error(e));
                }
                Some(Ok(frame)) => {
                    // Trailers are not forwarded.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(sender) = self.sender.take() {
            if self.keep_alive && !sender.is_closed() {
                with_pool(|p| p.put(Conn { sender, addr: self.addr }));
            }
        }
    }

    pub(super) fn into_body(self) -> axum::body::Body {
        axum::body::Body::new(Streamed(self))
    }
}

/// An answer's body streamed on to the gateway's client.
struct Streamed(Reader);

impl Body for Streamed {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let reader = &mut self.get_mut().0;
        loop {
            if reader.sender.is_none() && reader.body.is_end_stream() {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut reader.body).poll_frame(cx)) {
                None => {
                    reader.finish();
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    reader.sender = None;
                    return Poll::Ready(Some(Err(body_error(e))));
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    // The last piece of a body of known length: the connection is free
                    // now, before the gateway polls again.
                    if reader.body.is_end_stream() {
                        reader.finish();
                    }
                    if data.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.0.body.size_hint()
    }
}

/// A request's body as hyper sends it, with the hand-written client's checks on a
/// streamed one (the limit, the declared length).
pub(super) enum OutgoingBody {
    Empty,
    Full(Option<Bytes>),
    Stream {
        /// The caller's body.
        body: axum::body::Body,
        /// Bytes passed on so far.
        sent: u64,
        /// The length the caller declared.
        length: Option<u64>,
        /// The most it may send.
        limit: u64,
    },
}

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            OutgoingBody::Empty => Poll::Ready(None),
            OutgoingBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            OutgoingBody::Stream { body, sent, length, limit } => loop {
                let frame = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    None => {
                        return Poll::Ready(match length {
                            Some(n) if *sent != *n => {
                                Some(Err(UpstreamError::ClientBody(format!("{sent} bytes instead of the declared {n}"))))
                            }
                            _ => None,
                        });
                    }
                    Some(Err(e)) => {
                        return Poll::Ready(Some(Err(match crate::body_error::body_failure(&e) {
                            crate::body_error::BodyFailure::Timeout => UpstreamError::ClientBodyTimeout(crate::body_error::error_chain(&e)),
                            _ => UpstreamError::ClientBody(crate::body_error::error_chain(&e)),
                        })));
                    }
                    Some(Ok(frame)) => frame,
                };
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                *sent += data.len() as u64;
                if *sent > *limit {
                    return Poll::Ready(Some(Err(UpstreamError::BodyTooLarge(*limit))));
                }
                if length.is_some_and(|n| *sent > n) {
                    return Poll::Ready(Some(Err(UpstreamError::ClientBody("more bytes than its content-length".into()))));
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, OutgoingBody::Empty | OutgoingBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutgoingBody::Empty | OutgoingBody::Full(None) => SizeHint::with_exact(0),
            OutgoingBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            OutgoingBody::Stream { .. } => SizeHint::default(),
        }
    }
}
