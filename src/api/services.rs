//! Services: their views, list/create/show/delete, start/stop/restart/scale, logs and
//! metrics, discovery and health, the watch stream, templates, cleanup and image pulls;
//! and the `?wait=` that lets a change answer once the service reached a phase.

use super::*;

pub(super) fn health_summary(s: &Service) -> Health {
    let wanted: Vec<_> = s.instances.iter().filter(|i| i.wanted).collect();
    if s.phase == Phase::Failed {
        Health::Unhealthy
    } else if wanted.is_empty() || s.desired != crate::model::Desired::Started {
        Health::Unknown
    } else if wanted.iter().any(|i| i.health == Health::Unhealthy) {
        Health::Unhealthy
    } else if wanted.iter().all(|i| i.health == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Starting
    }
}

pub(super) fn status_of(s: &Service) -> &'static str {
    let wanted = s.instances.iter().filter(|i| i.wanted).count();
    let running = s.instances.iter().filter(|i| i.wanted && i.container_id.is_some() && i.health != Health::Unknown).count();
    match s.phase {
        Phase::Failed => "failed",
        Phase::Stopped | Phase::Deleted => "stopped",
        _ if wanted > 0 && running == wanted => "running",
        _ if running > 0 => "partial",
        Phase::Started => "running",
        _ => "pending",
    }
}

pub(super) fn endpoint(st: &AppState, spec: &crate::model::ServiceSpec, port: u16) -> String {
    let addr = bound_host(st, spec).0;
    let host = if addr.is_unspecified() { "127.0.0.1".to_string() } else { addr.to_string() };
    format!("http://{host}:{port}")
}

pub(super) fn instance_state(s: &Service, i: &crate::model::Instance) -> &'static str {
    if !i.wanted {
        "removing"
    } else if i.container_id.is_none() {
        "pending"
    } else if s.phase == Phase::Failed || i.next_restart_at.is_some() {
        "exited"
    } else if s.desired == crate::model::Desired::Started {
        "running"
    } else {
        "stopped"
    }
}

/// The last resource sample of each service (by id) and when it was asked for, so that
/// service objects carry `resource_usage` without making every list wait a second per
/// container for the engine to measure CPU. A view of a service whose sample is older than
/// [`USAGE_MAX_AGE_MS`] asks for a new one in the background.
static USAGE: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Usage>>> = std::sync::LazyLock::new(Default::default);

/// How old a resource sample may be before a view asks for a new one.
const USAGE_MAX_AGE_MS: i64 = 15_000;

#[derive(Clone, Default)]
struct Usage {
    /// The sample's JSON (`cpu_percent`, `memory_usage_mb`, …); `None` until one arrived.
    sample: Option<Value>,
    /// When it was taken (Unix millis).
    sampled_at: Option<i64>,
    /// When a new sample was last asked for (Unix millis), so one is asked for at a time.
    asked_at: i64,
}

/// Sums the samples of one service's running instances, and keeps the sum for its views.
async fn sample_usage(lc: &Lifecycle, svc: &Service) -> Result<(Value, Vec<Value>), ApiError> {
    let running: Vec<_> = svc.instances.iter().filter(|i| i.wanted && i.container_id.is_some()).collect();
    let samples =
        futures_util::future::join_all(running.iter().map(|i| async move { (i.ordinal, lc.runtime().stats(&i.container_name()).await) }))
            .await;
    let mut total = crate::runtime::StatsSample::default();
    let mut per = Vec::new();
    for (ordinal, s) in samples {
        let s = match s {
            Ok(s) => s,
            // No answer from the engine is not "no usage": say so rather than report zeros.
            Err(e @ (RuntimeError::Unavailable(_) | RuntimeError::Unresponsive { .. })) => return Err(LifecycleError::Runtime(e).into()),
            Err(_) => continue,
        };
        total.cpu_percent += s.cpu_percent;
        total.memory_usage_mb += s.memory_usage_mb;
        total.memory_limit_mb += s.memory_limit_mb;
        total.network_rx_mb += s.network_rx_mb;
        total.network_tx_mb += s.network_tx_mb;
        per.push(json!({"ordinal": ordinal, "metrics": s}));
    }
    if total.memory_limit_mb > 0.0 {
        total.memory_percent = (total.memory_usage_mb / total.memory_limit_mb * 10_000.0).round() / 100.0;
    }
    let r = |v: f64| (v * 100.0).round() / 100.0;
    let sum = json!({
        "cpu_percent": r(total.cpu_percent),
        "memory_usage_mb": r(total.memory_usage_mb),
        "memory_limit_mb": r(total.memory_limit_mb),
        "memory_percent": total.memory_percent,
        "network_rx_mb": r(total.network_rx_mb),
        "network_tx_mb": r(total.network_tx_mb),
    });
    let now = now_ms();
    let mut cache = USAGE.lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache.entry(svc.id.to_string()).or_default();
    entry.sample = Some(sum.clone());
    entry.sampled_at = Some(now);
    Ok((sum, per))
}

/// `resource_usage` of a service object: the last sample with its time and the limits,
/// asking for a new sample when it is stale and the service has running containers.
fn resource_usage(st: &AppState, s: &Service) -> Value {
    let now = now_ms();
    let running = s.instances.iter().any(|i| i.wanted && i.container_id.is_some());
    let usage = {
        let mut cache = USAGE.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.entry(s.id.to_string()).or_default();
        let stale = entry.sampled_at.is_none_or(|t| now - t > USAGE_MAX_AGE_MS) && now - entry.asked_at > USAGE_MAX_AGE_MS;
        if running && stale && st.lifecycle.runtime().is_available() && tokio::runtime::Handle::try_current().is_ok() {
            entry.asked_at = now;
            let (lc, svc) = (st.lifecycle.clone(), s.clone());
            st.lifecycle.spawn_background(async move {
                let _ = sample_usage(&lc, &svc).await;
            });
        }
        entry.clone()
    };
    let field = |k: &str| usage.sample.as_ref().and_then(|v| v.get(k).cloned()).unwrap_or(Value::Null);
    json!({
        "cpu_percent": field("cpu_percent"),
        "memory_usage_mb": field("memory_usage_mb"),
        "memory_limit_mb": field("memory_limit_mb"),
        "memory_percent": field("memory_percent"),
        "network_rx_mb": field("network_rx_mb"),
        "network_tx_mb": field("network_tx_mb"),
        "memory_limit": s.spec.resource_limits.memory,
        "cpu_limit": s.spec.resource_limits.cpu,
        "sampled_at": usage.sampled_at.map(ms_to_rfc3339),
    })
}

/// When the service's current run began: the earliest start of its wanted instances.
fn start_time(s: &Service) -> Option<String> {
    s.instances.iter().filter(|i| i.wanted && i.container_id.is_some()).filter_map(|i| i.started_at).min().map(ms_to_rfc3339)
}

/// The address a service's ports are bound to, and a sentence for the answer when that is
/// not the `host` the request asked for.
fn bound_host(st: &AppState, spec: &crate::model::ServiceSpec) -> (std::net::IpAddr, Option<String>) {
    let publish = st.lifecycle.config().ports.publish_address;
    let bound = crate::model::bind_address(spec.host, publish);
    let note = spec.host.filter(|h| *h != bound).map(|h| {
        format!(
            "host {h} was not honoured: the port is bound to {bound}, as the config's ports.publish_address ({publish}) allows no wider; set ports.publish_address = \"0.0.0.0\" to publish beyond loopback"
        )
    });
    (bound, note)
}

pub fn service_view(st: &AppState, s: &Service) -> Value {
    let spec = &s.spec;
    let wanted: Vec<_> = s.instances.iter().filter(|i| i.wanted).collect();
    let first_port = wanted.first().map(|i| i.host_port);
    let last_check = wanted.iter().filter_map(|i| st.lifecycle.last_health_check(&i.id)).max();
    let error_message = s.last_error.clone().or_else(|| wanted.iter().find_map(|i| i.last_error.clone()));
    let instances: Vec<Value> = s
        .instances
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "ordinal": i.ordinal,
                "container_id": i.container_id,
                "container_name": i.container_name(),
                "host_port": i.host_port,
                "health": i.health.as_str(),
                "restarts": i.restarts,
                "started_at": i.started_at.map(ms_to_rfc3339),
                "last_error": i.last_error,
                "exit_code": i.exit_code,
                "state": instance_state(s, i),
            })
        })
        .collect();
    // The documented fields of a plugin microservice, then addond's own.
    let mut v = json!({
        "id": s.id,
        "name": spec.display(),
        "slug": spec.name,
        "plugin_id": spec.plugin_id,
        "service_type": spec.service_type,
        "image": spec.image,
        "port": spec.port,
        "host": bound_host(st, spec).0.to_string(),
        "environment": spec.environment,
        "volumes": spec.volumes,
        "networks": spec.networks,
        "depends_on": spec.depends_on,
        "health_check": spec.health_check,
        "resource_limits": spec.resource_limits,
        "restart_policy": spec.restart_policy,
        "version": spec.version,
        "replicas": s.replicas,
        "desired": s.desired.as_str(),
        "phase": s.phase.as_str(),
        "status": status_of(s),
        "health_status": health_summary(s).as_str(),
        "host_port": first_port,
        "endpoint": first_port.map(|p| endpoint(st, spec, p)),
        "start_time": start_time(s),
        "last_health_check": last_check.map(ms_to_rfc3339),
        "resource_usage": resource_usage(st, s),
        "error_message": error_message,
    });
    let more = json!({
        "last_error": s.last_error,
        "exit_code": s.exit_code,
        "created_at": ms_to_rfc3339(s.created_at),
        "updated_at": ms_to_rfc3339(s.updated_at),
        "instances": instances,
    });
    if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
        v.extend(more);
    }
    v
}

/// Replies with the service, after waiting for a phase when the caller asked to.
pub(super) async fn reply_service(st: &AppState, svc: Service, wait: Wait, status: StatusCode, message: &str) -> ApiResult {
    let Some((phase, timeout)) = wait.0 else {
        return ok(status, service_view(st, &svc), message);
    };
    match st.lifecycle.wait(&svc.id, phase, timeout).await? {
        Some(s) => ok(status, service_view(st, &s), message),
        None => {
            let mut v = service_view(st, &svc);
            v["phase"] = json!("Deleted");
            v["status"] = json!("stopped");
            ok(status, v, message)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    plugin_id: Option<String>,
    status: Option<String>,
}

#[utoipa::path(get, path = "/api/plugin-microservice/services", tags = ["admin", "services"], params(("plugin_id" = Option<String>, Query, description = "Only this plugin's services."), ("status" = Option<String>, Query, description = "Only services with this status.")), responses((status = 200, description = "The services.", body = super::openapi::ServiceListAnswer)))]
pub(super) async fn list_services(State(st): State<AppState>, q: Result<Query<ListQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let all = st.lifecycle.store().list_services().await?;
    // Samples of services that are gone are dropped here, where every service is at hand.
    let ids: std::collections::HashSet<&str> = all.iter().map(|s| s.id.as_str()).collect();
    USAGE.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| ids.contains(k.as_str()));
    let list: Vec<Value> = all
        .iter()
        .filter(|s| q.plugin_id.as_deref().is_none_or(|p| s.spec.plugin_id.as_deref() == Some(p)))
        .filter(|s| q.status.as_deref().is_none_or(|f| s.phase.as_str().eq_ignore_ascii_case(f) || status_of(s) == f.to_ascii_lowercase()))
        .map(|s| service_view(&st, s))
        .collect();
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{} found", count_message(n, "service", "services")))
}

#[utoipa::path(post, path = "/api/plugin-microservice/services", tags = ["admin", "services"], params(("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = inline(crate::http::openapi::JsonObject), responses((status = 201, description = "The service, created (and, with `wait`, in that phase).", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn create_service(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    wait: Wait,
    JsonBody(mut req): JsonBody<CreateRequest>,
) -> ApiResult {
    // No image but a plugin: built from `<data_dir>/plugins/<plugin_id>/` (a plugin id that
    // is not a valid name is left to the validation below to refuse).
    if let (None, Some(p)) = (&req.image, &req.plugin_id) {
        if crate::model::valid_plugin_id(p) {
            req.image = Some(st.builds.build_plugin(p, caller.map(|Extension(c)| c.uid)).await?);
        }
    }
    let wait = wait.toward(&[Phase::Started, Phase::Stopped], "a create")?;
    let (spec, replicas) = req.validate(&st.lifecycle.live_config())?;
    let note = bound_host(&st, &spec).1;
    let svc = st.lifecycle.create(spec, replicas, None).await?;
    let message = match note {
        Some(n) => format!("service {} created; {n}", svc.spec.display()),
        None => format!("service {} created", svc.spec.display()),
    };
    reply_service(&st, svc, wait, StatusCode::CREATED, &message).await
}

#[utoipa::path(get, path = "/api/plugin-microservice/services/{id}", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name.")), responses((status = 200, description = "The service.", body = super::openapi::ServiceAnswer), E404, E409))]
pub(super) async fn show_service(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let svc = st.lifecycle.store().get_service(&id).await?.ok_or_else(|| ApiError::from(LifecycleError::NotFound(id)))?;
    let message = format!("service {} is {} ({})", svc.spec.display(), status_of(&svc), svc.phase.as_str());
    ok(StatusCode::OK, service_view(&st, &svc), &message)
}

#[utoipa::path(delete, path = "/api/plugin-microservice/services/{id}", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The service, being deleted.", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn delete_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let wait = wait.toward(&[Phase::Deleted], "a delete")?;
    let svc = st.lifecycle.delete(&id).await?;
    if let Some(instance) = &svc.addon_instance {
        st.addons.forget(instance);
    }
    reply_service(&st, svc, wait, StatusCode::OK, "service is being deleted").await
}

#[utoipa::path(post, path = "/api/plugin-microservice/services/{id}/start", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The service, starting.", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn start_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let wait = wait.toward(&[Phase::Started], "a start")?;
    let svc = st.lifecycle.start(&id).await?;
    reply_service(&st, svc, wait, StatusCode::OK, "service is starting").await
}

#[utoipa::path(post, path = "/api/plugin-microservice/services/{id}/stop", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The service, stopping.", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn stop_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let wait = wait.toward(&[Phase::Stopped], "a stop")?;
    let svc = st.lifecycle.stop(&id).await?;
    reply_service(&st, svc, wait, StatusCode::OK, "service is stopping").await
}

#[utoipa::path(post, path = "/api/plugin-microservice/services/{id}/restart", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), responses((status = 200, description = "The service, restarting.", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn restart_service(State(st): State<AppState>, Path(id): Path<String>, wait: Wait) -> ApiResult {
    let wait = wait.toward(&[Phase::Started], "a restart")?;
    let svc = st.lifecycle.restart(&id).await?;
    reply_service(&st, svc, wait, StatusCode::OK, "service is restarting").await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScaleBody {
    /// How many instances: 0 up to `limits.max_replicas` (64 by default).
    #[schema(minimum = 0, maximum = 64)]
    replicas: i64,
}

#[utoipa::path(post, path = "/api/plugin-microservice/services/{id}/scale", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = ScaleBody, responses((status = 200, description = "The service, scaling.", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn scale_service(
    State(st): State<AppState>,
    Path(id): Path<String>,
    wait: Wait,
    JsonBody(body): JsonBody<ScaleBody>,
) -> ApiResult {
    let max = st.lifecycle.config().limits.max_replicas;
    if body.replicas < 0 || body.replicas > max as i64 {
        return Err(
            ApiError::new(ErrorCode::ValidationFailed, format!("replicas {} must be between 0 and {max}", body.replicas)).field("replicas")
        );
    }
    let wait = wait.toward(&[Phase::Started, Phase::Stopped], "a scale")?;
    let svc = st.lifecycle.scale(&id, body.replicas as u32).await?;
    reply_service(&st, svc, wait, StatusCode::OK, &format!("scaling to {}", body.replicas)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    lines: Option<u32>,
    follow: Option<bool>,
    timestamps: Option<bool>,
    instance: Option<u32>,
}

#[utoipa::path(get, path = "/api/plugin-microservice/services/{id}/logs", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name."), ("lines" = Option<i64>, Query, minimum = 0, maximum = 4294967295.0, description = "How many of the last lines."), ("follow" = Option<bool>, Query, description = "Keep the answer open and stream new lines."), ("timestamps" = Option<bool>, Query, description = "Prefix each line with its time."), ("instance" = Option<i64>, Query, minimum = 0, maximum = 4294967295.0, description = "Only this instance's lines.")), responses((status = 200, description = "The log lines; with `follow`, a stream of plain text lines.", content((super::openapi::LogsAnswer = "application/json"), (String = "text/plain"))), E404, E409, E502, E503))]
pub(super) async fn service_logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let lc = &st.lifecycle;
    let svc = lc.store().get_service(&id).await?.ok_or_else(|| ApiError::from(LifecycleError::NotFound(id)))?;
    if !lc.runtime().is_available() {
        return Err(LifecycleError::Runtime(lc.runtime().unavailable_error()).into());
    }
    let lines = q.lines.unwrap_or(100).min(100_000);
    let follow = q.follow.unwrap_or(false);
    let targets: Vec<_> = svc.instances.iter().filter(|i| i.wanted && q.instance.is_none_or(|k| i.ordinal == k)).collect();
    if targets.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("service `{}` has no instance{}", svc.spec.name, q.instance.map(|k| format!(" {k}")).unwrap_or_default()),
        )
        .field("instance"));
    }
    let multi = targets.len() > 1;
    let mut streams = Vec::new();
    for inst in &targets {
        let prefix = if multi { format!("[{}] ", inst.ordinal) } else { String::new() };
        let s =
            lc.runtime().logs(&inst.container_name(), lines, follow, q.timestamps.unwrap_or(false)).await.map_err(LifecycleError::from)?;
        streams.push(s.map(move |r| r.map(|b| prefix_lines(&prefix, &b))).boxed());
    }
    let merged = futures_util::stream::select_all(streams);
    if follow {
        let body = Body::from_stream(merged.map(|r| r.map_err(std::io::Error::other)));
        return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response());
    }
    let chunks: Vec<_> = merged.collect().await;
    let mut text = String::new();
    for c in chunks {
        match c {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            // A container without logs yet (just created) is not an error.
            Err(RuntimeError::Api(m)) if m.contains("No such container") => {}
            Err(e) => return Err(LifecycleError::from(e).into()),
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let message =
        format!("{} from {}", count_message(lines.len(), "log line", "log lines"), count_message(targets.len(), "instance", "instances"));
    // `data` is the lines, as documented; who they came from rides beside it.
    let mut body = crate::wire::success(json!(lines), &message);
    body["service"] = json!({"id": svc.id, "name": svc.spec.display()});
    body["instances"] = json!(targets.iter().map(|i| i.ordinal).collect::<Vec<_>>());
    body["count"] = json!(lines.len());
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

pub(super) fn prefix_lines(prefix: &str, b: &[u8]) -> bytes::Bytes {
    if prefix.is_empty() {
        return bytes::Bytes::copy_from_slice(b);
    }
    let text = String::from_utf8_lossy(b);
    let mut out = String::with_capacity(text.len() + prefix.len());
    for line in text.split_inclusive('\n') {
        out.push_str(prefix);
        out.push_str(line);
    }
    bytes::Bytes::from(out)
}

#[utoipa::path(get, path = "/api/plugin-microservice/services/{id}/metrics", tags = ["admin", "services"], params(("id" = String, Path, description = "The service's id or name.")), responses((status = 200, description = "CPU, memory and network use of each instance.", body = Success), E404, E409, E502, E503))]
pub(super) async fn service_metrics(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let lc = &st.lifecycle;
    let svc = lc.store().get_service(&id).await?.ok_or_else(|| ApiError::from(LifecycleError::NotFound(id)))?;
    if !lc.runtime().is_available() {
        return Err(LifecycleError::Runtime(lc.runtime().unavailable_error()).into());
    }
    let (mut sum, per) = sample_usage(lc, &svc).await?;
    sum["timestamp"] = json!(ms_to_rfc3339(now_ms()));
    sum["instances"] = json!(per);
    let message = format!("resource usage of service {} ({})", svc.spec.display(), count_message(per.len(), "instance", "instances"));
    ok(StatusCode::OK, sum, &message)
}

/// The two kinds of network a service may name, by their documented names, and each
/// owner's Docker network of those kinds that exists now (best effort: without Docker the
/// list is empty).
async fn discovery_networks(st: &AppState) -> (Vec<Value>, Vec<Value>) {
    let cfg = st.lifecycle.config();
    let d = &cfg.docker;
    let kinds = vec![
        json!({
            "name": crate::model::PLUGIN_NETWORK, "id": crate::model::PLUGIN_NETWORK, "driver": "bridge", "scope": "local",
            "internal": false, "aliases": [d.network], "subnet": d.subnet_pool, "subnet_prefix": d.subnet_prefix,
            "gateway": crate::isolation::Subnet::parse(&d.subnet_pool).map(|s| s.gateway().to_string()),
        }),
        json!({
            "name": crate::model::PLUGIN_ISOLATED, "id": crate::model::PLUGIN_ISOLATED, "driver": "bridge", "scope": "local",
            "internal": true, "aliases": [d.isolated_network], "subnet": d.subnet_pool, "subnet_prefix": d.subnet_prefix,
            "gateway": crate::isolation::Subnet::parse(&d.subnet_pool).map(|s| s.gateway().to_string()),
        }),
    ];
    let owned = if st.lifecycle.runtime().is_available() {
        st.lifecycle.runtime().list_owned_networks(st.lifecycle.daemon_id()).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut owned: Vec<Value> = owned
        .into_iter()
        .map(|n| {
            let internal = n.name.ends_with("_internal");
            json!({
                "name": n.name, "id": n.info.as_ref().map(|i| i.id.clone()), "driver": "bridge", "scope": "local",
                "kind": if internal { crate::model::PLUGIN_ISOLATED } else { crate::model::PLUGIN_NETWORK },
                "internal": internal, "owner": n.owner,
                "subnet": n.info.as_ref().map(|i| i.subnet.to_string()), "gateway": n.info.as_ref().map(|i| i.gateway.to_string()),
            })
        })
        .collect();
    owned.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    (kinds, owned)
}

#[utoipa::path(get, path = "/api/plugin-microservice/discovery", tags = ["admin", "services"], responses((status = 200, description = "Where each running service answers.", body = super::openapi::DiscoveryAnswer)))]
pub(super) async fn discovery(State(st): State<AppState>) -> ApiResult {
    let all = st.lifecycle.store().list_services().await?;
    let mut healthy = 0;
    let mut unhealthy = 0;
    let mut instances = 0;
    let (mut healthy_services, mut unhealthy_services) = (0, 0);
    let services: Vec<Value> = all
        .iter()
        .map(|s| {
            let wanted: Vec<_> = s.instances.iter().filter(|i| i.wanted).collect();
            instances += wanted.len();
            healthy += wanted.iter().filter(|i| i.health == Health::Healthy).count();
            unhealthy += wanted.iter().filter(|i| i.health == Health::Unhealthy).count();
            let health = health_summary(s);
            match health {
                Health::Healthy => healthy_services += 1,
                Health::Unhealthy => unhealthy_services += 1,
                _ => {}
            }
            json!({
                "id": s.id, "name": s.spec.display(), "slug": s.spec.name, "plugin_id": s.spec.plugin_id,
                "type": s.spec.service_type, "service_type": s.spec.service_type,
                "status": status_of(s), "health": health.as_str(), "health_status": health.as_str(),
                "port": s.spec.port, "host_port": wanted.first().map(|i| i.host_port), "start_time": start_time(s),
                "endpoint": wanted.first().map(|i| endpoint(&st, &s.spec, i.host_port)),
                "endpoints": wanted.iter().filter(|i| i.health == Health::Healthy).map(|i| endpoint(&st, &s.spec, i.host_port)).collect::<Vec<_>>(),
                "phase": s.phase.as_str(), "networks": s.spec.networks,
                // An addon's service names its addon installation and environment.
                "addon": s.addon_instance.as_deref().map(|i| crate::model::split_environment(i).0),
                "environment": s.addon_instance.as_deref().map(|i| crate::model::split_environment(i).1),
            })
        })
        .collect();
    let (networks, docker_networks) = discovery_networks(&st).await;
    let message =
        format!("{}: {healthy_services} healthy, {unhealthy_services} unhealthy", count_message(all.len(), "service", "services"));
    ok(
        StatusCode::OK,
        json!({
            "total_services": all.len(),
            "healthy_services": healthy_services,
            "unhealthy_services": unhealthy_services,
            "services": services,
            // The two kinds a service may ask for; each owner's network of that kind takes a
            // /subnet_prefix of the pool (`docker_networks`: those that exist now).
            "networks": networks,
            "docker_networks": docker_networks,
            "totals": {"services": all.len(), "instances": instances, "healthy": healthy, "unhealthy": unhealthy},
        }),
        &message,
    )
}

#[utoipa::path(get, path = "/api/plugin-microservice/health", tags = ["admin", "services"], responses((status = 200, description = "The health of every service.", body = Success)))]
pub(super) async fn services_health(State(st): State<AppState>) -> ApiResult {
    let all = st.lifecycle.store().list_services().await?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let list: Vec<Value> = all
        .iter()
        .map(|s| {
            let h = health_summary(s).as_str();
            *counts.entry(h).or_default() += 1;
            json!({"id": s.id, "name": s.spec.display(), "health_status": h, "phase": s.phase.as_str()})
        })
        .collect();
    let c = |k| counts.get(k).copied().unwrap_or(0);
    let message = format!("{}: {} healthy, {} unhealthy", count_message(all.len(), "service", "services"), c("healthy"), c("unhealthy"));
    ok(
        StatusCode::OK,
        json!({"total": all.len(), "healthy": c("healthy"), "unhealthy": c("unhealthy"), "starting": c("starting"), "unknown": c("unknown"), "services": list}),
        &message,
    )
}

/// Server-sent events: one `service` event with the service's JSON (or `{"id", "deleted":
/// true}`) each time a service changes, so dashboards update without polling. A client
/// that falls behind gets a `resync` event and should list the services again.
#[utoipa::path(get, path = "/api/plugin-microservice/watch", tags = ["admin", "services"], responses((status = 200, description = "A stream of server-sent events: `service` with the service as JSON at each change, `resync` when some were missed.", content_type = "text/event-stream", body = String)))]
pub(super) async fn watch_services(State(st): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = st.lifecycle.subscribe();
    let stream = futures_util::stream::unfold((rx, st), |(mut rx, st)| async move {
        let event = match rx.recv().await {
            Ok(id) => match st.lifecycle.store().get_service(id.as_str()).await {
                Ok(Some(svc)) => Event::default().event("service").data(service_view(&st, &svc).to_string()),
                Ok(None) => Event::default().event("service").data(json!({"id": id, "deleted": true}).to_string()),
                Err(_) => Event::default().event("resync").data("{}"),
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), (rx, st)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[utoipa::path(get, path = "/api/plugin-microservice/templates", tags = ["admin", "services"], responses((status = 200, description = "The service templates.", body = super::openapi::TemplatesAnswer)))]
pub(super) async fn list_templates(State(st): State<AppState>) -> ApiResult {
    let image = &st.lifecycle.config().templates.image;
    let list: Vec<Value> = TEMPLATES
        .iter()
        .map(|t| {
            let env: serde_json::Map<String, Value> = t.environment.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            let cfg = st.lifecycle.config();
            json!({
                "id": t.id, "name": t.name, "description": t.description, "service_type": t.service_type, "port": t.port,
                "template": {
                    "name": t.service_name, "service_type": t.service_type, "port": t.port, "environment": env,
                    "health_check": {
                        "url": format!("http://localhost:{}{}", t.port, t.health_path),
                        "interval": cfg.health.interval_seconds, "timeout": cfg.health.timeout_seconds, "retries": cfg.health.retries,
                    },
                    "resource_limits": {"memory": t.memory, "cpu": t.cpu},
                },
                "resource_limits": {"memory": t.memory, "cpu": t.cpu},
                "health_check": {"path": t.health_path}, "image": image,
            })
        })
        .collect();
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list), &format!("{} available", count_message(n, "template", "templates")))
}

#[utoipa::path(post, path = "/api/plugin-microservice/templates/{id}/create", tags = ["admin", "services"], params(("id" = String, Path, description = "The template's id."), ("wait" = Option<super::openapi::WaitFor>, Query, description = "Answer once the service is `started`, `stopped` or `deleted` (the answer then shows it)."), ("timeout" = Option<f64>, Query, exclusive_minimum = 0, maximum = 600, description = "Seconds to wait for `wait` (default 60, at most `api.max_wait_seconds`, 600 by default).")), request_body = inline(crate::http::openapi::JsonObject), responses((status = 201, description = "The service, created from the template.", body = super::openapi::ServiceAnswer), E404, E409, E502, E503, E504))]
pub(super) async fn create_from_template(
    State(st): State<AppState>,
    Path(id): Path<String>,
    wait: Wait,
    JsonBody(body): JsonBody<TemplateCreateRequest>,
) -> ApiResult {
    let t = template(&id).ok_or_else(|| {
        let known: Vec<&str> = TEMPLATES.iter().map(|t| t.id).collect();
        ApiError::new(ErrorCode::NotFound, format!("no template `{id}`; known templates: {}", known.join(", "))).field("template")
    })?;
    if body.image.is_none() {
        // The configured template image, loaded from its archive when Docker lacks it. An
        // engine that does not answer is left to the create (which tolerates it).
        match st.lifecycle.runtime().ensure_template_image().await {
            Err(crate::runtime::RuntimeError::Unresponsive { .. }) => {}
            r => r.map_err(LifecycleError::from)?,
        }
    }
    let (spec, replicas) = t.request(body, &st.lifecycle.config().templates.image).validate(&st.lifecycle.live_config())?;
    let note = bound_host(&st, &spec).1;
    let wait = wait.toward(&[Phase::Started, Phase::Stopped], "a create")?;
    let svc = st.lifecycle.create(spec, replicas, None).await?;
    let mut message = format!("service {} created from template {id}", svc.spec.display());
    if let Some(n) = note {
        message = format!("{message}; {n}");
    }
    reply_service(&st, svc, wait, StatusCode::CREATED, &message).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CleanupBody {
    /// Services stopped or failed for longer than this many days are deleted.
    #[schema(minimum = 0, maximum = 36500)]
    days: f64,
}

#[utoipa::path(post, path = "/api/plugin-microservice/cleanup", tags = ["admin", "services"], request_body = CleanupBody, responses((status = 200, description = "The services marked for deletion.", body = Success)))]
pub(super) async fn cleanup(State(st): State<AppState>, JsonBody(body): JsonBody<CleanupBody>) -> ApiResult {
    if !(body.days.is_finite() && body.days >= 0.0 && body.days <= 36_500.0) {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "days must be between 0 and 36500").field("days"));
    }
    let removed = st.lifecycle.cleanup(body.days).await?;
    let list: Vec<Value> = removed.iter().map(|s| json!({"id": s.id, "name": s.spec.display(), "phase": s.phase.as_str()})).collect();
    let n = list.len();
    ok(StatusCode::OK, json!({"removed": list}), &format!("{} marked for deletion", count_message(n, "service", "services")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PullBody {
    image: String,
}

/// Pulls an image unless present. When a pull is needed, the reply is a stream of JSON
/// lines (`application/x-ndjson`): progress steps, then `{"done": …}` or `{"error": …}`,
/// so `addonctl` can show progress while a large image downloads.
#[utoipa::path(post, path = "/api/plugin-microservice/images/pull", tags = ["admin", "services"], request_body = PullBody, responses((status = 200, description = "`{image, present, pulled}` when the image is present; otherwise a stream of JSON lines (`application/x-ndjson`): progress, then `done` or `error`.", body = Success), E404, E502, E503))]
pub(super) async fn pull_image(State(st): State<AppState>, JsonBody(body): JsonBody<PullBody>) -> ApiResult {
    let image = body.image.trim().to_string();
    if let Err(why) = crate::image_ref::check(&image) {
        return Err(ApiError::new(ErrorCode::ValidationFailed, crate::image_ref::message(&image, &why)).field("image"));
    }
    let lc = st.lifecycle.clone();
    if lc.runtime().image_present(&image).await.map_err(LifecycleError::from)? {
        return ok(StatusCode::OK, json!({"image": image, "present": true, "pulled": false}), "image is present");
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let result = lc
            .runtime()
            .pull_image(&image, move |p| {
                let _ = progress_tx.send(json!({"progress": p}).to_string());
            })
            .await;
        let last = match result {
            Ok(()) => json!({"done": true, "image": image}),
            Err(e) => json!({"error": {"code": ErrorCode::ImageNotFound.as_str(), "message": e.to_string(), "field": "image"}}),
        };
        let _ = tx.send(last.to_string());
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (Ok::<_, Infallible>(bytes::Bytes::from(l + "\n")), rx))
    });
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))], Body::from_stream(lines)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_format() {
        assert_eq!(ms_to_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(ms_to_rfc3339(1_795_303_913_500), "2026-11-21T23:31:53Z");
        assert_eq!(ms_to_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn prefixing_log_lines() {
        assert_eq!(&prefix_lines("[1] ", b"a\nb\n")[..], b"[1] a\n[1] b\n");
        assert_eq!(&prefix_lines("", b"a\n")[..], b"a\n");
    }
}
