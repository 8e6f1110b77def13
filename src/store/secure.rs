//! The state dir holds the originals of files outpost took over, which may be secrets: it is
//! kept 0700 and its files 0600. A state dir or file found looser (an older outpost, a restore
//! from a backup, a hand-made directory) is tightened, with a log line saying so.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::StoreError;

/// The files of the state dir that are tightened when found looser than 0600.
const FILES: &[&str] = &[
    "outpost.db",
    "outpost.db-wal",
    "outpost.db-shm",
    "floor",
    "lock",
];

/// Creates the state dir 0700 when missing, and tightens it and its files when they are
/// readable by others.
pub fn prepare_state_dir(dir: &Path) -> Result<(), StoreError> {
    let create_err = |source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(create_err)?;
    // A directory just made by someone else's create_dir_all is tightened without a word.
    let empty = std::fs::read_dir(dir).map_err(create_err)?.next().is_none();
    tighten(dir, 0o700, !empty).map_err(create_err)?;
    for name in FILES {
        let path = dir.join(name);
        match tighten(&path, 0o600, true) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|source| StoreError::Secure { path, source })?,
        }
    }
    Ok(())
}

/// Creates the database file 0600 before SQLite opens it, so it is never readable by others;
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
pub fn create_private(path: &Path) -> Result<(), StoreError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Secure {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Clears the bits of `path` (never following a symlink) beyond `mode`, saying so when `tell`.
fn tighten(path: &Path, mode: u32, tell: bool) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let now = meta.permissions().mode() & 0o7777;
    if now & !mode == 0 {
        return Ok(());
    }
    let want = now & mode;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))?;
    if !tell {
        return Ok(());
    }
    tracing::warn!(
        "{} was {now:04o}, readable by others; tightened to {want:04o} (it may hold secrets)",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> std::io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
    }

    #[test]
    fn a_new_state_dir_is_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        prepare_state_dir(&state)?;
        assert_eq!(mode(&state)?, 0o700);
        create_private(&state.join("outpost.db"))?;
        assert_eq!(mode(&state.join("outpost.db"))?, 0o600);
        Ok(())
    }

    #[test]
    fn a_loose_state_dir_and_its_files_are_tightened() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let state = dir.path();
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(state.join("floor"), "x")?;
        std::fs::set_permissions(state.join("floor"), std::fs::Permissions::from_mode(0o644))?;
        prepare_state_dir(state)?;
        assert_eq!(mode(state)?, 0o700);
        assert_eq!(mode(&state.join("floor"))?, 0o600);
        Ok(())
    }
}
