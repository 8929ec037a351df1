//! The connections of the daemon's HTTP listeners — the admin socket, the gateway, the
//! addon API and the optional metrics listener — and what bounds them. Each listener has its own budget of
//! connections (a [`Registry`]), so a flood on one never takes the file descriptors
//! another needs; at the cap the oldest idle connection makes room for a new one. Every
//! connection has a watchdog that closes it when it sits idle between requests, or sends
//! its request head, too long; a request body that does not arrive in time ends in 408.
//! The IO wrapper that tells the watchdog where a connection is ([`Tracked`]) also puts
//! the JSON envelope on hyper's protocol refusals (which hyper writes with an empty body)
//! and lingers when the server closes, so a client still sending a body that was refused
//! reads the answer instead of a reset.
//!
//! Why not hyper's own `header_read_timeout`: hyper also runs that timer while a
//! keep-alive connection waits for its next request, so it cannot tell an idle client
//! from a slow one, and it offers no idle flag for the cap to shed by.

use super::code::ErrorCode;
use super::envelope::error_body;
pub use crate::body_error::{body_failure, error_chain, BodyFailure, BodyTimeout};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// How long a connection the server closes keeps reading (and discarding) what the client
/// still sends, so the client reads the answer rather than a reset.
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read and discarded while lingering.
const LINGER_MAX_BYTES: usize = 16 << 20;
/// Connections marked for closing that have not closed yet; past this many the cap
/// refuses new connections instead of marking more (their tasks are not keeping up).
const MAX_DYING: usize = 64;
/// Descriptors kept out of the listeners' budgets: the database, Docker, logs, health
/// checks, event deliveries, notifications, and the metrics listener's few connections.
const FD_RESERVE: u64 = 256;
/// The soft descriptor limit is raised at most this far, whatever the hard limit allows.
const FD_CEILING: u64 = 1 << 20;

/// The listeners, each with its own budget and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Admin,
    Gateway,
    AddonApi,
    /// `metrics.listen`: `GET /metrics` for Prometheus.
    Metrics,
}

/// Every listener, in [`Listener::index`] order.
const LISTENERS: [Listener; 4] = [Listener::Admin, Listener::Gateway, Listener::AddonApi, Listener::Metrics];

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Admin => "admin",
            Listener::Gateway => "gateway",
            Listener::AddonApi => "addon_api",
            Listener::Metrics => "metrics",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one listener, for `/metrics`.
#[derive(Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Idle (or head-sending) connections closed to make room at the cap.
    pub shed: AtomicU64,
    /// New connections refused at the cap (nothing could be shed).
    pub refused: AtomicU64,
    /// Connections closed because their request head took too long.
    pub header_timeouts: AtomicU64,
    /// Keep-alive connections closed after sitting idle.
    pub idle_closed: AtomicU64,
    /// Requests answered 408 because their body took too long.
    pub body_timeouts: AtomicU64,
    /// Protocol refusals (400, 414, 431 from the HTTP parser) answered with the envelope.
    pub protocol_errors: AtomicU64,
}

static STATS: LazyLock<[ListenerStats; LISTENERS.len()]> = LazyLock::new(Default::default);

/// The counters of `listener`.
pub fn stats(listener: Listener) -> &'static ListenerStats {
    &STATS[listener.index()]
}

/// Appends the listeners' counters to a Prometheus text exposition.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write as _;
    let all = LISTENERS;
    type Series = (&'static str, &'static str, &'static str, fn(&ListenerStats) -> &AtomicU64);
    let series: [Series; 7] = [
        ("addond_http_connections", "gauge", "Open connections per listener.", |s| &s.open),
        ("addond_http_connections_shed_total", "counter", "Idle connections closed to make room at the listener's cap.", |s| &s.shed),
        ("addond_http_connections_refused_total", "counter", "New connections refused at the listener's cap.", |s| &s.refused),
        ("addond_http_header_timeouts_total", "counter", "Connections closed because a request head took too long.", |s| {
            &s.header_timeouts
        }),
        ("addond_http_idle_closed_total", "counter", "Keep-alive connections closed after sitting idle.", |s| &s.idle_closed),
        ("addond_http_body_timeouts_total", "counter", "Requests answered 408 because the body took too long.", |s| &s.body_timeouts),
        ("addond_http_protocol_errors_total", "counter", "Requests refused by the HTTP parser (400, 414, 431).", |s| &s.protocol_errors),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for l in all {
            let _ = writeln!(out, "{name}{{listener=\"{}\"}} {}", l.as_str(), get(stats(l)).load(Ordering::Relaxed));
        }
    }
}

// ---- descriptors and budgets ------------------------------------------------------------

/// The soft `RLIMIT_NOFILE`.
pub fn fd_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (at most 2^20): the soft default of
/// 1024 is for programs that still use `select(2)`, which addond does not. Returns the
/// limit before and after.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let want = hard.min(FD_CEILING).max(before);
    if want > before {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(io::Error::from)?;
    }
    Ok((before, want))
}

/// How many connections each listener may hold: the configured caps, scaled down when the
/// descriptor limit cannot hold them all. A gateway or addon API connection is counted
/// twice (it may hold a connection to an addon as well), and [`FD_RESERVE`] descriptors
/// stay for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Connections the admin socket may hold.
    pub admin: usize,
    /// Connections the gateway may hold.
    pub gateway: usize,
    /// Connections the addon API may hold, all its addresses together.
    pub addon_api: usize,
    /// Connections the metrics listener may hold (when it is on).
    pub metrics: usize,
    /// The descriptor limit they were computed for.
    pub fd_limit: u64,
    /// Whether the configured caps had to be scaled down.
    pub scaled: bool,
}

impl Budgets {
    /// The budgets under the process's current descriptor limit.
    pub fn for_config(cfg: &HttpConfig) -> Budgets {
        Budgets::compute(cfg, fd_limit())
    }

    pub fn compute(cfg: &HttpConfig, fd_limit: u64) -> Budgets {
        let (admin, gateway, addon_api) = (cfg.admin_max_connections, cfg.gateway_max_connections, cfg.addon_api_max_connections);
        // The metrics listener's small cap (at most 128) is taken from the reserve, not
        // scaled: scrapes are few and must keep working when the other listeners are full.
        let metrics = cfg.metrics_max_connections;
        let avail = fd_limit.saturating_sub(FD_RESERVE) as usize;
        let wanted = admin + 2 * gateway + 2 * addon_api;
        if wanted <= avail {
            return Budgets { admin, gateway, addon_api, metrics, fd_limit, scaled: false };
        }
        // The admin socket keeps its share first (it is how an operator gets in), then the
        // other two share what is left in proportion to what they asked for.
        let admin = admin.min((avail / 16).max(8));
        let rest = avail.saturating_sub(admin) as f64;
        let scale = rest / (2 * gateway + 2 * addon_api) as f64;
        let shrink = |n: usize| ((n as f64 * scale).floor() as usize).clamp(8, n);
        Budgets { admin, gateway: shrink(gateway), addon_api: shrink(addon_api), metrics, fd_limit, scaled: true }
    }

    pub fn of(&self, listener: Listener) -> usize {
        match listener {
            Listener::Admin => self.admin,
            Listener::Gateway => self.gateway,
            Listener::AddonApi => self.addon_api,
            Listener::Metrics => self.metrics,
        }
    }
}

// ---- the registry of a listener's connections --------------------------------------------

/// A listener's timeouts and cap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The cap: connections held at once.
    pub max_connections: usize,
    /// A request head must arrive within this of its first byte.
    pub header_timeout: Duration,
    /// A request body must arrive within this of its head.
    pub body_timeout: Duration,
    /// A connection without a request for this long is closed.
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn new(cfg: &HttpConfig, max_connections: usize) -> Limits {
        Limits {
            max_connections,
            header_timeout: Duration::from_secs_f64(cfg.header_read_timeout_seconds),
            body_timeout: Duration::from_secs_f64(cfg.body_read_timeout_seconds),
            idle_timeout: Duration::from_secs_f64(cfg.keep_alive_idle_seconds),
        }
    }
}

/// Where a connection is. Only `Idle` and `Head` connections have no request being
/// served, so only they are timed out by the watchdog or shed at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for the first byte of a request (a new or a keep-alive connection).
    Idle = 0,
    /// Bytes of a request arrived; its head is not complete yet.
    Head = 1,
    /// The request is being served (body read, handler running, answer written).
    Busy = 2,
    /// The answer is complete but maybe not yet flushed to the socket.
    Draining = 3,
    /// Switched protocols (WebSocket): no longer HTTP, never timed out or shed here.
    Upgraded = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Busy,
            3 => Phase::Draining,
            _ => Phase::Upgraded,
        }
    }
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// The state one connection shares between its task, its IO and the registry.
pub struct ConnState {
    /// The [`Phase`], as its `u8`.
    phase: AtomicU8,
    /// When the current `Idle` or `Head` phase began (nanoseconds since [`EPOCH`]).
    since: AtomicU64,
    /// The next request's first bytes came while the last answer was still being flushed.
    pipelined: AtomicBool,
    /// Set (and `kill` notified) when the cap picks this connection to close.
    killed: AtomicBool,
    /// Wakes the connection's watchdog when the cap picks it.
    kill: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            phase: AtomicU8::new(Phase::Idle as u8),
            since: AtomicU64::new(now_ns()),
            pipelined: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn enter(&self, p: Phase) {
        if matches!(p, Phase::Idle | Phase::Head) {
            self.since.store(now_ns(), Ordering::Release);
        }
        self.phase.store(p as u8, Ordering::Release);
    }

    /// Bytes arrived from the client.
    fn bytes_in(&self) {
        match self.phase() {
            Phase::Idle => self.enter(Phase::Head),
            Phase::Draining => self.pipelined.store(true, Ordering::Release),
            _ => {}
        }
    }

    /// The service was called with a complete request head.
    fn request(&self) {
        self.pipelined.store(false, Ordering::Release);
        self.enter(Phase::Busy);
    }

    /// The answer's body is done (hyper dropped it).
    fn answered(&self) {
        if self.phase() == Phase::Busy {
            self.enter(Phase::Draining);
        }
    }

    /// Everything hyper buffered has reached the socket.
    fn flushed(&self) {
        if self.phase() == Phase::Draining {
            let next = if self.pipelined.swap(false, Ordering::AcqRel) { Phase::Head } else { Phase::Idle };
            self.enter(next);
        }
    }
}

/// The connections of one listener, for its cap and its counters.
pub struct Registry {
    /// Whose connections these are (for the counters and messages).
    listener: Listener,
    /// The cap and the timeouts.
    limits: Limits,
    /// Every open connection by its id; locked on accept and on close only.
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// The next connection's id.
    next: AtomicU64,
    /// Connections told to close that have not closed yet.
    dying: std::sync::atomic::AtomicUsize,
    /// Notified when one of those closes.
    room: Notify,
}

/// What the cap decided for a new connection.
pub enum Admission {
    /// Serve it; the slot is its place in the registry until it closes.
    Admitted(Slot),
    /// The listener is full of busy connections: answer 503 and close.
    Refused,
}

impl Registry {
    pub fn new(listener: Listener, limits: Limits) -> Arc<Registry> {
        Arc::new(Registry {
            listener,
            limits,
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            dying: Default::default(),
            room: Notify::new(),
        })
    }

    /// The registry of `listener` with the budget [`Budgets::for_config`] gives it.
    pub fn for_listener(listener: Listener, cfg: &HttpConfig) -> Arc<Registry> {
        Registry::new(listener, Limits::new(cfg, Budgets::for_config(cfg).of(listener)))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits (100 ms at most) while [`MAX_DYING`] connections told to close have not
    /// closed yet, so a burst of new connections waits in the kernel's queue for the
    /// connections making room rather than being refused. The accept loops call it before
    /// each accept.
    pub async fn room(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.dying.load(Ordering::Acquire) < MAX_DYING {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// The next connection of an accept loop, once the budget has room; `None` at
    /// shutdown. A failed accept (out of descriptors, most likely) is logged and retried
    /// after 50 ms rather than spun on. Every listener's loop goes through here.
    pub async fn next_connection<T, F, Fut>(&self, shutdown: &CancellationToken, mut accept: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        loop {
            self.room().await;
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = accept() => match r {
                    Ok(conn) => return Some(conn),
                    Err(e) => {
                        tracing::warn!(listener = self.listener.as_str(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Takes a new connection in. At the cap the oldest idle connection is told to close
    /// (else the oldest one still sending its head: neither has a request being served);
    /// with neither, the new connection is refused.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= self.limits.max_connections {
            let dying = self.dying.load(Ordering::Acquire);
            let mut victim: Option<(u8, u64, &Arc<ConnState>)> = None;
            for c in conns.values() {
                if c.killed.load(Ordering::Acquire) {
                    continue;
                }
                let class = match c.phase() {
                    Phase::Idle => 0,
                    Phase::Head => 1,
                    _ => continue,
                };
                let since = c.since.load(Ordering::Acquire);
                if victim.is_none_or(|(vc, vs, _)| (class, since) < (vc, vs)) {
                    victim = Some((class, since, c));
                }
            }
            match victim {
                Some((_, _, v)) if dying < MAX_DYING => {
                    v.killed.store(true, Ordering::Release);
                    self.dying.fetch_add(1, Ordering::AcqRel);
                    v.kill.notify_one();
                    stats(self.listener).shed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    stats(self.listener).refused.fetch_add(1, Ordering::Relaxed);
                    return Admission::Refused;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        conns.insert(id, state.clone());
        stats(self.listener).open.fetch_add(1, Ordering::Relaxed);
        Admission::Admitted(Slot { registry: self.clone(), id, state })
    }
}

/// A connection's place in its listener's registry; leaving it (drop) frees the place.
pub struct Slot {
    /// The registry the place is in.
    registry: Arc<Registry>,
    /// The connection's id there.
    id: u64,
    /// The connection's state, shared with the registry.
    state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        stats(self.registry.listener).open.fetch_sub(1, Ordering::Relaxed);
        if self.state.killed.load(Ordering::Acquire) {
            self.registry.dying.fetch_sub(1, Ordering::AcqRel);
            self.registry.room.notify_waiters();
        }
    }
}

/// Refusals at the cap still being answered per listener; past this many a refusal is
/// written without waiting and the connection dropped at once, so refusing cannot itself
/// hold many descriptors.
const MAX_REFUSALS_IN_FLIGHT: usize = 16;

static REFUSALS: LazyLock<[Arc<tokio::sync::Semaphore>; LISTENERS.len()]> =
    LazyLock::new(|| std::array::from_fn(|_| Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_IN_FLIGHT))));

/// Answers a connection refused at the cap with the 503 envelope and closes it, reading and
/// dropping what the client sends meanwhile for up to a second (so its request write does
/// not fail before it reads the answer); without a free refusal slot, the answer is written
/// only if the socket takes it at once.
pub fn refuse_overloaded<S>(stream: S, listener: Listener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answer = overloaded_response(listener);
    match REFUSALS[listener.index()].clone().try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _permit = permit;
                let mut stream = stream;
                let linger = async {
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 4096];
                    let mut total = 0usize;
                    while let Ok(n) = stream.read(&mut sink).await {
                        total += n;
                        if n == 0 || total > 1 << 20 {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
            });
        }
        Err(_) => {
            let mut stream = stream;
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = Pin::new(&mut stream).poll_write(&mut cx, &answer);
        }
    }
}

/// The answer to a connection refused at the cap (written as is, then closed).
pub fn overloaded_response(listener: Listener) -> Vec<u8> {
    let message = format!(
        "the {} listener holds as many connections as it may (http.{}_max_connections), all of them busy; retry shortly",
        listener.as_str(),
        listener.as_str()
    );
    let body = error_body(ErrorCode::Overloaded, &message, None).to_string();
    format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

// ---- the IO wrapper ---------------------------------------------------------------------

/// A connection's socket as hyper sees it: it tells the connection's state when bytes
/// arrive and when hyper's buffer is flushed, answers hyper's protocol refusals with the
/// JSON envelope, and lingers on close. It holds the connection's [`Slot`], so an upgraded
/// (WebSocket) connection keeps its place for as long as it lives.
pub struct Tracked<T> {
    /// The socket.
    inner: T,
    /// The connection's place in its listener's budget, and its state.
    slot: Slot,
    /// The envelope written in place of hyper's empty-bodied refusal, and how much of it
    /// has been written.
    rewrite: Option<(Vec<u8>, usize)>,
    /// The refusal has been written: anything hyper still writes is dropped.
    rewritten: bool,
    linger: Option<Linger>,
}

struct Linger {
    /// When lingering gives up.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Bytes read and dropped so far.
    drained: usize,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, slot: Slot) -> Tracked<T> {
        Tracked { inner, slot, rewrite: None, rewritten: false, linger: None }
    }

    fn state(&self) -> &ConnState {
        &self.slot.state
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Tracked<T> {
    /// Whether `head` is hyper's own answer to a request it could not parse: written while
    /// a request's bytes have arrived but no request reached the service, and every
    /// earlier answer has been flushed. hyper writes nothing else in that state.
    fn refusal_for(&mut self, head: &[u8]) -> bool {
        if self.rewrite.is_some() || self.rewritten || self.state().phase() != Phase::Head {
            return false;
        }
        match protocol_refusal(head) {
            Some(bytes) => {
                stats(self.slot.registry.listener).protocol_errors.fetch_add(1, Ordering::Relaxed);
                self.rewrite = Some((bytes, 0));
                true
            }
            None => false,
        }
    }

    /// Writes what is left of the envelope; `Ready` once all of it is out.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, pos)) = self.rewrite.as_mut() {
            if *pos >= bytes.len() {
                self.rewrite = None;
                self.rewritten = true;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *pos += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.state().bytes_in();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewritten || this.refusal_for(buf) || this.rewrite.is_some() {
            ready!(this.poll_rewrite(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]).unwrap_or(&[]);
        if this.rewritten || this.refusal_for(first) || this.rewrite.is_some() {
            ready!(this.poll_rewrite(cx))?;
            return Poll::Ready(Ok(total));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rewrite(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.state().flushed();
        Poll::Ready(Ok(()))
    }

    /// Closes the sending side, then reads and discards what the client still sends until
    /// it closes too, [`LINGER`] passes or [`LINGER_MAX_BYTES`] were read: closing a socket
    /// with unread data sends a reset, which can destroy the answer before the client
    /// reads it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state().phase() == Phase::Upgraded {
            // No longer HTTP: a WebSocket splice shuts one direction down while the other
            // still carries data, which lingering would read away.
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            ready!(this.poll_rewrite(cx))?;
            if ready!(Pin::new(&mut this.inner).poll_shutdown(cx)).is_err() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Linger { deadline: Box::pin(tokio::time::sleep(LINGER)), drained: 0 });
        }
        let Some(linger) = this.linger.as_mut() else { return Poll::Ready(Ok(())) };
        let mut scratch = [0u8; 4096];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    linger.drained += rb.filled().len();
                    if linger.drained > LINGER_MAX_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        match linger.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The envelope answer for hyper's automatic refusal whose head starts `head`
/// (`HTTP/1.1 400 Bad Request…`), or `None` when it is not one.
fn protocol_refusal(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") || head[8] != b' ' {
        return None;
    }
    let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
    let (status, code_name, message, field) = match code {
        414 => (
            "414 URI Too Long",
            ErrorCode::UriTooLong,
            "the request target (path and query) is longer than this server reads; send a shorter path and query",
            Some("path"),
        ),
        431 => (
            "431 Request Header Fields Too Large",
            ErrorCode::HeadersTooLarge,
            "the request head is too large (more than 100 headers, or more bytes than this server buffers); send fewer or smaller headers",
            Some("headers"),
        ),
        400..=499 => (
            "400 Bad Request",
            ErrorCode::BadRequest,
            "the request is not valid HTTP/1.1: its request line, a header (name, value, or a NUL or other control byte in it), or its framing (a Content-Length that is not one non-negative number, or a Transfer-Encoding that does not end in chunked) is malformed; send a well-formed request",
            None,
        ),
        _ => return None,
    };
    let body = error_body(code_name, message, field).to_string();
    Some(
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            .into_bytes(),
    )
}

// ---- request and answer bodies ------------------------------------------------------------

/// A request body that must arrive whole within a deadline counted from its head, and
/// that records whether it was read to its end.
struct TimedBody {
    /// The body as hyper reads it.
    inner: Incoming,
    /// When the request's head was complete.
    start: Instant,
    /// How long the whole body may take from `start`.
    timeout: Duration,
    /// Made the first time the body has to wait, so a body already in the buffer costs no
    /// timer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the body has been read to its end.
    complete: Arc<AtomicBool>,
    /// Whose counter a timeout goes to.
    listener: Listener,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.complete.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(f))) => {
                if this.inner.is_end_stream() {
                    this.complete.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Pending => {
                let (start, timeout) = (this.start, this.timeout);
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until((start + timeout).into())));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        stats(this.listener).body_timeouts.fetch_add(1, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that tells the connection when hyper is done with it.
struct TrackedBody {
    /// The answer's body as the handler made it.
    inner: Body,
    /// The connection told when hyper drops it.
    state: Arc<ConnState>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.state.answered();
    }
}

/// Reads and discards a request body of at most `limit` bytes, so the connection can carry
/// the next request after a refusal; `false` when it is larger, malformed or too slow (the
/// connection is then closed after the answer).
pub async fn drain(body: Body, limit: usize) -> bool {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return false;
    }
    http_body_util::Limited::new(body, limit).collect().await.is_ok()
}

// ---- serving a connection -----------------------------------------------------------------

/// Why a connection's watchdog ended it.
enum Expiry {
    Timeout(Phase),
    Killed,
}

/// Waits until the connection has been idle, or sending its head, for longer than allowed,
/// or until the cap picks it to close. It sleeps until the deadline of the phase it saw and
/// looks again; a request in between just moves the deadline.
async fn watchdog(state: &ConnState, limits: &Limits) -> Expiry {
    loop {
        let phase = state.phase();
        let limit = match phase {
            Phase::Idle => Some(limits.idle_timeout),
            Phase::Head => Some(limits.header_timeout),
            _ => None,
        };
        let wait = match limit {
            Some(l) => {
                let deadline = state.since.load(Ordering::Acquire).saturating_add(l.as_nanos() as u64);
                let now = now_ns();
                if now >= deadline {
                    return Expiry::Timeout(phase);
                }
                Duration::from_nanos(deadline - now)
            }
            None => limits.idle_timeout.max(limits.header_timeout),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.kill.notified() => return Expiry::Killed,
        }
    }
}

/// Serves one HTTP/1.1 connection (upgrades included) with `handler` until it closes, its
/// watchdog ends it or `shutdown` (then the request in flight finishes, 10 s at most). Each
/// request's body gets the body deadline; an answer given while the request's body was
/// left unread says `Connection: close`, and the connection closes after it.
pub async fn serve_connection<T, F, Fut>(io: T, slot: Slot, shutdown: &CancellationToken, handler: F)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(hyper::Request<Body>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let state = slot.state.clone();
    let listener = slot.registry.listener;
    let limits = slot.registry.limits;
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        svc_state.request();
        let complete = Arc::new(AtomicBool::new(req.body().is_end_stream()));
        let req = if complete.load(Ordering::Relaxed) {
            req.map(Body::new)
        } else {
            let c = complete.clone();
            req.map(move |b| {
                Body::new(TimedBody {
                    inner: b,
                    start: Instant::now(),
                    timeout: limits.body_timeout,
                    deadline: None,
                    complete: c,
                    listener,
                })
            })
        };
        let fut = handler(req);
        let state = svc_state.clone();
        async move {
            let mut resp = fut.await;
            if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                state.enter(Phase::Upgraded);
            } else if !complete.load(Ordering::Acquire) {
                resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp.map(|b| TrackedBody { inner: b, state }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(Tracked::new(io, slot)), svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        why = watchdog(&state, &limits) => match why {
            Expiry::Timeout(Phase::Head) => {
                stats(listener).header_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = listener.as_str(), "closing a connection whose request head took too long");
            }
            Expiry::Timeout(_) => {
                stats(listener).idle_closed.fetch_add(1, Ordering::Relaxed);
            }
            Expiry::Killed => {
                // Picked while idle; a request that started meanwhile is finished first.
                if !matches!(state.phase(), Phase::Idle | Phase::Head) {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
        },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }
    }
}

#[cfg(test)]
mod tests;
