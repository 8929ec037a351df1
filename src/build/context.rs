//! Build contexts: reading one that arrived (tar or tar.gz) and writing one from a
//! directory. Reading checks every entry and writes a fresh tar of only what passed, so
//! Docker never sees an entry addond did not check: no absolute paths, no `..`, no device
//! files or fifos, no entry twice, symlinks and hard links only to paths inside the
//! context, and at most `build.max_context_bytes` once unpacked (a small tar.gz cannot
//! expand past it). Writing (for `addonctl addons build` and plugin directories) skips
//! `.git`, a top-level `target` and what `.dockerignore` lists, and refuses symlinks that
//! leave the directory. Pure: no Docker, no daemon state; unit-tested here.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// Why a context was refused; `entry` names the path at fault where there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContextError {
    /// Larger than the limit, as sent or once unpacked.
    #[error(
        "the build context is larger than {limit} bytes {when} (build.max_context_bytes); leave build output and dependencies out of it"
    )]
    TooLarge { limit: u64, when: &'static str },
    /// An entry that cannot be allowed into a build.
    #[error("build context entry `{entry}`: {reason}")]
    Entry { entry: String, reason: String },
    /// The archive itself cannot be read.
    #[error("the build context is not a readable tar archive ({0}); send a tar or a tar.gz")]
    Unreadable(String),
}

fn entry_err(entry: &str, reason: impl Into<String>) -> ContextError {
    ContextError::Entry { entry: entry.to_string(), reason: reason.into() }
}

/// A context that passed every check.
#[derive(Debug)]
pub struct Checked {
    /// The tar Docker gets: the accepted entries, rewritten (owner root, no set-id bits).
    pub tar: Vec<u8>,
    /// Regular files by their normalised path, with their size.
    pub files: BTreeMap<String, u64>,
    /// The addon manifest at the context's root: its file name and text.
    pub manifest: Option<(String, String)>,
}

/// The manifest file names looked for at the root of a context.
pub const MANIFEST_FILES: [&str; 2] = ["addon.toml", "addon.json"];

/// A path inside the context, as a list of components; `None` for the root itself.
/// Absolute paths and `..` are refused, `.` and empty components dropped.
pub fn normalize(raw: &str) -> Result<Option<String>, String> {
    if raw.starts_with('/') {
        return Err("an absolute path; every path must be relative to the context's root".into());
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("a path with `..`; every path must stay inside the context".into()),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Where a symlink at `link` pointing to `target` leads, following the context's other
/// symlinks as the kernel would; `Err` when it leads outside (or loops).
fn resolve(links: &HashMap<String, String>, link: &str, target: &str) -> Result<(), String> {
    fn walk(links: &HashMap<String, String>, mut at: Vec<String>, target: &str, depth: u32) -> Result<Vec<String>, String> {
        if depth > 40 {
            return Err("symlinks loop".into());
        }
        if target.starts_with('/') {
            return Err(format!("points to `{target}`, outside the context"));
        }
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if at.pop().is_none() {
                        return Err(format!("points outside the context (`{target}` climbs above its root)"));
                    }
                }
                name => {
                    at.push(name.to_string());
                    if let Some(t) = links.get(&at.join("/")) {
                        at.pop();
                        at = walk(links, at, t, depth + 1)?;
                    }
                }
            }
        }
        Ok(at)
    }
    let mut parent: Vec<String> = link.split('/').map(str::to_string).collect();
    parent.pop();
    walk(links, parent, target, 0).map(|_| ())
}

/// Reads a context as it arrived (`gzip` or not is told from its first bytes), checks it
/// and writes the tar Docker gets.
pub fn check(body: &[u8], limit: u64) -> Result<Checked, ContextError> {
    let unpacked;
    let tar_bytes: &[u8] = if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| ContextError::Unreadable(format!("gzip: {e}")))?;
        if out.len() as u64 > limit {
            return Err(ContextError::TooLarge { limit, when: "once unpacked" });
        }
        unpacked = out;
        &unpacked
    } else {
        if body.len() as u64 > limit {
            return Err(ContextError::TooLarge { limit, when: "as sent" });
        }
        body
    };
    if tar_bytes.is_empty() {
        return Err(ContextError::Unreadable("the body is empty".into()));
    }
    let mut archive = tar::Archive::new(tar_bytes);
    let entries = archive.entries().map_err(|e| ContextError::Unreadable(e.to_string()))?;
    let mut out = tar::Builder::new(Vec::new());
    out.mode(tar::HeaderMode::Deterministic);
    let mut files = BTreeMap::new();
    let mut dirs = std::collections::HashSet::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut manifest = None;
    let mut total = 0u64;
    for entry in entries {
        let mut e = entry.map_err(|e| ContextError::Unreadable(e.to_string()))?;
        let raw = String::from_utf8(e.path_bytes().into_owned()).map_err(|_| entry_err("?", "its name is not UTF-8"))?;
        let path = match normalize(&raw) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(why) => return Err(entry_err(&raw, why)),
        };
        let kind = e.header().entry_type();
        let seen = files.contains_key(&path) || links.contains_key(&path) || dirs.contains(&path);
        if seen && !(kind.is_dir() && dirs.contains(&path)) {
            return Err(entry_err(&raw, "appears twice in the archive; send each path once"));
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        let mtime = e.header().mtime().unwrap_or(0);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = e.size();
                total += size;
                if total > limit {
                    return Err(ContextError::TooLarge { limit, when: "once unpacked" });
                }
                let mut data = Vec::with_capacity(size as usize);
                e.read_to_end(&mut data).map_err(|err| entry_err(&raw, format!("cannot be read: {err}")))?;
                if MANIFEST_FILES.contains(&path.as_str()) {
                    let text = String::from_utf8(data.clone()).map_err(|_| entry_err(&raw, "the manifest is not UTF-8 text"))?;
                    if let Some((other, _)) = &manifest {
                        return Err(entry_err(&raw, format!("the context has both {other} and {path}; keep one manifest")));
                    }
                    manifest = Some((path.clone(), text));
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(size);
                out.append_data(&mut h, &path, data.as_slice()).map_err(|err| entry_err(&raw, err.to_string()))?;
                files.insert(path, size);
            }
            tar::EntryType::Directory => {
                if dirs.insert(path.clone()) {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(mode | 0o700);
                    h.set_size(0);
                    out.append_data(&mut h, &path, std::io::empty()).map_err(|err| entry_err(&raw, err.to_string()))?;
                }
            }
            tar::EntryType::Symlink => {
                let target = link_target(&e, &raw)?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                out.append_link(&mut h, &path, &target).map_err(|err| entry_err(&raw, err.to_string()))?;
                links.insert(path, target);
            }
            tar::EntryType::Link => {
                let target = link_target(&e, &raw)?;
                let target = match normalize(&target) {
                    Ok(Some(t)) if files.contains_key(&t) => t,
                    _ => {
                        return Err(entry_err(
                            &raw,
                            format!("a hard link to `{target}`, which is not a file earlier in the context; hard links may only name files inside it"),
                        ))
                    }
                };
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(mode);
                h.set_size(0);
                out.append_link(&mut h, &path, &target).map_err(|err| entry_err(&raw, err.to_string()))?;
                files.insert(path, 0);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(entry_err(&raw, "a device file; a build context holds only files, directories and symlinks"))
            }
            tar::EntryType::Fifo => return Err(entry_err(&raw, "a fifo; a build context holds only files, directories and symlinks")),
            other => {
                return Err(entry_err(
                    &raw,
                    format!("an entry of type {other:?}; a build context holds only files, directories and symlinks"),
                ))
            }
        }
    }
    for (link, target) in &links {
        resolve(&links, link, target).map_err(|why| entry_err(link, format!("a symlink that {why}")))?;
    }
    let tar = out.into_inner().map_err(|e| ContextError::Unreadable(e.to_string()))?;
    Ok(Checked { tar, files, manifest })
}

fn link_target<R: Read>(e: &tar::Entry<'_, R>, raw: &str) -> Result<String, ContextError> {
    let bytes = e.link_name_bytes().ok_or_else(|| entry_err(raw, "a link without a target"))?;
    String::from_utf8(bytes.into_owned()).map_err(|_| entry_err(raw, "its link target is not UTF-8"))
}

/// Whether a path (relative, `/`-separated) is left out of a context written from a
/// directory: `.git` anywhere, `target` at the top, and what `.dockerignore` lists.
pub struct Ignore {
    /// `.dockerignore`'s patterns (`*` and `?` within a component, `**` across them).
    patterns: Vec<String>,
}

impl Ignore {
    /// The rules of a directory: its `.dockerignore`, when it has one.
    pub fn of(dir: &Path) -> Ignore {
        let text = std::fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default();
        Ignore::from_text(&text)
    }

    pub fn from_text(text: &str) -> Ignore {
        let patterns = text
            .lines()
            .map(str::trim)
            // Negations (`!keep`) are not supported: such a line is not an exclusion.
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .map(|l| l.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        Ignore { patterns }
    }

    pub fn skips(&self, rel: &str) -> bool {
        if rel == "target" || rel.split('/').any(|c| c == ".git") {
            return true;
        }
        // A pattern naming a directory leaves out everything under it.
        let mut prefix = String::new();
        for (i, c) in rel.split('/').enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(c);
            if self.patterns.iter().any(|p| glob(p.as_bytes(), prefix.as_bytes())) {
                return true;
            }
        }
        false
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != b'/').any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// Writes a directory as a tar context: files, directories and symlinks (never followed),
/// leaving out what [`Ignore`] skips. A symlink that leads outside the directory, or a
/// file of another kind (socket, fifo, device), is refused with its path; so is a context
/// past `limit` bytes of file data.
pub fn pack_dir(dir: &Path, limit: u64) -> Result<Vec<u8>, ContextError> {
    let ignore = Ignore::of(dir);
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    let mut links = HashMap::new();
    let mut total = 0u64;
    walk_dir(dir, "", &ignore, &mut b, &mut links, &mut total, limit)?;
    for (link, target) in &links {
        resolve(&links, link, target)
            .map_err(|why| entry_err(link, format!("a symlink that {why}; copy what it names into the directory")))?;
    }
    b.into_inner().map_err(|e| ContextError::Unreadable(e.to_string()))
}

fn walk_dir(
    dir: &Path,
    rel: &str,
    ignore: &Ignore,
    b: &mut tar::Builder<Vec<u8>>,
    links: &mut HashMap<String, String>,
    total: &mut u64,
    limit: u64,
) -> Result<(), ContextError> {
    let here = if rel.is_empty() { dir.to_path_buf() } else { dir.join(rel) };
    let mut names: Vec<_> = std::fs::read_dir(&here)
        .map_err(|e| entry_err(if rel.is_empty() { "." } else { rel }, format!("cannot be read: {e}")))?
        .filter_map(Result::ok)
        .collect();
    names.sort_by_key(|e| e.file_name());
    for ent in names {
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            return Err(entry_err(&format!("{rel}/{}", ent.file_name().to_string_lossy()), "its name is not UTF-8"));
        };
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if ignore.skips(&path) {
            continue;
        }
        let meta = std::fs::symlink_metadata(ent.path()).map_err(|e| entry_err(&path, format!("cannot be read: {e}")))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(ent.path()).map_err(|e| entry_err(&path, format!("cannot be read: {e}")))?;
            let target = target.to_str().ok_or_else(|| entry_err(&path, "its link target is not UTF-8"))?.to_string();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, &path, &target).map_err(|e| entry_err(&path, e.to_string()))?;
            links.insert(path, target);
        } else if ft.is_dir() {
            b.append_dir(&path, ent.path()).map_err(|e| entry_err(&path, e.to_string()))?;
            walk_dir(dir, &path, ignore, b, links, total, limit)?;
        } else if ft.is_file() {
            *total += meta.len();
            if *total > limit {
                return Err(ContextError::TooLarge { limit, when: "as packed" });
            }
            b.append_path_with_name(ent.path(), &path).map_err(|e| entry_err(&path, format!("cannot be read: {e}")))?;
        } else {
            return Err(entry_err(
                &path,
                "neither a file, a directory nor a symlink (a socket, fifo or device); remove it or list it in .dockerignore",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with raw headers, so hostile names can be written (tar's builder refuses them).
    fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_old();
            {
                let bytes = h.as_old_mut();
                bytes.name[..name.len()].copy_from_slice(name.as_bytes());
                bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    const F: tar::EntryType = tar::EntryType::Regular;

    #[test]
    fn a_plain_context_passes_and_is_rewritten() {
        let t = raw_tar(&[
            ("./Dockerfile", F, "", b"FROM scratch\n"),
            ("addon.toml", F, "", b"name = \"x\"\n"),
            ("bin/", tar::EntryType::Directory, "", b""),
            ("bin/app", F, "", b"\x7fELF"),
            ("bin/current", tar::EntryType::Symlink, "app", b""),
            ("bin/../Dockerfile.link", tar::EntryType::Symlink, "Dockerfile", b""),
        ]);
        // `bin/../…` is refused even though it would stay inside.
        assert!(matches!(check(&t, 1 << 20), Err(ContextError::Entry { entry, .. }) if entry == "bin/../Dockerfile.link"));
        let t = raw_tar(&[
            ("./Dockerfile", F, "", b"FROM scratch\n"),
            ("addon.toml", F, "", b"name = \"x\"\n"),
            ("bin/app", F, "", b"\x7fELF"),
            ("bin/current", tar::EntryType::Symlink, "app", b""),
            ("bin/same", tar::EntryType::Link, "bin/app", b""),
            ("up", tar::EntryType::Symlink, "bin/../bin/app", b""),
        ]);
        let c = check(&t, 1 << 20).unwrap();
        assert_eq!(c.files.keys().collect::<Vec<_>>(), vec!["Dockerfile", "addon.toml", "bin/app", "bin/same"]);
        assert_eq!(c.manifest, Some(("addon.toml".into(), "name = \"x\"\n".into())));
        // The rewritten tar reads back with the same entries.
        let names: Vec<String> =
            tar::Archive::new(c.tar.as_slice()).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, vec!["Dockerfile", "addon.toml", "bin/app", "bin/current", "bin/same", "up"]);
        // And gzip is told from the bytes.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(check(&gz, 1 << 20).unwrap().files.len(), 4);
    }

    #[test]
    fn hostile_entries_are_named() {
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (raw_tar(&[("/etc/passwd", F, "", b"x")]), "/etc/passwd", "absolute"),
            (raw_tar(&[("../x", F, "", b"x")]), "../x", ".."),
            (raw_tar(&[("a/../../x", F, "", b"x")]), "a/../../x", ".."),
            (raw_tar(&[("etc", tar::EntryType::Symlink, "/etc", b"")]), "etc", "outside"),
            (raw_tar(&[("up", tar::EntryType::Symlink, "../..", b"")]), "up", "outside"),
            // Each link stays inside on its own; through the other, `d/..` climbs out.
            (raw_tar(&[("d", tar::EntryType::Symlink, ".", b""), ("e", tar::EntryType::Symlink, "d/../x", b"")]), "e", "outside"),
            (raw_tar(&[("loop", tar::EntryType::Symlink, "loop", b"")]), "loop", "loop"),
            (raw_tar(&[("dev/null", tar::EntryType::Char, "", b"")]), "dev/null", "device"),
            (raw_tar(&[("disk", tar::EntryType::Block, "", b"")]), "disk", "device"),
            (raw_tar(&[("pipe", tar::EntryType::Fifo, "", b"")]), "pipe", "fifo"),
            (raw_tar(&[("h", tar::EntryType::Link, "/etc/shadow", b"")]), "h", "hard link"),
            (raw_tar(&[("h", tar::EntryType::Link, "../x", b"")]), "h", "hard link"),
            (raw_tar(&[("a", F, "", b"1"), ("./a", F, "", b"2")]), "./a", "twice"),
            (raw_tar(&[("addon.toml", F, "", b"a"), ("addon.json", F, "", b"{}")]), "addon.json", "one manifest"),
        ];
        for (tar, entry, why) in cases {
            match check(&tar, 1 << 20) {
                Err(ContextError::Entry { entry: e, reason }) => {
                    assert_eq!(e, entry);
                    assert!(reason.contains(why), "{entry}: {reason}");
                }
                other => panic!("{entry}: {other:?}"),
            }
        }
    }

    #[test]
    fn size_is_limited_as_sent_and_unpacked() {
        let big = vec![0u8; 64 * 1024];
        let t = raw_tar(&[("zeros", F, "", &big)]);
        assert!(matches!(check(&t, 4096), Err(ContextError::TooLarge { when: "as sent", .. })));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 4096, "zeros compress well");
        assert!(matches!(check(&gz, 4096), Err(ContextError::TooLarge { when: "once unpacked", .. })));
        assert!(matches!(check(b"", 4096), Err(ContextError::Unreadable(_))));
    }

    #[test]
    fn ignore_rules() {
        let i = Ignore::from_text("# comment\n*.log\nbuild/\n/docs/**/*.tmp\n!keep.log\n");
        for skipped in [".git", "a/.git/config", "target", "x.log", "build", "build/out/a", "docs/a/b/c.tmp", "docs/c.tmp"] {
            assert!(i.skips(skipped), "{skipped}");
        }
        for kept in ["src/target", "a/x.log", "buildx", "docs/a/c.txt", "src/main.rs"] {
            assert!(!i.skips(kept), "{kept}");
        }
    }

    #[test]
    fn pack_dir_skips_and_refuses_escaping_links() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join(".git/HEAD"), "x").unwrap();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::write(p.join("target/debug/big"), "x").unwrap();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::write(p.join("src/a.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink("a.rs", p.join("src/b.rs")).unwrap();
        let tar = pack_dir(p, 1 << 20).unwrap();
        let c = check(&tar, 1 << 20).unwrap();
        assert_eq!(c.files.keys().collect::<Vec<_>>(), vec!["Dockerfile", "src/a.rs"]);
        std::os::unix::fs::symlink("/etc/passwd", p.join("src/evil")).unwrap();
        assert!(matches!(pack_dir(p, 1 << 20), Err(ContextError::Entry { entry, .. }) if entry == "src/evil"));
        std::fs::remove_file(p.join("src/evil")).unwrap();
        assert!(matches!(pack_dir(p, 4), Err(ContextError::TooLarge { .. })));
    }
}
