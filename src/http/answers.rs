//! The answers the admin API and the gateway share: running an addon action and rendering
//! a widget (as JSON with an ETag, or as a sandboxed HTML frame). Both listeners take the
//! same bodies and give the same answers, so they live below both.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};

use super::code::ErrorCode;
use super::envelope::{json_error_text, ApiError, ApiResult};
use crate::addons::Addons;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    pub action: String,
    /// Kept as text: without an input schema it goes to the addon as it came.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub data: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderQuery {
    config: Option<String>,
    context: Option<String>,
}

impl RenderQuery {
    pub(crate) fn parse(&self) -> Result<(Value, Value), ApiError> {
        let parse = |v: &Option<String>, field: &str| -> Result<Value, ApiError> {
            match v {
                None => Ok(json!({})),
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!(
                            "`{field}` is not JSON ({}); send it URL-encoded, like {field}=%7B%22k%22%3A1%7D for {{\"k\":1}}",
                            json_error_text(&e)
                        ),
                    )
                    .field(field)
                }),
            }
        };
        render_inputs(parse(&self.config, "config")?, parse(&self.context, "context")?)
    }
}

/// A render's config and context: objects (absent or `null`: `{}`). Anything else is
/// refused here, naming the field, rather than passed to the addon to fail there (a 502).
fn render_inputs(config: Value, context: Value) -> Result<(Value, Value), ApiError> {
    let object = |v: Value, field: &str| match v {
        Value::Null => Ok(json!({})),
        v @ Value::Object(_) => Ok(v),
        _ => Err(ApiError::new(ErrorCode::ValidationFailed, format!("`{field}` must be a JSON object, like {{\"k\": 1}}")).field(field)),
    };
    Ok((object(config, "config")?, object(context, "context")?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderBody {
    /// The widget's config (absent or `null`: `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Value,
    /// The render context (absent or `null`: `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Value,
}

impl RenderBody {
    /// The config and context to render with; see [`render_inputs`].
    pub fn inputs(self) -> Result<(Value, Value), ApiError> {
        render_inputs(self.config, self.context)
    }
}

/// The rendered widget with its ETag; 304 when the caller already has this version.
pub async fn render_reply(
    addons: &Addons,
    addon: &str,
    widget: &str,
    config: Value,
    context: Value,
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> ApiResult {
    let r = addons.render_for_query(addon, widget, config, context, query).await?;
    Ok(rendered_reply(&r, headers))
}

/// The answer for a render (from the cache or not), 304 when the caller has its ETag.
pub fn rendered_reply(r: &crate::addons::Rendered, headers: &axum::http::HeaderMap) -> axum::response::Response {
    let etag = HeaderValue::from_str(&r.widget.etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let cache = HeaderValue::from_static(if r.cached { "hit" } else { "miss" });
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == r.widget.etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::HeaderName::from_static("x-cache"), cache)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, etag),
            (header::HeaderName::from_static("x-cache"), cache),
        ],
        r.widget.envelope.clone(),
    )
        .into_response()
}

/// The widget as a complete HTML document for a sandboxed iframe.
pub async fn frame_reply(addons: &Addons, addon: &str, widget: &str, config: Value, context: Value) -> ApiResult {
    let r = addons.render(addon, widget, config, context).await?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let (html, csp) = crate::addons::frame_document(&r.widget.widget, &nonce);
    let csp = HeaderValue::from_str(&csp).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        html,
    )
        .into_response())
}
