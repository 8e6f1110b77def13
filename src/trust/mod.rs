//! The trust root: `allowed_signers` plus optional revoked keys, and verification of SSHSIG
//! signatures of bundle files (namespace `outpost-bundle`) and of commits (namespace `git`).
//!
//! Only ed25519 keys are accepted. Key validity (`valid-after` / `valid-before`) is judged at
//! the later of the host's time floor (the newest accepted committer time) and, for a commit,
//! the commit's own committer time, as `git verify-commit` judges it at the commit time: a key
//! cannot sign commits dated outside its window. The wall clock is never consulted.
//!
//! Checking is split so that the cheap part comes first: [`TrustPolicy::check_signer`] reads
//! the armour, namespace and key and applies the policy (allowed, unrevoked, options) before a
//! bundle is copied anywhere; [`PendingSignature::verify_digests`] then checks the signature
//! over the staged copy's digests.
//!
//! Differences from `ssh-keygen -Y verify`, all on the side of refusing:
//!
//! * `cert-authority` lines are refused: list the signer's plain key instead.
//! * Timestamps without a trailing `Z` are read as UTC, not local time, so that no trust
//!   decision depends on the host's time zone.
//! * The revoked-keys file holds plain public keys, one a line; KRLs are not read.
//! * Principals are kept for display only; the signer is identified by its key.

mod allowed_signers;
mod sshsig;
#[cfg(test)]
mod tests;
mod timestamp;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::{Algorithm, HashAlg, SshSig};

use allowed_signers::Entry;
use timestamp::{describe_floor, format as format_time};

/// The SSHSIG namespace of bundle file signatures (`ssh-keygen -Y sign -n outpost-bundle`).
pub const BUNDLE_NAMESPACE: &str = "outpost-bundle";
/// The SSHSIG namespace git uses for commit signatures.
pub const COMMIT_NAMESPACE: &str = "git";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read allowed signers file {}", path.display())]
    ReadAllowedSigners { path: PathBuf, source: io::Error },
    #[error(
        "{} lists no signers, so nothing could ever be trusted; add the fleet's key as `principal ssh-ed25519 AAAA...`",
        path.display()
    )]
    NoSigners { path: PathBuf },
    #[error("{}:{line}: {reason}", path.display())]
    ParseAllowedSigners {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read revoked keys file {}", path.display())]
    ReadRevokedKeys { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    ParseRevokedKeys {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "not an armored SSH signature: expected -----BEGIN SSH SIGNATURE----- as written by \
         ssh-keygen -Y sign"
    )]
    ParseSignature { source: ssh_key::Error },
    #[error(
        "signature is for namespace \"{}\" but \"{expected}\" is required; sign with \
         ssh-keygen -Y sign -n {expected}",
        crate::text::escape(found)
    )]
    WrongNamespace { expected: String, found: String },
    #[error("signed with an unsupported key type ({algorithm}); outpost accepts ssh-ed25519")]
    UnsupportedKeyType { algorithm: String },
    #[error("signature uses unsupported hash algorithm {algorithm}; use sha256 or sha512")]
    UnsupportedHashAlgorithm { algorithm: String },
    #[error(
        "signing key {fingerprint} is not in allowed_signers; add it there if it should be trusted"
    )]
    UntrustedSigner { fingerprint: String },
    #[error("signing key {fingerprint} is revoked (listed in the revoked keys file)")]
    RevokedKey { fingerprint: String },
    #[error(
        "key {fingerprint} of {principal} may not sign namespace \"{namespace}\"; add it to \
         the key's namespaces= option in allowed_signers if it should"
    )]
    NamespaceNotAllowed {
        fingerprint: String,
        principal: String,
        namespace: String,
    },
    #[error(
        "key {fingerprint} of {principal} is not yet valid: valid after {}, {}; the time floor \
         rises with each accepted commit",
        format_time(*valid_after),
        at.describe()
    )]
    KeyNotYetValid {
        fingerprint: String,
        principal: String,
        valid_after: u64,
        at: JudgedAt,
    },
    #[error(
        "key {fingerprint} of {principal} expired: valid before {}, {}; to retire a key, remove \
         it from allowed_signers or list it in the revoked keys file",
        format_time(*valid_before),
        at.describe()
    )]
    KeyExpired {
        fingerprint: String,
        principal: String,
        valid_before: u64,
        at: JudgedAt,
    },
    #[error(
        "signature by {fingerprint} does not match the signed data; it was changed after \
         signing or is corrupt"
    )]
    BadSignature { fingerprint: String },
}

/// The time key validity is judged at: the time floor, or a commit's own committer time when
/// that is later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgedAt {
    pub floor: u64,
    /// The committer time of the signed commit; `None` for a bundle file.
    pub committed: Option<u64>,
}

impl JudgedAt {
    /// Judged at the time floor alone (bundle file signatures).
    pub fn floor(floor: u64) -> Self {
        Self {
            floor,
            committed: None,
        }
    }

    /// Judged at the later of the floor and the commit's time.
    pub fn commit(floor: u64, committed: u64) -> Self {
        Self {
            floor,
            committed: Some(committed),
        }
    }

    pub fn time(&self) -> u64 {
        self.floor.max(self.committed.unwrap_or(0))
    }

    fn describe(&self) -> String {
        match self.committed {
            Some(c) if c > self.floor => format!("and the commit is dated {}", format_time(c)),
            _ => describe_floor(self.floor),
        }
    }
}

/// A signature whose key the policy permits, not yet checked against the signed data.
#[derive(Debug)]
pub struct PendingSignature {
    sig: SshSig,
    key: [u8; 32],
    namespace: String,
    signer: Signer,
}

impl PendingSignature {
    /// Who would have signed, if the signature holds.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Checks the signature over a file whose sha256 and sha512 digests the caller computed
    /// while copying it (the file itself is never held in memory).
    pub fn verify_digests(
        self,
        sha256: &[u8; 32],
        sha512: &[u8; 64],
    ) -> Result<Signer, TrustError> {
        let digest: &[u8] = match self.sig.hash_alg() {
            HashAlg::Sha256 => sha256,
            HashAlg::Sha512 => sha512,
            other => return Err(unsupported_hash(other)),
        };
        self.verify(digest)
    }

    fn verify(self, digest: &[u8]) -> Result<Signer, TrustError> {
        let blob = sshsig::signed_data(&self.namespace, self.sig.hash_alg(), digest);
        if !sshsig::ed25519_valid(&self.key, self.sig.signature_bytes(), &blob) {
            return Err(TrustError::BadSignature {
                fingerprint: self.signer.fingerprint,
            });
        }
        Ok(self.signer)
    }
}

/// Who signed: the principal(s) of the matching allowed_signers line and the key fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The principals field of the allowed_signers line as written, e.g. `ops@x,alice@x`.
    pub principal: String,
    /// The key's fingerprint as `ssh-keygen -l` prints it: `SHA256:...`.
    pub fingerprint: String,
}

/// The trust root: allowed signers plus optional revoked keys.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    allowed: Vec<Entry>,
    revoked: Vec<[u8; 32]>,
}

impl TrustPolicy {
    /// Reads allowed_signers (required) and revoked_keys (optional: `None` = not configured; a
    /// configured but missing file is an error naming it).
    pub fn load(allowed_signers: &Path, revoked_keys: Option<&Path>) -> Result<Self, TrustError> {
        let allowed_text = fs::read_to_string(allowed_signers).map_err(|source| {
            TrustError::ReadAllowedSigners {
                path: allowed_signers.to_owned(),
                source,
            }
        })?;
        let revoked_text =
            match revoked_keys {
                None => None,
                Some(path) => Some(fs::read_to_string(path).map_err(|source| {
                    TrustError::ReadRevokedKeys {
                        path: path.to_owned(),
                        source,
                    }
                })?),
            };
        let revoked = revoked_text.as_deref().zip(revoked_keys);
        Self::parse(&allowed_text, allowed_signers, revoked)
    }

    /// The same from text (for unit tests and the loader); `origin` is used in messages.
    pub fn parse(
        allowed_signers: &str,
        origin: &Path,
        revoked_keys: Option<(&str, &Path)>,
    ) -> Result<Self, TrustError> {
        let mut allowed = Vec::new();
        for (index, line) in allowed_signers.lines().enumerate() {
            match allowed_signers::parse_entry(line) {
                Ok(entry) => allowed.extend(entry),
                Err(reason) => {
                    let path = origin.to_owned();
                    return Err(TrustError::ParseAllowedSigners {
                        path,
                        line: index + 1,
                        reason,
                    });
                }
            }
        }
        if allowed.is_empty() {
            return Err(TrustError::NoSigners {
                path: origin.to_owned(),
            });
        }
        let revoked = match revoked_keys {
            Some((text, path)) => parse_revoked_keys(text, path)?,
            None => Vec::new(),
        };
        Ok(Self { allowed, revoked })
    }

    /// The policy half of verifying an armored SSHSIG (`-----BEGIN SSH SIGNATURE-----`):
    /// armour, namespace, key type, and a key that is allowed, unrevoked and whose options
    /// permit `namespace` at time `at`. Cheap: nothing signed is read.
    pub fn check_signer(
        &self,
        armored: &[u8],
        namespace: &str,
        at: JudgedAt,
    ) -> Result<PendingSignature, TrustError> {
        let sig = parse_signature(armored, namespace)?;
        let key = *ed25519_key(&sig)?;
        let fingerprint = fingerprint(&key);
        if self.revoked.contains(&key) {
            return Err(TrustError::RevokedKey { fingerprint });
        }
        let signer = self.permitting_entry(&key, &fingerprint, namespace, at)?;
        Ok(PendingSignature {
            sig,
            key,
            namespace: namespace.to_owned(),
            signer,
        })
    }

    /// Verifies an armored SSHSIG over a file from its sha256 and sha512 digests, judging key
    /// validity at the time floor.
    pub fn verify_file(
        &self,
        armored: &[u8],
        namespace: &str,
        sha256: &[u8; 32],
        sha512: &[u8; 64],
        floor: u64,
    ) -> Result<Signer, TrustError> {
        self.check_signer(armored, namespace, JudgedAt::floor(floor))?
            .verify_digests(sha256, sha512)
    }

    /// Verifies an SSH signature on a commit: `armored` is the gpgsig header value, `payload`
    /// the signed commit bytes (gix's `Commit::signature()` gives both). Namespace `git`; key
    /// validity judged at the later of `floor` and the commit's time `committed`.
    pub fn verify_commit(
        &self,
        armored: &[u8],
        payload: &[u8],
        floor: u64,
        committed: u64,
    ) -> Result<Signer, TrustError> {
        let pending = self.check_signer(
            armored,
            COMMIT_NAMESPACE,
            JudgedAt::commit(floor, committed),
        )?;
        let digest = sshsig::digest(pending.sig.hash_alg(), payload)
            .ok_or_else(|| unsupported_hash(pending.sig.hash_alg()))?;
        pending.verify(&digest)
    }

    /// The first allowed_signers line with this key whose options permit the signature; if
    /// none does, the refusal of the first line with this key.
    fn permitting_entry(
        &self,
        key: &[u8; 32],
        fingerprint: &str,
        namespace: &str,
        at: JudgedAt,
    ) -> Result<Signer, TrustError> {
        let mut refusal = None;
        for entry in self.allowed.iter().filter(|entry| &entry.key == key) {
            match check_entry(entry, fingerprint, namespace, at) {
                Ok(()) => {
                    let principal = entry.principals.clone();
                    return Ok(Signer {
                        principal,
                        fingerprint: fingerprint.to_owned(),
                    });
                }
                Err(error) => {
                    refusal.get_or_insert(error);
                }
            }
        }
        Err(refusal.unwrap_or_else(|| TrustError::UntrustedSigner {
            fingerprint: fingerprint.to_owned(),
        }))
    }
}

fn parse_revoked_keys(text: &str, path: &Path) -> Result<Vec<[u8; 32]>, TrustError> {
    let mut revoked = Vec::new();
    for (index, line) in text.lines().enumerate() {
        match allowed_signers::parse_revoked(line) {
            Ok(key) => revoked.extend(key),
            Err(reason) => {
                let path = path.to_owned();
                return Err(TrustError::ParseRevokedKeys {
                    path,
                    line: index + 1,
                    reason,
                });
            }
        }
    }
    Ok(revoked)
}

/// Does this line's `namespaces=`, `valid-after=` and `valid-before=` permit the signature?
fn check_entry(
    entry: &Entry,
    fingerprint: &str,
    namespace: &str,
    at: JudgedAt,
) -> Result<(), TrustError> {
    let time = at.time();
    let fingerprint = fingerprint.to_owned();
    let principal = entry.principals.clone();
    if let Some(patterns) = &entry.namespaces
        && !allowed_signers::namespace_allowed(patterns, namespace)
    {
        let namespace = namespace.to_owned();
        return Err(TrustError::NamespaceNotAllowed {
            fingerprint,
            principal,
            namespace,
        });
    }
    if let Some(valid_after) = entry.valid_after
        && time < valid_after
    {
        return Err(TrustError::KeyNotYetValid {
            fingerprint,
            principal,
            valid_after,
            at,
        });
    }
    if let Some(valid_before) = entry.valid_before
        && time >= valid_before
    {
        return Err(TrustError::KeyExpired {
            fingerprint,
            principal,
            valid_before,
            at,
        });
    }
    Ok(())
}

/// Decodes the armored signature and checks its namespace.
fn parse_signature(armored: &[u8], namespace: &str) -> Result<SshSig, TrustError> {
    // The PEM decoder wants the armor without surrounding blank lines; files may have them.
    let armored = armored.trim_ascii();
    let sig = SshSig::from_pem(armored).map_err(|source| {
        // This build parses ed25519 signatures only: name the key type of any other.
        match sshsig::key_type(armored) {
            Some(algorithm) if algorithm != "ssh-ed25519" => TrustError::UnsupportedKeyType {
                algorithm: crate::text::escape(&algorithm).into_owned(),
            },
            _ => TrustError::ParseSignature { source },
        }
    })?;
    if sig.namespace() != namespace {
        return Err(TrustError::WrongNamespace {
            expected: namespace.to_owned(),
            found: sig.namespace().to_owned(),
        });
    }
    Ok(sig)
}

/// The signing key, if both it and the signature are ed25519.
fn ed25519_key(sig: &SshSig) -> Result<&[u8; 32], TrustError> {
    match sig.public_key() {
        KeyData::Ed25519(Ed25519PublicKey(key)) if sig.algorithm() == Algorithm::Ed25519 => Ok(key),
        KeyData::Ed25519(_) => Err(TrustError::UnsupportedKeyType {
            algorithm: sig.algorithm().as_str().to_owned(),
        }),
        other => Err(TrustError::UnsupportedKeyType {
            algorithm: other.algorithm().as_str().to_owned(),
        }),
    }
}

/// `SHA256:...`, as `ssh-keygen -l` prints it.
fn fingerprint(key: &[u8; 32]) -> String {
    KeyData::Ed25519(Ed25519PublicKey(*key))
        .fingerprint(HashAlg::Sha256)
        .to_string()
}

fn unsupported_hash(hash_alg: HashAlg) -> TrustError {
    TrustError::UnsupportedHashAlgorithm {
        algorithm: hash_alg.as_str().to_owned(),
    }
}
