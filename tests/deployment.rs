//! How a deployment ends: removing directories never fails it, and whatever goes wrong after
//! it was journalled, it ends `failed` with its error recorded, never `running`.

use std::process::Command;

use crate::support::{Fleet, Result, run};

const TREE: &str = "[[tree]]\npath = \"/opt/t\"\nsource = \"files/t\"\n";

/// Asserts the newest deployment succeeded, the host matches, and nothing is left running.
fn assert_clean_success(fleet: &Fleet, commit: &str) -> Result {
    let history = fleet.history()?;
    assert_eq!(history[0]["commit"], commit);
    assert_eq!(history[0]["result"], "success", "{}", history[0]);
    assert!(
        history.iter().all(|d| d["result"] != "running"),
        "a deployment was left running: {history:?}"
    );
    let plan = fleet.outpost(&["plan"])?;
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    Ok(())
}

#[test]
fn dropping_a_tree_with_subdirectories_removes_it_and_succeeds() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[
        ("outpost.toml", TREE),
        ("files/t/a.conf", "a\n"),
        ("files/t/sub/deeper/b.conf", "b\n"),
    ])?;
    fleet.ok(&["apply"])?;
    assert!(fleet.on_host("/opt/t/sub/deeper/b.conf").exists());
    let commit = fleet.publish(&[("outpost.toml", "")])?;
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stdout
            .ends_with(&format!("applied {commit}: 5 steps\n")),
        "{}",
        run.stdout
    );
    assert!(!fleet.on_host("/opt/t").exists());
    assert!(fleet.on_host("/opt").is_dir(), "the parent stays");
    assert_clean_success(&fleet, &commit)?;
    let history = fleet.history()?;
    let pruned: Vec<&str> = history[0]["events"]
        .as_array()
        .ok_or("no events")?
        .iter()
        .filter(|e| e["kind"] == "pruned")
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(
        pruned,
        [
            "/opt/t/sub/deeper/b.conf",
            "/opt/t/sub/deeper",
            "/opt/t/a.conf",
            "/opt/t/sub",
            "/opt/t"
        ]
    );
    Ok(())
}

#[test]
fn extra_subdirectories_in_a_tree_are_removed_and_the_deployment_succeeds() -> Result {
    let fleet = Fleet::new()?;
    let commit = fleet.publish(&[("outpost.toml", TREE), ("files/t/a.conf", "a\n")])?;
    fleet.ok(&["apply"])?;
    std::fs::create_dir_all(fleet.on_host("/opt/t/extra/deeper"))?;
    std::fs::write(fleet.on_host("/opt/t/extra/deeper/x"), "x")?;
    std::fs::write(fleet.on_host("/opt/t/extra/y"), "y")?;
    fleet.ok(&["apply"])?;
    assert!(!fleet.on_host("/opt/t/extra").exists());
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/opt/t/a.conf"))?,
        "a\n"
    );
    assert_eq!(fleet.history()?[0]["kind"], "repair");
    assert_clean_success(&fleet, &commit)
}

#[test]
fn a_tree_taking_over_a_directory_with_subdirectories_succeeds() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/opt/t/old/deeper"))?;
    std::fs::write(fleet.on_host("/opt/t/old/deeper/x"), "x")?;
    std::fs::write(fleet.on_host("/opt/t/a.conf"), "before\n")?;
    let commit = fleet.publish(&[("outpost.toml", TREE), ("files/t/a.conf", "a\n")])?;
    fleet.ok(&["apply"])?;
    assert!(!fleet.on_host("/opt/t/old").exists());
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/opt/t/a.conf"))?,
        "a\n"
    );
    assert_clean_success(&fleet, &commit)
}

#[test]
fn absent_naming_a_non_empty_directory_removes_it_and_succeeds() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc/legacy.d/sub"))?;
    std::fs::write(fleet.on_host("/etc/legacy.d/sub/job"), "old\n")?;
    std::fs::write(fleet.on_host("/etc/legacy.d/top"), "old\n")?;
    let commit = fleet.publish(&[("outpost.toml", "[[absent]]\npath = \"/etc/legacy.d\"\n")])?;
    fleet.ok(&["apply"])?;
    assert!(!fleet.on_host("/etc/legacy.d").exists());
    assert!(fleet.on_host("/etc").is_dir());
    assert_clean_success(&fleet, &commit)
}

/// A step that fails after others are done: the deployment ends `failed` with the whole error
/// (errno included), the steps done are in the inventory, the deployed commit stays.
#[test]
fn a_failed_step_ends_the_deployment_failed_with_its_error() -> Result {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for an immutable directory (chattr +i)");
        return Ok(());
    }
    let fleet = Fleet::new()?;
    let manifest = "[[file]]\npath = \"/etc/a.conf\"\nsource = \"a\"\n\n[[file]]\npath = \"/etc/locked/b.conf\"\nsource = \"a\"\n";
    let good = fleet.publish(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/etc/a.conf\"\nsource = \"a\"\n",
        ),
        ("a", "1\n"),
    ])?;
    fleet.ok(&["apply"])?;
    let locked = fleet.on_host("/etc/locked");
    std::fs::create_dir_all(&locked)?;
    run(Command::new("chattr").arg("+i").arg(&locked))?;
    let _unlock = Unlock(locked.clone());
    let commit = fleet.publish(&[("outpost.toml", manifest), ("a", "2\n")])?;
    let apply = fleet.outpost(&["apply"])?;
    let error =
        "cannot create a temporary file next to /etc/locked/b.conf: EPERM: Operation not permitted";
    assert_eq!(
        (apply.code, apply.stderr.trim_end()),
        (1, format!("outpost: error: {error}").as_str())
    );
    let history = fleet.history()?;
    assert_eq!(history[0]["commit"], commit);
    assert_eq!(history[0]["result"], "failed");
    assert_eq!(history[0]["error"], error);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/a.conf"))?,
        "2\n",
        "the step before the failure is done"
    );
    assert_eq!(fleet.deployed()?, Some(good));
    drop(_unlock);
    fleet.ok(&["apply"])?;
    assert_clean_success(&fleet, &commit)
}

/// Clears the immutable flag of a test directory when dropped.
struct Unlock(std::path::PathBuf);

impl Drop for Unlock {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A large file is written from one copy of its bytes: the apply's peak memory stays well
/// below twice the file's size.
#[test]
fn a_large_file_is_applied_without_a_second_copy_in_memory() -> Result {
    const SIZE: usize = 96 << 20;
    if !std::path::Path::new("/usr/bin/time").exists() {
        eprintln!("skipped: /usr/bin/time is needed to measure peak memory");
        return Ok(());
    }
    let fleet = Fleet::new()?;
    // Larger than the default source.max_object_size (64 MiB).
    fleet.write_config("\n[source]\nmax_object_size = \"128MiB\"\n")?;
    let big = "0123456789abcdef".repeat(SIZE / 16);
    fleet.publish(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/srv/big.img\"\nsource = \"big.img\"\n",
        ),
        ("big.img", &big),
    ])?;
    drop(big);
    let report = fleet.path("time.txt");
    let out = Command::new("/usr/bin/time")
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
    assert_eq!(
        std::fs::metadata(fleet.on_host("/srv/big.img"))?.len(),
        SIZE as u64
    );
    let peak_kib: u64 = std::fs::read_to_string(&report)?.trim().parse()?;
    let peak = peak_kib * 1024;
    assert!(
        peak < (SIZE as u64) * 3 / 2,
        "peak memory {peak} bytes for a {SIZE}-byte file"
    );
    Ok(())
}
