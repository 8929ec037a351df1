//! Counters and histograms for the Prometheus exposition at `GET /metrics`: addon
//! executions, MCP tool calls, response and render times, widget cache hits and misses, and the Docker
//! engine's state. Hand-rolled and lock-light (a shared read lock to find an addon's
//! counters by name, atomics inside), because the hot paths record into them on every call
//! and the text format is simple.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// `addond_docker_up` (1 only when the engine answers) and `addond_docker_state`, one
/// series per state with 1 on the current one, so an unresponsive engine can be told from
/// one that is gone.
pub fn render_docker_state(out: &mut String, state: crate::runtime::DockerState) {
    use crate::runtime::DockerState;
    let _ = writeln!(
        out,
        "# HELP addond_docker_up Whether the Docker engine is reachable.\n# TYPE addond_docker_up gauge\naddond_docker_up {}",
        u8::from(state == DockerState::Reachable)
    );
    let _ = writeln!(out, "# HELP addond_docker_state The Docker engine's state: reachable, unresponsive (connected, no answer in time) or unreachable.\n# TYPE addond_docker_state gauge");
    for s in [DockerState::Reachable, DockerState::Unresponsive, DockerState::Unreachable] {
        let _ = writeln!(out, "addond_docker_state{{state=\"{}\"}} {}", s.as_str(), u8::from(s == state));
    }
}

/// Upper bounds (seconds) of the latency buckets.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 15],
    count: AtomicU64,
    /// Sum in nanoseconds, so it can be an atomic integer.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

type Labels = Vec<(&'static str, String)>;

fn label_text(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The outcomes an action call is counted under (`status` label).
const OUTCOMES: [&str; 4] = ["success", "error", "timeout", "unavailable"];

/// What is recorded per addon and action (or widget).
#[derive(Default)]
struct CallStats {
    outcomes: [AtomicU64; 4],
    time: Histogram,
}

/// Stats by addon, then by action or widget: found on the hot path by `&str`, without
/// building a key.
type ByAddon = RwLock<HashMap<String, HashMap<String, Arc<CallStats>>>>;

fn stats_of(map: &ByAddon, addon: &str, name: &str) -> Arc<CallStats> {
    if let Some(s) = map.read().unwrap_or_else(|e| e.into_inner()).get(addon).and_then(|m| m.get(name)) {
        return s.clone();
    }
    map.write().unwrap_or_else(|e| e.into_inner()).entry(addon.to_string()).or_default().entry(name.to_string()).or_default().clone()
}

/// Every (addon, name, stats), sorted, for a stable exposition.
fn sorted(map: &ByAddon) -> Vec<(String, String, Arc<CallStats>)> {
    let mut out: Vec<_> = map
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flat_map(|(a, m)| m.iter().map(|(n, s)| (a.clone(), n.clone(), s.clone())))
        .collect();
    out.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    out
}

#[derive(Default)]
pub struct Metrics {
    executions: ByAddon,
    renders: ByAddon,
    breaker_opens: Mutex<BTreeMap<Labels, Arc<AtomicU64>>>,
    /// MCP `tools/call`s by addon and tool, with their outcomes (`crate::mcp`).
    tool_calls: ByAddon,
    pub widget_cache_hits: AtomicU64,
    pub widget_cache_misses: AtomicU64,
}

impl Metrics {
    /// One action call: its outcome (one of `success`, `error`, `timeout`, `unavailable`)
    /// and how long it took.
    pub fn execution(&self, addon: &str, function: &str, status: &str, secs: f64) {
        let stats = stats_of(&self.executions, addon, function);
        let i = OUTCOMES.iter().position(|o| *o == status).unwrap_or(1);
        stats.outcomes[i].fetch_add(1, Ordering::Relaxed);
        stats.time.observe(secs);
    }

    /// One MCP `tools/call` of a tool of `addon`: its outcome (as for [`Metrics::execution`])
    /// and how long it took.
    pub fn tool_call(&self, addon: &str, tool: &str, status: &str, secs: f64) {
        let stats = stats_of(&self.tool_calls, addon, tool);
        let i = OUTCOMES.iter().position(|o| *o == status).unwrap_or(1);
        stats.outcomes[i].fetch_add(1, Ordering::Relaxed);
        stats.time.observe(secs);
    }

    /// An instance's circuit breaker opened.
    pub fn breaker_opened(&self, service: &str, instance: &str) {
        let key: Labels = vec![("service", service.to_string()), ("instance", instance.to_string())];
        self.breaker_opens.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// One widget render by the addon (cache misses only).
    pub fn render(&self, addon: &str, widget: &str, secs: f64) {
        stats_of(&self.renders, addon, widget).time.observe(secs);
    }

    pub fn render_text(&self, out: &mut String) {
        let executions = sorted(&self.executions);
        out.push_str("# HELP addon_executions_total Addon action calls by outcome.\n# TYPE addon_executions_total counter\n");
        for (addon, function, stats) in &executions {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let n = stats.outcomes[i].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "addon_executions_total{{addon_id=\"{}\",function_name=\"{}\",status=\"{outcome}\"}} {n}",
                        escape(addon),
                        escape(function)
                    );
                }
            }
        }
        out.push_str("# HELP addon_response_time_seconds Time addon actions took, as seen by addond.\n# TYPE addon_response_time_seconds histogram\n");
        for (addon, function, stats) in &executions {
            stats.time.render(
                out,
                "addon_response_time_seconds",
                &format!("addon_id=\"{}\",function_name=\"{}\"", escape(addon), escape(function)),
            );
        }
        out.push_str("# HELP widget_render_time_seconds Time addons took to render a widget (cache misses).\n# TYPE widget_render_time_seconds histogram\n");
        for (addon, widget, stats) in sorted(&self.renders) {
            stats.time.render(
                out,
                "widget_render_time_seconds",
                &format!("addon_id=\"{}\",widget=\"{}\"", escape(&addon), escape(&widget)),
            );
        }
        out.push_str(
            "# HELP addon_breaker_opens_total Times an instance's circuit breaker opened.\n# TYPE addon_breaker_opens_total counter\n",
        );
        for (labels, n) in self.breaker_opens.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "addon_breaker_opens_total{{{}}} {}", label_text(labels), n.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP widget_cache_hits_total Widget renders served from the cache.\n# TYPE widget_cache_hits_total counter\nwidget_cache_hits_total {}\n# HELP widget_cache_misses_total Widget renders that went to the addon.\n# TYPE widget_cache_misses_total counter\nwidget_cache_misses_total {}",
            self.widget_cache_hits.load(Ordering::Relaxed),
            self.widget_cache_misses.load(Ordering::Relaxed)
        );
        self.render_tool_calls(out);
    }

    fn render_tool_calls(&self, out: &mut String) {
        let calls = sorted(&self.tool_calls);
        out.push_str(
            "# HELP addond_mcp_tool_calls_total MCP tool calls by addon, tool and outcome.\n# TYPE addond_mcp_tool_calls_total counter\n",
        );
        for (addon, tool, stats) in &calls {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let n = stats.outcomes[i].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "addond_mcp_tool_calls_total{{addon_id=\"{}\",tool=\"{}\",status=\"{outcome}\"}} {n}",
                        escape(addon),
                        escape(tool)
                    );
                }
            }
        }
        out.push_str("# HELP addond_mcp_tool_call_seconds Time MCP tool calls took, as seen by addond.\n# TYPE addond_mcp_tool_call_seconds histogram\n");
        for (addon, tool, stats) in &calls {
            stats.time.render(out, "addond_mcp_tool_call_seconds", &format!("addon_id=\"{}\",tool=\"{}\"", escape(addon), escape(tool)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.execution("pay", "charge", "success", 0.002);
        m.execution("pay", "charge", "success", 0.2);
        m.execution("pay", "charge", "error", 40.0);
        let mut out = String::new();
        m.render_text(&mut out);
        assert!(out.contains("addon_executions_total{addon_id=\"pay\",function_name=\"charge\",status=\"success\"} 2"), "{out}");
        assert!(out.contains("addon_response_time_seconds_bucket{addon_id=\"pay\",function_name=\"charge\",le=\"0.0025\"} 1"), "{out}");
        assert!(out.contains("addon_response_time_seconds_bucket{addon_id=\"pay\",function_name=\"charge\",le=\"0.25\"} 2"), "{out}");
        assert!(out.contains("addon_response_time_seconds_bucket{addon_id=\"pay\",function_name=\"charge\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("addon_response_time_seconds_count{addon_id=\"pay\",function_name=\"charge\"} 3"), "{out}");
    }
}
