//! `addonctl doctor`: checks the things that make addond fail on a real host, each with a
//! fix. Some facts come from the daemon (`GET /api/doctor`: what Docker and the database
//! look like from the daemon's own user), the rest from the host as seen by `addonctl`
//! (socket permissions, listeners in the port range, free disk space). When the daemon does
//! not answer, the database and Docker are checked directly instead.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(check: &'static str, level: Level, message: impl Into<String>, fix: Option<String>) -> Finding {
    Finding { check, level, message: message.into(), fix }
}

/// Free-space thresholds: below `FAIL` bytes or percent the check fails, below `WARN` it warns.
const DISK_FAIL_BYTES: u64 = 1 << 30;
const DISK_FAIL_PERCENT: f64 = 5.0;
const DISK_WARN_BYTES: u64 = 5 << 30;
const DISK_WARN_PERCENT: f64 = 10.0;

/// What the doctor works from when the daemon does not answer.
pub struct Inputs {
    pub client: Client,
    /// The config file addond would read (its values are used when the daemon is down).
    pub config: Result<Config, String>,
    pub config_path: PathBuf,
}

/// The config file addond reads, for the operator tools that work next to it (`doctor`
/// while the daemon is down, `restore`): `explicit` if given; the dev config when the
/// socket in use is the dev daemon's (`./.addond/addond.sock`); else the system one.
pub fn resolve_config(explicit: Option<&Path>, socket: &Path) -> (PathBuf, Result<Config, String>) {
    let dev = explicit.is_none() && socket.ends_with(Path::new(crate::config::DEV_DIR).join("addond.sock"));
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if dev => Path::new(crate::config::DEV_DIR).join("config.toml"),
        None => PathBuf::from(crate::config::DEFAULT_CONFIG_PATH),
    };
    let cfg = Config::load(explicit, dev).map_err(|e| e.to_string());
    (path, cfg)
}

/// Runs every check. The order is the order of the report.
pub async fn run(inp: &Inputs) -> Vec<Finding> {
    let mut out = Vec::new();
    // 0. The config file addond will read at its next start.
    match &inp.config {
        Ok(_) => out.push(finding("config", Level::Ok, format!("{} is valid", inp.config_path.display()), None)),
        Err(e) => out.push(finding(
            "config",
            Level::Fail,
            format!("addond will refuse to start: {e}"),
            Some(format!(
                "fix the key named above in {}; check with `addond check-config --config {}`",
                inp.config_path.display(),
                inp.config_path.display()
            )),
        )),
    }
    let fallback = inp.config.clone().unwrap_or_default();

    // 1. The daemon, and its own view of things.
    let report = match inp.client.get("/api/doctor").await {
        Ok(r) if r.status == 200 => {
            let d = r.data().clone();
            out.push(finding(
                "daemon",
                Level::Ok,
                format!(
                    "addond {} (pid {}) answers on {}",
                    d["daemon"]["version"].as_str().unwrap_or("?"),
                    d["daemon"]["pid"],
                    inp.client.socket().display()
                ),
                None,
            ));
            Some(d)
        }
        Ok(r) => {
            let msg = r.error().map(|e| e.message).unwrap_or_else(|| format!("HTTP {}", r.status));
            out.push(finding(
                "daemon",
                Level::Fail,
                format!("addond answered {}: {msg}", r.status),
                Some("upgrade addonctl and addond together (the doctor needs GET /api/doctor)".into()),
            ));
            None
        }
        Err(ClientError::NotRunning { socket }) => {
            out.push(finding(
                "daemon",
                Level::Fail,
                format!("addond is not running (nothing answers on {})", socket.display()),
                Some("start it: `systemctl start addond`; `journalctl -u addond -e` says why it stopped".into()),
            ));
            None
        }
        Err(ClientError::PermissionDenied { socket }) => {
            out.push(finding(
                "daemon",
                Level::Fail,
                format!("permission denied on {}", socket.display()),
                Some(format!(
                    "add your user to the `{}` group (`sudo usermod -aG {} $USER`, then log in again) or use sudo",
                    fallback.daemon.socket_group, fallback.daemon.socket_group
                )),
            ));
            None
        }
        Err(ClientError::Api(e)) if e.code == "forbidden" => {
            out.push(finding(
                "daemon",
                Level::Fail,
                "addond refused this user (403)".to_string(),
                Some(format!(
                    "add your user to the `{}` group (`sudo usermod -aG {} $USER`, then log in again) or use sudo",
                    fallback.daemon.socket_group, fallback.daemon.socket_group
                )),
            ));
            None
        }
        Err(e) => {
            out.push(finding("daemon", Level::Fail, format!("cannot talk to addond: {e}"), Some("see `journalctl -u addond -e`".into())));
            None
        }
    };
    let data_dir = report
        .as_ref()
        .and_then(|d| d["config"]["data_dir"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| fallback.daemon.data_dir.clone());
    let socket_group = report
        .as_ref()
        .and_then(|d| d["config"]["socket_group"].as_str().map(str::to_string))
        .unwrap_or_else(|| fallback.daemon.socket_group.clone());
    let range = report
        .as_ref()
        .and_then(|d| Some((d["config"]["port_range"][0].as_u64()? as u16, d["config"]["port_range"][1].as_u64()? as u16)))
        .unwrap_or((fallback.ports.range_start, fallback.ports.range_end));

    // 2. Socket permissions (there is no socket to check while the daemon is down).
    if report.is_some() || inp.client.socket().exists() {
        out.push(check_socket(inp.client.socket(), &socket_group));
    }

    // 3. Docker.
    match &report {
        Some(d) if d["docker"]["reachable"] == true => out.push(finding(
            "docker",
            Level::Ok,
            format!("the daemon reaches Docker at {}", d["docker"]["host"].as_str().unwrap_or("?")),
            None,
        )),
        Some(d) if d["docker"]["state"] == "unresponsive" => out.push(finding(
            "docker",
            Level::Fail,
            format!("Docker at {} accepts connections but is not answering: {}", d["docker"]["host"].as_str().unwrap_or("?"), d["docker"]["error"].as_str().unwrap_or("no answer")),
            Some("look at the engine (`systemctl status docker`, `journalctl -u docker`) and restart it if it stays stuck (`systemctl restart docker`); addond carries on when it answers".into()),
        )),
        Some(d) => out.push(finding(
            "docker",
            Level::Fail,
            format!("the daemon cannot reach Docker at {}: {}", d["docker"]["host"].as_str().unwrap_or("?"), d["docker"]["error"].as_str().unwrap_or("no answer")),
            Some("start Docker (`systemctl start docker`); the daemon's user needs the socket's group (SupplementaryGroups=docker in addond.service)".into()),
        )),
        None => out.push(probe_docker(&fallback.docker.host).await),
    }

    // 4. The port range.
    let booked: Option<HashSet<u16>> = match &report {
        Some(d) => {
            Some(d["booked_ports"].as_array().map(|a| a.iter().filter_map(|p| p.as_u64().map(|p| p as u16)).collect()).unwrap_or_default())
        }
        None => booked_ports_from_db(&data_dir.join("addond.db")),
    };
    out.extend(check_ports(range, booked.as_ref(), report.is_some()));

    // 5. Disk space where the data and the images live.
    out.push(check_disk("disk", &data_dir, "the data directory"));
    let docker_root = report
        .as_ref()
        .and_then(|d| d["docker"]["root_dir"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/docker"));
    if docker_root.exists() {
        out.push(check_disk("disk", &docker_root, "Docker's images and containers"));
    }

    // 6. The database.
    match &report {
        Some(d) => out.push(database_finding(&d["database"])),
        None => out.push(check_db_directly(&data_dir.join("addond.db"))),
    }

    // 7. The firewall table that keeps addon networks apart.
    let pool = report
        .as_ref()
        .and_then(|d| d["firewall"]["pool"].as_str().map(str::to_string))
        .unwrap_or_else(|| fallback.docker.subnet_pool.clone());
    out.push(check_firewall(report.as_ref().map(|d| &d["firewall"]), &pool, &data_dir, &inp.config_path).await);
    out
}

/// The firewall table: the daemon's view when it could read the kernel's, else this user's
/// own look (as root it can), else the record of this boot.
async fn check_firewall(daemon: Option<&Value>, pool: &str, data_dir: &Path, config_path: &Path) -> Finding {
    use crate::firewall::{self, Status};
    let Ok(table) = firewall::Table::for_pool(pool) else {
        return finding("firewall", Level::Fail, format!("docker.subnet_pool `{pool}` is not an IPv4 range"), None);
    };
    let definitive = |state: &str| matches!(state, "present" | "absent" | "altered");
    let from_daemon = daemon.filter(|f| f["state"].as_str().is_some_and(definitive));
    let (level, message) = match from_daemon {
        Some(f) => (if f["holds"] == true { Level::Ok } else { Level::Fail }, f["message"].as_str().unwrap_or("").to_string()),
        None => {
            let (t, dir) = (table.clone(), data_dir.to_path_buf());
            let local = tokio::task::spawn_blocking(move || firewall::status(&t, &dir))
                .await
                .unwrap_or_else(|e| Status::Unknown { reason: e.to_string() });
            match (&local, daemon) {
                (Status::Unknown { .. }, Some(f)) if f["holds"] == true => (Level::Ok, f["message"].as_str().unwrap_or("").to_string()),
                (Status::Unknown { .. }, _) => (Level::Warn, local.describe(&table)),
                (s, _) if s.holds() => (Level::Ok, s.describe(&table)),
                (s, _) => (Level::Fail, s.describe(&table)),
            }
        }
    };
    let fix = match level {
        Level::Ok => None,
        Level::Warn => Some(format!(
            "run the doctor as root to read the firewall; apply the table with `sudo addond firewall --config {}` (the unit does at every start)",
            config_path.display()
        )),
        Level::Fail => Some(format!(
            "apply it: `sudo addond firewall --config {}` (the unit does at every start: `systemctl restart addond`); if it keeps going, a firewall tool is flushing the whole ruleset (`flush ruleset` in /etc/nftables.conf): make it leave `table ip {}` alone",
            config_path.display(),
            table.name
        )),
    };
    finding("firewall", level, message, fix)
}

/// Exit status for a report: 1 when any check failed, else 0 (warnings alone pass).
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.level == Level::Fail))
}

fn check_socket(path: &Path, group: &str) -> Finding {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return finding(
                "socket",
                Level::Warn,
                format!("cannot inspect {}: {e}", path.display()),
                Some("the socket appears when addond starts".into()),
            )
        }
    };
    if !meta.file_type().is_socket() {
        return finding("socket", Level::Fail, format!("{} is not a socket", path.display()), Some("remove it and restart addond".into()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o006 != 0 {
        return finding(
            "socket",
            Level::Fail,
            format!("{} has mode {mode:04o}: every local user can drive addond", path.display()),
            Some(format!("chmod 0660 {} (addond sets 0660 itself; something changed it)", path.display())),
        );
    }
    let gid = crate::users::group_id(group);
    let Some(gid) = gid else {
        return finding(
            "socket",
            Level::Warn,
            format!(
                "{} has mode {mode:04o}, but group `{group}` does not exist: only root and the daemon's user may use addonctl",
                path.display()
            ),
            Some(format!("create it (`groupadd --system {group}`; the package does this) and restart addond")),
        );
    };
    if meta.gid() != gid {
        return finding(
            "socket",
            Level::Warn,
            format!("{} belongs to gid {}, not to `{group}` ({gid})", path.display(), meta.gid()),
            Some("restart addond; it gives the socket to daemon.socket_group when it binds it".into()),
        );
    }
    finding("socket", Level::Ok, format!("{} mode {mode:04o}, group {group}", path.display()), None)
}

/// Pings Docker directly (when the daemon is down), as the user running the doctor.
async fn probe_docker(host: &str) -> Finding {
    let path = host.strip_prefix("unix://").unwrap_or(host);
    let fix = Some("start Docker (`systemctl start docker`), then addond".to_string());
    let ping = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(path).await?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), ping).await {
        Ok(Ok(text)) if text.starts_with("HTTP/1.") && text.contains(" 200 ") => {
            finding("docker", Level::Ok, format!("Docker answers at {host} (checked directly: addond is down)"), None)
        }
        Ok(Ok(text)) => finding("docker", Level::Fail, format!("Docker at {host} answered: {}", text.lines().next().unwrap_or("")), fix),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => finding(
            "docker",
            Level::Warn,
            format!("cannot check Docker at {host} as this user (permission denied)"),
            Some("run the doctor with sudo to check Docker while addond is down".into()),
        ),
        Ok(Err(e)) => finding("docker", Level::Fail, format!("Docker does not answer at {host}: {e}"), fix),
        Err(_) => finding("docker", Level::Fail, format!("Docker at {host} did not answer within 5 s"), fix),
    }
}

/// A listening TCP socket found in /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub port: u16,
    pub inode: u64,
}

/// Every listening TCP port on the host (this network namespace), with its socket inode.
pub fn tcp_listeners() -> Vec<Listener> {
    let mut out = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some(port) = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) else { continue };
            let inode = f[9].parse().unwrap_or(0);
            out.insert(Listener { port, inode });
        }
    }
    out.into_iter().collect()
}

/// Which process owns each socket inode (only the processes this user may inspect).
fn socket_owners(inodes: &HashSet<u64>) -> HashMap<u64, (i32, String)> {
    let mut owners = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return owners };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse::<u64>().ok()) {
                if inodes.contains(&inode) {
                    let name = std::fs::read_to_string(p.path().join("comm")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into());
                    owners.insert(inode, (pid, name));
                }
            }
        }
    }
    owners
}

fn check_ports(range: (u16, u16), booked: Option<&HashSet<u16>>, daemon_up: bool) -> Vec<Finding> {
    let (lo, hi) = range;
    let in_range: Vec<Listener> = tcp_listeners().into_iter().filter(|l| l.port >= lo && l.port <= hi).collect();
    let empty = HashSet::new();
    let booked = booked.unwrap_or(&empty);
    let foreign: Vec<&Listener> = in_range.iter().filter(|l| !booked.contains(&l.port)).collect();
    let mut out = Vec::new();
    if foreign.is_empty() {
        out.push(finding("ports", Level::Ok, format!("no other program listens in {lo}–{hi}"), None));
    } else {
        let owners = socket_owners(&foreign.iter().map(|l| l.inode).collect());
        let mut ports: Vec<u16> = foreign.iter().map(|l| l.port).collect();
        ports.dedup();
        let who: Vec<String> = ports
            .iter()
            .map(|p| {
                let owner = foreign.iter().filter(|l| l.port == *p).find_map(|l| owners.get(&l.inode));
                match owner {
                    Some((pid, name)) => format!("{p} ({name}, pid {pid})"),
                    None => format!("{p}"),
                }
            })
            .collect();
        let note = if daemon_up { "" } else { " (addond is down: ports of its running containers may be among them)" };
        out.push(finding(
            "ports",
            Level::Warn,
            format!("{} port(s) in addond's range {lo}–{hi} are taken by other programs{note}: {}", ports.len(), who.join(", ")),
            Some("addond skips them, but they shrink the range: move those programs, or set ports.range_start/range_end in /etc/addond/config.toml and restart addond".into()),
        ));
    }
    let size = u32::from(hi) - u32::from(lo) + 1;
    let used = booked.len() as u32 + foreign.len() as u32;
    let free = size.saturating_sub(used);
    if free < 10.min(size) {
        out.push(finding(
            "ports",
            Level::Warn,
            format!("only {free} of {size} ports in {lo}–{hi} are free"),
            Some("widen ports.range_start/range_end, or remove services you no longer need (`addonctl cleanup --days N`)".into()),
        ));
    }
    out
}

/// Free space on the filesystem holding `path` (or its nearest existing parent).
pub fn disk_free(path: &Path) -> Option<(u64, u64, PathBuf)> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let s = nix::sys::statvfs::statvfs(&p).ok()?;
    let avail = s.blocks_available() as u64 * s.fragment_size() as u64;
    let total = s.blocks() as u64 * s.fragment_size() as u64;
    Some((avail, total, p))
}

fn check_disk(check: &'static str, path: &Path, what: &str) -> Finding {
    let Some((avail, total, at)) = disk_free(path) else {
        return finding(check, Level::Warn, format!("cannot measure free space for {}", path.display()), None);
    };
    let pct = if total > 0 { avail as f64 * 100.0 / total as f64 } else { 0.0 };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let msg = format!("{:.1} GiB free ({pct:.0}%) for {what} ({})", gib(avail), at.display());
    let fix = Some(format!("free space on that filesystem: `docker system prune` removes unused images; `addonctl cleanup --days N` removes old services (their volumes under {} stay)", path.display()));
    if avail < DISK_FAIL_BYTES || pct < DISK_FAIL_PERCENT {
        finding(check, Level::Fail, msg, fix)
    } else if avail < DISK_WARN_BYTES || pct < DISK_WARN_PERCENT {
        finding(check, Level::Warn, msg, fix)
    } else {
        finding(check, Level::Ok, msg, None)
    }
}

fn database_finding(d: &Value) -> Finding {
    let problems: Vec<String> =
        d["integrity"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    let path = d["path"].as_str().unwrap_or("addond.db");
    if problems != ["ok"] {
        return finding(
            "database",
            Level::Fail,
            format!("{path} fails its integrity check: {}", problems.join("; ")),
            Some("stop addond and restore the last backup: `systemctl stop addond && addonctl restore FILE`".into()),
        );
    }
    finding(
        "database",
        Level::Ok,
        format!(
            "{path}: integrity ok, schema {} of {}, {} KiB",
            d["schema_version"],
            d["known_schema_version"],
            d["size_bytes"].as_u64().unwrap_or(0) / 1024
        ),
        None,
    )
}

fn booked_ports_from_db(path: &Path) -> Option<HashSet<u16>> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let mut st = c.prepare("SELECT host_port FROM instances").ok()?;
    let rows = st.query_map([], |r| r.get::<_, i64>(0)).ok()?;
    Some(rows.filter_map(Result::ok).map(|p| p as u16).collect())
}

/// Integrity check on the file itself (addond is down).
fn check_db_directly(path: &Path) -> Finding {
    if !path.exists() {
        return finding("database", Level::Ok, format!("{} does not exist yet (created at the first start)", path.display()), None);
    }
    let res = (|| -> Result<(Vec<String>, i64), rusqlite::Error> {
        let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut st = c.prepare("PRAGMA integrity_check")?;
        let rows: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok((rows, v))
    })();
    let known = crate::store::Store::known_schema_version();
    match res {
        Ok((rows, v)) if rows == ["ok"] && v <= known => {
            finding("database", Level::Ok, format!("{}: integrity ok, schema {v} of {known} (checked directly)", path.display()), None)
        }
        Ok((rows, v)) if rows == ["ok"] => finding(
            "database",
            Level::Fail,
            format!("{} has schema {v}, newer than this addond knows ({known})", path.display()),
            Some("install the addond version that wrote it (or newer)".into()),
        ),
        Ok((rows, _)) => finding(
            "database",
            Level::Fail,
            format!("{} fails its integrity check: {}", path.display(), rows.join("; ")),
            Some("restore the last backup: `addonctl restore FILE` (addond is already stopped)".into()),
        ),
        Err(e) if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen || f.code == rusqlite::ErrorCode::PermissionDenied || f.code == rusqlite::ErrorCode::ReadOnly) => {
            finding(
                "database",
                Level::Warn,
                format!("cannot open {} as this user: {e}", path.display()),
                Some("run the doctor with sudo to check the database while addond is down".into()),
            )
        }
        Err(e) => finding(
            "database",
            Level::Fail,
            format!("{} cannot be read as a database: {e}", path.display()),
            Some("restore the last backup: `addonctl restore FILE`".into()),
        ),
    }
}

/// Renders a report as aligned text with the fixes under the findings.
pub fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        s.push_str(&format!("{:<4}  {:<8}  {}\n", f.level.as_str(), f.check, f.message));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("{:<4}  {:<8}  fix: {fix}\n", "", ""));
        }
    }
    let fails = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warns = findings.iter().filter(|f| f.level == Level::Warn).count();
    s.push_str(&match (fails, warns) {
        (0, 0) => "all checks passed\n".to_string(),
        (0, w) => format!("{w} warning(s), no failures\n"),
        (f, w) => format!("{f} problem(s), {w} warning(s)\n"),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_include_a_bound_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(tcp_listeners().iter().any(|x| x.port == port));
        let f = check_ports((port, port), None, true);
        assert_eq!(f[0].level, Level::Warn, "{f:?}");
        assert!(f[0].message.contains(&port.to_string()), "{f:?}");
        let booked = HashSet::from([port]);
        assert_eq!(check_ports((port, port), Some(&booked), true)[0].level, Level::Ok);
    }

    #[test]
    fn exit_code_only_fails_on_failures() {
        let w = vec![finding("x", Level::Warn, "w", None)];
        assert_eq!(exit_code(&w), 0);
        let f = vec![finding("x", Level::Ok, "", None), finding("y", Level::Fail, "", None)];
        assert_eq!(exit_code(&f), 1);
    }

    #[test]
    fn disk_free_walks_up_to_an_existing_parent() {
        let (avail, total, at) = disk_free(Path::new("/nonexistent/deeper/still")).unwrap();
        assert!(total >= avail);
        assert_eq!(at, Path::new("/"));
    }
}
