//! Builds of addon code: `POST /api/addons/{name}/builds` takes a tar or tar.gz context and,
//! once every check passed, answers 200 with an NDJSON stream of the build's progress
//! (`step`, `log`, then `succeeded` or `failed`); `GET` lists the addon's recent builds.

use super::*;
use crate::build::{AddonBuild, BuildEvent, Kind};
use crate::store::BuildRow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BuildQuery {
    version: Option<String>,
    replace: Option<bool>,
}

/// The content types a context may come as; none at all is read as a tar too.
const CONTEXT_TYPES: &[&str] = &["application/x-tar", "application/gzip", "application/x-gzip", "application/octet-stream"];

/// One event as a line of the stream.
pub(super) fn event_line(ev: &BuildEvent) -> Value {
    match ev {
        BuildEvent::Step { step, of, text } => json!({"type": "step", "step": step, "of": of, "text": text}),
        BuildEvent::Log(text) => json!({"type": "log", "text": text}),
        BuildEvent::Succeeded { build, image, image_id, version, duration_ms } => json!({
            "type": "succeeded", "build": build, "image": image, "image_id": image_id, "version": version, "duration_ms": duration_ms,
        }),
        BuildEvent::Failed { build, step, message, log } => json!({
            "type": "failed", "build": build, "step": step,
            "error": {"code": ErrorCode::BuildFailed.as_str(), "message": message},
            "log": log,
        }),
    }
}

#[utoipa::path(post, path = "/api/addons/{name}/builds", tags = ["admin", "builds"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("version" = Option<String>, Query, description = "The version the image is built as."), ("replace" = Option<bool>, Query, description = "Build again a version that was built already.")), request_body(description = "The build context: a tar archive, gzipped or not.", content((Vec<u8> = "application/x-tar"), (Vec<u8> = "application/gzip"), (Vec<u8> = "application/octet-stream"))), responses((status = 200, description = "A stream of JSON lines (`application/x-ndjson`): `step` and `log` events, then `done` or `error`.", content_type = "application/x-ndjson", body = String), E404, E409, E422, E502, E503))]
pub(super) async fn start_build(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<BuildQuery>, QueryRejection>,
    req: Request,
) -> ApiResult {
    let Query(q) = q?;
    let uid = req.extensions().get::<Caller>().map(|c| c.uid);
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !CONTEXT_TYPES.contains(&ct.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("Content-Type `{ct}` is not a build context; send the context as application/x-tar or application/gzip"),
            )
            .field("Content-Type"));
        }
    }
    // Refused before the context is read, when that is already certain.
    st.builds.running(Kind::Addon, &name)?;
    let limit = st.lifecycle.config().build.max_context_bytes;
    let body = read_body(req.into_body(), usize::try_from(limit).unwrap_or(usize::MAX), "build.max_context_bytes").await?;
    let build = AddonBuild { name, version: q.version, replace: q.replace.unwrap_or(false), body, uid };
    let (_, rx) = st.builds.start_addon(build).await?;
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        Some((Ok::<_, Infallible>(bytes::Bytes::from(event_line(&ev).to_string() + "\n")), rx))
    });
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))], Body::from_stream(lines)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BuildListQuery {
    limit: Option<u32>,
}

fn build_view(b: &BuildRow) -> Value {
    let log: Value = b.log.as_deref().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    json!({
        "build": b.id,
        "version": b.version,
        "image": b.image,
        "image_id": b.image_id,
        "status": b.status,
        "step": b.step,
        "steps": b.steps,
        "error": b.error,
        "log": log,
        "uid": b.uid,
        "started_at": ms_to_rfc3339(b.started_at),
        "finished_at": b.finished_at.map(ms_to_rfc3339),
        "duration_ms": b.finished_at.map(|f| f - b.started_at),
    })
}

#[utoipa::path(get, path = "/api/addons/{name}/builds", tags = ["admin", "builds"], params(("name" = String, Path, description = "The addon's name (or an instance's name)."), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 20).")), responses((status = 200, description = "The addon's builds, newest first.", body = Success), E404))]
pub(super) async fn list_builds(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<BuildListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, format!("limit={limit}: must be between 1 and 1000")).field("limit"));
    }
    let rows = st.builds.list(Kind::Addon, &name, limit).await?;
    let n = rows.len();
    ok(StatusCode::OK, json!({"name": name, "builds": rows.iter().map(build_view).collect::<Vec<_>>()}), &format!("{n} build(s)"))
}
