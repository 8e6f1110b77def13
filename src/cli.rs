//! The command line: parses arguments, runs a command, prints for humans or `--json`, and maps
//! failures to exit codes (0 success, 1 failed or refused, 2 usage or configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

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
    },
    /// Check whether a bundle would be accepted, changing nothing
    Verify {
        #[arg(value_name = "PATH")]
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show the trusted commit, cached and rejected bundles
    Status {
        #[arg(long)]
        json: bool,
    },
}

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
            IntakeError::Store(StoreError::Newer { .. }) => Failure::Usage(e.into()),
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
            eprintln!("outpost: error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("outpost: error: {e:#}");
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
    let config = load_config(&cli.config)?;
    match &cli.command {
        Command::Import { paths, json } => {
            let policy = load_policy(&config)?;
            let files = intake::collect(paths)?;
            if files.is_empty() {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                eprintln!("outpost: no *.bundle files in {}", list.join(", "));
                return Ok(ExitCode::SUCCESS);
            }
            let reports = intake::import(&config, &policy, &files)?;
            for report in &reports {
                print_report(report, *json)?;
            }
            Ok(exit_for(reports.iter().any(|r| r.outcome.is_refused())))
        }
        Command::Verify { path, json } => {
            let policy = load_policy(&config)?;
            let report = intake::verify(&config, &policy, path)?;
            print_report(&report, *json)?;
            Ok(exit_for(report.outcome.is_refused()))
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
