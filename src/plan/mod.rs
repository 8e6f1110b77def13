//! What apply would change: desired entries + observed host state + the last inventory →
//! ordered [`Step`]s. Pure: no I/O, no clock, not async; every decision is made here.
//!
//! # Inputs
//!
//! * [`Desired`]: one per path, `tree` entries already expanded into their files and
//!   directories (`exact` directories); file content named by its blob id.
//! * [`Observation`]: what observe saw, by path. It holds every desired path (a path it lacks
//!   counts as missing), every inventory path, everything below an `exact` directory or an
//!   `absent` directory, and each ancestor of a desired path that is *not* a directory
//!   (missing, or something in the way); an ancestor it does not hold is taken to exist.
//! * [`Managed`]: the paths the previous deployment managed, and whether outpost took each
//!   over from an existing original.
//!
//! # Order
//!
//! 1. directories are created, parents before children;
//! 2. files are written, modes and owners fixed, symlinks set, by path;
//! 3. removals (`absent`, extras of an exact directory), deepest first;
//! 4. pruning of paths no longer desired, deepest first: a path outpost created is removed;
//! 5. then what outpost took over gets its original back, parents first (a directory before
//!    what was in it). An original below a tree still desired stays removed.
//!
//! # Refusals
//!
//! outpost never replaces a directory by a non-directory or the reverse on its own: a
//! directory (or a device, socket, fifo) where a file or symlink is wanted, or a non-directory
//! where a directory is wanted or as a parent of a desired path, is a [`PlanError`] and nothing
//! is applied. Files and symlinks replace each other atomically. An `absent` path below a
//! symlink cannot be checked without following it, and is refused the same way.

mod decide;
mod display;
pub mod units;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::manifest::{Group, HostPath, Owner};

pub use display::{MAX_DIFF_BYTES, Stat, Text, Texts, WithDiffs};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "cannot put a {wanted} at {path}: a {found} is in the way; remove it by hand or change the manifest"
    )]
    InTheWay {
        path: HostPath,
        found: &'static str,
        wanted: &'static str,
    },
    #[error(
        "cannot create {path}: its parent {parent} is a {found}, not a directory; outpost never follows or replaces it"
    )]
    ParentNotDirectory {
        path: HostPath,
        parent: HostPath,
        found: &'static str,
    },
    #[error(
        "cannot check that {path} is absent: {parent} is a symlink, which outpost never follows; remove the symlink or change the manifest"
    )]
    AbsentBelowSymlink { path: HostPath, parent: HostPath },
}

/// A file's content named as git names it: the id of the blob with those bytes. Desired
/// content comes straight from the commit's tree and observed content from the inventory's
/// stat cache, so planning a host that has not changed reads no file and no blob.
pub type BlobId = gix::ObjectId;

/// The blob id of `bytes`. Content crafted to collide in SHA-1 (detected by gix) gets the null
/// id, which no desired blob has, so such a file is always rewritten.
pub fn blob_id(bytes: &[u8]) -> BlobId {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes)
        .unwrap_or_else(|_| gix::ObjectId::null(gix::hash::Kind::Sha1))
}

/// One desired path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub path: HostPath,
    pub kind: DesiredKind,
    /// Units to restart when this path changes.
    pub restart: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredKind {
    File {
        blob: BlobId,
        /// When known: only shown, never compared.
        size: Option<u64>,
        mode: u32,
        owner: Owner,
        group: Group,
    },
    /// `exact`: anything below that no desired path accounts for is removed (a `tree`).
    Directory {
        mode: u32,
        owner: Owner,
        group: Group,
        exact: bool,
    },
    Symlink {
        target: PathBuf,
    },
    Absent,
}

impl DesiredKind {
    /// A file with content `bytes`.
    pub fn file(bytes: &[u8], mode: u32, owner: Owner, group: Group) -> Self {
        Self::File {
            blob: blob_id(bytes),
            size: Some(bytes.len() as u64),
            mode,
            owner,
            group,
        }
    }
}

/// What is at a path on the host, never following a symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Missing,
    File {
        blob: BlobId,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Directory {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
    },
    /// A device, socket or fifo.
    Other,
}

impl Observed {
    fn name(&self) -> &'static str {
        match self {
            Self::Missing => "missing path",
            Self::File { .. } => "file",
            Self::Directory { .. } => "directory",
            Self::Symlink { .. } => "symlink",
            Self::Other => "special file",
        }
    }
}

/// What observe saw, by path.
pub type Observation = BTreeMap<HostPath, Observed>;

/// A path the previous deployment managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub path: HostPath,
    /// Whether the path existed before outpost first wrote it (its original is in the store).
    pub took_over: bool,
}

/// One change to the host, with why it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub path: HostPath,
    pub action: Action,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateDirectory {
        mode: u32,
        owner: Owner,
        group: Group,
    },
    /// Write the whole file (temp file, owner, mode, rename); `old` is what it replaces.
    Write {
        blob: BlobId,
        /// When known; the caller may fill it in before showing the plan.
        size: Option<u64>,
        mode: u32,
        owner: Owner,
        group: Group,
        old: Option<Observed>,
    },
    Chmod {
        from: u32,
        to: u32,
    },
    Chown {
        from: (u32, u32),
        owner: Owner,
        group: Group,
    },
    /// Create or replace a symlink; `old` is the previous target if it was one.
    Symlink {
        target: PathBuf,
        old: Option<PathBuf>,
    },
    /// Remove what observe saw there (a directory only once empty).
    Remove {
        found: &'static str,
    },
    /// Put back the original outpost kept when it took the path over.
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The path does not exist yet.
    Missing,
    /// A parent of a desired path.
    Parent,
    /// The path differs from the manifest.
    Drifted,
    /// The manifest says `absent`, or the path is below an `absent` directory.
    Absent,
    /// Not part of the exact directory (a `tree`) at the path given.
    NotInTree(HostPath),
    /// No longer in the manifest.
    Pruned,
}

/// The ordered steps that make the host match, and what systemd must do around them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Units to restart because an entry naming them changed: unit → the first such path.
    pub restart: BTreeMap<String, HostPath>,
    /// Unit steps ([`units::decide`]), added by the caller once it read the units' state.
    pub units: Vec<units::UnitStep>,
}

impl Plan {
    /// No drift: the host already matches, files and units.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.units.is_empty()
    }
}

/// Plans the steps from the `desired` entries, the `observed` host and the `previous`
/// inventory.
pub fn make(
    desired: &[Desired],
    observed: &Observation,
    previous: &[Managed],
) -> Result<Plan, PlanError> {
    decide::make(desired, observed, previous, None)
}

/// [`make`], with the owner of parent directories no entry declares (default `root:root`).
pub fn make_with_parent_owner(
    desired: &[Desired],
    observed: &Observation,
    previous: &[Managed],
    parent_owner: (Owner, Group),
) -> Result<Plan, PlanError> {
    decide::make(desired, observed, previous, Some(parent_owner))
}
