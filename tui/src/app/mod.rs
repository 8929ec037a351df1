//! The dashboard's state ([`App`]) and how it changes: every input (key, mouse, resize,
//! tick) and every daemon update arrives as one [`Event`], [`App::handle`] applies it and
//! returns the [`Command`]s the network side must carry out. Nothing here does I/O or
//! draws, so the whole behaviour is unit-tested without a terminal or a daemon.
//!
//! This file holds the state and the daemon updates; [`input`] turns keys and the mouse
//! into changes of it, and [`layout`] knows where things are on the screen (page sizes,
//! hit tests), which both the input side and the drawing (`crate::ui`) use, so they always
//! agree.

mod input;
pub mod layout;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyEvent, KeyEventKind, MouseEvent};

pub use crate::model::DockerState;
use crate::model::{self, Addon, AddonEvent, Application, MetricsSample, Service, Template};

/// Log lines kept in memory (older ones are dropped; save to a file to keep more).
pub const LOG_CAP: usize = 10_000;
/// Entries of the event log kept.
pub const EVENT_CAP: usize = 1_000;
/// Metric samples kept per service for the sparklines (2 s apart: 4 minutes).
pub const SPARK_CAP: usize = 120;
/// How long an action's result stays in the status line.
pub const FLASH_FOR: Duration = Duration::from_secs(8);

// ---- events in, commands out --------------------------------------------------------

/// Everything that can change the dashboard. (Moved, never stored in bulk: the size
/// difference between variants does not matter.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// Once a second: clocks, countdowns and expiring messages move on.
    Tick,
    Daemon(Update),
}

/// What the network tasks report.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Update {
    Connecting,
    /// The event stream is open and the service list was loaded. `polling`: the daemon
    /// has no `/watch`, the list is polled instead.
    Connected {
        version: Option<String>,
        docker: Option<DockerState>,
        polling: bool,
    },
    Down {
        error: String,
        retry_in: Duration,
    },
    Health {
        version: Option<String>,
        docker: Option<DockerState>,
    },
    /// The whole list (at connect, and after a `resync`).
    Services(Vec<Service>),
    Service(Service),
    Deleted(String),
    Resync,
    /// `addond_ports_in_use`, `addond_ports_free` of `GET /metrics`.
    PortTotals {
        in_use: usize,
        free: usize,
    },
    /// The configured range, if the daemon reports it (`GET /health` → `ports`).
    PortRange(u16, u16),
    PortsHeld {
        range: (u16, u16),
        held: BTreeSet<u16>,
    },
    Metrics {
        id: String,
        result: Result<MetricsSample, String>,
    },
    LogLines {
        session: u64,
        lines: Vec<LogLine>,
    },
    LogStatus {
        session: u64,
        status: String,
        live: bool,
    },
    ActionDone {
        ok: bool,
        message: String,
    },
    Templates(Result<Vec<Template>, String>),
    Addons(Avail<Vec<Addon>>),
    Grants(Avail<Vec<Application>>),
    /// Events of the daemon's event log, in id order.
    AddonEvents(Vec<AddonEvent>),
    /// Whether the daemon has the event log API (`/api/events/stream`).
    EventsApi(bool),
}

/// Work for the network side.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Lifecycle {
        id: String,
        name: String,
        op: Op,
    },
    Scale {
        id: String,
        name: String,
        replicas: u32,
    },
    CreateFromTemplate {
        template: String,
        name: String,
    },
    InstallAddon {
        addon: String,
        instance: String,
    },
    /// Deploy what environment `from` of `base` runs into `to`.
    Promote {
        base: String,
        from: String,
        to: String,
    },
    /// Poll `…/metrics` of this service every 2 s (`None`: stop).
    WatchMetrics(Option<String>),
    OpenLogs {
        session: u64,
        id: String,
        instance: Option<u32>,
    },
    CloseLogs,
    SaveLogs {
        path: PathBuf,
        text: String,
    },
    /// Probe the range for ports held by other programs every few seconds (`None`: stop).
    ProbePorts(Option<(u16, u16)>),
    LoadTemplates,
    LoadAddons,
    LoadGrants,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Restart,
    Delete,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Delete => "delete",
        }
    }
}

/// Data from an API that a daemon may not have yet.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Avail<T> {
    #[default]
    NotLoaded,
    Loading,
    /// The daemon answered 404 for the route: this version has no such API.
    NotAvailable,
    Error(String),
    Ready(T),
}

// ---- state --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Services,
    Logs,
    Ports,
    Events,
    Addons,
    Grants,
}

impl View {
    pub const ALL: [View; 6] = [View::Services, View::Logs, View::Ports, View::Events, View::Addons, View::Grants];

    pub fn title(self) -> &'static str {
        match self {
            View::Services => "Services",
            View::Logs => "Logs",
            View::Ports => "Ports",
            View::Events => "Events",
            View::Addons => "Addons",
            View::Grants => "Grants",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    Connecting,
    Up { version: Option<String>, docker: Option<DockerState>, polling: bool },
    Down { error: String, retry_at: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Plugin,
    Type,
    Phase,
    Health,
    Replicas,
    Ports,
    Cpu,
    Memory,
    Restarts,
    Uptime,
}

impl SortKey {
    pub const ALL: [SortKey; 11] = [
        SortKey::Name,
        SortKey::Plugin,
        SortKey::Type,
        SortKey::Phase,
        SortKey::Health,
        SortKey::Replicas,
        SortKey::Ports,
        SortKey::Cpu,
        SortKey::Memory,
        SortKey::Restarts,
        SortKey::Uptime,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Plugin => "addon",
            SortKey::Type => "type",
            SortKey::Phase => "phase",
            SortKey::Health => "health",
            SortKey::Replicas => "replicas",
            SortKey::Ports => "ports",
            SortKey::Cpu => "cpu",
            SortKey::Memory => "memory",
            SortKey::Restarts => "restarts",
            SortKey::Uptime => "uptime",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptKind {
    Scale {
        id: String,
        name: String,
    },
    NewService {
        template: String,
    },
    Install {
        addon: String,
    },
    /// `FROM TO`: the environments of the addon installed as `base` to promote between.
    Promote {
        base: String,
    },
    SaveLogs,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Op { id: String, name: String, op: Op },
    ScaleZero { id: String, name: String },
    Promote { base: String, from: String, to: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing the services filter (applied as it is typed).
    Filter,
    /// Typing the log search (applied as it is typed).
    LogSearch,
    Prompt {
        kind: PromptKind,
        input: String,
        error: Option<String>,
    },
    Confirm(Confirm),
    PickTemplate {
        index: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flash {
    pub text: String,
    pub ok: bool,
    pub at: Instant,
}

/// CPU, memory and network history of one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsHistory {
    pub last: Option<MetricsSample>,
    /// CPU in hundredths of a percent.
    pub cpu: VecDeque<u64>,
    /// Memory in KiB.
    pub mem: VecDeque<u64>,
    /// Network receive and transmit rates, bytes per second.
    pub rx: VecDeque<u64>,
    pub tx: VecDeque<u64>,
    pub prev_net: Option<(f64, f64, Instant)>,
    pub error: Option<String>,
}

impl MetricsHistory {
    fn push(&mut self, s: MetricsSample, at: Instant) {
        fn add(q: &mut VecDeque<u64>, v: u64) {
            if q.len() == SPARK_CAP {
                q.pop_front();
            }
            q.push_back(v);
        }
        add(&mut self.cpu, (s.cpu_percent * 100.0).max(0.0) as u64);
        add(&mut self.mem, (s.memory_usage_mb * 1024.0).max(0.0) as u64);
        if let Some((rx, tx, t)) = self.prev_net {
            let dt = at.saturating_duration_since(t).as_secs_f64();
            if dt > 0.0 {
                let per = |now: f64, before: f64| ((now - before).max(0.0) * 1024.0 * 1024.0 / dt) as u64;
                add(&mut self.rx, per(s.network_rx_mb, rx));
                add(&mut self.tx, per(s.network_tx_mb, tx));
            }
        }
        self.prev_net = Some((s.network_rx_mb, s.network_tx_mb, at));
        self.last = Some(s);
        self.error = None;
    }
}

/// One log line as received: which instance (when the daemon prefixed it), Docker's
/// timestamp, and the sanitised text.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub instance: Option<u32>,
    pub ts: Option<(i64, u32)>,
    pub text: String,
}

impl LogLine {
    /// The line as shown and saved: `[k] text`, with `HH:MM:SS ` first when asked.
    pub fn render(&self, timestamps: bool) -> String {
        let mut s = String::new();
        if timestamps {
            match self.ts {
                Some((t, _)) => {
                    s.push_str(&model::clock(t));
                    s.push(' ');
                }
                None => s.push_str("         "),
            }
        }
        if let Some(k) = self.instance {
            s.push_str(&format!("[{k}] "));
        }
        s.push_str(&self.text);
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogTarget {
    pub id: String,
    pub name: String,
    pub instance: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogView {
    pub session: u64,
    pub target: Option<LogTarget>,
    pub lines: VecDeque<LogLine>,
    /// Lines dropped from the front since the view opened.
    pub dropped: u64,
    pub follow: bool,
    /// First visible line when not following.
    pub top: usize,
    pub wrap: bool,
    pub timestamps: bool,
    /// Case-insensitive search (empty: none), and the line of the current match.
    pub search: String,
    pub current: Option<usize>,
    pub matches: usize,
    pub status: String,
    pub live: bool,
}

impl Default for LogView {
    fn default() -> Self {
        LogView {
            session: 0,
            target: None,
            lines: VecDeque::new(),
            dropped: 0,
            follow: true,
            top: 0,
            wrap: false,
            timestamps: false,
            search: String::new(),
            current: None,
            matches: 0,
            status: String::new(),
            live: false,
        }
    }
}

impl LogView {
    pub fn is_match(&self, line: &LogLine) -> bool {
        !self.search.is_empty() && contains_ci(&line.text, &self.search)
    }

    fn recount(&mut self) {
        self.matches = if self.search.is_empty() { 0 } else { self.lines.iter().filter(|l| self.is_match(l)).count() };
    }

    fn push(&mut self, lines: Vec<LogLine>) {
        for l in lines {
            if self.is_match(&l) {
                self.matches += 1;
            }
            self.lines.push_back(l);
        }
        let excess = self.lines.len().saturating_sub(LOG_CAP);
        for _ in 0..excess {
            if let Some(old) = self.lines.pop_front() {
                if self.is_match(&old) {
                    self.matches -= 1;
                }
            }
        }
        if excess > 0 {
            self.dropped += excess as u64;
            self.top = self.top.saturating_sub(excess);
            self.current = self.current.and_then(|c| c.checked_sub(excess));
        }
    }

    /// Text for "save to a file".
    pub fn text(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.render(self.timestamps));
            out.push('\n');
        }
        out
    }
}

/// Case-insensitive substring test (ASCII case folding plus Unicode lowercase).
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        let n = needle.as_bytes();
        return hay.as_bytes().windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(&needle.to_lowercase())
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventEntry {
    pub at: i64,
    pub ok: bool,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSource {
    /// `--ports` on the command line.
    Flag,
    /// The daemon said so.
    Daemon,
    /// Worked out from `GET /metrics` (the size) and the ports in use (the position).
    Inferred,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortView {
    pub flag: Option<(u16, u16)>,
    pub reported: Option<(u16, u16)>,
    pub totals: Option<(usize, usize)>,
    pub held: BTreeSet<u16>,
    /// The range being probed, and the range the last probe result is for.
    pub probed: Option<(u16, u16)>,
    pub probe_result: Option<(u16, u16)>,
    pub scroll: usize,
}

/// Most ports the port map shows and probes (the product's range has 1001).
pub const MAP_MAX: u16 = 4096;

/// Default port range of the product (docs/product.md), the first guess for the position.
pub const DEFAULT_RANGE: (u16, u16) = (8000, 9000);

impl PortView {
    /// The range to draw and probe: the flag, or what the daemon reports, or an inference
    /// from the size of the range (`/metrics`) and the ports our instances hold.
    pub fn range(&self, ours: &BTreeSet<u16>) -> Option<((u16, u16), RangeSource)> {
        // The map (and the probe) cover at most MAP_MAX ports from the start.
        self.full_range(ours).map(|((a, b), src)| ((a, b.min(a.saturating_add(MAP_MAX - 1))), src))
    }

    fn full_range(&self, ours: &BTreeSet<u16>) -> Option<((u16, u16), RangeSource)> {
        if let Some(r) = self.flag {
            return Some((r, RangeSource::Flag));
        }
        if let Some(r) = self.reported {
            return Some((r, RangeSource::Daemon));
        }
        let (in_use, free) = self.totals?;
        let total = (in_use + free).max(1);
        let span = |start: u16| (start, (start as usize + total - 1).min(u16::MAX as usize) as u16);
        let fits = |(a, b): (u16, u16)| ours.iter().all(|p| (a..=b).contains(p));
        let default = span(DEFAULT_RANGE.0);
        if fits(default) {
            return Some((default, RangeSource::Inferred));
        }
        // The allocator hands out ports from the start of the range onwards: the lowest
        // port in use is the best guess for the start.
        let lo = *ours.first()?;
        let hi = *ours.last()?;
        let start = if span(lo).1 >= hi { lo } else { hi.saturating_sub(total as u16 - 1) };
        Some((span(start), RangeSource::Inferred))
    }
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: String,
    pub color: bool,
    pub ports: Option<(u16, u16)>,
}

pub struct App {
    pub socket: String,
    pub color: bool,
    pub size: (u16, u16),
    /// Wall clock (Unix seconds) and monotonic clock as of the last event.
    pub now: i64,
    pub instant: Instant,
    pub conn: Conn,
    pub view: View,
    pub mode: Mode,
    pub services: Vec<Service>,
    /// Indexes into `services` after filter and sort, in display order.
    pub rows: Vec<usize>,
    pub selected: Option<String>,
    pub table_offset: usize,
    pub filter: String,
    pub sort: SortKey,
    pub sort_desc: bool,
    pub show_detail: bool,
    pub metrics: HashMap<String, MetricsHistory>,
    pub metrics_target: Option<String>,
    pub logs: LogView,
    pub events: VecDeque<EventEntry>,
    /// Scroll position of the event log (`None`: follow the newest).
    pub events_top: Option<usize>,
    pub ports: PortView,
    pub templates: Avail<Vec<Template>>,
    pub addons: Avail<Vec<Addon>>,
    pub addon_selected: usize,
    pub grants: Avail<Vec<Application>>,
    /// Whether the daemon has an event log to follow (`None`: not known yet).
    pub events_api: Option<bool>,
    pub flash: Option<Flash>,
    pub quit: bool,
}

impl App {
    pub fn new(opts: Options) -> App {
        App {
            socket: opts.socket,
            color: opts.color,
            size: (80, 24),
            now: addond::time::now_secs(),
            instant: Instant::now(),
            conn: Conn::Connecting,
            view: View::Services,
            mode: Mode::Normal,
            services: Vec::new(),
            rows: Vec::new(),
            selected: None,
            table_offset: 0,
            filter: String::new(),
            sort: SortKey::Name,
            sort_desc: false,
            show_detail: true,
            metrics: HashMap::new(),
            metrics_target: None,
            logs: LogView::default(),
            events: VecDeque::new(),
            events_top: None,
            ports: PortView { flag: opts.ports, ..Default::default() },
            templates: Avail::NotLoaded,
            addons: Avail::NotLoaded,
            addon_selected: 0,
            grants: Avail::NotLoaded,
            events_api: None,
            flash: None,
            quit: false,
        }
    }

    // ---- queries used by drawing and by input handling ------------------------------

    pub fn selected_service(&self) -> Option<&Service> {
        let id = self.selected.as_deref()?;
        self.services.iter().find(|s| s.id == id)
    }

    pub fn selected_row(&self) -> Option<usize> {
        let id = self.selected.as_deref()?;
        self.rows.iter().position(|&i| self.services[i].id == id)
    }

    pub fn service_by_id(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    /// Ports booked by our instances, with the service and instance holding each.
    pub fn our_ports(&self) -> BTreeSet<u16> {
        self.services.iter().flat_map(|s| s.ports()).collect()
    }

    pub fn port_range(&self) -> Option<((u16, u16), RangeSource)> {
        self.ports.range(&self.our_ports())
    }

    pub fn cpu_of(&self, id: &str) -> Option<f64> {
        self.metrics.get(id)?.last.map(|m| m.cpu_percent)
    }

    pub fn mem_of(&self, id: &str) -> Option<f64> {
        self.metrics.get(id)?.last.map(|m| m.memory_usage_mb)
    }

    pub fn flash_text(&self) -> Option<&Flash> {
        self.flash.as_ref().filter(|f| self.instant.saturating_duration_since(f.at) < FLASH_FOR)
    }

    // ---- the one entry point ----------------------------------------------------------

    /// Applies one event; returns what the network side must do.
    pub fn handle(&mut self, ev: Event) -> Vec<Command> {
        self.instant = Instant::now();
        self.now = addond::time::now_secs();
        let mut cmds = Vec::new();
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.key(k, &mut cmds),
            Event::Key(_) => {}
            Event::Mouse(m) => self.mouse(m, &mut cmds),
            Event::Resize(w, h) => {
                self.size = (w, h);
                self.clamp_offsets();
            }
            Event::Tick => {}
            Event::Daemon(u) => self.update(u, &mut cmds),
        }
        self.sync(&mut cmds);
        cmds
    }

    /// Commands that follow from the state rather than from one event: which service's
    /// metrics to poll, which port range to probe.
    fn sync(&mut self, cmds: &mut Vec<Command>) {
        let want = match (self.view, self.show_detail, &self.conn) {
            (View::Services, true, Conn::Up { .. }) => self.selected.clone(),
            _ => None,
        };
        if want != self.metrics_target {
            self.metrics_target = want.clone();
            cmds.push(Command::WatchMetrics(want));
        }
        let probe = if self.view == View::Ports { self.port_range().map(|(r, _)| r) } else { None };
        if probe != self.ports.probed {
            self.ports.probed = probe;
            if probe.is_none() {
                self.ports.held.clear();
                self.ports.probe_result = None;
            }
            cmds.push(Command::ProbePorts(probe));
        }
    }

    fn say(&mut self, ok: bool, text: impl Into<String>) {
        self.flash = Some(Flash { text: text.into(), ok, at: self.instant });
    }

    fn log_event(&mut self, ok: bool, text: String) {
        if self.events.len() == EVENT_CAP {
            self.events.pop_front();
            if let Some(t) = self.events_top.as_mut() {
                *t = t.saturating_sub(1);
            }
        }
        self.events.push_back(EventEntry { at: self.now, ok, text });
    }

    // ---- daemon updates ---------------------------------------------------------------

    fn update(&mut self, u: Update, cmds: &mut Vec<Command>) {
        match u {
            Update::Connecting => {
                if !matches!(self.conn, Conn::Down { .. }) {
                    self.conn = Conn::Connecting;
                }
            }
            Update::Connected { version, docker, polling } => {
                let was_up = matches!(self.conn, Conn::Up { .. });
                self.conn = Conn::Up { version: version.clone(), docker, polling };
                if !was_up {
                    let how = if polling { " (no event stream in this daemon version: polling every 2 s)" } else { "" };
                    self.log_event(true, format!("connected to addond {}{how}", version.unwrap_or_default()));
                }
                // A daemon that restarted may have another port range or API set.
                if matches!(self.addons, Avail::Error(_) | Avail::NotAvailable) && self.view == View::Addons {
                    self.addons = Avail::Loading;
                    cmds.push(Command::LoadAddons);
                }
            }
            Update::Down { error, retry_in } => {
                if !matches!(self.conn, Conn::Down { .. }) {
                    self.log_event(false, format!("daemon unreachable: {error}"));
                }
                self.conn = Conn::Down { error, retry_at: self.instant + retry_in };
            }
            Update::Health { version, docker } => {
                let mut note = None;
                if let Conn::Up { version: v, docker: d, .. } = &mut self.conn {
                    if *d != docker && docker.is_some() {
                        let text = match docker {
                            Some(DockerState::Reachable) => "Docker is reachable again",
                            Some(DockerState::Unresponsive) => "Docker accepts connections but is not answering (see `addonctl health`)",
                            _ => "Docker is unreachable (see `addonctl health`)",
                        };
                        *d = docker;
                        note = Some((docker == Some(DockerState::Reachable), text.to_string()));
                    }
                    if version.is_some() {
                        *v = version;
                    }
                }
                if let Some((ok, text)) = note {
                    self.log_event(ok, text);
                }
            }
            Update::Services(list) => {
                let n = list.len();
                self.services = list;
                let ids: BTreeSet<&str> = self.services.iter().map(|s| s.id.as_str()).collect();
                self.metrics.retain(|k, _| ids.contains(k.as_str()));
                self.log_event(true, format!("service list loaded: {n} service(s)"));
                self.refresh_rows();
            }
            Update::Service(s) => {
                let text = match self.services.iter().position(|o| o.id == s.id) {
                    Some(i) => {
                        let text = change_summary(&self.services[i], &s);
                        self.services[i] = s;
                        text
                    }
                    None => {
                        let text = format!("{}: created ({}, {})", s.name, s.phase, s.health);
                        self.services.push(s);
                        Some(text)
                    }
                };
                if let Some(text) = text {
                    let ok = !text.contains("Failed") && !text.contains("unhealthy");
                    self.log_event(ok, text);
                }
                self.refresh_rows();
            }
            Update::Deleted(id) => {
                if let Some(i) = self.services.iter().position(|o| o.id == id) {
                    let s = self.services.remove(i);
                    self.log_event(true, format!("{}: deleted", s.name));
                }
                self.metrics.remove(&id);
                if self.logs.target.as_ref().is_some_and(|t| t.id == id) {
                    self.logs.status = "the service was deleted".into();
                    self.logs.live = false;
                    cmds.push(Command::CloseLogs);
                }
                self.refresh_rows();
            }
            Update::Resync => self.log_event(true, "the daemon asked for a resync; reloading the list".into()),
            Update::PortTotals { in_use, free } => self.ports.totals = Some((in_use, free)),
            Update::PortRange(a, b) => self.ports.reported = Some((a, b)),
            Update::PortsHeld { range, held } => {
                if Some(range) == self.ports.probed {
                    self.ports.held = held;
                    self.ports.probe_result = Some(range);
                }
            }
            Update::Metrics { id, result } => {
                let at = self.instant;
                let h = self.metrics.entry(id).or_default();
                match result {
                    Ok(s) => h.push(s, at),
                    Err(e) => h.error = Some(e),
                }
            }
            Update::LogLines { session, lines } => {
                if session == self.logs.session && self.logs.target.is_some() {
                    self.logs.push(lines);
                }
            }
            Update::LogStatus { session, status, live } => {
                if session == self.logs.session {
                    self.logs.status = status;
                    self.logs.live = live;
                }
            }
            Update::ActionDone { ok, message } => {
                self.log_event(ok, message.clone());
                self.say(ok, message);
            }
            Update::Templates(r) => {
                self.templates = match r {
                    Ok(t) => Avail::Ready(t),
                    Err(e) => Avail::Error(e),
                }
            }
            Update::Addons(a) => {
                if let Avail::Ready(list) = &a {
                    self.addon_selected = self.addon_selected.min(list.len().saturating_sub(1));
                }
                self.addons = a;
            }
            Update::Grants(g) => self.grants = g,
            Update::EventsApi(on) => self.events_api = Some(on),
            Update::AddonEvents(list) => {
                // A deployment started or ended: the addon view shows it at once.
                if self.view == View::Addons
                    && list.iter().any(|e| e.name.starts_with("deployment."))
                    && !cmds.contains(&Command::LoadAddons)
                {
                    cmds.push(Command::LoadAddons);
                }
                for e in list {
                    let ok = !(e.name.ends_with("failed") || e.name.ends_with("unhealthy") || e.name.ends_with("rolled_back"));
                    let data = if e.data.is_empty() || e.data == "{}" { String::new() } else { format!(" {}", e.data) };
                    let from = if e.source.is_empty() { String::new() } else { format!(" from {}", e.source) };
                    self.log_event(ok, format!("event #{} {}{from}{data}", e.id, e.name));
                    if let (Some(at), Some(last)) = (e.at, self.events.back_mut()) {
                        last.at = at;
                    }
                }
            }
        }
    }

    /// Recomputes the filtered, sorted rows and keeps the selection on the same service.
    pub fn refresh_rows(&mut self) {
        let mut rows: Vec<usize> = (0..self.services.len()).filter(|&i| self.matches_filter(&self.services[i])).collect();
        let key = self.sort;
        rows.sort_by(|&a, &b| {
            let (x, y) = (&self.services[a], &self.services[b]);
            let ord = self.compare(key, x, y).then_with(|| x.name.cmp(&y.name));
            if self.sort_desc {
                ord.reverse()
            } else {
                ord
            }
        });
        self.rows = rows;
        if self.selected_row().is_none() {
            self.selected = self.rows.first().map(|&i| self.services[i].id.clone());
        }
        self.clamp_offsets();
    }

    fn matches_filter(&self, s: &Service) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        self.filter.split_whitespace().all(|word| {
            [s.name.as_str(), s.plugin_id.as_deref().unwrap_or(""), &s.service_type, &s.phase, &s.health, &s.image]
                .iter()
                .any(|f| contains_ci(f, word))
        })
    }

    fn compare(&self, key: SortKey, a: &Service, b: &Service) -> std::cmp::Ordering {
        let f = |v: Option<f64>| v.unwrap_or(-1.0);
        match key {
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Plugin => a.plugin_id.cmp(&b.plugin_id),
            SortKey::Type => a.service_type.cmp(&b.service_type),
            SortKey::Phase => a.phase.cmp(&b.phase),
            SortKey::Health => health_rank(&a.health).cmp(&health_rank(&b.health)),
            SortKey::Replicas => (a.running(), a.replicas).cmp(&(b.running(), b.replicas)),
            SortKey::Ports => a.ports().first().cmp(&b.ports().first()),
            SortKey::Cpu => f(self.cpu_of(&a.id)).total_cmp(&f(self.cpu_of(&b.id))),
            SortKey::Memory => f(self.mem_of(&a.id)).total_cmp(&f(self.mem_of(&b.id))),
            SortKey::Restarts => a.restarts().cmp(&b.restarts()),
            // Longest running first when ascending; not running last.
            SortKey::Uptime => a.up_since().unwrap_or(i64::MAX).cmp(&b.up_since().unwrap_or(i64::MAX)),
        }
    }

    fn clamp_offsets(&mut self) {
        let page = layout::table_page(self).max(1);
        let sel = self.selected_row().unwrap_or(0);
        if sel < self.table_offset {
            self.table_offset = sel;
        } else if sel >= self.table_offset + page {
            self.table_offset = sel + 1 - page;
        }
        self.table_offset = self.table_offset.min(self.rows.len().saturating_sub(page));
    }
}

/// The daemon's name rule for services and addon instances.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Sick first: unhealthy, starting, unknown, healthy.
fn health_rank(h: &str) -> u8 {
    match h {
        "unhealthy" => 0,
        "starting" => 1,
        "healthy" => 3,
        _ => 2,
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) for file names.
fn stamp(unix: i64) -> String {
    addond::backup::timestamp_for_path(unix.saturating_mul(1000))
}

/// What changed between two versions of a service, for the event log (`None`: nothing
/// an operator would notice).
fn change_summary(old: &Service, new: &Service) -> Option<String> {
    let mut parts = Vec::new();
    if old.phase != new.phase {
        parts.push(format!("phase {} → {}", old.phase, new.phase));
    }
    if old.health != new.health {
        parts.push(format!("health {} → {}", old.health, new.health));
    }
    let (ro, rn) = (format!("{}/{}", old.running(), old.replicas), format!("{}/{}", new.running(), new.replicas));
    if ro != rn {
        parts.push(format!("replicas {ro} → {rn}"));
    }
    if new.restarts() > old.restarts() {
        parts.push(format!("restarted ({} total)", new.restarts()));
    }
    if old.error() != new.error() {
        if let Some(e) = new.error() {
            parts.push(format!("error: {e}"));
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(format!("{}: {}", new.name, parts.join(", ")))
    }
}

#[cfg(test)]
pub(super) mod tests;
