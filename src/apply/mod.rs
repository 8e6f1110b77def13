//! Making the host match a trusted commit: `plan` (read-only), `apply`, `rollback`.
//!
//! One cycle: recover from an interrupted deployment, choose the target commit, load its
//! manifest for this host, expand it, observe the host, plan, and, when anything differs,
//! journal the deployment (target, steps, originals of paths taken over) in SQLite before the
//! first change, execute the steps, sync the directories touched, and record the new
//! inventory. A crash or power cut leaves the deployment `running`; the next apply marks it
//! interrupted, removes leftover temp files and converges again: every step is idempotent and
//! every file is replaced atomically, so each managed file is entirely old or new.
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
mod observe;

use gix::ObjectId;

use crate::config::Config;
use crate::host::Host;
use crate::lock;
use crate::manifest::{self, HostPath, ManifestError};
use crate::plan::{self, Managed, Plan, PlanError, Texts};
use crate::repo::{ObjectStore, RepoError, TrustedCommit};
use crate::store::{Store, StoreError};
pub use desired::OwnerOverride;
use fs::{FsError, HostFs};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("nothing is trusted yet; import a signed bundle first (`outpost import FILE`)")]
    NothingTrusted,
    #[error("there is no earlier successful deployment to roll back to")]
    NoPrevious,
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
    #[error("cannot determine the user running outpost for apply.set_owner = false")]
    CurrentUser(#[source] nix::Error),
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
    /// The plan that was executed, for humans.
    #[serde(skip)]
    pub shown: String,
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
            shown: String::new(),
        }
    }
}

/// Plans the newest trusted commit without changing anything (no lock, no writes).
pub fn plan(config: &Config) -> Result<(Planned, Texts), ApplyError> {
    let state = &config.state.dir;
    let store = Store::open_read_only(state)?.ok_or(ApplyError::NothingTrusted)?;
    let objects = ObjectStore::open_existing(state)?.ok_or(ApplyError::NothingTrusted)?;
    let mut fs = HostFs::open(&config.host.root)?;
    if let Fast::Clean(planned) = fast_check(config, &store, &mut fs)? {
        return Ok((planned, Texts::new()));
    }
    let cycle = Cycle::prepare(config, &store, &objects, &mut fs, Goal::Newest)?;
    let texts = cycle.texts(&objects, &mut fs)?;
    Ok((cycle.planned, texts))
}

/// What the inventory says about the host before any planning.
enum Fast {
    /// It does not describe the host for the target commit and this config.
    Unknown,
    /// Every managed path is as recorded: nothing to do.
    Clean(Planned),
    /// These inventory rows (indices into `rows`) are not as recorded.
    Suspects {
        planned: Planned,
        rows: Vec<crate::store::InventoryRow>,
        suspects: Vec<usize>,
    },
}

/// The hot path: when the inventory describes the host fully for the target commit and this
/// config, each managed path is stat-ed and compared with the stat cache; only what differs
/// needs looking at.
fn fast_check(config: &Config, store: &Store, fs: &mut HostFs) -> Result<Fast, ApplyError> {
    let clock = std::time::Instant::now();
    let Some((commit, fingerprint)) = store.inventory_meta()? else {
        return Ok(Fast::Unknown);
    };
    let deployed = store.deployed()?.map(|d| d.commit);
    let (target, note) = target(store, deployed.as_deref(), Goal::Newest)?;
    let target_hex = target.id().to_string();
    if deployed.as_deref() != Some(target_hex.as_str())
        || commit != target_hex
        || fingerprint != fast::fingerprint(config, &commit)
        || store.interrupted_deployment()?.is_some()
    {
        return Ok(Fast::Unknown);
    }
    let rows = store.inventory()?;
    let suspects = fast::suspects(fs, &rows);
    tracing::debug!(elapsed = ?clock.elapsed(), paths = rows.len(), suspects = suspects.len(), "fast path");
    let planned = Planned {
        commit: target.id(),
        deployed,
        plan: Plan::default(),
        note,
    };
    Ok(if suspects.is_empty() {
        Fast::Clean(planned)
    } else {
        Fast::Suspects {
            planned,
            rows,
            suspects,
        }
    })
}

/// Converges the host to the goal's commit.
pub fn apply(
    config: &Config,
    goal: Goal,
    fault_after: Option<usize>,
) -> Result<Applied, ApplyError> {
    let state = &config.state.dir;
    std::fs::create_dir_all(state).map_err(|source| StoreError::CreateDir {
        path: state.clone(),
        source,
    })?;
    let _lock = lock::acquire(state, lock::WAIT)?;
    let started = std::time::Instant::now();
    let store = Store::open(state)?;
    tracing::debug!(elapsed = ?started.elapsed(), "state opened and checked");
    let mut fs = HostFs::open(&config.host.root)?;
    execute::recover(&store, &mut fs)?;
    let fast = match goal {
        Goal::Newest => fast_check(config, &store, &mut fs)?,
        Goal::Rollback => Fast::Unknown,
    };
    if let Fast::Clean(planned) = fast {
        return Ok(Applied::nothing(planned.commit.to_string(), planned.note));
    }
    // Only a cycle that plans needs the object store.
    let objects = ObjectStore::open_existing(state)?.ok_or(ApplyError::NothingTrusted)?;
    let cycle = match fast {
        Fast::Suspects {
            planned,
            rows,
            suspects,
        } => Cycle::repair(config, &objects, &mut fs, planned, rows, &suspects)?,
        Fast::Clean(_) | Fast::Unknown => Cycle::prepare(config, &store, &objects, &mut fs, goal)?,
    };
    let fingerprint = fast::fingerprint(config, &cycle.planned.commit.to_string());
    if goal == Goal::Rollback
        && let Some(current) = &cycle.planned.deployed
    {
        store.mark_bad(current, &format!("rolled back to {}", cycle.planned.commit))?;
    }
    execute::run(
        &store,
        &objects,
        &mut fs,
        cycle,
        goal,
        &fingerprint,
        fault_after,
    )
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
}

impl Cycle {
    fn prepare(
        config: &Config,
        store: &Store,
        objects: &ObjectStore,
        fs: &mut HostFs,
        goal: Goal,
    ) -> Result<Self, ApplyError> {
        let deployed = store.deployed()?.map(|d| d.commit);
        let (target, note) = target(store, deployed.as_deref(), goal)?;
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
        tracing::debug!(elapsed = ?clock.elapsed(), paths = desired.len(), commit = %target.id(), "manifest loaded");
        let clock = std::time::Instant::now();
        let inventory = store.inventory()?;
        let originals = store.original_paths()?;
        tracing::debug!(elapsed = ?clock.elapsed(), paths = inventory.len(), "inventory read");
        let clock = std::time::Instant::now();
        let seen = observe::observe(fs, &desired, &inventory, &|_| false)?;
        tracing::debug!(elapsed = ?clock.elapsed(), paths = seen.observation.len(), "host observed");
        let clock = std::time::Instant::now();
        let managed: Vec<Managed> = inventory
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
        fill_sizes(&mut plan, objects);
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
        })
    }

    /// A repair of the deployed commit, planned from the inventory alone: its suspect rows are
    /// the desired state of their paths (same commit, same config), so no manifest is read.
    fn repair(
        config: &Config,
        objects: &ObjectStore,
        fs: &mut HostFs,
        planned: Planned,
        rows: Vec<crate::store::InventoryRow>,
        suspects: &[usize],
    ) -> Result<Self, ApplyError> {
        let clock = std::time::Instant::now();
        let previous: Vec<_> = suspects.iter().map(|&i| rows[i].clone()).collect();
        let owners = if config.apply.set_owner {
            None
        } else {
            Some(current_user()?)
        };
        let desired: Vec<plan::Desired> = previous
            .iter()
            .filter_map(desired::from_inventory)
            .collect();
        // Managed paths that are not suspects are as recorded: never extras of a tree.
        let managed_path = |p: &HostPath| {
            let key = p.as_path().as_os_str().as_encoded_bytes();
            rows.binary_search_by(|r| r.path.as_bytes().cmp(key))
                .is_ok()
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
        })
    }

    /// Old and new bytes of the files the plan rewrites, for the diff.
    fn texts(&self, objects: &ObjectStore, fs: &mut HostFs) -> Result<Texts, ApplyError> {
        let mut texts = Texts::new();
        for (path, blob) in self.planned.plan.rewrites() {
            let new = execute::blob(objects, blob, path)?;
            let old = fs.read(path, observe::MAX_HASHED).ok();
            texts.insert(path.clone(), (old, new));
        }
        Ok(texts)
    }
}

/// The commit a cycle goes to, and why when it is not the newest trusted one.
fn target(
    store: &Store,
    deployed: Option<&str>,
    goal: Goal,
) -> Result<(TrustedCommit, Option<String>), ApplyError> {
    let trusted = store.trusted_commit()?.ok_or(ApplyError::NothingTrusted)?;
    let vouch = |oid: &str| {
        ObjectId::from_hex(oid.as_bytes())
            .ok()
            .map(TrustedCommit::vouched)
    };
    match goal {
        Goal::Rollback => {
            let current = deployed.ok_or(ApplyError::NoPrevious)?;
            let previous = store
                .previous_good(current)?
                .ok_or(ApplyError::NoPrevious)?;
            let commit = vouch(&previous.commit).ok_or(ApplyError::NoPrevious)?;
            Ok((commit, Some(format!("rolled back from {current}"))))
        }
        Goal::Newest => {
            let newest = trusted.id().to_string();
            match (store.bad_reason(&newest)?, deployed.and_then(vouch)) {
                (Some(reason), Some(stay)) => {
                    let note = format!(
                        "trusted commit {newest} is marked bad ({reason}); staying at {} until a newer commit arrives",
                        stay.id()
                    );
                    Ok((stay, Some(note)))
                }
                _ => Ok((trusted, None)),
            }
        }
    }
}

/// Sizes of tree files are looked up only for the files that are written.
fn fill_sizes(plan: &mut Plan, objects: &ObjectStore) {
    for step in &mut plan.steps {
        if let plan::Action::Write {
            blob,
            size: size @ None,
            ..
        } = &mut step.action
        {
            *size = objects.repo().find_header(*blob).ok().map(|h| h.size());
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
            name: user.map_or_else(|| uid.to_string(), |u| u.name),
        },
        group: manifest::Group {
            gid: gid.as_raw(),
            name: group.map_or_else(|| gid.to_string(), |g| g.name),
        },
    })
}

/// Wall clock in ns, for the stat cache only (never for a trust decision).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
