//! Keeping the state dir bounded for years: `outpost gc`, and the same steps, smaller, after
//! every import, fetch and deployment.
//!
//! * The object store: packs consolidated ([`crate::repo::repack`]): all of them into one by
//!   `outpost gc`, the small ones geometrically after an import or fetch once there are more
//!   than [`AUTO_PACKS`]. What stays is everything reachable from the kept commits
//!   ([`Store::kept_commits`]: the trusted commit, the newest `state.keep_deployments` good
//!   deployed commits, a running deployment's target).
//! * The bundle cache held to `state.bundle_cache` ([`Store::trim_bundle_cache`]).
//! * The history compacted to `state.keep_history` ([`Store::compact_history`]).
//!
//! Automatic maintenance never fails the import or deployment it follows: that one is already
//! recorded; a failure is logged and `outpost gc` shows it.

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::config::Config;
use crate::lock;
use crate::repo::repack::{self, Mode, Repacked};
use crate::repo::{ObjectStore, RepoError};
use crate::store::{Compacted, Store, StoreError, Trimmed};

/// More packs than this after an import or a fetch start a geometric repack.
pub const AUTO_PACKS: usize = 6;

/// Test hook: abort `outpost gc` after this many file steps of its repack.
pub const FAULT_ENV: &str = "OUTPOST_FAULT_GC_AFTER_STEPS";

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("nothing is trusted yet: there is no state to collect")]
    NothingTrusted,
    #[error(
        "the database names {commit:?} as a commit to keep, which is not an object id; the state dir is damaged"
    )]
    BadCommit { commit: String },
}

/// What `outpost gc` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Collected {
    pub objects: Repacked,
    pub bundle_cache: Trimmed,
    pub history: Compacted,
    pub kept_commits: usize,
    pub database_bytes_before: u64,
    pub database_bytes_after: u64,
}

/// `outpost gc`: compacts the history, trims the bundle cache, and repacks the object store
/// into one pack of what the kept commits reach.
pub fn gc(config: &Config, fault: repack::Fault) -> Result<Collected, GcError> {
    let state = &config.state.dir;
    if Store::open_read_only(state)?.is_none() {
        return Err(GcError::NothingTrusted);
    }
    let _lock = lock::acquire(state, lock::WAIT)?;
    let before = database_bytes(state);
    let store = Store::open(state)?;
    let history =
        store.compact_history(config.state.keep_history, config.state.keep_deployments)?;
    let bundle_cache = store.trim_bundle_cache(config.state.bundle_cache.as_u64())?;
    store.give_back_space()?;
    let keep = kept(&store, config)?;
    let objects = match ObjectStore::open_existing(state)? {
        Some(objects) => objects.repack(&keep, Mode::Full, &scratch(state), fault)?,
        None => Repacked::default(),
    };
    drop(store);
    Ok(Collected {
        objects,
        bundle_cache,
        history,
        kept_commits: keep.len(),
        database_bytes_before: before,
        database_bytes_after: database_bytes(state),
    })
}

/// After an import or a fetch accepted something: the bundle cache trimmed, the history of
/// verdicts compacted, and a geometric repack once there are more than [`AUTO_PACKS`] packs.
/// Runs under the state lock the import holds.
pub fn after_intake(config: &Config, store: &Store) {
    let state = &config.state.dir;
    let result = (|| -> Result<(), GcError> {
        let trimmed = store.trim_bundle_cache(config.state.bundle_cache.as_u64())?;
        if trimmed.bundles > 0 {
            tracing::info!(
                bundles = trimmed.bundles,
                bytes = trimmed.bytes,
                "bundle cache trimmed"
            );
        }
        if let Some(needed) = trimmed.over_budget {
            tracing::warn!(
                needed,
                budget = config.state.bundle_cache.as_u64(),
                "the bundles export needs do not fit state.bundle_cache; they are kept"
            );
        }
        compact(config, store)?;
        let Some(objects) = ObjectStore::open_existing(state)? else {
            return Ok(());
        };
        if objects.packs()?.len() <= AUTO_PACKS {
            return Ok(());
        }
        let keep = kept(store, config)?;
        let started = std::time::Instant::now();
        let done = objects.repack(&keep, Mode::Geometric, &scratch(state), None)?;
        tracing::info!(
            elapsed = ?started.elapsed(),
            before = done.packs_before,
            after = done.packs_after,
            "object store repacked"
        );
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(
            error = %crate::text::escape(&format!("{:#}", anyhow::Error::from(e))),
            "storage maintenance failed; `outpost gc` retries it"
        );
    }
}

/// After a deployment was recorded: the history compacted when it outgrew `state.keep_history`.
pub fn after_deployment(config: &Config, store: &Store) {
    if let Err(e) = compact(config, store) {
        tracing::warn!(
            error = %crate::text::escape(&format!("{:#}", anyhow::Error::from(e))),
            "compacting the history failed; `outpost gc` retries it"
        );
    }
}

/// Compacts once the history is a tenth over `state.keep_history`, back down to it: rows go
/// in batches, not one page rewrite per deployment.
fn compact(config: &Config, store: &Store) -> Result<(), GcError> {
    let keep = config.state.keep_history;
    if store.history_outgrown(keep.saturating_add(keep / 10))? {
        let done =
            store.compact_history(config.state.keep_history, config.state.keep_deployments)?;
        tracing::info!(?done, "history compacted");
    }
    Ok(())
}

fn kept(store: &Store, config: &Config) -> Result<Vec<ObjectId>, GcError> {
    store
        .kept_commits(config.state.keep_deployments)?
        .into_iter()
        .map(|c| ObjectId::from_hex(c.as_bytes()).map_err(|_| GcError::BadCommit { commit: c }))
        .collect()
}

/// Where a repack writes its new pack before moving it in: beside the object store.
fn scratch(state: &Path) -> PathBuf {
    state.join("repack")
}

/// The database and its write-ahead log, bytes.
pub fn database_bytes(state: &Path) -> u64 {
    ["outpost.db", "outpost.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state.join(f)).ok())
        .map(|m| m.len())
        .sum()
}
