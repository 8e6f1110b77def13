//! The command line: parses arguments, runs a command, prints for humans or `--json`, and maps
//! failures to exit codes (0 success, 1 failed or refused, 2 usage or configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::apply::{self, ApplyError, Goal};
use crate::config::{self, Config};
use crate::intake::{self, IntakeError};
use crate::status;
use crate::store::StoreError;
use crate::trust::TrustPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "outpost",
    version,
    about = "Keeps this host at the state of a signed Git repository, online or not"
)]
struct Cli {
    /// Config file
    #[arg(long, global = true, env = "OUTPOST_CONFIG", default_value = config::DEFAULT_PATH, value_name = "FILE")]
    config: PathBuf,
    /// More log output on stderr (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Fail at once when another outpost process holds the state lock, instead of waiting
    #[arg(long, global = true)]
    no_wait: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import signed bundle files, or directories holding them (a mounted stick)
    Import {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// One JSON object per bundle on stdout
        #[arg(long)]
        json: bool,
        /// Then write this host's report into each directory's outpost/reports/
        #[arg(long)]
        report: bool,
    },
    /// Take a plugged stick: mount it read-only, import its bundles, write the report, unmount
    Usb {
        #[arg(value_name = "DEVICE")]
        device: PathBuf,
        /// Apply a newly trusted commit at once (when no daemon runs to do it)
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the cached signed bundles another host needs into DIR/outpost/, for relaying
    Export {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Only what a host that has this commit lacks
        #[arg(long, value_name = "COMMIT")]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check whether a bundle would be accepted, changing nothing
    Verify {
        #[arg(value_name = "PATH")]
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Fetch the tracked branch from source.url now; exit 1 when refused or failed
    Sync {
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show the trusted and deployed commits, drift, cached and rejected bundles
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show what apply would change, as a diff; exit 1 when the host has drifted
    Plan {
        /// Only count what would be created, changed and removed
        #[arg(long)]
        stat: bool,
    },
    /// Make the host match the newest trusted commit
    Apply,
    /// Go back to the previous good deployment (the commit left is marked bad)
    Rollback,
    /// Run the agent: follow the spool, repair drift on a timer (under systemd: Type=notify)
    Daemon,
    /// Consolidate the object store into one pack, trim the bundle cache, compact the history
    Gc {
        #[arg(long)]
        json: bool,
    },
    /// List deployments and the drift repairs they made
    History {
        #[arg(long)]
        json: bool,
        /// How many deployments to list
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Test hook: abort `apply` after this many steps (or `barrier`: right after the first
/// durability barrier), to prove crash safety.
const FAULT_ENV: &str = "OUTPOST_FAULT_AFTER_STEPS";
/// Test hook: abort the automatic rollback after a failed health gate after this many steps.
const ROLLBACK_FAULT_ENV: &str = "OUTPOST_FAULT_ROLLBACK_AFTER_STEPS";

/// A failed command and the exit code it earns.
enum Failure {
    /// Usage or configuration: exit 2.
    Usage(anyhow::Error),
    /// The operation failed: exit 1.
    Failed(anyhow::Error),
}

impl From<IntakeError> for Failure {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Store(StoreError::Newer { .. }) | IntakeError::NoUpstream => {
                Failure::Usage(e.into())
            }
            e => Failure::Failed(e.into()),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose);
    match run(&cli) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            // A config parse error spans lines (the source line and a caret): keep them.
            let text = format!("{e:#}");
            let lines: Vec<_> = text.lines().map(crate::text::escape).collect();
            eprintln!("outpost: error: {}", lines.join("\n"));
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("outpost: error: {}", crate::text::escape(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::Usage(e.into()))
}

fn load_policy(config: &Config) -> Result<TrustPolicy, Failure> {
    TrustPolicy::load(
        &config.trust.allowed_signers,
        config.trust.revoked_keys.as_deref(),
    )
    .map_err(|e| Failure::Usage(e.into()))
}

fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    if cli.no_wait {
        crate::lock::never_wait();
    }
    let config = load_config(&cli.config)?;
    // A process killed inside a write in rollback-journal mode (switching the journal mode at
    // open or at close) leaves a hot journal only a writer may roll back; every reader,
    // `check_mirror` first, would refuse the database until one does.
    let reads_only = matches!(
        cli.command,
        Command::Status { .. }
            | Command::Plan { .. }
            | Command::Verify { .. }
            | Command::History { .. }
            | Command::Export { .. }
    );
    if !reads_only {
        crate::store::roll_back_hot_journal(&config.state.dir)
            .map_err(|e| Failure::Failed(e.into()))?;
    }
    // Before any command trusts the high-water mark: a floor file ahead of the database is
    // taken only when the commit it names is signed by an allowed signer.
    intake::check_mirror(&config)?;
    match &cli.command {
        Command::Import {
            paths,
            json,
            report,
        } => {
            let policy = load_policy(&config)?;
            let files = intake::collect(paths)?;
            let reports = if files.is_empty() {
                let list: Vec<String> = paths.iter().map(|p| crate::text::path(p)).collect();
                eprintln!("outpost: no *.bundle files in {}", list.join(", "));
                Vec::new()
            } else {
                intake::import(&config, &policy, &files)?
            };
            for report in &reports {
                print_report(report, *json)?;
            }
            let mut failed = reports.iter().any(|r| r.outcome.is_refused());
            if *report {
                for dir in paths.iter().filter(|p| p.is_dir()) {
                    match crate::report::write(&config, dir) {
                        Ok(path) => {
                            eprintln!("outpost: report written to {}", crate::text::path(&path))
                        }
                        Err(e) => {
                            eprintln!(
                                "outpost: error: {}",
                                crate::text::escape(&format!("{:#}", anyhow::Error::from(e)))
                            );
                            failed = true;
                        }
                    }
                }
            }
            Ok(exit_for(failed))
        }
        Command::Usb {
            device,
            apply,
            json,
        } => {
            let policy = load_policy(&config)?;
            let plugged = intake::usb::usb(&config, &policy, device)
                .map_err(|e| Failure::Failed(e.into()))?;
            for report in &plugged.reports {
                print_report(report, *json)?;
            }
            let mut failed = plugged.reports.iter().any(|r| r.outcome.is_refused());
            match &plugged.report {
                Some(Ok(path)) => {
                    eprintln!("outpost: report written to {}", crate::text::path(path))
                }
                Some(Err(why)) => {
                    eprintln!("outpost: report not written: {}", crate::text::escape(why));
                    failed = true;
                }
                None => {}
            }
            let accepted = plugged
                .reports
                .iter()
                .any(|r| matches!(r.outcome, intake::Outcome::Accepted { .. }));
            if *apply && accepted {
                return run_apply(&config, Goal::Newest)
                    .map(|code| if failed { ExitCode::from(1) } else { code });
            }
            Ok(exit_for(failed))
        }
        Command::Export { dir, since, json } => {
            let exported = crate::export::export(&config, dir, since.as_deref())
                .map_err(|e| Failure::Failed(e.into()))?;
            if *json {
                let text = serde_json::to_string_pretty(&exported)
                    .context("cannot encode the export")
                    .map_err(Failure::Failed)?;
                say(&format!("{text}\n"));
            } else {
                for file in &exported.files {
                    say(&format!("wrote {}\n", crate::text::path(file)));
                }
                say(&format!(
                    "a host importing {} reaches {}\n",
                    crate::text::path(&exported.dir),
                    exported.tip
                ));
            }
            if let Some(note) = &exported.note {
                eprintln!("outpost: {note}");
            }
            if let Some(warning) = &exported.warning {
                eprintln!("outpost: warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { path, json } => {
            let policy = load_policy(&config)?;
            let reports = intake::verify(&config, &policy, path)?;
            if reports.is_empty() {
                eprintln!("outpost: no *.bundle files in {}", crate::text::path(path));
            }
            for report in &reports {
                print_report(report, *json)?;
            }
            Ok(exit_for(reports.iter().any(|r| r.outcome.is_refused())))
        }
        Command::Sync { json } => {
            let policy = load_policy(&config)?;
            let report = intake::sync(&config, &policy)?;
            if *json {
                let line = serde_json::to_string(&report)
                    .context("cannot encode report")
                    .map_err(Failure::Failed)?;
                say(&format!("{line}\n"));
            } else {
                say(&format!("{report}\n"));
            }
            Ok(exit_for(!report.succeeded()))
        }
        Command::Plan { stat } => run_plan(&config, *stat),
        Command::Apply => run_apply(&config, Goal::Newest),
        Command::Rollback => run_apply(&config, Goal::Rollback),
        Command::History { json, limit } => run_history(&config, *json, *limit),
        Command::Gc { json } => run_gc(&config, *json),
        Command::Daemon => {
            let policy = load_policy(&config)?;
            crate::daemon::run(&cli.config, config, policy).map_err(Failure::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let status = status::gather(&config).map_err(|e| match e {
                StoreError::Newer { .. } => Failure::Usage(e.into()),
                e => Failure::Failed(e.into()),
            })?;
            if *json {
                let text = serde_json::to_string_pretty(&status)
                    .context("cannot encode status")
                    .map_err(Failure::Failed)?;
                say(&format!("{text}\n"));
            } else {
                say(&status.to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Config-like problems (a bad manifest, nothing to plan) are usage errors for `plan`.
fn plan_failure(e: ApplyError) -> Failure {
    match e {
        ApplyError::Store(StoreError::Newer { .. })
        | ApplyError::NothingTrusted
        | ApplyError::Manifest { .. }
        | ApplyError::Plan { .. }
        | ApplyError::OriginalTooLarge { .. } => Failure::Usage(e.into()),
        e => Failure::Failed(e.into()),
    }
}

fn apply_failure(e: ApplyError) -> Failure {
    match e {
        ApplyError::Store(StoreError::Newer { .. }) => Failure::Usage(e.into()),
        e => Failure::Failed(e.into()),
    }
}

fn run_plan(config: &Config, stat: bool) -> Result<ExitCode, Failure> {
    let (planned, texts) = apply::plan(config).map_err(plan_failure)?;
    if let Some(note) = &planned.note {
        eprintln!("outpost: {note}");
    }
    let commit = planned.commit;
    if planned.plan.is_empty() {
        say(&format!("no changes: the host matches {commit}\n"));
        return Ok(ExitCode::SUCCESS);
    }
    if stat {
        say(&format!("{}\n", planned.plan.stat()));
    } else {
        say(&planned.plan.with_diffs(&texts).to_string());
    }
    Ok(ExitCode::from(1))
}

fn run_apply(config: &Config, goal: Goal) -> Result<ExitCode, Failure> {
    // "barrier": right after the first durability barrier of the file writes.
    let fault = |name: &str| {
        std::env::var(name).ok().and_then(|v| match v.as_str() {
            "barrier" => Some(apply::AT_BARRIER),
            v => v.parse().ok(),
        })
    };
    let faults = apply::Faults {
        first: fault(FAULT_ENV),
        rollback: fault(ROLLBACK_FAULT_ENV),
    };
    let applied = apply::apply(config, goal, faults).map_err(apply_failure)?;
    if let Some(resumed) = &applied.resumed {
        say_display(&resumed.plan);
        say(&format!(
            "resumed the interrupted {} of {}: {}\n",
            resumed.kind,
            resumed.commit,
            crate::status::count(resumed.steps as u64, "step")
        ));
    }
    if let Some(note) = &applied.note {
        eprintln!("outpost: {note}");
    }
    let commit = &applied.commit;
    if applied.kind == "none" {
        say(&format!("no changes: the host matches {commit}\n"));
        return Ok(ExitCode::SUCCESS);
    }
    let repairs = match applied.repairs {
        0 => String::new(),
        1 => ", 1 drifted path repaired".to_owned(),
        n => format!(", {n} drifted paths repaired"),
    };
    let verb = if goal == Goal::Rollback {
        "rolled back to"
    } else {
        "applied"
    };
    say_display(&applied.plan);
    say(&format!(
        "{verb} {commit}: {}{repairs}\n",
        crate::status::count(applied.steps as u64, "step")
    ));
    Ok(ExitCode::SUCCESS)
}

fn run_gc(config: &Config, json: bool) -> Result<ExitCode, Failure> {
    let fault = std::env::var(crate::gc::FAULT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let done = crate::gc::gc(config, fault).map_err(|e| match e {
        crate::gc::GcError::Store(StoreError::Newer { .. }) => Failure::Usage(e.into()),
        e => Failure::Failed(e.into()),
    })?;
    if json {
        let text = serde_json::to_string_pretty(&done)
            .context("cannot encode the gc report")
            .map_err(Failure::Failed)?;
        say(&format!("{text}\n"));
        return Ok(ExitCode::SUCCESS);
    }
    let size = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
    let o = &done.objects;
    say(&format!(
        "objects   {} packs, {} -> {} packs, {}; {} objects reachable from {} kept commits written{}\n",
        o.packs_before,
        size(o.bytes_before),
        o.packs_after,
        size(o.bytes_after),
        o.objects_written,
        done.kept_commits,
        if o.loose_removed > 0 {
            format!(", {} loose objects removed", o.loose_removed)
        } else {
            String::new()
        }
    ));
    let b = &done.bundle_cache;
    say(&format!(
        "bundles   {} dropped from the cache ({})\n",
        b.bundles,
        size(b.bytes)
    ));
    if let Some(needed) = b.over_budget {
        say(&format!(
            "          the bundles export needs take {}, more than state.bundle_cache ({}); they are kept\n",
            size(needed),
            size(config.state.bundle_cache.as_u64())
        ));
    }
    let h = &done.history;
    say(&format!(
        "history   {} deployments, {} events, {} bundle verdicts compacted\n",
        h.deployments, h.events, h.bundle_verdicts
    ));
    say(&format!(
        "database  {} -> {}\n",
        size(done.database_bytes_before),
        size(done.database_bytes_after)
    ));
    Ok(ExitCode::SUCCESS)
}

fn run_history(config: &Config, json: bool, limit: usize) -> Result<ExitCode, Failure> {
    let history = crate::status::history(config, limit).map_err(|e| Failure::Failed(e.into()))?;
    if json {
        let text = serde_json::to_string_pretty(&history)
            .context("cannot encode history")
            .map_err(Failure::Failed)?;
        say(&format!("{text}\n"));
    } else if history.is_empty() {
        say("no deployments yet\n");
    } else {
        for entry in &history {
            say(&entry.to_string());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &intake::Report, json: bool) -> Result<(), Failure> {
    if json {
        let line = serde_json::to_string(report)
            .context("cannot encode report")
            .map_err(Failure::Failed)?;
        say(&format!("{line}\n"));
    } else {
        say(&format!("{report}\n"));
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`outpost status | head`) is not an error.
/// Writes `shown` to stdout as it is formatted (a plan of many steps is never held as text).
fn say_display(shown: &dyn std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Err(e) = write!(out, "{shown}").and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("outpost: error: cannot write to stdout: {e}");
    }
}

fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("outpost: error: cannot write to stdout: {e}");
    }
}

fn exit_for(refused: bool) -> ExitCode {
    if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The command-line definition, for generating man pages and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
