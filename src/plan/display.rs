//! The plan for humans: one line per step, a `--stat` summary, and with [`Plan::with_diffs`]
//! a unified diff for text files (sizes and blob ids for binary ones). The bytes to diff are
//! handed in by the caller, which reads them; the plan itself stays pure.

use std::collections::BTreeMap;
use std::fmt;

use bytesize::ByteSize;
use similar::TextDiff;

use super::{Action, BlobId, Observed, Plan, Reason, Step};
use crate::manifest::HostPath;

/// For rewritten files: the bytes on the host now, if readable, and the new bytes.
pub type Texts = BTreeMap<HostPath, (Option<Vec<u8>>, Vec<u8>)>;

/// A plan shown with the diffs of its rewritten files.
pub struct WithDiffs<'a> {
    plan: &'a Plan,
    texts: &'a Texts,
}

/// Files larger than this are summarised by size and hash, never diffed.
const MAX_DIFF_BYTES: usize = 256 * 1024;

/// How many paths a plan creates, changes and removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub create: usize,
    pub change: usize,
    pub remove: usize,
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Stat {
            create,
            change,
            remove,
        } = self;
        write!(
            f,
            "{create} to create, {change} to change, {remove} to remove"
        )
    }
}

impl Plan {
    /// The `--stat` summary; a path with a chown and a chmod counts once.
    pub fn stat(&self) -> Stat {
        let mut stat = Stat::default();
        let mut last = None;
        for step in &self.steps {
            if last == Some(&step.path) {
                continue;
            }
            last = Some(&step.path);
            match &step.action {
                Action::CreateDirectory { .. }
                | Action::Write { old: None, .. }
                | Action::Symlink { old: None, .. }
                    if matches!(step.reason, Reason::Missing | Reason::Parent) =>
                {
                    stat.create += 1;
                }
                Action::Remove { .. } => stat.remove += 1,
                _ => stat.change += 1,
            }
        }
        stat
    }

    /// The plan with the diffs of the rewritten files whose bytes are in `texts`.
    pub fn with_diffs<'a>(&'a self, texts: &'a Texts) -> WithDiffs<'a> {
        WithDiffs { plan: self, texts }
    }

    /// The rewritten files of this plan and their new blobs, for gathering [`Texts`].
    pub fn rewrites(&self) -> impl Iterator<Item = (&HostPath, BlobId)> {
        self.steps.iter().filter_map(|s| match &s.action {
            Action::Write {
                blob,
                old: Some(Observed::File { .. }),
                ..
            } => Some((&s.path, *blob)),
            _ => None,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.with_diffs(&Texts::new()))
    }
}

impl fmt::Display for WithDiffs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.plan.steps {
            writeln!(f, "{step}")?;
            if let Action::Write {
                blob,
                size,
                old: Some(old),
                ..
            } = &step.action
            {
                write_change(f, step, old, (*blob, *size), self.texts.get(&step.path))?;
            }
        }
        if !self.plan.restart.is_empty() {
            let units: Vec<&str> = self.plan.restart.iter().map(String::as_str).collect();
            writeln!(f, "restart {}", units.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &self.path;
        match &self.action {
            Action::CreateDirectory { mode, owner, group } => write!(
                f,
                "+ mkdir {path} ({mode:04o} {}:{})",
                owner.name, group.name
            )?,
            Action::Write {
                size,
                mode,
                owner,
                group,
                old,
                ..
            } => {
                let sign = if old.is_some() { '~' } else { '+' };
                let (o, g) = (&owner.name, &group.name);
                match size {
                    Some(size) => write!(
                        f,
                        "{sign} write {path} ({mode:04o} {o}:{g}, {})",
                        ByteSize(*size)
                    )?,
                    None => write!(f, "{sign} write {path} ({mode:04o} {o}:{g})")?,
                }
            }
            Action::Chmod { from, to } => write!(f, "~ chmod {path} {from:04o} -> {to:04o}")?,
            Action::Chown {
                from: (uid, gid),
                owner,
                group,
            } => write!(
                f,
                "~ chown {path} {uid}:{gid} -> {}:{}",
                owner.name, group.name
            )?,
            Action::Symlink { target, old } => match old {
                Some(old) => write!(
                    f,
                    "~ symlink {path} -> {} (was {})",
                    target.display(),
                    old.display()
                )?,
                None => write!(f, "+ symlink {path} -> {}", target.display())?,
            },
            Action::Remove { found } => write!(f, "- remove {path} ({found})")?,
            Action::Restore => write!(f, "~ restore {path} (the original from before outpost)")?,
        }
        match &self.reason {
            Reason::Missing | Reason::Drifted | Reason::Absent => Ok(()),
            Reason::Parent => write!(f, ", parent of a managed path"),
            Reason::NotInTree(root) => write!(f, ", not in the tree {root}"),
            Reason::Pruned => write!(f, ", no longer in the manifest"),
        }
    }
}

/// The diff of a rewritten file: unified for text, sizes and short blob ids otherwise.
fn write_change(
    f: &mut fmt::Formatter<'_>,
    step: &Step,
    old: &Observed,
    (new_blob, new_size): (BlobId, Option<u64>),
    texts: Option<&(Option<Vec<u8>>, Vec<u8>)>,
) -> fmt::Result {
    let Observed::File { blob, size, .. } = old else {
        return Ok(());
    };
    if let Some((Some(old_bytes), new_bytes)) = texts
        && let (Some(old_text), Some(new_text)) = (text(old_bytes), text(new_bytes))
    {
        let (a, b) = (format!("a{}", step.path), format!("b{}", step.path));
        let diff = TextDiff::from_lines(old_text, new_text);
        return write!(
            f,
            "{}",
            diff.unified_diff().context_radius(3).header(&a, &b)
        );
    }
    writeln!(
        f,
        "  content: {} {} -> {} {}",
        ByteSize(*size),
        blob.to_hex_with_len(12),
        new_size.map_or_else(|| "?".to_owned(), |s| ByteSize(s).to_string()),
        new_blob.to_hex_with_len(12)
    )
}

/// `bytes` as text when it is UTF-8 without NUL and small enough to diff.
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > MAX_DIFF_BYTES || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}
