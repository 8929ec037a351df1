//! Events: emit, list, the live stream (SSE with a backlog from `Last-Event-ID`), the
//! subscribers and redrive.

use super::*;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EmitBody {
    /// A dotted name of lowercase words: `payment.completed`.
    #[schema(pattern = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$", max_length = 128)]
    name: String,
    #[serde(default)]
    data: Value,
}

#[utoipa::path(post, path = "/api/events", tags = ["admin", "events"], request_body = EmitBody, responses((status = 201, description = "The stored event.", body = super::openapi::EventAnswer)))]
pub(super) async fn emit_event(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    JsonBody(b): JsonBody<EmitBody>,
) -> ApiResult {
    if !crate::events::valid_name(&b.name) {
        return Err(
            ApiError::new(ErrorCode::ValidationFailed, format!("`{}` is not an event name like payment.completed", b.name)).field("name")
        );
    }
    let source = match caller {
        Some(Extension(c)) => format!("admin:{}", c.uid),
        None => "admin".to_string(),
    };
    let ev = st.events.emit(&b.name, b.data, &source).await.map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
    ok(StatusCode::CREATED, ev.to_json(), "event stored")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    name: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

pub(super) fn check_pattern(p: &Option<String>) -> Result<(), ApiError> {
    if let Some(p) = p {
        if !crate::events::valid_pattern(p) {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("name `{p}`: an event name, `prefix.*` or `*`")).field("name"));
        }
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/events", tags = ["admin", "events"], params(("name" = Option<String>, Query, pattern = r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$", max_length = 128, description = "An event name, `prefix.*` or `*`."), ("after" = Option<i64>, Query, description = "Only events after this id."), ("limit" = Option<i64>, Query, minimum = 0, maximum = 4294967295.0, description = "At most this many.")), responses((status = 200, description = "The events, oldest first.", body = super::openapi::EventListAnswer)))]
pub(super) async fn list_events(State(st): State<AppState>, q: Result<Query<EventsQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    check_pattern(&q.name)?;
    let list = st.events.list(q.after.unwrap_or(0), q.name, q.limit.unwrap_or(100).min(10_000)).await?;
    let n = list.len();
    ok(StatusCode::OK, Value::Array(list.iter().map(|e| e.to_json()).collect()), &format!("{n} event(s)"))
}

/// Server-sent events of the log: replays what follows `Last-Event-ID` (or `?after=`), then
/// follows live (`Events::follow`, which GraphQL's `events` subscription uses too).
#[utoipa::path(get, path = "/api/events/stream", tags = ["admin", "events"], params(("name" = Option<String>, Query, pattern = r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$", max_length = 128, description = "An event name, `prefix.*` or `*`."), ("after" = Option<i64>, Query, description = "Only events after this id."), ("limit" = Option<i64>, Query, minimum = 0, maximum = 4294967295.0, description = "At most this many.")), responses((status = 200, description = "A stream of server-sent events, one per event (its name as the SSE event, its id as the SSE id).", content_type = "text/event-stream", body = String)))]
pub(super) async fn event_stream(
    State(st): State<AppState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> ApiResult {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let Query(q) = q?;
    check_pattern(&q.name)?;
    let last: i64 = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::InvalidQuery, "Last-Event-ID must be an event id").field("Last-Event-ID"))?,
        None => q.after.unwrap_or(0),
    };
    let to_sse = |e: crate::events::Event| SseEvent::default().id(e.id.to_string()).event(e.name.clone()).data(e.to_json().to_string());
    let stream = st.events.follow(Some(last), q.name.into_iter().collect()).await?.map(move |e| Ok::<_, Infallible>(to_sse(e)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

#[utoipa::path(get, path = "/api/events/subscribers", tags = ["admin", "events"], responses((status = 200, description = "Each subscriber's delivery state.", body = Success)))]
pub(super) async fn event_subscribers(State(st): State<AppState>) -> ApiResult {
    ok(StatusCode::OK, st.events.status().await?, "event subscribers and their lag")
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RedriveBody {
    subscriber: Option<String>,
}

#[utoipa::path(post, path = "/api/events/redrive", tags = ["admin", "events"], request_body = RedriveBody, responses((status = 200, description = "How many dead letters will be delivered again.", body = super::openapi::RedriveAnswer)))]
pub(super) async fn redrive_events(State(st): State<AppState>, JsonBody(b): JsonBody<RedriveBody>) -> ApiResult {
    let n = st.lifecycle.store().mark_redrive(b.subscriber.clone()).await?;
    ok(StatusCode::OK, json!({"redriven": n, "subscriber": b.subscriber}), &format!("{n} dead letter(s) will be delivered again"))
}
