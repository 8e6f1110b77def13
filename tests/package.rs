//! The whole journey of the Debian package in a real system: built with `cargo deb` (from the
//! binary under test, man pages and completions generated from the CLI), installed with
//! `apt-get install ./...deb` in the shared systemd container, configured, started; a signed
//! bundle dropped in the spool is deployed; a stick is taken by `outpost-usb@.service`; an
//! upgrade keeps the state and an edited config; a purge removes the state.
//!
//! Needs the container and `cargo-deb` (`.ci/run` installs both); elsewhere it prints why it
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::docs::generator;
use crate::support::container;
use crate::support::{Fleet, Result, run};
use crate::usb::{LOOP, Stick};

const MANIFEST: &str = "[[file]]\npath = \"/etc/pkg-e2e.conf\"\nsource = \"pkg-e2e.conf\"\n";

/// Builds the package as `packaging/build-deb.sh` does, from the binary the tests run (the
/// dev profile: a release build would double the suite's time), with `version`.
fn build_deb(out: &Path, version: &str) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    generator::generate(&root.join("target/packaging"))?;
    run(Command::new("cargo")
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "--quiet"])
        .args(["--deb-version", version, "-o"])
        .arg(out)
        .current_dir(root))?;
    Ok(out.join(format!("outpost_{version}_amd64.deb")))
}

fn cargo_deb_missing() -> bool {
    let found = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason =
            "skipped: cargo-deb is missing (cargo install cargo-deb --locked; .ci/run does)";
        if std::env::var_os("OUTPOST_REQUIRE_CONTAINER").is_some_and(|v| v == "1") {
            panic!("{reason}");
        }
        eprintln!("{reason}");
    }
    !found
}

/// Waits until `check` passes, at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what}: not within {limit:?}").into())
}

#[test]
fn the_package_installs_runs_takes_a_stick_upgrades_and_purges() -> Result {
    let Some(ct) = container::shared() else {
        return Ok(());
    };
    if cargo_deb_missing() {
        return Ok(());
    }
    let fleet = Fleet::new_in(ct.shared_dir())?;
    let debs = fleet.path("debs");
    std::fs::create_dir(&debs)?;
    let first = ct.inside(&build_deb(&debs, "0.1.0-1")?);
    let second = ct.inside(&build_deb(&debs, "0.1.0-2")?);
    let sh = |script: &str| ct.run_sh(script);

    // Install: the binary, units, udev rule, docs, a private state dir; enabled, waiting for
    // its keys.
    sh(&format!(
        "apt-get install -y -q --no-install-recommends {} >/tmp/apt.log 2>&1 || {{ cat /tmp/apt.log; exit 1; }}",
        first.display()
    ))?;
    assert_eq!(sh("systemctl is-enabled outpost.service")?, "enabled");
    assert_eq!(sh("stat -c %a /var/lib/outpost")?, "700");
    for path in [
        "/usr/bin/outpost",
        "/usr/lib/systemd/system/outpost-usb@.service",
        "/usr/lib/udev/rules.d/90-outpost-usb.rules",
        "/usr/share/man/man1/outpost.1.gz",
        "/usr/share/man/man1/outpost-apply.1.gz",
        "/usr/share/bash-completion/completions/outpost",
        "/usr/share/zsh/vendor-completions/_outpost",
        "/usr/share/fish/vendor_completions.d/outpost.fish",
        "/usr/share/doc/outpost/config.example.toml",
    ] {
        sh(&format!("test -e {path}")).map_err(|e| format!("{path} is not installed: {e}"))?;
    }
    assert_eq!(
        sh("dpkg-query -W -f '${Conffiles}' outpost | awk '{print $1}'")?,
        "/etc/outpost/config.toml"
    );
    assert_eq!(
        sh("systemctl show -P ActiveState outpost.service")?,
        "inactive",
        "no keys yet: not started"
    );

    // Configure and start: active (running) only once READY=1 was sent after recovery.
    let keys = ct.inside(&fleet.path("allowed_signers"));
    sh(&format!(
        "cp {} /etc/outpost/allowed_signers",
        keys.display()
    ))?;
    let config = "[host]\nname = \"pkg-e2e\"\n\n[trust]\nallowed_signers = \"/etc/outpost/allowed_signers\"\n\n[apply]\nhealth_settle = \"1s\"\n# edited by the operator\n";
    sh(&format!(
        "printf '%s' '{config}' > /etc/outpost/config.toml"
    ))?;
    sh("systemctl start outpost.service")?;
    assert_eq!(
        sh("systemctl show -P ActiveState,SubState outpost.service")?,
        "active\nrunning"
    );
    let pid = sh("systemctl show -P MainPID outpost.service")?;

    // A signed bundle dropped in the spool is deployed at once.
    let (commit, bundle) = fleet.write_commit_and_bundle(&[
        ("outpost.toml", MANIFEST),
        ("pkg-e2e.conf", "from the spool\n"),
    ])?;
    let inside = ct.inside(&bundle).display().to_string();
    sh(&format!(
        "cp {inside}.sig /var/lib/outpost/inbox/ 2>/dev/null || {{ mkdir -p /var/lib/outpost/inbox && cp {inside}.sig /var/lib/outpost/inbox/; }}; cp {inside} /var/lib/outpost/inbox/"
    ))?;
    eventually(
        Duration::from_secs(60),
        "the spool bundle is deployed",
        || Ok(sh("cat /etc/pkg-e2e.conf 2>/dev/null || true")? == "from the spool"),
    )?;
    let status: serde_json::Value = serde_json::from_str(&sh("outpost status --json")?)?;
    assert_eq!(status["deployed"]["commit"], commit.as_str());

    // A stick, taken by outpost-usb@.service as the udev rule would start it. No udev runs
    // in the container, so no device unit appears: the unit's BindsTo= on it is left out.
    let stick_dir = fleet.path("stick");
    std::fs::create_dir_all(stick_dir.join("outpost"))?;
    let (newer, bundle) = fleet.write_commit_and_bundle(&[("pkg-e2e.conf", "from the stick\n")])?;
    for file in [
        bundle.clone(),
        PathBuf::from(format!("{}.sig", bundle.display())),
    ] {
        let name = file.file_name().ok_or("bundle name")?;
        std::fs::copy(&file, stick_dir.join("outpost").join(name))?;
    }
    let guard = LOOP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(stick) = Stick::ext4(&fleet, &stick_dir)? else {
        return Err("no loop device for the stick".into());
    };
    let dev = stick.device.trim_start_matches("/dev/").to_owned();
    let minor = dev.trim_start_matches("loop");
    sh(&format!(
        "test -e /dev/{dev} || mknod -m 600 /dev/{dev} b 7 {minor}; \
         sed -e '/^BindsTo=/d' -e 's/^After=dev-%i.device /After=/' /usr/lib/systemd/system/outpost-usb@.service > /etc/systemd/system/outpost-usb@.service; \
         systemctl daemon-reload; systemctl start outpost-usb@{dev}.service"
    ))?;
    assert_eq!(
        sh(&format!(
            "systemctl show -P Result outpost-usb@{dev}.service"
        ))?,
        "success"
    );
    eventually(
        Duration::from_secs(60),
        "the stick's commit is deployed",
        || Ok(sh("cat /etc/pkg-e2e.conf")? == "from the stick"),
    )?;
    let report: serde_json::Value =
        serde_json::from_str(&stick.read("/outpost/reports/pkg-e2e.json")?)?;
    assert_eq!(report["host"], "pkg-e2e");
    assert_eq!(report["trusted"]["commit"], newer.as_str());
    drop(stick);
    drop(guard);

    // Upgrade: state and the edited config kept, the daemon restarted.
    sh(&format!(
        "apt-get install -y -q --no-install-recommends {} >/tmp/apt.log 2>&1 || {{ cat /tmp/apt.log; exit 1; }}",
        second.display()
    ))?;
    assert_eq!(sh("dpkg-query -W -f '${Version}' outpost")?, "0.1.0-2");
    assert_eq!(sh("cat /etc/outpost/config.toml")?, config.trim_end());
    assert_eq!(
        sh("systemctl show -P ActiveState outpost.service")?,
        "active"
    );
    assert_ne!(
        sh("systemctl show -P MainPID outpost.service")?,
        pid,
        "restarted"
    );
    let status: serde_json::Value = serde_json::from_str(&sh("outpost status --json")?)?;
    assert_eq!(
        status["deployed"]["commit"],
        newer.as_str(),
        "the state is kept"
    );
    assert_eq!(sh("stat -c %a /var/lib/outpost")?, "700");

    // Remove keeps the state; purge removes it.
    sh("apt-get remove -y -q outpost >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }")?;
    assert_eq!(
        sh("systemctl show -P ActiveState outpost.service")?,
        "inactive"
    );
    sh("test -d /var/lib/outpost && test -e /etc/outpost/config.toml")?;
    sh("dpkg --purge outpost >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }")?;
    sh(
        "test ! -e /var/lib/outpost && test ! -e /etc/outpost/config.toml && test ! -e /usr/bin/outpost",
    )?;
    // The deployed file is the host's: the package does not own it.
    assert_eq!(sh("cat /etc/pkg-e2e.conf")?, "from the stick");
    Ok(())
}
