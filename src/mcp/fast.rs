//! The hot path of `/mcp`: a stateless (2026-07-28) `tools/call` of a tool the caller may
//! call, answered as JSON without going through rmcp's per-request service (which spawns a
//! service loop and its tasks for every stateless request, about as much CPU again as the
//! action's own call; BENCHMARKS.md section 7). It takes only requests it can check as
//! strictly as the SDK does — the protocol headers, `Mcp-Method`/`Mcp-Name`, the request's
//! `_meta`, the `Host`, no `Origin`, no `Mcp-Param-*`, no input responses — and hands
//! anything else, and any call of a tool it does not know, back untouched to rmcp.

use axum::body::Body;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CallError, Mcp, Scope};

const STATELESS: &str = "2026-07-28";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    jsonrpc: String,
    id: Value,
    method: String,
    params: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
    #[serde(rename = "_meta")]
    meta: Map<String, Value>,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut all = h.get_all(name).iter();
    let one = all.next()?.to_str().ok()?;
    all.next().is_none().then_some(one.trim())
}

/// Whether `Host` is one of `allowed` (an entry without a port allows any port), as the
/// SDK's own check decides for the plain names and addresses the config holds.
fn host_allowed(h: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = header(h, "host") else { return false };
    let host = host.to_ascii_lowercase();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n),
    };
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == host || a == name || a.trim_start_matches('[').trim_end_matches(']') == name
    })
}

/// The parsed call, when the request is one this path may answer.
fn parse(parts: &Parts, body: &Bytes, allowed_hosts: &[String]) -> Option<Call> {
    let h = &parts.headers;
    let plain = parts.method == axum::http::Method::POST
        && h.get(header::ORIGIN).is_none()
        && host_allowed(h, allowed_hosts)
        && header(h, "mcp-protocol-version") == Some(STATELESS)
        && header(h, "mcp-method") == Some("tools/call")
        && header(h, "content-type").is_some_and(|c| c.starts_with("application/json"))
        && header(h, "accept").is_some_and(|a| a.contains("application/json") && a.contains("text/event-stream"))
        && !h.keys().any(|k| k.as_str().starts_with("mcp-param-"));
    if !plain {
        return None;
    }
    let call: Call = serde_json::from_slice(body).ok()?;
    let meta_ok = call.params.meta.get("io.modelcontextprotocol/protocolVersion").and_then(Value::as_str) == Some(STATELESS)
        && call.params.meta.get("io.modelcontextprotocol/clientCapabilities").is_some_and(Value::is_object);
    let id_ok = call.id.is_string() || call.id.as_i64().is_some();
    (call.jsonrpc == "2.0" && call.method == "tools/call" && meta_ok && id_ok && header(h, "mcp-name") == Some(call.params.name.as_str()))
        .then_some(call)
}

/// Answers a stateless `tools/call`, or gives the request back for rmcp to serve.
pub async fn try_call(mcp: &Mcp, scope: &Scope, parts: Parts, body: Bytes, allowed_hosts: &[String]) -> Result<Response, (Parts, Bytes)> {
    let Some(call) = parse(&parts, &body, allowed_hosts) else { return Err((parts, body)) };
    let result = match mcp.call(scope, &call.params.name, call.params.arguments).await {
        Ok(r) => r,
        // rmcp answers unknown tools and internal errors in the protocol's own shape.
        Err(CallError::UnknownTool(_) | CallError::Internal(_)) => return Err((parts, body)),
    };
    let reply = serde_json::json!({"jsonrpc": "2.0", "id": call.id, "result": result});
    let mut resp = Response::new(Body::from(reply.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().method("POST").uri("/mcp");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const GOOD: &[(&str, &str)] = &[
        ("host", "127.0.0.1:7080"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "pay.add"),
    ];

    fn body(meta: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"pay.add","arguments":{{"a":1}},"_meta":{meta}}}}}"#
        ))
    }

    #[test]
    fn takes_only_what_it_can_check() {
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        let meta = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
        assert!(parse(&parts(GOOD), &body(meta), &hosts).is_some());
        let mut v6 = GOOD.to_vec();
        v6[0] = ("host", "[::1]:7080");
        assert!(parse(&parts(&v6), &body(meta), &hosts).is_some());
        // Anything else goes to rmcp.
        for (k, v) in [
            ("host", "evil.example"),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/list"),
            ("mcp-name", "pay.echo"),
            ("accept", "application/json"),
            ("content-type", "text/plain"),
        ] {
            let h: Vec<(&str, &str)> = GOOD.iter().map(|(hk, hv)| if *hk == k { (k, v) } else { (*hk, *hv) }).collect();
            assert!(parse(&parts(&h), &body(meta), &hosts).is_none(), "{k}: {v}");
        }
        let mut origin = GOOD.to_vec();
        origin.push(("origin", "https://shop.example"));
        assert!(parse(&parts(&origin), &body(meta), &hosts).is_none());
        let mut param = GOOD.to_vec();
        param.push(("mcp-param-a", "1"));
        assert!(parse(&parts(&param), &body(meta), &hosts).is_none());
        assert!(parse(&parts(GOOD), &body(r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#), &hosts).is_none());
        assert!(parse(&parts(GOOD), &body(r#"{}"#), &hosts).is_none());
        let extra =
            Bytes::from(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pay.add","requestState":"x","_meta":{}}}"#);
        assert!(parse(&parts(GOOD), &extra, &hosts).is_none());
    }
}
