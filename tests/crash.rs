//! Crash safety: `outpost apply` killed at every step of a deployment of a few hundred files.
//!
//! The binary aborts (SIGABRT, no unwinding, no destructors) after N steps when
//! `OUTPOST_FAULT_AFTER_STEPS=N` is set. For every third N over the whole deployment, on a fresh copy
//! of the host and the state: each managed file must be entirely its old or its new version,
//! and after a restart no temp file may remain, SQLite must pass `integrity_check`, and the
//! next apply must converge.

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

#[test]
fn apply_killed_at_every_step_leaves_old_or_new_files_and_converges() -> Result {
    let fleet = Fleet::new()?;
    publish(&fleet, 1, MANIFEST_V1)?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let old = files_under(&fleet.on_host("/opt/app"))?;
    publish(&fleet, 2, MANIFEST_V2)?;
    let template = fleet.path("template");
    std::fs::create_dir(&template)?;
    for name in ["host", "state", "config.toml", "allowed_signers"] {
        run(Command::new("cp")
            .arg("-a")
            .arg(fleet.path(name))
            .arg(&template))?;
    }
    let new: BTreeMap<String, (String, u32)> = version(2)
        .into_iter()
        .map(|(p, c)| (p.trim_start_matches("files/app/").to_owned(), (c, 0o600)))
        .collect();

    // Every third step, over the whole deployment: each kind of step is hit many times while
    // the test stays well under a minute.
    for n in (0..).step_by(3) {
        let dir = fleet.path(&format!("crash-{n}"));
        run(Command::new("cp").arg("-a").arg(&template).arg(&dir))?;
        let config = dir.join("config.toml");
        let status = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("apply")
            .env("OUTPOST_FAULT_AFTER_STEPS", n.to_string())
            .output()?;
        let app = dir.join("host/opt/app");
        for (rel, (content, mode)) in files_under(&app)? {
            let is_old = old.get(&rel).is_some_and(|(c, _)| *c == content);
            let is_new = new.get(&rel).is_some_and(|(c, _)| *c == content);
            let name_is_temp = rel.contains(".outpost-tmp.");
            assert!(
                is_old || is_new || name_is_temp,
                "after {n} steps {rel} is neither old nor new: {content:?}"
            );
            assert!(
                mode == 0o644 || mode == 0o600,
                "after {n} steps {rel} has mode {mode:o}"
            );
        }
        if status.status.success() {
            assert!(
                n > FILES,
                "the deployment should take more than {FILES} steps, took {n}"
            );
            std::fs::remove_dir_all(&dir)?;
            break;
        }
        // Restart: the next apply recovers and converges.
        let rerun = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("apply")
            .output()?;
        assert!(
            rerun.status.success(),
            "after {n} steps: {}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        let temps = run(Command::new("find")
            .arg(dir.join("host"))
            .args(["-name", ".outpost-tmp.*"]))?;
        assert_eq!(temps, "", "after {n} steps temp files remain");
        let db = rusqlite::Connection::open(dir.join("state/outpost.db"))?;
        let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(check, "ok", "after {n} steps");
        assert_eq!(
            files_under(&app)?,
            new,
            "after {n} steps the host did not converge"
        );
        let plan = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("plan")
            .output()?;
        assert_eq!(
            plan.status.code(),
            Some(0),
            "after {n} steps: {}",
            String::from_utf8_lossy(&plan.stdout)
        );
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
