//! Counters and histograms for the Prometheus exposition at `GET /metrics`: addon
//! executions, MCP tool calls, response and render times, widget cache hits and misses, event deliveries,
//! notifications, and the Docker engine's state; the build and process series; and the
//! helpers every area's series are written with (families, label escaping). Hand-rolled and
//! lock-light (a shared read lock to find an addon's counters by name, atomics inside),
//! because the hot paths record into them on every call and the text format is simple.
//! `crate::scrape` assembles one exposition from these and the other areas' counters.

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

/// A label value as the exposition format writes it: backslash, double quote and newline
/// escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Admin-socket connections refused because the peer is not allowed.
pub static ADMIN_REFUSED: AtomicU64 = AtomicU64::new(0);

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

/// The key an addon's calls are counted under: its name, and the environment when it is
/// not the default one (those series carry an `environment` label; `prod`'s keep the
/// labels they always had).
pub fn addon_key(addon: &str, environment: &str) -> String {
    if environment == crate::model::DEFAULT_ENVIRONMENT {
        addon.to_string()
    } else {
        format!("{addon}\u{0}{environment}")
    }
}

/// The labels of an [`addon_key`]: `addon_id="pay"` or `addon_id="pay",environment="dev"`.
fn addon_labels(key: &str) -> String {
    match key.split_once('\u{0}') {
        Some((addon, env)) => format!("addon_id=\"{}\",environment=\"{}\"", escape(addon), escape(env)),
        None => format!("addon_id=\"{}\"", escape(key)),
    }
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
    /// Action calls by addon and action.
    executions: ByAddon,
    /// Widget renders (cache misses) by addon and widget.
    renders: ByAddon,
    /// Circuit breaker openings by service and instance.
    breaker_opens: Mutex<BTreeMap<Labels, Arc<AtomicU64>>>,
    /// MCP `tools/call`s by addon and tool, with their outcomes (`crate::mcp`).
    tool_calls: ByAddon,
    /// Widget renders served from the cache.
    pub widget_cache_hits: AtomicU64,
    /// Widget renders that went to the addon.
    pub widget_cache_misses: AtomicU64,
    /// The event log and its deliveries.
    pub events: EventStats,
    /// Webhook notifications.
    pub notify: NotifyStats,
}

/// Counters of the event log and its deliveries to subscribers (`crate::events`).
#[derive(Default)]
pub struct EventStats {
    /// Events committed to the log.
    pub emitted: AtomicU64,
    /// Deliveries a subscriber acknowledged.
    pub delivered: AtomicU64,
    /// Failed deliveries that will be tried again.
    pub retried: AtomicU64,
    /// Events given up on for a subscriber (moved to its dead letters).
    pub dead_lettered: AtomicU64,
}

impl EventStats {
    /// The event counters; the lag per subscriber is written by `crate::events`.
    pub fn render(&self, out: &mut String) {
        for (name, help, v) in [
            ("addond_events_emitted_total", "Events committed to the event log.", &self.emitted),
            ("addond_event_deliveries_total", "Event deliveries a subscriber acknowledged.", &self.delivered),
            ("addond_event_delivery_retries_total", "Failed event deliveries that are tried again after a backoff.", &self.retried),
            ("addond_events_dead_lettered_total", "Events given up on for a subscriber after events.max_attempts.", &self.dead_lettered),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}

/// Counters of the webhook notifier (`crate::notify`).
#[derive(Default)]
pub struct NotifyStats {
    /// Notifications the receiver accepted (2xx).
    pub sent: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Notifications given up on after every retry.
    pub failed: AtomicU64,
    /// Notifications dropped because the queue was full (the oldest goes).
    pub dropped: AtomicU64,
    /// Notifications waiting in the queue now.
    pub queued: AtomicU64,
}

impl NotifyStats {
    pub fn render(&self, out: &mut String) {
        for (name, kind, help, v) in [
            ("addond_notifications_sent_total", "counter", "Webhook notifications the receiver accepted.", &self.sent),
            ("addond_notification_retries_total", "counter", "Webhook attempts that failed and were tried again.", &self.retried),
            ("addond_notifications_failed_total", "counter", "Webhook notifications given up on after notify.retries.", &self.failed),
            (
                "addond_notifications_dropped_total",
                "counter",
                "Webhook notifications dropped (oldest first) because the queue was full.",
                &self.dropped,
            ),
            ("addond_notifications_queued", "gauge", "Webhook notifications waiting to be sent.", &self.queued),
        ] {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}

/// `addond_build_info{version, commit}`: 1, with the version and (when the build was given
/// `ADDOND_GIT_COMMIT`) the commit it was built from.
pub fn render_build_info(out: &mut String) {
    family(out, "addond_build_info", "gauge", "The running addond's version (and commit, when the build knew it); always 1.");
    match option_env!("ADDOND_GIT_COMMIT").filter(|c| !c.is_empty()) {
        Some(c) => {
            let _ = writeln!(out, "addond_build_info{{version=\"{}\",commit=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), escape(c));
        }
        None => {
            let _ = writeln!(out, "addond_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        }
    }
}

/// The process series every Prometheus client library exports, under their usual names
/// (`process_*`), read from `/proc/self`: resident and virtual memory, CPU seconds, open
/// and allowed descriptors, and the start time. A file that cannot be read leaves its
/// series out rather than writing a wrong value.
pub fn render_process(out: &mut String) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0).unwrap_or(100) as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_stat(&s));
    if let Some(st) = &stat {
        family(out, "process_cpu_seconds_total", "counter", "User and system CPU time the daemon has used, in seconds.");
        let _ = writeln!(out, "process_cpu_seconds_total {}", (st.utime + st.stime) as f64 / ticks);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |key: &str| -> Option<u64> {
            status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        if let Some(rss) = kib("VmRSS:") {
            family(out, "process_resident_memory_bytes", "gauge", "Resident memory of the daemon, in bytes.");
            let _ = writeln!(out, "process_resident_memory_bytes {}", rss * 1024);
        }
        if let Some(vm) = kib("VmSize:") {
            family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory of the daemon, in bytes.");
            let _ = writeln!(out, "process_virtual_memory_bytes {}", vm * 1024);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The count includes the directory handle read_dir holds while it counts.
        let n = dir.count().saturating_sub(1);
        family(out, "process_open_fds", "gauge", "File descriptors the daemon holds open.");
        let _ = writeln!(out, "process_open_fds {n}");
    }
    family(out, "process_max_fds", "gauge", "The daemon's soft limit of open file descriptors.");
    let _ = writeln!(
        out,
        "process_max_fds {}",
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(soft, _)| soft).unwrap_or(0)
    );
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok()));
    if let (Some(st), Some(btime)) = (&stat, btime) {
        family(out, "process_start_time_seconds", "gauge", "When the daemon started, in seconds since the Unix epoch.");
        let _ = writeln!(out, "process_start_time_seconds {}", btime as f64 + st.starttime as f64 / ticks);
    }
}

/// The fields of `/proc/<pid>/stat` the process series need, in clock ticks.
#[derive(Debug, PartialEq)]
struct ProcStat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// Reads `/proc/<pid>/stat`: the fields after the command name, which is in parentheses
/// and may itself hold spaces and parentheses (so the last `)` ends it).
fn parse_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field n is f[n - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat { utime: field(14)?, stime: field(15)?, starttime: field(22)? })
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
                        "addon_executions_total{{{},function_name=\"{}\",status=\"{outcome}\"}} {n}",
                        addon_labels(addon),
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
                &format!("{},function_name=\"{}\"", addon_labels(addon), escape(function)),
            );
        }
        out.push_str("# HELP widget_render_time_seconds Time addons took to render a widget (cache misses).\n# TYPE widget_render_time_seconds histogram\n");
        for (addon, widget, stats) in sorted(&self.renders) {
            stats.time.render(out, "widget_render_time_seconds", &format!("{},widget=\"{}\"", addon_labels(&addon), escape(&widget)));
        }
        family(out, "addond_breaker_opens_total", "counter", "Times an instance's circuit breaker opened.");
        for (labels, n) in self.breaker_opens.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "addond_breaker_opens_total{{{}}} {}", label_text(labels), n.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP addond_widget_cache_hits_total Widget renders served from the cache.\n# TYPE addond_widget_cache_hits_total counter\naddond_widget_cache_hits_total {}\n# HELP addond_widget_cache_misses_total Widget renders that went to the addon.\n# TYPE addond_widget_cache_misses_total counter\naddond_widget_cache_misses_total {}",
            self.widget_cache_hits.load(Ordering::Relaxed),
            self.widget_cache_misses.load(Ordering::Relaxed)
        );
        self.events.render(out);
        self.notify.render(out);
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

    #[test]
    fn environments_other_than_prod_are_labelled() {
        let m = Metrics::default();
        m.execution(&addon_key("pay", "dev"), "charge", "success", 0.1);
        m.execution(&addon_key("pay", "prod"), "charge", "success", 0.1);
        let mut out = String::new();
        m.render_text(&mut out);
        assert!(
            out.contains("addon_executions_total{addon_id=\"pay\",environment=\"dev\",function_name=\"charge\",status=\"success\"} 1"),
            "{out}"
        );
        assert!(out.contains("addon_executions_total{addon_id=\"pay\",function_name=\"charge\",status=\"success\"} 1"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.execution("a\"b", "c\\d\ne", "success", 0.1);
        let mut out = String::new();
        m.render_text(&mut out);
        assert!(out.contains("addon_executions_total{addon_id=\"a\\\"b\",function_name=\"c\\\\d\\ne\",status=\"success\"} 1"), "{out}");
    }

    #[test]
    fn proc_stat_fields_after_an_awkward_command_name() {
        let line = "4242 (add ond) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some(ProcStat { utime: 250, stime: 75, starttime: 123456 }));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn process_series_come_from_proc() {
        let mut out = String::new();
        render_process(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        let now = crate::time::now_secs() as f64;
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "{start} vs {now}");
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
