//! The admin API client that `addonctl` and `addond-tui` share. It owns three things:
//! finding the daemon's Unix socket ([`discover_socket`]), speaking HTTP/1.1 to it over
//! that socket ([`Client`]: one connection per request, JSON envelope in and out, or a
//! byte stream for `logs?follow=true` and image pulls), and turning transport failures into errors an
//! operator can act on ([`ClientError`]: "not running", "permission denied"). It knows
//! the envelope (`{"success", "data", "message"}` / `{"success": false, "error": {…}}`)
//! but not the shape of `data`: callers read that as `serde_json::Value`, so a daemon
//! that adds fields never breaks the tools.
//!
//! The framing of the streams is here too, once for both tools: [`sse`] reads server-sent
//! events (`…/watch`, `/api/events/stream`), [`lines`] splits log and ndjson streams into
//! lines.

pub mod lines;
pub mod sse;

pub use lines::LineSplitter;
pub use sse::{SseEvent, SseParser};

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
pub use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Socket path used in production (the systemd unit's `RuntimeDirectory`).
pub const DEFAULT_SOCKET: &str = "/run/addond/addond.sock";
/// Socket path `addond --dev` uses, relative to the directory it was started in.
pub const DEV_SOCKET: &str = ".addond/addond.sock";
/// Environment variable that names the socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "ADDOND_SOCKET";

/// Finds the daemon's socket: `explicit` (the `--socket` flag) first, then `$ADDOND_SOCKET`
/// (when set and not empty), then `./.addond/addond.sock` if it exists (dev mode), else
/// `/run/addond/addond.sock`.
pub fn discover_socket(explicit: Option<PathBuf>) -> PathBuf {
    let env = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
    discover_socket_from(explicit, env, Path::new("."))
}

/// [`discover_socket`] with its inputs made explicit (for tests and for tools that want to
/// look somewhere else than the current directory).
pub fn discover_socket_from(explicit: Option<PathBuf>, env: Option<PathBuf>, cwd: &Path) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return p;
    }
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return p;
    }
    let dev = cwd.join(DEV_SOCKET);
    if dev.exists() {
        // Keep it relative when the caller asked about ".", so messages stay short.
        return if cwd == Path::new(".") { PathBuf::from(".").join(DEV_SOCKET) } else { dev };
    }
    PathBuf::from(DEFAULT_SOCKET)
}

/// What went wrong talking to the daemon. An error *envelope* the daemon sent is not a
/// `ClientError` for [`Client::request`] (it returns the [`Response`]; see
/// [`Response::error`]); only [`Client::stream`] and [`Client::stream_with`] report one,
/// as [`ClientError::Api`], since they have no envelope to hand back on success.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (ENOENT or ECONNREFUSED on connect).
    #[error(
        "addond is not running (no socket at {}); start it with `addond --dev` or `systemctl start addond`",
        socket.display()
    )]
    NotRunning { socket: PathBuf },
    /// The socket exists but we may not connect to it (EACCES/EPERM on connect).
    #[error("permission denied on {}: run as root or join the `addond` group", socket.display())]
    PermissionDenied { socket: PathBuf },
    /// Any other I/O failure on the socket (the message includes the cause, so it is
    /// not repeated as a `source`).
    #[error("I/O error on {}: {error}", socket.display())]
    Io { socket: PathBuf, error: io::Error },
    /// The daemon answered something that is not the admin API's HTTP/JSON.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The daemon answered with an error envelope where a stream was expected.
    #[error("{0}")]
    Api(ApiError),
}

/// The `error` object of a failure envelope, plus the HTTP status it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// snake_case code from docs/api.md (`not_found`, `wait_timeout`, …).
    pub code: String,
    pub message: String,
    /// Path of the offending field, when the daemon named one.
    pub field: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field: {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A reply from the daemon: its HTTP status and the parsed JSON envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    /// True when the status is 2xx and the envelope does not say `"success": false`.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status) && self.body.get("success").and_then(Value::as_bool) != Some(false)
    }

    /// The envelope's `data` (`Value::Null` when absent).
    pub fn data(&self) -> &Value {
        self.body.get("data").unwrap_or(&Value::Null)
    }

    /// The envelope's `message`, if any.
    pub fn message(&self) -> Option<&str> {
        self.body.get("message").and_then(Value::as_str)
    }

    /// The error of a failure reply: `None` on success. A failure without a well-formed
    /// `error` object still yields one (code `http_<status>`), so callers never treat a
    /// 4xx/5xx as success.
    pub fn error(&self) -> Option<ApiError> {
        if self.is_success() {
            return None;
        }
        let err = self.body.get("error");
        let text = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_string);
        let code = text("code").unwrap_or_else(|| format!("http_{}", self.status));
        let message = text("message")
            .or_else(|| err.and_then(Value::as_str).map(str::to_string))
            .or_else(|| self.message().map(str::to_string))
            .unwrap_or_else(|| format!("the daemon answered HTTP {}", self.status));
        Some(ApiError { status: self.status, code, message, field: text("field").filter(|f| !f.is_empty()) })
    }

    /// `Ok(data)` on success, `Err(ApiError)` otherwise.
    pub fn into_result(self) -> Result<Value, ApiError> {
        match self.error() {
            Some(e) => Err(e),
            None => Ok(self.body.get("data").cloned().unwrap_or(Value::Null)),
        }
    }
}

/// A reply whose body was not parsed: for `GET /metrics` (Prometheus text).
#[derive(Debug, Clone, PartialEq)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// The body of a streaming reply (`logs?follow=true`, an image pull's ndjson): chunks of
/// bytes as the daemon sends them (not split on lines). Ends when the daemon ends the stream; dropping it closes the
/// connection.
pub struct ByteStream {
    inner: BodyDataStream<Incoming>,
}

impl Stream for ByteStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(|e| ClientError::Protocol(format!("stream broken: {e}")))))
    }
}

impl ByteStream {
    /// The next chunk, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Reads the rest of the stream into one buffer (for a reply that turned out to be an
    /// envelope rather than a stream).
    pub async fn into_bytes(mut self) -> Result<Bytes, ClientError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(all))
    }
}

/// What [`Client::send`] got: hyper's reply, or a refusal recovered by the probe.
enum Sent {
    Reply(hyper::Response<Incoming>),
    Refused(RawResponse),
}

/// Parses a complete HTTP/1.x 403 reply (status line, headers, body) read off a raw
/// connection; anything else is `None`.
fn parse_refusal(buf: &[u8]) -> Option<RawResponse> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.split(' ');
    if !status_line.next()?.starts_with("HTTP/1.") || status_line.next()? != "403" {
        return None;
    }
    let mut content_type = None;
    let mut length = None;
    for line in lines {
        let (k, v) = line.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(v.trim().to_string()),
            "content-length" => length = v.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let body = &buf[head_end + 4..];
    let body = match length {
        Some(n) if body.len() >= n => &body[..n],
        Some(_) => return None,
        None => body,
    };
    Some(RawResponse { status: 403, content_type, body: Bytes::copy_from_slice(body) })
}

/// A handle on the daemon's admin socket. Cheap to clone (it is only the path); every
/// request opens its own connection, so clones may be used from several tasks at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    /// The socket this client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and parses the JSON envelope of the reply, whatever its status.
    /// `path_and_query` starts with `/` (`/api/plugin-microservice/services?status=failed`).
    pub async fn request(&self, method: Method, path_and_query: &str, body: Option<&Value>) -> Result<Response, ClientError> {
        let raw = self.request_raw(method, path_and_query, body).await?;
        let parsed: Value = serde_json::from_slice(&raw.body).map_err(|e| {
            ClientError::Protocol(format!(
                "the daemon answered HTTP {} with a body that is not JSON ({e}): {}",
                raw.status,
                snippet(&raw.body)
            ))
        })?;
        if !parsed.is_object() {
            return Err(ClientError::Protocol(format!(
                "the daemon answered HTTP {} with JSON that is not an envelope: {}",
                raw.status,
                snippet(&raw.body)
            )));
        }
        Ok(Response { status: raw.status, body: parsed })
    }

    pub async fn get(&self, path_and_query: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path_and_query, None).await
    }

    pub async fn post(&self, path_and_query: &str, body: Option<&Value>) -> Result<Response, ClientError> {
        self.request(Method::POST, path_and_query, body).await
    }

    pub async fn put(&self, path_and_query: &str, body: Option<&Value>) -> Result<Response, ClientError> {
        self.request(Method::PUT, path_and_query, body).await
    }

    pub async fn delete(&self, path_and_query: &str) -> Result<Response, ClientError> {
        self.request(Method::DELETE, path_and_query, None).await
    }

    /// Sends one request and returns the reply's body unparsed (for `GET /metrics`).
    pub async fn request_raw(&self, method: Method, path_and_query: &str, body: Option<&Value>) -> Result<RawResponse, ClientError> {
        let resp = match self.send(method, path_and_query, body).await? {
            Sent::Reply(resp) => resp,
            Sent::Refused(raw) => return Ok(raw),
        };
        let status = resp.status().as_u16();
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body =
            resp.into_body().collect().await.map_err(|e| ClientError::Protocol(format!("reading the reply failed: {e}")))?.to_bytes();
        Ok(RawResponse { status, content_type, body })
    }

    /// Sends a request without a body whose reply is a stream (`…/logs?follow=true`,
    /// `…/watch`). A 2xx reply yields its body as a [`ByteStream`]; an error envelope
    /// yields [`ClientError::Api`]. Same as [`Client::stream_with`] without a body, minus
    /// the content type.
    pub async fn stream(&self, method: Method, path_and_query: &str) -> Result<ByteStream, ClientError> {
        self.stream_with(method, path_and_query, None).await.map(|(_, stream)| stream)
    }

    /// Sends a request, with an optional JSON body, and hands back a 2xx reply as it
    /// arrives: its `Content-Type` (when it has one) and its body as a [`ByteStream`], so a
    /// caller can tell a one-off envelope from a stream (`POST …/images/pull` answers
    /// `application/json` when the image is present, `application/x-ndjson` progress lines
    /// while it pulls) and print each chunk as it comes. A non-2xx reply is read whole and
    /// its error envelope returned as [`ClientError::Api`] (a body that is not an envelope
    /// is a [`ClientError::Protocol`]).
    pub async fn stream_with(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(Option<String>, ByteStream), ClientError> {
        let sent = self.send(method, path_and_query, body).await?;
        Self::stream_reply(sent).await
    }

    /// [`Client::stream_with`] with a body of another kind than JSON: `body` sent as
    /// `content_type` (a build context as `application/x-tar`).
    pub async fn stream_bytes(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(Option<String>, ByteStream), ClientError> {
        let sent = self.send_payload(method, path_and_query, content_type, Some(body)).await?;
        Self::stream_reply(sent).await
    }

    async fn stream_reply(sent: Sent) -> Result<(Option<String>, ByteStream), ClientError> {
        let (status, bytes) = match sent {
            Sent::Reply(resp) if resp.status().is_success() => {
                let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                return Ok((content_type, ByteStream { inner: resp.into_body().into_data_stream() }));
            }
            Sent::Reply(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ClientError::Protocol(format!("reading the reply failed: {e}")))?
                    .to_bytes();
                (status, bytes)
            }
            Sent::Refused(raw) => (raw.status, raw.body),
        };
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::Protocol(format!("the daemon answered HTTP {status}: {}", snippet(&bytes))))?;
        let reply = Response { status, body };
        Err(match reply.error() {
            Some(e) => ClientError::Api(e),
            None => ClientError::Protocol(format!("the daemon answered HTTP {status}")),
        })
    }

    async fn connect(&self) -> Result<tokio::net::UnixStream, ClientError> {
        tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| self.connect_error(e))
    }

    fn connect_error(&self, e: io::Error) -> ClientError {
        let socket = self.socket.clone();
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning { socket },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket },
            _ => match e.raw_os_error() {
                // A directory in the path is missing (ENOTDIR), or the path is not a socket.
                Some(e) if e == nix::errno::Errno::ENOTDIR as i32 || e == nix::errno::Errno::ENOTSOCK as i32 => {
                    ClientError::NotRunning { socket }
                }
                _ => ClientError::Io { socket, error: e },
            },
        }
    }

    async fn send(&self, method: Method, path_and_query: &str, body: Option<&Value>) -> Result<Sent, ClientError> {
        let payload = match body {
            Some(v) => Some(Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Protocol(e.to_string()))?)),
            None => None,
        };
        self.send_payload(method, path_and_query, "application/json", payload).await
    }

    /// Sends a body that is not JSON (a WebAssembly module to publish) and parses the
    /// envelope of the reply, whatever its status.
    pub async fn request_bytes(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let resp = match self.send_payload(method, path_and_query, content_type, Some(body)).await? {
            Sent::Reply(resp) => resp,
            Sent::Refused(raw) => {
                let parsed: Value = serde_json::from_slice(&raw.body).map_err(|e| {
                    ClientError::Protocol(format!("the daemon answered HTTP {} with a body that is not JSON ({e})", raw.status))
                })?;
                return Ok(Response { status: raw.status, body: parsed });
            }
        };
        let status = resp.status().as_u16();
        let bytes =
            resp.into_body().collect().await.map_err(|e| ClientError::Protocol(format!("reading the reply failed: {e}")))?.to_bytes();
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("the daemon answered HTTP {status} with a body that is not JSON ({e}): {}", snippet(&bytes)))
        })?;
        Ok(Response { status, body: parsed })
    }

    async fn send_payload(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Option<Bytes>,
    ) -> Result<Sent, ClientError> {
        if !path_and_query.starts_with('/') {
            return Err(ClientError::Protocol(format!("request path must start with '/': {path_and_query}")));
        }
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await.map_err(|e| self.hyper_error(e))?;
        // The driver owns the socket; it ends when the reply (or the stream) is consumed or
        // dropped. Its errors surface through `send_request` or the body, so drop them here.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let has_body = body.is_some();
        let payload = body.unwrap_or_default();
        let mut builder =
            hyper::Request::builder().method(method).uri(path_and_query).header(HOST, "addond").header(CONTENT_TYPE, content_type);
        if has_body {
            builder = builder.header(CONTENT_LENGTH, payload.len());
        }
        let req = builder.body(Full::new(payload)).map_err(|e| ClientError::Protocol(format!("bad request {path_and_query}: {e}")))?;
        match sender.send_request(req).await {
            Ok(resp) => Ok(Sent::Reply(resp)),
            Err(e) => {
                let err = self.hyper_error(e);
                if matches!(err, ClientError::Io { .. }) {
                    if let Some(refusal) = self.probe_refusal().await {
                        return Ok(Sent::Refused(refusal));
                    }
                }
                Err(err)
            }
        }
    }

    /// The daemon refuses an unauthorised peer by writing a 403 as soon as it accepts the
    /// connection and hanging up, without reading the request. If it hangs up before our
    /// request is written, hyper fails the request and the 403 is lost. This looks again:
    /// a fresh connection on which we write nothing gets the same 403 at once, while an
    /// authorised peer gets silence (we give up after a short wait and drop the connection).
    async fn probe_refusal(&self) -> Option<RawResponse> {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::UnixStream::connect(&self.socket).await.ok()?;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            let mut chunk = [0u8; 4096];
            while buf.len() < 64 * 1024 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        parse_refusal(&buf)
    }

    fn hyper_error(&self, e: hyper::Error) -> ClientError {
        let mut io_kind = None;
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                io_kind = Some(io.kind());
                break;
            }
            source = s.source();
        }
        let hung_up = matches!(io_kind, Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof))
            || e.is_incomplete_message()
            || e.is_canceled()
            || e.is_closed();
        if hung_up {
            // The daemon refuses unauthorised peers by answering 403 and hanging up; when
            // it hangs up before our request is written, the 403 is lost. Say so.
            return ClientError::Io {
                socket: self.socket.clone(),
                error: io::Error::new(
                    io_kind.unwrap_or(io::ErrorKind::UnexpectedEof),
                    format!(
                        "the daemon closed the connection without answering ({e}); \
                         if you are not root or in the `addond` group, it refused you"
                    ),
                ),
            };
        }
        match io_kind {
            Some(kind) => ClientError::Io { socket: self.socket.clone(), error: io::Error::new(kind, e.to_string()) },
            None => ClientError::Protocol(e.to_string()),
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes one path segment (a service id or name given by the user).
pub fn encode_path_segment(s: &str) -> String {
    encode_query_value(s)
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().filter(|c| !c.is_control() || *c == ' ').take(200).collect();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use hyper::service::service_fn;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    #[test]
    fn discovery_prefers_explicit_then_env_then_dev_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        let explicit = Some(PathBuf::from("/tmp/x.sock"));
        let env = Some(PathBuf::from("/tmp/env.sock"));

        // Nothing in cwd: explicit > env > default.
        assert_eq!(discover_socket_from(explicit.clone(), env.clone(), cwd), PathBuf::from("/tmp/x.sock"));
        assert_eq!(discover_socket_from(None, env.clone(), cwd), PathBuf::from("/tmp/env.sock"));
        assert_eq!(discover_socket_from(None, None, cwd), PathBuf::from(DEFAULT_SOCKET));
        // Empty values count as unset.
        assert_eq!(discover_socket_from(Some(PathBuf::new()), Some(PathBuf::new()), cwd), PathBuf::from(DEFAULT_SOCKET));

        // A dev socket in cwd beats the default, but not explicit or env.
        std::fs::create_dir_all(cwd.join(".addond")).unwrap();
        std::fs::write(cwd.join(DEV_SOCKET), b"").unwrap();
        assert_eq!(discover_socket_from(None, None, cwd), cwd.join(DEV_SOCKET));
        assert_eq!(discover_socket_from(None, env.clone(), cwd), PathBuf::from("/tmp/env.sock"));
        assert_eq!(discover_socket_from(explicit, env, cwd), PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn error_extraction_from_envelopes() {
        let ok = Response { status: 200, body: serde_json::json!({"success": true, "data": {"a": 1}, "message": "ok"}) };
        assert!(ok.is_success());
        assert_eq!(ok.error(), None);
        assert_eq!(ok.data()["a"], 1);
        assert_eq!(ok.message(), Some("ok"));

        let bad = Response {
            status: 400,
            body: serde_json::json!({"success": false, "error": {"code": "validation_failed", "message": "name is bad", "field": "name"}}),
        };
        let e = bad.error().unwrap();
        assert_eq!(
            (e.status, e.code.as_str(), e.message.as_str(), e.field.as_deref()),
            (400, "validation_failed", "name is bad", Some("name"))
        );
        assert_eq!(e.to_string(), "name is bad (field: name)");

        // A 5xx without an error object is still an error.
        let odd = Response { status: 502, body: serde_json::json!({}) };
        let e = odd.error().unwrap();
        assert_eq!(e.code, "http_502");
        // success:false with 200 is an error too.
        let lie = Response { status: 200, body: serde_json::json!({"success": false, "error": {"code": "x", "message": "y"}}) };
        assert_eq!(lie.into_result().unwrap_err().code, "x");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode_query_value("svc_1-x.y~"), "svc_1-x.y~");
    }

    /// A small hyper server on a real Unix socket: echoes what it received, answers 403
    /// on `/forbidden`, text on `/metrics`, a chunked stream on `/logs`, garbage on `/garbage`.
    async fn serve(listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<Incoming>| async move {
                    let method = req.method().to_string();
                    let uri = req.uri().to_string();
                    let host = req.headers().get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let ctype = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
                    let (status, out): (u16, Bytes) = match uri.split('?').next().unwrap() {
                        "/forbidden" => {
                            (403, Bytes::from(r#"{"success":false,"error":{"code":"forbidden","message":"uid 1000 is not allowed"}}"#))
                        }
                        "/metrics" => (200, Bytes::from("addond_up 1\n")),
                        "/garbage" => (200, Bytes::from("<html>nope</html>")),
                        "/logs" => {
                            let chunks = vec![
                                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from("line one\nline "))),
                                Ok(hyper::body::Frame::data(Bytes::from("two\n"))),
                            ];
                            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
                            let resp = hyper::Response::builder()
                                .status(200)
                                .header(CONTENT_TYPE, "text/plain")
                                .body(http_body_util::Either::Right(body))
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        "/pull" => {
                            // An ndjson stream that names what the request body asked for.
                            let image = body["image"].as_str().unwrap_or("?").to_string();
                            let chunks = vec![
                                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(format!(
                                    "{{\"progress\":{{\"layer\":\"{image}\"}}}}\n{{\"do"
                                )))),
                                Ok(hyper::body::Frame::data(Bytes::from(format!("ne\":true,\"image\":\"{image}\"}}\n")))),
                            ];
                            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
                            let resp = hyper::Response::builder()
                                .status(200)
                                .header(CONTENT_TYPE, "application/x-ndjson")
                                .body(http_body_util::Either::Right(body))
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        "/missing" => (404, Bytes::from(r#"{"success":false,"error":{"code":"not_found","message":"no service x"}}"#)),
                        _ => {
                            let echo = serde_json::json!({"success": true, "data": {
                                "method": method, "uri": uri, "host": host, "content_type": ctype, "body": body}, "message": "echo"});
                            (200, Bytes::from(serde_json::to_vec(&echo).unwrap()))
                        }
                    };
                    Ok(hyper::Response::builder().status(status).body(http_body_util::Either::Left(Full::new(out))).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }

    #[tokio::test]
    async fn round_trip_over_a_real_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve(listener));
        let client = Client::new(path.clone());

        // POST with a body: the server sees method, path, query, Host and Content-Type.
        let body = serde_json::json!({"name": "payments-api", "replicas": 2});
        let r = client.post("/api/plugin-microservice/services?wait=started&timeout=5", Some(&body)).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.is_success());
        let d = r.data();
        assert_eq!(d["method"], "POST");
        assert_eq!(d["uri"], "/api/plugin-microservice/services?wait=started&timeout=5");
        assert_eq!(d["host"], "addond");
        assert_eq!(d["content_type"], "application/json");
        assert_eq!(d["body"], body);

        // GET, PUT and DELETE through the conveniences; clones work concurrently.
        let c2 = client.clone();
        let one = serde_json::json!([1]);
        let (g, p, del) = tokio::join!(client.get("/health"), c2.put("/x", Some(&one)), client.delete("/s/1"));
        assert_eq!(g.unwrap().data()["method"], "GET");
        assert_eq!(p.unwrap().data()["body"], serde_json::json!([1]));
        assert_eq!(del.unwrap().data()["method"], "DELETE");

        // A 403 envelope is a Response with an error, not a ClientError.
        let r = client.get("/forbidden").await.unwrap();
        assert_eq!(r.status, 403);
        let e = r.error().unwrap();
        assert_eq!((e.code.as_str(), e.message.as_str(), e.field), ("forbidden", "uid 1000 is not allowed", None));

        // Non-JSON body: Protocol error; raw requests get the text.
        assert!(matches!(client.get("/garbage").await, Err(ClientError::Protocol(_))));
        let raw = client.request_raw(Method::GET, "/metrics", None).await.unwrap();
        assert_eq!((raw.status, &raw.body[..]), (200, &b"addond_up 1\n"[..]));

        // Streams: chunks arrive as sent; an error status becomes ClientError::Api.
        let mut s = client.stream(Method::GET, "/logs?follow=true").await.unwrap();
        let mut all = Vec::new();
        while let Some(chunk) = s.next().await {
            all.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(all, b"line one\nline two\n");
        match client.stream(Method::GET, "/missing").await {
            Err(ClientError::Api(e)) => assert_eq!((e.status, e.code.as_str()), (404, "not_found")),
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => panic!("expected an error"),
        }
        server.abort();
    }

    /// `stream_with` sends a body, reports the content type and streams the reply; the
    /// envelope of a non-streaming reply can be read whole; errors are `ClientError::Api`.
    #[tokio::test]
    async fn stream_with_a_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let server = tokio::spawn(serve(UnixListener::bind(&path).unwrap()));
        let client = Client::new(path);

        let body = serde_json::json!({"image": "my/img:1"});
        let (ctype, mut s) = client.stream_with(Method::POST, "/pull", Some(&body)).await.unwrap();
        assert_eq!(ctype.as_deref(), Some("application/x-ndjson"));
        let mut chunks = Vec::new();
        while let Some(chunk) = s.next_chunk().await {
            chunks.push(chunk.unwrap());
        }
        // The chunks arrive as the server sent them, never joined into one.
        assert!(chunks.len() >= 2, "{chunks:?}");
        let all: Vec<u8> = chunks.concat();
        assert_eq!(String::from_utf8(all).unwrap(), "{\"progress\":{\"layer\":\"my/img:1\"}}\n{\"done\":true,\"image\":\"my/img:1\"}\n");

        // A plain envelope through the same call: no content type set by this server, and
        // the body (which saw our JSON) can be read whole.
        let (ctype, s) = client.stream_with(Method::PUT, "/echo?x=1", Some(&body)).await.unwrap();
        assert_eq!(ctype, None);
        let echo: Value = serde_json::from_slice(&s.into_bytes().await.unwrap()).unwrap();
        assert_eq!(echo["data"]["method"], "PUT");
        assert_eq!(echo["data"]["uri"], "/echo?x=1");
        assert_eq!(echo["data"]["content_type"], "application/json");
        assert_eq!(echo["data"]["body"], body);

        // Without a body it is `stream` with a content type.
        let (ctype, s) = client.stream_with(Method::GET, "/logs", None).await.unwrap();
        assert_eq!(ctype.as_deref(), Some("text/plain"));
        assert_eq!(&s.into_bytes().await.unwrap()[..], b"line one\nline two\n");

        // Error replies: the envelope's error; a body that is not one: a protocol error.
        match client.stream_with(Method::POST, "/missing", Some(&body)).await {
            Err(ClientError::Api(e)) => assert_eq!((e.status, e.code.as_str(), e.message.as_str()), (404, "not_found", "no service x")),
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => panic!("expected an error"),
        }
        match client.stream_with(Method::POST, "/forbidden", Some(&body)).await {
            Err(ClientError::Api(e)) => assert_eq!((e.status, e.code.as_str()), (403, "forbidden")),
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => panic!("expected an error"),
        }
        server.abort();
    }

    /// The daemon refuses unknown peers before reading the request, then closes: the client
    /// must still read the 403 envelope.
    #[tokio::test]
    async fn forbidden_before_the_request_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..3 {
                let (mut s, _) = listener.accept().await.unwrap();
                let body = r#"{"success":false,"error":{"code":"forbidden","message":"not in group addond"}}"#;
                let reply = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                s.write_all(reply.as_bytes()).await.unwrap();
                // Drain whatever arrived, then close, as a well-behaved server does.
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(std::time::Duration::from_millis(50), s.read(&mut buf)).await;
                let _ = s.shutdown().await;
            }
        });
        let client = Client::new(path);
        for _ in 0..3 {
            let r = client.post("/api/plugin-microservice/services", Some(&serde_json::json!({"name": "x"}))).await.unwrap();
            assert_eq!(r.status, 403);
            assert_eq!(r.error().unwrap().code, "forbidden");
        }
        server.await.unwrap();
    }

    /// The same refusal from a server that hangs up at once without reading: the client
    /// may lose the race to write its request, and must still report the 403.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forbidden_with_an_immediate_hang_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addond.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let body = r#"{"success":false,"error":{"code":"forbidden","message":"go away"}}"#;
                let reply = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
                drop(s);
            }
        });
        let client = Client::new(path);
        for _ in 0..30 {
            let r = client.get("/api/plugin-microservice/services").await.unwrap();
            assert_eq!((r.status, r.error().unwrap().code.as_str()), (403, "forbidden"));
            match client.stream(Method::GET, "/logs?follow=true").await {
                Err(ClientError::Api(e)) => assert_eq!(e.code, "forbidden"),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("expected a refusal"),
            }
        }
        server.abort();
    }

    #[test]
    fn refusal_parsing() {
        let ok = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_refusal(ok).unwrap().body, Bytes::from_static(b"{}"));
        assert!(parse_refusal(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(parse_refusal(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 9\r\n\r\n{}").is_none());
        assert!(parse_refusal(b"").is_none());
    }

    #[tokio::test]
    async fn missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let err = Client::new(path.clone()).get("/health").await.unwrap_err();
        assert!(matches!(&err, ClientError::NotRunning { socket } if *socket == path), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("addond is not running") && msg.contains("nope.sock") && msg.contains("addond --dev"), "{msg}");

        // A stale socket file nobody listens on: ECONNREFUSED, also NotRunning.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let err = Client::new(stale).get("/health").await.unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");

        // A missing parent directory: still NotRunning.
        let err = Client::new(dir.path().join("no/such/dir.sock")).get("/health").await.unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    }

    #[test]
    fn permission_denied_message() {
        let e = ClientError::PermissionDenied { socket: PathBuf::from("/run/addond/addond.sock") };
        assert_eq!(e.to_string(), "permission denied on /run/addond/addond.sock: run as root or join the `addond` group");
        let c = Client::new(PathBuf::from("/x.sock"));
        let e = c.connect_error(io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32));
        assert!(matches!(e, ClientError::PermissionDenied { .. }));
    }
}
