//! The log view: the lines of the open stream from the scroll position (or the bottom
//! when following), wrapped to the width if asked, with the search's matches highlighted.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthChar;

use super::Theme;
use crate::app::layout::log_bottom_top;
use crate::app::App;

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

pub(super) fn draw_logs(app: &App, t: Theme, f: &mut Frame, area: Rect) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_and_wrapping() {
        assert_eq!(match_ranges("Error: ERROR error", "error"), vec![(0, 5), (7, 12), (13, 18)]);
        assert_eq!(match_ranges("é-Err", "err"), vec![(3, 6)]);
        assert_eq!(wrap_text("abcdef", 4), vec!["abcd", "ef"]);
        assert_eq!(wrap_text("数据数据", 5), vec!["数据", "数据"]);
        assert_eq!(wrap_text("", 5), vec![""]);
    }
}
