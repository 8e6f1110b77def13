//! Secrets stay secret: the state dir and its files are private, originals given back do not
//! linger in the database, and `plan` shows no secret content and no control characters.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::{Fleet, Result};

const SECRET: &str = "db_password = hunter2-7f3c9a1e\n";

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

fn chmod(path: &Path, mode: u32) -> Result {
    Ok(std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode),
    )?)
}

/// Whether `needle` occurs in the file at `path` (a missing file holds nothing).
fn holds(path: &Path, needle: &str) -> Result<bool> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Whether user `nobody` can read `path`: `None` when that cannot be tried (not root).
fn nobody_reads(path: &Path) -> Result<Option<bool>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let status = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    Ok(Some(status.success()))
}

#[test]
fn the_state_dir_and_its_files_are_private() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/etc/a.conf\"\nsource = \"a\"\n",
        ),
        ("a", "a\n"),
    ])?;
    fleet.ok(&["apply"])?;
    let state = fleet.state();
    assert_eq!(mode(&state)?, 0o700);
    for name in ["outpost.db", "floor", "lock"] {
        assert_eq!(mode(&state.join(name))?, 0o600, "{name}");
    }
    // The database rests in rollback mode; a writer switches it to WAL, as outpost's do, and
    // SQLite gives the -wal and -shm files the database's mode. Held open while looked at.
    let db = rusqlite::Connection::open(state.join("outpost.db"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.query_row("SELECT count(*) FROM deployments", [], |r| {
        r.get::<_, i64>(0)
    })?;
    for name in ["outpost.db-wal", "outpost.db-shm"] {
        assert_eq!(mode(&state.join(name))?, 0o600, "{name}");
    }
    drop(db);
    // Only the state dir's own modes keep others out: everything above it is opened up.
    chmod(fleet.dir.path(), 0o755)?;
    match (
        nobody_reads(&fleet.config())?,
        nobody_reads(&state.join("outpost.db"))?,
    ) {
        (Some(control), Some(db)) => {
            assert!(control, "nobody should read the world-readable config");
            assert!(!db, "nobody can read outpost.db");
        }
        _ => eprintln!("skipped the nobody check: needs root for setpriv"),
    }
    Ok(())
}

#[test]
fn a_loose_state_dir_is_tightened_with_a_log_line() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[("outpost.toml", "")])?;
    let state = fleet.state();
    chmod(&state, 0o755)?;
    chmod(&state.join("outpost.db"), 0o644)?;
    chmod(&state.join("floor"), 0o644)?;
    let run = fleet.ok(&["apply"])?;
    for (path, was, now) in [
        (state.clone(), "0755", "0700"),
        (state.join("outpost.db"), "0644", "0600"),
        (state.join("floor"), "0644", "0600"),
    ] {
        let line = format!(
            "{} was {was}, readable by others; tightened to {now} (it may hold secrets)",
            path.display()
        );
        assert!(run.stderr.contains(&line), "{}", run.stderr);
    }
    assert_eq!(mode(&state)?, 0o700);
    assert_eq!(mode(&state.join("outpost.db"))?, 0o600);
    assert_eq!(mode(&state.join("floor"))?, 0o600);
    let run = fleet.ok(&["apply"])?;
    assert_eq!(run.stderr, "", "nothing to tighten the second time");
    Ok(())
}

/// A 0600 file taken over keeps its original in the database while managed; once given back,
/// its bytes are nowhere in the database files, and its mode is what it was.
#[test]
fn a_secret_original_given_back_does_not_linger_in_the_database() -> Result {
    let fleet = Fleet::new()?;
    let secret = fleet.on_host("/etc/app/db.conf");
    std::fs::create_dir_all(fleet.on_host("/etc/app"))?;
    std::fs::write(&secret, SECRET)?;
    chmod(&secret, 0o600)?;
    let manifest = "[[file]]\npath = \"/etc/app/db.conf\"\nsource = \"db.conf\"\nmode = \"0600\"\n";
    fleet.publish(&[("outpost.toml", manifest), ("db.conf", "managed\n")])?;
    fleet.ok(&["apply"])?;
    let db_files =
        ["outpost.db", "outpost.db-wal", "outpost.db-shm"].map(|n| fleet.state().join(n));
    let mut kept = false;
    for f in &db_files {
        kept |= holds(f, SECRET.trim_end())?;
    }
    assert!(kept, "the original is kept while the file is managed");

    fleet.publish(&[("outpost.toml", "")])?;
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stdout.starts_with("~ restore /etc/app/db.conf"),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read_to_string(&secret)?, SECRET);
    assert_eq!(mode(&secret)?, 0o600);
    for f in &db_files {
        assert!(
            !holds(f, SECRET.trim_end())?,
            "{} still holds the secret",
            f.display()
        );
    }
    Ok(())
}

#[test]
fn plan_shows_no_secret() -> Result {
    let fleet = Fleet::new()?;
    let config = std::fs::read_to_string(fleet.config())?.replace(
        "set_owner = false\n",
        "set_owner = false\nredact = [\"**/*.key\"]\n",
    );
    std::fs::write(fleet.config(), config)?;
    let manifest = "[[file]]\npath = \"/etc/app/db.conf\"\nsource = \"db.conf\"\nmode = \"0600\"\n\n[[file]]\npath = \"/etc/app/tls.key\"\nsource = \"tls.key\"\n\n[[file]]\npath = \"/etc/app/host.conf\"\nsource = \"host.conf\"\n\n[[file]]\npath = \"/etc/app/open.conf\"\nsource = \"open.conf\"\n";
    std::fs::create_dir_all(fleet.on_host("/etc/app"))?;
    fleet.publish(&[
        ("outpost.toml", manifest),
        ("db.conf", "db_password = new\n"),
        ("tls.key", "-----BEGIN PRIVATE KEY-----\nnew\n"),
        ("host.conf", "token = new\n"),
        ("open.conf", "open = new\n"),
    ])?;
    fleet.ok(&["apply"])?;
    // Secrets edited on the host, each hidden for its own reason; the open file is diffed.
    let edits = [
        ("/etc/app/db.conf", "db_password = hunter2\n", 0o600),
        (
            "/etc/app/tls.key",
            "-----BEGIN PRIVATE KEY-----\nhunter2\n",
            0o644,
        ),
        ("/etc/app/host.conf", "token = hunter2\n", 0o640),
        ("/etc/app/open.conf", "open = old\n", 0o644),
    ];
    for (path, content, mode) in edits {
        std::fs::write(fleet.on_host(path), content)?;
        chmod(&fleet.on_host(path), mode)?;
    }
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    for (path, why) in [
        ("/etc/app/db.conf", "0600"),
        ("/etc/app/tls.key", "apply.redact"),
        ("/etc/app/host.conf", "0640"),
    ] {
        let line = run
            .stdout
            .lines()
            .skip_while(|l| !l.contains(&format!(" write {path} ")))
            .nth(1)
            .unwrap_or_default();
        assert!(
            line.starts_with(&format!("  content differs (secret: {why}, diff hidden): ")),
            "{path}: {}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("-open = old\n+open = new\n"),
        "{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn a_newline_in_a_host_file_name_cannot_forge_a_plan_line() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[
        (
            "outpost.toml",
            "[[tree]]\npath = \"/opt/t\"\nsource = \"t\"\n",
        ),
        ("t/a", "a\n"),
    ])?;
    fleet.ok(&["apply"])?;
    std::fs::write(
        fleet
            .on_host("/opt/t")
            .join("x\n+ write passwd (0644 root:root, 1 B)"),
        "",
    )?;
    std::fs::write(fleet.on_host("/opt/t").join("bell\u{7}"), "")?;
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (
            1,
            "- remove /opt/t/bell\\x07 (file), not in the tree /opt/t\n\
             - remove /opt/t/x\\n+ write passwd (0644 root:root, 1 B) (file), not in the tree /opt/t\n"
        )
    );
    fleet.ok(&["apply"])?;
    assert_eq!(fleet.outpost(&["plan"])?.code, 0);
    Ok(())
}
