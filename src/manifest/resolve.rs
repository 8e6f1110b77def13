//! From manifest files to entries: includes followed, `when` applied, fields checked.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::fields::{group, mode, owner};
use super::path::{HostPath, check_repo_path};
use super::raw::{RawManifest, applies};
use super::source::Snapshot;
use super::{
    Entry, EntryKind, HealthCheck, MANIFEST_FILE, Manifest, ManifestError, Origin, Problem,
    TreeFile, Unit,
};
use crate::host::Host;

/// `outpost.toml` and every file it includes for this host, each once, parents first.
pub fn collect(
    snapshot: &Snapshot<'_>,
    host: &Host,
) -> Result<Vec<(String, RawManifest)>, ManifestError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    visit(
        snapshot,
        host,
        MANIFEST_FILE,
        &mut Vec::new(),
        &mut seen,
        &mut out,
    )?;
    Ok(out)
}

fn visit(
    snapshot: &Snapshot<'_>,
    host: &Host,
    file: &str,
    chain: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<(String, RawManifest)>,
) -> Result<(), ManifestError> {
    if chain.iter().any(|f| f == file) {
        let mut chain = chain.clone();
        chain.push(file.to_owned());
        return Err(ManifestError::IncludeCycle { chain });
    }
    if !seen.insert(file.to_owned()) {
        return Ok(());
    }
    let text = snapshot
        .read_text(file)?
        .ok_or_else(|| ManifestError::MissingFile {
            file: file.to_owned(),
            commit: snapshot.commit(),
            chain: chain.clone(),
        })?;
    let raw: RawManifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
        file: file.to_owned(),
        message: describe(&e, &text),
    })?;
    let mut includes = Vec::new();
    for (i, include) in raw.include.iter().enumerate() {
        if applies(include.when.as_ref(), host) {
            let origin = origin(file, "include", i, &include.path);
            let path = check_repo_path(&include.path).map_err(|p| invalid(&origin, "path", p))?;
            includes.push(path.display().to_string());
        }
    }
    out.push((file.to_owned(), raw));
    chain.push(file.to_owned());
    for include in includes {
        visit(snapshot, host, &include, chain, seen, out)?;
    }
    chain.pop();
    Ok(())
}

/// "line L, column C: message" for a TOML error.
fn describe(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim_end_matches('\n');
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

fn origin(file: &str, kind: &'static str, index: usize, label: &str) -> Origin {
    Origin {
        file: file.to_owned(),
        kind,
        index: index + 1,
        label: label.escape_debug().to_string(),
    }
}

fn invalid(origin: &Origin, field: &'static str, problem: impl Into<Problem>) -> ManifestError {
    ManifestError::invalid(origin, field, problem)
}

/// What every entry of one file is checked against.
struct Scope<'a> {
    snapshot: &'a Snapshot<'a>,
    allowed: &'a [PathBuf],
}

/// Adds the entries, units and health checks of one manifest file that apply to `host`.
pub fn convert(
    file: &str,
    raw: &RawManifest,
    snapshot: &Snapshot<'_>,
    host: &Host,
    allowed: &[PathBuf],
    out: &mut Manifest,
) -> Result<(), ManifestError> {
    let s = Scope { snapshot, allowed };
    let on = |when: Option<&super::raw::When>| applies(when, host);
    for (i, r) in raw
        .file
        .iter()
        .enumerate()
        .filter(|(_, r)| on(r.when.as_ref()))
    {
        let o = origin(file, "file", i, &r.path);
        let source = check_repo_path(&r.source).map_err(|p| invalid(&o, "source", p))?;
        let kind = EntryKind::File {
            content: s
                .snapshot
                .file_source(&source)
                .map_err(|p| invalid(&o, "source", p))?,
            mode: mode(&o, "mode", r.mode.as_deref(), 0o644, r.allow_setid)?,
            owner: owner(&o, r.owner.as_ref())?,
            group: group(&o, r.group.as_ref())?,
        };
        out.entries.push(s.entry(o, &r.path, kind, &r.restart)?);
    }
    for (i, r) in raw
        .tree
        .iter()
        .enumerate()
        .filter(|(_, r)| on(r.when.as_ref()))
    {
        let o = origin(file, "tree", i, &r.path);
        let kind = s.tree(&o, r)?;
        out.entries.push(s.entry(o, &r.path, kind, &r.restart)?);
    }
    for (i, r) in raw
        .directory
        .iter()
        .enumerate()
        .filter(|(_, r)| on(r.when.as_ref()))
    {
        let o = origin(file, "directory", i, &r.path);
        let kind = EntryKind::Directory {
            mode: mode(&o, "mode", r.mode.as_deref(), 0o755, r.allow_setid)?,
            owner: owner(&o, r.owner.as_ref())?,
            group: group(&o, r.group.as_ref())?,
        };
        out.entries.push(s.entry(o, &r.path, kind, &r.restart)?);
    }
    for (i, r) in raw
        .symlink
        .iter()
        .enumerate()
        .filter(|(_, r)| on(r.when.as_ref()))
    {
        let o = origin(file, "symlink", i, &r.path);
        if r.target.is_empty() {
            return Err(invalid(&o, "target", Problem::Empty));
        }
        if r.target.contains('\0') {
            return Err(invalid(&o, "target", super::PathProblem::Nul));
        }
        let kind = EntryKind::Symlink {
            target: PathBuf::from(&r.target),
        };
        out.entries.push(s.entry(o, &r.path, kind, &r.restart)?);
    }
    for (i, r) in raw
        .absent
        .iter()
        .enumerate()
        .filter(|(_, r)| on(r.when.as_ref()))
    {
        let o = origin(file, "absent", i, &r.path);
        out.entries
            .push(s.entry(o, &r.path, EntryKind::Absent, &r.restart)?);
    }
    convert_units(file, raw, host, out)
}

impl Scope<'_> {
    fn entry(
        &self,
        origin: Origin,
        raw_path: &str,
        kind: EntryKind,
        restart: &[String],
    ) -> Result<Entry, ManifestError> {
        let path = HostPath::parse(raw_path)
            .and_then(|p| p.check_allowed(self.allowed).map(|()| p))
            .map_err(|p| invalid(&origin, "path", p))?;
        if restart.iter().any(String::is_empty) {
            return Err(invalid(&origin, "restart", Problem::Empty));
        }
        Ok(Entry {
            path,
            kind,
            restart: restart.to_vec(),
            origin,
        })
    }

    fn tree(&self, o: &Origin, r: &super::raw::RawTree) -> Result<EntryKind, ManifestError> {
        let source = check_repo_path(&r.source).map_err(|p| invalid(o, "source", p))?;
        let blobs = self
            .snapshot
            .tree_source(&source)
            .map_err(|p| invalid(o, "source", p))?;
        let file_mode = mode(o, "mode", r.mode.as_deref(), 0o644, false)?;
        let files = blobs
            .into_iter()
            .map(|b| TreeFile {
                path: b.path,
                content: b.content,
                mode: if b.executable {
                    file_mode | ((file_mode & 0o444) >> 2)
                } else {
                    file_mode
                },
            })
            .collect();
        Ok(EntryKind::Tree {
            files,
            dirs: Vec::new(),
            dir_mode: mode(o, "dir_mode", r.dir_mode.as_deref(), 0o755, false)?,
            owner: owner(o, r.owner.as_ref())?,
            group: group(o, r.group.as_ref())?,
        })
    }
}

fn convert_units(
    file: &str,
    raw: &RawManifest,
    host: &Host,
    out: &mut Manifest,
) -> Result<(), ManifestError> {
    for (i, r) in raw
        .unit
        .iter()
        .enumerate()
        .filter(|(_, r)| applies(r.when.as_ref(), host))
    {
        let o = origin(file, "unit", i, &r.name);
        if r.name.is_empty() {
            return Err(invalid(&o, "name", Problem::Empty));
        }
        out.units.push(Unit {
            name: r.name.clone(),
            enabled: r.enabled,
            active: r.active,
            origin: o,
        });
    }
    for (i, r) in raw
        .health
        .iter()
        .enumerate()
        .filter(|(_, r)| applies(r.when.as_ref(), host))
    {
        let o = origin(file, "health", i, &r.name);
        if r.name.is_empty() {
            return Err(invalid(&o, "name", Problem::Empty));
        }
        if r.command.first().is_none_or(String::is_empty) {
            return Err(invalid(&o, "command", Problem::Empty));
        }
        let duration = |field: &'static str, text: Option<&str>, default: Duration| {
            let Some(t) = text else {
                return Ok(default);
            };
            match humantime::parse_duration(t) {
                Ok(d) if d < Duration::from_millis(1) => {
                    Err(invalid(&o, field, Problem::ZeroDuration))
                }
                Ok(d) => Ok(d),
                Err(e) => Err(invalid(
                    &o,
                    field,
                    Problem::BadTimeout(t.to_owned(), e.to_string()),
                )),
            }
        };
        let timeout = duration("timeout", r.timeout.as_deref(), HealthCheck::TIMEOUT)?;
        let interval = duration("interval", r.interval.as_deref(), HealthCheck::INTERVAL)?;
        out.health.push(HealthCheck {
            name: r.name.clone(),
            command: r.command.clone(),
            timeout,
            retries: r.retries.unwrap_or(HealthCheck::RETRIES),
            interval,
            origin: o,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_line_and_column() {
        let text = "[[file]]\npath = \"/etc/x\"\nsorce = \"a\"\n";
        let err = toml::from_str::<RawManifest>(text).map(|_| ()).unwrap_err();
        let msg = describe(&err, text);
        assert!(
            msg.starts_with("line 3, column 1: unknown field `sorce`"),
            "{msg}"
        );
    }
}
