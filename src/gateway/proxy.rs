//! `ANY /gw/{addon}/{path…}`: requests passed through to the addon's service, bodies
//! streamed both ways, hop-by-hop headers dropped, the API key never forwarded, the body
//! limit enforced (413), and WebSocket upgrades spliced to a `websocket` service. Instances
//! are chosen like actions are: round robin over healthy ones, breakers respected.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{too_large, Gateway};
use crate::addons::dispatch::DispatchError;
use crate::addons::AddonError;
use crate::http::{ApiError, ErrorCode};
use crate::model::ServiceType;
use crate::upstream::{self, OutBody, UpstreamError, HOP_BY_HOP};

/// Drops hop-by-hop headers (and those named in `Connection`), `Expect` (answered here, not
/// by the addon) and the caller's API key.
fn forwardable(headers: &HeaderMap, keep_upgrade: bool) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len() + 4);
    for (k, v) in headers {
        let name = k.as_str();
        let hop = HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name);
        let upgrade_hdr = keep_upgrade && (name == "connection" || name == "upgrade");
        if (hop && !upgrade_hdr) || name == "apikey" || name == "host" || name == "expect" || name == "content-length" {
            continue;
        }
        if name == "authorization" && v.to_str().is_ok_and(|a| a.to_ascii_lowercase().starts_with("bearer ak_")) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

fn is_upgrade(req: &Request) -> bool {
    req.headers().get(header::UPGRADE).is_some()
        && req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().split(',').any(|t| t.trim() == "upgrade"))
}

/// Passes `req` to the addon installed as `addon`, at `/{rest}` with the same query.
/// `client_ip` is the client's address as the auth rule found it.
pub async fn forward(
    gw: &Arc<Gateway>,
    addon: &str,
    rest: &str,
    peer: SocketAddr,
    client_ip: IpAddr,
    application: &str,
    req: Request,
) -> Response {
    match forward_inner(gw, addon, rest, peer, client_ip, application, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward_inner(
    gw: &Arc<Gateway>,
    addon: &str,
    rest: &str,
    peer: SocketAddr,
    client_ip: IpAddr,
    application: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upgrade = is_upgrade(&req);
    let services = gw.addons.services_of(addon).await.map_err(ApiError::from)?;
    let want = if upgrade { ServiceType::Websocket } else { ServiceType::RestApi };
    let service_id = services
        .iter()
        .find(|(_, t)| *t == want)
        .or_else(|| services.iter().find(|(_, t)| *t == ServiceType::RestApi))
        .or(services.first())
        .map(|(id, _)| id.clone())
        .ok_or_else(|| ApiError::from(AddonError::NotFound(format!("no addon is installed as `{addon}`"))))?;
    let limit = gw.cfg.gateway.max_body_bytes;
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidRequest, "content-length is not a number; send the body's length in decimal digits")
                        .field_name("content-length")
                })?,
        ),
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let path_q = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    let mut headers = forwardable(req.headers(), upgrade);
    let xff = match req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if client_ip != peer.ip() => format!("{prev}, {}", peer.ip()),
        _ => client_ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    if let Some(h) = req.headers().get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&header_text(application)) {
        headers.insert(HeaderName::from_static("x-addond-application"), v);
    }
    let dispatcher = &gw.addons.dispatcher;
    let candidates = dispatcher.candidates(&service_id);
    if candidates.is_empty() {
        return Err(ApiError::from(AddonError::Dispatch(DispatchError::NoHealthy(addon.to_string()))));
    }
    let has_body = declared.is_some_and(|n| n > 0) || (declared.is_none() && req.headers().contains_key(header::TRANSFER_ENCODING));
    let method = req.method().clone();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut body = Some(std::mem::take(req.body_mut()));
    let mut last_err = None;
    for (id, addr) in candidates.iter() {
        if !dispatcher.admit(id) {
            continue;
        }
        if let Some(on_upgrade) = client_upgrade {
            let resp = websocket(addr, &path_q, &method, headers, on_upgrade).await;
            dispatcher.report(&service_id, id, resp.is_ok());
            return resp;
        }
        // Only a refused connection moves on to the next instance: the request has not
        // left addond then, so even its body can still go elsewhere.
        let conn = match upstream::connect(addr).await {
            Ok(c) => c,
            Err(e) => {
                dispatcher.report(&service_id, id, false);
                last_err = Some(e.to_string());
                continue;
            }
        };
        let out = match body.take() {
            Some(b) if has_body => OutBody::Stream { body: b, length: declared, limit },
            _ => OutBody::Empty,
        };
        // Counted until the answer's head is here: a rollout drains an instance by this.
        let counted = dispatcher.enter(id);
        let sent = conn.send(&method, &path_q, &headers, out).await;
        drop(counted);
        return match sent {
            Ok(resp) => {
                dispatcher.report(&service_id, id, !matches!(resp.status.as_u16(), 502..=504));
                let mut answer = Response::new(resp.body.into_body());
                *answer.status_mut() = resp.status;
                *answer.headers_mut() = resp.headers;
                Ok(answer)
            }
            Err(UpstreamError::BodyTooLarge(_)) => Err(too_large(limit)),
            Err(UpstreamError::ClientBody(e)) => Err(ApiError::new(
                ErrorCode::InvalidBody,
                format!("the request body could not be read ({e}); frame it with one Content-Length or with valid chunked encoding"),
            )
            .field_name("body")),
            Err(UpstreamError::ClientBodyTimeout(e)) => {
                Err(ApiError::new(ErrorCode::RequestTimeout, format!("{e}; send the whole body right after the request head"))
                    .field_name("body"))
            }
            Err(e) => {
                dispatcher.report(&service_id, id, false);
                Err(ApiError::new(ErrorCode::UpstreamError, format!("the addon's connection failed mid-request (not retried): {e}")))
            }
        };
    }
    Err(match last_err {
        Some(e) => ApiError::new(ErrorCode::UpstreamError, format!("no instance of `{addon}` accepted the connection: {e}")),
        None => ApiError::from(AddonError::Dispatch(DispatchError::AllOpen(addon.to_string()))),
    })
}

/// Opens the upgrade to the instance, answers the client with the instance's 101, and
/// splices the two connections for as long as either side keeps them open.
async fn websocket(
    addr: std::net::SocketAddr,
    path_q: &str,
    method: &axum::http::Method,
    headers: HeaderMap,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Result<Response, ApiError> {
    let bad = |e: String| ApiError::new(ErrorCode::UpstreamError, e);
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| bad(format!("cannot connect to the addon: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| bad(e.to_string()))?;
    tokio::spawn(conn.with_upgrades());
    let mut breq = hyper::Request::builder().method(method.clone()).uri(path_q);
    if let Some(h) = breq.headers_mut() {
        *h = headers;
        h.insert(header::HOST, HeaderValue::from_str(&addr.to_string()).map_err(|e| bad(e.to_string()))?);
    }
    let breq = breq.body(Empty::<bytes::Bytes>::new()).map_err(|e| bad(e.to_string()))?;
    let resp = sender.send_request(breq).await.map_err(|e| bad(format!("the addon refused the upgrade: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    let backend_upgrade = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok((client, backend)) => {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    out.body(Body::empty()).map_err(|e| bad(e.to_string()))
}

/// An application's name as a header value: display names ("모바일 앱") have bytes a header
/// may not carry, so those bytes and `%` are percent-encoded (`%EB%AA%A8…`); ASCII names
/// pass unchanged.
fn header_text(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if ((0x21..0x7f).contains(&b) && b != b'%') || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn application_names_as_header_text() {
        assert_eq!(super::header_text("shop-app"), "shop-app");
        assert_eq!(super::header_text("모바일 앱"), "%EB%AA%A8%EB%B0%94%EC%9D%BC %EC%95%B1");
        assert_eq!(super::header_text("50%"), "50%25");
    }

    use super::*;

    #[test]
    fn hop_by_hop_and_keys_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("apikey", HeaderValue::from_static("ak_x"));
        h.insert("authorization", HeaderValue::from_static("Bearer ak_123"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        let out = forwardable(&h, false);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out.contains_key("content-type"));
        let mut h2 = HeaderMap::new();
        h2.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
        assert!(forwardable(&h2, false).contains_key("authorization"), "other credentials are the addon's business");
        h.insert("connection", HeaderValue::from_static("upgrade"));
        let up = forwardable(&h, true);
        assert!(up.contains_key("upgrade") && up.contains_key("connection"));
    }
}
