//! Local state: the floor mirror outlives the database, status reads while the lock is held.

use crate::support::{Fleet, Result};

#[test]
fn lost_database_still_refuses_rollback() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?;
    fleet.git_run(&["tag", "v1"])?;
    let old = fleet.bundle("old.bundle", &["main", "v1"])?;
    let tip = fleet.commit("a", "2")?;
    let new = fleet.bundle("new.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&new])?.code, 0);
    for name in ["outpost.db", "outpost.db-wal", "outpost.db-shm"] {
        let _ = std::fs::remove_file(fleet.state().join(name));
    }
    // Status already reads the mark from the mirror alone.
    assert_eq!(fleet.trusted()?, Some(tip.clone()));
    let run = fleet.outpost_paths("import", &[&old])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("replay:") && run.stdout.contains("is older than the trusted commit"),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.trusted()?, Some(tip));
    Ok(())
}

#[test]
fn corrupt_floor_file_stops_intake() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&bundle])?.code, 0);
    let floor = fleet.state().join("floor");
    let text = std::fs::read_to_string(&floor)?.replace("floor 1", "floor 0");
    std::fs::write(&floor, text)?;
    fleet.commit("a", "2")?;
    let next = fleet.bundle("next.bundle", &["main"])?;
    let run = fleet.outpost_paths("import", &[&next])?;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "outpost: error: {} is corrupt (checksum mismatch); restore it from a backup, or remove it only if you know the host's trusted commit",
            floor.display()
        )
    );
    Ok(())
}

#[test]
fn status_reads_while_another_process_holds_the_lock() -> Result {
    let fleet = Fleet::new()?;
    let tip = fleet.commit("a", "1")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&bundle])?.code, 0);
    let holder = fleet.hold_lock()?;
    assert_eq!(fleet.trusted()?, Some(tip));
    // --no-wait: an import would otherwise wait for the holder as long as it takes.
    let run: crate::support::Run = fleet
        .command(&["--no-wait", "import"])
        .arg(&bundle)
        .output()?
        .into();
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "another outpost process (pid {}) holds",
            holder.pid
        )) && run.stderr.contains("wait for it to finish or stop it"),
        "{}",
        run.stderr
    );
    drop(holder);
    Ok(())
}

#[test]
fn key_validity_is_judged_against_the_time_floor() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?; // committed 2026-09-21T14:13:20Z
    let first = fleet.bundle("first.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&first])?.code, 0);
    // The key expired before the host's time floor: whatever the system clock says.
    fleet.write_allowed_signers(&[(
        "fleet@example.com",
        "fleet",
        "valid-before=\"20260901\",namespaces=\"git,outpost-bundle\"",
    )])?;
    fleet.commit("a", "2")?;
    let next = fleet.bundle("next.bundle", &["main"])?;
    let run = fleet.outpost_paths("import", &[&next])?;
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("expired"), "{}", run.stdout);
    Ok(())
}
