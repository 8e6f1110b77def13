//! Making the host match a trusted commit: `plan` (read-only), `apply`, `rollback`.
//!
//! One cycle: recover from an interrupted deployment, choose the target commit, load its
//! manifest for this host, expand it, observe the host, plan, and, when anything differs,
//! journal the deployment (target, steps, originals of paths taken over) in SQLite before the
//! first change, execute the steps (file writes in batches: written, made durable together,
//! renamed), sync the directories touched, run the unit steps and the health gate, and record
//! the new inventory. A crash or power cut leaves the deployment `running`; the next apply (or
//! rollback) first removes its leftover temp files and deploys its own target again, as the
//! same kind (apply, repair, rollback), marking it interrupted in the new journal's
//! transaction; only then does it go where it was asked. Every step is idempotent and every
//! file is replaced atomically, so each managed file is entirely old or new. Until a
//! deployment completes, every path an unfinished one created or changed counts as managed, so
//! a newer commit prunes what it created and restores what it took over.
//!
//! Originals are kept of the paths a deployment takes over (writes, chmods, chowns) and of
//! what a tree removes from a directory it takes over (they come back, parents first, when the
//! tree goes), never of what `absent` removes: absent means gone, and a dropped absent entry
//! restores nothing. Every kept original counts as managed. A
//! file's original is its content, mode, owner, modification time and extended attributes,
//! restored in that order (a chown clears `security.capability`); one larger than 1 GiB
//! (`MAX_ORIGINAL`) is refused when the plan is made.
//!
//! Where a cycle goes: the newest trusted commit, unless it is marked bad; then the newest
//! successful deployment of a commit that is not. A rollback goes to the newest successful
//! deployment older than the current one whose commit is neither the current one nor bad, and
//! marks the current commit bad in its journal's transaction: C→B, then B→A.
//!
//! A step that fails stops the deployment: the steps done stay done (each is complete) and
//! are made durable, the deployment is recorded failed with the error, the deployed commit
//! stays what it was, and the next apply plans again from what is on the host. Once journalled,
//! a deployment ends in one place (`execute::finish`) whatever the way out, `success` or
//! `failed` with its error; only a crash leaves it `running`. Directories removed by the
//! deployment are not flushed, their parents are. Before any change, every directory written
//! to is checked not to be on a read-only filesystem, so that common failure changes nothing.

mod desired;
mod execute;
mod fast;
pub mod fs;
pub mod gate;
mod observe;
pub mod services;

use gix::ObjectId;

use crate::config::Config;
use crate::host::Host;
use crate::lock;
use crate::manifest::{self, HostPath, ManifestError};
use crate::plan::{self, Managed, Plan, PlanError, Texts};
use crate::repo::{ObjectStore, RepoError, TrustedCommit};
use crate::store::{Store, StoreError};
use crate::units::UnitError;
pub use desired::OwnerOverride;
pub use execute::AT_BARRIER;
use fs::{FsError, HostFs};
pub use gate::GateFailure;
use services::{Backend, Services};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("nothing is trusted yet; import a signed bundle first (`outpost import FILE`)")]
    NothingTrusted,
    #[error("there is no earlier successful deployment to roll back to")]
    NoPrevious,
    #[error(
        "trusted commit {commit} is marked bad ({reason}) and no deployment of a good commit is left to stay at; import a newer commit"
    )]
    NoGood { commit: String, reason: String },
    #[error("cannot resume the interrupted {kind} of {commit} (recorded failed)")]
    Resume {
        kind: String,
        commit: String,
        source: Box<ApplyError>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("manifest of commit {commit}")]
    Manifest {
        commit: ObjectId,
        source: ManifestError,
    },
    #[error("cannot plan commit {commit}")]
    Plan { commit: ObjectId, source: PlanError },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot read blob {blob} for {path} from the object store: {message}")]
    ReadBlob {
        blob: ObjectId,
        path: HostPath,
        message: String,
    },
    #[error("{path} is on a read-only filesystem; nothing was changed")]
    ReadOnly { path: HostPath },
    #[error(
        "cannot take over {path}: it is {}, more than outpost keeps as an original ({}); move it away by hand or leave it out of the manifest",
        bytesize::ByteSize(*.size).display().iec(),
        bytesize::ByteSize(*.max).display().iec()
    )]
    OriginalTooLarge { path: HostPath, size: u64, max: u64 },
    #[error(
        "not enough free space on the filesystem holding {path}: {} needed with a margin, {} available; nothing was changed, free some space and apply again",
        bytesize::ByteSize(*.needed).display().iec(),
        bytesize::ByteSize(*.available).display().iec()
    )]
    NoSpace {
        path: HostPath,
        needed: u64,
        available: u64,
    },
    #[error("cannot determine the user running outpost for apply.set_owner = false")]
    CurrentUser(#[source] nix::Error),
    #[error(transparent)]
    Units(#[from] UnitError),
    #[error("commit {commit} failed its health gate: {failure}")]
    Gate {
        commit: String,
        failure: Box<GateFailure>,
    },
    #[error("commit {commit} failed its health gate: {failure}; {}", rolled_back(commit, to.as_deref(), rollback.as_deref()))]
    RolledBack {
        commit: String,
        failure: Box<GateFailure>,
        /// The good deployment's commit it went back to; `None` when there was none.
        to: Option<String>,
        /// Why going back failed, if it did.
        rollback: Option<String>,
    },
}

fn rolled_back(commit: &str, to: Option<&str>, rollback: Option<&str>) -> String {
    match (to, rollback) {
        (Some(to), None) => format!(
            "rolled back to {to}; {commit} is marked bad and is not deployed again until a newer commit is trusted"
        ),
        (Some(to), Some(error)) => format!(
            "the rollback to {to} failed too ({error}); {commit} is marked bad, look at the host and run `outpost apply` once fixed"
        ),
        (None, _) => format!(
            "there is no earlier good deployment to roll back to, so the host is left as applied; {commit} is marked bad, import a newer commit"
        ),
    }
}

/// Test hooks: abort a deployment after this many file steps, to prove crash safety.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The first deployment of the cycle.
    pub first: Option<usize>,
    /// The automatic rollback after a failed health gate.
    pub rollback: Option<usize>,
}

/// Which commit a cycle goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The newest trusted commit (or the deployed one, when the newest was rolled back).
    Newest,
    /// The previous successful deployment's commit; the current one is marked bad.
    Rollback,
}

/// A plan for the target commit, with what it takes to show it.
pub struct Planned {
    pub commit: ObjectId,
    /// The deployed commit, when there is one.
    pub deployed: Option<String>,
    pub plan: Plan,
    /// Why the target is not the newest trusted commit, if it is not.
    pub note: Option<String>,
}

/// What an apply did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub commit: String,
    pub kind: String,
    pub steps: usize,
    pub repairs: usize,
    pub note: Option<String>,
    /// The plan that was executed, for humans (shown as it is printed, never held as text).
    #[serde(skip)]
    pub plan: Plan,
    /// The interrupted deployment resumed before this one, if there was one.
    pub resumed: Option<Box<Applied>>,
}

impl Applied {
    /// A reconcile that found the host as it should be.
    fn nothing(commit: String, note: Option<String>) -> Self {
        Self {
            commit,
            kind: "none".into(),
            steps: 0,
            repairs: 0,
            note,
            plan: Plan::default(),
            resumed: None,
        }
    }
}

/// Plans the newest trusted commit without changing anything (no lock, no writes).
pub fn plan(config: &Config) -> Result<(Planned, Texts), ApplyError> {
    let state = &config.state.dir;
    let store = Store::open_read_only(state)?.ok_or(ApplyError::NothingTrusted)?;
    let objects = ObjectStore::open_existing(state)?.ok_or(ApplyError::NothingTrusted)?;
    let mut fs = HostFs::open(&config.host.root)?;
    // An interrupted deployment is resumed before anything else: that is what apply does.
    let target = match store.interrupted_deployment()? {
        Some(interrupted) => Target {
            commit: vouch(&interrupted.commit).ok_or(ApplyError::NothingTrusted)?,
            note: Some(format!(
                "the interrupted {} of {} is resumed first",
                interrupted.kind, interrupted.commit
            )),
        },
        None => match fast_check(config, &store, &mut fs)? {
            Fast::Clean(planned) => return Ok((planned, Texts::new())),
            _ => target(&store, Goal::Newest)?.0,
        },
    };
    let cycle = Cycle::prepare(config, &store, &objects, &mut fs, target)?;
    let texts = cycle.texts(&objects, &mut fs, &config.apply.redact)?;
    Ok((cycle.planned, texts))
}

/// What the inventory says about the host before any planning.
enum Fast {
    /// It does not describe the host for the target commit and this config.
    Unknown,
    /// Every managed path is as recorded: nothing to do.
    Clean(Planned),
    /// These inventory rows are not as recorded; `managed` is every path of the inventory,
    /// in order (the rest of each row is not kept: a repair looks at the suspects only).
    Suspects {
        planned: Planned,
        suspects: Vec<crate::store::InventoryRow>,
        managed: Vec<String>,
    },
}

/// The hot path: when the inventory describes the host fully for the target commit and this
/// config, each managed path is stat-ed and compared with the stat cache; only what differs
/// needs looking at.
fn fast_check(config: &Config, store: &Store, fs: &mut HostFs) -> Result<Fast, ApplyError> {
    let clock = std::time::Instant::now();
    let Some(crate::store::Meta {
        commit,
        fingerprint,
        services,
    }) = store.inventory_meta()?
    else {
        return Ok(Fast::Unknown);
    };
    let deployed = store.deployed()?.map(|d| d.commit);
    let (
        Target {
            commit: target,
            note,
        },
        _,
    ) = target(store, Goal::Newest)?;
    let target_hex = target.id().to_string();
    if deployed.as_deref() != Some(target_hex.as_str())
        || commit != target_hex
        || fingerprint != fast::fingerprint(config, &commit)
        || store.interrupted_deployment()?.is_some()
    {
        return Ok(Fast::Unknown);
    }
    let (rows, suspects) = fast::read_suspects(&config.host.root, fs, |f| {
        store.inventory_chunks(fast::CHUNK, f)
    })?;
    tracing::debug!(elapsed = ?clock.elapsed(), paths = rows.len(), suspects = suspects.len(), "fast path");
    if let Some(json) = services {
        // Restarts and health checks are only in the manifest: a repair is planned in full.
        let Ok(kept) = serde_json::from_str::<services::Kept>(&json) else {
            return Ok(Fast::Unknown);
        };
        if !suspects.is_empty() {
            return Ok(Fast::Unknown);
        }
        let units = kept.units();
        if !units.is_empty() && services::units_drifted(&mut Backend::new(config), &units)? {
            tracing::debug!(elapsed = ?clock.elapsed(), "a unit drifted");
            return Ok(Fast::Unknown);
        }
    }
    let planned = Planned {
        commit: target.id(),
        deployed,
        plan: Plan::default(),
        note,
    };
    if suspects.is_empty() {
        return Ok(Fast::Clean(planned));
    }
    let mut suspect_rows = Vec::with_capacity(suspects.len());
    let mut managed = Vec::with_capacity(rows.len());
    let mut next = suspects.iter().copied().peekable();
    for (i, row) in rows.into_iter().enumerate() {
        if next.next_if_eq(&i).is_some() {
            managed.push(row.path.clone());
            suspect_rows.push(row);
        } else {
            managed.push(row.path);
        }
    }
    Ok(Fast::Suspects {
        planned,
        suspects: suspect_rows,
        managed,
    })
}

/// Converges the host to the goal's commit. An interrupted deployment is resumed first, to
/// its own target and as its own kind; a `rollback` that finds an interrupted rollback ends
/// with it. A deployment of a new commit whose health gate fails is rolled back at once to the
/// newest good deployment (see [`ApplyError::RolledBack`]). `faults` are test hooks.
pub fn apply(config: &Config, goal: Goal, faults: Faults) -> Result<Applied, ApplyError> {
    let mut fault_after = faults.first;
    let state = &config.state.dir;
    // Creates the state dir, private, when it is missing.
    let _lock = lock::acquire(state, lock::WAIT)?;
    let started = std::time::Instant::now();
    let known = unchanged(config, goal)?;
    if let Fast::Clean(planned) = known {
        tracing::debug!(elapsed = ?started.elapsed(), "nothing to do (read-only)");
        return Ok(Applied::nothing(planned.commit.to_string(), planned.note));
    }
    let store = Store::open(state)?;
    tracing::debug!(elapsed = ?started.elapsed(), "state opened and checked");
    let mut fs = HostFs::open(&config.host.root)?;
    let resumed = match store.interrupted_deployment()? {
        Some(interrupted) => {
            let resumed = resume(config, &store, &mut fs, interrupted, fault_after.take());
            let resumed = after_gate(config, &store, &mut fs, resumed, faults.rollback)?;
            // A fresh pass: the resumed deployment changed directories under the cache.
            fs = HostFs::open(&config.host.root)?;
            resumed
        }
        None => None,
    };
    if goal == Goal::Rollback
        && let Some(resumed) = resumed.as_ref().filter(|r| r.kind == "rollback")
    {
        // The rollback asked for is the one that was interrupted: done once resumed.
        return Ok(Applied {
            resumed: Some(Box::new(resumed.clone())),
            ..Applied::nothing(resumed.commit.clone(), None)
        });
    }
    let applied = converge(config, &store, &mut fs, goal, fault_after, known);
    let applied = after_gate(config, &store, &mut fs, applied.map(Some), faults.rollback);
    let nothing = matches!(&applied, Ok(Some(a)) if a.kind == "none");
    if !nothing || resumed.is_some() {
        crate::gc::after_deployment(config, &store);
    }
    let mut applied = applied?.ok_or(ApplyError::NothingTrusted)?;
    applied.resumed = resumed.map(Box::new);
    Ok(applied)
}

/// The hot path of a reconcile, read-only: no write to the state dir (flash wear), no
/// integrity check of the whole database. Taken only when the database needs nothing of a
/// writer (its schema current, its mirror in step, no deployment interrupted); what the
/// inventory's stat cache says of the host then stands for the writer too (the lock is
/// held, so the inventory cannot change meanwhile): `Clean` is a reconcile that finds
/// nothing to do, `Suspects` the paths a repair looks at. `Unknown` sends the caller the
/// whole writing way.
fn unchanged(config: &Config, goal: Goal) -> Result<Fast, ApplyError> {
    if goal != Goal::Newest {
        return Ok(Fast::Unknown);
    }
    // Anything a reader cannot do (an older schema, a hot journal a crash left for a writer
    // to roll back) is the writer's job.
    let store = match Store::open_read_only(&config.state.dir) {
        Ok(Some(store)) => store,
        Err(e @ StoreError::Newer { .. }) => return Err(e.into()),
        Ok(None) | Err(_) => return Ok(Fast::Unknown),
    };
    if !store.settled()? {
        return Ok(Fast::Unknown);
    }
    // An interrupted deployment makes it `Unknown` too.
    let mut fs = HostFs::open(&config.host.root)?;
    fast_check(config, &store, &mut fs)
}

/// After a deployment of a new commit failed its health gate (and was recorded failed, its
/// commit marked bad): the host goes back to the newest good deployment, through the same
/// code as `outpost rollback`, gate included. Anything else passes through.
fn after_gate(
    config: &Config,
    store: &Store,
    fs: &mut HostFs,
    result: Result<Option<Applied>, ApplyError>,
    fault_after: Option<usize>,
) -> Result<Option<Applied>, ApplyError> {
    let (commit, failure) = match result {
        Err(ApplyError::Gate { commit, failure }) if store.bad_reason(&commit)?.is_some() => {
            (commit, failure)
        }
        other => return other,
    };
    tracing::warn!(commit = %commit, failure = %failure, "health gate failed; rolling back");
    let Some(good) = store.newest_good()? else {
        return Err(ApplyError::RolledBack {
            commit,
            failure,
            to: None,
            rollback: None,
        });
    };
    let to = good.commit;
    *fs = HostFs::open(&config.host.root)?;
    let rollback = (|| {
        let objects =
            ObjectStore::open_existing(&config.state.dir)?.ok_or(ApplyError::NothingTrusted)?;
        let target = Target {
            commit: vouch(&to).ok_or(ApplyError::NoPrevious)?,
            note: None,
        };
        let cycle = Cycle::prepare(config, store, &objects, fs, target)?;
        let fingerprint = fast::fingerprint(config, &to);
        let intent = execute::Intent {
            kind: "rollback",
            resumes: None,
            leaves: Some(&commit),
            fault_after,
        };
        execute::run(config, store, &objects, fs, cycle, &intent, &fingerprint)
    })();
    Err(ApplyError::RolledBack {
        commit,
        failure,
        to: Some(to),
        rollback: rollback.err().map(|e| execute::error_chain(&e)),
    })
}

/// Finishes what an interrupted deployment set out to do: its temp files go, and its target
/// is deployed again, as the same kind, the new deployment marking it interrupted. When that
/// target cannot even be planned any more, it is recorded failed with why.
fn resume(
    config: &Config,
    store: &Store,
    fs: &mut HostFs,
    interrupted: crate::store::Interrupted,
    fault_after: Option<usize>,
) -> Result<Option<Applied>, ApplyError> {
    let crate::store::Interrupted {
        id,
        commit,
        kind,
        paths,
    } = interrupted;
    let removed = execute::remove_temp_files(fs, &paths);
    let message = format!(
        "the {kind} of {commit} was interrupted; {removed} temp files removed, resuming it"
    );
    tracing::warn!("{message}");
    if kind != "rollback"
        && let Some(reason) = store.bad_reason(&commit)?
    {
        let error = format!("not resumed: commit {commit} is marked bad ({reason})");
        store.fail_interrupted(id, &error)?;
        return Ok(None);
    }
    let failed = |source: ApplyError| -> ApplyError {
        let error = ApplyError::Resume {
            kind: kind.clone(),
            commit: commit.clone(),
            source: Box::new(source),
        };
        match store.fail_interrupted(id, &execute::error_chain(&error)) {
            Ok(()) => error,
            Err(e) => e.into(),
        }
    };
    let objects =
        ObjectStore::open_existing(&config.state.dir)?.ok_or(ApplyError::NothingTrusted)?;
    let target = Target {
        commit: vouch(&commit).ok_or_else(|| failed(ApplyError::NothingTrusted))?,
        note: None,
    };
    let cycle = Cycle::prepare(config, store, &objects, fs, target).map_err(failed)?;
    let fingerprint = fast::fingerprint(config, &commit);
    let intent = execute::Intent {
        kind: &kind,
        resumes: Some((id, &message)),
        leaves: None,
        fault_after,
    };
    execute::run(config, store, &objects, fs, cycle, &intent, &fingerprint).map(Some)
}

/// One cycle to the goal's commit, once no deployment is left interrupted; `known` is what
/// the read-only look found ([`unchanged`]).
fn converge(
    config: &Config,
    store: &Store,
    fs: &mut HostFs,
    goal: Goal,
    fault_after: Option<usize>,
    known: Fast,
) -> Result<Applied, ApplyError> {
    let fast = match (goal, known) {
        (Goal::Newest, known @ Fast::Suspects { .. }) => known,
        (Goal::Newest, _) => fast_check(config, store, fs)?,
        (Goal::Rollback, _) => Fast::Unknown,
    };
    if let Fast::Clean(planned) = fast {
        return Ok(Applied::nothing(planned.commit.to_string(), planned.note));
    }
    // Only a cycle that plans needs the object store.
    let objects =
        ObjectStore::open_existing(&config.state.dir)?.ok_or(ApplyError::NothingTrusted)?;
    let (cycle, leaves) = match fast {
        Fast::Suspects {
            planned,
            suspects,
            managed,
        } => (
            Cycle::repair(config, &objects, fs, planned, suspects, &managed)?,
            None,
        ),
        Fast::Clean(_) | Fast::Unknown => {
            let (target, leaves) = target(store, goal)?;
            (Cycle::prepare(config, store, &objects, fs, target)?, leaves)
        }
    };
    let commit = cycle.planned.commit.to_string();
    let kind = match goal {
        Goal::Rollback => "rollback",
        Goal::Newest if cycle.planned.deployed.as_deref() == Some(commit.as_str()) => "repair",
        Goal::Newest => "apply",
    };
    let fingerprint = fast::fingerprint(config, &commit);
    let intent = execute::Intent {
        kind,
        resumes: None,
        leaves: leaves.as_deref(),
        fault_after,
    };
    execute::run(config, store, &objects, fs, cycle, &intent, &fingerprint)
}

/// One prepared cycle: the target, the desired paths, what the host has, the plan.
struct Cycle {
    planned: Planned,
    desired: Vec<plan::Desired>,
    seen: observe::Seen,
    managed: Vec<Managed>,
    originals: Vec<String>,
    /// The inventory the last deployment left (for a repair: the suspect rows).
    previous: Vec<crate::store::InventoryRow>,
    /// Only the paths of `desired` were looked at (a repair of suspects): the rest of the
    /// inventory stands.
    partial: bool,
    /// What the manifest asks of systemd (nothing for a repair of suspects: that path is only
    /// taken when the manifest asks nothing).
    services: Services,
}

impl Cycle {
    fn prepare(
        config: &Config,
        store: &Store,
        objects: &ObjectStore,
        fs: &mut HostFs,
        target: Target,
    ) -> Result<Self, ApplyError> {
        let deployed = store.deployed()?.map(|d| d.commit);
        let Target {
            commit: target,
            note,
        } = target;
        let host = Host::from_config(config);
        let clock = std::time::Instant::now();
        let manifest = manifest::load(objects, &target, &host, &config.apply.allowed_paths)
            .map_err(|source| ApplyError::Manifest {
                commit: target.id(),
                source,
            })?;
        let owners = if config.apply.set_owner {
            None
        } else {
            Some(current_user()?)
        };
        let desired = desired::expand(&manifest, owners.as_ref());
        let services = Services::of(&manifest);
        // Expanded: its list of a tree's files is not held while the plan is made.
        drop(manifest);
        tracing::debug!(elapsed = ?clock.elapsed(), paths = desired.len(), commit = %target.id(), "manifest loaded");
        let clock = std::time::Instant::now();
        let inventory = store.inventory()?;
        let originals = store.original_paths()?;
        // Managed: the inventory, what unfinished deployments touched, and every original
        // kept (what a tree removed from a directory it took over is only there).
        let mut touched = store.touched_since_success()?;
        touched.extend(originals.iter().cloned());
        let looked_at = with_touched(&inventory, touched);
        tracing::debug!(elapsed = ?clock.elapsed(), paths = inventory.len(), "inventory read");
        let clock = std::time::Instant::now();
        let seen = observe::observe(fs, &desired, &looked_at, &|_| false)?;
        tracing::debug!(elapsed = ?clock.elapsed(), paths = seen.observation.len(), "host observed");
        let clock = std::time::Instant::now();
        let managed: Vec<Managed> = looked_at
            .iter()
            .filter_map(|row| HostPath::parse(&row.path).ok())
            .map(|path| Managed {
                took_over: originals.binary_search(&path.to_string()).is_ok(),
                path,
            })
            .collect();
        let plan = match &owners {
            Some(o) => plan::make_with_parent_owner(
                &desired,
                &seen.observation,
                &managed,
                (o.owner.clone(), o.group.clone()),
            ),
            None => plan::make(&desired, &seen.observation, &managed),
        }
        .map_err(|source| ApplyError::Plan {
            commit: target.id(),
            source,
        })?;
        let mut plan = plan;
        execute::check_originals(&plan, &seen, &managed, &originals)?;
        fill_sizes(&mut plan, objects);
        services::plan_units(&mut Backend::new(config), &services, &mut plan)?;
        tracing::debug!(elapsed = ?clock.elapsed(), steps = plan.steps.len(), "planned");
        Ok(Self {
            planned: Planned {
                commit: target.id(),
                deployed,
                plan,
                note,
            },
            desired,
            seen,
            managed,
            originals,
            previous: inventory,
            partial: false,
            services,
        })
    }

    /// A repair of the deployed commit, planned from the inventory alone: its suspect rows are
    /// the desired state of their paths (same commit, same config), so no manifest is read.
    fn repair(
        config: &Config,
        objects: &ObjectStore,
        fs: &mut HostFs,
        planned: Planned,
        previous: Vec<crate::store::InventoryRow>,
        managed: &[String],
    ) -> Result<Self, ApplyError> {
        let clock = std::time::Instant::now();
        let owners = if config.apply.set_owner {
            None
        } else {
            Some(current_user()?)
        };
        let mut names = desired::Names::default();
        let desired: Vec<plan::Desired> = previous
            .iter()
            .filter_map(|row| desired::from_inventory(row, &mut names))
            .collect();
        // Managed paths that are not suspects are as recorded: never extras of a tree.
        let managed_path = |p: &HostPath| {
            let key = p.as_path().as_os_str().as_encoded_bytes();
            managed.binary_search_by(|m| m.as_bytes().cmp(key)).is_ok()
        };
        let seen = observe::observe(fs, &desired, &previous, &managed_path)?;
        let mut plan = match &owners {
            Some(o) => plan::make_with_parent_owner(
                &desired,
                &seen.observation,
                &[],
                (o.owner.clone(), o.group.clone()),
            ),
            None => plan::make(&desired, &seen.observation, &[]),
        }
        .map_err(|source| ApplyError::Plan {
            commit: planned.commit,
            source,
        })?;
        fill_sizes(&mut plan, objects);
        tracing::debug!(elapsed = ?clock.elapsed(), suspects = desired.len(), steps = plan.steps.len(), "repair planned");
        let managed = desired
            .iter()
            .map(|d| Managed {
                path: d.path.clone(),
                took_over: false,
            })
            .collect();
        Ok(Self {
            planned: Planned { plan, ..planned },
            desired,
            seen,
            managed,
            originals: Vec::new(),
            previous,
            partial: true,
            services: Services::default(),
        })
    }

    /// Old and new bytes of the files the plan rewrites, for the diff. Secrets are not read:
    /// files that are not world-readable (on the host or as desired), and paths matching
    /// `redact` globs.
    fn texts(
        &self,
        objects: &ObjectStore,
        fs: &mut HostFs,
        redact: &[String],
    ) -> Result<Texts, ApplyError> {
        let mut texts = Texts::new();
        for (path, blob, secret) in self.planned.plan.rewrites() {
            if secret {
                continue;
            }
            if redacted(path, redact) {
                texts.insert(path.clone(), plan::Text::Redacted);
                continue;
            }
            let new = execute::blob(objects.repo(), blob, path)?;
            // Bounded: only files small enough to diff are read.
            let old = fs.read(path, plan::MAX_DIFF_BYTES as u64).ok();
            texts.insert(path.clone(), plan::Text::Bytes(old, new));
        }
        Ok(texts)
    }
}

/// The commit a cycle goes to, and why when it is not the newest trusted one.
struct Target {
    commit: TrustedCommit,
    note: Option<String>,
}

/// A commit outpost deployed before: it was trusted then, and trust is never withdrawn from
/// a commit the high-water mark has passed.
fn vouch(oid: &str) -> Option<TrustedCommit> {
    ObjectId::from_hex(oid.as_bytes())
        .ok()
        .map(TrustedCommit::vouched)
}

/// Where the goal goes, with the commit a rollback leaves (marked bad by its deployment).
///
/// `Newest`: the newest trusted commit; while that one is marked bad, the newest successful
/// deployment of a commit that is not (an older commit that failed is never picked up).
/// `Rollback`: the newest successful deployment older than the current one, of another
/// commit, whose commit is not bad: rolling back twice from C goes to B, then to A.
fn target(store: &Store, goal: Goal) -> Result<(Target, Option<String>), ApplyError> {
    match goal {
        Goal::Rollback => {
            let current = store.deployed()?.ok_or(ApplyError::NoPrevious)?;
            let previous = store
                .previous_good(&current)?
                .ok_or(ApplyError::NoPrevious)?;
            let commit = vouch(&previous.commit).ok_or(ApplyError::NoPrevious)?;
            let note = Some(format!("rolled back from {}", current.commit));
            Ok((Target { commit, note }, Some(current.commit)))
        }
        Goal::Newest => {
            let trusted = store.trusted_commit()?.ok_or(ApplyError::NothingTrusted)?;
            let newest = trusted.id().to_string();
            let Some(reason) = store.bad_reason(&newest)? else {
                let target = Target {
                    commit: trusted,
                    note: None,
                };
                return Ok((target, None));
            };
            let stay = store
                .newest_good()?
                .and_then(|d| vouch(&d.commit))
                .ok_or_else(|| ApplyError::NoGood {
                    commit: newest.clone(),
                    reason: reason.clone(),
                })?;
            let note = format!(
                "trusted commit {newest} is marked bad ({reason}); staying at {} until a newer commit arrives",
                stay.id()
            );
            let target = Target {
                commit: stay,
                note: Some(note),
            };
            Ok((target, None))
        }
    }
}

/// The inventory's rows and a bare row for each path an unfinished deployment touched that
/// the inventory lacks: all of them are looked at, and managed.
fn with_touched(
    inventory: &[crate::store::InventoryRow],
    touched: Vec<String>,
) -> Vec<crate::store::InventoryRow> {
    let mut rows = inventory.to_vec();
    let known: std::collections::BTreeSet<&str> =
        inventory.iter().map(|r| r.path.as_str()).collect();
    let extra: std::collections::BTreeSet<String> = touched
        .into_iter()
        .filter(|p| !known.contains(p.as_str()))
        .collect();
    rows.extend(extra.into_iter().map(|path| crate::store::InventoryRow {
        path,
        kind: String::new(),
        exact: false,
        blob: None,
        mode: None,
        uid: None,
        gid: None,
        target: None,
        stat: None,
    }));
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    rows
}

/// Whether `path` matches one of the `apply.redact` globs (`*` stays within a component, `**`
/// crosses them).
fn redacted(path: &HostPath, globs: &[String]) -> bool {
    let bytes = path.as_path().as_os_str().as_encoded_bytes();
    globs.iter().any(|g| {
        gix::glob::wildmatch(
            g.as_bytes().into(),
            bytes.into(),
            gix::glob::wildmatch::Mode::NO_MATCH_SLASH_LITERAL,
        )
    })
}

/// Sizes of tree files are looked up only for the files that are written.
fn fill_sizes(plan: &mut Plan, objects: &ObjectStore) {
    let mut reader = objects.reader();
    for step in &mut plan.steps {
        if let plan::Action::Write {
            blob,
            size: size @ None,
            ..
        } = &mut step.action
        {
            *size = reader.repo().find_header(*blob).ok().map(|h| h.size());
        }
    }
}

fn current_user() -> Result<OwnerOverride, ApplyError> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let user = nix::unistd::User::from_uid(uid).map_err(ApplyError::CurrentUser)?;
    let group = nix::unistd::Group::from_gid(gid).map_err(ApplyError::CurrentUser)?;
    Ok(OwnerOverride {
        owner: manifest::Owner {
            uid: uid.as_raw(),
            name: user.map_or_else(|| uid.to_string(), |u| u.name).into(),
        },
        group: manifest::Group {
            gid: gid.as_raw(),
            name: group.map_or_else(|| gid.to_string(), |g| g.name).into(),
        },
    })
}

/// Wall clock in ns, for the stat cache only (never for a trust decision).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
