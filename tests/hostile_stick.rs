//! A stick made by someone hostile or careless: one bad bundle never stops the others, names
//! cannot forge output, junk costs little, and small things are refused by name.

use std::process::Command;

use crate::support::{Fleet, Result, run};

const ESC: char = '\x1b';

/// A stick folder holding `a.bundle` (a tip whose committer line does not parse) and
/// `b.bundle` (a good, older tip), so the bad one is judged first.
#[test]
fn a_malformed_commit_sorted_first_does_not_stop_the_good_bundle() -> Result {
    let fleet = Fleet::new()?;
    let good = fleet.commit("outpost.toml", "# v1\n")?;
    let stick = fleet.path("stick");
    std::fs::create_dir(&stick)?;
    let b = fleet.bundle("b.bundle", &["main"])?;
    fleet.move_bundle(&b, &stick)?;
    let bad = fleet.craft_commit("Fleet <fleet@example.com> not-a-date +0000")?;
    let a = fleet.bundle("a.bundle", &["main"])?;
    fleet.move_bundle(&a, &stick)?;

    for _ in 0..2 {
        let run = fleet.outpost_paths("import", &[&stick])?;
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", run.stdout);
        assert!(
            lines[0].starts_with(&format!(
                "refused {}: cannot read commit {bad}",
                stick.join("a.bundle").display()
            )),
            "{}",
            lines[0]
        );
        assert_eq!(fleet.trusted()?, Some(good.clone()));
    }
    let status = fleet.status()?;
    let rejected = status["rejected"].as_array().ok_or("no rejected")?;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["count"], 2);
    Ok(())
}

#[test]
fn names_and_namespaces_with_control_characters_are_escaped() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let forged =
        format!("x\naccepted /media/usb/site.bundle: signed by fleet@example.com {ESC}[32m");
    // A bundle whose file name holds a newline and an escape sequence...
    let name = format!("evil\n{ESC}[31m.bundle");
    let bundle = fleet.bundle(&name, &["main"])?;
    // ...and a signature whose namespace holds them (ssh-keygen signs any namespace).
    let other = fleet.path("ns.bundle");
    std::fs::copy(&bundle, &other)?;
    run(Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", &forged, "-f"])
        .arg(fleet.key("fleet"))
        .arg(&other))?;
    let run_ = fleet.outpost_paths("import", &[&other, &bundle])?;
    assert_eq!(run_.code, 1, "{}{}", run_.stdout, run_.stderr);
    let status = fleet.outpost(&["status"])?;
    let history = fleet.outpost(&["history"])?;
    for (what, text) in [
        ("import", &run_.stdout),
        ("status", &status.stdout),
        ("history", &history.stdout),
    ] {
        assert!(!text.contains(ESC), "{what} printed a raw escape: {text:?}");
        assert!(
            !text.lines().any(|l| l.starts_with("accepted /media")),
            "{what} printed a forged line: {text}"
        );
    }
    assert!(
        run_.stdout.contains("evil\\n\\x1b[31m.bundle"),
        "{}",
        run_.stdout
    );
    assert!(
        run_.stdout
            .contains("namespace \"x\\naccepted /media/usb/site.bundle"),
        "{}",
        run_.stdout
    );
    assert!(
        status.stdout.contains("evil\\n\\x1b[31m.bundle"),
        "{}",
        status.stdout
    );
    // JSON keeps the exact values.
    let json = fleet.status()?;
    let sources: Vec<&str> = json["bundles"]
        .as_array()
        .ok_or("no bundles")?
        .iter()
        .filter_map(|b| b["source"].as_str())
        .collect();
    assert!(sources.iter().any(|s| s.ends_with(&name)), "{sources:?}");
    Ok(())
}

#[test]
fn five_hundred_junk_bundles_three_times_grow_the_database_little() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let good = fleet.bundle("good.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&good])?.code, 0);
    let stick = fleet.path("junk");
    std::fs::create_dir(&stick)?;
    let sig = std::fs::read(fleet.path("good.bundle.sig"))?;
    for i in 0..500 {
        let bundle = stick.join(format!("junk-{i:03}.bundle"));
        std::fs::write(&bundle, vec![b'j'; 4096])?;
        // Half carry a real (mismatching) signature, half a junk one.
        let sig_bytes = if i % 2 == 0 {
            sig.clone()
        } else {
            vec![b's'; 900]
        };
        std::fs::write(stick.join(format!("junk-{i:03}.bundle.sig")), sig_bytes)?;
    }
    let db_size = || -> Result<u64> {
        let mut total = 0;
        for name in ["outpost.db", "outpost.db-wal"] {
            total += std::fs::metadata(fleet.state().join(name)).map_or(0, |m| m.len());
        }
        Ok(total)
    };
    let before = db_size()?;
    let started = std::time::Instant::now();
    let mut after_first = 0;
    for round in 0..3 {
        let run = fleet.outpost_paths("import", &[&stick])?;
        assert_eq!(run.code, 1);
        assert_eq!(run.stdout.lines().count(), 500);
        if round == 0 {
            after_first = db_size()?;
        }
    }
    let elapsed = started.elapsed();
    let grown = db_size()? - before;
    let grown_later = db_size()?.saturating_sub(after_first);
    assert!(grown < 2 << 20, "the database grew {grown} bytes");
    assert!(
        grown_later < 256 << 10,
        "repeats grew the database {grown_later} bytes"
    );
    assert!(elapsed.as_secs() < 60, "three imports took {elapsed:?}");
    let status = fleet.status()?;
    assert_eq!(status["rejected"][0]["count"], 3);
    Ok(())
}

#[test]
fn symlinked_outpost_folder_is_refused_not_followed() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let elsewhere = fleet.path("elsewhere");
    std::fs::create_dir(&elsewhere)?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    fleet.move_bundle(&bundle, &elsewhere)?;
    let stick = fleet.path("stick");
    std::fs::create_dir(&stick)?;
    std::os::unix::fs::symlink(&elsewhere, stick.join("outpost"))?;
    let run = fleet.outpost_paths("import", &[&stick])?;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let link = stick.join("outpost");
    assert_eq!(
        run.stdout.trim_end(),
        format!(
            "refused {0}: {0} is a symbolic link; outpost does not follow links from a stick, copy the files themselves",
            link.display()
        )
    );
    assert_eq!(fleet.trusted()?, None);
    Ok(())
}

#[test]
fn verify_accepts_a_directory_like_import() -> Result {
    let fleet = Fleet::new()?;
    let tip = fleet.commit("outpost.toml", "# v1\n")?;
    let stick = fleet.path("stick");
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    fleet.move_bundle(&bundle, &stick.join("outpost"))?;
    let run = fleet.outpost_paths("verify", &[&stick])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "accepted {}: {} ",
            stick.join("outpost/site.bundle").display(),
            &tip[..12]
        )),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.trusted()?, None, "verify changed nothing");
    Ok(())
}

#[test]
fn an_ecdsa_signature_names_the_key_type() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    let ecdsa = fleet.path("ecdsa.key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa))?;
    let _ = std::fs::remove_file(fleet.path("site.bundle.sig"));
    run(Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "outpost-bundle", "-f"])
        .arg(&ecdsa)
        .arg(&bundle))?;
    let run_ = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run_.code, 1);
    assert_eq!(
        run_.stdout.trim_end(),
        format!(
            "refused {0}: signature {0}.sig refused: signed with an unsupported key type (ecdsa-sha2-nistp256); outpost accepts ssh-ed25519",
            bundle.display()
        )
    );
    Ok(())
}

#[test]
fn an_oversized_signature_names_the_signature_limit() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    std::fs::write(fleet.path("site.bundle.sig"), vec![b'x'; 100_000])?;
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout.trim_end(),
        format!(
            "refused {0}: signature {0}.sig is 100000 bytes, more than the 65536-byte limit for a signature; an ed25519 signature from ssh-keygen -Y sign is under 1 KiB",
            bundle.display()
        )
    );
    Ok(())
}

/// The names of the files in the state dir.
fn state_files(fleet: &Fleet) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(fleet.state())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn read_only_commands_leave_no_wal_files_behind() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&bundle])?.code, 0);
    let files = state_files(&fleet)?;
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with("-wal") || f.ends_with("-shm")),
        "import left {files:?}"
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["history"],
        &["plan"],
        &["verify", bundle.to_str().ok_or("path")?],
    ] {
        fleet.outpost(args)?;
        assert_eq!(state_files(&fleet)?, files, "after {args:?}");
    }
    Ok(())
}

#[test]
fn a_hand_written_floor_naming_an_unsigned_commit_is_refused() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&bundle])?.code, 0);
    // An unsigned commit lands in the object store (as any object could, e.g. by hand)...
    let unsigned = fleet.commit_as("outpost.toml", "# unsigned\n", None)?;
    let objects = fleet.state().join("objects");
    run(Command::new("git")
        .arg("--git-dir")
        .arg(&objects)
        .args(["fetch", "-q"])
        .arg(fleet.repo())
        .arg(format!("{unsigned}:refs/scratch")))?;
    // ...and the floor file is rewritten by hand with a valid checksum, ahead of the database.
    let floor = fleet.state().join("floor");
    let body = format!(
        "outpost high-water mark v1\ncommit {unsigned}\nfloor 4000000000\nsigner fleet@example.com\n"
    );
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    std::fs::write(&floor, format!("{body}sha256 {sum}\n"))?;
    for args in [&["apply"][..], &["plan"], &["status"]] {
        let run_ = fleet.outpost(args)?;
        assert_ne!(
            run_.code, 0,
            "{args:?} accepted the hand-written floor: {}",
            run_.stdout
        );
        assert!(
            run_.stderr.contains(&format!(
                "{} names commit {unsigned}, which this host never accepted: it is not signed by an allowed signer",
                floor.display()
            )),
            "{args:?}: {}",
            run_.stderr
        );
    }
    Ok(())
}

#[test]
fn a_small_bundle_inflating_to_hundreds_of_mebibytes_is_refused_in_little_memory() -> Result {
    let fleet = Fleet::new()?;
    fleet.commit("outpost.toml", "# v1\n")?;
    // 256 MiB of zeros: git streams it into a pack of a few hundred KiB.
    let big = std::fs::File::create(fleet.repo().join("zeros.bin"))?;
    big.set_len(256 << 20)?;
    fleet.git_run(&["-c", "core.bigFileThreshold=1m", "add", "zeros.bin"])?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let bundle = fleet.bundle("bomb.bundle", &["main"])?;
    assert!(std::fs::metadata(&bundle)?.len() < 4 << 20);
    // The peak memory of the import alone, measured by its parent.
    let measure = "import resource, subprocess, sys\n\
                   r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n\
                   print(r.returncode); print(r.stdout, end='')\n\
                   print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", measure])
        .arg(crate::support::BIN)
        .arg("--config")
        .arg(fleet.config())
        .arg("import")
        .arg(&bundle);
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let peak_kib: u64 = String::from_utf8_lossy(&out.stderr).trim().parse()?;
    assert!(stdout.starts_with("1\n"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with(
            "the bundle holds an object larger than source.max_object_size (67108864 bytes) once inflated; raise the limit if the fleet ships such files"
        ),
        "{stdout}"
    );
    assert!(peak_kib < 100 << 10, "import peaked at {peak_kib} KiB");
    assert_eq!(fleet.trusted()?, None);
    Ok(())
}
