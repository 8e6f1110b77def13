//! The Prometheus text file (`metrics.textfile`) for node_exporter's textfile collector: a
//! small writer of the text exposition format (the metrics are a handful of gauges, not worth
//! a client library), rewritten atomically after each cycle.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::status::Status;

/// The exposition text for `status` as of `now` (Unix seconds).
pub fn render(status: &Status, now: u64) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, labels: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{labels} {value}");
    };
    if let Some(d) = &status.deployed {
        gauge(
            "outpost_deployed_info",
            "The commit the host is deployed at.",
            &format!(
                "{{commit=\"{}\",kind=\"{}\"}}",
                label(&d.commit),
                label(&d.kind)
            ),
            "1".into(),
        );
    }
    if let Some(t) = &status.trusted {
        gauge(
            "outpost_trusted_info",
            "The newest trusted commit.",
            &format!("{{commit=\"{}\"}}", label(&t.commit)),
            "1".into(),
        );
    }
    if let Some(last) = &status.last_deployment {
        gauge(
            "outpost_last_apply_success",
            "1 when the newest deployment succeeded, 0 when it failed or was interrupted.",
            "",
            u8::from(last.result == "success").to_string(),
        );
        gauge(
            "outpost_last_apply_timestamp_seconds",
            "When the newest deployment started, Unix seconds.",
            "",
            last.started_unix.to_string(),
        );
        if let Some(secs) = last.duration_seconds {
            gauge(
                "outpost_last_apply_duration_seconds",
                "How long the newest deployment took.",
                "",
                secs.to_string(),
            );
        }
    }
    if let Some(drift) = &status.drift {
        gauge(
            "outpost_drifted_paths",
            "Managed paths that differ from the deployed state.",
            "",
            (drift.create + drift.change + drift.remove).to_string(),
        );
    }
    gauge(
        "outpost_bad_commits",
        "Commits marked bad by a rollback.",
        "",
        status.bad_commits.to_string(),
    );
    gauge(
        "outpost_spool_pending",
        "Bundles in the spool directory not taken yet.",
        "",
        status.spool.len().to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP outpost_rejected_bundles_total Bundles refused, repeats counted."
    );
    let _ = writeln!(out, "# TYPE outpost_rejected_bundles_total counter");
    let _ = writeln!(
        out,
        "outpost_rejected_bundles_total {}",
        status.rejected_total
    );
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    };
    let last_success = status.sync.last_success.as_ref().map(|e| e.at_unix);
    // A refused fetch still heard from upstream; a failed one did not.
    let last_refused = status
        .sync
        .last_error
        .as_ref()
        .filter(|e| e.outcome == "refused")
        .map(|e| e.at_unix);
    if let Some(t) = last_success {
        gauge(
            "outpost_last_sync_success_timestamp_seconds",
            "When the last upstream sync succeeded, Unix seconds.",
            t,
        );
    }
    if let Some(t) = last_success.max(last_refused) {
        gauge(
            "outpost_upstream_contact_age_seconds",
            "Seconds since upstream last answered.",
            now.saturating_sub(t),
        );
    }
    let s = &status.storage;
    gauge(
        "outpost_state_database_bytes",
        "Size of outpost.db and its write-ahead log.",
        s.database_bytes,
    );
    gauge(
        "outpost_state_objects_bytes",
        "Size of the object store (objects/).",
        s.objects_bytes,
    );
    gauge(
        "outpost_state_packs",
        "Packs in the object store; outpost gc makes them one.",
        s.packs,
    );
    gauge(
        "outpost_cached_bundles",
        "Signed bundles cached for export.",
        s.cached_bundles,
    );
    gauge(
        "outpost_cached_bundle_bytes",
        "Bytes of the bundles cached for export.",
        s.cached_bundle_bytes,
    );
    gauge(
        "outpost_bundle_cache_over_budget",
        "1 when the bundles export needs do not fit state.bundle_cache.",
        u64::from(s.bundle_cache_warning.is_some()),
    );
    out
}

/// A label value as the exposition format wants it: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Replaces `path` with `text` atomically (temp file in the same directory, rename), so the
/// collector never reads half a file.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".outpost.prom.")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    // node_exporter runs as another user: the file is world-readable, as metrics are.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Deployed, Drift, LastDeployment, Storage, SyncEntry, SyncStatus};

    fn status() -> Status {
        Status {
            host: "edge-7".into(),
            state_dir: "/var/lib/outpost".into(),
            trusted: None,
            deployed: Some(Deployed {
                commit: "abc\"def".into(),
                signer: None,
                applied_at: None,
                result: "success".into(),
                kind: "apply".into(),
            }),
            last_failure: None,
            drift: Some(Drift {
                drifted: true,
                create: 1,
                change: 2,
                remove: 0,
                units: 0,
                error: None,
            }),
            bundles: Vec::new(),
            rejected: Vec::new(),
            bad: Vec::new(),
            units: Vec::new(),
            units_error: None,
            last_deployment: Some(LastDeployment {
                commit: "abc".into(),
                kind: "apply".into(),
                result: "failed".into(),
                started_at: String::new(),
                started_unix: 1_800_000_000,
                duration_seconds: Some(3),
            }),
            bad_commits: 1,
            rejected_total: 7,
            spool: Vec::new(),
            sync: SyncStatus {
                url: Some("git://fleet.example.com/fleet.git".into()),
                last_success: Some(entry(1_800_000_000, "up-to-date")),
                last_error: Some(entry(1_800_000_100, "refused")),
            },
            storage: Storage {
                database_bytes: 4096,
                objects_bytes: 8192,
                packs: 2,
                cached_bundles: 3,
                cached_bundle_bytes: 1000,
                bundle_cache_warning: Some("over".into()),
                ..Storage::default()
            },
        }
    }

    fn entry(at: u64, outcome: &str) -> SyncEntry {
        SyncEntry {
            at: String::new(),
            at_unix: at,
            outcome: outcome.into(),
            tip: None,
            bytes: 0,
            duration_ms: 0,
            error: None,
        }
    }

    /// Every sample line of the text, as (name with labels, value).
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn renders_the_exposition_format() {
        let text = render(&status(), 1_800_000_160);
        let got = samples(&text);
        let want = [
            (
                r#"outpost_deployed_info{commit="abc\"def",kind="apply"}"#,
                1.0,
            ),
            ("outpost_last_apply_success", 0.0),
            ("outpost_last_apply_timestamp_seconds", 1_800_000_000.0),
            ("outpost_last_apply_duration_seconds", 3.0),
            ("outpost_drifted_paths", 3.0),
            ("outpost_bad_commits", 1.0),
            ("outpost_spool_pending", 0.0),
            ("outpost_rejected_bundles_total", 7.0),
            (
                "outpost_last_sync_success_timestamp_seconds",
                1_800_000_000.0,
            ),
            ("outpost_upstream_contact_age_seconds", 60.0),
            ("outpost_state_database_bytes", 4096.0),
            ("outpost_state_objects_bytes", 8192.0),
            ("outpost_state_packs", 2.0),
            ("outpost_cached_bundles", 3.0),
            ("outpost_cached_bundle_bytes", 1000.0),
            ("outpost_bundle_cache_over_budget", 1.0),
        ];
        let want: Vec<(String, f64)> = want.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect();
        assert_eq!(got, want);
        // Every sample has its HELP and TYPE lines, once.
        for (name, _) in &got {
            let bare = name.split('{').next().unwrap_or_default();
            assert_eq!(
                text.matches(&format!("# TYPE {bare} ")).count(),
                1,
                "{bare}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {bare} ")).count(),
                1,
                "{bare}"
            );
        }
    }
}
