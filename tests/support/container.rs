//! One Debian container with a real systemd, booted once per test binary and shared by every
//! test that asks for it: units are started there, never on the machine running the tests.
//!
//! * Rootfs: `debootstrap --variant=minbase` into `target/container/rootfs`, built once (into a
//!   temp sibling, renamed when complete) under an exclusive lock on `target/container/lock`, so
//!   two test binaries never build it twice, and reused by every later run. It is rebuilt when
//!   [`RECIPE`] changes.
//! * Boot: `systemd-nspawn --boot --volatile=overlay` (the rootfs stays untouched: every change
//!   lives in a tmpfs and is gone at poweroff), a private network, the directory of the built
//!   `outpost` read-only at `/opt/outpost-bin` and a fresh temp dir read-write at
//!   `/outpost-test`, through which tests hand files in.
//! * Talk: `nsenter -t PID1 -a`. `machinectl`, `systemctl -M` and `systemd-run --machine` do
//!   not work on the CI machines (no systemd as their PID 1).
//! * Stop: nspawn runs under a small `sh` (the [`WRAPPER`]) that moves itself into cgroups of its
//!   own first (the test binary is multi-threaded, and moving it would move all of it). The
//!   wrapper is spawned through `setpriv --pdeathsig TERM` by a thread that lives as long as the
//!   test binary: when the binary exits, however it exits, the wrapper gets SIGTERM, hands it to
//!   nspawn (an orderly poweroff), waits for it, then removes its cgroups and the temp dir.
//!
//! [`shared`] skips (prints why and returns `None`) on a machine that cannot do this: not root,
//! a tool missing, no writable cgroup hierarchy. `OUTPOST_REQUIRE_CONTAINER=1` (set by CI) turns
//! a skip into a panic, so the container tests cannot silently skip there. Anything failing
//! after those checks (debootstrap, the boot) is a panic in every test that asks.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Result;

/// How the rootfs is made. A rootfs made by another recipe is rebuilt.
const RECIPE: &[&str] = &[
    "--variant=minbase",
    "--include=systemd,dbus,iproute2,util-linux",
    "bookworm",
];
const MIRROR: &str = "http://deb.debian.org/debian";
/// Where the rootfs keeps the recipe it was made with.
const RECIPE_STAMP: &str = ".outpost-test-recipe";

/// The one PATH of every command run inside.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the directory holding the built `outpost` is seen inside.
pub const BIN_DIR: &str = "/opt/outpost-bin";
/// Where the shared directory is seen inside.
pub const SHARED_DIR: &str = "/outpost-test";

/// Time allowed from starting nspawn to `systemctl is-system-running` answering.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs nspawn (the rest of the arguments) in cgroups of its own and cleans up after it.
/// `$1` is the temp dir to remove at the end, `$OUTPOST_CGROUP_ROOTS` the cgroup hierarchies.
/// A trapped signal interrupts `wait`, hence the loop: it waits until nspawn is really gone.
/// nspawn gets a death signal of its own too, so it powers off even if this shell is killed.
const WRAPPER: &str = r#"
dir=$1; shift
cg=outpost-test-$$
cleanup() {
    for root in $OUTPOST_CGROUP_ROOTS; do
        echo $$ > "$root/cgroup.procs"
        if [ -d "$root/$cg" ]; then find "$root/$cg" -depth -type d -exec rmdir {} +; fi
    done
    rm -rf "$dir"
}
for root in $OUTPOST_CGROUP_ROOTS; do
    mkdir "$root/$cg" && echo $$ > "$root/$cg/cgroup.procs" || { cleanup; exit 125; }
done
setpriv --pdeathsig TERM systemd-nspawn "$@" </dev/null &
nspawn=$!
trap 'kill -TERM $nspawn' TERM INT HUP
status=0
while kill -0 $nspawn 2>/dev/null; do wait $nspawn; status=$?; done
cleanup
exit $status
"#;

/// The booted container.
pub struct Container {
    /// The wrapper shell, parent of nspawn.
    wrapper: u32,
    /// PID 1 of the container, as this machine sees it.
    init: u32,
    /// nspawn's output, the container's console. Held open: the wrapper deletes the file when
    /// nspawn exits, and a failed boot still shows what it said.
    log: File,
    /// The host side of [`SHARED_DIR`].
    shared: PathBuf,
    /// Numbers the scratch directories.
    scratches: AtomicUsize,
}

/// Why there is no container.
enum Unavailable {
    /// This machine cannot run one.
    Skip(String),
    /// It should have worked and did not.
    Broken(String),
}

static SHARED: OnceLock<std::result::Result<Container, Unavailable>> = OnceLock::new();

/// The container of this test binary, booted by the first caller; `None` (with the reason
/// printed) on a machine that cannot run one, unless `OUTPOST_REQUIRE_CONTAINER=1`.
pub fn shared() -> Option<&'static Container> {
    match SHARED.get_or_init(start) {
        Ok(container) => Some(container),
        Err(Unavailable::Skip(why)) => {
            if std::env::var_os("OUTPOST_REQUIRE_CONTAINER").is_some_and(|v| v == "1") {
                panic!("OUTPOST_REQUIRE_CONTAINER=1 but no systemd container here: {why}");
            }
            eprintln!("skipped: no systemd container here: {why}");
            None
        }
        Err(Unavailable::Broken(why)) => panic!("the systemd container: {why}"),
    }
}

fn start() -> std::result::Result<Container, Unavailable> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Unavailable::Skip(
            "systemd-nspawn needs root (CI runs the tests as root)".into(),
        ));
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("timeout", "coreutils"),
    ] {
        if !on_path(tool) {
            return Err(Unavailable::Skip(format!(
                "no {tool} (apt-get install {package})"
            )));
        }
    }
    let cgroups = cgroup_roots().map_err(Unavailable::Skip)?;
    let rootfs = rootfs()?;
    boot(&rootfs, &cgroups).map_err(Unavailable::Broken)
}

/// Whether `tool` is an executable file in a directory of `PATH`.
fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool)).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// The cgroup hierarchies the wrapper moves itself into: the unified one alone on a cgroup v2
/// machine, the named `systemd` one and the unified one on a hybrid machine.
fn cgroup_roots() -> std::result::Result<Vec<PathBuf>, String> {
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

/// `target/container/rootfs`, built first when missing or made by another recipe.
fn rootfs() -> std::result::Result<PathBuf, Unavailable> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/container");
    let rootfs = dir.join("rootfs");
    let broken = |what: &str, e: std::io::Error| {
        Unavailable::Broken(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| broken("creating", e))?;
    let lock = File::create(dir.join("lock")).map_err(|e| broken("creating the lock in", e))?;
    // Held until this function returns: another test binary waits here while this one builds.
    lock.lock().map_err(|e| broken("locking", e))?;
    let recipe = RECIPE.join(" ");
    if std::fs::read_to_string(rootfs.join(RECIPE_STAMP)).is_ok_and(|made| made == recipe) {
        return Ok(rootfs);
    }
    if !on_path("debootstrap") {
        return Err(Unavailable::Skip(format!(
            "no debootstrap to build {} (apt-get install debootstrap)",
            rootfs.display()
        )));
    }
    build_rootfs(&dir, &rootfs, &recipe).map_err(Unavailable::Broken)?;
    Ok(rootfs)
}

/// Runs debootstrap into `rootfs.tmp` and renames it to `rootfs` (the caller holds the lock).
fn build_rootfs(dir: &Path, rootfs: &Path, recipe: &str) -> std::result::Result<(), String> {
    let tmp = dir.join("rootfs.tmp");
    let stale = dir.join("rootfs.stale");
    for leftover in [&tmp, &stale] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)
                .map_err(|e| format!("removing {}: {e}", leftover.display()))?;
        }
    }
    let log_path = dir.join("debootstrap.log");
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    eprintln!(
        "building the container rootfs {} with debootstrap, once (about a minute)",
        rootfs.display()
    );
    let started = Instant::now();
    let mut cmd = Command::new("debootstrap");
    cmd.args(RECIPE).arg(&tmp).arg(MIRROR);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let network = [
            "Failed getting release file",
            "Couldn't download",
            "Temporary failure resolving",
        ]
        .iter()
        .any(|sign| output.contains(sign));
        let hint = if network {
            format!(
                "\ndebootstrap could not download from {MIRROR}: building the rootfs needs \
                 the network, once (it is then reused from {})",
                rootfs.display()
            )
        } else {
            String::new()
        };
        return Err(format!(
            "{cmd:?} failed ({status}), full log in {}:\n{}{hint}",
            log_path.display(),
            tail(&output, 15)
        ));
    }
    // systemd would name the container after the machine that built it: use nspawn's name.
    let _ = std::fs::remove_file(tmp.join("etc/hostname"));
    std::fs::write(tmp.join(RECIPE_STAMP), recipe)
        .map_err(|e| format!("writing the recipe into {}: {e}", tmp.display()))?;
    if rootfs.exists() {
        std::fs::rename(rootfs, &stale)
            .map_err(|e| format!("moving the old {} aside: {e}", rootfs.display()))?;
    }
    std::fs::rename(&tmp, rootfs)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), rootfs.display()))?;
    if stale.exists() {
        // A container of another test binary may still run on it: failing here is fine, the
        // next build removes it.
        let _ = std::fs::remove_dir_all(&stale);
    }
    eprintln!("built {} in {:.0?}", rootfs.display(), started.elapsed());
    Ok(())
}

/// Starts nspawn from a thread that lives as long as the test binary and waits until systemd
/// inside has finished booting.
fn boot(rootfs: &Path, cgroups: &[PathBuf]) -> std::result::Result<Container, String> {
    let started = Instant::now();
    // Kept past this function: the wrapper removes it when the container has stopped.
    let dir = tempfile::Builder::new()
        .prefix("outpost-container-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?
        .keep();
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).map_err(|e| format!("creating {}: {e}", shared.display()))?;
    let log = dir.join("nspawn.log");
    let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("opening {} twice: {e}", log.display()))?;
    let console = File::open(&log).map_err(|e| format!("opening {}: {e}", log.display()))?;
    let bin_dir = Path::new(super::BIN)
        .parent()
        .expect("the outpost binary has a directory");
    let roots: Vec<String> = cgroups.iter().map(|r| r.display().to_string()).collect();

    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "TERM", "sh", "-c", WRAPPER, "outpost-test"])
        .arg(&dir)
        .args(["--register=no", "--keep-unit", "--volatile=overlay"])
        .args(["--private-network", "--hostname=outpost-test"])
        // nspawn keeps a directory per machine name under /run: one name per test binary.
        .arg(format!("--machine=outpost-test-{}", std::process::id()))
        .arg(format!("--bind-ro={}:{BIN_DIR}", bin_dir.display()))
        .arg(format!("--bind={}:{SHARED_DIR}", shared.display()))
        .arg("--directory")
        .arg(rootfs)
        .arg("--boot")
        .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        .env("OUTPOST_CGROUP_ROOTS", roots.join(" "))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let described = format!("{cmd:?}");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("systemd-container".into())
        .spawn(move || match cmd.spawn() {
            Err(e) => {
                let _ = sender.send(Err(e));
            }
            Ok(mut child) => {
                let _ = sender.send(Ok(child.id()));
                // The death signal goes to the wrapper when the thread that spawned it ends:
                // this thread ends only when the wrapper has exited or the process does.
                let _ = child.wait();
            }
        })
        .map_err(|e| format!("starting the thread that runs nspawn: {e}"))?;
    let wrapper = receiver
        .recv()
        .map_err(|e| format!("the nspawn thread ended without a word: {e}"))?
        .map_err(|e| format!("spawning {described}: {e}"))?;

    let mut container = Container {
        wrapper,
        init: 0,
        log: console,
        shared,
        scratches: AtomicUsize::new(0),
    };
    container.init = container
        .find_init(started + BOOT_TIMEOUT)
        .map_err(|e| format!("{e}; nspawn was {described}"))?;
    container.wait_until_running(started + BOOT_TIMEOUT)?;
    Ok(container)
}

impl Container {
    /// PID 1 of the container: the child of nspawn that became `systemd`.
    fn find_init(&self, deadline: Instant) -> std::result::Result<u32, String> {
        loop {
            if !alive(self.wrapper) {
                return Err(format!(
                    "nspawn exited while booting:\n{}",
                    self.console_tail()
                ));
            }
            let init = children(self.wrapper)
                .into_iter()
                .filter(|&pid| comm(pid) == "systemd-nspawn")
                .flat_map(children)
                .find(|&pid| comm(pid) == "systemd");
            if let Some(init) = init {
                return Ok(init);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no systemd started in the container within {BOOT_TIMEOUT:?}:\n{}",
                    self.console_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `systemctl is-system-running --wait` to say `running` or `degraded`; prints
    /// the failed units when degraded. Until systemd's bus is up, systemctl fails: it retries.
    fn wait_until_running(&self, deadline: Instant) -> std::result::Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs() + 1;
            let mut cmd = Command::new("timeout");
            cmd.arg(left.to_string())
                .arg("nsenter")
                .args(self.nsenter_args())
                .args(["systemctl", "is-system-running", "--wait"]);
            let out = cmd
                .env_clear()
                .env("PATH", PATH)
                .output()
                .map_err(|e| format!("running {cmd:?}: {e}"))?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            match state.as_str() {
                "running" => return Ok(()),
                "degraded" => {
                    let failed = self.exec(&["systemctl", "--failed", "--no-legend", "--plain"]);
                    eprintln!(
                        "the systemd container is degraded; failed units:\n{}",
                        String::from_utf8_lossy(&failed.stdout)
                    );
                    return Ok(());
                }
                _ => {}
            }
            if Instant::now() > deadline || !alive(self.wrapper) {
                return Err(format!(
                    "the container did not come up within {BOOT_TIMEOUT:?}: {cmd:?} said {state:?} \
                     ({}) {}\nconsole:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.console_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The arguments of `nsenter` that enter every namespace of the container, its root and
    /// working directory included.
    fn nsenter_args(&self) -> [String; 3] {
        ["-t".into(), self.init.to_string(), "-a".into()]
    }

    /// The command running `argv` inside, with an environment of only `PATH`.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(self.nsenter_args())
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` inside and returns what it did, whatever its exit status. Panics when it
    /// cannot be run at all, or when the container is gone.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let out = self
            .command(argv)
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?} in the container: spawning nsenter: {e}"));
        if !out.status.success() && !alive(self.init) {
            panic!(
                "running {argv:?}: the container is gone ({}); its console:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.console_tail()
            );
        }
        out
    }

    /// Runs `script` with `sh -c` inside.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// Runs the built `outpost` inside.
    pub fn outpost(&self, args: &[&str]) -> Output {
        let bin = format!("{BIN_DIR}/outpost");
        let argv: Vec<&str> = std::iter::once(bin.as_str())
            .chain(args.iter().copied())
            .collect();
        self.exec(&argv)
    }

    /// Runs `argv` inside; its stdout, trimmed, when it exits 0, otherwise an error with the
    /// command, its exit status and its stderr.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv);
        if !out.status.success() {
            return Err(format!(
                "{argv:?} in the container exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `script` with `sh -c` inside, as [`Container::run`].
    pub fn run_sh(&self, script: &str) -> Result<String> {
        self.run(&["sh", "-c", script])
    }

    /// The host side of the directory seen inside at [`SHARED_DIR`].
    pub fn shared_dir(&self) -> &Path {
        &self.shared
    }

    /// The path inside of `host_path`, which is in the shared directory.
    pub fn inside(&self, host_path: &Path) -> PathBuf {
        let rel = host_path.strip_prefix(&self.shared).unwrap_or_else(|_| {
            panic!(
                "{} is not in the shared directory {}",
                host_path.display(),
                self.shared.display()
            )
        });
        Path::new(SHARED_DIR).join(rel)
    }

    /// `systemctl show NAME` inside: ActiveState, SubState, Result, MainPID, NRestarts,
    /// UnitFileState and LoadState.
    pub fn unit(&self, name: &str) -> BTreeMap<String, String> {
        let shown = self
            .run(&[
                "systemctl",
                "show",
                name,
                "--property=ActiveState,SubState,Result,MainPID,NRestarts,UnitFileState,LoadState",
            ])
            .unwrap_or_else(|e| panic!("showing unit {name}: {e}"));
        shown
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A fresh directory in the shared one for one test, removed when dropped. Tests share the
    /// container and run at the same time: its [`Scratch::name`] (`label-N`, unique in this
    /// test binary) is also the way to name their units and state dirs apart.
    pub fn scratch(&self, label: &str) -> Scratch {
        assert!(
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "a scratch label is [a-z0-9-]+, usable in a unit name: {label:?}"
        );
        let n = self.scratches.fetch_add(1, Ordering::Relaxed);
        let name = format!("{label}-{n}");
        let host = self.shared.join(&name);
        std::fs::create_dir(&host)
            .unwrap_or_else(|e| panic!("creating scratch dir {}: {e}", host.display()));
        let inside = self.inside(&host);
        Scratch { name, host, inside }
    }

    /// The last lines of nspawn's output: the container's console.
    fn console_tail(&self) -> String {
        let len = self.log.metadata().map_or(0, |m| m.len());
        let from = len.saturating_sub(64 << 10);
        let mut bytes = vec![0; usize::try_from(len - from).expect("at most 64 KiB")];
        let read = self.log.read_at(&mut bytes, from).unwrap_or(0);
        tail(&String::from_utf8_lossy(&bytes[..read]), 40)
    }
}

/// One test's directory in the shared one (see [`Container::scratch`]).
pub struct Scratch {
    name: String,
    host: PathBuf,
    inside: PathBuf,
}

impl Scratch {
    /// `label-N`: unique among the tests of this binary.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory on this machine.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// The directory as seen inside the container.
    pub fn inside(&self) -> &Path {
        &self.inside
    }

    /// Writes `contents` to `rel` in the directory (parents created); returns the path inside.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.host.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(self.inside.join(rel))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host);
    }
}

/// The pids whose parent is `pid`, read from `/proc/*/stat`.
fn children(pid: u32) -> Vec<u32> {
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
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
