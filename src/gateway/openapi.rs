//! The gateway's OpenAPI document: one annotated entry per method of each route in
//! [`super::ROUTES`] (the gateway routes by that table, not by handler functions, so the
//! annotations sit on these entries; a test checks that both list the same routes). Routes
//! that need a key say so with the `apiKey` and `bearer` schemes; the layers around the
//! handlers (key check, rate limits, body limits) add their answers in
//! `crate::http::openapi::finish`. The gateway serves this document at `GET /openapi.json`.

// The entries below are annotation targets only: requests are answered by `super::Gateway`.
#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::http::openapi::{finish, success_with, JsonObject, Listener, Success, E400, E404, E502, E503, E504};

const ADDON: &str = "The addon's name; the grant of the key must cover it.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "addond gateway",
        description = "The gateway of addond: addon actions, widgets, MCP and passthrough to addon services for callers with an API key (`apikey: …` or `Authorization: Bearer …`). Every JSON answer of its own wears the envelope: `Success` or `Error`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(health, openapi_json, execute, render_get, render_post, frame, mcp, graphql, passthrough, passthrough_rest),
    tags((name = "gateway", description = "The gateway (`gateway.listen`): each route but `/health` and `/openapi.json` needs an API key whose grant covers the addon."))
)]
struct GatewayDoc;

/// The gateway's liveness; no key needed.
#[utoipa::path(method(get, head), path = "/health", tags = ["gateway", "operations"], responses((status = 200, description = "`{status, docker}`: the gateway is up.", body = GatewayHealth)))]
fn health() {}

/// This document; no key needed.
#[utoipa::path(method(get, head), path = "/openapi.json", tags = ["gateway", "operations"], responses((status = 200, description = "The OpenAPI 3.1 document of the gateway's routes.", body = inline(JsonObject))))]
fn openapi_json() {}

/// Runs one of the addon's actions.
#[utoipa::path(post, path = "/api/addons/{addon}/execute", tags = ["gateway", "addons"], security(("apiKey" = []), ("bearer" = [])),
    params(("addon" = String, Path, description = ADDON)), request_body = crate::http::ExecuteBody,
    responses((status = 200, description = "What the action answered.", body = Success), E404, E502, E503, E504))]
fn execute() {}

/// Renders a widget with its config and context from the query.
#[utoipa::path(method(get, head), path = "/api/widgets/{addon}/{widget}", tags = ["gateway", "widgets"], security(("apiKey" = []), ("bearer" = [])),
    params(("addon" = String, Path, description = ADDON), ("widget" = String, Path, description = "The widget's id."),
        ("config" = Option<String>, Query, description = "The widget's config: a JSON object as text."),
        ("context" = Option<String>, Query, description = "The render context: a JSON object as text.")),
    responses((status = 200, description = "The rendered widget, with its `ETag`.", body = Success), (status = 304, description = "Not modified: the `If-None-Match` ETag is current."), E400, E404, E502, E503, E504))]
fn render_get() {}

/// Renders a widget with its config and context from the body.
#[utoipa::path(post, path = "/api/widgets/{addon}/{widget}", tags = ["gateway", "widgets"], security(("apiKey" = []), ("bearer" = [])),
    params(("addon" = String, Path, description = ADDON), ("widget" = String, Path, description = "The widget's id.")),
    request_body = crate::http::RenderBody,
    responses((status = 200, description = "The rendered widget, with its `ETag`.", body = Success), (status = 304, description = "Not modified: the `If-None-Match` ETag is current."), E400, E404, E502, E503, E504))]
fn render_post() {}

/// A widget as a sandboxed HTML page.
#[utoipa::path(method(get, head), path = "/api/widgets/{addon}/{widget}/frame", tags = ["gateway", "widgets"], security(("apiKey" = []), ("bearer" = [])),
    params(("addon" = String, Path, description = ADDON), ("widget" = String, Path, description = "The widget's id."),
        ("config" = Option<String>, Query, description = "The widget's config: a JSON object as text."),
        ("context" = Option<String>, Query, description = "The render context: a JSON object as text.")),
    responses((status = 200, description = "An HTML page that shows the rendered widget.", content_type = "text/html", body = String), E400, E404, E502, E503, E504))]
fn frame() {}

/// The MCP server (Streamable HTTP) with the tools of the key's addon. Its answers are
/// MCP's JSON-RPC messages, not the envelope.
#[utoipa::path(method(get, post, delete), path = "/mcp", tags = ["gateway", "mcp"], security(("apiKey" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A JSON-RPC answer, or a stream of them as server-sent events.", content(("application/json"), ("text/event-stream"))),
        (status = 202, description = "A notification or answer from the client, accepted."),
        (status = 400, description = "Not a JSON-RPC message this server takes, or a missing or wrong session header.", content_type = "text/plain", body = String),
        (status = 403, description = "The `Host` header names a host the server does not answer for (`gateway.mcp_allowed_hosts`).", content_type = "text/plain", body = String),
        (status = 404, description = "No such session.", content_type = "text/plain", body = String),
        (status = 405, description = "This method is not served in stateless mode.", content_type = "text/plain", body = String),
        (status = 406, description = "`Accept` must allow `application/json` and `text/event-stream`.", content_type = "text/plain", body = String),
        (status = 415, description = "The body must be `application/json`.", content_type = "text/plain", body = String)))]
fn mcp() {}

/// GraphQL queries over the key's addon (no mutations, no subscriptions).
#[utoipa::path(post, path = "/graphql", tags = ["gateway", "graphql"], security(("apiKey" = []), ("bearer" = [])),
    request_body = crate::graphql::GraphqlBody,
    responses((status = 200, description = "GraphQL's answer: `data` and, when something failed, `errors`.", body = crate::http::openapi::GraphqlAnswer)))]
fn graphql() {}

/// Passes the request to the addon's service as it came (WebSocket upgrades too).
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/gw/{addon}", tags = ["gateway", "passthrough"], security(("apiKey" = []), ("bearer" = [])),
    params(("addon" = String, Path, description = ADDON)),
    responses((status = "default", description = "The addon service's answer, as it gave it."), E502, E503, E504))]
fn passthrough() {}

/// Passes the request to the addon's service, at the rest of the path (which may hold `/`).
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/gw/{addon}/{rest}", tags = ["gateway", "passthrough"], security(("apiKey" = []), ("bearer" = [])),
    params(("addon" = String, Path, description = ADDON), ("rest" = String, Path, description = "The path at the addon's service (may hold `/`).")),
    responses((status = "default", description = "The addon service's answer, as it gave it."), E502, E503, E504))]
fn passthrough_rest() {}

/// The answer of the gateway's `/health`; its schema is put into the components by
/// [`document`] (as the admin API's typed answers are).
struct GatewayHealth;

impl utoipa::PartialSchema for GatewayHealth {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::empty())
    }
}

impl utoipa::ToSchema for GatewayHealth {}

/// The gateway's document, finished: its routes only, with the key schemes.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(GatewayDoc::openapi()).unwrap_or(Value::Null);
    finish(&mut doc, Listener::Gateway);
    doc["components"]["schemas"]["GraphqlAnswer"] = crate::http::openapi::graphql_answer_schema();
    doc["components"]["schemas"]["GatewayHealth"] = success_with(json!({
        "type": "object",
        "required": ["status", "docker"],
        "properties": {"status": {"const": "ok"}, "docker": {"type": "boolean", "description": "Whether the Docker engine answers."}}
    }));
    doc["components"]["securitySchemes"] = json!({
        "apiKey": {"type": "apiKey", "in": "header", "name": "apikey", "description": "The key of a grant (`addonctl grants create`)."},
        "bearer": {"type": "http", "scheme": "bearer", "description": "The same key as `Authorization: Bearer …`."}
    });
    doc
}

/// [`document`] as pretty JSON with a final newline, made once (`GET /openapi.json`).
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut t = serde_json::to_string_pretty(&document()).unwrap_or_default();
        t.push('\n');
        t
    })
}
