//! The accepted paths: import, incremental bundles, sticks, replays, verify, status.

use std::path::Path;

use crate::support::{Fleet, Result};

#[test]
fn full_bundle_becomes_trusted_and_status_shows_it() -> Result {
    let fleet = Fleet::new()?;
    let tip = fleet.commit("outpost.toml", "# first\n")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with(&format!("accepted {}: {} \"update outpost.toml\" signed by fleet@example.com, first trusted commit", bundle.display(), &tip[..12])), "{}", run.stdout);

    let status = fleet.status()?;
    assert_eq!(status["trusted"]["commit"], tip);
    assert_eq!(status["trusted"]["signer"], "fleet@example.com");
    assert_eq!(status["trusted"]["time"], "2026-09-21T14:13:20Z");
    assert!(status["deployed"].is_null());
    let bundles = status["bundles"].as_array().ok_or("bundles")?;
    assert_eq!(bundles.len(), 1);
    let bytes = std::fs::read(&bundle)?;
    assert_eq!(bundles[0]["size"], bytes.len() as u64);
    assert_eq!(
        bundles[0]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    assert_eq!(bundles[0]["source"], bundle.display().to_string());
    assert_eq!(bundles[0]["verdict"], "accepted");
    assert!(
        bundles[0]["received"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(status["rejected"].as_array().map(Vec::len), Some(0));

    // The tracked ref in the object store follows, and git itself can read the store.
    let refs = crate::support::run(
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(fleet.state().join("objects"))
            .args(["rev-parse", "refs/heads/main"]),
    )?;
    assert_eq!(refs, tip);
    crate::support::run(
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(fleet.state().join("objects"))
            .args(["fsck", "--strict"]),
    )?;
    Ok(())
}

#[test]
fn human_status_reads_well() -> Result {
    let fleet = Fleet::new()?;
    let run = fleet.outpost(&["status"])?;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("trusted   nothing yet; import a signed bundle with `outpost import FILE`"),
        "{}",
        run.stdout
    );
    let tip = fleet.commit("a", "1")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    fleet.outpost_paths("import", &[&bundle])?;
    let run = fleet.outpost(&["status"])?;
    assert!(
        run.stdout.contains(&format!(
            "trusted   {tip}\n          signed by fleet@example.com (SHA256:"
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("bundles   1 cached"), "{}", run.stdout);
    assert!(
        !fleet.state().join("staging").exists(),
        "import leaves no staging behind"
    );
    Ok(())
}

#[test]
fn incremental_bundle_applies_after_its_base_on_a_stick() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    fleet.commit("a", "2")?;
    let tip = fleet.commit("a", "3")?;
    let update = fleet.bundle("update.bundle", &["main~2..main"])?;
    // A stick: the incremental bundle sorts first by name, in the outpost/ folder, with junk.
    let stick = fleet.path("stick");
    std::fs::create_dir_all(stick.join("outpost"))?;
    for (from, to) in [
        (&base, "outpost/z-base.bundle"),
        (&update, "a-update.bundle"),
    ] {
        std::fs::copy(from, stick.join(to))?;
        std::fs::copy(
            format!("{}.sig", from.display()),
            stick.join(format!("{to}.sig")),
        )?;
    }
    std::fs::write(stick.join("._a-update.bundle"), "resource fork")?;
    std::fs::write(stick.join("notes.txt"), "hello")?;
    let run = fleet.outpost_paths("import", &[&stick])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("accepted ") && lines[0].contains("z-base.bundle"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].contains("a-update.bundle") && lines[1].contains("fast-forward"),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.trusted()?, Some(tip));
    Ok(())
}

#[test]
fn importing_the_same_bundle_twice_is_a_no_op() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&bundle])?.code, 0);
    let objects = fleet.objects_snapshot()?;
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("no-op") && run.stdout.contains("already imported"),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.objects_snapshot()?, objects);
    assert_eq!(fleet.status()?["bundles"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[test]
fn verify_answers_without_changing_anything() -> Result {
    let fleet = Fleet::new()?;
    let first = fleet.commit("a", "1")?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&base])?.code, 0);
    let tip = fleet.commit("a", "2")?;
    let update = fleet.bundle("update.bundle", &["main~1..main"])?;
    let before = Fleet::snapshot(&fleet.state())?;
    // verify's scratch space goes to TMPDIR: a private one, so other runs cannot be counted.
    let tmp = fleet.path("tmp");
    std::fs::create_dir(&tmp)?;
    let verify = |json: bool| -> Result<crate::support::Run> {
        let mut cmd = fleet.command(&["verify"]);
        if json {
            cmd.arg("--json");
        }
        Ok(cmd.arg(&update).env("TMPDIR", &tmp).output()?.into())
    };

    let run = verify(false)?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("accepted {}: {}", update.display(), &tip[..12]))
            && run
                .stdout
                .contains(&format!("fast-forward from {}", &first[..12])),
        "{}",
        run.stdout
    );
    let run = verify(true)?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["verdict"], "accepted");
    assert_eq!(json["commit"], tip);

    assert_eq!(
        Fleet::snapshot(&fleet.state())?,
        before,
        "verify wrote to the state dir"
    );
    assert_eq!(
        std::fs::read_dir(&tmp)?.count(),
        0,
        "verify left scratch files behind"
    );
    assert_eq!(fleet.trusted()?, Some(first));
    Ok(())
}

#[test]
fn verify_on_a_fresh_host_creates_no_state() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    let run = fleet.outpost_paths("verify", &[&bundle])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("first trusted commit"),
        "{}",
        run.stdout
    );
    assert!(!fleet.state().exists());
    Ok(())
}

#[test]
fn rewind_is_accepted_when_the_config_allows_it() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("a", "1")?;
    fleet.commit("a", "2")?;
    let old = fleet.bundle("old.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&old])?.code, 0);
    fleet.git_run(&["reset", "-q", "--hard", "HEAD~1"])?;
    let rewritten = fleet.commit("a", "other")?;
    let bundle = fleet.bundle("rewritten.bundle", &["main"])?;
    fleet.write_config("allow_rewind = true\n")?;
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("REWIND from"), "{}", run.stdout);
    assert_eq!(fleet.trusted()?, Some(rewritten));
    Ok(())
}

#[test]
fn import_without_bundles_says_so() -> Result {
    let fleet = Fleet::new()?;
    let empty = fleet.path("empty-stick");
    std::fs::create_dir(&empty)?;
    let run = fleet.outpost_paths("import", &[Path::new(&empty)])?;
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("no *.bundle files in"),
        "{}",
        run.stderr
    );
    Ok(())
}
