//! `outpost daemon`: the agent. One loop decides *when*; every step calls the same functions
//! as the CLI (`intake::import`, `apply::apply`) on a blocking thread and takes the state lock
//! for that step only, so `outpost apply`, `import` and `rollback` work beside it.
//!
//! The loop reacts to:
//! * the sync timer (with `source.url`): an upstream fetch at start, then every
//!   `source.interval` with jitter, backing off after failures ([`schedule`]); network errors
//!   only delay the next fetch, they never touch the host;
//! * the reconcile timer (`apply.interval`): drift repair, even after months offline;
//! * the spool directory: an inotify watch says when a file was closed after writing or moved
//!   in; a rescan catches the rest, every second while a file is still arriving and every
//!   minute otherwise (see [`crate::intake::spool`]); a new trusted commit is applied at once;
//! * SIGHUP: reload the config and trust policy (a broken one is reported, the old one kept);
//! * SIGTERM / SIGINT: the current step finishes, then the daemon exits 0.
//!
//! Start: recovery first (an apply cycle resumes a journalled deployment), then `READY=1`.
//! `WATCHDOG=1` is sent from the loop itself, so it stops when a step hangs; `STATUS=` carries
//! a one-line summary after each step. With `metrics.textfile` set, the Prometheus file is
//! rewritten after each step.

pub mod metrics;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::signal::unix::{SignalKind, signal};

use crate::apply::{self, Goal};
use crate::config::Config;
use crate::intake::{self, Outcome, spool::Spool};
use crate::text::escape;
use crate::trust::TrustPolicy;

/// How often the spool is rescanned besides the inotify watch while nothing waits in it.
pub const RESCAN_IDLE: Duration = Duration::from_secs(60);
/// How often while a file in it is still arriving (it becomes complete after
/// [`spool::SETTLE`](crate::intake::spool::SETTLE) unchanged).
pub const RESCAN_BUSY: Duration = Duration::from_secs(1);

/// What one step of the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Reconcile,
    Spool,
}

struct Daemon {
    config_path: PathBuf,
    config: Arc<Config>,
    policy: Arc<TrustPolicy>,
    spool: Spool,
    /// Whether the last spool scan left files waiting: rescans come sooner then.
    spool_busy: bool,
    /// The last step's one-line outcome, for `STATUS=`.
    summary: String,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config_path: &Path, config: Config, policy: TrustPolicy) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    let daemon = Daemon {
        config_path: config_path.to_owned(),
        spool: Spool::new(config.spool_dir()),
        config: Arc::new(config),
        policy: Arc::new(policy),
        spool_busy: true,
        summary: String::new(),
    };
    runtime.block_on(daemon.run())
}

impl Daemon {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        self.spool
            .create()
            .with_context(|| format!("cannot create the spool {}", self.spool.dir().display()))?;
        let (mut watch, state_watch) = watch(self.spool.dir(), &self.config.state.dir)?;

        // Recovery first: an apply cycle resumes an interrupted deployment.
        self.step(Step::Reconcile).await;
        notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(spool = %self.spool.dir().display(), "outpost daemon ready");

        let mut reconcile = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.apply.interval,
            self.config.apply.interval,
        );
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rescan = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(rescan);
        // Upstream: at once after start, then every source.interval (jittered), backing off
        // after failures.
        let sync_at = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sync_at);
        let mut sync_failures = 0u32;
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    self.reload();
                    reconcile = tokio::time::interval_at(
                        tokio::time::Instant::now() + self.config.apply.interval,
                        self.config.apply.interval,
                    );
                }
                _ = reconcile.tick() => self.step(Step::Reconcile).await,
                () = &mut sync_at, if self.config.source.url.is_some() => {
                    let reached = self.sync().await;
                    sync_failures = if reached { 0 } else { sync_failures.saturating_add(1) };
                    let wait = schedule::next_sync(
                        self.config.source.interval,
                        sync_failures,
                        schedule::random_unit(),
                    );
                    tracing::debug!(?wait, failures = sync_failures, "next upstream sync");
                    sync_at.as_mut().reset(tokio::time::Instant::now() + wait);
                }
                () = &mut rescan => {
                    self.step(Step::Spool).await;
                    let next = if self.spool_busy { RESCAN_BUSY } else { RESCAN_IDLE };
                    rescan.as_mut().reset(tokio::time::Instant::now() + next);
                }
                event = watch.next() => {
                    match event {
                        Some(Ok(event)) if event.wd == state_watch => {
                            self.state_changed(event.name.as_deref()).await;
                        }
                        Some(Ok(event)) => {
                            let whole = event.mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO);
                            if let (true, Some(name)) = (whole, event.name) {
                                self.spool.saw_closed(name);
                            }
                            self.step(Step::Spool).await;
                            if self.spool_busy {
                                rescan.as_mut().reset(tokio::time::Instant::now() + RESCAN_BUSY);
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "spool watch failed; rescans continue"),
                        None => {}
                    }
                }
                _ = watchdog_tick.tick() => {
                    if watchdog.is_some() {
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("outpost daemon stopped");
        Ok(())
    }

    /// Runs one step on a blocking thread, records its summary, and writes the metrics.
    async fn step(&mut self, step: Step) {
        let summary = match step {
            Step::Reconcile => self.reconcile().await,
            Step::Spool => match self.take_spool().await {
                Some(summary) => summary,
                None => return,
            },
        };
        self.set_summary(summary);
        self.write_metrics().await;
    }

    /// Records the last step's summary and tells systemd when it changed.
    fn set_summary(&mut self, summary: String) {
        if summary != self.summary {
            notify(&[sd_notify::NotifyState::Status(&escape(&summary))]);
            self.summary = summary;
        }
    }

    /// One upstream sync; a new trusted commit is applied at once. Whether upstream was
    /// reached and answered acceptably (accepted or up to date): failures back off.
    async fn sync(&mut self) -> bool {
        let (config, policy) = (self.config.clone(), self.policy.clone());
        let result = tokio::task::spawn_blocking(move || {
            intake::check_mirror(&config)?;
            intake::sync(&config, &policy).map_err(anyhow::Error::from)
        })
        .await;
        let (summary, reached, accepted) = match result {
            Ok(Ok(report)) => {
                tracing::info!(report = %report, "upstream sync");
                let reached = matches!(
                    report.outcome,
                    intake::SyncOutcome::Accepted { .. } | intake::SyncOutcome::UpToDate { .. }
                );
                let accepted = matches!(report.outcome, intake::SyncOutcome::Accepted { .. });
                (format!("sync: {report}"), reached, accepted)
            }
            Ok(Err(e)) => {
                let text = escape(&format!("{e:#}")).into_owned();
                tracing::warn!(error = %text, "upstream sync failed");
                (format!("sync failed: {text}"), false, false)
            }
            Err(e) => (format!("sync step panicked: {e}"), false, false),
        };
        let summary = if accepted {
            let applied = self.reconcile().await;
            format!("{summary}; {applied}")
        } else {
            summary
        };
        self.set_summary(summary);
        self.write_metrics().await;
        reached
    }

    /// A file moved into the state dir: the floor mirror is rewritten when anyone
    /// (`outpost import`, `outpost usb`) makes a commit trusted, so apply it now.
    async fn state_changed(&mut self, name: Option<&std::ffi::OsStr>) {
        if name.is_some_and(|n| n == "floor") {
            self.step(Step::Reconcile).await;
        }
    }

    /// One apply cycle to the newest trusted commit.
    async fn reconcile(&self) -> String {
        let config = self.config.clone();
        let result = tokio::task::spawn_blocking(move || {
            intake::check_mirror(&config)?;
            apply::apply(&config, Goal::Newest, apply::Faults::default())
                .map_err(anyhow::Error::from)
        })
        .await;
        match result {
            Ok(Ok(applied)) if applied.kind == "none" => {
                format!("host matches {}", intake::short(&applied.commit))
            }
            Ok(Ok(applied)) => {
                tracing::info!(commit = %applied.commit, kind = %applied.kind, steps = applied.steps, "deployed");
                format!(
                    "{} {}: {} steps",
                    applied.kind,
                    intake::short(&applied.commit),
                    applied.steps
                )
            }
            Ok(Err(e)) => {
                let text = escape(&format!("{e:#}")).into_owned();
                tracing::warn!(error = %text, "reconcile failed");
                format!("reconcile failed: {text}")
            }
            Err(e) => format!("reconcile step panicked: {e}"),
        }
    }

    /// Imports the spool's complete bundles, files them, and applies a new trusted commit at
    /// once. `None` when nothing was ready.
    async fn take_spool(&mut self) -> Option<String> {
        let max = self.config.source.max_bundle_size.as_u64();
        let (ready, pending) = self.spool.scan(Instant::now(), max);
        // A missing .sig announces itself through the watch; a file still being written may not.
        self.spool_busy = pending.iter().any(|p| p.arriving);
        if ready.is_empty() {
            return None;
        }
        let (config, policy) = (self.config.clone(), self.policy.clone());
        let result = tokio::task::spawn_blocking(move || {
            intake::check_mirror(&config)?;
            intake::import(&config, &policy, &ready).map_err(anyhow::Error::from)
        })
        .await;
        let reports = match result {
            Ok(Ok(reports)) => reports,
            Ok(Err(e)) => {
                let text = escape(&format!("{e:#}")).into_owned();
                tracing::warn!(error = %text, "spool import failed");
                return Some(format!("spool import failed: {text}"));
            }
            Err(e) => return Some(format!("spool import panicked: {e}")),
        };
        let mut accepted = false;
        for report in &reports {
            tracing::info!(report = %report, "spool bundle judged");
            accepted |= matches!(report.outcome, Outcome::Accepted { .. });
            if let Err(e) = self.spool.file(report) {
                tracing::warn!(path = %crate::text::path(&report.path), error = %e, "cannot move a judged bundle out of the spool");
            }
        }
        let refused = reports.iter().filter(|r| r.outcome.is_refused()).count();
        let taken = format!(
            "spool: {} taken, {refused} refused, {} waiting",
            reports.len(),
            pending.len()
        );
        if accepted {
            let applied = self.reconcile().await;
            return Some(format!("{taken}; {applied}"));
        }
        Some(taken)
    }

    /// Re-reads the config and the trust policy; keeps the old ones when either is broken.
    fn reload(&mut self) {
        notify(&[sd_notify::NotifyState::Reloading]);
        let loaded = Config::load(&self.config_path)
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                let policy = TrustPolicy::load(
                    &config.trust.allowed_signers,
                    config.trust.revoked_keys.as_deref(),
                )?;
                Ok((config, policy))
            });
        match loaded {
            Ok((config, policy)) => {
                if config.spool_dir() != self.spool.dir() {
                    tracing::warn!("source.spool changed: restart the daemon to watch the new one");
                }
                self.config = Arc::new(config);
                self.policy = Arc::new(policy);
                tracing::info!(config = %self.config_path.display(), "config reloaded");
            }
            Err(e) => {
                tracing::error!(
                    error = %escape(&format!("{e:#}")),
                    "the new config is broken; keeping the old one"
                );
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    async fn write_metrics(&self) {
        let Some(path) = self.config.metrics.textfile.clone() else {
            return;
        };
        let config = self.config.clone();
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let status = crate::status::gather(&config)?;
            let text = metrics::render(&status, crate::store::now());
            metrics::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %escape(&format!("{e:#}")), "metrics not written");
        }
    }
}

/// The inotify watches: on the spool, files created (a scan looks at them; a regular file is
/// complete only when closed or settled), closed after writing, or moved in; on the state dir,
/// the floor mirror moved into place (a new trusted commit, whoever imported it).
fn watch(
    spool: &Path,
    state: &Path,
) -> anyhow::Result<(inotify::EventStream<Vec<u8>>, WatchDescriptor)> {
    let inotify = Inotify::init().context("cannot start an inotify watch")?;
    inotify
        .watches()
        .add(
            spool,
            WatchMask::CREATE | WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO,
        )
        .with_context(|| format!("cannot watch {}", spool.display()))?;
    crate::store::prepare_state_dir(state)?;
    let state_watch = inotify
        .watches()
        .add(state, WatchMask::MOVED_TO)
        .with_context(|| format!("cannot watch {}", state.display()))?;
    let stream = inotify
        .into_event_stream(vec![0u8; 4096])
        .context("cannot read the inotify watch")?;
    Ok((stream, state_watch))
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`); failures only log.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
