//! systemd unit names as a manifest may give them, and the units outpost never stops.

/// The unit types a manifest may name (`.scope` and `.device` units are systemd's own).
pub const SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "slice",
];

/// What is wrong with a unit name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("is empty")]
    Empty,
    #[error("is longer than 255 bytes")]
    TooLong,
    #[error(
        "has a character systemd does not allow in unit names ({0}); use letters, digits and \":-_.\\@\""
    )]
    BadCharacter(String),
    #[error("contains \"..\"")]
    DotDot,
    #[error("starts with \"-\"")]
    LeadingDash,
    #[error("has no unit type; add one such as \".service\" ({})", SUFFIXES.join(", "))]
    NoSuffix,
    #[error("is a template without an instance; name one instance, such as \"{0}@NAME.{1}\"")]
    TemplateWithoutInstance(String, String),
    #[error("has more than one \"@\"")]
    TwoAts,
}

/// Checks a unit name: `foo.service`, `foo@bar.service`, one of [`SUFFIXES`]; no `/`, no
/// `..`, no control characters, nothing a shell or systemctl could read as more.
pub fn check(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.len() > 255 {
        return Err(NameProblem::TooLong);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@')))
    {
        return Err(NameProblem::BadCharacter(format!("{:?}", c)));
    }
    if name.contains("..") {
        return Err(NameProblem::DotDot);
    }
    if name.starts_with('-') {
        return Err(NameProblem::LeadingDash);
    }
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return Err(NameProblem::NoSuffix);
    };
    if stem.is_empty() || !SUFFIXES.contains(&suffix) {
        return Err(NameProblem::NoSuffix);
    }
    match stem.split_once('@') {
        Some((_, instance)) if instance.contains('@') => Err(NameProblem::TwoAts),
        Some((template, "")) => Err(NameProblem::TemplateWithoutInstance(
            template.to_owned(),
            suffix.to_owned(),
        )),
        Some(("", _)) => Err(NameProblem::NoSuffix),
        _ => Ok(()),
    }
}

/// Why outpost never stops, disables or restarts a unit, when it is one of those: outpost's
/// own units (stopping them would stop the agent mid-deployment), the system bus and systemd's
/// own units (the host, and outpost's way to talk to systemd, depend on them).
pub fn protected(name: &str) -> Option<&'static str> {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let template = stem.split_once('@').map_or(stem, |(t, _)| t);
    if template == "outpost" || template.starts_with("outpost-") {
        Some("it is outpost's own unit")
    } else if stem == "dbus" || name.starts_with("dbus.") {
        Some("the system bus must keep running")
    } else if name.starts_with("systemd-") {
        Some("it is one of systemd's own units")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for name in [
            "hello.service",
            "getty@tty1.service",
            "var-lib-x.mount",
            "a\\x2db.service",
            "web.socket",
            "nightly.timer",
            "x.y.service",
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names() {
        let cases = [
            ("", NameProblem::Empty),
            ("../x.service", NameProblem::BadCharacter("'/'".into())),
            ("foo.service;rm", NameProblem::BadCharacter("';'".into())),
            ("foo", NameProblem::NoSuffix),
            ("foo.exe", NameProblem::NoSuffix),
            (".service", NameProblem::NoSuffix),
            ("a..b.service", NameProblem::DotDot),
            ("-x.service", NameProblem::LeadingDash),
            ("x\n.service", NameProblem::BadCharacter("'\\n'".into())),
            ("x y.service", NameProblem::BadCharacter("' '".into())),
            (
                "getty@.service",
                NameProblem::TemplateWithoutInstance("getty".into(), "service".into()),
            ),
            ("a@b@c.service", NameProblem::TwoAts),
            ("@b.service", NameProblem::NoSuffix),
            ("init.scope", NameProblem::NoSuffix),
        ];
        for (name, problem) in cases {
            assert_eq!(check(name), Err(problem), "{name:?}");
        }
        assert_eq!(
            check(&format!("{}.service", "a".repeat(250))),
            Err(NameProblem::TooLong)
        );
    }

    #[test]
    fn protected_units() {
        for name in [
            "outpost.service",
            "outpost-usb@loop0.service",
            "dbus.service",
            "dbus.socket",
            "systemd-journald.service",
        ] {
            assert!(protected(name).is_some(), "{name}");
        }
        for name in [
            "hello.service",
            "outposts.service",
            "dbusx.service",
            "my-systemd.service",
        ] {
            assert_eq!(protected(name), None, "{name}");
        }
    }
}
