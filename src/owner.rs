//! A process, identified well enough to tell whether it still runs, and its tag in the names
//! of what it leaves in a store. A leaf: the store, the claims and the checkpoints use it.
//!
//! ## Which machine: host and boot
//!
//! Two containers, or two clusters' `node001`, can share a host name and a pid. An owner's
//! `boot` is the first [`BOOT_HEX`] hex digits of the blake3 digest of the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`, or `/etc/machine-id` where there is none) and of the
//! process's pid namespace (`/proc/self/ns/pid`, one per container). Only an owner with our host
//! name *and* our boot is "here"; of any other, whether it runs cannot be told, and its claims
//! expire by heartbeat only, its leftovers are never removed by us.
//!
//! ## Owner tags in file names
//!
//! Leftovers (staging folders `tmp/<key12>-<ms>~<tag>`, `trash/`, `quarantine/`, a view's
//! `.tmp-…~<tag>`, checkpoints' `ckpt.tmp~<tag>`, live-run records `live/<tag>.json`) carry
//! their writer's tag, [`Owner::tag`]:
//!
//! - `<host>~<pid>~<start>~<boot>`, the current form: host `[A-Za-z0-9._]+`, pid and start decimal
//!   digits, boot exactly [`BOOT_HEX`] lowercase hex digits;
//! - `<host>~<pid>`: written by older seqpipes, and where the start time or boot cannot be
//!   read; its boot and start are unknown, and it is judged by host and pid alone.
//!
//! A name is `<prefix>~<tag>`; [`parse_tag_suffix`] splits it and checks the tag strictly,
//! [`parse_tag`] reads a bare tag.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

/// How many hex digits of the machine digest an [`Owner`]'s `boot` keeps.
pub const BOOT_HEX: usize = 12;

/// A process, identified well enough to tell whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), to tell a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Which kernel boot and pid namespace the pid belongs to ([`BOOT_HEX`] hex digits; see the
    /// module doc), to tell two machines or containers of one host name. `None`: written by an
    /// older seqpipe, or unreadable here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
}

impl Owner {
    /// This process.
    pub fn me() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                host: hostname(),
                pid,
                start: proc_start(pid),
                boot: machine_boot(),
            }
        })
    }

    /// `host~pid~start~boot` (or `host~pid` when the start or boot is unknown): a tag for file
    /// names that a later run can parse back with [`parse_tag_suffix`].
    pub fn tag(&self) -> String {
        match (self.start, &self.boot) {
            (Some(start), Some(boot)) => format!("{}~{}~{start}~{boot}", self.host, self.pid),
            _ => format!("{}~{}", self.host, self.pid),
        }
    }

    /// Whether this owner's pid is a pid of this machine: same host name and same boot (an
    /// owner of unknown boot, from an older seqpipe, is judged by its host name alone).
    pub fn is_local(&self) -> bool {
        let me = Owner::me();
        self.host == me.host
            && match (&self.boot, &me.boot) {
                (None, _) => true,
                (Some(theirs), Some(mine)) => theirs == mine,
                (Some(_), None) => false,
            }
    }

    /// Whether a process of this machine still runs as this owner. `None` when it cannot be
    /// told (another host, another boot or container of the same host name, or no `/proc`).
    pub fn alive_here(&self) -> Option<bool> {
        if !self.is_local() {
            return None;
        }
        if !Path::new("/proc/self/stat").exists() {
            return None;
        }
        match proc_start(self.pid) {
            None => Some(false),
            Some(s) => Some(self.start.is_none_or(|mine| mine == s)),
        }
    }

    /// `pid 123 on node001`, with the boot when it is not this machine's (same host name).
    pub fn describe(&self) -> String {
        match &self.boot {
            Some(b) if self.host == Owner::me().host && !self.is_local() => {
                format!(
                    "pid {} on {} (another machine or container of that name, boot {b})",
                    self.pid, self.host
                )
            }
            _ => format!("pid {} on {}", self.pid, self.host),
        }
    }
}

/// Read a bare tag, `host~pid~start~boot` or the older `host~pid` (see the module doc).
pub fn parse_tag(tag: &str) -> Option<Owner> {
    let (prefix, owner) = parse_tag_suffix(&format!("~{tag}")).map(|(p, o)| (p.len(), o))?;
    (prefix == 0).then_some(owner)
}

/// Split a name `<prefix>~<tag>` into its prefix and the owner its tag names, checking the tag
/// strictly: `host~pid~start~boot`, or the older `host~pid` (boot and start then unknown).
/// `None` when the name ends in no such tag.
pub fn parse_tag_suffix(name: &str) -> Option<(&str, Owner)> {
    fn host_ok(h: &str) -> bool {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    }
    fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    }
    fn boot_ok(b: &str) -> bool {
        b.len() == BOOT_HEX && b.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    }
    let fields: Vec<&str> = name.rsplitn(5, '~').collect();
    // The current form: prefix ~ host ~ pid ~ start ~ boot.
    if let [boot, start, pid, host, prefix] = fields[..] {
        if let (true, Some(pid), Some(start), true) =
            (host_ok(host), digits(pid), digits(start), boot_ok(boot))
        {
            let owner = Owner {
                host: host.to_string(),
                pid,
                start: Some(start),
                boot: Some(boot.to_string()),
            };
            return Some((prefix, owner));
        }
    }
    // The older form: prefix ~ host ~ pid.
    let fields: Vec<&str> = name.rsplitn(3, '~').collect();
    if let [pid, host, prefix] = fields[..] {
        if let (true, Some(pid)) = (host_ok(host), digits(pid)) {
            let owner = Owner {
                host: host.to_string(),
                pid,
                start: None,
                boot: None,
            };
            return Some((prefix, owner));
        }
    }
    None
}

/// Parse the owner out of a name `<anything>~<tag>`; `None` if it has no such tail.
pub fn owner_from_tag(name: &str) -> Option<Owner> {
    parse_tag_suffix(name).map(|(_, o)| o)
}

/// Whether a leftover named for `owner` may be removed: its owner is a dead process of this
/// machine. Leftovers of other hosts, boots or containers are left to their own runs.
pub fn leftover_is_dead(owner: &Owner) -> bool {
    owner.alive_here() == Some(false)
}

/// The machine digest of [`Owner::boot`]: the kernel's boot id (or the machine id) and this
/// process's pid namespace. `None` where neither id can be read.
fn machine_boot() -> Option<String> {
    let id = ["/proc/sys/kernel/random/boot_id", "/etc/machine-id"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())?;
    let ns = fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(boot_digest(&id, &ns))
}

pub(crate) fn boot_digest(id: &str, pid_namespace: &str) -> String {
    let h = blake3::hash(format!("{id}\n{pid_namespace}").as_bytes());
    h.to_hex()[..BOOT_HEX].to_string()
}

fn hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().into_owned();
    let h: String = h
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// Field 22 of `/proc/<pid>/stat`: the start time in ticks since boot.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
