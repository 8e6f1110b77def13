//! `outpost usb DEVICE` against ext4 images on loop devices (root only: elsewhere each test
//! prints why it skipped). No udev runs here: the tests enter below the udev rule, as the
//! `outpost-usb@.service` unit would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::support::{Fleet, Result, run};

/// Loop devices are set up one test at a time.
pub(crate) static LOOP: Mutex<()> = Mutex::new(());

/// An image on a loop device, detached on drop.
pub(crate) struct Stick {
    image: PathBuf,
    pub(crate) device: String,
}

impl Stick {
    /// An ext4 image holding `content` (a directory), on a loop device; `None` when this
    /// machine cannot (not root, no loop devices), with the reason printed.
    pub(crate) fn ext4(fleet: &Fleet, content: &Path) -> Result<Option<Self>> {
        let image = fleet.path("stick.img");
        std::fs::File::create(&image)?.set_len(32 << 20)?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "STICK", "-d"])
            .arg(content)
            .arg(&image))?;
        Self::attach(image)
    }

    /// An image of zeros: no filesystem.
    fn blank(fleet: &Fleet) -> Result<Option<Self>> {
        let image = fleet.path("blank.img");
        std::fs::File::create(&image)?.set_len(8 << 20)?;
        Self::attach(image)
    }

    fn attach(image: PathBuf) -> Result<Option<Self>> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loop devices need root (CI runs this as root)");
            return Ok(None);
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()?;
        if !out.status.success() {
            eprintln!(
                "skipped: no loop device here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return Ok(None);
        }
        let device = String::from_utf8(out.stdout)?.trim().to_owned();
        Ok(Some(Self { image, device }))
    }

    /// A file on the image, read without mounting it (debugfs from e2fsprogs).
    pub(crate) fn read(&self, path: &str) -> Result<String> {
        run(Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(&self.image))
    }
}

impl Drop for Stick {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// A fleet with sticks mounted under its own directory, and a stick folder holding a signed
/// bundle of a fresh commit in `outpost/`; returns the tip.
fn fleet_and_stick_content() -> Result<(Fleet, PathBuf, String)> {
    let fleet = Fleet::new()?;
    fleet.write_config("\n[usb]\nmount_dir = \"mnt\"\n")?;
    fleet.commit(
        "outpost.toml",
        "[[file]]\npath = \"/etc/a.conf\"\nsource = \"a\"\n",
    )?;
    let tip = fleet.commit("a", "from the stick\n")?;
    let content = fleet.path("content");
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    fleet.move_bundle(&bundle, &content.join("outpost"))?;
    Ok((fleet, content, tip))
}

/// Whether anything is mounted below `dir`.
fn mounted_below(dir: &Path) -> Result<bool> {
    let dir = dir.to_string_lossy().into_owned();
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&dir))))
}

#[test]
fn a_plugged_stick_is_imported_reported_and_unmounted() -> Result {
    let _one = LOOP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (fleet, content, tip) = fleet_and_stick_content()?;
    let Some(stick) = Stick::ext4(&fleet, &content)? else {
        return Ok(());
    };
    let run_ = fleet.outpost(&["usb", &stick.device, "--apply"])?;
    assert_eq!(run_.code, 0, "{}{}", run_.stdout, run_.stderr);
    assert!(run_.stdout.starts_with("accepted "), "{}", run_.stdout);
    assert!(run_.stderr.contains("report written to"), "{}", run_.stderr);
    assert_eq!(fleet.trusted()?, Some(tip.clone()));
    assert_eq!(fleet.deployed()?, Some(tip.clone()), "--apply deploys it");
    assert!(
        !mounted_below(&fleet.path("mnt"))?,
        "the stick stayed mounted"
    );
    let report: serde_json::Value =
        serde_json::from_str(&stick.read("/outpost/reports/test-host.json")?)?;
    assert_eq!(report["trusted"]["commit"].as_str(), Some(tip.as_str()));
    let first_written = report["written_at"].clone();

    // A second plug of the same stick: a no-op that refreshes the report.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = fleet.outpost(&["usb", &stick.device])?;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("already imported"),
        "{}",
        again.stdout
    );
    let report: serde_json::Value =
        serde_json::from_str(&stick.read("/outpost/reports/test-host.json")?)?;
    assert_ne!(report["written_at"], first_written);
    assert_eq!(report["deployed"]["commit"].as_str(), Some(tip.as_str()));
    assert!(!mounted_below(&fleet.path("mnt"))?);
    Ok(())
}

#[test]
fn a_device_without_a_filesystem_is_refused_clearly() -> Result {
    let _one = LOOP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fleet = Fleet::new()?;
    fleet.write_config("\n[usb]\nmount_dir = \"mnt\"\n")?;
    let Some(stick) = Stick::blank(&fleet)? else {
        return Ok(());
    };
    let run_ = fleet.outpost(&["usb", &stick.device])?;
    assert_eq!(run_.code, 1);
    assert!(
        run_.stderr.starts_with(&format!(
            "outpost: error: {} holds no filesystem outpost can mount (tried ",
            stick.device
        )),
        "{}",
        run_.stderr
    );
    assert!(!mounted_below(&fleet.path("mnt"))?);
    Ok(())
}

#[test]
fn a_device_mounted_elsewhere_is_refused() -> Result {
    let _one = LOOP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (fleet, content, _) = fleet_and_stick_content()?;
    let Some(stick) = Stick::ext4(&fleet, &content)? else {
        return Ok(());
    };
    let elsewhere = fleet.path("elsewhere");
    std::fs::create_dir(&elsewhere)?;
    run(Command::new("mount")
        .args(["-o", "ro", &stick.device])
        .arg(&elsewhere))?;
    let run_ = fleet.outpost(&["usb", &stick.device]);
    let _ = Command::new("umount").arg(&elsewhere).status();
    let run_ = run_?;
    assert_eq!(run_.code, 1);
    assert_eq!(
        run_.stderr.trim_end(),
        format!(
            "outpost: error: {} is already mounted at {}; unmount it first, or run `outpost import {} --report`",
            stick.device,
            elsewhere.display(),
            elsewhere.display()
        )
    );
    assert_eq!(fleet.trusted()?, None);
    Ok(())
}

#[test]
fn a_path_that_is_not_a_block_device_is_refused() -> Result {
    let fleet = Fleet::new()?;
    let file = fleet.path("not-a-device");
    std::fs::write(&file, "x")?;
    let run_ = fleet.outpost_paths("usb", &[&file])?;
    assert_eq!(run_.code, 1);
    assert_eq!(
        run_.stderr.trim_end(),
        format!(
            "outpost: error: {} is not a block device; give the stick's device, e.g. /dev/sdb1",
            file.display()
        )
    );
    Ok(())
}

#[test]
fn the_usb_unit_and_udev_rule_are_well_formed() -> Result {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let rule = std::fs::read_to_string(root.join("90-outpost-usb.rules"))?;
    let lines: Vec<&str> = rule
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1, "{rule}");
    for key in [
        "ACTION==\"add\"",
        "SUBSYSTEM==\"block\"",
        "ENV{ID_BUS}==\"usb\"",
        "ENV{ID_FS_USAGE}==\"filesystem\"",
        "TAG+=\"systemd\"",
        "ENV{SYSTEMD_WANTS}+=\"outpost-usb@%k.service\"",
    ] {
        assert!(
            lines[0].split(", ").any(|k| k == key),
            "the rule lacks {key}"
        );
    }
    let unit = std::fs::read_to_string(root.join("outpost-usb@.service"))?;
    assert!(unit.contains("ExecStart=/usr/bin/outpost usb /dev/%I"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped systemd-analyze: not installed (.ci/run installs systemd)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("outpost-usb@.service"),
        unit.replace("/usr/bin/outpost", crate::support::BIN),
    )?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("outpost-usb@sdb1.service"))
        .output()?;
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
