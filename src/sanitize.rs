//! Text that addons control (service names, log lines, errors, descriptions) reaches a
//! terminal only through these functions, in `addonctl` and in `addond-tui` alike. They
//! remove every control character and every escape sequence (CSI, OSC, DCS/SOS/PM/APC
//! strings, two- and three-byte ESC sequences and their 8-bit C1 forms), and the Unicode
//! bidi controls that could reorder what is shown, so a container cannot move the cursor,
//! clear the screen, change the window title, write to the clipboard (OSC 52) or fake other
//! rows of a table or the dashboard.

/// One line of a table cell or label: escape sequences removed, tabs and line breaks turned
/// into single spaces, other control characters dropped, surrounding blanks trimmed.
pub fn sanitize(s: &str) -> String {
    clean(s, Whitespace::Collapse).trim().to_string()
}

/// One log line: like [`sanitize`], but tabs are expanded to the next multiple of 8
/// columns and leading blanks are kept (indentation matters in logs). A line break inside
/// the text (a lone `\r` from a progress bar) becomes a space.
pub fn sanitize_log_line(s: &str) -> String {
    let s = s.strip_suffix('\r').unwrap_or(s);
    clean(s, Whitespace::ExpandTabs).trim_end().to_string()
}

/// One line for a plain terminal stream (`addonctl logs`, error messages): like
/// [`sanitize_log_line`], but tabs are kept as they are, for the terminal or a pipe to lay out.
pub fn sanitize_line(s: &str) -> String {
    let s = s.strip_suffix('\r').unwrap_or(s);
    clean(s, Whitespace::KeepTabs).trim_end().to_string()
}

#[derive(Clone, Copy, PartialEq)]
enum Whitespace {
    Collapse,
    ExpandTabs,
    KeepTabs,
}

fn clean(s: &str, ws: Whitespace) -> String {
    let mut out = String::with_capacity(s.len());
    let mut col = 0usize;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\u{1b}' => skip_escape(&mut it),
            // 8-bit forms: CSI, then the string introducers OSC, DCS, SOS, PM, APC.
            '\u{9b}' => skip_csi(&mut it),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut it),
            '\t' if ws == Whitespace::ExpandTabs => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            '\t' if ws == Whitespace::KeepTabs => {
                out.push('\t');
                col += 8 - col % 8;
            }
            '\t' | '\n' | '\r' => {
                if !out.ends_with(' ') {
                    out.push(' ');
                    col += 1;
                }
            }
            c if c.is_control() => {}
            // Bidi embeddings, overrides, isolates and marks: they reorder the rest of the row.
            '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After ESC: CSI (`[`), a string (`]`, `P`, `X`, `^`, `_`), or an ESC sequence of
/// intermediate bytes (0x20–0x2F) and one final byte (`ESC ( B`, `ESC 7`, `ESC c`, …).
fn skip_escape(it: &mut Chars<'_>) {
    match it.next() {
        Some('[') => skip_csi(it),
        Some(']' | 'P' | 'X' | '^' | '_') => skip_string(it),
        Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
            while let Some(&n) = it.peek() {
                it.next();
                if !('\u{20}'..='\u{2f}').contains(&n) {
                    break;
                }
            }
        }
        _ => {}
    }
}

/// CSI: parameter and intermediate bytes up to a final byte in `@`..`~`. A control
/// character inside ends it too (terminals abort the sequence there).
fn skip_csi(it: &mut Chars<'_>) {
    while let Some(&c) = it.peek() {
        if c.is_control() {
            return;
        }
        it.next();
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

/// OSC/DCS/SOS/PM/APC: everything up to BEL, ST (`ESC \`) or the 8-bit ST.
fn skip_string(it: &mut Chars<'_>) {
    while let Some(c) = it.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if it.peek() == Some(&'\\') {
                    it.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes() {
        assert_eq!(sanitize("payments-api"), "payments-api");
        assert_eq!(sanitize("  café ☕ 数据 "), "café ☕ 数据");
        assert_eq!(sanitize_log_line("  indented"), "  indented");
    }

    #[test]
    fn csi_sequences_are_removed() {
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(sanitize("a\x1b[2J\x1b[Hb"), "ab");
        assert_eq!(sanitize("x\x1b[38;2;255;0;0my"), "xy");
        assert_eq!(sanitize("x\x1b[?1049hy"), "xy");
        assert_eq!(sanitize("x\u{9b}31my"), "xy");
        // Cursor movement that would overwrite other rows.
        assert_eq!(sanitize("ok\x1b[1A\x1b[2Kfake row"), "okfake row");
    }

    #[test]
    fn strings_are_removed_with_their_payload() {
        // Window title, with BEL and with ST.
        assert_eq!(sanitize("a\x1b]0;pwned\x07b"), "ab");
        assert_eq!(sanitize("a\x1b]2;pwned\x1b\\b"), "ab");
        // OSC 52 clipboard write.
        assert_eq!(sanitize("a\x1b]52;c;ZWNobyBoaQ==\x07b"), "ab");
        // Hyperlink.
        assert_eq!(sanitize("\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\"), "click");
        // DCS and APC, 8-bit OSC.
        assert_eq!(sanitize("a\x1bPq#0;2;0;0;0\x1b\\b"), "ab");
        assert_eq!(sanitize("a\x1b_payload\x1b\\b"), "ab");
        assert_eq!(sanitize("a\u{9d}0;t\u{9c}b"), "ab");
        // Unterminated: the rest is dropped, nothing leaks.
        assert_eq!(sanitize("a\x1b]0;never ends"), "a");
    }

    #[test]
    fn short_escape_sequences_are_removed() {
        assert_eq!(sanitize("a\x1b(Bb"), "ab");
        assert_eq!(sanitize("a\x1b7b\x1b8"), "ab");
        assert_eq!(sanitize("a\x1bcb"), "ab");
        assert_eq!(sanitize("a\x1b"), "a");
    }

    #[test]
    fn control_characters_and_bidi_are_removed() {
        assert_eq!(sanitize("a\x07b\x08c\x00d\x7fe"), "abcde");
        assert_eq!(sanitize("line1\nline2\r\nline3"), "line1 line2 line3");
        assert_eq!(sanitize("a\tb"), "a b");
        assert_eq!(sanitize("evil\u{202e}txt.exe"), "eviltxt.exe");
        assert_eq!(sanitize("a\u{2066}b\u{2069}"), "ab");
        assert_eq!(sanitize("\u{85}x"), "x");
    }

    #[test]
    fn log_lines_expand_tabs_and_drop_carriage_returns() {
        assert_eq!(sanitize_log_line("a\tb"), "a       b");
        assert_eq!(sanitize_log_line("\tx"), "        x");
        assert_eq!(sanitize_log_line("done\r"), "done");
        assert_eq!(sanitize_log_line("10%\r50%\r100%"), "10% 50% 100%");
        assert_eq!(sanitize_log_line("\x1b[32mINFO\x1b[0m started\x1b[K"), "INFO started");
    }

    #[test]
    fn plain_lines_keep_tabs() {
        assert_eq!(sanitize_line("tab\tkept, ünïcödé kept"), "tab\tkept, ünïcödé kept");
        assert_eq!(sanitize_line("bell\x07 back\x08space\r"), "bell backspace");
        assert_eq!(sanitize_line("  indented\x1b[1m"), "  indented");
    }

    #[test]
    fn output_never_contains_control_characters() {
        // Every byte value, alone and after ESC and CSI.
        for b in 0u32..0x250 {
            let Some(c) = char::from_u32(b) else { continue };
            for input in [format!("{c}"), format!("\x1b{c}x"), format!("\x1b[{c}x"), format!("\x1b]{c}x")] {
                for out in [sanitize(&input), sanitize_log_line(&input)] {
                    assert!(!out.chars().any(char::is_control), "{input:?} -> {out:?}");
                }
                let out = sanitize_line(&input);
                assert!(!out.chars().any(|c| c.is_control() && c != '\t'), "{input:?} -> {out:?}");
            }
        }
    }
}
