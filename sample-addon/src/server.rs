//! Accept loop and per-connection handling (one thread per connection, keep-alive).

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::{route, After, Response, State};
use crate::http::{encode_response, read_request, HttpError, ReadOutcome, Request};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Close a connection when no (complete) request arrived for this long.
    pub idle_timeout: Duration,
    pub max_body_bytes: usize,
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
        let req = match read_request(&mut reader, &mut writer, cfg.max_body_bytes) {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed | ReadOutcome::Io => return,
            ReadOutcome::Bad(e) => {
                write_error(&mut writer, &e, cfg.quiet);
                lingering_close(stream, &mut reader);
                return;
            }
        };
        let started = Instant::now();
        let resp = catch_unwind(AssertUnwindSafe(|| route(state, &req)))
            .unwrap_or_else(|_| Response::error(500, "internal error (handler panicked)"));
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
}
