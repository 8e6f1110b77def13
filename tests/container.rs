//! The shared systemd container of the tests ([`crate::support::container`]): it runs the
//! built outpost, starts and stops units with a real systemd, and sees what tests hand in
//! through the shared directory. Each test returns early (the reason printed) on a machine
//! that cannot boot it.

use std::process::Command;

use crate::support::container;
use crate::support::{BIN, Result, run};

#[test]
fn container_runs_the_built_outpost() -> Result {
    let Some(c) = container::shared() else {
        return Ok(());
    };
    let out = c.outpost(&["--version"]);
    assert!(out.status.success(), "outpost --version inside: {out:?}");
    let here = run(Command::new(BIN).arg("--version"))?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), here);
    // The build is bound read-only: nothing inside can change it.
    let touched = c.exec(&["touch", "/opt/outpost-bin/outpost"]);
    assert!(!touched.status.success(), "touched the build: {touched:?}");
    Ok(())
}

#[test]
fn a_unit_file_written_inside_can_be_started_and_stopped() -> Result {
    let Some(c) = container::shared() else {
        return Ok(());
    };
    c.run_sh(
        "printf '[Service]\\nExecStart=/bin/sleep infinity\\n' \
         > /etc/systemd/system/harness-probe.service",
    )?;
    c.run(&["systemctl", "daemon-reload"])?;
    c.run(&["systemctl", "start", "harness-probe.service"])?;
    let started = c.unit("harness-probe.service");
    assert_eq!(started["LoadState"], "loaded", "{started:?}");
    assert_eq!(started["ActiveState"], "active", "{started:?}");
    assert_eq!(started["SubState"], "running", "{started:?}");
    let pid = &started["MainPID"];
    assert_ne!(pid, "0", "{started:?}");
    assert_eq!(c.run(&["cat", &format!("/proc/{pid}/comm")])?, "sleep");

    c.run(&["systemctl", "restart", "harness-probe.service"])?;
    let restarted = c.unit("harness-probe.service");
    assert_eq!(restarted["ActiveState"], "active", "{restarted:?}");
    assert_ne!(restarted["MainPID"], "0", "{restarted:?}");
    assert_ne!(&restarted["MainPID"], pid, "restart kept the process");

    c.run(&["systemctl", "stop", "harness-probe.service"])?;
    let stopped = c.unit("harness-probe.service");
    assert_eq!(stopped["ActiveState"], "inactive", "{stopped:?}");
    assert_eq!(stopped["MainPID"], "0", "{stopped:?}");
    Ok(())
}

#[test]
fn files_in_the_shared_dir_are_seen_inside() -> Result {
    let Some(c) = container::shared() else {
        return Ok(());
    };
    let scratch = c.scratch("files");
    let file = scratch.write("in/hello.txt", "from the host\n")?;
    assert_eq!(file, c.inside(&scratch.host().join("in/hello.txt")));
    assert_eq!(
        c.run(&["cat", file.to_str().ok_or("a UTF-8 path")?])?,
        "from the host"
    );

    let back = scratch.inside().join("from-inside");
    c.run_sh(&format!("echo from the container > {}", back.display()))?;
    assert_eq!(
        std::fs::read_to_string(scratch.host().join("from-inside"))?,
        "from the container\n"
    );
    Ok(())
}
