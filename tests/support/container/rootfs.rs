//! The container's root filesystem: a minimal Debian made by debootstrap, built once into
//! `target/container/rootfs` and reused by every later run and every test binary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{Unavailable, host, tail};

/// How the rootfs is made (the arguments of debootstrap before the target directory). A rootfs
/// made by another recipe is rebuilt.
const RECIPE: &[&str] = &[
    "--variant=minbase",
    "--include=systemd,dbus,iproute2,util-linux",
    "bookworm",
];
const MIRROR: &str = "http://deb.debian.org/debian";
/// Where the rootfs keeps the recipe it was made with; written last, so its presence means the
/// rootfs is complete.
const RECIPE_STAMP: &str = ".outpost-test-recipe";

/// `target/container/rootfs`, built first when missing or made by another recipe. The build
/// runs under an exclusive lock on `target/container/lock`: a second test binary waits for it
/// and then finds the rootfs ready.
pub(super) fn ensure() -> Result<PathBuf, Unavailable> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/container");
    let rootfs = dir.join("rootfs");
    let broken = |what: &str, e: std::io::Error| {
        Unavailable::Broken(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| broken("creating", e))?;
    let lock = File::create(dir.join("lock")).map_err(|e| broken("creating the lock in", e))?;
    // Released when `lock` is dropped, at return.
    lock.lock().map_err(|e| broken("locking", e))?;
    let recipe = RECIPE.join(" ");
    if std::fs::read_to_string(rootfs.join(RECIPE_STAMP)).is_ok_and(|made| made == recipe) {
        return Ok(rootfs);
    }
    if !host::on_path("debootstrap") {
        return Err(Unavailable::Skip(format!(
            "no debootstrap to build {} (apt-get install debootstrap)",
            rootfs.display()
        )));
    }
    let started = Instant::now();
    eprintln!(
        "building the container rootfs {} with debootstrap, once (about a minute)",
        rootfs.display()
    );
    let tmp = dir.join("rootfs.tmp");
    let stale = dir.join("rootfs.stale");
    for leftover in [&tmp, &stale] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(|e| broken("removing a leftover in", e))?;
        }
    }
    debootstrap(&tmp, &dir.join("debootstrap.log"), &rootfs).map_err(Unavailable::Broken)?;
    // systemd would name the container after the machine that built it: nspawn names it.
    let _ = std::fs::remove_file(tmp.join("etc/hostname"));
    std::fs::write(tmp.join(RECIPE_STAMP), &recipe)
        .map_err(|e| broken("stamping the rootfs in", e))?;
    if rootfs.exists() {
        std::fs::rename(&rootfs, &stale)
            .map_err(|e| broken("moving the old rootfs aside in", e))?;
    }
    std::fs::rename(&tmp, &rootfs).map_err(|e| broken("renaming the new rootfs in", e))?;
    if stale.exists() {
        // A container of another test binary may still run on it: the next build removes it.
        let _ = std::fs::remove_dir_all(&stale);
    }
    eprintln!("built {} in {:.0?}", rootfs.display(), started.elapsed());
    Ok(rootfs)
}

/// Runs debootstrap into `target`, its output into `log_path`; the error says when it failed
/// for want of a network.
fn debootstrap(target: &Path, log_path: &Path, rootfs: &Path) -> Result<(), String> {
    let log = File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = Command::new("debootstrap");
    cmd.args(RECIPE).arg(target).arg(MIRROR);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(target);
    let output = std::fs::read_to_string(log_path).unwrap_or_default();
    let offline = [
        "Failed getting release file",
        "Couldn't download",
        "Temporary failure resolving",
    ]
    .iter()
    .any(|sign| output.contains(sign));
    let why = if offline {
        format!(
            "no network? debootstrap could not download from {MIRROR}; the container rootfs \
             is built from there once, then reused from {}",
            rootfs.display()
        )
    } else {
        "building the container rootfs".to_owned()
    };
    Err(format!(
        "{why}: {cmd:?} failed ({status}); the end of {}:\n{}",
        log_path.display(),
        tail(&output, 15)
    ))
}
