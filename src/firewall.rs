//! The host firewall table that keeps addon networks apart whatever Docker does to its own
//! rules. Docker separates bridges with iptables rules it takes out and puts back each time
//! a network is made or removed, and traffic between bridges passes in between. This module
//! owns one nftables table per `docker.subnet_pool` (`ip addond_<pool>`), which Docker never
//! touches: a base chain on the forward hook, ahead of Docker's filter rules, that drops
//! every packet from an address of the pool to an address of the pool that is not routed
//! out of the interface it came in on, i.e. that crosses from one network's bridge to
//! another's. A drop in any base chain is final, so no accept of Docker's undoes it. The
//! rule depends on the pool alone, so it is applied whole at start (`addond firewall` under
//! systemd, and the daemon itself when it may) and never removed: it must outlive the
//! daemon while containers run. Also here: the record that says it was applied during this
//! boot (for a daemon without the privilege to look), and the status the doctor reports.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::isolation::Subnet;

/// The record's file name in the data directory.
pub const RECORD_NAME: &str = "firewall.json";

/// The match that makes the rule: the destination is not routed out of the interface the
/// packet came in on (nft cannot compare `iifname` with `oifname` directly). Also what a
/// listing is searched for, as `nft` prints it back the same way.
const RULE_MARK: &str = "fib daddr . iif oif missing";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("docker.subnet_pool `{0}` is not an IPv4 range like 172.20.0.0/14")]
    Pool(String),
    #[error("the `nft` command cannot be run ({0}); install the nftables package (`apt-get install nftables`)")]
    NoNft(String),
    #[error("not permitted to read or change the host firewall ({0}): that needs root or CAP_NET_ADMIN")]
    Denied(String),
    #[error("nft failed: {0}")]
    Nft(String),
}

/// The table of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `addond_172_20_0_0_14`: one name per pool, so daemons with different pools (test
    /// daemons, two appliances on one host) each keep theirs, and daemons sharing a pool
    /// share one table with the same rule.
    pub name: String,
    /// `docker.subnet_pool`.
    pub pool: Subnet,
}

impl Table {
    /// The table for `docker.subnet_pool`.
    pub fn for_pool(pool: &str) -> Result<Table, FirewallError> {
        let pool = Subnet::parse(pool).ok_or_else(|| FirewallError::Pool(pool.to_string()))?;
        let name = format!("addond_{}", pool.to_string().replace(['.', '/'], "_"));
        Ok(Table { name, pool })
    }

    /// The whole table as one `nft -f` script. `add` then `delete` then the definition, in
    /// one transaction: the kernel swaps the old table for the new one at once (there is no
    /// moment without the rule), whether or not it existed and whatever an older version
    /// put in it. Plain syntax that nft 0.9 and kernels from 4.19 take too: a numeric
    /// priority (`filter - 10`, before Docker's filter rules at 0), no table comment.
    pub fn ruleset(&self) -> String {
        let (name, pool) = (&self.name, self.pool);
        format!(
            "add table ip {name}\n\
             delete table ip {name}\n\
             table ip {name} {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority -10; policy accept;\n\
             \t\tip saddr {pool} ip daddr {pool} {RULE_MARK} counter drop comment \"from one network of the pool to another\"\n\
             \t}}\n\
             }}\n"
        )
    }

    /// Applies [`Table::ruleset`]. Another program's transaction at the same moment (Docker
    /// rewriting its rules, another daemon applying the same table) may make one attempt
    /// fail; it is tried again.
    pub fn apply(&self) -> Result<(), FirewallError> {
        let script = self.ruleset();
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            match nft(&["-f", "-"], Some(&script)) {
                Ok(_) => return Ok(()),
                Err(e @ (FirewallError::NoNft(_) | FirewallError::Denied(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| FirewallError::Nft("no attempt made".into())))
    }

    /// Looks at the table in the kernel (needs CAP_NET_ADMIN, as any nftables read does).
    pub fn inspect(&self) -> Result<Presence, FirewallError> {
        match nft(&["list", "table", "ip", &self.name], None) {
            Ok(text) => Ok(self.presence_of(&text)),
            Err(FirewallError::Nft(e)) if e.contains("No such file or directory") => Ok(Presence::Absent),
            Err(e) => Err(e),
        }
    }

    /// What a listing of the table says: the drop rule for this pool present (with its
    /// counter), or the table there without it.
    fn presence_of(&self, listing: &str) -> Presence {
        let want = format!("ip saddr {p} ip daddr {p} {RULE_MARK}", p = self.pool);
        match listing.lines().find(|l| l.contains(&want) && l.contains(" drop")) {
            Some(line) => {
                let dropped = line.split("counter packets ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse().ok());
                Presence::Present { dropped }
            }
            None => Presence::Altered,
        }
    }
}

/// The table as listed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// There, with its drop rule.
    Present {
        /// Packets dropped since it was last applied (from its counter).
        dropped: Option<u64>,
    },
    /// There, but its rule is missing or changed (someone edited it).
    Altered,
    /// Not there.
    Absent,
}

/// Runs `nft ARGS` (with `stdin`), its output or the reason it failed.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
    // /usr/sbin is not on every user's PATH.
    let bin = ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("nft");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FirewallError::NoNft(format!("{bin}: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| FirewallError::Nft(format!("writing to {bin}: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| FirewallError::Nft(format!("{bin}: {e}")))?;
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // The last: netlink sockets refused by a sandbox (the unit's RestrictAddressFamilies=).
    if ["Operation not permitted", "Permission denied", "Address family not supported"].iter().any(|m| err.contains(m)) {
        return Err(FirewallError::Denied(first_line(&err)));
    }
    Err(FirewallError::Nft(if err.is_empty() { format!("{bin} exited with {}", out.status) } else { err }))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// Written to the data directory after the table was applied: lets a daemon that may not
/// read the firewall (no CAP_NET_ADMIN under the unit) tell whether `addond firewall`
/// applied it during this boot (tables do not survive a reboot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`Table::name`].
    pub table: String,
    /// The pool it was applied for.
    pub pool: String,
    /// `/proc/sys/kernel/random/boot_id` when it was applied.
    pub boot_id: String,
    /// When, RFC 3339.
    pub applied_at: String,
    /// Which command applied it (`addond firewall`, `addond run`).
    pub by: String,
}

/// This boot's id (empty when unknown).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RECORD_NAME)
}

/// Writes the record of `table` applied now by `by`, readable by the daemon's user whoever
/// writes it (`addond firewall` runs as root with the unit's umask 0077). A data directory
/// that does not exist yet is not made here (the daemon makes it with its own owner).
pub fn write_record(data_dir: &Path, table: &Table, by: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !data_dir.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} does not exist yet", data_dir.display())));
    }
    let rec = Record {
        table: table.name.clone(),
        pool: table.pool.to_string(),
        boot_id: boot_id(),
        applied_at: crate::time::rfc3339_secs(crate::time::now_secs()),
        by: by.to_string(),
    };
    let path = record_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&rec).unwrap_or_default())?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, &path)
}

/// The record, when it is of `table` and of this boot.
pub fn read_record(data_dir: &Path, table: &Table) -> Option<Record> {
    let rec: Record = serde_json::from_slice(&std::fs::read(record_path(data_dir)).ok()?).ok()?;
    let now = boot_id();
    (rec.table == table.name && rec.pool == table.pool.to_string() && !now.is_empty() && rec.boot_id == now).then_some(rec)
}

/// What is known of the table, for the start-up log and the doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Listed in the kernel with its rule.
    Present {
        /// See [`Presence::Present`].
        dropped: Option<u64>,
    },
    /// Listed in the kernel, without its rule.
    Altered,
    /// Not in the kernel.
    Absent,
    /// Not readable by this user, but applied during this boot.
    Recorded(Record),
    /// Not readable by this user, and no record of this boot: most likely absent.
    Unknown {
        /// Why it could not be read.
        reason: String,
    },
}

impl Status {
    /// `present`, `altered`, `absent`, `recorded`, `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Present { .. } => "present",
            Status::Altered => "altered",
            Status::Absent => "absent",
            Status::Recorded(_) => "recorded",
            Status::Unknown { .. } => "unknown",
        }
    }

    /// Whether addon networks are known to be kept apart by the table.
    pub fn holds(&self) -> bool {
        matches!(self, Status::Present { .. } | Status::Recorded(_))
    }

    /// One sentence for a person.
    pub fn describe(&self, table: &Table) -> String {
        let t = format!("nftables table ip {} (docker.subnet_pool {})", table.name, table.pool);
        match self {
            Status::Present { dropped: Some(n) } => format!("{t} is in place; {n} packet(s) between addon networks dropped since it was applied"),
            Status::Present { dropped: None } => format!("{t} is in place"),
            Status::Altered => format!("{t} exists but its drop rule is missing or changed"),
            Status::Absent => format!("{t} is missing: addon networks are kept apart by Docker's own rules only, which open for a moment each time a network is made or removed"),
            Status::Recorded(r) => format!("{t} was applied by `{}` at {} (this boot); this user cannot read the firewall to confirm it", r.by, r.applied_at),
            Status::Unknown { .. } => format!("{t} cannot be read by this user and was not applied during this boot: addon networks may be kept apart by Docker's own rules only, which open for a moment each time a network is made or removed"),
        }
    }
}

/// What is known of `table` from here: the kernel's listing when this user may read it,
/// else the record of this boot.
pub fn status(table: &Table, data_dir: &Path) -> Status {
    match table.inspect() {
        Ok(Presence::Present { dropped }) => Status::Present { dropped },
        Ok(Presence::Altered) => Status::Altered,
        Ok(Presence::Absent) => Status::Absent,
        Err(e) => match read_record(data_dir, table) {
            Some(r) => Status::Recorded(r),
            None => Status::Unknown { reason: e.to_string() },
        },
    }
}

/// At daemon start: applies the table when this process may (root, or CAP_NET_ADMIN), else
/// finds out whether `addond firewall` did, and logs a warning when the networks may not
/// be kept apart.
pub fn ensure_at_start(pool: &str, data_dir: &Path) -> Result<Status, FirewallError> {
    let table = Table::for_pool(pool)?;
    let applied = table.apply();
    if applied.is_ok() {
        if let Err(e) = write_record(data_dir, &table, "addond run") {
            tracing::debug!(error = %e, "cannot write the firewall record");
        }
    }
    let st = status(&table, data_dir);
    match (&applied, st.holds()) {
        (Ok(()), _) => {
            tracing::info!(table = %table.name, pool = %table.pool, "applied the firewall table that keeps addon networks apart")
        }
        (Err(e), true) => tracing::info!(table = %table.name, reason = %e, "{} (not applied by the daemon itself)", st.describe(&table)),
        (Err(e), false) => tracing::warn!(
            table = %table.name, error = %e,
            "{}. Run `sudo addond firewall` (the unit's ExecStartPre=+ does it before every start)",
            st.describe(&table)
        ),
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_of_a_pool() {
        let t = Table::for_pool("172.20.0.0/14").unwrap();
        assert_eq!(t.name, "addond_172_20_0_0_14");
        assert_eq!(
            t.ruleset(),
            "add table ip addond_172_20_0_0_14\n\
             delete table ip addond_172_20_0_0_14\n\
             table ip addond_172_20_0_0_14 {\n\
             \tchain forward {\n\
             \t\ttype filter hook forward priority -10; policy accept;\n\
             \t\tip saddr 172.20.0.0/14 ip daddr 172.20.0.0/14 fib daddr . iif oif missing counter drop comment \"from one network of the pool to another\"\n\
             \t}\n\
             }\n"
        );
        // host bits in the configured pool are cleared, as Docker and the kernel would
        assert_eq!(Table::for_pool("10.9.8.7/16").unwrap().name, "addond_10_9_0_0_16");
        assert!(matches!(Table::for_pool("fd00::/64"), Err(FirewallError::Pool(_))));
    }

    #[test]
    fn reading_a_listing() {
        let t = Table::for_pool("10.198.0.0/16").unwrap();
        // as nft 1.0.6 lists what `ruleset` applied
        let listing = "table ip addond_10_198_0_0_16 {\n\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n\
                       \t\tip saddr 10.198.0.0/16 ip daddr 10.198.0.0/16 fib daddr . iif oif missing counter packets 42 bytes 2520 drop comment \"x\"\n\t}\n}\n";
        assert_eq!(t.presence_of(listing), Presence::Present { dropped: Some(42) });
        assert_eq!(t.presence_of(&listing.replace("10.198.0.0/16", "10.0.0.0/8")), Presence::Altered);
        assert_eq!(t.presence_of(&listing.replace(" drop", " accept")), Presence::Altered);
    }

    #[test]
    fn records_count_for_their_table_and_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::for_pool("10.198.0.0/16").unwrap();
        assert_eq!(read_record(dir.path(), &t), None);
        write_record(dir.path(), &t, "addond firewall").unwrap();
        let r = read_record(dir.path(), &t).unwrap();
        assert_eq!((r.table.as_str(), r.by.as_str()), ("addond_10_198_0_0_16", "addond firewall"));
        assert_eq!(read_record(dir.path(), &Table::for_pool("10.197.0.0/16").unwrap()), None, "another pool's");
        let mut old = r.clone();
        old.boot_id = "another-boot".into();
        std::fs::write(dir.path().join(RECORD_NAME), serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(read_record(dir.path(), &t), None, "a record of an earlier boot");
        assert!(write_record(&dir.path().join("missing"), &t, "x").is_err());
    }
}
