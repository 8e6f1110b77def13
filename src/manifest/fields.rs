//! Checks of single fields: modes, owners and groups.

use super::raw::RawId;
use super::{Group, ManifestError, Origin, Owner, Problem};

fn invalid(origin: &Origin, field: &'static str, problem: Problem) -> ManifestError {
    ManifestError::invalid(origin, field, problem)
}

/// An octal mode string: at most `0777`, plus setuid/setgid when `allow_setid`.
pub fn mode(
    origin: &Origin,
    field: &'static str,
    raw: Option<&str>,
    default: u32,
    allow_setid: bool,
) -> Result<u32, ManifestError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let bad = || invalid(origin, field, Problem::BadMode(raw.to_owned()));
    if raw.is_empty() || raw.len() > 5 || !raw.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let value = u32::from_str_radix(raw, 8).map_err(|_| bad())?;
    if value & !0o6777 != 0 {
        return Err(bad());
    }
    if value & 0o6000 != 0 && !allow_setid {
        // A tree has no allow_setid: the hint names what the author can do.
        let problem = match origin.kind {
            "tree" => Problem::SetidInTree(raw.to_owned()),
            _ => Problem::SetidNotAllowed(raw.to_owned()),
        };
        return Err(invalid(origin, field, problem));
    }
    Ok(value)
}

pub fn owner(origin: &Origin, raw: Option<&RawId>) -> Result<Owner, ManifestError> {
    let (uid, name) = resolve_id(origin, "owner", raw, |name| {
        nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw()))
    })?;
    Ok(Owner {
        uid,
        name: name.into(),
    })
}

pub fn group(origin: &Origin, raw: Option<&RawId>) -> Result<Group, ManifestError> {
    let (gid, name) = resolve_id(origin, "group", raw, |name| {
        nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
    })?;
    Ok(Group {
        gid,
        name: name.into(),
    })
}

/// A numeric id is taken as it is; a name is looked up with `find`; absent means root (0).
fn resolve_id(
    origin: &Origin,
    field: &'static str,
    raw: Option<&RawId>,
    find: impl Fn(&str) -> nix::Result<Option<u32>>,
) -> Result<(u32, String), ManifestError> {
    // chown(2) takes (uid_t)-1 as "leave unchanged": as an owner it would silently do nothing.
    let real = |id: u32, name: String| {
        if id == u32::MAX {
            let what = if field == "owner" { "uid" } else { "gid" };
            return Err(invalid(origin, field, Problem::NoChangeId(id, what)));
        }
        Ok((id, name))
    };
    let name = match raw {
        None => return Ok((0, "root".to_owned())),
        Some(RawId::Number(id)) => return real(*id, id.to_string()),
        Some(RawId::Name(name)) => name,
    };
    if let Ok(id) = name.parse::<u32>() {
        return real(id, name.clone());
    }
    let unknown = || match field {
        "owner" => Problem::UnknownUser(name.clone()),
        _ => Problem::UnknownGroup(name.clone()),
    };
    if name.is_empty() || name.contains('\0') {
        return Err(invalid(origin, field, unknown()));
    }
    match find(name) {
        Ok(Some(id)) => real(id, name.clone()),
        Ok(None) => Err(invalid(origin, field, unknown())),
        Err(e) => Err(invalid(origin, field, Problem::LookupId(name.clone(), e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o() -> Origin {
        Origin {
            file: "outpost.toml".to_owned(),
            kind: "file",
            index: 1,
            label: "/etc/x".to_owned(),
        }
    }

    #[test]
    fn modes_are_octal_and_bounded() -> Result<(), ManifestError> {
        assert_eq!(mode(&o(), "mode", None, 0o644, false)?, 0o644);
        assert_eq!(mode(&o(), "mode", Some("0600"), 0o644, false)?, 0o600);
        assert_eq!(mode(&o(), "mode", Some("755"), 0o644, false)?, 0o755);
        assert_eq!(mode(&o(), "mode", Some("04755"), 0o644, true)?, 0o4755);
        for bad in ["999", "", "0x644", "01777", "17777", "-644", "000644"] {
            let msg = mode(&o(), "mode", Some(bad), 0o644, false)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert_eq!(
                msg,
                format!(
                    "outpost.toml: file #1 (/etc/x): mode {bad:?} is not an octal mode such as \"0644\" (at most 0777)"
                )
            );
        }
        Ok(())
    }

    #[test]
    fn setid_needs_allow_setid() {
        let msg = mode(&o(), "mode", Some("04755"), 0o644, false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "outpost.toml: file #1 (/etc/x): mode \"04755\" sets setuid/setgid; add allow_setid = true to the entry if that is intended"
        );
    }

    #[test]
    fn owners_resolve_names_and_take_numbers() -> Result<(), ManifestError> {
        assert_eq!(
            owner(&o(), None)?,
            Owner {
                uid: 0,
                name: "root".into()
            }
        );
        let root = RawId::Name("root".into());
        assert_eq!(owner(&o(), Some(&root))?.uid, 0);
        assert_eq!(group(&o(), Some(&root))?.gid, 0);
        assert_eq!(owner(&o(), Some(&RawId::Number(4242)))?.uid, 4242);
        assert_eq!(owner(&o(), Some(&RawId::Name("4243".into())))?.uid, 4243);
        let nobody = RawId::Name("outpost-no-such-user".into());
        let msg = owner(&o(), Some(&nobody))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "outpost.toml: file #1 (/etc/x): owner \"outpost-no-such-user\" is not a user on this host; create it first or give a numeric uid"
        );
        let msg = group(&o(), Some(&nobody))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("group \"outpost-no-such-user\" is not a group"),
            "{msg}"
        );
        Ok(())
    }
}
