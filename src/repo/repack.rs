//! Pack consolidation: every import or fetch adds a pack to `objects/pack`; a repack writes the
//! objects reachable from the kept commits that several packs hold into one new pack, makes it
//! durable, and only then removes the packs it replaces.
//!
//! Which packs: all of them (`Mode::Full`, `outpost gc`), or, after an import or a fetch, the
//! small ones (`Mode::Geometric`, as `git repack --geometric=2`): the packs sorted by size
//! must each be at least twice the size of all smaller ones together, and the smallest that
//! break that progression are rolled up into one. Big packs are then rewritten rarely, so the
//! bytes written stay proportional to what arrived.
//!
//! What goes in: every object reachable from the kept commits (their whole history, trees and
//! blobs) that is not in a pack that stays. Entries are copied from the old packs as they are
//! (deltas whose base comes along stay deltas); the rest is recompressed. Objects reachable
//! from no kept commit are dropped with the packs that held them.
//!
//! Crash safety: the new pack and its index are written in a scratch directory, synced, moved
//! into `objects/pack` (pack first, index last, directory synced); an old pack is removed
//! index first. At every moment each kept object is in a pack with an index; a crash leaves at
//! most a pack without an index (ignored by readers, removed by the next repack) or the old
//! and the new pack side by side.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix_pack::data::output;

use super::{ObjectStore, RepoError};

/// Which packs a repack replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All of them, into one pack of everything reachable.
    Full,
    /// The small packs that break a geometric progression of factor 2.
    Geometric,
}

/// A pack of the object store with its size (pack and index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFile {
    /// The `.pack` file.
    pub path: PathBuf,
    pub bytes: u64,
}

/// What a repack did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Repacked {
    pub packs_before: usize,
    pub packs_after: usize,
    /// Packs and loose objects, bytes.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Objects in the new pack.
    pub objects_written: u64,
    /// Packs replaced by the new one.
    pub packs_replaced: usize,
    /// Loose objects removed (packed, or reachable from no kept commit).
    pub loose_removed: u64,
    /// Leftovers of an interrupted repack removed (a pack without an index, scratch files).
    pub leftovers_removed: usize,
}

/// Test hook: the number of file steps (sync, rename, remove) after which a repack aborts.
pub type Fault = Option<usize>;

/// How many of the smallest packs (sorted by size, ascending) to roll up into one so that the
/// rest, with the rolled-up pack, forms a progression where each pack is at least `factor`
/// times all smaller ones together. 0 or 1: nothing worth doing.
pub fn geometric_split(sizes: &[u64], factor: u64) -> usize {
    let n = sizes.len();
    if n < 2 {
        return 0;
    }
    // From the largest down, the packs that already keep the progression stay.
    let mut split = n - 1;
    while split > 0 && sizes[split - 1].saturating_mul(factor) <= sizes[split] {
        split -= 1;
    }
    if split == 0 {
        return 0;
    }
    // The rolled-up pack must itself fit under the packs that stay, or they join it.
    let mut rolled: u64 = sizes[..split].iter().sum();
    while split < n && rolled.saturating_mul(factor) > sizes[split] {
        rolled = rolled.saturating_add(sizes[split]);
        split += 1;
    }
    split
}

/// The packs in `pack_dir` that have an index, smallest first.
pub fn packs(pack_dir: &Path) -> std::io::Result<Vec<PackFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(pack_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "pack") {
            continue;
        }
        let idx = path.with_extension("idx");
        let (Ok(pack), Ok(index)) = (std::fs::metadata(&path), std::fs::metadata(&idx)) else {
            continue;
        };
        out.push(PackFile {
            path,
            bytes: pack.len() + index.len(),
        });
    }
    out.sort_by(|a, b| a.bytes.cmp(&b.bytes).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// Loose objects (`objects/xx/...`): their paths and total size.
fn loose_objects(objects_dir: &Path) -> std::io::Result<(Vec<PathBuf>, u64)> {
    let mut files = Vec::new();
    let mut bytes = 0;
    for entry in std::fs::read_dir(objects_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() != 2 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for object in std::fs::read_dir(entry.path())? {
            let object = object?;
            bytes += object.metadata()?.len();
            files.push(object.path());
        }
    }
    Ok((files, bytes))
}

/// Counts file steps for the test hook and aborts at the chosen one.
struct Steps {
    done: usize,
    fault: Fault,
}

impl Steps {
    fn step(&mut self) {
        if self.fault == Some(self.done) {
            tracing::error!(steps = self.done, "test hook: aborting the repack");
            std::process::abort();
        }
        self.done += 1;
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Repack {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), RepoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl ObjectStore {
    /// The packs of the object store that have an index, smallest first.
    pub fn packs(&self) -> Result<Vec<PackFile>, RepoError> {
        let dir = self.objects_dir().join("pack");
        packs(&dir).map_err(io_err(&dir))
    }

    /// Consolidates packs (see the module doc). `keep` are the commits whose history must stay
    /// whole; `scratch` a private directory on the same filesystem as the object store, emptied
    /// first. A kept commit missing from the store stops the repack before anything changes.
    pub fn repack(
        &self,
        keep: &[ObjectId],
        mode: Mode,
        scratch: &Path,
        fault: Fault,
    ) -> Result<Repacked, RepoError> {
        let objects_dir = self.objects_dir();
        let pack_dir = objects_dir.join("pack");
        for &commit in keep {
            if !self.repo.has_object(commit) {
                return Err(RepoError::KeptMissing { commit });
            }
        }
        let mut steps = Steps { done: 0, fault };
        let mut out = Repacked {
            leftovers_removed: remove_leftovers(&pack_dir, scratch)?,
            ..Repacked::default()
        };
        let all = self.packs()?;
        let (loose, loose_bytes) = loose_objects(&objects_dir).map_err(io_err(&objects_dir))?;
        out.packs_before = all.len();
        out.bytes_before = all.iter().map(|p| p.bytes).sum::<u64>() + loose_bytes;
        let sizes: Vec<u64> = all.iter().map(|p| p.bytes).collect();
        let roll = match mode {
            Mode::Full => all.len(),
            Mode::Geometric => geometric_split(&sizes, 2),
        };
        // One pack alone is rewritten only by a full repack, and only to drop objects.
        let nothing = roll == 0 || (roll == 1 && mode == Mode::Geometric);
        if nothing && loose.is_empty() {
            out.packs_after = all.len();
            out.bytes_after = out.bytes_before;
            return Ok(out);
        }
        let (rolled, stay) = all.split_at(roll.min(all.len()));
        // One handle for counting and writing: counts name packs by this handle's ids.
        let db = self.odb()?;
        let counts = self.reachable_outside(&db, keep, stay)?;
        if mode == Mode::Full && rolled.len() == 1 && loose.is_empty() {
            let index =
                gix_pack::index::File::at(rolled[0].path.with_extension("idx"), self.hash())
                    .map_err(|e| self.damaged(&e))?;
            if u64::from(index.num_objects()) == counts.len() as u64 {
                out.packs_after = all.len();
                out.bytes_after = out.bytes_before;
                return Ok(out);
            }
        }
        out.objects_written = counts.len() as u64;
        let written = if counts.is_empty() {
            None
        } else {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(scratch)
                .map_err(io_err(scratch))?;
            Some(self.write_pack(db, counts, scratch)?)
        };
        if let Some(pack) = &written {
            install(pack, &pack_dir, &mut steps)?;
        }
        for old in rolled {
            if written.as_ref().and_then(|p| p.file_name()) == old.path.file_name() {
                continue;
            }
            remove_pack(&old.path, &mut steps)?;
            out.packs_replaced += 1;
        }
        sync_dir(&pack_dir)?;
        for object in &loose {
            steps.step();
            std::fs::remove_file(object).map_err(io_err(object))?;
            out.loose_removed += 1;
        }
        let _ = std::fs::remove_dir_all(scratch);
        let after = self.packs()?;
        out.packs_after = after.len();
        out.bytes_after = after.iter().map(|p| p.bytes).sum();
        Ok(out)
    }

    fn hash(&self) -> gix::hash::Kind {
        self.repo.object_hash()
    }

    fn damaged(&self, e: &gix::Error) -> RepoError {
        RepoError::RepackFailed {
            path: self.objects_dir(),
            message: super::message(e),
        }
    }

    /// Every object reachable from `keep` (their whole history) that none of `stay` holds,
    /// as pack-generation counts.
    fn reachable_outside(
        &self,
        db: &gix::odb::HandleArc,
        keep: &[ObjectId],
        stay: &[PackFile],
    ) -> Result<Vec<output::Count>, RepoError> {
        let walk_err = |e: gix::Error| self.damaged(&e);
        let mut commits = Vec::new();
        for info in self
            .repo
            .rev_walk(keep.iter().copied())
            .all()
            .map_err(walk_err)?
        {
            commits.push(info.map_err(walk_err)?.id);
        }
        let (counts, _) = output::count::objects(
            db.clone(),
            Box::new(commits.into_iter().map(Ok)),
            &gix::progress::Discard,
            &AtomicBool::new(false),
            output::count::objects::Options {
                input_object_expansion: output::count::objects::ObjectExpansion::TreeContents,
                ..Default::default()
            },
        )
        .map_err(|e| self.damaged(&e))?;
        let mut indices = Vec::new();
        for pack in stay {
            indices.push(
                gix_pack::index::File::at(pack.path.with_extension("idx"), self.hash())
                    .map_err(|e| self.damaged(&e))?,
            );
        }
        Ok(counts
            .into_iter()
            .filter(|c| !indices.iter().any(|i| i.lookup(c.id).is_some()))
            .collect())
    }

    fn odb(&self) -> Result<gix::odb::HandleArc, RepoError> {
        let dir = self.objects_dir();
        let mut db = gix::odb::at(&dir, self.hash())
            .and_then(gix::odb::Handle::into_arc)
            .map_err(io_err(&dir))?;
        // Pack locations are kept between counting and copying: packs stay mapped.
        db.prevent_pack_unload();
        Ok(db)
    }

    /// Writes a pack of `counts` and its index into `scratch`; returns the `.pack` path. The
    /// pack bytes stream through a pipe into the indexer, so they are written once.
    fn write_pack(
        &self,
        db: gix::odb::HandleArc,
        counts: Vec<output::Count>,
        scratch: &Path,
    ) -> Result<PathBuf, RepoError> {
        let hash = self.hash();
        let total = u32::try_from(counts.len()).map_err(|_| RepoError::RepackFailed {
            path: self.objects_dir(),
            message: "more than 4 billion objects".to_owned(),
        })?;
        let entries = output::entry::iter_from_counts(
            counts,
            db,
            Box::new(gix::progress::Discard),
            output::entry::iter_from_counts::Options {
                allow_thin_pack: false,
                ..Default::default()
            },
        )
        .map_err(|e| self.damaged(&e))?;
        let (reader, writer) = std::io::pipe().map_err(io_err(scratch))?;
        let producer = std::thread::spawn(move || -> Result<usize, String> {
            let mut bytes = output::bytes::FromEntriesIter::new(
                gix::parallel::InOrderIter::from(entries),
                BufWriter::with_capacity(1 << 20, writer),
                total,
                gix_pack::data::Version::V2,
                hash,
            );
            for written in bytes.by_ref() {
                written.map_err(|e| e.to_string())?;
            }
            let stats =
                gix::parallel::Finalize::finalize(bytes.input.inner).map_err(|e| e.to_string())?;
            Ok(stats.missing_objects)
        });
        let indexed = gix_pack::Bundle::write_to_directory(
            &mut BufReader::with_capacity(1 << 20, reader),
            Some(scratch),
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            None::<gix::odb::HandleArc>,
            hash,
            gix_pack::bundle::write::Options::default(),
        );
        let produced = producer.join().map_err(|_| RepoError::RepackFailed {
            path: self.objects_dir(),
            message: "the pack writer panicked".to_owned(),
        })?;
        let failed = |message: String| RepoError::RepackFailed {
            path: self.objects_dir(),
            message,
        };
        match produced.map_err(failed)? {
            0 => {}
            missing => return Err(failed(format!("{missing} reachable objects are missing"))),
        }
        let outcome = indexed.map_err(|e| self.damaged(&e))?;
        if let Some(keep) = &outcome.keep_path {
            std::fs::remove_file(keep).map_err(io_err(keep))?;
        }
        outcome
            .data_path
            .ok_or_else(|| failed("the indexer wrote no pack".to_owned()))
    }
}

/// Moves a written pack into `pack_dir`: each file synced, the pack first and the index last,
/// the directory synced.
fn install(pack: &Path, pack_dir: &Path, steps: &mut Steps) -> Result<(), RepoError> {
    for ext in ["pack", "idx"] {
        let src = pack.with_extension(ext);
        let dst = pack_dir.join(src.file_name().unwrap_or_default());
        steps.step();
        File::open(&src)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&src))?;
        if dst.exists() {
            continue;
        }
        steps.step();
        std::fs::rename(&src, &dst).map_err(io_err(&dst))?;
    }
    steps.step();
    sync_dir(pack_dir)
}

/// Removes a pack: its index first (the pack is then invisible), then the pack and what git
/// keeps beside it.
fn remove_pack(pack: &Path, steps: &mut Steps) -> Result<(), RepoError> {
    for ext in ["idx", "pack", "keep", "rev", "bitmap", "mtimes", "promisor"] {
        let path = pack.with_extension(ext);
        steps.step();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(io_err(&path))?,
        }
    }
    Ok(())
}

/// Removes what an interrupted repack left: packs without an index (a crash between moving
/// the pack and its index in, or between removing an old pack's index and the pack), and the
/// scratch directory. Runs under the state lock, so no import is moving a pack in meanwhile.
fn remove_leftovers(pack_dir: &Path, scratch: &Path) -> Result<usize, RepoError> {
    let mut removed = 0;
    if scratch.exists() {
        std::fs::remove_dir_all(scratch).map_err(io_err(scratch))?;
        removed += 1;
    }
    let entries = match std::fs::read_dir(pack_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(pack_dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(pack_dir))?.path();
        let orphan = match path.extension().and_then(|e| e.to_str()) {
            Some("pack") => !path.with_extension("idx").exists(),
            Some("keep" | "rev" | "bitmap" | "mtimes") => !path.with_extension("pack").exists(),
            _ => false,
        };
        if orphan {
            tracing::info!(path = %path.display(), "removing the leftover of an interrupted repack");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(pack_dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::geometric_split;

    #[test]
    fn a_geometric_progression_is_left_alone() {
        assert_eq!(geometric_split(&[], 2), 0);
        assert_eq!(geometric_split(&[100], 2), 0);
        assert_eq!(geometric_split(&[1, 2, 4, 8, 16], 2), 0);
        assert_eq!(geometric_split(&[3, 100], 2), 0);
    }

    #[test]
    fn small_packs_are_rolled_up() {
        // Five equal increments below one big pack: all five go into one.
        assert_eq!(geometric_split(&[1, 1, 1, 1, 1, 1000], 2), 5);
        // The rolled-up pack would be bigger than half the next one: that one joins.
        assert_eq!(geometric_split(&[2, 2, 2, 5, 1000], 2), 4);
        // Two of a size: both go.
        assert_eq!(geometric_split(&[10, 10], 2), 2);
    }
}
