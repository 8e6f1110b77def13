//! The time floor cannot be pushed: commit dates are judged against the key's window and for
//! plausibility, a refused date leaves the floor where it was, and no date crashes anything.

use crate::support::{Fleet, Result};

const YEAR_2100: u64 = 4_102_444_800;

/// A fleet that trusts one ordinary commit; returns the floor `status` reports.
fn trusting(fleet: &Fleet) -> Result<String> {
    fleet.commit("outpost.toml", "# v1\n")?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    let run = fleet.outpost_paths("import", &[&base])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok(fleet.status()?["trusted"]["floor"]
        .as_str()
        .ok_or("no floor")?
        .to_owned())
}

/// Imports `name` and returns its refusal reason, checking the floor did not move.
fn refused(fleet: &Fleet, name: &str, floor: &str) -> Result<String> {
    let bundle = fleet.bundle(name, &["main"])?;
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let prefix = format!("refused {}: ", bundle.display());
    let reason = run
        .stdout
        .trim_end()
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("not a refusal: {}", run.stdout))?
        .to_owned();
    assert_eq!(fleet.status()?["trusted"]["floor"].as_str(), Some(floor));
    Ok(reason)
}

#[test]
fn a_key_cannot_sign_a_commit_dated_after_its_valid_before() -> Result {
    let fleet = Fleet::new()?;
    fleet.write_allowed_signers(&[(
        "fleet@example.com",
        "fleet",
        "valid-before=\"20300101\",namespaces=\"git,outpost-bundle\"",
    )])?;
    // Far-future dates are allowed here, so that only the key's window can refuse.
    fleet.write_config("max_future = \"100years\"\n")?;
    let floor = trusting(&fleet)?;
    fleet.set_clock(YEAR_2100);
    let tip = fleet.commit("outpost.toml", "# 2100\n")?;
    let reason = refused(&fleet, "future.bundle", &floor)?;
    assert!(
        reason.starts_with(&format!(
            "tip commit {tip} of refs/heads/main refused: key "
        )),
        "{reason}"
    );
    assert!(
        reason.contains(
            "expired: valid before 2030-01-01T00:00:00Z, and the commit is dated 2100-01-01T00:00:00Z"
        ),
        "{reason}"
    );
    Ok(())
}

#[test]
fn a_commit_dated_far_in_the_future_is_refused_by_name() -> Result {
    let fleet = Fleet::new()?;
    let floor = trusting(&fleet)?;
    fleet.set_clock(YEAR_2100);
    let tip = fleet.commit("outpost.toml", "# 2100\n")?;
    let reason = refused(&fleet, "future.bundle", &floor)?;
    assert!(
        reason.starts_with(&format!(
            "tip commit {tip} is dated 2100-01-01T00:00:00Z, later than "
        )) && reason.ends_with(
            "the latest date accepted (trust.max_future past the newer of the time floor and the system clock); check the publisher's clock"
        ),
        "{reason}"
    );
    // The same commit within a wider max_future is accepted.
    fleet.write_config("max_future = \"100years\"\n")?;
    let bundle = fleet.path("future.bundle");
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(fleet.trusted()?, Some(tip));
    Ok(())
}

#[test]
fn a_commit_dated_past_year_9999_is_refused_and_status_still_works() -> Result {
    let fleet = Fleet::new()?;
    let floor = trusting(&fleet)?;
    let tip = fleet.craft_commit("Fleet <fleet@example.com> 253402300800 +0000")?;
    let reason = refused(&fleet, "y10k.bundle", &floor)?;
    assert_eq!(
        reason,
        format!(
            "tip commit {tip} has committer time 253402300800, which is past year 9999; the commit cannot be dated, recreate it with a correct date"
        )
    );
    for args in [&["status"][..], &["history"], &["status", "--json"]] {
        let run = fleet.outpost(args)?;
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    Ok(())
}

#[test]
fn a_commit_dated_before_1970_is_refused() -> Result {
    let fleet = Fleet::new()?;
    let floor = trusting(&fleet)?;
    let tip = fleet.craft_commit("Fleet <fleet@example.com> -86400 +0000")?;
    let reason = refused(&fleet, "old.bundle", &floor)?;
    assert!(
        reason.starts_with(&format!(
            "tip commit {tip} has committer time -86400, which is before 1970"
        )),
        "{reason}"
    );
    Ok(())
}

#[test]
fn status_and_history_survive_any_stored_time() -> Result {
    let fleet = Fleet::new()?;
    trusting(&fleet)?;
    let apply = fleet.outpost(&["apply"])?;
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    // A database written by anything: every time column at the extremes of i64.
    let db = rusqlite::Connection::open(fleet.state().join("outpost.db"))?;
    db.execute_batch(
        "UPDATE high_water SET floor = 9223372036854775807, accepted_at = -9223372036854775808;
         UPDATE commits SET committed = 9223372036854775807;
         UPDATE bundles SET received = -1;
         UPDATE deployments SET started = 9223372036854775807, finished = -9223372036854775808;",
    )?;
    drop(db);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["history"],
        &["history", "--json"],
    ] {
        let run = fleet.outpost(args)?;
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    Ok(())
}
