//! The data caches the kernel search sizes its candidates for: this CPU's (Linux sysfs), or
//! sizes assumed with `SEQPIPE_ASSUME_CACHES=l1d=32K,l2=512K` to see what the search picks for
//! a CPU one does not have.
//!
//! The model is deliberately small. A product walks B in k-blocks of `kc` rows of one panel
//! (`kc × nr` floats); every block of rows of A reads that block again, so it must stay in a
//! cache close to the core. Measured on AMD Zen 4 (32 KB L1d, 1 MB L2), k-blocks of 512 and
//! 1,024 (64–128 KB of panel, past L1) were often the fastest: the hardware prefetcher feeds
//! them from L2 well. So the bound is L2: a candidate whose block is larger than half the L2
//! (the other half holds A's rows and C) is not tried. The clock picks among the rest
//! (`tune.rs`). The cache sizes are part of the kernel cache's key, so choices made for assumed
//! sizes never mix with this machine's own.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Fallbacks where sysfs says nothing (not Linux, a container hiding it): common x86-64 sizes.
const DEFAULT_L1D: u64 = 32 << 10;
const DEFAULT_L2: u64 = 1 << 20;
/// Sizes outside this range are refused (in `SEQPIPE_ASSUME_CACHES`) or ignored (sysfs).
const MIN_SIZE: u64 = 4 << 10;
const MAX_SIZE: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caches {
    /// Level-1 data cache, bytes per core.
    pub l1d: u64,
    /// Level-2 cache, bytes per core.
    pub l2: u64,
}

impl Caches {
    /// This CPU's caches, read from `/sys/devices/system/cpu/cpu0/cache` (the defaults for a
    /// level it does not name).
    pub fn here() -> Caches {
        Caches::from_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
    }

    /// The caches a sysfs `cache` folder describes (`index<i>/{level,type,size}`).
    fn from_sysfs(root: &std::path::Path) -> Caches {
        let mut c = Caches {
            l1d: DEFAULT_L1D,
            l2: DEFAULT_L2,
        };
        for i in 0..8 {
            let dir = root.join(format!("index{i}"));
            // sysfs files say they are 4,096 bytes long whatever they hold, so no size check
            // up front: the first 64 bytes are read, which is all a well-formed one has.
            let read = |f: &str| {
                use std::io::Read;
                let mut s = String::new();
                std::fs::File::open(dir.join(f))
                    .ok()?
                    .take(64)
                    .read_to_string(&mut s)
                    .ok()?;
                Some(s.trim().to_string())
            };
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            let Some(bytes) = parse_size(&size).filter(|b| (MIN_SIZE..=MAX_SIZE).contains(b))
            else {
                continue;
            };
            match (level.as_str(), kind.as_str()) {
                ("1", "Data") => c.l1d = bytes,
                ("2", "Unified" | "Data") => c.l2 = bytes,
                _ => {}
            }
        }
        c
    }

    /// `l1d=32K,l2=512K` (either may be left out; K, M and G are powers of 1,024).
    pub fn parse_assumed(s: &str, base: Caches) -> Result<Caches, String> {
        let mut c = base;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(format!("`{part}` is not NAME=SIZE (e.g. l1d=32K,l2=512K)"));
            };
            let bytes = parse_size(value.trim())
                .filter(|b| (MIN_SIZE..=MAX_SIZE).contains(b))
                .ok_or_else(|| format!("`{value}` is not a size from 4K to 1G (e.g. 48K, 2M)"))?;
            match name.trim() {
                "l1d" => c.l1d = bytes,
                "l2" => c.l2 = bytes,
                other => {
                    return Err(format!(
                        "unknown cache `{other}`: the sizes are `l1d` and `l2`"
                    ))
                }
            }
        }
        Ok(c)
    }

    /// The caches the search sizes for: `SEQPIPE_ASSUME_CACHES` over this CPU's.
    pub fn in_use() -> InUse {
        let here = Caches::here();
        let mut u = InUse {
            caches: here,
            assumed: false,
            problem: None,
        };
        if let Ok(v) = std::env::var("SEQPIPE_ASSUME_CACHES") {
            if !v.trim().is_empty() {
                match Caches::parse_assumed(&v, here) {
                    Ok(c) => (u.caches, u.assumed) = (c, true),
                    Err(why) => u.problem = Some(format!("SEQPIPE_ASSUME_CACHES ignored: {why}")),
                }
            }
        }
        u
    }

    /// [`Caches::in_use`], read once per process.
    pub fn current() -> &'static InUse {
        static C: std::sync::OnceLock<InUse> = std::sync::OnceLock::new();
        C.get_or_init(Caches::in_use)
    }

    /// Whether a product may walk B in blocks of `kc` rows (all of `k` when `kc` is 0) of
    /// panels `nr` floats wide: the block fits in half of L2.
    pub fn fits(&self, kc: u32, k: usize, nr: usize) -> bool {
        let rows = if kc == 0 { k } else { (kc as usize).min(k) };
        (rows * nr * 4) as u64 <= self.l2 / 2
    }
}

/// The caches in use, whether they are assumed, and why an assumption was ignored.
#[derive(Clone, Debug)]
pub struct InUse {
    pub caches: Caches,
    pub assumed: bool,
    pub problem: Option<String>,
}

impl fmt::Display for Caches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L1d {} KiB, L2 {} KiB", self.l1d >> 10, self.l2 >> 10)
    }
}

/// `32K`, `1024K`, `2M`, `1G`, or plain bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 10),
        (i, 'M' | 'm') => (&s[..i], 20),
        (i, 'G' | 'g') => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_say_what_is_right() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        let base = Caches {
            l1d: 32 << 10,
            l2: 1 << 20,
        };
        let c = Caches::parse_assumed("l2=256K", base).unwrap();
        assert_eq!((c.l1d, c.l2), (32 << 10, 256 << 10));
        let c = Caches::parse_assumed(" l1d=48K , l2=2M ", base).unwrap();
        assert_eq!((c.l1d, c.l2), (48 << 10, 2 << 20));
        for (bad, says) in [
            ("l3=32M", "unknown cache `l3`"),
            ("l2", "not NAME=SIZE"),
            ("l2=1K", "from 4K to 1G"),
            ("l2=lots", "from 4K to 1G"),
        ] {
            let e = Caches::parse_assumed(bad, base).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn caches_are_read_from_sysfs() {
        let t = tempfile::tempdir().unwrap();
        for (i, level, kind, size) in [
            (0, "1", "Data", "48K"),
            (1, "1", "Instruction", "32K"),
            (2, "2", "Unified", "2048K"),
            (3, "3", "Unified", "32768K"),
        ] {
            let d = t.path().join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            // Padded to the 4,096 bytes sysfs files claim to have: a reader that checks the
            // size first would skip them.
            for (f, v) in [("level", level), ("type", kind), ("size", size)] {
                std::fs::write(d.join(f), format!("{v:<4095}\n")).unwrap();
            }
        }
        let c = Caches::from_sysfs(t.path());
        assert_eq!((c.l1d, c.l2), (48 << 10, 2 << 20));
        assert!(c.to_string().starts_with("L1d 48 KiB, L2 2048 KiB"));
        // Nothing there: the defaults.
        let none = Caches::from_sysfs(&t.path().join("nothing"));
        assert_eq!((none.l1d, none.l2), (DEFAULT_L1D, DEFAULT_L2));
        // This machine's real sysfs (whose files claim 4,096 bytes each) is read, not skipped.
        let real = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache/index0/size");
        if let Ok(s) = std::fs::read_to_string(real) {
            let l1 = std::fs::read_to_string(real.with_file_name("level")).unwrap();
            let kind = std::fs::read_to_string(real.with_file_name("type")).unwrap();
            if l1.trim() == "1" && kind.trim() == "Data" {
                assert_eq!(Caches::here().l1d, parse_size(s.trim()).unwrap());
            }
        }
    }

    #[test]
    fn the_bound_is_half_the_l2() {
        let c = Caches {
            l1d: 32 << 10,
            l2: 256 << 10,
        };
        // 1,024 rows of a 32-float panel: 128 KiB, exactly half.
        assert!(c.fits(1024, 4096, 32));
        // All of k = 1,152 rows: 144 KiB, more than half.
        assert!(!c.fits(0, 1152, 32));
        assert!(c.fits(0, 256, 32));
        // A k-block longer than k is all of k.
        assert!(c.fits(1024, 256, 32));
    }
}
