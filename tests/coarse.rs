//! Drift on filesystems with whole-second timestamps (ext4 with 128-byte inodes, many SD-card
//! images): a same-size edit in the same second as the apply keeps every stat field, and must
//! still be seen.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Fleet, Result};

/// Unmounts the loop-mounted image when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// An ext4 image made with 128-byte inodes (no sub-second timestamps), loop-mounted at `dir`;
/// `None`, with the reason printed, when that cannot be done here.
fn coarse_ext4(fleet: &Fleet, dir: &std::path::Path) -> Result<Option<Unmount>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to loop-mount an ext4 image");
        return Ok(None);
    }
    let image = fleet.path("coarse.img");
    std::fs::File::create(&image)?.set_len(16 << 20)?;
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-I", "128"])
        .arg(&image)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: mkfs.ext4 -I 128 failed: {made:?}");
        return Ok(None);
    }
    std::fs::create_dir_all(dir)?;
    let mounted = Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&image)
        .arg(dir)
        .output()?;
    if !mounted.status.success() {
        eprintln!(
            "skipped: cannot loop-mount the image: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        return Ok(None);
    }
    let guard = Unmount(dir.to_owned());
    let probe = dir.join("probe");
    std::fs::write(&probe, "")?;
    let nsec = std::fs::metadata(&probe)?.mtime_nsec();
    std::fs::remove_file(&probe)?;
    if nsec != 0 {
        eprintln!("skipped: the image has sub-second timestamps after all");
        return Ok(None);
    }
    Ok(Some(guard))
}

/// Sleeps until 300 ms into the wall clock's next second: the file is written, and its stat
/// data recorded, well after the second began (past any sub-second racy window) and edited
/// before it ends.
fn into_a_second() -> Result {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let rest = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    std::thread::sleep(rest + Duration::from_millis(300));
    Ok(())
}

#[test]
fn a_same_size_edit_in_the_same_second_is_seen_on_a_coarse_filesystem() -> Result {
    let fleet = Fleet::new()?;
    let dir = fleet.on_host("/srv/coarse");
    let Some(_unmount) = coarse_ext4(&fleet, &dir)? else {
        return Ok(());
    };
    let commit = fleet.publish(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/srv/coarse/a.conf\"\nsource = \"a.conf\"\n",
        ),
        ("a.conf", "aaaa\n"),
    ])?;
    let conf = dir.join("a.conf");
    // The edit must land in the second the apply wrote the file; try again if it did not.
    for attempt in 0..5 {
        if attempt > 0 {
            std::fs::remove_file(&conf)?;
        }
        into_a_second()?;
        fleet.ok(&["apply"])?;
        let applied = std::fs::metadata(&conf)?;
        std::fs::write(&conf, "bbbb\n")?;
        let edited = std::fs::metadata(&conf)?;
        if (edited.mtime(), edited.ctime()) != (applied.mtime(), applied.ctime()) {
            continue;
        }
        assert_eq!(edited.len(), applied.len());
        let run = fleet.outpost(&["plan"])?;
        assert_eq!(run.code, 1, "the edit was not seen: {}", run.stdout);
        fleet.ok(&["apply"])?;
        assert_eq!(std::fs::read_to_string(&conf)?, "aaaa\n");
        // Once the second is over the stat cache is trusted again: the fast path is clean.
        std::thread::sleep(Duration::from_millis(1300));
        fleet.ok(&["apply"])?;
        std::thread::sleep(Duration::from_millis(1300));
        let run = fleet.outpost(&["-vv", "plan"])?;
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert!(
            run.stderr.contains("fast path") && run.stderr.contains("suspects=0"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.contains(&commit));
        return Ok(());
    }
    Err("the edit never landed in the same second as the apply".into())
}
