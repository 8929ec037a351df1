//! What the OpenAPI documents of the three listeners share: the envelope schemas (`Success`,
//! `Error` with every [`ErrorCode`]), the error responses a handler's annotation names
//! (`responses(..., E404, E409)`), and [`finish`], which adds to every operation the answers
//! that come from the layers around the handlers rather than from the handlers themselves:
//! the connection loop (400, 408, 414, 431, 503), the body reader and JSON parser (400, 408,
//! 413), the query extractor (400), a database that fails (500) or is full (507), and the
//! gateway's key check and limits (401, 403, 429). Each listener's own document is built in
//! its module (`api::openapi`, `gateway::openapi`, `addon_api`); the document itself is
//! `docs/openapi.json`, and docs/design.md ("The OpenAPI document") says how it is made.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};

use super::code::ErrorCode;

/// The envelope's `Error` schema, for the annotations' `body = ...` of a hand-written error.
pub const ERROR_SCHEMA: &str = "#/components/schemas/Error";

/// One error response with the `Error` envelope.
pub fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::new(ERROR_SCHEMA))).build())
        .build()
        .into()
}

macro_rules! error_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {
        $(
            #[doc = concat!("`", $status, "`: ", $description)]
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    BTreeMap::from([($status.to_string(), error_response($description))])
                }
            }
        )*
    };
}

// The route-specific errors; the ones every route of a kind can give are added by `finish`.
error_responses! {
    E400 = "400", "`validation_failed` (or `invalid_path`, `invalid_volume`): a value is not valid; `error.field` names it.";
    E403 = "403", "`permission_denied`: the addon's manifest does not allow what it asked for.";
    E404 = "404", "`not_found` (or `image_not_found`): nothing by that name or id.";
    E409 = "409", "`conflict` (or `deployment_running`, `build_running`): the name is taken or the object is busy.";
    E422 = "422", "`build_failed`: a build step failed; the message ends with its last lines.";
    E502 = "502", "`docker_error`, `service_failed`, `upstream_error` or `addon_error`: what the request was passed to failed.";
    E503 = "503", "`docker_unavailable`, `ports_exhausted`, `subnets_exhausted`, `no_healthy_instance` or `unavailable`: retry later.";
    E504 = "504", "`wait_timeout`, `timeout` or `action_timeout`: the wait or the call took longer than allowed.";
}

/// The success envelope, for `body = Success` in an annotation.
pub struct Success;

impl utoipa::PartialSchema for Success {
    fn schema() -> RefOr<Schema> {
        schema_of(envelope_schemas()["Success"].clone())
    }
}

impl utoipa::ToSchema for Success {}

/// The error envelope, for `body = ErrorBody` in an annotation.
pub struct ErrorBody;

impl utoipa::PartialSchema for ErrorBody {
    fn schema() -> RefOr<Schema> {
        schema_of(envelope_schemas()["Error"].clone())
    }
}

impl utoipa::ToSchema for ErrorBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Error".into()
    }
}

/// Any JSON object: a request body whose shape the route's handler checks (the document
/// names the route; the error names the field).
pub struct JsonObject;

impl utoipa::PartialSchema for JsonObject {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({"type": "object"}))
    }
}

impl utoipa::ToSchema for JsonObject {}

/// A schema from its JSON form (the shapes here are easier to read as JSON than as builders).
pub fn schema_of(v: Value) -> RefOr<Schema> {
    serde_json::from_value(v).unwrap_or_else(|_| RefOr::T(utoipa::openapi::schema::empty()))
}

/// GraphQL's answer (not the envelope).
pub struct GraphqlAnswer;

impl utoipa::PartialSchema for GraphqlAnswer {
    fn schema() -> RefOr<Schema> {
        RefOr::T(utoipa::openapi::schema::empty())
    }
}

impl utoipa::ToSchema for GraphqlAnswer {}

/// The JSON Schema of [`GraphqlAnswer`].
pub fn graphql_answer_schema() -> Value {
    json!({
        "type": "object",
        "description": "GraphQL's answer: `data`, and `errors` when something failed (each with `extensions.code`).",
        "properties": {
            "data": {},
            "errors": {"type": "array", "items": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "string"},
                "extensions": {"type": "object", "properties": {"code": {"type": "string"}, "status": {"type": "integer"}, "field": {"type": "string"}}}
            }}}
        }
    })
}

/// Which listener a document describes: what surrounds its handlers differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The admin socket: no keys, every change audited.
    Admin,
    /// The gateway: API keys, rate limits, CORS.
    Gateway,
    /// The addon API containers call: their network address is who they are.
    AddonApi,
}

/// The envelope schemas every document shares.
pub fn envelope_schemas() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "Success": {
            "type": "object",
            "description": "A successful answer: `data` is the route's result, `message` a sentence for people; a route may add fields beside them (the logs say whose lines they are).",
            "required": ["success", "data", "message"],
            "properties": {
                "success": {"const": true},
                "data": {"description": "The route's result; its shape is described by the route."},
                "message": {"type": "string"}
            }
        },
        "Error": {
            "type": "object",
            "description": "A refused or failed request. Programs decide on `error.code`, never on the message.",
            "required": ["success", "error"],
            "properties": {
                "success": {"const": false},
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": codes, "description": "What went wrong, for programs."},
                        "message": {"type": "string", "description": "What went wrong and what to send instead, for people."},
                        "field": {"type": "string", "description": "The request field at fault, when there is one."}
                    },
                    "additionalProperties": false
                }
            },
            "additionalProperties": false
        }
    })
}

/// The success envelope around `data` (a JSON schema), for a route whose result has a shape.
pub fn success_with(data: Value) -> Value {
    json!({
        "allOf": [{"$ref": "#/components/schemas/Success"}, {"type": "object", "properties": {"data": data}}]
    })
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Adds the answers of the layers around the handlers to every operation of `doc` (an
/// OpenAPI document as JSON), and the envelope schemas to its components.
pub fn finish(doc: &mut Value, listener: Listener) {
    let common = common_responses();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for method in METHODS {
                let Some(op) = item.get_mut(method) else { continue };
                add_responses(op, method, listener, &common);
            }
        }
    }
    let components = doc.as_object_mut().map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(schemas) = components.and_then(|c| c.as_object_mut()).map(|c| c.entry("schemas").or_insert_with(|| json!({}))) {
        if let (Some(schemas), Value::Object(env)) = (schemas.as_object_mut(), envelope_schemas()) {
            for (k, v) in env {
                schemas.insert(k, v);
            }
        }
    }
}

/// The wording of each added answer, by status.
struct Common {
    by_status: BTreeMap<&'static str, &'static str>,
}

fn common_responses() -> Common {
    Common {
        by_status: BTreeMap::from([
            ("400", "`bad_request`: not valid HTTP/1.1 (request line, header or framing)."),
            ("400body", "`invalid_json` (the body is not a JSON object of this route's shape; `error.field` names the part at fault), `invalid_body` (its framing is broken) or `validation_failed` (a value is not valid)."),
            ("400query", "`invalid_query`: the query string has a parameter this route does not take, or a value not of its type."),
            ("401", "`missing_api_key`, `invalid_api_key` or `revoked_api_key`: send a valid key as `apikey: …` or `Authorization: Bearer …`."),
            ("401token", "`invalid_token`: send the instance's `ADDOND_TOKEN` as `Authorization: Bearer …`."),
            ("403", "`forbidden`: the key's grant does not cover this addon; `cors_forbidden`: the origin is not allowed."),
            ("408", "`request_timeout`: the request head or body did not arrive in time."),
            ("413", "`payload_too_large`: the body is larger than the listener's limit."),
            ("414", "`uri_too_long`: the path and query are longer than the server reads."),
            ("429", "`rate_limited` (the grant's rate limit) or `too_many_failures` (too many failed authentications from this address); `Retry-After` says when to retry."),
            ("431", "`headers_too_large`: too many or too large headers."),
            ("500", "`internal`: the daemon failed (its log says why)."),
            ("503", "`overloaded`: the listener holds as many connections as it may; retry shortly."),
            ("507", "`insufficient_storage`: the data directory's disk is full."),
        ]),
    }
}

fn add_responses(op: &mut Value, method: &str, listener: Listener, common: &Common) {
    let has_body = op.get("requestBody").is_some();
    let has_query = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p.get("in").and_then(Value::as_str) == Some("query")));
    let secured = listener != Listener::Admin && op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
    let changes = !matches!(method, "get" | "head" | "options");
    let Some(responses) = op.as_object_mut().map(|o| o.entry("responses").or_insert_with(|| json!({}))) else { return };
    let Some(responses) = responses.as_object_mut() else { return };
    let mut add = |status: &str, key: &str| {
        let text = common.by_status.get(key).copied().unwrap_or("");
        match responses.get_mut(status) {
            // The handler documents this status already: say what else gives it.
            Some(existing) => {
                if let Some(d) = existing.get("description").and_then(Value::as_str) {
                    if !d.contains(text) {
                        existing["description"] = Value::String(format!("{d} Also {text}"));
                    }
                }
            }
            None => {
                responses.insert(status.to_string(), error_json(text));
            }
        }
    };
    add("400", "400");
    add("408", "408");
    add("414", "414");
    add("431", "431");
    add("500", "500");
    add("503", "503");
    if has_body {
        add("400", "400body");
        add("413", "413");
    }
    if has_query {
        add("400", "400query");
    }
    if changes && listener == Listener::Admin {
        add("507", "507");
    }
    if secured && listener == Listener::Gateway {
        add("401", "401");
        add("403", "403");
        add("429", "429");
    }
    if secured && listener == Listener::AddonApi {
        add("401", "401token");
    }
}

fn error_json(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}}
    })
}

/// Adds `other`'s operations to `doc`. One that `doc` has already (the same method and path
/// served by two listeners) keeps `doc`'s description and gains `other`'s tags, responses
/// and security as an alternative to none (one listener needs a key, the other does not).
/// Components are added where `doc` lacks them.
pub fn merge(doc: &mut Value, other: Value) {
    let Value::Object(mut other) = other else { return };
    if let (Some(paths), Some(Value::Object(more))) = (doc.get_mut("paths").and_then(Value::as_object_mut), other.remove("paths")) {
        for (path, item) in more {
            let Value::Object(item) = item else { continue };
            let target = paths.entry(path).or_insert_with(|| json!({}));
            for (method, op) in item {
                match target.get_mut(&method) {
                    None => {
                        target[&method] = op;
                    }
                    Some(mine) => merge_operation(mine, op),
                }
            }
        }
    }
    if let Some(Value::Object(comps)) = other.remove("components") {
        let mine = doc.as_object_mut().map(|d| d.entry("components").or_insert_with(|| json!({})));
        if let Some(mine) = mine.and_then(Value::as_object_mut) {
            for (kind, entries) in comps {
                let Value::Object(entries) = entries else { continue };
                if let Some(m) = mine.entry(kind).or_insert_with(|| json!({})).as_object_mut() {
                    for (k, v) in entries {
                        m.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
}

fn merge_operation(mine: &mut Value, other: Value) {
    for tag in other.get("tags").and_then(Value::as_array).cloned().unwrap_or_default() {
        if let Some(tags) = mine.get_mut("tags").and_then(Value::as_array_mut) {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }
    if let (Some(rs), Some(more)) =
        (mine.get_mut("responses").and_then(Value::as_object_mut), other.get("responses").and_then(Value::as_object))
    {
        for (status, r) in more {
            let Some(existing) = rs.get_mut(status) else {
                rs.insert(status.clone(), r.clone());
                continue;
            };
            // The same status with another body on the other listener (`/health`): either.
            let json = "application/json";
            let (a, b) = (&existing["content"][json]["schema"], &r["content"][json]["schema"]);
            if !a.is_null() && !b.is_null() && a != b {
                let either = json!({"anyOf": [a.clone(), b.clone()]});
                existing["content"][json]["schema"] = either;
                if let (Some(d), Some(o)) = (existing["description"].as_str(), r["description"].as_str()) {
                    existing["description"] = Value::String(format!("{d} On the gateway: {o}"));
                }
            }
        }
    }
    if let Some(Value::Array(sec)) = other.get("security") {
        if !sec.is_empty() && mine.get("security").is_none() {
            let mut alternatives = vec![json!({})];
            alternatives.extend(sec.iter().cloned());
            mine["security"] = Value::Array(alternatives);
        }
    }
}

/// Every (method, path) pair of a document, upper-case methods, sorted.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc.get("paths").and_then(Value::as_object).unwrap_or(&Map::new()) {
        for method in METHODS {
            if item.get(method).is_some() {
                out.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_schema_lists_every_code() {
        let s = envelope_schemas();
        let codes = s["Error"]["properties"]["error"]["properties"]["code"]["enum"].as_array().unwrap().len();
        assert_eq!(codes, ErrorCode::ALL.len());
    }

    #[test]
    fn finish_adds_the_layers_answers() {
        let mut doc = json!({"paths": {
            "/a": {"post": {"requestBody": {}, "responses": {"200": {"description": "ok"}}}},
            "/b": {"get": {"parameters": [{"in": "query", "name": "q"}], "responses": {"400": {"description": "bad q."}}}}
        }});
        finish(&mut doc, Listener::Admin);
        let a = &doc["paths"]["/a"]["post"]["responses"];
        for s in ["200", "400", "408", "413", "500", "503", "507"] {
            assert!(a.get(s).is_some(), "{s} in {a}");
        }
        assert!(a.get("401").is_none());
        let b = &doc["paths"]["/b"]["get"]["responses"];
        assert!(b["400"]["description"].as_str().unwrap().starts_with("bad q. Also"), "{b}");
        assert!(b.get("413").is_none() && b.get("507").is_none());
        assert!(doc["components"]["schemas"]["Error"].is_object());
        assert_eq!(operations(&doc), vec![("GET".into(), "/b".into()), ("POST".into(), "/a".into())]);
    }
}
