//! Every bad input: the exact error, the exit code, and that nothing changed. Each refused
//! bundle is also checked through `verify`, which must give the same reason.

use std::path::Path;

use crate::support::{Fleet, Result, keygen};

/// A fleet that already trusts one commit, so "nothing changed" has something to keep.
fn trusting_fleet() -> Result<(Fleet, String)> {
    let fleet = Fleet::new()?;
    let first = fleet.commit("outpost.toml", "# v1\n")?;
    let base = fleet.bundle("base.bundle", &["main"])?;
    let run = fleet.outpost_paths("import", &[&base])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok((fleet, first))
}

/// Imports `path`, expecting a refusal with exactly `reason`, and checks that neither the object
/// store nor the trusted commit moved, that the refusal is listed by `status`, and that `verify`
/// gives the same answer.
fn assert_refused(fleet: &Fleet, path: &Path, reason: &str) -> Result {
    let trusted = fleet.trusted()?;
    let objects = fleet.objects_snapshot()?;
    let run = fleet.outpost_paths("verify", &[path])?;
    assert_eq!(run.code, 1, "verify: {}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.trim_end(),
        format!("refused {}: {reason}", path.display())
    );
    let run = fleet.outpost_paths("import", &[path])?;
    assert_eq!(run.code, 1, "import: {}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.trim_end(),
        format!("refused {}: {reason}", path.display())
    );
    assert_eq!(
        fleet.objects_snapshot()?,
        objects,
        "the object store changed"
    );
    let status = fleet.status()?;
    assert_eq!(
        status["trusted"]["commit"].as_str().map(str::to_owned),
        trusted,
        "the trusted commit moved"
    );
    assert_eq!(status["rejected"][0]["reason"], reason);
    assert_eq!(status["rejected"][0]["source"], path.display().to_string());
    assert!(
        status["rejected"][0]["at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    Ok(())
}

/// A fresh signed full bundle of a new commit on top of the trusted one: header and pack.
fn next_bundle(fleet: &Fleet) -> Result<(String, Vec<u8>, usize)> {
    let tip = fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle_unsigned("next.bundle", &["main"])?;
    let bytes = std::fs::read(path)?;
    let header_len = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no header end")?
        + 2;
    Ok((tip, bytes, header_len))
}

fn with_header(header: &str, bytes: &[u8], header_len: usize) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&bytes[header_len..]);
    out
}

#[test]
fn truncated_bundle() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (_, bytes, _) = next_bundle(&fleet)?;
    let path = fleet.signed_file("cut.bundle", &bytes[..bytes.len() - 40])?;
    let reason = refusal_of(&fleet, &path)?;
    assert!(
        reason.starts_with("the bundle's pack is damaged: pack is incomplete"),
        "{reason}"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn flipped_byte_in_the_pack() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (_, mut bytes, header_len) = next_bundle(&fleet)?;
    let middle = header_len + (bytes.len() - header_len) / 2;
    bytes[middle] ^= 0x40;
    let path = fleet.signed_file("flipped.bundle", &bytes)?;
    let reason = refusal_of(&fleet, &path)?;
    assert!(
        reason.starts_with("the bundle's pack is damaged: "),
        "{reason}"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn junk_after_the_pack_with_a_recomputed_checksum() -> Result {
    for junk in [&b"x"[..], &[b'j'; 5000]] {
        let (fleet, _) = trusting_fleet()?;
        let (_, mut bytes, header_len) = next_bundle(&fleet)?;
        bytes.extend_from_slice(junk);
        // The region's last 20 bytes: a SHA-1 over the pack and the junk, as a forger would.
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        hasher.update(&bytes[header_len..]);
        let digest = hasher.try_finalize().map_err(|e| e.to_string())?;
        bytes.extend_from_slice(digest.as_bytes());
        let path = fleet.signed_file("forged.bundle", &bytes)?;
        assert_refused(
            &fleet,
            &path,
            "bundle has data after the end of its pack; recreate it with `git bundle create`",
        )?;
    }
    Ok(())
}

#[test]
fn junk_after_the_pack() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (_, mut bytes, _) = next_bundle(&fleet)?;
    bytes.extend_from_slice(b"junk after the trailer\n");
    let path = fleet.signed_file("junk.bundle", &bytes)?;
    assert_refused(
        &fleet,
        &path,
        "bundle has data after the end of its pack; recreate it with `git bundle create`",
    )
}

#[test]
fn missing_signature_file() -> Result {
    let (fleet, _) = trusting_fleet()?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle_unsigned("unsigned.bundle", &["main"])?;
    let reason = format!(
        "missing signature {}.sig; sign the bundle with `ssh-keygen -Y sign -f KEY -n outpost-bundle BUNDLE`",
        path.display()
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn signature_by_a_key_not_in_allowed_signers() -> Result {
    let (fleet, _) = trusting_fleet()?;
    keygen(&fleet.key("stranger"))?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle_unsigned("stranger.bundle", &["main"])?;
    fleet.sign(&path, "stranger", "outpost-bundle")?;
    let reason = refusal_of(&fleet, &path)?;
    assert!(
        reason.starts_with(&format!(
            "signature {}.sig refused: signing key SHA256:",
            path.display()
        )),
        "{reason}"
    );
    assert!(
        reason.ends_with("is not in allowed_signers; add it there if it should be trusted"),
        "{reason}"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn right_key_wrong_namespace() -> Result {
    let (fleet, _) = trusting_fleet()?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle_unsigned("git-ns.bundle", &["main"])?;
    fleet.sign(&path, "fleet", "git")?;
    let reason = format!(
        "signature {}.sig refused: signature is for namespace \"git\" but \"outpost-bundle\" is required; sign with ssh-keygen -Y sign -n outpost-bundle",
        path.display()
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn revoked_key() -> Result {
    let (fleet, _) = trusting_fleet()?;
    std::fs::copy(
        fleet.key("fleet").with_extension("key.pub"),
        fleet.path("revoked_keys"),
    )?;
    fleet.write_config("revoked_keys = \"revoked_keys\"\n")?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle("next.bundle", &["main"])?;
    let reason = refusal_of(&fleet, &path)?;
    assert!(
        reason.starts_with(&format!("signature {}.sig refused: ", path.display()))
            && reason.contains("revoked"),
        "{reason}"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn signature_over_another_file() -> Result {
    let (fleet, _) = trusting_fleet()?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle_unsigned("next.bundle", &["main"])?;
    std::fs::copy(fleet.path("base.bundle.sig"), fleet.path("next.bundle.sig"))?;
    let reason = refusal_of(&fleet, &path)?;
    assert!(
        reason.starts_with(&format!(
            "signature {}.sig refused: signature by SHA256:",
            path.display()
        )) && reason.contains("does not match"),
        "{reason}"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn v4_bundle_header() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (tip, bytes, len) = next_bundle(&fleet)?;
    let path = fleet.signed_file(
        "v4.bundle",
        &with_header(
            &format!("# v4 git bundle\n{tip} refs/heads/main\n\n"),
            &bytes,
            len,
        ),
    )?;
    assert_refused(
        &fleet,
        &path,
        "not a git bundle: the first line is \"# v4 git bundle\", expected \"# v2 git bundle\" or \"# v3 git bundle\"",
    )
}

#[test]
fn sha256_object_format() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (tip, bytes, len) = next_bundle(&fleet)?;
    let header = format!("# v3 git bundle\n@object-format=sha256\n{tip} refs/heads/main\n\n");
    let path = fleet.signed_file("sha256.bundle", &with_header(&header, &bytes, len))?;
    assert_refused(
        &fleet,
        &path,
        "bundle uses object format \"sha256\"; outpost handles sha1 repositories only",
    )
}

#[test]
fn unknown_capability() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (tip, bytes, len) = next_bundle(&fleet)?;
    let header = format!("# v3 git bundle\n@filter=blob:none\n{tip} refs/heads/main\n\n");
    let path = fleet.signed_file("filter.bundle", &with_header(&header, &bytes, len))?;
    assert_refused(
        &fleet,
        &path,
        "bundle needs capability \"filter=blob:none\", which outpost does not support; create it with plain `git bundle create`",
    )
}

#[test]
fn header_of_more_than_one_mebibyte() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (tip, bytes, len) = next_bundle(&fleet)?;
    let header = format!(
        "# v2 git bundle\n{tip} refs/heads/{}\n\n",
        "x".repeat(1 << 20)
    );
    let path = fleet.signed_file("long.bundle", &with_header(&header, &bytes, len))?;
    assert_refused(
        &fleet,
        &path,
        "bundle header is longer than 1048576 bytes (at line 2); bundle fewer refs",
    )
}

#[test]
fn ref_name_with_dot_dot() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let (tip, bytes, len) = next_bundle(&fleet)?;
    let header = format!("# v2 git bundle\n{tip} refs/heads/../x\n\n");
    let path = fleet.signed_file("dotdot.bundle", &with_header(&header, &bytes, len))?;
    assert_refused(
        &fleet,
        &path,
        "bundle ref name \"refs/heads/../x\" is invalid",
    )
}

#[test]
fn missing_prerequisite_names_the_commit() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let base = fleet.commit("a", "2")?;
    fleet.commit("a", "3")?;
    let path = fleet.bundle("update.bundle", &["main~1..main"])?;
    let reason = format!(
        "bundle needs commit {base}, which this host does not have; import the bundle that contains it first, or a full bundle"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn bundle_bigger_than_the_cap() -> Result {
    let (fleet, _) = trusting_fleet()?;
    fleet.write_config("\n[source]\nmax_bundle_size = \"100B\"\n")?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let path = fleet.bundle("big.bundle", &["main"])?;
    let size = std::fs::metadata(&path)?.len();
    let reason = format!(
        "{} is {size} bytes, more than source.max_bundle_size (100 bytes); raise the limit or ship incremental bundles",
        path.display()
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn path_is_a_symlink() -> Result {
    let (fleet, _) = trusting_fleet()?;
    fleet.commit("outpost.toml", "# v2\n")?;
    let real = fleet.bundle("real.bundle", &["main"])?;
    let link = fleet.path("link.bundle");
    std::os::unix::fs::symlink(&real, &link)?;
    std::os::unix::fs::symlink(fleet.path("real.bundle.sig"), fleet.path("link.bundle.sig"))?;
    let reason = format!(
        "{} is a symbolic link; outpost does not follow links from a stick, copy the files themselves",
        link.display()
    );
    assert_refused(&fleet, &link, &reason)
}

#[test]
fn path_is_a_fifo() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let fifo = fleet.path("pipe.bundle");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)?;
    let reason = format!("{} is not a regular file", fifo.display());
    assert_refused(&fleet, &fifo, &reason)
}

#[test]
fn path_is_a_directory_named_like_a_bundle() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let dir = fleet.path("x.bundle");
    std::fs::create_dir(&dir)?;
    let reason = format!("{} is a directory, not a bundle file", dir.display());
    assert_refused(&fleet, &dir, &reason)
}

#[test]
fn tip_commit_unsigned() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let tip = fleet.commit_as("outpost.toml", "# v2\n", None)?;
    let path = fleet.bundle("unsigned-tip.bundle", &["main"])?;
    let reason = format!(
        "tip commit {tip} of refs/heads/main is not signed; publish commits signed with `git -c gpg.format=ssh commit -S`"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn tip_commit_signed_by_an_unknown_key() -> Result {
    let (fleet, _) = trusting_fleet()?;
    keygen(&fleet.key("stranger"))?;
    let tip = fleet.commit_as("outpost.toml", "# v2\n", Some("stranger"))?;
    let path = fleet.bundle("stranger-tip.bundle", &["main"])?;
    let reason = refusal_of(&fleet, &path)?;
    assert!(
        reason.starts_with(&format!(
            "tip commit {tip} of refs/heads/main refused: signing key SHA256:"
        )),
        "{reason}"
    );
    assert!(
        reason.ends_with("is not in allowed_signers; add it there if it should be trusted"),
        "{reason}"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn replayed_older_bundle_is_a_recorded_no_op() -> Result {
    let (fleet, first) = trusting_fleet()?;
    // An old stick: the same state as the base bundle, in a file of its own (it also carries a tag).
    fleet.git_run(&["tag", "v1"])?;
    let old = fleet.bundle("old-stick.bundle", &["main", "v1"])?;
    let tip = fleet.commit("outpost.toml", "# v2\n")?;
    let new = fleet.bundle("new.bundle", &["main"])?;
    assert_eq!(fleet.outpost_paths("import", &[&new])?.code, 0);
    let objects = fleet.objects_snapshot()?;
    let run = fleet.outpost_paths("import", &[&old])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.trim_end(),
        format!(
            "no-op {}: replay: {first} is older than the trusted commit {tip}; nothing changes",
            old.display()
        )
    );
    assert_eq!(fleet.trusted()?, Some(tip));
    assert_eq!(fleet.objects_snapshot()?, objects);
    assert_eq!(
        fleet.status()?["rejected"].as_array().map(Vec::len),
        Some(0)
    );
    Ok(())
}

#[test]
fn divergent_history_is_refused() -> Result {
    let (fleet, first) = trusting_fleet()?;
    fleet.git_run(&["checkout", "-q", "--orphan", "other"])?;
    fleet.git_run(&["rm", "-rfq", "."])?;
    let other = fleet.commit("outpost.toml", "# rewritten\n")?;
    fleet.git_run(&["branch", "-f", "main", "other"])?;
    let path = fleet.bundle("rewritten.bundle", &["main"])?;
    let reason = format!(
        "tip commit {other} does not descend from the trusted commit {first} (history was rewritten); set trust.allow_rewind = true to accept it"
    );
    assert_refused(&fleet, &path, &reason)
}

#[test]
fn malformed_allowed_signers_line_is_named() -> Result {
    let fleet = Fleet::new()?;
    let good = std::fs::read_to_string(fleet.path("allowed_signers"))?;
    std::fs::write(
        fleet.path("allowed_signers"),
        format!("{good}ops@example.com ssh-ed25519 not!base64\n"),
    )?;
    fleet.commit("a", "1")?;
    let path = fleet.bundle("site.bundle", &["main"])?;
    let run = fleet.outpost_paths("import", &[&path])?;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let file = fleet.path("allowed_signers");
    assert!(
        run.stderr
            .starts_with(&format!("outpost: error: {}:3: ", file.display())),
        "{}",
        run.stderr
    );
    assert!(!fleet.state().exists(), "nothing may be written");
    Ok(())
}

#[test]
fn config_typo_names_line_and_column() -> Result {
    let fleet = Fleet::new()?;
    fleet.write_config("alow_rewind = true\n")?;
    let run = fleet.outpost(&["status"])?;
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.lines().next().unwrap_or_default(),
        format!(
            "outpost: error: invalid config file {}: line 14, column 1: unknown field `alow_rewind`, expected one of `allowed_signers`, `revoked_keys`, `allow_rewind`, `max_future`",
            fleet.config().display()
        )
    );
    assert!(!fleet.state().exists());
    Ok(())
}

#[test]
fn database_from_a_newer_outpost_is_refused() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let objects = fleet.objects_snapshot()?;
    rusqlite::Connection::open(fleet.state().join("outpost.db"))?.pragma_update(
        None,
        "user_version",
        99,
    )?;
    let before = Fleet::snapshot(&fleet.state())?;
    fleet.commit("a", "2")?;
    let path = fleet.bundle("next.bundle", &["main"])?;
    let expected = format!(
        "outpost: error: database {} was written by a newer outpost (schema 99, this binary knows up to 8); upgrade outpost",
        fleet.state().join("outpost.db").display()
    );
    for args in [vec!["import", path.to_str().ok_or("path")?], vec!["status"]] {
        let run = fleet.outpost(&args)?;
        assert_eq!(run.code, 2, "{args:?}");
        assert_eq!(run.stderr.trim_end(), expected);
    }
    assert_eq!(
        Fleet::snapshot(&fleet.state())?.get(Path::new("floor")),
        before.get(Path::new("floor"))
    );
    assert_eq!(fleet.objects_snapshot()?, objects);
    Ok(())
}

/// The reason `verify` gives, for messages that hold a fingerprint.
fn refusal_of(fleet: &Fleet, path: &Path) -> Result<String> {
    let run = fleet.outpost_paths("verify", &[path])?;
    let prefix = format!("refused {}: ", path.display());
    Ok(run
        .stdout
        .trim_end()
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("not refused: {}{}", run.stdout, run.stderr))?
        .to_owned())
}

#[test]
fn pack_missing_an_object_the_tip_needs() -> Result {
    let (fleet, _) = trusting_fleet()?;
    let tip = fleet.commit("roles/camera.toml", "# camera\n")?;
    let blob = fleet.git_run(&["rev-parse", "HEAD:roles/camera.toml"])?;
    // A pack of everything new but that blob, wrapped in a bundle header by hand.
    let objects = fleet.git_run(&["rev-list", "--objects", "main~1..main"])?;
    let list: String = objects
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|oid| *oid != blob)
        .map(|oid| format!("{oid}\n"))
        .collect();
    let mut child = std::process::Command::new("git")
        .current_dir(fleet.repo())
        .args(["pack-objects", "--stdout", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().ok_or("stdin")?, list.as_bytes())?;
    let pack = child.wait_with_output()?.stdout;
    let base = fleet.git_run(&["rev-parse", "main~1"])?;
    let mut bytes = format!("# v2 git bundle\n-{base}\n{tip} refs/heads/main\n\n").into_bytes();
    bytes.extend_from_slice(&pack);
    let path = fleet.signed_file("incomplete.bundle", &bytes)?;
    let reason = format!(
        "the bundle is incomplete: {blob} (reachable from {tip}) is neither in the bundle nor on this host"
    );
    assert_refused(&fleet, &path, &reason)
}
