//! Every bad input of a manifest: a named test asserting the exact message.

use super::{Fixture, TestResult};
use crate::manifest::EntryKind;

/// The message for a manifest with one `[[file]]` of `path` and a good source.
fn file_path_error(path: &str) -> TestResult<String> {
    let toml = format!("[[file]]\npath = {path:?}\nsource = \"files/a\"\n");
    Fixture::with(&[("outpost.toml", &toml), ("files/a", "a\n")])?.error()
}

#[test]
fn entry_below_a_file_is_refused() -> TestResult {
    let msg = Fixture::with(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/etc/a\"\nsource = \"f\"\n[[absent]]\npath = \"/etc/a/b\"\n",
        ),
        ("f", "f\n"),
    ])?
    .error()?;
    assert_eq!(
        msg,
        "outpost.toml: absent #1 (/etc/a/b): path is below outpost.toml: file #1 (/etc/a) (file), which cannot hold other entries"
    );
    Ok(())
}

#[test]
fn path_outside_allowed_paths_is_refused() -> TestResult {
    assert_eq!(
        file_path_error("/usr/bin/x")?,
        "outpost.toml: file #1 (/usr/bin/x): path is outside apply.allowed_paths (/etc, /opt, /srv, /usr/local, /var/lib)"
    );
    assert!(file_path_error("/etcetera/x")?.contains("is outside apply.allowed_paths"));
    Ok(())
}

#[test]
fn dot_dot_path_is_refused() -> TestResult {
    assert_eq!(
        file_path_error("/etc/../usr/bin/x")?,
        "outpost.toml: file #1 (/etc/../usr/bin/x): path has a \"..\" component; write the path without it"
    );
    Ok(())
}

#[test]
fn relative_path_is_refused() -> TestResult {
    assert_eq!(
        file_path_error("etc/relative")?,
        "outpost.toml: file #1 (etc/relative): path must be an absolute host path (starting with /)"
    );
    Ok(())
}

#[test]
fn empty_component_is_refused() -> TestResult {
    assert_eq!(
        file_path_error("/etc//x")?,
        "outpost.toml: file #1 (/etc//x): path has an empty component (// or a trailing /)"
    );
    Ok(())
}

#[test]
fn nul_in_path_is_refused() -> TestResult {
    let toml = "[[file]]\npath = \"/etc/x\\u0000y\"\nsource = \"files/a\"\n";
    assert_eq!(
        Fixture::with(&[("outpost.toml", toml), ("files/a", "a\n")])?.error()?,
        "outpost.toml: file #1 (/etc/x\\0y): path contains a NUL byte"
    );
    Ok(())
}

fn source_error(extra: &[(&str, &str)], source: &str) -> TestResult<String> {
    let toml = format!("[[file]]\npath = \"/etc/x\"\nsource = {source:?}\n");
    let f = Fixture::with(&[("outpost.toml", toml.as_str())])?;
    for (path, text) in extra {
        f.write(path, text)?;
    }
    f.error()
}

#[test]
fn missing_source_is_refused() -> TestResult {
    assert_eq!(
        source_error(&[], "files/nope")?,
        "outpost.toml: file #1 (/etc/x): source files/nope does not exist in the commit"
    );
    Ok(())
}

#[test]
fn directory_source_is_refused() -> TestResult {
    assert_eq!(
        source_error(&[("files/dir/a", "a")], "files/dir")?,
        "outpost.toml: file #1 (/etc/x): source files/dir is a directory in the repository; use [[tree]] for a whole directory"
    );
    Ok(())
}

#[test]
fn symlink_source_is_refused() -> TestResult {
    let f = Fixture::with(&[(
        "outpost.toml",
        "[[file]]\npath = \"/etc/x\"\nsource = \"files/shadow\"\n",
    )])?;
    std::fs::create_dir_all(f.work().join("files"))?;
    std::os::unix::fs::symlink("/etc/shadow", f.work().join("files/shadow"))?;
    assert_eq!(
        f.error()?,
        "outpost.toml: file #1 (/etc/x): source files/shadow is a symlink in the repository (to /etc/shadow); sources must be regular files"
    );
    Ok(())
}

#[test]
fn symlink_inside_a_tree_source_is_refused() -> TestResult {
    let f = Fixture::with(&[
        (
            "outpost.toml",
            "[[tree]]\npath = \"/opt/app\"\nsource = \"app\"\n",
        ),
        ("app/a", "a\n"),
    ])?;
    std::os::unix::fs::symlink("/etc/shadow", f.work().join("app/shadow"))?;
    assert_eq!(
        f.error()?,
        "outpost.toml: tree #1 (/opt/app): source app/shadow is a symlink in the repository (to /etc/shadow); sources must be regular files"
    );
    Ok(())
}

#[test]
fn submodule_source_is_refused() -> TestResult {
    let mut f = Fixture::with(&[(
        "outpost.toml",
        "[[file]]\npath = \"/etc/x\"\nsource = \"sub\"\n[[tree]]\npath = \"/opt/x\"\nsource = \"sub\"\n",
    )])?;
    f.gitlinks.push("sub".to_owned());
    assert_eq!(
        f.error()?,
        "outpost.toml: file #1 (/etc/x): source sub is a submodule; sources must be regular files inside the commit"
    );
    Ok(())
}

#[test]
fn source_escaping_the_repository_is_refused() -> TestResult {
    assert_eq!(
        source_error(&[], "../outside")?,
        "outpost.toml: file #1 (/etc/x): source has a \"..\" component; write the path without it"
    );
    Ok(())
}

#[test]
fn include_cycle_is_refused() -> TestResult {
    let msg = Fixture::with(&[
        ("outpost.toml", "[[include]]\npath = \"roles/a.toml\"\n"),
        ("roles/a.toml", "[[include]]\npath = \"roles/b.toml\"\n"),
        ("roles/b.toml", "[[include]]\npath = \"roles/a.toml\"\n"),
    ])?
    .error()?;
    assert_eq!(
        msg,
        "include cycle: outpost.toml -> roles/a.toml -> roles/b.toml -> roles/a.toml; remove one of these includes"
    );
    Ok(())
}

#[test]
fn missing_include_names_the_chain() -> TestResult {
    let f = Fixture::with(&[
        ("outpost.toml", "[[include]]\npath = \"roles/a.toml\"\n"),
        ("roles/a.toml", "[[include]]\npath = \"roles/gone.toml\"\n"),
    ])?;
    let msg = f.error()?;
    let head = f.git(&["rev-parse", "HEAD"])?;
    assert_eq!(
        msg,
        format!(
            "roles/gone.toml does not exist in commit {head} (included by outpost.toml -> roles/a.toml)"
        )
    );
    Ok(())
}

#[test]
fn duplicate_path_is_refused() -> TestResult {
    let msg = Fixture::with(&[
        (
            "outpost.toml",
            "[[include]]\npath = \"more.toml\"\n[[directory]]\npath = \"/etc/x\"\n",
        ),
        ("more.toml", "[[absent]]\npath = \"/etc/x\"\n"),
    ])?
    .error()?;
    assert!(
        msg == "more.toml: absent #1 (/etc/x): path is also claimed by outpost.toml: directory #1 (/etc/x)"
            || msg
                == "outpost.toml: directory #1 (/etc/x): path is also claimed by more.toml: absent #1 (/etc/x)",
        "{msg}"
    );
    Ok(())
}

#[test]
fn bad_modes_are_refused() -> TestResult {
    for (mode, problem) in [
        (
            "999",
            "mode \"999\" is not an octal mode such as \"0644\" (at most 0777)",
        ),
        (
            "04755",
            "mode \"04755\" sets setuid/setgid; add allow_setid = true to the entry if that is intended",
        ),
    ] {
        let toml = format!("[[directory]]\npath = \"/opt/x\"\nmode = {mode:?}\n");
        let msg = Fixture::with(&[("outpost.toml", toml.as_str())])?.error()?;
        assert_eq!(
            msg,
            format!("outpost.toml: directory #1 (/opt/x): {problem}")
        );
    }
    let allowed = Fixture::with(&[(
        "outpost.toml",
        "[[directory]]\npath = \"/opt/x\"\nmode = \"02775\"\nallow_setid = true\n",
    )])?
    .load()??;
    assert!(matches!(
        allowed.entries[0].kind,
        EntryKind::Directory { mode: 0o2775, .. }
    ));
    Ok(())
}

#[test]
fn unknown_owner_is_refused() -> TestResult {
    let msg = Fixture::with(&[(
        "outpost.toml",
        "[[directory]]\npath = \"/opt/x\"\nowner = \"outpost-ghost\"\n",
    )])?
    .error()?;
    assert_eq!(
        msg,
        "outpost.toml: directory #1 (/opt/x): owner \"outpost-ghost\" is not a user on this host; create it first or give a numeric uid"
    );
    Ok(())
}

#[test]
fn toml_errors_name_the_file_line_and_column() -> TestResult {
    let msg = Fixture::with(&[
        ("outpost.toml", "[[include]]\npath = \"r.toml\"\n"),
        ("r.toml", "\n[[file]]\npath = \"/etc/x\"\nmod = \"0644\"\n"),
    ])?
    .error()?;
    assert!(
        msg.starts_with("invalid r.toml: line 4, column 1: unknown field `mod`"),
        "{msg}"
    );
    Ok(())
}
