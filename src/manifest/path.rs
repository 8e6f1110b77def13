//! Paths a manifest names: absolute host paths ([`HostPath`]) and paths inside the commit.
//!
//! Both are checked on their bytes, before anything else looks at them: a path that is not
//! normalised is refused, never normalised, so what the manifest says is what is applied.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("must be an absolute host path (starting with /)")]
    NotAbsolute,
    #[error("must be a path inside the repository, not an absolute one")]
    NotRelative,
    #[error("contains a NUL byte")]
    Nul,
    #[error("has an empty component (// or a trailing /)")]
    EmptyComponent,
    #[error("has a {0:?} component; write the path without it")]
    DotComponent(&'static str),
    #[error("is empty or the root; name a path inside it")]
    Root,
    #[error("has a file name containing /")]
    SlashInName,
    #[error("is outside apply.allowed_paths ({allowed})")]
    OutsideAllowed { allowed: String },
}

/// An absolute, normalised host path: no `.`, `..` or empty components, no trailing slash,
/// no NUL, not `/` itself. It is resolved under the host root only by `apply`.
///
/// Being normalised, two paths are equal exactly when their bytes are, so comparison, order
/// and hashing work on the bytes: a parent sorts before everything below it, and tens of
/// thousands of paths sort and look up fast (`Path`'s own order walks components). It is
/// shared: the desired state, the plan and a deployment's progress name the same paths, and a
/// copy costs no allocation.
#[derive(Debug, Clone)]
pub struct HostPath(Arc<Path>);

impl HostPath {
    fn bytes(&self) -> &[u8] {
        self.0.as_os_str().as_bytes()
    }
}

impl PartialEq for HostPath {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for HostPath {}

impl PartialOrd for HostPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HostPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl std::hash::Hash for HostPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl HostPath {
    /// Checks `raw` and takes it as it is; nothing is normalised.
    pub fn parse(raw: impl AsRef<OsStr>) -> Result<Self, PathProblem> {
        let bytes = raw.as_ref().as_bytes();
        let rest = bytes.strip_prefix(b"/").ok_or(PathProblem::NotAbsolute)?;
        check_components(rest)?;
        Ok(Self(Path::new(raw.as_ref()).into()))
    }

    /// `self` joined with a relative path whose components were already checked.
    pub(crate) fn join_checked(&self, relative: &Path) -> Self {
        Self(self.0.join(relative).into())
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// Whether `self` is `other` or below it (component-wise: `/etcetera` is not below `/etc`).
    pub fn is_within(&self, other: &Path) -> bool {
        self.0.starts_with(other)
    }

    /// Whether `self` is strictly below `other`.
    pub fn is_below(&self, other: &HostPath) -> bool {
        let (mine, theirs) = (self.bytes(), other.bytes());
        mine.len() > theirs.len() && mine.starts_with(theirs) && mine[theirs.len()] == b'/'
    }

    /// Where the paths below `self` begin in byte order (`self` with a `/` appended, not a
    /// path itself): they are the ones from there on that are below `self`, in one run.
    pub fn below_from(&self) -> HostPath {
        let mut bytes = self.bytes().to_vec();
        bytes.push(b'/');
        Self(PathBuf::from(OsString::from_vec(bytes)).into())
    }

    /// The parent directory, unless it is `/`.
    pub fn parent(&self) -> Option<HostPath> {
        self.parent_bytes()
            .map(|p| Self(Path::new(OsStr::from_bytes(p)).into()))
    }

    /// The bytes of the parent directory, unless it is `/`; no allocation.
    pub fn parent_bytes(&self) -> Option<&[u8]> {
        let bytes = self.bytes();
        let slash = bytes.iter().rposition(|&b| b == b'/')?;
        (slash > 0).then(|| &bytes[..slash])
    }

    /// Number of components counting the root, as `Path::components` does, for
    /// deepest-first ordering.
    pub fn depth(&self) -> usize {
        self.bytes().iter().filter(|&&b| b == b'/').count() + 1
    }

    /// Checks that the path is strictly inside one of `allowed`.
    pub fn check_allowed(&self, allowed: &[PathBuf]) -> Result<(), PathProblem> {
        if allowed.iter().any(|a| self.is_within(a) && *self.0 != **a) {
            return Ok(());
        }
        let allowed = allowed
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(PathProblem::OutsideAllowed { allowed })
    }
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl AsRef<Path> for HostPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// Checks a path inside the commit (`source`, `include`): relative and normalised.
pub fn check_repo_path(raw: &str) -> Result<PathBuf, PathProblem> {
    if raw.starts_with('/') {
        return Err(PathProblem::NotRelative);
    }
    check_components(raw.as_bytes())?;
    Ok(PathBuf::from(raw))
}

/// Checks one file name of a tree in the commit (a tree may hold names git would refuse).
pub fn check_tree_name(name: &[u8]) -> Result<(), PathProblem> {
    if name.contains(&b'/') {
        return Err(PathProblem::SlashInName);
    }
    check_components(name)
}

/// `a/b/c` with no empty, `.` or `..` component and no NUL; an empty string is refused.
fn check_components(path: &[u8]) -> Result<(), PathProblem> {
    if path.contains(&0) {
        return Err(PathProblem::Nul);
    }
    if path.is_empty() {
        return Err(PathProblem::Root);
    }
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" => return Err(PathProblem::EmptyComponent),
            b"." => return Err(PathProblem::DotComponent(".")),
            b".." => return Err(PathProblem::DotComponent("..")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_absolute_paths_are_taken_as_they_are() -> Result<(), PathProblem> {
        let p = HostPath::parse("/etc/chrony/chrony.conf")?;
        assert_eq!(p.as_path(), Path::new("/etc/chrony/chrony.conf"));
        assert_eq!(p.parent(), Some(HostPath::parse("/etc/chrony")?));
        assert_eq!(HostPath::parse("/etc")?.parent(), None);
        assert_eq!(p.depth(), 4);
        Ok(())
    }

    #[test]
    fn unnormalised_paths_are_refused() {
        let cases = [
            ("etc/relative", PathProblem::NotAbsolute),
            ("/etc/../usr/bin/x", PathProblem::DotComponent("..")),
            ("/etc/./x", PathProblem::DotComponent(".")),
            ("/etc//x", PathProblem::EmptyComponent),
            ("/etc/x/", PathProblem::EmptyComponent),
            ("/etc/x\0y", PathProblem::Nul),
            ("/", PathProblem::Root),
            ("", PathProblem::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(HostPath::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn allowed_paths_are_matched_by_component() -> Result<(), PathProblem> {
        let allowed = [PathBuf::from("/etc"), PathBuf::from("/opt/")];
        HostPath::parse("/etc/x")?.check_allowed(&allowed)?;
        HostPath::parse("/opt/app/y")?.check_allowed(&allowed)?;
        for outside in ["/etcetera/x", "/etc", "/usr/bin/x"] {
            let err = HostPath::parse(outside)?.check_allowed(&allowed);
            assert_eq!(
                err,
                Err(PathProblem::OutsideAllowed {
                    allowed: "/etc, /opt/".to_owned()
                }),
                "{outside}"
            );
        }
        Ok(())
    }

    #[test]
    fn repo_paths_must_be_relative_and_normalised() {
        assert_eq!(
            check_repo_path("files/a.conf"),
            Ok(PathBuf::from("files/a.conf"))
        );
        assert_eq!(
            check_repo_path("/etc/shadow"),
            Err(PathProblem::NotRelative)
        );
        assert_eq!(
            check_repo_path("files/../../x"),
            Err(PathProblem::DotComponent(".."))
        );
        assert_eq!(check_tree_name(b".."), Err(PathProblem::DotComponent("..")));
        assert_eq!(check_tree_name(b"a/b"), Err(PathProblem::SlashInName));
    }
}
