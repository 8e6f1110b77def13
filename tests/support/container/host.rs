//! What the container harness needs of the machine running the tests: tools on `PATH`, the
//! cgroup hierarchies, and the processes under `/proc`.

use std::path::{Path, PathBuf};

/// The prefix of the cgroups the wrapper makes, followed by its pid.
pub(super) const CGROUP_PREFIX: &str = "outpost-test-";
/// The prefix of the machine name of each container, followed by the test binary's pid.
pub(super) const MACHINE_PREFIX: &str = "outpost-test-";
/// The prefix of the temp dir of each container, which holds the shared dir, nspawn's output
/// and `wrapper.pid`.
pub(super) const TEMP_PREFIX: &str = "outpost-container-";

/// Whether `tool` is an executable file in a directory of `PATH`.
pub(super) fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool)).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// The cgroup hierarchies the wrapper moves itself into: the unified one alone on a cgroup v2
/// machine, the named `systemd` one and the unified one on a hybrid machine.
pub(super) fn cgroup_roots() -> Result<Vec<PathBuf>, String> {
    let base = Path::new("/sys/fs/cgroup");
    let roots: Vec<PathBuf> = if base.join("cgroup.procs").exists() {
        vec![base.to_owned()]
    } else {
        ["systemd", "unified"]
            .iter()
            .map(|h| base.join(h))
            .filter(|root| root.join("cgroup.procs").exists())
            .collect()
    };
    if roots.is_empty() {
        return Err(format!("no cgroup hierarchy under {}", base.display()));
    }
    for root in &roots {
        if nix::unistd::access(root, nix::unistd::AccessFlags::W_OK).is_err() {
            return Err(format!("{} is not writable", root.display()));
        }
    }
    Ok(roots)
}

/// Stops and removes the containers of test binaries that were killed together with their
/// wrapper (SIGKILL to the whole process group): nspawn then dies without a poweroff and the
/// container's systemd lives on, reparented. A cgroup whose wrapper still runs belongs to a
/// running test binary and is left alone.
pub(super) fn sweep_orphans(roots: &[PathBuf]) {
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(wrapper) = name
                .to_str()
                .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if alive(wrapper) {
                continue;
            }
            let dir = entry.path();
            // cgroup.kill is on the unified hierarchy (Linux 5.14): it kills the processes in
            // every hierarchy. The named systemd hierarchy only waits for them to be gone.
            let _ = std::fs::write(dir.join("payload/cgroup.kill"), "1");
            remove_cgroup(&dir);
        }
    }
}

/// Removes what killed wrappers could not: the temp dirs (`TEMP_PREFIX*`) whose
/// `wrapper.pid` names a process gone (one without the file belongs to a test binary starting
/// now), and the empty directories nspawn keeps per machine name in
/// `/run/systemd/nspawn/propagate` (`MACHINE_PREFIX` and the pid of a test binary gone).
pub(super) fn sweep_leftovers() {
    for (dir, prefix) in [
        (std::env::temp_dir(), TEMP_PREFIX),
        (
            PathBuf::from("/run/systemd/nspawn/propagate"),
            MACHINE_PREFIX,
        ),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(suffix) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let path = entry.path();
            if prefix == MACHINE_PREFIX {
                if suffix.parse().is_ok_and(|pid| !alive(pid)) {
                    let _ = std::fs::remove_dir(&path);
                }
            } else if std::fs::read_to_string(path.join("wrapper.pid"))
                .is_ok_and(|pid| pid.trim().parse().is_ok_and(|pid| !alive(pid)))
            {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Removes the cgroup `dir` and those below it, deepest first, as far as they are empty. Killed
/// processes take a moment to leave (their reaper is this machine's PID 1): what is left is
/// removed by the next sweep.
fn remove_cgroup(dir: &Path) {
    let mut stack = vec![dir.to_owned()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        all.push(d);
    }
    // Every cgroup comes after its parent in `all`.
    for d in all.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// The pids whose parent is `pid`, read from `/proc/*/stat`.
pub(super) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat(child).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// The state letter and parent pid of `pid`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` runs (exists and is not a zombie).
pub(super) fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// The command name of `pid`; empty when it is gone.
pub(super) fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}
