//! What is on the host now, as the planner needs it (see the contract in [`crate::plan`]).
//!
//! Every path is looked at without following symlinks, ancestors first: an ancestor that is
//! not a directory is reported and nothing below it is looked at. A file's content is named by
//! the blob id in the inventory when its stat data (size, mtime, ctime, inode) is what the
//! inventory recorded, and hashed otherwise: the no-op path stats each managed path and reads
//! only what changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::fs::{FsError, HostFs, Kind, Stat};
use crate::manifest::HostPath;
use crate::plan::{BlobId, Desired, DesiredKind, Observation, Observed, blob_id};
use crate::store::{InventoryRow, StatCache};

/// Stat data recorded within this long of a change is not trusted: a second change in the same
/// timestamp tick could leave it unchanged.
const RACY_NS: i64 = 100_000_000;

/// The tick of a coarse filesystem (ext4 with 128-byte inodes, FAT, many SD-card images).
const COARSE_NS: i64 = 1_000_000_000;
/// Files larger than this are never hashed; such a file always counts as changed.
pub const MAX_HASHED: u64 = 1 << 30;

/// What observe saw.
pub struct Seen {
    pub observation: Observation,
    /// Stat data and blob of each desired file present on the host.
    pub files: BTreeMap<HostPath, (Stat, BlobId)>,
    /// Stat data of every existing path looked at on its own (desired or managed).
    pub stats: HashMap<HostPath, Stat>,
}

/// Looks at the desired paths, the inventory's paths and everything below exact and absent
/// directories.
///
/// `managed` tells paths outpost manages that are not looked at this time (a repair looks at
/// the suspect paths only): they are never reported as extras of an exact directory.
pub fn observe(
    fs: &mut HostFs,
    desired: &[Desired],
    inventory: &[InventoryRow],
    managed: &dyn Fn(&HostPath) -> bool,
) -> Result<Seen, FsError> {
    let inventory: HashMap<HostPath, &InventoryRow> = inventory
        .iter()
        .filter_map(|r| Some((HostPath::parse(&r.path).ok()?, r)))
        .collect();
    let wanted: HashMap<&HostPath, &DesiredKind> =
        desired.iter().map(|d| (&d.path, &d.kind)).collect();
    let mut paths: BTreeSet<HostPath> = desired.iter().map(|d| d.path.clone()).collect();
    paths.extend(inventory.keys().cloned());
    let mut seen = Seen {
        observation: Observation::new(),
        files: BTreeMap::new(),
        stats: HashMap::new(),
    };
    let mut ancestors: HashMap<HostPath, Ancestor> = HashMap::new();
    // Paths come sorted, so neighbours share their parent: a directory checked for the
    // previous path needs no second look.
    let mut last_parent: Vec<u8> = Vec::new();
    for path in &paths {
        let parent = path.parent_bytes().unwrap_or_default();
        if parent.is_empty() || parent != last_parent.as_slice() {
            if !ancestors_are_dirs(fs, path, &mut ancestors, &mut seen.observation)? {
                last_parent.clear();
                continue;
            }
            last_parent = parent.to_vec();
        }
        let Some(stat) = fs.stat(path)? else {
            seen.observation.insert(path.clone(), Observed::Missing);
            continue;
        };
        let hashed = matches!(wanted.get(path), Some(DesiredKind::File { .. }));
        let observed = describe(
            fs,
            path,
            &stat,
            hashed,
            inventory.get(path).copied(),
            &mut seen,
        )?;
        seen.stats.insert(path.clone(), stat);
        let below = match wanted.get(path) {
            Some(DesiredKind::Directory { exact: true, .. } | DesiredKind::Absent) => {
                stat.kind == Kind::Directory
            }
            _ => false,
        };
        seen.observation.insert(path.clone(), observed);
        if below {
            let known = |p: &HostPath| paths.contains(p) || managed(p);
            list_below(fs, path, &known, &mut seen.observation)?;
        }
    }
    Ok(seen)
}

/// What an ancestor directory turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ancestor {
    Directory,
    Missing,
    /// A symlink, file or special file: nothing below it is looked at.
    InTheWay,
}

/// Checks the ancestors of `path` top-down, recording each one that is not a directory: the
/// first one in the way, or every missing one (the plan creates them).
fn ancestors_are_dirs(
    fs: &mut HostFs,
    path: &HostPath,
    known: &mut HashMap<HostPath, Ancestor>,
    observation: &mut Observation,
) -> Result<bool, FsError> {
    let mut chain = Vec::new();
    let mut next = path.parent();
    while let Some(a) = next {
        next = a.parent();
        chain.push(a);
    }
    chain.reverse();
    let mut missing = false;
    for a in chain {
        if missing {
            observation.insert(a.clone(), Observed::Missing);
            known.insert(a, Ancestor::Missing);
            continue;
        }
        let state = match known.get(&a) {
            Some(&state) => state,
            None => {
                let (state, observed) = look_at_ancestor(fs, &a)?;
                if let Some(observed) = observed {
                    observation.insert(a.clone(), observed);
                }
                known.insert(a, state);
                state
            }
        };
        match state {
            Ancestor::Directory => {}
            Ancestor::Missing => missing = true,
            Ancestor::InTheWay => return Ok(false),
        }
    }
    Ok(!missing)
}

fn look_at_ancestor(
    fs: &mut HostFs,
    a: &HostPath,
) -> Result<(Ancestor, Option<Observed>), FsError> {
    let Some(s) = fs.stat(a)? else {
        return Ok((Ancestor::Missing, Some(Observed::Missing)));
    };
    let observed = match s.kind {
        Kind::Directory => return Ok((Ancestor::Directory, None)),
        Kind::Symlink => Observed::Symlink {
            target: fs.read_link(a)?,
        },
        Kind::File => Observed::File {
            blob: null_blob(),
            size: s.size,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
        },
        Kind::Other => Observed::Other,
    };
    Ok((Ancestor::InTheWay, Some(observed)))
}

/// The observed state of an existing path; files are hashed only when `hashed`.
fn describe(
    fs: &mut HostFs,
    path: &HostPath,
    stat: &Stat,
    hashed: bool,
    row: Option<&InventoryRow>,
    seen: &mut Seen,
) -> Result<Observed, FsError> {
    Ok(match stat.kind {
        Kind::Directory => Observed::Directory {
            mode: stat.mode,
            uid: stat.uid,
            gid: stat.gid,
        },
        Kind::Symlink => Observed::Symlink {
            target: fs.read_link(path)?,
        },
        Kind::Other => Observed::Other,
        Kind::File => {
            let blob = if hashed {
                content(fs, path, stat, row, seen)?
            } else {
                null_blob()
            };
            Observed::File {
                blob,
                size: stat.size,
                mode: stat.mode,
                uid: stat.uid,
                gid: stat.gid,
            }
        }
    })
}

/// The blob id of a file: from the stat cache when it still holds, else by hashing.
fn content(
    fs: &mut HostFs,
    path: &HostPath,
    stat: &Stat,
    row: Option<&InventoryRow>,
    seen: &mut Seen,
) -> Result<BlobId, FsError> {
    let expected = row.and_then(|r| BlobId::from_hex(r.blob.as_deref()?.as_bytes()).ok());
    if let (Some(cache), Some(blob)) = (row.and_then(|r| r.stat), expected)
        && cache_holds(&cache, stat)
    {
        seen.files.insert(path.clone(), (*stat, blob));
        return Ok(blob);
    }
    if stat.size > MAX_HASHED {
        return Ok(null_blob());
    }
    let blob = blob_id(&fs.read(path, MAX_HASHED)?);
    seen.files.insert(path.clone(), (*stat, blob));
    Ok(blob)
}

/// Whether stat data recorded in `cache` still vouches for the file's content.
pub fn cache_holds(cache: &StatCache, stat: &Stat) -> bool {
    cache.size == stat.size
        && cache.mtime_ns == stat.mtime_ns
        && cache.ctime_ns == stat.ctime_ns
        && cache.ino == stat.ino
        && settled(stat, cache.cached_ns)
}

/// Whether a path's stat data is old enough to be cached at `at_ns`: a change after `at_ns`
/// cannot leave its timestamps as they are. As git's index does, a timestamp is racy within
/// its filesystem's granularity: a whole-second one is taken to come from a coarse
/// filesystem, where a same-size edit in the same second keeps every stat field.
pub fn settled(stat: &Stat, at_ns: i64) -> bool {
    tick_over(stat.mtime_ns, at_ns) && tick_over(stat.ctime_ns, at_ns)
}

/// Whether the timestamp tick holding `ts` was over by `at_ns` (with a margin).
fn tick_over(ts: i64, at_ns: i64) -> bool {
    let tick = if ts.rem_euclid(COARSE_NS) == 0 {
        COARSE_NS
    } else {
        0
    };
    ts.saturating_add(tick) < at_ns.saturating_sub(RACY_NS)
}

/// A cache entry for `stat`, recorded at `now_ns`.
pub fn cache_of(stat: &Stat, now_ns: i64) -> StatCache {
    StatCache {
        size: stat.size,
        mtime_ns: stat.mtime_ns,
        ctime_ns: stat.ctime_ns,
        ino: stat.ino,
        cached_ns: now_ns,
    }
}

/// A blob id no content has: for files whose content does not matter or cannot be hashed.
fn null_blob() -> BlobId {
    BlobId::null(gix::hash::Kind::Sha1)
}

/// Everything below `dir` that is neither desired nor managed (those are looked at on their
/// own, and a known directory lists its own extras), depth first, not following symlinks. Such paths are only ever removed, so their kind
/// from the directory listing is all that is needed: nothing is stat-ed or hashed.
fn list_below(
    fs: &mut HostFs,
    dir: &HostPath,
    known: &dyn Fn(&HostPath) -> bool,
    observation: &mut Observation,
) -> Result<(), FsError> {
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for (name, kind) in fs.list(&d)? {
            let Ok(path) = HostPath::parse(d.as_path().join(&name)) else {
                continue;
            };
            // A known directory is looked at on its own, extras below it included.
            if known(&path) || observation.contains_key(&path) {
                continue;
            }
            if kind == Kind::Directory {
                stack.push(path.clone());
            }
            let observed = match kind {
                Kind::Directory => Observed::Directory {
                    mode: 0,
                    uid: 0,
                    gid: 0,
                },
                Kind::Symlink => Observed::Symlink {
                    target: fs.read_link(&path)?,
                },
                Kind::File => Observed::File {
                    blob: null_blob(),
                    size: 0,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                },
                Kind::Other => Observed::Other,
            };
            observation.insert(path, observed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mtime_ns: i64, ctime_ns: i64) -> Stat {
        Stat {
            kind: Kind::File,
            size: 4,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns,
            ctime_ns,
            ino: 1,
            dev: 1,
        }
    }

    #[test]
    fn whole_second_timestamps_are_racy_for_a_second() {
        let second = 1_000_000_000;
        // Nanosecond timestamps: settled once the kernel's tick margin has passed.
        let fine = stat(10 * second + 300_000_000, 10 * second + 300_000_000);
        assert!(!settled(&fine, 10 * second + 350_000_000));
        assert!(settled(&fine, 10 * second + 500_000_000));
        // A coarse filesystem: an edit at 10.9 s would still say 10 s.
        let coarse = stat(10 * second, 10 * second);
        assert!(!settled(&coarse, 10 * second + 500_000_000));
        assert!(!settled(&coarse, 11 * second));
        assert!(settled(&coarse, 11 * second + 200_000_000));
        let cache = cache_of(&coarse, 10 * second + 500_000_000);
        assert!(!cache_holds(&cache, &coarse), "recorded within the tick");
    }
}
