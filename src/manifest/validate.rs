//! Checks across entries: one entry per path, nothing below a non-directory, and the overlap
//! rule for `tree` entries (see the module doc of [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{EntryKind, HostPath, Manifest, ManifestError, Problem};

/// A path inside a tree that another entry governs; `subtree` when everything below goes too.
struct Takeover {
    tree: usize,
    path: HostPath,
    subtree: bool,
}

/// Sorts the entries by path, checks the claims on every path and lets entries inside a tree
/// take over their paths from it.
pub fn settle(manifest: &mut Manifest) -> Result<(), ManifestError> {
    let entries = &mut manifest.entries;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in entries.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(ManifestError::invalid(
                &pair[1].origin,
                "path",
                Problem::Duplicate(pair[0].origin.to_string()),
            ));
        }
    }
    let index: BTreeMap<&HostPath, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (&e.path, i))
        .collect();
    let mut takeovers = Vec::new();
    for entry in entries.iter() {
        let mut ancestor = entry.path.parent();
        while let Some(a) = ancestor {
            if let Some(&j) = index.get(&a) {
                match entries[j].kind {
                    EntryKind::Directory { .. } => {}
                    EntryKind::Tree { .. } => takeovers.push(Takeover {
                        tree: j,
                        path: entry.path.clone(),
                        subtree: !matches!(entry.kind, EntryKind::Directory { .. }),
                    }),
                    _ => {
                        return Err(ManifestError::invalid(
                            &entry.origin,
                            "path",
                            Problem::BelowNonDirectory(format!(
                                "{} ({})",
                                entries[j].origin,
                                entries[j].kind.name()
                            )),
                        ));
                    }
                }
            }
            ancestor = a.parent();
        }
    }
    for (i, entry) in entries.iter_mut().enumerate() {
        if let EntryKind::Tree { files, dirs, .. } = &mut entry.kind {
            let mine: Vec<&Takeover> = takeovers.iter().filter(|t| t.tree == i).collect();
            let root = &entry.path;
            files.retain(|f| !taken(&mine, &root.join_checked(&f.path)));
            let inner: Vec<PathBuf> = mine
                .iter()
                .filter_map(|t| t.path.as_path().strip_prefix(root).ok())
                .map(Path::to_owned)
                .collect();
            let held = files.iter().map(|f| f.path.as_path());
            *dirs = directories(held.chain(inner.iter().map(PathBuf::as_path)))
                .into_iter()
                .filter(|d| !mine.iter().any(|t| t.path == root.join_checked(d)))
                .collect();
        }
    }
    check_units(manifest)
}

fn taken(takeovers: &[&Takeover], path: &HostPath) -> bool {
    takeovers
        .iter()
        .any(|t| *path == t.path || (t.subtree && path.is_below(&t.path)))
}

/// Every directory that holds one of `paths`, relative, parents first.
fn directories<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        let mut parent = path.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_owned());
            parent = p.parent();
        }
    }
    dirs.into_iter().collect()
}

/// Unit names are valid and unique, and no entry asks to stop, disable or restart a unit
/// outpost must leave running.
fn check_units(manifest: &Manifest) -> Result<(), ManifestError> {
    use crate::units::name;
    for entry in &manifest.entries {
        for unit in &entry.restart {
            name::check(unit).map_err(|p| {
                ManifestError::invalid(
                    &entry.origin,
                    "restart",
                    Problem::UnitName {
                        name: unit.clone(),
                        problem: p,
                    },
                )
            })?;
            if let Some(why) = name::protected(unit) {
                return Err(ManifestError::invalid(
                    &entry.origin,
                    "restart",
                    Problem::ProtectedUnit(unit.clone(), "restarted", why),
                ));
            }
        }
    }
    let mut seen = BTreeMap::new();
    for unit in &manifest.units {
        name::check(&unit.name).map_err(|p| {
            ManifestError::invalid(
                &unit.origin,
                "name",
                Problem::UnitName {
                    name: unit.name.clone(),
                    problem: p,
                },
            )
        })?;
        if let Some(why) = name::protected(&unit.name) {
            let refused = [
                ("enabled", unit.enabled == Some(false), "disabled"),
                ("active", unit.active == Some(false), "stopped"),
            ];
            if let Some((field, _, verb)) = refused.into_iter().find(|(_, r, _)| *r) {
                return Err(ManifestError::invalid(
                    &unit.origin,
                    field,
                    Problem::ProtectedUnit(unit.name.clone(), verb, why),
                ));
            }
        }
        if let Some(first) = seen.insert(unit.name.as_str(), &unit.origin) {
            return Err(ManifestError::invalid(
                &unit.origin,
                "name",
                Problem::Duplicate(first.to_string()),
            ));
        }
    }
    let mut seen = BTreeMap::new();
    for check in &manifest.health {
        if let Some(first) = seen.insert(check.name.as_str(), &check.origin) {
            return Err(ManifestError::invalid(
                &check.origin,
                "name",
                Problem::Duplicate(first.to_string()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_every_parent_of_a_file() {
        let files = [
            Path::new("a/b/c.txt"),
            Path::new("a/d.txt"),
            Path::new("e.txt"),
        ];
        assert_eq!(
            directories(files.into_iter()),
            vec![PathBuf::from("a"), PathBuf::from("a/b")]
        );
    }
}
