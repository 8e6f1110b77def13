//! Originals: what is restored is what was there, with its content, mode, owner, modification
//! time and extended attributes; a file too large to keep is refused before any change.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{Fleet, Result};

const TOOL: &str = "[[file]]\npath = \"/usr/local/bin/tool\"\nsource = \"tool\"\nmode = \"0755\"\n";

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let mut value = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut value[..]).ok()?;
    value.truncate(n);
    Some(value)
}

/// `cap_net_raw+ep` as the kernel stores it (vfs_cap_data, revision 2).
fn cap_net_raw() -> Vec<u8> {
    [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

#[test]
fn a_taken_over_file_comes_back_with_its_mtime_and_extended_attributes() -> Result {
    let fleet = Fleet::new()?;
    let tool = fleet.on_host("/usr/local/bin/tool");
    std::fs::create_dir_all(fleet.on_host("/usr/local/bin"))?;
    std::fs::write(&tool, "#!/bin/sh\necho original\n")?;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o750))?;
    rustix::fs::setxattr(
        &tool,
        "user.origin",
        b"vendor",
        rustix::fs::XattrFlags::empty(),
    )?;
    let root = nix::unistd::geteuid().is_root();
    if root {
        rustix::fs::setxattr(
            &tool,
            "security.capability",
            &cap_net_raw(),
            rustix::fs::XattrFlags::empty(),
        )?;
    } else {
        eprintln!("the security.capability part is skipped: needs root");
    }
    let mtime = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(&tool)?
        .set_modified(mtime)?;

    fleet.publish(&[
        ("outpost.toml", TOOL),
        ("tool", "#!/bin/sh\necho managed\n"),
    ])?;
    fleet.ok(&["apply"])?;
    assert_eq!(
        xattr(&tool, "user.origin"),
        None,
        "the managed file is outpost's own"
    );
    fleet.publish(&[("outpost.toml", "")])?;
    fleet.ok(&["apply"])?;

    assert_eq!(
        std::fs::read_to_string(&tool)?,
        "#!/bin/sh\necho original\n"
    );
    let meta = std::fs::metadata(&tool)?;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.modified()?, mtime);
    assert_eq!(
        xattr(&tool, "user.origin").as_deref(),
        Some(b"vendor".as_slice())
    );
    if root {
        assert_eq!(xattr(&tool, "security.capability"), Some(cap_net_raw()));
    }
    assert_eq!(fleet.outpost(&["plan"])?.code, 0);
    Ok(())
}

#[test]
fn a_hard_linked_original_is_restored_as_a_file_of_its_own_with_a_note() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc"))?;
    std::fs::write(fleet.on_host("/etc/a.conf"), "shared\n")?;
    std::fs::hard_link(fleet.on_host("/etc/a.conf"), fleet.on_host("/etc/b.conf"))?;
    let manifest = "[[file]]\npath = \"/etc/a.conf\"\nsource = \"a\"\n";
    fleet.publish(&[("outpost.toml", manifest), ("a", "managed\n")])?;
    fleet.ok(&["apply"])?;
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/b.conf"))?,
        "shared\n"
    );
    fleet.publish(&[("outpost.toml", "")])?;
    fleet.ok(&["apply"])?;
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/a.conf"))?,
        "shared\n"
    );
    assert_eq!(std::fs::metadata(fleet.on_host("/etc/a.conf"))?.nlink(), 1);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/b.conf"))?,
        "shared\n"
    );
    let history = fleet.history()?;
    let message = history[0]["events"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.ends_with(
            "; it was one of 2 hard links to one file; restored as a file of its own with the same content"
        ),
        "{message}"
    );
    Ok(())
}

#[test]
fn a_file_too_large_to_keep_is_refused_before_any_change() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/srv"))?;
    std::fs::File::create(fleet.on_host("/srv/huge.img"))?.set_len(2 << 30)?;
    let manifest = "[[file]]\npath = \"/srv/huge.img\"\nsource = \"img\"\n\n[[file]]\npath = \"/srv/a\"\nsource = \"img\"\n";
    fleet.publish(&[("outpost.toml", manifest), ("img", "small\n")])?;
    let before = fleet.host_snapshot_sizes()?;
    let error = "cannot take over /srv/huge.img: it is 2.0 GiB, more than outpost keeps as an original (1.0 GiB); move it away by hand or leave it out of the manifest";
    let plan = fleet.outpost(&["plan"])?;
    assert_eq!(
        (plan.code, plan.stderr.trim_end()),
        (2, format!("outpost: error: {error}").as_str())
    );
    let apply = fleet.outpost(&["apply"])?;
    assert_eq!(
        (apply.code, apply.stderr.trim_end()),
        (1, format!("outpost: error: {error}").as_str())
    );
    assert_eq!(fleet.host_snapshot_sizes()?, before, "the host changed");
    assert!(fleet.history()?.is_empty(), "no deployment was started");
    Ok(())
}

/// Peak memory (bytes) of `outpost apply` on this fleet, per /usr/bin/time.
fn apply_peak(fleet: &Fleet) -> Result<Option<u64>> {
    if !std::path::Path::new("/usr/bin/time").exists() {
        eprintln!("skipped: /usr/bin/time is needed to measure peak memory");
        return Ok(None);
    }
    let report = fleet.path("time.txt");
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(crate::support::BIN)
        .arg("--config")
        .arg(fleet.config())
        .arg("apply")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: u64 = std::fs::read_to_string(&report)?.trim().parse()?;
    Ok(Some(kib * 1024))
}

/// A large file taken over is kept, and given back, in pieces: memory stays far below its size.
#[test]
fn a_large_original_is_kept_and_restored_with_bounded_memory() -> Result {
    const SIZE: usize = 128 << 20;
    let fleet = Fleet::new()?;
    let data = fleet.on_host("/srv/data.bin");
    std::fs::create_dir_all(fleet.on_host("/srv"))?;
    let pattern: Vec<u8> = (0..=255u8).cycle().take(SIZE).collect();
    std::fs::write(&data, &pattern)?;
    let manifest = "[[file]]\npath = \"/srv/data.bin\"\nsource = \"small\"\n";
    fleet.publish(&[("outpost.toml", manifest), ("small", "small\n")])?;
    let Some(kept) = apply_peak(&fleet)? else {
        return Ok(());
    };
    assert_eq!(std::fs::read_to_string(&data)?, "small\n");
    fleet.publish(&[("outpost.toml", "")])?;
    let Some(restored) = apply_peak(&fleet)? else {
        return Ok(());
    };
    assert!(
        std::fs::read(&data)? == pattern,
        "the original content is back"
    );
    for (what, peak) in [("keeping", kept), ("restoring", restored)] {
        assert!(
            peak < (SIZE / 2) as u64,
            "{what} a {SIZE}-byte original took {peak} bytes of memory"
        );
    }
    Ok(())
}

#[test]
fn what_a_tree_removes_from_a_directory_it_takes_over_comes_back_when_the_tree_goes() -> Result {
    let fleet = Fleet::new()?;
    let t = fleet.on_host("/opt/t");
    std::fs::create_dir_all(t.join("olddir/deeper"))?;
    std::fs::write(t.join("a.conf"), "host a\n")?;
    std::fs::write(t.join("old.txt"), "old\n")?;
    std::fs::write(t.join("olddir/deeper/f"), "deep\n")?;
    std::fs::set_permissions(t.join("olddir"), std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::symlink("old.txt", t.join("link"))?;
    let before = fleet.host_snapshot()?;
    let tree = "[[tree]]\npath = \"/opt/t\"\nsource = \"t\"\n";
    fleet.publish(&[("outpost.toml", tree), ("t/a.conf", "managed a\n")])?;
    fleet.ok(&["apply"])?;
    assert!(!t.join("old.txt").exists() && !t.join("olddir").exists());
    assert_eq!(std::fs::read_to_string(t.join("a.conf"))?, "managed a\n");
    // While the tree is there, what it removed stays removed.
    let plan = fleet.outpost(&["plan"])?;
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    fleet.ok(&["apply"])?;
    assert!(!t.join("old.txt").exists());

    fleet.publish(&[("outpost.toml", "")])?;
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stdout.contains("~ restore /opt/t/olddir/deeper/f"),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.host_snapshot()?, before, "the directory is as it was");
    assert_eq!(fleet.outpost(&["plan"])?.code, 0);
    Ok(())
}

/// Taking over more files than a process may have open at once: each original's content is
/// read when it is journalled, no file stays open meanwhile.
#[test]
fn taking_over_more_files_than_can_be_open_at_once() -> Result {
    if !std::path::Path::new("/usr/bin/prlimit").exists() {
        eprintln!("skipped: prlimit is needed to lower the open-file limit");
        return Ok(());
    }
    const FILES: usize = 300;
    let fleet = Fleet::new()?;
    let t = fleet.on_host("/opt/t");
    std::fs::create_dir_all(&t)?;
    let mut files = vec![(
        "outpost.toml".to_owned(),
        "[[tree]]\npath = \"/opt/t\"\nsource = \"t\"\n".to_owned(),
    )];
    for i in 0..FILES {
        std::fs::write(t.join(format!("f{i}")), format!("host {i}\n"))?;
        files.push((format!("t/f{i}"), format!("managed {i}\n")));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    fleet.publish(&files)?;
    let out = std::process::Command::new("/usr/bin/prlimit")
        .arg("--nofile=128")
        .arg(crate::support::BIN)
        .arg("--config")
        .arg(fleet.config())
        .arg("apply")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(t.join("f7"))?, "managed 7\n");
    fleet.publish(&[("outpost.toml", "")])?;
    fleet.ok(&["apply"])?;
    assert_eq!(std::fs::read_to_string(t.join("f7"))?, "host 7\n");
    Ok(())
}
