//! Keeping `outpost.db` bounded for years: the bundle cache held to `state.bundle_cache`,
//! deployments and events beyond `state.keep_history` compacted into counts, and the space
//! given back to the filesystem (`auto_vacuum = INCREMENTAL`).
//!
//! What is never dropped: the cached bundles `export` needs (the newest full bundle and every
//! incremental one after it), the deployments `rollback` needs (the newest successful one of
//! each of the newest `state.keep_deployments` good commits), a deployment still `running`
//! (it is resumed), every deployment after the newest success (their journals say which paths
//! count as managed), and the high-water mark. Refused and replayed bundles never keep bytes,
//! only their verdict row.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError, now, to_i64, to_u64};

/// Migration 8: how many prerequisites a bundle lists (0: a full one), when its bytes were
/// dropped from the cache, the counts of compacted rows, and events found by deployment.
pub(super) const MIGRATION: &str = "ALTER TABLE bundles ADD COLUMN prerequisites INTEGER;
    ALTER TABLE bundles ADD COLUMN evicted INTEGER;
    CREATE TABLE compacted (
        what TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX events_deployment ON events(deployment_id);";

/// The database page size: SQLite's default, a flash page.
pub(super) const PAGE_SIZE: i64 = 4096;

/// Rewrites an existing database once (`VACUUM`) when it was made with another page size or
/// without `auto_vacuum = INCREMENTAL` (by an earlier outpost, with 64 KiB pages); a new file
/// is made with both. Runs before the journal mode is set: the page size can
/// only change outside WAL mode, so while another connection keeps the database in WAL mode
/// only `auto_vacuum` is switched, and the page size at a later open.
pub(super) fn reshape(conn: &Connection) -> rusqlite::Result<()> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // Set only when they differ: on an existing file each setting is a write transaction of
    // its own (four syncs in rollback-journal mode), at every open.
    if size != PAGE_SIZE || pages == 0 {
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    }
    if vacuum != 2 || pages == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    if pages == 0 {
        // A new file: the first table created takes both.
        return Ok(());
    }
    let wal = conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))? == "wal";
    if vacuum == 2 && (size == PAGE_SIZE || wal) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    conn.execute_batch("VACUUM")?;
    tracing::info!(
        elapsed = ?started.elapsed(),
        from = size,
        "database rewritten once for small pages and incremental vacuum"
    );
    Ok(())
}

/// A cached bundle as the budget sees it, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheEntry {
    pub id: i64,
    pub size: u64,
    /// It needs no prerequisites.
    pub full: bool,
}

/// Which cached bundles go to keep the cache within `budget` bytes (oldest first, never the
/// newest full bundle nor one after it), and how many bytes those that must stay take.
pub fn choose_evictions(cached: &[CacheEntry], budget: u64) -> (Vec<i64>, u64) {
    let base = cached.iter().rposition(|c| c.full).unwrap_or(cached.len());
    let needed: u64 = cached[base..].iter().map(|c| c.size).sum();
    let mut total: u64 = cached.iter().map(|c| c.size).sum();
    let mut evict = Vec::new();
    for c in &cached[..base] {
        if total <= budget {
            break;
        }
        evict.push(c.id);
        total -= c.size;
    }
    (evict, needed)
}

/// What trimming the bundle cache did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Trimmed {
    pub bundles: usize,
    pub bytes: u64,
    /// The bundles export needs alone take this many bytes, more than `state.bundle_cache`.
    pub over_budget: Option<u64>,
}

/// What compacting the history did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Compacted {
    pub deployments: u64,
    pub events: u64,
    /// Verdict rows of bundles without bytes (refused, replayed, dropped from the cache).
    pub bundle_verdicts: u64,
    pub commits: u64,
}

/// Rows kept and rows ever recorded.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistoryCounts {
    pub deployments: u64,
    pub deployments_total: u64,
    pub events: u64,
    pub events_total: u64,
}

/// The bundle cache measured against its budget.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CacheUse {
    pub bundles: u64,
    pub bytes: u64,
    /// Bytes of the bundles export needs (the newest full one and those after it).
    pub needed: u64,
}

fn tally(conn: &Connection, what: &str, count: u64) -> Result<(), StoreError> {
    if count > 0 {
        conn.execute(
            "INSERT INTO compacted (what, count) VALUES (?1, ?2)
             ON CONFLICT(what) DO UPDATE SET count = count + ?2",
            params![what, to_i64(count)],
        )?;
    }
    Ok(())
}

fn tallied(conn: &Connection, what: &str) -> Result<u64, StoreError> {
    let n: Option<i64> = conn
        .query_row("SELECT count FROM compacted WHERE what = ?1", [what], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(n.map_or(0, to_u64))
}

impl Store {
    /// The cached bundles, oldest first, each with whether it is full; a bundle recorded
    /// before outpost noted that has its header read (and, when writable, the answer kept).
    fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        let rows: Vec<(i64, i64, Option<i64>)> = {
            let mut stmt = self.conn.prepare(
                "SELECT id, coalesce(size, 0), prerequisites FROM bundles
                 WHERE verdict = 'accepted' AND evicted IS NULL ORDER BY id",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, size, prerequisites) in rows {
            let prerequisites = match prerequisites {
                Some(n) => n,
                None => {
                    let head = self.bundle_head(id)?;
                    // A header that does not parse makes a bundle no base to export from.
                    let n = crate::bundle::parse_header(&mut head.as_slice())
                        .map_or(i64::MAX, |h| to_i64(h.prerequisites.len() as u64));
                    if self.writable {
                        self.conn.execute(
                            "UPDATE bundles SET prerequisites = ?2 WHERE id = ?1",
                            params![id, n],
                        )?;
                    }
                    n
                }
            };
            out.push(CacheEntry {
                id,
                size: to_u64(size),
                full: prerequisites == 0,
            });
        }
        Ok(out)
    }

    /// The bundle cache: how many bundles, their bytes, and what export needs of them.
    pub fn cache_use(&self) -> Result<CacheUse, StoreError> {
        let entries = self.cache_entries()?;
        let (_, needed) = choose_evictions(&entries, u64::MAX);
        Ok(CacheUse {
            bundles: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
            needed,
        })
    }

    /// Drops the bytes of older cached bundles, oldest first, until the cache fits `budget`;
    /// their verdict rows stay. The file shrinks by the space freed.
    pub fn trim_bundle_cache(&self, budget: u64) -> Result<Trimmed, StoreError> {
        let entries = self.cache_entries()?;
        let (evict, needed) = choose_evictions(&entries, budget);
        let mut out = Trimmed {
            over_budget: (needed > budget).then_some(needed),
            ..Trimmed::default()
        };
        if evict.is_empty() {
            return Ok(out);
        }
        // Bundle bytes are not the host's secrets (the object store holds the same content):
        // zeroing them before freeing would only wear the flash.
        self.conn.pragma_update(None, "secure_delete", "OFF")?;
        let result = (|| {
            let tx = self.conn.unchecked_transaction()?;
            for id in &evict {
                tx.execute("DELETE FROM bundle_chunks WHERE bundle_id = ?1", [id])?;
                tx.execute(
                    "UPDATE bundles SET evicted = ?2, signature = NULL WHERE id = ?1",
                    params![id, to_i64(now())],
                )?;
            }
            super::event(
                &tx,
                "bundle-cache-trimmed",
                None,
                &format!(
                    "{} cached bundles dropped to stay within state.bundle_cache",
                    evict.len()
                ),
            )?;
            tx.commit()?;
            Ok::<_, StoreError>(())
        })();
        self.conn.pragma_update(None, "secure_delete", "ON")?;
        result?;
        out.bundles = evict.len();
        out.bytes = entries
            .iter()
            .filter(|e| evict.contains(&e.id))
            .map(|e| e.size)
            .sum();
        self.give_back_space()?;
        Ok(out)
    }

    /// The commits whose objects must stay: the trusted commit (by the database and by its
    /// mirror), the newest `keep` good commits deployed successfully, the deployed commit, and
    /// the target of a deployment a crash left running.
    pub fn kept_commits(&self, keep: usize) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self.high_water()?.map(|m| m.commit).into_iter().collect();
        out.extend(self.db_high_water()?.map(|m| m.commit));
        let mut stmt = self.conn.prepare(
            "SELECT commit_oid FROM deployments
             WHERE result = 'success' AND commit_oid NOT IN (SELECT oid FROM bad_commits)
             GROUP BY commit_oid ORDER BY max(id) DESC LIMIT ?1",
        )?;
        for oid in stmt.query_map([to_i64(keep as u64)], |r| r.get::<_, String>(0))? {
            out.push(oid?);
        }
        let mut stmt = self.conn.prepare(
            "SELECT commit_oid FROM deployments WHERE result = 'running'
             UNION SELECT commit_oid FROM (SELECT commit_oid FROM deployments
                 WHERE result = 'success' ORDER BY id DESC LIMIT 1)",
        )?;
        for oid in stmt.query_map([], |r| r.get::<_, String>(0))? {
            out.push(oid?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Compacts the history to the newest `keep_history` deployments (with their events), and
    /// as many verdict rows of bundles without bytes; what rollback, recovery and the
    /// managed-path rules need stays (see the module doc). Counts of what went are kept.
    pub fn compact_history(
        &self,
        keep_history: usize,
        keep_deployments: usize,
    ) -> Result<Compacted, StoreError> {
        let keep = to_i64(keep_history as u64);
        let tx = self.conn.unchecked_transaction()?;
        // Deployments that go: older than the newest `keep`, and needed by nothing.
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY);
             DELETE FROM doomed;",
        )?;
        tx.execute(
            "INSERT INTO doomed (id)
             SELECT id FROM deployments
             WHERE id < (SELECT coalesce(min(id), 0) FROM
                           (SELECT id FROM deployments ORDER BY id DESC LIMIT ?1))
               AND result != 'running'
               AND id < (SELECT coalesce(max(id), 0) FROM deployments WHERE result = 'success')
               AND id NOT IN (SELECT max(id) FROM deployments
                              WHERE result = 'success' AND commit_oid NOT IN (SELECT oid FROM bad_commits)
                              GROUP BY commit_oid ORDER BY max(id) DESC LIMIT ?2)",
            params![keep, to_i64(keep_deployments as u64)],
        )?;
        let events = tx.execute(
            "DELETE FROM events WHERE deployment_id IN (SELECT id FROM doomed)",
            [],
        )? as u64;
        let deployments = tx.execute(
            "DELETE FROM deployments WHERE id IN (SELECT id FROM doomed)",
            [],
        )? as u64;
        // Events of no deployment (bundles, syncs, the mark): the newest `keep` stay.
        let loose_events = tx.execute(
            "DELETE FROM events WHERE deployment_id IS NULL AND id NOT IN
                 (SELECT id FROM events WHERE deployment_id IS NULL ORDER BY id DESC LIMIT ?1)",
            [keep],
        )? as u64;
        // Verdicts of bundles without bytes: the newest `keep` stay; refusals stay counted.
        let without_bytes = "(verdict != 'accepted' OR evicted IS NOT NULL)";
        let old_verdicts = format!(
            "{without_bytes} AND id NOT IN (SELECT id FROM bundles WHERE {without_bytes}
                 ORDER BY id DESC LIMIT ?1)"
        );
        let refusals: i64 = tx.query_row(
            &format!(
                "SELECT coalesce(sum(count), 0) FROM bundles WHERE verdict = 'rejected' AND {old_verdicts}"
            ),
            [keep],
            |r| r.get(0),
        )?;
        let bundle_verdicts =
            tx.execute(&format!("DELETE FROM bundles WHERE {old_verdicts}"), [keep])? as u64;
        // Judged commits nothing refers to any more.
        let commits = tx.execute(
            "DELETE FROM commits WHERE oid NOT IN (SELECT commit_oid FROM deployments)
               AND oid NOT IN (SELECT commit_oid FROM high_water)
               AND oid NOT IN (SELECT tip FROM bundles WHERE tip IS NOT NULL)
               AND oid NOT IN (SELECT oid FROM bad_commits)
               AND oid NOT IN (SELECT tip FROM sync_attempts WHERE tip IS NOT NULL)",
            [],
        )? as u64;
        tally(&tx, "deployments", deployments)?;
        tally(&tx, "events", events + loose_events)?;
        tally(&tx, "bundle-verdicts", bundle_verdicts)?;
        tally(&tx, "refusals", to_u64(refusals))?;
        tx.execute("DELETE FROM doomed", [])?;
        tx.commit()?;
        let out = Compacted {
            deployments,
            events: events + loose_events,
            bundle_verdicts,
            commits,
        };
        if deployments + out.events + bundle_verdicts + commits > 0 {
            self.give_back_space()?;
        }
        Ok(out)
    }

    /// Whether the database needs nothing of a writer: the mirror of the high-water mark says
    /// what the database says, and the one-time switch to `auto_vacuum` was made.
    pub fn settled(&self) -> Result<bool, StoreError> {
        let db = self.db_high_water()?;
        let mirror = super::floor::read(&self.dir)?;
        let same = match (&db, &mirror) {
            (Some(d), Some(m)) => d.commit == m.commit && d.floor == m.floor,
            (None, None) => true,
            _ => false,
        };
        let vacuum: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        Ok(same && vacuum == 2)
    }

    /// Whether the history holds more than `keep` deployments, events of no deployment, or
    /// verdicts of bundles without bytes: [`Self::compact_history`] has work.
    pub fn history_outgrown(&self, keep: usize) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM deployments) > ?1
                 OR (SELECT count(*) FROM events WHERE deployment_id IS NULL) > ?1
                 OR (SELECT count(*) FROM bundles WHERE verdict != 'accepted' OR evicted IS NOT NULL) > ?1",
            [to_i64(keep as u64)],
            |r| r.get(0),
        )?)
    }

    /// Deployments and events kept, and recorded in all.
    pub fn history_counts(&self) -> Result<HistoryCounts, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            Ok(to_u64(self.conn.query_row(sql, [], |r| r.get(0))?))
        };
        let deployments = count("SELECT count(*) FROM deployments")?;
        let events = count("SELECT count(*) FROM events")?;
        Ok(HistoryCounts {
            deployments,
            deployments_total: deployments + tallied(&self.conn, "deployments")?,
            events,
            events_total: events + tallied(&self.conn, "events")?,
        })
    }

    /// Frees the pages deletes left empty and truncates the write-ahead log, so the files
    /// shrink on disk.
    pub fn give_back_space(&self) -> Result<(), StoreError> {
        // Each step of the pragma frees one page: it runs until it returns no more rows.
        let mut vacuum = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = vacuum.query([])?;
        while rows.next()?.is_some() {}
        let checkpoint = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        if !matches!(checkpoint, Ok(0)) {
            tracing::debug!(?checkpoint, "the write-ahead log was not truncated");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, size: u64, full: bool) -> CacheEntry {
        CacheEntry { id, size, full }
    }

    #[test]
    fn older_bundles_go_oldest_first_until_the_cache_fits() {
        let cached = [
            entry(1, 100, true),
            entry(2, 10, false),
            entry(3, 100, true),
            entry(4, 10, false),
            entry(5, 10, false),
        ];
        assert_eq!(choose_evictions(&cached, 1000), (vec![], 120));
        assert_eq!(choose_evictions(&cached, 200), (vec![1], 120));
        assert_eq!(choose_evictions(&cached, 120), (vec![1, 2], 120));
    }

    #[test]
    fn what_export_needs_stays_over_the_budget() {
        let cached = [
            entry(1, 100, true),
            entry(2, 10, false),
            entry(3, 10, false),
        ];
        assert_eq!(choose_evictions(&cached, 50), (vec![], 120));
        assert_eq!(choose_evictions(&cached, 0), (vec![], 120));
    }

    #[test]
    fn without_a_full_bundle_only_the_budget_counts() {
        let cached = [
            entry(1, 10, false),
            entry(2, 10, false),
            entry(3, 10, false),
        ];
        assert_eq!(choose_evictions(&cached, 15), (vec![1, 2], 0));
        assert_eq!(choose_evictions(&[], 0), (vec![], 0));
    }
}
