//! The TCP metrics listener (`metrics.listen`, off by default): `GET /metrics` for
//! Prometheus, which cannot scrape a Unix socket, and nothing else (a 404 envelope for
//! any other path, 405 for another method). It has its own connection budget
//! (`http.metrics_max_connections`) and the timeouts of every listener
//! (`crate::http::conn`), so a slow or stuck scraper cannot take descriptors the gateway
//! or the admin socket need.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::{render, Sources, CONTENT_TYPE};
use crate::http::conn::{Admission, Listener, Registry};
use crate::http::{ApiError, ErrorCode};

/// Serves `GET /metrics` on `listener` until `shutdown`, then lets scrapes in flight finish.
pub async fn serve(listener: tokio::net::TcpListener, sources: Sources, shutdown: CancellationToken) {
    let registry = Registry::for_listener(Listener::Metrics, &sources.lifecycle.config().http);
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((stream, _peer)) = registry.next_connection(&shutdown, || listener.accept()).await {
        let slot = match registry.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                crate::http::conn::refuse_overloaded(stream, Listener::Metrics);
                continue;
            }
        };
        let (sources, shutdown) = (sources.clone(), shutdown.clone());
        tracker.spawn(async move {
            let handler = move |req: hyper::Request<Body>| {
                let sources = sources.clone();
                async move { answer(&sources, req).await }
            };
            crate::http::conn::serve_connection(stream, slot, &shutdown, handler).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// One request: the exposition for `GET`/`HEAD /metrics`, an envelope otherwise.
async fn answer(sources: &Sources, req: hyper::Request<Body>) -> Response {
    if req.uri().path() != "/metrics" {
        return ApiError::new(
            ErrorCode::NotFound,
            format!("no route {} on the metrics listener; it serves only GET /metrics", req.uri().path()),
        )
        .field_name("path")
        .into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp =
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{} is not served on /metrics; use GET", req.method())).into_response();
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match render(sources).await {
        Ok(text) => ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], text).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
