//! The host as outpost sees it: a filesystem root, a name and labels.
//!
//! Every host path is resolved under `root`, which is `/` in production and a directory in
//! tests and the demo; this value is the seam that keeps tests away from the real `/etc`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Where host paths live.
    pub root: PathBuf,
    /// Matched against `when = { hosts = [globs] }`.
    pub name: String,
    /// Matched against `when = { labels = { k = v } }`.
    pub labels: BTreeMap<String, String>,
}

impl Host {
    pub fn from_config(config: &Config) -> Self {
        Self {
            root: config.host.root.clone(),
            name: config.host_name().to_owned(),
            labels: config.host.labels.clone(),
        }
    }
}
