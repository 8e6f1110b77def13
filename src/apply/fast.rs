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
use crate::store::{InventoryRow, StatCache, StoreError};

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

/// Rows per chunk the inventory is read and stat-ed in.
pub const CHUNK: usize = 2048;

/// The inventory `read` hands over in chunks, with its suspects ([`suspects`]). Each chunk is
/// stat-ed as soon as it is read, by the next free of one thread per core (up to four, each
/// with its own handle on the host `root`; this thread joins them once everything is read):
/// the time of a no-op goes into the kernel's path lookups and into SQLite, and these run
/// side by side.
pub fn read_suspects(
    root: &Path,
    fs: &mut HostFs,
    read: impl FnOnce(&mut dyn FnMut(Vec<InventoryRow>)) -> Result<(), StoreError>,
) -> Result<(Vec<InventoryRow>, Vec<usize>), StoreError> {
    type Done = Vec<(usize, Vec<InventoryRow>, Vec<usize>)>;
    let helpers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4)
        - 1;
    let (send, receive) = std::sync::mpsc::channel::<(usize, Vec<InventoryRow>)>();
    let receive = std::sync::Mutex::new(receive);
    // Takes chunks until every chunk is read and taken.
    let work = |fs: &mut HostFs| -> Done {
        let mut done = Vec::new();
        loop {
            let next = match receive.lock() {
                Ok(r) => r.recv(),
                Err(_) => return done,
            };
            let Ok((n, rows)) = next else {
                return done;
            };
            let found = suspects(fs, &rows);
            done.push((n, rows, found));
        }
    };
    let (mut done, read) = std::thread::scope(|scope| {
        let mut started = Vec::new();
        let mut chunks = 0;
        let read = read(&mut |rows| {
            // Helpers only for an inventory of more than one chunk.
            if chunks == 1 {
                for _ in 0..helpers {
                    started.push(scope.spawn(|| match HostFs::open(root) {
                        Ok(mut fs) => work(&mut fs),
                        Err(_) => Vec::new(),
                    }));
                }
            }
            // The receiver lives until the scope ends: the send cannot fail.
            let _ = send.send((chunks, rows));
            chunks += 1;
        });
        drop(send);
        let mut done = work(fs);
        for helper in started {
            match helper.join() {
                Ok(theirs) => done.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        (done, read)
    });
    read?;
    done.sort_by_key(|(n, _, _)| *n);
    let mut rows = Vec::with_capacity(done.iter().map(|(_, r, _)| r.len()).sum());
    let mut suspects = Vec::new();
    for (_, chunk, found) in done {
        suspects.extend(found.into_iter().map(|i| rows.len() + i));
        rows.extend(chunk);
    }
    Ok((rows, suspects))
}

/// The rows whose path is not as the inventory recorded it, judged by stat data alone. An
/// exact directory is a suspect when an entry appeared, went or was renamed in it; what is
/// below it is judged on its own.
fn suspects(fs: &mut HostFs, rows: &[InventoryRow]) -> Vec<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, row)| {
            !HostPath::parse(&row.path).is_ok_and(|path| match fs.stat(&path) {
                Ok(None) => row.kind == "absent",
                Ok(Some(stat)) => holds(row, &stat),
                Err(_) => false,
            })
        })
        .map(|(i, _)| i)
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
        assert_eq!(suspects(&mut fs, &rows), Vec::<usize>::new());
        std::fs::write(root.path().join("opt/app/sub/extra"), "x")?;
        assert_eq!(
            suspects(&mut fs, &rows),
            vec![2],
            "only the tree directory an entry appeared in"
        );
        let fresh = vec![row("/opt/b", "file", false, Some(&b), b.mtime_ns)];
        assert_eq!(
            suspects(&mut fs, &fresh),
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
        for d in 0..5 {
            std::fs::create_dir(root.path().join(format!("d{d}")))?;
            for f in 0..100 {
                let rel = format!("d{d}/f{f:03}");
                std::fs::write(root.path().join(&rel), "x")?;
                let path = format!("/{rel}");
                let stat = fs.stat(&HostPath::parse(&path)?)?.ok_or("missing")?;
                rows.push(row(&path, "file", false, Some(&stat), later));
            }
        }
        // One in each of several chunks, and the very last.
        let changed = [7, 210, 432, 499];
        for &i in &changed {
            std::fs::write(root.path().join(&rows[i].path[1..]), "changed")?;
        }
        let (read, found) = read_suspects(root.path(), &mut fs, |f| {
            for chunk in rows.chunks(100) {
                f(chunk.to_vec());
            }
            Ok(())
        })?;
        assert_eq!(read, rows, "every row, in order");
        assert_eq!(found, changed);
        Ok(())
    }
}
