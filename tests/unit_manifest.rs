//! `[[unit]]` entries and `restart` lists are checked with the manifest, before anything is
//! planned: names systemd would not take, and units outpost must never stop, are refused by
//! name; a host without systemd is a clear error. Nothing changes on the host.

use crate::support::{Fleet, Result};

const FILE: &str = "[[file]]\npath = \"/etc/app.conf\"\nsource = \"app.conf\"\n";

/// Publishes `FILE` plus `extra`, runs plan and apply, and returns their stderr after
/// checking both failed and nothing changed.
fn refused(extra: &str) -> Result<(String, String)> {
    let fleet = Fleet::new()?;
    fleet.publish(&[
        ("outpost.toml", &format!("{FILE}{extra}")),
        ("app.conf", "x\n"),
    ])?;
    let before = fleet.host_snapshot()?;
    let plan = fleet.outpost(&["plan"])?;
    let apply = fleet.outpost(&["apply"])?;
    assert_eq!(plan.code, 2, "plan: {}", plan.stderr);
    assert_eq!(apply.code, 1, "apply: {}", apply.stderr);
    assert_eq!(fleet.host_snapshot()?, before, "the host is unchanged");
    assert!(fleet.deployments()?.is_empty());
    Ok((plan.stderr, apply.stderr))
}

#[test]
fn unit_names_that_are_not_units_are_refused_by_entry() -> Result {
    for (name, problem) in [
        (
            "../x.service",
            "has a character systemd does not allow in unit names ('/')",
        ),
        (
            "foo.service;rm",
            "has a character systemd does not allow in unit names (';')",
        ),
        ("foo", "has no unit type; add one such as \".service\""),
        ("getty@.service", "is a template without an instance"),
    ] {
        let (plan, apply) = refused(&format!("[[unit]]\nname = \"{name}\"\nactive = true\n"))?;
        let expected = format!("outpost.toml: unit #1 ({name}): name \"{name}\" {problem}");
        assert!(plan.contains(&expected), "{name}: {plan}");
        assert!(apply.contains(&expected), "{name}: {apply}");
    }
    Ok(())
}

#[test]
fn a_restart_of_something_that_is_not_a_unit_is_refused() -> Result {
    let (plan, _) = refused(
        "[[file]]\npath = \"/etc/b.conf\"\nsource = \"app.conf\"\nrestart = [\"web.service\", \"$(reboot)\"]\n",
    )?;
    assert!(
        plan.contains("outpost.toml: file #2 (/etc/b.conf): restart \"$(reboot)\" has a character"),
        "{plan}"
    );
    Ok(())
}

#[test]
fn stopping_dbus_or_outposts_own_unit_is_refused() -> Result {
    for (entry, expected) in [
        (
            "[[unit]]\nname = \"dbus.service\"\nactive = false\n",
            "unit #1 (dbus.service): active dbus.service cannot be stopped by outpost: the system bus must keep running",
        ),
        (
            "[[unit]]\nname = \"outpost.service\"\nenabled = false\n",
            "unit #1 (outpost.service): enabled outpost.service cannot be disabled by outpost: it is outpost's own unit",
        ),
        (
            "[[unit]]\nname = \"systemd-journald.service\"\nactive = false\n",
            "systemd-journald.service cannot be stopped by outpost: it is one of systemd's own units",
        ),
        (
            "[[file]]\npath = \"/etc/b.conf\"\nsource = \"app.conf\"\nrestart = [\"outpost-usb@sdb.service\"]\n",
            "file #2 (/etc/b.conf): restart outpost-usb@sdb.service cannot be restarted by outpost: it is outpost's own unit",
        ),
    ] {
        let (plan, apply) = refused(entry)?;
        assert!(plan.contains(expected), "{plan}");
        assert!(apply.contains(expected), "{apply}");
    }
    Ok(())
}

#[test]
fn units_on_a_host_without_systemd_are_a_clear_error() -> Result {
    let fleet = Fleet::new()?;
    fleet.publish(&[
        (
            "outpost.toml",
            &format!("{FILE}[[unit]]\nname = \"hello.service\"\nactive = true\n"),
        ),
        ("app.conf", "x\n"),
    ])?;
    let before = fleet.host_snapshot()?;
    let run = fleet.outpost(&["apply"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "systemd is not running under host root {} (no run/systemd/system there); [[unit]] entries need a host booted with systemd",
            fleet.host().display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(fleet.host_snapshot()?, before);
    assert!(fleet.deployments()?.is_empty());
    Ok(())
}
