//! The record of upstream sync: one row per attempt in `sync_attempts`, and for an accepted
//! fetch the same commit, high-water mark and event an accepted bundle gets.
//!
//! Only the newest [`KEPT`] attempts are kept: a daemon syncing every few minutes for years
//! must not grow the database without bound.

use rusqlite::{OptionalExtension, params};

use super::{CommitRecord, HighWater, Store, StoreError, bounded, floor, to_i64, to_u64};

pub(super) const MIGRATION: &str = "CREATE TABLE sync_attempts (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        url TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'up-to-date', 'refused', 'failed')),
        tip TEXT,
        bytes INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        error TEXT
    );";

/// How many attempts are kept.
pub const KEPT: i64 = 1000;

/// One fetch from upstream, as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncAttempt {
    /// When it started, Unix seconds (wall clock, for display).
    pub at: u64,
    pub url: String,
    /// `accepted`, `up-to-date`, `refused` or `failed`.
    pub outcome: String,
    /// The upstream's tip, when it was learnt.
    pub tip: Option<String>,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Why it was refused or failed.
    pub error: Option<String>,
}

impl Store {
    /// Records an attempt that changed nothing: up to date, refused or failed. A refused tip
    /// commit is recorded as such.
    pub fn record_sync(
        &self,
        attempt: &SyncAttempt,
        refused: Option<&CommitRecord>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        if let (Some(c), Some(reason)) = (refused, &attempt.error) {
            super::upsert_commit(&tx, c, "rejected", Some(bounded(reason, super::MAX_REASON)))?;
        }
        insert(&tx, attempt)?;
        tx.commit()?;
        Ok(())
    }

    /// Records an accepted fetch: the attempt, the tip commit and the new high-water mark in one
    /// transaction, then rewrites the mirror.
    pub fn record_sync_accepted(
        &self,
        attempt: &SyncAttempt,
        commit: &CommitRecord,
        mark: &HighWater,
        message: &str,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        super::upsert_commit(&tx, commit, "trusted", None)?;
        super::set_high_water(&tx, mark)?;
        super::event(
            &tx,
            "sync-accepted",
            Some(&commit.oid),
            &format!("{}: {message}", attempt.url),
        )?;
        insert(&tx, attempt)?;
        tx.commit()?;
        floor::write(&self.dir, mark)
    }

    /// The newest attempt that succeeded: accepted or up to date.
    pub fn last_sync_success(&self) -> Result<Option<SyncAttempt>, StoreError> {
        self.last_sync("outcome IN ('accepted', 'up-to-date')")
    }

    /// The newest attempt that was refused or failed.
    pub fn last_sync_error(&self) -> Result<Option<SyncAttempt>, StoreError> {
        self.last_sync("outcome IN ('refused', 'failed')")
    }

    /// The newest attempt in which the upstream answered: any but a failed one.
    pub fn last_sync_contact(&self) -> Result<Option<SyncAttempt>, StoreError> {
        self.last_sync("outcome IN ('accepted', 'up-to-date', 'refused')")
    }

    fn last_sync(&self, filter: &'static str) -> Result<Option<SyncAttempt>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT at, url, outcome, tip, bytes, duration_ms, error FROM sync_attempts
                     WHERE {filter} ORDER BY id DESC LIMIT 1"
                ),
                [],
                |r| {
                    Ok(SyncAttempt {
                        at: to_u64(r.get(0)?),
                        url: r.get(1)?,
                        outcome: r.get(2)?,
                        tip: r.get(3)?,
                        bytes: to_u64(r.get(4)?),
                        duration_ms: to_u64(r.get(5)?),
                        error: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// How many attempts are recorded.
    pub fn sync_attempts(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sync_attempts", [], |r| r.get(0))?;
        Ok(to_u64(n))
    }
}

fn insert(conn: &rusqlite::Connection, a: &SyncAttempt) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO sync_attempts (at, url, outcome, tip, bytes, duration_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            to_i64(a.at),
            bounded(&a.url, super::MAX_REASON),
            a.outcome,
            a.tip,
            to_i64(a.bytes),
            to_i64(a.duration_ms),
            a.error.as_deref().map(|e| bounded(e, super::MAX_REASON)),
        ],
    )?;
    conn.execute(
        "DELETE FROM sync_attempts WHERE id <= (SELECT max(id) FROM sync_attempts) - ?1",
        [KEPT],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &str) -> SyncAttempt {
        SyncAttempt {
            at: 5,
            url: "git://127.0.0.1/fleet.git".into(),
            outcome: outcome.into(),
            tip: None,
            bytes: 10,
            duration_ms: 3,
            error: (outcome == "failed").then(|| "connection refused".to_owned()),
        }
    }

    #[test]
    fn last_success_and_last_error_are_found() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        assert!(store.last_sync_error()?.is_none());
        store.record_sync(&attempt("up-to-date"), None)?;
        store.record_sync(&attempt("failed"), None)?;
        let error = store.last_sync_error()?.ok_or("no error")?;
        assert_eq!(error.error.as_deref(), Some("connection refused"));
        let ok = store.last_sync_success()?.ok_or("none")?;
        assert_eq!(ok.outcome, "up-to-date");
        assert_eq!(
            store.last_sync_contact()?.map(|a| a.outcome).as_deref(),
            Some("up-to-date")
        );
        Ok(())
    }

    #[test]
    fn old_attempts_are_dropped() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        for _ in 0..KEPT + 5 {
            store.record_sync(&attempt("failed"), None)?;
        }
        assert_eq!(store.sync_attempts()?, to_u64(KEPT));
        Ok(())
    }
}
