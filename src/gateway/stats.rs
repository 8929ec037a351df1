//! The gateway's counters for `/metrics`: requests by route and status, failed
//! authentications by reason, and requests refused by a grant's rate limit. Plain atomics
//! in fixed tables (a slot per route and status code), because every request records into
//! them from whichever worker thread serves it, with no lock and no map lookup.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::ErrorCode;
use crate::metrics::{escape, family};

/// Status codes 100..=599 each have a slot.
const STATUSES: usize = 500;

/// Why an authentication failed, as the `reason` label says it (the error code answered).
pub const AUTH_REASONS: [ErrorCode; 6] = [
    ErrorCode::MissingApiKey,
    ErrorCode::InvalidApiKey,
    ErrorCode::RevokedApiKey,
    ErrorCode::Forbidden,
    ErrorCode::CorsForbidden,
    ErrorCode::TooManyFailures,
];

pub struct GatewayStats {
    /// `requests[route][status - 100]`; the last route is "no route matched".
    requests: Vec<[AtomicU64; STATUSES]>,
    /// Failed authentications, by [`AUTH_REASONS`] index.
    auth_failures: [AtomicU64; AUTH_REASONS.len()],
    /// Requests refused by their grant's rate limit.
    rate_limited: AtomicU64,
}

impl GatewayStats {
    /// Counters for `routes` routes (plus one for requests no route matched).
    pub fn new(routes: usize) -> GatewayStats {
        GatewayStats {
            requests: (0..=routes).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
            auth_failures: Default::default(),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// One answered request: `route` is its index in the route table (the table's length
    /// when none matched).
    pub fn request(&self, route: usize, status: u16) {
        let row = route.min(self.requests.len() - 1);
        if let Some(slot) = self.requests[row].get(usize::from(status).wrapping_sub(100)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One failed authentication, answered with `code`.
    pub fn auth_failure(&self, code: ErrorCode) {
        if let Some(i) = AUTH_REASONS.iter().position(|c| *c == code) {
            self.auth_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One request refused by its grant's rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// The gateway's series; `routes` names the rows (route patterns, in table order).
    pub fn render(&self, out: &mut String, routes: &[&str]) {
        family(out, "addond_gateway_requests_total", "counter", "Gateway requests answered, by route pattern and status code.");
        for (i, row) in self.requests.iter().enumerate() {
            let route = routes.get(i).copied().unwrap_or("none");
            for (s, n) in row.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "addond_gateway_requests_total{{route=\"{}\",status=\"{}\"}} {n}", escape(route), s + 100);
                }
            }
        }
        family(
            out,
            "addond_gateway_auth_failures_total",
            "counter",
            "Gateway requests refused for their API key, by the error code answered.",
        );
        for (i, code) in AUTH_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "addond_gateway_auth_failures_total{{reason=\"{}\"}} {}",
                code.as_str(),
                self.auth_failures[i].load(Ordering::Relaxed)
            );
        }
        family(out, "addond_gateway_rate_limited_total", "counter", "Gateway requests refused by their grant's rate limit (429).");
        let _ = writeln!(out, "addond_gateway_rate_limited_total {}", self.rate_limited.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_by_route_and_status() {
        let s = GatewayStats::new(2);
        s.request(0, 200);
        s.request(0, 200);
        s.request(1, 429);
        s.request(2, 404);
        s.request(7, 404); // out of the table: counted as no route
        s.request(0, 99); // not a status: ignored
        s.auth_failure(ErrorCode::InvalidApiKey);
        s.rate_limited();
        let mut out = String::new();
        s.render(&mut out, &["/health", "/x/{a}"]);
        assert!(out.contains("addond_gateway_requests_total{route=\"/health\",status=\"200\"} 2\n"), "{out}");
        assert!(out.contains("addond_gateway_requests_total{route=\"/x/{a}\",status=\"429\"} 1\n"), "{out}");
        assert!(out.contains("addond_gateway_requests_total{route=\"none\",status=\"404\"} 2\n"), "{out}");
        assert!(out.contains("addond_gateway_auth_failures_total{reason=\"invalid_api_key\"} 1\n"), "{out}");
        assert!(out.contains("addond_gateway_auth_failures_total{reason=\"missing_api_key\"} 0\n"), "{out}");
        assert!(out.contains("addond_gateway_rate_limited_total 1\n"), "{out}");
    }
}
