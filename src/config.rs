//! `config.toml`: the host's identity, where state lives, the trust root and the sources.
//!
//! Every key has a default except `trust.allowed_signers`. Unknown keys are errors. Relative
//! paths are resolved against the directory of the config file, so a config next to its files
//! (the demo, tests) works from any current directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// Where the config is read from when neither `--config` nor `OUTPOST_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/outpost/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}; pass --config FILE or set OUTPOST_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot determine the host name for host.name; set it in {path}")]
    Hostname { path: PathBuf, source: nix::Error },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub host: HostConfig,
    #[serde(default)]
    pub state: StateConfig,
    pub trust: TrustConfig,
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub apply: ApplyConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub usb: UsbConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbConfig {
    /// Write this host's report onto each stick `outpost usb` takes.
    #[serde(default = "default_true")]
    pub report: bool,
    /// Where `outpost usb` mounts sticks, each in a private directory.
    #[serde(default = "default_usb_mount_dir")]
    pub mount_dir: PathBuf,
}

impl Default for UsbConfig {
    fn default() -> Self {
        Self {
            report: true,
            mount_dir: default_usb_mount_dir(),
        }
    }
}

fn default_usb_mount_dir() -> PathBuf {
    PathBuf::from("/run/outpost")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A Prometheus text file the daemon rewrites after each cycle (node_exporter's textfile
    /// collector reads `*.prom` from its directory). Default: none.
    #[serde(default)]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Defaults to the system hostname.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_root")]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// How many bytes of received bundles are cached for `export`. The newest full bundle and
    /// every incremental one after it are kept whatever this says; older ones go first.
    #[serde(default = "default_bundle_cache")]
    pub bundle_cache: ByteSize,
    /// How many of the newest successfully deployed commits keep their objects and their
    /// deployment, so `rollback` (and the automatic rollback) can go back to each.
    #[serde(default = "default_keep_deployments")]
    pub keep_deployments: usize,
    /// How many deployments `history` keeps (with their events); older ones are compacted
    /// into counts.
    #[serde(default = "default_keep_history")]
    pub keep_history: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    pub allowed_signers: PathBuf,
    #[serde(default)]
    pub revoked_keys: Option<PathBuf>,
    #[serde(default)]
    pub allow_rewind: bool,
    /// How far past the newer of the time floor and a plausible system clock a tip commit's
    /// committer time may lie.
    #[serde(default = "default_max_future", with = "humantime_serde")]
    pub max_future: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_sync_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Defaults to `<state.dir>/inbox`.
    #[serde(default)]
    pub spool: Option<PathBuf>,
    #[serde(default = "default_max_bundle_size")]
    pub max_bundle_size: ByteSize,
    /// The most one object of a bundle may inflate to: bounds the memory of indexing.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: ByteSize,
    /// The most bytes one upstream fetch may transfer.
    #[serde(default = "default_max_fetch_size")]
    pub max_fetch_size: ByteSize,
    /// How long connecting to `url` may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one whole fetch may take.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// PEM root certificates for an `https://` upstream; default: the system's bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    #[serde(default = "default_apply_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_allowed_paths")]
    pub allowed_paths: Vec<PathBuf>,
    /// The whole health gate after a deployment: unit settling and every `[[health]]` check.
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub health_timeout: Duration,
    /// How long every unit declared `active = true` must stay active, without restarts,
    /// before the gate passes.
    #[serde(default = "default_health_settle", with = "humantime_serde")]
    pub health_settle: Duration,
    /// How long one systemd job (start, stop, restart, enable, daemon-reload) may take.
    #[serde(default = "default_unit_timeout", with = "humantime_serde")]
    pub unit_timeout: Duration,
    /// The `systemctl` that changes units (a name is looked up in `PATH`).
    #[serde(default = "default_systemctl")]
    pub systemctl: PathBuf,
    /// Give written paths the manifest's owner and group. `false`: they belong to the user
    /// running outpost (rootless test and demo hosts).
    #[serde(default = "default_true")]
    pub set_owner: bool,
    /// Globs of host paths whose content `plan` never shows (besides every file that is not
    /// world-readable).
    #[serde(default = "default_redact")]
    pub redact: Vec<String>,
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/outpost")
}
fn default_bundle_cache() -> ByteSize {
    ByteSize::gib(1)
}
fn default_keep_deployments() -> usize {
    10
}
fn default_keep_history() -> usize {
    1000
}
fn default_branch() -> String {
    "main".to_owned()
}
fn default_sync_interval() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_max_bundle_size() -> ByteSize {
    ByteSize::gib(1)
}
fn default_max_object_size() -> ByteSize {
    ByteSize::mib(64)
}
fn default_max_fetch_size() -> ByteSize {
    ByteSize::gib(1)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_future() -> Duration {
    Duration::from_secs(365 * 86_400)
}
fn default_redact() -> Vec<String> {
    [
        "/etc/shadow*",
        "/etc/gshadow*",
        "/etc/ssh/ssh_host_*_key",
        "/etc/ssl/private/**",
        "**/*.key",
    ]
    .map(str::to_owned)
    .to_vec()
}
fn default_apply_interval() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_allowed_paths() -> Vec<PathBuf> {
    ["/etc", "/opt", "/srv", "/usr/local", "/var/lib"]
        .into_iter()
        .map(PathBuf::from)
        .collect()
}
fn default_true() -> bool {
    true
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_health_settle() -> Duration {
    Duration::from_secs(5)
}
fn default_unit_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_systemctl() -> PathBuf {
    PathBuf::from("systemctl")
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            name: None,
            labels: BTreeMap::new(),
            root: default_root(),
        }
    }
}
impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            bundle_cache: default_bundle_cache(),
            keep_deployments: default_keep_deployments(),
            keep_history: default_keep_history(),
        }
    }
}
impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            branch: default_branch(),
            url: None,
            interval: default_sync_interval(),
            spool: None,
            max_bundle_size: default_max_bundle_size(),
            max_object_size: default_max_object_size(),
            max_fetch_size: default_max_fetch_size(),
            connect_timeout: default_connect_timeout(),
            fetch_timeout: default_fetch_timeout(),
            ca_file: None,
        }
    }
}
impl Default for ApplyConfig {
    fn default() -> Self {
        Self {
            interval: default_apply_interval(),
            allowed_paths: default_allowed_paths(),
            health_timeout: default_health_timeout(),
            health_settle: default_health_settle(),
            unit_timeout: default_unit_timeout(),
            systemctl: default_systemctl(),
            set_owner: true,
            redact: default_redact(),
        }
    }
}

impl Config {
    /// Reads and validates the config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        // Absolute, so relative paths in it and every message name real places.
        let path = std::path::absolute(path).map_err(read_err)?;
        let text = std::fs::read_to_string(&path).map_err(read_err)?;
        Self::parse(&text, &path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let mut config: Config =
            toml::from_str(text).map_err(|e| parse_error(describe(&e, text)))?;
        config.validate().map_err(parse_error)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.anchor(base);
        if config.host.name.is_none() {
            let name = nix::unistd::gethostname().map_err(|source| ConfigError::Hostname {
                path: path.to_owned(),
                source,
            })?;
            config.host.name = Some(name.to_string_lossy().into_owned());
        }
        Ok(config)
    }

    /// The host's name, from the config or the system.
    pub fn host_name(&self) -> &str {
        self.host.name.as_deref().unwrap_or_default()
    }

    /// The spool directory dropped bundles are imported from.
    pub fn spool_dir(&self) -> PathBuf {
        self.source
            .spool
            .clone()
            .unwrap_or_else(|| self.state.dir.join("inbox"))
    }

    /// The full name of the tracked branch.
    pub fn tracked_ref(&self) -> String {
        format!("refs/heads/{}", self.source.branch)
    }

    fn validate(&self) -> Result<(), String> {
        let full = self.tracked_ref();
        if gix::validate::reference::name(full.as_str().into()).is_err() {
            return Err(format!(
                "source.branch {:?} is not a valid branch name",
                self.source.branch
            ));
        }
        if let Some(bad) = self.apply.allowed_paths.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "apply.allowed_paths entry {} must be an absolute host path",
                bad.display()
            ));
        }
        if self.state.keep_deployments == 0 {
            return Err(
                "state.keep_deployments must be at least 1: the deployed commit is always kept"
                    .to_owned(),
            );
        }
        if self.state.keep_history < self.state.keep_deployments {
            return Err(format!(
                "state.keep_history ({}) must be at least state.keep_deployments ({}): the deployments rollback needs are history too",
                self.state.keep_history, self.state.keep_deployments
            ));
        }
        if self.source.max_bundle_size.as_u64() == 0 {
            return Err("source.max_bundle_size must be greater than zero".to_owned());
        }
        if let Some(url) = &self.source.url {
            crate::intake::remote::check_url(url).map_err(|e| format!("source.url: {e}"))?;
        }
        Ok(())
    }

    fn anchor(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.host.root);
        join(&mut self.state.dir);
        join(&mut self.trust.allowed_signers);
        if let Some(p) = self.trust.revoked_keys.as_mut() {
            join(p);
        }
        if let Some(p) = self.source.spool.as_mut() {
            join(p);
        }
        if let Some(p) = self.source.ca_file.as_mut() {
            join(p);
        }
        if let Some(p) = self.metrics.textfile.as_mut() {
            join(p);
        }
        join(&mut self.usb.mount_dir);
    }
}

/// Turns a toml error into "line L, column C: message" (the file is added by the caller).
fn describe(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim_end_matches('\n');
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A config with every default, for unit tests elsewhere.
#[cfg(test)]
pub(crate) fn for_tests() -> Config {
    Config::parse(
        "[host]\nname = \"t\"\n[trust]\nallowed_signers = \"a\"\n",
        std::path::Path::new("/nonexistent/config.toml"),
    )
    .expect("test config")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/outpost/config.toml"))
    }

    #[test]
    fn minimal_config_takes_every_default() -> Result<(), ConfigError> {
        let c = parse("[trust]\nallowed_signers = \"/etc/outpost/allowed_signers\"\n")?;
        assert_eq!(c.state.dir, PathBuf::from("/var/lib/outpost"));
        assert_eq!(c.source.branch, "main");
        assert_eq!(c.source.max_bundle_size, ByteSize::gib(1));
        assert_eq!(c.source.interval, Duration::from_secs(300));
        assert_eq!(c.apply.health_timeout, Duration::from_secs(60));
        assert_eq!(c.state.bundle_cache, ByteSize::gib(1));
        assert_eq!(c.state.keep_deployments, 10);
        assert_eq!(c.state.keep_history, 1000);
        assert_eq!(c.spool_dir(), PathBuf::from("/var/lib/outpost/inbox"));
        assert!(!c.host_name().is_empty());
        Ok(())
    }

    /// config.example.toml documents every key with its default: parsed as it is, it must
    /// equal the defaults, and with its commented examples switched on it must still parse.
    #[test]
    fn example_config_shows_the_defaults() -> Result<(), ConfigError> {
        let text = include_str!("../config.example.toml");
        let path = Path::new("/etc/outpost/config.toml");
        let mut example = Config::parse(text, path)?;
        let defaults = parse("[trust]\nallowed_signers = \"/etc/outpost/allowed_signers\"\n")?;
        // The spool's default is derived from the state dir; the example spells it out.
        assert_eq!(example.spool_dir(), defaults.spool_dir());
        example.source.spool = None;
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));

        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replacen("labels = {}\n", "", 1);
        let c = Config::parse(&uncommented, path)?;
        assert_eq!(c.host_name(), "edge-7");
        assert_eq!(
            c.host.labels.get("role").map(String::as_str),
            Some("camera")
        );
        assert_eq!(
            c.trust.revoked_keys,
            Some(PathBuf::from("/etc/outpost/revoked_keys"))
        );
        assert_eq!(
            c.source.url.as_deref(),
            Some("https://git.example.com/fleet.git")
        );
        assert_eq!(
            c.source.ca_file,
            Some(PathBuf::from("/etc/outpost/fleet-ca.pem"))
        );
        Ok(())
    }

    #[test]
    fn relative_paths_are_anchored_at_the_config_directory() -> Result<(), ConfigError> {
        let c = parse(
            "[host]\nname = \"x\"\nroot = \"host\"\n[state]\ndir = \"state\"\n[trust]\nallowed_signers = \"keys\"\n",
        )?;
        assert_eq!(c.host.root, PathBuf::from("/etc/outpost/host"));
        assert_eq!(c.state.dir, PathBuf::from("/etc/outpost/state"));
        assert_eq!(c.trust.allowed_signers, PathBuf::from("/etc/outpost/keys"));
        Ok(())
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse("[trust]\nallowed_signers = \"a\"\n\n[source]\nbrnch = \"main\"\n");
        let msg = err.map(|_| ()).unwrap_err().to_string();
        assert!(msg.starts_with("invalid config file /etc/outpost/config.toml: line 5, column 1: unknown field `brnch`"), "{msg}");
    }

    #[test]
    fn missing_trust_root_is_an_error() {
        let msg = parse("[host]\nname = \"x\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing field `trust`"), "{msg}");
    }

    #[test]
    fn bad_duration_and_size_are_errors() {
        let msg = parse("[trust]\nallowed_signers = \"a\"\n[source]\ninterval = \"soon\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 4, column 12"), "{msg}");
        let msg = parse("[trust]\nallowed_signers = \"a\"\n[source]\nmax_bundle_size = \"lots\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn an_unknown_url_scheme_names_the_key() {
        for url in [
            "ftp://example.com/fleet.git",
            "ssh://git@example.com/fleet.git",
            "git@example.com:fleet.git",
            "/srv/fleet.git",
            "fleet",
        ] {
            let msg = parse(&format!(
                "[trust]\nallowed_signers = \"a\"\n[source]\nurl = \"{url}\"\n"
            ))
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(msg.contains("source.url: "), "{url}: {msg}");
        }
        for url in [
            "git://example.com/fleet.git",
            "git://example.com:9419/fleet.git",
            "http://example.com:8080/fleet.git",
            "https://example.com/fleet.git",
            "file:///srv/fleet.git",
        ] {
            let text = format!("[trust]\nallowed_signers = \"a\"\n[source]\nurl = \"{url}\"\n");
            assert!(parse(&text).is_ok(), "{url}");
        }
    }

    #[test]
    fn retention_below_what_rollback_needs_is_an_error() {
        let msg = parse("[trust]\nallowed_signers = \"a\"\n[state]\nkeep_deployments = 0\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("state.keep_deployments must be at least 1"),
            "{msg}"
        );
        let msg = parse(
            "[trust]\nallowed_signers = \"a\"\n[state]\nkeep_deployments = 20\nkeep_history = 5\n",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("state.keep_history (5) must be at least state.keep_deployments (20)"),
            "{msg}"
        );
        let msg = parse("[trust]\nallowed_signers = \"a\"\n[state]\nbundle_cache = \"lots\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn invalid_branch_is_an_error() {
        let msg = parse("[trust]\nallowed_signers = \"a\"\n[source]\nbranch = \"a..b\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a valid branch name"), "{msg}");
    }
}
