//! Bad manifests and hostile host states: the exact error, nothing on the host changed, the
//! deployed commit unchanged.

use std::process::Command;

use crate::support::{Fleet, Result, run};

const GOOD: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\n";

/// A fleet with a good deployment, so "unchanged" has something to keep.
fn deployed_fleet() -> Result<(Fleet, String)> {
    let fleet = Fleet::new()?;
    let commit = fleet.publish(&[("outpost.toml", GOOD), ("app.conf", "good\n")])?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok((fleet, commit))
}

/// Publishes `manifest` (with the other `files`), then checks that `apply` refuses with
/// exactly `error` (after `manifest of commit <oid>: `), `plan` with exit 2, and that neither
/// the host nor the deployed commit changed.
fn assert_refused(fleet: &Fleet, deployed: &str, files: &[(&str, &str)], error: &str) -> Result {
    let commit = fleet.publish(files)?;
    assert_unchanged_after_apply(
        fleet,
        deployed,
        &format!("outpost: error: manifest of commit {commit}: {error}"),
        2,
    )
}

fn assert_unchanged_after_apply(
    fleet: &Fleet,
    deployed: &str,
    expected: &str,
    plan_code: i32,
) -> Result {
    let before = fleet.host_snapshot()?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.trim_end(), expected);
    let plan = fleet.outpost(&["plan"])?;
    assert_eq!(plan.code, plan_code, "{}{}", plan.stdout, plan.stderr);
    assert_eq!(fleet.host_snapshot()?, before, "the host changed");
    assert_eq!(
        fleet.deployed()?.as_deref(),
        Some(deployed),
        "the deployed commit changed"
    );
    Ok(())
}

fn file_at(path: &str) -> String {
    format!("[[file]]\npath = \"{path}\"\nsource = \"app.conf\"\n")
}

#[test]
fn path_outside_allowed_paths() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let error = "outpost.toml: file #1 (/usr/bin/x): path is outside apply.allowed_paths (/etc, /opt, /srv, /usr/local, /var/lib)";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", &file_at("/usr/bin/x"))],
        error,
    )
}

#[test]
fn path_with_dot_dot() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let error = "outpost.toml: file #1 (/etc/../usr/bin/x): path has a \"..\" component; write the path without it";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", &file_at("/etc/../usr/bin/x"))],
        error,
    )
}

#[test]
fn relative_path() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let error = "outpost.toml: file #1 (etc/relative): path must be an absolute host path (starting with /)";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", &file_at("etc/relative"))],
        error,
    )
}

#[test]
fn path_with_an_empty_component() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let error = "outpost.toml: file #1 (/etc//x): path has an empty component (// or a trailing /)";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", &file_at("/etc//x"))],
        error,
    )
}

#[test]
fn path_with_nul() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let error = "outpost.toml: file #1 (/etc/a\\0b): path contains a NUL byte";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", &file_at("/etc/a\\u0000b"))],
        error,
    )
}

#[test]
fn source_that_does_not_exist() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = "[[file]]\npath = \"/etc/x\"\nsource = \"files/missing.conf\"\n";
    let error =
        "outpost.toml: file #1 (/etc/x): source files/missing.conf does not exist in the commit";
    assert_refused(&fleet, &deployed, &[("outpost.toml", manifest)], error)
}

#[test]
fn source_that_is_a_directory() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = "[[file]]\npath = \"/etc/x\"\nsource = \"files\"\n";
    let error = "outpost.toml: file #1 (/etc/x): source files is a directory in the repository; use [[tree]] for a whole directory";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", manifest), ("files/a", "a")],
        error,
    )
}

#[test]
fn source_that_is_a_symlink_to_etc_shadow() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    std::os::unix::fs::symlink("/etc/shadow", fleet.repo().join("shadow"))?;
    let manifest = "[[file]]\npath = \"/etc/x\"\nsource = \"shadow\"\n";
    let error = "outpost.toml: file #1 (/etc/x): source shadow is a symlink in the repository (to /etc/shadow); sources must be regular files";
    assert_refused(&fleet, &deployed, &[("outpost.toml", manifest)], error)
}

#[test]
fn source_that_is_a_submodule() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    // An embedded repository: `git add` records it as a gitlink, as a submodule is.
    let vendor = fleet.repo().join("vendor");
    run(Command::new("git").args(["init", "-q"]).arg(&vendor))?;
    run(Command::new("git").current_dir(&vendor).args([
        "-c",
        "user.name=v",
        "-c",
        "user.email=v@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "v",
    ]))?;
    let manifest = "[[file]]\npath = \"/etc/x\"\nsource = \"vendor\"\n";
    let error = "outpost.toml: file #1 (/etc/x): source vendor is a submodule; sources must be regular files inside the commit";
    assert_refused(&fleet, &deployed, &[("outpost.toml", manifest)], error)
}

#[test]
fn include_cycle() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let files = [
        ("outpost.toml", "[[include]]\npath = \"a.toml\"\n"),
        ("a.toml", "[[include]]\npath = \"b.toml\"\n"),
        ("b.toml", "[[include]]\npath = \"a.toml\"\n"),
    ];
    let error =
        "include cycle: outpost.toml -> a.toml -> b.toml -> a.toml; remove one of these includes";
    assert_refused(&fleet, &deployed, &files, error)
}

#[test]
fn duplicate_path() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = format!("{}\n{}", file_at("/etc/x"), file_at("/etc/x"));
    let error =
        "outpost.toml: file #2 (/etc/x): path is also claimed by outpost.toml: file #1 (/etc/x)";
    assert_refused(&fleet, &deployed, &[("outpost.toml", &manifest)], error)
}

#[test]
fn mode_999() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = format!("{}mode = \"999\"\n", file_at("/etc/x"));
    let error = "outpost.toml: file #1 (/etc/x): mode \"999\" is not an octal mode such as \"0644\" (at most 0777)";
    assert_refused(&fleet, &deployed, &[("outpost.toml", &manifest)], error)
}

#[test]
fn setuid_mode_not_allowed() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = format!("{}mode = \"04755\"\n", file_at("/etc/x"));
    let error = "outpost.toml: file #1 (/etc/x): mode \"04755\" sets setuid/setgid; add allow_setid = true to the entry if that is intended";
    assert_refused(&fleet, &deployed, &[("outpost.toml", &manifest)], error)
}

#[test]
fn unknown_owner() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = format!("{}owner = \"no-such-user-7\"\n", file_at("/etc/x"));
    let error = "outpost.toml: file #1 (/etc/x): owner \"no-such-user-7\" is not a user on this host; create it first or give a numeric uid";
    assert_refused(&fleet, &deployed, &[("outpost.toml", &manifest)], error)
}

#[test]
fn parent_is_a_symlink_to_outside_the_root() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let outside = fleet.path("outside");
    std::fs::create_dir(&outside)?;
    std::os::unix::fs::symlink(&outside, fleet.on_host("/etc/escape"))?;
    let commit = fleet.publish(&[("outpost.toml", &file_at("/etc/escape/x"))])?;
    let expected = format!(
        "outpost: error: cannot plan commit {commit}: cannot create /etc/escape/x: its parent /etc/escape is a symlink, not a directory; outpost never follows or replaces it"
    );
    assert_unchanged_after_apply(&fleet, &deployed, &expected, 2)?;
    assert_eq!(
        std::fs::read_dir(&outside)?.count(),
        0,
        "nothing may be written outside the root"
    );
    Ok(())
}

#[test]
fn directory_where_a_file_is_wanted() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    std::fs::create_dir_all(fleet.on_host("/etc/x/inside"))?;
    let commit = fleet.publish(&[("outpost.toml", &file_at("/etc/x"))])?;
    let expected = format!(
        "outpost: error: cannot plan commit {commit}: cannot put a file at /etc/x: a directory is in the way; remove it by hand or change the manifest"
    );
    assert_unchanged_after_apply(&fleet, &deployed, &expected, 2)
}

/// A read-only destination: as root a read-only bind mount, refused before any change; as
/// another user a directory without write permission, where the step fails and the
/// deployment stops with the steps before it complete.
#[test]
fn read_only_destination() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let ro = fleet.on_host("/etc/ro");
    std::fs::create_dir_all(&ro)?;
    let manifest = format!("{}\n{}", file_at("/etc/a.conf"), file_at("/etc/ro/x.conf"));
    if nix::unistd::geteuid().is_root() {
        run(Command::new("mount").arg("--bind").arg(&ro).arg(&ro))?;
        let _unmount = Unmount(ro.clone());
        run(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(&ro))?;
        let commit = fleet.publish(&[("outpost.toml", &manifest)])?;
        let expected =
            "outpost: error: /etc/ro/x.conf is on a read-only filesystem; nothing was changed";
        assert_unchanged_after_apply(&fleet, &deployed, expected, 1)?;
        let history: serde_json::Value =
            serde_json::from_str(&fleet.outpost(&["history", "--json"])?.stdout)?;
        assert_ne!(
            history[0]["commit"], commit,
            "a refused deployment is not started"
        );
    } else {
        std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555))?;
        fleet.publish(&[("outpost.toml", &manifest)])?;
        let run = fleet.outpost(&["apply"])?;
        assert_eq!(run.code, 1);
        assert!(
            run.stderr
                .starts_with("outpost: error: cannot create a temp file for /etc/ro/x.conf"),
            "{}",
            run.stderr
        );
        assert_eq!(fleet.deployed()?.as_deref(), Some(deployed.as_str()));
        let history: serde_json::Value =
            serde_json::from_str(&fleet.outpost(&["history", "--json"])?.stdout)?;
        assert_eq!(history[0]["result"], "failed");
    }
    Ok(())
}

/// Unmounts a test bind mount when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn owner_is_the_no_change_id() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = format!("{}owner = 4294967295\n", file_at("/etc/x"));
    let error = "outpost.toml: file #1 (/etc/x): owner 4294967295 is the \"no change\" id (-1), which cannot own a path; give a real uid";
    assert_refused(&fleet, &deployed, &[("outpost.toml", &manifest)], error)
}

#[test]
fn group_is_the_no_change_id() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = format!("{}group = \"4294967295\"\n", file_at("/etc/x"));
    let error = "outpost.toml: file #1 (/etc/x): group 4294967295 is the \"no change\" id (-1), which cannot own a path; give a real gid";
    assert_refused(&fleet, &deployed, &[("outpost.toml", &manifest)], error)
}

#[test]
fn setuid_mode_in_a_tree_names_what_to_do() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let manifest = "[[tree]]\npath = \"/opt/t\"\nsource = \"t\"\nmode = \"04755\"\n";
    let error = "outpost.toml: tree #1 (/opt/t): mode \"04755\" sets setuid/setgid, which a tree never gives its files; declare such a file in a [[file]] entry with allow_setid = true";
    assert_refused(
        &fleet,
        &deployed,
        &[("outpost.toml", manifest), ("t/bin", "#!/bin/sh\n")],
        error,
    )
}

#[test]
fn absent_below_a_symlinked_directory() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let outside = fleet.path("outside");
    std::fs::create_dir_all(outside.join("y"))?;
    std::os::unix::fs::symlink(&outside, fleet.on_host("/etc/x"))?;
    let commit = fleet.publish(&[("outpost.toml", "[[absent]]\npath = \"/etc/x/y\"\n")])?;
    let expected = format!(
        "outpost: error: cannot plan commit {commit}: cannot check that /etc/x/y is absent: /etc/x is a symlink, which outpost never follows; remove the symlink or change the manifest"
    );
    assert_unchanged_after_apply(&fleet, &deployed, &expected, 2)?;
    assert!(
        outside.join("y").is_dir(),
        "nothing outside the root is touched"
    );
    Ok(())
}

/// Mounts a tmpfs with `options` at `dir` (created), or says why it cannot.
fn tmpfs(dir: &std::path::Path, options: &str) -> Result<Option<Unmount>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return Ok(None);
    }
    std::fs::create_dir_all(dir)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()?;
    if !mounted.success() {
        eprintln!("skipped: cannot mount a tmpfs at {}", dir.display());
        return Ok(None);
    }
    Ok(Some(Unmount(dir.to_owned())))
}

fn three_files(size: usize) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| (format!("{n}.dat"), n.repeat(size)))
        .collect();
    let manifest: String = ["a", "b", "c"]
        .iter()
        .map(|n| format!("[[file]]\npath = \"/srv/small/{n}.dat\"\nsource = \"{n}.dat\"\n\n"))
        .collect();
    files.push(("outpost.toml".into(), manifest));
    files
}

/// A deployment that would fill the disk is refused before any change.
#[test]
fn not_enough_free_space_changes_nothing() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let Some(_unmount) = tmpfs(&fleet.on_host("/srv/small"), "size=1m")? else {
        return Ok(());
    };
    let files = three_files(400 << 10);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let commit = fleet.publish(&files)?;
    let expected = "outpost: error: not enough free space on the filesystem holding /srv/small/a.dat: 2.6 MiB needed with a margin, 1.0 MiB available; nothing was changed, free some space and apply again";
    assert_unchanged_after_apply(&fleet, &deployed, expected, 1)?;
    assert_ne!(
        fleet.history()?[0]["commit"],
        commit,
        "a refused deployment is not started"
    );
    Ok(())
}

/// When the disk fills anyway (here: no inodes left), the recorded error keeps the errno.
#[test]
fn a_full_disk_midway_is_recorded_with_its_errno() -> Result {
    let (fleet, deployed) = deployed_fleet()?;
    let Some(_unmount) = tmpfs(&fleet.on_host("/srv/small"), "size=4m,nr_inodes=3")? else {
        return Ok(());
    };
    let files = three_files(10);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let commit = fleet.publish(&files)?;
    let run = fleet.outpost(&["apply"])?;
    let error =
        "cannot create a temporary file next to /srv/small/c.dat: ENOSPC: No space left on device";
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (1, format!("outpost: error: {error}").as_str())
    );
    let history = fleet.history()?;
    assert_eq!(
        (
            &history[0]["commit"],
            &history[0]["result"],
            &history[0]["error"]
        ),
        (&commit.into(), &"failed".into(), &error.into())
    );
    assert_eq!(fleet.deployed()?, Some(deployed));
    Ok(())
}
