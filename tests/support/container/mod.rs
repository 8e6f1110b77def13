//! One Debian container with a real systemd, booted once per test binary and shared by every
//! test that asks for it: units are started there, never on the machine running the tests.
//!
//! * Rootfs ([`rootfs`]): `debootstrap --variant=minbase` into `target/container/rootfs`, built
//!   once under a lock and reused by every later run.
//! * Boot: `systemd-nspawn --boot --volatile=overlay` (the rootfs stays untouched: every change
//!   lives in a tmpfs and is gone at poweroff), a private network, the directory of the built
//!   `outpost` read-only at [`BIN_DIR`] and a fresh temp dir read-write at [`SHARED_DIR`],
//!   through which tests hand files in.
//! * Talk: `nsenter -t PID1 -a`. `machinectl`, `systemctl -M` and `systemd-run --machine` do
//!   not work on the CI machines (no systemd as their PID 1).
//! * Stop: nspawn runs under a small `sh` (the [`WRAPPER`]) that moves itself into cgroups of its
//!   own first (the test binary is multi-threaded, and moving it would move all of it). The
//!   wrapper is spawned through `setpriv --pdeathsig TERM` by a thread that lives as long as the
//!   test binary: when the binary exits, however it exits, the wrapper gets SIGTERM, hands it to
//!   nspawn (an orderly poweroff, 0.2 s), waits for it, then removes its cgroups and temp dir.
//!   A container whose wrapper was SIGKILLed too is stopped, and its cgroups and temp dir
//!   removed, by the next test binary ([`host::sweep_orphans`], [`host::sweep_leftovers`]).
//!
//! [`shared`] skips (prints why and returns `None`) on a machine that cannot do this: not root,
//! a tool missing, no writable cgroup hierarchy. `OUTPOST_REQUIRE_CONTAINER=1` (set by CI) turns
//! a skip into a panic, so the container tests cannot silently skip there. Anything failing
//! after those checks (debootstrap, the boot) is a panic in every test that asks.

mod host;
mod rootfs;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Result;

/// The one PATH of every command run inside.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the directory holding the built `outpost` is seen inside.
pub const BIN_DIR: &str = "/opt/outpost-bin";
/// Where the shared directory is seen inside.
pub const SHARED_DIR: &str = "/outpost-test";

/// Time allowed from starting nspawn to `systemctl is-system-running` answering.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs nspawn (the rest of the arguments) in cgroups of its own and cleans up after it.
/// `$1` is the temp dir to remove at the end; `$OUTPOST_CGROUP_ROOTS` the cgroup hierarchies.
/// A trapped signal interrupts `wait`, hence the loop: it waits until nspawn is really gone.
/// nspawn gets a death signal of its own too, so it powers off if this shell is killed.
const WRAPPER: &str = r#"
dir=$1; shift
cg=$OUTPOST_CGROUP_PREFIX$$
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
echo $$ > "$dir/wrapper.pid"
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
        if !host::on_path(tool) {
            return Err(Unavailable::Skip(format!(
                "no {tool} (apt-get install {package})"
            )));
        }
    }
    let cgroups = host::cgroup_roots().map_err(Unavailable::Skip)?;
    host::sweep_orphans(&cgroups);
    host::sweep_leftovers();
    let rootfs = rootfs::ensure()?;
    let started = Instant::now();
    let container = boot(&rootfs, &cgroups).map_err(Unavailable::Broken)?;
    eprintln!("booted the systemd container in {:.1?}", started.elapsed());
    Ok(container)
}

/// Starts nspawn and waits until systemd inside has finished booting.
fn boot(rootfs: &Path, cgroups: &[PathBuf]) -> std::result::Result<Container, String> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    // Kept past this function: the wrapper removes it when the container has stopped.
    let dir = tempfile::Builder::new()
        .prefix(host::TEMP_PREFIX)
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
        .arg(format!(
            "--machine={}{}",
            host::MACHINE_PREFIX,
            std::process::id()
        ))
        .arg(format!("--bind-ro={}:{BIN_DIR}", bin_dir.display()))
        .arg(format!("--bind={}:{SHARED_DIR}", shared.display()))
        .arg("--directory")
        .arg(rootfs)
        .arg("--boot")
        .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        .env("OUTPOST_CGROUP_ROOTS", roots.join(" "))
        .env("OUTPOST_CGROUP_PREFIX", host::CGROUP_PREFIX)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let described = format!("{cmd:?}");
    let wrapper = spawn_for_good(cmd).map_err(|e| format!("spawning {described}: {e}"))?;
    let mut container = Container {
        wrapper,
        init: 0,
        log: console,
        shared,
        scratches: AtomicUsize::new(0),
    };
    container.init = container
        .find_init(deadline)
        .map_err(|e| format!("{e}\nnspawn was {described}"))?;
    container.wait_until_running(deadline)?;
    Ok(container)
}

/// Spawns `cmd` from a thread of its own that lives until the child exits; returns its pid.
/// The death signal of `setpriv --pdeathsig` goes out when the thread that spawned the child
/// ends, not the process: a test thread would end with its test.
fn spawn_for_good(mut cmd: Command) -> std::io::Result<u32> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("systemd-container".into())
        .spawn(move || match cmd.spawn() {
            Err(e) => {
                let _ = sender.send(Err(e));
            }
            Ok(mut child) => {
                let _ = sender.send(Ok(child.id()));
                let _ = child.wait();
            }
        })?;
    receiver
        .recv()
        .map_err(|_| std::io::Error::other("the spawning thread ended without a word"))?
}

impl Container {
    /// PID 1 of the container: the child of nspawn that became `systemd`.
    fn find_init(&self, deadline: Instant) -> std::result::Result<u32, String> {
        loop {
            if !host::alive(self.wrapper) {
                return Err(format!(
                    "nspawn exited while booting:\n{}",
                    self.console_tail()
                ));
            }
            let init = host::children(self.wrapper)
                .into_iter()
                .filter(|&pid| host::comm(pid) == "systemd-nspawn")
                .flat_map(host::children)
                .find(|&pid| host::comm(pid) == "systemd");
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
            if Instant::now() > deadline || !host::alive(self.wrapper) {
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
        if !out.status.success() && !host::alive(self.init) {
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
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
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

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
