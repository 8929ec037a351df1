//! What is drawn over a view: the key help, the prompts (scale, name, file), the
//! confirmation of a stop or delete, and the template picker.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::{draw_avail_message, Theme};
use crate::app::{App, Avail, Confirm, Op, PromptKind};

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

/// The keys, shown by `?` and listed in addond-tui(1); an empty key starts a group.
pub(super) const HELP_LEFT: &[(&str, &str)] = &[
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

pub(super) const HELP_RIGHT: &[(&str, &str)] = &[
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

pub(super) fn draw_help(t: Theme, f: &mut Frame, area: Rect) {
    let r = centered(area, 78, 16);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(Line::styled(" Keys ", t.accent())).title_bottom(Line::styled(" Esc or ? closes ", t.dim()));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).spacing(1).areas(inner);
    f.render_widget(Paragraph::new(help_lines(t, HELP_LEFT)), a);
    f.render_widget(Paragraph::new(help_lines(t, HELP_RIGHT)), b);
}

pub(super) fn draw_prompt(app: &App, t: Theme, f: &mut Frame, area: Rect, kind: &PromptKind, input: &str, error: Option<&str>) {
    let (title, label) = match kind {
        PromptKind::Scale { name, .. } => (format!(" Scale {name} "), "replicas (0–64): "),
        PromptKind::NewService { template } => (format!(" New service from {template} "), "name: "),
        PromptKind::Install { addon } => (format!(" Install {addon} "), "instance name: "),
        PromptKind::Promote { base } => (format!(" Promote {base} "), "from to: "),
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

pub(super) fn draw_confirm(t: Theme, f: &mut Frame, area: Rect, c: &Confirm) {
    let (q, what) = match c {
        Confirm::Op { name, op: Op::Delete, .. } => (format!("Delete {name}?"), "Its containers are removed and its ports freed."),
        Confirm::Op { name, op: Op::Stop, .. } => (format!("Stop {name}?"), "Its instances stop; start it again with s."),
        Confirm::Op { name, op, .. } => (format!("{} {name}?", op.verb()), ""),
        Confirm::ScaleZero { name, .. } => (format!("Scale {name} to 0?"), "Every instance stops and its port is freed."),
        Confirm::Promote { base, from, to } => (
            format!("Promote {base} from {from} to {to}?"),
            "The exact images and version of the first replace the second's, health-gated; a failure rolls back.",
        ),
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

pub(super) fn draw_templates(app: &App, t: Theme, f: &mut Frame, area: Rect, index: usize) {
    let r = centered(area, 70, 10);
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .title(Line::styled(" New service from a template ", t.accent()))
        .title_bottom(Line::styled(" ↑↓ choose · Enter next · Esc cancel ", t.dim()));
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
