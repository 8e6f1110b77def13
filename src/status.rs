//! What `outpost status` reports: read-only, works while another outpost holds the lock.
//!
//! The serde shape is a contract for scripts: `trusted` (`commit`, `signer`, `time`) or null,
//! `deployed` or null, `bundles` (`sha256`, `size`, `source`, `received`, `verdict`) and
//! `rejected` (`source`, `reason`, `at`), `sync` (`url`, `last_success`, `last_error`, each
//! with `at`, `outcome`, `tip`, `bytes`, `duration_ms`, `error`), `bad` (commits marked bad:
//! `commit`, `check`, `output`, `reason`, `at`) and `units` (each declared unit: `name`,
//! `active`, `enabled`, `drifted`, `state`) and `storage` (what the state dir takes: see
//! [`Storage`]). Times are RFC 3339 in UTC.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::intake::short;
use crate::store::{self, Store, StoreError};
use crate::text::Escaped;

/// How many refusals `status` lists.
pub const REJECTED_SHOWN: usize = 50;

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub state_dir: PathBuf,
    pub trusted: Option<Trusted>,
    /// The newest successful deployment; null until one is applied.
    pub deployed: Option<Deployed>,
    /// The newest deployment when it did not succeed (failed or interrupted).
    pub last_failure: Option<Failure>,
    /// What `outpost plan` would change now; null until a deployment is applied.
    pub drift: Option<Drift>,
    pub bundles: Vec<Bundle>,
    pub rejected: Vec<Rejected>,
    /// The newest deployment, whatever its result.
    pub last_deployment: Option<LastDeployment>,
    /// Commits marked bad (rolled back from).
    pub bad_commits: u64,
    /// The newest commits marked bad, with the check that failed and its output.
    pub bad: Vec<Bad>,
    /// The units the deployed manifest declares, as systemd has them now.
    pub units: Vec<UnitStatus>,
    /// Why the units' state could not be read, if it could not.
    pub units_error: Option<String>,
    /// Refusals of bundles in all, repeats counted.
    pub rejected_total: u64,
    /// Bundles in the spool directory not taken yet, and what each waits for.
    pub spool: Vec<crate::intake::spool::Pending>,
    /// Upstream sync: the configured URL and the newest successful and failed attempts.
    pub sync: SyncStatus,
    /// What the state dir takes on disk.
    pub storage: Storage,
}

/// The size of the state dir's parts, bytes and counts.
#[derive(Debug, Default, Serialize)]
pub struct Storage {
    /// `outpost.db` with its write-ahead log.
    pub database_bytes: u64,
    /// Everything under `objects/`.
    pub objects_bytes: u64,
    /// Packs in `objects/pack` (`outpost gc` makes them one).
    pub packs: u64,
    /// Loose objects (outpost writes none; `outpost gc` packs them).
    pub loose_objects: u64,
    /// Signed bundles kept in the database for `export`.
    pub cached_bundles: u64,
    pub cached_bundle_bytes: u64,
    /// `state.bundle_cache`.
    pub bundle_cache_budget: u64,
    /// Bytes of the cached bundles export needs: the newest full bundle and those after it.
    pub bundle_cache_needed: u64,
    /// Said when the bundles export needs do not fit `state.bundle_cache`.
    pub bundle_cache_warning: Option<String>,
    /// Deployments `history` keeps, and recorded in all (compacted ones counted).
    pub deployments: u64,
    pub deployments_total: u64,
    pub events: u64,
    pub events_total: u64,
}

/// Measures the state dir without writing anything.
pub fn storage(config: &Config, store: Option<&Store>) -> Result<Storage, StoreError> {
    let dir = &config.state.dir;
    let objects = dir.join("objects");
    let mut out = Storage {
        database_bytes: crate::gc::database_bytes(dir),
        bundle_cache_budget: config.state.bundle_cache.as_u64(),
        ..Storage::default()
    };
    let mut stack = vec![objects.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            out.objects_bytes += meta.len();
            let parent = d.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if d.parent() == Some(objects.join("objects").as_path())
                && parent.len() == 2
                && parent.bytes().all(|b| b.is_ascii_hexdigit())
            {
                out.loose_objects += 1;
            }
        }
    }
    out.packs =
        crate::repo::repack::packs(&objects.join("objects/pack")).map_or(0, |p| p.len() as u64);
    if let Some(store) = store {
        let cache = store.cache_use()?;
        out.cached_bundles = cache.bundles;
        out.cached_bundle_bytes = cache.bytes;
        out.bundle_cache_needed = cache.needed;
        out.bundle_cache_warning = cache_warning(cache.needed, out.bundle_cache_budget);
        let counts = store.history_counts()?;
        out.deployments = counts.deployments;
        out.deployments_total = counts.deployments_total;
        out.events = counts.events;
        out.events_total = counts.events_total;
    }
    Ok(out)
}

/// What to say when the bundles export needs take more than the budget.
pub fn cache_warning(needed: u64, budget: u64) -> Option<String> {
    let size = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
    (needed > budget).then(|| {
        format!(
            "the newest full bundle and the incremental bundles after it take {}, more than state.bundle_cache ({}); they are kept so export can bring an empty host up, raise the budget or import a newer full bundle",
            size(needed),
            size(budget)
        )
    })
}

#[derive(Debug, Serialize)]
pub struct LastDeployment {
    pub commit: String,
    pub kind: String,
    pub result: String,
    pub started_at: String,
    /// Unix seconds, for scripts and metrics.
    pub started_unix: u64,
    /// How long it took; null while it runs or when it was interrupted.
    pub duration_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct SyncStatus {
    pub url: Option<String>,
    /// The newest attempt that was accepted or found the host up to date.
    pub last_success: Option<SyncEntry>,
    /// The newest attempt that was refused or failed.
    pub last_error: Option<SyncEntry>,
}

#[derive(Debug, Serialize)]
pub struct SyncEntry {
    pub at: String,
    /// `at` in Unix seconds, for metrics.
    #[serde(skip)]
    pub at_unix: u64,
    /// `accepted`, `up-to-date`, `refused` or `failed`.
    pub outcome: String,
    pub tip: Option<String>,
    pub bytes: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl From<store::SyncAttempt> for SyncEntry {
    fn from(a: store::SyncAttempt) -> Self {
        Self {
            at: rfc3339(a.at),
            at_unix: a.at,
            outcome: a.outcome,
            tip: a.tip,
            bytes: a.bytes,
            duration_ms: a.duration_ms,
            error: a.error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Trusted {
    pub commit: String,
    pub signer: String,
    pub fingerprint: String,
    /// Committer time of the trusted commit, when known.
    pub time: Option<String>,
    /// The time floor: newest accepted committer time.
    pub floor: String,
    pub accepted_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Deployed {
    pub commit: String,
    pub signer: Option<String>,
    pub applied_at: Option<String>,
    pub result: String,
    pub kind: String,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub commit: String,
    pub result: String,
    pub error: Option<String>,
    pub at: String,
}

/// Drift of the host from the deployed state, or why it could not be checked.
#[derive(Debug, Serialize)]
pub struct Drift {
    pub drifted: bool,
    pub create: usize,
    pub change: usize,
    pub remove: usize,
    /// Unit steps (enable, start, restart, ...) apply would take.
    pub units: usize,
    pub error: Option<String>,
}

/// A commit marked bad: `apply` does not deploy it until a newer commit is trusted.
#[derive(Debug, Serialize)]
pub struct Bad {
    pub commit: String,
    /// The health check or unit that failed; null when a manual rollback marked it.
    pub check: Option<String>,
    /// The end of that check's output (at most 4 KiB).
    pub output: Option<String>,
    pub reason: String,
    pub at: String,
}

/// A declared unit as systemd has it now.
#[derive(Debug, Serialize)]
pub struct UnitStatus {
    pub name: String,
    pub active: bool,
    pub enabled: bool,
    /// Not as the manifest declares it: the next apply repairs it.
    pub drifted: bool,
    /// `active (running)`, `failed (exit-code)`, `not found`, ...
    pub state: String,
    /// systemd's `UnitFileState`.
    pub file_state: String,
}

/// How many bad commits `status` lists.
pub const BAD_SHOWN: usize = 20;

#[derive(Debug, Serialize)]
pub struct Bundle {
    pub sha256: String,
    pub size: u64,
    pub source: String,
    pub received: String,
    pub verdict: String,
    pub signer: Option<String>,
    pub tip: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub source: String,
    pub sha256: Option<String>,
    pub reason: String,
    /// When the file was first refused.
    pub at: String,
    /// How many times the same file was refused for the same reason.
    pub count: u64,
    /// When it was last refused.
    pub last_at: String,
}

/// `1 step`, `2 steps`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

use crate::text::rfc3339_u as rfc3339;

/// Gathers the status without writing anything.
pub fn gather(config: &Config) -> Result<Status, StoreError> {
    let dir = &config.state.dir;
    let store = Store::open_read_only(dir)?;
    let mark = match &store {
        Some(s) => s.high_water()?,
        None => store::floor::read(dir)?,
    };
    let trusted = match mark {
        Some(m) => {
            let time = match &store {
                Some(s) => s.commit_time(&m.commit)?,
                None => None,
            };
            Some(Trusted {
                time: time.map(rfc3339),
                floor: rfc3339(m.floor),
                accepted_at: (m.accepted_at > 0).then(|| rfc3339(m.accepted_at)),
                commit: m.commit,
                signer: m.signer,
                fingerprint: m.fingerprint,
            })
        }
        None => None,
    };
    let (bundles, rejected) = match &store {
        Some(s) => (s.cached_bundles()?, s.rejections(REJECTED_SHOWN)?),
        None => (Vec::new(), Vec::new()),
    };
    let (deployed, last_failure) = match &store {
        Some(s) => deployments(s)?,
        None => (None, None),
    };
    let last_deployment = match &store {
        Some(s) => s.deployments(1)?.pop().map(|d| LastDeployment {
            started_at: rfc3339(d.started),
            started_unix: d.started,
            duration_seconds: d.finished.map(|f| f.saturating_sub(d.started)),
            commit: d.commit,
            kind: d.kind,
            result: d.result,
        }),
        None => None,
    };
    let (bad_commits, rejected_total) = match &store {
        Some(s) => s.counts()?,
        None => (0, 0),
    };
    let drift = deployed.as_ref().map(|_| drift(config));
    let bad = match &store {
        Some(s) => s
            .bad_commits(BAD_SHOWN)?
            .into_iter()
            .map(|b| Bad {
                commit: b.commit,
                check: b.mark.check,
                output: b.mark.output,
                reason: b.mark.reason,
                at: rfc3339(b.at),
            })
            .collect(),
        None => Vec::new(),
    };
    let (units, units_error) = match &store {
        Some(s) => units(config, s)?,
        None => (Vec::new(), None),
    };
    let storage = storage(config, store.as_ref())?;
    let sync = SyncStatus {
        url: config.source.url.clone(),
        last_success: match &store {
            Some(s) => s.last_sync_success()?.map(SyncEntry::from),
            None => None,
        },
        last_error: match &store {
            Some(s) => s.last_sync_error()?.map(SyncEntry::from),
            None => None,
        },
    };
    Ok(Status {
        host: config.host_name().to_owned(),
        state_dir: dir.clone(),
        trusted,
        deployed,
        last_failure,
        drift,
        bundles: bundles
            .into_iter()
            .map(|b| Bundle {
                sha256: b.sha256,
                size: b.size,
                source: b.source,
                received: rfc3339(b.received),
                verdict: b.verdict,
                signer: b.signer,
                tip: b.tip,
            })
            .collect(),
        rejected: rejected
            .into_iter()
            .map(|r| Rejected {
                source: r.source,
                sha256: r.sha256,
                reason: r.reason,
                at: rfc3339(r.at),
                count: r.count,
                last_at: rfc3339(r.last_seen),
            })
            .collect(),
        last_deployment,
        bad_commits,
        bad,
        units,
        units_error,
        rejected_total,
        spool: crate::intake::spool::pending(&config.spool_dir()),
        sync,
        storage,
    })
}

fn deployments(store: &Store) -> Result<(Option<Deployed>, Option<Failure>), StoreError> {
    let deployed = store.deployed()?.map(|d| Deployed {
        applied_at: d.finished.map(rfc3339),
        commit: d.commit,
        signer: d.signer,
        result: d.result,
        kind: d.kind,
    });
    let failure = store
        .deployments(1)?
        .into_iter()
        .find(|d| d.result != "success")
        .map(|d| Failure {
            at: rfc3339(d.finished.unwrap_or(d.started)),
            commit: d.commit,
            result: d.result,
            error: d.error,
        });
    Ok((deployed, failure))
}

/// The declared units of the deployment the inventory describes, as systemd has them: one
/// query.
fn units(config: &Config, store: &Store) -> Result<(Vec<UnitStatus>, Option<String>), StoreError> {
    let Some(json) = store.inventory_meta()?.and_then(|m| m.services) else {
        return Ok((Vec::new(), None));
    };
    let Ok(kept) = serde_json::from_str::<crate::apply::services::Kept>(&json) else {
        return Ok((Vec::new(), None));
    };
    let declared = kept.units();
    if declared.is_empty() {
        return Ok((Vec::new(), None));
    }
    let names: Vec<String> = declared.iter().map(|u| u.name.clone()).collect();
    let mut backend = crate::apply::services::Backend::new(config);
    let states = match backend.states(&names) {
        Ok(states) => states,
        Err(e) => return Ok((Vec::new(), Some(e.to_string()))),
    };
    let out = declared
        .iter()
        .map(|unit| {
            let state = crate::units::state_of(&states, &unit.name);
            let lookup = |_: &str| state.clone();
            let steps = crate::plan::units::after_files(
                std::slice::from_ref(unit),
                &lookup,
                &std::collections::BTreeMap::new(),
                &std::collections::BTreeSet::new(),
            );
            UnitStatus {
                name: unit.name.clone(),
                active: state.is_active(),
                enabled: state.is_enabled(),
                drifted: !steps.is_empty(),
                state: state.describe(),
                file_state: state.file_state.clone(),
            }
        })
        .collect();
    Ok((out, None))
}

/// Plans read-only against the host to tell whether it drifted.
fn drift(config: &Config) -> Drift {
    match crate::apply::plan(config) {
        Ok((planned, _)) => {
            let stat = planned.plan.stat();
            Drift {
                drifted: !planned.plan.is_empty(),
                create: stat.create,
                change: stat.change,
                remove: stat.remove,
                units: planned.plan.units.len(),
                error: None,
            }
        }
        Err(e) => Drift {
            drifted: false,
            create: 0,
            change: 0,
            remove: 0,
            units: 0,
            error: Some(e.to_string()),
        },
    }
}

/// A deployment with the drift repairs, prunes and restores it made.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub deployment: crate::store::Deployment,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub events: Vec<HistoryEvent>,
}

#[derive(Debug, Serialize)]
pub struct HistoryEvent {
    pub kind: String,
    pub path: String,
    pub message: String,
}

/// The newest `limit` deployments, newest first.
pub fn history(config: &Config, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
    let Some(store) = Store::open_read_only(&config.state.dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for d in store.deployments(limit)? {
        let events = store
            .deployment_events(d.id)?
            .into_iter()
            .map(|(kind, path, message)| HistoryEvent {
                kind,
                path,
                message,
            })
            .collect();
        out.push(HistoryEntry {
            started_at: rfc3339(d.started),
            finished_at: d.finished.map(rfc3339),
            deployment: d,
            events,
        });
    }
    Ok(out)
}

impl fmt::Display for HistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.deployment;
        let signer = Escaped(d.signer.as_deref().unwrap_or("unknown signer"));
        write!(
            f,
            "#{:<4} {}  {:<8} {:<11} {}  {signer}  {}",
            d.id,
            self.started_at,
            d.kind,
            d.result,
            short(&d.commit),
            count(d.steps, "step")
        )?;
        if d.repairs > 0 {
            write!(f, ", {}", count(d.repairs, "drift repair"))?;
        }
        writeln!(f)?;
        if let Some(error) = &d.error {
            writeln!(f, "      error: {}", Escaped(error))?;
        }
        for e in &self.events {
            match e.kind.as_str() {
                // The deployment chain reads best as a sentence.
                "rolled-back" | "resumed" => writeln!(f, "      {}", Escaped(&e.message))?,
                // The first line names the check and why; the output follows in the event.
                "health-failed" => writeln!(
                    f,
                    "      {}",
                    Escaped(e.message.lines().next().unwrap_or_default())
                )?,
                _ => writeln!(f, "      {}: {}", Escaped(&e.kind), Escaped(&e.path))?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A commit that failed its health gate is what an operator must see first.
        for b in &self.bad {
            writeln!(
                f,
                "BAD       {} marked {}: {}",
                b.commit,
                b.at,
                Escaped(&b.reason)
            )?;
            if let Some(output) = b.output.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
                for line in output.lines() {
                    writeln!(f, "          | {}", Escaped(line))?;
                }
            }
            writeln!(
                f,
                "          not deployed again until a newer commit is trusted"
            )?;
        }
        writeln!(
            f,
            "host      {} (state {})",
            Escaped(&self.host),
            crate::text::path(&self.state_dir)
        )?;
        match &self.trusted {
            Some(t) => {
                writeln!(f, "trusted   {}", t.commit)?;
                let fingerprint = if t.fingerprint.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.fingerprint)
                };
                writeln!(f, "          signed by {}{fingerprint}", Escaped(&t.signer))?;
                if let Some(time) = &t.time {
                    writeln!(f, "          committed {time}")?;
                }
                writeln!(f, "          time floor {}", t.floor)?;
            }
            None => writeln!(
                f,
                "trusted   nothing yet; import a signed bundle with `outpost import FILE`"
            )?,
        }
        match &self.deployed {
            Some(d) => {
                let at = d.applied_at.as_deref().unwrap_or("-");
                writeln!(f, "deployed  {} ({}, {at})", d.commit, d.kind)?;
            }
            None => writeln!(f, "deployed  nothing yet; run `outpost apply`")?,
        }
        if let Some(fail) = &self.last_failure {
            let error = Escaped(fail.error.as_deref().unwrap_or(""));
            writeln!(
                f,
                "          last deployment {} of {} at {}: {error}",
                fail.result,
                short(&fail.commit),
                fail.at
            )?;
        }
        match &self.drift {
            Some(Drift { error: Some(e), .. }) => {
                writeln!(f, "drift     unknown: {}", Escaped(e))?;
            }
            Some(d) if d.drifted => writeln!(
                f,
                "drift     {} to create, {} to change, {} to remove, {}; `outpost plan` shows them",
                d.create,
                d.change,
                d.remove,
                count(d.units as u64, "unit step")
            )?,
            Some(_) => writeln!(f, "drift     none")?,
            None => {}
        }
        if let Some(e) = &self.units_error {
            writeln!(f, "units     unknown: {}", Escaped(e))?;
        }
        for (i, u) in self.units.iter().enumerate() {
            let label = if i == 0 { "units" } else { "" };
            let drifted = if u.drifted { "  DRIFTED" } else { "" };
            writeln!(
                f,
                "{label:<9} {}  {}, {}{drifted}",
                Escaped(&u.name),
                Escaped(&u.state),
                Escaped(if u.file_state.is_empty() {
                    "-"
                } else {
                    &u.file_state
                })
            )?;
        }
        self.sync.fmt(f)?;
        let total: u64 = self.bundles.iter().map(|b| b.size).sum();
        writeln!(
            f,
            "bundles   {} cached, {}",
            self.bundles.len(),
            bytesize::ByteSize(total).display().iec()
        )?;
        for b in &self.bundles {
            let tip = b.tip.as_deref().map(short).unwrap_or("-");
            writeln!(
                f,
                "          {}  {}  {:>10}  tip {tip}  {}",
                b.received,
                short(&b.sha256),
                bytesize::ByteSize(b.size).display().iec().to_string(),
                Escaped(&b.source)
            )?;
        }
        if !self.spool.is_empty() {
            writeln!(f, "spool     {} waiting", self.spool.len())?;
            for p in &self.spool {
                writeln!(
                    f,
                    "          {}  waiting for {}",
                    crate::text::path(&p.file),
                    p.waiting_for
                )?;
            }
        }
        self.storage.fmt(f)?;
        writeln!(f, "rejected  {}", self.rejected.len())?;
        for r in &self.rejected {
            let times = if r.count > 1 {
                format!(" ({} times, last {})", r.count, r.last_at)
            } else {
                String::new()
            };
            writeln!(f, "          {}  {}{times}", r.at, Escaped(&r.source))?;
            writeln!(f, "            {}", Escaped(&r.reason))?;
        }
        Ok(())
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
        writeln!(
            f,
            "storage   database {}, objects {} in {}{}",
            size(self.database_bytes),
            size(self.objects_bytes),
            count(self.packs, "pack"),
            if self.loose_objects > 0 {
                format!(" and {}", count(self.loose_objects, "loose object"))
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "          bundle cache {} of {} (state.bundle_cache)",
            size(self.cached_bundle_bytes),
            size(self.bundle_cache_budget)
        )?;
        if let Some(warning) = &self.bundle_cache_warning {
            writeln!(f, "          WARNING {warning}")?;
        }
        writeln!(
            f,
            "          history {} of {} kept, {} of {}",
            self.deployments,
            count(self.deployments_total, "deployment"),
            self.events,
            count(self.events_total, "event")
        )
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.url {
            Some(url) => writeln!(f, "upstream  {}", Escaped(url))?,
            None => writeln!(f, "upstream  none; bundle-only (set source.url to sync)")?,
        }
        let line = |e: &SyncEntry| {
            let tip = e.tip.as_deref().map(short).unwrap_or("-");
            let mut text = format!(
                "{} {}, tip {tip}, {}",
                e.at,
                e.outcome,
                count(e.bytes, "byte")
            );
            if let Some(error) = &e.error {
                text.push_str(&format!(": {}", Escaped(error)));
            }
            text
        };
        if let Some(e) = &self.last_success {
            writeln!(f, "          last success {}", line(e))?;
        }
        if let Some(e) = &self.last_error {
            writeln!(f, "          last error   {}", line(e))?;
        }
        if self.url.is_some() && self.last_success.is_none() && self.last_error.is_none() {
            writeln!(f, "          not synced yet; `outpost sync` fetches now")?;
        }
        Ok(())
    }
}
