//! GraphQL: the addon-server's view of the catalogue (`Addon`, `Widget`, running an addon's
//! functions, installing and configuring, and the event log as a subscription), served at
//! `/graphql` by the admin API (everything; subscriptions over a WebSocket, `ws.rs`) and by
//! the gateway (one key's addon, queries only). This module owns the schema (`schema.rs`),
//! the limits every document is checked against before it runs (`limits.rs`) and the HTTP
//! answer both listeners give; they only mount it. Resolvers call the same `Addons` and
//! `Events` functions as the REST handlers, so behaviour and errors match: an error carries
//! the REST answer's typed code in `extensions.code` (and `field`, `status`), and a document
//! that does not parse, fit the schema or stay within the limits carries `invalid_graphql`.

pub mod limits;
mod schema;
pub mod ws;

use std::sync::{Arc, Mutex};

use async_graphql::{EmptyMutation, EmptySubscription, ErrorExtensionValues, Schema};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::addons::Addons;
use crate::config::GraphqlConfig;
use crate::events::Events;
use crate::http::{parse_json, ApiError, ErrorCode};
use crate::model::{split_environment, ENVIRONMENT_SEPARATOR};
pub use schema::{Mutation, Query, Subscription};

/// The admin socket's schema: queries, mutations and subscriptions.
pub type AdminSchema = Schema<Query, Mutation, Subscription>;
/// The gateway's schema: queries only (its keys read and execute, never change anything).
pub type GatewaySchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// What a caller may reach: everything (the admin socket) or the one addon instance an API
/// key's grant covers (the gateway). Request data; a request without it reaches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every addon (the admin socket).
    All,
    /// This addon instance only (`pay`, `pay--dev`), from the key's grant.
    Addon(String),
}

impl Scope {
    /// The addon instance `id` names for this caller: on the gateway `pay` and `pay--dev`
    /// both name the grant's instance when it is that one, anything else is `forbidden`,
    /// as on the gateway's REST routes.
    pub fn instance(&self, id: &str, field: &str) -> Result<String, ApiError> {
        match self {
            Scope::All => Ok(id.to_string()),
            Scope::Addon(granted) => {
                let (base, env) = split_environment(id);
                let (granted_base, granted_env) = split_environment(granted);
                let env_named = id.contains(ENVIRONMENT_SEPARATOR);
                if base == granted_base && (!env_named || env == granted_env) {
                    return Ok(granted.clone());
                }
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("this key's grant covers the addon `{granted_base}` in environment `{granted_env}`, not `{id}`"),
                )
                .field(field))
            }
        }
    }

    /// Whether this caller sees `instance` in lists.
    pub fn sees(&self, instance: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Addon(granted) => granted == instance,
        }
    }
}

/// Who asked, as deployments record it (`uid:1000` on the admin socket).
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The root fields of the mutation a request ran, filled in while it runs, so the admin
/// socket can audit changes made through GraphQL like those made through REST.
#[derive(Debug, Clone, Default)]
pub struct Mutations(pub Arc<Mutex<Vec<String>>>);

impl Mutations {
    /// The root fields recorded (empty: the request changed nothing).
    pub fn fields(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The admin socket's schema over the daemon's addons and event log.
pub fn admin_schema(addons: Arc<Addons>, events: Arc<Events>, cfg: &GraphqlConfig) -> AdminSchema {
    limits::apply(Schema::build(Query, Mutation, Subscription), cfg, false).data(addons).data(events).finish()
}

/// The gateway's schema: introspection only when `graphql.gateway_introspection` says so.
pub fn gateway_schema(addons: Arc<Addons>, cfg: &GraphqlConfig) -> GatewaySchema {
    gateway_builder(cfg).data(addons).finish()
}

fn gateway_builder(cfg: &GraphqlConfig) -> async_graphql::SchemaBuilder<Query, EmptyMutation, EmptySubscription> {
    let builder = limits::apply(Schema::build(Query, EmptyMutation, EmptySubscription), cfg, true);
    if cfg.gateway_introspection {
        builder
    } else {
        builder.disable_introspection()
    }
}

/// The body of `POST /graphql`, as GraphQL clients send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlBody {
    /// The document.
    pub query: String,
    /// Its variables: an object, or null.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    /// Which operation of the document to run (needed when it holds more than one).
    #[serde(default, rename = "operationName")]
    pub operation_name: Option<String>,
    /// Protocol extensions some clients send; none is used.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub extensions: Option<Value>,
}

/// The request a `POST /graphql` body makes (callers attach their [`Scope`] and the rest
/// with `.data()`); a body that is not one is the envelope's `invalid_json` naming the field.
pub fn request(body: &[u8]) -> Result<async_graphql::Request, ApiError> {
    let b: GraphqlBody = parse_json(body)?;
    let variables = match b.variables {
        None | Some(Value::Null) => async_graphql::Variables::default(),
        Some(v @ Value::Object(_)) => async_graphql::Variables::from_json(v),
        Some(_) => {
            return Err(ApiError::new(ErrorCode::InvalidJson, "`variables` must be a JSON object of the document's variables, or null")
                .field("variables"))
        }
    };
    let req = async_graphql::Request::new(b.query).variables(variables);
    Ok(match b.operation_name {
        Some(op) => req.operation_name(op),
        None => req,
    })
}

/// Every error of a response with a code: those a resolver raised carry theirs; the rest
/// (the document did not parse, fit the schema or stay within a limit) get `invalid_graphql`.
pub fn with_codes(mut resp: async_graphql::Response) -> async_graphql::Response {
    for e in &mut resp.errors {
        let ext = e.extensions.get_or_insert_with(ErrorExtensionValues::default);
        if ext.get("code").is_none() {
            ext.set("code", ErrorCode::InvalidGraphql.as_str());
        }
    }
    resp
}

/// A GraphQL answer over HTTP: 200 with `{data, errors}` (errors included), as GraphQL
/// clients expect; HTTP errors are for what comes before the document (key, body).
pub fn answer(resp: async_graphql::Response) -> Response {
    match serde_json::to_vec(&with_codes(resp)) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, format!("cannot encode the GraphQL answer: {e}")).into_response(),
    }
}

/// An [`ApiError`] as a GraphQL error, with its code, status and field in `extensions`.
pub fn error(e: impl Into<ApiError>) -> async_graphql::Error {
    let e: ApiError = e.into();
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", e.code.as_str());
    ext.set("status", e.status.as_u16());
    if let Some(f) = &e.field {
        ext.set("field", f.as_str());
    }
    async_graphql::Error { message: e.message, source: None, extensions: Some(ext) }
}

#[cfg(test)]
mod tests;
