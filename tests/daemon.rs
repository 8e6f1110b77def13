//! `outpost daemon` from the built binary: sd_notify on a socket the test listens on, the spool,
//! the reconcile timer, SIGHUP and SIGTERM, the metrics file.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Fleet, Result};

const MANIFEST: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"files/app.conf\"\n";

/// A running daemon with a `NOTIFY_SOCKET` of the test's own, read all the time by a thread
/// as systemd would (a full socket would block the daemon); SIGTERM and wait on drop.
struct Daemon {
    child: Child,
    /// Every notify message received so far, in order.
    said: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _socket_dir: tempfile::TempDir,
}

impl Daemon {
    fn start(fleet: &Fleet) -> Result<Self> {
        let socket_dir = tempfile::tempdir()?;
        let socket = socket_dir.path().join("notify");
        let notify = UnixDatagram::bind(&socket)?;
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = said.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends when the socket's directory is removed with the test.
            while let Ok(n) = notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(message);
            }
        });
        let log = std::fs::File::create(fleet.path("daemon.log"))?;
        let child = Command::new(BIN)
            .arg("--config")
            .arg(fleet.config())
            .args(["-v", "daemon"])
            .current_dir(fleet.dir.path())
            .env("NOTIFY_SOCKET", &socket)
            .env_remove("OUTPOST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            said,
            _socket_dir: socket_dir,
        })
    }

    /// Starts the daemon and waits for its `READY=1`.
    fn ready(fleet: &Fleet) -> Result<Self> {
        let mut daemon = Self::start(fleet)?;
        daemon.wait_for("READY=1", Duration::from_secs(20))?;
        Ok(daemon)
    }

    /// Waits up to `limit` for a notify message with a line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .said
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|m| has_line(m, prefix))
                .cloned();
            if let Some(found) = found {
                return Ok(found);
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the daemon exited with {status}").into());
            }
            if Instant::now() > deadline {
                let said = self.said.lock().map(|s| s.clone()).unwrap_or_default();
                return Err(format!("no {prefix:?} within {limit:?}; got {said:?}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) -> Result {
        let pid = self.child.id().to_string();
        crate::support::run(Command::new("kill").args([name, &pid]))?;
        Ok(())
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.signal("-TERM")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err("the daemon did not stop on SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_line(message: &str, prefix: &str) -> bool {
    message.lines().any(|l| l.starts_with(prefix))
}

/// Polls `check` until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// A fleet with a config for the daemon: short timers, a metrics file.
fn daemon_fleet() -> Result<Fleet> {
    let fleet = Fleet::new()?;
    // The test config puts [trust] last: its keys come first, then the daemon's sections.
    fleet.write_config("\n[metrics]\ntextfile = \"metrics/outpost.prom\"\n")?;
    let text = std::fs::read_to_string(fleet.config())?
        .replace("[apply]\n", "[apply]\ninterval = \"1s\"\n");
    std::fs::write(fleet.config(), text)?;
    std::fs::create_dir_all(fleet.path("metrics"))?;
    Ok(fleet)
}

fn spool(fleet: &Fleet) -> PathBuf {
    fleet.state().join("inbox")
}

/// Commits `content` as the app config and bundles it (not imported): returns (commit, bundle).
fn bundle_of(fleet: &Fleet, content: &str, name: &str) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(fleet.repo().join("files"))?;
    std::fs::write(fleet.repo().join("outpost.toml"), MANIFEST)?;
    let commit = fleet.commit("files/app.conf", content)?;
    Ok((commit, fleet.bundle(name, &["main"])?))
}

/// Moves `file` (and `file.sig` when `with_sig`) into `dir`, as a finished transfer would.
fn drop_into(dir: &Path, file: &Path, with_sig: bool) -> Result {
    let name = file.file_name().ok_or("no name")?;
    std::fs::rename(file, dir.join(name))?;
    if with_sig {
        drop_sig(dir, file)?;
    }
    Ok(())
}

fn drop_sig(dir: &Path, file: &Path) -> Result {
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    let sig = PathBuf::from(sig);
    std::fs::rename(&sig, dir.join(sig.file_name().ok_or("no name")?))?;
    Ok(())
}

fn files_in(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    Ok(names)
}

#[test]
fn ready_after_recovery_then_a_spool_bundle_is_applied_at_once() -> Result {
    let fleet = daemon_fleet()?;
    let mut daemon = Daemon::ready(&fleet)?;
    let (commit, bundle) = bundle_of(&fleet, "v1\n", "site.bundle")?;
    let dropped = Instant::now();
    drop_into(&spool(&fleet), &bundle, true)?;
    let applied = eventually(Duration::from_secs(20), || {
        Ok(std::fs::read_to_string(fleet.on_host("/etc/app.conf")).is_ok_and(|c| c == "v1\n"))
    })?;
    assert!(applied, "the spool bundle was not applied");
    eprintln!("spool drop to host applied: {:?}", dropped.elapsed());
    assert_eq!(fleet.deployed()?, Some(commit));
    // The bundle left the spool for done/, with its verdict.
    assert!(eventually(Duration::from_secs(5), || Ok(files_in(
        &spool(&fleet)
    )?
    .is_empty()))?);
    let done = files_in(&fleet.state().join("done"))?;
    assert_eq!(done.len(), 3, "{done:?}");
    let verdict = done
        .iter()
        .find(|n| n.ends_with(".verdict"))
        .ok_or("no verdict")?;
    let verdict = std::fs::read_to_string(fleet.state().join("done").join(verdict))?;
    assert!(verdict.contains("\"verdict\":\"accepted\""), "{verdict}");
    let status = daemon.wait_for("STATUS=spool: 1 taken", Duration::from_secs(5))?;
    assert!(status.contains("apply"), "{status}");
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn a_bundle_waits_for_its_sig_and_status_says_so() -> Result {
    let fleet = daemon_fleet()?;
    let daemon = Daemon::ready(&fleet)?;
    let (commit, bundle) = bundle_of(&fleet, "v1\n", "late.bundle")?;
    drop_into(&spool(&fleet), &bundle, false)?;
    // Two rescans later it is still waiting, and status shows why.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(files_in(&spool(&fleet))?, ["late.bundle"]);
    let status = fleet.status()?;
    assert_eq!(status["spool"][0]["waiting_for"], "its .sig");
    let human = fleet.outpost(&["status"])?;
    assert!(
        human.stdout.contains("late.bundle  waiting for its .sig"),
        "{}",
        human.stdout
    );
    assert_eq!(fleet.deployed()?, None);
    drop_sig(&spool(&fleet), &bundle)?;
    assert!(eventually(Duration::from_secs(20), || Ok(fleet
        .deployed()?
        == Some(commit.clone())))?);
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn spool_symlinks_and_fifos_are_refused_and_filed() -> Result {
    let fleet = daemon_fleet()?;
    let daemon = Daemon::ready(&fleet)?;
    let (_, bundle) = bundle_of(&fleet, "v1\n", "real.bundle")?;
    std::os::unix::fs::symlink(&bundle, spool(&fleet).join("link.bundle"))?;
    crate::support::run(Command::new("mkfifo").arg(spool(&fleet).join("pipe.bundle")))?;
    let filed = eventually(Duration::from_secs(20), || {
        Ok(files_in(&fleet.state().join("refused"))?.len() == 4)
    })?;
    assert!(filed, "{:?}", files_in(&fleet.state().join("refused"))?);
    let refused = files_in(&fleet.state().join("refused"))?;
    assert!(
        refused.iter().any(|n| n.ends_with("-link.bundle")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|n| n.ends_with("-pipe.bundle")),
        "{refused:?}"
    );
    assert_eq!(fleet.trusted()?, None);
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn drift_is_repaired_on_the_reconcile_timer_and_metrics_are_written() -> Result {
    let fleet = daemon_fleet()?;
    fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "v1\n")])?;
    let daemon = Daemon::ready(&fleet)?;
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v1\n"
    );
    std::fs::write(fleet.on_host("/etc/app.conf"), "edited by hand\n")?;
    let repaired = eventually(Duration::from_secs(15), || {
        Ok(std::fs::read_to_string(fleet.on_host("/etc/app.conf"))? == "v1\n")
    })?;
    assert!(repaired, "drift was not repaired");
    let metrics = std::fs::read_to_string(fleet.path("metrics/outpost.prom"))?;
    let deployed = fleet.deployed()?.ok_or("nothing deployed")?;
    assert!(
        metrics.contains(&format!("outpost_deployed_info{{commit=\"{deployed}\",")),
        "{metrics}"
    );
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').ok_or("no value")?;
        value.parse::<f64>()?;
    }
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() -> Result {
    let fleet = daemon_fleet()?;
    let mut daemon = Daemon::ready(&fleet)?;
    let good = std::fs::read_to_string(fleet.config())?;
    std::fs::write(fleet.config(), format!("{good}\nnot toml at all [[[\n"))?;
    daemon.signal("-HUP")?;
    daemon.wait_for("RELOADING=1", Duration::from_secs(10))?;
    let logged = eventually(Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(fleet.path("daemon.log"))?
            .contains("the new config is broken; keeping the old one"))
    })?;
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(fleet.path("daemon.log"))?
    );
    // Still working with the old config (the file is put back for the CLI's sake only: the
    // daemon reads it on SIGHUP alone).
    std::fs::write(fleet.config(), good)?;
    let (commit, bundle) = bundle_of(&fleet, "v1\n", "after.bundle")?;
    drop_into(&spool(&fleet), &bundle, true)?;
    assert!(eventually(Duration::from_secs(20), || Ok(fleet
        .deployed()?
        == Some(commit.clone())))?);
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn the_cli_works_beside_the_daemon_and_sigterm_exits_zero() -> Result {
    let fleet = daemon_fleet()?;
    fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "v1\n")])?;
    let daemon = Daemon::ready(&fleet)?;
    for _ in 0..3 {
        let run = fleet.outpost(&["apply"])?;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let status = daemon.stop()?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify() -> Result {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed (.ci/run installs systemd)");
        return Ok(());
    };
    assert!(found.status.success());
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/outpost.service"),
    )?;
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "After=network-online.target",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/bin/outpost daemon",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    assert!(!unit.contains("Requires=network-online.target"));
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outpost.service");
    std::fs::write(&path, unit.replace("/usr/bin/outpost", BIN))?;
    // The man page arrives with the package; everything else is checked.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()?;
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn ready_only_after_an_interrupted_deployment_was_finished() -> Result {
    let fleet = daemon_fleet()?;
    std::fs::create_dir_all(fleet.repo().join("files"))?;
    for i in 0..20 {
        std::fs::write(
            fleet.repo().join(format!("files/{i}.conf")),
            format!("{i}\n"),
        )?;
    }
    let manifest: String = (0..20)
        .map(|i| format!("[[file]]\npath = \"/etc/app/{i}.conf\"\nsource = \"files/{i}.conf\"\n"))
        .collect();
    let commit = fleet.publish(&[("outpost.toml", &manifest)])?;
    // A deployment that dies after five steps, as a power cut would leave it.
    let crashed = fleet
        .command(&["apply"])
        .env("OUTPOST_FAULT_AFTER_STEPS", "5")
        .output()?;
    assert!(!crashed.status.success());
    assert_eq!(fleet.deployed()?, None);
    let daemon = Daemon::ready(&fleet)?;
    // By READY=1 the journalled deployment was finished.
    assert_eq!(fleet.deployed()?, Some(commit));
    for i in 0..20 {
        assert_eq!(
            std::fs::read_to_string(fleet.on_host(&format!("/etc/app/{i}.conf")))?,
            format!("{i}\n")
        );
    }
    assert!(daemon.stop()?.success());
    Ok(())
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(") ").ok_or("no stat")?.1;
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

#[test]
fn a_sig_that_never_arrives_costs_no_cpu() -> Result {
    let fleet = daemon_fleet()?;
    let daemon = Daemon::ready(&fleet)?;
    let (_, bundle) = bundle_of(&fleet, "v1\n", "lonely.bundle")?;
    drop_into(&spool(&fleet), &bundle, false)?;
    let before = cpu_seconds(daemon.child.id())?;
    std::thread::sleep(Duration::from_secs(6));
    let used = cpu_seconds(daemon.child.id())? - before;
    assert!(used < 0.5, "the daemon used {used} s of CPU while waiting");
    assert_eq!(files_in(&spool(&fleet))?, ["lonely.bundle"]);
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn a_spool_file_that_grows_forever_is_refused_at_the_size_cap() -> Result {
    let fleet = daemon_fleet()?;
    let text = std::fs::read_to_string(fleet.config())?;
    std::fs::write(
        fleet.config(),
        text.replace(
            "[trust]\n",
            "[source]\nmax_bundle_size = \"64KiB\"\n\n[trust]\n",
        ),
    )?;
    let daemon = Daemon::ready(&fleet)?;
    let grow = spool(&fleet).join("endless.bundle");
    std::fs::write(spool(&fleet).join("endless.bundle.sig"), "x")?;
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("while :; do head -c 4096 /dev/zero; sleep 0.05; done > \"$0\"")
        .arg(&grow)
        .spawn()?;
    let refused = eventually(Duration::from_secs(30), || {
        Ok(files_in(&fleet.state().join("refused"))?
            .iter()
            .any(|n| n.ends_with("-endless.bundle.verdict")))
    });
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(refused?, "the growing file was not refused");
    let refused = files_in(&fleet.state().join("refused"))?;
    let verdict = refused
        .iter()
        .find(|n| n.ends_with(".verdict"))
        .ok_or("no verdict")?;
    let verdict = std::fs::read_to_string(fleet.state().join("refused").join(verdict))?;
    assert!(
        verdict.contains("more than source.max_bundle_size (65536 bytes)"),
        "{verdict}"
    );
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn a_commit_imported_by_another_process_is_applied_at_once() -> Result {
    let fleet = daemon_fleet()?;
    // No reconcile tick in the test's lifetime: only the import can trigger the apply.
    let text =
        std::fs::read_to_string(fleet.config())?.replace("interval = \"1s\"", "interval = \"1h\"");
    std::fs::write(fleet.config(), text)?;
    let daemon = Daemon::ready(&fleet)?;
    let (commit, bundle) = bundle_of(&fleet, "from a stick\n", "stick.bundle")?;
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let applied = eventually(Duration::from_secs(15), || {
        Ok(std::fs::read_to_string(fleet.on_host("/etc/app.conf"))
            .is_ok_and(|c| c == "from a stick\n"))
    })?;
    assert!(applied, "the daemon did not apply the imported commit");
    assert_eq!(fleet.deployed()?, Some(commit));
    assert!(daemon.stop()?.success());
    Ok(())
}

/// A bare copy of the publisher's repository served by a `git daemon` on 127.0.0.1, with the
/// daemon's config pointing `source.url` at it and syncing every second.
fn upstream_fleet() -> Result<(Fleet, PathBuf, crate::sync::GitDaemon)> {
    let fleet = daemon_fleet()?;
    std::fs::create_dir_all(fleet.repo().join("files"))?;
    std::fs::write(fleet.repo().join("outpost.toml"), MANIFEST)?;
    fleet.commit("files/app.conf", "from upstream 1\n")?;
    let bare = fleet.path("served/fleet.git");
    crate::support::run(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(fleet.repo())
            .arg(&bare),
    )?;
    let server = crate::sync::GitDaemon::start(&fleet.path("served"))?;
    let text = std::fs::read_to_string(fleet.config())?.replace(
        "[trust]\n",
        &format!(
            "[source]\nurl = \"{}\"\ninterval = \"1s\"\n\n[trust]\n",
            server.url("fleet.git")
        ),
    );
    std::fs::write(fleet.config(), text)?;
    Ok((fleet, bare, server))
}

fn host_says(fleet: &Fleet, content: &str) -> bool {
    std::fs::read_to_string(fleet.on_host("/etc/app.conf")).is_ok_and(|c| c == content)
}

#[test]
fn the_daemon_follows_upstream_and_keeps_working_while_it_is_gone() -> Result {
    let (fleet, bare, _server) = upstream_fleet()?;
    let daemon = Daemon::ready(&fleet)?;
    assert!(
        eventually(Duration::from_secs(20), || Ok(host_says(
            &fleet,
            "from upstream 1\n"
        )))?,
        "the first upstream commit was not deployed"
    );
    // A pushed signed commit arrives by itself.
    fleet.commit("files/app.conf", "from upstream 2\n")?;
    fleet.git_run(&["push", "-q", &bare.display().to_string(), "main"])?;
    assert!(
        eventually(Duration::from_secs(20), || Ok(host_says(
            &fleet,
            "from upstream 2\n"
        )))?,
        "the pushed commit was not deployed"
    );
    // An unsigned one is refused and recorded; the host stays.
    fleet.commit_as("files/app.conf", "unsigned\n", None)?;
    fleet.git_run(&["push", "-q", &bare.display().to_string(), "main"])?;
    let refused = eventually(Duration::from_secs(20), || {
        Ok(fleet.status()?["sync"]["last_error"]["outcome"] == "refused")
    })?;
    assert!(refused, "{}", fleet.status()?["sync"]);
    assert!(host_says(&fleet, "from upstream 2\n"));
    fleet.git_run(&["reset", "-q", "--hard", "HEAD~1"])?;
    // The upstream goes away: drift is still repaired and the spool still taken.
    std::fs::rename(&bare, fleet.path("served/away.git"))?;
    let failed = eventually(Duration::from_secs(20), || {
        Ok(fleet.status()?["sync"]["last_error"]["outcome"] == "failed")
    })?;
    assert!(failed, "{}", fleet.status()?["sync"]);
    std::fs::write(fleet.on_host("/etc/app.conf"), "edited\n")?;
    assert!(eventually(Duration::from_secs(20), || Ok(host_says(
        &fleet,
        "from upstream 2\n"
    )))?);
    let (_, bundle) = bundle_of(&fleet, "from a bundle\n", "offline.bundle")?;
    drop_into(&spool(&fleet), &bundle, true)?;
    assert!(eventually(Duration::from_secs(20), || Ok(host_says(
        &fleet,
        "from a bundle\n"
    )))?);
    // It comes back with a newer commit: the daemon catches up.
    std::fs::rename(fleet.path("served/away.git"), &bare)?;
    fleet.commit("files/app.conf", "from upstream 3\n")?;
    fleet.git_run(&["push", "-q", "--force", &bare.display().to_string(), "main"])?;
    assert!(
        eventually(Duration::from_secs(120), || Ok(host_says(
            &fleet,
            "from upstream 3\n"
        )))?,
        "the daemon did not catch up: {}\n{}",
        fleet.status()?["sync"],
        std::fs::read_to_string(fleet.path("daemon.log"))?
    );
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn sigterm_mid_apply_finishes_the_step_then_exits_zero() -> Result {
    let fleet = daemon_fleet()?;
    let files: Vec<(String, String)> = (0..1500)
        .map(|i| (format!("files/tree/{i}.txt"), format!("file {i}\n")))
        .collect();
    let mut entries: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let manifest = "[[tree]]\npath = \"/opt/tree\"\nsource = \"files/tree\"\n";
    entries.push(("outpost.toml", manifest));
    let commit = fleet.publish(&entries)?;
    // The daemon's first step deploys the commit; SIGTERM arrives while it runs.
    let daemon = Daemon::start(&fleet)?;
    let running = eventually(Duration::from_secs(20), || {
        Ok(fleet.status()?["last_deployment"]["result"] == "running")
    })?;
    assert!(running, "the deployment was never seen running");
    let status = daemon.stop()?;
    assert!(status.success(), "{status}");
    assert_eq!(fleet.deployed()?, Some(commit));
    assert_eq!(std::fs::read_dir(fleet.on_host("/opt/tree"))?.count(), 1500);
    Ok(())
}
