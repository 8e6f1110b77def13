//! Bundles that stock git makes: tags (lightweight, annotated, SSH-signed), other branches,
//! notes, a detached HEAD, `--since`, v3, long prerequisite subjects. Each is accepted with the
//! tracked tip trusted, only the tracked ref moves, and `git fsck` over the store passes.

use std::path::Path;
use std::process::Command;

use crate::support::{Fleet, Result, run};

/// A publisher repository as fleets keep one: main with a merge of a second branch, release
/// tags of every kind, and notes. Returns the tip of main.
fn release_repository(fleet: &Fleet) -> Result<String> {
    fleet.commit("outpost.toml", "# v1\n")?;
    fleet.git_run(&["tag", "v1"])?;
    fleet.git_run(&["tag", "-a", "-m", "release 1.1", "v1.1"])?;
    fleet.git_run(&["checkout", "-q", "-b", "feature"])?;
    fleet.commit("feature.txt", "feature\n")?;
    fleet.git_run(&["checkout", "-q", "main"])?;
    fleet.commit("outpost.toml", "# v2\n")?;
    fleet.git_run(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={}", fleet.key("fleet").display()),
        "merge",
        "-q",
        "-S",
        "--no-edit",
        "feature",
    ])?;
    fleet.git_run(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={}", fleet.key("fleet").display()),
        "tag",
        "-s",
        "-m",
        "release 2",
        "v2",
    ])?;
    fleet.git_run(&["notes", "add", "-m", "deployed to berlin"])?;
    fleet.git_run(&["rev-parse", "main"])
}

/// Imports `bundle` and checks that it was accepted with `tip` trusted, that only the tracked
/// ref exists in the store, and that git finds the store sound.
fn assert_accepted(fleet: &Fleet, bundle: &Path, tip: &str) -> Result {
    let run_ = fleet.outpost_paths("import", &[bundle])?;
    assert_eq!(run_.code, 0, "{}{}", run_.stdout, run_.stderr);
    assert!(run_.stdout.starts_with("accepted "), "{}", run_.stdout);
    assert_eq!(fleet.trusted()?.as_deref(), Some(tip));
    let objects = fleet.state().join("objects");
    let refs = run(Command::new("git")
        .arg("--git-dir")
        .arg(&objects)
        .args(["for-each-ref", "--format=%(refname) %(objectname)"]))?;
    assert_eq!(refs, format!("refs/heads/main {tip}"));
    run(Command::new("git").arg("--git-dir").arg(&objects).args([
        "fsck",
        "--no-dangling",
        "--no-progress",
    ]))?;
    Ok(())
}

#[test]
fn bundle_of_everything_with_tags_branches_and_notes() -> Result {
    let fleet = Fleet::new()?;
    let tip = release_repository(&fleet)?;
    let bundle = fleet.bundle("all.bundle", &["--all"])?;
    assert_accepted(&fleet, &bundle, &tip)
}

#[test]
fn bundle_of_main_and_a_release_tag() -> Result {
    let fleet = Fleet::new()?;
    let tip = release_repository(&fleet)?;
    let bundle = fleet.bundle("main-v1.bundle", &["main", "v1", "v2"])?;
    assert_accepted(&fleet, &bundle, &tip)
}

#[test]
fn bundle_of_tags_and_main_in_version_3() -> Result {
    let fleet = Fleet::new()?;
    let tip = release_repository(&fleet)?;
    let bundle = fleet.path("v3.bundle");
    let path = bundle.to_str().ok_or("path")?;
    fleet.git_run(&[
        "bundle",
        "create",
        "-q",
        "--version=3",
        path,
        "--tags",
        "main",
    ])?;
    fleet.sign(&bundle, "fleet", "outpost-bundle")?;
    let text = std::fs::read(&bundle)?;
    assert!(text.starts_with(b"# v3 git bundle\n"));
    assert_accepted(&fleet, &bundle, &tip)
}

#[test]
fn bundle_made_on_a_detached_head() -> Result {
    let fleet = Fleet::new()?;
    let tip = release_repository(&fleet)?;
    fleet.git_run(&["checkout", "-q", "--detach", "v1"])?;
    let bundle = fleet.bundle("detached.bundle", &["--all"])?;
    let text = std::fs::read(&bundle)?;
    assert!(
        text.windows(5).any(|w| w == b" HEAD"),
        "the bundle lists HEAD"
    );
    assert_accepted(&fleet, &bundle, &tip)
}

#[test]
fn incremental_bundle_since_a_date_with_tags() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    assert_accepted(&fleet, &base, &fleet.git_run(&["rev-parse", "main"])?)?;
    let base_time: u64 = fleet
        .git_run(&["log", "-1", "--format=%ct", "main"])?
        .parse()?;
    let tip = fleet.commit("outpost.toml", "# v2\n")?;
    fleet.git_run(&["tag", "-a", "-m", "release 2", "v2"])?;
    let bundle = fleet.bundle(
        "since.bundle",
        &[&format!("--since={}", base_time + 1), "main", "v2"],
    )?;
    let text = std::fs::read(&bundle)?;
    assert!(
        text.split(|&b| b == b'\n')
            .nth(1)
            .is_some_and(|l| l.starts_with(b"-")),
        "the bundle has a prerequisite"
    );
    assert_accepted(&fleet, &bundle, &tip)
}

#[test]
fn prerequisite_with_a_ten_kilobyte_subject() -> Result {
    let fleet = Fleet::new()?;
    // git folds the whole first paragraph into the subject it writes after the id.
    let paragraph = "a very long line of release notes ".repeat(300);
    std::fs::write(fleet.repo().join("outpost.toml"), "# v1\n")?;
    fleet.git_run(&["add", "-A"])?;
    fleet.git_run(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={}", fleet.key("fleet").display()),
        "commit",
        "-q",
        "-S",
        "-m",
        &paragraph,
    ])?;
    let base_tip = fleet.git_run(&["rev-parse", "main"])?;
    fleet.git_run(&["tag", "base"])?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    assert_accepted(&fleet, &base, &base_tip)?;
    let tip = fleet.commit("outpost.toml", "# v2\n")?;
    let bundle = fleet.bundle("next.bundle", &["base..main"])?;
    let header_line = std::fs::read(&bundle)?
        .split(|&b| b == b'\n')
        .nth(1)
        .map(<[u8]>::len)
        .ok_or("no prerequisite line")?;
    assert!(
        header_line > 10_000,
        "prerequisite line is {header_line} bytes"
    );
    assert_accepted(&fleet, &bundle, &tip)
}

#[test]
fn a_tag_named_like_the_branch_does_not_move_it() -> Result {
    let fleet = Fleet::new()?;
    let tip = fleet.commit("outpost.toml", "# v1\n")?;
    fleet.commit_as("outpost.toml", "# unsigned\n", None)?;
    // refs/tags/main points at an unsigned commit; only refs/heads/main is tracked.
    fleet.git_run(&["tag", "main", "HEAD"])?;
    fleet.git_run(&["reset", "-q", "--hard", &tip])?;
    let bundle = fleet.bundle("tagged.bundle", &["refs/heads/main", "refs/tags/main"])?;
    assert_accepted(&fleet, &bundle, &tip)
}
