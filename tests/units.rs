//! Units against a real systemd: the built `outpost` runs inside a Debian container booted
//! with systemd-nspawn (one per test binary, shared), with the container's `/` as host root.
//! Each test has its own state dir and unit names. Skipped, with the reason printed, where
//! the machine cannot run the container (CI sets `OUTPOST_REQUIRE_CONTAINER=1`: never skipped
//! there).

use std::path::PathBuf;

use crate::support::container::{self, Container};
use crate::support::{Fleet, Result, Run};

/// A fleet publishing to one host: the container, with its own state dir.
struct Site {
    fleet: Fleet,
    ct: &'static Container,
    config: PathBuf,
    name: String,
}

impl Site {
    fn new(ct: &'static Container, name: &str) -> Result<Self> {
        let fleet = Fleet::new_in(ct.shared_dir())?;
        let inside = ct.inside(fleet.dir());
        let config = fleet.path("inside.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\nname = \"{name}\"\nroot = \"/\"\n\n[state]\ndir = \"/var/lib/outpost-{name}\"\n\n[trust]\nallowed_signers = \"{}/allowed_signers\"\n\n[apply]\nhealth_settle = \"2s\"\nhealth_timeout = \"30s\"\nunit_timeout = \"20s\"\n",
                inside.display()
            ),
        )?;
        Ok(Self {
            fleet,
            ct,
            config: ct.inside(&config),
            name: name.to_owned(),
        })
    }

    fn outpost(&self, args: &[&str]) -> Run {
        let config = self.config.display().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        self.ct.outpost(&all).into()
    }

    fn ok(&self, args: &[&str]) -> Result<Run> {
        let run = self.outpost(args);
        if run.code != 0 {
            return Err(format!(
                "outpost {args:?} exited {}: {}{}",
                run.code, run.stdout, run.stderr
            )
            .into());
        }
        Ok(run)
    }

    /// Commits `files`, bundles them and imports the bundle inside; returns the commit.
    fn publish(&self, files: &[(&str, &str)]) -> Result<String> {
        let (commit, bundle) = self.fleet.write_commit_and_bundle(files)?;
        let bundle = self.ct.inside(&bundle).display().to_string();
        self.ok(&["import", &bundle])?;
        Ok(commit)
    }

    fn status(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &self.ok(&["status", "--json"])?.stdout,
        )?)
    }

    fn history(&self) -> Result<Vec<serde_json::Value>> {
        match serde_json::from_str(&self.ok(&["history", "--json"])?.stdout)? {
            serde_json::Value::Array(list) => Ok(list),
            other => Err(format!("history is not a list: {other}").into()),
        }
    }

    /// `(kind, result, commit)` of each deployment, oldest first.
    fn deployments(&self) -> Result<Vec<(String, String, String)>> {
        let field = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or_default().to_owned();
        let mut out: Vec<_> = self
            .history()?
            .iter()
            .map(|d| (field(d, "kind"), field(d, "result"), field(d, "commit")))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The unit's name: `<site>.service`.
    fn unit(&self) -> String {
        format!("{}.service", self.name)
    }

    fn show(&self) -> std::collections::BTreeMap<String, String> {
        self.ct.unit(&self.unit())
    }

    fn sh(&self, script: &str) -> Result<String> {
        self.ct.run_sh(script)
    }

    /// The manifest of one service: its unit file and its config file (each restarting it
    /// when changed: systemd keeps running the old definition otherwise) and its declared
    /// state, plus `extra`.
    fn manifest(&self, extra: &str) -> String {
        let n = &self.name;
        format!(
            "[[file]]\npath = \"/etc/systemd/system/{n}.service\"\nsource = \"{n}.service\"\nrestart = [\"{n}.service\"]\n\n\
             [[file]]\npath = \"/etc/{n}.conf\"\nsource = \"{n}.conf\"\nrestart = [\"{n}.service\"]\n\n\
             [[unit]]\nname = \"{n}.service\"\nenabled = true\nactive = true\n{extra}"
        )
    }

    /// A service that prints its config and sleeps; `service` adds lines to `[Service]`.
    fn unit_file(&self, service: &str) -> String {
        format!(
            "[Unit]\nDescription=outpost test {n}\n\n[Service]\nExecStart=/bin/sh -c 'cat /etc/{n}.conf; exec sleep infinity'\n{service}\n\n[Install]\nWantedBy=multi-user.target\n",
            n = self.name
        )
    }

    /// Publishes the service with `conf` as its config and applies it.
    fn deploy_service(&self, conf: &str) -> Result<String> {
        let n = &self.name;
        let commit = self.publish(&[
            ("outpost.toml", &self.manifest("")),
            (&format!("{n}.service"), &self.unit_file("")),
            (&format!("{n}.conf"), conf),
        ])?;
        self.ok(&["apply"])?;
        Ok(commit)
    }
}

fn container() -> Option<&'static Container> {
    container::shared()
}

#[test]
fn a_unit_file_installed_by_the_manifest_ends_enabled_and_active() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "install")?;
    let n = &site.name;
    site.publish(&[
        ("outpost.toml", &site.manifest("")),
        (&format!("{n}.service"), &site.unit_file("")),
        (&format!("{n}.conf"), "one\n"),
    ])?;
    let plan = site.outpost(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(&format!(
            "* daemon-reload (unit files changed)\n* enable {n}.service (it is not found)\n* start {n}.service (it is not found)\n"
        )),
        "{}",
        plan.stdout
    );
    site.ok(&["apply"])?;
    let unit = site.show();
    assert_eq!(unit["ActiveState"], "active", "{unit:?}");
    assert_eq!(unit["UnitFileState"], "enabled", "{unit:?}");
    let status = site.status()?;
    assert_eq!(status["units"][0]["name"], format!("{n}.service"));
    assert_eq!(status["units"][0]["active"], true);
    assert_eq!(status["units"][0]["enabled"], true);
    assert_eq!(status["units"][0]["drifted"], false);
    // Nothing left to do: the no-op path checks the unit and finds it as declared.
    let plan = site.outpost(&["plan"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let again = site.ok(&["apply"])?;
    assert!(again.stdout.starts_with("no changes"), "{}", again.stdout);
    Ok(())
}

#[test]
fn changing_its_config_file_restarts_the_unit_once() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "restart")?;
    let n = site.name.clone();
    site.deploy_service("one\n")?;
    let before = site.show()["MainPID"].clone();
    site.publish(&[(&format!("{n}.conf"), "two\n")])?;
    let plan = site.outpost(&["plan"]);
    assert!(
        plan.stdout.ends_with(&format!(
            "* restart {n}.service (because /etc/{n}.conf changed)\n"
        )),
        "{}",
        plan.stdout
    );
    site.ok(&["apply"])?;
    let after = site.show();
    assert_eq!(after["ActiveState"], "active");
    assert_ne!(after["MainPID"], before, "a new process");
    assert_eq!(
        after["NRestarts"], "0",
        "restarted by outpost, not by systemd"
    );
    // The service read the new config.
    let log = site.sh(&format!(
        "journalctl -u {n}.service -o cat --no-pager | tail -n 1"
    ))?;
    assert_eq!(log.trim(), "two");
    Ok(())
}

#[test]
fn a_unit_stopped_or_disabled_by_hand_is_put_back_as_drift() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "drift")?;
    let n = site.name.clone();
    site.deploy_service("one\n")?;
    site.sh(&format!(
        "systemctl stop {n}.service && systemctl disable -q {n}.service"
    ))?;
    let plan = site.outpost(&["plan"]);
    assert_eq!(plan.code, 1);
    assert_eq!(
        plan.stdout,
        format!(
            "* enable {n}.service (it is disabled)\n* start {n}.service (it is inactive (dead))\n"
        )
    );
    assert_eq!(site.status()?["units"][0]["drifted"], true);
    let run = site.ok(&["apply"])?;
    assert!(
        run.stdout.contains(&format!("* start {n}.service")),
        "{}",
        run.stdout
    );
    let unit = site.show();
    assert_eq!(unit["ActiveState"], "active");
    assert_eq!(unit["UnitFileState"], "enabled");
    let history = site.history()?;
    assert_eq!(history[0]["kind"], "repair");
    let kinds: Vec<(&str, &str)> = history[0]["events"]
        .as_array()
        .ok_or("events")?
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or(""),
                e["path"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let unit_name = format!("{n}.service");
    assert_eq!(
        kinds,
        [
            ("drift-repaired", unit_name.as_str()),
            ("drift-repaired", unit_name.as_str())
        ]
    );
    Ok(())
}

#[test]
fn a_commit_whose_unit_cannot_start_is_rolled_back_and_not_retried() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "nostart")?;
    let n = site.name.clone();
    let good = site.deploy_service("good\n")?;
    let unit_file = format!("/etc/systemd/system/{n}.service");
    let good_unit_file = site.sh(&format!("cat {unit_file}"))?;
    // The new unit cannot exec its program; its config changes too.
    let broken = format!(
        "[Service]\nType=exec\nExecStart=/nonexistent/{n}\n\n[Install]\nWantedBy=multi-user.target\n"
    );
    let bad = site.publish(&[
        (&format!("{n}.service"), &broken),
        (&format!("{n}.conf"), "bad\n"),
    ])?;
    let run = site.outpost(&["apply"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: unit {n}.service: cannot restart {n}.service: Job for {n}.service failed"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("rolled back to {good}")),
        "{}",
        run.stderr
    );
    // The previous unit file and config are back and the unit runs again.
    assert_eq!(site.sh(&format!("cat {unit_file}"))?, good_unit_file);
    assert_eq!(site.sh(&format!("cat /etc/{n}.conf"))?, "good");
    assert_eq!(site.show()["ActiveState"], "active");
    let status = site.status()?;
    assert_eq!(status["bad"][0]["commit"], bad.as_str());
    assert_eq!(status["bad"][0]["check"], format!("unit {n}.service"));
    assert_eq!(status["deployed"]["commit"], good.as_str());
    assert_eq!(
        site.deployments()?,
        [
            ("apply".into(), "success".into(), good.clone()),
            ("apply".into(), "failed".into(), bad.clone()),
            ("rollback".into(), "success".into(), good.clone()),
        ]
    );
    // Not retried.
    let again = site.ok(&["apply"])?;
    assert!(again.stdout.starts_with("no changes"), "{}", again.stdout);
    assert_eq!(site.deployments()?.len(), 3);
    Ok(())
}

#[test]
fn a_crash_looping_restart_always_unit_is_rolled_back() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "crashloop")?;
    let n = site.name.clone();
    let good = site.deploy_service("good\n")?;
    // Starts fine, then exits after a moment, again and again.
    let looping = "[Service]\nExecStart=/bin/sh -c 'sleep 0.3; exit 1'\nRestart=always\nRestartSec=100ms\nStartLimitIntervalSec=0\n\n[Install]\nWantedBy=multi-user.target\n";
    let bad = site.publish(&[(&format!("{n}.service"), looping)])?;
    let run = site.outpost(&["apply"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: unit {n}.service: systemd restarted it"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(site.status()?["deployed"]["commit"], good.as_str());
    let unit = site.show();
    assert_eq!(unit["ActiveState"], "active");
    assert_eq!(
        site.sh(&format!(
            "systemctl show -P ExecStart {n}.service | grep -c 'cat /etc/{n}.conf'"
        ))?
        .trim(),
        "1",
        "the good unit file is back"
    );
    Ok(())
}

#[test]
fn a_health_command_that_times_out_rolls_back_the_units_too() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "hcheck")?;
    let n = site.name.clone();
    let good = site.deploy_service("good\n")?;
    let before = site.show()["MainPID"].clone();
    let hang = "[[health]]\nname = \"answers\"\ncommand = [\"/bin/sleep\", \"600\"]\ntimeout = \"1s\"\nretries = 0\n";
    let bad = site.publish(&[
        ("outpost.toml", &site.manifest(hang)),
        (&format!("{n}.conf"), "bad\n"),
    ])?;
    let run = site.outpost(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: answers: did not finish within 1s; killed with its process group; rolled back to {good}"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(site.sh(&format!("cat /etc/{n}.conf"))?, "good");
    // Restarted for the bad config, and again for the good one.
    let after = site.show();
    assert_eq!(after["ActiveState"], "active");
    assert_ne!(after["MainPID"], before);
    let log = site.sh(&format!(
        "journalctl -u {n}.service -o cat --no-pager | tail -n 1"
    ))?;
    assert_eq!(log.trim(), "good");
    assert_eq!(site.status()?["bad"][0]["check"], "answers");
    Ok(())
}

#[test]
fn a_unit_not_found_on_the_host_fails_the_deployment_and_rolls_back() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "notfound")?;
    let n = site.name.clone();
    let good = site.deploy_service("good\n")?;
    let missing = format!("[[unit]]\nname = \"{n}-missing.service\"\nactive = true\n");
    let bad = site.publish(&[("outpost.toml", &site.manifest(&missing))])?;
    let run = site.outpost(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "commit {bad} failed its health gate: unit {n}-missing.service: cannot start {n}-missing.service: "
        )) && run.stderr.contains("not found"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("rolled back to {good}")));
    assert_eq!(site.show()["ActiveState"], "active");
    Ok(())
}

#[test]
fn a_unit_file_dropped_from_the_manifest_is_stopped_and_disabled_before_it_goes() -> Result {
    let Some(ct) = container() else { return Ok(()) };
    let site = Site::new(ct, "dropped")?;
    let n = site.name.clone();
    site.deploy_service("one\n")?;
    // Only an unrelated file stays.
    std::fs::remove_file(site.fleet.repo().join(format!("{n}.service")))?;
    site.publish(&[(
        "outpost.toml",
        &format!("[[file]]\npath = \"/etc/{n}.conf\"\nsource = \"{n}.conf\"\n"),
    )])?;
    let plan = site.outpost(&["plan"]);
    assert!(
        plan.stdout.contains(&format!(
            "* stop {n}.service (its unit file /etc/systemd/system/{n}.service is removed)\n* disable {n}.service (its unit file /etc/systemd/system/{n}.service is removed)\n* daemon-reload (unit files changed)\n"
        )),
        "{}",
        plan.stdout
    );
    site.ok(&["apply"])?;
    let unit = site.show();
    assert_eq!(unit["LoadState"], "not-found", "{unit:?}");
    assert_eq!(unit["ActiveState"], "inactive");
    let wants = site.sh(&format!(
        "ls /etc/systemd/system/multi-user.target.wants/ | grep -c '^{n}.service$' || true"
    ))?;
    assert_eq!(wants.trim(), "0", "the enablement link is gone");
    Ok(())
}
