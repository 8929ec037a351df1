//! Drawing: [`draw`] renders an [`App`] into a frame and changes nothing. The geometry
//! (areas, page sizes, tab positions) comes from `app::layout`, shared with the input side;
//! each big view has its own file: [`services`] (the table, the detail pane and its
//! sparklines), [`logs`], [`ports`], [`lists`] (events, addons, grants) and [`overlays`]
//! (help, prompts, confirmations, the template picker).

mod lists;
mod logs;
mod overlays;
mod ports;
mod services;

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::layout::{frame_areas, tab_label, BRAND};
use crate::app::{App, Avail, Conn, DockerState, Mode, View};
use lists::{draw_addons, draw_events, draw_grants};
use logs::draw_logs;
use overlays::{draw_confirm, draw_help, draw_prompt, draw_templates};
use ports::draw_ports;
use services::draw_services;

/// Smallest terminal the dashboard draws into.
pub const MIN_SIZE: (u16, u16) = (60, 12);

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

/// Every key binding as `(keys, what it does)`, in the order the `?` overlay shows them; an
/// entry with no keys names the group below it. The man page lists the same table.
pub fn key_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    overlays::HELP_LEFT.iter().chain(overlays::HELP_RIGHT).copied()
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
        Conn::Up { docker: Some(d @ (DockerState::Unresponsive | DockerState::Unreachable)), .. } => {
            Span::styled(format!("● connected · docker {} ", d.as_str()), t.warn())
        }
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
        View::Addons => "↑↓ select  i install  p promote  R reload  Esc back  ? help  q quit",
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

fn unavailable(what: &str, route: &str) -> String {
    format!("{what}: not available in this daemon version (it has no {route} API).")
}

/// The message a view shows instead of its data while that is loading, missing from this
/// daemon, or failed; `false` when the data is ready and the view should draw it.
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
