//! systemd units: their names, the state systemd reports, and the backend that changes them.
//!
//! [`Systemd`] is the seam: the real backend, [`Systemctl`], runs the host's `systemctl`
//! (as ansible and CFEngine do), waits for every job to finish, bounded by
//! `apply.unit_timeout`, and reads all declared units' state in one `systemctl show`. Tests of
//! the order of operations use a recording implementation; the behaviour is proven against a
//! real systemd in a container.
//!
//! `systemctl` was chosen over a D-Bus client: it adds nothing to the binary or the build, it
//! is what an operator runs by hand (its errors read the same), and `start`/`restart` already
//! wait for the job and report its failure. The cost is a process per operation, paid only
//! when something changes; the state query is one process for every unit.

pub mod child;
pub mod name;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::text;

/// What systemd says of one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub name: String,
    /// `LoadState`: `loaded`, `not-found`, `masked`, `bad-setting`, `error`.
    pub load: String,
    /// `ActiveState`: `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    pub active: String,
    /// `SubState`: `running`, `dead`, `exited`, `auto-restart`, ...
    pub sub: String,
    /// `Result` of the last run: `success`, `exit-code`, `signal`, `core-dump`, ...
    pub result: String,
    #[serde(rename = "main_pid")]
    pub main_pid: u32,
    /// `NRestarts`: how often systemd restarted it by itself (`Restart=`).
    pub restarts: u32,
    /// `UnitFileState`: `enabled`, `disabled`, `static`, `masked`, ...
    pub file_state: String,
}

/// The state of `name` in `observed` (one `systemctl show`); a unit systemd did not describe
/// counts as not found.
pub fn state_of(observed: &std::collections::BTreeMap<String, UnitState>, name: &str) -> UnitState {
    observed.get(name).cloned().unwrap_or_else(|| UnitState {
        name: name.to_owned(),
        load: "not-found".to_owned(),
        active: "inactive".to_owned(),
        ..UnitState::default()
    })
}

impl UnitState {
    /// Running, or reloading while running.
    pub fn is_active(&self) -> bool {
        matches!(self.active.as_str(), "active" | "reloading")
    }

    /// Started or on its way to being so: nothing to start.
    pub fn is_up(&self) -> bool {
        matches!(self.active.as_str(), "active" | "reloading" | "activating")
    }

    /// Enabled in the sense `enabled = true` asks for: linked to start at boot, or a unit that
    /// cannot be enabled (`static`, generated, an alias) and so never needs it.
    pub fn satisfies_enabled(&self) -> bool {
        matches!(
            self.file_state.as_str(),
            "enabled"
                | "enabled-runtime"
                | "static"
                | "alias"
                | "indirect"
                | "generated"
                | "transient"
        )
    }

    /// Linked to start at boot, so `enabled = false` has something to undo.
    pub fn is_enabled(&self) -> bool {
        matches!(self.file_state.as_str(), "enabled" | "enabled-runtime")
    }

    /// systemd has no unit of that name (no unit file anywhere).
    pub fn not_found(&self) -> bool {
        self.load == "not-found"
    }

    /// One line for humans: `active (running)`, `failed (exit-code)`, `inactive (dead)`.
    pub fn describe(&self) -> String {
        let detail = if self.active == "failed" && !self.result.is_empty() {
            &self.result
        } else {
            &self.sub
        };
        if self.not_found() {
            "not found".to_owned()
        } else if detail.is_empty() {
            self.active.clone()
        } else {
            format!("{} ({detail})", self.active)
        }
    }
}

/// An operation on one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitOp {
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
}

impl UnitOp {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Enable => "enable",
            Self::Disable => "disable",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "systemd is not running under host root {} (no run/systemd/system there); [[unit]] entries need a host booted with systemd",
        text::path(root)
    )]
    NoSystemd { root: PathBuf },
    #[error(
        "cannot run {}: {source}; install systemd or set apply.systemctl",
        text::path(program)
    )]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {verb} {unit}: {}", text::escape(message))]
    Failed {
        verb: &'static str,
        unit: String,
        message: String,
    },
    #[error(
        "{verb} {unit} did not finish within {} (apply.unit_timeout); see `journalctl -u {unit}`",
        humantime::format_duration(*after)
    )]
    Timeout {
        verb: &'static str,
        unit: String,
        after: Duration,
    },
    #[error("cannot read the state of units from systemctl show: {0}")]
    Show(String),
}

/// What outpost asks of systemd.
pub trait Systemd {
    /// The state of these units, in the same order, in one query.
    fn states(&mut self, names: &[&str]) -> Result<Vec<UnitState>, UnitError>;
    /// `daemon-reload`: systemd reads the unit files again.
    fn reload(&mut self) -> Result<(), UnitError>;
    /// One operation, waited for until its job finished.
    fn run(&mut self, op: UnitOp, unit: &str) -> Result<(), UnitError>;
    /// The last lines systemd logged for a unit, for a failure's report; empty when unknown.
    fn journal(&mut self, _unit: &str) -> String {
        String::new()
    }
}

/// What is kept of a unit's log for a failure's report.
pub const JOURNAL_LIMIT: usize = 4096;

/// The output kept of one systemctl run.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// `systemctl show` of every declared unit: a few hundred bytes each.
const SHOW_LIMIT: usize = 16 << 20;

/// The host's systemd, through `systemctl`.
pub struct Systemctl {
    program: PathBuf,
    timeout: Duration,
}

impl Systemctl {
    /// The host's systemd when the host root is `/` and systemd runs there.
    pub fn new(root: &Path, program: &Path, timeout: Duration) -> Result<Self, UnitError> {
        // sd_booted(): systemd is the init system when this directory exists.
        if root != Path::new("/") || !Path::new("/run/systemd/system").is_dir() {
            return Err(UnitError::NoSystemd {
                root: root.to_owned(),
            });
        }
        Ok(Self {
            program: program.to_owned(),
            timeout,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        // Not --quiet: it also silences why a job failed.
        c.args(["--no-pager", "--no-ask-password"])
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .env("LC_ALL", "C");
        c
    }

    fn call(&self, verb: &'static str, unit: &str, args: &[&str]) -> Result<Vec<u8>, UnitError> {
        let command = self.command(args);
        let finished = child::run(command, self.timeout, OUTPUT_LIMIT, child::Keep::Tail).map_err(
            |source| UnitError::Spawn {
                program: self.program.clone(),
                source,
            },
        )?;
        match finished.status {
            None => Err(UnitError::Timeout {
                verb,
                unit: unit.to_owned(),
                after: self.timeout,
            }),
            Some(status) if status.success() => Ok(finished.output),
            Some(status) => {
                let said = String::from_utf8_lossy(&finished.output);
                let said = said.trim();
                Err(UnitError::Failed {
                    verb,
                    unit: unit.to_owned(),
                    message: if said.is_empty() {
                        format!("systemctl {verb} exited with {status}")
                    } else {
                        said.to_owned()
                    },
                })
            }
        }
    }
}

impl Systemd for Systemctl {
    fn states(&mut self, names: &[&str]) -> Result<Vec<UnitState>, UnitError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "show",
            "--property=Id,LoadState,ActiveState,SubState,Result,MainPID,NRestarts,UnitFileState",
            "--",
        ];
        args.extend_from_slice(names);
        let command = self.command(&args);
        let finished =
            child::run(command, self.timeout, SHOW_LIMIT, child::Keep::Head).map_err(|source| {
                UnitError::Spawn {
                    program: self.program.clone(),
                    source,
                }
            })?;
        if !finished.success() || finished.truncated {
            let said = String::from_utf8_lossy(&finished.output);
            return Err(UnitError::Show(text::escape(said.trim()).into_owned()));
        }
        parse_show(&finished.output, names)
    }

    fn reload(&mut self) -> Result<(), UnitError> {
        self.call("daemon-reload", "systemd", &["daemon-reload"])
            .map(drop)
    }

    fn run(&mut self, op: UnitOp, unit: &str) -> Result<(), UnitError> {
        let verb = op.verb();
        self.call(verb, unit, &[verb, "--", unit]).map(drop)
    }

    fn journal(&mut self, unit: &str) -> String {
        let mut c = Command::new("journalctl");
        c.args([
            "--no-pager",
            "--quiet",
            "-o",
            "short-iso",
            "-n",
            "30",
            "-u",
            unit,
        ])
        .env("SYSTEMD_COLORS", "0")
        .env("LC_ALL", "C");
        match child::run(c, Duration::from_secs(10), JOURNAL_LIMIT, child::Keep::Tail) {
            Ok(f) if f.success() => String::from_utf8_lossy(&f.output).into_owned(),
            Ok(_) | Err(_) => String::new(),
        }
    }
}

/// `systemctl show` output: one block of `Key=value` lines per unit, blank-line separated, in
/// the order asked.
fn parse_show(output: &[u8], names: &[&str]) -> Result<Vec<UnitState>, UnitError> {
    let text = String::from_utf8_lossy(output);
    let blocks: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if blocks.len() != names.len() {
        return Err(UnitError::Show(format!(
            "{} units asked, {} described",
            names.len(),
            blocks.len()
        )));
    }
    Ok(blocks
        .iter()
        .zip(names)
        .map(|(block, name)| {
            let mut s = UnitState {
                name: (*name).to_owned(),
                ..UnitState::default()
            };
            for line in block.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let value = value.to_owned();
                match key {
                    "LoadState" => s.load = value,
                    "ActiveState" => s.active = value,
                    "SubState" => s.sub = value,
                    "Result" => s.result = value,
                    "MainPID" => s.main_pid = value.parse().unwrap_or(0),
                    "NRestarts" => s.restarts = value.parse().unwrap_or(0),
                    "UnitFileState" => s.file_state = value,
                    _ => {}
                }
            }
            s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_is_read_per_unit_in_order() -> Result<(), UnitError> {
        let out = b"Id=a.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nMainPID=42\nNRestarts=3\nUnitFileState=enabled\n\nId=b.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\nMainPID=0\nNRestarts=0\nUnitFileState=\n";
        let states = parse_show(out, &["a.service", "b.service"])?;
        assert_eq!(states[0].main_pid, 42);
        assert_eq!(states[0].restarts, 3);
        assert!(states[0].is_active() && states[0].is_enabled());
        assert!(states[1].not_found());
        assert_eq!(states[1].describe(), "not found");
        assert!(parse_show(out, &["a.service"]).is_err());
        Ok(())
    }

    #[test]
    fn a_host_root_that_is_not_slash_has_no_systemd() {
        let err = Systemctl::new(
            Path::new("/tmp/x"),
            Path::new("systemctl"),
            Duration::from_secs(1),
        );
        assert!(matches!(err, Err(UnitError::NoSystemd { .. })));
    }
}
