//! The plan for humans: one line per step, a `--stat` summary, and with [`Plan::with_diffs`]
//! a unified diff for text files (sizes and blob ids for binary ones). The bytes to diff are
//! handed in by the caller, which reads them; the plan itself stays pure.
//!
//! Secrets are never shown: a file whose mode, desired or on the host, is not world-readable
//! gets "content differs (secret: 0600, diff hidden)" with sizes and blob ids, as does one
//! the caller marks [`Text::Redacted`] (`apply.redact`). Control characters in paths, symlink
//! targets and file content are escaped, so nothing on the host can forge a plan line or
//! drive the terminal.

use std::collections::BTreeMap;
use std::fmt;

use bytesize::ByteSize;
use similar::TextDiff;

use super::{Action, BlobId, Observed, Plan, Reason, Step};
use crate::manifest::HostPath;

/// What the caller gives the display of a rewritten file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// The bytes on the host now, if readable, and the new bytes.
    Bytes(Option<Vec<u8>>, Vec<u8>),
    /// Secret by configuration (`apply.redact`): sizes and blob ids only.
    Redacted,
}

/// For rewritten files: what may be shown of their content.
pub type Texts = BTreeMap<HostPath, Text>;

/// A plan shown with the diffs of its rewritten files.
pub struct WithDiffs<'a> {
    plan: &'a Plan,
    texts: &'a Texts,
}

/// Files larger than this are summarised by size and hash, never diffed.
pub const MAX_DIFF_BYTES: usize = 256 * 1024;

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

    /// The rewritten files of this plan, their new blobs, and whether they are secret by mode
    /// (their content is never shown, so need not be read), for gathering [`Texts`].
    pub fn rewrites(&self) -> impl Iterator<Item = (&HostPath, BlobId, bool)> {
        self.steps.iter().filter_map(|s| match &s.action {
            Action::Write {
                blob,
                mode,
                old: Some(Observed::File { mode: old, .. }),
                ..
            } => Some((&s.path, *blob, secret_mode(*mode, *old).is_some())),
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
        // Steps before the files are done first, but shown with the rest: they are systemd's.
        for step in &self.plan.units {
            writeln!(f, "{step}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &shown(self.path.as_path());
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
                    shown(target),
                    shown(old)
                )?,
                None => write!(f, "+ symlink {path} -> {}", shown(target))?,
            },
            Action::Remove { found } => write!(f, "- remove {path} ({found})")?,
            Action::Restore => write!(f, "~ restore {path} (the original from before outpost)")?,
        }
        match &self.reason {
            Reason::Missing | Reason::Drifted | Reason::Absent => Ok(()),
            Reason::Parent => write!(f, ", parent of a managed path"),
            Reason::NotInTree(root) => write!(f, ", not in the tree {}", shown(root.as_path())),
            Reason::Pruned => write!(f, ", no longer in the manifest"),
        }
    }
}

/// The diff of a rewritten file: unified for text, sizes and short blob ids otherwise, and
/// never the content of a secret.
fn write_change(
    f: &mut fmt::Formatter<'_>,
    step: &Step,
    old: &Observed,
    (new_blob, new_size): (BlobId, Option<u64>),
    text: Option<&Text>,
) -> fmt::Result {
    let Observed::File {
        blob,
        size,
        mode: old_mode,
        ..
    } = old
    else {
        return Ok(());
    };
    let sizes = format!(
        "{} {} -> {} {}",
        ByteSize(*size),
        blob.to_hex_with_len(12),
        new_size.map_or_else(|| "?".to_owned(), |s| ByteSize(s).to_string()),
        new_blob.to_hex_with_len(12)
    );
    let new_mode = match &step.action {
        Action::Write { mode, .. } => *mode,
        _ => *old_mode,
    };
    let secret = secret_mode(new_mode, *old_mode)
        .map(|m| format!("{m:04o}"))
        .or_else(|| (text == Some(&Text::Redacted)).then(|| "apply.redact".to_owned()));
    if let Some(why) = secret {
        return writeln!(f, "  content differs (secret: {why}, diff hidden): {sizes}");
    }
    if let Some(Text::Bytes(Some(old_bytes), new_bytes)) = text
        && let (Some(old_text), Some(new_text)) = (self::text(old_bytes), self::text(new_bytes))
    {
        let path = shown(step.path.as_path());
        let (a, b) = (format!("a{path}"), format!("b{path}"));
        let diff = TextDiff::from_lines(old_text, new_text);
        let diff = diff
            .unified_diff()
            .context_radius(3)
            .header(&a, &b)
            .to_string();
        return write!(f, "{}", crate::text::escape_lines(&diff));
    }
    writeln!(f, "  content: {sizes}")
}

/// The mode that makes a rewritten file secret, desired or on the host: one that is not
/// world-readable.
fn secret_mode(desired: u32, on_host: u32) -> Option<u32> {
    [desired, on_host].into_iter().find(|m| m & 0o004 == 0)
}

/// `bytes` as text when it is UTF-8 without NUL and small enough to diff.
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > MAX_DIFF_BYTES || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// A host path or symlink target as the plan shows it: control characters escaped.
fn shown(path: &std::path::Path) -> String {
    crate::text::escape(&path.to_string_lossy()).into_owned()
}
