//! Accept loop and per-connection handling (one thread per connection, keep-alive; a WebSocket
//! keeps its thread until it closes).

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::{route, After, Response, State};
use crate::http::{
    encode_response, read_request_head, BodyReader, HttpError, ReadError, ReadOutcome, Request,
};
use crate::stream::{self, Plan};
use crate::ws::{self, WsConfig, WsEnd, WsStats};

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
            max_body_bytes: crate::http::DEFAULT_MAX_BODY_BYTES,
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

/// Serve forever on `listener`.
pub fn serve(listener: TcpListener, state: Arc<State>, cfg: Arc<ServerConfig>) {
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
        let (st, c, s) = (state.clone(), cfg.clone(), stream.clone());
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _guard = guard;
                handle_connection(&s, &st, &c);
            });
        if let Err(e) = spawned {
            // Typically the pids limit; the guard was dropped with the closure.
            reject_busy(
                &stream,
                &format!("cannot start a connection thread: {e}"),
                cfg.quiet,
            );
        }
    }
}

fn reject_busy(stream: &TcpStream, why: &str, quiet: bool) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let body =
        serde_json::to_vec(&json!({ "error": format!("server busy: {why}") })).unwrap_or_default();
    let bytes = encode_response(
        503,
        &[
            ("Content-Type", "application/json".into()),
            ("Retry-After", "1".into()),
        ],
        &body,
        false,
        false,
    );
    let mut w = stream;
    let _ = w.write_all(&bytes);
    let _ = stream.shutdown(Shutdown::Both);
    if !quiet {
        println!("- - 503 ({why})");
    }
}

/// Serve requests on one connection until it closes, errs, times out or a response says close.
pub fn handle_connection(stream: &TcpStream, state: &State, cfg: &ServerConfig) {
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
            let written = stream::write_download(
                &mut writer,
                d,
                req.version == (1, 0),
                keep_alive,
                head_only,
            )
            .is_ok();
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
            _ => catch_unwind(AssertUnwindSafe(|| route(state, &req)))
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
fn websocket(
    stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    req: &Request,
    head: &[u8],
    cfg: &ServerConfig,
    started: Instant,
) {
    let mut writer = stream;
    if writer.write_all(head).and_then(|_| writer.flush()).is_err() {
        return;
    }
    if !cfg.quiet {
        log_request(req, 101, started);
    }
    // Only complete silence for this long ends the session; traffic of any kind resets it.
    let _ = stream.set_read_timeout(Some(cfg.ws_idle_timeout));
    let ws_cfg = WsConfig {
        max_message_bytes: cfg.ws_max_message_bytes,
    };
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
    let bytes = encode_response(
        resp.status,
        &headers,
        &resp.body_bytes(),
        keep_alive,
        req.method == "HEAD",
    );
    writer
        .write_all(&bytes)
        .and_then(|_| writer.flush())
        .is_ok()
}

fn write_error(writer: &mut &TcpStream, e: &HttpError, quiet: bool) {
    let body = serde_json::to_vec(&json!({ "error": e.message })).unwrap_or_default();
    let bytes = encode_response(
        e.status,
        &[("Content-Type", "application/json".into())],
        &body,
        false,
        false,
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Settings;
    use std::io::BufRead;
    use std::net::SocketAddr;

    fn start(cfg: ServerConfig) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::new(Settings {
            instance: Some("inst_t".into()),
            ..Settings::default()
        }));
        std::thread::spawn(move || serve(listener, state, Arc::new(cfg)));
        addr
    }

    fn quiet() -> ServerConfig {
        ServerConfig {
            quiet: true,
            ..ServerConfig::default()
        }
    }

    /// Read one response: (status, lower-cased headers, body).
    fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, String) {
        let mut status_line = String::new();
        r.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (status, headers, String::from_utf8(body).unwrap())
    }

    fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    fn at_eof(r: &mut BufReader<TcpStream>) -> bool {
        let mut rest = Vec::new();
        matches!(r.read_to_end(&mut rest), Ok(0))
    }

    #[test]
    fn keep_alive_and_pipelining() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (st, h, body) = read_response(&mut r);
        assert_eq!(st, 200);
        assert!(h.contains(&("connection".into(), "keep-alive".into())));
        assert!(h.contains(&("content-type".into(), "application/json".into())));
        assert!(body.contains("\"instance\":\"inst_t\""));
        // Two pipelined requests, one chunked, on the same connection.
        s.write_all(
            b"POST /execute/add HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"a\":1,\"b\":2}\
              POST /execute/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_response(&mut r).2, r#"{"sum":3}"#);
        assert_eq!(
            read_response(&mut r).2,
            r#"{"echo":[1],"instance":"inst_t"}"#
        );
        s.write_all(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (st, h, _) = read_response(&mut r);
        assert_eq!(st, 404);
        assert!(h.contains(&("connection".into(), "close".into())));
        assert!(at_eof(&mut r));
    }

    #[test]
    fn bad_request_gets_json_400_and_close() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        s.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
        let (st, _, body) = read_response(&mut r);
        assert_eq!(st, 400);
        assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
        assert!(at_eof(&mut r));
        // The server is still alive.
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r).0, 200);
        assert!(at_eof(&mut r)); // HTTP/1.0 without keep-alive closes
    }

    #[test]
    fn expect_continue_and_head() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        s.write_all(b"POST /events HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        r.read_line(&mut line).unwrap();
        s.write_all(b"{}").unwrap();
        assert_eq!(read_response(&mut r).0, 200);
        s.write_all(b"HEAD /health HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .unwrap();
        // HEAD: Content-Length announced, no body; next response follows directly.
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"));
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" {
                break;
            }
        }
        let (st, _, body) = read_response(&mut r);
        assert_eq!(st, 200);
        assert!(body.contains("sample-addon"));
    }

    #[test]
    fn idle_connections_time_out() {
        let addr = start(ServerConfig {
            idle_timeout: Duration::from_millis(100),
            ..quiet()
        });
        let (_s, mut r) = connect(addr);
        let t = Instant::now();
        assert!(at_eof(&mut r));
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn connection_cap_answers_503() {
        let addr = start(ServerConfig {
            max_connections: 1,
            ..quiet()
        });
        let (mut s1, mut r1) = connect(addr);
        s1.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r1).0, 200); // first connection is being served
        let (_s2, mut r2) = connect(addr);
        let (st, h, _) = read_response(&mut r2);
        assert_eq!(st, 503);
        assert!(h.contains(&("retry-after".into(), "1".into())));
    }

    #[test]
    fn oversized_body_is_413() {
        let addr = start(ServerConfig {
            max_body_bytes: 10,
            ..quiet()
        });
        let (mut s, mut r) = connect(addr);
        s.write_all(b"POST /events HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut r).0, 413);
    }

    /// Read a response head: (status, lower-cased headers).
    fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
        let mut status_line = String::new();
        r.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                return (status, headers);
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Read a chunked body, checking the framing, feeding the data to `sink`.
    fn read_chunked(r: &mut BufReader<TcpStream>, mut sink: impl FnMut(&[u8])) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
            if size == 0 {
                r.read_line(&mut line).unwrap();
                assert!(line.ends_with("\r\n\r\n"));
                return;
            }
            let mut data = vec![0; size + 2];
            r.read_exact(&mut data).unwrap();
            assert_eq!(&data[size..], b"\r\n");
            sink(&data[..size]);
        }
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const MASK: Option<[u8; 4]> = Some([9, 8, 7, 6]);

    fn ws_connect(addr: SocketAddr, path: &str) -> (TcpStream, BufReader<TcpStream>) {
        let (mut s, mut r) = connect(addr);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: echo, other\r\n\r\n"
        )
        .unwrap();
        let (st, h) = read_head(&mut r);
        assert_eq!(st, 101);
        assert_eq!(
            header(&h, "sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(header(&h, "upgrade"), Some("websocket"));
        assert_eq!(header(&h, "sec-websocket-protocol"), Some("echo"));
        (s, r)
    }

    fn ws_read(r: &mut BufReader<TcpStream>) -> (u8, Vec<u8>) {
        let h = ws::read_frame_header(r).unwrap();
        assert!(h.fin && h.mask.is_none() && h.rsv == 0);
        let mut p = vec![0; h.len as usize];
        r.read_exact(&mut p).unwrap();
        (h.opcode, p)
    }

    #[test]
    fn websocket_echo() {
        let addr = start(quiet());
        let (mut s, mut r) = ws_connect(addr, "/ws/room?x=1");
        s.write_all(&ws::encode_frame(
            true,
            ws::OP_TEXT,
            MASK,
            "héllo".as_bytes(),
        ))
        .unwrap();
        assert_eq!(ws_read(&mut r), (ws::OP_TEXT, "héllo".as_bytes().to_vec()));
        // 16-bit and 64-bit lengths.
        for len in [300usize, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            s.write_all(&ws::encode_frame(true, ws::OP_BINARY, MASK, &data))
                .unwrap();
            assert_eq!(ws_read(&mut r), (ws::OP_BINARY, data));
        }
        // Fragmented message with a ping in the middle.
        s.write_all(&ws::encode_frame(false, ws::OP_TEXT, MASK, b"frag"))
            .unwrap();
        s.write_all(&ws::encode_frame(true, ws::OP_PING, MASK, b"pp"))
            .unwrap();
        assert_eq!(ws_read(&mut r), (ws::OP_PONG, b"pp".to_vec()));
        s.write_all(&ws::encode_frame(false, ws::OP_CONTINUATION, MASK, b"men"))
            .unwrap();
        s.write_all(&ws::encode_frame(true, ws::OP_CONTINUATION, MASK, b"ted"))
            .unwrap();
        assert_eq!(ws_read(&mut r), (ws::OP_TEXT, b"fragmented".to_vec()));
        // Close: the reply echoes the code, then the server closes the TCP connection.
        s.write_all(&ws::encode_frame(
            true,
            ws::OP_CLOSE,
            MASK,
            &[0x03, 0xe8, b'o', b'k'],
        ))
        .unwrap();
        assert_eq!(ws_read(&mut r), (ws::OP_CLOSE, vec![0x03, 0xe8]));
        assert!(at_eof(&mut r));
    }

    #[test]
    fn websocket_limits_and_idle_timeout() {
        let addr = start(ServerConfig {
            ws_max_message_bytes: 1000,
            ws_idle_timeout: Duration::from_millis(400),
            ..quiet()
        });
        let (mut s, mut r) = ws_connect(addr, "/ws");
        s.write_all(&ws::encode_frame(true, ws::OP_BINARY, MASK, &[1; 1000]))
            .unwrap();
        assert_eq!(ws_read(&mut r).1.len(), 1000);
        s.write_all(&ws::encode_frame(true, ws::OP_BINARY, MASK, &[1; 1001]))
            .unwrap();
        let (op, p) = ws_read(&mut r);
        assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (ws::OP_CLOSE, 1009));
        assert!(at_eof(&mut r));

        // Traffic keeps the connection open past the idle timeout; silence closes it (1001).
        let (mut s, mut r) = ws_connect(addr, "/ws");
        for i in 0..8u8 {
            std::thread::sleep(Duration::from_millis(150));
            s.write_all(&ws::encode_frame(true, ws::OP_TEXT, MASK, &[b'a' + i]))
                .unwrap();
            assert_eq!(ws_read(&mut r), (ws::OP_TEXT, vec![b'a' + i]));
        }
        let t = Instant::now();
        let (op, p) = ws_read(&mut r);
        assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (ws::OP_CLOSE, 1001));
        assert!(t.elapsed() >= Duration::from_millis(300));
        s.write_all(&ws::encode_frame(true, ws::OP_CLOSE, MASK, &[]))
            .unwrap();
        assert!(at_eof(&mut r));
    }

    #[test]
    fn websocket_refusals_stay_http() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (st, h, _) = read_response(&mut r);
        assert_eq!(st, 426);
        assert!(h.contains(&("upgrade".into(), "websocket".into())));
        write!(
            s,
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        .unwrap();
        let (st, h, _) = read_response(&mut r);
        assert_eq!(st, 426);
        assert!(h.contains(&("sec-websocket-version".into(), "13".into())));
        s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r).0, 200);
    }

    #[test]
    fn upload_streams_bodies_beyond_the_normal_cap() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        let len = 5 * 1024 * 1024 + 3; // over the 1 MiB cap of other routes
        let data: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
        let mut hash = stream::Fnv1a64::default();
        hash.update(&data);
        let w = s.try_clone().unwrap();
        let d = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = w;
            write!(w, "PUT /upload HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").unwrap();
            w.write_all(&d).unwrap();
        });
        let (st, _, body) = read_response(&mut r);
        writer.join().unwrap();
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({ "bytes": len, "fnv1a64": hash.hex(), "chunked": false })
        );

        // Chunked with Expect: 100-continue, on the same connection.
        s.write_all(
            b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        r.read_line(&mut line).unwrap();
        for piece in data.chunks(100_000) {
            write!(s, "{:x}\r\n", piece.len()).unwrap();
            s.write_all(piece).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(&read_response(&mut r).2).unwrap();
        assert_eq!(
            v,
            json!({ "bytes": len, "fnv1a64": hash.hex(), "chunked": true })
        );
        // Other routes keep the normal cap.
        s.write_all(b"POST /events HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut r).0, 413);

        let addr = start(ServerConfig {
            max_upload_bytes: 1000,
            ..quiet()
        });
        let (mut s, mut r) = connect(addr);
        s.write_all(b"POST /upload HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut r).0, 413);
    }

    #[test]
    fn download_streams_the_pattern() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        let n: u64 = 3 * 1024 * 1024 + 17;
        s.write_all(format!("GET /download?bytes={n} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let (st, h) = read_head(&mut r);
        assert_eq!(st, 200);
        assert_eq!(header(&h, "transfer-encoding"), Some("chunked"));
        assert_eq!(header(&h, "content-type"), Some("application/octet-stream"));
        let mut i = 0u64;
        read_chunked(&mut r, |data| {
            for b in data {
                assert_eq!(*b, (i % 251) as u8, "byte {i}");
                i += 1;
            }
        });
        assert_eq!(i, n);
        // Content-Length framing, then HEAD, then the connection is still usable.
        s.write_all(b"GET /download?bytes=1000&framing=length&chunk=7 HTTP/1.1\r\n\r\n")
            .unwrap();
        let (st, _, body) = {
            let (st, h) = read_head(&mut r);
            let len: usize = header(&h, "content-length").unwrap().parse().unwrap();
            let mut b = vec![0; len];
            r.read_exact(&mut b).unwrap();
            (st, h, b)
        };
        assert_eq!(st, 200);
        assert_eq!(
            body,
            (0..1000u64).map(|i| (i % 251) as u8).collect::<Vec<_>>()
        );
        s.write_all(
            b"HEAD /download?bytes=5 HTTP/1.1\r\n\r\nGET /download?bytes=x HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        let (st, h) = read_head(&mut r);
        assert_eq!(
            (st, header(&h, "transfer-encoding")),
            (200, Some("chunked"))
        );
        assert_eq!(read_response(&mut r).0, 400);
        // HTTP/1.0: Content-Length, then close.
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET /download?bytes=10 HTTP/1.0\r\n\r\n")
            .unwrap();
        let (_, _, body) = read_response(&mut r);
        assert_eq!(body.as_bytes(), (0..10u8).collect::<Vec<_>>());
        assert!(at_eof(&mut r));
    }

    #[test]
    fn headers_route_echoes_request_headers() {
        let addr = start(quiet());
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET /headers HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\nAuthorization: Bearer t\r\n\r\n")
            .unwrap();
        let (st, _, body) = read_response(&mut r);
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({ "host": "a.example", "x-forwarded-for": "10.0.0.1", "authorization": "Bearer t" })
        );
    }
}
