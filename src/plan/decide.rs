//! The decisions: for each desired path what to do, then what to remove and what to prune.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::{
    Action, Desired, DesiredKind, Managed, Observation, Observed, Plan, PlanError, Reason, Step,
};
use crate::manifest::{Group, HostPath, Owner};

const MISSING: Observed = Observed::Missing;

/// The steps of each phase, collected in any order and sorted at the end.
struct Builder<'a> {
    observed: &'a Observation,
    desired: BTreeMap<&'a HostPath, &'a Desired>,
    create: Vec<Step>,
    change: Vec<Step>,
    remove: Vec<Step>,
    prune: Vec<Step>,
    /// Originals put back, after every removal.
    restore: Vec<Step>,
    restart: BTreeMap<String, HostPath>,
    parent_owner: (Owner, Group),
}

pub fn make(
    desired: &[Desired],
    observed: &Observation,
    previous: &[Managed],
    parent_owner: Option<(Owner, Group)>,
) -> Result<Plan, PlanError> {
    let mut b = Builder {
        parent_owner: parent_owner.unwrap_or_else(|| (root_owner(), root_group())),
        observed,
        desired: desired.iter().map(|d| (&d.path, d)).collect(),
        create: Vec::new(),
        // About one change per desired path on a first deployment: one allocation.
        change: Vec::with_capacity(desired.len()),
        remove: Vec::new(),
        prune: Vec::new(),
        restore: Vec::new(),
        restart: BTreeMap::new(),
    };
    for d in desired {
        let before = b.len();
        if d.kind == DesiredKind::Absent {
            b.absent_reachable(&d.path)?;
        } else {
            b.parents(&d.path)?;
        }
        b.entry(d)?;
        if b.len() > before {
            for unit in &d.restart {
                b.restart
                    .entry(unit.clone())
                    .or_insert_with(|| d.path.clone());
            }
        }
    }
    b.extras();
    b.prunes(previous);
    Ok(b.finish())
}

impl<'a> Builder<'a> {
    fn len(&self) -> usize {
        self.create.len() + self.change.len() + self.remove.len()
    }

    fn observed(&self, path: &HostPath) -> &'a Observed {
        self.observed.get(path).unwrap_or(&MISSING)
    }

    fn step(list: &mut Vec<Step>, path: &HostPath, action: Action, reason: Reason) {
        list.push(Step {
            path: path.clone(),
            action,
            reason,
        });
    }

    /// Missing parents that no entry declares are created `0755 root:root`; a parent that is
    /// not a directory stops the plan.
    fn parents(&mut self, path: &HostPath) -> Result<(), PlanError> {
        let mut ancestor = path.parent();
        while let Some(parent) = ancestor {
            if self.desired.contains_key(&parent) {
                return Ok(());
            }
            match self.observed.get(&parent) {
                None | Some(Observed::Directory { .. }) => return Ok(()),
                Some(Observed::Missing) => {
                    if !self.create.iter().any(|s| s.path == parent) {
                        let action = Action::CreateDirectory {
                            mode: 0o755,
                            owner: self.parent_owner.0.clone(),
                            group: self.parent_owner.1.clone(),
                        };
                        Self::step(&mut self.create, &parent, action, Reason::Parent);
                    }
                }
                Some(other) => {
                    return Err(PlanError::ParentNotDirectory {
                        path: path.clone(),
                        parent,
                        found: other.name(),
                    });
                }
            }
            ancestor = parent.parent();
        }
        Ok(())
    }

    /// An absent path below a symlink may exist through it: outpost cannot tell without
    /// following the symlink, so it says so. Below a file or a missing directory it is absent.
    fn absent_reachable(&self, path: &HostPath) -> Result<(), PlanError> {
        let symlink = std::iter::successors(path.parent(), HostPath::parent)
            .find(|a| matches!(self.observed.get(a), Some(Observed::Symlink { .. })));
        match symlink {
            Some(parent) => Err(PlanError::AbsentBelowSymlink {
                path: path.clone(),
                parent,
            }),
            None => Ok(()),
        }
    }

    fn entry(&mut self, d: &Desired) -> Result<(), PlanError> {
        let path = &d.path;
        let observed = self.observed(path);
        let in_the_way = |wanted| PlanError::InTheWay {
            path: path.clone(),
            found: observed.name(),
            wanted,
        };
        match (&d.kind, observed) {
            (DesiredKind::File { .. }, Observed::Directory { .. } | Observed::Other) => {
                Err(in_the_way("file"))
            }
            (DesiredKind::File { .. }, _) => {
                self.file(path, &d.kind, observed);
                Ok(())
            }
            (DesiredKind::Directory { .. }, Observed::Missing | Observed::Directory { .. }) => {
                self.directory(path, &d.kind, observed);
                Ok(())
            }
            (DesiredKind::Directory { .. }, _) => Err(in_the_way("directory")),
            (DesiredKind::Symlink { .. }, Observed::Directory { .. } | Observed::Other) => {
                Err(in_the_way("symlink"))
            }
            (DesiredKind::Symlink { target }, _) => {
                self.symlink(path, target, observed);
                Ok(())
            }
            (DesiredKind::Absent, Observed::Missing) => Ok(()),
            (DesiredKind::Absent, found) => {
                let action = Action::Remove {
                    found: found.name(),
                };
                Self::step(&mut self.remove, path, action, Reason::Absent);
                Ok(())
            }
        }
    }

    fn file(&mut self, path: &HostPath, kind: &DesiredKind, observed: &Observed) {
        let DesiredKind::File {
            blob,
            size,
            mode,
            owner,
            group,
        } = kind
        else {
            return;
        };
        if let Observed::File {
            blob: now,
            mode: now_mode,
            uid,
            gid,
            ..
        } = observed
            && now == blob
        {
            self.attributes(path, (*now_mode, *uid, *gid), *mode, owner, group);
            return;
        }
        let (old, reason) = match observed {
            Observed::Missing => (None, Reason::Missing),
            other => (Some(other.clone()), Reason::Drifted),
        };
        let action = Action::Write {
            blob: *blob,
            size: *size,
            mode: *mode,
            owner: owner.clone(),
            group: group.clone(),
            old,
        };
        Self::step(&mut self.change, path, action, reason);
    }

    fn directory(&mut self, path: &HostPath, kind: &DesiredKind, observed: &Observed) {
        let DesiredKind::Directory {
            mode, owner, group, ..
        } = kind
        else {
            return;
        };
        if let Observed::Directory {
            mode: now,
            uid,
            gid,
        } = observed
        {
            self.attributes(path, (*now, *uid, *gid), *mode, owner, group);
            return;
        }
        let action = Action::CreateDirectory {
            mode: *mode,
            owner: owner.clone(),
            group: group.clone(),
        };
        self.create.retain(|s| s.path != *path);
        Self::step(&mut self.create, path, action, Reason::Missing);
    }

    /// Owner first, then mode, as apply sets them.
    fn attributes(
        &mut self,
        path: &HostPath,
        (mode, uid, gid): (u32, u32, u32),
        want: u32,
        owner: &Owner,
        group: &Group,
    ) {
        let chown = (uid, gid) != (owner.uid, group.gid);
        if chown {
            let action = Action::Chown {
                from: (uid, gid),
                owner: owner.clone(),
                group: group.clone(),
            };
            Self::step(&mut self.change, path, action, Reason::Drifted);
        }
        // A chown clears setuid and setgid: set such a mode again after it.
        if mode != want || (chown && want & 0o6000 != 0) {
            let action = Action::Chmod {
                from: mode,
                to: want,
            };
            Self::step(&mut self.change, path, action, Reason::Drifted);
        }
    }

    fn symlink(&mut self, path: &HostPath, target: &std::path::Path, observed: &Observed) {
        let (old, reason) = match observed {
            Observed::Symlink { target: now } if now == target => return,
            Observed::Symlink { target: now } => (Some(now.clone()), Reason::Drifted),
            Observed::Missing => (None, Reason::Missing),
            _ => (None, Reason::Drifted),
        };
        let action = Action::Symlink {
            target: target.to_owned(),
            old,
        };
        Self::step(&mut self.change, path, action, reason);
    }
}

impl Builder<'_> {
    /// Removes what observe found below an exact directory or an `absent` path that no
    /// desired path accounts for.
    fn extras(&mut self) {
        for (path, found) in self.observed {
            if *found == Observed::Missing
                || self.desired.contains_key(path)
                || self.above_desired(path)
            {
                continue;
            }
            let Some(owner) = std::iter::successors(path.parent(), HostPath::parent)
                .find_map(|a| self.desired.get(&a).copied())
            else {
                continue;
            };
            let reason = match owner.kind {
                DesiredKind::Directory { exact: true, .. } => Reason::NotInTree(owner.path.clone()),
                DesiredKind::Absent => Reason::Absent,
                _ => continue,
            };
            for unit in &owner.restart {
                self.restart
                    .entry(unit.clone())
                    .or_insert_with(|| path.clone());
            }
            let action = Action::Remove {
                found: found.name(),
            };
            Self::step(&mut self.remove, path, action, reason);
        }
    }

    /// Paths of the previous deployment no longer desired: removed if outpost created them,
    /// restored if it took them over. Paths already removed above are left alone, and so are
    /// originals below an exact directory still desired: what a tree removed stays removed
    /// until the tree goes.
    fn prunes(&mut self, previous: &[Managed]) {
        let removed: BTreeSet<&HostPath> = self.remove.iter().map(|s| &s.path).collect();
        for managed in previous {
            let path = &managed.path;
            if self.desired.contains_key(path) || self.above_desired(path) || removed.contains(path)
            {
                continue;
            }
            if managed.took_over {
                if !self.below_tree(path) {
                    Self::step(&mut self.restore, path, Action::Restore, Reason::Pruned);
                }
                continue;
            }
            let found = self.observed(path);
            if *found != Observed::Missing {
                let action = Action::Remove {
                    found: found.name(),
                };
                Self::step(&mut self.prune, path, action, Reason::Pruned);
            }
        }
    }

    /// Whether a desired path is below `path` (the paths below it are one run of the map).
    fn above_desired(&self, path: &HostPath) -> bool {
        self.desired
            .range::<HostPath, _>(path.below_from()..)
            .next()
            .is_some_and(|(below, _)| below.is_below(path))
    }

    /// Whether `path` is below a desired exact directory (a tree).
    fn below_tree(&self, path: &HostPath) -> bool {
        std::iter::successors(path.parent(), HostPath::parent).any(|a| {
            matches!(
                self.desired.get(&a).map(|d| &d.kind),
                Some(DesiredKind::Directory { exact: true, .. })
            )
        })
    }

    fn finish(mut self) -> Plan {
        self.create.sort_by(|a, b| a.path.cmp(&b.path));
        self.change.sort_by(|a, b| a.path.cmp(&b.path));
        let deepest_first = |a: &Step, b: &Step| {
            (Reverse(a.path.depth()), &a.path).cmp(&(Reverse(b.path.depth()), &b.path))
        };
        self.remove.sort_by(deepest_first);
        self.prune.sort_by(deepest_first);
        // Parents first: a directory comes back before what was in it.
        self.restore.sort_by(|a, b| a.path.cmp(&b.path));
        // Most steps are changes: their list becomes the plan, sized once, so a plan of many
        // files is never held twice.
        let total = self.create.len()
            + self.change.len()
            + self.remove.len()
            + self.prune.len()
            + self.restore.len();
        let mut steps = self.change;
        steps.reserve_exact(total - steps.len());
        steps.splice(0..0, self.create);
        steps.extend(self.remove);
        steps.extend(self.prune);
        steps.extend(self.restore);
        steps.shrink_to_fit();
        Plan {
            steps,
            restart: self.restart,
            units: Vec::new(),
        }
    }
}

fn root_owner() -> Owner {
    Owner {
        uid: 0,
        name: "root".into(),
    }
}

fn root_group() -> Group {
    Group {
        gid: 0,
        name: "root".into(),
    }
}
