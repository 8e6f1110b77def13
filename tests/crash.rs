//! Crash safety: `outpost apply` and `outpost rollback` killed at every step of a deployment
//! of a few hundred files.
//!
//! The binary aborts (SIGABRT, no unwinding, no destructors) after N steps when
//! `OUTPOST_FAULT_AFTER_STEPS=N` is set. For every third (rollback: fifth) N over the whole
//! deployment, on a fresh copy of the host and the state: each managed file must be entirely
//! its old or its new version, and after a restart no temp file may remain, SQLite must pass
//! `integrity_check`, and the next apply must converge to the interrupted deployment's target.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::{BIN, Fleet, Result, run, walk};

const FILES: usize = 240;

fn version(v: u32) -> Vec<(String, String)> {
    (0..FILES)
        .filter(|i| v == 1 || i % 7 != 3) // v2 drops some files: they are pruned from the tree
        .map(|i| {
            (
                format!("files/app/d{:02}/f{i:03}.conf", i % 12),
                format!("file {i} version {v}\n{}", "x".repeat(i * 13 % 900)),
            )
        })
        .collect()
}

const MANIFEST_V1: &str = "[[tree]]\npath = \"/opt/app\"\nsource = \"files/app\"\n";
const MANIFEST_V2: &str = "[[tree]]\npath = \"/opt/app\"\nsource = \"files/app\"\nmode = \"0600\"\n\n[[file]]\npath = \"/etc/app.conf\"\nsource = \"files/app/d00/f000.conf\"\n";

fn publish(fleet: &Fleet, v: u32, manifest: &str) -> Result<String> {
    let _ = std::fs::remove_dir_all(fleet.repo().join("files"));
    let files = version(v);
    let mut all: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    all.push(("outpost.toml", manifest));
    fleet.publish(&all)
}

/// Content and mode of every file under `dir`.
fn files_under(dir: &Path) -> Result<BTreeMap<String, (String, u32)>> {
    let mut out = BTreeMap::new();
    for (rel, path, meta) in walk(dir)? {
        if !meta.is_dir() {
            let mode = meta.permissions().mode() & 0o777;
            out.insert(
                rel.display().to_string(),
                (std::fs::read_to_string(&path)?, mode),
            );
        }
    }
    Ok(out)
}

/// The files of the tree at `v` with their mode, as `files_under` gives them.
fn expected(v: u32, mode: u32) -> BTreeMap<String, (String, u32)> {
    version(v)
        .into_iter()
        .map(|(p, c)| (p.trim_start_matches("files/app/").to_owned(), (c, mode)))
        .collect()
}

/// Copies the fleet's host, state and config into `template`.
fn template(fleet: &Fleet, name: &str) -> Result<std::path::PathBuf> {
    let template = fleet.path(name);
    std::fs::create_dir(&template)?;
    for part in ["host", "state", "config.toml", "allowed_signers"] {
        run(Command::new("cp")
            .arg("-a")
            .arg(fleet.path(part))
            .arg(&template))?;
    }
    Ok(template)
}

fn outpost(config: &Path, command: &str, fault: Option<usize>) -> Result<std::process::Output> {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).arg(command);
    if let Some(n) = fault {
        cmd.env("OUTPOST_FAULT_AFTER_STEPS", n.to_string());
    }
    Ok(cmd.output()?)
}

/// The tree's files and what each may be after a kill: entirely `before` or `after`.
type Versions = BTreeMap<String, (String, u32)>;

/// After a kill (`what` says which): every file of the tree under `dir` is entirely `before`
/// or `after` (or an outpost temp file), with one of the two modes.
fn assert_old_or_new(dir: &Path, what: &str, before: &Versions, after: &Versions) -> Result {
    for (rel, (content, mode)) in files_under(&dir.join("host/opt/app"))? {
        let is_old = before.get(&rel).is_some_and(|(c, _)| *c == content);
        let is_new = after.get(&rel).is_some_and(|(c, _)| *c == content);
        let name_is_temp = rel.contains(".outpost-tmp.");
        assert!(
            is_old || is_new || name_is_temp,
            "{what}: {rel} is neither old nor new: {content:?}"
        );
        assert!(
            mode == 0o644 || mode == 0o600,
            "{what}: {rel} has mode {mode:o}"
        );
    }
    Ok(())
}

/// Restarts (`apply`) the copy in `dir` after a kill: no temp file may remain, the database
/// must be sound, the tree must be at `after` (the interrupted deployment's own target),
/// deployed as `target`, and `plan` clean.
fn assert_restart_converges(
    dir: &Path,
    what: &str,
    (after, target): &(Versions, String),
) -> Result {
    let config = dir.join("config.toml");
    let rerun = outpost(&config, "apply", None)?;
    assert!(
        rerun.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let temps = run(Command::new("find")
        .arg(dir.join("host"))
        .args(["-name", ".outpost-tmp.*"]))?;
    assert_eq!(temps, "", "{what}: temp files remain");
    let db = rusqlite::Connection::open(dir.join("state/outpost.db"))?;
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok", "{what}");
    assert_eq!(
        files_under(&dir.join("host/opt/app"))?,
        *after,
        "{what}: the host did not converge"
    );
    let status = outpost(&config, "status", None)?;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&format!("deployed  {target} ")),
        "{what}: {status}"
    );
    let plan = outpost(&config, "plan", None)?;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&plan.stdout)
    );
    Ok(())
}

/// Runs `command` killed after every `stride`th step on a fresh copy of `template`, checking
/// each kill and each restart as above. Returns how many kills there were.
fn sweep(
    fleet: &Fleet,
    template: &Path,
    command: &str,
    stride: usize,
    before: &Versions,
    after: &(Versions, String),
) -> Result<usize> {
    for (kills, n) in (0..).step_by(stride).enumerate() {
        let dir = fleet.path(&format!("{command}-crash-{n}"));
        run(Command::new("cp").arg("-a").arg(template).arg(&dir))?;
        let status = outpost(&dir.join("config.toml"), command, Some(n))?;
        let what = format!("{command} after {n} steps");
        assert_old_or_new(&dir, &what, before, &after.0)?;
        if status.status.success() {
            assert!(
                n > FILES,
                "the {command} should take more than {FILES} steps, took {n}"
            );
            std::fs::remove_dir_all(&dir)?;
            return Ok(kills);
        }
        assert_restart_converges(&dir, &what, after)?;
        std::fs::remove_dir_all(&dir)?;
    }
    Err("unreachable: the sweep ends when a run is not killed".into())
}

#[test]
fn apply_killed_at_every_step_leaves_old_or_new_files_and_converges() -> Result {
    let fleet = Fleet::new()?;
    publish(&fleet, 1, MANIFEST_V1)?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let old = files_under(&fleet.on_host("/opt/app"))?;
    assert_eq!(old, expected(1, 0o644));
    let v2 = publish(&fleet, 2, MANIFEST_V2)?;
    let template = template(&fleet, "template")?;
    // Every third step, over the whole deployment: each kind of step is hit many times while
    // the test stays well under a minute.
    let after = (expected(2, 0o600), v2);
    let kills = sweep(&fleet, &template, "apply", 3, &old, &after)?;
    assert!(kills > FILES / 3, "only {kills} kills");
    Ok(())
}

/// The same for a rollback from v2 to v1: the restart finishes the rollback (v1, the commit
/// it went to), never the commit it left.
#[test]
fn rollback_killed_at_every_step_leaves_old_or_new_files_and_is_resumed() -> Result {
    let fleet = Fleet::new()?;
    let v1 = publish(&fleet, 1, MANIFEST_V1)?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let v2 = publish(&fleet, 2, MANIFEST_V2)?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let template = template(&fleet, "template")?;
    let after = (expected(1, 0o644), v1);
    let kills = sweep(
        &fleet,
        &template,
        "rollback",
        5,
        &expected(2, 0o600),
        &after,
    )?;
    assert!(kills > FILES / 5, "only {kills} kills");

    // And with a real SIGKILL at moments through the rollback, wherever they fall: before its
    // journal nothing happened (the host stays at v2), after it the restart finishes it.
    let unchanged = (expected(2, 0o600), v2);
    let mut journalled = 0;
    for delay in [10, 40, 80, 160, 320, 640] {
        let dir = fleet.path(&format!("rollback-sigkill-{delay}"));
        run(Command::new("cp").arg("-a").arg(&template).arg(&dir))?;
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("rollback")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        child.kill()?;
        child.wait()?;
        let what = format!("rollback killed after {delay} ms");
        assert_old_or_new(&dir, &what, &expected(2, 0o600), &after.0)?;
        let db = rusqlite::Connection::open(dir.join("state/outpost.db"))?;
        let rollbacks: i64 = db.query_row(
            "SELECT count(*) FROM deployments WHERE kind = 'rollback'",
            [],
            |r| r.get(0),
        )?;
        drop(db);
        if rollbacks > 0 {
            journalled += 1;
            assert_restart_converges(&dir, &what, &after)?;
        } else {
            assert_restart_converges(&dir, &what, &unchanged)?;
        }
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("{journalled} of 6 SIGKILLs fell after the rollback's journal");
    Ok(())
}

/// Killed right after the durability barrier of the batched file writes, before any rename:
/// every file is still old (the new ones exist only as temp files), and the restart removes
/// the temp files and converges.
#[test]
fn apply_killed_between_the_durability_barrier_and_the_renames_converges() -> Result {
    let fleet = Fleet::new()?;
    publish(&fleet, 1, MANIFEST_V1)?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let old = files_under(&fleet.on_host("/opt/app"))?;
    let v2 = publish(&fleet, 2, MANIFEST_V2)?;
    let killed = fleet.outpost_env(&["apply"], "OUTPOST_FAULT_AFTER_STEPS", "barrier")?;
    assert_ne!(killed.code, 0, "the apply was not aborted");
    // No rename happened: each file is its old content; the new contents wait in temp files.
    let now = files_under(&fleet.on_host("/opt/app"))?;
    let (temps, files): (Vec<_>, Vec<_>) = now
        .into_iter()
        .partition(|(rel, _)| rel.contains(".outpost-tmp."));
    assert!(!temps.is_empty(), "the batch's temp files are there");
    for (rel, (content, _)) in &files {
        assert_eq!(
            Some(content),
            old.get(rel).map(|(c, _)| c),
            "{rel} changed before the renames"
        );
    }
    assert_restart_converges(
        fleet.dir(),
        "apply killed at the barrier",
        &(expected(2, 0o600), v2),
    )?;
    Ok(())
}
