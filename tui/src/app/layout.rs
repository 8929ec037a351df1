//! Where things are on the screen, as a function of the state: the frame's areas, the page
//! sizes scrolling moves by, and the hit tests for the mouse. The input side and the
//! drawing (`crate::ui`) both take their geometry from here, so they always agree.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Block;
use unicode_width::UnicodeWidthChar;

use super::{App, LogLine, View};

/// The whole terminal, as the last resize reported it.
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

/// The log view's text area (inside its border).
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

/// Rows of the event log that fit (border excluded).
pub fn events_page(app: &App) -> usize {
    let (_, body, _) = frame_areas(screen(app));
    body.height.saturating_sub(2) as usize
}

/// What the tab bar starts with, before the first tab.
pub const BRAND: &str = " addond ";

/// The text of the `i`-th tab (` 1:Services `), as drawn and as hit-tested.
pub fn tab_label(i: usize, v: View) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_are_hit_where_drawn() {
        let first = BRAND.chars().count() as u16;
        assert_eq!(tab_at(first), Some(View::Services));
        assert_eq!(tab_at(first + tab_label(0, View::Services).chars().count() as u16), Some(View::Logs));
        assert_eq!(tab_at(0), None);
        assert_eq!(tab_at(200), None);
    }
}
