//! Man pages (clap_mangen) and shell completions (clap_complete) for the binaries, written
//! by their hidden `generate-man DIR` subcommands and `completions SHELL`, so the packages
//! ship pages that always match the flags.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::aot::Shell;

/// Writes `<name>.<section>` and one page per visible subcommand (`<name>-<sub>.<section>`,
/// recursively) into `dir`. Returns the files written.
pub fn generate_man(cmd: clap::Command, dir: &Path, section: &str) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    write_pages(cmd, dir, section, &mut out)?;
    Ok(out)
}

fn write_pages(cmd: clap::Command, dir: &Path, section: &str, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sub, dir, section, out)?;
    }
    let man = clap_mangen::Man::new(cmd).section(section).manual("addond manual").source(format!("addond {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    std::fs::write(&path, buf)?;
    out.push(path);
    Ok(())
}

/// Writes the completion script for `shell` to `w`.
pub fn completions(mut cmd: clap::Command, shell: Shell, w: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::aot::generate(shell, &mut cmd, name, w);
}
