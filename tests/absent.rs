//! `absent` means gone: what it removes is neither read nor kept, and dropping the entry later
//! brings nothing back.

use crate::support::{Fleet, Result};

/// How many originals the database keeps at or below `path`.
fn originals(fleet: &Fleet, path: &str) -> Result<i64> {
    let db = rusqlite::Connection::open(fleet.state().join("outpost.db"))?;
    Ok(db.query_row(
        "SELECT count(*) FROM originals WHERE path = ?1 OR path LIKE ?1 || '/%'",
        [path],
        |r| r.get(0),
    )?)
}

#[test]
fn absent_keeps_no_original_and_dropping_it_restores_nothing() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc/cron.d"))?;
    std::fs::write(
        fleet.on_host("/etc/cron.d/legacy"),
        "* * * * * root old-job\n",
    )?;
    fleet.publish(&[(
        "outpost.toml",
        "[[absent]]\npath = \"/etc/cron.d/legacy\"\n",
    )])?;
    fleet.ok(&["apply"])?;
    assert!(!fleet.on_host("/etc/cron.d/legacy").exists());
    assert_eq!(originals(&fleet, "/etc/cron.d/legacy")?, 0);
    fleet.publish(&[("outpost.toml", "")])?;
    let run = fleet.ok(&["apply"])?;
    assert!(!run.stdout.contains("restore"), "{}", run.stdout);
    assert!(!fleet.on_host("/etc/cron.d/legacy").exists());
    assert_eq!(fleet.outpost(&["plan"])?.code, 0);
    Ok(())
}

/// A file outpost took over and then declared absent: its original is forgotten, so dropping
/// the absent entry does not bring the file back.
#[test]
fn a_taken_over_file_declared_absent_forgets_its_original() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc"))?;
    std::fs::write(fleet.on_host("/etc/x.conf"), "before outpost\n")?;
    let file = "[[file]]\npath = \"/etc/x.conf\"\nsource = \"x\"\n";
    fleet.publish(&[("outpost.toml", file), ("x", "managed\n")])?;
    fleet.ok(&["apply"])?;
    assert_eq!(originals(&fleet, "/etc/x.conf")?, 1);
    fleet.publish(&[("outpost.toml", "[[absent]]\npath = \"/etc/x.conf\"\n")])?;
    fleet.ok(&["apply"])?;
    assert!(!fleet.on_host("/etc/x.conf").exists());
    assert_eq!(originals(&fleet, "/etc/x.conf")?, 0);
    fleet.publish(&[("outpost.toml", "")])?;
    fleet.ok(&["apply"])?;
    assert!(!fleet.on_host("/etc/x.conf").exists());
    Ok(())
}

/// A large directory declared absent is removed without reading it: the database stays small
/// and a file larger than anything outpost would hash (a 2 GiB sparse file) is no obstacle.
#[test]
fn absent_on_a_large_directory_is_removed_without_copying_it() -> Result {
    let fleet = Fleet::new()?;
    let big = fleet.on_host("/srv/big");
    std::fs::create_dir_all(big.join("sub"))?;
    std::fs::File::create(big.join("huge.img"))?.set_len(2 << 30)?;
    std::fs::write(big.join("sub/data.bin"), vec![7u8; 8 << 20])?;
    fleet.publish(&[("outpost.toml", "[[absent]]\npath = \"/srv/big\"\n")])?;
    fleet.ok(&["apply"])?;
    assert!(!big.exists());
    assert_eq!(originals(&fleet, "/srv/big")?, 0);
    let size: u64 = ["outpost.db", "outpost.db-wal"]
        .iter()
        .filter_map(|n| std::fs::metadata(fleet.state().join(n)).ok())
        .map(|m| m.len())
        .sum();
    assert!(size < 4 << 20, "the database grew to {size} bytes");
    Ok(())
}
