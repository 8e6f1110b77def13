//! The no-op fast path: when the inventory describes the host fully for the target commit and
//! this host's config, a reconcile reads the inventory, stats each managed path and compares
//! with the stat cache. Only when something differs, or a cache entry is too fresh to trust,
//! is the full cycle (manifest, observe, plan) run.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::fs::{HostFs, Kind, Stat};
use super::observe::{cache_holds, settled};
use crate::config::Config;
use crate::manifest::HostPath;
use crate::store::{InventoryRow, StatCache};

/// What the desired state depends on besides the commit: the host's name, labels, allowed
/// paths and owner policy, and the user database owner names resolve in.
pub fn fingerprint(config: &Config, commit: &str) -> String {
    let mut h = Sha256::new();
    let mut field = |label: &str, value: &[u8]| {
        h.update(label.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("commit", commit.as_bytes());
    field("name", config.host_name().as_bytes());
    for (k, v) in &config.host.labels {
        field("label", format!("{k}={v}").as_bytes());
    }
    for p in &config.apply.allowed_paths {
        field("allowed", p.as_os_str().as_encoded_bytes());
    }
    field("set_owner", &[u8::from(config.apply.set_owner)]);
    for db in ["/etc/passwd", "/etc/group"] {
        let stamp = std::fs::metadata(db).map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}.{}:{}:{}", m.mtime(), m.mtime_nsec(), m.ino(), m.size())
        });
        field(db, stamp.unwrap_or_default().as_bytes());
    }
    hex::encode(h.finalize())
}

/// The rows whose path is not as the inventory recorded it, judged by stat data alone. An
/// exact directory is a suspect when an entry appeared, went or was renamed in it; what is
/// below it is judged on its own.
///
/// A large inventory is split between threads, one per core (up to four), each with its own
/// handle on the host root (`root`): the time goes into the kernel's path lookups, which run
/// side by side.
pub fn suspects(root: &Path, fs: &mut HostFs, rows: &[InventoryRow]) -> Vec<usize> {
    const PER_THREAD: usize = 2048;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4)
        .min(rows.len() / PER_THREAD)
        .max(1);
    let chunk = rows.len().div_ceil(threads).max(1);
    let mut chunks = rows.chunks(chunk).enumerate();
    let Some((_, first)) = chunks.next() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .map(|(n, rows)| {
                let offset = n * chunk;
                scope.spawn(move || match HostFs::open(root) {
                    Ok(mut fs) => Ok(suspects_in(&mut fs, rows, offset)),
                    Err(_) => Err((rows, offset)),
                })
            })
            .collect();
        let mut out = suspects_in(fs, first, 0);
        for other in others {
            match other.join() {
                Ok(Ok(found)) => out.extend(found),
                // No handle of its own: this thread does its part.
                Ok(Err((rows, offset))) => out.extend(suspects_in(fs, rows, offset)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// [`suspects`] of `rows`, numbered from `offset`.
fn suspects_in(fs: &mut HostFs, rows: &[InventoryRow], offset: usize) -> Vec<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, row)| {
            !HostPath::parse(&row.path).is_ok_and(|path| match fs.stat(&path) {
                Ok(None) => row.kind == "absent",
                Ok(Some(stat)) => holds(row, &stat),
                Err(_) => false,
            })
        })
        .map(|(i, _)| offset + i)
        .collect()
}

fn holds(row: &InventoryRow, stat: &Stat) -> bool {
    let attrs =
        row.mode == Some(stat.mode) && row.uid == Some(stat.uid) && row.gid == Some(stat.gid);
    let cached = |c: &Option<StatCache>| c.as_ref().is_some_and(|c| cache_holds(c, stat));
    match (row.kind.as_str(), stat.kind) {
        ("file", Kind::File) => attrs && cached(&row.stat),
        ("directory", Kind::Directory) if row.exact => {
            attrs && dir_cache_holds(row.stat.as_ref(), stat)
        }
        ("directory", Kind::Directory) => attrs,
        ("symlink", Kind::Symlink) => row.stat.as_ref().is_some_and(|c| {
            c.ino == stat.ino
                && c.mtime_ns == stat.mtime_ns
                && c.ctime_ns == stat.ctime_ns
                && settled(stat, c.cached_ns)
        }),
        _ => false,
    }
}

/// An exact directory's mtime and ctime change when an entry appears, goes or is renamed.
fn dir_cache_holds(cache: Option<&StatCache>, stat: &Stat) -> bool {
    cache.is_some_and(|c| {
        c.ino == stat.ino
            && c.mtime_ns == stat.mtime_ns
            && c.ctime_ns == stat.ctime_ns
            && settled(stat, c.cached_ns)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::observe::cache_of;

    fn config(extra: &str) -> Result<Config, crate::config::ConfigError> {
        let text =
            format!("[host]\nname = \"edge-1\"\n{extra}\n[trust]\nallowed_signers = \"/a\"\n");
        Config::parse(&text, std::path::Path::new("/etc/outpost/config.toml"))
    }

    #[test]
    fn fingerprint_follows_what_the_desired_state_depends_on()
    -> Result<(), Box<dyn std::error::Error>> {
        let base = fingerprint(&config("")?, "c1");
        assert_eq!(base, fingerprint(&config("")?, "c1"));
        assert_ne!(base, fingerprint(&config("")?, "c2"));
        assert_ne!(
            base,
            fingerprint(&config("labels = { role = \"camera\" }")?, "c1")
        );
        assert_ne!(
            base,
            fingerprint(&config("[apply]\nset_owner = false")?, "c1")
        );
        assert_ne!(
            base,
            fingerprint(&config("[apply]\nallowed_paths = [\"/etc\"]")?, "c1")
        );
        Ok(())
    }

    fn row(
        path: &str,
        kind: &str,
        exact: bool,
        stat: Option<&Stat>,
        cached_ns: i64,
    ) -> InventoryRow {
        InventoryRow {
            path: path.to_owned(),
            kind: kind.to_owned(),
            exact,
            blob: None,
            mode: stat.map(|s| s.mode),
            uid: stat.map(|s| s.uid),
            gid: stat.map(|s| s.gid),
            target: None,
            stat: stat.map(|s| cache_of(s, cached_ns)),
        }
    }

    #[test]
    fn suspects_are_the_paths_whose_stat_data_changed() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("opt/app/sub"))?;
        std::fs::write(root.path().join("opt/app/sub/a"), "a")?;
        std::fs::write(root.path().join("opt/b"), "b")?;
        let mut fs = HostFs::open(root.path())?;
        let p = |s: &str| HostPath::parse(s).expect("valid");
        let stat = |fs: &mut HostFs, s: &str| fs.stat(&p(s)).ok().flatten().ok_or("missing");
        let later = i64::MAX / 2;
        let (app, sub, a, b) = (
            stat(&mut fs, "/opt/app")?,
            stat(&mut fs, "/opt/app/sub")?,
            stat(&mut fs, "/opt/app/sub/a")?,
            stat(&mut fs, "/opt/b")?,
        );
        let rows = vec![
            row("/etc/gone", "absent", false, None, later),
            row("/opt/app", "directory", true, Some(&app), later),
            row("/opt/app/sub", "directory", true, Some(&sub), later),
            row("/opt/app/sub/a", "file", false, Some(&a), later),
            row("/opt/b", "file", false, Some(&b), later),
        ];
        assert_eq!(suspects(root.path(), &mut fs, &rows), Vec::<usize>::new());
        std::fs::write(root.path().join("opt/app/sub/extra"), "x")?;
        assert_eq!(
            suspects(root.path(), &mut fs, &rows),
            vec![2],
            "only the tree directory an entry appeared in"
        );
        let fresh = vec![row("/opt/b", "file", false, Some(&b), b.mtime_ns)];
        assert_eq!(
            suspects(root.path(), &mut fs, &fresh),
            vec![0],
            "a cache entry recorded too soon is not trusted"
        );
        Ok(())
    }

    #[test]
    fn a_large_inventory_split_between_threads_finds_the_same_suspects()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let mut fs = HostFs::open(root.path())?;
        let later = i64::MAX / 2;
        let mut rows = Vec::new();
        for d in 0..10 {
            std::fs::create_dir(root.path().join(format!("d{d}")))?;
            for f in 0..500 {
                let rel = format!("d{d}/f{f:03}");
                std::fs::write(root.path().join(&rel), "x")?;
                let path = format!("/{rel}");
                let stat = fs.stat(&HostPath::parse(&path)?)?.ok_or("missing")?;
                rows.push(row(&path, "file", false, Some(&stat), later));
            }
        }
        // One in each part the rows may be split into, and the very last.
        let changed = [7, 2100, 4321, 4999];
        for &i in &changed {
            std::fs::write(root.path().join(&rows[i].path[1..]), "changed")?;
        }
        assert_eq!(suspects(root.path(), &mut fs, &rows), changed);
        Ok(())
    }
}
