//! Judging one bundle file: signature policy, staging, signature, header, prerequisites, pack,
//! tip commit, its time and ancestry.
//!
//! Nothing here writes outside the staging area: the verdict is returned to the caller, which
//! records it (`import`) or only reports it (`verify`).
//!
//! The second half, from an indexed pack to the verdict on its tip, is [`judge_tip`]: upstream
//! sync calls it on a fetched pack, so a tip is judged the same whatever brought it.
//!
//! # Refuse or fail: the rule
//!
//! Judging a bundle ends in a [`Verdict`] — accepted, replay, known, or refused — or, only when
//! the host itself failed, in an [`IntakeError`] that stops the import. Every step returns
//! [`Fault`], and the conversions into it are the rule, written once: an error of the staging
//! area, the database or the object store's own files is [`Fault::Host`]; everything else a
//! bundle's content can cause (its signature, header, pack, commits, history) is a refusal of
//! that bundle, recorded as its verdict, and the batch goes on.

use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

use gix::ObjectId;

use super::pack::PackReader;
use super::stage::{self, StageError, Staged};
use super::{IntakeError, Refusal};
use crate::repo::{CommitInfo, ObjectStore, Quarantine, RepoError};
use crate::store::{BundleRecord, CommitRecord, HighWater, Store, StoreError};
use crate::text::LAST_PLAUSIBLE;
use crate::trust::{self, JudgedAt, Signer, TrustPolicy};

/// The earliest time this release can run at (its release date, 2026-12-01): a system clock
/// before it is not a clock to judge commit dates by, as systemd treats its build time.
pub const RELEASED: u64 = 1_796_083_200;

/// What the judge needs to know of the host.
pub struct Context<'a> {
    pub policy: &'a TrustPolicy,
    pub store: Option<&'a Store>,
    pub objects: Option<&'a ObjectStore>,
    pub mark: Option<HighWater>,
    pub tracked_ref: String,
    pub allow_rewind: bool,
    pub max_size: u64,
    /// `source.max_object_size`: the most bytes one object may inflate to.
    pub max_object: usize,
    /// `trust.max_future`, seconds.
    pub max_future: u64,
    /// The system clock, Unix seconds, judged for plausibility before use.
    pub clock: u64,
    /// Private directory for the staged copy and the quarantine.
    pub staging: &'a Path,
}

/// A bundle that passed every check, with what it takes to make it trusted.
pub struct Accepted {
    pub staged: Staged,
    pub record: BundleRecord,
    pub trusted: TrustedTip,
}

/// A tip commit that passed every check, with the quarantine holding its objects.
pub struct TrustedTip {
    pub quarantine: Quarantine,
    pub commit: CommitRecord,
    pub tip: ObjectId,
    pub signer: Signer,
    pub mark: HighWater,
    /// The trusted commit this one moves on from, if any.
    pub previous: Option<String>,
    pub rewind: bool,
    pub summary: String,
}

/// The verdict on a tip commit that was not refused.
pub enum TipVerdict {
    Trusted(Box<TrustedTip>),
    /// The tip is the trusted commit or older: nothing changes.
    Replay {
        message: String,
    },
}

pub enum Verdict {
    Accepted(Box<Accepted>),
    /// The tip is the trusted commit or older: nothing changes.
    Replay {
        record: BundleRecord,
        message: String,
    },
    /// These exact bytes were imported before.
    Known {
        sha256: String,
    },
    Refused(Box<Refused>),
}

/// A refusal together with what was learnt of the bundle before it, for the record.
pub struct Refused {
    pub refusal: Refusal,
    pub record: BundleRecord,
    pub commit: Option<CommitRecord>,
}

/// How judging stopped short of a verdict other than a refusal.
pub enum Fault {
    /// The bundle's content is at fault: a verdict on it.
    Refused(Refusal),
    /// The host failed: the import stops and says so.
    Host(IntakeError),
}

impl From<Refusal> for Fault {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<StageError> for Fault {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Refused(r) => Self::Refused(r),
            StageError::Failed(e) => Self::Host(e),
        }
    }
}

impl From<IntakeError> for Fault {
    fn from(e: IntakeError) -> Self {
        Self::Host(e)
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Self::Host(e.into())
    }
}

/// The object store's and the quarantine's own files failing is the host's fault; anything
/// else gix reports while reading the bundle's objects is the bundle's.
impl From<RepoError> for Fault {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Open { .. }
            | RepoError::Init { .. }
            | RepoError::Quarantine { .. }
            | RepoError::Promote { .. }
            | RepoError::Repack { .. }
            | RepoError::RepackFailed { .. }
            | RepoError::KeptMissing { .. }
            | RepoError::UpdateRef { .. } => Self::Host(e.into()),
            RepoError::IndexPack { .. }
            | RepoError::ObjectTooBig { .. }
            | RepoError::MissingTip { .. }
            | RepoError::NotACommit { .. }
            | RepoError::ReadCommit { .. }
            | RepoError::Walk { .. }
            | RepoError::Incomplete { .. } => Self::Refused(Refusal::Content(Box::new(e))),
        }
    }
}

/// What was learnt of the bundle so far, recorded with its verdict.
#[derive(Default)]
struct Learnt {
    record: BundleRecord,
    commit: Option<CommitRecord>,
}

/// Stages and judges the bundle at `path`.
pub fn judge(ctx: &Context<'_>, path: &Path) -> Result<Verdict, IntakeError> {
    let mut learnt = Learnt {
        record: BundleRecord {
            source: path.display().to_string(),
            ..BundleRecord::default()
        },
        commit: None,
    };
    match judge_file(ctx, path, &mut learnt) {
        Ok(verdict) => Ok(verdict),
        Err(Fault::Refused(refusal)) => Ok(Verdict::Refused(Box::new(Refused {
            refusal,
            record: learnt.record,
            commit: learnt.commit,
        }))),
        Err(Fault::Host(e)) => Err(e),
    }
}

fn judge_file(ctx: &Context<'_>, path: &Path, learnt: &mut Learnt) -> Result<Verdict, Fault> {
    let floor = ctx.mark.as_ref().map_or(0, |m| m.floor);
    // The cheap checks first: a stick of junk costs no copy of each file.
    stage::check_file(path, ctx.max_size)?;
    let sig = stage::read_signature(path)?;
    let signature_refused = |source| Refusal::Signature {
        path: stage::sig_path(path),
        source: Box::new(source),
    };
    let pending = ctx
        .policy
        .check_signer(&sig, trust::BUNDLE_NAMESPACE, JudgedAt::floor(floor))
        .map_err(signature_refused)?;
    learnt.record.signer = Some(pending.signer().principal.clone());
    learnt.record.fingerprint = Some(pending.signer().fingerprint.clone());

    let started = std::time::Instant::now();
    let staged = stage::stage(path, ctx.staging, ctx.max_size)?;
    tracing::debug!(elapsed = ?started.elapsed(), size = staged.size, "bundle staged and hashed");
    learnt.record.sha256 = Some(staged.sha256_hex());
    learnt.record.size = Some(staged.size);
    if let Some(store) = ctx.store
        && store.known_bundle(&staged.sha256_hex())?.is_some()
    {
        return Ok(Verdict::Known {
            sha256: staged.sha256_hex(),
        });
    }
    pending
        .verify_digests(&staged.sha256, &staged.sha512)
        .map_err(signature_refused)?;
    learnt.record.signature = Some(String::from_utf8_lossy(&sig).into_owned());
    judge_staged(ctx, staged, learnt)
}

/// Everything after the bundle's own signature held: only the staged copy is read.
fn judge_staged(ctx: &Context<'_>, staged: Staged, learnt: &mut Learnt) -> Result<Verdict, Fault> {
    let staged_path = staged.file.path().to_owned();
    let read_err = |source| IntakeError::ReadStaged {
        path: staged_path.clone(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, staged.file.reopen().map_err(read_err)?);
    let header = crate::bundle::parse_header(&mut reader).map_err(Refusal::from)?;
    let tip = header
        .tip(&ctx.tracked_ref)
        .ok_or_else(|| Refusal::NoTrackedRef {
            name: ctx.tracked_ref.clone(),
            refs: header.ref_names(),
        })?;
    learnt.record.tip = Some(tip.to_string());
    learnt.record.prerequisites = Some(header.prerequisites.len() as u64);
    let mut quarantine = Quarantine::new(ctx.staging, ctx.objects)?;
    if let Some(&oid) = header
        .prerequisites
        .iter()
        .find(|&&oid| !quarantine.has_object(oid))
    {
        return Err(Refusal::MissingPrerequisite { oid }.into());
    }
    let pack_len = staged.size - header.len;
    if !PackReader::<BufReader<std::fs::File>>::plausible(pack_len) {
        return Err(Refusal::Truncated.into());
    }
    reader.seek(SeekFrom::Start(header.len)).map_err(read_err)?;
    let started = std::time::Instant::now();
    let mut pack = PackReader::new(reader, pack_len);
    quarantine.index_pack(&mut pack, ctx.max_object)?;
    if !pack.ends_at_trailer().map_err(read_err)? {
        return Err(Refusal::TrailingData.into());
    }
    // Only the tracked ref matters; tags, other branches, notes and HEAD are never read.
    quarantine.check_tip(tip, &ctx.tracked_ref)?;
    tracing::debug!(elapsed = ?started.elapsed(), "pack indexed");
    match judge_tip(ctx, quarantine, tip, &mut learnt.commit)? {
        TipVerdict::Replay { message } => Ok(Verdict::Replay {
            record: learnt.record.clone(),
            message,
        }),
        TipVerdict::Trusted(trusted) => Ok(Verdict::Accepted(Box::new(Accepted {
            staged,
            record: learnt.record.clone(),
            trusted: *trusted,
        }))),
    }
}

/// Judges `tip`, whose objects are in `quarantine` (a bundle's pack, or a fetched one) or
/// already in the store: the pack is complete, the tip's date is plausible, and unless it is
/// the trusted commit or older, it is signed by an allowed signer and descends from the trusted
/// commit (or `trust.allow_rewind`). `commit` is filled in as the tip is learnt, for the record
/// of a refusal. Both intake paths, bundles and upstream sync, end here.
pub fn judge_tip(
    ctx: &Context<'_>,
    quarantine: Quarantine,
    tip: ObjectId,
    commit: &mut Option<CommitRecord>,
) -> Result<TipVerdict, Fault> {
    let started = std::time::Instant::now();
    quarantine.check_connected(tip, ctx.objects, ctx.max_object)?;
    tracing::debug!(elapsed = ?started.elapsed(), "connectivity checked");
    let info = quarantine.commit_info(tip)?;
    let committed = plausible_time(ctx, tip, &info)?;
    *commit = Some(CommitRecord {
        oid: tip.to_string(),
        signer: None,
        fingerprint: None,
        committed: Some(committed),
    });

    // A tip we already trust, or an older one, changes nothing whoever signed it.
    let trusted = ctx.mark.as_ref().map(super::trusted_id).transpose()?;
    if let Some(trusted) = trusted
        && quarantine.is_ancestor(tip, trusted)?
    {
        let message = if tip == trusted {
            format!("replay: {tip} is already the trusted commit")
        } else {
            format!("replay: {tip} is older than the trusted commit {trusted}; nothing changes")
        };
        return Ok(TipVerdict::Replay { message });
    }
    let floor = ctx.mark.as_ref().map_or(0, |m| m.floor);
    let Some((sig, payload)) = &info.signature else {
        return Err(Refusal::UnsignedTip {
            oid: tip,
            name: ctx.tracked_ref.clone(),
        }
        .into());
    };
    let tip_signer = ctx
        .policy
        .verify_commit(sig, payload, floor, committed)
        .map_err(|source| Refusal::TipSignature {
            oid: tip,
            name: ctx.tracked_ref.clone(),
            source: Box::new(source),
        })?;
    let record = CommitRecord {
        oid: tip.to_string(),
        signer: Some(tip_signer.principal.clone()),
        fingerprint: Some(tip_signer.fingerprint.clone()),
        committed: Some(committed),
    };
    *commit = Some(record.clone());
    let mut rewind = false;
    if let Some(trusted) = trusted
        && !quarantine.is_ancestor(trusted, tip)?
    {
        if !ctx.allow_rewind {
            return Err(Refusal::Divergent { tip, trusted }.into());
        }
        rewind = true;
    }
    let mark = HighWater {
        commit: tip.to_string(),
        floor: floor.max(committed),
        signer: tip_signer.principal.clone(),
        fingerprint: tip_signer.fingerprint.clone(),
        accepted_at: crate::store::now(),
    };
    Ok(TipVerdict::Trusted(Box::new(TrustedTip {
        quarantine,
        commit: record,
        tip,
        signer: tip_signer,
        mark,
        previous: ctx.mark.as_ref().map(|m| m.commit.clone()),
        rewind,
        summary: info.summary,
    })))
}

/// The tip's committer time, if it is one the time floor may take: not before 1970, not past
/// year 9999, and not more than `max_future` past the newest of the floor, this release's date
/// and the system clock (when that clock is plausible: not before the floor or the release).
fn plausible_time(ctx: &Context<'_>, tip: ObjectId, info: &CommitInfo) -> Result<u64, Refusal> {
    let floor = ctx.mark.as_ref().map_or(0, |m| m.floor);
    let time = info.committer_time;
    let implausible = |reason: &str| Refusal::CommitTime {
        oid: tip,
        time,
        reason: reason.to_owned(),
    };
    if time > LAST_PLAUSIBLE {
        return Err(implausible("past year 9999"));
    }
    let Ok(committed) = u64::try_from(time) else {
        return Err(implausible("before 1970"));
    };
    let limit = latest_plausible(floor, ctx.clock, ctx.max_future);
    if committed > limit {
        return Err(Refusal::FutureCommit {
            oid: tip,
            committed,
            limit,
        });
    }
    Ok(committed)
}

/// The latest committer time accepted: `max_future` past the newest of the floor, the release
/// date and the clock, where the clock counts only when it is not behind the other two.
pub fn latest_plausible(floor: u64, clock: u64, max_future: u64) -> u64 {
    let known = floor.max(RELEASED);
    let now = if clock >= known { clock } else { known };
    now.saturating_add(max_future)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn a_plausible_clock_moves_the_limit() {
        let clock = RELEASED + 100 * DAY;
        assert_eq!(latest_plausible(0, clock, 365 * DAY), clock + 365 * DAY);
    }

    #[test]
    fn a_clock_in_1970_falls_back_to_the_floor_or_the_release() {
        assert_eq!(latest_plausible(0, 5, DAY), RELEASED + DAY);
        let floor = RELEASED + 1000 * DAY;
        assert_eq!(latest_plausible(floor, 5, DAY), floor + DAY);
        // A clock behind the floor is not trusted either.
        assert_eq!(latest_plausible(floor, floor - DAY, DAY), floor + DAY);
    }

    #[test]
    fn the_limit_saturates() {
        assert_eq!(latest_plausible(u64::MAX, 0, DAY), u64::MAX);
    }
}
