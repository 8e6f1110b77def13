//! Storage that stays bounded: packs consolidated (`outpost gc` and after imports), the bundle
//! cache held to `state.bundle_cache` with the database shrinking, history compacted to
//! `state.keep_history`, sizes in `status`, a no-op apply that writes nothing, and `gc` killed
//! at every moment leaving a store `git fsck` passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BIN, Fleet, Result, Run};

const MANIFEST: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"files/app.conf\"\n";

/// The packs of a state dir's object store.
fn packs(state: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(state.join("objects/objects/pack"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
        .count())
}

/// `git fsck` over a state dir's object store: its output, or why it failed.
fn fsck(state: &Path) -> Result<String> {
    let out = Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("--git-dir")
        .arg(state.join("objects"))
        .args(["fsck", "--no-dangling", "--no-progress"])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("git fsck failed: {text}").into());
    }
    Ok(text)
}

/// Commits `n` signed versions of files/app.conf on top of `main`, each bundled (signed) from
/// the one before; returns (commit, bundle) oldest first.
fn incremental_bundles(fleet: &Fleet, n: usize, from: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut previous = from.to_owned();
    for i in 0..n {
        let commit = fleet.commit("files/app.conf", &format!("version {i}\n"))?;
        let bundle = fleet.bundle(
            &format!("inc-{i:03}.bundle"),
            &[&format!("{previous}..main")],
        )?;
        out.push((commit.clone(), bundle));
        previous = commit;
    }
    Ok(out)
}

/// Rewrites the fleet's config with `state` keys added to `[state]` and `trust` to `[trust]`.
fn configure(fleet: &Fleet, state: &str, trust: &str) -> Result {
    fleet.write_config(trust)?;
    let text = std::fs::read_to_string(fleet.config())?
        .replace("dir = \"state\"\n", &format!("dir = \"state\"\n{state}"));
    std::fs::write(fleet.config(), text)?;
    Ok(())
}

fn ok(run: Run, what: &str) -> Result<Run> {
    if run.code != 0 {
        return Err(format!("{what} exited {}: {}{}", run.code, run.stdout, run.stderr).into());
    }
    Ok(run)
}

/// A second host beside the fleet's: its own config, state dir and host root.
fn second_host(fleet: &Fleet) -> Result<PathBuf> {
    let text = std::fs::read_to_string(fleet.config())?
        .replace("dir = \"state\"", "dir = \"state2\"")
        .replace("root = \"host\"", "root = \"host2\"");
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

#[test]
fn many_incremental_imports_stay_a_handful_of_packs_and_every_kept_deployment_rolls_back() -> Result
{
    let fleet = Fleet::new()?;
    let first = fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "start\n")])?;
    ok(fleet.outpost(&["apply"])?, "apply")?;
    let bundles = incremental_bundles(&fleet, 150, &first)?;
    for (commit, bundle) in &bundles {
        ok(fleet.outpost_paths("import", &[bundle])?, "import")?;
        ok(fleet.outpost(&["apply"])?, "apply")?;
        assert_eq!(
            std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
            format!(
                "version {}\n",
                bundles.iter().position(|(c, _)| c == commit).unwrap_or(0)
            )
        );
    }
    let state = fleet.state();
    let after_imports = packs(&state)?;
    assert!(
        after_imports <= 6,
        "{after_imports} packs after 150 imports"
    );
    fsck(&state)?;

    let gc = ok(fleet.outpost(&["gc", "--json"])?, "gc")?;
    let gc: serde_json::Value = serde_json::from_str(&gc.stdout)?;
    assert_eq!(gc["objects"]["packs_after"], 1, "{gc}");
    assert_eq!(packs(&state)?, 1);
    fsck(&state)?;
    let status = fleet.status()?;
    let storage = &status["storage"];
    assert_eq!(storage["packs"], 1, "{storage}");
    assert!(storage["objects_bytes"].as_u64() > Some(0), "{storage}");
    assert!(storage["database_bytes"].as_u64() > Some(0), "{storage}");
    assert_eq!(storage["cached_bundles"], 151, "{storage}");
    assert_eq!(storage["deployments_total"], 151, "{storage}");

    // Export into an empty directory; a fresh host importing it reaches the same commit.
    let tip = bundles.last().map(|(c, _)| c.clone()).unwrap_or_default();
    let stick = fleet.path("stick");
    ok(fleet.outpost_paths("export", &[&stick])?, "export")?;
    let second = second_host(&fleet)?;
    ok(
        outpost_with(&second, &["import", &stick.display().to_string()])?,
        "import on the second host",
    )?;
    let status = outpost_with(&second, &["status", "--json"])?;
    let status: serde_json::Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(status["trusted"]["commit"].as_str(), Some(tip.as_str()));

    // Rollback walks back through each kept deployment (keep_deployments = 10).
    for back in 1..10 {
        let (commit, _) = &bundles[bundles.len() - 1 - back];
        let run = ok(fleet.outpost(&["rollback"])?, "rollback")?;
        assert!(
            run.stdout.contains(&format!("rolled back to {commit}")),
            "{}",
            run.stdout
        );
        let i = bundles.len() - 1 - back;
        assert_eq!(
            std::fs::read_to_string(fleet.on_host("/etc/app.conf"))?,
            format!("version {i}\n")
        );
    }
    fsck(&state)?;
    Ok(())
}

/// Objects reachable from no kept commit (a rewound branch nobody deploys any more) are dropped
/// by `gc`; everything the kept commits reach stays.
#[test]
fn gc_drops_what_no_kept_commit_reaches() -> Result {
    let fleet = Fleet::new()?;
    configure(&fleet, "keep_deployments = 1\n", "allow_rewind = true\n")?;
    let base = fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "base\n")])?;
    fleet.git_run(&["tag", "base"])?;
    ok(fleet.outpost(&["apply"])?, "apply")?;
    let doomed = fleet.publish(&[("files/app.conf", "abandoned branch\n")])?;
    ok(fleet.outpost(&["apply"])?, "apply")?;
    let blob = fleet.git_run(&["rev-parse", "main:files/app.conf"])?;
    // History rewritten: a new tip on top of base, the abandoned commit left behind.
    fleet.git_run(&["reset", "-q", "--hard", &base])?;
    let kept = fleet.publish(&[("files/app.conf", "rewound\n")])?;
    ok(fleet.outpost(&["apply"])?, "apply")?;
    let state = fleet.state();
    let has = |oid: &str| {
        Command::new("git")
            .arg("--git-dir")
            .arg(state.join("objects"))
            .args(["cat-file", "-e", oid])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(has(&doomed) && has(&blob));
    ok(fleet.outpost(&["gc"])?, "gc")?;
    assert!(!has(&doomed), "the abandoned commit is still there");
    assert!(!has(&blob), "its blob is still there");
    assert!(has(&kept) && has(&base));
    fsck(&state)?;
    let plan = fleet.outpost(&["plan"])?;
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    Ok(())
}

/// A file of `len` bytes that does not compress: bundles of it take real space.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + u8::try_from(x % 26).unwrap_or(0))
        })
        .collect()
}

#[test]
fn a_tight_bundle_cache_shrinks_the_database() -> Result {
    let fleet = Fleet::new()?;
    let mut previous = None::<String>;
    for i in 0..4u64 {
        let (commit, bundle) = fleet.write_commit_and_bundle(&[
            ("outpost.toml", MANIFEST),
            ("files/app.conf", "x\n"),
            ("files/big", &noise(i, 300_000)),
        ])?;
        // Each a full bundle: the newest one alone is what export needs.
        let _ = previous.replace(commit);
        ok(fleet.outpost_paths("import", &[&bundle])?, "import")?;
    }
    let db = fleet.state().join("outpost.db");
    let big = std::fs::metadata(&db)?.len();
    assert!(big > 1_000_000, "database of 4 bundles is {big} bytes");
    let storage = fleet.status()?["storage"].clone();
    assert_eq!(storage["cached_bundles"], 4, "{storage}");
    assert_eq!(storage["bundle_cache_warning"], serde_json::Value::Null);

    configure(&fleet, "bundle_cache = \"1KiB\"\n", "")?;
    let gc = ok(fleet.outpost(&["gc", "--json"])?, "gc")?;
    let gc: serde_json::Value = serde_json::from_str(&gc.stdout)?;
    assert_eq!(gc["bundle_cache"]["bundles"], 3, "{gc}");
    let dropped = gc["bundle_cache"]["bytes"].as_u64().unwrap_or_default();
    let small = std::fs::metadata(&db)?.len();
    assert!(
        big.saturating_sub(small) >= dropped * 9 / 10,
        "{big} -> {small} bytes, {dropped} bytes of bundles dropped"
    );
    let storage = fleet.status()?["storage"].clone();
    assert_eq!(storage["cached_bundles"], 1, "{storage}");
    let warning = storage["bundle_cache_warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("more than state.bundle_cache (1.0 KiB)"),
        "{storage}"
    );
    let human = ok(fleet.outpost(&["status"])?, "status")?.stdout;
    assert!(human.contains("WARNING the newest full bundle"), "{human}");
    // Export still brings a host up, and says the budget is too small.
    let run = ok(
        fleet.outpost_paths("export", &[&fleet.path("stick")])?,
        "export",
    )?;
    assert!(
        run.stderr.contains("warning: the newest full bundle"),
        "{}",
        run.stderr
    );
    // A refused bundle keeps its verdict, never its bytes.
    let junk = fleet.signed_file("junk.bundle", b"not a bundle")?;
    assert_eq!(fleet.outpost_paths("import", &[&junk])?.code, 1);
    let conn = rusqlite::Connection::open(&db)?;
    let refused_bytes: i64 = conn.query_row(
        "SELECT count(*) FROM bundle_chunks c JOIN bundles b ON b.id = c.bundle_id
         WHERE b.verdict != 'accepted' OR b.evicted IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(refused_bytes, 0);
    Ok(())
}

/// A database made by an earlier outpost (64 KiB pages, no `auto_vacuum`) is rewritten once,
/// by the first command that writes: small pages, and it can shrink from then on.
#[test]
fn an_existing_database_is_switched_to_small_pages_and_incremental_vacuum() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "a\n")])?;
    let db = fleet.state().join("outpost.db");
    {
        let conn = rusqlite::Connection::open(&db)?;
        // As an earlier outpost made it: 64 KiB pages, no auto_vacuum.
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        conn.pragma_update(None, "auto_vacuum", "NONE")?;
        conn.pragma_update(None, "page_size", 65536)?;
        conn.execute_batch("VACUUM")?;
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        assert_eq!(mode, 0);
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        assert_eq!(size, 65536);
    }
    ok(fleet.outpost(&["apply"])?, "apply")?;
    let conn = rusqlite::Connection::open(&db)?;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    assert_eq!(mode, 2, "auto_vacuum = INCREMENTAL");
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    assert_eq!(size, 4096);
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    Ok(())
}

#[test]
fn history_is_compacted_and_its_counts_stay() -> Result {
    let fleet = Fleet::new()?;
    configure(&fleet, "keep_history = 4\nkeep_deployments = 2\n", "")?;
    let mut commits = Vec::new();
    for i in 0..5 {
        commits.push(fleet.publish(&[
            ("outpost.toml", MANIFEST),
            ("files/app.conf", &format!("v{i}\n")),
        ])?);
        ok(fleet.outpost(&["apply"])?, "apply")?;
    }
    // Drift repairs are deployments too.
    for i in 0..4 {
        std::fs::write(fleet.on_host("/etc/app.conf"), format!("edited {i}\n"))?;
        ok(fleet.outpost(&["apply"])?, "repair")?;
    }
    let kept = fleet.deployments()?;
    assert!(kept.len() <= 5, "{kept:?}");
    let storage = fleet.status()?["storage"].clone();
    assert_eq!(storage["deployments_total"], 9, "{storage}");
    assert!(storage["deployments"].as_u64() <= Some(5), "{storage}");
    assert!(
        storage["events_total"].as_u64() > storage["events"].as_u64(),
        "{storage}"
    );
    // What rollback needs stayed: back to the commit before the current one.
    let run = ok(fleet.outpost(&["rollback"])?, "rollback")?;
    assert!(
        run.stdout
            .contains(&format!("rolled back to {}", commits[3])),
        "{}",
        run.stdout
    );
    Ok(())
}

/// The hot path of the daemon every few minutes: nothing in the state dir changes.
#[test]
fn a_no_op_apply_writes_nothing_to_the_state_dir() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "a\n")])?;
    ok(fleet.outpost(&["apply"])?, "apply")?;
    // The stat cache is trusted only for files older than its racy window (100 ms) when it
    // was recorded: this apply records it anew, the next one finds it settled.
    std::thread::sleep(std::time::Duration::from_millis(250));
    ok(fleet.outpost(&["apply"])?, "apply")?;
    let mut before = Fleet::snapshot(&fleet.state())?;
    let run = ok(fleet.outpost(&["apply"])?, "apply")?;
    assert!(run.stdout.starts_with("no changes"), "{}", run.stdout);
    let mut after = Fleet::snapshot(&fleet.state())?;
    // The lock file names the last holder.
    before.remove(Path::new("lock"));
    after.remove(Path::new("lock"));
    assert_eq!(before, after);
    Ok(())
}

/// `outpost gc` aborted after every file step of its repack, and killed (SIGKILL) at moments
/// through its run: the store passes `git fsck`, the host still applies, and the next `gc`
/// finishes the job.
#[test]
fn gc_killed_at_any_moment_leaves_a_sound_store() -> Result {
    let fleet = Fleet::new()?;
    let first = fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "start\n")])?;
    ok(fleet.outpost(&["apply"])?, "apply")?;
    // Five packs more: below the automatic repack, so gc has them all to do.
    let bundles = incremental_bundles(&fleet, 5, &first)?;
    for (_, bundle) in &bundles {
        ok(fleet.outpost_paths("import", &[bundle])?, "import")?;
    }
    let tip = bundles.last().map(|(c, _)| c.clone()).unwrap_or_default();
    let template = fleet.copy("template")?;
    assert!(packs(&template.dir.join("state"))? > 1);

    let check = |dir: &Path, what: &str| -> Result {
        let state = dir.join("state");
        fsck(&state).map_err(|e| format!("{what}: {e}"))?;
        let config = dir.join("config.toml");
        ok(outpost_with(&config, &["apply"])?, what)?;
        assert_eq!(
            std::fs::read_to_string(dir.join("host/etc/app.conf"))?,
            "version 4\n",
            "{what}"
        );
        ok(outpost_with(&config, &["gc"])?, what)?;
        assert_eq!(packs(&state)?, 1, "{what}");
        fsck(&state).map_err(|e| format!("{what}, after gc again: {e}"))?;
        let status = outpost_with(&config, &["status", "--json"])?;
        let status: serde_json::Value = serde_json::from_str(&status.stdout)?;
        assert_eq!(
            status["trusted"]["commit"].as_str(),
            Some(tip.as_str()),
            "{what}"
        );
        Ok(())
    };

    // Every file step.
    let mut step = 0;
    loop {
        let copy = template.copy(&format!("gc-step-{step}"))?;
        let out = Command::new(BIN)
            .arg("--config")
            .arg(copy.dir.join("config.toml"))
            .arg("gc")
            .env(outpost_fault(), step.to_string())
            .output()?;
        let what = format!("gc aborted after {step} steps");
        check(&copy.dir, &what)?;
        if out.status.success() {
            assert!(step > 4, "gc took only {step} steps");
            break;
        }
        step += 1;
    }

    // SIGKILL at moments through a run, a few milliseconds apart.
    let started = std::time::Instant::now();
    let whole = template.copy("gc-timed")?;
    ok(outpost_with(&whole.dir.join("config.toml"), &["gc"])?, "gc")?;
    let took = started.elapsed().as_millis().max(10);
    let stride = (took / 25).max(2);
    let mut delay = 0;
    while delay <= took {
        let copy = template.copy(&format!("gc-kill-{delay}"))?;
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(copy.dir.join("config.toml"))
            .arg("gc")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(u64::try_from(delay)?));
        let _ = child.kill();
        child.wait()?;
        check(&copy.dir, &format!("gc killed after {delay} ms"))?;
        delay += stride;
    }
    Ok(())
}

fn outpost_fault() -> &'static str {
    "OUTPOST_FAULT_GC_AFTER_STEPS"
}

#[test]
fn gc_before_anything_is_trusted_says_so() -> Result {
    let fleet = Fleet::new()?;
    let run = fleet.outpost(&["gc"])?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "outpost: error: nothing is trusted yet: there is no state to collect\n"
    );
    Ok(())
}

/// A store that lost the trusted commit (packs removed by hand) is left alone: gc names the
/// commit and removes nothing.
#[test]
fn gc_refuses_a_store_missing_a_kept_commit() -> Result {
    let fleet = Fleet::new()?;
    let commit = fleet.publish(&[("outpost.toml", MANIFEST), ("files/app.conf", "a\n")])?;
    let pack_dir = fleet.state().join("objects/objects/pack");
    let aside = fleet.path("aside");
    std::fs::rename(&pack_dir, &aside)?;
    std::fs::create_dir(&pack_dir)?;
    let run = fleet.outpost(&["gc"])?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "outpost: error: commit {commit}, which a kept deployment or the trusted commit needs, is not in the object store; gc removed nothing, import a bundle that holds it\n"
        )
    );
    Ok(())
}
