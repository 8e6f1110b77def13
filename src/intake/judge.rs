//! Judging one staged bundle: signature, header, prerequisites, pack, tip commit, ancestry.
//!
//! Nothing here writes outside the staging area: the verdict is returned to the caller, which
//! records it (`import`) or only reports it (`verify`).

use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

use gix::ObjectId;

use super::pack::PackReader;
use super::stage::{self, StageError, Staged};
use super::{IntakeError, Refusal};
use crate::repo::{ObjectStore, Quarantine};
use crate::store::{BundleRecord, CommitRecord, HighWater, Store};
use crate::trust::{self, Signer, TrustPolicy};

/// What the judge needs to know of the host.
pub struct Context<'a> {
    pub policy: &'a TrustPolicy,
    pub store: Option<&'a Store>,
    pub objects: Option<&'a ObjectStore>,
    pub mark: Option<HighWater>,
    pub tracked_ref: String,
    pub allow_rewind: bool,
    pub max_size: u64,
    /// Private directory for the staged copy and the quarantine.
    pub staging: &'a Path,
}

/// A bundle that passed every check, with what it takes to make it trusted.
pub struct Accepted {
    pub staged: Staged,
    pub quarantine: Quarantine,
    pub record: BundleRecord,
    pub commit: CommitRecord,
    pub tip: ObjectId,
    pub signer: Signer,
    pub mark: HighWater,
    /// The trusted commit this one moves on from, if any.
    pub previous: Option<String>,
    pub rewind: bool,
    pub summary: String,
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
}

/// A refusal together with what was learnt of the bundle before it, for the record.
pub struct Refused {
    pub refusal: Refusal,
    pub record: BundleRecord,
    pub commit: Option<CommitRecord>,
}

/// Stages and judges the bundle at `path`.
pub fn judge(ctx: &Context<'_>, path: &Path) -> Result<Result<Verdict, Box<Refused>>, IntakeError> {
    let mut record = BundleRecord {
        source: path.display().to_string(),
        ..BundleRecord::default()
    };
    let refused = |refusal, record: &BundleRecord, commit| {
        Ok(Err(Box::new(Refused {
            refusal,
            record: record.clone(),
            commit,
        })))
    };
    let started = std::time::Instant::now();
    let staged = match stage::stage(path, ctx.staging, ctx.max_size) {
        Ok(staged) => staged,
        Err(StageError::Refused(refusal)) => return refused(refusal, &record, None),
        Err(StageError::Failed(e)) => return Err(e),
    };
    tracing::debug!(elapsed = ?started.elapsed(), size = staged.size, "bundle staged and hashed");
    record.sha256 = Some(staged.sha256_hex());
    record.size = Some(staged.size);
    let known = match ctx.store {
        Some(store) => store.known_bundle(&staged.sha256_hex())?.is_some(),
        None => false,
    };
    if known {
        return Ok(Ok(Verdict::Known {
            sha256: staged.sha256_hex(),
        }));
    }
    match judge_staged(ctx, path, staged, &mut record)? {
        Ok(verdict) => Ok(Ok(verdict)),
        Err((refusal, commit)) => refused(refusal, &record, commit),
    }
}

type Judged = Result<Verdict, (Refusal, Option<CommitRecord>)>;

fn judge_staged(
    ctx: &Context<'_>,
    path: &Path,
    staged: Staged,
    record: &mut BundleRecord,
) -> Result<Judged, IntakeError> {
    let floor = ctx.mark.as_ref().map_or(0, |m| m.floor);
    let sig = match stage::read_signature(path) {
        Ok(sig) => sig,
        Err(r) => return Ok(Err((r, None))),
    };
    record.signature = Some(String::from_utf8_lossy(&sig).into_owned());
    let signer = match ctx.policy.verify_file(
        &sig,
        trust::BUNDLE_NAMESPACE,
        &staged.sha256,
        &staged.sha512,
        floor,
    ) {
        Ok(signer) => signer,
        Err(source) => {
            return Ok(Err((
                Refusal::Signature {
                    path: stage::sig_path(path),
                    source,
                },
                None,
            )));
        }
    };
    record.signer = Some(signer.principal.clone());
    record.fingerprint = Some(signer.fingerprint.clone());

    // From here on only the verified staged copy is read.
    let staged_path = staged.file.path().to_owned();
    let read_err = |source| IntakeError::ReadStaged {
        path: staged_path.clone(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, staged.file.reopen().map_err(read_err)?);
    let header = match crate::bundle::parse_header(&mut reader) {
        Ok(h) => h,
        Err(e) => return Ok(Err((e.into(), None))),
    };
    let Some(tip) = header.tip(&ctx.tracked_ref) else {
        return Ok(Err((
            Refusal::NoTrackedRef {
                name: ctx.tracked_ref.clone(),
                refs: header.ref_names(),
            },
            None,
        )));
    };
    record.tip = Some(tip.to_string());
    let mut quarantine = Quarantine::new(ctx.staging, ctx.objects)?;
    if let Some(&oid) = header
        .prerequisites
        .iter()
        .find(|&&oid| !quarantine.has_object(oid))
    {
        return Ok(Err((Refusal::MissingPrerequisite { oid }, None)));
    }
    let pack_len = staged.size - header.len;
    if !PackReader::<BufReader<std::fs::File>>::plausible(pack_len) {
        return Ok(Err((Refusal::Truncated, None)));
    }
    reader.seek(SeekFrom::Start(header.len)).map_err(read_err)?;
    let started = std::time::Instant::now();
    let mut pack = PackReader::new(reader, pack_len);
    if let Err(e) = quarantine.index_pack(&mut pack) {
        return Ok(Err((
            Refusal::Pack {
                message: e.to_string(),
            },
            None,
        )));
    }
    if !pack.ends_at_trailer().map_err(read_err)? {
        return Ok(Err((Refusal::TrailingData, None)));
    }
    for (oid, name) in &header.refs {
        if let Err(e) = quarantine.check_tip(*oid, &name.to_string()) {
            return Ok(Err((
                Refusal::Pack {
                    message: e.to_string(),
                },
                None,
            )));
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "pack indexed");
    let started = std::time::Instant::now();
    if let Err(e) = quarantine.check_connected(tip, ctx.objects) {
        return Ok(Err((
            Refusal::Pack {
                message: e.to_string(),
            },
            None,
        )));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "connectivity checked");
    let info = quarantine.commit_info(tip)?;
    let mut commit = CommitRecord {
        oid: tip.to_string(),
        signer: None,
        fingerprint: None,
        committed: Some(info.committer_time),
    };

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
        return Ok(Ok(Verdict::Replay {
            record: record.clone(),
            message,
        }));
    }
    let Some((sig, payload)) = &info.signature else {
        return Ok(Err((
            Refusal::UnsignedTip {
                oid: tip,
                name: ctx.tracked_ref.clone(),
            },
            Some(commit),
        )));
    };
    let tip_signer = match ctx.policy.verify_commit(sig, payload, floor) {
        Ok(s) => s,
        Err(source) => {
            return Ok(Err((
                Refusal::TipSignature {
                    oid: tip,
                    name: ctx.tracked_ref.clone(),
                    source,
                },
                Some(commit),
            )));
        }
    };
    commit.signer = Some(tip_signer.principal.clone());
    commit.fingerprint = Some(tip_signer.fingerprint.clone());
    let mut rewind = false;
    if let Some(trusted) = trusted
        && !quarantine.is_ancestor(trusted, tip)?
    {
        if !ctx.allow_rewind {
            return Ok(Err((Refusal::Divergent { tip, trusted }, Some(commit))));
        }
        rewind = true;
    }
    let mark = HighWater {
        commit: tip.to_string(),
        floor: floor.max(info.committer_time),
        signer: tip_signer.principal.clone(),
        fingerprint: tip_signer.fingerprint.clone(),
        accepted_at: crate::store::now(),
    };
    Ok(Ok(Verdict::Accepted(Box::new(Accepted {
        staged,
        quarantine,
        record: record.clone(),
        commit,
        tip,
        signer: tip_signer,
        mark,
        previous: ctx.mark.as_ref().map(|m| m.commit.clone()),
        rewind,
        summary: info.summary,
    }))))
}
