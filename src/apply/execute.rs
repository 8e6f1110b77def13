//! Executing a plan: the journal, the steps, the directory syncs, the new inventory.

use std::collections::{BTreeMap, BTreeSet};

use gix::ObjectId;

use super::fs::{Extras, HostFs, Kind, Stat};
use super::gate::{self, GateFailure};
use super::observe::{self, Seen};
use super::services::{self, Backend, StepFailed};
use super::{Applied, ApplyError, Cycle, now_ns};
use crate::config::Config;
use crate::manifest::HostPath;
use crate::plan::units::UnitStep;
use crate::plan::{Action, Desired, DesiredKind, Observed, Plan, Reason, Step};
use crate::repo::{ObjectStore, Reader};
use crate::store::{
    BadMark, Begin, DeployEvent, Describes, Finish, InventoryRow, JournalStep, Keep, Original,
    Rows, Store, StoreError,
};

/// Removes the temp files an interrupted deployment may have left beside the paths it
/// journalled; returns how many.
pub fn remove_temp_files(fs: &mut HostFs, paths: &[String]) -> usize {
    let dirs: BTreeSet<HostPath> = paths
        .iter()
        .filter_map(|p| HostPath::parse(p).ok()?.parent())
        .collect();
    let mut removed = 0;
    for dir in &dirs {
        match fs.remove_temp_files(dir) {
            Ok(n) => removed += n,
            Err(e) => tracing::debug!(dir = %dir, error = %e, "no temp files removed"),
        }
    }
    removed
}

/// What a deployment is, besides its plan.
pub struct Intent<'a> {
    /// `apply`, `repair` or `rollback`.
    pub kind: &'a str,
    /// The interrupted deployment it resumes (id, message).
    pub resumes: Option<(i64, &'a str)>,
    /// The commit a rollback leaves: marked bad with the journal.
    pub leaves: Option<&'a str>,
    /// Test hook: abort after this many steps.
    pub fault_after: Option<usize>,
}

/// The bytes of a blob from the object store, held once: they are moved out of the object,
/// not copied (a 1 GiB file costs 1 GiB, not 2).
pub fn blob(
    repo: &gix::Repository,
    blob: ObjectId,
    path: &HostPath,
) -> Result<Vec<u8>, ApplyError> {
    let object = repo.find_object(blob).map_err(|e| ApplyError::ReadBlob {
        blob,
        path: path.clone(),
        message: e.probable_cause().to_string(),
    })?;
    Ok(object.detach().data)
}

/// The largest file outpost keeps as an original when it takes the path over; a larger one is
/// refused before anything changes.
pub const MAX_ORIGINAL: u64 = observe::MAX_HASHED;

/// Journals and executes the cycle's plan (unit steps around the file steps, then the health
/// gate), then records the new inventory.
pub fn run(
    config: &Config,
    store: &Store,
    objects: &ObjectStore,
    fs: &mut HostFs,
    cycle: Cycle,
    intent: &Intent<'_>,
    fingerprint: &str,
) -> Result<Applied, ApplyError> {
    let Cycle {
        planned,
        desired,
        seen,
        managed,
        originals,
        previous,
        partial,
        services,
    } = cycle;
    let commit = planned.commit.to_string();
    let same = planned.deployed.as_deref() == Some(commit.as_str());
    let kind = intent.kind;
    let plan = planned.plan;
    if plan.is_empty() && same && intent.resumes.is_none() {
        // Nothing to change: the inventory now describes the host, with fresh stat data,
        // so the next reconcile can take the fast path.
        let rows = Inventory {
            desired: &desired,
            seen: &seen,
            written: &BTreeMap::new(),
            now: now_ns(),
        };
        let kept = services.kept();
        let describes = Describes {
            commit: &commit,
            fingerprint,
            services: kept.as_deref(),
        };
        store.refresh_inventory(&rows, !partial, describes)?;
        return Ok(Applied::nothing(commit, planned.note));
    }
    let clock = std::time::Instant::now();
    preflight(fs, store, &plan)?;
    let managed: BTreeSet<&HostPath> = managed.iter().map(|m| &m.path).collect();
    let kept_originals: BTreeSet<&str> = originals.iter().map(String::as_str).collect();
    let to_keep = capture_originals(fs, &plan, &seen, &managed, &kept_originals)?;
    let journal = Journal(&plan);
    let bad_reason = format!("rolled back to {commit}");
    let mut begun = Vec::new();
    if let Some(left) = intent.leaves {
        begun.push(DeployEvent {
            kind: "rolled-back",
            path: left.to_owned(),
            message: format!("rolled back from {left} to {commit}; {left} is marked bad"),
        });
    }
    if let Some((resumed, _)) = intent.resumes {
        begun.push(DeployEvent {
            kind: "resumed",
            path: commit.clone(),
            message: format!("resumes deployment #{resumed}, interrupted"),
        });
    }
    let begin = Begin {
        commit: &commit,
        kind,
        count: plan.steps.len(),
        steps: &journal,
        originals: &to_keep,
        resumes: intent.resumes,
        bad: intent.leaves.map(|left| (left, bad_reason.as_str())),
        events: &begun,
    };
    let mut open = |path: &str| -> std::io::Result<std::fs::File> {
        let path = HostPath::parse(path).map_err(std::io::Error::other)?;
        let open = fs.open_regular(&path, MAX_ORIGINAL);
        open.map(|o| o.file).map_err(std::io::Error::other)
    };
    let id = store.begin_deployment(&begin, &mut open)?;
    tracing::debug!(elapsed = ?clock.elapsed(), steps = plan.steps.len(), "journalled");
    // Journalled: the originals' copies are not held while the steps run.
    drop((to_keep, begun));

    // From here on every way out goes through `finish`: the deployment ends `success` or
    // `failed` with its error, never `running` (only a crash leaves it so).
    let mut progress = Progress::default();
    let mut backend = Backend::new(config);
    let unit_failed = |f: StepFailed| gate_error(&commit, f);
    let result = services::before_files(&mut backend, &plan, &mut progress.units)
        .map_err(unit_failed)
        .and_then(|()| steps(fs, objects, store, &plan, intent.fault_after, &mut progress));
    // The steps done are made durable even when a later one failed.
    tracing::debug!(elapsed = ?clock.elapsed(), "file steps done");
    let result = result.and(sync_dirs(fs, &progress));
    tracing::debug!(elapsed = ?clock.elapsed(), "directories synced");
    let result = result.and_then(|()| {
        services::after_files(&mut backend, &services, &plan, &mut progress.units)
            .map_err(unit_failed)?;
        gate::run(&mut backend, &services, config, &commit).map_err(|failure| ApplyError::Gate {
            commit: commit.clone(),
            failure: Box::new(failure),
        })
    });
    let kept = services.kept();
    let ended = Ended {
        commit: &commit,
        fingerprint,
        desired: &desired,
        seen: &seen,
        previous: &previous,
        kept: &kept_originals,
        partial,
        services: kept.as_deref(),
        kind,
        repair: same,
    };
    let repairs = finish(store, id, &ended, &plan, &progress, result)?;
    tracing::debug!(elapsed = ?clock.elapsed(), "recorded");
    Ok(Applied {
        commit,
        kind: kind.into(),
        steps: plan.steps.len(),
        repairs,
        note: planned.note,
        plan,
        resumed: None,
    })
}

/// What the steps done so far did: for the inventory and the directory syncs. Paths are
/// borrowed from the plan: a deployment of many files holds each path once.
#[derive(Default)]
struct Progress<'p> {
    /// Paths whose step completed.
    done: BTreeSet<&'p HostPath>,
    /// Stat data of the files written.
    written: BTreeMap<&'p HostPath, Stat>,
    /// Paths removed: they, and everything below them, are gone.
    removed: BTreeSet<&'p HostPath>,
    /// Notes of the originals restored, for their events.
    notes: BTreeMap<&'p HostPath, String>,
    /// Unit steps done.
    units: Vec<UnitStep>,
}

impl Progress<'_> {
    /// Whether `path` or a directory above it was removed.
    fn gone(&self, path: &HostPath) -> bool {
        std::iter::successors(Some(path.clone()), HostPath::parent)
            .any(|p| self.removed.contains(&p))
    }

    /// The directories whose entries changed and that still exist (`None`: the host root).
    /// A removed directory is not flushed: its parent is, which makes the removal durable.
    fn dirs_to_sync(&self) -> BTreeSet<Option<HostPath>> {
        let mut dirs = BTreeSet::new();
        let mut last = None;
        for path in &self.done {
            // In order, the files of a directory come together: one look for all of them.
            let parent = path.parent_bytes();
            if last == Some(parent) {
                continue;
            }
            last = Some(parent);
            let dir = path.parent();
            if dir.as_ref().is_none_or(|d| !self.gone(d)) {
                dirs.insert(dir);
            }
        }
        dirs
    }
}

/// Test hook value of `fault_after`: a crash right after the first durability barrier,
/// before any staged file is renamed into place.
pub const AT_BARRIER: usize = usize::MAX;

/// Files written per durability barrier, at most (and at most this many bytes): bounds the
/// temporary files a batch leaves beside their destinations.
const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 256 << 20;

/// Executes the plan's steps in order, recording each one done. File writes are batched: their
/// temporary files are written, then made durable together and renamed into place
/// ([`HostFs::commit_staged`]) before any removal or restore, and at the end.
fn steps<'p>(
    fs: &mut HostFs,
    objects: &ObjectStore,
    store: &Store,
    plan: &'p Plan,
    fault_after: Option<usize>,
    progress: &mut Progress<'p>,
) -> Result<(), ApplyError> {
    let mut batch = Batch::default();
    let mut reader = objects.reader();
    let at_barrier = fault_after == Some(AT_BARRIER);
    let result = (|| {
        for (n, step) in plan.steps.iter().enumerate() {
            if fault_after == Some(n) {
                // Test hook: a crash at an exact point of the deployment, once the steps
                // before it are done.
                batch.commit(fs, progress, false)?;
                std::process::abort();
            }
            if matches!(step.action, Action::Remove { .. } | Action::Restore) {
                batch.commit(fs, progress, at_barrier)?;
            }
            match execute(fs, &mut reader, store, step, &mut batch)? {
                Done::Staged => {
                    batch.paths.push(&step.path);
                    if batch.files.len() >= BATCH_FILES || batch.bytes >= BATCH_BYTES {
                        batch.commit(fs, progress, at_barrier)?;
                    }
                    // Done once its batch is in place.
                    continue;
                }
                Done::Removed => {
                    progress.removed.insert(&step.path);
                }
                Done::Restored(note) => {
                    progress.notes.insert(&step.path, note);
                }
                Done::Changed => {}
            }
            progress.done.insert(&step.path);
        }
        batch.commit(fs, progress, at_barrier)
    })();
    if result.is_err() {
        // The files written before the failing step are whole: they are put in place, so the
        // steps done stay done as without batching.
        if let Err(e) = batch.commit(fs, progress, false) {
            tracing::warn!(error = %error_chain(&e), "files written before the failure were not put in place");
        }
    }
    result
}

/// Files written but not yet durable nor in place.
#[derive(Default)]
struct Batch<'p> {
    files: Vec<super::fs::Staged>,
    /// The plan's path of each file.
    paths: Vec<&'p HostPath>,
    bytes: u64,
}

impl<'p> Batch<'p> {
    /// Makes the batch durable and puts it in place, recording each file done.
    fn commit(
        &mut self,
        fs: &mut HostFs,
        progress: &mut Progress<'p>,
        abort_at_barrier: bool,
    ) -> Result<(), ApplyError> {
        self.bytes = 0;
        let paths = std::mem::take(&mut self.paths);
        if self.files.is_empty() {
            return Ok(());
        }
        let files = std::mem::take(&mut self.files);
        let mut done = |i: usize, stat: Stat| {
            if let Some(&path) = paths.get(i) {
                progress.written.insert(path, stat);
                progress.done.insert(path);
            }
        };
        fs.commit_staged(files, &mut done, abort_at_barrier)?;
        Ok(())
    }
}

/// Makes the renames and removals of the deployment durable ([`HostFs::sync_dirs`]).
fn sync_dirs(fs: &mut HostFs, progress: &Progress) -> Result<(), ApplyError> {
    let dirs = progress.dirs_to_sync();
    fs.sync_dirs(dirs.iter().map(Option::as_ref))?;
    Ok(())
}

/// What a deployment's end is recorded against.
struct Ended<'a> {
    commit: &'a str,
    fingerprint: &'a str,
    desired: &'a [Desired],
    seen: &'a Seen,
    previous: &'a [InventoryRow],
    kept: &'a BTreeSet<&'a str>,
    partial: bool,
    /// What the manifest asks of systemd, for the inventory meta.
    services: Option<&'a str>,
    /// `apply`, `repair`, `rollback`: an `apply` whose gate fails marks its commit bad.
    kind: &'a str,
    /// It deploys the commit already deployed: unit steps are drift repairs.
    repair: bool,
}

/// A unit step that failed fails the gate: the deployment is rolled back like one whose
/// health check failed.
fn gate_error(commit: &str, f: StepFailed) -> ApplyError {
    let check = if f.unit.is_empty() {
        "units".to_owned()
    } else {
        format!("unit {}", f.unit)
    };
    ApplyError::Gate {
        commit: commit.to_owned(),
        failure: Box::new(GateFailure {
            check,
            reason: f.error.to_string(),
            output: f.journal,
        }),
    }
}

/// The one place a journalled deployment ends. After `Ok`, it is recorded a success with the
/// new inventory and its events; returns how many drifted paths it repaired. After an error,
/// or when recording the success fails, it is recorded failed with that error, the inventory
/// of the steps done and their events, and the error is returned. Only when even that cannot
/// be written does the deployment stay `running`, which the next apply treats as interrupted.
fn finish(
    store: &Store,
    id: i64,
    ended: &Ended<'_>,
    plan: &Plan,
    progress: &Progress,
    result: Result<(), ApplyError>,
) -> Result<usize, ApplyError> {
    let restored = restored(plan, progress, ended, result.is_err());
    let drifted = drifted(ended.previous, ended.seen);
    let mut events = events(plan, ended.commit, &drifted, progress);
    for step in &progress.units {
        let (kind, text) = services::event(step, ended.repair);
        events.push(DeployEvent {
            kind,
            path: step.unit.clone(),
            message: format!("{text} (commit {})", ended.commit),
        });
    }
    let error = match result {
        Ok(()) => {
            let inventory = Inventory {
                desired: ended.desired,
                seen: ended.seen,
                written: &progress.written,
                now: now_ns(),
            };
            let repairs = plan
                .steps
                .iter()
                .filter(|s| drifted.contains(&s.path))
                .map(|s| &s.path)
                .collect::<BTreeSet<_>>()
                .len();
            let finish = Finish {
                result: "success",
                error: None,
                inventory: &inventory,
                restored: &restored,
                events: &events,
                repairs: repairs as u64,
                describes: Some(Describes {
                    commit: ended.commit,
                    fingerprint: ended.fingerprint,
                    services: ended.services,
                }),
                whole: !ended.partial,
                bad: None,
            };
            match store.finish_deployment(id, &finish) {
                Ok(()) => return Ok(repairs),
                Err(e) => ApplyError::from(e),
            }
        }
        Err(e) => e,
    };
    let message = error_chain(&error);
    let mark = match &error {
        ApplyError::Gate { failure, .. } => {
            events.push(DeployEvent {
                kind: "health-failed",
                path: failure.check.clone(),
                message: format!(
                    "health gate failed for commit {}: {}: {}{}",
                    ended.commit,
                    failure.check,
                    failure.reason,
                    if failure.output.is_empty() {
                        String::new()
                    } else {
                        format!("\n{}", failure.output)
                    }
                ),
            });
            (ended.kind == "apply").then(|| BadMark {
                reason: format!(
                    "its health gate failed: {}: {}",
                    failure.check, failure.reason
                ),
                check: Some(failure.check.clone()),
                output: Some(failure.output.clone()),
            })
        }
        _ => None,
    };
    let (inventory, whole) = match partial_inventory(store, ended.desired, progress, plan) {
        Ok(rows) => (rows, true),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "keeping the previous inventory");
            (Vec::new(), false)
        }
    };
    let finish = Finish {
        result: "failed",
        error: Some(&message),
        inventory: &inventory,
        restored: &restored,
        events: &events,
        repairs: 0,
        describes: None,
        whole,
        bad: mark.as_ref().map(|m| (ended.commit, m)),
    };
    if let Err(e) = store.finish_deployment(id, &finish) {
        tracing::warn!(
            error = %error_chain(&e),
            "cannot record the failed deployment; the next apply treats it as interrupted"
        );
    }
    Err(error)
}

/// An error with its sources, as the command line prints it.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// The originals no longer kept: those given back by the steps done, and those of paths now
/// `absent` or below one (absent means gone: dropping the entry later restores nothing).
fn restored(plan: &Plan, progress: &Progress, ended: &Ended<'_>, failed: bool) -> Vec<String> {
    let kept = ended.kept;
    let mut out: BTreeSet<String> = plan
        .steps
        .iter()
        .filter(|s| progress.done.contains(&s.path))
        .filter(|s| {
            matches!(s.action, Action::Restore)
                || (matches!(s.reason, Reason::Pruned | Reason::Absent)
                    && kept.contains(s.path.to_string().as_str()))
        })
        .map(|s| s.path.to_string())
        .collect();
    let absent: Vec<&HostPath> = ended
        .desired
        .iter()
        .filter(|d| d.kind == DesiredKind::Absent)
        .map(|d| &d.path)
        .collect();
    for path in kept.iter().filter_map(|k| HostPath::parse(k).ok()) {
        let gone = absent.iter().any(|a| path == **a || path.is_below(a));
        // A failed deployment may not have got to it: it is on the host still.
        if gone && (progress.done.contains(&path) || !failed) {
            out.insert(path.to_string());
        }
    }
    out.into_iter().collect()
}

/// Free space kept on top of what a deployment needs: 1 MiB plus 5 %.
fn margin(needed: u64) -> u64 {
    needed.saturating_add(needed / 20).saturating_add(1 << 20)
}

/// What a deployment writes to one filesystem.
#[derive(Default)]
struct Writes {
    /// The first path written there, to name in an error.
    first: Option<HostPath>,
    /// New bytes minus the bytes of the files they replace.
    growth: i128,
    /// The largest file written: it exists beside the one it replaces until the rename.
    largest: u64,
    /// Bytes of the files replaced: a batch of new files exists beside the ones they replace
    /// until the batch is renamed into place.
    replaced: u64,
    available: u64,
}

/// Refuses, before any change, a plan that writes into a read-only filesystem or needs more
/// space than a filesystem has (the bytes it writes, plus a margin): a full disk half way
/// would leave a mix of old and new files.
fn preflight(fs: &mut HostFs, store: &Store, plan: &Plan) -> Result<(), ApplyError> {
    let mut checked: BTreeMap<HostPath, u64> = BTreeMap::new();
    let mut filesystems: BTreeMap<u64, Writes> = BTreeMap::new();
    for step in &plan.steps {
        let Some(parent) = step.path.parent() else {
            continue;
        };
        let dev = match checked.get(&parent) {
            Some(dev) => *dev,
            None => {
                let found = fs.filesystem(&step.path)?;
                if found.read_only {
                    return Err(ApplyError::ReadOnly {
                        path: step.path.clone(),
                    });
                }
                checked.insert(parent, found.dev);
                filesystems.entry(found.dev).or_default().available = found.available;
                found.dev
            }
        };
        let (new, old) = match &step.action {
            Action::Write { size, old, .. } => {
                let old = match old {
                    Some(Observed::File { size, .. }) => *size,
                    _ => 0,
                };
                (size.unwrap_or(0), old)
            }
            Action::Restore => (store.original_size(&step.path.to_string())?.unwrap_or(0), 0),
            _ => continue,
        };
        let writes = filesystems.entry(dev).or_default();
        writes.first.get_or_insert_with(|| step.path.clone());
        writes.growth += i128::from(new) - i128::from(old);
        writes.largest = writes.largest.max(new);
        writes.replaced = writes.replaced.saturating_add(old);
    }
    for writes in filesystems.into_values() {
        let Some(path) = writes.first else {
            continue;
        };
        let growth = u64::try_from(writes.growth.max(0)).unwrap_or(u64::MAX);
        // Until a batch is renamed, its new files and the old ones they replace both exist.
        let both = writes.replaced.min(BATCH_BYTES).max(writes.largest);
        let needed = margin(growth.saturating_add(both));
        if needed > writes.available {
            return Err(ApplyError::NoSpace {
                path,
                needed,
                available: writes.available,
            });
        }
    }
    Ok(())
}

/// Whether `step` takes its path over: it changes a path outpost neither manages nor keeps
/// the original of. `absent` means gone: what it removes is not kept (nor read).
fn takes_over(step: &Step, managed: &BTreeSet<&HostPath>, kept: &BTreeSet<&str>) -> bool {
    let changes = match &step.reason {
        Reason::Parent | Reason::Pruned | Reason::Absent => false,
        // What a tree removes from a directory it takes over now is kept, and comes back when
        // the tree goes; what appears later in a tree's directory is drift.
        Reason::NotInTree(root) => !managed.contains(root),
        Reason::Missing | Reason::Drifted => true,
    };
    changes && !managed.contains(&step.path) && !kept.contains(step.path.to_string().as_str())
}

/// Refuses, at plan time, to take over a file too large to keep as an original.
pub fn check_originals(
    plan: &Plan,
    seen: &Seen,
    managed: &[crate::plan::Managed],
    kept: &[String],
) -> Result<(), ApplyError> {
    let managed: BTreeSet<&HostPath> = managed.iter().map(|m| &m.path).collect();
    let kept: BTreeSet<&str> = kept.iter().map(String::as_str).collect();
    for step in plan.steps.iter().filter(|s| takes_over(s, &managed, &kept)) {
        if let Some(Observed::File { size, .. }) = seen.observation.get(&step.path)
            && *size > MAX_ORIGINAL
        {
            return Err(ApplyError::OriginalTooLarge {
                path: step.path.clone(),
                size: *size,
                max: MAX_ORIGINAL,
            });
        }
    }
    Ok(())
}

/// What is at each path the plan changes that outpost does not manage yet and has not kept.
fn capture_originals(
    fs: &mut HostFs,
    plan: &Plan,
    seen: &Seen,
    managed: &BTreeSet<&HostPath>,
    kept: &BTreeSet<&str>,
) -> Result<Vec<Keep>, ApplyError> {
    let mut out: Vec<Keep> = Vec::new();
    let mut taken: BTreeSet<HostPath> = BTreeSet::new();
    for step in &plan.steps {
        if !takes_over(step, managed, kept) || taken.contains(&step.path) {
            continue;
        }
        // A tree's extras come back into their directory: it is kept too.
        if let Reason::NotInTree(root) = &step.reason
            && !kept.contains(root.to_string().as_str())
            && taken.insert(root.clone())
            && let Some(st) = fs.stat(root)?
        {
            out.push(Keep {
                original: directory_original(root, &st),
                content: None,
            });
        }
        taken.insert(step.path.clone());
        let bare = |kind: &str, (mode, uid, gid): (u32, u32, u32)| Original {
            path: step.path.to_string(),
            kind: kind.into(),
            bytes: None,
            mode,
            uid,
            gid,
            target: None,
            mtime_ns: None,
            xattrs: Vec::new(),
            note: None,
        };
        let keep = match seen.observation.get(&step.path) {
            Some(Observed::File { .. }) => {
                // Looked at now; its content is read into the store, in pieces, with the
                // journal.
                let open = fs.open_original(&step.path, MAX_ORIGINAL)?;
                let st = open.stat;
                let note = (open.links > 1).then(|| {
                    format!(
                        "it was one of {} hard links to one file; restored as a file of its own with the same content",
                        open.links
                    )
                });
                Keep {
                    original: Original {
                        mtime_ns: open.extras.mtime_ns,
                        xattrs: open.extras.xattrs,
                        note,
                        ..bare("file", (st.mode, st.uid, st.gid))
                    },
                    content: Some(MAX_ORIGINAL),
                }
            }
            Some(Observed::Symlink { target }) => Keep {
                original: Original {
                    target: Some(target.display().to_string()),
                    ..bare("symlink", (0o777, 0, 0))
                },
                content: None,
            },
            // A tree's extra was only listed: its attributes are looked up now.
            Some(Observed::Directory { .. }) if matches!(step.reason, Reason::NotInTree(_)) => {
                let Some(st) = fs.stat(&step.path)? else {
                    continue;
                };
                Keep {
                    original: directory_original(&step.path, &st),
                    content: None,
                }
            }
            Some(Observed::Directory { mode, uid, gid }) => Keep {
                original: bare("directory", (*mode, *uid, *gid)),
                content: None,
            },
            _ => continue,
        };
        out.push(keep);
    }
    Ok(out)
}

fn directory_original(path: &HostPath, st: &Stat) -> Original {
    Original {
        path: path.to_string(),
        kind: "directory".into(),
        bytes: None,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        target: None,
        mtime_ns: None,
        xattrs: Vec::new(),
        note: None,
    }
}

/// What one step did.
enum Done {
    /// A file was written beside its destination, into the batch: done once the batch is.
    Staged,
    /// The path is gone (a directory: it was empty).
    Removed,
    /// An original was restored, with this note for its event.
    Restored(String),
    /// Anything else: created, changed, restored, or a directory left in place.
    Changed,
}

/// Executes one step.
fn execute(
    fs: &mut HostFs,
    objects: &mut Reader<'_>,
    store: &Store,
    step: &Step,
    batch: &mut Batch,
) -> Result<Done, ApplyError> {
    let path = &step.path;
    match &step.action {
        Action::CreateDirectory { mode, owner, group } => {
            fs.create_dir(path, *mode, Some((owner.uid, group.gid)))?
        }
        Action::Write {
            blob: id,
            mode,
            owner,
            group,
            ..
        } => {
            let bytes = blob(objects.repo(), *id, path)?;
            let staged = fs.stage_file(path, &bytes, *mode, Some((owner.uid, group.gid)))?;
            batch.files.push(staged);
            batch.bytes += bytes.len() as u64;
            return Ok(Done::Staged);
        }
        Action::Chmod { to, .. } => fs.set_mode(path, *to)?,
        Action::Chown { owner, group, .. } => fs.set_owner(path, owner.uid, group.gid)?,
        Action::Symlink { target, .. } => fs.symlink(path, target)?,
        Action::Remove { .. } => {
            if fs.remove(path)? {
                return Ok(Done::Removed);
            }
            tracing::warn!(path = %path, "directory not empty: left in place");
        }
        Action::Restore => {
            if let Some(note) = restore(fs, store, path)? {
                return Ok(Done::Restored(note));
            }
        }
    }
    Ok(Done::Changed)
}

/// Puts back what was at `path` before outpost took it over: a file with its content, mode,
/// owner, modification time and extended attributes. Returns the original's note, if any.
fn restore(fs: &mut HostFs, store: &Store, path: &HostPath) -> Result<Option<String>, ApplyError> {
    let Some(original) = store.original(&path.to_string())? else {
        return Ok(None);
    };
    let owner = Some((original.uid, original.gid));
    match (original.kind.as_str(), &original.bytes, &original.target) {
        ("file", bytes, _) => {
            let extras = Extras {
                mtime_ns: original.mtime_ns,
                xattrs: original.xattrs,
            };
            // Kept by an older outpost as one blob, or in pieces, streamed back.
            let mut source: Box<dyn std::io::Read + '_> = match bytes {
                Some(bytes) => Box::new(std::io::Cursor::new(bytes)),
                None => Box::new(store.original_content(&original.path)),
            };
            fs.write_file_from(path, &mut source, original.mode, owner, &extras)?;
        }
        ("symlink", _, Some(target)) => fs.symlink(path, std::path::Path::new(target))?,
        ("directory", _, _) => {
            if fs.stat(path)?.is_some_and(|s| s.kind == Kind::Directory) {
                fs.set_owner(path, original.uid, original.gid)?;
                fs.set_mode(path, original.mode)?;
            } else {
                fs.create_dir(path, original.mode, owner)?;
            }
        }
        _ => {}
    }
    Ok(original.note)
}

/// The journal of a plan's steps, each row made as it is written.
struct Journal<'a>(&'a Plan);

impl Rows<JournalStep> for Journal<'_> {
    fn each(
        &self,
        f: &mut dyn FnMut(&JournalStep) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for s in &self.0.steps {
            f(&JournalStep {
                path: s.path.to_string(),
                step: s.to_string(),
                touches: !matches!(s.action, Action::Remove { .. } | Action::Restore),
            })?;
        }
        Ok(())
    }
}

/// The inventory after a successful deployment: every desired path as it now is, each row
/// made as it is written.
struct Inventory<'a> {
    desired: &'a [Desired],
    seen: &'a Seen,
    written: &'a BTreeMap<&'a HostPath, Stat>,
    now: i64,
}

impl Rows<InventoryRow> for Inventory<'_> {
    fn each(
        &self,
        f: &mut dyn FnMut(&InventoryRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for d in self.desired {
            let mut row = row_of(d);
            // Stat data from before a step changed the path no longer matches it, so a
            // stale entry can only send the next reconcile down the full path.
            let stat = self
                .written
                .get(&d.path)
                .or_else(|| self.seen.stats.get(&d.path));
            row.stat = stat
                .filter(|s| observe::settled(s, self.now))
                .map(|s| observe::cache_of(s, self.now));
            f(&row)?;
        }
        Ok(())
    }
}

/// The inventory after a failed deployment: the previous one, with the paths whose steps were
/// done as the manifest wants them and pruned paths gone.
fn partial_inventory(
    store: &Store,
    desired: &[Desired],
    progress: &Progress,
    plan: &Plan,
) -> Result<Vec<InventoryRow>, ApplyError> {
    let done = &progress.done;
    let mut rows: BTreeMap<String, InventoryRow> = store
        .inventory()?
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    for d in desired.iter().filter(|d| done.contains(&d.path)) {
        rows.insert(d.path.to_string(), row_of(d));
    }
    for step in plan
        .steps
        .iter()
        .filter(|s| s.reason == Reason::Pruned && done.contains(&s.path))
    {
        rows.remove(&step.path.to_string());
    }
    Ok(rows.into_values().collect())
}

fn row_of(d: &Desired) -> InventoryRow {
    let mut row = InventoryRow {
        path: d.path.to_string(),
        kind: String::new(),
        exact: false,
        blob: None,
        mode: None,
        uid: None,
        gid: None,
        target: None,
        stat: None,
    };
    match &d.kind {
        DesiredKind::File {
            blob,
            mode,
            owner,
            group,
            ..
        } => {
            row.kind = "file".into();
            row.blob = Some(blob.to_string());
            (row.mode, row.uid, row.gid) = (Some(*mode), Some(owner.uid), Some(group.gid));
        }
        DesiredKind::Directory {
            mode,
            owner,
            group,
            exact,
        } => {
            row.kind = "directory".into();
            row.exact = *exact;
            (row.mode, row.uid, row.gid) = (Some(*mode), Some(owner.uid), Some(group.gid));
        }
        DesiredKind::Symlink { target } => {
            row.kind = "symlink".into();
            row.target = Some(target.display().to_string());
        }
        DesiredKind::Absent => row.kind = "absent".into(),
    }
    row
}

/// The managed paths that are no longer as the last deployment left them: edited, chmodded,
/// replaced or removed by someone else.
fn drifted(previous: &[InventoryRow], seen: &Seen) -> BTreeSet<HostPath> {
    let mut out = BTreeSet::new();
    for row in previous {
        let Ok(path) = HostPath::parse(&row.path) else {
            continue;
        };
        let attrs = |mode: &u32, uid: &u32, gid: &u32| {
            row.mode.is_some_and(|m| m != *mode)
                || row.uid.is_some_and(|u| u != *uid)
                || row.gid.is_some_and(|g| g != *gid)
        };
        let changed = match (row.kind.as_str(), seen.observation.get(&path)) {
            ("absent", None | Some(Observed::Missing)) => false,
            ("absent", Some(_)) | (_, None | Some(Observed::Missing)) => true,
            (
                "file",
                Some(Observed::File {
                    blob,
                    mode,
                    uid,
                    gid,
                    ..
                }),
            ) => {
                // A file no longer wanted as a file is not hashed (null id): only its attributes count.
                (!blob.is_null() && row.blob.as_deref() != Some(blob.to_string().as_str()))
                    || attrs(mode, uid, gid)
            }
            ("directory", Some(Observed::Directory { mode, uid, gid })) => attrs(mode, uid, gid),
            ("symlink", Some(Observed::Symlink { target })) => {
                row.target.as_deref() != Some(target.display().to_string().as_str())
            }
            _ => true,
        };
        if changed {
            out.insert(path);
        }
    }
    out
}

/// The audit events of a deployment: drift repairs, prunes and restores, each naming the path
/// and the commit.
fn events(
    plan: &Plan,
    commit: &str,
    drifted: &BTreeSet<HostPath>,
    progress: &Progress,
) -> Vec<DeployEvent> {
    let mut out = Vec::new();
    for step in plan
        .steps
        .iter()
        .filter(|s| progress.done.contains(&s.path))
    {
        let (kind, what) = match (&step.reason, &step.action) {
            (_, Action::Restore) => ("restored", "original restored"),
            (Reason::Pruned, _) => ("pruned", "pruned"),
            _ if drifted.contains(&step.path) => ("drift-repaired", "drift repaired"),
            _ => continue,
        };
        let note = progress
            .notes
            .get(&step.path)
            .map(|n| format!("; {n}"))
            .unwrap_or_default();
        out.push(DeployEvent {
            kind,
            path: step.path.to_string(),
            message: format!("{what}: {step} (commit {commit}){note}"),
        });
    }
    out
}
