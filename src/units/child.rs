//! Running a child process with a deadline and bounded output: what `systemctl` and health
//! checks are run with.
//!
//! The child gets its own process group, stdin from `/dev/null`, and stdout and stderr on one
//! pipe. Its output is read as it comes; only the first or the last `limit` bytes are kept, so
//! a child printing gigabytes costs `limit` bytes. At the deadline the whole process group is
//! killed (a shell's children too). Once the child exited, what it left running that still
//! holds the pipe gets a short grace and is then killed with the group.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Which part of the output is kept when there is more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Head,
    Tail,
}

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The kept part of stdout and stderr, interleaved as written.
    pub output: Vec<u8>,
    /// More was printed than was kept.
    pub truncated: bool,
    pub elapsed: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// What is left to read after the child exited, at most this long.
const GRACE: Duration = Duration::from_millis(200);

/// Runs `command` until it exits or `timeout` passes (then its process group is killed).
/// An error is a child that could not be started.
pub fn run(
    mut command: Command,
    timeout: Duration,
    limit: usize,
    keep: Keep,
) -> std::io::Result<Finished> {
    let started = Instant::now();
    let (reader, writer) = std::io::pipe()?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    let mut child = command.spawn()?;
    // The parent's copies of the write end must go, or the pipe never ends.
    drop(command);
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let mut reader = reader;
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = started + timeout;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut eof = false;
    loop {
        if exited.is_none() {
            exited = child.try_wait()?.map(|s| (s, Instant::now()));
        }
        let now = Instant::now();
        let until = match exited {
            Some((_, at)) => (at + GRACE).min(deadline.max(at)),
            None => deadline,
        };
        if eof && exited.is_some() {
            break;
        }
        if now >= until {
            break;
        }
        if eof {
            // Output is done; wait for the exit in small steps.
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
            continue;
        }
        let wait = (until - now).min(Duration::from_millis(50));
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX).max(1);
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match reader.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => truncated |= keep_bytes(&mut kept, &buf[..n], limit, keep),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let status = match exited {
        Some((status, _)) => {
            if !eof {
                // Something the child left behind still holds the pipe.
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            Some(status)
        }
        None => {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            None
        }
    };
    Ok(Finished {
        status,
        output: kept,
        truncated,
        elapsed: started.elapsed(),
    })
}

/// Adds `new` to `kept`, keeping at most `limit` bytes; returns whether bytes were dropped.
fn keep_bytes(kept: &mut Vec<u8>, new: &[u8], limit: usize, keep: Keep) -> bool {
    match keep {
        Keep::Head => {
            let room = limit.saturating_sub(kept.len());
            kept.extend_from_slice(&new[..new.len().min(room)]);
            new.len() > room
        }
        Keep::Tail => {
            kept.extend_from_slice(new);
            let over = kept.len().saturating_sub(limit);
            kept.drain(..over);
            over > 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_and_status_come_back() -> std::io::Result<()> {
        let f = run(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
            100,
            Keep::Tail,
        )?;
        assert_eq!(f.status.and_then(|s| s.code()), Some(3));
        assert_eq!(f.output, b"out\nerr\n");
        assert!(!f.truncated);
        Ok(())
    }

    #[test]
    fn a_flood_keeps_only_the_tail() -> std::io::Result<()> {
        let f = run(
            sh("head -c 5000000 /dev/zero; echo END"),
            Duration::from_secs(30),
            4096,
            Keep::Tail,
        )?;
        assert!(f.success());
        assert_eq!(f.output.len(), 4096);
        assert!(f.output.ends_with(b"\0END\n"));
        assert!(f.truncated);
        Ok(())
    }

    #[test]
    fn a_hang_is_killed_with_its_group() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join("grandchild");
        // The grandchild would write the marker after 3 s unless the group is killed.
        let script = format!(
            "(sleep 3; touch {}) & echo started; sleep 60",
            marker.display()
        );
        let f = run(sh(&script), Duration::from_millis(500), 100, Keep::Tail)?;
        assert!(f.status.is_none());
        assert_eq!(f.output, b"started\n");
        assert!(f.elapsed < Duration::from_secs(3));
        std::thread::sleep(Duration::from_secs(3));
        assert!(!marker.exists(), "the grandchild was killed");
        Ok(())
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let err = run(
            Command::new("/nonexistent/program"),
            Duration::from_secs(1),
            10,
            Keep::Head,
        )
        .err();
        assert_eq!(err.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
