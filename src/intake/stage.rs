//! Copying a bundle file into private staging while hashing it, and reading its `.sig`.
//!
//! The source is opened without following symlinks and without blocking on FIFOs, must be a
//! regular file, and is copied at most `max` bytes; the digests are of exactly the bytes
//! written to the staged copy, which is the only copy read afterwards.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use sha2::{Digest, Sha256, Sha512};

use super::{IntakeError, Refusal};

/// Largest `.sig` file read: an armored ed25519 SSHSIG is well under 1 KiB.
const MAX_SIG: u64 = 64 << 10;
const BUF: usize = 1 << 20;

/// A private copy of a bundle and its digests.
pub struct Staged {
    pub file: tempfile::NamedTempFile,
    pub size: u64,
    pub sha256: [u8; 32],
    pub sha512: [u8; 64],
}

impl Staged {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Why `stage` did not produce a copy: the file was refused, or the host failed.
pub enum StageError {
    Refused(Refusal),
    Failed(IntakeError),
}

impl From<Refusal> for StageError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

/// Opens `path` as a regular file without following a symlink at its last component.
fn open_regular(path: &Path, max: u64) -> Result<(File, u64), Refusal> {
    let read_err = |source| Refusal::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(read_err)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(Refusal::Symlink {
            path: path.to_owned(),
        });
    }
    if kind.is_dir() {
        return Err(Refusal::Directory {
            path: path.to_owned(),
        });
    }
    if !kind.is_file() {
        return Err(Refusal::NotRegular {
            path: path.to_owned(),
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(read_err)?;
    // The path may have been swapped since the lstat: judge what was opened.
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular {
            path: path.to_owned(),
        });
    }
    if meta.len() > max {
        return Err(Refusal::TooBig {
            path: path.to_owned(),
            size: meta.len(),
            max,
        });
    }
    Ok((file, meta.len()))
}

/// Copies the bundle at `path` into `dir`, hashing it on the way.
pub fn stage(path: &Path, dir: &Path, max: u64) -> Result<Staged, StageError> {
    let (source, _) = open_regular(path, max)?;
    let mut staged = tempfile::Builder::new()
        .prefix("bundle.")
        .tempfile_in(dir)
        .map_err(|source| {
            StageError::Failed(IntakeError::Staging {
                path: dir.to_owned(),
                source,
            })
        })?;
    let write_err = |source| {
        StageError::Failed(IntakeError::Staging {
            path: dir.to_owned(),
            source,
        })
    };
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; BUF];
    // Read one byte past the cap so a file that grew while copying is still refused.
    let mut limited = source.take(max + 1);
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Refusal::Read {
                    path: path.to_owned(),
                    source,
                }
                .into());
            }
        };
        size += n as u64;
        if size > max {
            return Err(Refusal::TooBig {
                path: path.to_owned(),
                size,
                max,
            }
            .into());
        }
        let chunk = &buf[..n];
        sha256.update(chunk);
        sha512.update(chunk);
        staged.write_all(chunk).map_err(write_err)?;
    }
    staged.flush().map_err(write_err)?;
    Ok(Staged {
        file: staged,
        size,
        sha256: sha256.finalize().into(),
        sha512: sha512.finalize().into(),
    })
}

/// The path of the detached signature of `bundle`: `<bundle>.sig`.
pub fn sig_path(bundle: &Path) -> PathBuf {
    let mut p = bundle.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// The cheap checks of a bundle file before anything is read: it is a regular file, not a
/// symlink, directory or device, and not larger than `max`.
pub fn check_file(path: &Path, max: u64) -> Result<(), Refusal> {
    open_regular(path, max).map(drop)
}

/// Reads `<bundle>.sig` with the same care as the bundle itself.
pub fn read_signature(bundle: &Path) -> Result<Vec<u8>, Refusal> {
    let path = sig_path(bundle);
    let (file, _) = match open_regular(&path, MAX_SIG) {
        Err(Refusal::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Refusal::MissingSignature { path });
        }
        Err(Refusal::TooBig { size, max, .. }) => {
            return Err(Refusal::SignatureTooBig { path, size, max });
        }
        other => other?,
    };
    let mut sig = Vec::new();
    file.take(MAX_SIG)
        .read_to_end(&mut sig)
        .map_err(|source| Refusal::Read { path, source })?;
    Ok(sig)
}
