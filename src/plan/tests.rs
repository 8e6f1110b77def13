//! Plans from small literal inputs.

use std::path::PathBuf;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn p(path: &str) -> HostPath {
    HostPath::parse(path).expect("test paths are valid")
}

fn owner(uid: u32, name: &str) -> (Owner, Group) {
    let o = Owner {
        uid,
        name: name.into(),
    };
    let g = Group {
        gid: uid,
        name: name.into(),
    };
    (o, g)
}

fn file(path: &str, text: &str, mode: u32, restart: &[&str]) -> Desired {
    let (o, g) = owner(0, "root");
    Desired {
        path: p(path),
        kind: DesiredKind::file(text.as_bytes(), mode, o, g),
        restart: restart.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn dir(path: &str, mode: u32, exact: bool) -> Desired {
    let (owner, group) = owner(0, "root");
    Desired {
        path: p(path),
        kind: DesiredKind::Directory {
            mode,
            owner,
            group,
            exact,
        },
        restart: vec!["tree.service".to_owned()],
    }
}

fn other(path: &str, kind: DesiredKind) -> Desired {
    Desired {
        path: p(path),
        kind,
        restart: Vec::new(),
    }
}

fn seen_file(bytes: &[u8], mode: u32, uid: u32) -> Observed {
    Observed::File {
        blob: blob_id(bytes),
        size: bytes.len() as u64,
        mode,
        uid,
        gid: uid,
    }
}

fn seen_dir(mode: u32) -> Observed {
    Observed::Directory {
        mode,
        uid: 0,
        gid: 0,
    }
}

fn observation(items: &[(&str, Observed)]) -> Observation {
    items.iter().map(|(path, o)| (p(path), o.clone())).collect()
}

fn lines(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(ToString::to_string).collect()
}

#[test]
fn nothing_to_do_when_the_host_matches() -> TestResult {
    let desired = [
        file("/etc/a.conf", "a\n", 0o644, &["a.service"]),
        dir("/etc/d", 0o755, false),
        other(
            "/etc/l",
            DesiredKind::Symlink {
                target: "/x".into(),
            },
        ),
        other("/etc/gone", DesiredKind::Absent),
    ];
    let observed = observation(&[
        ("/etc/a.conf", seen_file(b"a\n", 0o644, 0)),
        ("/etc/d", seen_dir(0o755)),
        (
            "/etc/l",
            Observed::Symlink {
                target: "/x".into(),
            },
        ),
        ("/etc/gone", Observed::Missing),
    ]);
    let plan = make(
        &desired,
        &observed,
        &[Managed {
            path: p("/etc/a.conf"),
            took_over: false,
        }],
    )?;
    assert!(plan.is_empty(), "{plan}");
    assert!(plan.restart.is_empty());
    assert_eq!(
        plan.stat().to_string(),
        "0 to create, 0 to change, 0 to remove"
    );
    Ok(())
}

#[test]
fn steps_are_ordered_by_phase() -> TestResult {
    let desired = [
        file("/opt/app/conf/app.conf", "x\n", 0o644, &[]),
        dir("/opt/app/data", 0o750, false),
        other("/opt/old", DesiredKind::Absent),
        other("/opt/old-dir", DesiredKind::Absent),
    ];
    let observed = observation(&[
        ("/opt/app", Observed::Missing),
        ("/opt/app/conf", Observed::Missing),
        ("/opt/old", seen_file(b"o", 0o644, 0)),
        ("/opt/old-dir", seen_dir(0o755)),
        ("/opt/old-dir/inner", seen_file(b"i", 0o644, 0)),
        ("/opt/gone", seen_file(b"g", 0o644, 0)),
    ]);
    let previous = [Managed {
        path: p("/opt/gone"),
        took_over: false,
    }];
    let plan = make(&desired, &observed, &previous)?;
    assert_eq!(
        lines(&plan),
        [
            "+ mkdir /opt/app (0755 root:root), parent of a managed path",
            "+ mkdir /opt/app/conf (0755 root:root), parent of a managed path",
            "+ mkdir /opt/app/data (0750 root:root)",
            "+ write /opt/app/conf/app.conf (0644 root:root, 2 B)",
            "- remove /opt/old-dir/inner (file)",
            "- remove /opt/old (file)",
            "- remove /opt/old-dir (directory)",
            "- remove /opt/gone (file), no longer in the manifest",
        ]
    );
    assert_eq!(
        plan.stat().to_string(),
        "4 to create, 0 to change, 4 to remove"
    );
    Ok(())
}

#[test]
fn mode_only_change_is_a_chmod() -> TestResult {
    let observed = observation(&[("/etc/y", seen_file(b"y\n", 0o600, 0))]);
    let plan = make(&[file("/etc/y", "y\n", 0o644, &[])], &observed, &[])?;
    assert_eq!(lines(&plan), ["~ chmod /etc/y 0600 -> 0644"]);
    assert_eq!(
        plan.stat().to_string(),
        "0 to create, 1 to change, 0 to remove"
    );
    Ok(())
}

#[test]
fn owner_change_is_a_chown_before_the_chmod() -> TestResult {
    let observed = observation(&[("/etc/y", seen_file(b"y\n", 0o600, 1000))]);
    let plan = make(&[file("/etc/y", "y\n", 0o644, &[])], &observed, &[])?;
    assert_eq!(
        lines(&plan),
        [
            "~ chown /etc/y 1000:1000 -> root:root",
            "~ chmod /etc/y 0600 -> 0644"
        ]
    );
    assert_eq!(plan.stat().change, 1);
    Ok(())
}

#[test]
fn symlink_is_retargeted() -> TestResult {
    let desired = [other(
        "/etc/localtime",
        DesiredKind::Symlink {
            target: "/usr/share/zoneinfo/UTC".into(),
        },
    )];
    let observed = observation(&[(
        "/etc/localtime",
        Observed::Symlink {
            target: "/usr/share/zoneinfo/Europe/Berlin".into(),
        },
    )]);
    let plan = make(&desired, &observed, &[])?;
    assert_eq!(
        lines(&plan),
        [
            "~ symlink /etc/localtime -> /usr/share/zoneinfo/UTC (was /usr/share/zoneinfo/Europe/Berlin)"
        ]
    );
    let Action::Symlink { target, .. } = &plan.steps[0].action else {
        return Err("a symlink step expected".into());
    };
    assert_eq!(target, &PathBuf::from("/usr/share/zoneinfo/UTC"));
    Ok(())
}

#[test]
fn absent_removes_only_what_is_there() -> TestResult {
    let desired = [
        other("/etc/cron.d/legacy", DesiredKind::Absent),
        other("/etc/never", DesiredKind::Absent),
    ];
    let observed = observation(&[("/etc/cron.d/legacy", seen_file(b"* * * * * x", 0o644, 0))]);
    let plan = make(&desired, &observed, &[])?;
    assert_eq!(lines(&plan), ["- remove /etc/cron.d/legacy (file)"]);
    Ok(())
}

#[test]
fn tree_extras_are_removed_deepest_first() -> TestResult {
    let desired = [
        dir("/opt/static", 0o755, true),
        dir("/opt/static/js", 0o755, true),
        file("/opt/static/js/app.js", "go()\n", 0o644, &[]),
    ];
    let observed = observation(&[
        ("/opt/static", seen_dir(0o755)),
        ("/opt/static/js", seen_dir(0o755)),
        ("/opt/static/js/app.js", seen_file(b"go()\n", 0o644, 0)),
        ("/opt/static/js/stale.js", seen_file(b"old", 0o644, 0)),
        ("/opt/static/img", seen_dir(0o755)),
        ("/opt/static/img/a.png", seen_file(b"\x89PNG", 0o644, 0)),
    ]);
    let plan = make(&desired, &observed, &[])?;
    assert_eq!(
        lines(&plan),
        [
            "- remove /opt/static/img/a.png (file), not in the tree /opt/static",
            "- remove /opt/static/js/stale.js (file), not in the tree /opt/static/js",
            "- remove /opt/static/img (directory), not in the tree /opt/static",
        ]
    );
    assert_eq!(plan.restart.keys().collect::<Vec<_>>(), ["tree.service"]);
    Ok(())
}

#[test]
fn prune_removes_what_outpost_created_and_restores_what_it_took_over() -> TestResult {
    let observed = observation(&[
        ("/etc/created", seen_file(b"c", 0o644, 0)),
        ("/etc/taken", seen_file(b"t", 0o644, 0)),
        ("/etc/created-gone", Observed::Missing),
        ("/etc/kept", seen_file(b"k", 0o644, 0)),
    ]);
    let previous = [
        Managed {
            path: p("/etc/created"),
            took_over: false,
        },
        Managed {
            path: p("/etc/taken"),
            took_over: true,
        },
        Managed {
            path: p("/etc/created-gone"),
            took_over: false,
        },
        Managed {
            path: p("/etc/kept"),
            took_over: false,
        },
    ];
    let plan = make(&[file("/etc/kept", "k", 0o644, &[])], &observed, &previous)?;
    assert_eq!(
        lines(&plan),
        [
            "- remove /etc/created (file), no longer in the manifest",
            "~ restore /etc/taken (the original from before outpost), no longer in the manifest",
        ]
    );
    Ok(())
}

#[test]
fn originals_come_back_parents_first_after_every_removal_and_not_below_a_tree() -> TestResult {
    let observed = observation(&[
        ("/opt/t", seen_dir(0o755)),
        ("/opt/t/new", seen_file(b"n", 0o644, 0)),
        ("/opt/u", seen_dir(0o755)),
        ("/opt/u/a", seen_file(b"a", 0o644, 0)),
    ]);
    let managed = |path: &str, took_over: bool| Managed {
        path: p(path),
        took_over,
    };
    let previous = [
        managed("/opt/t", true),
        managed("/opt/t/new", false),
        managed("/opt/t/old", true),
        managed("/opt/t/olddir", true),
        managed("/opt/t/olddir/f", true),
        managed("/opt/u/gone", true),
    ];
    // The tree at /opt/t is dropped: its own file goes, then its originals come back.
    let plan = make(
        &[
            dir("/opt/u", 0o755, true),
            file("/opt/u/a", "a", 0o644, &[]),
        ],
        &observed,
        &previous,
    )?;
    assert_eq!(
        lines(&plan),
        [
            "- remove /opt/t/new (file), no longer in the manifest",
            "~ restore /opt/t (the original from before outpost), no longer in the manifest",
            "~ restore /opt/t/old (the original from before outpost), no longer in the manifest",
            "~ restore /opt/t/olddir (the original from before outpost), no longer in the manifest",
            "~ restore /opt/t/olddir/f (the original from before outpost), no longer in the manifest",
        ],
        "/opt/u/gone stays removed while the tree /opt/u is there"
    );
    Ok(())
}

#[test]
fn only_changed_entries_restart_their_units() -> TestResult {
    let desired = [
        file("/etc/a.conf", "new\n", 0o644, &["a.service"]),
        file("/etc/b.conf", "same\n", 0o644, &["b.service"]),
        file("/etc/c.conf", "c\n", 0o644, &["a.service", "c.service"]),
    ];
    let observed = observation(&[
        ("/etc/a.conf", seen_file(b"old\n", 0o644, 0)),
        ("/etc/b.conf", seen_file(b"same\n", 0o644, 0)),
        ("/etc/c.conf", seen_file(b"c\n", 0o600, 0)),
    ]);
    let plan = make(&desired, &observed, &[])?;
    assert_eq!(
        plan.restart
            .iter()
            .map(|(u, p)| (u.as_str(), p.to_string()))
            .collect::<Vec<_>>(),
        [
            ("a.service", "/etc/a.conf".into()),
            ("c.service", "/etc/c.conf".into())
        ]
    );
    Ok(())
}

#[test]
fn text_change_shows_a_unified_diff() -> TestResult {
    let old = "server a.example.com\nmakestep 1 3\n";
    let new = "server b.example.com\nmakestep 1 3\n";
    let observed = observation(&[("/etc/chrony.conf", seen_file(old.as_bytes(), 0o644, 0))]);
    let plan = make(&[file("/etc/chrony.conf", new, 0o644, &[])], &observed, &[])?;
    let texts: Texts = [(
        p("/etc/chrony.conf"),
        Text::Bytes(Some(old.as_bytes().to_vec()), new.as_bytes().to_vec()),
    )]
    .into();
    assert_eq!(
        plan.rewrites()
            .map(|(p, _, _)| p.to_string())
            .collect::<Vec<_>>(),
        ["/etc/chrony.conf"]
    );
    assert_eq!(
        plan.with_diffs(&texts).to_string(),
        "~ write /etc/chrony.conf (0644 root:root, 34 B)\n\
         --- a/etc/chrony.conf\n\
         +++ b/etc/chrony.conf\n\
         @@ -1,2 +1,2 @@\n\
         -server a.example.com\n\
         +server b.example.com\n \
         makestep 1 3\n"
    );
    Ok(())
}

#[test]
fn binary_change_shows_sizes_and_hashes() -> TestResult {
    let (old, new) = (b"\x00\x01old".as_slice(), "\u{0}\u{2}newer");
    let observed = observation(&[("/opt/blob", seen_file(old, 0o644, 0))]);
    let plan = make(&[file("/opt/blob", new, 0o644, &[])], &observed, &[])?;
    let text = plan.to_string();
    let want = format!(
        "~ write /opt/blob (0644 root:root, 7 B)\n  content: 5 B {} -> 7 B {}\n",
        blob_id(old).to_hex_with_len(12),
        blob_id(new.as_bytes()).to_hex_with_len(12)
    );
    assert_eq!(text, want);
    Ok(())
}

#[test]
fn directory_where_a_file_is_wanted_is_refused() {
    let observed = observation(&[("/etc/x", seen_dir(0o755))]);
    let err = make(&[file("/etc/x", "x", 0o644, &[])], &observed, &[])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot put a file at /etc/x: a directory is in the way; remove it by hand or change the manifest"
    );
}

#[test]
fn symlinked_parent_is_refused() {
    let observed = observation(&[("/etc/app", Observed::Symlink { target: "/".into() })]);
    let err = make(&[file("/etc/app/x", "x", 0o644, &[])], &observed, &[])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err,
        PlanError::ParentNotDirectory {
            path: p("/etc/app/x"),
            parent: p("/etc/app"),
            found: "symlink"
        }
    );
}

#[test]
fn a_secret_file_shows_no_diff() -> TestResult {
    let (old, new) = ("password = old\n", "password = new\n");
    let texts = |path: &str| -> Texts {
        [(
            p(path),
            Text::Bytes(Some(old.as_bytes().to_vec()), new.as_bytes().to_vec()),
        )]
        .into()
    };
    let hashes = format!(
        "15 B {} -> 15 B {}",
        blob_id(old.as_bytes()).to_hex_with_len(12),
        blob_id(new.as_bytes()).to_hex_with_len(12)
    );
    // Secret as desired, secret on the host, secret by configuration.
    for (desired, on_host, why) in [
        (0o600, 0o644, "0600"),
        (0o644, 0o640, "0640"),
        (0o644, 0o644, "apply.redact"),
    ] {
        let observed = observation(&[("/etc/db.conf", seen_file(old.as_bytes(), on_host, 0))]);
        let plan = make(&[file("/etc/db.conf", new, desired, &[])], &observed, &[])?;
        let secret = plan
            .rewrites()
            .map(|(_, _, secret)| secret)
            .collect::<Vec<_>>();
        assert_eq!(secret, [why != "apply.redact"]);
        let mut shown = texts("/etc/db.conf");
        if why == "apply.redact" {
            shown.insert(p("/etc/db.conf"), Text::Redacted);
        }
        assert_eq!(
            plan.with_diffs(&shown).to_string(),
            format!(
                "~ write /etc/db.conf ({desired:04o} root:root, 15 B)\n  content differs (secret: {why}, diff hidden): {hashes}\n"
            )
        );
    }
    Ok(())
}

#[test]
fn control_characters_from_the_host_are_escaped() -> TestResult {
    // A file name with a newline inside a tree must not forge a second plan line.
    let observed = observation(&[
        ("/opt/t", seen_dir(0o755)),
        ("/opt/t/x\n+ write /etc/passwd", seen_file(b"", 0o644, 0)),
        (
            "/opt/t/link\u{1b}[2J",
            Observed::Symlink {
                target: "/\u{202e}txt.exe".into(),
            },
        ),
    ]);
    let plan = make(&[dir("/opt/t", 0o755, true)], &observed, &[])?;
    assert_eq!(
        plan.to_string(),
        "- remove /opt/t/x\\n+ write /etc/passwd (file), not in the tree /opt/t\n\
         - remove /opt/t/link\\x1b[2J (symlink), not in the tree /opt/t\n"
    );
    // Content: newlines and tabs are the diff's lines, anything else is escaped.
    let (old, new) = ("a\u{1b}]0;owned\u{7}\r\n", "a\tb\n");
    let observed = observation(&[("/etc/x", seen_file(old.as_bytes(), 0o644, 0))]);
    let plan = make(&[file("/etc/x", new, 0o644, &[])], &observed, &[])?;
    let texts: Texts = [(
        p("/etc/x"),
        Text::Bytes(Some(old.as_bytes().to_vec()), new.as_bytes().to_vec()),
    )]
    .into();
    assert_eq!(
        plan.with_diffs(&texts).to_string(),
        "~ write /etc/x (0644 root:root, 4 B)\n\
         --- a/etc/x\n\
         +++ b/etc/x\n\
         @@ -1 +1 @@\n\
         -a\\x1b]0;owned\\x07\\r\n\
         +a\tb\n"
    );
    Ok(())
}

#[test]
fn absent_below_a_symlink_is_refused() {
    let observed = observation(&[("/opt/x", Observed::Symlink { target: "/".into() })]);
    let err = make(&[other("/opt/x/y/z", DesiredKind::Absent)], &observed, &[])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot check that /opt/x/y/z is absent: /opt/x is a symlink, which outpost never follows; remove the symlink or change the manifest"
    );
}
