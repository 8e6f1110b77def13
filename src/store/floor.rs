//! The high-water mark mirror, `state_dir/floor`: a small checksummed text file written
//! atomically beside the database so that losing `outpost.db` does not reopen rollback.
//!
//! ```text
//! outpost high-water mark v1
//! commit 3f2a...
//! floor 1764322800
//! signer fleet@example.com
//! sha256 <hex digest of the lines above>
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{HighWater, StoreError};

const MAGIC: &str = "outpost high-water mark v1";

/// The path of the mirror in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("floor")
}

/// Reads the mirror; `None` when there is none yet.
pub fn read(state_dir: &Path) -> Result<Option<HighWater>, StoreError> {
    let path = path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::ReadFloor { path, source }),
    };
    parse(&text)
        .map(Some)
        .ok_or(StoreError::CorruptFloor { path })
}

/// Replaces the mirror atomically: temp file, fsync, rename, fsync of the directory.
pub fn write(state_dir: &Path, mark: &HighWater) -> Result<(), StoreError> {
    let path = path(state_dir);
    let err = |source| StoreError::WriteFloor {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".floor.")
        .tempfile_in(state_dir)
        .map_err(err)?;
    tmp.write_all(render(mark).as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

fn body(mark: &HighWater) -> String {
    format!(
        "{MAGIC}\ncommit {}\nfloor {}\nsigner {}\n",
        mark.commit,
        mark.floor,
        mark.signer.replace('\n', " ")
    )
}

fn render(mark: &HighWater) -> String {
    let body = body(mark);
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{body}sha256 {digest}\n")
}

fn parse(text: &str) -> Option<HighWater> {
    let (body, sum) = text.rsplit_once("sha256 ")?;
    if hex::encode(Sha256::digest(body.as_bytes())) != sum.trim_end() {
        return None;
    }
    let mut lines = body.lines();
    (lines.next()? == MAGIC).then_some(())?;
    let commit = lines.next()?.strip_prefix("commit ")?;
    gix::ObjectId::from_hex(commit.as_bytes()).ok()?;
    let floor = lines.next()?.strip_prefix("floor ")?.parse().ok()?;
    let signer = lines.next()?.strip_prefix("signer ")?.to_owned();
    Some(HighWater {
        commit: commit.to_owned(),
        floor,
        signer,
        fingerprint: String::new(),
        accepted_at: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> HighWater {
        HighWater {
            commit: "1111111111111111111111111111111111111111".into(),
            floor: 1_764_322_800,
            signer: "fleet@example.com".into(),
            fingerprint: String::new(),
            accepted_at: 0,
        }
    }

    #[test]
    fn round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert_eq!(read(dir.path())?, None);
        write(dir.path(), &mark())?;
        assert_eq!(read(dir.path())?, Some(mark()));
        Ok(())
    }

    #[test]
    fn a_changed_byte_is_detected() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        write(dir.path(), &mark())?;
        let text = std::fs::read_to_string(path(dir.path()))?.replace("floor 17", "floor 07");
        std::fs::write(path(dir.path()), text)?;
        let msg = read(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("is corrupt"), "{msg}");
        Ok(())
    }
}
