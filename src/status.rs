//! What `outpost status` reports: read-only, works while another outpost holds the lock.
//!
//! The serde shape is a contract for scripts: `trusted` (`commit`, `signer`, `time`) or null,
//! `deployed` or null, `bundles` (`sha256`, `size`, `source`, `received`, `verdict`) and
//! `rejected` (`source`, `reason`, `at`). Times are RFC 3339 in UTC.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;
use crate::intake::short;
use crate::store::{self, Store, StoreError};

/// How many refusals `status` lists.
pub const REJECTED_SHOWN: usize = 50;

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub state_dir: PathBuf,
    pub trusted: Option<Trusted>,
    /// The deployed commit; null until a deployment is applied.
    pub deployed: Option<serde_json::Value>,
    pub bundles: Vec<Bundle>,
    pub rejected: Vec<Rejected>,
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
    pub at: String,
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

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
    Ok(Status {
        host: config.host_name().to_owned(),
        state_dir: dir.clone(),
        trusted,
        deployed: None,
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
            })
            .collect(),
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "host      {} (state {})",
            self.host,
            self.state_dir.display()
        )?;
        match &self.trusted {
            Some(t) => {
                writeln!(f, "trusted   {}", t.commit)?;
                let fingerprint = if t.fingerprint.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.fingerprint)
                };
                writeln!(f, "          signed by {}{fingerprint}", t.signer)?;
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
        writeln!(f, "deployed  nothing yet")?;
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
                &b.sha256[..12.min(b.sha256.len())],
                bytesize::ByteSize(b.size).display().iec().to_string(),
                b.source
            )?;
        }
        writeln!(f, "rejected  {}", self.rejected.len())?;
        for r in &self.rejected {
            writeln!(f, "          {}  {}", r.at, r.source)?;
            writeln!(f, "            {}", r.reason)?;
        }
        Ok(())
    }
}
