//! WebSocket echo (RFC 6455) at `GET /ws` and `GET /ws/...`: server handshake (SHA-1 and
//! base64 implemented here), a frame codec, and an echo session that answers every text or
//! binary message with the same message (one unfragmented frame), ping with pong, and close
//! with close. No extensions (RSV bits must be 0), no server-initiated pings.

use std::io::{self, BufRead, Read, Write};

use serde_json::json;

use super::http::Request;
use super::response::Response;

/// The GUID of RFC 6455 §1.3 appended to `Sec-WebSocket-Key`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

#[cfg(test)]
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

// ---------------------------------------------------------------------------------------------
// SHA-1 (FIPS 180-4) and base64 (RFC 4648), just enough for Sec-WebSocket-Accept.

pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    let mut w = [0u32; 80];
    for block in msg.chunks_exact(64) {
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decoded length of a canonical, padded base64 string (`None` when it is not base64).
fn base64_decoded_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() & 3 != 0 {
        return None;
    }
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 || !b[..b.len() - pad].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/') {
        return None;
    }
    Some(b.len() / 4 * 3 - pad)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(WS_GUID.as_bytes());
    base64_encode(&sha1(&input))
}

// ---------------------------------------------------------------------------------------------
// Handshake

/// Whether `path` belongs to the WebSocket echo (`/ws` or anything under `/ws/`).
pub fn is_ws_path(path: &str) -> bool {
    path == "/ws" || path.starts_with("/ws/")
}

fn header_has_token(req: &Request, name: &str, token: &str) -> bool {
    req.headers.iter().filter(|(n, _)| n == name).flat_map(|(_, v)| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a WebSocket upgrade (`Upgrade: websocket`).
pub fn wants_upgrade(req: &Request) -> bool {
    header_has_token(req, "upgrade", "websocket")
}

/// Validate an upgrade request and build the `101 Switching Protocols` response head, or the
/// error response to send instead (the connection then stays plain HTTP).
/// The first offered `Sec-WebSocket-Protocol` (if any) is selected and echoed back.
pub fn handshake(req: &Request) -> Result<Vec<u8>, Response> {
    if req.method != "GET" {
        let mut r = Response::error(405, "WebSocket upgrades must use GET");
        r.headers.push(("Allow", "GET".into()));
        return Err(r);
    }
    if req.version != (1, 1) {
        return Err(Response::error(400, "WebSocket upgrades need HTTP/1.1"));
    }
    if !wants_upgrade(req) || !header_has_token(req, "connection", "upgrade") {
        let mut r =
            Response::json(426, json!({ "error": "this is a WebSocket endpoint: send Upgrade: websocket and Connection: Upgrade" }));
        r.headers.push(("Upgrade", "websocket".into()));
        return Err(r);
    }
    if req.header("sec-websocket-version") != Some("13") {
        let mut r = Response::json(426, json!({ "error": "unsupported Sec-WebSocket-Version (need 13)" }));
        r.headers.push(("Sec-WebSocket-Version", "13".into()));
        return Err(r);
    }
    let key = req.header("sec-websocket-key").unwrap_or("");
    if base64_decoded_len(key) != Some(16) {
        return Err(Response::error(400, "Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    if req.header("content-length").is_some_and(|v| v != "0") || req.header("transfer-encoding").is_some() {
        return Err(Response::error(400, "a WebSocket upgrade request has no body"));
    }
    let protocol = req
        .headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .find(|p| !p.is_empty());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(p) = protocol {
        out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    out.push_str("\r\n");
    Ok(out.into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Frame codec

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

#[derive(Debug)]
pub enum WsError {
    /// The peer closed the TCP connection at a frame boundary.
    Eof,
    /// Read timed out (no traffic for the idle timeout).
    Timeout,
    /// Any other I/O failure, including EOF in the middle of a frame.
    Io,
}

impl From<io::Error> for WsError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WsError::Timeout,
            _ => WsError::Io,
        }
    }
}

/// Read a frame header. `Eof` only when the connection ends before its first byte.
pub fn read_frame_header<R: Read>(r: &mut R) -> Result<FrameHeader, WsError> {
    let mut b = [0u8; 2];
    loop {
        match r.read(&mut b[..1]) {
            Ok(0) => return Err(WsError::Eof),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    r.read_exact(&mut b[1..])?;
    let len = match b[1] & 0x7f {
        126 => {
            let mut x = [0u8; 2];
            r.read_exact(&mut x)?;
            u64::from(u16::from_be_bytes(x))
        }
        127 => {
            let mut x = [0u8; 8];
            r.read_exact(&mut x)?;
            u64::from_be_bytes(x)
        }
        n => u64::from(n),
    };
    let mask = if b[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        r.read_exact(&mut m)?;
        Some(m)
    } else {
        None
    };
    Ok(FrameHeader { fin: b[0] & 0x80 != 0, rsv: (b[0] >> 4) & 0x7, opcode: b[0] & 0x0f, mask, len })
}

/// XOR `data` with `mask`, where `data` starts at byte `offset` of the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// Encode a frame header (shortest length form).
pub fn encode_frame_header(fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    out
}

/// Encode a whole frame; `mask` is applied to the payload (clients mask, servers do not).
pub fn encode_frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = encode_frame_header(fin, opcode, mask, payload.len() as u64);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
    out
}

/// Write one unmasked, unfragmented frame (the server side).
pub fn write_frame<W: Write>(w: &mut W, opcode: u8, payload: &[u8]) -> io::Result<()> {
    if payload.len() <= 64 * 1024 {
        w.write_all(&encode_frame(true, opcode, None, payload))?;
    } else {
        w.write_all(&encode_frame_header(true, opcode, None, payload.len() as u64))?;
        w.write_all(payload)?;
    }
    w.flush()
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    // Control frame payloads are at most 125 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// Close codes a peer may send (RFC 6455 §7.4 and the IANA registry; 3000-4999 are free).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

// ---------------------------------------------------------------------------------------------
// Echo session

#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Largest message (sum of its fragments) accepted; beyond it the connection is closed 1009.
    pub max_message_bytes: usize,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEnd {
    /// The client sent a close frame (its code, if any) and got the close reply.
    ClientClosed(Option<u16>),
    /// The server failed the connection with this close code (protocol error, too big, …).
    ServerClosed(u16, String),
    /// No traffic for the idle timeout: close 1001 was sent.
    IdleTimeout,
    /// The TCP connection ended or failed without a closing handshake.
    Gone,
}

/// Counters of one session (for the log line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WsStats {
    pub messages: u64,
    pub bytes: u64,
}

/// Run the echo session until it ends. The caller sets the socket's read timeout (the idle
/// timeout: it only fires when nothing at all arrives for that long) and closes the socket
/// afterwards (with a lingering close after `ServerClosed`).
pub fn echo_session<R: BufRead, W: Write>(reader: &mut R, writer: &mut W, cfg: &WsConfig, stats: &mut WsStats) -> WsEnd {
    let fail = |writer: &mut W, code: u16, why: &str| {
        let _ = write_frame(writer, OP_CLOSE, &close_payload(code, why));
        WsEnd::ServerClosed(code, why.to_string())
    };
    // The message being assembled from fragments: (opcode, payload).
    let mut partial: Option<(u8, Vec<u8>)> = None;
    loop {
        let h = match read_frame_header(reader) {
            Ok(h) => h,
            Err(WsError::Timeout) => {
                let _ = write_frame(writer, OP_CLOSE, &close_payload(CLOSE_GOING_AWAY, "idle timeout"));
                return WsEnd::IdleTimeout;
            }
            Err(WsError::Eof | WsError::Io) => return WsEnd::Gone,
        };
        if h.rsv != 0 {
            return fail(writer, CLOSE_PROTOCOL_ERROR, "RSV bits set without an extension");
        }
        let Some(mask) = h.mask else {
            return fail(writer, CLOSE_PROTOCOL_ERROR, "client frames must be masked");
        };
        let is_control = h.opcode & 0x8 != 0;
        if is_control && (!h.fin || h.len > 125) {
            return fail(writer, CLOSE_PROTOCOL_ERROR, "control frames must be unfragmented with at most 125 bytes");
        }
        if !matches!(h.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
            return fail(writer, CLOSE_PROTOCOL_ERROR, "reserved opcode");
        }
        match h.opcode {
            OP_CONTINUATION if partial.is_none() => {
                return fail(writer, CLOSE_PROTOCOL_ERROR, "continuation without a message");
            }
            OP_TEXT | OP_BINARY if partial.is_some() => {
                return fail(writer, CLOSE_PROTOCOL_ERROR, "new message before the previous one was finished");
            }
            _ => {}
        }
        let already = partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
        if !is_control && already.saturating_add(h.len) > cfg.max_message_bytes as u64 {
            let why = format!("message exceeds {} bytes", cfg.max_message_bytes);
            return fail(writer, CLOSE_TOO_BIG, &why);
        }
        // Read (and unmask) the payload; `h.len` is bounded by the checks above.
        let mut own = Vec::new();
        let continuing = !is_control && partial.is_some();
        let buf: &mut Vec<u8> = match (&mut partial, continuing) {
            (Some((_, p)), true) => p,
            _ => &mut own,
        };
        let start = buf.len();
        buf.resize(start + h.len as usize, 0);
        if reader.read_exact(&mut buf[start..]).is_err() {
            return WsEnd::Gone;
        }
        apply_mask(&mut buf[start..], mask, 0);
        // `None` when the bytes were appended to the message being assembled.
        let payload = (!continuing).then_some(own);
        stats.bytes += h.len;
        match h.opcode {
            OP_PING => {
                if write_frame(writer, OP_PONG, &payload.unwrap_or_default()).is_err() {
                    return WsEnd::Gone;
                }
            }
            OP_PONG => {}
            OP_CLOSE => {
                let p = payload.unwrap_or_default();
                let code = match p.len() {
                    0 => None,
                    1 => return fail(writer, CLOSE_PROTOCOL_ERROR, "close payload of 1 byte"),
                    _ => Some(u16::from_be_bytes([p[0], p[1]])),
                };
                if code.is_some_and(|c| !valid_close_code(c)) {
                    return fail(writer, CLOSE_PROTOCOL_ERROR, "invalid close code");
                }
                if p.len() > 2 && std::str::from_utf8(&p[2..]).is_err() {
                    return fail(writer, CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8");
                }
                let reply = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                let _ = write_frame(writer, OP_CLOSE, &reply);
                return WsEnd::ClientClosed(code);
            }
            _ => {
                // Data frame: start or continue a message; deliver it when FIN is set.
                if let Some(p) = payload {
                    partial = Some((h.opcode, p));
                }
                if h.fin {
                    let (opcode, message) = partial.take().unwrap_or((OP_BINARY, Vec::new()));
                    if opcode == OP_TEXT && std::str::from_utf8(&message).is_err() {
                        return fail(writer, CLOSE_INVALID_PAYLOAD, "text message is not UTF-8");
                    }
                    stats.messages += 1;
                    if write_frame(writer, opcode, &message).is_err() {
                        return WsEnd::Gone;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        // 55/56/64-byte boundaries of the padding.
        assert_eq!(hex(&sha1(&[b'a'; 64])), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
        assert_eq!(hex(&sha1(&vec![b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn base64_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64_encode(i.as_bytes()), o);
        }
        assert_eq!(base64_decoded_len("dGhlIHNhbXBsZSBub25jZQ=="), Some(16));
        assert_eq!(base64_decoded_len("Zm9vYmFy"), Some(6));
        assert_eq!(base64_decoded_len("Zm9vYmE"), None);
        assert_eq!(base64_decoded_len("Zm9v!mFy"), None);
        assert_eq!(base64_decoded_len(""), None);
    }

    #[test]
    fn rfc6455_accept_vector() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn upgrade_req(extra: &[(&str, &str)]) -> Request {
        let mut headers: Vec<(String, String)> = [
            ("host", "x"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            headers.retain(|(n, _)| n != k);
            if !v.is_empty() {
                headers.push((k.to_string(), v.to_string()));
            }
        }
        Request { method: "GET".into(), path: "/ws".into(), query: String::new(), version: (1, 1), headers, body: Vec::new() }
    }

    #[test]
    fn handshake_ok_and_errors() {
        let ok = String::from_utf8(handshake(&upgrade_req(&[])).unwrap()).unwrap();
        assert!(ok.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(ok.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!ok.contains("Sec-WebSocket-Protocol"));
        assert!(ok.ends_with("\r\n\r\n"));
        let proto = handshake(&upgrade_req(&[("sec-websocket-protocol", "chat, superchat")]));
        assert!(String::from_utf8(proto.unwrap()).unwrap().contains("Sec-WebSocket-Protocol: chat\r\n"));
        let status = |r: Request| handshake(&r).unwrap_err().status;
        assert_eq!(status(upgrade_req(&[("sec-websocket-version", "8")])), 426);
        assert_eq!(status(upgrade_req(&[("connection", "keep-alive")])), 426);
        assert_eq!(status(upgrade_req(&[("upgrade", "")])), 426);
        assert_eq!(status(upgrade_req(&[("sec-websocket-key", "")])), 400);
        assert_eq!(status(upgrade_req(&[("sec-websocket-key", "c2hvcnQ=")])), 400);
        let mut post = upgrade_req(&[]);
        post.method = "POST".into();
        assert_eq!(status(post), 405);
        let mut old = upgrade_req(&[]);
        old.version = (1, 0);
        assert_eq!(status(old), 400);
        assert!(is_ws_path("/ws") && is_ws_path("/ws/room/1"));
        assert!(!is_ws_path("/wss") && !is_ws_path("/"));
    }

    #[test]
    fn frame_header_lengths_roundtrip() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 33] {
            let mask = Some([1, 2, 3, 4]);
            let enc = encode_frame_header(true, OP_BINARY, mask, len);
            let expect_len = 2
                + 4
                + if len < 126 {
                    0
                } else if len <= 65535 {
                    2
                } else {
                    8
                };
            assert_eq!(enc.len(), expect_len, "len {len}");
            let h = read_frame_header(&mut Cursor::new(enc)).unwrap();
            assert_eq!(h, FrameHeader { fin: true, rsv: 0, opcode: OP_BINARY, mask, len });
        }
        // RFC 6455 §5.7 examples.
        let h = read_frame_header(&mut Cursor::new(vec![0x81, 0x05])).unwrap();
        assert_eq!((h.fin, h.opcode, h.mask, h.len), (true, OP_TEXT, None, 5));
        let mut masked = vec![0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut masked, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(masked, b"Hello");
        assert_eq!(
            encode_frame(true, OP_TEXT, Some([0x37, 0xfa, 0x21, 0x3d]), b"Hello"),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(encode_frame(false, OP_TEXT, None, b"Hel"), [0x01, 0x03, b'H', b'e', b'l']);
        assert_eq!(encode_frame_header(true, OP_BINARY, None, 256), [0x82, 0x7e, 0x01, 0x00]);
        assert!(matches!(read_frame_header(&mut Cursor::new(Vec::new())), Err(WsError::Eof)));
        assert!(matches!(read_frame_header(&mut Cursor::new(vec![0x81, 0xfe, 0x01])), Err(WsError::Io)));
    }

    /// Run a session on canned client frames; returns (end, server frames as (opcode, payload)).
    fn session(input: Vec<u8>, max: usize) -> (WsEnd, Vec<(u8, Vec<u8>)>) {
        let mut r = Cursor::new(input);
        let mut out = Vec::new();
        let mut stats = WsStats::default();
        let end = echo_session(&mut r, &mut out, &WsConfig { max_message_bytes: max }, &mut stats);
        let mut frames = Vec::new();
        let mut c = Cursor::new(out);
        while let Ok(h) = read_frame_header(&mut c) {
            assert!(h.mask.is_none() && h.fin);
            let mut p = vec![0; h.len as usize];
            c.read_exact(&mut p).unwrap();
            frames.push((h.opcode, p));
        }
        (end, frames)
    }

    const M: Option<[u8; 4]> = Some([0xa1, 0xb2, 0xc3, 0xd4]);

    #[test]
    fn session_echo_fragments_ping_close() {
        let mut input = Vec::new();
        input.extend(encode_frame(true, OP_TEXT, M, b"hello"));
        input.extend(encode_frame(false, OP_BINARY, M, &[1, 2]));
        input.extend(encode_frame(true, OP_PING, M, b"p")); // interleaved control frame
        input.extend(encode_frame(false, OP_CONTINUATION, M, &[3]));
        input.extend(encode_frame(true, OP_CONTINUATION, M, &[4, 5]));
        input.extend(encode_frame(true, OP_PONG, M, b"ignored"));
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        input.extend(encode_frame(true, OP_BINARY, M, &big));
        input.extend(encode_frame(true, OP_TEXT, M, b""));
        input.extend(encode_frame(true, OP_CLOSE, M, &close_payload(CLOSE_NORMAL, "bye")));
        input.extend(encode_frame(true, OP_TEXT, M, b"after close: ignored"));
        let (end, frames) = session(input, 1 << 20);
        assert_eq!(end, WsEnd::ClientClosed(Some(1000)));
        assert_eq!(
            frames,
            vec![
                (OP_TEXT, b"hello".to_vec()),
                (OP_PONG, b"p".to_vec()),
                (OP_BINARY, vec![1, 2, 3, 4, 5]),
                (OP_BINARY, big),
                (OP_TEXT, Vec::new()),
                (OP_CLOSE, 1000u16.to_be_bytes().to_vec()),
            ]
        );
    }

    fn close_code(frames: &[(u8, Vec<u8>)]) -> u16 {
        let (op, p) = frames.last().expect("a close frame");
        assert_eq!(*op, OP_CLOSE);
        u16::from_be_bytes([p[0], p[1]])
    }

    #[test]
    fn session_errors() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (encode_frame(true, OP_TEXT, None, b"unmasked"), 1002),
            (encode_frame(true, OP_CONTINUATION, M, b"x"), 1002),
            (encode_frame(true, 0x3, M, b"x"), 1002),
            (encode_frame(false, OP_PING, M, b"x"), 1002),
            (encode_frame(true, OP_PING, M, &[0; 126]), 1002),
            (encode_frame(true, OP_CLOSE, M, &[3]), 1002),
            (encode_frame(true, OP_CLOSE, M, &close_payload(1005, "")), 1002),
            (encode_frame(true, OP_TEXT, M, &[0xff, 0xfe]), 1007),
            (encode_frame(true, OP_BINARY, M, &[0; 2000]), 1009),
            (
                {
                    let mut f = encode_frame(true, OP_TEXT, M, b"x");
                    f[0] |= 0x40; // RSV1
                    f
                },
                1002,
            ),
            (
                {
                    let mut f = encode_frame(false, OP_TEXT, M, b"a");
                    f.extend(encode_frame(true, OP_TEXT, M, b"b"));
                    f
                },
                1002,
            ),
            (
                {
                    // The cap counts all fragments of a message.
                    let mut f = encode_frame(false, OP_BINARY, M, &[0; 600]);
                    f.extend(encode_frame(true, OP_CONTINUATION, M, &[0; 600]));
                    f
                },
                1009,
            ),
            // A huge 64-bit length is refused before anything is allocated.
            (encode_frame_header(true, OP_BINARY, M, 1 << 62), 1009),
        ];
        for (i, (input, code)) in cases.into_iter().enumerate() {
            let (end, frames) = session(input, 1024);
            assert!(matches!(end, WsEnd::ServerClosed(c, _) if c == code), "case {i}: {end:?}");
            assert_eq!(close_code(&frames), code, "case {i}");
        }
        // Close without a code: empty close reply. EOF without close: Gone.
        let (end, frames) = session(encode_frame(true, OP_CLOSE, M, b""), 1024);
        assert_eq!(end, WsEnd::ClientClosed(None));
        assert_eq!(frames, vec![(OP_CLOSE, Vec::new())]);
        let (end, frames) = session(encode_frame(true, OP_TEXT, M, b"hi"), 1024);
        assert_eq!(end, WsEnd::Gone);
        assert_eq!(frames, vec![(OP_TEXT, b"hi".to_vec())]);
        let mut cut = encode_frame(true, OP_TEXT, M, b"hello");
        cut.truncate(8);
        assert_eq!(session(cut, 1024).0, WsEnd::Gone);
    }
}
