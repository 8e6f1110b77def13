//! The exclusive lock `state_dir/lock`: one outpost process at a time changes state or the host.
//!
//! An advisory `flock` on a file that holds the holder's pid; the kernel drops it when the
//! holder exits, however it exits, so a stale lock file never blocks anyone. A second process
//! waits as long as it takes (saying after a few seconds whom it waits for), unless the
//! command line asked it not to wait (`--no-wait`).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How long a second process waits for the holder: as long as it takes.
pub const WAIT: Duration = Duration::MAX;

/// After this long waiting, a second process says whom it waits for.
const TELL_AFTER: Duration = Duration::from_secs(3);

/// Set once by the command line's `--no-wait`: every wait for the lock is then none.
static NO_WAIT: AtomicBool = AtomicBool::new(false);

/// Makes every later [`acquire`] in this process fail at once when the lock is held.
pub fn never_wait() {
    NO_WAIT.store(true, Ordering::Relaxed);
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock { path: PathBuf, source: Errno },
    #[error(transparent)]
    StateDir(#[from] crate::store::StoreError),
    #[error(
        "another outpost process (pid {holder}) holds {path}; wait for it to finish or stop it"
    )]
    Busy { path: PathBuf, holder: String },
}

/// Held while the value lives.
#[derive(Debug)]
pub struct StateLock {
    _flock: Flock<File>,
}

/// Takes the lock, waiting up to `wait` for another holder.
pub fn acquire(state_dir: &Path, wait: Duration) -> Result<StateLock, LockError> {
    crate::store::prepare_state_dir(state_dir)?;
    let path = state_dir.join("lock");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })
    };
    let wait = if NO_WAIT.load(Ordering::Relaxed) {
        Duration::ZERO
    } else {
        wait
    };
    let started = Instant::now();
    // None: no deadline.
    let deadline = started.checked_add(wait);
    let mut told = false;
    let mut file = open()?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut flock) => {
                write_pid(&mut flock).map_err(|source| LockError::Open {
                    path: path.clone(),
                    source,
                })?;
                return Ok(StateLock { _flock: flock });
            }
            Err((mut f, Errno::EWOULDBLOCK)) if deadline.is_none_or(|d| Instant::now() < d) => {
                if !told && started.elapsed() >= TELL_AFTER {
                    told = true;
                    tracing::warn!(
                        "waiting for another outpost process (pid {}) that holds {}; stop it, or run with --no-wait to fail at once",
                        holder(&mut f),
                        path.display()
                    );
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((mut f, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Busy {
                    holder: holder(&mut f),
                    path,
                });
            }
            Err((_, source)) => return Err(LockError::Lock { path, source }),
        }
    }
}

/// The pid the holder wrote into the lock file, or "unknown".
fn holder(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut holder);
    let holder = holder.trim();
    if holder.is_empty() {
        "unknown".to_owned()
    } else {
        holder.to_owned()
    }
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_told_the_pid() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let _held = acquire(dir.path(), WAIT)?;
        let msg = acquire(dir.path(), Duration::from_millis(100))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        Ok(())
    }
}
