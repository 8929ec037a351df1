//! The data-dir lock: `<data_dir>/addond.pid`, held with `flock` for as long as one daemon
//! (or an offline restore) uses the data dir, so two of them never write the same database.
//! A leaf, so the daemon and the backup code can both take it without importing each other.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

/// Holds `<data_dir>/addond.pid` locked for the daemon's lifetime; a second daemon on the
/// same data dir is refused with the first one's pid.
pub struct DataDirLock {
    _file: Flock<File>,
    pub path: PathBuf,
}

pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join("addond.pid");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "another addond (pid {}) is already using data dir {}; stop it first",
                pid.trim().parse::<u32>().map(|p| p.to_string()).unwrap_or_else(|_| "unknown".into()),
                data_dir.display()
            );
        }
    };
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(DataDirLock { _file: file, path })
}
