//! The health gate after a deployment: every unit declared `active = true` is active and stays
//! so, without systemd restarting it, for `apply.health_settle`; then every `[[health]]` check
//! exits 0 (argv, no shell, up to `1 + retries` runs `interval` apart, each killed with its
//! process group at its `timeout`). `apply.health_timeout` bounds the whole gate. The end of a
//! failing check's output (4 KiB) is kept for the event, the bad mark and `status`.

use std::fmt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::services::{Backend, Services};
use crate::config::Config;
use crate::manifest::HealthCheck;
use crate::units::{UnitState, child};

/// How much of a failing check's output is kept.
pub const OUTPUT_LIMIT: usize = 4096;

/// The environment health checks run with, besides `OUTPOST_COMMIT`.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often units are looked at while they settle.
const POLL: Duration = Duration::from_millis(250);

/// Why the gate failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailure {
    /// The check (`[[health]]` name) or `unit NAME`.
    pub check: String,
    pub reason: String,
    /// The end of the check's output, or of the unit's log.
    pub output: String,
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            crate::text::escape(&self.check),
            crate::text::escape(&self.reason)
        )?;
        let output = self.output.trim();
        if !output.is_empty() {
            // The error line carries the last lines, at most 400 characters of them; the
            // event and status carry all that was kept.
            let lines: Vec<&str> = output.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(3)..].join("\n");
            let chars = tail.chars().count();
            if chars > 400 {
                tail = format!("...{}", tail.chars().skip(chars - 400).collect::<String>());
            }
            write!(f, "; output ends: {}", crate::text::escape(&tail))?;
        }
        Ok(())
    }
}

/// Runs the gate for a deployment of `commit`.
pub fn run(
    backend: &mut Backend<'_>,
    services: &Services,
    config: &Config,
    commit: &str,
) -> Result<(), GateFailure> {
    let started = Instant::now();
    let deadline = started + config.apply.health_timeout;
    settle(backend, services, config.apply.health_settle, deadline)?;
    for check in &services.health {
        run_check(check, config, commit, deadline)?;
    }
    tracing::info!(elapsed = ?started.elapsed(), checks = services.health.len(), "health gate passed");
    Ok(())
}

/// Every unit declared active is active at the end of the settle window, and systemd did not
/// restart it meanwhile.
fn settle(
    backend: &mut Backend<'_>,
    services: &Services,
    window: Duration,
    deadline: Instant,
) -> Result<(), GateFailure> {
    let names: Vec<String> = services
        .units
        .iter()
        .filter(|u| u.active == Some(true))
        .map(|u| u.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let units_failed = |reason: String| GateFailure {
        check: "units".to_owned(),
        reason,
        output: String::new(),
    };
    let first = backend
        .states(&names)
        .map_err(|e| units_failed(e.to_string()))?;
    let settled = Instant::now() + window;
    loop {
        let now = backend
            .states(&names)
            .map_err(|e| units_failed(e.to_string()))?;
        let mut waiting = None;
        for name in &names {
            let (Some(before), Some(state)) = (first.get(name), now.get(name)) else {
                continue;
            };
            if let Some(reason) = broken(before, state, window) {
                let output = backend.get().map(|s| s.journal(name)).unwrap_or_default();
                return Err(GateFailure {
                    check: format!("unit {name}"),
                    reason,
                    output,
                });
            }
            if !state.is_active() {
                waiting = Some(state);
            }
        }
        let at = Instant::now();
        match waiting {
            None if at >= settled => return Ok(()),
            Some(state) if at >= deadline => {
                return Err(GateFailure {
                    check: format!("unit {}", state.name),
                    reason: format!(
                        "still {} when apply.health_timeout ran out",
                        state.describe()
                    ),
                    output: String::new(),
                });
            }
            None if at >= deadline => return Ok(()),
            _ => std::thread::sleep(POLL),
        }
    }
}

/// Why a unit that should be active is not healthy, if it is not.
fn broken(before: &UnitState, now: &UnitState, window: Duration) -> Option<String> {
    let restarts = now.restarts.saturating_sub(before.restarts);
    if restarts > 0 {
        return Some(format!(
            "systemd restarted it {restarts} time(s) within the {} settle window; it keeps exiting (now {})",
            humantime::format_duration(window),
            now.describe()
        ));
    }
    match now.active.as_str() {
        "failed" | "inactive" | "deactivating" => Some(format!("is {}", now.describe())),
        _ if now.not_found() => Some("is not found".to_owned()),
        _ => None,
    }
}

/// One `[[health]]` check, retried.
fn run_check(
    check: &HealthCheck,
    config: &Config,
    commit: &str,
    deadline: Instant,
) -> Result<(), GateFailure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = check.timeout.min(left);
        let failure = match attempt_once(check, config, commit, timeout) {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        let gate_ran_out = timeout < check.timeout;
        let retry =
            attempt <= check.retries && Instant::now() + check.interval < deadline && !gate_ran_out;
        if !retry {
            let (reason, output) = failure;
            let runs = if attempt > 1 {
                format!(" (after {attempt} runs)")
            } else {
                String::new()
            };
            let reason = if gate_ran_out {
                format!("{reason}; apply.health_timeout ran out{runs}")
            } else {
                format!("{reason}{runs}")
            };
            return Err(GateFailure {
                check: check.name.clone(),
                reason,
                output,
            });
        }
        tracing::info!(check = %crate::text::escape(&check.name), attempt, "health check failed; retrying");
        std::thread::sleep(check.interval);
    }
}

/// One run of a check: `Err((reason, output))` when it did not exit 0.
fn attempt_once(
    check: &HealthCheck,
    config: &Config,
    commit: &str,
    timeout: Duration,
) -> Result<(), (String, String)> {
    let Some((program, args)) = check.command.split_first() else {
        return Err(("has no command".to_owned(), String::new()));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("OUTPOST_COMMIT", commit)
        .current_dir(&config.host.root);
    let finished = child::run(command, timeout, OUTPUT_LIMIT, child::Keep::Tail).map_err(|e| {
        (
            format!("cannot run {}: {e}", crate::text::escape(program)),
            String::new(),
        )
    })?;
    let mut output = String::from_utf8_lossy(&finished.output).into_owned();
    if finished.truncated {
        output.insert_str(0, "[...] ");
    }
    match finished.status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err((format!("{}", Exit(status)), output)),
        None => Err((
            format!(
                "did not finish within {}; killed with its process group",
                humantime::format_duration(timeout)
            ),
            output,
        )),
    }
}

/// An exit status as a person reads it.
struct Exit(std::process::ExitStatus);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => write!(f, "ended with {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::for_tests as test_config;
    use crate::manifest::Origin;

    fn check(command: &[&str], timeout_ms: u64, retries: u32) -> HealthCheck {
        HealthCheck {
            name: "probe".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Duration::from_millis(timeout_ms),
            retries,
            interval: Duration::from_millis(10),
            origin: Origin {
                file: "outpost.toml".into(),
                kind: "health",
                index: 1,
                label: "probe".into(),
            },
        }
    }

    fn gate(checks: Vec<HealthCheck>) -> Result<(), GateFailure> {
        let config = test_config();
        let mut backend = Backend::new(&config);
        let services = Services {
            health: checks,
            ..Services::default()
        };
        run(&mut backend, &services, &config, "c0ffee")
    }

    #[test]
    fn a_passing_check_passes_and_sees_the_commit() {
        let ok = check(
            &["/bin/sh", "-c", "test \"$OUTPOST_COMMIT\" = c0ffee"],
            5000,
            0,
        );
        assert_eq!(gate(vec![ok]), Ok(()));
    }

    #[test]
    fn a_failing_check_is_retried_and_reports_its_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = dir.path().join("count");
        let script = format!("echo run >> {0}; echo broken; exit 3", count.display());
        let err = gate(vec![check(&["/bin/sh", "-c", &script], 5000, 2)]).err();
        let err = err.expect("the check fails");
        assert_eq!(err.check, "probe");
        assert_eq!(err.reason, "exited with status 3 (after 3 runs)");
        assert_eq!(err.output, "broken\n");
        let runs = std::fs::read_to_string(&count).expect("count file");
        assert_eq!(runs.lines().count(), 3);
    }

    #[test]
    fn a_check_that_succeeds_on_a_retry_passes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flag = dir.path().join("flag");
        let script = format!("test -e {0} || {{ touch {0}; exit 1; }}", flag.display());
        assert_eq!(
            gate(vec![check(&["/bin/sh", "-c", &script], 5000, 1)]),
            Ok(())
        );
    }

    #[test]
    fn apply_health_timeout_bounds_the_whole_gate() {
        let mut config = test_config();
        config.apply.health_timeout = Duration::from_millis(700);
        let mut backend = Backend::new(&config);
        let services = Services {
            health: vec![check(&["/bin/sleep", "30"], 10_000, 5)],
            ..Services::default()
        };
        let started = Instant::now();
        let err = run(&mut backend, &services, &config, "c0ffee").err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = err.expect("the gate fails");
        assert!(
            err.reason.ends_with("; apply.health_timeout ran out"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn the_error_line_carries_the_last_lines_escaped() {
        let failure = GateFailure {
            check: "web".into(),
            reason: "exited with status 1".into(),
            output: "one\ntwo\nthree\nfour\x1b[2J\n".into(),
        };
        assert_eq!(
            failure.to_string(),
            "web: exited with status 1; output ends: two\\nthree\\nfour\\x1b[2J"
        );
    }
}
