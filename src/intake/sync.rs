//! Upstream sync: fetch the tracked branch from `source.url` and judge its tip like a bundle's.
//!
//! The fetch lands in a quarantine under `state_dir/fetch` whose alternates name the object
//! store; the tip is then judged by `judge::judge_tip`, the same function that judges a
//! bundle's tip (complete pack, plausible date, signature by an allowed signer in namespace
//! `git`, fast-forward from the trusted commit, time floor). Only an accepted tip's pack is
//! promoted into `objects/`, recorded with the new high-water mark, and the tracked ref moved.
//!
//! Every attempt is recorded in `sync_attempts`: accepted, up to date, refused (the upstream's
//! answer was judged and found wanting, or went past `source.max_fetch_size` or
//! `source.max_object_size`) or failed
//! (the network, the upstream or the protocol: nothing was judged). Neither a refusal nor a
//! failure changes the trusted commit or anything deployed; only a failure of the host itself
//! (state dir, database, object store files) is an [`IntakeError`].
//!
//! Locks: one sync at a time holds `state_dir/fetch/lock` for its whole run; the state lock is
//! taken only to prepare and, after the network part, to judge and record, so `apply`, `import`
//! and `rollback` are not held up by a slow upstream.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::judge::{self, Fault, TipVerdict, TrustedTip};
use super::remote::{self, FetchError, Limits, Unfinished};
use super::{IntakeError, Refusal, repair_ref};
use crate::config::Config;
use crate::lock;
use crate::repo::{ObjectStore, Quarantine};
use crate::store::{self, CommitRecord, Store, SyncAttempt};
use crate::text::Escaped;
use crate::trust::TrustPolicy;

/// What one sync did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    pub url: String,
    /// When the attempt started, RFC 3339.
    pub at: String,
    /// Bytes received from the upstream.
    pub bytes: u64,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub outcome: SyncOutcome,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SyncOutcome {
    /// The upstream's tip became the trusted commit.
    Accepted {
        commit: String,
        signer: String,
        previous: Option<String>,
        rewind: bool,
        summary: String,
    },
    /// The upstream's tip is the trusted commit, or older: nothing changes.
    UpToDate { commit: String, message: String },
    /// The upstream's answer was refused; nothing of it was kept.
    Refused { tip: Option<String>, reason: String },
    /// The fetch did not complete; nothing changed.
    Failed { error: String },
}

impl SyncReport {
    /// Accepted or up to date.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.outcome,
            SyncOutcome::Accepted { .. } | SyncOutcome::UpToDate { .. }
        )
    }

    /// Whether a new commit became trusted.
    pub fn accepted(&self) -> bool {
        matches!(self.outcome, SyncOutcome::Accepted { .. })
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = Escaped(&self.url);
        let took = format!(
            "{} in {:.1}s",
            crate::status::count(self.bytes, "byte"),
            std::time::Duration::from_millis(self.duration_ms).as_secs_f64()
        );
        match &self.outcome {
            SyncOutcome::Accepted {
                commit,
                signer,
                previous,
                rewind,
                summary,
            } => write!(
                f,
                "accepted {url}: {} ({took})",
                super::describe_accepted(commit, signer, previous.as_deref(), *rewind, summary)
            ),
            SyncOutcome::UpToDate { message, .. } => {
                write!(f, "up to date {url}: {} ({took})", Escaped(message))
            }
            SyncOutcome::Refused { reason, .. } => {
                write!(f, "refused {url}: {} ({took})", Escaped(reason))
            }
            SyncOutcome::Failed { error } => {
                write!(f, "failed {url}: {} ({took})", Escaped(error))
            }
        }
    }
}

/// Fetches the tracked branch from `source.url` once and judges its tip; every attempt is
/// recorded. `Ok` whatever the upstream did (see [`SyncReport::succeeded`]); `Err` only when
/// the host failed, when `source.url` is not set ([`IntakeError::NoUpstream`]), or when
/// another process held the fetch lock (another sync) or the state lock for longer than
/// [`lock::WAIT`] ([`IntakeError::Lock`]; try again later). Blocks for at most about
/// `source.fetch_timeout` plus the time to judge and to wait for the locks; run it on a
/// blocking thread.
pub fn sync(config: &Config, policy: &TrustPolicy) -> Result<SyncReport, IntakeError> {
    let url = config.source.url.clone().ok_or(IntakeError::NoUpstream)?;
    let state = &config.state.dir;
    let tracked_ref = config.tracked_ref();
    let fetch_dir = fetch_dir(state)?;
    let _fetching = lock::acquire(&fetch_dir, lock::WAIT)?;
    clear_leftovers(&fetch_dir)?;
    let store = prepare(state, &tracked_ref)?;
    let mut attempt = SyncAttempt {
        at: store::now(),
        url,
        outcome: String::new(),
        tip: None,
        bytes: 0,
        duration_ms: 0,
        error: None,
    };
    let started = Instant::now();
    // The network part, without the state lock.
    let fetched = fetch(config, &fetch_dir, &tracked_ref)?;

    let _lock = lock::acquire(state, lock::WAIT)?;
    // Opened anew: it sees packs another process promoted meanwhile.
    let objects = ObjectStore::open_or_init(state)?;
    let judged = match fetched {
        Err(e) => unfetched(e, &mut attempt),
        Ok((fetched, quarantine)) => {
            let ctx = super::context(config, policy, Some(&store), Some(&objects), &fetch_dir)?;
            judge_fetched(&ctx, quarantine, &fetched, &mut attempt)?
        }
    };
    attempt.duration_ms = elapsed_ms(started);
    let outcome = settle(&store, &objects, &tracked_ref, &attempt, judged)?;
    if matches!(outcome, SyncOutcome::Accepted { .. }) {
        drop(objects);
        crate::gc::after_intake(config, &store);
    }
    let report = report(&attempt, outcome);
    if let SyncOutcome::Refused { reason: why, .. } | SyncOutcome::Failed { error: why } =
        &report.outcome
    {
        tracing::warn!(
            url = %Escaped(&report.url),
            outcome = %attempt.outcome,
            reason = %Escaped(why),
            "upstream sync did not succeed"
        );
    }
    Ok(report)
}

/// What became of a fetch, before it is recorded.
enum Judged {
    Trusted(Box<TrustedTip>),
    /// Up to date, refused or failed; a refused tip commit is recorded as such.
    Other {
        outcome: SyncOutcome,
        refused: Option<CommitRecord>,
    },
}

/// Records the attempt; for a trusted tip, promotes its pack, records it with the new
/// high-water mark and moves the tracked ref, as for an accepted bundle.
fn settle(
    store: &Store,
    objects: &ObjectStore,
    tracked_ref: &str,
    attempt: &SyncAttempt,
    judged: Judged,
) -> Result<SyncOutcome, IntakeError> {
    let trusted = match judged {
        Judged::Trusted(trusted) => trusted,
        Judged::Other { outcome, refused } => {
            store.record_sync(attempt, refused.as_ref())?;
            return Ok(outcome);
        }
    };
    let message = format!("{tracked_ref} -> {}", trusted.tip);
    trusted.quarantine.promote(objects)?;
    store.record_sync_accepted(attempt, &trusted.commit, &trusted.mark, &message)?;
    objects.set_ref(tracked_ref, trusted.tip)?;
    tracing::info!(
        commit = %trusted.tip,
        signer = %Escaped(&trusted.signer.principal),
        "upstream commit accepted"
    );
    Ok(SyncOutcome::Accepted {
        commit: trusted.tip.to_string(),
        signer: trusted.signer.principal,
        previous: trusted.previous,
        rewind: trusted.rewind,
        summary: trusted.summary,
    })
}

/// Under the state lock: the database opened (and migrated), the object store there, the
/// tracked ref where the high-water mark says (the negotiation with the upstream starts from
/// it). The database stays open for the rest of the sync: opening it is what a sync that finds
/// nothing new spends most of its time on.
fn prepare(state: &Path, tracked_ref: &str) -> Result<Store, IntakeError> {
    let _lock = lock::acquire(state, lock::WAIT)?;
    let store = Store::open(state)?;
    let objects = ObjectStore::open_or_init(state)?;
    repair_ref(&objects, store.high_water()?.as_ref(), tracked_ref)?;
    Ok(store)
}

/// Fetches into a new quarantine in `fetch_dir`.
fn fetch(
    config: &Config,
    fetch_dir: &Path,
    tracked_ref: &str,
) -> Result<Result<(remote::Fetched, Quarantine), Unfinished>, IntakeError> {
    let url = match remote::check_url(config.source.url.as_deref().unwrap_or_default()) {
        Ok(url) => url,
        Err(e) => {
            return Ok(Err(Unfinished {
                error: FetchError::Failed(format!("source.url: {e}")),
                bytes: 0,
            }));
        }
    };
    let objects = ObjectStore::open_or_init(&config.state.dir)?;
    let mut quarantine = Quarantine::new(fetch_dir, Some(&objects))?;
    let upstream = remote::Upstream {
        url: &url,
        tracked_ref,
        limits: Limits {
            connect_timeout: config.source.connect_timeout,
            fetch_timeout: config.source.fetch_timeout,
            max_bytes: config.source.max_fetch_size.as_u64(),
            max_object: usize::try_from(config.source.max_object_size.as_u64())
                .unwrap_or(usize::MAX),
        },
        ca_file: config.source.ca_file.as_deref(),
    };
    Ok(remote::fetch(&mut quarantine, &upstream).map(|f| (f, quarantine)))
}

/// A fetch that did not complete: refused past a size limit, else failed.
fn unfetched(unfinished: Unfinished, attempt: &mut SyncAttempt) -> Judged {
    attempt.bytes = unfinished.bytes;
    let refused = |attempt: &mut SyncAttempt, reason: String| {
        attempt.outcome = "refused".to_owned();
        attempt.error = Some(reason.clone());
        SyncOutcome::Refused { tip: None, reason }
    };
    let outcome = match unfinished.error {
        FetchError::TooBig { max } => refused(attempt, Refusal::FetchTooBig { max }.to_string()),
        FetchError::ObjectTooBig { max } => {
            refused(attempt, Refusal::FetchedObjectTooBig { max }.to_string())
        }
        FetchError::TimedOut { after } => SyncOutcome::Failed {
            error: format!(
                "no complete answer within source.fetch_timeout ({})",
                humantime::format_duration(after)
            ),
        },
        FetchError::Failed(error) => SyncOutcome::Failed { error },
    };
    if let SyncOutcome::Failed { error } = &outcome {
        attempt.outcome = "failed".to_owned();
        attempt.error = Some(error.clone());
    }
    Judged::Other {
        outcome,
        refused: None,
    }
}

/// Judges the fetched tip by the rules of a bundle's tip.
fn judge_fetched(
    ctx: &judge::Context<'_>,
    quarantine: Quarantine,
    fetched: &remote::Fetched,
    attempt: &mut SyncAttempt,
) -> Result<Judged, IntakeError> {
    attempt.bytes = fetched.bytes;
    attempt.tip = Some(fetched.tip.to_string());
    let mut commit = None;
    let judged = quarantine
        .check_tip(fetched.tip, &ctx.tracked_ref)
        .map_err(Fault::from)
        .and_then(|()| judge::judge_tip(ctx, quarantine, fetched.tip, &mut commit));
    let outcome = match judged {
        Ok(TipVerdict::Trusted(trusted)) => {
            attempt.outcome = "accepted".to_owned();
            return Ok(Judged::Trusted(trusted));
        }
        Ok(TipVerdict::Replay { message }) => {
            attempt.outcome = "up-to-date".to_owned();
            let message = message.strip_prefix("replay: ").unwrap_or(&message);
            SyncOutcome::UpToDate {
                commit: fetched.tip.to_string(),
                message: message.to_owned(),
            }
        }
        Err(Fault::Refused(refusal)) => {
            let reason = refusal.to_string();
            attempt.outcome = "refused".to_owned();
            attempt.error = Some(reason.clone());
            SyncOutcome::Refused {
                tip: Some(fetched.tip.to_string()),
                reason,
            }
        }
        Err(Fault::Host(e)) => return Err(e),
    };
    let refused = matches!(outcome, SyncOutcome::Refused { .. })
        .then_some(commit)
        .flatten();
    Ok(Judged::Other { outcome, refused })
}

fn report(attempt: &SyncAttempt, outcome: SyncOutcome) -> SyncReport {
    SyncReport {
        url: attempt.url.clone(),
        at: crate::text::rfc3339_u(attempt.at),
        bytes: attempt.bytes,
        duration_ms: attempt.duration_ms,
        outcome,
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `state_dir/fetch`, private, where fetches are quarantined.
fn fetch_dir(state: &Path) -> Result<PathBuf, IntakeError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = state.join("fetch");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| IntakeError::Staging {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// Removes quarantines an interrupted sync left behind (the fetch lock is held).
fn clear_leftovers(dir: &Path) -> Result<(), IntakeError> {
    let err = |source| IntakeError::Staging {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("quarantine."))
        {
            std::fs::remove_dir_all(entry.path()).map_err(err)?;
        }
    }
    Ok(())
}
