//! Why a request body could not be read — too large, too slow, or broken — told apart by
//! the error's chain of sources. A leaf: the connection loop raises [`BodyTimeout`], and
//! both the HTTP answers and the upstream client (which streams a caller's body on to an
//! addon) classify what they got, without the client depending on the servers.

use std::time::Duration;

/// The request body did not arrive within `http.body_read_timeout_seconds`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (http.body_read_timeout_seconds)")]
pub struct BodyTimeout(pub Duration);

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// Larger than the route's limit.
    TooLarge,
    /// Did not arrive in time ([`BodyTimeout`]).
    Timeout,
    /// Malformed framing (a bad chunk) or a broken connection.
    Malformed,
}

/// Classifies a body-reading error by what is in its chain of sources.
pub fn body_failure(e: &(dyn std::error::Error + 'static)) -> BodyFailure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return BodyFailure::TooLarge;
        }
        if err.is::<BodyTimeout>() {
            return BodyFailure::Timeout;
        }
        cur = err.source();
    }
    BodyFailure::Malformed
}

/// The error and its sources in one line, for a message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
