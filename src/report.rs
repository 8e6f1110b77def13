//! The host report carried home on a stick: `outpost/reports/<host>.json`.
//!
//! Written by `outpost usb` and `outpost import DIR --report` into the stick's `outpost/`
//! folder, atomically (a temp file in the same folder, fsync, rename, fsync of the folder), so a
//! stick pulled mid-write holds the old report or the new one. A `reports` folder (or an
//! `outpost` folder) that is a symlink is never followed: the report is not written and the
//! reason is returned. The schema (version [`SCHEMA`]) is documented in README.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::status::{self, HistoryEntry};
use crate::store::{Store, StoreError};
use crate::text::rfc3339_u;

/// The report's schema version; a change that removes or renames a field bumps it.
pub const SCHEMA: u32 = 1;
/// How many deployments and refusals a report lists.
pub const LAST: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path} is a symbolic link; the report is not written through it")]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory; the report is not written")]
    NotADirectory { path: PathBuf },
    #[error("cannot write the report {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the report")]
    Encode(#[source] serde_json::Error),
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub outpost_version: String,
    pub written_at: String,
    pub trusted: Option<status::Trusted>,
    pub deployed: Option<status::Deployed>,
    pub drift: Option<status::Drift>,
    pub bad_commits: Vec<BadCommit>,
    /// The newest deployments, newest first.
    pub deployments: Vec<HistoryEntry>,
    /// The newest refusals, newest first.
    pub refused: Vec<status::Rejected>,
}

#[derive(Debug, Serialize)]
pub struct BadCommit {
    pub commit: String,
    pub reason: String,
    pub at: String,
    /// The health check or unit whose failure marked it, when a health gate did.
    pub check: Option<String>,
    /// The end of that check's output.
    pub output: Option<String>,
}

/// Gathers the report of this host (reads only).
pub fn gather(config: &Config) -> Result<Report, StoreError> {
    let status = status::gather(config)?;
    let deployments = status::history(config, LAST)?;
    let bad_commits = match Store::open_read_only(&config.state.dir)? {
        Some(store) => store
            .bad_commits(LAST)?
            .into_iter()
            .map(|b| BadCommit {
                commit: b.commit,
                reason: b.mark.reason,
                at: rfc3339_u(b.at),
                check: b.mark.check,
                output: b.mark.output,
            })
            .collect(),
        None => Vec::new(),
    };
    let mut refused = status.rejected;
    refused.truncate(LAST);
    Ok(Report {
        schema: SCHEMA,
        host: status.host,
        labels: config.host.labels.clone(),
        outpost_version: env!("CARGO_PKG_VERSION").to_owned(),
        written_at: rfc3339_u(crate::store::now()),
        trusted: status.trusted,
        deployed: status.deployed,
        drift: status.drift,
        bad_commits,
        deployments,
        refused,
    })
}

/// Writes the report into `<stick>/outpost/reports/<host>.json`; returns its path.
pub fn write(config: &Config, stick: &Path) -> Result<PathBuf, ReportError> {
    let report = gather(config)?;
    let mut text = serde_json::to_string_pretty(&report).map_err(ReportError::Encode)?;
    text.push('\n');
    let dir = private_dir(&private_dir(stick, "outpost")?, "reports")?;
    let name = format!("{}.json", file_name(&report.host));
    let path = dir.join(&name);
    let err = |source| ReportError::Write {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(&dir)
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(path)
}

/// `parent/name` as a directory, created when missing, never through a symlink.
fn private_dir(parent: &Path, name: &str) -> Result<PathBuf, ReportError> {
    let path = parent.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(ReportError::Symlink { path }),
        Ok(meta) if !meta.is_dir() => Err(ReportError::NotADirectory { path }),
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&path).map_err(|source| ReportError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        }
        Err(source) => Err(ReportError::Write { path, source }),
    }
}

/// A host name as a file name: path separators, control characters and a leading dot
/// replaced, so a name cannot leave the reports folder or hide in it.
fn file_name(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match name.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None if name.is_empty() => "host".to_owned(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_stay_in_the_reports_folder() {
        assert_eq!(file_name("edge-7"), "edge-7");
        assert_eq!(file_name("../etc/passwd"), "_._etc_passwd");
        assert_eq!(file_name(".hidden"), "_hidden");
        assert_eq!(file_name("a\nb"), "a_b");
        assert_eq!(file_name(""), "host");
    }
}
