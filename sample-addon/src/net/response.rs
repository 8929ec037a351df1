//! The JSON response every route answers with, and what the connection does after writing it.
//! Routes build a [`Response`]; the connection handler ([`super::server`]) encodes it, so a
//! route never touches the socket.

use serde_json::{json, Map, Value};

use super::http::Request;

/// What the connection handler does after the response has been written and flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving the connection (unless the request or `close` says otherwise).
    Nothing,
    /// Exit the process with this code (shortly after the response went out).
    Exit(i32),
    /// Allocate and touch memory until the kernel kills the process.
    Oom,
}

/// One answer of a route: always a JSON body (errors are `{"error": "..."}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body (`Content-Type: application/json` is added by the server).
    pub body: Value,
    /// Headers beyond Content-Type and the framing ones, e.g. `Allow` on a 405.
    pub headers: Vec<(&'static str, String)>,
    /// What the connection does once the response is out (exit, eat memory).
    pub after: After,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Self {
        Response { status, body, headers: Vec::new(), after: After::Nothing, close: false }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Response::json(status, json!({ "error": message.into() }))
    }

    pub fn body_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// 405 with an `Allow` header listing `allowed`.
pub fn method_not_allowed(allowed: &[&str]) -> Response {
    let mut r = Response::error(405, format!("method not allowed; use {}", allowed.join(", ")));
    r.headers.push(("Allow", allowed.join(", ")));
    r
}

/// Parse a JSON request body; an empty body is `null`.
pub fn json_body(req: &Request) -> Result<Value, Response> {
    if req.body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&req.body).map_err(|e| Response::error(400, format!("invalid JSON body: {e}")))
}

/// Headers as an object: repeated names joined with ", " in order of arrival.
pub fn join_headers(headers: &[(String, String)]) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        match out.get_mut(name) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            _ => {
                out.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    out
}
