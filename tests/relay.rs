//! Offline sites: the report a host writes onto a stick, and `export` relaying bundles from a
//! current host to another one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BIN, Fleet, Result, Run};

/// A fleet whose host imported a full bundle and two incremental ones; returns the bundles as
/// received, oldest first, and the trusted tip.
fn relaying_fleet() -> Result<(Fleet, Vec<PathBuf>, String)> {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    fleet.git_run(&["tag", "v1"])?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    fleet.commit("outpost.toml", "# v2\n")?;
    fleet.git_run(&["tag", "v2"])?;
    let second = fleet.bundle("second.bundle", &["v1..main"])?;
    let tip = fleet.commit("outpost.toml", "# v3\n")?;
    let third = fleet.bundle("third.bundle", &["v2..main"])?;
    for bundle in [&base, &second, &third] {
        let run = fleet.outpost_paths("import", &[bundle])?;
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    }
    Ok((fleet, vec![base, second, third], tip))
}

/// A second host beside the fleet's: its own config, state dir and host root.
fn second_host(fleet: &Fleet) -> Result<PathBuf> {
    let text = std::fs::read_to_string(fleet.config())?
        .replace("dir = \"state\"", "dir = \"state2\"")
        .replace("root = \"host\"", "root = \"host2\"")
        .replace("name = \"test-host\"", "name = \"second-host\"");
    let config = fleet.path("config2.toml");
    std::fs::write(&config, text)?;
    std::fs::create_dir_all(fleet.path("host2"))?;
    Ok(config)
}

fn outpost_with(config: &Path, args: &[&str]) -> Result<Run> {
    Ok(Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("OUTPOST_CONFIG")
        .output()?
        .into())
}

fn exported_bundles(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("outpost"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bundle"))
        .collect();
    files.sort();
    Ok(files)
}

#[test]
fn export_then_import_on_a_fresh_host_reaches_the_same_commit() -> Result {
    let (fleet, received, tip) = relaying_fleet()?;
    let stick = fleet.path("stick");
    let run = fleet.outpost_paths("export", &[&stick])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with(&format!("reaches {tip}\n")),
        "{}",
        run.stdout
    );
    // Byte for byte what was received, signatures included.
    let exported = exported_bundles(&stick)?;
    assert_eq!(exported.len(), 3);
    for (sent, got) in received.iter().zip(&exported) {
        assert_eq!(
            std::fs::read(sent)?,
            std::fs::read(got)?,
            "{}",
            got.display()
        );
        let sig = |p: &Path| std::fs::read(format!("{}.sig", p.display()));
        assert_eq!(sig(sent)?, sig(got)?);
    }
    assert!(stick.join("outpost/README.txt").exists());
    let second = second_host(&fleet)?;
    let run = outpost_with(&second, &["import", stick.to_str().ok_or("path")?])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let status = outpost_with(&second, &["status", "--json"])?;
    let status: serde_json::Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(status["trusted"]["commit"].as_str(), Some(tip.as_str()));
    Ok(())
}

#[test]
fn export_since_a_commit_writes_only_what_that_host_lacks() -> Result {
    let (fleet, received, tip) = relaying_fleet()?;
    let v2 = fleet.git_run(&["rev-parse", "v2"])?;
    let stick = fleet.path("stick");
    let run = fleet.outpost(&["export", stick.to_str().ok_or("path")?, "--since", &v2])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let exported = exported_bundles(&stick)?;
    assert_eq!(exported.len(), 1);
    assert_eq!(std::fs::read(&received[2])?, std::fs::read(&exported[0])?);
    assert!(
        run.stdout.ends_with(&format!("reaches {tip}\n")),
        "{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn export_with_nothing_trusted_says_so() -> Result {
    let fleet = Fleet::new()?;
    let run = fleet.outpost_paths("export", &[&fleet.path("stick")])?;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim_end(),
        "outpost: error: nothing is trusted yet: there is nothing to export"
    );
    Ok(())
}

#[test]
fn import_with_report_writes_the_hosts_report_onto_the_stick() -> Result {
    let fleet = Fleet::new()?;
    let tip = fleet.commit("outpost.toml", "# v1\n")?;
    let stick = fleet.path("stick");
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    fleet.move_bundle(&bundle, &stick.join("outpost"))?;
    std::fs::write(stick.join("outpost/junk.bundle"), "junk")?;
    std::fs::write(stick.join("outpost/junk.bundle.sig"), "junk")?;
    let run = fleet.outpost(&["import", stick.to_str().ok_or("path")?, "--report"])?;
    assert_eq!(
        run.code, 1,
        "the junk bundle is refused: {}{}",
        run.stdout, run.stderr
    );
    let path = stick.join("outpost/reports/test-host.json");
    assert!(run.stderr.contains("report written to"), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    assert_eq!(report["schema"], 1);
    assert_eq!(report["host"], "test-host");
    assert_eq!(report["labels"]["role"], "camera");
    assert_eq!(report["trusted"]["commit"].as_str(), Some(tip.as_str()));
    assert_eq!(report["outpost_version"], env!("CARGO_PKG_VERSION"));
    assert!(report["deployed"].is_null());
    assert_eq!(report["refused"].as_array().map(Vec::len), Some(1));
    assert!(report["deployments"].is_array() && report["bad_commits"].is_array());
    // No temp files left beside it.
    let names: Vec<String> = std::fs::read_dir(stick.join("outpost/reports"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["test-host.json"]);
    Ok(())
}

#[test]
fn a_symlinked_reports_folder_is_not_followed() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let stick = fleet.path("stick");
    std::fs::create_dir_all(stick.join("outpost"))?;
    let elsewhere = fleet.path("elsewhere");
    std::fs::create_dir(&elsewhere)?;
    std::os::unix::fs::symlink(&elsewhere, stick.join("outpost/reports"))?;
    let run = fleet.outpost(&["import", stick.to_str().ok_or("path")?, "--report"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "{} is a symbolic link; the report is not written through it",
            stick.join("outpost/reports").display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(&elsewhere)?.count(), 0);
    Ok(())
}
