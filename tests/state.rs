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

/// A writer killed inside a transaction in rollback-journal mode leaves a hot journal (outpost
/// switches the journal mode at open and close). The next command that writes rolls it back:
/// the half-written transaction is gone, the database is sound, and every command works again.
#[test]
fn a_hot_journal_a_killed_writer_left_is_rolled_back_by_the_next_writer() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/etc/a.conf\"\nsource = \"a\"\n",
        ),
        ("a", "1\n"),
    ])?;
    fleet.ok(&["apply"])?;
    let db = fleet.state().join("outpost.db");
    // Enough modified pages for a tiny cache to spill them into the database file before the
    // process dies without committing.
    let script = r#"
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("PRAGMA cache_size=1")
c.execute("BEGIN IMMEDIATE")
for i in range(200):
    c.execute("INSERT INTO events (at, kind, subject, message) VALUES (0, 'half-written', 'x', ?)", ("y" * 3000,))
os._exit(9)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&db)
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = fleet.state().join("outpost.db-journal");
    assert!(journal.exists(), "the killed writer left its journal");
    // A reader cannot roll it back: status refuses until a writer has.
    let status = fleet.outpost(&["status"])?;
    assert_eq!(status.code, 1, "{}{}", status.stdout, status.stderr);
    assert_eq!(
        status.stderr.trim_end(),
        format!(
            "outpost: error: database {} holds a transaction a killed writer left unfinished (outpost.db-journal); a command that writes rolls it back: run `outpost apply`, or wait for the daemon's next step",
            db.display()
        )
    );

    fleet.ok(&["apply"])?;
    assert!(!journal.exists(), "the hot journal was rolled back");
    let conn = rusqlite::Connection::open(&db)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    let half: i64 = conn.query_row(
        "SELECT count(*) FROM events WHERE kind = 'half-written'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(half, 0, "the uncommitted rows are gone");
    drop(conn);
    assert!(fleet.deployed()?.is_some());
    Ok(())
}
