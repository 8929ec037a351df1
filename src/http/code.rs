//! Every error code the daemon answers, in one enum: its wire string (the envelope's
//! `error.code`) and the HTTP status it goes with. Clients (`addonctl`'s exit codes, the
//! dashboard) decide on these codes, never on message text, so a code is part of the API:
//! add a variant to the table below, never rename one.

use axum::http::StatusCode;

macro_rules! codes {
    ($($variant:ident = $wire:literal, $status:ident;)*) => {
        /// A typed error code; see the module doc.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = concat!("`", $wire, "`")] $variant,)*
        }

        impl ErrorCode {
            /// Every code, for tests and for clients that list them.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }

            /// The HTTP status an answer with this code carries (an answer may override it
            /// with [`super::ApiError::with_status`] where one code covers two situations).
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// The code for a wire string; `None` for one this build does not know.
            #[allow(clippy::should_implement_trait)]
            pub fn from_str(s: &str) -> Option<ErrorCode> {
                match s {
                    $($wire => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    // The request itself.
    BadRequest = "bad_request", BAD_REQUEST;
    InvalidRequest = "invalid_request", BAD_REQUEST;
    InvalidBody = "invalid_body", BAD_REQUEST;
    InvalidJson = "invalid_json", BAD_REQUEST;
    InvalidPath = "invalid_path", BAD_REQUEST;
    InvalidQuery = "invalid_query", BAD_REQUEST;
    // A GraphQL document that does not parse, does not fit the schema or is over a limit.
    InvalidGraphql = "invalid_graphql", BAD_REQUEST;
    ValidationFailed = "validation_failed", BAD_REQUEST;
    InvalidVolume = "invalid_volume", BAD_REQUEST;
    NotFound = "not_found", NOT_FOUND;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT;
    Conflict = "conflict", CONFLICT;
    DeploymentRunning = "deployment_running", CONFLICT;
    BuildRunning = "build_running", CONFLICT;
    InvalidBuildContext = "invalid_build_context", BAD_REQUEST;
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    UriTooLong = "uri_too_long", URI_TOO_LONG;
    HeadersTooLarge = "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    // Who is asking.
    MissingApiKey = "missing_api_key", UNAUTHORIZED;
    InvalidApiKey = "invalid_api_key", UNAUTHORIZED;
    RevokedApiKey = "revoked_api_key", UNAUTHORIZED;
    InvalidToken = "invalid_token", UNAUTHORIZED;
    Forbidden = "forbidden", FORBIDDEN;
    CorsForbidden = "cors_forbidden", FORBIDDEN;
    PermissionDenied = "permission_denied", FORBIDDEN;
    RateLimited = "rate_limited", TOO_MANY_REQUESTS;
    TooManyFailures = "too_many_failures", TOO_MANY_REQUESTS;
    // The daemon and what it runs.
    Internal = "internal", INTERNAL_SERVER_ERROR;
    BackupFailed = "backup_failed", INTERNAL_SERVER_ERROR;
    InsufficientStorage = "insufficient_storage", INSUFFICIENT_STORAGE;
    QuotaExceeded = "quota_exceeded", INSUFFICIENT_STORAGE;
    Overloaded = "overloaded", SERVICE_UNAVAILABLE;
    Unavailable = "unavailable", SERVICE_UNAVAILABLE;
    DockerUnavailable = "docker_unavailable", SERVICE_UNAVAILABLE;
    PortsExhausted = "ports_exhausted", SERVICE_UNAVAILABLE;
    SubnetsExhausted = "subnets_exhausted", SERVICE_UNAVAILABLE;
    NoHealthyInstance = "no_healthy_instance", SERVICE_UNAVAILABLE;
    DockerError = "docker_error", BAD_GATEWAY;
    ImageNotFound = "image_not_found", NOT_FOUND;
    ServiceFailed = "service_failed", BAD_GATEWAY;
    BuildFailed = "build_failed", UNPROCESSABLE_ENTITY;
    UpstreamError = "upstream_error", BAD_GATEWAY;
    AddonError = "addon_error", BAD_GATEWAY;
    // WebAssembly addons: a guest that trapped, ran out of its memory limit or its deadline.
    AddonTrapped = "addon_trapped", INTERNAL_SERVER_ERROR;
    MemoryLimitExceeded = "memory_limit_exceeded", INSUFFICIENT_STORAGE;
    ActionTimeout = "action_timeout", GATEWAY_TIMEOUT;
    Timeout = "timeout", GATEWAY_TIMEOUT;
    WaitTimeout = "wait_timeout", GATEWAY_TIMEOUT;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So tests and callers can compare a code with its wire string.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_status_and_wire_string() {
        let table: &[(ErrorCode, &str, u16)] = &[
            (ErrorCode::BadRequest, "bad_request", 400),
            (ErrorCode::InvalidRequest, "invalid_request", 400),
            (ErrorCode::InvalidBody, "invalid_body", 400),
            (ErrorCode::InvalidJson, "invalid_json", 400),
            (ErrorCode::InvalidPath, "invalid_path", 400),
            (ErrorCode::InvalidQuery, "invalid_query", 400),
            (ErrorCode::InvalidGraphql, "invalid_graphql", 400),
            (ErrorCode::ValidationFailed, "validation_failed", 400),
            (ErrorCode::InvalidVolume, "invalid_volume", 400),
            (ErrorCode::NotFound, "not_found", 404),
            (ErrorCode::MethodNotAllowed, "method_not_allowed", 405),
            (ErrorCode::RequestTimeout, "request_timeout", 408),
            (ErrorCode::Conflict, "conflict", 409),
            (ErrorCode::DeploymentRunning, "deployment_running", 409),
            (ErrorCode::BuildRunning, "build_running", 409),
            (ErrorCode::InvalidBuildContext, "invalid_build_context", 400),
            (ErrorCode::PayloadTooLarge, "payload_too_large", 413),
            (ErrorCode::UriTooLong, "uri_too_long", 414),
            (ErrorCode::HeadersTooLarge, "headers_too_large", 431),
            (ErrorCode::MissingApiKey, "missing_api_key", 401),
            (ErrorCode::InvalidApiKey, "invalid_api_key", 401),
            (ErrorCode::RevokedApiKey, "revoked_api_key", 401),
            (ErrorCode::InvalidToken, "invalid_token", 401),
            (ErrorCode::Forbidden, "forbidden", 403),
            (ErrorCode::CorsForbidden, "cors_forbidden", 403),
            (ErrorCode::PermissionDenied, "permission_denied", 403),
            (ErrorCode::RateLimited, "rate_limited", 429),
            (ErrorCode::TooManyFailures, "too_many_failures", 429),
            (ErrorCode::Internal, "internal", 500),
            (ErrorCode::BackupFailed, "backup_failed", 500),
            (ErrorCode::InsufficientStorage, "insufficient_storage", 507),
            (ErrorCode::QuotaExceeded, "quota_exceeded", 507),
            (ErrorCode::Overloaded, "overloaded", 503),
            (ErrorCode::Unavailable, "unavailable", 503),
            (ErrorCode::DockerUnavailable, "docker_unavailable", 503),
            (ErrorCode::PortsExhausted, "ports_exhausted", 503),
            (ErrorCode::SubnetsExhausted, "subnets_exhausted", 503),
            (ErrorCode::NoHealthyInstance, "no_healthy_instance", 503),
            (ErrorCode::DockerError, "docker_error", 502),
            (ErrorCode::ImageNotFound, "image_not_found", 404),
            (ErrorCode::ServiceFailed, "service_failed", 502),
            (ErrorCode::BuildFailed, "build_failed", 422),
            (ErrorCode::UpstreamError, "upstream_error", 502),
            (ErrorCode::AddonError, "addon_error", 502),
            (ErrorCode::AddonTrapped, "addon_trapped", 500),
            (ErrorCode::MemoryLimitExceeded, "memory_limit_exceeded", 507),
            (ErrorCode::ActionTimeout, "action_timeout", 504),
            (ErrorCode::Timeout, "timeout", 504),
            (ErrorCode::WaitTimeout, "wait_timeout", 504),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len(), "every code is in the table");
        for (code, wire, status) in table {
            assert_eq!((code.as_str(), code.status().as_u16()), (*wire, *status), "{code:?}");
            assert_eq!(ErrorCode::from_str(wire), Some(*code));
        }
        assert_eq!(ErrorCode::from_str("no_such_code"), None);
    }
}
