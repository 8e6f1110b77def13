//! What a deployment asks of systemd: the declared units, their state, and the unit steps
//! around the file steps (order in [`crate::plan::units`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::manifest::{HealthCheck, Manifest, Unit};
use crate::plan::Plan;
use crate::plan::units::{self, UnitStep, Why};
use crate::units::{Systemctl, Systemd, UnitError, UnitOp, UnitState};

/// The services part of a manifest.
#[derive(Debug, Clone, Default)]
pub struct Services {
    pub units: Vec<Unit>,
    pub health: Vec<HealthCheck>,
    /// Some entry names units to restart.
    pub restarts: bool,
}

/// What the inventory meta row keeps of [`Services`]: enough for the no-op fast path to
/// check the units without reading the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    pub units: Vec<KeptUnit>,
    pub restarts: bool,
    pub health: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptUnit {
    pub name: String,
    pub enabled: Option<bool>,
    pub active: Option<bool>,
}

impl Services {
    pub fn of(manifest: &Manifest) -> Self {
        Self {
            units: manifest.units.clone(),
            health: manifest.health.clone(),
            restarts: manifest.entries.iter().any(|e| !e.restart.is_empty()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.health.is_empty() && !self.restarts
    }

    /// The JSON kept with the inventory, `None` when the manifest asks nothing of systemd.
    pub fn kept(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let kept = Kept {
            units: self
                .units
                .iter()
                .map(|u| KeptUnit {
                    name: u.name.clone(),
                    enabled: u.enabled,
                    active: u.active,
                })
                .collect(),
            restarts: self.restarts,
            health: !self.health.is_empty(),
        };
        serde_json::to_string(&kept).ok()
    }
}

impl Kept {
    /// The declared units, as the plan takes them.
    pub fn units(&self) -> Vec<Unit> {
        self.units
            .iter()
            .map(|u| Unit {
                name: u.name.clone(),
                enabled: u.enabled,
                active: u.active,
                origin: crate::manifest::Origin {
                    file: crate::manifest::MANIFEST_FILE.to_owned(),
                    kind: "unit",
                    index: 0,
                    label: u.name.clone(),
                },
            })
            .collect()
    }
}

/// The host's systemd, started on first use: a deployment that changes no unit never needs
/// it (nor a host without systemd, while its manifest declares no unit).
pub struct Backend<'a> {
    config: &'a Config,
    systemd: Option<Box<dyn Systemd + 'a>>,
}

impl<'a> Backend<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            config,
            systemd: None,
        }
    }

    /// A backend that is already there (tests record what is asked of it).
    #[cfg(test)]
    pub fn with(config: &'a Config, systemd: Box<dyn Systemd + 'a>) -> Self {
        Self {
            config,
            systemd: Some(systemd),
        }
    }

    pub fn get(&mut self) -> Result<&mut (dyn Systemd + 'a), UnitError> {
        if self.systemd.is_none() {
            let a = &self.config.apply;
            let real = Systemctl::new(&self.config.host.root, &a.systemctl, a.unit_timeout)?;
            self.systemd = Some(Box::new(real));
        }
        self.systemd
            .as_deref_mut()
            .ok_or_else(|| UnitError::Show("no systemd backend".to_owned()))
    }

    /// The state of `names` by name, in one query (none without names).
    pub fn states(&mut self, names: &[String]) -> Result<BTreeMap<String, UnitState>, UnitError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let states = self.get()?.states(&refs)?;
        Ok(states.into_iter().map(|s| (s.name.clone(), s)).collect())
    }
}

/// Adds the unit steps to a plan whose file steps are made: the units' state is read in one
/// query, and only when there is something to ask.
pub fn plan_units(
    backend: &mut Backend<'_>,
    services: &Services,
    plan: &mut Plan,
) -> Result<(), UnitError> {
    let names = units::names_to_observe(&services.units, &plan.steps);
    if names.is_empty() && plan.restart.is_empty() {
        return Ok(());
    }
    // Restarts need no state, but they do need systemd: a host without it fails here, before
    // anything changes.
    backend.get()?;
    let observed = backend.states(&names)?;
    plan.units = units::decide(&services.units, &observed, &plan.steps, &plan.restart);
    Ok(())
}

/// Whether the declared units are as the manifest wants them: one query.
pub fn units_drifted(backend: &mut Backend<'_>, declared: &[Unit]) -> Result<bool, UnitError> {
    let names: Vec<String> = declared.iter().map(|u| u.name.clone()).collect();
    let observed = backend.states(&names)?;
    let state = |name: &str| crate::units::state_of(&observed, name);
    let steps = units::after_files(declared, &state, &BTreeMap::new(), &BTreeSet::new());
    Ok(!steps.is_empty())
}

/// A unit step that failed, with what systemd logged of the unit.
#[derive(Debug)]
pub struct StepFailed {
    pub unit: String,
    pub error: UnitError,
    pub journal: String,
}

/// Runs the steps before the files: units whose unit file goes are stopped and disabled.
pub fn before_files(
    backend: &mut Backend<'_>,
    plan: &Plan,
    done: &mut Vec<UnitStep>,
) -> Result<(), StepFailed> {
    for step in plan.units.iter().filter(|s| s.is_before_files()) {
        run_step(backend, step)?;
        done.push(step.clone());
    }
    Ok(())
}

/// Runs the steps after the files: `daemon-reload` when planned, then enable/disable,
/// start/stop and restarts decided again from the units' state after the reload.
pub fn after_files(
    backend: &mut Backend<'_>,
    services: &Services,
    plan: &Plan,
    done: &mut Vec<UnitStep>,
) -> Result<(), StepFailed> {
    if let Some(reload) = plan.units.iter().find(|s| s.op.is_none()) {
        run_step(backend, reload)?;
        done.push(reload.clone());
    }
    let names: Vec<String> = services.units.iter().map(|u| u.name.clone()).collect();
    if names.is_empty() && plan.restart.is_empty() {
        return Ok(());
    }
    let observed = backend.states(&names).map_err(|error| StepFailed {
        unit: String::new(),
        error,
        journal: String::new(),
    })?;
    let state = |name: &str| crate::units::state_of(&observed, name);
    let stopped: BTreeSet<&str> = plan
        .units
        .iter()
        .filter(|s| s.is_before_files() && s.op == Some(UnitOp::Stop))
        .map(|s| s.unit.as_str())
        .collect();
    for step in units::after_files(&services.units, &state, &plan.restart, &stopped) {
        run_step(backend, &step)?;
        done.push(step);
    }
    Ok(())
}

fn run_step(backend: &mut Backend<'_>, step: &UnitStep) -> Result<(), StepFailed> {
    let failed = |error: UnitError, journal: String| StepFailed {
        unit: step.unit.clone(),
        error,
        journal,
    };
    let systemd = backend.get().map_err(|e| failed(e, String::new()))?;
    let result = match step.op {
        None => systemd.reload(),
        Some(op) => systemd.run(op, &step.unit),
    };
    match result {
        Ok(()) => {
            tracing::info!(step = %step, "unit step done");
            Ok(())
        }
        Err(error) => {
            let journal = if step.unit.is_empty() {
                String::new()
            } else {
                systemd.journal(&step.unit)
            };
            Err(failed(error, journal))
        }
    }
}

/// The event of a unit step done: a repair of drift when the deployment repairs its own
/// commit and the unit was not as declared.
pub fn event(step: &UnitStep, repair: bool) -> (&'static str, String) {
    let shown = step.to_string();
    let text = shown.strip_prefix("* ").unwrap_or(&shown).to_owned();
    let kind = match (&step.why, repair) {
        (Why::State(_), true) => "drift-repaired",
        _ => "unit",
    };
    (kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::for_tests as test_config;
    use crate::manifest::{HostPath, Origin};
    use crate::plan::{Action, Reason, Step};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records what it is asked; units it was asked to start become active, and a unit file
    /// is only known after a daemon-reload once it was "installed".
    struct Recording {
        log: Rc<RefCell<Vec<String>>>,
        states: BTreeMap<String, UnitState>,
        installed: Vec<String>,
    }

    impl Systemd for Recording {
        fn states(&mut self, names: &[&str]) -> Result<Vec<UnitState>, UnitError> {
            self.log
                .borrow_mut()
                .push(format!("show {}", names.join(" ")));
            Ok(names
                .iter()
                .map(|n| {
                    self.states.get(*n).cloned().unwrap_or_else(|| UnitState {
                        name: (*n).to_owned(),
                        load: "not-found".into(),
                        active: "inactive".into(),
                        ..UnitState::default()
                    })
                })
                .collect())
        }
        fn reload(&mut self) -> Result<(), UnitError> {
            self.log.borrow_mut().push("daemon-reload".into());
            for name in self.installed.drain(..) {
                self.states.insert(
                    name.clone(),
                    UnitState {
                        name,
                        load: "loaded".into(),
                        active: "inactive".into(),
                        file_state: "disabled".into(),
                        ..UnitState::default()
                    },
                );
            }
            Ok(())
        }
        fn run(&mut self, op: UnitOp, unit: &str) -> Result<(), UnitError> {
            self.log.borrow_mut().push(format!("{} {unit}", op.verb()));
            let s = self.states.entry(unit.to_owned()).or_default();
            match op {
                UnitOp::Start | UnitOp::Restart => s.active = "active".into(),
                UnitOp::Stop => s.active = "inactive".into(),
                UnitOp::Enable => s.file_state = "enabled".into(),
                UnitOp::Disable => s.file_state = "disabled".into(),
            }
            Ok(())
        }
    }

    fn unit(name: &str, enabled: Option<bool>, active: Option<bool>) -> Unit {
        Unit {
            name: name.into(),
            enabled,
            active,
            origin: Origin {
                file: "outpost.toml".into(),
                kind: "unit",
                index: 1,
                label: name.into(),
            },
        }
    }

    fn running(name: &str) -> UnitState {
        UnitState {
            name: name.into(),
            load: "loaded".into(),
            active: "active".into(),
            sub: "running".into(),
            file_state: "enabled".into(),
            ..UnitState::default()
        }
    }

    fn write(path: &str) -> Step {
        Step {
            path: HostPath::parse(path).expect("test path"),
            action: Action::Chmod {
                from: 0o600,
                to: 0o644,
            },
            reason: Reason::Drifted,
        }
    }

    fn remove(path: &str) -> Step {
        Step {
            path: HostPath::parse(path).expect("test path"),
            action: Action::Remove { found: "file" },
            reason: Reason::Pruned,
        }
    }

    #[test]
    fn files_then_reload_then_enable_start_and_restarts_once() -> Result<(), StepFailed> {
        let config = test_config();
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut states = BTreeMap::new();
        states.insert("old.service".into(), running("old.service"));
        states.insert("web.service".into(), running("web.service"));
        states.insert("db.service".into(), running("db.service"));
        let recording = Recording {
            log: log.clone(),
            states,
            installed: vec!["hello.service".into()],
        };
        let mut backend = Backend::with(&config, Box::new(recording));
        let services = Services {
            units: vec![
                unit("hello.service", Some(true), Some(true)),
                unit("web.service", None, Some(true)),
                unit("db.service", None, Some(true)),
            ],
            health: Vec::new(),
            restarts: true,
        };
        let mut plan = Plan {
            steps: vec![
                write("/etc/systemd/system/hello.service"),
                write("/etc/db.conf"),
                write("/etc/hello.conf"),
                write("/etc/web.conf"),
                remove("/etc/systemd/system/old.service"),
            ],
            ..Plan::default()
        };
        // hello's config changed too, but hello is started by this deployment: no restart.
        for (unit, path) in [
            ("db.service", "/etc/db.conf"),
            ("hello.service", "/etc/hello.conf"),
            ("web.service", "/etc/web.conf"),
        ] {
            plan.restart
                .insert(unit.into(), HostPath::parse(path).expect("test path"));
        }
        plan_units(&mut backend, &services, &mut plan).map_err(|error| StepFailed {
            unit: String::new(),
            error,
            journal: String::new(),
        })?;
        let shown: Vec<String> = plan.units.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "* stop old.service (its unit file /etc/systemd/system/old.service is removed)",
                "* disable old.service (its unit file /etc/systemd/system/old.service is removed)",
                "* daemon-reload (unit files changed)",
                "* enable hello.service (it is not found)",
                "* start hello.service (it is not found)",
                "* restart web.service (because /etc/web.conf changed)",
                "* restart db.service (because /etc/db.conf changed)",
            ]
        );
        log.borrow_mut().clear();
        let mut done = Vec::new();
        before_files(&mut backend, &plan, &mut done)?;
        log.borrow_mut().push("-- files --".into());
        after_files(&mut backend, &services, &plan, &mut done)?;
        assert_eq!(
            *log.borrow(),
            [
                "stop old.service",
                "disable old.service",
                "-- files --",
                "daemon-reload",
                "show hello.service web.service db.service",
                "enable hello.service",
                "start hello.service",
                "restart web.service",
                "restart db.service",
            ]
        );
        assert_eq!(done.len(), 7);
        Ok(())
    }

    #[test]
    fn a_stopped_unit_is_drift_and_nothing_else_is() -> Result<(), UnitError> {
        let config = test_config();
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut states = BTreeMap::new();
        let mut stopped = running("web.service");
        stopped.active = "failed".into();
        stopped.result = "exit-code".into();
        states.insert("web.service".into(), stopped);
        states.insert("db.service".into(), running("db.service"));
        let recording = Recording {
            log: log.clone(),
            states,
            installed: Vec::new(),
        };
        let mut backend = Backend::with(&config, Box::new(recording));
        let declared = [
            unit("db.service", Some(true), Some(true)),
            unit("web.service", None, Some(true)),
        ];
        assert!(units_drifted(&mut backend, &declared)?);
        assert!(!units_drifted(&mut backend, &declared[..1])?);
        assert_eq!(log.borrow().len(), 2, "one query each time");
        let services = Services {
            units: declared.to_vec(),
            ..Services::default()
        };
        let mut plan = Plan::default();
        plan_units(&mut backend, &services, &mut plan)?;
        let shown: Vec<String> = plan.units.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["* start web.service (it is failed (exit-code))"]);
        Ok(())
    }
}
