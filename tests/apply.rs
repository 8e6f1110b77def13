//! The reconciler from the built binary: apply, plan, drift repair, prune, rollback, history.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Fleet, Result};

const MANIFEST: &str = r#"
[[include]]
path = "roles/camera.toml"
when = { labels = { role = "camera" } }

[[include]]
path = "roles/kiosk.toml"
when = { labels = { role = "kiosk" } }

[[file]]
path = "/etc/chrony/chrony.conf"
source = "files/chrony.conf"
mode = "0640"

[[directory]]
path = "/var/lib/camera"
mode = "0750"

[[symlink]]
path = "/etc/localtime"
target = "/usr/share/zoneinfo/Europe/Berlin"

[[tree]]
path = "/opt/app/static"
source = "files/static"

[[absent]]
path = "/etc/cron.d/legacy"
"#;

fn fleet_with_manifest() -> Result<(Fleet, String)> {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc/cron.d"))?;
    std::fs::write(
        fleet.on_host("/etc/cron.d/legacy"),
        "* * * * * root old-job\n",
    )?;
    let commit = fleet.publish(&[
        ("outpost.toml", MANIFEST),
        (
            "roles/camera.toml",
            "[[file]]\npath = \"/etc/camera.conf\"\nsource = \"files/camera.conf\"\n",
        ),
        (
            "roles/kiosk.toml",
            "[[file]]\npath = \"/etc/kiosk.conf\"\nsource = \"files/camera.conf\"\n",
        ),
        ("files/chrony.conf", "server time.example.com iburst\n"),
        ("files/camera.conf", "fps = 25\n"),
        ("files/static/index.html", "<h1>hello</h1>\n"),
        ("files/static/css/site.css", "body { margin: 0 }\n"),
    ])?;
    Ok((fleet, commit))
}

fn mode(path: &std::path::Path) -> Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

#[test]
fn apply_makes_the_host_match_and_plan_is_then_clean() -> Result {
    let (fleet, commit) = fleet_with_manifest()?;
    let run = fleet.outpost(&["plan", "--stat"])?;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (1, "13 to create, 0 to change, 1 to remove\n"),
        "{}",
        run.stderr
    );
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .ends_with(&format!("applied {commit}: 14 steps\n")),
        "{}",
        run.stdout
    );

    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/chrony/chrony.conf"))?,
        "server time.example.com iburst\n"
    );
    assert_eq!(mode(&fleet.on_host("/etc/chrony/chrony.conf"))?, 0o640);
    assert_eq!(mode(&fleet.on_host("/var/lib/camera"))?, 0o750);
    assert_eq!(
        std::fs::read_link(fleet.on_host("/etc/localtime"))?,
        std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/opt/app/static/css/site.css"))?,
        "body { margin: 0 }\n"
    );
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/camera.conf"))?,
        "fps = 25\n",
        "the camera role applies"
    );
    assert!(
        !fleet.on_host("/etc/kiosk.conf").exists(),
        "the kiosk role does not"
    );
    assert!(!fleet.on_host("/etc/cron.d/legacy").exists());

    let run = fleet.outpost(&["plan"])?;
    assert_eq!(
        (run.code, run.stdout.trim_end()),
        (0, format!("no changes: the host matches {commit}").as_str())
    );
    let status = fleet.status()?;
    assert_eq!(status["deployed"]["commit"], commit);
    assert_eq!(status["deployed"]["result"], "success");
    assert!(
        status["deployed"]["applied_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(status["drift"]["drifted"], false);
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(
        run.stdout.trim_end(),
        format!("no changes: the host matches {commit}")
    );
    Ok(())
}

#[test]
fn tree_is_kept_exact() -> Result {
    let (fleet, _) = fleet_with_manifest()?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    std::fs::write(fleet.on_host("/opt/app/static/extra.js"), "alert(1)\n")?;
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "- remove /opt/app/static/extra.js (file), not in the tree /opt/app/static\n"
    );
    // The repair looks only at the tree directory that changed: the managed files in it stay.
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with(
            "- remove /opt/app/static/extra.js (file), not in the tree /opt/app/static\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!fleet.on_host("/opt/app/static/extra.js").exists());
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/opt/app/static/index.html"))?,
        "<h1>hello</h1>\n"
    );
    assert!(fleet.on_host("/opt/app/static/css/site.css").exists());
    assert_eq!(fleet.outpost(&["plan"])?.code, 0);
    Ok(())
}

#[test]
fn hand_edited_file_is_put_back_and_the_event_names_path_and_commit() -> Result {
    let (fleet, commit) = fleet_with_manifest()?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let conf = fleet.on_host("/etc/chrony/chrony.conf");
    std::fs::write(&conf, "server evil.example.com\n")?;
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(run.code, 1);
    // 0640 is not world-readable: its content is never shown, a diff least of all.
    let hashes = "24 B 04e1af38f910 -> 31 B 423913f74249";
    assert_eq!(
        run.stdout,
        format!("~ write /etc/chrony/chrony.conf (0640 root:root, 31 B)\n  content differs (secret: 0640, diff hidden): {hashes}\n")
            .replace("root:root", &owner_names()?)
    );
    assert_eq!(fleet.status()?["drift"]["change"], 1);
    let run = fleet.outpost(&["apply"])?;
    assert!(
        run.stdout.ends_with(&format!(
            "applied {commit}: 1 step, 1 drifted path repaired\n"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&conf)?,
        "server time.example.com iburst\n"
    );
    let history: serde_json::Value =
        serde_json::from_str(&fleet.outpost(&["history", "--json"])?.stdout)?;
    let repair = &history[0];
    assert_eq!(repair["kind"], "repair");
    assert_eq!(repair["repairs"], 1);
    assert_eq!(repair["events"][0]["kind"], "drift-repaired");
    assert_eq!(repair["events"][0]["path"], "/etc/chrony/chrony.conf");
    assert!(
        repair["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&commit)),
        "{repair}"
    );
    let run = fleet.outpost(&["history"])?;
    assert!(
        run.stdout
            .contains("drift-repaired: /etc/chrony/chrony.conf"),
        "{}",
        run.stdout
    );
    Ok(())
}

/// `root:root` as the plan shows the test user (set_owner = false).
fn owner_names() -> Result<String> {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())?
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(nix::unistd::getegid())?
        .map_or_else(|| nix::unistd::getegid().to_string(), |g| g.name);
    Ok(format!("{user}:{group}"))
}

#[test]
fn removed_entries_are_pruned_and_taken_over_files_get_their_original_back() -> Result {
    let fleet = Fleet::new()?;
    std::fs::create_dir_all(fleet.on_host("/etc/app"))?;
    std::fs::write(fleet.on_host("/etc/app/app.conf"), "original\n")?;
    std::fs::set_permissions(
        fleet.on_host("/etc/app/app.conf"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let both = "[[file]]\npath = \"/etc/app/app.conf\"\nsource = \"app.conf\"\n\n[[file]]\npath = \"/etc/app/new.conf\"\nsource = \"app.conf\"\n";
    fleet.publish(&[("outpost.toml", both), ("app.conf", "managed\n")])?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app/app.conf"))?,
        "managed\n"
    );

    let commit = fleet.publish(&[("outpost.toml", "")])?;
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(
        run.stdout,
        "~ restore /etc/app/app.conf (the original from before outpost), no longer in the manifest\n- remove /etc/app/new.conf (file), no longer in the manifest\n"
    );
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app/app.conf"))?,
        "original\n"
    );
    assert_eq!(mode(&fleet.on_host("/etc/app/app.conf"))?, 0o600);
    assert!(!fleet.on_host("/etc/app/new.conf").exists());
    assert_eq!(fleet.deployed()?, Some(commit));
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(run.code, 0, "{}", run.stdout);
    Ok(())
}

#[test]
fn rollback_returns_to_the_previous_deployment_and_apply_stays_there() -> Result {
    let fleet = Fleet::new()?;
    let manifest = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\n";
    let first = fleet.publish(&[("outpost.toml", manifest), ("app.conf", "v1\n")])?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let second = fleet.publish(&[("app.conf", "v2\n")])?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v2\n"
    );

    let run = fleet.outpost(&["rollback"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .ends_with(&format!("rolled back to {first}: 1 step\n")),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v1\n"
    );
    let status = fleet.status()?;
    assert_eq!(status["deployed"]["commit"], first);
    assert_eq!(
        status["trusted"]["commit"], second,
        "the high-water mark does not move back"
    );

    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains(&format!(
            "trusted commit {second} is marked bad (rolled back to {first})"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v1\n"
    );

    let third = fleet.publish(&[("app.conf", "v3\n")])?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    assert_eq!(
        std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
        "v3\n"
    );
    assert_eq!(fleet.deployed()?, Some(third));
    Ok(())
}

#[test]
fn rollback_without_an_earlier_deployment_says_so() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[("outpost.toml", "")])?;
    let run = fleet.outpost(&["rollback"])?;
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (
            1,
            "outpost: error: there is no earlier successful deployment to roll back to"
        )
    );
    Ok(())
}

#[test]
fn apply_with_nothing_trusted_says_so() -> Result {
    let fleet = Fleet::new()?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim_end(),
        "outpost: error: nothing is trusted yet; import a signed bundle first (`outpost import FILE`)"
    );
    let run = fleet.outpost(&["plan"])?;
    assert_eq!(run.code, 2);
    Ok(())
}

#[test]
fn a_second_apply_waits_for_the_holder_and_names_it() -> Result {
    use std::io::BufRead;
    let (fleet, commit) = fleet_with_manifest()?;
    let lock = fleet.state().join("lock");
    let holder = fleet.hold_lock()?;
    let pid = holder.pid.clone();

    // --no-wait: refused at once, naming the holder.
    let started = std::time::Instant::now();
    let run = fleet.outpost(&["--no-wait", "apply"])?;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (
            1,
            format!(
                "outpost: error: another outpost process (pid {pid}) holds {}; wait for it to finish or stop it",
                lock.display()
            )
            .as_str()
        )
    );

    // Without it: waits as long as it takes, saying for whom after a few seconds.
    let mut waiting = fleet
        .command(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = waiting.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stderr).read_line(&mut line);
        let _ = tx.send(line);
    });
    let said = rx.recv_timeout(std::time::Duration::from_secs(30));
    assert!(
        !fleet.on_host("/etc/chrony/chrony.conf").exists(),
        "nothing happens while the lock is held"
    );
    drop(holder);
    let done = waiting.wait_with_output()?;
    let said = said?;
    assert!(
        said.contains(&format!(
            "waiting for another outpost process (pid {pid}) that holds {}; stop it, or run with --no-wait to fail at once",
            lock.display()
        )),
        "{said}"
    );
    assert_eq!(done.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&done.stdout).ends_with(&format!("applied {commit}: 14 steps\n"))
    );
    Ok(())
}

/// Once the stat cache has settled, a no-op reconcile only stats: edits, extra files in a
/// tree, a replaced symlink and a removed absent-path are all still seen.
#[test]
fn drift_is_seen_once_the_stat_cache_has_settled() -> Result {
    let (fleet, commit) = fleet_with_manifest()?;
    assert_eq!(fleet.outpost(&["apply"])?.code, 0);
    let settle = || std::thread::sleep(std::time::Duration::from_millis(250));
    let clean = |fleet: &Fleet| -> Result {
        settle();
        let run = fleet.outpost(&["apply"])?;
        assert_eq!(
            run.stdout.trim_end(),
            format!("no changes: the host matches {commit}")
        );
        settle();
        let run = fleet.outpost(&["-vv", "plan"])?;
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert!(
            run.stderr.contains("fast path") && run.stderr.contains("suspects=0"),
            "{}",
            run.stderr
        );
        Ok(())
    };
    let drifted = |fleet: &Fleet, what: &str| -> Result {
        let run = fleet.outpost(&["plan"])?;
        assert_eq!(run.code, 1, "{what} was not seen");
        assert_eq!(fleet.outpost(&["apply"])?.code, 0);
        Ok(())
    };
    clean(&fleet)?;
    std::fs::write(
        fleet.on_host("/opt/app/static/index.html"),
        "<h1>HELLO</h1>\n",
    )?;
    drifted(&fleet, "a same-size edit")?;
    clean(&fleet)?;
    std::fs::write(fleet.on_host("/opt/app/static/css/extra.css"), "")?;
    drifted(&fleet, "an extra file in a tree")?;
    clean(&fleet)?;
    std::fs::remove_file(fleet.on_host("/etc/localtime"))?;
    std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", fleet.on_host("/etc/localtime"))?;
    drifted(&fleet, "a retargeted symlink")?;
    clean(&fleet)?;
    std::fs::write(fleet.on_host("/etc/cron.d/legacy"), "back\n")?;
    drifted(&fleet, "an absent path that came back")?;
    clean(&fleet)?;
    std::fs::set_permissions(
        fleet.on_host("/var/lib/camera"),
        std::fs::Permissions::from_mode(0o777),
    )?;
    drifted(&fleet, "a chmod of a directory")?;
    Ok(())
}
