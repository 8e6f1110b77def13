//! The plan for humans: one line per step, a unified diff for text files, a `--stat` summary.

use std::fmt;

use bytesize::ByteSize;
use similar::TextDiff;

use super::{Action, Observed, Plan, Reason, Sha256Digest, Step};

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
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "{step}")?;
            if let Action::Write {
                bytes,
                digest,
                old: Some(old),
                ..
            } = &step.action
            {
                write_change(f, step, old, bytes, digest)?;
            }
        }
        if !self.restart.is_empty() {
            let units: Vec<&str> = self.restart.iter().map(String::as_str).collect();
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
                bytes,
                mode,
                owner,
                group,
                old,
                ..
            } => {
                let sign = if old.is_some() { '~' } else { '+' };
                let size = ByteSize(bytes.len() as u64);
                let (o, g) = (&owner.name, &group.name);
                write!(f, "{sign} write {path} ({mode:04o} {o}:{g}, {size})")?;
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

/// The diff of a rewritten file: unified for text, sizes and short hashes otherwise.
fn write_change(
    f: &mut fmt::Formatter<'_>,
    step: &Step,
    old: &Observed,
    new: &[u8],
    new_digest: &Sha256Digest,
) -> fmt::Result {
    let Observed::File {
        digest,
        size,
        bytes,
        ..
    } = old
    else {
        return Ok(());
    };
    if let (Some(old_text), Some(new_text)) = (bytes.as_deref().and_then(text), text(new)) {
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
        "  binary: {} sha256:{} -> {} sha256:{}",
        ByteSize(*size),
        short(digest),
        ByteSize(new.len() as u64),
        short(new_digest)
    )
}

/// `bytes` as text when it is UTF-8 without NUL and small enough to diff.
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > MAX_DIFF_BYTES || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn short(digest: &Sha256Digest) -> String {
    hex::encode(&digest[..6])
}
