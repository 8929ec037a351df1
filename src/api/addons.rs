//! Addons (catalogue, register, install, configure, start/stop, actions, schedules) and
//! their widgets (catalogue, render, frame).

use super::*;

/// The instance an addon path segment names: its instance name, or its display name
/// (URL-encoded in the path, decoded by the router).
async fn instance(st: &AppState, name: String) -> Result<String, ApiError> {
    Ok(st.addons.resolve(&name).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CategoryQuery {
    category: Option<String>,
}

#[utoipa::path(get, path = "/api/addons", tags = ["admin", "addons"], params(("category" = Option<String>, Query, description = "Only addons of this category.")), responses((status = 200, description = "The registered addons and the installed instances.", body = Success)))]
pub(super) async fn addon_catalogue(State(st): State<AppState>, q: Result<Query<CategoryQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let list = st.addons.catalogue(q.category.as_deref()).await?;
    let installed = st.addons.installs().await?;
    let n = list.len();
    ok(StatusCode::OK, json!({"addons": list, "installed": installed}), &format!("{n} addon(s) registered"))
}

/// Registers a manifest; the body limit is the manifest limit, not the API's.
#[utoipa::path(post, path = "/api/addons/register", tags = ["admin", "addons"], request_body = inline(crate::http::openapi::JsonObject), responses((status = 200, description = "The manifest, already registered.", body = Success), (status = 201, description = "The manifest, registered.", body = Success), E409))]
pub(super) async fn register_addon(State(st): State<AppState>, req: Request) -> ApiResult {
    let limit = st.addons.config().addons.max_manifest_bytes;
    let bytes = read_body(req.into_body(), limit, "addons.max_manifest_bytes").await?;
    let manifest: ManifestRequest = parse_json(&bytes)?;
    let (m, new) = st.addons.register(manifest).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    let msg = if new { format!("registered {} {}", m.name, m.version) } else { format!("{} {} was already registered", m.name, m.version) };
    ok(status, m.view(), &msg)
}

#[utoipa::path(get, path = "/api/addons/{name}", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name).")), responses((status = 200, description = "The addon, its versions and its instances.", body = Success), E404))]
pub(super) async fn show_addon(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let name = instance(&st, name).await?;
    ok(StatusCode::OK, st.addons.show(&name).await?, &format!("addon {name}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UninstallQuery {
    force: Option<bool>,
    unregister: Option<bool>,
    wait: Option<String>,
    timeout: Option<f64>,
}

#[utoipa::path(delete, path = "/api/addons/{name}", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("force" = Option<bool>, Query, description = "Uninstall even when other addons depend on it."), ("unregister" = Option<bool>, Query, description = "Also remove the addon from the catalogue."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "`deleted`: answer once its services are gone."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait (default 60, at most `api.max_wait_seconds`).")), responses((status = 200, description = "The instance, uninstalled or being uninstalled.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn uninstall_addon(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<UninstallQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    if q.unregister.unwrap_or(false) {
        let n = st.addons.unregister(&name).await?;
        return ok(StatusCode::OK, json!({"name": name, "versions_removed": n}), &format!("removed {name} from the catalogue"));
    }
    let wait = Wait(wait_target(q.wait.as_deref(), q.timeout, st.lifecycle.config().api.max_wait_seconds)?)
        .toward(&[Phase::Deleted], "an uninstall")?
        .0;
    let name = instance(&st, name).await?;
    let services = st.lifecycle.store().services_of_addon(&name).await?;
    let v = st.addons.uninstall(&name, q.force.unwrap_or(false)).await?;
    if let Some((phase, timeout)) = wait {
        for s in services {
            st.lifecycle.wait(&s.id, phase, timeout).await?;
        }
        let mut v = v;
        v["phase"] = json!("Deleted");
        return ok(StatusCode::OK, v, &format!("uninstalled {name}"));
    }
    ok(StatusCode::OK, v, &format!("uninstalling {name}"))
}

/// Who asked, as deployments record it: the admin-socket peer's uid.
fn who(caller: Option<Extension<Caller>>) -> String {
    caller.map_or_else(|| "admin".to_string(), |Extension(c)| format!("uid:{}", c.uid))
}

#[utoipa::path(post, path = "/api/addons/{name}/install", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = InstallRequest, responses((status = 201, description = "The instance, installing.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn install_addon(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    wait: Wait,
    JsonBody(req): JsonBody<InstallRequest>,
) -> ApiResult {
    if req.environments.is_some() {
        let v = st.addons.install_environments(&name, req, who(caller)).await?;
        let base = v["addon"].as_str().unwrap_or(&name).to_string();
        let v = match wait.0 {
            Some((phase, timeout)) => {
                for e in v["environments"].as_array().into_iter().flatten() {
                    st.addons.wait(e["instance"].as_str().unwrap_or_default(), phase, timeout).await?;
                }
                st.addons.environments(&base).await?
            }
            None => v,
        };
        let n = v["environments"].as_array().map_or(0, Vec::len);
        return ok(StatusCode::CREATED, v, &format!("installing {name} as {base} in {n} environment(s)"));
    }
    let v = st.addons.install(&name, req, who(caller)).await?;
    let instance = v["instance"].as_str().unwrap_or(&name).to_string();
    let v = match wait.0 {
        Some((phase, timeout)) => st.addons.wait(&instance, phase, timeout).await?,
        None => v,
    };
    ok(StatusCode::CREATED, v, &format!("installing {name} as {instance}"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigBody {
    config: Value,
}

#[utoipa::path(put, path = "/api/addons/{name}/config", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name).")), request_body = ConfigBody, responses((status = 200, description = "The instance with its new config.", body = Success), E404, E502, E503, E504))]
pub(super) async fn set_addon_config(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(body): JsonBody<ConfigBody>,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let v = st.addons.set_config(&name, body.config, who(caller)).await?;
    ok(StatusCode::OK, v, "config stored and pushed")
}

pub(super) async fn addon_op(st: &AppState, name: &str, op: &str, wait: Wait) -> ApiResult {
    let to = if op == "stop" { Phase::Stopped } else { Phase::Started };
    let wait = wait.toward(&[to], &format!("a {op}"))?;
    let v = st.addons.lifecycle_op(name, op).await?;
    let v = match wait.0 {
        Some((phase, timeout)) => st.addons.wait(name, phase, timeout).await?,
        None => v,
    };
    ok(StatusCode::OK, v, &format!("{op} {name}"))
}

#[utoipa::path(post, path = "/api/addons/{name}/start", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The instance, starting.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn start_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait) -> ApiResult {
    let name = instance(&st, name).await?;
    addon_op(&st, &name, "start", wait).await
}

#[utoipa::path(post, path = "/api/addons/{name}/stop", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The instance, stopping.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn stop_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait) -> ApiResult {
    let name = instance(&st, name).await?;
    addon_op(&st, &name, "stop", wait).await
}

#[utoipa::path(post, path = "/api/addons/{name}/restart", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The instance, restarting.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn restart_addon(State(st): State<AppState>, Path(name): Path<String>, wait: Wait) -> ApiResult {
    let name = instance(&st, name).await?;
    addon_op(&st, &name, "restart", wait).await
}

#[utoipa::path(post, path = "/api/addons/{name}/execute", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name).")), request_body = ExecuteBody, responses((status = 200, description = "What the action answered.", body = Success), E403, E404, E502, E503, E504))]
pub(super) async fn execute_action(
    State(st): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ExecuteBody>,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let out = st.addons.execute_json(&name, &body.action, crate::addons::ActionInput::Raw(body.data.as_deref())).await?;
    ok_json(StatusCode::OK, &out, &format!("`{}` of {name} answered", body.action))
}

/// The addon's schedules and their recent runs.
#[utoipa::path(get, path = "/api/addons/{name}/schedules", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name).")), responses((status = 200, description = "The addon's schedules and their last runs.", body = Success), E404))]
pub(super) async fn schedule_runs(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let name = instance(&st, name).await?;
    let m = st.addons.installed_manifest(&name).await?;
    let runs = st.lifecycle.store().schedule_runs(&name, 100).await?;
    let runs: Vec<Value> = runs
        .into_iter()
        .map(|r| json!({"action": r.action, "cron": r.cron, "scheduled_for": crate::time::rfc3339_ms(r.scheduled_for), "ran_at": crate::time::rfc3339_ms(r.ran_at), "status": r.status, "detail": r.detail}))
        .collect();
    let msg = count_message(runs.len(), "scheduled run", "scheduled runs");
    ok(StatusCode::OK, json!({"schedules": m.schedules, "runs": runs}), &msg)
}

#[utoipa::path(get, path = "/api/widgets", tags = ["admin", "widgets"], params(("category" = Option<String>, Query, pattern = "^(content|form|display|interactive|layout)$", description = "Only widgets of this category: content, form, display, interactive or layout.")), responses((status = 200, description = "Every widget of the installed addons.", body = Success)))]
pub(super) async fn widget_catalogue(State(st): State<AppState>, q: Result<Query<CategoryQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    if let Some(c) = &q.category {
        if !crate::addons::manifest::WIDGET_CATEGORIES.contains(&c.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("category `{c}` is not one of {}", crate::addons::manifest::WIDGET_CATEGORIES.join(", ")),
            )
            .field("category"));
        }
    }
    let list = st.addons.widgets(q.category.as_deref()).await?;
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{n} widget(s)"))
}

#[utoipa::path(get, path = "/api/widgets/{addon}/{widget}", tags = ["admin", "widgets"], params(("addon" = String, Path, description = "The addon's name."), ("widget" = String, Path, description = "The widget's id."), ("config" = Option<String>, Query, description = "The widget's config: a JSON object as text."), ("context" = Option<String>, Query, description = "The render context: a JSON object as text.")), responses((status = 200, description = "The rendered widget, with its `ETag`.", body = Success), (status = 304, description = "Not modified: the `If-None-Match` ETag is current."), E400, E404, E502, E503, E504))]
pub(super) async fn render_widget_get(
    State(st): State<AppState>,
    Path((addon, widget)): Path<(String, String)>,
    q: Result<Query<RenderQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> ApiResult {
    let addon = instance(&st, addon).await?;
    let Query(q) = q?;
    let (config, context) = q.parse()?;
    render_reply(&st.addons, &addon, &widget, config, context, &headers, None).await
}

#[utoipa::path(post, path = "/api/widgets/{addon}/{widget}", tags = ["admin", "widgets"], params(("addon" = String, Path, description = "The addon's name."), ("widget" = String, Path, description = "The widget's id.")), request_body = RenderBody, responses((status = 200, description = "The rendered widget, with its `ETag`.", body = Success), (status = 304, description = "Not modified: the `If-None-Match` ETag is current."), E400, E404, E502, E503, E504))]
pub(super) async fn render_widget_post(
    State(st): State<AppState>,
    Path((addon, widget)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<RenderBody>,
) -> ApiResult {
    let addon = instance(&st, addon).await?;
    let (config, context) = body.inputs()?;
    render_reply(&st.addons, &addon, &widget, config, context, &headers, None).await
}

#[utoipa::path(get, path = "/api/widgets/{addon}/{widget}/frame", tags = ["admin", "widgets"], params(("addon" = String, Path, description = "The addon's name."), ("widget" = String, Path, description = "The widget's id."), ("config" = Option<String>, Query, description = "The widget's config: a JSON object as text."), ("context" = Option<String>, Query, description = "The render context: a JSON object as text.")), responses((status = 200, description = "An HTML page that shows the rendered widget.", content_type = "text/html", body = String), E400, E404, E502, E503, E504))]
pub(super) async fn widget_frame(
    State(st): State<AppState>,
    Path((addon, widget)): Path<(String, String)>,
    q: Result<Query<RenderQuery>, QueryRejection>,
) -> ApiResult {
    let addon = instance(&st, addon).await?;
    let Query(q) = q?;
    let (config, context) = q.parse()?;
    frame_reply(&st.addons, &addon, &widget, config, context).await
}

/// `POST /api/addons/{name}/upgrade`: health-gated, rolled back on any failure. Answers
/// when the deployment finished: 200 with the addon and the deployment, whose `outcome`
/// says whether it succeeded or was rolled back.
#[utoipa::path(post, path = "/api/addons/{name}/upgrade", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = UpgradeRequest, responses((status = 200, description = "The deployment of the new version.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn upgrade_addon(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(req): JsonBody<UpgradeRequest>,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let v = st.addons.upgrade(&name, req, who(caller)).await?;
    let msg = deployment_message(&name, &v);
    ok(StatusCode::OK, v, &msg)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishQuery {
    version: Option<String>,
}

/// `POST /api/addons/{name}/publish?version=V`: a WebAssembly module as the body
/// (`application/wasm`, at most `wasm.max_module_bytes`), deployed to a WASM addon.
#[utoipa::path(post, path = "/api/addons/{name}/publish", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("version" = Option<String>, Query, description = "The version the module is published as.")), request_body(description = "The WebAssembly module itself.", content((Vec<u8> = "application/wasm"), (Vec<u8> = "application/octet-stream"))), responses((status = 200, description = "The deployment of the published module.", body = Success), E404, E409))]
pub(super) async fn publish_addon(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    q: Result<Query<PublishQuery>, QueryRejection>,
    req: Request,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let Query(q) = q?;
    let ct = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.is_empty() && !ct.starts_with("application/wasm") && !ct.starts_with("application/octet-stream") {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("the body is the module itself: send it as Content-Type: application/wasm, not {ct}"),
        )
        .field_name("body"));
    }
    let limit = st.addons.config().wasm.max_module_bytes;
    let bytes = read_body(req.into_body(), limit, "wasm.max_module_bytes").await?;
    let v = st.addons.publish(&name, q.version.as_deref(), bytes, who(caller)).await?;
    let msg = deployment_message(&name, &v);
    ok(StatusCode::OK, v, &msg)
}

/// `POST /api/addons/{name}/rollback`: an earlier deployment, through the same path.
#[utoipa::path(post, path = "/api/addons/{name}/rollback", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = RollbackRequest, responses((status = 200, description = "The deployment rolled back to.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn rollback_addon(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let v = st.addons.rollback(&name, req, who(caller)).await?;
    let msg = deployment_message(&name, &v);
    ok(StatusCode::OK, v, &msg)
}

fn deployment_message(name: &str, v: &Value) -> String {
    let d = &v["deployment"];
    match d["outcome"].as_str() {
        Some("succeeded") => format!("{name} is on {} (deployment {})", d["to_version"].as_str().unwrap_or("?"), d["id"]),
        Some(o) => format!(
            "deployment {} of {name} to {} {o}: {}; {name} stays on {}",
            d["id"],
            d["to_version"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or("no reason recorded"),
            v["version"].as_str().unwrap_or("its version")
        ),
        None => format!("deployed {name}"),
    }
}

/// `GET /api/addons/{name}/deployments`: the history, oldest first.
#[utoipa::path(get, path = "/api/addons/{name}/deployments", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name).")), responses((status = 200, description = "The addon's deployments, newest first.", body = Success), E404))]
pub(super) async fn addon_deployments(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let name = instance(&st, name).await?;
    let list = st.addons.deployments(&name).await?;
    let n = list.len();
    ok(StatusCode::OK, json!(list), &format!("{n} deployment(s) of {name}"))
}

/// `GET /api/addons/{name}/environments`: every environment of an installed addon.
#[utoipa::path(get, path = "/api/addons/{name}/environments", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name).")), responses((status = 200, description = "The addon's environments.", body = Success), E404))]
pub(super) async fn list_environments(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let name = instance(&st, name).await?;
    let v = st.addons.environments(&name).await?;
    let msg = count_message(v.as_array().map_or(0, Vec::len), "environment", "environments");
    ok(StatusCode::OK, v, &msg)
}

/// `POST /api/addons/{name}/environments`: one more environment, its own instance.
#[utoipa::path(post, path = "/api/addons/{name}/environments", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = EnvironmentRequest, responses((status = 201, description = "The environment's instance, installing.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn add_environment(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    wait: Wait,
    JsonBody(req): JsonBody<EnvironmentRequest>,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let env = req.name.clone();
    let v = st.addons.add_environment(&name, req, who(caller)).await?;
    let instance = v["instance"].as_str().unwrap_or(&name).to_string();
    let v = match wait.0 {
        Some((phase, timeout)) => st.addons.wait(&instance, phase, timeout).await?,
        None => v,
    };
    ok(StatusCode::CREATED, v, &format!("added the environment {env} of {name} as {instance}"))
}

/// `POST /api/addons/{name}/promote`: what one environment runs, into another.
#[utoipa::path(post, path = "/api/addons/{name}/promote", tags = ["admin", "addons"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = PromoteRequest, responses((status = 200, description = "The deployment of the promoted version.", body = Success), E404, E409, E502, E503, E504))]
pub(super) async fn promote_addon(
    State(st): State<AppState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(req): JsonBody<PromoteRequest>,
) -> ApiResult {
    let name = instance(&st, name).await?;
    let v = st.addons.promote(&name, req, who(caller)).await?;
    let msg = deployment_message(&name, &v);
    ok(StatusCode::OK, v, &msg)
}
