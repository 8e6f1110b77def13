//! The spool directory (`source.spool`): bundles dropped by any file transfer, taken once they
//! have arrived whole.
//!
//! A `*.bundle` at the top of the spool is ready when it and its `.sig` are complete: closed
//! after writing or moved in (the daemon's inotify watch says so), or unchanged in size, mtime
//! and inode for [`SETTLE`] (a rescan, for files that arrived while no one watched). A bundle
//! whose `.sig` has not arrived stays pending, never refused for arriving in pieces. What is not
//! a regular file, or is larger than `source.max_bundle_size`, is ready at once: intake refuses
//! it by name. After import each bundle and its `.sig` leave the spool for `done/` or `refused/`
//! beside it, with a `.verdict` file holding the report.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Outcome, Report};

/// How long a file seen only by rescans must stay unchanged to count as complete.
pub const SETTLE: Duration = Duration::from_secs(2);
/// What a bundle without its signature waits for.
const WAITING_FOR_SIG: &str = "its .sig";
/// Most spool entries looked at in one scan; the rest wait for the next.
pub const MAX_ENTRIES: usize = 1000;

/// What a file looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// A bundle in the spool that is not ready yet, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pending {
    pub file: PathBuf,
    pub waiting_for: String,
    /// Still being written (rather than waiting for another file).
    #[serde(skip)]
    pub arriving: bool,
}

/// The spool and what was seen of it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Files last seen by a scan, with when.
    looked: HashMap<OsString, (Stat, Instant)>,
    /// Files the watch saw closed after writing (or moved in), as they were then.
    closed: HashMap<OsString, Stat>,
}

impl Spool {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            looked: HashMap::new(),
            closed: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `done/` or `refused/` beside the spool.
    pub fn outbox(&self, name: &str) -> PathBuf {
        self.dir
            .parent()
            .map_or_else(|| PathBuf::from(name), |p| p.join(name))
    }

    /// Creates the spool (0700) and its two outboxes when missing.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [
            self.dir.clone(),
            self.outbox("done"),
            self.outbox("refused"),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Ok(())
    }

    /// Notes that the watch saw `name` closed after writing or moved into the spool.
    pub fn saw_closed(&mut self, name: OsString) {
        if let Ok(meta) = std::fs::symlink_metadata(self.dir.join(&name)) {
            self.closed.insert(name, Stat::of(&meta));
        }
    }

    /// The bundles ready to import, and those still waiting.
    pub fn scan(&mut self, now: Instant, max_size: u64) -> (Vec<PathBuf>, Vec<Pending>) {
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        let mut looked = HashMap::new();
        for name in bundle_names(&self.dir) {
            let bundle = self.dir.join(&name);
            let mut sig_name = name.clone();
            sig_name.push(".sig");
            let verdict = self.judge(&name, &sig_name, now, max_size, &mut looked);
            match verdict {
                Ok(()) => ready.push(bundle),
                Err(waiting_for) => pending.push(Pending {
                    file: bundle,
                    arriving: waiting_for != WAITING_FOR_SIG,
                    waiting_for: waiting_for.to_owned(),
                }),
            }
        }
        self.looked = looked;
        self.closed
            .retain(|name, _| self.looked.contains_key(name) || name_is_sig_of(name, &self.looked));
        (ready, pending)
    }

    /// `Ok` when the bundle `name` is ready, else what it waits for.
    fn judge(
        &self,
        name: &OsString,
        sig_name: &OsString,
        now: Instant,
        max_size: u64,
        looked: &mut HashMap<OsString, (Stat, Instant)>,
    ) -> Result<(), &'static str> {
        let Ok(meta) = std::fs::symlink_metadata(self.dir.join(name)) else {
            return Err("the bundle to be readable");
        };
        if !meta.is_file() || meta.len() > max_size {
            // Intake refuses these by name; waiting would not change them.
            return Ok(());
        }
        let bundle_done = self.complete(name, &meta, now, looked);
        let Ok(sig_meta) = std::fs::symlink_metadata(self.dir.join(sig_name)) else {
            return Err(WAITING_FOR_SIG);
        };
        if !sig_meta.is_file() {
            return Ok(());
        }
        let sig_done = self.complete(sig_name, &sig_meta, now, looked);
        match (bundle_done, sig_done) {
            (true, true) => Ok(()),
            (false, _) => Err("the bundle to be written completely"),
            (true, false) => Err("its .sig to be written completely"),
        }
    }

    /// Whether the file `name` (now `meta`) has arrived whole; records this look.
    fn complete(
        &self,
        name: &OsString,
        meta: &std::fs::Metadata,
        now: Instant,
        looked: &mut HashMap<OsString, (Stat, Instant)>,
    ) -> bool {
        let stat = Stat::of(meta);
        let since = match self.looked.get(name) {
            Some((before, at)) if *before == stat => *at,
            _ => now,
        };
        looked.insert(name.clone(), (stat, since));
        self.closed.get(name) == Some(&stat) || now.duration_since(since) >= SETTLE
    }

    /// Moves a judged bundle and its `.sig` out of the spool, to `done/` or `refused/`, with
    /// `<name>.verdict` holding the report as JSON. Names are prefixed with the time so that a
    /// bundle dropped again under the same name never overwrites an earlier record.
    pub fn file(&mut self, report: &Report) -> std::io::Result<PathBuf> {
        let outbox = self.outbox(match report.outcome {
            Outcome::Refused { .. } => "refused",
            _ => "done",
        });
        let name = report
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = unique(&outbox, &format!("{}-{name}", crate::store::now()));
        let mut sig = report.path.as_os_str().to_owned();
        sig.push(".sig");
        let mut sig_target = target.as_os_str().to_owned();
        sig_target.push(".sig");
        let mut verdict = target.as_os_str().to_owned();
        verdict.push(".verdict");
        let mut text = serde_json::to_string(report).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&verdict, text)?;
        std::fs::rename(&report.path, &target)?;
        match std::fs::rename(&sig, &sig_target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(target)
    }
}

/// A path in `dir` named `name`, or `name.1`, `name.2`, ... when taken.
fn unique(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{name}.{n}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

fn name_is_sig_of(name: &OsString, looked: &HashMap<OsString, (Stat, Instant)>) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.ends_with(b".sig")
        && looked
            .keys()
            .any(|k| k.as_encoded_bytes() == &bytes[..bytes.len() - 4])
}

/// The names of `*.bundle` entries at the top of `dir` (not hidden), sorted, at most
/// [`MAX_ENTRIES`].
fn bundle_names(dir: &Path) -> Vec<OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<OsString> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| super::is_bundle_name(Path::new(n)))
        .take(MAX_ENTRIES)
        .collect();
    names.sort();
    names
}

/// The bundles waiting in the spool, for `status` (a read-only listing).
pub fn pending(dir: &Path) -> Vec<Pending> {
    bundle_names(dir)
        .into_iter()
        .map(|name| {
            let file = dir.join(&name);
            let mut sig = file.as_os_str().to_owned();
            sig.push(".sig");
            let has_sig = std::fs::symlink_metadata(&sig).is_ok();
            let waiting_for = if has_sig {
                "the daemon to take it"
            } else {
                WAITING_FOR_SIG
            };
            Pending {
                file,
                waiting_for: waiting_for.to_owned(),
                arriving: has_sig,
            }
        })
        .collect()
}
