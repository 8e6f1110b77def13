//! Rollback walks back through good deployments, marks the commit it leaves bad in the same
//! transaction as its journal, and apply stays on the rolled-back-to commit until a commit
//! newer than the bad one is trusted.

use std::process::Command;

use crate::support::{Fleet, Result, run};

const MANIFEST: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\n";

fn app_conf(fleet: &Fleet) -> Result<String> {
    Ok(std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?)
}

/// A, B and C deployed in turn.
fn three_deployed() -> Result<(Fleet, [String; 3])> {
    let fleet = Fleet::new()?;
    let a = fleet.publish(&[("outpost.toml", MANIFEST), ("app.conf", "A\n")])?;
    fleet.ok(&["apply"])?;
    let b = fleet.publish(&[("app.conf", "B\n")])?;
    fleet.ok(&["apply"])?;
    let c = fleet.publish(&[("app.conf", "C\n")])?;
    fleet.ok(&["apply"])?;
    Ok((fleet, [a, b, c]))
}

#[test]
fn rolling_back_twice_walks_back_through_good_deployments() -> Result {
    let (fleet, [a, b, c]) = three_deployed()?;
    let run = fleet.ok(&["rollback"])?;
    assert!(
        run.stdout
            .ends_with(&format!("rolled back to {b}: 1 step\n")),
        "{}",
        run.stdout
    );
    assert_eq!(app_conf(&fleet)?, "B\n");
    let run = fleet.ok(&["rollback"])?;
    assert!(
        run.stdout
            .ends_with(&format!("rolled back to {a}: 1 step\n")),
        "{}",
        run.stdout
    );
    assert_eq!(app_conf(&fleet)?, "A\n");
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "success".into(), a.clone()),
            ("apply".into(), "success".into(), b.clone()),
            ("apply".into(), "success".into(), c.clone()),
            ("rollback".into(), "success".into(), b.clone()),
            ("rollback".into(), "success".into(), a.clone()),
        ]
    );
    // The chain: each rollback names the commit it left, now bad.
    let history = fleet.history()?;
    for (entry, left, to) in [(&history[0], &b, &a), (&history[1], &c, &b)] {
        assert_eq!(entry["events"][0]["kind"], "rolled-back");
        assert_eq!(entry["events"][0]["path"], left.as_str());
        assert_eq!(
            entry["events"][0]["message"],
            format!("rolled back from {left} to {to}; {left} is marked bad")
        );
    }
    let text = fleet.ok(&["history"])?.stdout;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines[1],
        format!("rolled back from {b} to {a}; {b} is marked bad"),
        "{text}"
    );
    assert_eq!(
        lines[3],
        format!("rolled back from {c} to {b}; {c} is marked bad"),
        "{text}"
    );

    // Both B and C are bad: apply stays at A, and a third rollback has nowhere to go.
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stderr.contains(&format!(
            "trusted commit {c} is marked bad (rolled back to {b}); staying at {a} until a newer commit arrives"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(app_conf(&fleet)?, "A\n");
    let run = fleet.outpost(&["rollback"])?;
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (
            1,
            "outpost: error: there is no earlier successful deployment to roll back to"
        )
    );

    let d = fleet.publish(&[("app.conf", "D\n")])?;
    fleet.ok(&["apply"])?;
    assert_eq!(app_conf(&fleet)?, "D\n");
    assert_eq!(fleet.deployed()?, Some(d));
    Ok(())
}

/// A commit whose deployment failed is not a place to roll back to, nor to stay at.
#[test]
fn an_older_failed_commit_is_never_picked_up() -> Result {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for an immutable directory (chattr +i)");
        return Ok(());
    }
    let fleet = Fleet::new()?;
    let a = fleet.publish(&[("outpost.toml", MANIFEST), ("app.conf", "A\n")])?;
    fleet.ok(&["apply"])?;
    let locked = fleet.on_host("/etc/locked");
    std::fs::create_dir_all(&locked)?;
    run(Command::new("chattr").arg("+i").arg(&locked))?;
    let failing =
        format!("{MANIFEST}\n[[file]]\npath = \"/etc/locked/x\"\nsource = \"app.conf\"\n");
    let b = fleet.publish(&[("outpost.toml", &failing), ("app.conf", "B\n")])?;
    let failed = fleet.outpost(&["apply"]);
    run(Command::new("chattr").arg("-i").arg(&locked))?;
    assert_eq!(failed?.code, 1);
    let c = fleet.publish(&[("outpost.toml", MANIFEST), ("app.conf", "C\n")])?;
    fleet.ok(&["apply"])?;
    let run = fleet.ok(&["rollback"])?;
    assert!(
        run.stdout
            .ends_with(&format!("rolled back to {a}: 1 step\n")),
        "{}",
        run.stdout
    );
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stderr
            .contains(&format!("staying at {a} until a newer commit arrives")),
        "{}",
        run.stderr
    );
    assert_eq!(app_conf(&fleet)?, "A\n");
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "success".into(), a.clone()),
            ("apply".into(), "failed".into(), b),
            ("apply".into(), "success".into(), c),
            ("rollback".into(), "success".into(), a),
        ]
    );
    Ok(())
}

/// A rollback refused before its journal (its target cannot be planned) marks nothing bad.
#[test]
fn a_rollback_refused_before_any_change_marks_nothing_bad() -> Result {
    let fleet = Fleet::new()?;
    let first = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\n\n[[file]]\npath = \"/etc/old.conf\"\nsource = \"app.conf\"\n";
    let a = fleet.publish(&[("outpost.toml", first), ("app.conf", "A\n")])?;
    fleet.ok(&["apply"])?;
    let b = fleet.publish(&[("outpost.toml", MANIFEST), ("app.conf", "B\n")])?;
    fleet.ok(&["apply"])?;
    std::fs::create_dir_all(fleet.on_host("/etc/old.conf/inside"))?;
    let before = fleet.host_snapshot()?;
    let run = fleet.outpost(&["rollback"])?;
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (1, format!("outpost: error: cannot plan commit {a}: cannot put a file at /etc/old.conf: a directory is in the way; remove it by hand or change the manifest").as_str())
    );
    assert_eq!(fleet.host_snapshot()?, before);
    let run = fleet.ok(&["apply"])?;
    assert_eq!(run.stderr, "", "B is not marked bad");
    assert_eq!(fleet.deployed()?, Some(b));
    Ok(())
}
