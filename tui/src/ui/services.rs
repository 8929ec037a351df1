//! The services view: the table (columns dropped by priority when the terminal is narrow,
//! only the rows that fit built) and the detail pane of the selected service with its
//! metrics sparklines.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;

use super::Theme;
use crate::app::layout::services_areas;
use crate::app::{App, Conn, SortKey};
use crate::model::{self, Service};

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

pub(super) fn draw_services(app: &App, t: Theme, f: &mut Frame) {
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
    let widths: Vec<Constraint> =
        cols.iter().map(|&i| if i == 0 { Constraint::Min(COLS[0].width) } else { Constraint::Length(COLS[i].width) }).collect();
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
        let mut state =
            TableState::new().with_selected(app.selected_row().and_then(|r| r.checked_sub(offset)).filter(|r| *r < visible.len()));
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
    let block = Block::bordered()
        .title(Line::from(vec![Span::styled(format!(" {} ", s.name), t.accent()), Span::styled(format!("{} ", s.id), t.dim())]));
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
        let up =
            i.started_at.filter(|_| i.state == "running").map(|st| format!(" up {}", model::duration(app.now - st))).unwrap_or_default();
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

    /// Wide names (CJK, emoji) take two terminal columns each: the columns after them
    /// still start where they do on a plain row, and nothing is drawn past the border.
    #[test]
    fn wide_names_keep_the_columns_aligned() {
        use crate::app::{Event, Options, Update};
        use ratatui::backend::TestBackend;
        use ratatui::Terminal;
        let mut app = App::new(Options { socket: "/tmp/x.sock".into(), color: false, ports: None });
        let names = ["plain-name", "商店-api", "🚀rocket", "数据库服务很长的名字啊", "cafe\u{301}", "테스트 서비스", "템플릿 서비스"];
        let services =
            names.iter().enumerate().map(|(i, n)| crate::app::tests::svc(&i.to_string(), n, "healthy", &[8000 + i as u16])).collect();
        app.handle(Event::Daemon(Update::Services(services)));
        let mut term = Terminal::new(TestBackend::new(120, 30)).unwrap();
        term.draw(|f| super::super::draw(&app, f)).unwrap();
        let buf = term.backend().buffer().clone();
        // The terminal column where the PHASE cell ("Started") starts on each service's row
        // (a wide character fills two cells, the second one empty).
        let started: Vec<&str> = "Started".split("").filter(|c| !c.is_empty()).collect();
        let mut starts = Vec::new();
        for y in 0..buf.area.height {
            let row: Vec<&str> = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
            if !row.windows(3).any(|w| w == ["1", "/", "1"]) {
                continue;
            }
            if let Some(x) = row.windows(started.len()).position(|w| w == started.as_slice()) {
                starts.push(x);
            }
        }
        assert_eq!(starts.len(), names.len(), "{buf:?}");
        assert!(starts.iter().all(|&x| x == starts[0]), "PHASE starts at {starts:?}\n{buf:?}");
    }
}
