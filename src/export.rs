//! `outpost export DIR [--since COMMIT]`: relaying. A host that is current writes the cached
//! bundles another host needs to become current, each with its `.sig`, byte for byte as they
//! were received (nothing is re-signed: the signatures are the publisher's), into
//! `DIR/outpost/`, with a README.txt for the person carrying them.
//!
//! Which bundles: walking the accepted bundles from the newest back, every one is taken until
//! one whose prerequisites the receiver has: with `--since COMMIT`, prerequisites that are
//! `COMMIT` or its ancestors; without, none (a full bundle). Importing the result in any order
//! brings a host from there to the newest bundle's tip (intake orders bundles by their
//! prerequisites).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::config::Config;
use crate::intake::short;
use crate::repo::{ObjectStore, RepoError};
use crate::store::{AcceptedBundle, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("nothing is trusted yet: there is nothing to export")]
    NothingTrusted,
    #[error("{commit:?} is not a commit id (40 hex digits)")]
    BadSince { commit: String },
    #[error(
        "no bundle is cached: the trusted commit {trusted} arrived by network fetch, and there is no signed bundle to hand on"
    )]
    NoBundles { trusted: String },
    #[error(
        "the cache holds no full bundle to start from{}; a host needs one first (or pass --since with a commit the receiving host has)",
        since.as_ref().map(|c| format!(" (nor one whose prerequisites {c} has)")).unwrap_or_default()
    )]
    NoBase { since: Option<String> },
    #[error("cached bundle {sha256} has no readable header: {reason}")]
    Header { sha256: String, reason: String },
    #[error("cached bundle {sha256} has no signature on record; it cannot be relayed")]
    NoSignature { sha256: String },
    #[error("{path} is a symbolic link; export does not write through it")]
    Symlink { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an export wrote.
#[derive(Debug, serde::Serialize)]
pub struct Exported {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// The tip the exported bundles lead to.
    pub tip: String,
    /// Said when the trusted commit is newer than any cached bundle (it came by fetch).
    pub note: Option<String>,
    /// Said when the bundles a relay needs take more than `state.bundle_cache`.
    pub warning: Option<String>,
}

/// Writes the bundles a host needs into `dir/outpost/`.
pub fn export(config: &Config, dir: &Path, since: Option<&str>) -> Result<Exported, ExportError> {
    let state = &config.state.dir;
    let store = Store::open_read_only(state)?.ok_or(ExportError::NothingTrusted)?;
    let trusted = store
        .high_water()?
        .ok_or(ExportError::NothingTrusted)?
        .commit;
    let objects = ObjectStore::open_existing(state)?.ok_or(ExportError::NothingTrusted)?;
    let since = since
        .map(|c| {
            ObjectId::from_hex(c.as_bytes()).map_err(|_| ExportError::BadSince {
                commit: c.to_owned(),
            })
        })
        .transpose()?;
    let bundles = store.accepted_bundles()?;
    let newest = bundles.last().ok_or_else(|| ExportError::NoBundles {
        trusted: trusted.clone(),
    })?;
    let tip = newest.tip.clone().unwrap_or_default();
    let chosen = choose(&store, &objects, &bundles, since)?;
    let warning = crate::status::cache_warning(
        store.cache_use()?.needed,
        config.state.bundle_cache.as_u64(),
    );
    let out = target_dir(dir)?;
    let mut files = Vec::new();
    for (n, bundle) in chosen.iter().enumerate() {
        let name = format!(
            "{:03}-{}.bundle",
            n + 1,
            short(bundle.tip.as_deref().unwrap_or(&bundle.sha256))
        );
        let signature = bundle
            .signature
            .as_deref()
            .ok_or_else(|| ExportError::NoSignature {
                sha256: bundle.sha256.clone(),
            })?;
        let path = out.join(&name);
        write_atomically(&path, |f| {
            store
                .write_bundle(bundle.id, f)
                .map(drop)
                .map_err(std::io::Error::other)
        })?;
        let sig = out.join(format!("{name}.sig"));
        write_atomically(&sig, |f| f.write_all(signature.as_bytes()))?;
        files.extend([path, sig]);
    }
    let note = (tip != trusted).then(|| {
        format!(
            "the trusted commit {} arrived by network fetch: no signed bundle exists for it, so the export ends at {}",
            short(&trusted),
            short(&tip)
        )
    });
    let readme = out.join("README.txt");
    write_atomically(&readme, |f| {
        f.write_all(carrier_readme(config, &tip, chosen.len()).as_bytes())
    })?;
    files.push(readme);
    sync_dir(&out)?;
    Ok(Exported {
        dir: out,
        files,
        tip,
        note,
        warning,
    })
}

/// The bundles to hand on, oldest first.
fn choose(
    store: &Store,
    objects: &ObjectStore,
    bundles: &[AcceptedBundle],
    since: Option<ObjectId>,
) -> Result<Vec<AcceptedBundle>, ExportError> {
    let mut chosen = Vec::new();
    for bundle in bundles.iter().rev() {
        chosen.push(bundle.clone());
        let head = store.bundle_head(bundle.id)?;
        let header =
            crate::bundle::parse_header(&mut head.as_slice()).map_err(|e| ExportError::Header {
                sha256: bundle.sha256.clone(),
                reason: e.to_string(),
            })?;
        let mut has_all = true;
        for &prerequisite in &header.prerequisites {
            let held = match since {
                Some(since) => objects.is_ancestor(prerequisite, since)?,
                None => false,
            };
            if !held {
                has_all = false;
                break;
            }
        }
        if has_all {
            chosen.reverse();
            return Ok(chosen);
        }
    }
    Err(ExportError::NoBase {
        since: since.map(|c| c.to_string()),
    })
}

/// `dir/outpost`, created when missing, never through a symlink.
fn target_dir(dir: &Path) -> Result<PathBuf, ExportError> {
    let out = dir.join("outpost");
    let create = |path: &Path| {
        std::fs::create_dir_all(path).map_err(|source| ExportError::Write {
            path: path.to_owned(),
            source,
        })
    };
    create(dir)?;
    match std::fs::symlink_metadata(&out) {
        Ok(meta) if meta.file_type().is_symlink() => Err(ExportError::Symlink { path: out }),
        Ok(_) => Ok(out),
        Err(_) => {
            create(&out)?;
            Ok(out)
        }
    }
}

/// Writes `path` through a temp file beside it, synced, then renamed over it.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), ExportError> {
    let err = |source| ExportError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".outpost-export.")
        .tempfile_in(dir)
        .map_err(err)?;
    fill(tmp.as_file_mut()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ExportError::Write {
            path: dir.to_owned(),
            source,
        })
}

fn carrier_readme(config: &Config, tip: &str, count: usize) -> String {
    format!(
        "These {count} signed bundles bring an outpost host to commit {tip}.\n\
         They were exported by host {} on {}.\n\
         \n\
         On the host to update: plug in this stick (outpost takes it by itself when its USB\n\
         rule is installed), or mount it and run\n\
         \n\
         \x20   outpost import /media/usb --report\n\
         \n\
         Every bundle and its .sig are checked against that host's own allowed signers; nothing\n\
         here is trusted because of where it came from. The host writes its report into\n\
         outpost/reports/ on the stick.\n",
        crate::text::escape(config.host_name()),
        crate::text::rfc3339_u(crate::store::now())
    )
}
