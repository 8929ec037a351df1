use super::*;

fn decode_all(framing: Framing, input: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    let mut f = framing;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input {
        buf.extend_from_slice(piece);
        loop {
            match f.decode(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::NeedMore => break,
                Step::Done => return Ok((out, buf.is_empty())),
            }
        }
    }
    Err(format!("not done after all input; got {:?}", String::from_utf8_lossy(&out)))
}

#[test]
fn chunked_bodies_decode_across_any_split() {
    let wire: &[u8] = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-trailer: 1\r\n\r\n";
    let expect = b"Wikipedia in\r\n\r\nchunks.";
    for split in 0..wire.len() {
        let (out, clean) = decode_all(Framing::Chunked(Chunk::Size), &[&wire[..split], &wire[split..]]).expect("decodes");
        assert_eq!(out, expect, "split at {split}");
        assert!(clean);
    }
    // Byte by byte.
    let crlf: Vec<u8> = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
    let pieces: Vec<&[u8]> = crlf.chunks(1).collect();
    assert_eq!(decode_all(Framing::Chunked(Chunk::Size), &pieces).expect("decodes").0, b"abc");
    // Bare LF line ends are malformed framing (RFC 9112; hyper refuses them too).
    let lf: Vec<u8> = b"3\nabc\n0\n\n".to_vec();
    let pieces: Vec<&[u8]> = lf.chunks(1).collect();
    assert!(decode_all(Framing::Chunked(Chunk::Size), &pieces).is_err());
}

#[test]
fn malformed_chunks_are_refused() {
    assert!(decode_all(Framing::Chunked(Chunk::Size), &[b"zz\r\n"]).is_err());
    assert!(decode_all(Framing::Chunked(Chunk::Size), &[b"2\r\nabc\r\n0\r\n\r\n"]).is_err(), "data longer than its size");
    assert!(decode_all(Framing::Chunked(Chunk::Size), &[&[b'1'; MAX_LINE_BYTES + 1]]).is_err(), "endless size line");
    assert!(decode_all(Framing::Chunked(Chunk::Size), &[b"ffffffffffffffffff\r\n"]).is_err(), "size overflows");
}

#[test]
fn length_framing_stops_at_its_length() {
    let (out, clean) = decode_all(Framing::Length(5), &[b"he", b"llo"]).expect("decodes");
    assert_eq!(out, b"hello");
    assert!(clean);
    let (out, clean) = decode_all(Framing::Length(2), &[b"hello"]).expect("decodes");
    assert_eq!(out, b"he");
    assert!(!clean, "bytes past the end stay in the buffer (and the connection is not reused)");
}

fn head(raw: &str, method: Method) -> Result<Option<(usize, Option<Head>)>, UpstreamError> {
    parse_head(raw.as_bytes(), &method, true)
}

#[test]
fn heads_decide_framing_and_reuse() {
    let (_, h) = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: 1\r\n\r\nabc", Method::GET).expect("ok").expect("complete");
    let (status, headers, framing, keep) = h.expect("final");
    assert_eq!((status, framing, keep), (StatusCode::OK, Framing::Length(3), true));
    assert_eq!(headers.get("content-length").map(|v| v.as_bytes()), Some(&b"3"[..]));

    let (_, h) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\nconnection: close, x-drop\r\nx-drop: 1\r\nkeep-alive: 5\r\n\r\n", Method::GET).expect("ok").expect("complete");
    let (_, headers, framing, keep) = h.expect("final");
    assert_eq!(framing, Framing::Chunked(Chunk::Size));
    assert!(!keep, "connection: close");
    assert!(headers.is_empty(), "hop-by-hop, named and conflicting length headers are dropped: {headers:?}");

    let (_, h) = head("HTTP/1.0 200 OK\r\n\r\n", Method::GET).expect("ok").expect("complete");
    let (_, _, framing, keep) = h.expect("final");
    assert_eq!((framing, keep), (Framing::UntilClose, false));

    let (_, h) = head("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", Method::HEAD).expect("ok").expect("complete");
    assert_eq!(h.expect("final").2, Framing::Length(0), "HEAD answers have no body");
    let (_, h) = head("HTTP/1.1 204 No Content\r\n\r\n", Method::POST).expect("ok").expect("complete");
    assert_eq!(h.expect("final").2, Framing::Length(0));

    let (n, h) = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", Method::POST).expect("ok").expect("complete");
    assert!(h.is_none(), "interim answers are skipped");
    assert_eq!(n, "HTTP/1.1 100 Continue\r\n\r\n".len());

    assert!(head("HTTP/1.1 200 OK\r\ncontent-le", Method::GET).expect("ok").is_none(), "partial");
    assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", Method::GET).is_err());
    assert!(head("SSH-2.0-OpenSSH\r\n\r\n", Method::GET).is_err());
}

/// Reads a whole answer (head, then body until its framing says it ended, or until
/// the input ends for a close-delimited one): the body and whether the connection
/// could be reused, or why the answer was refused.
fn read_answer(raw: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let (n, head) = parse_head(raw, &Method::GET, true).map_err(|e| e.to_string())?.ok_or("the head is incomplete")?;
    let (_, _, mut framing, keep) = head.ok_or("an interim answer")?;
    let mut buf = BytesMut::from(&raw[n..]);
    let mut out = Vec::new();
    loop {
        match framing.decode(&mut buf)? {
            Step::Data(b) => out.extend_from_slice(&b),
            Step::Done => return Ok((out, keep)),
            Step::NeedMore if framing == Framing::UntilClose => return Ok((out, false)),
            Step::NeedMore => return Err("the body is incomplete".into()),
        }
    }
}

#[test]
fn malformed_and_smuggling_framings_are_refused() {
    const OK: &str = "HTTP/1.1 200 OK\r\n";
    let chunked = |body: &str| format!("{OK}transfer-encoding: chunked\r\n\r\n{body}");
    // (what, the answer as the addon sends it, the body when it must be read, or None
    // when it must be refused)
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("a plain length", format!("{OK}content-length: 5\r\n\r\nhello"), Some("hello")),
        ("a signed length", format!("{OK}content-length: +5\r\n\r\nhello"), None),
        ("a negative length", format!("{OK}content-length: -5\r\n\r\nhello"), None),
        ("a hexadecimal length", format!("{OK}content-length: 0x5\r\n\r\nhello"), None),
        ("a length with a space inside", format!("{OK}content-length: 5 5\r\n\r\nhello"), None),
        ("an empty length", format!("{OK}content-length: \r\n\r\nhello"), None),
        ("a length that overflows", format!("{OK}content-length: 99999999999999999999\r\n\r\nhello"), None),
        ("two agreeing lengths", format!("{OK}content-length: 5\r\ncontent-length: 5\r\n\r\nhello"), Some("hello")),
        ("two conflicting lengths", format!("{OK}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!"), None),
        ("a conflicting length list", format!("{OK}content-length: 5, 6\r\n\r\nhello!"), None),
        ("an agreeing length list", format!("{OK}content-length: 5, 5\r\n\r\nhello"), Some("hello")),
        ("a space before the colon", format!("{OK}content-length : 5\r\n\r\nhello"), None),
        ("an obsolete line fold", format!("{OK}x-a: 1\r\n folded\r\ncontent-length: 5\r\n\r\nhello"), None),
        (
            "length and chunked: chunked wins",
            format!("{OK}content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            Some("hello"),
        ),
        ("a coding after chunked", format!("{OK}transfer-encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), None),
        ("chunked twice", format!("{OK}transfer-encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), None),
        ("chunked in two headers", format!("{OK}transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"), None),
        ("chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string(), None),
        ("another coding alone: until close", format!("{OK}transfer-encoding: gzip\r\n\r\nhello"), Some("hello")),
        ("a chunk size with +", chunked("+5\r\nhello\r\n0\r\n\r\n"), None),
        ("a chunk size with a leading space", chunked(" 5\r\nhello\r\n0\r\n\r\n"), None),
        ("a chunk size in 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n"), None),
        ("a chunk size that is not hex", chunked("g\r\nhello\r\n0\r\n\r\n"), None),
        ("a chunk size that overflows", chunked("fffffffffffffffff\r\nhello\r\n0\r\n\r\n"), None),
        ("an empty chunk size", chunked("5\r\nhello\r\n\r\n0\r\n\r\n"), None),
        ("a chunk size of spaces", chunked("  \r\nhello\r\n0\r\n\r\n"), None),
        ("chunk extensions", chunked("5;name=value;x\r\nhello\r\n0;last\r\n\r\n"), Some("hello")),
        ("whitespace before an extension", chunked("5 ;x\r\nhello\r\n0\r\n\r\n"), Some("hello")),
        ("a bare LF in an extension", chunked("5;a\nb\r\nhello\r\n0\r\n\r\n"), None),
        ("a size line ending in a bare LF", chunked("5\nhello\r\n0\r\n\r\n"), None),
        ("a size line ending in a bare CR", chunked("5\rhello\r\n0\r\n\r\n"), None),
        ("chunk data without its CRLF", chunked("5\r\nhelloX0\r\n\r\n"), None),
        ("chunk data ending in a bare LF", chunked("5\r\nhello\n0\r\n\r\n"), None),
        ("a chunk longer than its size", chunked("3\r\nhello\r\n0\r\n\r\n"), None),
        ("a trailer field", chunked("5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"), Some("hello")),
        ("a folded trailer", chunked("0\r\nx-t: 1\r\n folded\r\n\r\n"), None),
        ("a trailer that is not a field", chunked("0\r\nnot a field\r\n\r\n"), None),
        ("a trailer section ending in a bare LF", chunked("0\r\nx-t: 1\r\n\n"), None),
    ];
    for (what, raw, want) in cases {
        match (read_answer(raw.as_bytes()), want) {
            (Ok((body, _)), Some(want)) => assert_eq!(String::from_utf8_lossy(&body), want, "{what}"),
            (Err(_), None) => {}
            (got, want) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
    }
    // An answer framed both ways is read by its chunks and its connection not reused.
    let (_, keep) = read_answer(format!("{OK}content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes()).expect("read");
    assert!(!keep, "a connection that carried an answer framed both ways is not reused");
}

// ---- against a real server on loopback ------------------------------------------

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the test server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A loopback HTTP/1.1 server answering each request with `answer(request, n)` (raw
/// bytes; `n` counts requests on the connection) and closing the connection when the
/// answer asks for it. Returns its address and the number of connections accepted.
async fn server(answer: fn(&Seen, usize) -> (Vec<u8>, bool)) -> (SocketAddr, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                for n in 0.. {
                    let Some(seen) = read_request(&mut s, &mut buf).await else { return };
                    let _ = tx.send(seen.clone());
                    let (bytes, close) = answer(&seen, n);
                    if s.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, rx)
}

async fn read_request(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Seen> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let path = req.path.unwrap_or("").to_string();
            let headers: Vec<(String, String)> =
                req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned())).collect();
            buf.advance(n);
            let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let mut body = Vec::new();
            if let Some(len) = get("content-length") {
                let len: usize = len.parse().ok()?;
                while buf.len() < len {
                    if s.read_buf(buf).await.ok()? == 0 {
                        return None;
                    }
                }
                body = buf.split_to(len).to_vec();
            } else if get("transfer-encoding").is_some() {
                let mut f = Framing::Chunked(Chunk::Size);
                loop {
                    match f.decode(buf).ok()? {
                        Step::Data(b) => body.extend_from_slice(&b),
                        Step::Done => break,
                        Step::NeedMore => {
                            if s.read_buf(buf).await.ok()? == 0 {
                                return None;
                            }
                        }
                    }
                }
            }
            return Some(Seen { path, headers, body });
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn ok_text(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), UpstreamError> {
    let resp = request(addr, &Method::GET, path, &HeaderMap::new(), OutBody::Empty).await?;
    let status = resp.status;
    Ok((status, resp.body.collect(1 << 20).await?))
}

#[tokio::test]
async fn keep_alive_connections_are_reused_and_closed_ones_are_not() {
    for c in [Client::Own, Client::Hyper] {
        keep_alive_connections_are_reused_and_closed_ones_are_not_with(c).await;
    }
}

async fn keep_alive_connections_are_reused_and_closed_ones_are_not_with(client: Client) {
    TEST_CLIENT.with(|t| t.set(Some(client)));
    own_thread_pool();
    let (addr, conns, _rx) = server(|seen, _| (ok_text(&seen.path), false)).await;
    for i in 0..5 {
        let (st, body) = get(addr, &format!("/n/{i}")).await.expect("call");
        assert_eq!((st, &body[..]), (StatusCode::OK, format!("/n/{i}").as_bytes()));
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection carried all five calls");
    assert_eq!(idle_connections(), 1);

    // A server that closes after every answer (keep-alive but closes anyway, the race
    // an idle pool must survive): each call finds the old connection closed, not broken.
    let (addr, conns, _rx) = server(|seen, _| (ok_text(&seen.path), true)).await;
    for i in 0..3 {
        let (_, body) = get(addr, &format!("/c/{i}")).await.expect("a closed idle connection is never used");
        assert_eq!(&body[..], format!("/c/{i}").as_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);

    // `connection: close` answers are not pooled at all.
    own_thread_pool();
    let (addr, _, _rx) = server(|_, _| (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)).await;
    assert_eq!(&get(addr, "/").await.expect("call").1[..], b"ok");
    assert_eq!(idle_connections(), 0);
}

#[tokio::test]
async fn chunked_and_close_delimited_answers_arrive_whole() {
    for c in [Client::Own, Client::Hyper] {
        chunked_and_close_delimited_answers_arrive_whole_with(c).await;
    }
}

async fn chunked_and_close_delimited_answers_arrive_whole_with(client: Client) {
    TEST_CLIENT.with(|t| t.set(Some(client)));
    own_thread_pool();
    let (addr, _, _rx) = server(|seen, _| match seen.path.as_str() {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n5\r\nhello\r\n1;x=y\r\n \r\n5\r\nworld\r\n0\r\nx-t: 1\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/continue" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx".to_vec(), false),
        _ => (b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(), true),
    })
    .await;
    let resp = connect(addr).await.expect("connect").send(&Method::GET, "/chunked", &HeaderMap::new(), OutBody::Empty).await.expect("call");
    assert_eq!(resp.headers.get("x-a").map(HeaderValue::as_bytes), Some(&b"1"[..]));
    assert!(resp.headers.get("transfer-encoding").is_none(), "framing is ours to choose");
    let body = axum::body::to_bytes(resp.body.into_body(), 1 << 20).await.expect("stream");
    assert_eq!(&body[..], b"hello world");
    let (st, body) = get(addr, "/continue").await.expect("call");
    assert_eq!((st, &body[..]), (StatusCode::CREATED, &b"x"[..]));
    assert_eq!(&get(addr, "/close").await.expect("call").1[..], b"until close");
}

#[tokio::test]
async fn request_bodies_stream_with_their_framing_and_limit() {
    for c in [Client::Own, Client::Hyper] {
        request_bodies_stream_with_their_framing_and_limit_with(c).await;
    }
}

async fn request_bodies_stream_with_their_framing_and_limit_with(client: Client) {
    TEST_CLIENT.with(|t| t.set(Some(client)));
    own_thread_pool();
    let (addr, _, mut rx) = server(|seen, _| (ok_text(&seen.body.len().to_string()), false)).await;
    let chunks = || futures_util::stream::iter([b"abc".as_slice(), b"", b"defg"].map(|b| Ok::<_, io::Error>(Bytes::from_static(b))));
    let body = axum::body::Body::from_stream(chunks());
    let mut headers = HeaderMap::new();
    headers.insert("x-keep", HeaderValue::from_static("1"));
    headers.insert("content-length", HeaderValue::from_static("999"));
    let resp = request(addr, &Method::PUT, "/up?q=1", &headers, OutBody::Stream { body, length: None, limit: 100 }).await.expect("call");
    assert_eq!(&resp.body.collect(100).await.expect("body")[..], b"7");
    let seen = rx.recv().await.expect("seen");
    assert_eq!(seen.path, "/up?q=1");
    assert_eq!(seen.body, b"abcdefg");
    let header = |k: &str| seen.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(header("transfer-encoding"), Some("chunked"), "no length declared: chunked");
    assert_eq!(header("content-length"), None, "the caller's own framing headers are not sent");
    assert_eq!(header("x-keep"), Some("1"));
    assert_eq!(header("host"), Some(addr.to_string().as_str()));

    let body = axum::body::Body::from_stream(chunks());
    let resp =
        request(addr, &Method::POST, "/", &HeaderMap::new(), OutBody::Stream { body, length: Some(7), limit: 100 }).await.expect("call");
    assert_eq!(&resp.body.collect(100).await.expect("body")[..], b"7");
    assert_eq!(rx.recv().await.expect("seen").headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()), Some("7"));

    let body = axum::body::Body::from_stream(chunks());
    let err = request(addr, &Method::POST, "/", &HeaderMap::new(), OutBody::Stream { body, length: None, limit: 5 })
        .await
        .err()
        .expect("over the limit");
    assert!(matches!(err, UpstreamError::BodyTooLarge(5)), "{err}");

    let (_, body) = get(addr, "/").await.expect("the pool is still usable after a failed call");
    assert_eq!(&body[..], b"0");
}

#[tokio::test]
async fn refused_and_malformed_answers_are_told_apart() {
    for c in [Client::Own, Client::Hyper] {
        refused_and_malformed_answers_are_told_apart_with(c).await;
    }
}

async fn refused_and_malformed_answers_are_told_apart_with(client: Client) {
    TEST_CLIENT.with(|t| t.set(Some(client)));
    own_thread_pool();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = get(addr, "/").await.expect_err("nothing listens");
    assert!(err.is_connect(), "{err}");

    let (addr, _, _rx) = server(|seen, _| match seen.path.as_str() {
        "/garbage" => (b"SSH-2.0-OpenSSH_9\r\n\r\n".to_vec(), true),
        "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(), true),
        "/big" => (ok_text(&"x".repeat(100)), false),
        _ => (Vec::new(), true),
    })
    .await;
    for (path, what) in [("/garbage", "not valid HTTP"), ("/short", "middle of its answer"), ("/silent", "without answering")] {
        let err = get(addr, path).await.expect_err("broken");
        assert!(!err.is_connect() && err.to_string().contains(what), "{path}: {err}");
    }
    let resp = request(addr, &Method::GET, "/big", &HeaderMap::new(), OutBody::Empty).await.expect("call");
    assert!(matches!(resp.body.collect(10).await, Err(UpstreamError::ReplyTooLarge(10))));
}
