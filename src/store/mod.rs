//! `state_dir/outpost.db`: the cached bundles, judged commits, the audit trail and the
//! high-water mark (newest trusted commit and time floor), mirrored in [`floor`].
//!
//! SQLite in WAL mode with `synchronous=FULL`; the schema is versioned with
//! `rusqlite_migration` and a database written by a newer outpost is refused. Bundle bytes are
//! kept as 4 MiB chunks so a bundle of any accepted size is stored with bounded memory, as are
//! the originals of taken-over files. The
//! state dir is kept private ([`prepare_state_dir`]) and deleted content is zeroed
//! (`secure_delete`).

mod deploy;
pub mod floor;
mod retention;
mod secure;
mod sync;

pub use deploy::{
    BadCommit, BadMark, Begin, DeployEvent, Deployment, Describes, Finish, Interrupted,
    InventoryRow, JournalStep, Keep, Meta, OpenContent, Original, OriginalContent, Rows, StatCache,
};
pub use retention::{CacheUse, Compacted, HistoryCounts, Trimmed};
pub use secure::prepare_state_dir;
pub use sync::SyncAttempt;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::{M, Migrations, SchemaVersion};

const DB_FILE: &str = "outpost.db";
const CHUNK: usize = 4 << 20;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const MIGRATIONS: &[M] = &[
    M::up(
        "CREATE TABLE bundles (
        id INTEGER PRIMARY KEY,
        sha256 TEXT,
        size INTEGER,
        signature TEXT,
        signer TEXT,
        fingerprint TEXT,
        source TEXT NOT NULL,
        received INTEGER NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'replay', 'rejected')),
        reason TEXT,
        tip TEXT
    );
    CREATE INDEX bundles_sha256 ON bundles(sha256);
    CREATE TABLE bundle_chunks (
        bundle_id INTEGER NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (bundle_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE commits (
        oid TEXT PRIMARY KEY,
        signer TEXT,
        fingerprint TEXT,
        committed INTEGER,
        verdict TEXT NOT NULL,
        reason TEXT,
        seen INTEGER NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT,
        message TEXT NOT NULL
    );
    CREATE TABLE high_water (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        commit_oid TEXT NOT NULL,
        floor INTEGER NOT NULL,
        signer TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        accepted_at INTEGER NOT NULL
    );",
    ),
    M::up(deploy::MIGRATION),
    // A file refused again for the same reason is counted on its first record, not added anew.
    M::up(
        "ALTER TABLE bundles ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE bundles ADD COLUMN last_seen INTEGER;
    CREATE INDEX bundles_refusals ON bundles(source, reason) WHERE verdict = 'rejected';",
    ),
    M::up(deploy::MIGRATION_3),
    M::up(sync::MIGRATION),
    M::up(deploy::ORIGINAL_CHUNKS),
    M::up(deploy::SERVICES),
    M::up(retention::MIGRATION),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make {path} private to the user running outpost")]
    Secure {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database {} holds a transaction a killed writer left unfinished ({DB_FILE}-journal); a command that writes rolls it back: run `outpost apply`, or wait for the daemon's next step",
        crate::text::path(path)
    )]
    HotJournal { path: PathBuf },
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} was written by a newer outpost (schema {found}, this binary knows up to {supported}); upgrade outpost"
    )]
    Newer {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error(
        "database {path} is older than this outpost (schema {found} of {supported}); run a command that changes state, such as `outpost import`, to upgrade it"
    )]
    Older {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error("cannot migrate database {path}")]
    Migrate {
        path: PathBuf,
        source: rusqlite_migration::Error,
    },
    #[error(
        "database {path} failed its integrity check: {detail}; move it aside and restart (the floor file keeps rollback protection)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("database query failed")]
    Query(#[from] rusqlite::Error),
    #[error("cannot keep the original of {path}")]
    ReadOriginal {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read staged bundle {path}")]
    ReadStaged {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    ReadFloor {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is corrupt (checksum mismatch); restore it from a backup, or remove it only if you know the host's trusted commit"
    )]
    CorruptFloor { path: PathBuf },
    #[error("cannot write a cached bundle out")]
    WriteBundle { source: std::io::Error },
    #[error("cannot write {path}")]
    WriteFloor {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The newest trusted commit and the time floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighWater {
    pub commit: String,
    /// Newest accepted committer time, Unix seconds; never decreases.
    pub floor: u64,
    pub signer: String,
    pub fingerprint: String,
    /// Wall-clock time of acceptance, Unix seconds (display only).
    pub accepted_at: u64,
}

/// What is known of a bundle file when its verdict is recorded.
#[derive(Debug, Clone, Default)]
pub struct BundleRecord {
    pub source: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub signature: Option<String>,
    pub signer: Option<String>,
    pub fingerprint: Option<String>,
    pub tip: Option<String>,
    /// How many prerequisites its header lists (0: a full bundle), once the header was read.
    pub prerequisites: Option<u64>,
}

/// A cached bundle as `status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CachedBundle {
    pub sha256: String,
    pub size: u64,
    pub source: String,
    pub received: u64,
    pub verdict: String,
    pub signer: Option<String>,
    pub tip: Option<String>,
}

/// A refused bundle as `status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejection {
    pub source: String,
    pub sha256: Option<String>,
    pub reason: String,
    pub at: u64,
    pub count: u64,
    pub last_seen: u64,
}

pub struct Store {
    conn: Connection,
    dir: PathBuf,
    writable: bool,
}

/// A writer leaves the database in rollback-journal mode when it is the last connection, so
/// that the read-only commands (`status`, `plan`, `history`, `verify`) open it without
/// creating `-wal` and `-shm` files that were not there. While a writer is open (a running
/// daemon, an apply) the database is in WAL mode and readers share its files.
impl Drop for Store {
    fn drop(&mut self) {
        if self.writable {
            // Fails harmlessly (SQLITE_BUSY) while another connection is open: WAL stays.
            let _ = self
                .conn
                .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                    r.get::<_, String>(0)
                });
        }
    }
}

/// Seconds since the Unix epoch by the wall clock: for display and the audit trail only.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Rolls back the transaction a killed writer left in `outpost.db-journal`, if there is one:
/// opening the database for writing and reading from it is what makes SQLite do it.
pub fn roll_back_hot_journal(state_dir: &Path) -> Result<(), StoreError> {
    let path = state_dir.join(DB_FILE);
    if !state_dir.join(format!("{DB_FILE}-journal")).exists() {
        return Ok(());
    }
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    let conn =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(open_err)?;
    Ok(())
}

/// SQLite's page cache, in KiB (as `PRAGMA cache_size` takes it, negative): a quarter of its
/// default. The database is read and written mostly in order (the inventory by path, bundles
/// once), so a larger cache saves little, and on a small device a deployment of many files
/// needs that memory more.
const CACHE_SIZE: i64 = -512;

impl Store {
    /// Opens (creating) the database for writing: migrations, integrity check, and the
    /// high-water mark reconciled with its mirror.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        secure::prepare_state_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        secure::create_private(&path)?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)
            .map_err(open_err)?;
        // Small pages: every page a write touches is written twice (log, then database), so
        // the page size is what a small change costs the flash. Space freed by dropped bundles
        // and compacted history is given back to the filesystem (`retention`). SQLite takes
        // both at once only on a new file; an older database is rewritten once.
        retention::reshape(&conn).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // Originals given back to the host must not linger in free pages.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(open_err)?;
        quick_check(&conn, &path)?;
        // The check read every page: the cache it filled is given back (a deployment of
        // many files is planned and executed in that memory).
        let _ = conn.execute_batch("PRAGMA shrink_memory");
        let migrations = Migrations::from_slice(MIGRATIONS);
        check_version(&migrations, &conn, &path, true)?;
        migrations
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let store = Self {
            conn,
            dir: state_dir.to_owned(),
            writable: true,
        };
        store.reconcile_mirror()?;
        Ok(store)
    }

    /// Opens an existing database without writing anything; `None` when there is none yet.
    /// A hot journal a killed writer left makes this fail until [`roll_back_hot_journal`].
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = state_dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // No mutex: a connection is used by one thread (rusqlite's default too); SQLite's
        // serialized mode would lock it for every column of every row read.
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let checked = check_version(&Migrations::from_slice(MIGRATIONS), &conn, &path, false);
        if checked.is_err() && state_dir.join(format!("{DB_FILE}-journal")).exists() {
            // Only a writer may roll a hot journal back; a reader fails on the first read.
            return Err(StoreError::HotJournal { path });
        }
        checked?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)
            .map_err(open_err)?;
        Ok(Some(Self {
            conn,
            dir: state_dir.to_owned(),
            writable: false,
        }))
    }

    /// The high-water mark: the database's, or its mirror's when that one is ahead.
    pub fn high_water(&self) -> Result<Option<HighWater>, StoreError> {
        let db = self.db_high_water()?;
        let mirror = floor::read(&self.dir)?;
        Ok(newest(db, mirror))
    }

    /// The mirror's mark when it is ahead of the database's (the database was lost or
    /// restored from an older copy): evidence to check, not yet a trusted mark.
    pub fn mirror_ahead(&self) -> Result<Option<HighWater>, StoreError> {
        let db = self.db_high_water()?;
        Ok(floor::read(&self.dir)?.filter(|m| db.as_ref().is_none_or(|d| m.floor > d.floor)))
    }

    /// The trusted commit, for the stages after intake (manifest, plan, apply).
    pub fn trusted_commit(&self) -> Result<Option<crate::repo::TrustedCommit>, StoreError> {
        Ok(self
            .high_water()?
            .and_then(|m| gix::ObjectId::from_hex(m.commit.as_bytes()).ok())
            .map(crate::repo::TrustedCommit::vouched))
    }

    fn db_high_water(&self) -> Result<Option<HighWater>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT commit_oid, floor, signer, fingerprint, accepted_at FROM high_water WHERE id = 1",
                [],
                |r| {
                    Ok(HighWater {
                        commit: r.get(0)?,
                        floor: to_u64(r.get(1)?),
                        signer: r.get(2)?,
                        fingerprint: r.get(3)?,
                        accepted_at: to_u64(r.get(4)?),
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// Repairs whichever of database and mirror is behind (a crash between the two writes, or
    /// a lost database).
    fn reconcile_mirror(&self) -> Result<(), StoreError> {
        let db = self.db_high_water()?;
        let mirror = floor::read(&self.dir)?;
        match (&db, &mirror) {
            (Some(d), Some(m)) if m.floor > d.floor => self.adopt_mirror(m),
            (None, Some(m)) => self.adopt_mirror(m),
            (Some(d), m)
                if m.as_ref()
                    .is_none_or(|m| m.commit != d.commit || m.floor != d.floor) =>
            {
                floor::write(&self.dir, d)
            }
            _ => Ok(()),
        }
    }

    fn adopt_mirror(&self, mark: &HighWater) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        set_high_water(&tx, mark)?;
        event(
            &tx,
            "high-water-restored",
            Some(&mark.commit),
            &format!(
                "high-water mark restored from {}",
                floor::path(&self.dir).display()
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// An earlier accepted or replayed bundle with these exact bytes, as its verdict.
    pub fn known_bundle(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT verdict FROM bundles WHERE sha256 = ?1 AND verdict IN ('accepted', 'replay')
                 ORDER BY id LIMIT 1",
                [sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a refused bundle and, when its tip was judged, the refused commit. The same
    /// file (source, sha256) refused again for the same reason only counts up its first
    /// record, so a stick of junk read on every run does not grow the database. No signature
    /// text of a refused bundle is kept, and the reason is cut to [`MAX_REASON`] bytes.
    pub fn record_rejected(
        &self,
        bundle: &BundleRecord,
        reason: &str,
        commit: Option<&CommitRecord>,
    ) -> Result<(), StoreError> {
        let reason = bounded(reason, MAX_REASON);
        let tx = self.conn.unchecked_transaction()?;
        let again = tx.execute(
            "UPDATE bundles SET count = count + 1, last_seen = ?4
             WHERE verdict = 'rejected' AND source = ?1 AND sha256 IS ?2 AND reason = ?3",
            params![bundle.source, bundle.sha256, reason, to_i64(now())],
        )?;
        if again > 0 {
            tx.commit()?;
            return Ok(());
        }
        let bundle = BundleRecord {
            signature: None,
            ..bundle.clone()
        };
        insert_bundle(&tx, &bundle, "rejected", Some(reason))?;
        if let Some(c) = commit {
            upsert_commit(&tx, c, "rejected", Some(reason))?;
        }
        event(
            &tx,
            "bundle-rejected",
            bundle.sha256.as_deref(),
            &format!("{}: {reason}", bundle.source),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a bundle whose tip is the trusted commit or one of its ancestors.
    pub fn record_replay(&self, bundle: &BundleRecord, message: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        insert_bundle(&tx, bundle, "replay", Some(message))?;
        event(
            &tx,
            "bundle-replay",
            bundle.sha256.as_deref(),
            &format!("{}: {message}", bundle.source),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records an accepted bundle with its bytes, its tip commit and the new high-water mark in
    /// one transaction, then rewrites the mirror.
    pub fn record_accepted(
        &self,
        bundle: &BundleRecord,
        staged: &Path,
        commit: &CommitRecord,
        mark: &HighWater,
        message: &str,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let id = insert_bundle(&tx, bundle, "accepted", None)?;
        store_bytes(&tx, id, staged)?;
        upsert_commit(&tx, commit, "trusted", None)?;
        set_high_water(&tx, mark)?;
        event(
            &tx,
            "bundle-accepted",
            bundle.sha256.as_deref(),
            &format!("{}: {message}", bundle.source),
        )?;
        tx.commit()?;
        floor::write(&self.dir, mark)
    }

    /// Bundles whose bytes are cached, newest first.
    pub fn cached_bundles(&self) -> Result<Vec<CachedBundle>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT sha256, size, source, received, verdict, signer, tip FROM bundles
             WHERE verdict = 'accepted' AND evicted IS NULL ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CachedBundle {
                sha256: r.get(0)?,
                size: to_u64(r.get(1)?),
                source: r.get(2)?,
                received: to_u64(r.get(3)?),
                verdict: r.get(4)?,
                signer: r.get(5)?,
                tip: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` refusals, newest first.
    pub fn rejections(&self, limit: usize) -> Result<Vec<Rejection>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT source, sha256, reason, received, count, coalesce(last_seen, received)
             FROM bundles WHERE verdict = 'rejected'
             ORDER BY coalesce(last_seen, received) DESC, id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([to_i64(limit as u64)], |r| {
            Ok(Rejection {
                source: r.get(0)?,
                sha256: r.get(1)?,
                reason: r.get(2)?,
                at: to_u64(r.get(3)?),
                count: to_u64(r.get(4)?),
                last_seen: to_u64(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commits marked bad, newest first: `(commit, reason, when)`.
    /// Commits marked bad, newest mark first.
    pub fn bad_commits(&self, limit: usize) -> Result<Vec<deploy::BadCommit>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT oid, reason, at, check_name, output FROM bad_commits ORDER BY at DESC, oid LIMIT ?1",
        )?;
        let rows = stmt.query_map([to_i64(limit as u64)], |r| {
            Ok(deploy::BadCommit {
                commit: r.get(0)?,
                at: to_u64(r.get(2)?),
                mark: deploy::BadMark {
                    reason: r.get(1)?,
                    check: r.get(3)?,
                    output: r.get(4)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many commits are marked bad, and how many times bundles were refused in all (those
    /// whose records were compacted away included).
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let bad: i64 = self
            .conn
            .query_row("SELECT count(*) FROM bad_commits", [], |r| r.get(0))?;
        let refused: i64 = self.conn.query_row(
            "SELECT coalesce(sum(count), 0)
                 + coalesce((SELECT count FROM compacted WHERE what = 'refusals'), 0)
             FROM bundles WHERE verdict = 'rejected'",
            [],
            |r| r.get(0),
        )?;
        Ok((to_u64(bad), to_u64(refused)))
    }

    /// The committer time recorded for a judged commit.
    pub fn commit_time(&self, oid: &str) -> Result<Option<u64>, StoreError> {
        let t: Option<Option<i64>> = self
            .conn
            .query_row("SELECT committed FROM commits WHERE oid = ?1", [oid], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(t.flatten().map(to_u64))
    }

    /// Accepted bundles whose bytes are cached (not dropped for `state.bundle_cache`), oldest
    /// first, with their signatures.
    pub fn accepted_bundles(&self) -> Result<Vec<AcceptedBundle>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, sha256, size, signature, tip FROM bundles
             WHERE verdict = 'accepted' AND sha256 IS NOT NULL AND evicted IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AcceptedBundle {
                id: r.get(0)?,
                sha256: r.get(1)?,
                size: to_u64(r.get(2)?),
                signature: r.get(3)?,
                tip: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The first chunk of a cached bundle (up to 4 MiB): enough for its header.
    pub fn bundle_head(&self, id: i64) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT data FROM bundle_chunks WHERE bundle_id = ?1 AND seq = 0",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Writes the bytes of a cached bundle to `out`, a chunk at a time.
    pub fn write_bundle(&self, id: i64, out: &mut impl std::io::Write) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM bundle_chunks WHERE bundle_id = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([id])?;
        let mut written = 0u64;
        while let Some(row) = rows.next()? {
            let chunk = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            out.write_all(chunk)
                .map_err(|source| StoreError::WriteBundle { source })?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// The bytes of a cached bundle, concatenated (tests and export).
    pub fn bundle_bytes(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.data FROM bundle_chunks c
             WHERE c.bundle_id = (SELECT id FROM bundles WHERE sha256 = ?1 AND verdict = 'accepted'
                                  AND evicted IS NULL ORDER BY id DESC LIMIT 1)
             ORDER BY c.seq",
        )?;
        let mut rows = stmt.query([sha256])?;
        let mut out: Option<Vec<u8>> = None;
        while let Some(row) = rows.next()? {
            out.get_or_insert_with(Vec::new)
                .extend_from_slice(&row.get::<_, Vec<u8>>(0)?);
        }
        Ok(out)
    }
}

/// Longest refusal reason kept: reasons quote names a bundle chose.
pub const MAX_REASON: usize = 2048;

/// `text` cut to at most `max` bytes at a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An accepted bundle in the cache, as export needs it.
#[derive(Debug, Clone)]
pub struct AcceptedBundle {
    pub id: i64,
    pub sha256: String,
    pub size: u64,
    /// The armored `.sig` as received.
    pub signature: Option<String>,
    pub tip: Option<String>,
}

/// A judged tip commit.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub oid: String,
    pub signer: Option<String>,
    pub fingerprint: Option<String>,
    pub committed: Option<u64>,
}

fn newest(db: Option<HighWater>, mirror: Option<HighWater>) -> Option<HighWater> {
    match (db, mirror) {
        (Some(d), Some(m)) if m.floor > d.floor => Some(m),
        (Some(d), _) => Some(d),
        (None, m) => m,
    }
}

/// Checks the database's structure at every writer's open (`PRAGMA quick_check` of each
/// table, with its indexes): every table but the cached bundles' bytes. Those are most of the
/// database (up to `state.bundle_cache`), and checking them would make every deployment read
/// the whole cache; they are never trusted as they are read, only relayed, and whoever takes
/// a relayed bundle checks its signature.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'bundle_chunks' ORDER BY name",
        )
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(open_err)?;
    for table in tables {
        let checked = conn.query_row(
            &format!("PRAGMA quick_check(\"{}\")", table.replace('"', "\"\"")),
            [],
            |r| r.get::<_, String>(0),
        );
        let detail = match checked {
            Ok(detail) => detail,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                format!("table {table}: {e}")
            }
            Err(e) => return Err(open_err(e)),
        };
        if detail != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail,
            });
        }
    }
    Ok(())
}

fn check_version(
    migrations: &Migrations,
    conn: &Connection,
    path: &Path,
    may_upgrade: bool,
) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len();
    let found: usize = match migrations.current_version(conn) {
        Ok(SchemaVersion::Outside(n)) => {
            return Err(StoreError::Newer {
                path: path.to_owned(),
                found: n.get(),
                supported,
            });
        }
        Ok(v) => (&v).into(),
        Err(source) => {
            return Err(StoreError::Migrate {
                path: path.to_owned(),
                source,
            });
        }
    };
    if found < supported && !may_upgrade {
        return Err(StoreError::Older {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    Ok(())
}

fn insert_bundle(
    conn: &Connection,
    b: &BundleRecord,
    verdict: &str,
    reason: Option<&str>,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO bundles (sha256, size, signature, signer, fingerprint, source, received, verdict, reason, tip, prerequisites)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            b.sha256,
            b.size.map(to_i64),
            b.signature,
            b.signer,
            b.fingerprint,
            b.source,
            to_i64(now()),
            verdict,
            reason,
            b.tip,
            b.prerequisites.map(to_i64)
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

fn store_bytes(conn: &Connection, id: i64, staged: &Path) -> Result<(), StoreError> {
    let read_err = |source| StoreError::ReadStaged {
        path: staged.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(staged).map_err(read_err)?;
    let mut stmt =
        conn.prepare("INSERT INTO bundle_chunks (bundle_id, seq, data) VALUES (?1, ?2, ?3)")?;
    let mut buf = vec![0u8; CHUNK];
    for seq in 0i64.. {
        let n = read_full(&mut file, &mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        stmt.execute(params![id, seq, &buf[..n]])?;
    }
    Ok(())
}

/// Fills `buf` as far as the reader allows; fewer bytes only at the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn upsert_commit(
    conn: &Connection,
    c: &CommitRecord,
    verdict: &str,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO commits (oid, signer, fingerprint, committed, verdict, reason, seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(oid) DO UPDATE SET signer = ?2, fingerprint = ?3, committed = ?4,
             verdict = ?5, reason = ?6, seen = ?7",
        params![
            c.oid,
            c.signer,
            c.fingerprint,
            c.committed.map(to_i64),
            verdict,
            reason,
            to_i64(now())
        ],
    )?;
    Ok(())
}

fn set_high_water(conn: &Connection, m: &HighWater) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO high_water (id, commit_oid, floor, signer, fingerprint, accepted_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET commit_oid = ?1, floor = ?2, signer = ?3, fingerprint = ?4,
             accepted_at = ?5",
        params![
            m.commit,
            to_i64(m.floor),
            m.signer,
            m.fingerprint,
            to_i64(m.accepted_at)
        ],
    )?;
    Ok(())
}

fn event(
    conn: &Connection,
    kind: &str,
    subject: Option<&str>,
    message: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (at, kind, subject, message) VALUES (?1, ?2, ?3, ?4)",
        params![to_i64(now()), kind, subject, message],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(commit: char, floor: u64) -> HighWater {
        HighWater {
            commit: commit.to_string().repeat(40),
            floor,
            signer: "fleet@example.com".into(),
            fingerprint: "SHA256:x".into(),
            accepted_at: 1,
        }
    }

    #[test]
    fn a_damaged_table_fails_the_integrity_check_at_open() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join(DB_FILE);
        {
            let store = Store::open(dir.path())?;
            let rows: Vec<InventoryRow> = (0..200)
                .map(|i| InventoryRow {
                    path: format!("/srv/www/page-{i:05}.html"),
                    kind: "file".into(),
                    exact: false,
                    blob: Some("ab".repeat(20)),
                    mode: Some(0o644),
                    uid: Some(0),
                    gid: Some(0),
                    target: None,
                    stat: None,
                })
                .collect();
            let describes = Describes {
                commit: "c",
                fingerprint: "f",
                services: None,
            };
            store.refresh_inventory(&rows, true, describes)?;
        }
        // Closed: the write-ahead log is checkpointed into the file. Scribble over the middle
        // of the inventory's root page.
        let root: i64 = Connection::open(&db)?.query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'inventory'",
            [],
            |r| r.get(0),
        )?;
        let mut bytes = std::fs::read(&db)?;
        let page = usize::try_from(root - 1)? * 4096;
        bytes[page + 8..page + 2048].fill(0xa5);
        std::fs::write(&db, bytes)?;
        let msg = Store::open(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "database {} failed its integrity check: ",
                db.display()
            )) && msg.ends_with(
                "; move it aside and restart (the floor file keeps rollback protection)"
            ),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn newer_schema_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        drop(Store::open(dir.path())?);
        Connection::open(dir.path().join(DB_FILE))?.pragma_update(None, "user_version", 99)?;
        let msg = Store::open(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(
            msg.contains("was written by a newer outpost (schema 99, this binary knows up to 8)"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn lost_database_keeps_the_mirrored_mark() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        floor::write(dir.path(), &mark('a', 100))?;
        let store = Store::open(dir.path())?;
        assert_eq!(
            store.db_high_water()?.map(|m| m.commit),
            Some("a".repeat(40))
        );
        Ok(())
    }

    #[test]
    fn a_mirror_behind_the_database_is_rewritten() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let store = Store::open(dir.path())?;
            set_high_water(&store.conn, &mark('b', 200))?;
        }
        floor::write(dir.path(), &mark('a', 100))?;
        drop(Store::open(dir.path())?);
        assert_eq!(floor::read(dir.path())?.map(|m| m.floor), Some(200));
        Ok(())
    }
}
