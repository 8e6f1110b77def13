//! Reading a trusted commit's tree: manifest files, `file` sources and `tree` sources.
//!
//! Everything comes from the object store; a symlink or submodule in the repository is
//! reported, never followed.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::objs::tree::EntryKind as GitKind;

use super::path::check_tree_name;
use super::{Content, ManifestError, Problem};
use crate::repo::Reader;

/// The tree of one commit.
pub struct Snapshot<'r> {
    repo: &'r gix::Repository,
    commit: ObjectId,
    tree: gix::Tree<'r>,
}

/// A blob below a `tree` source, before modes are applied.
pub struct TreeBlob {
    pub path: PathBuf,
    pub content: Content,
    pub executable: bool,
}

fn cause(e: &gix::Error) -> String {
    e.probable_cause().to_string()
}

impl<'r> Snapshot<'r> {
    pub fn open(repo: &'r gix::Repository, commit: ObjectId) -> Result<Self, ManifestError> {
        let err = |e: gix::Error| ManifestError::ReadCommit {
            commit,
            message: cause(&e),
        };
        let tree = repo.find_commit(commit).map_err(err)?.tree().map_err(err)?;
        Ok(Self { repo, commit, tree })
    }

    pub fn commit(&self) -> ObjectId {
        self.commit
    }

    /// The text of manifest `file`, or `None` when the commit has no such file.
    pub fn read_text(&self, file: &str) -> Result<Option<String>, ManifestError> {
        let err = |message: String| ManifestError::ReadFile {
            file: file.to_owned(),
            commit: self.commit,
            message,
        };
        let Some((kind, oid)) = self.lookup(Path::new(file)).map_err(err)? else {
            return Ok(None);
        };
        if !matches!(kind, GitKind::Blob | GitKind::BlobExecutable) {
            return Err(err(
                format!("it is a {kind:?}, not a regular file").to_lowercase()
            ));
        }
        let blob = self.repo.find_blob(oid).map_err(|e| err(e.to_string()))?;
        String::from_utf8(blob.data.clone())
            .map(Some)
            .map_err(|_| err("it is not UTF-8 text".to_owned()))
    }

    /// The kind and id of the entry at `path`, if there is one.
    fn lookup(&self, path: &Path) -> Result<Option<(GitKind, ObjectId)>, String> {
        let entry = self
            .tree
            .lookup_entry_by_path(path)
            .map_err(|e| cause(&e))?;
        Ok(entry.map(|e| (e.mode().kind(), e.object_id())))
    }

    fn content(&self, oid: ObjectId, source: &str) -> Result<Content, Problem> {
        let header = self
            .repo
            .find_header(oid)
            .map_err(|e| Problem::ReadSource(source.to_owned(), e.to_string()))?;
        Ok(Content {
            oid,
            size: Some(header.size()),
        })
    }

    /// The blob a `file` entry's `source` names.
    pub fn file_source(&self, source: &Path) -> Result<Content, Problem> {
        let name = source.display().to_string();
        match self
            .lookup(source)
            .map_err(|m| Problem::ReadSource(name.clone(), m))?
        {
            None => Err(Problem::SourceMissing(name)),
            Some((GitKind::Blob | GitKind::BlobExecutable, oid)) => self.content(oid, &name),
            Some((GitKind::Tree, _)) => Err(Problem::SourceIsTree(name)),
            Some((GitKind::Link, oid)) => Err(Problem::SourceIsSymlink(name, self.link(oid))),
            Some((GitKind::Commit, _)) => Err(Problem::SourceIsSubmodule(name)),
        }
    }

    /// Every blob below the directory a `tree` entry's `source` names, sorted by path.
    pub fn tree_source(&self, source: &Path) -> Result<Vec<TreeBlob>, Problem> {
        let name = source.display().to_string();
        match self
            .lookup(source)
            .map_err(|m| Problem::ReadSource(name.clone(), m))?
        {
            None => Err(Problem::SourceMissing(name)),
            Some((GitKind::Tree, oid)) => {
                let mut blobs = Vec::new();
                let mut reader = Reader::new(self.repo, Reader::TREES);
                self.walk(&mut reader, oid, source, Path::new(""), &mut blobs)?;
                blobs.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(blobs)
            }
            Some((GitKind::Link, oid)) => Err(Problem::SourceIsSymlink(name, self.link(oid))),
            Some((GitKind::Commit, _)) => Err(Problem::SourceIsSubmodule(name)),
            Some(_) => Err(Problem::SourceNotTree(name)),
        }
    }

    fn walk(
        &self,
        reader: &mut Reader<'_>,
        tree: ObjectId,
        source: &Path,
        below: &Path,
        out: &mut Vec<TreeBlob>,
    ) -> Result<(), Problem> {
        let here = source.join(below).display().to_string();
        let read = |m: String| Problem::ReadSource(here.clone(), m);
        // Detached: the reader may drop its handle before the walk is below this tree.
        let data = reader
            .repo()
            .find_tree(tree)
            .map_err(|e| read(e.to_string()))?
            .detach()
            .data;
        let decoded =
            gix::objs::TreeRef::from_bytes(&data, tree.kind()).map_err(|e| read(e.to_string()))?;
        for entry in &decoded.entries {
            check_tree_name(entry.filename).map_err(|p| read(format!("a file name {p}")))?;
            let name = std::ffi::OsStr::from_bytes(entry.filename);
            let rel = below.join(name);
            let oid = entry.oid.to_owned();
            let full = || source.join(&rel).display().to_string();
            match entry.mode.kind() {
                GitKind::Tree => self.walk(reader, oid, source, &rel, out)?,
                kind @ (GitKind::Blob | GitKind::BlobExecutable) => out.push(TreeBlob {
                    path: rel,
                    content: Content { oid, size: None },
                    executable: kind == GitKind::BlobExecutable,
                }),
                GitKind::Link => return Err(Problem::SourceIsSymlink(full(), self.link(oid))),
                GitKind::Commit => return Err(Problem::SourceIsSubmodule(full())),
            }
        }
        Ok(())
    }

    /// A repository symlink's target, for messages.
    fn link(&self, oid: ObjectId) -> String {
        self.repo.find_blob(oid).map_or_else(
            |_| "an unreadable target".to_owned(),
            |b| String::from_utf8_lossy(&b.data).into_owned(),
        )
    }
}
