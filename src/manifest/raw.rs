//! The serde shape of a manifest file, exactly as written; [`super::resolve`] checks it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::host::Host;

/// One manifest file: `outpost.toml` or an included one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    #[serde(default)]
    pub include: Vec<RawInclude>,
    #[serde(default)]
    pub file: Vec<RawFile>,
    #[serde(default)]
    pub tree: Vec<RawTree>,
    #[serde(default)]
    pub directory: Vec<RawDirectory>,
    #[serde(default)]
    pub symlink: Vec<RawSymlink>,
    #[serde(default)]
    pub absent: Vec<RawAbsent>,
    #[serde(default)]
    pub unit: Vec<RawUnit>,
    #[serde(default)]
    pub health: Vec<RawHealth>,
}

/// `when = { hosts = ["edge-*"], labels = { role = "camera" } }`: every given condition must
/// hold; an absent `when` always holds.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Globs; any of them matching the host name is enough.
    pub hosts: Option<Vec<String>>,
    /// Every `k = v` must equal the host's label `k`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl When {
    pub fn matches(&self, host: &Host) -> bool {
        let name_matches = self.hosts.as_ref().is_none_or(|globs| {
            globs.iter().any(|g| {
                gix::glob::wildmatch(
                    g.as_str().into(),
                    host.name.as_str().into(),
                    gix::glob::wildmatch::Mode::empty(),
                )
            })
        });
        name_matches
            && self
                .labels
                .iter()
                .all(|(k, v)| host.labels.get(k) == Some(v))
    }
}

/// `owner`/`group`: a name, or a numeric id as an integer or a string of digits.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawId {
    Number(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInclude {
    pub path: String,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub path: String,
    pub source: String,
    pub mode: Option<String>,
    #[serde(default)]
    pub allow_setid: bool,
    pub owner: Option<RawId>,
    pub group: Option<RawId>,
    #[serde(default)]
    pub restart: Vec<String>,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTree {
    pub path: String,
    pub source: String,
    /// Mode of the files; executable blobs also get `x` where `mode` has `r`.
    pub mode: Option<String>,
    /// Mode of the tree's root and its subdirectories.
    pub dir_mode: Option<String>,
    pub owner: Option<RawId>,
    pub group: Option<RawId>,
    #[serde(default)]
    pub restart: Vec<String>,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub path: String,
    pub mode: Option<String>,
    #[serde(default)]
    pub allow_setid: bool,
    pub owner: Option<RawId>,
    pub group: Option<RawId>,
    #[serde(default)]
    pub restart: Vec<String>,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSymlink {
    pub path: String,
    pub target: String,
    #[serde(default)]
    pub restart: Vec<String>,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAbsent {
    pub path: String,
    #[serde(default)]
    pub restart: Vec<String>,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnit {
    pub name: String,
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    pub when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub name: String,
    pub command: Vec<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub interval: Option<String>,
    pub when: Option<When>,
}

/// `when` of an entry or include: absent means every host.
pub fn applies(when: Option<&When>, host: &Host) -> bool {
    when.is_none_or(|w| w.matches(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, labels: &[(&str, &str)]) -> Host {
        Host {
            root: "/".into(),
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn when_needs_every_given_condition() -> Result<(), toml::de::Error> {
        let when: When = toml::from_str(
            "hosts = [\"edge-*\", \"lab\"]\nlabels = { role = \"camera\", site = \"berlin\" }\n",
        )?;
        let both = [("role", "camera"), ("site", "berlin"), ("x", "y")];
        assert!(when.matches(&host("edge-7", &both)));
        assert!(when.matches(&host("lab", &both)));
        assert!(!when.matches(&host("core-1", &both)));
        assert!(!when.matches(&host("edge-7", &[("role", "camera")])));
        assert!(!when.matches(&host("edge-7", &[("role", "kiosk"), ("site", "berlin")])));
        Ok(())
    }

    #[test]
    fn empty_when_matches_every_host() -> Result<(), toml::de::Error> {
        let when: When = toml::from_str("")?;
        assert!(when.matches(&host("anything", &[])));
        assert!(applies(None, &host("anything", &[])));
        let none: When = toml::from_str("hosts = []")?;
        assert!(!none.matches(&host("anything", &[])));
        Ok(())
    }
}
