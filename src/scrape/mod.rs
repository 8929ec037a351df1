//! The Prometheus exposition: one text assembled from every area's counters (services and
//! instances from the store, the Docker engine's state, addon calls and renders, the
//! gateway, events and their subscribers' lag, notifications, the listeners' connections,
//! the build and the process), served at `GET /metrics` on the admin socket and, when
//! `metrics.listen` is set, on a TCP listener of its own ([`listener`]) that Prometheus
//! can scrape.

pub mod listener;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::addons::Addons;
use crate::events::Events;
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::metrics::family;
use crate::model::Health;
use crate::store::StoreError;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything a scrape reads.
#[derive(Clone)]
pub struct Sources {
    /// Services and instances (the store), the engine's state, the port range.
    pub lifecycle: Arc<Lifecycle>,
    /// Addon calls, renders, the widget cache, events and notifications (`Metrics`).
    pub addons: Arc<Addons>,
    /// Requests by route and status, failed authentications, rate-limit refusals.
    pub gateway: Arc<Gateway>,
    /// The subscribers, for their lag.
    pub events: Arc<Events>,
    /// When the daemon started, for `addond_uptime_seconds`.
    pub started: Instant,
}

/// The whole exposition, in the text format (HELP and TYPE before each family).
pub async fn render(src: &Sources) -> Result<String, StoreError> {
    let lc = &src.lifecycle;
    let services = lc.store().list_services().await?;
    let mut out = String::with_capacity(16 * 1024);
    crate::metrics::render_build_info(&mut out);
    let mut by_phase: HashMap<&str, usize> = HashMap::new();
    for s in &services {
        *by_phase.entry(s.phase.as_str()).or_default() += 1;
    }
    family(&mut out, "addond_services", "gauge", "Services by lifecycle phase.");
    for p in ["Creating", "Created", "Starting", "Started", "Stopping", "Stopped", "Deleting", "Deleted", "Failed"] {
        let _ = writeln!(out, "addond_services{{phase=\"{p}\"}} {}", by_phase.get(p).copied().unwrap_or(0));
    }
    let instances: Vec<_> = services.iter().flat_map(|s| s.instances.iter().map(move |i| (s, i))).collect();
    family(&mut out, "addond_instances", "gauge", "Instances by health.");
    for h in [Health::Unknown, Health::Starting, Health::Healthy, Health::Unhealthy] {
        let _ = writeln!(out, "addond_instances{{health=\"{}\"}} {}", h.as_str(), instances.iter().filter(|(_, i)| i.health == h).count());
    }
    family(&mut out, "addond_instance_restarts_total", "counter", "Restarts of each instance by the daemon.");
    for (s, i) in &instances {
        let _ = writeln!(
            out,
            "addond_instance_restarts_total{{service=\"{}\",instance=\"{}\"}} {}",
            crate::metrics::escape(&s.spec.name),
            i.ordinal,
            i.restarts
        );
    }
    let (start, end) = lc.port_range();
    let total = (end - start) as usize + 1;
    family(&mut out, "addond_ports_in_use", "gauge", "Host ports booked by addond.");
    let _ = writeln!(out, "addond_ports_in_use {}", instances.len());
    family(&mut out, "addond_ports_free", "gauge", "Host ports of the range not booked by addond.");
    let _ = writeln!(out, "addond_ports_free {}", total.saturating_sub(instances.len()));
    crate::metrics::render_docker_state(&mut out, lc.runtime().state());
    family(&mut out, "addond_uptime_seconds", "gauge", "Seconds since the daemon started.");
    let _ = writeln!(out, "addond_uptime_seconds {}", src.started.elapsed().as_secs());
    src.addons.metrics.render_text(&mut out);
    src.events.render_lag(&mut out).await?;
    src.gateway.render_metrics(&mut out);
    crate::http::conn::render_metrics(&mut out);
    family(&mut out, "addond_admin_refused_total", "counter", "Admin socket connections refused because the peer is not allowed.");
    let _ = writeln!(out, "addond_admin_refused_total {}", crate::metrics::ADMIN_REFUSED.load(Ordering::Relaxed));
    crate::metrics::render_process(&mut out);
    Ok(out)
}
