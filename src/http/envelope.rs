//! The JSON envelope every HTTP answer of the daemon wears — `{"success": true, "data",
//! "message"}` or `{"success": false, "error": {"code", "message", "field"}}` — the one
//! mapping from each domain error to it, and the reading and parsing of JSON request bodies
//! so that a wrong shape names the field at fault.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::code::ErrorCode;
use crate::access::AccessError;
use crate::addons::dispatch::DispatchError;
use crate::addons::AddonError;
use crate::lifecycle::LifecycleError;
use crate::model::FieldError;
use crate::ports::PortError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// A failed request, as the envelope's `error` object says it.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status; the code's own unless [`ApiError::with_status`] set another.
    pub status: StatusCode,
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong and what to do about it, for people.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: code.status(), code, message: message.into(), field: None }
    }

    /// The same code with another status, where one code covers two situations.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }

    /// Names the request field the error is about.
    pub fn field_name(self, f: impl Into<String>) -> Self {
        self.field(f)
    }
}

/// The error envelope as JSON, for the answers that are written without axum (connection
/// refusals before a request is read).
pub fn error_body(code: ErrorCode, message: &str, field: Option<&str>) -> Value {
    let mut err = json!({"code": code.as_str(), "message": message});
    if let Some(f) = field {
        err["field"] = Value::String(f.to_string());
    }
    json!({"success": false, "error": err})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(error_body(self.code, &self.message, self.field.as_deref()))).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        // FieldError carries its code as text (the model has no HTTP types); an unknown one is
        // still a validation failure.
        ApiError::new(ErrorCode::from_str(e.code).unwrap_or(ErrorCode::ValidationFailed), e.message)
            .with_status(StatusCode::BAD_REQUEST)
            .field(e.field)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken(_) | StoreError::ApplicationNameTaken(_) => {
                ApiError::new(ErrorCode::Conflict, e.to_string()).field("name")
            }
            StoreError::GrantTaken(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            StoreError::AmbiguousName { .. } => ApiError::new(ErrorCode::Conflict, e.to_string()).field("id"),
            StoreError::PortTaken(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            StoreError::DiskFull { .. } => {
                tracing::error!(error = %e, "database write refused: disk full");
                ApiError::new(ErrorCode::InsufficientStorage, e.to_string())
            }
            e => {
                tracing::error!(error = %e, "database error");
                ApiError::new(ErrorCode::Internal, format!("{e}; see the daemon log"))
            }
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use LifecycleError as L;
        match e {
            L::Store(e) => e.into(),
            L::Runtime(RuntimeError::Unavailable(_) | RuntimeError::Unresponsive { .. }) => {
                ApiError::new(ErrorCode::DockerUnavailable, e.to_string())
            }
            L::Runtime(RuntimeError::ImageNotFound { .. }) => ApiError::new(ErrorCode::ImageNotFound, e.to_string()).field("image"),
            L::Runtime(RuntimeError::InvalidVolume(m)) => ApiError::new(ErrorCode::InvalidVolume, m).field("volumes"),
            L::Runtime(RuntimeError::Api(m)) => ApiError::new(ErrorCode::DockerError, m),
            L::Runtime(RuntimeError::NoSubnet(m)) => ApiError::new(ErrorCode::SubnetsExhausted, m),
            L::Ports(p @ PortError::Exhausted { .. }) => ApiError::new(ErrorCode::PortsExhausted, p.to_string()),
            L::Ports(p) => ApiError::new(ErrorCode::Conflict, p.to_string()).field("host_port"),
            L::NotFound(what) => {
                ApiError::new(ErrorCode::NotFound, format!("no service `{what}`; list them with `addonctl services list`"))
            }
            L::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            L::Failed { .. } => ApiError::new(ErrorCode::ServiceFailed, e.to_string()),
            L::WaitTimeout { .. } => ApiError::new(ErrorCode::WaitTimeout, e.to_string()),
        }
    }
}

impl From<crate::build::BuildError> for ApiError {
    fn from(e: crate::build::BuildError) -> Self {
        use crate::build::context::ContextError as C;
        use crate::build::BuildError as B;
        match e {
            B::Context(C::TooLarge { .. }) => ApiError::new(ErrorCode::PayloadTooLarge, e.to_string()).field("body"),
            B::Context(C::Entry { ref entry, .. }) => {
                let entry = entry.clone();
                ApiError::new(ErrorCode::InvalidBuildContext, e.to_string()).field(&entry)
            }
            B::Context(C::Unreadable(_)) => ApiError::new(ErrorCode::InvalidBuildContext, e.to_string()).field("body"),
            B::Invalid(f) => f.into(),
            B::Running { .. } => ApiError::new(ErrorCode::BuildRunning, e.to_string()),
            B::Conflict(m) => ApiError::new(ErrorCode::Conflict, m).field("version"),
            B::NoPluginDir { .. } => ApiError::new(ErrorCode::ValidationFailed, e.to_string()).field("plugin_id"),
            B::Failed { ref log, .. } => {
                let mut message = e.to_string();
                if !log.is_empty() {
                    message.push_str("; the step's last lines:\n");
                    message.push_str(&log.join("\n"));
                }
                ApiError::new(ErrorCode::BuildFailed, message)
            }
            B::Store(s) => s.into(),
            B::Runtime(r) => LifecycleError::from(r).into(),
        }
    }
}

impl From<AddonError> for ApiError {
    fn from(e: AddonError) -> Self {
        match e {
            AddonError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m),
            AddonError::Invalid(f) => f.into(),
            AddonError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            AddonError::DeploymentRunning(m) => ApiError::new(ErrorCode::DeploymentRunning, m),
            AddonError::Lifecycle(l) => l.into(),
            AddonError::Store(s) => s.into(),
            AddonError::Dispatch(d @ (DispatchError::NoHealthy(_) | DispatchError::AllOpen(_))) => {
                ApiError::new(ErrorCode::NoHealthyInstance, d.to_string())
            }
            AddonError::Dispatch(d @ DispatchError::Timeout(_)) => ApiError::new(ErrorCode::Timeout, d.to_string()),
            AddonError::Dispatch(d @ DispatchError::Upstream(_)) => ApiError::new(ErrorCode::UpstreamError, d.to_string()),
            AddonError::Addon { message, .. } => ApiError::new(ErrorCode::AddonError, message),
            AddonError::Wasm(w) => {
                use crate::wasm::WasmError as W;
                match w {
                    W::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m).field_name("body"),
                    W::Timeout(m) => ApiError::new(ErrorCode::ActionTimeout, m),
                    W::Trapped(m) => ApiError::new(ErrorCode::AddonTrapped, m),
                    W::Memory(m) => ApiError::new(ErrorCode::MemoryLimitExceeded, m),
                    W::Denied(m) => ApiError::new(ErrorCode::PermissionDenied, m),
                    W::Overloaded(m) => ApiError::new(ErrorCode::Overloaded, m),
                    W::Unpublished(m) => ApiError::new(ErrorCode::Unavailable, m),
                    W::Guest(m) => ApiError::new(ErrorCode::AddonError, m),
                    W::Io(m) => ApiError::new(ErrorCode::Internal, m),
                }
            }
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotFound { field, message } => with_field(ApiError::new(ErrorCode::NotFound, message), field),
            AccessError::Invalid { field, message } => ApiError::new(ErrorCode::ValidationFailed, message).field(field),
            AccessError::Conflict { field, message } => with_field(ApiError::new(ErrorCode::Conflict, message), field),
            e @ AccessError::Randomness(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
            AccessError::Store(s) => s.into(),
        }
    }
}

fn with_field(e: ApiError, field: Option<&str>) -> ApiError {
    match field {
        Some(f) => e.field(f),
        None => e,
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        let text = e.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("the query string is not valid ({text}); send only this route's parameters, each with a value of its type"),
        )
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn ok(status: StatusCode, data: Value, message: &str) -> ApiResult {
    Ok((status, axum::Json(crate::wire::success(data, message))).into_response())
}

/// The success envelope around `data`, JSON text that is already known to be valid (an
/// addon's answer), spliced in without being parsed again.
pub fn ok_json(status: StatusCode, data: &[u8], message: &str) -> ApiResult {
    let message = serde_json::to_string(message).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let mut out = Vec::with_capacity(data.len() + message.len() + 40);
    out.extend_from_slice(b"{\"success\":true,\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"message\":");
    out.extend_from_slice(message.as_bytes());
    out.push(b'}');
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], out).into_response())
}

/// A JSON body read with the configured size limit and parsed so that a wrong shape names
/// the field at fault.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().copied().unwrap_or(BodyLimit(1 << 20, "api.max_body_bytes"));
        let bytes = read_body(req.into_body(), limit.0, limit.1).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a whole request body of at most `limit` bytes (`limit_key`: the setting that says
/// so): 413 when it is larger, 408 when it does not arrive in time, 400 when its framing is
/// broken (a malformed chunk).
pub async fn read_body(body: Body, limit: usize, limit_key: &str) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| body_read_error(&e, limit as u64, limit_key))
}

/// The answer for a request body that could not be read (see [`read_body`]).
pub fn body_read_error(e: &(dyn std::error::Error + 'static), limit: u64, limit_key: &str) -> ApiError {
    use super::conn::{body_failure, error_chain, BodyFailure};
    match body_failure(e) {
        BodyFailure::TooLarge => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes ({limit_key}); send a smaller body"),
        )
        .field("body"),
        BodyFailure::Timeout => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "{}; send the whole body right after the request head",
                error_chain(e).rsplit(": ").next().unwrap_or("the request body did not arrive in time")
            ),
        )
        .field("body"),
        BodyFailure::Malformed => ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "the request body could not be read ({}); frame it with one Content-Length or with valid chunked encoding",
                error_chain(e)
            ),
        )
        .field("body"),
    }
}

/// Parses a JSON body so that a wrong shape names the field at fault, and refuses anything
/// after the JSON value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(
            ApiError::new(ErrorCode::InvalidJson, "the request needs a JSON body: send a JSON object like {\"name\": \"…\"}").field("body")
        );
    }
    // Every route takes an object; serde would also read a struct from an array by position,
    // which only makes for confusing messages.
    if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()).filter(|b| **b != b'{') {
        let shape = match first {
            b'[' => "an array",
            b'"' => "a string",
            b'-' | b'0'..=b'9' => "a number",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            _ => "not JSON",
        };
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("invalid request body: it is {shape}; send a JSON object like {{\"name\": \"…\"}}"),
        )
        .field("body"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(bytes, &path, e.inner())
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!(
                "invalid request body: it goes on after its JSON value (at byte {}); send exactly one JSON object and nothing after it",
                json_error_offset(bytes, &e)
            ),
        )
        .field("body")
    })?;
    Ok(value)
}

/// Where (0-based byte offset) a serde_json error points, from its line and column.
fn json_error_offset(bytes: &[u8], e: &serde_json::Error) -> usize {
    let mut line = 1;
    let mut offset = 0;
    for (i, b) in bytes.iter().enumerate() {
        if line == e.line() {
            offset = i;
            break;
        }
        if *b == b'\n' {
            line += 1;
        }
        offset = i + 1;
    }
    (offset + e.column()).saturating_sub(1).min(bytes.len())
}

/// A serde_json error's own text without its ` at line L column C` suffix.
pub fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

/// The 400 for a body that is not the JSON the route takes: syntax errors say where, data
/// errors name the field (see [`FieldError::from_serde`]).
fn json_error(bytes: &[u8], path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let path = path.trim_end_matches('?').trim_end_matches('.');
    let field = if path.is_empty() { "body".to_string() } else { path.to_string() };
    match e.classify() {
        Category::Eof => ApiError::new(
            ErrorCode::InvalidJson,
            format!(
                "invalid request body: it ends in the middle of its JSON (after {} byte{}); send a complete JSON object",
                bytes.len(),
                if bytes.len() == 1 { "" } else { "s" }
            ),
        )
        .field(field),
        Category::Syntax | Category::Io => ApiError::new(
            ErrorCode::InvalidJson,
            format!(
                "invalid request body: not valid JSON at byte {} ({}); send a JSON object like {{\"name\": \"…\"}}",
                json_error_offset(bytes, e),
                json_error_text(e)
            ),
        )
        .field(field),
        Category::Data => {
            let f = FieldError::from_serde(path, &json_error_text(e));
            ApiError::new(ErrorCode::InvalidJson, format!("invalid request body: {}", f.message)).field(f.field)
        }
    }
}

/// The body limit of a router's routes and the setting that sets it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize, pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreateRequest;

    /// The shape of the admin API's cleanup body: one number field.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CleanupBody {
        days: f64,
    }

    #[test]
    fn json_bodies_are_one_object_and_errors_name_the_field() {
        let err = |body: &str| parse_json::<CreateRequest>(body.as_bytes()).expect_err(body);
        let ok = parse_json::<CleanupBody>(br#" {"days": 3} "#).expect("one object, whitespace around it");
        assert_eq!(ok.days, 3.0);
        for (body, field, needle) in [
            (r#"{"name":"x"}{"name":"#, "body", "after its JSON value"),
            (r#"{"name":"x"} x"#, "body", "after its JSON value"),
            ("[1]", "body", "an array"),
            ("", "body", "needs a JSON body"),
            (r#"{"name": "#, "name", "ends in the middle"),
            (r#"{"nmae": "x"}"#, "nmae", "the fields are `name`"),
            (r#"{"port": "80"}"#, "port", "expected a whole number"),
            (r#"{"volumes": [1]}"#, "volumes[0]", "a string like"),
            (r#"{"volumes": [{"source": "a"}]}"#, "volumes[0].target", "is required"),
            (r#"{"volumes": [{"source": "a", "target": "/a", "readonly": true}]}"#, "volumes[0].readonly", "not a field"),
            (r#"{"resource_limits": {"cpu": []}}"#, "resource_limits.cpu", "a number like"),
            (r#"{"restart_policy": "sometimes"}"#, "restart_policy", "`on-failure`"),
        ] {
            let e = err(body);
            assert_eq!((e.status, e.field.as_deref()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {}", e.message);
            assert!(e.message.contains(needle), "{body}: {}", e.message);
            for raw in ["line 1", "column", "untagged", "struct ", "i64", "u16"] {
                assert!(!e.message.contains(raw), "{body}: parser text `{raw}` in {}", e.message);
            }
        }
    }

    fn status_code_field(e: ApiError) -> (u16, &'static str, Option<String>) {
        (e.status.as_u16(), e.code.as_str(), e.field)
    }

    /// What an error must become: status, wire code, field.
    type Expect = (u16, &'static str, Option<&'static str>);

    #[test]
    fn store_errors_map_to_their_codes() {
        let cases: Vec<(StoreError, Expect)> = vec![
            (StoreError::NameTaken("a".into()), (409, "conflict", Some("name"))),
            (StoreError::ApplicationNameTaken("a".into()), (409, "conflict", Some("name"))),
            (StoreError::GrantTaken("app_1 → pay".into()), (409, "conflict", None)),
            (StoreError::PortTaken(8080), (409, "conflict", None)),
            (StoreError::AmbiguousName { name: "앱".into(), ids: vec!["svc_1".into(), "svc_2".into()] }, (409, "conflict", Some("id"))),
            (StoreError::DiskFull { dir: "/tmp".into(), free: Some(0), total: Some(1) }, (507, "insufficient_storage", None)),
            (StoreError::Integrity("x".into()), (500, "internal", None)),
            (StoreError::Corrupt("x".into()), (500, "internal", None)),
            (StoreError::Join("x".into()), (500, "internal", None)),
            (StoreError::TooNew { found: 2, known: 1 }, (500, "internal", None)),
        ];
        for (e, (status, code, field)) in cases {
            let text = e.to_string();
            let got = status_code_field(e.into());
            assert_eq!((got.0, got.1, got.2.as_deref()), (status, code, field), "{text}");
        }
        // Each kind of name says what it names.
        assert!(StoreError::ApplicationNameTaken("a".into()).to_string().starts_with("an application named"));
        assert!(StoreError::GrantTaken("x".into()).to_string().starts_with("a grant"));
    }

    #[test]
    fn lifecycle_and_runtime_errors_map_to_their_codes() {
        use LifecycleError as L;
        let cases: Vec<(LifecycleError, Expect)> = vec![
            (L::Store(StoreError::PortTaken(1)), (409, "conflict", None)),
            (L::Runtime(RuntimeError::Unavailable("x".into())), (503, "docker_unavailable", None)),
            (L::Runtime(RuntimeError::Unresponsive { host: "x".into(), secs: 1.0 }), (503, "docker_unavailable", None)),
            (L::Runtime(RuntimeError::ImageNotFound { image: "i".into(), reason: "r".into() }), (404, "image_not_found", Some("image"))),
            (L::Runtime(RuntimeError::InvalidVolume("v".into())), (400, "invalid_volume", Some("volumes"))),
            (L::Runtime(RuntimeError::Api("x".into())), (502, "docker_error", None)),
            (L::Runtime(RuntimeError::NoSubnet("x".into())), (503, "subnets_exhausted", None)),
            (L::Ports(PortError::Exhausted { start: 1, end: 2, booked: 1, busy: 1 }), (503, "ports_exhausted", None)),
            (L::Ports(PortError::PreferredBooked(1)), (409, "conflict", Some("host_port"))),
            (L::Ports(PortError::PreferredBusy(1)), (409, "conflict", Some("host_port"))),
            (L::NotFound("s".into()), (404, "not_found", None)),
            (L::Conflict("c".into()), (409, "conflict", None)),
            (L::Failed { name: "s".into(), reason: "r".into() }, (502, "service_failed", None)),
            (L::WaitTimeout { name: "s".into(), want: "running", phase: "creating", secs: 1 }, (504, "wait_timeout", None)),
        ];
        for (e, (status, code, field)) in cases {
            let text = e.to_string();
            let got = status_code_field(e.into());
            assert_eq!((got.0, got.1, got.2.as_deref()), (status, code, field), "{text}");
        }
    }

    #[test]
    fn addon_access_and_field_errors_map_to_their_codes() {
        let field = |code: &'static str| FieldError { field: "f".into(), message: "m".into(), code };
        let cases: Vec<(ApiError, Expect)> = vec![
            (AddonError::NotFound("x".into()).into(), (404, "not_found", None)),
            (AddonError::Invalid(field("validation_failed")).into(), (400, "validation_failed", Some("f"))),
            (AddonError::Conflict("x".into()).into(), (409, "conflict", None)),
            (AddonError::Lifecycle(LifecycleError::NotFound("s".into())).into(), (404, "not_found", None)),
            (AddonError::Store(StoreError::PortTaken(1)).into(), (409, "conflict", None)),
            (AddonError::Dispatch(DispatchError::NoHealthy("a".into())).into(), (503, "no_healthy_instance", None)),
            (AddonError::Dispatch(DispatchError::AllOpen("a".into())).into(), (503, "no_healthy_instance", None)),
            (AddonError::Dispatch(DispatchError::Timeout(1.0)).into(), (504, "timeout", None)),
            (AddonError::Dispatch(DispatchError::Upstream("x".into())).into(), (502, "upstream_error", None)),
            (AddonError::Addon { status: 500, message: "x".into() }.into(), (502, "addon_error", None)),
            (field("validation_failed").into(), (400, "validation_failed", Some("f"))),
            (field("invalid_volume").into(), (400, "invalid_volume", Some("f"))),
            (AccessError::NotFound { field: Some("addon"), message: "m".into() }.into(), (404, "not_found", Some("addon"))),
            (AccessError::NotFound { field: None, message: "m".into() }.into(), (404, "not_found", None)),
            (
                AccessError::Invalid { field: "allowed_origins[0]".into(), message: "m".into() }.into(),
                (400, "validation_failed", Some("allowed_origins[0]")),
            ),
            (AccessError::Conflict { field: Some("name"), message: "m".into() }.into(), (409, "conflict", Some("name"))),
            (AccessError::Store(StoreError::PortTaken(1)).into(), (409, "conflict", None)),
        ];
        for (e, (status, code, field)) in cases {
            let got = status_code_field(e);
            assert_eq!((got.0, got.1, got.2.as_deref()), (status, code, field));
        }
    }

    #[test]
    fn error_envelope_shape() {
        let v = error_body(ErrorCode::Forbidden, "no", Some("f"));
        assert_eq!(v, json!({"success": false, "error": {"code": "forbidden", "message": "no", "field": "f"}}));
        assert_eq!(error_body(ErrorCode::Overloaded, "m", None)["error"].get("field"), None);
    }
}
