//! Verification with real keys and signatures made by `ssh-keygen` and `git`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256, Sha512};
use tempfile::TempDir;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ORIGIN: &str = "/etc/outpost/allowed_signers";
const BUNDLE: &[u8] = b"# v2 git bundle\nsome pack bytes\n";
/// 2026-01-01T00:00:00Z
const JAN_2026: u64 = 1_767_225_600;

/// A temp dir with an ed25519 key made by `ssh-keygen`.
struct Signing {
    dir: TempDir,
    key: PathBuf,
    public: String,
    fingerprint: String,
}

fn run(command: &mut Command) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let output = command.output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{command:?} failed: {stderr}").into());
    }
    Ok(output.stdout)
}

fn keygen() -> Result<Signing, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("k");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&key))?;
    let public = std::fs::read_to_string(dir.path().join("k.pub"))?
        .trim()
        .to_owned();
    let listing = run(Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(dir.path().join("k.pub")))?;
    let listing = String::from_utf8(listing)?;
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .ok_or("no fingerprint")?
        .to_owned();
    Ok(Signing {
        dir,
        key,
        public,
        fingerprint,
    })
}

impl Signing {
    /// `ssh-keygen -Y sign -n <namespace> [extra] file`; returns the armored `file.sig`.
    fn sign(&self, namespace: &str, extra: &[&str]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let file = self.dir.path().join("site.bundle");
        std::fs::write(&file, BUNDLE)?;
        let _ = std::fs::remove_file(self.dir.path().join("site.bundle.sig"));
        run(Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", namespace])
            .args(extra)
            .arg("-f")
            .arg(&self.key)
            .arg(&file))?;
        Ok(std::fs::read(self.dir.path().join("site.bundle.sig"))?)
    }

    fn signer(&self, principal: &str) -> Signer {
        Signer {
            principal: principal.to_owned(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

fn digests(bytes: &[u8]) -> ([u8; 32], [u8; 64]) {
    (Sha256::digest(bytes).into(), Sha512::digest(bytes).into())
}

fn policy(allowed: &str) -> Result<TrustPolicy, TrustError> {
    TrustPolicy::parse(allowed, Path::new(ORIGIN), None)
}

fn verify_bundle(policy: &TrustPolicy, sig: &[u8], floor: u64) -> Result<Signer, TrustError> {
    let (sha256, sha512) = digests(BUNDLE);
    policy.verify_file(sig, BUNDLE_NAMESPACE, &sha256, &sha512, floor)
}

#[test]
fn good_bundle_signature() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let trust = policy(&format!("# fleet\n\nalice@example.com {}\n", alice.public))?;
    assert_eq!(
        verify_bundle(&trust, &sig, 0)?,
        alice.signer("alice@example.com")
    );
    Ok(())
}

#[test]
fn sha256_signature_uses_the_sha256_digest() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &["-O", "hashalg=sha256"])?;
    let trust = policy(&format!("alice@x {}", alice.public))?;
    let (sha256, _) = digests(BUNDLE);
    let (_, other_sha512) = digests(b"other bytes");
    let signer = trust.verify_file(&sig, BUNDLE_NAMESPACE, &sha256, &other_sha512, 0)?;
    assert_eq!(signer, alice.signer("alice@x"));
    Ok(())
}

#[test]
fn tampered_file_is_a_bad_signature() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let trust = policy(&format!("alice@x {}", alice.public))?;
    let (sha256, sha512) = digests(b"# v2 git bundle\nsome pack bytez\n");
    let result = trust.verify_file(&sig, BUNDLE_NAMESPACE, &sha256, &sha512, 0);
    assert!(
        matches!(&result, Err(TrustError::BadSignature { fingerprint }) if *fingerprint == alice.fingerprint),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn wrong_namespace_names_both() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(COMMIT_NAMESPACE, &[])?;
    let trust = policy(&format!("alice@x {}", alice.public))?;
    let error = verify_bundle(&trust, &sig, 0).err().ok_or("accepted")?;
    assert_eq!(
        error.to_string(),
        "signature is for namespace \"git\" but \"outpost-bundle\" is required; sign with \
         ssh-keygen -Y sign -n outpost-bundle"
    );
    Ok(())
}

#[test]
fn key_not_in_allowed_signers_is_untrusted() -> TestResult {
    let (alice, mallory) = (keygen()?, keygen()?);
    let sig = mallory.sign(BUNDLE_NAMESPACE, &[])?;
    let trust = policy(&format!("alice@x {}", alice.public))?;
    let error = verify_bundle(&trust, &sig, 0).err().ok_or("accepted")?;
    assert_eq!(
        error.to_string(),
        format!(
            "signing key {} is not in allowed_signers; add it there if it should be trusted",
            mallory.fingerprint
        )
    );
    Ok(())
}

#[test]
fn revoked_key_is_refused_even_when_allowed() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let revoked = format!("# rotated 2026\n{}\n", alice.public);
    let trust = TrustPolicy::parse(
        &format!("alice@x {}", alice.public),
        Path::new(ORIGIN),
        Some((&revoked, Path::new("/etc/outpost/revoked_keys"))),
    )?;
    let result = verify_bundle(&trust, &sig, 0);
    assert!(
        matches!(&result, Err(TrustError::RevokedKey { fingerprint }) if *fingerprint == alice.fingerprint),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn namespaces_option_restricts_and_any_permitting_line_wins() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let restricted = format!("alice@x namespaces=\"git\" {}", alice.public);
    let error = verify_bundle(&policy(&restricted)?, &sig, 0)
        .err()
        .ok_or("accepted")?;
    assert_eq!(
        error.to_string(),
        format!(
            "key {} of alice@x may not sign namespace \"outpost-bundle\"; add it to the key's \
             namespaces= option in allowed_signers if it should",
            alice.fingerprint
        )
    );
    let both = format!(
        "{restricted}\nops@x namespaces=\"git,outpost-bundle\" {}",
        alice.public
    );
    assert_eq!(
        verify_bundle(&policy(&both)?, &sig, 0)?,
        alice.signer("ops@x")
    );
    Ok(())
}

#[test]
fn valid_before_is_judged_against_the_floor() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let trust = policy(&format!("alice@x valid-before=20260101 {}", alice.public))?;
    assert_eq!(
        verify_bundle(&trust, &sig, JAN_2026 - 1)?,
        alice.signer("alice@x")
    );
    let error = verify_bundle(&trust, &sig, JAN_2026)
        .err()
        .ok_or("accepted")?;
    assert!(
        matches!(
            error,
            TrustError::KeyExpired {
                valid_before: JAN_2026,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "key {} of alice@x expired: valid before 2026-01-01T00:00:00Z, this host has seen \
             commits up to 2026-01-01T00:00:00Z; to retire a key, remove it from allowed_signers \
             or list it in the revoked keys file",
            alice.fingerprint
        )
    );
    Ok(())
}

#[test]
fn valid_after_is_judged_against_the_floor() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let trust = policy(&format!(
        "alice@x valid-after=\"20260101Z\" {}",
        alice.public
    ))?;
    let error = verify_bundle(&trust, &sig, 0).err().ok_or("accepted")?;
    assert!(
        matches!(
            error,
            TrustError::KeyNotYetValid {
                at: JudgedAt {
                    floor: 0,
                    committed: None
                },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "key {} of alice@x is not yet valid: valid after 2026-01-01T00:00:00Z, this host \
             has not accepted any commit yet; the time floor rises with each accepted commit",
            alice.fingerprint
        )
    );
    assert_eq!(
        verify_bundle(&trust, &sig, JAN_2026)?,
        alice.signer("alice@x")
    );
    Ok(())
}

#[test]
fn garbage_is_not_a_signature() -> TestResult {
    let alice = keygen()?;
    let trust = policy(&format!("alice@x {}\n", alice.public))?;
    let result = verify_bundle(&trust, b"-----BEGIN PGP SIGNATURE-----\nxx\n", 0);
    assert!(
        matches!(result, Err(TrustError::ParseSignature { .. })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn parse_errors_name_file_and_line() -> TestResult {
    let alice = keygen()?;
    let text = format!(
        "# fleet\nalice@x {}\nbob@x foo=1 {}\n",
        alice.public, alice.public
    );
    let error = policy(&text).err().ok_or("accepted")?;
    let expected = format!("{ORIGIN}:3: unknown option \"foo\"; supported options are");
    assert!(error.to_string().starts_with(&expected), "{error}");
    let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDk8J55sOBuVBNQ";
    let revoked = format!("{}\n\n{rsa}\n", alice.public);
    let revoked_path = Path::new("/etc/outpost/revoked_keys");
    let allowed = format!("alice@x {}\n", alice.public);
    let error = TrustPolicy::parse(&allowed, Path::new(ORIGIN), Some((&revoked, revoked_path)))
        .err()
        .ok_or("accepted")?;
    assert_eq!(
        error.to_string(),
        "/etc/outpost/revoked_keys:3: unsupported key type \"ssh-rsa\"; only ssh-ed25519 keys \
         are supported"
    );
    Ok(())
}

#[test]
fn load_reads_files_and_names_a_missing_revoked_file() -> TestResult {
    let alice = keygen()?;
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let allowed = alice.dir.path().join("allowed_signers");
    let revoked = alice.dir.path().join("revoked_keys");
    std::fs::write(&allowed, format!("alice@x {}\n", alice.public))?;
    let trust = TrustPolicy::load(&allowed, None)?;
    assert_eq!(verify_bundle(&trust, &sig, 0)?, alice.signer("alice@x"));

    let error = TrustPolicy::load(&allowed, Some(&revoked))
        .err()
        .ok_or("accepted")?;
    assert!(matches!(&error, TrustError::ReadRevokedKeys { path, .. } if *path == revoked));
    assert_eq!(
        error.to_string(),
        format!("cannot read revoked keys file {}", revoked.display())
    );

    std::fs::write(&revoked, format!("{}\n", alice.public))?;
    let trust = TrustPolicy::load(&allowed, Some(&revoked))?;
    assert!(matches!(
        verify_bundle(&trust, &sig, 0),
        Err(TrustError::RevokedKey { .. })
    ));

    let missing = alice.dir.path().join("nope");
    let error = TrustPolicy::load(&missing, None).err().ok_or("accepted")?;
    assert!(matches!(&error, TrustError::ReadAllowedSigners { path, .. } if *path == missing));
    Ok(())
}

/// Makes a signed empty commit with git and returns (signature, payload) as
/// `git cat-file commit HEAD` shows them: the gpgsig header value, and the commit without it.
fn signed_commit(signing: &Signing) -> Result<(Vec<u8>, Vec<u8>), Box<dyn std::error::Error>> {
    let repo = signing.dir.path().join("repo");
    let git = |args: &[&str]| {
        let mut command = Command::new("git");
        command
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(["-c", "gpg.format=ssh", "-c", "init.defaultBranch=main"])
            .arg("-c")
            .arg(format!("user.signingkey={}", signing.key.display()))
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        run(&mut command)
    };
    std::fs::create_dir(&repo)?;
    git(&["init", "-q"])?;
    git(&["commit", "-q", "-S", "--allow-empty", "-m", "x"])?;
    Ok(split_gpgsig(&git(&["cat-file", "commit", "HEAD"])?))
}

/// Removes the `gpgsig` header (and its space-led continuation lines) from a raw commit.
fn split_gpgsig(commit: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut signature, mut payload) = (Vec::new(), Vec::new());
    let (mut in_headers, mut in_sig) = (true, false);
    for line in commit.split_inclusive(|&b| b == b'\n') {
        if in_headers && line == b"\n" {
            in_headers = false;
        }
        if in_headers && let Some(value) = line.strip_prefix(b"gpgsig ") {
            (in_sig, signature) = (true, value.to_vec());
        } else if in_headers && in_sig && line.starts_with(b" ") {
            signature.extend_from_slice(&line[1..]);
        } else {
            in_sig = false;
            payload.extend_from_slice(line);
        }
    }
    (signature, payload)
}

#[test]
fn signed_commit_verifies_and_tampering_is_caught() -> TestResult {
    let alice = keygen()?;
    let (signature, payload) = signed_commit(&alice)?;
    assert!(signature.starts_with(b"-----BEGIN SSH SIGNATURE-----\n"));
    assert!(!payload.windows(6).any(|w| w == b"gpgsig"));
    let trust = policy(&format!("alice@x namespaces=\"git\" {}", alice.public))?;
    assert_eq!(
        trust.verify_commit(&signature, &payload, 0, 0)?,
        alice.signer("alice@x")
    );

    let tampered = [payload.as_slice(), b"extra\n"].concat();
    let result = trust.verify_commit(&signature, &tampered, 0, 0);
    assert!(
        matches!(result, Err(TrustError::BadSignature { .. })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn commit_signature_is_not_a_bundle_signature() -> TestResult {
    let alice = keygen()?;
    let (signature, payload) = signed_commit(&alice)?;
    let trust = policy(&format!("alice@x {}", alice.public))?;
    let result = verify_bundle(&trust, &signature, 0);
    assert!(
        matches!(result, Err(TrustError::WrongNamespace { .. })),
        "{result:?}"
    );
    let bundle_sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let result = trust.verify_commit(&bundle_sig, &payload, 0, 0);
    assert!(
        matches!(result, Err(TrustError::WrongNamespace { .. })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn allowed_signers_without_a_key_is_refused() {
    let error = policy("# nobody yet\n\n").err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some(
            "/etc/outpost/allowed_signers lists no signers, so nothing could ever be trusted; add \
             the fleet's key as `principal ssh-ed25519 AAAA...`"
        )
    );
}

#[test]
fn a_commit_dated_outside_the_key_window_is_refused_whatever_the_floor() -> TestResult {
    let alice = keygen()?;
    let (signature, payload) = signed_commit(&alice)?;
    let trust = policy(&format!(
        "alice@x valid-after=20250101,valid-before=20300101 {}",
        alice.public
    ))?;
    const YEAR_2100: u64 = 4_102_444_800;
    // A floor inside the window does not vouch for a commit dated after it.
    let error = trust
        .verify_commit(&signature, &payload, JAN_2026, YEAR_2100)
        .err()
        .ok_or("accepted a commit dated after valid-before")?;
    assert_eq!(
        error.to_string(),
        format!(
            "key {} of alice@x expired: valid before 2030-01-01T00:00:00Z, and the commit is \
             dated 2100-01-01T00:00:00Z; to retire a key, remove it from allowed_signers or list \
             it in the revoked keys file",
            alice.fingerprint
        )
    );
    // Inside the window it verifies; a floor past the window still expires the key.
    assert_eq!(
        trust.verify_commit(&signature, &payload, JAN_2026, JAN_2026 + 3600)?,
        alice.signer("alice@x")
    );
    let error = trust
        .verify_commit(&signature, &payload, YEAR_2100, JAN_2026)
        .err()
        .ok_or("accepted after the floor passed valid-before")?;
    assert!(matches!(error, TrustError::KeyExpired { .. }), "{error:?}");
    Ok(())
}

#[test]
fn the_policy_is_checked_before_the_signed_bytes() -> TestResult {
    let alice = keygen()?;
    let mallory = keygen()?;
    let trust = policy(&format!("alice@x {}", alice.public))?;
    let sig = mallory.sign(BUNDLE_NAMESPACE, &[])?;
    let error = trust
        .check_signer(&sig, BUNDLE_NAMESPACE, JudgedAt::floor(0))
        .err()
        .ok_or("an unknown key passed the policy check")?;
    assert!(
        matches!(error, TrustError::UntrustedSigner { .. }),
        "{error:?}"
    );
    let sig = alice.sign(BUNDLE_NAMESPACE, &[])?;
    let pending = trust.check_signer(&sig, BUNDLE_NAMESPACE, JudgedAt::floor(0))?;
    assert_eq!(pending.signer(), &alice.signer("alice@x"));
    Ok(())
}
