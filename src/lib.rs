//! outpost keeps a Linux host at the state described in a signed Git repository, online or not.
//!
//! # Data flow
//!
//! ```text
//!  bundle file / stick / spool ──┐
//!  upstream (gix fetch) ─────────┴─> intake ─> trust ─> repo + store ─> manifest ─> plan ─> apply ─> host
//!                                    (stage,   (SSHSIG   (objects/,      (this       (pure)  (journal,
//!                                     hash or   of file   outpost.db,     host's             files,
//!                                     fetch)    and tip)  floor mirror)   entries)           inventory)
//!
//!  `outpost daemon` decides when (timers, spool watch, signals); the CLI runs the same steps.
//!  Out: status (CLI, --json), the metrics file, the report on a stick, export for relaying.
//! ```
//!
//! A bundle's `.sig` is read first and its signer checked against the policy; only then is
//! the bundle copied once into private staging while it is hashed (sha256 for its identity,
//! sha512 for its SSHSIG), and the signature checked against those digests before a byte of it
//! is parsed. Only then is the header parsed and the pack indexed into a quarantine object store
//! whose alternates point at the real one. The tip commit of the tracked branch must carry an
//! SSH signature by an allowed signer and must descend from the trusted commit; only then are
//! the pack files moved into the object store, the verdict and the new high-water mark written
//! in one SQLite transaction, the floor mirror rewritten and the tracked ref moved.
//!
//! A reconcile (`apply`) first finishes a deployment a crash interrupted, to that deployment's
//! own target; then it goes to the newest trusted commit, or, while that one is marked bad
//! (a rollback left it), stays at the newest good deployment. Its hot path, read-only, reads
//! the inventory in chunks, stats each managed path (a chunk per core while the next is read)
//! and compares with the stat cache; when that describes the host for the target commit and
//! this host's config, and nothing differs, nothing more is read. Paths that differ are
//! repaired from the inventory alone. Otherwise the manifest is loaded for
//! this host, the host observed (files, and the declared units in one `systemctl show`) and a
//! plan made; the deployment is journalled, executed through `apply::fs` with its unit steps
//! around the files, checked by the health gate, and recorded, in one place, as a success with
//! the new inventory or as failed with its error. A new commit that fails its gate is marked
//! bad and the host goes back to the newest good deployment through the rollback code.
//! A deployment holds its plan, never the contents: each blob is read as its file is written,
//! through object-store handles that are dropped every few hundred reads so that the pack
//! pages they mapped go with them ([`repo::Reader`]); the journal and the new inventory are
//! written row by row as they are made; file writes are made durable in batches (one `syncfs`
//! per filesystem, then the renames).
//!
//! # Modules
//!
//! * [`cli`] — the command line: argument parsing, exit codes, human and `--json` output.
//! * [`daemon`] — `outpost daemon`: one tokio loop deciding *when* (sync and reconcile timers,
//!   spool and floor-mirror watches, signals, sd_notify, metrics file); every step is a CLI
//!   pipeline function on a blocking thread, holding the state lock for that step only.
//! * [`config`] — `config.toml`: typed, every key defaulted but `trust.allowed_signers`.
//! * [`host`] — the host root, name and labels: the seam tests point at a temp dir.
//! * [`trust`] — allowed_signers and revoked keys; verifies SSHSIG signatures of bundle files
//!   (namespace `outpost-bundle`) and of commits (namespace `git`).
//! * [`bundle`] — the git bundle header (v2/v3), parsed by hand with bounded lines.
//! * [`repo`] — the bare object store under `state_dir/objects`: quarantined pack indexing,
//!   ancestry, commit signatures, the tracked ref; [`repo::repack`] consolidates packs;
//!   [`repo::Reader`] reads long runs of objects without keeping the pack mapped.
//! * [`store`] — `outpost.db` (SQLite): bundles, commits, events, the high-water mark and its
//!   checksummed mirror file `state_dir/floor`; deployments, their journal, the inventory and
//!   the originals; the private state dir; upstream sync attempts; retention (the bundle cache
//!   budget, history compaction, space given back).
//! * [`intake`] — import and verify of bundle files and directories (a mounted stick);
//!   `intake::spool` decides when a dropped bundle has arrived whole; upstream sync
//!   ([`intake::sync`]): the tracked branch fetched from `source.url` with gix into a
//!   quarantine, its tip judged by the same function as a bundle's tip; `intake::usb` takes a
//!   plugged stick (mount read-only, import, report, unmount).
//! * [`manifest`] — `outpost.toml` of a trusted commit, read from the object store: includes,
//!   `when` selectors, every path, source, mode and owner validated for this host.
//! * [`plan`] — pure: desired entries + observed host state + last inventory → ordered steps;
//!   [`plan::units`]: declared units + their state + the file steps → unit steps.
//! * [`apply`] — a reconcile cycle: target commit, desired paths, observe (stat cache), plan,
//!   journal, execute through [`apply::fs`] (the only code writing under the host root),
//!   unit steps ([`apply::services`]), the health gate ([`apply::gate`]), inventory;
//!   `rollback`, automatic after a failed gate; recovery of an interrupted deployment.
//! * [`units`] — systemd: unit names, the units outpost never stops, the state systemd reports,
//!   the [`units::Systemd`] seam and its `systemctl` backend; children run with a deadline,
//!   their process group killed, their output bounded ([`units::child`]).
//! * [`report`] — the host report written onto a stick (`outpost/reports/<host>.json`).
//! * [`export`] — relaying: the cached signed bundles another host needs, written as received.
//! * [`gc`] — storage bounded for years: `outpost gc`, and the same steps after imports, fetches
//!   and deployments (repack, bundle cache, history).
//! * [`status`] — what `outpost status` reports, as a serde type.
//! * [`text`] — what reaches a person: control characters escaped, times formatted totally.
//! * [`lock`] — the exclusive lock in the state dir held by commands that change anything.
//!
//! # Invariants
//!
//! * Architecture invariant: nothing of a bundle is parsed before its signature is verified
//!   against the staged copy; only the staged copy is read afterwards.
//! * Architecture invariant: objects of a bundle or a fetch reach `objects/` only after the
//!   whole bundle or fetched pack, including the tip commit's signature and ancestry, was
//!   accepted. A fetched tip meets exactly a bundle tip's rules (`intake::judge::judge_tip`).
//! * Network failures only affect fetching: they are recorded in `sync_attempts` and never
//!   change the trusted commit or the host.
//! * The high-water mark never moves back: a replayed older state is a no-op, a divergent one
//!   is refused unless `trust.allow_rewind`, and the time floor only grows.
//! * Key validity is judged at the later of the time floor (the newest accepted committer time)
//!   and the commit's own date, never at the wall clock. The clock only widens the plausibility
//!   bound on a tip's date (`trust.max_future`), and only when it is not behind the floor and
//!   the release date.
//! * Refuse or fail, decided in one place (`intake::judge`): everything a bundle's content causes
//!   is a recorded refusal of that bundle and the batch goes on; only the host's own failures
//!   (state dir, database, object store files) stop an import.
//! * The floor mirror is evidence: ahead of the database, it is used only once the commit it
//!   names is found signed by an allowed signer (`intake::check_mirror`, before every command).
//! * What reaches a person goes through [`text`]: control characters escaped, times total.
//! * `verify`, `plan` and `status` write nothing to the state dir or the host; neither does an
//!   `apply` that finds nothing to do (it reads the database read-only).
//! * Every object the kept commits reach (the trusted commit, the newest `keep_deployments`
//!   good deployed commits, a running deployment's target) stays in a pack with an index at
//!   every moment of a repack: the new pack is durable before an old one is removed.
//! * The bundle cache always holds the newest full bundle and every bundle after it;
//!   compaction never drops a running deployment nor one rollback needs.
//! * Architecture invariant: `plan` does no I/O; only `apply::fs` writes under the host root,
//!   and it never follows a symlink on a host path.
//! * A deployment is journalled before its first host change; every file is replaced
//!   atomically, its content made durable (one `syncfs` per filesystem for a batch of files)
//!   before the rename, so after a crash each managed file is entirely old or new. A journalled
//!   deployment ends `success` or `failed` with its error; one a crash cut short is resumed,
//!   to its own target and as its own kind, before anything else.
//! * The state dir is 0700 and its files 0600 (looser ones are tightened, with a log line):
//!   it holds the originals of taken-over files, which may be secrets. Originals given back
//!   are zeroed in the database (`secure_delete`) and the write-ahead log is truncated.
//! * `plan` never shows the content of a file that is not world-readable (desired or on the
//!   host) or matches `apply.redact`, and escapes control characters from the host.
//! * A commit marked bad (the one a rollback left, or one whose health gate failed) is never
//!   deployed again by `apply`; the mark is written with the rollback's journal, or with the
//!   failed deployment's record (the check and its output), before the automatic rollback.
//! * outpost never stops, disables or restarts its own units, `dbus.*` or `systemd-*`; unit
//!   names are checked with the manifest. Health checks and systemctl run with a deadline and
//!   keep a bounded end of their output.

pub mod apply;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod export;
pub mod gc;
pub mod host;
pub mod intake;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod repo;
pub mod report;
pub mod status;
pub mod store;
pub mod text;
pub mod trust;
pub mod units;
