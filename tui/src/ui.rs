//! Drawing: [`draw`] renders an [`App`] into a frame and changes nothing. The layout
//! helpers at the top are shared with the state side (page sizes for scrolling, hit tests
//! for the mouse), so both always agree on where things are.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthChar;

use crate::app::{App, Avail, Confirm, Conn, LogLine, Mode, Op, PromptKind, RangeSource, SortKey, View};
use crate::model::{self, Service};

/// Smallest terminal the dashboard draws into.
pub const MIN_SIZE: (u16, u16) = (60, 12);

// ---- layout shared with the state side -------------------------------------------------

fn screen(app: &App) -> Rect {
    Rect::new(0, 0, app.size.0, app.size.1)
}

/// Tab bar (top row), body, status line (bottom row).
pub fn frame_areas(area: Rect) -> (Rect, Rect, Rect) {
    let [tabs, body, status] = Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    (tabs, body, status)
}

/// The services table and, when shown and there is room, the detail pane under it.
pub fn services_areas(app: &App) -> (Rect, Option<Rect>) {
    let (_, body, _) = frame_areas(screen(app));
    if app.show_detail && body.height >= 16 {
        let dh = (body.height * 2 / 5).clamp(9, 14);
        let [table, detail] = Layout::vertical([Constraint::Min(0), Constraint::Length(dh)]).areas(body);
        (table, Some(detail))
    } else {
        (body, None)
    }
}

/// Rows of the services table that fit (border and header excluded).
pub fn table_page(app: &App) -> usize {
    services_areas(app).0.height.saturating_sub(3) as usize
}

/// The row of `app.rows` under a mouse click, if any.
pub fn table_row_at(app: &App, x: u16, y: u16) -> Option<usize> {
    let (t, _) = services_areas(app);
    if x <= t.x || x + 1 >= t.x + t.width || y < t.y + 2 || y + 1 >= t.y + t.height {
        return None;
    }
    let row = app.table_offset + (y - t.y - 2) as usize;
    (row < app.rows.len()).then_some(row)
}

fn log_inner(app: &App) -> Rect {
    let (_, body, _) = frame_areas(screen(app));
    Block::bordered().inner(body)
}

/// Rows of log text that fit.
pub fn log_page(app: &App) -> usize {
    log_inner(app).height as usize
}

/// Rows a log line takes at this width.
fn rows_of(app: &App, line: &LogLine, width: usize) -> usize {
    if !app.logs.wrap || width == 0 {
        return 1;
    }
    let w: usize = line.render(app.logs.timestamps).chars().map(|c| c.width().unwrap_or(0)).sum();
    w.div_ceil(width).max(1)
}

/// The first line shown when following: the last lines that fill the page.
pub fn log_bottom_top(app: &App) -> usize {
    let inner = log_inner(app);
    let (page, width) = (inner.height as usize, inner.width as usize);
    let n = app.logs.lines.len();
    if !app.logs.wrap {
        return n.saturating_sub(page);
    }
    let mut used = 0;
    let mut top = n;
    while top > 0 {
        let r = rows_of(app, &app.logs.lines[top - 1], width);
        if used + r > page {
            break;
        }
        used += r;
        top -= 1;
    }
    top
}

pub fn events_page(app: &App) -> usize {
    let (_, body, _) = frame_areas(screen(app));
    body.height.saturating_sub(2) as usize
}

const BRAND: &str = " addond ";

fn tab_label(i: usize, v: View) -> String {
    format!(" {}:{} ", i + 1, v.title())
}

/// The view whose tab is at column `x` of the top row.
pub fn tab_at(x: u16) -> Option<View> {
    let mut pos = BRAND.chars().count() as u16;
    for (i, v) in View::ALL.iter().enumerate() {
        let w = tab_label(i, *v).chars().count() as u16;
        if (pos..pos + w).contains(&x) {
            return Some(*v);
        }
        pos += w;
    }
    None
}

// ---- styles -------------------------------------------------------------------------

/// Colours, or (with `NO_COLOR`) only bold/reverse/dim, so nothing depends on colour alone.
#[derive(Clone, Copy)]
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn health(self, h: &str) -> Style {
        match h {
            "healthy" => self.fg(Color::Green),
            "unhealthy" => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            "starting" => self.fg(Color::Yellow),
            _ => self.dim(),
        }
    }
    fn phase(self, p: &str) -> Style {
        match p {
            "Failed" => self.bad(),
            "Started" => Style::new(),
            _ => self.fg(Color::Yellow),
        }
    }
    fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn good(self) -> Style {
        self.fg(Color::Green)
    }
    fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    fn accent(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    fn selected(self) -> Style {
        if self.color {
            Style::new().bg(Color::DarkGray).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
    fn tab_active(self) -> Style {
        if self.color {
            Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }
    fn matched(self) -> Style {
        if self.color {
            Style::new().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
    fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}

// ---- drawing --------------------------------------------------------------------------

/// Renders the whole screen for `app`.
pub fn draw(app: &App, f: &mut Frame) {
    let area = f.area();
    let t = Theme { color: app.color };
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = format!("addond-tui needs at least {}×{} (this is {}×{})", MIN_SIZE.0, MIN_SIZE.1, area.width, area.height);
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let (tabs, body, status) = frame_areas(area);
    draw_tabs(app, t, f, tabs);
    match app.view {
        View::Services => draw_services(app, t, f),
        View::Logs => draw_logs(app, t, f, body),
        View::Ports => draw_ports(app, t, f, body),
        View::Events => draw_events(app, t, f, body),
        View::Addons => draw_addons(app, t, f, body),
        View::Grants => draw_grants(app, t, f, body),
    }
    draw_status(app, t, f, status);
    match &app.mode {
        Mode::Help => draw_help(t, f, area),
        Mode::Prompt { kind, input, error } => draw_prompt(app, t, f, area, kind, input, error.as_deref()),
        Mode::Confirm(c) => draw_confirm(t, f, area, c),
        Mode::PickTemplate { index } => draw_templates(app, t, f, area, *index),
        _ => {}
    }
}

fn draw_tabs(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let mut spans = vec![Span::styled(BRAND, t.accent())];
    for (i, v) in View::ALL.iter().enumerate() {
        let style = if *v == app.view { t.tab_active() } else { Style::new() };
        spans.push(Span::styled(tab_label(i, *v), style));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
    let badge = match &app.conn {
        Conn::Up { polling: false, .. } => Span::styled("● connected ", t.good()),
        Conn::Up { polling: true, .. } => Span::styled("● polling ", t.warn()),
        Conn::Connecting => Span::styled("… connecting ", t.warn()),
        Conn::Down { .. } => Span::styled("✖ offline ", t.bad()),
    };
    f.render_widget(Paragraph::new(Line::from(badge).right_aligned()), area);
}

fn hints(app: &App) -> &'static str {
    match app.view {
        View::Services => "/ filter  o sort  l logs  r restart  = scale  x stop  D delete  n new  ? help  q quit",
        View::Logs => "f follow  / search  n/N next/prev  w wrap  t time  i instance  s save  Esc back  ? help",
        View::Ports => "↑↓ scroll  Esc back  ? help  q quit",
        View::Events => "↑↓ scroll  c clear  Esc back  ? help  q quit",
        View::Addons => "↑↓ select  i install  R reload  Esc back  ? help  q quit",
        View::Grants => "R reload  Esc back  ? help  q quit",
    }
}

fn draw_status(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let line = match (&app.mode, &app.conn) {
        (Mode::Filter, _) => Line::from(vec![
            Span::styled("filter: ", t.key()),
            Span::raw(app.filter.clone()),
            Span::raw("█"),
            Span::styled("   Enter keep · Esc clear", t.dim()),
        ]),
        (Mode::LogSearch, _) => Line::from(vec![
            Span::styled("search: ", t.key()),
            Span::raw(app.logs.search.clone()),
            Span::raw("█"),
            Span::styled(format!("   {} matching line(s) · Enter find · Esc clear", app.logs.matches), t.dim()),
        ]),
        (_, Conn::Down { error, retry_at }) => {
            let secs = retry_at.saturating_duration_since(app.instant).as_secs_f64().ceil() as u64;
            let when = if secs == 0 { "reconnecting".to_string() } else { format!("reconnecting in {secs}s") };
            Line::from(vec![Span::styled(format!("✖ {when} · "), t.bad()), Span::raw(error.clone())])
        }
        _ => match app.flash_text() {
            Some(fl) => Line::from(Span::styled(fl.text.clone(), if fl.ok { t.good() } else { t.bad() })),
            None if app.conn == Conn::Connecting => Line::from(Span::styled(format!("connecting to {}…", app.socket), t.warn())),
            None => Line::from(Span::styled(hints(app), t.dim())),
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

// ---- services -----------------------------------------------------------------------

struct Col {
    title: &'static str,
    width: u16,
    /// Lower goes first when the terminal is narrow.
    keep: u8,
    sort: SortKey,
}

const COLS: [Col; 11] = [
    Col { title: "NAME", width: 12, keep: 100, sort: SortKey::Name },
    Col { title: "ADDON", width: 10, keep: 2, sort: SortKey::Plugin },
    Col { title: "TYPE", width: 10, keep: 1, sort: SortKey::Type },
    Col { title: "PHASE", width: 8, keep: 90, sort: SortKey::Phase },
    Col { title: "HEALTH", width: 9, keep: 95, sort: SortKey::Health },
    Col { title: "REPL", width: 5, keep: 80, sort: SortKey::Replicas },
    Col { title: "PORTS", width: 11, keep: 70, sort: SortKey::Ports },
    Col { title: "CPU", width: 6, keep: 50, sort: SortKey::Cpu },
    Col { title: "MEM", width: 7, keep: 40, sort: SortKey::Memory },
    Col { title: "RST", width: 3, keep: 30, sort: SortKey::Restarts },
    Col { title: "UP", width: 6, keep: 20, sort: SortKey::Uptime },
];

/// Columns that fit in `width` (highlight symbol included), in display order.
fn visible_cols(width: u16) -> Vec<usize> {
    let mut cols: Vec<usize> = (0..COLS.len()).collect();
    let need = |cols: &[usize]| cols.iter().map(|&i| COLS[i].width + 1).sum::<u16>() + 2;
    while need(&cols) > width && cols.len() > 1 {
        // `cols` has more than one entry here, so there is a minimum.
        let Some((pos, _)) = cols.iter().enumerate().min_by_key(|(_, &i)| COLS[i].keep) else { break };
        cols.remove(pos);
    }
    cols
}

fn ports_text(s: &Service) -> String {
    let p = s.ports();
    match p.len() {
        0 => "-".into(),
        1 | 2 => p.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
        n => format!("{} +{}", p[0], n - 1),
    }
}

fn cell_text(app: &App, s: &Service, col: usize) -> String {
    match col {
        0 => s.name.clone(),
        1 => s.plugin_id.clone().unwrap_or_else(|| "-".into()),
        2 => s.service_type.clone(),
        3 => s.phase.clone(),
        4 => s.health.clone(),
        5 => format!("{}/{}", s.running(), s.replicas),
        6 => ports_text(s),
        7 => app.cpu_of(&s.id).map(|c| format!("{c:.1}%")).unwrap_or_else(|| "-".into()),
        8 => app.mem_of(&s.id).map(model::megabytes).unwrap_or_else(|| "-".into()),
        9 => s.restarts().to_string(),
        10 => s.up_since().map(|t| model::duration(app.now - t)).unwrap_or_else(|| "-".into()),
        _ => String::new(),
    }
}

fn draw_services(app: &App, t: Theme, f: &mut Frame) {
    let (area, detail) = services_areas(app);
    let cols = visible_cols(area.width.saturating_sub(2));
    let arrow = if app.sort_desc { "↓" } else { "↑" };
    let header = Row::new(cols.iter().map(|&i| {
        let c = &COLS[i];
        if c.sort == app.sort {
            Cell::from(format!("{}{arrow}", c.title)).style(t.accent())
        } else {
            Cell::from(c.title).style(Style::new().add_modifier(Modifier::BOLD))
        }
    }));
    // Only the rows that fit are built: cheap with thousands of services.
    let page = area.height.saturating_sub(3) as usize;
    let offset = app.table_offset.min(app.rows.len());
    let visible = &app.rows[offset..(offset + page).min(app.rows.len())];
    let rows = visible.iter().map(|&i| {
        let s = &app.services[i];
        Row::new(cols.iter().map(|&c| {
            let text = cell_text(app, s, c);
            let style = match c {
                3 => t.phase(&s.phase),
                4 => t.health(&s.health),
                9 if s.restarts() > 0 => t.warn(),
                _ => Style::new(),
            };
            Cell::from(text).style(style)
        }))
        .style(if s.health == "unhealthy" || s.phase == "Failed" { t.bad() } else { Style::new() })
    });
    let widths: Vec<Constraint> = cols.iter().map(|&i| if i == 0 { Constraint::Min(COLS[0].width) } else { Constraint::Length(COLS[i].width) }).collect();
    let mut title = vec![Span::styled(" Services ", t.accent()), Span::raw(format!("{}/{} ", app.rows.len(), app.services.len()))];
    if !app.filter.is_empty() {
        title.push(Span::styled(format!("filter \"{}\" ", app.filter), t.warn()));
    }
    title.push(Span::styled(format!("sort {} {arrow} ", app.sort.label()), t.dim()));
    let block = Block::bordered().title(Line::from(title));
    if app.rows.is_empty() {
        let msg = match (&app.conn, app.services.is_empty()) {
            (Conn::Up { .. }, true) => "No services yet. Press n to create one from a template.",
            (_, true) => "Waiting for the daemon…",
            (_, false) => "No service matches the filter. Press Esc to clear it.",
        };
        f.render_widget(Paragraph::new(Line::styled(msg, t.dim())).block(block), area);
    } else {
        let table = Table::new(rows, widths)
            .header(header)
            .block(block)
            .column_spacing(1)
            .row_highlight_style(t.selected())
            .highlight_symbol("▶ ")
            .highlight_spacing(HighlightSpacing::Always);
        let mut state = TableState::new().with_selected(app.selected_row().and_then(|r| r.checked_sub(offset)).filter(|r| *r < visible.len()));
        f.render_stateful_widget(table, area, &mut state);
    }
    if let Some(d) = detail {
        draw_detail(app, t, f, d);
    }
}

fn kv<'a>(t: Theme, k: &'a str, v: String) -> [Span<'a>; 2] {
    [Span::styled(k, t.dim()), Span::raw(v)]
}

fn draw_detail(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let Some(s) = app.selected_service() else {
        f.render_widget(Block::bordered().title(" Detail "), area);
        return;
    };
    let block = Block::bordered().title(Line::from(vec![Span::styled(format!(" {} ", s.name), t.accent()), Span::styled(format!("{} ", s.id), t.dim())]));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [left, right] = Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)]).spacing(1).areas(inner);

    let mut lines: Vec<Line> = Vec::new();
    let mut l1 = kv(t, "type ", s.service_type.clone()).to_vec();
    l1.extend(kv(t, "  addon ", s.plugin_id.clone().unwrap_or_else(|| "-".into())));
    lines.push(Line::from(l1));
    lines.push(Line::from(kv(t, "image ", s.image.clone()).to_vec()));
    // "Starting" on the way to "started" says it all; "Failed" wanting "started" does not.
    let stem = |x: &str| x.chars().take(4).collect::<String>().to_lowercase();
    let wants = if s.desired.is_empty() || stem(&s.phase) == stem(&s.desired) { String::new() } else { format!(" (wants {})", s.desired) };
    lines.push(Line::from(vec![
        Span::styled("phase ", t.dim()),
        Span::styled(s.phase.clone(), t.phase(&s.phase)),
        Span::styled(wants, t.dim()),
        Span::styled("  health ", t.dim()),
        Span::styled(s.health.clone(), t.health(&s.health)),
    ]));
    if let Some(e) = s.error() {
        let code = s.exit_code.map(|c| format!(" (exit {c})")).unwrap_or_default();
        lines.push(Line::from(vec![Span::styled("error ", t.bad()), Span::styled(format!("{e}{code}"), t.bad())]));
    }
    let mut l = kv(t, "replicas ", format!("{}/{}", s.running(), s.replicas)).to_vec();
    l.extend(kv(t, "  limits ", format!("{} · {} cpu", s.memory.as_deref().unwrap_or("-"), s.cpu.as_deref().unwrap_or("-"))));
    lines.push(Line::from(l));
    for i in &s.instances {
        let port = i.host_port.map(|p| format!(":{p}")).unwrap_or_else(|| "-".into());
        let up = i.started_at.filter(|_| i.state == "running").map(|st| format!(" up {}", model::duration(app.now - st))).unwrap_or_default();
        let mut spans = vec![
            Span::raw(format!("#{} {port} ", i.ordinal)),
            Span::raw(format!("{} ", i.state)),
            Span::styled(i.health.clone(), t.health(&i.health)),
            Span::raw(format!(" ↻{}{up}", i.restarts)),
        ];
        if let Some(e) = &i.last_error {
            spans.push(Span::styled(format!(" {e}"), t.bad()));
        }
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), left);
    draw_sparklines(app, t, f, right, &s.id);
}

fn draw_sparklines(app: &App, t: Theme, f: &mut Frame, area: Rect, id: &str) {
    let Some(h) = app.metrics.get(id).filter(|h| h.last.is_some()) else {
        let msg = match app.metrics.get(id).and_then(|h| h.error.clone()) {
            Some(e) => Line::styled(format!("metrics: {e}"), t.bad()),
            None => Line::styled("metrics: waiting for a sample…", t.dim()),
        };
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    };
    let m = h.last.unwrap_or_default();
    let rows = Layout::vertical([Constraint::Length(1); 6]).split(area);
    let w = area.width as usize;
    let tail = |q: &std::collections::VecDeque<u64>, w: usize| -> Vec<u64> { q.iter().skip(q.len().saturating_sub(w)).copied().collect() };
    let stale = if h.error.is_some() { " (stale)" } else { "" };
    f.render_widget(Paragraph::new(Line::from(kv(t, "CPU ", format!("{:.2}%{stale}", m.cpu_percent)).to_vec())), rows[0]);
    f.render_widget(Sparkline::default().data(tail(&h.cpu, w)).style(t.fg(Color::Cyan)), rows[1]);
    let mem = if m.memory_limit_mb > 0.0 {
        format!("{} / {} ({:.1}%)", model::megabytes(m.memory_usage_mb), model::megabytes(m.memory_limit_mb), m.memory_percent)
    } else {
        model::megabytes(m.memory_usage_mb)
    };
    f.render_widget(Paragraph::new(Line::from(kv(t, "MEM ", mem).to_vec())), rows[2]);
    f.render_widget(Sparkline::default().data(tail(&h.mem, w)).style(t.fg(Color::Magenta)), rows[3]);
    let rx = h.rx.back().copied().unwrap_or(0) as f64;
    let tx = h.tx.back().copied().unwrap_or(0) as f64;
    f.render_widget(Paragraph::new(Line::from(kv(t, "NET ", format!("rx {}  tx {}", model::rate(rx), model::rate(tx))).to_vec())), rows[4]);
    let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).spacing(1).areas(rows[5]);
    f.render_widget(Sparkline::default().data(tail(&h.rx, a.width as usize)).style(t.fg(Color::Green)), a);
    f.render_widget(Sparkline::default().data(tail(&h.tx, b.width as usize)).style(t.fg(Color::Blue)), b);
}

// ---- logs ---------------------------------------------------------------------------

/// Byte ranges of case-insensitive matches of `needle` in `hay`.
fn match_ranges(hay: &str, needle: &str) -> Vec<(usize, usize)> {
    if needle.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        let mut i = 0;
        while i + n.len() <= h.len() {
            if h[i..i + n.len()].eq_ignore_ascii_case(n) && hay.is_char_boundary(i) && hay.is_char_boundary(i + n.len()) {
                out.push((i, i + n.len()));
                i += n.len();
            } else {
                i += 1;
            }
        }
    } else {
        out.extend(hay.match_indices(needle).map(|(i, m)| (i, i + m.len())));
    }
    out
}

fn highlighted<'a>(text: &str, needle: &str, base: Style, hit: Style) -> Line<'a> {
    let mut spans = Vec::new();
    let mut last = 0;
    for (a, b) in match_ranges(text, needle) {
        if a > last {
            spans.push(Span::styled(text[last..a].to_string(), base));
        }
        spans.push(Span::styled(text[a..b].to_string(), hit));
        last = b;
    }
    if last < text.len() {
        spans.push(Span::styled(text[last..].to_string(), base));
    }
    Line::from(spans)
}

/// Cuts `text` into pieces of at most `width` columns.
fn wrap_text(text: &str, width: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut w = 0;
    for c in text.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > width && w > 0 {
            out.push(String::new());
            w = 0;
        }
        match out.last_mut() {
            Some(line) => line.push(c),
            None => out.push(c.to_string()),
        }
        w += cw;
    }
    out
}

fn draw_logs(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let lv = &app.logs;
    let Some(target) = &lv.target else {
        let block = Block::bordered().title(Line::styled(" Logs ", t.accent()));
        let msg = "No log stream open. Select a service in the Services view and press l.";
        f.render_widget(Paragraph::new(Line::styled(msg, t.dim())).block(block), area);
        return;
    };
    let which = match target.instance {
        Some(k) => format!("instance {k}"),
        None => "all instances".into(),
    };
    let mut info = vec![
        Span::raw(format!(" {} line(s)", lv.lines.len())),
        Span::styled(if lv.follow { " · following" } else { " · paused" }, if lv.follow { t.good() } else { t.warn() }),
        Span::raw(if lv.wrap { " · wrap" } else { "" }),
    ];
    if !lv.search.is_empty() {
        info.push(Span::styled(format!(" · \"{}\": {} match(es)", lv.search, lv.matches), t.warn()));
    }
    if lv.dropped > 0 {
        info.push(Span::styled(format!(" · {} older dropped", lv.dropped), t.dim()));
    }
    info.push(Span::styled(format!(" · {} ", lv.status), if lv.live { t.dim() } else { t.warn() }));
    let block = Block::bordered()
        .title(Line::from(vec![Span::styled(format!(" Logs: {} ", target.name), t.accent()), Span::styled(format!("({which}) "), t.dim())]))
        .title_bottom(Line::from(info));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let (page, width) = (inner.height as usize, inner.width as usize);
    let top = if lv.follow { log_bottom_top(app) } else { lv.top.min(lv.lines.len()) };
    let mut out: Vec<Line> = Vec::new();
    for idx in top..lv.lines.len() {
        if out.len() >= page {
            break;
        }
        let line = &lv.lines[idx];
        let text = line.render(lv.timestamps);
        let base = if lv.current == Some(idx) { Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED) } else { Style::new() };
        let pieces = if lv.wrap { wrap_text(&text, width) } else { vec![text] };
        for p in pieces {
            if out.len() >= page {
                break;
            }
            out.push(highlighted(&p, &lv.search, base, t.matched()));
        }
    }
    if lv.lines.is_empty() {
        out.push(Line::styled("(no output yet)", t.dim()));
    }
    f.render_widget(Paragraph::new(out), inner);
}

// ---- ports --------------------------------------------------------------------------

fn draw_ports(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let Some(((a, b), source)) = app.port_range() else {
        let block = Block::bordered().title(Line::styled(" Port map ", t.accent()));
        let msg = if matches!(app.conn, Conn::Up { .. }) {
            "The daemon did not report its port range yet (GET /metrics). Start addond-tui with --ports START-END to name it."
        } else {
            "Waiting for the daemon…"
        };
        f.render_widget(Paragraph::new(Line::styled(msg, t.dim())).wrap(Wrap { trim: true }).block(block), area);
        return;
    };
    // Port → (service, ordinal, health).
    let mut ours: std::collections::BTreeMap<u16, (&str, u32, &str)> = Default::default();
    for s in &app.services {
        for i in &s.instances {
            if let Some(p) = i.host_port {
                ours.insert(p, (s.name.as_str(), i.ordinal, i.health.as_str()));
            }
        }
    }
    let total = b as usize - a as usize + 1;
    let in_range = ours.keys().filter(|p| (a..=b).contains(*p)).count();
    let held: Vec<u16> = app.ports.held.iter().copied().filter(|p| (a..=b).contains(p) && !ours.contains_key(p)).collect();
    let probed = app.ports.probe_result == Some((a, b));
    let src = match source {
        RangeSource::Flag => "from --ports",
        RangeSource::Daemon => "reported by the daemon",
        RangeSource::Inferred => "inferred; --ports names it",
    };
    let block = Block::bordered().title(Line::from(vec![Span::styled(format!(" Port map {a}–{b} "), t.accent()), Span::styled(format!("({src}) "), t.dim())]));
    let inner = block.inner(area);
    f.render_widget(block, area);

    let mut lines: Vec<Line> = Vec::new();
    lines.push(Line::from(vec![
        Span::styled("■", t.good()),
        Span::raw(format!(" ours {in_range}   ")),
        Span::styled("×", t.bad()),
        Span::raw(format!(" held by another program {}   ", held.len())),
        Span::styled("·", t.dim()),
        Span::raw(format!(" free {}", total.saturating_sub(in_range + held.len()))),
        Span::styled(if probed { "" } else { "   (probing…)" }, t.dim()),
    ]));
    let per_row = (((inner.width as usize).saturating_sub(6)) / 10 * 10).max(10);
    let mut p = a as usize;
    while p <= b as usize {
        let mut spans = vec![Span::styled(format!("{p:>5} "), t.dim())];
        for q in p..(p + per_row).min(b as usize + 1) {
            let q = q as u16;
            spans.push(match ours.get(&q) {
                Some((_, _, h)) => Span::styled("■", t.health(h).remove_modifier(Modifier::DIM)),
                None if app.ports.held.contains(&q) => Span::styled("×", t.bad()),
                None => Span::styled("·", t.dim()),
            });
        }
        lines.push(Line::from(spans));
        p += per_row;
    }
    lines.push(Line::raw(""));
    for (port, (name, ord, health)) in ours.iter().filter(|(p, _)| (a..=b).contains(*p)) {
        lines.push(Line::from(vec![Span::raw(format!("{port:>5}  {name} #{ord}  ")), Span::styled(health.to_string(), t.health(health))]));
    }
    for port in ours.keys().filter(|p| !(a..=b).contains(*p)) {
        lines.push(Line::styled(format!("{port:>5}  ours, outside the range shown"), t.warn()));
    }
    for port in &held {
        lines.push(Line::from(vec![Span::raw(format!("{port:>5}  ")), Span::styled("held by another program", t.bad())]));
    }
    let scroll = app.ports.scroll.min(lines.len().saturating_sub(1));
    f.render_widget(Paragraph::new(lines).scroll((scroll as u16, 0)), inner);
}

// ---- events, addons, grants -----------------------------------------------------------

fn draw_events(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let block = Block::bordered()
        .title(Line::from(vec![Span::styled(" Events ", t.accent()), Span::styled("service changes and the daemon's event log, live ", t.dim())]))
        .title_bottom(Line::styled(
            match app.events_api {
                Some(false) => " event log: not available in this daemon version ",
                _ => " ↑↓ scroll · c clear ",
            },
            t.dim(),
        ));
    let page = area.height.saturating_sub(2) as usize;
    let bottom = app.events.len().saturating_sub(page);
    let top = app.events_top.unwrap_or(bottom).min(bottom);
    let lines: Vec<Line> = app
        .events
        .iter()
        .skip(top)
        .take(page)
        .map(|e| Line::from(vec![Span::styled(format!("{} ", model::clock(e.at)), t.dim()), Span::styled(e.text.clone(), if e.ok { Style::new() } else { t.bad() })]))
        .collect();
    let body = if lines.is_empty() { vec![Line::styled("No events yet.", t.dim())] } else { lines };
    f.render_widget(Paragraph::new(body).block(block), area);
}

fn unavailable(what: &str, route: &str) -> String {
    format!("{what}: not available in this daemon version (it has no {route} API).")
}

fn draw_avail_message<T>(t: Theme, f: &mut Frame, area: Rect, block: Block, a: &Avail<T>, what: &str, route: &str) -> bool {
    let msg = match a {
        Avail::NotLoaded | Avail::Loading => Line::styled("loading…", t.dim()),
        Avail::NotAvailable => Line::styled(unavailable(what, route), t.warn()),
        Avail::Error(e) => Line::styled(format!("could not load {route}: {e} (R to retry)"), t.bad()),
        Avail::Ready(_) => return false,
    };
    f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }).block(block), area);
    true
}

fn draw_addons(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let block = Block::bordered().title(Line::styled(" Addons ", t.accent()));
    if draw_avail_message(t, f, area, block.clone(), &app.addons, "Addons", "/api/addons") {
        return;
    }
    let Avail::Ready(list) = &app.addons else { return };
    if list.is_empty() {
        let msg = "No addon is registered. Register one with `addonctl addons register`, then install it here with i.";
        f.render_widget(Paragraph::new(Line::styled(msg, t.dim())).wrap(Wrap { trim: true }).block(block), area);
        return;
    }
    let header = Row::new(["NAME", "VERSION", "CATEGORY", "INSTALLED AS", "DESCRIPTION"]).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = list.iter().map(|a| {
        let inst = if a.installed.is_empty() { "-".to_string() } else { a.installed.join(",") };
        Row::new([a.name.clone(), a.version.clone(), a.category.clone(), inst, a.description.clone()])
    });
    let widths = [Constraint::Length(18), Constraint::Length(9), Constraint::Length(13), Constraint::Length(16), Constraint::Min(10)];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block.title_bottom(Line::styled(" i install · R reload ", t.dim())))
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::new().with_selected(Some(app.addon_selected));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_grants(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let block = Block::bordered().title(Line::styled(" Applications and grants ", t.accent())).title_bottom(Line::styled(" R reload · manage with addonctl apps / grants ", t.dim()));
    if draw_avail_message(t, f, area, block.clone(), &app.grants, "Applications and grants", "/api/applications") {
        return;
    }
    let Avail::Ready(list) = &app.grants else { return };
    if list.is_empty() {
        let msg = "No application yet. Create one with `addonctl apps create`, then grant it an addon.";
        f.render_widget(Paragraph::new(Line::styled(msg, t.dim())).wrap(Wrap { trim: true }).block(block), area);
        return;
    }
    let mut rows = Vec::new();
    for a in list {
        let org = if a.organization.is_empty() { String::new() } else { format!(" ({})", a.organization) };
        rows.push(Row::new([Cell::from(format!("{}{org}", a.name)).style(Style::new().add_modifier(Modifier::BOLD)), Cell::from(format!("{} grant(s)", a.grants.len())).style(t.dim())]));
        for g in &a.grants {
            let style = if g.status == "active" { Style::new() } else { t.dim() };
            let origins = if g.origins.is_empty() { String::new() } else { format!(" · {}", g.origins.join(" ")) };
            rows.push(Row::new([
                Cell::from(format!("  └ {}", g.addon)),
                Cell::from(format!("{} · {} · {}{origins}", g.key_prefix, g.status, g.rate)),
            ]).style(style));
        }
    }
    let table = Table::new(rows, [Constraint::Length(20), Constraint::Min(20)]).header(Row::new(["APPLICATION / ADDON", "KEY · STATUS · RATE LIMIT · ORIGINS"]).style(Style::new().add_modifier(Modifier::BOLD))).block(block);
    f.render_widget(table, area);
}

// ---- overlays -----------------------------------------------------------------------

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

const HELP_LEFT: &[(&str, &str)] = &[
    ("", "Anywhere"),
    ("1-6 Tab", "switch view"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
    ("", "Services"),
    ("↑↓ jk PgUp/Dn", "select"),
    ("/", "filter (Esc clears)"),
    ("o / O", "sort column / reverse"),
    ("Enter d", "detail pane on/off"),
    ("l", "logs of the service"),
    ("s r", "start, restart"),
    ("x D", "stop, delete (confirm)"),
    ("= S", "scale (asks for N)"),
    ("n", "new from a template"),
];

const HELP_RIGHT: &[(&str, &str)] = &[
    ("", "Logs"),
    ("↑↓ PgUp/Dn g G", "scroll, top, bottom"),
    ("f", "follow on/off"),
    ("/ n N", "search, next, previous"),
    ("w t", "wrap, timestamps"),
    ("i", "cycle instances"),
    ("s c", "save to a file, clear"),
    ("", "Other views"),
    ("↑↓", "scroll / select"),
    ("i R", "install addon, reload"),
    ("Esc", "back to services"),
    ("", "Mouse"),
    ("click wheel", "tabs, rows; scroll"),
];

fn help_lines(t: Theme, items: &[(&'static str, &'static str)]) -> Vec<Line<'static>> {
    items
        .iter()
        .map(|(k, d)| {
            if k.is_empty() {
                Line::styled(*d, t.accent())
            } else {
                Line::from(vec![Span::styled(format!("{k:<15}"), t.key()), Span::raw(*d)])
            }
        })
        .collect()
}

fn draw_help(t: Theme, f: &mut Frame, area: Rect) {
    let r = centered(area, 78, 16);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(Line::styled(" Keys ", t.accent())).title_bottom(Line::styled(" Esc or ? closes ", t.dim()));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).spacing(1).areas(inner);
    f.render_widget(Paragraph::new(help_lines(t, HELP_LEFT)), a);
    f.render_widget(Paragraph::new(help_lines(t, HELP_RIGHT)), b);
}

fn draw_prompt(app: &App, t: Theme, f: &mut Frame, area: Rect, kind: &PromptKind, input: &str, error: Option<&str>) {
    let (title, label) = match kind {
        PromptKind::Scale { name, .. } => (format!(" Scale {name} "), "replicas (0–64): "),
        PromptKind::NewService { template } => (format!(" New service from {template} "), "name: "),
        PromptKind::Install { addon } => (format!(" Install {addon} "), "instance name: "),
        PromptKind::SaveLogs => (format!(" Save {} log line(s) ", app.logs.lines.len()), "file: "),
    };
    let r = centered(area, 64, 6);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(Line::styled(title, t.accent()));
    let lines = vec![
        Line::from(vec![Span::styled(label, t.key()), Span::raw(input.to_string()), Span::raw("█")]),
        match error {
            Some(e) => Line::styled(e.to_string(), t.bad()),
            None => Line::raw(""),
        },
        Line::styled("Enter confirm · Esc cancel · Ctrl-U clear", t.dim()),
    ];
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), r);
}

fn draw_confirm(t: Theme, f: &mut Frame, area: Rect, c: &Confirm) {
    let (q, what) = match c {
        Confirm::Op { name, op: Op::Delete, .. } => (format!("Delete {name}?"), "Its containers are removed and its ports freed."),
        Confirm::Op { name, op: Op::Stop, .. } => (format!("Stop {name}?"), "Its instances stop; start it again with s."),
        Confirm::Op { name, op, .. } => (format!("{} {name}?", op.verb()), ""),
        Confirm::ScaleZero { name, .. } => (format!("Scale {name} to 0?"), "Every instance stops and its port is freed."),
    };
    let r = centered(area, 60, 6);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(Line::styled(" Confirm ", t.bad()));
    let lines = vec![
        Line::styled(q, Style::new().add_modifier(Modifier::BOLD)),
        Line::raw(what),
        Line::from(vec![Span::styled("y", t.key()), Span::raw(" yes   "), Span::styled("n", t.key()), Span::raw(" no")]),
    ];
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), r);
}

fn draw_templates(app: &App, t: Theme, f: &mut Frame, area: Rect, index: usize) {
    let r = centered(area, 70, 10);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(Line::styled(" New service from a template ", t.accent())).title_bottom(Line::styled(" ↑↓ choose · Enter next · Esc cancel ", t.dim()));
    if draw_avail_message(t, f, r, block.clone(), &app.templates, "Templates", "/api/plugin-microservice/templates") {
        return;
    }
    let Avail::Ready(list) = &app.templates else { return };
    let rows = list.iter().map(|tp| Row::new([tp.id.clone(), tp.description.clone()]));
    let table = Table::new(rows, [Constraint::Length(18), Constraint::Min(10)])
        .block(block)
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::new().with_selected(Some(index));
    f.render_stateful_widget(table, r, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_drop_by_priority() {
        let names = |w| visible_cols(w).into_iter().map(|i| COLS[i].title).collect::<Vec<_>>();
        assert_eq!(names(200).len(), 11);
        assert_eq!(names(78), ["NAME", "PHASE", "HEALTH", "REPL", "PORTS", "CPU", "MEM", "RST", "UP"]);
        assert_eq!(names(20), ["NAME"]);
    }

    #[test]
    fn tabs_are_hit_where_drawn() {
        let first = BRAND.chars().count() as u16;
        assert_eq!(tab_at(first), Some(View::Services));
        assert_eq!(tab_at(first + tab_label(0, View::Services).chars().count() as u16), Some(View::Logs));
        assert_eq!(tab_at(0), None);
        assert_eq!(tab_at(200), None);
    }

    #[test]
    fn matching_and_wrapping() {
        assert_eq!(match_ranges("Error: ERROR error", "error"), vec![(0, 5), (7, 12), (13, 18)]);
        assert_eq!(match_ranges("é-Err", "err"), vec![(3, 6)]);
        assert_eq!(wrap_text("abcdef", 4), vec!["abcd", "ef"]);
        assert_eq!(wrap_text("数据数据", 5), vec!["数据", "数据"]);
        assert_eq!(wrap_text("", 5), vec![""]);
    }
}
