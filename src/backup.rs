//! Backups and restores of a daemon's state.
//!
//! A backup is a plain tar archive, streamed by the running daemon (`POST /api/backup`) and
//! written to a file by `addonctl backup FILE`:
//!
//! 1. `addond-backup.json`: format, addond version, schema version, daemon id, the owner of
//!    the data directory, and the SHA-256 of the database copy;
//! 2. `addond.db`: a consistent copy of the database taken online with `VACUUM INTO`;
//! 3. `volumes/…`: the directory volumes of every service, with owners and modes.
//!
//! A restore (`addonctl restore FILE`) runs with the daemon stopped: it takes the data-dir
//! lock so no daemon can start meanwhile, checks the whole archive (format, schema not newer
//! than this build, checksum, SQLite integrity) in a staging directory, moves the current
//! database and volumes aside to `pre-restore-<time>/`, and puts the restored ones in place.
//! The next start adopts the containers that still exist and recreates the missing ones.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

pub const FORMAT: u32 = 1;
pub const MANIFEST_NAME: &str = "addond-backup.json";
pub const DB_NAME: &str = "addond.db";
pub const VOLUMES_DIR: &str = "volumes";

/// The first entry of every backup archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupManifest {
    pub format: u32,
    pub addond_version: String,
    pub schema_version: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    pub daemon_id: String,
    /// Owner of the data directory (the daemon's user), restored on the database file.
    pub data_dir_uid: u32,
    pub data_dir_gid: u32,
    pub database_bytes: u64,
    pub database_sha256: String,
    pub services: usize,
}

/// What an archive holds, as checked by [`inspect_archive`].
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveSummary {
    pub manifest: BackupManifest,
    pub volume_entries: usize,
    pub volume_bytes: u64,
}

pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex(&h.finalize()), n_total))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- writing (in the daemon) ----------------------------------------------------------

/// Writes the archive: the manifest, the database snapshot, then every directory volume
/// under `<data_dir>/volumes`. Symlinks are stored as links (never followed); sockets,
/// FIFOs and devices are skipped with a warning. A file that cannot be read fails the
/// backup rather than silently leaving it out.
pub fn write_archive<W: Write>(out: W, manifest: &BackupManifest, snapshot: &Path, data_dir: &Path) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o600);
    h.set_mtime((manifest.created_at / 1000) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, MANIFEST_NAME, json.as_slice())?;
    let mut db = File::open(snapshot)?;
    b.append_file(DB_NAME, &mut db)?;
    let volumes = data_dir.join(VOLUMES_DIR);
    if volumes.is_dir() {
        append_tree(&mut b, &volumes, Path::new(VOLUMES_DIR))?;
    }
    b.into_inner()
}

fn append_tree<W: Write>(b: &mut tar::Builder<W>, src: &Path, name: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        b.append_dir(name, src).map_err(|e| annotate(e, src))?;
        let mut children: Vec<_> = fs::read_dir(src).map_err(|e| annotate(e, src))?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            append_tree(b, &child.path(), &name.join(child.file_name()))?;
        }
        Ok(())
    } else if ft.is_file() || ft.is_symlink() {
        b.append_path_with_name(src, name).map_err(|e| annotate(e, src))
    } else {
        tracing::warn!(path = %src.display(), "backup skips a socket, FIFO or device file");
        Ok(())
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// An `io::Write` that hands what it is given to an async receiver in chunks, so a
/// blocking archive writer can feed a streaming HTTP body.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 256 * 1024;

    pub fn new(tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>) -> Self {
        ChannelWriter { tx, buf: Vec::with_capacity(Self::CHUNK) }
    }

    fn push(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Sends an error to the receiver, which ends the HTTP body abnormally.
    pub fn fail(&self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}

// ---- downloading (addonctl) --------------------------------------------------------------

/// `addonctl backup FILE`: streams `POST /api/backup` into `FILE.partial` (mode 0600),
/// checks the archive end to end, then renames it to `file`. A broken stream or a damaged
/// archive leaves no `file` behind.
pub async fn download(client: &crate::client::Client, file: &Path) -> anyhow::Result<ArchiveSummary> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = {
        let mut name = file.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    };
    let mut stream = client.stream(crate::client::Method::POST, "/api/backup").await?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let res: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next_chunk().await {
            let chunk = chunk.context("the backup stream broke off (see the daemon's log)")?;
            out.write_all(&chunk).with_context(|| format!("cannot write {}", partial.display()))?;
        }
        out.sync_all()?;
        Ok(())
    }
    .await;
    drop(out);
    let checked = res.and_then(|()| inspect_archive(&partial).context("the backup archive is incomplete or damaged"));
    match checked {
        Ok(summary) => {
            fs::rename(&partial, file).with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                sync_dir(dir);
            }
            Ok(summary)
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(e)
        }
    }
}

// ---- reading and checking ---------------------------------------------------------------

/// Reads the manifest (which must be the first entry) and checks that it is a backup this
/// build can restore.
fn read_manifest<R: Read>(entries: &mut tar::Entries<'_, R>) -> anyhow::Result<BackupManifest> {
    let mut first = entries.next().ok_or_else(|| anyhow::anyhow!("the archive is empty"))?.context("the archive is not a tar file")?;
    let name = first.path()?.to_string_lossy().into_owned();
    if name != MANIFEST_NAME {
        bail!("not an addond backup: the first entry is `{name}`, not {MANIFEST_NAME}");
    }
    let mut text = String::new();
    first.by_ref().take(1 << 20).read_to_string(&mut text)?;
    let m: BackupManifest = serde_json::from_str(&text).context("the backup manifest is unreadable")?;
    if m.format != FORMAT {
        bail!("backup format {} is not supported by addond {} (it reads format {FORMAT})", m.format, env!("CARGO_PKG_VERSION"));
    }
    let known = Store::known_schema_version();
    if m.schema_version > known {
        bail!(
            "the backup was made by a newer addond ({}, database schema {}); this addond {} knows schema {known} at most: install addond {} or later to restore it",
            m.addond_version,
            m.schema_version,
            env!("CARGO_PKG_VERSION"),
            m.addond_version
        );
    }
    Ok(m)
}

/// Checks an archive end to end without unpacking it: manifest, database checksum and
/// size, and that every other entry lies under `volumes/`.
pub fn inspect_archive(path: &Path) -> anyhow::Result<ArchiveSummary> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ar = tar::Archive::new(io::BufReader::new(file));
    let mut entries = ar.entries()?;
    let manifest = read_manifest(&mut entries)?;
    let mut db_seen = false;
    let (mut volume_entries, mut volume_bytes) = (0usize, 0u64);
    for e in entries {
        let mut e = e.context("the archive is truncated or damaged")?;
        let name = e.path()?.into_owned();
        if name == Path::new(DB_NAME) {
            let mut h = Sha256::new();
            let n = io::copy(&mut e, &mut HashWriter(&mut h)).context("the database copy is truncated")?;
            if n != manifest.database_bytes || hex(&h.finalize()) != manifest.database_sha256 {
                bail!("the database copy in the archive does not match its checksum: the backup is damaged");
            }
            db_seen = true;
        } else if name.starts_with(VOLUMES_DIR) && safe_relative(&name) {
            volume_entries += 1;
            volume_bytes += e.header().size().unwrap_or(0);
        } else {
            bail!("unexpected entry `{}` in the backup", name.display());
        }
    }
    if !db_seen {
        bail!("the backup has no {DB_NAME}");
    }
    Ok(ArchiveSummary { manifest, volume_entries, volume_bytes })
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.update(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn safe_relative(p: &Path) -> bool {
    p.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

// ---- restoring (addonctl, daemon stopped) ------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub manifest: BackupManifest,
    pub data_dir: PathBuf,
    /// Where the database and volumes that were there before went (absent if there were none).
    pub previous: Option<PathBuf>,
    pub volume_entries: usize,
    /// Ownership of volume files was restored (only root can).
    pub ownership_restored: bool,
}

/// Restores `archive` into `data_dir`. The daemon must be stopped: if anything answers on
/// `socket` the restore is refused, and the data-dir lock is held throughout so a daemon
/// cannot start halfway.
pub fn restore(archive: &Path, data_dir: &Path, socket: &Path) -> anyhow::Result<RestoreReport> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        bail!("addond is running (it answers on {}); stop it first (systemctl stop addond), then restore", socket.display());
    }
    let summary = inspect_archive(archive)?;
    let _lock = crate::data_dir::lock_data_dir(data_dir).map_err(|e| anyhow::anyhow!("{e:#}; addond must be stopped to restore"))?;
    let root = nix::unistd::geteuid().is_root();

    // 1. Unpack into a staging directory next to the data, so the final moves are renames.
    let staging = data_dir.join(format!(".restore-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir(&staging)?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))?;
    let result = unpack_and_check(archive, &staging, &summary.manifest, root);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }

    // 2. Move what is there aside, then the restored files in.
    let stamp = timestamp_for_path(crate::store::now_ms());
    let previous = data_dir.join(format!("pre-restore-{stamp}"));
    let mut moved_any = false;
    for name in [DB_NAME.to_string(), format!("{DB_NAME}-wal"), format!("{DB_NAME}-shm"), VOLUMES_DIR.to_string()] {
        let from = data_dir.join(&name);
        if fs::symlink_metadata(&from).is_ok() {
            if !moved_any {
                fs::create_dir(&previous).with_context(|| format!("cannot create {}", previous.display()))?;
                fs::set_permissions(&previous, fs::Permissions::from_mode(0o700))?;
                moved_any = true;
            }
            fs::rename(&from, previous.join(&name)).with_context(|| format!("cannot move {} aside", from.display()))?;
        }
    }
    fs::rename(staging.join(DB_NAME), data_dir.join(DB_NAME))?;
    if staging.join(VOLUMES_DIR).exists() {
        fs::rename(staging.join(VOLUMES_DIR), data_dir.join(VOLUMES_DIR))?;
    }
    fs::remove_dir_all(&staging)?;

    // 3. The daemon's user must own its data directory and database again.
    let m = &summary.manifest;
    if root {
        for p in [data_dir.to_path_buf(), data_dir.join(DB_NAME), data_dir.join("addond.pid")] {
            if p.exists() {
                std::os::unix::fs::chown(&p, Some(m.data_dir_uid), Some(m.data_dir_gid))
                    .with_context(|| format!("cannot give {} to uid {}", p.display(), m.data_dir_uid))?;
            }
        }
        if data_dir.join(VOLUMES_DIR).exists() {
            let v = data_dir.join(VOLUMES_DIR);
            // `volumes/` and `volumes/<service>/` belong to the daemon; what is below them
            // got its owner from the archive.
            std::os::unix::fs::chown(&v, Some(m.data_dir_uid), Some(m.data_dir_gid))?;
        }
    }
    sync_dir(data_dir);
    Ok(RestoreReport {
        manifest: summary.manifest,
        data_dir: data_dir.to_path_buf(),
        previous: moved_any.then_some(previous),
        volume_entries: summary.volume_entries,
        ownership_restored: root,
    })
}

fn unpack_and_check(archive: &Path, staging: &Path, m: &BackupManifest, root: bool) -> anyhow::Result<()> {
    let file = File::open(archive)?;
    let mut ar = tar::Archive::new(io::BufReader::new(file));
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(root);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(false);
    let mut entries = ar.entries()?;
    read_manifest(&mut entries)?;
    for e in entries {
        let mut e = e?;
        let name = e.path()?.into_owned();
        if name != Path::new(DB_NAME) && !(name.starts_with(VOLUMES_DIR) && safe_relative(&name)) {
            bail!("unexpected entry `{}` in the backup", name.display());
        }
        // unpack_in refuses paths that would leave the staging directory.
        if !e.unpack_in(staging).with_context(|| format!("cannot unpack {}", name.display()))? {
            bail!("refused to unpack `{}` outside the data directory", name.display());
        }
    }
    let db = staging.join(DB_NAME);
    let (sum, len) = sha256_file(&db)?;
    if sum != m.database_sha256 || len != m.database_bytes {
        bail!("the restored database does not match the backup's checksum");
    }
    fs::set_permissions(&db, fs::Permissions::from_mode(0o600))?;
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the database in the backup fails its integrity check: {check}");
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > Store::known_schema_version() {
        bail!(
            "the database in the backup has schema {version}, newer than this addond knows ({}); upgrade addond first",
            Store::known_schema_version()
        );
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

pub use crate::time::timestamp_for_path;

/// The owner of a path (for the manifest).
pub fn owner_of(path: &Path) -> (u32, u32) {
    fs::metadata(path).map(|m| (m.uid(), m.gid())).unwrap_or_else(|_| (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(db: &Path) -> BackupManifest {
        let (sum, len) = sha256_file(db).unwrap();
        BackupManifest {
            format: FORMAT,
            addond_version: "0.1.0".into(),
            schema_version: Store::known_schema_version(),
            created_at: 1_795_303_913_500,
            daemon_id: "d".into(),
            data_dir_uid: 0,
            data_dir_gid: 0,
            database_bytes: len,
            database_sha256: sum,
            services: 0,
        }
    }

    fn make_db(path: &Path) {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    }

    #[test]
    fn archive_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("volumes/svc/files/sub")).unwrap();
        fs::write(data.join("volumes/svc/files/sub/a.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("volumes/svc/files/link")).unwrap();
        let snap = dir.path().join("snap.db");
        make_db(&snap);
        let m = manifest(&snap);
        let out = File::create(dir.path().join("b.tar")).unwrap();
        write_archive(out, &m, &snap, &data).unwrap();
        let s = inspect_archive(&dir.path().join("b.tar")).unwrap();
        assert_eq!(s.manifest, m);
        assert!(s.volume_entries >= 4, "{s:?}");

        // Restore into a fresh data dir (no daemon: the socket does not exist).
        let target = dir.path().join("restored");
        fs::create_dir_all(target.join("volumes/old")).unwrap();
        fs::write(target.join(DB_NAME), b"old").unwrap();
        let r = restore(&dir.path().join("b.tar"), &target, &dir.path().join("none.sock")).unwrap();
        assert_eq!(fs::read(target.join("volumes/svc/files/sub/a.txt")).unwrap(), b"hello");
        assert_eq!(fs::read_link(target.join("volumes/svc/files/link")).unwrap(), Path::new("/etc/passwd"));
        let prev = r.previous.unwrap();
        assert_eq!(fs::read(prev.join(DB_NAME)).unwrap(), b"old");
        assert!(prev.join("volumes/old").is_dir());

        // A newer schema is refused before anything is touched.
        let mut newer = m.clone();
        newer.schema_version = Store::known_schema_version() + 1;
        newer.addond_version = "9.0.0".into();
        write_archive(File::create(dir.path().join("n.tar")).unwrap(), &newer, &snap, &data).unwrap();
        let err = format!("{:#}", restore(&dir.path().join("n.tar"), &target, &dir.path().join("none.sock")).unwrap_err());
        assert!(err.contains("newer addond") && err.contains("9.0.0"), "{err}");

        // A damaged database copy is caught by the checksum.
        let mut bad = m.clone();
        bad.database_sha256 = "00".into();
        write_archive(File::create(dir.path().join("x.tar")).unwrap(), &bad, &snap, &data).unwrap();
        let err = format!("{:#}", inspect_archive(&dir.path().join("x.tar")).unwrap_err());
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn path_timestamps() {
        assert_eq!(timestamp_for_path(0), "19700101-000000");
        assert_eq!(timestamp_for_path(1_795_303_913_500), "20261121-233153");
    }
}
