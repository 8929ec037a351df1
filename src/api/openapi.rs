//! The admin socket's OpenAPI document: every route of [`super::router`] from its handler's
//! annotation, and, tagged `gateway` and `addon-api`, the routes of the other two listeners
//! (from `crate::gateway::openapi` and `crate::addon_api`), so one document holds all that
//! addond serves. A gateway route with the same method and path as an admin one (execute,
//! render, frame, `/health`, `/openapi.json`) is one operation there, tagged with both
//! listeners; the gateway's own document (`GET /openapi.json` on the gateway) has its routes
//! only, with the key they need. `addond openapi` prints this document; `docs/openapi.json`
//! is a copy a test keeps identical.

use std::sync::OnceLock;

use serde_json::{json, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::OpenApi;

use super::*;
use crate::http::openapi::{finish, success_with, Listener};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "addond",
        description = "The HTTP APIs of addond: the admin API on the Unix socket (tag `admin`), the gateway with API keys (tag `gateway`) and the addon API that addon containers call (tag `addon-api`). Every JSON answer wears the envelope: `Success` or `Error`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        ops::daemon_health, ops::metrics, openapi_json,
        services::list_services, services::create_service, services::show_service, services::delete_service,
        services::start_service, services::stop_service, services::restart_service, services::scale_service,
        services::service_logs, services::service_metrics, services::discovery, services::services_health,
        services::watch_services, services::list_templates, services::create_from_template, services::cleanup,
        services::pull_image,
        addons::addon_catalogue, addons::register_addon, addons::show_addon, addons::uninstall_addon,
        addons::install_addon, builds::list_builds, builds::start_build, addons::set_addon_config,
        addons::start_addon, addons::stop_addon, addons::restart_addon, addons::execute_action,
        addons::upgrade_addon, addons::rollback_addon, addons::publish_addon, addons::addon_deployments,
        addons::list_environments, addons::add_environment, addons::promote_addon, addons::schedule_runs,
        addons::widget_catalogue, addons::render_widget_get, addons::render_widget_post, addons::widget_frame,
        access::list_applications, access::create_application, access::show_application, access::delete_application,
        access::list_grants, access::create_grant, access::show_grant, access::update_grant, access::delete_grant,
        access::rotate_grant, access::revoke_grant,
        events::list_events, events::emit_event, events::event_stream, events::event_subscribers, events::redrive_events,
        mcp::list_registered, mcp::create_registered, mcp::show_registered, mcp::delete_registered,
        mcp::list_tools, mcp::call_tool,
        access::audit_log, ops::backup_archive, ops::doctor_report,
        graphql::graphql_post, graphql::graphql_ws,
    ),
    // Parameter schemas are not collected from the annotations as body schemas are.
    components(schemas(WaitFor)),
    tags(
        (name = "admin", description = "The admin API on the Unix socket (`api.socket`); who may call it is decided by the socket's group."),
        (name = "gateway", description = "The gateway (`gateway.listen`): each route but `/health` and `/openapi.json` needs an API key whose grant covers the addon."),
        (name = "graphql", description = "GraphQL over the catalogue (`/graphql`): queries, mutations and, on the admin socket, subscriptions over WebSocket."),
        (name = "addon-api", description = "The API that addon containers call on their network's gateway address; the caller is known by its address."),
    )
)]
struct AdminDoc;

/// `?wait=`: the phase a change's answer waits for (case does not matter).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: `super::wait_target` reads the parameter
pub(super) enum WaitFor {
    Started,
    Stopped,
    Deleted,
}

/// `GET /openapi.json`: this listener's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tags = ["admin", "operations"], responses((status = 200, description = "The OpenAPI 3.1 document of everything addond serves.", body = inline(crate::http::openapi::JsonObject))))]
pub(super) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document_text()).into_response()
}

/// The whole document: the admin API, the gateway and the addon API, tagged.
pub fn document() -> Value {
    let mut admin = serde_json::to_value(AdminDoc::openapi()).unwrap_or(Value::Null);
    finish(&mut admin, Listener::Admin);
    for (name, schema) in answer_schemas() {
        admin["components"]["schemas"][name] = schema;
    }
    admin["components"]["schemas"]["GraphqlAnswer"] = crate::http::openapi::graphql_answer_schema();
    crate::http::openapi::merge(&mut admin, crate::gateway::openapi::document());
    crate::http::openapi::merge(&mut admin, crate::addon_api::openapi_document());
    admin
}

/// [`document`] as pretty JSON with a final newline, made once: what `/openapi.json`
/// answers and `addond openapi` prints.
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut t = serde_json::to_string_pretty(&document()).unwrap_or_default();
        t.push('\n');
        t
    })
}

/// The success envelope of a route whose `data` has a known shape: one named schema per
/// shape, written as JSON Schema (the views are built with `json!`, so there is no Rust type
/// to derive them from). Fields the answer always has are required; more may come (an
/// addition is not a break), so none is closed.
///
/// The annotations name these types (so the document refers to them); their JSON Schema is
/// put into the components by [`answer_schemas`], as written: utoipa's own schema model
/// cannot hold all of JSON Schema (a `oneOf` beside `properties`, say).
macro_rules! answers {
    ($($(#[$doc:meta])* $name:ident => $data:expr;)*) => {
        $(
            $(#[$doc])*
            pub(super) struct $name;

            impl utoipa::PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    RefOr::T(utoipa::openapi::schema::empty())
                }
            }

            impl utoipa::ToSchema for $name {}
        )*

        /// Each answer's schema by name, for the components.
        fn answer_schemas() -> Vec<(&'static str, Value)> {
            vec![$((stringify!($name), success_with($data)),)*]
        }
    };
}

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

fn grant_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "application_id", "addon", "environment", "instance", "key_prefix", "rate_limit", "allowed_origins", "status", "created_at"],
        "properties": {
            "id": {"type": "string"}, "grantId": {"type": "string"},
            "application_id": {"type": "string"}, "applicationId": {"type": "string"},
            "credentialId": {"type": "string"},
            "addon": {"type": "string"}, "environment": {"type": "string"}, "instance": {"type": "string"},
            "key_prefix": {"type": "string"},
            "rate_limit": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["requests_per_second"], "properties": {
                "requests_per_second": {"type": "number"}, "burst": nullable("integer")}}]},
            "allowed_origins": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": ["active", "revoked"]},
            "revoked_at": nullable("string"), "rotated_at": nullable("string"), "old_key_valid_until": nullable("string"),
            "created_at": {"type": "string"}
        }
    })
}

fn application_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "name", "description", "organization", "created_at", "grants"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
            "organization": {"type": "string"}, "created_at": {"type": "string"},
            "grants": {"type": "array", "items": grant_schema()}
        }
    })
}

fn event_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "name", "data", "source", "timestamp"],
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "data": {}, "source": {"type": "string"},
            "timestamp": {"type": "string", "description": "RFC 3339, milliseconds."}
        }
    })
}

/// A service object: the plugin-microservice API's documented fields (all present, some
/// `null` until known), then addond's own.
fn service_schema() -> Value {
    let health = json!({"enum": ["healthy", "unhealthy", "starting", "unknown"]});
    json!({
        "type": "object",
        "required": ["id", "name", "plugin_id", "service_type", "status", "health_status", "port", "host_port", "start_time",
            "last_health_check", "resource_usage", "error_message", "slug", "image", "phase", "desired", "replicas", "instances"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string", "description": "The display name."},
            "slug": {"type": "string", "description": "The safe name containers and URLs use."},
            "plugin_id": nullable("string"),
            "service_type": {"type": "string"},
            "status": {"type": "string"},
            "health_status": health,
            "port": {"type": "integer"},
            "host_port": nullable("integer"),
            "host": {"type": "string"},
            "endpoint": nullable("string"),
            "start_time": nullable("string"),
            "last_health_check": nullable("string"),
            "resource_usage": {"type": "object"},
            "error_message": nullable("string"),
            "image": {"type": "string"},
            "phase": {"enum": ["Creating", "Created", "Starting", "Started", "Stopping", "Stopped", "Deleting", "Deleted", "Failed"]},
            "desired": {"enum": ["started", "stopped", "deleted"]},
            "replicas": {"type": "integer", "minimum": 0},
            "instances": {"type": "array", "items": {"type": "object", "required": ["id", "ordinal", "host_port", "health", "state"], "properties": {
                "id": {"type": "string"}, "ordinal": {"type": "integer"}, "host_port": {"type": "integer"}, "health": health,
                "state": {"type": "string"}, "container_id": nullable("string"), "started_at": nullable("string")}}}
        }
    })
}

answers! {
    /// One service.
    ServiceAnswer => service_schema();
    /// Services.
    ServiceListAnswer => json!({"type": "array", "items": service_schema()});
    /// A service's log lines.
    LogsAnswer => json!({"type": "array", "items": {"type": "string"}});
    /// Where each running service answers, and the networks.
    DiscoveryAnswer => json!({
        "type": "object",
        "required": ["total_services", "healthy_services", "unhealthy_services", "services", "networks"],
        "properties": {
            "total_services": {"type": "integer", "minimum": 0},
            "healthy_services": {"type": "integer", "minimum": 0},
            "unhealthy_services": {"type": "integer", "minimum": 0},
            "services": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "name", "plugin_id", "type", "status", "health", "endpoint", "port", "start_time"],
                "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "plugin_id": nullable("string"), "type": {"type": "string"},
                    "status": {"type": "string"}, "health": {"enum": ["healthy", "unhealthy", "starting", "unknown"]},
                    "endpoint": nullable("string"), "port": {"type": "integer"}, "start_time": nullable("string")
                }
            }},
            "networks": {"type": "array", "items": {"type": "object", "required": ["name", "id", "driver", "scope"], "properties": {
                "name": {"type": "string"}, "id": nullable("string"), "driver": {"type": "string"}, "scope": {"type": "string"}}}}
        }
    });
    /// The service templates.
    TemplatesAnswer => json!({"type": "array", "items": {
        "type": "object",
        "required": ["id", "name", "description", "service_type", "port", "template"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
            "service_type": {"type": "string"}, "port": {"type": "integer"},
            "template": {
                "type": "object",
                "required": ["name", "service_type", "port", "environment", "health_check", "resource_limits"],
                "properties": {
                    "name": {"type": "string"}, "service_type": {"type": "string"}, "port": {"type": "integer"},
                    "environment": {"type": "object", "additionalProperties": {"type": "string"}},
                    "health_check": {"type": "object", "required": ["url", "interval", "timeout", "retries"], "properties": {
                        "url": {"type": "string"}, "interval": {"type": "number"}, "timeout": {"type": "number"}, "retries": {"type": "integer"}}},
                    "resource_limits": {"type": "object", "required": ["memory", "cpu"]}
                }
            }
        }
    }});
    /// `GET /health`.
    HealthAnswer => json!({
        "type": "object",
        "required": ["version", "uptime_seconds", "database", "docker", "services", "pid", "gateway", "ports"],
        "properties": {
            "version": {"type": "string"}, "uptime_seconds": {"type": "integer", "minimum": 0},
            "database": {"type": "string", "description": "`ok`, or why the database did not answer."},
            "docker": {"enum": ["reachable", "unresponsive", "unreachable"]},
            "services": {"type": "integer", "minimum": 0}, "pid": {"type": "integer"},
            "gateway": nullable("string"),
            "ports": {"type": "object", "required": ["range_start", "range_end"], "properties": {
                "range_start": {"type": "integer"}, "range_end": {"type": "integer"}}}
        }
    });
    /// One application with its grants.
    ApplicationAnswer => application_schema();
    /// Every application.
    ApplicationListAnswer => json!({"type": "array", "items": application_schema()});
    /// One grant.
    GrantAnswer => grant_schema();
    /// A grant with its key, shown once.
    GrantKeyAnswer => json!({"allOf": [grant_schema(), {"required": ["api_key"], "properties": {"api_key": {"type": "string"}}}]});
    /// Every grant (or those the query names).
    GrantListAnswer => json!({"type": "array", "items": grant_schema()});
    /// What a delete removed.
    DeletedAnswer => json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "name": {"type": "string"}}});
    /// One event.
    EventAnswer => event_schema();
    /// Events, oldest first.
    EventListAnswer => json!({"type": "array", "items": event_schema()});
    /// The audit log, newest first.
    AuditAnswer => json!({"type": "array", "items": {
        "type": "object",
        "required": ["at", "uid", "pid", "source", "method", "path", "status", "detail"],
        "properties": {
            "at": {"type": "integer", "description": "Milliseconds since the epoch."},
            "uid": nullable("integer"), "pid": nullable("integer"), "source": nullable("string"),
            "method": {"type": "string"}, "path": {"type": "string"},
            "status": {"type": "integer"}, "detail": nullable("string")
        }
    }});
    /// How many dead letters go out again.
    RedriveAnswer => json!({"type": "object", "required": ["redriven", "subscriber"], "properties": {
        "redriven": {"type": "integer", "minimum": 0}, "subscriber": nullable("string")}});
}
