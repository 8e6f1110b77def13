//! The manifest's entries as the planner wants them: one [`Desired`] per host path, `tree`
//! entries expanded into exact directories and their files, content named by blob id.

use std::sync::Arc;

use crate::manifest::{Entry, EntryKind, Group, HostPath, Manifest, Owner};
use crate::plan::{Desired, DesiredKind};

/// Owner and group names by id, each looked up in the user database once.
#[derive(Default)]
pub struct Names {
    users: Vec<(u32, Arc<str>)>,
    groups: Vec<(u32, Arc<str>)>,
}

impl Names {
    /// The owner with `uid`, named as the user database names it (or by the number).
    pub fn owner(&mut self, uid: u32) -> Owner {
        let name = cached(&mut self.users, uid, || {
            nix::unistd::User::from_uid(uid.into())
                .ok()?
                .map(|u| u.name)
        });
        Owner { uid, name }
    }

    /// The group with `gid`, named as the group database names it (or by the number).
    pub fn group(&mut self, gid: u32) -> Group {
        let name = cached(&mut self.groups, gid, || {
            nix::unistd::Group::from_gid(gid.into())
                .ok()?
                .map(|g| g.name)
        });
        Group { gid, name }
    }
}

/// The name of `id` in `cache`, looked up and kept when it is not there yet.
fn cached(
    cache: &mut Vec<(u32, Arc<str>)>,
    id: u32,
    lookup: impl FnOnce() -> Option<String>,
) -> Arc<str> {
    if let Some((_, name)) = cache.iter().find(|(i, _)| *i == id) {
        return name.clone();
    }
    let name: Arc<str> = lookup().unwrap_or_else(|| id.to_string()).into();
    cache.push((id, name.clone()));
    name
}

/// Who owns what outpost writes when the manifest's owners are not applied (`apply.set_owner
/// = false`): the user running outpost.
#[derive(Debug, Clone)]
pub struct OwnerOverride {
    pub owner: Owner,
    pub group: Group,
}

/// Expands the manifest into desired paths, sorted by path. An entry of its own wins over a
/// tree's file or directory at the same path; a `directory` entry inside a tree stays exact.
pub fn expand(manifest: &Manifest, owners: Option<&OwnerOverride>) -> Vec<Desired> {
    let trees: Vec<&HostPath> = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Tree { .. }))
        .map(|e| &e.path)
        .collect();
    // One list, sized once, sorted, then the first of each path kept: the entries of their
    // own come first, and the sort is stable.
    let size = manifest
        .entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::Tree { files, dirs, .. } => 1 + dirs.len() + files.len(),
            _ => 1,
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    for entry in manifest
        .entries
        .iter()
        .filter(|e| !matches!(e.kind, EntryKind::Tree { .. }))
    {
        let inside_tree = trees.iter().any(|t| entry.path.is_below(t));
        out.push(single(entry, inside_tree, owners));
    }
    for entry in &manifest.entries {
        tree(entry, owners, &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|later, first| later.path == first.path);
    out.shrink_to_fit();
    out
}

fn owned(owner: &Owner, group: &Group, owners: Option<&OwnerOverride>) -> (Owner, Group) {
    match owners {
        Some(o) => (o.owner.clone(), o.group.clone()),
        None => (owner.clone(), group.clone()),
    }
}

fn single(entry: &Entry, inside_tree: bool, owners: Option<&OwnerOverride>) -> Desired {
    let kind = match &entry.kind {
        EntryKind::File {
            content,
            mode,
            owner,
            group,
        } => {
            let (owner, group) = owned(owner, group, owners);
            DesiredKind::File {
                blob: content.oid,
                size: content.size,
                mode: *mode,
                owner,
                group,
            }
        }
        EntryKind::Directory { mode, owner, group } => {
            let (owner, group) = owned(owner, group, owners);
            DesiredKind::Directory {
                mode: *mode,
                owner,
                group,
                exact: inside_tree,
            }
        }
        EntryKind::Symlink { target } => DesiredKind::Symlink {
            target: target.clone(),
        },
        EntryKind::Absent | EntryKind::Tree { .. } => DesiredKind::Absent,
    };
    Desired {
        path: entry.path.clone(),
        kind,
        restart: entry.restart.clone(),
    }
}

/// A tree entry's root, directories and files, added to `out`; nothing for other entries.
fn tree(entry: &Entry, owners: Option<&OwnerOverride>, out: &mut Vec<Desired>) {
    let EntryKind::Tree {
        files,
        dirs,
        dir_mode,
        owner,
        group,
    } = &entry.kind
    else {
        return;
    };
    let (owner, group) = owned(owner, group, owners);
    // The manifest checked every component of a tree's relative paths.
    let at = |rel: &std::path::Path| entry.path.join_checked(rel);
    let dir = |path: HostPath| Desired {
        path,
        kind: DesiredKind::Directory {
            mode: *dir_mode,
            owner: owner.clone(),
            group: group.clone(),
            exact: true,
        },
        restart: entry.restart.clone(),
    };
    out.push(dir(entry.path.clone()));
    out.extend(dirs.iter().map(|d| dir(at(d))));
    out.extend(files.iter().map(|f| Desired {
        path: at(&f.path),
        kind: DesiredKind::File {
            blob: f.content.oid,
            size: f.content.size,
            mode: f.mode,
            owner: owner.clone(),
            group: group.clone(),
        },
        restart: entry.restart.clone(),
    }));
}

/// The desired state of a managed path as the inventory recorded it for the deployed commit
/// (`None` for a row that is not one of the four kinds).
pub fn from_inventory(row: &crate::store::InventoryRow, names: &mut Names) -> Option<Desired> {
    let path = HostPath::parse(&row.path).ok()?;
    let uid = row.uid.unwrap_or(0);
    let gid = row.gid.unwrap_or(0);
    let kind = match row.kind.as_str() {
        "file" => DesiredKind::File {
            blob: gix::ObjectId::from_hex(row.blob.as_deref()?.as_bytes()).ok()?,
            size: None,
            mode: row.mode?,
            owner: names.owner(uid),
            group: names.group(gid),
        },
        "directory" => DesiredKind::Directory {
            mode: row.mode?,
            owner: names.owner(uid),
            group: names.group(gid),
            exact: row.exact,
        },
        "symlink" => DesiredKind::Symlink {
            target: row.target.as_deref()?.into(),
        },
        "absent" => DesiredKind::Absent,
        _ => return None,
    };
    Some(Desired {
        path,
        kind,
        restart: Vec::new(),
    })
}
