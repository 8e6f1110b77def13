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
