//! The list views: the event log, the addon catalogue and the applications with their
//! grants (the last two only where the daemon has those APIs).

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::{draw_avail_message, Theme};
use crate::app::{App, Avail};
use crate::model;

pub(super) fn draw_events(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let block = Block::bordered()
        .title(Line::from(vec![
            Span::styled(" Events ", t.accent()),
            Span::styled("service changes and the daemon's event log, live ", t.dim()),
        ]))
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
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{} ", model::clock(e.at)), t.dim()),
                Span::styled(e.text.clone(), if e.ok { Style::new() } else { t.bad() }),
            ])
        })
        .collect();
    let body = if lines.is_empty() { vec![Line::styled("No events yet.", t.dim())] } else { lines };
    f.render_widget(Paragraph::new(body).block(block), area);
}

pub(super) fn draw_addons(app: &App, t: Theme, f: &mut Frame, area: Rect) {
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
    let header = Row::new(["NAME", "VERSION", "RUNTIME", "CATEGORY", "INSTALLED AS", "DESCRIPTION"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = list.iter().map(|a| {
        let inst = if a.installed.is_empty() { "-".to_string() } else { a.installed.join(",") };
        Row::new([a.name.clone(), a.version.clone(), a.runtime.clone(), a.category.clone(), inst, a.description.clone()])
    });
    let widths = [
        Constraint::Length(18),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(13),
        Constraint::Length(16),
        Constraint::Min(10),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block.title_bottom(Line::styled(" i install · p promote · R reload ", t.dim())))
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::new().with_selected(Some(app.addon_selected));
    let selected = list.get(app.addon_selected).filter(|a| !a.instances.is_empty());
    let (top, bottom) = match selected {
        // The list keeps at least 5 rows; the deployments of the selected addon get the rest.
        Some(_) if area.height >= 14 => {
            let [top, bottom] = ratatui::layout::Layout::vertical([Constraint::Min(5), Constraint::Length(area.height / 2)]).areas(area);
            (top, Some(bottom))
        }
        _ => (area, None),
    };
    f.render_stateful_widget(table, top, &mut state);
    if let (Some(addon), Some(bottom)) = (selected, bottom) {
        draw_deployments(addon, t, f, bottom);
    }
}

/// The selected addon's installed instances: version, phase, a deployment under way, and
/// the newest deployments with their outcome (a rolled-back one in the warning colour, with
/// its reason).
fn draw_deployments(addon: &model::Addon, t: Theme, f: &mut Frame, area: Rect) {
    let block = Block::bordered().title(Line::styled(format!(" Deployments of {} ", addon.name), t.accent()));
    let mut lines = Vec::new();
    // Environments of one installation side by side: grouped by base name.
    let mut instances: Vec<&model::InstalledAddon> = addon.instances.iter().collect();
    instances.sort_by(|a, b| a.base.cmp(&b.base));
    for i in instances {
        let mut head = vec![
            Span::styled(i.instance.clone(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("  {}  {}", i.version, i.phase)),
            Span::styled(format!("  [{}]", i.environment), t.accent()),
            Span::styled(format!(" {}", i.health), t.dim()),
        ];
        if i.deploying {
            head.push(Span::styled("  deploying…", t.accent()));
        }
        lines.push(Line::from(head));
        for d in i.history.iter().take(area.height.saturating_sub(2) as usize) {
            let from = d.from_version.as_deref().map(|f| format!("{f} → ")).unwrap_or_default();
            let style = match d.outcome.as_str() {
                "succeeded" => Style::new(),
                "running" => t.accent(),
                _ => t.bad(),
            };
            let spans = vec![
                Span::styled(format!("  #{:<4} ", d.id), t.dim()),
                Span::raw(format!("{:<9} {from}{}  ", d.kind, d.to_version)),
                Span::styled(d.outcome.clone(), style),
                Span::styled(format!("  {} {}", d.started_at, d.who), t.dim()),
            ];
            lines.push(Line::from(spans));
            if let Some(r) = &d.reason {
                lines.push(Line::styled(format!("        ↳ {r}"), t.bad()));
            }
        }
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), area);
}

pub(super) fn draw_grants(app: &App, t: Theme, f: &mut Frame, area: Rect) {
    let block = Block::bordered()
        .title(Line::styled(" Applications and grants ", t.accent()))
        .title_bottom(Line::styled(" R reload · manage with addonctl apps / grants ", t.dim()));
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
        rows.push(Row::new([
            Cell::from(format!("{}{org}", a.name)).style(Style::new().add_modifier(Modifier::BOLD)),
            Cell::from(format!("{} grant(s)", a.grants.len())).style(t.dim()),
        ]));
        for g in &a.grants {
            let style = if g.status == "active" { Style::new() } else { t.dim() };
            let origins = if g.origins.is_empty() { String::new() } else { format!(" · {}", g.origins.join(" ")) };
            rows.push(
                Row::new([
                    Cell::from(format!("  └ {}", g.addon)),
                    Cell::from(format!("{} · {} · {}{origins}", g.key_prefix, g.status, g.rate)),
                ])
                .style(style),
            );
        }
    }
    let table = Table::new(rows, [Constraint::Length(20), Constraint::Min(20)])
        .header(Row::new(["APPLICATION / ADDON", "KEY · STATUS · RATE LIMIT · ORIGINS"]).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(block);
    f.render_widget(table, area);
}
