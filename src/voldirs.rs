//! Directory volumes on the host (`./dir` in a service's `volumes`): made under
//! `<data_dir>/volumes/<service>/` and checked, before every container start, by walking
//! the path from the data dir one component at a time with `openat(O_NOFOLLOW)`. Docker
//! resolves a bind source again at each start, so a check made only when the container
//! was created would let a symlink put in place later (issue 12 §1) lead the container to
//! any host directory. Opening each plain name relative to the directory opened before it,
//! refusing symlinks, is what `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does for a
//! whole path, and works on every kernel; nothing on the way is resolved by name twice.
//! A missing component is made again (the service keeps working after an operator
//! removed an empty directory); a symlink, a non-directory, or a level the daemon owns
//! that the sandbox user owns or anyone may write is refused.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

/// Why a directory volume cannot be used; the text names the path and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VolumeDirError(pub String);

/// The sandbox user as `uid[:gid]` (validated by the config).
fn sandbox_ids(user: &str) -> (Option<u32>, Option<u32>) {
    let mut ids = user.split(':').map(|p| p.parse::<u32>().ok());
    let uid = ids.next().flatten();
    let gid = ids.next().flatten().or(uid);
    (uid, gid)
}

fn cstr(name: &std::ffi::OsStr, shown: &Path) -> Result<CString, VolumeDirError> {
    CString::new(name.as_bytes()).map_err(|_| VolumeDirError(format!("{} contains a NUL byte", shown.display())))
}

/// Opens `name` in `dir` as a directory without following a symlink; makes it first when
/// missing. Returns the descriptor and whether it was made now.
fn open_dir_at(dir: &OwnedFd, name: &CString, shown: &Path) -> Result<(OwnedFd, bool), VolumeDirError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut made = false;
    for _ in 0..2 {
        let err = match nix::fcntl::openat(dir, name.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => return Ok((fd, made)),
            Err(e) => e,
        };
        match err {
            Errno::ENOENT if !made => {
                // Mode as create_dir_all would use (before the umask).
                if let Err(e) = nix::sys::stat::mkdirat(dir, name.as_c_str(), Mode::from_bits_truncate(0o777)) {
                    // Made by someone else in between: open what is there (checked the same way).
                    if e != Errno::EEXIST {
                        return Err(VolumeDirError(format!("cannot create {}: {}", shown.display(), std::io::Error::from(e))));
                    }
                }
                made = true;
            }
            // A symlink gives ELOOP or (with O_DIRECTORY, on Linux) ENOTDIR; which one it
            // was is told by looking at the name itself.
            Errno::ELOOP | Errno::ENOTDIR => {
                let link = nix::sys::stat::fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK);
                let what = if link { "is a symlink" } else { "is not a directory" };
                return Err(VolumeDirError(format!("{} {what}", shown.display())));
            }
            _ => return Err(VolumeDirError(format!("cannot open {}: {}", shown.display(), std::io::Error::from(err)))),
        }
    }
    Err(VolumeDirError(format!("{} keeps disappearing", shown.display())))
}

fn stat(fd: &OwnedFd, shown: &Path) -> Result<FileStat, VolumeDirError> {
    nix::sys::stat::fstat(fd).map_err(|e| VolumeDirError(format!("cannot stat {}: {}", shown.display(), std::io::Error::from(e))))
}

/// Makes (or finds) the host directory of a directory volume and checks the whole way to it:
/// `<data_dir>/volumes/<service>/<rel>`, each component a real directory, none a symlink.
/// `volumes` and `volumes/<service>` are the daemon's: the sandbox user must not own them
/// and they must not be writable by everyone (else a process running as that user could
/// rename what lies below). The directory itself is given to the sandbox user (when the daemon may
/// chown), so the non-root container can write to it. Returns the path to hand to Docker.
pub fn prepare(data_dir: &Path, service: &str, rel: &str, user: &str) -> Result<PathBuf, VolumeDirError> {
    // The data dir is the operator's choice and trusted as it is (symlinks included).
    std::fs::create_dir_all(data_dir).map_err(|e| VolumeDirError(format!("cannot create {}: {e}", data_dir.display())))?;
    let root = data_dir.canonicalize().map_err(|e| VolumeDirError(format!("{}: {e}", data_dir.display())))?;
    let root_c = cstr(root.as_os_str(), &root)?;
    let mut dir = nix::fcntl::open(root_c.as_c_str(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| VolumeDirError(format!("cannot open {}: {}", root.display(), std::io::Error::from(e))))?;
    let (uid, gid) = sandbox_ids(user);
    let rel_path = Path::new(rel);
    let mut names: Vec<&std::ffi::OsStr> = vec![std::ffi::OsStr::new("volumes"), std::ffi::OsStr::new(service)];
    for c in rel_path.components() {
        match c {
            Component::Normal(n) => names.push(n),
            // `./x` is how a relative directory is written; anything else cannot be one.
            Component::CurDir => {}
            _ => return Err(VolumeDirError(format!("`{rel}` is not a plain relative directory"))),
        }
    }
    if names.len() < 3 || service.is_empty() || service.contains('/') {
        return Err(VolumeDirError(format!("`{rel}` of `{service}` names no directory below the service's own")));
    }
    let mut shown = root.clone();
    let last = names.len() - 1;
    for (i, name) in names.iter().enumerate() {
        shown.push(name);
        let (next, _made) = open_dir_at(&dir, &cstr(name, &shown)?, &shown)?;
        let st = stat(&next, &shown)?;
        if i < 2 {
            // A daemon running as the sandbox user owns its own directories; nothing to
            // tell apart then.
            let daemon = nix::unistd::geteuid().as_raw();
            if uid == Some(st.st_uid) && st.st_uid != 0 && st.st_uid != daemon {
                return Err(VolumeDirError(format!(
                    "{} belongs to the sandbox user (uid {}); it is the daemon's: give it back (`chown` to the daemon's user)",
                    shown.display(),
                    st.st_uid
                )));
            }
            if st.st_mode & 0o002 != 0 {
                return Err(VolumeDirError(format!(
                    "{} may be written by others (mode {:o}); it is the daemon's: `chmod o-w` it",
                    shown.display(),
                    st.st_mode & 0o7777
                )));
            }
        }
        if i == last {
            if let Some(uid) = uid {
                // Best effort: a non-root dev daemon cannot chown; the directory then keeps
                // its owner. Through the descriptor: the directory checked is the one changed.
                let _ = nix::unistd::fchown(&next, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid.unwrap_or(uid))));
            }
        }
        dir = next;
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(dir.path(), "svc", "files/sub", "65534:65534").unwrap();
        assert!(p.ends_with("volumes/svc/files/sub") && p.is_dir());
        assert_eq!(prepare(dir.path(), "svc", "./files/sub", "65534").unwrap(), p);
        // Made again when missing.
        std::fs::remove_dir_all(dir.path().join("volumes/svc/files")).unwrap();
        assert!(prepare(dir.path(), "svc", "files/sub", "65534").unwrap().is_dir());
        // A symlink anywhere on the way, to a directory or not, is refused and not followed.
        let outside = tempfile::tempdir().unwrap();
        std::fs::rename(dir.path().join("volumes/svc/files"), dir.path().join("volumes/svc/files.orig")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("volumes/svc/files")).unwrap();
        let e = prepare(dir.path(), "svc", "files/sub", "65534").unwrap_err().to_string();
        assert!(e.contains("volumes/svc/files is a symlink"), "{e}");
        assert!(!outside.path().join("sub").exists(), "nothing made through the link");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("volumes/svc/leaf")).unwrap();
        assert!(prepare(dir.path(), "svc", "leaf", "65534").unwrap_err().to_string().contains("symlink"));
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("volumes/svc/dangling")).unwrap();
        assert!(prepare(dir.path(), "svc", "dangling/x", "65534").unwrap_err().to_string().contains("symlink"));
        // The service level itself.
        std::fs::create_dir_all(dir.path().join("volumes")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("volumes/other")).unwrap();
        assert!(prepare(dir.path(), "other", "x", "65534").unwrap_err().to_string().contains("symlink"));
        // A file where a directory should be.
        std::fs::write(dir.path().join("volumes/svc/file"), b"x").unwrap();
        assert!(prepare(dir.path(), "svc", "file", "65534").unwrap_err().to_string().contains("not a directory"));
        // Not plain.
        assert!(prepare(dir.path(), "svc", "../x", "65534").is_err());
        assert!(prepare(dir.path(), "svc", "/etc", "65534").is_err());
    }

    #[test]
    fn the_daemons_levels_must_stay_the_daemons() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), "svc", "x", "65534").unwrap();
        let svc = dir.path().join("volumes/svc");
        std::fs::set_permissions(&svc, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(dir.path(), "svc", "x", "65534").unwrap_err().to_string();
        assert!(e.contains("may be written by others"), "{e}");
        std::fs::set_permissions(&svc, std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::getuid().is_root() {
            std::os::unix::fs::chown(&svc, Some(65534), Some(65534)).unwrap();
            let e = prepare(dir.path(), "svc", "x", "65534").unwrap_err().to_string();
            assert!(e.contains("belongs to the sandbox user"), "{e}");
            std::os::unix::fs::chown(&svc, Some(0), Some(0)).unwrap();
            assert_eq!(
                std::fs::metadata(svc.join("x")).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap(),
                65534,
                "the directory itself is the sandbox user's"
            );
        }
        assert!(prepare(dir.path(), "svc", "x", "65534").is_ok());
    }
}
