//! Intake of signed bundle files: `import` (files, or directories such as a mounted stick) and
//! `verify` (every check, nothing written).
//!
//! Each file is staged and judged by `judge`; an accepted bundle's pack is promoted into the
//! object store, its verdict and the new high-water mark recorded in one transaction, and the
//! tracked ref moved last. Bundles of one import are ordered by their prerequisites: one whose
//! prerequisite is missing waits until the others were tried, so an incremental bundle applies
//! after its base whatever the file names say. After an import that accepted something, the
//! bundle cache is trimmed and the object store repacked when it holds many packs
//! ([`crate::gc::after_intake`]).
//!
//! Upstream sync (`sync`, module `sync`) fetches the tracked branch from `source.url` through
//! `remote` and judges the fetched tip with the same `judge::judge_tip` as a bundle's tip.

mod judge;
mod pack;
pub mod remote;
pub mod spool;
mod stage;
mod sync;
pub mod usb;

pub use sync::{SyncOutcome, SyncReport, sync};

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::config::Config;
use crate::lock;
use crate::repo::{ObjectStore, RepoError};
use crate::store::{self, Store, StoreError};
use crate::text::Escaped;
use crate::trust::{TrustError, TrustPolicy};
use judge::{Context, Verdict};

/// Why a bundle was refused: recorded as its verdict and shown by `status`.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is a symbolic link; outpost does not follow links from a stick, copy the files themselves"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is a directory, not a bundle file")]
    Directory { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "{path} is {size} bytes, more than source.max_bundle_size ({max} bytes); raise the limit or ship incremental bundles"
    )]
    TooBig { path: PathBuf, size: u64, max: u64 },
    #[error(
        "missing signature {path}; sign the bundle with `ssh-keygen -Y sign -f KEY -n outpost-bundle BUNDLE`"
    )]
    MissingSignature { path: PathBuf },
    #[error(
        "signature {path} is {size} bytes, more than the {max}-byte limit for a signature; an ed25519 signature from ssh-keygen -Y sign is under 1 KiB"
    )]
    SignatureTooBig { path: PathBuf, size: u64, max: u64 },
    #[error("signature {path} refused: {source}")]
    Signature {
        path: PathBuf,
        source: Box<TrustError>,
    },
    #[error(transparent)]
    Header(#[from] crate::bundle::BundleError),
    #[error("bundle has no {name} (it carries {refs}); bundle the tracked branch")]
    NoTrackedRef { name: String, refs: String },
    #[error(
        "bundle needs commit {oid}, which this host does not have; import the bundle that contains it first, or a full bundle"
    )]
    MissingPrerequisite { oid: ObjectId },
    #[error("bundle is truncated: the pack is missing or shorter than a pack header")]
    Truncated,
    #[error(transparent)]
    Content(Box<RepoError>),
    #[error("bundle has data after the end of its pack; recreate it with `git bundle create`")]
    TrailingData,
    #[error(
        "tip commit {oid} of {name} is not signed; publish commits signed with `git -c gpg.format=ssh commit -S`"
    )]
    UnsignedTip { oid: ObjectId, name: String },
    #[error("tip commit {oid} of {name} refused: {source}")]
    TipSignature {
        oid: ObjectId,
        name: String,
        source: Box<TrustError>,
    },
    #[error(
        "tip commit {oid} has committer time {time}, which is {reason}; the commit cannot be dated, recreate it with a correct date"
    )]
    CommitTime {
        oid: ObjectId,
        time: i64,
        reason: String,
    },
    #[error(
        "tip commit {oid} is dated {}, later than {}, the latest date accepted (trust.max_future past the newer of the time floor and the system clock); check the publisher's clock",
        crate::text::rfc3339_u(*committed),
        crate::text::rfc3339_u(*limit)
    )]
    FutureCommit {
        oid: ObjectId,
        committed: u64,
        limit: u64,
    },
    #[error(
        "tip commit {tip} does not descend from the trusted commit {trusted} (history was rewritten); set trust.allow_rewind = true to accept it"
    )]
    Divergent { tip: ObjectId, trusted: ObjectId },
    #[error(
        "the upstream sent more than source.max_fetch_size ({max} bytes); raise the limit, or import a bundle of the branch"
    )]
    FetchTooBig { max: u64 },
    #[error(
        "the upstream sent an object larger than source.max_object_size ({max} bytes) once inflated; raise the limit if the fleet ships such files"
    )]
    FetchedObjectTooBig { max: usize },
}

/// A failure of the host rather than a verdict on a bundle.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("cannot use staging directory {path}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read staged bundle {path}")]
    ReadStaged {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list {path}")]
    ListDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the recorded trusted commit {commit:?} is not an object id; the state dir is damaged")]
    BadMark { commit: String },
    #[error(
        "{path} names commit {commit}, which this host never accepted: {reason}; restore outpost.db from a backup, or remove the floor file only if you know the host's trusted commit"
    )]
    MirrorRefused {
        path: PathBuf,
        commit: String,
        reason: String,
    },
    #[error("cannot load the trust policy to check {path}")]
    MirrorPolicy { path: PathBuf, source: TrustError },
    #[error(
        "source.url is not set: this host is bundle-only; name the upstream repository in the config to sync"
    )]
    NoUpstream,
}

/// What happened to one bundle file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub path: PathBuf,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Outcome {
    /// The tip became (or, for `verify`, would become) the trusted commit.
    Accepted {
        commit: String,
        signer: String,
        previous: Option<String>,
        rewind: bool,
        summary: String,
    },
    /// The tip is the trusted commit or older.
    Replay {
        message: String,
    },
    /// These exact bytes were imported before.
    AlreadyImported {
        sha256: String,
    },
    Refused {
        reason: String,
    },
}

impl Outcome {
    pub fn is_refused(&self) -> bool {
        matches!(self, Outcome::Refused { .. })
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = crate::text::path(&self.path);
        match &self.outcome {
            Outcome::Accepted {
                commit,
                signer,
                previous,
                rewind,
                summary,
            } => write!(
                f,
                "accepted {path}: {}",
                describe_accepted(commit, signer, previous.as_deref(), *rewind, summary)
            ),
            Outcome::Replay { message } => write!(f, "no-op {path}: {}", Escaped(message)),
            Outcome::AlreadyImported { sha256 } => {
                write!(
                    f,
                    "no-op {path}: already imported (sha256 {})",
                    short(sha256)
                )
            }
            Outcome::Refused { reason } => write!(f, "refused {path}: {}", Escaped(reason)),
        }
    }
}

/// An accepted tip for humans: `<short id> "<subject>" signed by <signer>, <how it moved>`.
pub(crate) fn describe_accepted(
    commit: &str,
    signer: &str,
    previous: Option<&str>,
    rewind: bool,
    summary: &str,
) -> String {
    let how = match (previous, rewind) {
        (None, _) => "first trusted commit".to_owned(),
        (Some(p), false) => format!("fast-forward from {}", short(p)),
        (Some(p), true) => format!("REWIND from {} (trust.allow_rewind)", short(p)),
    };
    format!(
        "{} \"{}\" signed by {}, {how}",
        short(commit),
        Escaped(summary),
        Escaped(signer)
    )
}

/// The first 12 digits of an object id (or digest), for humans.
pub fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}

/// Imports bundle files and directories of bundles; every file gets a recorded verdict.
pub fn import(
    config: &Config,
    policy: &TrustPolicy,
    paths: &[PathBuf],
) -> Result<Vec<Report>, IntakeError> {
    let state = &config.state.dir;
    // The state dir is private (0700) from its first moment.
    crate::store::prepare_state_dir(state)?;
    let _lock = lock::acquire(state, lock::WAIT)?;
    let store = Store::open(state)?;
    let objects = ObjectStore::open_or_init(state)?;
    let staging = fresh_staging(state)?;
    let mut ctx = context(config, policy, Some(&store), Some(&objects), &staging)?;
    repair_ref(&objects, ctx.mark.as_ref(), &ctx.tracked_ref)?;
    let mut pending = collect(paths)?;
    let mut reports = Vec::new();
    // Rounds: a bundle missing a prerequisite waits while other bundles still make progress.
    loop {
        let mut waiting = Vec::new();
        let mut progress = false;
        let last_round = pending.len() <= 1;
        for path in std::mem::take(&mut pending) {
            match judge::judge(&ctx, &path)? {
                Verdict::Refused(refused)
                    if !last_round
                        && matches!(refused.refusal, Refusal::MissingPrerequisite { .. }) =>
                {
                    waiting.push(path);
                }
                verdict => {
                    if let Verdict::Accepted(acc) = &verdict {
                        ctx.mark = Some(acc.trusted.mark.clone());
                        progress = true;
                    }
                    reports.push(settle(&store, &objects, &ctx.tracked_ref, path, verdict)?);
                }
            }
        }
        if waiting.is_empty() {
            break;
        }
        if !progress {
            // Nothing new arrived: judge the rest for the last time, recording their verdicts.
            for path in waiting {
                let verdict = judge::judge(&ctx, &path)?;
                reports.push(settle(&store, &objects, &ctx.tracked_ref, path, verdict)?);
            }
            break;
        }
        pending = waiting;
    }
    drop(ctx);
    if reports
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Accepted { .. }))
    {
        crate::gc::after_intake(config, &store);
    }
    std::fs::remove_dir_all(&staging).map_err(|source| IntakeError::Staging {
        path: staging.clone(),
        source,
    })?;
    Ok(reports)
}

/// What the judge needs, read from the config, the host's clock and the high-water mark.
fn context<'a>(
    config: &Config,
    policy: &'a TrustPolicy,
    store: Option<&'a Store>,
    objects: Option<&'a ObjectStore>,
    staging: &'a Path,
) -> Result<Context<'a>, IntakeError> {
    let mark = match store {
        Some(s) => s.high_water()?,
        None => store::floor::read(&config.state.dir)?,
    };
    Ok(Context {
        policy,
        store,
        objects,
        mark,
        tracked_ref: config.tracked_ref(),
        allow_rewind: config.trust.allow_rewind,
        max_size: config.source.max_bundle_size.as_u64(),
        max_object: usize::try_from(config.source.max_object_size.as_u64()).unwrap_or(usize::MAX),
        max_future: config.trust.max_future.as_secs(),
        clock: store::now(),
        staging,
    })
}

/// Records a verdict and, for an accepted bundle, makes its tip the trusted commit.
fn settle(
    store: &Store,
    objects: &ObjectStore,
    tracked_ref: &str,
    path: PathBuf,
    verdict: Verdict,
) -> Result<Report, IntakeError> {
    let outcome = match verdict {
        Verdict::Accepted(acc) => {
            let outcome = accepted_outcome(&acc.trusted);
            let judge::Accepted {
                staged,
                record,
                trusted,
            } = *acc;
            let message = format!("{tracked_ref} -> {}", trusted.tip);
            let started = std::time::Instant::now();
            trusted.quarantine.promote(objects)?;
            tracing::debug!(elapsed = ?started.elapsed(), "pack moved into the object store");
            let started = std::time::Instant::now();
            store.record_accepted(
                &record,
                staged.file.path(),
                &trusted.commit,
                &trusted.mark,
                &message,
            )?;
            tracing::debug!(elapsed = ?started.elapsed(), "verdict and bundle bytes recorded");
            objects.set_ref(tracked_ref, trusted.tip)?;
            tracing::info!(
                commit = %trusted.tip,
                signer = %Escaped(&trusted.signer.principal),
                "bundle accepted"
            );
            outcome
        }
        Verdict::Replay { record, message } => {
            store.record_replay(&record, &message)?;
            Outcome::Replay { message }
        }
        Verdict::Known { sha256 } => Outcome::AlreadyImported { sha256 },
        Verdict::Refused(refused) => {
            let reason = refused.refusal.to_string();
            store.record_rejected(&refused.record, &reason, refused.commit.as_ref())?;
            tracing::warn!(
                path = %crate::text::path(&path),
                reason = %Escaped(&reason),
                "bundle refused"
            );
            Outcome::Refused { reason }
        }
    };
    Ok(Report { path, outcome })
}

fn accepted_outcome(trusted: &judge::TrustedTip) -> Outcome {
    Outcome::Accepted {
        commit: trusted.tip.to_string(),
        signer: trusted.signer.principal.clone(),
        previous: trusted.previous.clone(),
        rewind: trusted.rewind,
        summary: trusted.summary.clone(),
    }
}

/// Runs every check of `import` on bundle files, or the bundles of a directory, without
/// writing to the state dir. Each bundle is judged against the host as it is.
pub fn verify(
    config: &Config,
    policy: &TrustPolicy,
    path: &Path,
) -> Result<Vec<Report>, IntakeError> {
    let state = &config.state.dir;
    let scratch = tempfile::Builder::new()
        .prefix("outpost-verify.")
        .tempdir()
        .map_err(|source| IntakeError::Staging {
            path: std::env::temp_dir(),
            source,
        })?;
    let store = Store::open_read_only(state)?;
    let objects = ObjectStore::open_existing(state)?;
    let ctx = context(
        config,
        policy,
        store.as_ref(),
        objects.as_ref(),
        scratch.path(),
    )?;
    let mut reports = Vec::new();
    for path in collect(&[path.to_owned()])? {
        let outcome = match judge::judge(&ctx, &path)? {
            Verdict::Accepted(acc) => accepted_outcome(&acc.trusted),
            Verdict::Replay { message, .. } => Outcome::Replay { message },
            Verdict::Known { sha256 } => Outcome::AlreadyImported { sha256 },
            Verdict::Refused(refused) => Outcome::Refused {
                reason: refused.refusal.to_string(),
            },
        };
        reports.push(Report { path, outcome });
    }
    Ok(reports)
}

/// The floor mirror is evidence, not authority: when it is ahead of the database, the commit
/// it names must be in the object store and signed by an allowed signer, or every command
/// stops here (fail closed). Cheap when the mirror is not ahead: one read of each.
pub fn check_mirror(config: &Config) -> Result<(), IntakeError> {
    let state = &config.state.dir;
    let store = Store::open_read_only(state)?;
    let ahead = match &store {
        Some(s) => s.mirror_ahead()?,
        None => store::floor::read(state)?,
    };
    drop(store);
    let Some(mark) = ahead else { return Ok(()) };
    let path = store::floor::path(state);
    let refused = |reason: String| IntakeError::MirrorRefused {
        path: path.clone(),
        commit: mark.commit.clone(),
        reason,
    };
    let policy = TrustPolicy::load(
        &config.trust.allowed_signers,
        config.trust.revoked_keys.as_deref(),
    )
    .map_err(|source| IntakeError::MirrorPolicy {
        path: path.clone(),
        source,
    })?;
    let oid = trusted_id(&mark)?;
    let objects = ObjectStore::open_existing(state)?
        .ok_or_else(|| refused("there is no object store".to_owned()))?;
    if !objects.has_object(oid) {
        return Err(refused("it is not in the object store".to_owned()));
    }
    let info = objects
        .commit_info(oid)
        .map_err(|e| refused(e.to_string()))?;
    let Some((sig, payload)) = &info.signature else {
        return Err(refused("it is not signed by an allowed signer".to_owned()));
    };
    let committed = u64::try_from(info.committer_time).unwrap_or(0);
    policy
        .verify_commit(sig, payload, 0, committed)
        .map(drop)
        .map_err(|e| refused(format!("it is not signed by an allowed signer ({e})")))
}

/// Empties (or creates) `state_dir/staging`: leftovers of an interrupted import are garbage.
fn fresh_staging(state: &Path) -> Result<PathBuf, IntakeError> {
    use std::os::unix::fs::DirBuilderExt;
    let staging = state.join("staging");
    let err = |source| IntakeError::Staging {
        path: staging.clone(),
        source,
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(err)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(err)?;
    Ok(staging)
}

/// Points the tracked ref at the trusted commit when a crash left it behind.
fn repair_ref(
    objects: &ObjectStore,
    mark: Option<&store::HighWater>,
    tracked_ref: &str,
) -> Result<(), IntakeError> {
    let Some(mark) = mark else { return Ok(()) };
    let trusted = trusted_id(mark)?;
    if objects.ref_target(tracked_ref) != Some(trusted) && objects.has_object(trusted) {
        objects.set_ref(tracked_ref, trusted)?;
    }
    Ok(())
}

/// The trusted commit of a high-water mark as an object id.
fn trusted_id(mark: &store::HighWater) -> Result<ObjectId, IntakeError> {
    ObjectId::from_hex(mark.commit.as_bytes()).map_err(|_| IntakeError::BadMark {
        commit: mark.commit.clone(),
    })
}

/// Expands directories into the bundle files they hold (`*.bundle` in the directory and in its
/// `outpost/` folder, hidden files and `._*` resource forks skipped); files stay as given.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IntakeError> {
    let mut out = Vec::new();
    for path in paths {
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if !is_dir || path.extension().is_some_and(|e| e == "bundle") {
            out.push(path.clone());
            continue;
        }
        for dir in [path.clone(), path.join("outpost")] {
            if dir != *path && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_symlink()) {
                // Judged like a symlinked bundle: refused, by name, never followed.
                out.push(dir);
                continue;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != *path => continue,
                Err(source) => return Err(IntakeError::ListDir { path: dir, source }),
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| is_bundle_name(p))
                .collect();
            found.sort();
            out.extend(found);
        }
    }
    Ok(out)
}

pub(crate) fn is_bundle_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.len() > ".bundle".len() && name.ends_with(".bundle")
}
