//! Unit steps: what systemd must do around and after the file steps. Pure, like the rest of
//! the plan: the units' state is observed by the caller, in one query.
//!
//! # Order
//!
//! 1. a unit whose unit file the deployment removes (and no `[[unit]]` still declares) is
//!    stopped and disabled *before* the file steps, while systemd still knows it;
//! 2. after the file steps, `daemon-reload` when any path under a unit directory changed;
//! 3. `enable`/`disable` of every declared unit that is not as declared, in manifest order;
//! 4. `start`/`stop`, in manifest order;
//! 5. `restart` of each unit an entry that changed names in `restart`, once, declared units in
//!    manifest order and then the others by name; not a unit started in 4 (it just read its
//!    files), nor one declared `active = false`.
//!
//! After `daemon-reload` the units' state is read again and steps 3–5 decided once more from
//! it ([`after_files`]): a unit file installed by this deployment is only known to systemd
//! then. outpost never stops, disables or restarts outpost's own, `dbus.*` or `systemd-*`
//! units (the manifest check refuses asking for it; a removed unit file of one is left be).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Action, Step};
use crate::manifest::{HostPath, Unit};
use crate::units::{UnitOp, UnitState, name};

/// Where unit files live: a change below one of them needs a `daemon-reload`.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// One thing systemd is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStep {
    /// The unit; empty for `daemon-reload`.
    pub unit: String,
    /// `None`: `daemon-reload`.
    pub op: Option<UnitOp>,
    pub why: Why,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its unit file is removed by this deployment (steps before the files).
    UnitFileRemoved(HostPath),
    /// Files under a unit directory changed.
    UnitFiles,
    /// Its state differs from the manifest: what systemd says now.
    State(String),
    /// A file naming it in `restart` changed.
    Changed(HostPath),
}

impl UnitStep {
    /// Done before the file steps.
    pub fn is_before_files(&self) -> bool {
        matches!(self.why, Why::UnitFileRemoved(_))
    }
}

impl fmt::Display for UnitStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.unit;
        match (&self.op, &self.why) {
            (None, _) => write!(f, "* daemon-reload (unit files changed)"),
            (Some(op), Why::UnitFileRemoved(path)) => write!(
                f,
                "* {} {unit} (its unit file {} is removed)",
                op.verb(),
                crate::text::path(path.as_path())
            ),
            (Some(op), Why::State(state)) => {
                write!(
                    f,
                    "* {} {unit} (it is {})",
                    op.verb(),
                    crate::text::escape(state)
                )
            }
            (Some(op), Why::UnitFiles) => write!(f, "* {} {unit}", op.verb()),
            (Some(op), Why::Changed(path)) => write!(
                f,
                "* {} {unit} (because {} changed)",
                op.verb(),
                crate::text::path(path.as_path())
            ),
        }
    }
}

/// The unit a path names when it is a unit file (directly in a unit directory).
pub fn unit_file(path: &HostPath) -> Option<String> {
    let parent = path.parent()?;
    let dir = parent.as_path().to_str()?;
    if !UNIT_DIRS.contains(&dir) {
        return None;
    }
    let name = path.as_path().file_name()?.to_str()?;
    name::check(name).ok().map(|()| name.to_owned())
}

/// Whether a change at `path` needs a `daemon-reload`: a unit file, a drop-in, a `.wants/`
/// link, anything below a unit directory.
pub fn needs_reload(path: &HostPath) -> bool {
    UNIT_DIRS
        .iter()
        .any(|dir| HostPath::parse(dir).is_ok_and(|d| path.is_below(&d)))
}

/// The units whose state the plan needs: those declared, and those whose unit file the file
/// steps remove.
pub fn names_to_observe(declared: &[Unit], steps: &[Step]) -> Vec<String> {
    let mut names: Vec<String> = declared.iter().map(|u| u.name.clone()).collect();
    let mut seen: BTreeSet<String> = names.iter().cloned().collect();
    for unit in removed_unit_files(declared, steps).into_keys() {
        if seen.insert(unit.clone()) {
            names.push(unit);
        }
    }
    names
}

/// Unit files the steps remove, of units no longer declared, that outpost may stop.
fn removed_unit_files(declared: &[Unit], steps: &[Step]) -> BTreeMap<String, HostPath> {
    let mut out = BTreeMap::new();
    for step in steps
        .iter()
        .filter(|s| matches!(s.action, Action::Remove { .. }))
    {
        if let Some(unit) = unit_file(&step.path)
            && !declared.iter().any(|d| d.name == unit)
            && name::protected(&unit).is_none()
        {
            out.entry(unit).or_insert_with(|| step.path.clone());
        }
    }
    out
}

/// The unit steps of a deployment, from the file steps, the units to restart (unit → the
/// first changed path naming it) and the units' state now. A unit systemd does not describe
/// counts as not found.
pub fn decide(
    declared: &[Unit],
    observed: &BTreeMap<String, UnitState>,
    steps: &[Step],
    restart: &BTreeMap<String, HostPath>,
) -> Vec<UnitStep> {
    let mut out = Vec::new();
    let state = |name: &str| crate::units::state_of(observed, name);
    let removed = removed_unit_files(declared, steps);
    for (unit, path) in &removed {
        let now = state(unit);
        if now.is_up() {
            out.push(step(unit, UnitOp::Stop, Why::UnitFileRemoved(path.clone())));
        }
        if now.is_enabled() {
            out.push(step(
                unit,
                UnitOp::Disable,
                Why::UnitFileRemoved(path.clone()),
            ));
        }
    }
    if steps.iter().any(|s| needs_reload(&s.path)) {
        out.push(UnitStep {
            unit: String::new(),
            op: None,
            why: Why::UnitFiles,
        });
    }
    let stopped: BTreeSet<&str> = removed.keys().map(String::as_str).collect();
    out.extend(after_files(declared, &state, restart, &stopped));
    out
}

/// Steps 3–5, from the units' state after the files and `daemon-reload`.
pub fn after_files(
    declared: &[Unit],
    state: &dyn Fn(&str) -> UnitState,
    restart: &BTreeMap<String, HostPath>,
    stopped: &BTreeSet<&str>,
) -> Vec<UnitStep> {
    let mut out = Vec::new();
    for unit in declared {
        let now = state(&unit.name);
        match unit.enabled {
            Some(true) if !now.satisfies_enabled() => {
                out.push(step(&unit.name, UnitOp::Enable, enable_why(&now)));
            }
            Some(false) if now.is_enabled() => {
                out.push(step(&unit.name, UnitOp::Disable, enable_why(&now)));
            }
            _ => {}
        }
    }
    let mut started = BTreeSet::new();
    for unit in declared {
        let now = state(&unit.name);
        match unit.active {
            Some(true) if !now.is_up() => {
                started.insert(unit.name.as_str());
                out.push(step(&unit.name, UnitOp::Start, Why::State(now.describe())));
            }
            Some(false) if now.is_up() => {
                out.push(step(&unit.name, UnitOp::Stop, Why::State(now.describe())));
            }
            _ => {}
        }
    }
    let skip = |name: &str| {
        started.contains(name)
            || stopped.contains(name)
            || declared
                .iter()
                .any(|u| u.name == name && u.active == Some(false))
    };
    let declared_first = declared
        .iter()
        .filter_map(|u| restart.get_key_value(&u.name))
        .chain(
            restart
                .iter()
                .filter(|(name, _)| !declared.iter().any(|u| &u.name == *name)),
        );
    for (name, path) in declared_first {
        if !skip(name) {
            out.push(step(name, UnitOp::Restart, Why::Changed(path.clone())));
        }
    }
    out
}

fn enable_why(now: &UnitState) -> Why {
    Why::State(if now.not_found() {
        "not found".to_owned()
    } else if now.file_state.is_empty() {
        "not enabled".to_owned()
    } else {
        now.file_state.clone()
    })
}

fn step(unit: &str, op: UnitOp, why: Why) -> UnitStep {
    UnitStep {
        unit: unit.to_owned(),
        op: Some(op),
        why,
    }
}
