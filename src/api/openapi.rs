//! The admin socket's OpenAPI document: every route of [`super::router`] from its handler's
//! annotation, and, tagged `gateway` and `addon-api`, the routes of the other two listeners
//! (from `crate::gateway::openapi` and `crate::addon_api`), so one document holds all that
//! addond serves. A gateway route with the same method and path as an admin one (execute,
//! render, frame, `/health`, `/openapi.json`) is one operation there, tagged with both
//! listeners; the gateway's own document (`GET /openapi.json` on the gateway) has its routes
//! only, with the key they need. `addond openapi` prints this document; `docs/openapi.json`
//! is a copy a test keeps identical.

use std::sync::OnceLock;

use serde_json::Value;
use utoipa::OpenApi;

use super::*;
use crate::http::openapi::{finish, Listener};

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
    ),
    // Parameter schemas are not collected from the annotations as body schemas are.
    components(schemas(WaitFor)),
    tags(
        (name = "admin", description = "The admin API on the Unix socket (`api.socket`); who may call it is decided by the socket's group."),
        (name = "gateway", description = "The gateway (`gateway.listen`): each route but `/health` and `/openapi.json` needs an API key whose grant covers the addon."),
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
