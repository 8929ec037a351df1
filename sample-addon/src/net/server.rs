//! Accept loop and per-connection handling (one thread per connection, keep-alive; a WebSocket
//! keeps its thread until it closes).

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::http::{encode_response, read_request_head, BodyReader, HttpError, ReadError, ReadOutcome, Request};
use super::response::{After, Response};
use super::stream::{self, Plan};
use super::ws::{self, WsConfig, WsEnd, WsStats};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Close a connection when no (complete) request arrived for this long.
    pub idle_timeout: Duration,
    pub max_body_bytes: usize,
    /// Body cap of `POST|PUT /upload` (streamed, never buffered).
    pub max_upload_bytes: u64,
    /// Largest WebSocket message (all fragments); larger ones close the connection with 1009.
    pub ws_max_message_bytes: usize,
    /// A WebSocket without any incoming traffic for this long is closed (1001).
    pub ws_idle_timeout: Duration,
    /// Connections beyond this many are answered 503 and closed (threads count
    /// against the container's pids limit).
    pub max_connections: usize,
    /// Safety cap for `POST /admin/oom` when no memory limit kills us first.
    pub oom_max_mb: usize,
    pub quiet: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: super::http::DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: stream::DEFAULT_MAX_UPLOAD_BYTES,
            ws_max_message_bytes: 1024 * 1024,
            ws_idle_timeout: Duration::from_secs(300),
            max_connections: 48,
            oom_max_mb: 4096,
            quiet: false,
        }
    }
}

struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers one buffered request; the server knows no routes, the caller passes them in.
pub trait Handler: Fn(&Request) -> Response + Send + Sync + 'static {}
impl<F: Fn(&Request) -> Response + Send + Sync + 'static> Handler for F {}

/// Serve forever on `listener`, answering buffered requests with `handler`.
pub fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, cfg: Arc<ServerConfig>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("sample-addon: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= cfg.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            reject_busy(&stream, "too many open connections", cfg.quiet);
            continue;
        }
        let guard = ConnGuard(active.clone());
        let (h, c, s) = (handler.clone(), cfg.clone(), stream.clone());
        let spawned = std::thread::Builder::new().name("conn".into()).stack_size(256 * 1024).spawn(move || {
            let _guard = guard;
            handle_connection(&s, &*h, &c);
        });
        if let Err(e) = spawned {
            // Typically the pids limit; the guard was dropped with the closure.
            reject_busy(&stream, &format!("cannot start a connection thread: {e}"), cfg.quiet);
        }
    }
}

fn reject_busy(stream: &TcpStream, why: &str, quiet: bool) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let body = serde_json::to_vec(&json!({ "error": format!("server busy: {why}") })).unwrap_or_default();
    let bytes = encode_response(503, &[("Content-Type", "application/json".into()), ("Retry-After", "1".into())], &body, false, false);
    let mut w = stream;
    let _ = w.write_all(&bytes);
    let _ = stream.shutdown(Shutdown::Both);
    if !quiet {
        println!("- - 503 ({why})");
    }
}

/// Serve requests on one connection until it closes, errs, times out or a response says close.
pub fn handle_connection(stream: &TcpStream, handler: &dyn Handler, cfg: &ServerConfig) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(cfg.idle_timeout));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let mut req = match read_request_head(&mut reader) {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed | ReadOutcome::Io => return,
            ReadOutcome::Bad(e) => {
                write_error(&mut writer, &e, cfg.quiet);
                lingering_close(stream, &mut reader);
                return;
            }
        };
        let started = Instant::now();
        let plan = stream::plan(&req);
        if let Plan::WebSocket(head) = plan {
            websocket(stream, &mut reader, &req, &head, cfg, started);
            return;
        }
        let max_body = match plan {
            Plan::Upload => cfg.max_upload_bytes,
            _ => cfg.max_body_bytes as u64,
        };
        let body_error = |e: ReadError, reader: &mut BufReader<&TcpStream>| {
            if let ReadError::Bad(e) = e {
                write_error(&mut &*stream, &e, cfg.quiet);
                lingering_close(stream, reader);
            }
        };
        let mut body = match BodyReader::start(&req, &mut writer, max_body) {
            Ok(b) => b,
            Err(e) => return body_error(e, &mut reader),
        };
        // The body: kept (routes), hashed on the fly (upload) or dropped (everything else).
        let upload = match plan {
            Plan::Route => body.read_to_vec(&mut reader).map(|b| {
                req.body = b;
                None
            }),
            Plan::Upload => stream::consume_upload(&mut reader, &mut body).map(Some),
            _ => body.discard(&mut reader).map(|_| None),
        };
        let upload = match upload {
            Ok(u) => u,
            Err(e) => return body_error(e, &mut reader),
        };
        if let Plan::Download(d) = &plan {
            let keep_alive = req.keep_alive();
            let head_only = req.method == "HEAD";
            let written = stream::write_download(&mut writer, d, req.version == (1, 0), keep_alive, head_only).is_ok();
            if !cfg.quiet {
                log_request(&req, 200, started);
            }
            if !written || !keep_alive {
                return;
            }
            continue;
        }
        let resp = match plan {
            Plan::Respond(r) => r,
            Plan::Upload => Response::json(200, upload.unwrap_or_default()),
            _ => catch_unwind(AssertUnwindSafe(|| handler(&req)))
                .unwrap_or_else(|_| Response::error(500, "internal error (handler panicked)")),
        };
        let keep_alive = req.keep_alive() && !resp.close && resp.after == After::Nothing;
        let written = send(&mut writer, &req, &resp, keep_alive);
        if !cfg.quiet {
            log_request(&req, resp.status, started);
        }
        match resp.after {
            After::Nothing => {}
            After::Exit(code) => {
                let _ = stream.shutdown(Shutdown::Both);
                println!("sample-addon exiting with code {code} (POST /admin/exit)");
                std::thread::sleep(Duration::from_millis(50));
                std::process::exit(code);
            }
            After::Oom => {
                let _ = stream.shutdown(Shutdown::Both);
                eat_memory(cfg.oom_max_mb);
            }
        }
        if !written || !keep_alive {
            return;
        }
    }
}

/// Complete a WebSocket handshake (`head` is the 101 response) and run the echo session on
/// this connection until it closes.
fn websocket(stream: &TcpStream, reader: &mut BufReader<&TcpStream>, req: &Request, head: &[u8], cfg: &ServerConfig, started: Instant) {
    let mut writer = stream;
    if writer.write_all(head).and_then(|_| writer.flush()).is_err() {
        return;
    }
    if !cfg.quiet {
        log_request(req, 101, started);
    }
    // Only complete silence for this long ends the session; traffic of any kind resets it.
    let _ = stream.set_read_timeout(Some(cfg.ws_idle_timeout));
    let ws_cfg = WsConfig { max_message_bytes: cfg.ws_max_message_bytes };
    let mut stats = WsStats::default();
    let end = ws::echo_session(reader, &mut writer, &ws_cfg, &mut stats);
    match end {
        WsEnd::ServerClosed(..) | WsEnd::IdleTimeout => lingering_close(stream, reader),
        WsEnd::ClientClosed(_) | WsEnd::Gone => {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    if !cfg.quiet {
        println!(
            "WS {} closed ({end:?}) after {} messages, {} payload bytes, {:.1}s",
            req.path,
            stats.messages,
            stats.bytes,
            started.elapsed().as_secs_f64()
        );
    }
}

/// Half-close, then drain (briefly) what the client still sends, so that closing with unread
/// data does not turn into a TCP reset that destroys the error response before it is read.
fn lingering_close<R: Read>(stream: &TcpStream, reader: &mut R) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 8192];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < 1 << 20 {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn send(writer: &mut &TcpStream, req: &Request, resp: &Response, keep_alive: bool) -> bool {
    let mut headers: Vec<(&str, String)> = vec![("Content-Type", "application/json".into())];
    headers.extend(resp.headers.iter().map(|(k, v)| (*k, v.clone())));
    let bytes = encode_response(resp.status, &headers, &resp.body_bytes(), keep_alive, req.method == "HEAD");
    writer.write_all(&bytes).and_then(|_| writer.flush()).is_ok()
}

fn write_error(writer: &mut &TcpStream, e: &HttpError, quiet: bool) {
    let body = serde_json::to_vec(&json!({ "error": e.message })).unwrap_or_default();
    let bytes = encode_response(e.status, &[("Content-Type", "application/json".into())], &body, false, false);
    let _ = writer.write_all(&bytes).and_then(|_| writer.flush());
    if !quiet {
        println!("- - {} ({})", e.status, e.message);
    }
}

fn log_request(req: &Request, status: u16, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{} {} {} {:.1}ms", req.method, req.path, status, ms);
}

/// Allocate and touch memory in 8 MiB steps until the kernel kills the process
/// (memory limit); stop growing at `max_mb` and hold it, as a safety net without a limit.
fn eat_memory(max_mb: usize) -> ! {
    const STEP: usize = 8 * 1024 * 1024;
    println!("sample-addon allocating memory until killed (cap {max_mb} MiB)");
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        if hoard.len() * 8 < max_mb {
            let mut block = vec![0u8; STEP];
            for i in (0..STEP).step_by(4096) {
                block[i] = 1;
            }
            hoard.push(std::hint::black_box(block));
            println!("sample-addon allocated {} MiB", hoard.len() * 8);
        } else {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
