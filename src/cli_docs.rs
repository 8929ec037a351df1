//! Man pages (clap_mangen) and shell completions (clap_complete) for the binaries, written
//! by their hidden `generate-man DIR` subcommands and `completions SHELL`, so the packages
//! ship pages that always match the flags. Every page ends with the sections a man page
//! is expected to have (FILES, ENVIRONMENT, EXIT STATUS, SIGNALS, SEE ALSO), given by each
//! binary as a [`PageExtras`]; the config file's page, `addond.toml(5)`, is made from
//! `config.example.toml` itself, so it lists every key with the comment above it.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::aot::Shell;

/// The config file documented key by key (the one the packages install as
/// /usr/share/doc/addond/config.example.toml).
const CONFIG_EXAMPLE: &str = include_str!("../config.example.toml");

/// The sections a binary's pages end with, besides what clap knows. Each entry is
/// `(term, text)`; the text is plain (escaped here).
#[derive(Debug, Clone, Default)]
pub struct PageExtras {
    /// Sections before the standard ones (the dashboard's KEYS): `(title, entries)`.
    pub sections: Vec<(String, Vec<(String, String)>)>,
    /// FILES: paths the program reads or writes.
    pub files: Vec<(String, String)>,
    /// ENVIRONMENT: variables it reads.
    pub environment: Vec<(String, String)>,
    /// EXIT STATUS: codes and their meaning.
    pub exit_status: Vec<(String, String)>,
    /// SIGNALS: what each signal does.
    pub signals: Vec<(String, String)>,
    /// SEE ALSO: other pages, like `addonctl(1)`.
    pub see_also: Vec<String>,
}

impl PageExtras {
    /// Shorthand for `(term, text)` lists from string literals.
    pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn render(&self, own: &str, parent: Option<&str>) -> String {
        let mut out = String::new();
        for (title, entries) in &self.sections {
            section(&mut out, title, entries);
        }
        section(&mut out, "FILES", &self.files);
        section(&mut out, "ENVIRONMENT", &self.environment);
        section(&mut out, "EXIT STATUS", &self.exit_status);
        section(&mut out, "SIGNALS", &self.signals);
        // A subcommand's page points back to its command's page first.
        let see: Vec<&str> = parent.into_iter().chain(self.see_also.iter().map(String::as_str)).filter(|p| *p != own).collect();
        out.push_str(".SH \"SEE ALSO\"\n");
        out.push_str(&escape(&see.join(", ")));
        out.push('\n');
        out
    }
}

/// Roff text: backslashes and hyphens escaped, and a line that would start with a control
/// character kept as text.
fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            // groff reads its input as Latin-1 unless told: name other characters.
            c if !c.is_ascii() => s.push_str(&format!("\\[u{:04X}]", c as u32)),
            c => s.push(c),
        }
    }
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn section(out: &mut String, title: &str, entries: &[(String, String)]) {
    if entries.is_empty() {
        return;
    }
    out.push_str(&format!(".SH \"{title}\"\n"));
    for (term, text) in entries {
        if term.is_empty() {
            out.push_str(&format!(".PP\n{}\n", escape(text)));
        } else {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(term), escape(text)));
        }
    }
}

/// Writes `<name>.<section>` and one page per visible subcommand (`<name>-<sub>.<section>`,
/// recursively) into `dir`, each ending with `extras`. Returns the files written.
pub fn generate_man(cmd: clap::Command, dir: &Path, section: &str, extras: &PageExtras) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    write_pages(cmd, dir, section, extras, None, &mut out)?;
    Ok(out)
}

fn write_pages(
    cmd: clap::Command,
    dir: &Path,
    section: &str,
    extras: &PageExtras,
    parent: Option<&str>,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let man =
        clap_mangen::Man::new(cmd.clone()).section(section).manual("addond manual").source(format!("addond {}", env!("CARGO_PKG_VERSION")));
    let own = format!("{}({section})", man.get_filename().trim_end_matches(&format!(".{section}")));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sub, dir, section, extras, Some(&own), out)?;
    }
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    buf.extend_from_slice(extras.render(&own, parent).as_bytes());
    std::fs::write(&path, buf)?;
    out.push(path);
    Ok(())
}

/// `addond.toml(5)`: the config file, one subsection per `[section]` of the example file and
/// one entry per key, with its default and the comment written above it there.
pub fn config_page() -> String {
    let mut out = format!(
        ".TH ADDOND.TOML 5 \"\" \"addond {}\" \"addond manual\"\n.SH NAME\naddond.toml \\- configuration file of addond\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(".SH SYNOPSIS\n/etc/addond/config.toml\n.SH DESCRIPTION\n");
    out.push_str(&escape(
        "addond reads one TOML file: /etc/addond/config.toml (the packages install it), \
         ./.addond/config.toml with --dev, or the file named by --config or $ADDOND_CONFIG_FILE. \
         Every key is optional; a missing key takes the default shown here. \
         An unknown key or section is an error naming it. \
         ADDOND_<SECTION>_<KEY>=value in the environment overrides any key (read as a TOML \
         literal when it parses as one, else as a string). `addond check-config` validates the \
         file, `addond print-config` prints the effective configuration. \
         SIGHUP (`systemctl reload addond`) applies the keys marked live in addond(8); a change \
         to any other key needs a restart.",
    ));
    out.push('\n');
    let mut comment: Vec<String> = Vec::new();
    for line in CONFIG_EXAMPLE.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            comment.push(c.trim().to_string());
        } else if t.starts_with('[') && t.ends_with(']') {
            out.push_str(&format!(".SS \"{}\"\n", escape(t)));
            if !comment.is_empty() {
                out.push_str(&format!(".PP\n{}\n", escape(&comment.join(" "))));
            }
            comment.clear();
        } else if let Some((k, v)) = t.split_once('=') {
            out.push_str(&format!(".TP\n\\fB{}\\fR = {}\n{}\n", escape(k.trim()), escape(v.trim()), escape(&comment.join(" "))));
            comment.clear();
        } else if t.is_empty() {
            // A comment belongs to the key or section right below it (the file's header and
            // paragraphs between keys belong to none).
            comment.clear();
        }
    }
    out.push_str(".SH FILES\n.TP\n/etc/addond/config.toml\nthe configuration (mode 0640, group addond: it may hold secrets)\n");
    out.push_str(".TP\n/usr/share/doc/addond/config.example.toml\nthe same keys with their defaults\n");
    out.push_str(".SH \"SEE ALSO\"\naddond(8), addonctl(1), addond\\-tui(1)\n");
    out
}

/// Writes the completion script for `shell` to `w`.
pub fn completions(mut cmd: clap::Command, shell: Shell, w: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::aot::generate(shell, &mut cmd, name, w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_page_lists_every_key_of_the_example() {
        let page = config_page();
        let mut n = 0;
        for line in CONFIG_EXAMPLE.lines().map(str::trim).filter(|l| !l.starts_with('#') && l.contains('=')) {
            let key = line.split('=').next().unwrap_or_default().trim();
            assert!(page.contains(&format!("\\fB{}\\fR", escape(key))), "{key} missing");
            n += 1;
        }
        assert!(n > 30, "{n} keys");
        assert!(page.contains(".SS \"[templates]\"") && page.contains("image_archive"), "{page}");
    }

    #[test]
    fn roff_text_is_escaped() {
        assert_eq!(escape(".hidden -x \\y"), "\\&.hidden \\-x \\ey");
        assert_eq!(escape("↑↓ é"), "\\[u2191]\\[u2193] \\[u00E9]");
    }
}
