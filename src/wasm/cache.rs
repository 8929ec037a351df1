//! Modules on disk: the bytes of every published module under `<data_dir>/wasm-modules/`
//! (what a rollback redeploys), and their compiled form under `<data_dir>/wasm-cache/`
//! (what a restart loads instead of compiling), both keyed by the SHA-256 of the module.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The two directories, next to the database.
pub struct ModuleFiles {
    /// `<hash>.wasm`: the module as published.
    modules: PathBuf,
    /// `<hash>.cwasm`: `Module::serialize` output of this daemon's engine.
    cache: PathBuf,
}

/// The content hash modules are known by (lowercase hex SHA-256).
pub fn module_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Whether `s` looks like a module hash (so it is safe in a file name).
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes a file whole or not at all: a temporary file beside it, synced, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl ModuleFiles {
    pub fn new(data_dir: &Path) -> Self {
        ModuleFiles { modules: data_dir.join("wasm-modules"), cache: data_dir.join("wasm-cache") }
    }

    fn ensure_dirs(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.modules)?;
        std::fs::create_dir_all(&self.cache)
    }

    pub fn module_path(&self, hash: &str) -> PathBuf {
        self.modules.join(format!("{hash}.wasm"))
    }

    pub fn cache_path(&self, hash: &str) -> PathBuf {
        self.cache.join(format!("{hash}.cwasm"))
    }

    /// Keeps the module's bytes (once: the same hash is the same bytes).
    pub fn save_module(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.ensure_dirs()?;
        let path = self.module_path(hash);
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    pub fn save_compiled(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.ensure_dirs()?;
        write_atomic(&self.cache_path(hash), bytes)
    }

    pub fn read_module(&self, hash: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.module_path(hash))
    }

    /// Removes the modules (and compiled forms) whose hash is not in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        for (dir, ext) in [(&self.modules, "wasm"), (&self.cache, "cwasm")] {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else { continue };
                if p.extension().and_then(|s| s.to_str()) == Some(ext) && is_hash(stem) && !keep.contains(stem) {
                    if let Err(err) = std::fs::remove_file(&p) {
                        tracing::warn!(path = %p.display(), error = %err, "cannot remove an old WebAssembly module");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_name_files_and_retain_keeps_only_the_listed() {
        let dir = tempfile::tempdir().unwrap();
        let files = ModuleFiles::new(dir.path());
        let (a, b) = (module_hash(b"a"), module_hash(b"b"));
        assert!(is_hash(&a) && !is_hash("../x") && !is_hash(&a[..10]));
        files.save_module(&a, b"a").unwrap();
        files.save_module(&b, b"b").unwrap();
        files.save_compiled(&b, b"compiled").unwrap();
        files.retain(&[a.clone()].into_iter().collect());
        assert_eq!(files.read_module(&a).unwrap(), b"a");
        assert!(files.read_module(&b).is_err());
        assert!(!files.cache_path(&b).exists());
    }
}
