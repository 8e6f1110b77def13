//! The cryptographic core of SSHSIG (OpenSSH `PROTOCOL.sshsig`): the signed blob and the
//! ed25519 check. Policy (who may sign what) lives in the parent module.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};
use ssh_key::HashAlg;

/// The blob an SSHSIG signs, built from the message digest rather than the message:
/// `"SSHSIG" || string(namespace) || string(reserved = "") || string(hash_alg) || string(digest)`.
///
/// The reserved field is always empty here, as in OpenSSH's verifier.
pub(crate) fn signed_data(namespace: &str, hash_alg: HashAlg, digest: &[u8]) -> Vec<u8> {
    let hash_name = hash_alg.as_str();
    let mut blob = Vec::with_capacity(6 + 4 * 4 + namespace.len() + hash_name.len() + digest.len());
    blob.extend_from_slice(b"SSHSIG");
    put_string(&mut blob, namespace.as_bytes());
    put_string(&mut blob, b"");
    put_string(&mut blob, hash_name.as_bytes());
    put_string(&mut blob, digest);
    blob
}

/// The digest of `message` with the signature's hash algorithm; `None` for an algorithm this
/// build does not know.
pub(crate) fn digest(hash_alg: HashAlg, message: &[u8]) -> Option<Vec<u8>> {
    match hash_alg {
        HashAlg::Sha256 => Some(Sha256::digest(message).to_vec()),
        HashAlg::Sha512 => Some(Sha512::digest(message).to_vec()),
        _ => None,
    }
}

/// Checks an ed25519 signature (64 raw bytes) by `public_key` over `signed_data`, strictly
/// (no small-order keys, no malleable signatures).
pub(crate) fn ed25519_valid(public_key: &[u8; 32], signature: &[u8], signed_data: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(signed_data, &signature).is_ok()
}

/// The key type named inside an armored SSHSIG (`ecdsa-sha2-nistp256`, ...), read without
/// parsing the rest: `"SSHSIG" || uint32 version || string(publickey)`, where the public key
/// blob starts with `string(key type)`. `None` when the armour or layout is not that.
pub(crate) fn key_type(armored: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(armored).ok()?;
    let body = text
        .trim()
        .strip_prefix("-----BEGIN SSH SIGNATURE-----")?
        .strip_suffix("-----END SSH SIGNATURE-----")?;
    let base64: String = body.split_whitespace().collect();
    let blob = <base64ct::Base64 as base64ct::Encoding>::decode_vec(&base64).ok()?;
    let rest = blob.strip_prefix(b"SSHSIG")?.get(4..)?;
    let (public_key, _) = take_string(rest)?;
    let (name, _) = take_string(public_key)?;
    let name = std::str::from_utf8(name).ok()?;
    Some(name.chars().take(64).collect())
}

/// Splits an ssh-encoding `string` off the front of `bytes`.
fn take_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    let body = bytes.get(4..)?;
    (body.len() >= len).then(|| body.split_at(len))
}

/// An ssh-encoding `string`: u32 big-endian length, then the bytes.
fn put_string(blob: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("namespaces and digests are far below 4 GiB");
    blob.extend_from_slice(&len.to_be_bytes());
    blob.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use ssh_key::SshSig;

    #[test]
    fn blob_matches_ssh_key_for_both_hashes() -> Result<(), Box<dyn std::error::Error>> {
        let message = b"a bundle's bytes";
        for hash_alg in [HashAlg::Sha256, HashAlg::Sha512] {
            let ours = signed_data("outpost-bundle", hash_alg, &hash_alg.digest(message));
            let theirs = SshSig::signed_data("outpost-bundle", hash_alg, message)?;
            assert_eq!(ours, theirs, "{hash_alg}");
        }
        Ok(())
    }

    #[test]
    fn digest_picks_the_named_algorithm() -> Result<(), String> {
        let sha256 = digest(HashAlg::Sha256, b"x").ok_or("sha256 unknown")?;
        let sha512 = digest(HashAlg::Sha512, b"x").ok_or("sha512 unknown")?;
        assert_eq!(sha256, Sha256::digest(b"x").to_vec());
        assert_eq!(sha512, Sha512::digest(b"x").to_vec());
        Ok(())
    }

    #[test]
    fn ed25519_check_accepts_only_the_signed_data() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        let signature = key.sign(b"data").to_bytes();
        assert!(ed25519_valid(&public, &signature, b"data"));
        assert!(!ed25519_valid(&public, &signature, b"datA"));
        assert!(!ed25519_valid(&public, &signature[..63], b"data"));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        assert!(!ed25519_valid(&other, &signature, b"data"));
    }
}
