//! The desired state of this host, read from a trusted commit's `outpost.toml`.
//!
//! [`load`] reads `outpost.toml` from the commit's tree with gix (never from a work tree),
//! follows `[[include]]`s of other files of the same commit, keeps the entries whose `when`
//! matches this host, and validates everything before a plan is made:
//!
//! * host paths are absolute and normalised (no `.`, `..`, empty components, trailing `/` or
//!   NUL) and strictly inside one of `apply.allowed_paths`, compared by component, so
//!   `/etcetera` is not inside `/etc` and an allowed path itself cannot be managed;
//! * sources are regular or executable blobs of the commit: not trees (for `file`), symlinks or
//!   submodules; a `tree` source is a directory whose every blob becomes a file, and a symlink
//!   or submodule anywhere below it is an error;
//! * modes are octal strings of at most `0777`; setuid/setgid (`04000`/`02000`) only with
//!   `allow_setid = true` on the entry; the sticky bit is refused;
//! * owners and groups are names resolved in this host's user database (an unknown name is an
//!   error) or numeric ids, taken as they are; the default is `root:root`.
//!
//! # Paths claimed by more than one entry
//!
//! No two entries may name the same path, and no entry may lie below a `file`, `symlink` or
//! `absent` entry. Entries may lie below a `directory`. An entry strictly inside a `tree` wins
//! over the tree for its path: a `directory` entry takes over only the attributes of that one
//! directory, any other entry (a `file`, `symlink`, `absent` or a nested `tree`) takes over its
//! path and everything below it, and the outer tree's files there are dropped. The outer tree
//! still keeps its directory exact around the inner entry.
//!
//! Including one file twice (not in a cycle) takes its entries once. `[[unit]]` and
//! `[[health]]` are parsed and checked here; the units stage acts on them.

mod fields;
mod path;
mod raw;
mod resolve;
mod source;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use path::{HostPath, PathProblem};

use crate::host::Host;
use crate::repo::{ObjectStore, TrustedCommit};

/// The name of the manifest at the root of the repository.
pub const MANIFEST_FILE: &str = "outpost.toml";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the tree of commit {commit}: {message}")]
    ReadCommit {
        commit: gix::ObjectId,
        message: String,
    },
    #[error("{file} does not exist in commit {commit}{}", included_by(chain))]
    MissingFile {
        file: String,
        commit: gix::ObjectId,
        chain: Vec<String>,
    },
    #[error("cannot read {file} from commit {commit}: {message}")]
    ReadFile {
        file: String,
        commit: gix::ObjectId,
        message: String,
    },
    #[error("invalid {file}: {message}")]
    Parse { file: String, message: String },
    #[error("include cycle: {}; remove one of these includes", chain.join(" -> "))]
    IncludeCycle { chain: Vec<String> },
    #[error("{0}")]
    Validate(Box<Invalid>),
}

/// One field of one entry is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {field} {problem}")]
pub struct Invalid {
    pub origin: Origin,
    pub field: &'static str,
    pub problem: Problem,
}

impl ManifestError {
    pub(crate) fn invalid(
        origin: &Origin,
        field: &'static str,
        problem: impl Into<Problem>,
    ) -> Self {
        Self::Validate(Box::new(Invalid {
            origin: origin.clone(),
            field,
            problem: problem.into(),
        }))
    }
}

fn included_by(chain: &[String]) -> String {
    if chain.is_empty() {
        String::new()
    } else {
        format!(" (included by {})", chain.join(" -> "))
    }
}

/// What is wrong with one field of one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Path(#[from] PathProblem),
    #[error("{0} does not exist in the commit")]
    SourceMissing(String),
    #[error("{0} is a directory in the repository; use [[tree]] for a whole directory")]
    SourceIsTree(String),
    #[error("{0} is a file in the repository; use [[file]] for a single file")]
    SourceNotTree(String),
    #[error("{0} is a symlink in the repository (to {1}); sources must be regular files")]
    SourceIsSymlink(String, String),
    #[error("{0} is a submodule; sources must be regular files inside the commit")]
    SourceIsSubmodule(String),
    #[error("{0} cannot be read from the commit: {1}")]
    ReadSource(String, String),
    #[error("{0:?} is not an octal mode such as \"0644\" (at most 0777)")]
    BadMode(String),
    #[error("{0:?} sets setuid/setgid; add allow_setid = true to the entry if that is intended")]
    SetidNotAllowed(String),
    #[error(
        "{0:?} sets setuid/setgid, which a tree never gives its files; declare such a file in a [[file]] entry with allow_setid = true"
    )]
    SetidInTree(String),
    #[error("{0} is the \"no change\" id (-1), which cannot own a path; give a real {1}")]
    NoChangeId(u32, &'static str),
    #[error("{0:?} is not a user on this host; create it first or give a numeric uid")]
    UnknownUser(String),
    #[error("{0:?} is not a group on this host; create it first or give a numeric gid")]
    UnknownGroup(String),
    #[error("{0:?} cannot be looked up: {1}")]
    LookupId(String, nix::Error),
    #[error("is also claimed by {0}")]
    Duplicate(String),
    #[error("is below {0}, which cannot hold other entries")]
    BelowNonDirectory(String),
    #[error("must not be empty")]
    Empty,
    #[error("{0:?} is not a duration such as \"10s\": {1}")]
    BadTimeout(String, String),
    #[error("{} {problem}", crate::text::escape(&format!("{name:?}")))]
    UnitName {
        name: String,
        problem: crate::units::name::NameProblem,
    },
    #[error(
        "{0} cannot be {1} by outpost: {2}; remove it from the manifest or leave that aspect unset"
    )]
    ProtectedUnit(String, &'static str, &'static str),
    #[error("must be at least 1 ms")]
    ZeroDuration,
}

/// Where an entry was written: the manifest file and the entry's kind and 1-based index
/// among the entries of that kind in that file, with its path or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub kind: &'static str,
    pub index: usize,
    pub label: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Origin {
            file,
            kind,
            index,
            label,
        } = self;
        if label.is_empty() {
            write!(f, "{file}: {kind} #{index}")
        } else {
            write!(f, "{file}: {kind} #{index} ({label})")
        }
    }
}

/// The desired state of this host.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// The entries whose `when` matches this host, includes resolved, sorted by path.
    pub entries: Vec<Entry>,
    pub units: Vec<Unit>,
    pub health: Vec<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: HostPath,
    pub kind: EntryKind,
    /// Units to restart when this entry changes.
    pub restart: Vec<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        content: Content,
        mode: u32,
        owner: Owner,
        group: Group,
    },
    /// A directory kept exact: `files` and `dirs` (relative to the entry's path) are all that
    /// may be below it, apart from paths that more specific entries take over.
    Tree {
        files: Vec<TreeFile>,
        dirs: Vec<PathBuf>,
        dir_mode: u32,
        owner: Owner,
        group: Group,
    },
    Directory {
        mode: u32,
        owner: Owner,
        group: Group,
    },
    Symlink {
        target: PathBuf,
    },
    Absent,
}

impl EntryKind {
    /// The manifest's name for the kind: `file`, `tree`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Tree { .. } => "tree",
            Self::Directory { .. } => "directory",
            Self::Symlink { .. } => "symlink",
            Self::Absent => "absent",
        }
    }
}

/// A file of a `tree` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the tree's path; every component checked.
    pub path: PathBuf,
    pub content: Content,
    pub mode: u32,
}

/// A blob of the commit; its bytes are read later with `objects.repo().find_object(oid)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub oid: gix::ObjectId,
    /// Known for `file` entries. The files of a `tree` leave it to whoever writes them: looking
    /// up ten thousand blob headers would cost more than the whole no-op reconcile.
    pub size: Option<u64>,
}

/// A resolved owner: the uid, and the name as written (or the number). The name is shared:
/// every file of a tree has the same owner, and a copy costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub name: std::sync::Arc<str>,
}

/// A resolved group: the gid, and the name as written (or the number), shared as
/// [`Owner`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub gid: u32,
    pub name: std::sync::Arc<str>,
}

/// `[[unit]]`: the state a systemd unit should be in; `None` leaves that aspect alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    pub origin: Origin,
}

/// `[[health]]`: a command (argv, no shell) that must exit 0 after a deployment. It is run up
/// to `1 + retries` times, `interval` apart, each run killed after `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    pub command: Vec<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
    pub origin: Origin,
}

impl HealthCheck {
    /// Defaults of `timeout`, `retries` and `interval`.
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    pub const RETRIES: u32 = 2;
    pub const INTERVAL: Duration = Duration::from_secs(1);
}

/// Reads, resolves and validates the manifest of `commit` for `host`.
pub fn load(
    objects: &ObjectStore,
    commit: &TrustedCommit,
    host: &Host,
    allowed_paths: &[PathBuf],
) -> Result<Manifest, ManifestError> {
    let snapshot = source::Snapshot::open(objects.repo(), commit.id())?;
    let files = resolve::collect(&snapshot, host)?;
    let mut manifest = Manifest::default();
    for (file, raw) in &files {
        resolve::convert(file, raw, &snapshot, host, allowed_paths, &mut manifest)?;
    }
    validate::settle(&mut manifest)?;
    Ok(manifest)
}
