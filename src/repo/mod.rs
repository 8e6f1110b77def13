//! The object store: a bare Git repository under `state_dir/objects`, and the quarantine a
//! bundle's pack is indexed into before it is trusted.
//!
//! A [`Quarantine`] is a temporary bare repository whose `objects/info/alternates` names the
//! real object store, so thin packs resolve against trusted objects and the new tip can be
//! inspected, while nothing of an untrusted bundle reaches `objects/`. Only
//! [`Quarantine::promote`] moves the pack into the store.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::refs::transaction::PreviousValue;

pub mod repack;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("cannot open the object store at {path}")]
    Open { path: PathBuf, source: gix::Error },
    #[error("cannot create the object store at {path}")]
    Init { path: PathBuf, source: gix::Error },
    #[error("cannot prepare a quarantine in {path}")]
    Quarantine {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bundle's pack is damaged: {message}")]
    IndexPack { message: String },
    #[error(
        "the bundle holds an object larger than source.max_object_size ({max} bytes) once inflated; raise the limit if the fleet ships such files"
    )]
    ObjectTooBig { max: usize },
    #[error("the bundle does not contain {oid} that its header lists for {name}")]
    MissingTip { oid: ObjectId, name: String },
    #[error("{oid} ({name}) is not a commit")]
    NotACommit { oid: ObjectId, name: String },
    #[error("cannot read commit {oid}: {message}")]
    ReadCommit { oid: ObjectId, message: String },
    #[error("cannot walk the history of {oid}: {message}")]
    Walk { oid: ObjectId, message: String },
    #[error(
        "the bundle is incomplete: {missing} (reachable from {tip}) is neither in the bundle nor on this host"
    )]
    Incomplete { tip: ObjectId, missing: ObjectId },
    #[error("cannot move pack {path} into the object store")]
    Promote {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot repack the object store: {path}")]
    Repack {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot repack the object store {path}: {message}; nothing was removed, run `git fsck` on it"
    )]
    RepackFailed { path: PathBuf, message: String },
    #[error(
        "commit {commit}, which a kept deployment or the trusted commit needs, is not in the object store; gc removed nothing, import a bundle that holds it"
    )]
    KeptMissing { commit: ObjectId },
    #[error("cannot update {name} to {oid}: {message}")]
    UpdateRef {
        name: String,
        oid: ObjectId,
        message: String,
    },
}

/// What the trust check needs of a tip commit.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// `(armored signature, signed payload)` when the commit carries a `gpgsig` header.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
    /// Committer time, Unix seconds, as written (intake judges whether it is plausible).
    pub committer_time: i64,
    /// The subject line, cut to [`MAX_SUMMARY`] characters.
    pub summary: String,
}

/// Longest commit subject kept for messages, in characters.
pub const MAX_SUMMARY: usize = 200;

/// A commit that passed intake: the high-water mark names it. Read only from the store, so
/// nothing unverified reaches the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedCommit {
    oid: ObjectId,
}

impl TrustedCommit {
    /// Only intake's record of the high-water mark vouches for a commit.
    pub(crate) fn vouched(oid: ObjectId) -> Self {
        Self { oid }
    }

    pub fn id(&self) -> ObjectId {
        self.oid
    }
}

/// The bare object store under `state_dir/objects`.
pub struct ObjectStore {
    repo: gix::Repository,
}

/// Objects read over a handle of their own, opened anew every `per_handle` reads. Packs are
/// memory-mapped, and every page a read touched (with the pages the kernel maps around it)
/// stays mapped, counted in the process's memory, for as long as the handle that mapped it:
/// a deployment of many files would end up holding its whole pack, and walking a large tree
/// touches most of the pack too, its trees being spread between their blobs. Dropping the
/// handle now and then lets those pages go (they stay in the page cache). Objects are read
/// about in pack order (a tree's files, in path order), so one handle maps a small run of
/// the pack.
pub struct Reader<'a> {
    base: &'a gix::Repository,
    handle: Option<gix::Repository>,
    reads: usize,
    per_handle: usize,
}

impl<'a> Reader<'a> {
    /// Reads per handle for blobs read in order: 256 small files map a few hundred KiB, and
    /// opening a handle costs well under a millisecond.
    pub const BLOBS: usize = 256;
    /// Reads per handle for trees, which lie apart in the pack: each maps about 64 KiB.
    pub const TREES: usize = 16;

    /// A reader of `base`'s objects.
    pub fn new(base: &'a gix::Repository, per_handle: usize) -> Self {
        Self {
            base,
            handle: None,
            reads: 0,
            per_handle: per_handle.max(1),
        }
    }

    /// The repository to read the next object with.
    pub fn repo(&mut self) -> &gix::Repository {
        if self.reads.is_multiple_of(self.per_handle) {
            // The old handle goes first, and its mappings with it.
            self.handle = None;
            match open(self.base.git_dir()) {
                Ok(repo) => self.handle = Some(repo),
                Err(e) => tracing::debug!(error = %e, "reading with the shared handle"),
            }
        }
        self.reads += 1;
        self.handle.as_ref().unwrap_or(self.base)
    }
}

fn git_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("objects")
}

fn open(path: &Path) -> Result<gix::Repository, RepoError> {
    // Walking a fresh pack resolves long delta chains: cache their bases as git does.
    let options = gix::open::Options::isolated().config_overrides(["core.deltaBaseCacheLimit=96m"]);
    gix::open_opts(path, options).map_err(|source| RepoError::Open {
        path: path.to_owned(),
        source,
    })
}

/// A failure to read a pack: an object over the size limit, or damage.
fn pack_error(e: &gix::Error, max_object: usize) -> RepoError {
    let text = format!("{e:?}");
    if text.contains("AllocationLimit") || text.contains("too large to fit in memory") {
        RepoError::ObjectTooBig { max: max_object }
    } else {
        RepoError::IndexPack {
            message: message(e),
        }
    }
}

/// The most specific cause of a gix error, in its own words.
fn message(e: &gix::Error) -> String {
    e.probable_cause().to_string()
}

/// The ids an object names: a commit's tree and parents, a tree's entries (but submodule
/// commits, which live in other repositories), a tag's target. `None` stands for an object
/// that does not parse.
fn references(kind: gix::objs::Kind, data: &[u8], hash: gix::hash::Kind) -> Vec<Option<ObjectId>> {
    use gix::objs::Kind;
    match kind {
        Kind::Commit => {
            let mut iter = gix::objs::CommitRefIter::from_bytes(data, hash);
            let mut ids = vec![iter.tree_id().ok()];
            ids.extend(iter.parent_ids().map(Some));
            ids
        }
        Kind::Tree => gix::objs::TreeRefIter::from_bytes(data, hash)
            .filter_map(|entry| match entry {
                Ok(e) if e.mode.is_commit() => None,
                Ok(e) => Some(Some(e.oid.to_owned())),
                Err(_) => Some(None),
            })
            .collect(),
        Kind::Tag => vec![
            gix::objs::TagRefIter::from_bytes(data, hash)
                .target_id()
                .ok(),
        ],
        Kind::Blob => Vec::new(),
    }
}

fn files_with_extension(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    Ok(files)
}

/// A bare repository without the sample hooks and description a work repository gets.
fn init(path: &Path) -> Result<(), RepoError> {
    gix::init_bare(path).map_err(|source| RepoError::Init {
        path: path.to_owned(),
        source,
    })?;
    let _ = std::fs::remove_dir_all(path.join("hooks"));
    let _ = std::fs::remove_file(path.join("description"));
    Ok(())
}

/// The least a bare repository needs to be opened, for a quarantine that lives only as long as
/// one bundle or fetch: no hooks, description or sample files to write and delete again.
fn init_minimal(path: &Path) -> std::io::Result<()> {
    for dir in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(path.join(dir))?;
    }
    std::fs::write(path.join("HEAD"), "ref: refs/heads/main\n")?;
    std::fs::write(
        path.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tbare = true\n",
    )
}

/// The signature, payload, committer time and subject of commit `oid`.
fn commit_info(repo: &gix::Repository, oid: ObjectId) -> Result<CommitInfo, RepoError> {
    let err = |e: gix::Error| RepoError::ReadCommit {
        oid,
        message: message(&e),
    };
    let commit = repo.find_commit(oid).map_err(err)?;
    let signature = commit
        .signature()
        .map_err(err)?
        .map(|(sig, signed)| (sig.to_vec(), signed.to_bstring().to_vec()));
    let committer_time = commit.time().map_err(err)?.seconds;
    let summary = commit
        .message()
        .map(|m| m.summary().to_string().chars().take(MAX_SUMMARY).collect())
        .unwrap_or_default();
    Ok(CommitInfo {
        signature,
        committer_time,
        summary,
    })
}

/// Whether `ancestor` is reachable from `descendant` (or equal to it) in `repo`.
fn is_ancestor(
    repo: &gix::Repository,
    ancestor: ObjectId,
    descendant: ObjectId,
) -> Result<bool, RepoError> {
    if ancestor == descendant {
        return Ok(true);
    }
    if !repo.has_object(ancestor) {
        return Ok(false);
    }
    let walk_err = |e: gix::Error| RepoError::Walk {
        oid: descendant,
        message: message(&e),
    };
    for info in repo.rev_walk([descendant]).all().map_err(walk_err)? {
        if info.map_err(walk_err)?.id == ancestor {
            return Ok(true);
        }
    }
    Ok(false)
}

impl ObjectStore {
    /// Opens the object store, creating it on first use.
    pub fn open_or_init(state_dir: &Path) -> Result<Self, RepoError> {
        let path = git_dir(state_dir);
        if path.join("HEAD").exists() {
            return Ok(Self { repo: open(&path)? });
        }
        init(&path)?;
        Ok(Self { repo: open(&path)? })
    }

    /// Opens an existing object store without creating anything.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Self>, RepoError> {
        let path = git_dir(state_dir);
        if !path.join("HEAD").exists() {
            return Ok(None);
        }
        Ok(Some(Self { repo: open(&path)? }))
    }

    /// The repository, for reading trusted commits' trees and blobs.
    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    fn objects_dir(&self) -> PathBuf {
        self.repo.git_dir().join("objects")
    }

    /// A reader for a long run of blobs (those of a deployment), see [`Reader`].
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(&self.repo, Reader::BLOBS)
    }

    /// Points `name` (a full ref name) at `oid`.
    pub fn set_ref(&self, name: &str, oid: ObjectId) -> Result<(), RepoError> {
        let err = |e: gix::Error| RepoError::UpdateRef {
            name: name.to_owned(),
            oid,
            message: e.to_string(),
        };
        let full: gix::refs::FullName =
            name.try_into()
                .map_err(
                    |e: gix::validate::reference::name::Error| RepoError::UpdateRef {
                        name: name.to_owned(),
                        oid,
                        message: e.to_string(),
                    },
                )?;
        self.repo
            .reference(full, oid, PreviousValue::Any, "outpost: trusted")
            .map_err(err)?;
        Ok(())
    }

    /// The signature, payload, committer time and subject of commit `oid`.
    pub fn commit_info(&self, oid: ObjectId) -> Result<CommitInfo, RepoError> {
        commit_info(&self.repo, oid)
    }

    /// Whether `ancestor` is reachable from `descendant` (or equal to it).
    pub fn is_ancestor(&self, ancestor: ObjectId, descendant: ObjectId) -> Result<bool, RepoError> {
        is_ancestor(&self.repo, ancestor, descendant)
    }

    /// Whether the store has `oid`.
    pub fn has_object(&self, oid: ObjectId) -> bool {
        self.repo.has_object(oid)
    }

    /// The commit `name` points at, if the ref exists.
    pub fn ref_target(&self, name: &str) -> Option<ObjectId> {
        self.repo
            .try_find_reference(name)
            .ok()
            .flatten()
            .and_then(|r| r.target().try_id().map(ToOwned::to_owned))
    }
}

/// A temporary object store for one bundle; dropped without a trace unless promoted.
pub struct Quarantine {
    _dir: tempfile::TempDir,
    repo: gix::Repository,
}

impl Quarantine {
    /// A quarantine inside `parent` that sees the objects of `store`, if there is one.
    pub fn new(parent: &Path, store: Option<&ObjectStore>) -> Result<Self, RepoError> {
        let io_err = |source| RepoError::Quarantine {
            path: parent.to_owned(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix("quarantine.")
            .tempdir_in(parent)
            .map_err(io_err)?;
        let path = dir.path().join("objects.git");
        init_minimal(&path).map_err(io_err)?;
        if let Some(store) = store {
            let info = path.join("objects/info");
            let target = std::path::absolute(store.objects_dir()).map_err(io_err)?;
            let mut line = target.into_os_string().into_encoded_bytes();
            line.push(b'\n');
            std::fs::write(info.join("alternates"), line).map_err(io_err)?;
        }
        let repo = open(&path)?;
        Ok(Self { _dir: dir, repo })
    }

    /// Whether the quarantine or the store behind it has `oid`.
    pub fn has_object(&self, oid: ObjectId) -> bool {
        self.repo.has_object(oid)
    }

    /// The quarantine's repository, for fetching into it; [`Self::reopen`] after.
    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    /// Opens the quarantine anew, so that packs written into it since are seen.
    pub fn reopen(&mut self) -> Result<(), RepoError> {
        self.repo = open(self.repo.git_dir())?;
        Ok(())
    }

    /// Indexes the pack read from `pack` (which must end exactly at the pack trailer) into the
    /// quarantine, completing thin packs from the trusted store.
    ///
    /// No object, nor the delta tree, may take more than `max_object` bytes once inflated: a
    /// small pack cannot make the indexer allocate what it decompresses to.
    pub fn index_pack(
        &mut self,
        pack: &mut dyn BufRead,
        max_object: usize,
    ) -> Result<(), RepoError> {
        let pack_dir = self.repo.git_dir().join("objects/pack");
        let interrupt = AtomicBool::new(false);
        gix_pack::Bundle::write_to_directory(
            pack,
            Some(&pack_dir),
            &mut gix::progress::Discard,
            &interrupt,
            Some(self.repo.objects.clone()),
            self.repo.object_hash(),
            gix_pack::bundle::write::Options {
                alloc_limit_bytes: Some(max_object),
                ..Default::default()
            },
        )
        .map_err(|e| pack_error(&e, max_object))?;
        // A fresh handle sees the new pack without relying on the odb's refresh policy.
        self.repo = open(self.repo.git_dir())?;
        Ok(())
    }

    /// Checks that `oid` exists and is a commit.
    pub fn check_tip(&self, oid: ObjectId, name: &str) -> Result<(), RepoError> {
        let header = self
            .repo
            .find_header(oid)
            .map_err(|_| RepoError::MissingTip {
                oid,
                name: name.to_owned(),
            })?;
        if header.kind() != gix::objs::Kind::Commit {
            return Err(RepoError::NotACommit {
                oid,
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The signature, payload and committer time of commit `oid`.
    pub fn commit_info(&self, oid: ObjectId) -> Result<CommitInfo, RepoError> {
        commit_info(&self.repo, oid)
    }

    /// Whether `ancestor` is reachable from `descendant` (or equal to it).
    pub fn is_ancestor(&self, ancestor: ObjectId, descendant: ObjectId) -> Result<bool, RepoError> {
        is_ancestor(&self.repo, ancestor, descendant)
    }

    /// Checks that the bundle is complete, like git's connectivity check after a fetch, but
    /// over the pack rather than by walking history: every commit, tree and tag in the new
    /// pack has each object it names either in the pack or in `store`. With the tips checked
    /// to be in the pack, everything reachable from them is then present. The pack is decoded
    /// once, in parallel, along its delta tree.
    pub fn check_connected(
        &self,
        tip: ObjectId,
        store: Option<&ObjectStore>,
        max_object: usize,
    ) -> Result<(), RepoError> {
        let hash = self.repo.object_hash();
        let pack_dir = self.repo.git_dir().join("objects/pack");
        let damaged = |e: gix::Error| pack_error(&e, max_object);
        let mut outside = Vec::new();
        for idx_path in
            files_with_extension(&pack_dir, "idx").map_err(|source| RepoError::Promote {
                path: pack_dir.clone(),
                source,
            })?
        {
            let index = gix_pack::index::File::at(&idx_path, hash).map_err(damaged)?;
            let pack = gix_pack::data::File::at(idx_path.with_extension("pack"), hash)
                .map_err(damaged)?
                .with_alloc_limit_bytes(Some(max_object));
            let found = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let processor = {
                let (index, found) = (&index, found.clone());
                move |kind: gix::objs::Kind,
                      data: &[u8],
                      entry: &gix_pack::index::Entry,
                      _: &dyn gix::Progress| {
                    let mut local = Vec::new();
                    for id in references(kind, data, hash) {
                        match id {
                            Some(id) if index.lookup(id).is_some() => {}
                            Some(id) => local.push(id),
                            None => local.push(entry.oid),
                        }
                    }
                    if !local.is_empty() {
                        found
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .extend(local);
                    }
                    Ok(())
                }
            };
            let options = gix_pack::index::traverse::Options {
                alloc_limit_bytes: Some(max_object),
                check:
                    gix_pack::index::traverse::SafetyCheck::SkipFileAndObjectChecksumVerification,
                ..Default::default()
            };
            index
                .traverse(
                    &pack,
                    &mut gix::progress::Discard,
                    &AtomicBool::new(false),
                    processor,
                    options,
                )
                .map_err(damaged)?;
            outside.extend(
                found
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .drain(..),
            );
        }
        outside.sort_unstable();
        outside.dedup();
        // Looked up through the quarantine, which sees the store by its alternates and was
        // opened for this bundle: a store handle opened before many packs were promoted (a
        // long import) has no slots left to see the newest ones.
        let in_store = |id: &ObjectId| store.is_some() && self.repo.has_object(*id);
        match outside.into_iter().find(|id| !in_store(id)) {
            Some(missing) => Err(RepoError::Incomplete { tip, missing }),
            None => Ok(()),
        }
    }

    /// Moves the indexed pack into `store` (pack first, index last, both synced), so its
    /// objects become part of the trusted store.
    pub fn promote(self, store: &ObjectStore) -> Result<(), RepoError> {
        let from = self.repo.git_dir().join("objects/pack");
        let to = store.objects_dir().join("pack");
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| RepoError::Promote { path, source }
        };
        std::fs::create_dir_all(&to).map_err(err(&to))?;
        for pack in files_with_extension(&from, "pack").map_err(err(&from))? {
            for ext in ["pack", "idx"] {
                let src = pack.with_extension(ext);
                let dst = to.join(src.file_name().unwrap_or_default());
                if dst.exists() {
                    continue;
                }
                File::open(&src)
                    .and_then(|f| f.sync_all())
                    .map_err(err(&src))?;
                std::fs::rename(&src, &dst).map_err(err(&dst))?;
            }
        }
        File::open(&to).and_then(|d| d.sync_all()).map_err(err(&to))
    }
}
