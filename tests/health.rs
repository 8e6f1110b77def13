//! The health gate on a host without systemd: `[[health]]` commands run after every
//! deployment; a failing one rolls the host back to the last good deployment, marks the commit
//! bad with the check and its output, and `apply` does not try it again until a newer commit
//! is trusted. Units are proven against a real systemd in `tests/units.rs`.

use crate::support::{Fleet, Result};

/// The check passes while `/etc/app.conf` (under the host root, the check's working
/// directory) says `good`.
const MANIFEST: &str = r#"
[[file]]
path = "/etc/app.conf"
source = "app.conf"

[[health]]
name = "app is good"
command = ["/bin/sh", "-c", "echo checking; grep -qx good etc/app.conf || { echo app.conf says $(cat etc/app.conf) >&2; exit 4; }"]
retries = 0
"#;

fn app_conf(fleet: &Fleet) -> Result<String> {
    Ok(std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?)
}

/// A fleet with a good deployment of `MANIFEST` plus `extra` manifest text.
fn good_deployed(extra: &str) -> Result<(Fleet, String)> {
    let fleet = Fleet::new()?;
    let good = fleet.publish(&[
        ("outpost.toml", &format!("{MANIFEST}{extra}")),
        ("app.conf", "good\n"),
    ])?;
    fleet.ok(&["apply"])?;
    Ok((fleet, good))
}

#[test]
fn a_failing_health_check_rolls_back_and_the_commit_is_not_tried_again() -> Result {
    let (fleet, good) = good_deployed("")?;
    let bad = fleet.publish(&[("app.conf", "broken\n")])?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: app is good: exited with status 4; output ends: checking\\napp.conf says broken; rolled back to {good}; {bad} is marked bad"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(app_conf(&fleet)?, "good\n");
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "success".into(), good.clone()),
            ("apply".into(), "failed".into(), bad.clone()),
            ("rollback".into(), "success".into(), good.clone()),
        ]
    );
    let status = fleet.status()?;
    assert_eq!(status["deployed"]["commit"], good.as_str());
    assert_eq!(status["bad"][0]["commit"], bad.as_str());
    assert_eq!(status["bad"][0]["check"], "app is good");
    assert_eq!(
        status["bad"][0]["output"],
        "checking\napp.conf says broken\n"
    );
    assert_eq!(status["drift"]["drifted"], false);
    // Said loudly: the human status starts with the bad commit and its output.
    let human = fleet.ok(&["status"])?.stdout;
    assert!(
        human.starts_with(&format!("BAD       {bad} marked ")),
        "{human}"
    );
    assert!(
        human.contains("          | app.conf says broken\n"),
        "{human}"
    );
    // History marks the failure and the rollback.
    let history = fleet.history()?;
    assert_eq!(history[0]["events"][0]["kind"], "rolled-back");
    let failed_events = history[1]["events"].as_array().ok_or("events")?;
    assert!(
        failed_events
            .iter()
            .any(|e| e["kind"] == "health-failed" && e["path"] == "app is good"),
        "{failed_events:?}"
    );
    let text = fleet.ok(&["history"])?.stdout;
    assert!(
        text.contains(&format!(
            "health gate failed for commit {bad}: app is good: exited with status 4"
        )),
        "{text}"
    );

    // The bad commit is not retried: apply stays at the good one and says why.
    let run = fleet.ok(&["apply"])?;
    assert!(run.stdout.starts_with("no changes"), "{}", run.stdout);
    assert!(run.stderr.contains("is marked bad"), "{}", run.stderr);
    assert_eq!(fleet.deployments()?.len(), 3);

    // A newer trusted commit clears the way.
    let fixed = fleet.publish(&[("app.conf", "good\n"), ("other", "x")])?;
    fleet.ok(&["apply"])?;
    assert_eq!(fleet.deployed()?.as_deref(), Some(fixed.as_str()));
    Ok(())
}

#[test]
fn a_health_check_that_never_exits_is_killed_with_its_process_group() -> Result {
    let (fleet, good) = good_deployed("")?;
    // The check starts a grandchild that would leave a mark after 4 s, then hangs.
    let hang = r#"
[[health]]
name = "hangs"
command = ["/bin/sh", "-c", "(sleep 4; touch grandchild-lived) & sleep 600"]
timeout = "1s"
retries = 0
"#;
    let bad = fleet.publish(&[("outpost.toml", &format!("{MANIFEST}{hang}"))])?;
    let started = std::time::Instant::now();
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: hangs: did not finish within 1s; killed with its process group; rolled back to {good}"
        )),
        "{}",
        run.stderr
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!fleet.host().join("grandchild-lived").exists());
    Ok(())
}

#[test]
fn a_health_command_that_does_not_exist_fails_the_gate_by_name() -> Result {
    let (fleet, good) = good_deployed("")?;
    let missing = "[[health]]\nname = \"probe\"\ncommand = [\"/nonexistent/probe\", \"--check\"]\nretries = 0\n";
    let bad = fleet.publish(&[("outpost.toml", &format!("{MANIFEST}{missing}"))])?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: probe: cannot run /nonexistent/probe: No such file or directory"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(fleet.deployed()?.as_deref(), Some(good.as_str()));
    assert_eq!(fleet.status()?["bad"][0]["check"], "probe");
    Ok(())
}

#[test]
fn a_health_check_printing_megabytes_keeps_only_its_last_four_kilobytes() -> Result {
    let (fleet, _) = good_deployed("")?;
    let flood = "[[health]]\nname = \"flood\"\ncommand = [\"/bin/sh\", \"-c\", \"head -c 20000000 /dev/zero | tr '\\\\0' x; echo; echo LAST LINE; exit 1\"]\nretries = 0\n";
    fleet.publish(&[("outpost.toml", &format!("{MANIFEST}{flood}"))])?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.len() < 8192,
        "{} bytes of error",
        run.stderr.len()
    );
    let output = fleet.status()?["bad"][0]["output"]
        .as_str()
        .ok_or("no output")?
        .to_owned();
    assert!(output.len() <= 4096 + 6, "{} bytes kept", output.len());
    assert!(output.starts_with("[...] xxx"), "{}", &output[..20]);
    assert!(output.ends_with("\nLAST LINE\n"));
    Ok(())
}

#[test]
fn with_no_earlier_good_deployment_the_host_stays_as_applied_and_says_so() -> Result {
    let fleet = Fleet::new()?;
    let bad = fleet.publish(&[("outpost.toml", MANIFEST), ("app.conf", "broken\n")])?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "there is no earlier good deployment to roll back to, so the host is left as applied"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(app_conf(&fleet)?, "broken\n");
    let status = fleet.status()?;
    assert_eq!(status["bad"][0]["commit"], bad.as_str());
    assert_eq!(status["deployed"], serde_json::Value::Null);
    // Nothing good to stay at: apply says what to do.
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "trusted commit {bad} is marked bad (its health gate failed: app is good: exited with status 4) and no deployment of a good commit is left to stay at; import a newer commit"
        )),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn a_crash_during_the_automatic_rollback_is_resumed_at_the_next_start() -> Result {
    let (fleet, good) = good_deployed("")?;
    let bad = fleet.publish(&[("app.conf", "broken\n")])?;
    let run = fleet.outpost_env(&["apply"], "OUTPOST_FAULT_ROLLBACK_AFTER_STEPS", "0")?;
    assert_ne!(run.code, 0);
    assert_ne!(run.code, 1, "the process was aborted: {}", run.stderr);
    // Cut short after its journal: the bad commit's file is still there.
    assert_eq!(app_conf(&fleet)?, "broken\n");
    let run = fleet.ok(&["apply"])?;
    assert!(
        run.stdout
            .contains(&format!("resumed the interrupted rollback of {good}")),
        "{}",
        run.stdout
    );
    assert_eq!(app_conf(&fleet)?, "good\n");
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "success".into(), good.clone()),
            ("apply".into(), "failed".into(), bad.clone()),
            ("rollback".into(), "interrupted".into(), good.clone()),
            ("rollback".into(), "success".into(), good.clone()),
        ]
    );
    assert_eq!(fleet.status()?["bad"][0]["commit"], bad.as_str());
    Ok(())
}

#[test]
fn a_manual_rollback_runs_the_gate_too_and_a_failure_is_recorded() -> Result {
    let blocked = "[[health]]\nname = \"not blocked\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e etc/block\"]\nretries = 0\n";
    let (fleet, first) = good_deployed(blocked)?;
    let second = fleet.publish(&[("x", "1")])?;
    fleet.ok(&["apply"])?;
    // Something on the host now fails the check, whatever the commit.
    std::fs::write(fleet.on_host("/etc/block"), "")?;
    let run = fleet.outpost(&["rollback"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "commit {first} failed its health gate: not blocked: exited with status 1"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        fleet.deployments()?,
        [
            ("apply".into(), "success".into(), first.clone()),
            ("apply".into(), "success".into(), second.clone()),
            ("rollback".into(), "failed".into(), first.clone()),
        ]
    );
    // Only the commit the rollback left is bad; a failed rollback does not cascade.
    let bad = fleet.status()?["bad"].clone();
    assert_eq!(bad.as_array().map(Vec::len), Some(1));
    assert_eq!(bad[0]["commit"], second.as_str());
    assert_eq!(bad[0]["check"], serde_json::Value::Null);
    Ok(())
}
