//! A crash resumes the journalled target: its commit and its kind, before anything else. A
//! bad commit is never deployed again, and what an unfinished deployment touched stays managed
//! until a deployment completes.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Fleet, Result};

const FIRST: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\n\n[[file]]\npath = \"/etc/one.conf\"\nsource = \"app.conf\"\n";
const SECOND: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\nmode = \"0640\"\n\n[[file]]\npath = \"/etc/two.conf\"\nsource = \"app.conf\"\n\n[[tree]]\npath = \"/opt/t\"\nsource = \"t\"\n\n[[symlink]]\npath = \"/etc/link\"\ntarget = \"/etc/two.conf\"\n";

/// A fleet with `first` deployed, then `second`: returns both commits.
fn two_deployed() -> Result<(Fleet, String, String)> {
    let fleet = Fleet::new()?;
    let first = fleet.publish(&[("outpost.toml", FIRST), ("app.conf", "v1\n")])?;
    fleet.ok(&["apply"])?;
    let second = fleet.publish(&[
        ("outpost.toml", SECOND),
        ("app.conf", "v2\n"),
        ("t/a", "a\n"),
        ("t/sub/b", "b\n"),
    ])?;
    fleet.ok(&["apply"])?;
    Ok((fleet, first, second))
}

#[test]
fn rollback_killed_at_every_step_is_resumed_and_the_bad_commit_never_comes_back() -> Result {
    let (fleet, first, second) = two_deployed()?;
    let template = fleet.copy("template")?;
    let reference = template.copy("reference")?;
    let clean = reference.outpost(&["rollback"], None)?;
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    let rolled_back = reference.host_snapshot()?;
    for n in 0.. {
        let copy = template.copy(&format!("crash-{n}"))?;
        let run = copy.outpost(&["rollback"], Some(n))?;
        if run.code == 0 {
            assert!(n > 5, "the rollback took only {n} steps");
            break;
        }
        // Recovery finishes the rollback, before anything else; the commit rolled back from
        // stays bad and is not deployed again.
        let run = copy.outpost(&["apply"], None)?;
        assert_eq!(run.code, 0, "after {n} steps: {}", run.stderr);
        assert!(
            run.stdout
                .contains(&format!("resumed the interrupted rollback of {first}: ")),
            "after {n} steps: {}",
            run.stdout
        );
        assert!(
            run.stdout
                .ends_with(&format!("no changes: the host matches {first}\n")),
            "after {n} steps: {}",
            run.stdout
        );
        assert!(
            run.stderr.contains(&format!(
                "trusted commit {second} is marked bad (rolled back to {first}); staying at {first}"
            )),
            "after {n} steps: {}",
            run.stderr
        );
        assert_eq!(copy.host_snapshot()?, rolled_back, "after {n} steps");
        let history = copy.outpost(&["history", "--json"], None)?;
        let history: Vec<serde_json::Value> = serde_json::from_str(&history.stdout)?;
        let chain: Vec<(&str, &str, &str)> = history
            .iter()
            .rev()
            .map(|d| {
                let f = |k: &str| d[k].as_str().unwrap_or_default();
                (f("kind"), f("result"), f("commit"))
            })
            .collect();
        assert_eq!(
            chain,
            [
                ("apply", "success", first.as_str()),
                ("apply", "success", second.as_str()),
                ("rollback", "interrupted", first.as_str()),
                ("rollback", "success", first.as_str()),
            ],
            "after {n} steps"
        );
        let plan = copy.outpost(&["plan"], None)?;
        assert_eq!(plan.code, 0, "after {n} steps: {}", plan.stdout);
    }
    Ok(())
}

#[test]
fn a_second_rollback_after_a_crashed_one_only_finishes_it() -> Result {
    let (fleet, first, _) = two_deployed()?;
    let crashed = fleet.outpost_env(&["rollback"], "OUTPOST_FAULT_AFTER_STEPS", "2")?;
    assert_ne!(crashed.code, 0);
    let run = fleet.ok(&["rollback"])?;
    assert!(
        run.stdout
            .contains(&format!("resumed the interrupted rollback of {first}: ")),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.deployed()?, Some(first));
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v1\n"
    );
    Ok(())
}

/// B crashes having taken over a file and created others; C is imported and applied: B is
/// finished first, then C prunes what B created and restores what B took over.
#[test]
fn an_interrupted_apply_is_finished_before_a_newer_commit() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc"))?;
    std::fs::write(fleet.on_host("/etc/app.conf"), "original\n")?;
    std::fs::set_permissions(
        fleet.on_host("/etc/app.conf"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let b = fleet.publish(&[
        ("outpost.toml", SECOND),
        ("app.conf", "v2\n"),
        ("t/a", "a\n"),
        ("t/sub/b", "b\n"),
    ])?;
    let crashed = fleet.outpost_env(&["apply"], "OUTPOST_FAULT_AFTER_STEPS", "4")?;
    assert_ne!(crashed.code, 0);
    assert!(fleet.on_host("/opt/t/sub").is_dir(), "B created paths");
    let c = fleet.publish(&[(
        "outpost.toml",
        "[[file]]\npath = \"/etc/c.conf\"\nsource = \"app.conf\"\n",
    )])?;
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stdout
            .contains(&format!("resumed the interrupted apply of {b}: ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(&format!("applied {c}: 8 steps\n")),
        "{}",
        run.stdout
    );
    assert_c_alone(&fleet)?;
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "interrupted".into(), b.clone()),
            ("apply".into(), "success".into(), b),
            ("apply".into(), "success".into(), c),
        ]
    );
    Ok(())
}

/// The host holds only what C wants, and B's original of /etc/app.conf is back.
fn assert_c_alone(fleet: &Fleet) -> Result {
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "original\n"
    );
    assert_eq!(
        std::fs::symlink_metadata(fleet.on_host("/etc/app.conf"))?
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    for gone in ["/etc/two.conf", "/etc/link", "/opt/t"] {
        assert!(
            std::fs::symlink_metadata(fleet.on_host(gone)).is_err(),
            "{gone} is still there"
        );
    }
    assert!(fleet.on_host("/etc/c.conf").exists());
    let plan = fleet.outpost(&["plan"])?;
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    Ok(())
}

/// B crashes and can no longer be planned (someone put a directory where it wants a file):
/// resuming it fails, names it and records it failed; the next apply goes to C, and what B's
/// journal touched counts as managed: C prunes what B created and restores what B took over.
#[test]
fn what_an_unfinished_deployment_touched_stays_managed_until_one_completes() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc"))?;
    std::fs::write(fleet.on_host("/etc/app.conf"), "original\n")?;
    std::fs::set_permissions(
        fleet.on_host("/etc/app.conf"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let manifest = format!("{SECOND}\n[[file]]\npath = \"/etc/zz.conf\"\nsource = \"app.conf\"\n");
    let b = fleet.publish(&[
        ("outpost.toml", &manifest),
        ("app.conf", "v2\n"),
        ("t/a", "a\n"),
        ("t/sub/b", "b\n"),
    ])?;
    // Directories first, then /etc/app.conf, /etc/link, /etc/two.conf, the tree's files.
    let crashed = fleet.outpost_env(&["apply"], "OUTPOST_FAULT_AFTER_STEPS", "5")?;
    assert_ne!(crashed.code, 0);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v2\n"
    );
    std::fs::create_dir_all(fleet.on_host("/etc/zz.conf/inside"))?;
    let c = fleet.publish(&[(
        "outpost.toml",
        "[[file]]\npath = \"/etc/c.conf\"\nsource = \"app.conf\"\n",
    )])?;
    let before = fleet.host_snapshot()?;
    let run = fleet.outpost(&["apply"])?;
    let error = format!(
        "cannot resume the interrupted apply of {b} (recorded failed): cannot plan commit {b}: cannot put a file at /etc/zz.conf: a directory is in the way; remove it by hand or change the manifest"
    );
    assert_eq!(
        (run.code, run.stderr.lines().last()),
        (1, Some(format!("outpost: error: {error}").as_str()))
    );
    assert_eq!(
        fleet.host_snapshot()?,
        before,
        "a refused resume changes nothing"
    );
    let history = fleet.history()?;
    assert_eq!(history[0]["result"], "failed");
    assert_eq!(history[0]["error"], error.as_str());

    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stdout.contains("~ restore /etc/app.conf"),
        "{}",
        run.stdout
    );
    assert_c_alone(&fleet)?;
    assert!(
        fleet.on_host("/etc/zz.conf/inside").is_dir(),
        "what someone else put there stays"
    );
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "failed".into(), b),
            ("apply".into(), "success".into(), c),
        ]
    );
    Ok(())
}
