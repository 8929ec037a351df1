//! The port map: every port of the range as ours (by health), held by another program, or
//! free, then the list of ours and of those held.

use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::Theme;
use crate::app::{App, Conn, RangeSource};

pub(super) fn draw_ports(app: &App, t: Theme, f: &mut Frame, area: Rect) {
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
    let block = Block::bordered()
        .title(Line::from(vec![Span::styled(format!(" Port map {a}–{b} "), t.accent()), Span::styled(format!("({src}) "), t.dim())]));
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
