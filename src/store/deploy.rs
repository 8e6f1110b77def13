//! Deployments, their journal, the inventory of managed paths and the originals outpost keeps
//! of paths it took over.
//!
//! A deployment is journalled (its target commit, its planned steps and the originals it is
//! about to replace, with the bad mark of the commit a rollback leaves and the interrupted
//! deployment it resumes) in one transaction before the first change to the host; it is
//! finished with the new inventory in another. One left `running` was cut short: the next
//! apply deploys its target again, and that deployment's journal marks it interrupted.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now, to_i64, to_u64};

/// The schema this module adds (migration 2).
pub(super) const MIGRATION: &str = "CREATE TABLE deployments (
        id INTEGER PRIMARY KEY,
        commit_oid TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('apply', 'repair', 'rollback')),
        started INTEGER NOT NULL,
        finished INTEGER,
        result TEXT NOT NULL CHECK (result IN ('running', 'success', 'failed', 'interrupted')),
        error TEXT,
        steps INTEGER NOT NULL,
        repairs INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE journal (
        deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        path TEXT NOT NULL,
        step TEXT NOT NULL,
        PRIMARY KEY (deployment_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE inventory (
        path TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        exact INTEGER NOT NULL DEFAULT 0,
        blob TEXT,
        mode INTEGER,
        uid INTEGER,
        gid INTEGER,
        target TEXT,
        size INTEGER,
        mtime_ns INTEGER,
        ctime_ns INTEGER,
        ino INTEGER,
        cached_ns INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE originals (
        path TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        bytes BLOB,
        mode INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        gid INTEGER NOT NULL,
        target TEXT,
        saved INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE inventory_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        commit_oid TEXT NOT NULL,
        fingerprint TEXT NOT NULL
    );
    CREATE TABLE bad_commits (
        oid TEXT PRIMARY KEY,
        at INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    ALTER TABLE events ADD COLUMN deployment_id INTEGER;";

/// Migration 3: whether a journalled step creates or changes its path (not a removal or a
/// restore), so the paths an unfinished deployment may have left count as managed; and what
/// else is kept of an original file: its modification time, its extended attributes (name and
/// value, each prefixed by its length as 4 bytes little-endian) and a note for its restore.
pub(super) const MIGRATION_3: &str =
    "ALTER TABLE journal ADD COLUMN touches INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE originals ADD COLUMN mtime_ns INTEGER;
    ALTER TABLE originals ADD COLUMN xattrs BLOB;
    ALTER TABLE originals ADD COLUMN note TEXT;";

/// The next migration: originals' content as pieces (older originals keep theirs in `bytes`).
pub(super) const ORIGINAL_CHUNKS: &str = "CREATE TABLE original_chunks (
        path TEXT NOT NULL REFERENCES originals(path) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (path, seq)
    ) WITHOUT ROWID;";

/// Migration 7: what a deployment's manifest asks of systemd (`services`, JSON: the declared
/// units, and whether anything restarts units or is health-checked), so the no-op fast path
/// checks the units in one query without reading the manifest; and why a commit is bad: the
/// check that failed and the end of its output.
pub(super) const SERVICES: &str = "ALTER TABLE inventory_meta ADD COLUMN services TEXT;
    ALTER TABLE bad_commits ADD COLUMN check_name TEXT;
    ALTER TABLE bad_commits ADD COLUMN output TEXT;";

/// Originals are stored in pieces of this size, so a file of any size kept is copied, and
/// given back, with bounded memory.
const CHUNK: usize = 4 << 20;

/// The stat data a managed file had when its content was last known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatCache {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// Wall clock when this was recorded, ns: a file changed within the timestamp granularity
    /// of the recording could keep its stat data, so such entries are not trusted.
    pub cached_ns: i64,
}

/// One managed path as the last deployment left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRow {
    pub path: String,
    /// `file`, `directory`, `symlink` or `absent`.
    pub kind: String,
    /// A directory kept exact (a `tree`): entries appearing in it change its mtime.
    pub exact: bool,
    pub blob: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub target: Option<String>,
    pub stat: Option<StatCache>,
}

/// An original to keep; a file's content is read when it is journalled, at most `content`
/// bytes, from the file [`Store::begin_deployment`]'s `open` gives (so no file stays open
/// meanwhile, however many are taken over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub original: Original,
    pub content: Option<u64>,
}

/// Opens a host file, by host path, for its content to be kept.
pub type OpenContent<'a> = dyn FnMut(&str) -> std::io::Result<std::fs::File> + 'a;

/// What was at a path before outpost first changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub path: String,
    /// `file`, `directory` or `symlink`.
    pub kind: String,
    pub bytes: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub target: Option<String>,
    /// A file's modification time, ns since the epoch.
    pub mtime_ns: Option<i64>,
    /// A file's extended attributes: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// What its restore should say (a hard link restored as a file of its own).
    pub note: Option<String>,
}

/// Extended attributes as kept: each name and value prefixed by its length.
fn encode_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    if xattrs.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for part in xattrs.iter().flat_map(|(n, v)| [n, v]) {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(part);
    }
    Some(out)
}

/// The inverse of [`encode_xattrs`]; what does not decode is dropped.
fn decode_xattrs(mut bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut take = || -> Option<Vec<u8>> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let (part, rest) = rest.split_at_checked(len)?;
        bytes = rest;
        Some(part.to_vec())
    };
    let mut out = Vec::new();
    while let (Some(name), Some(value)) = (take(), take()) {
        out.push((name, value));
    }
    out
}

/// A deployment as `history` and `status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub id: i64,
    pub commit: String,
    pub signer: Option<String>,
    pub kind: String,
    pub result: String,
    pub started: u64,
    pub finished: Option<u64>,
    pub steps: u64,
    pub repairs: u64,
    pub error: Option<String>,
}

/// An audit event tied to a deployment (a drift repair, a prune, a restore).
#[derive(Debug, Clone)]
pub struct DeployEvent {
    pub kind: &'static str,
    pub path: String,
    pub message: String,
}

/// One planned step as the journal keeps it.
#[derive(Debug, Clone)]
pub struct JournalStep {
    pub path: String,
    /// The step as `plan` shows it.
    pub step: String,
    /// It creates or changes `path` (a removal or a restore does not).
    pub touches: bool,
}

/// What is written, in one transaction, before a deployment's first change.
pub struct Begin<'a> {
    pub commit: &'a str,
    /// `apply`, `repair` or `rollback`.
    pub kind: &'a str,
    /// How many steps `steps` has.
    pub count: usize,
    pub steps: &'a dyn Rows<JournalStep>,
    /// Originals of the paths it takes over (one already kept is never replaced).
    pub originals: &'a [Keep],
    /// The interrupted deployment this one resumes, marked interrupted with this message.
    pub resumes: Option<(i64, &'a str)>,
    /// A commit marked bad, with the reason (the commit a rollback leaves).
    pub bad: Option<(&'a str, &'a str)>,
    pub events: &'a [DeployEvent],
}

/// A deployment a crash left `running`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub id: i64,
    pub commit: String,
    /// `apply`, `repair` or `rollback`.
    pub kind: String,
    /// The paths of its journalled steps.
    pub paths: Vec<String>,
}

/// Rows made one at a time as they are written (journal steps, inventory rows): a
/// deployment of many files never holds all of them at once.
pub trait Rows<T> {
    /// Calls `f` with each row, stopping at its first error.
    fn each(&self, f: &mut dyn FnMut(&T) -> Result<(), StoreError>) -> Result<(), StoreError>;
}

impl<T> Rows<T> for Vec<T> {
    fn each(&self, f: &mut dyn FnMut(&T) -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.iter().try_for_each(f)
    }
}

/// The outcome written when a deployment ends.
pub struct Finish<'a> {
    pub result: &'a str,
    pub error: Option<&'a str>,
    pub inventory: &'a dyn Rows<InventoryRow>,
    /// Originals given back to the host: no longer kept.
    pub restored: &'a [String],
    pub events: &'a [DeployEvent],
    pub repairs: u64,
    /// What the inventory describes, when it describes the host fully: the no-op fast path
    /// trusts it.
    pub describes: Option<Describes<'a>>,
    /// `inventory` is the whole inventory (else: only the rows it holds change).
    pub whole: bool,
    /// The commit this deployment marks bad (its health gate failed), with why.
    pub bad: Option<(&'a str, &'a BadMark)>,
}

/// What a complete inventory describes.
#[derive(Debug, Clone, Copy)]
pub struct Describes<'a> {
    pub commit: &'a str,
    pub fingerprint: &'a str,
    /// What the manifest asks of systemd (JSON), `None` when nothing.
    pub services: Option<&'a str>,
}

/// What the inventory meta row holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub commit: String,
    pub fingerprint: String,
    pub services: Option<String>,
}

/// Why a commit is marked bad.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BadMark {
    pub reason: String,
    /// The health check or unit that failed, when a health gate marked it.
    pub check: Option<String>,
    /// The end of that check's output.
    pub output: Option<String>,
}

/// A commit marked bad, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCommit {
    pub commit: String,
    pub at: u64,
    pub mark: BadMark,
}

fn u32_of(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// Writes `rows` into the inventory; `whole`: they replace it.
fn write_inventory(
    tx: &rusqlite::Connection,
    rows: &dyn Rows<InventoryRow>,
    whole: bool,
) -> Result<(), StoreError> {
    if whole {
        tx.execute("DELETE FROM inventory", [])?;
    }
    let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO inventory (path, kind, blob, mode, uid, gid, target, size, mtime_ns, ctime_ns, ino, cached_ns, exact)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
    rows.each(&mut |row| {
        let s = row.stat;
        insert.execute(params![
            row.path,
            row.kind,
            row.blob,
            row.mode,
            row.uid,
            row.gid,
            row.target,
            s.map(|s| to_i64(s.size)),
            s.map(|s| s.mtime_ns),
            s.map(|s| s.ctime_ns),
            s.map(|s| to_i64(s.ino)),
            s.map(|s| s.cached_ns),
            row.exact,
        ])?;
        Ok(())
    })
}

fn set_meta(
    conn: &rusqlite::Connection,
    describes: Option<Describes<'_>>,
) -> Result<(), StoreError> {
    match describes {
        Some(d) => conn.execute(
            "INSERT INTO inventory_meta (id, commit_oid, fingerprint, services) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET commit_oid = ?1, fingerprint = ?2, services = ?3",
            params![d.commit, d.fingerprint, d.services],
        )?,
        None => conn.execute("DELETE FROM inventory_meta", [])?,
    };
    Ok(())
}

impl Store {
    /// The inventory of the last deployment, by path.
    pub fn inventory(&self) -> Result<Vec<InventoryRow>, StoreError> {
        // One chunk, at most.
        let mut rows = Vec::new();
        self.inventory_chunks(usize::MAX, &mut |chunk| rows = chunk)?;
        Ok(rows)
    }

    /// The inventory of the last deployment, by path, handed to `f` in chunks of `size` rows
    /// as they are read (the last may be shorter): the caller can work on one chunk while
    /// the next is read.
    pub fn inventory_chunks(
        &self,
        size: usize,
        f: &mut dyn FnMut(Vec<InventoryRow>),
    ) -> Result<(), StoreError> {
        let size = size.max(1);
        let mut stmt = self.conn.prepare(
            "SELECT path, kind, blob, mode, uid, gid, target, size, mtime_ns, ctime_ns, ino, cached_ns, exact
             FROM inventory ORDER BY path",
        )?;
        let rows = stmt.query_map([], |r| {
            let stat = match (r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(11)?) {
                (Some(size), Some(cached_ns)) => Some(StatCache {
                    size: to_u64(size),
                    mtime_ns: r.get(8)?,
                    ctime_ns: r.get(9)?,
                    ino: to_u64(r.get(10)?),
                    cached_ns,
                }),
                _ => None,
            };
            Ok(InventoryRow {
                path: r.get(0)?,
                kind: r.get(1)?,
                exact: r.get(12)?,
                blob: r.get(2)?,
                mode: u32_of(r.get(3)?),
                uid: u32_of(r.get(4)?),
                gid: u32_of(r.get(5)?),
                target: r.get(6)?,
                stat,
            })
        })?;
        let mut chunk = Vec::new();
        for row in rows {
            chunk.push(row?);
            if chunk.len() == size {
                f(std::mem::take(&mut chunk));
            }
        }
        if !chunk.is_empty() {
            f(chunk);
        }
        Ok(())
    }

    /// The paths whose originals outpost keeps.
    pub fn original_paths(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM originals ORDER BY path")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The size of the kept original of `path`, if it is a file.
    pub fn original_size(&self, path: &str) -> Result<Option<u64>, StoreError> {
        let size: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT COALESCE(length(o.bytes),
                     (SELECT sum(length(c.data)) FROM original_chunks c WHERE c.path = o.path))
                 FROM originals o WHERE o.path = ?1",
                [path],
                |r| r.get(0),
            )
            .optional()?;
        Ok(size.flatten().map(to_u64))
    }

    /// The content of the kept original of `path`, read one stored piece at a time.
    pub fn original_content(&self, path: &str) -> OriginalContent<'_> {
        OriginalContent {
            store: self,
            path: path.to_owned(),
            seq: 0,
            chunk: Vec::new(),
            at: 0,
        }
    }

    /// The original of `path`, if outpost took it over.
    pub fn original(&self, path: &str) -> Result<Option<Original>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT path, kind, bytes, mode, uid, gid, target, mtime_ns, xattrs, note
                 FROM originals WHERE path = ?1",
                [path],
                |r| {
                    Ok(Original {
                        path: r.get(0)?,
                        kind: r.get(1)?,
                        bytes: r.get(2)?,
                        mode: u32_of(r.get(3)?).unwrap_or(0o644),
                        uid: u32_of(r.get(4)?).unwrap_or(0),
                        gid: u32_of(r.get(5)?).unwrap_or(0),
                        target: r.get(6)?,
                        mtime_ns: r.get(7)?,
                        xattrs: r
                            .get::<_, Option<Vec<u8>>>(8)?
                            .map(|b| decode_xattrs(&b))
                            .unwrap_or_default(),
                        note: r.get(9)?,
                    })
                },
            )
            .optional()?)
    }

    /// Journals a deployment before its first change: the target, the steps, the originals of
    /// paths it takes over, and with them the interrupted deployment it resumes and the bad
    /// mark of the commit a rollback leaves, so a crash can never separate them.
    pub fn begin_deployment(
        &self,
        begin: &Begin<'_>,
        open: &mut OpenContent<'_>,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        if let Some((resumed, message)) = begin.resumes {
            interrupted(&tx, resumed, message)?;
        }
        if let Some((commit, reason)) = begin.bad {
            let mark = BadMark {
                reason: reason.to_owned(),
                ..BadMark::default()
            };
            mark_bad(&tx, commit, &mark)?;
        }
        tx.execute(
            "INSERT INTO deployments (commit_oid, kind, started, result, steps) VALUES (?1, ?2, ?3, 'running', ?4)",
            params![begin.commit, begin.kind, to_i64(now()), to_i64(begin.count as u64)],
        )?;
        let id = tx.last_insert_rowid();
        // Until this deployment finishes, the inventory may not describe the host.
        set_meta(&tx, None)?;
        {
            let mut journal = tx.prepare(
                "INSERT INTO journal (deployment_id, seq, path, step, touches) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut seq = 0u64;
            begin.steps.each(&mut |s| {
                journal.execute(params![id, to_i64(seq), s.path, s.step, s.touches])?;
                seq += 1;
                Ok(())
            })?;
            let mut keep = tx.prepare(
                "INSERT OR IGNORE INTO originals
                     (path, kind, bytes, mode, uid, gid, target, saved, mtime_ns, xattrs, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for Keep {
                original: o,
                content,
            } in begin.originals
            {
                let added = keep.execute(params![
                    o.path,
                    o.kind,
                    o.bytes,
                    o.mode,
                    o.uid,
                    o.gid,
                    o.target,
                    to_i64(now()),
                    o.mtime_ns,
                    encode_xattrs(&o.xattrs),
                    o.note,
                ])?;
                if let (1, Some(max)) = (added, content) {
                    let file = open(&o.path).map_err(|source| StoreError::ReadOriginal {
                        path: o.path.clone(),
                        source,
                    })?;
                    store_content(&tx, &o.path, &file, *max)?;
                }
            }
            insert_events(&tx, begin.events, id)?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Ends a deployment: its result, the new inventory, the originals given back, events.
    pub fn finish_deployment(&self, id: i64, finish: &Finish<'_>) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE deployments SET result = ?2, error = ?3, finished = ?4, repairs = ?5 WHERE id = ?1",
            params![id, finish.result, finish.error, to_i64(now()), to_i64(finish.repairs)],
        )?;
        write_inventory(&tx, finish.inventory, finish.whole)?;
        {
            set_meta(&tx, finish.describes)?;
            if let Some((commit, mark)) = finish.bad {
                mark_bad(&tx, commit, mark)?;
            }
            let mut forget = tx.prepare("DELETE FROM originals WHERE path = ?1")?;
            for path in finish.restored {
                forget.execute([path])?;
            }
        }
        insert_events(&tx, finish.events, id)?;
        tx.commit()?;
        if !finish.restored.is_empty() {
            // The originals given back were zeroed in the database (secure_delete); the
            // write-ahead log still holds them until it is checkpointed and truncated.
            let checkpoint = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                });
            if !matches!(checkpoint, Ok(0)) {
                tracing::warn!(?checkpoint, "the write-ahead log was not truncated");
            }
        }
        Ok(())
    }

    /// What the inventory describes, if it describes the host fully.
    pub fn inventory_meta(&self) -> Result<Option<Meta>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT commit_oid, fingerprint, services FROM inventory_meta WHERE id = 1",
                [],
                |r| {
                    Ok(Meta {
                        commit: r.get(0)?,
                        fingerprint: r.get(1)?,
                        services: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Writes the inventory after a reconcile that found nothing to change (all of it, or
    /// only the rows it looked at): it now describes the host, with fresh stat data.
    pub fn refresh_inventory(
        &self,
        rows: &dyn Rows<InventoryRow>,
        whole: bool,
        describes: Describes<'_>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        write_inventory(&tx, rows, whole)?;
        set_meta(&tx, Some(describes))?;
        tx.commit()?;
        Ok(())
    }

    /// The newest deployment left `running` by a crash, with the paths it journalled.
    pub fn interrupted_deployment(&self) -> Result<Option<Interrupted>, StoreError> {
        let found: Option<(i64, String, String)> = self
            .conn
            .query_row(
                "SELECT id, commit_oid, kind FROM deployments WHERE result = 'running' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, commit, kind)) = found else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM journal WHERE deployment_id = ?1 ORDER BY seq")?;
        let paths = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(Interrupted {
            id,
            commit,
            kind,
            paths,
        }))
    }

    /// Ends an interrupted deployment that cannot be resumed: `failed`, with why.
    pub fn fail_interrupted(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO events (at, kind, subject, message, deployment_id)
             SELECT ?1, 'deployment-interrupted', commit_oid, ?2, id FROM deployments WHERE id = ?3",
            params![to_i64(now()), error, id],
        )?;
        tx.execute(
            "UPDATE deployments SET result = 'failed', error = ?2, finished = ?3 WHERE id = ?1",
            params![id, error, to_i64(now())],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The paths that deployments since the last successful one created or changed (or were
    /// about to): a crash or a failure may have left them on the host, so they count as
    /// managed until a deployment completes.
    pub fn touched_since_success(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT j.path FROM journal j JOIN deployments d ON d.id = j.deployment_id
             WHERE j.touches AND d.result != 'success'
               AND d.id > (SELECT COALESCE(MAX(id), 0) FROM deployments WHERE result = 'success')
             ORDER BY j.path",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deployments, newest first.
    pub fn deployments(&self, limit: usize) -> Result<Vec<Deployment>, StoreError> {
        self.query_deployments(Filter::All, limit)
    }

    /// The newest successful deployment: what the host is at.
    pub fn deployed(&self) -> Result<Option<Deployment>, StoreError> {
        Ok(self.query_deployments(Filter::Success, 1)?.pop())
    }

    /// Where `rollback` goes from deployment `current`: the newest successful deployment older
    /// than it, of another commit, whose commit is not marked bad.
    pub fn previous_good(&self, current: &Deployment) -> Result<Option<Deployment>, StoreError> {
        Ok(self
            .query_deployments(
                Filter::Good {
                    before: current.id,
                    except: &current.commit,
                },
                1,
            )?
            .pop())
    }

    /// The newest successful deployment whose commit is not marked bad: where `apply` stays
    /// while the trusted commit is bad.
    pub fn newest_good(&self) -> Result<Option<Deployment>, StoreError> {
        Ok(self
            .query_deployments(
                Filter::Good {
                    before: i64::MAX,
                    except: "",
                },
                1,
            )?
            .pop())
    }

    /// Deployments, newest first, as `filter` selects them.
    fn query_deployments(
        &self,
        filter: Filter<'_>,
        limit: usize,
    ) -> Result<Vec<Deployment>, StoreError> {
        let (success, good, before, except) = match filter {
            Filter::All => (false, false, i64::MAX, ""),
            Filter::Success => (true, false, i64::MAX, ""),
            Filter::Good { before, except } => (true, true, before, except),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.id, d.commit_oid, c.signer, d.kind, d.result, d.started, d.finished, d.steps, d.repairs, d.error
             FROM deployments d LEFT JOIN commits c ON c.oid = d.commit_oid
             WHERE (?2 = 0 OR d.result = 'success')
               AND (?3 = 0 OR d.commit_oid NOT IN (SELECT oid FROM bad_commits))
               AND d.id < ?4 AND d.commit_oid != ?5
             ORDER BY d.id DESC LIMIT ?1",
        )?;
        let params = params![to_i64(limit as u64), success, good, before, except];
        let rows = stmt.query_map(params, |r| {
            Ok(Deployment {
                id: r.get(0)?,
                commit: r.get(1)?,
                signer: r.get(2)?,
                kind: r.get(3)?,
                result: r.get(4)?,
                started: to_u64(r.get(5)?),
                finished: r.get::<_, Option<i64>>(6)?.map(to_u64),
                steps: to_u64(r.get(7)?),
                repairs: to_u64(r.get(8)?),
                error: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events of one deployment: the drift repairs, prunes and restores it made.
    pub fn deployment_events(&self, id: i64) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, COALESCE(subject, ''), message FROM events WHERE deployment_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Why `oid` was marked bad, if it was.
    pub fn bad_reason(&self, oid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT reason FROM bad_commits WHERE oid = ?1",
                [oid],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// Which deployments a query returns.
enum Filter<'a> {
    All,
    Success,
    /// Successful, older than deployment `before`, not of commit `except`, commit not bad.
    Good {
        before: i64,
        except: &'a str,
    },
}

/// Marks a commit bad: apply does not deploy it again until a newer commit is trusted.
/// A commit already marked keeps its first mark: the health gate's check and output say more
/// than the rollback that follows it.
fn mark_bad(conn: &rusqlite::Connection, oid: &str, mark: &BadMark) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO bad_commits (oid, at, reason, check_name, output) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(oid) DO NOTHING",
        params![oid, to_i64(now()), mark.reason, mark.check, mark.output],
    )?;
    Ok(())
}

/// Marks a deployment a crash left `running` as interrupted, with an event saying so.
fn interrupted(conn: &rusqlite::Connection, id: i64, message: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (at, kind, subject, message, deployment_id)
         SELECT ?1, 'deployment-interrupted', commit_oid, ?2, id FROM deployments
         WHERE id = ?3 AND result = 'running'",
        params![to_i64(now()), message, id],
    )?;
    conn.execute(
        "UPDATE deployments SET result = 'interrupted', finished = ?1 WHERE id = ?2 AND result = 'running'",
        params![to_i64(now()), id],
    )?;
    Ok(())
}

fn insert_events(
    conn: &rusqlite::Connection,
    events: &[DeployEvent],
    id: i64,
) -> Result<(), StoreError> {
    let mut event = conn.prepare(
        "INSERT INTO events (at, kind, subject, message, deployment_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in events {
        event.execute(params![to_i64(now()), e.kind, e.path, e.message, id])?;
    }
    Ok(())
}

/// Reads `file` (at most `max` bytes) into the pieces of the original of `path`.
fn store_content(
    tx: &rusqlite::Connection,
    path: &str,
    mut file: &std::fs::File,
    max: u64,
) -> Result<(), StoreError> {
    use std::io::Read;
    let err = |source| StoreError::ReadOriginal {
        path: path.to_owned(),
        source,
    };
    let mut insert =
        tx.prepare("INSERT INTO original_chunks (path, seq, data) VALUES (?1, ?2, ?3)")?;
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    for seq in 0i64.. {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e)),
            }
        }
        if filled == 0 {
            break;
        }
        total += filled as u64;
        if total > max {
            let grew = std::io::Error::other(format!("it grew past {max} bytes while kept"));
            return Err(err(grew));
        }
        insert.execute(params![path, seq, &buf[..filled]])?;
    }
    Ok(())
}

/// The content of a kept original, as a reader over its stored pieces.
pub struct OriginalContent<'a> {
    store: &'a Store,
    path: String,
    seq: i64,
    chunk: Vec<u8>,
    at: usize,
}

impl std::io::Read for OriginalContent<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            let next: Option<Vec<u8>> = self
                .store
                .conn
                .query_row(
                    "SELECT data FROM original_chunks WHERE path = ?1 AND seq = ?2",
                    params![self.path, self.seq],
                    |r| r.get(0),
                )
                .optional()
                .map_err(std::io::Error::other)?;
            let Some(next) = next else {
                return Ok(0);
            };
            self.seq += 1;
            self.chunk = next;
            self.at = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_attributes_round_trip() {
        let xattrs = vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 32]),
            (b"user.empty".to_vec(), Vec::new()),
        ];
        let encoded = encode_xattrs(&xattrs).unwrap_or_default();
        assert_eq!(decode_xattrs(&encoded), xattrs);
        assert_eq!(encode_xattrs(&[]), None);
        assert_eq!(decode_xattrs(&encoded[..encoded.len() - 1]).len(), 1);
    }
}
