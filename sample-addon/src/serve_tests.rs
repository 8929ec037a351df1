//! The server end to end, over TCP, with the sample's routes behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::route;
use crate::net::server::{serve, ServerConfig};
use crate::net::{stream, ws};
use crate::state::{Settings, State};

fn start(cfg: ServerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = State::new(Settings { instance: Some("inst_t".into()), ..Settings::default() });
    let handler = Arc::new(move |req: &crate::net::http::Request| route(&state, req));
    std::thread::spawn(move || serve(listener, handler, Arc::new(cfg)));
    addr
}

fn quiet() -> ServerConfig {
    ServerConfig { quiet: true, ..ServerConfig::default() }
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
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").unwrap().1.parse().unwrap();
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
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
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
    assert_eq!(read_response(&mut r).2, r#"{"echo":[1],"instance":"inst_t"}"#);
    s.write_all(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
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
    s.write_all(b"POST /events HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(b"{}").unwrap();
    assert_eq!(read_response(&mut r).0, 200);
    s.write_all(b"HEAD /health HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap();
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
    let addr = start(ServerConfig { idle_timeout: Duration::from_millis(100), ..quiet() });
    let (_s, mut r) = connect(addr);
    let t = Instant::now();
    assert!(at_eof(&mut r));
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn connection_cap_answers_503() {
    let addr = start(ServerConfig { max_connections: 1, ..quiet() });
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
    let addr = start(ServerConfig { max_body_bytes: 10, ..quiet() });
    let (mut s, mut r) = connect(addr);
    s.write_all(b"POST /events HTTP/1.1\r\nContent-Length: 11\r\n\r\n").unwrap();
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
    assert_eq!(header(&h, "sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
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
    s.write_all(&ws::encode_frame(true, ws::OP_TEXT, MASK, "héllo".as_bytes())).unwrap();
    assert_eq!(ws_read(&mut r), (ws::OP_TEXT, "héllo".as_bytes().to_vec()));
    // 16-bit and 64-bit lengths.
    for len in [300usize, 200_000] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        s.write_all(&ws::encode_frame(true, ws::OP_BINARY, MASK, &data)).unwrap();
        assert_eq!(ws_read(&mut r), (ws::OP_BINARY, data));
    }
    // Fragmented message with a ping in the middle.
    s.write_all(&ws::encode_frame(false, ws::OP_TEXT, MASK, b"frag")).unwrap();
    s.write_all(&ws::encode_frame(true, ws::OP_PING, MASK, b"pp")).unwrap();
    assert_eq!(ws_read(&mut r), (ws::OP_PONG, b"pp".to_vec()));
    s.write_all(&ws::encode_frame(false, ws::OP_CONTINUATION, MASK, b"men")).unwrap();
    s.write_all(&ws::encode_frame(true, ws::OP_CONTINUATION, MASK, b"ted")).unwrap();
    assert_eq!(ws_read(&mut r), (ws::OP_TEXT, b"fragmented".to_vec()));
    // Close: the reply echoes the code, then the server closes the TCP connection.
    s.write_all(&ws::encode_frame(true, ws::OP_CLOSE, MASK, &[0x03, 0xe8, b'o', b'k'])).unwrap();
    assert_eq!(ws_read(&mut r), (ws::OP_CLOSE, vec![0x03, 0xe8]));
    assert!(at_eof(&mut r));
}

#[test]
fn websocket_limits_and_idle_timeout() {
    let addr = start(ServerConfig { ws_max_message_bytes: 1000, ws_idle_timeout: Duration::from_millis(400), ..quiet() });
    let (mut s, mut r) = ws_connect(addr, "/ws");
    s.write_all(&ws::encode_frame(true, ws::OP_BINARY, MASK, &[1; 1000])).unwrap();
    assert_eq!(ws_read(&mut r).1.len(), 1000);
    s.write_all(&ws::encode_frame(true, ws::OP_BINARY, MASK, &[1; 1001])).unwrap();
    let (op, p) = ws_read(&mut r);
    assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (ws::OP_CLOSE, 1009));
    assert!(at_eof(&mut r));

    // Traffic keeps the connection open past the idle timeout; silence closes it (1001).
    let (mut s, mut r) = ws_connect(addr, "/ws");
    for i in 0..8u8 {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(&ws::encode_frame(true, ws::OP_TEXT, MASK, &[b'a' + i])).unwrap();
        assert_eq!(ws_read(&mut r), (ws::OP_TEXT, vec![b'a' + i]));
    }
    let t = Instant::now();
    let (op, p) = ws_read(&mut r);
    assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (ws::OP_CLOSE, 1001));
    assert!(t.elapsed() >= Duration::from_millis(300));
    s.write_all(&ws::encode_frame(true, ws::OP_CLOSE, MASK, &[])).unwrap();
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
    assert_eq!(v, json!({ "bytes": len, "fnv1a64": hash.hex(), "chunked": false }));

    // Chunked with Expect: 100-continue, on the same connection.
    s.write_all(b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").unwrap();
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
    assert_eq!(v, json!({ "bytes": len, "fnv1a64": hash.hex(), "chunked": true }));
    // Other routes keep the normal cap.
    s.write_all(b"POST /events HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).0, 413);

    let addr = start(ServerConfig { max_upload_bytes: 1000, ..quiet() });
    let (mut s, mut r) = connect(addr);
    s.write_all(b"POST /upload HTTP/1.1\r\nContent-Length: 1001\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).0, 413);
}

#[test]
fn download_streams_the_pattern() {
    let addr = start(quiet());
    let (mut s, mut r) = connect(addr);
    let n: u64 = 3 * 1024 * 1024 + 17;
    s.write_all(format!("GET /download?bytes={n} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
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
    s.write_all(b"GET /download?bytes=1000&framing=length&chunk=7 HTTP/1.1\r\n\r\n").unwrap();
    let (st, _, body) = {
        let (st, h) = read_head(&mut r);
        let len: usize = header(&h, "content-length").unwrap().parse().unwrap();
        let mut b = vec![0; len];
        r.read_exact(&mut b).unwrap();
        (st, h, b)
    };
    assert_eq!(st, 200);
    assert_eq!(body, (0..1000u64).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    s.write_all(b"HEAD /download?bytes=5 HTTP/1.1\r\n\r\nGET /download?bytes=x HTTP/1.1\r\n\r\n").unwrap();
    let (st, h) = read_head(&mut r);
    assert_eq!((st, header(&h, "transfer-encoding")), (200, Some("chunked")));
    assert_eq!(read_response(&mut r).0, 400);
    // HTTP/1.0: Content-Length, then close.
    let (mut s, mut r) = connect(addr);
    s.write_all(b"GET /download?bytes=10 HTTP/1.0\r\n\r\n").unwrap();
    let (_, _, body) = read_response(&mut r);
    assert_eq!(body.as_bytes(), (0..10u8).collect::<Vec<_>>());
    assert!(at_eof(&mut r));
}

#[test]
fn headers_route_echoes_request_headers() {
    let addr = start(quiet());
    let (mut s, mut r) = connect(addr);
    s.write_all(b"GET /headers HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\nAuthorization: Bearer t\r\n\r\n").unwrap();
    let (st, _, body) = read_response(&mut r);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({ "host": "a.example", "x-forwarded-for": "10.0.0.1", "authorization": "Bearer t" }));
}
