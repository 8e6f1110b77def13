//! The host filesystem under the host root: the only code in outpost that touches it.
//!
//! The root is opened once. A host path's directories are resolved beneath it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so a symlink
//! anywhere above a host path is an error, never followed, and nothing outside the root is
//! reached. The last component is then handled by a single name relative to the open parent
//! directory, with calls that do not follow a symlink there (`AT_SYMLINK_NOFOLLOW`,
//! `O_NOFOLLOW`, or by nature: unlinkat, renameat, symlinkat, mkdirat, readlinkat).
//!
//! Open directories are cached (at most [`MAX_CACHED_DIRS`]), so a pass over 10,000 files
//! resolves each directory once and stats each file with one `fstatat`. The cache assumes no
//! one else renames or replaces directories under the root while a [`HostFs`] lives: open one
//! per reconcile pass, not one per daemon.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::sys::statvfs::{FsFlags, fstatvfs};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, fsync, symlinkat, unlinkat};

use crate::manifest::HostPath;

mod error;
mod write;

pub use error::FsError;
use write::{check_replaceable, create_temp, fill, open_temp, rename_into_place};

/// How many open directories a [`HostFs`] keeps.
pub const MAX_CACHED_DIRS: usize = 256;

/// Names starting with this are outpost's temporary files; see [`HostFs::remove_temp_files`].
pub const TEMP_PREFIX: &str = ".outpost-tmp.";

/// Longest file name Linux filesystems take.
const NAME_MAX: usize = 255;

/// What a host path is, not following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// The lstat data of a host path: what the no-op path compares with its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    /// Permission bits, with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the epoch, saturated outside ±292 years.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Stat {
    // The field types of `struct stat` differ between targets.
    #[allow(clippy::useless_conversion)]
    fn from_raw(st: &FileStat) -> Self {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Self {
            kind: kind_of(st.st_mode),
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ns: ns(i64::from(st.st_mtime), i64::from(st.st_mtime_nsec)),
            ctime_ns: ns(i64::from(st.st_ctime), i64::from(st.st_ctime_nsec)),
            ino: u64::from(st.st_ino),
            dev: u64::from(st.st_dev),
        }
    }
}

fn kind_of(st_mode: u32) -> Kind {
    match SFlag::from_bits_truncate(st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Directory,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// What a restored file gets besides content, mode and owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Modification time, ns since the epoch.
    pub mtime_ns: Option<i64>,
    /// Extended attributes, `security.capability` included.
    pub xattrs: Vec<Xattr>,
}

/// An extended attribute: (name, value).
pub type Xattr = (Vec<u8>, Vec<u8>);

/// A regular file opened for reading (never through a symlink), with what is kept of it
/// besides its content.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    pub stat: Stat,
    pub extras: Extras,
    /// Hard links to it (1: none besides this name).
    pub links: u64,
}

/// What a preflight check needs of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    /// The device of the directory looked at: paths on the same filesystem share it.
    pub dev: u64,
    /// Bytes available to an unprivileged writer (the root reserve is left alone).
    pub available: u64,
    pub read_only: bool,
}

/// A host root opened once; every operation resolves beneath it and never follows a symlink.
#[derive(Debug)]
pub struct HostFs {
    root: OwnedFd,
    /// Open directories (`O_RDONLY | O_DIRECTORY`), keyed by host path; only successful opens.
    dirs: HashMap<PathBuf, OwnedFd>,
}

/// A file written beside its destination by [`HostFs::stage_file`], waiting for
/// [`HostFs::commit_staged`].
#[derive(Debug)]
pub struct Staged {
    pub path: HostPath,
    temp: OsString,
    /// The filesystem it is on: one barrier each.
    dev: u64,
}

impl HostFs {
    /// Opens `root` (following symlinks in `root` itself: it comes from the config).
    pub fn open(root: &Path) -> Result<Self, FsError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root_fd =
            nix::fcntl::open(root, flags, Mode::empty()).map_err(|source| FsError::OpenRoot {
                root: root.to_owned(),
                source,
            })?;
        // Fail here, with a clear message, on a kernel (or seccomp filter) without openat2.
        open_beneath(
            root_fd.as_fd(),
            Path::new("."),
            OFlag::O_PATH,
            Mode::empty(),
        )
        .map_err(|source| match source {
            Errno::ENOSYS => FsError::Openat2Unsupported { source },
            source => FsError::OpenRoot {
                root: root.to_owned(),
                source,
            },
        })?;
        Ok(Self {
            root: root_fd,
            dirs: HashMap::new(),
        })
    }

    /// lstat of a host path: `None` when it or its directory is missing.
    pub fn stat(&mut self, path: &HostPath) -> Result<Option<Stat>, FsError> {
        let parent = match self.parent(path) {
            Err(FsError::ParentMissing { .. }) => return Ok(None),
            other => other?,
        };
        match fstatat(parent, file_name(path), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Stat::from_raw(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(source) => Err(FsError::Stat {
                path: path.clone(),
                source,
            }),
        }
    }

    /// A regular file's bytes, at most `max` of them.
    pub fn read(&mut self, path: &HostPath, max: u64) -> Result<Vec<u8>, FsError> {
        let open = self.open_file(path, max, false)?;
        // The file may grow after the fstat: read one byte past `max` to notice.
        let mut bytes = Vec::with_capacity(usize::try_from(open.stat.size).unwrap_or(0));
        open.file
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| FsError::Read {
                path: path.clone(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)),
            })?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
            return Err(FsError::TooLarge {
                path: path.clone(),
                max,
            });
        }
        Ok(bytes)
    }

    /// A regular file of at most `max` bytes, opened for reading in pieces.
    pub fn open_regular(&mut self, path: &HostPath, max: u64) -> Result<OpenFile, FsError> {
        self.open_file(path, max, false)
    }

    /// A regular file of at most `max` bytes, opened, with its stat data, link count,
    /// modification time and extended attributes: what is kept of a file outpost takes over.
    /// Its content is for the caller to read, in pieces.
    pub fn open_original(&mut self, path: &HostPath, max: u64) -> Result<OpenFile, FsError> {
        self.open_file(path, max, true)
    }

    fn open_file(&mut self, path: &HostPath, max: u64, extras: bool) -> Result<OpenFile, FsError> {
        let parent = self.parent(path)?;
        let err = |source| FsError::Read {
            path: path.clone(),
            source,
        };
        // O_NONBLOCK: a fifo put there must not hang the agent.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = open_beneath(parent, Path::new(file_name(path)), flags, Mode::empty()).map_err(
            |e| match e {
                Errno::ELOOP => FsError::IsSymlink { path: path.clone() },
                e => err(e),
            },
        )?;
        let raw = fstat(&fd).map_err(err)?;
        let st = Stat::from_raw(&raw);
        if st.kind != Kind::File {
            return Err(FsError::NotRegularFile { path: path.clone() });
        }
        if st.size > max {
            return Err(FsError::TooLarge {
                path: path.clone(),
                max,
            });
        }
        let kept = if extras {
            Extras {
                mtime_ns: Some(st.mtime_ns),
                xattrs: read_xattrs(&fd).map_err(|source| FsError::ReadXattrs {
                    path: path.clone(),
                    source,
                })?,
            }
        } else {
            Extras::default()
        };
        // The field type of `st_nlink` differs between targets.
        #[allow(clippy::useless_conversion)]
        let links = u64::from(raw.st_nlink);
        Ok(OpenFile {
            file: File::from(fd),
            stat: st,
            extras: kept,
            links,
        })
    }

    /// The target of a symlink, as stored.
    pub fn read_link(&mut self, path: &HostPath) -> Result<PathBuf, FsError> {
        let parent = self.parent(path)?;
        readlinkat(parent, file_name(path))
            .map(PathBuf::from)
            .map_err(|source| FsError::ReadLink {
                path: path.clone(),
                source,
            })
    }

    /// Entries directly below a directory: names without `.` and `..`, sorted by bytes, kinds
    /// not following symlinks.
    pub fn list(&mut self, dir: &HostPath) -> Result<Vec<(OsString, Kind)>, FsError> {
        let err = |source| FsError::List {
            path: dir.clone(),
            source,
        };
        let fd = self
            .dir(dir.as_path())
            .map_err(|e| dir_error(dir, e, err))?;
        entries(fd).map_err(err)
    }

    /// Atomically replaces `path` with a regular file holding `bytes`, owned by `owner` (when
    /// given) with permission bits `mode & 0o7777`: a temporary file in the same directory,
    /// written, chowned, chmodded and fsynced, then renamed over `path`. Returns the new file's
    /// stat. The directory is not fsynced: call [`HostFs::sync_dir`] once per directory after a
    /// batch. A directory or mount point at `path` is refused before anything is written; a
    /// symlink there is replaced, never followed. On any error the temporary file is removed,
    /// and a failed fsync is never retried.
    pub fn write_file(
        &mut self,
        path: &HostPath,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Stat, FsError> {
        self.write_file_from(path, &mut &bytes[..], mode, owner, &Extras::default())
    }

    /// [`HostFs::write_file`] with the content read from `source` in pieces (memory bounded
    /// by a buffer), the new file also getting `extras`: extended attributes after the owner
    /// (a chown clears `security.capability`), the modification time last.
    pub fn write_file_from(
        &mut self,
        path: &HostPath,
        source: &mut dyn Read,
        mode: u32,
        owner: Option<(u32, u32)>,
        extras: &Extras,
    ) -> Result<Stat, FsError> {
        let parent = self.parent(path)?;
        let name = file_name(path);
        check_replaceable(parent, name, path)?;
        let (temp, fd) = open_temp(parent, path)?;
        let placed = fill(&fd, path, source, mode, owner, extras, true)
            .and_then(|()| rename_into_place(parent, &temp, name, path));
        if let Err(e) = placed {
            let _ = unlinkat(parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        // After the rename, which changes the file's ctime on most filesystems.
        let st = fstat(&fd).map_err(|source| FsError::Stat {
            path: path.clone(),
            source,
        })?;
        Ok(Stat::from_raw(&st))
    }

    /// The first half of [`HostFs::write_file`] for a batch: the temporary file beside `path`
    /// is written, chowned and chmodded, but neither made durable nor moved into place. See
    /// [`HostFs::commit_staged`]. On an error the temporary file is removed.
    pub fn stage_file(
        &mut self,
        path: &HostPath,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Staged, FsError> {
        let parent = self.parent(path)?;
        let name = file_name(path);
        check_replaceable(parent, name, path)?;
        let (temp, fd) = open_temp(parent, path)?;
        let filled = fill(
            &fd,
            path,
            &mut &bytes[..],
            mode,
            owner,
            &Extras::default(),
            false,
        )
        .and_then(|()| {
            fstat(&fd).map_err(|source| FsError::Stat {
                path: path.clone(),
                source,
            })
        });
        match filled {
            Ok(st) => Ok(Staged {
                path: path.clone(),
                temp,
                dev: st.st_dev,
            }),
            Err(e) => {
                let _ = unlinkat(parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                Err(e)
            }
        }
    }

    /// Puts a batch of staged files in place, crash-safe: first one `syncfs` per filesystem
    /// the batch is on makes every temporary file's content, owner and mode durable (the
    /// barrier); only then is each renamed over its destination. A crash before or during
    /// the barrier leaves every destination as it was (the temporary files are removed by the
    /// next apply); a crash during the renames leaves each destination either old or, renamed,
    /// new and already durable: never a new name for content that is not on the disk. The
    /// renames themselves are made durable by the caller, once for the whole deployment
    /// ([`HostFs::sync_dirs`]); one lost in a crash leaves the old file, whole.
    ///
    /// One `syncfs` replaces an `fsync` per file (as dpkg does for a package's files). `done`
    /// gets each file once it is in place, by its index in `batch`, with its stat. On an error
    /// the files not yet in place keep their destination unchanged and their temporary files
    /// are removed.
    /// `abort_at_barrier` is a test hook: a crash right after the barrier.
    pub fn commit_staged(
        &mut self,
        batch: Vec<Staged>,
        done: &mut dyn FnMut(usize, Stat),
        abort_at_barrier: bool,
    ) -> Result<(), FsError> {
        let mut synced: Vec<u64> = Vec::new();
        let mut result = Ok(());
        for staged in &batch {
            if synced.contains(&staged.dev) {
                continue;
            }
            synced.push(staged.dev);
            let barrier = self.parent(&staged.path).and_then(|parent| {
                nix::unistd::syncfs(parent).map_err(|source| FsError::SyncFile {
                    path: staged.path.clone(),
                    source,
                })
            });
            if let Err(e) = barrier {
                result = Err(e);
                break;
            }
        }
        if abort_at_barrier && result.is_ok() {
            std::process::abort();
        }
        let mut rest = batch.into_iter().enumerate();
        if result.is_ok() {
            for (i, staged) in rest.by_ref() {
                let placed = self.parent(&staged.path).and_then(|parent| {
                    rename_into_place(parent, &staged.temp, file_name(&staged.path), &staged.path)
                });
                if let Err(e) = placed {
                    self.discard(&staged);
                    result = Err(e);
                    break;
                }
                // After the rename, which changes the file's ctime on most filesystems.
                match self.stat(&staged.path) {
                    Ok(Some(st)) => done(i, st),
                    Ok(None) => {
                        result = Err(FsError::Stat {
                            path: staged.path.clone(),
                            source: Errno::ENOENT,
                        });
                        break;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        for (_, staged) in rest {
            self.discard(&staged);
        }
        result
    }

    /// Removes a staged file that will not be put in place.
    pub fn discard(&mut self, staged: &Staged) {
        if let Ok(parent) = self.parent(&staged.path) {
            let _ = unlinkat(parent, staged.temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// Makes `path` a directory with exactly `mode & 0o7777` (not masked by the umask) and
    /// `owner` when given; an existing directory is kept and gets the mode and owner, so a
    /// resumed apply can repeat it. The parent is not fsynced: see [`HostFs::sync_dir`].
    pub fn create_dir(
        &mut self,
        path: &HostPath,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), FsError> {
        let parent = self.parent(path)?;
        let err = |source| FsError::CreateDir {
            path: path.clone(),
            source,
        };
        match mkdirat(parent, file_name(path), Mode::S_IRWXU) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(e)),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let fd = open_beneath(parent, Path::new(file_name(path)), flags, Mode::empty()).map_err(
            |e| match e {
                Errno::ENOTDIR | Errno::ELOOP => FsError::NotDirectory { path: path.clone() },
                e => err(e),
            },
        )?;
        if let Some((uid, gid)) = owner {
            fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|source| set_owner_error(path, uid, gid, source))?;
        }
        fchmod(&fd, mode_bits(mode)).map_err(|source| set_mode_error(path, mode, source))?;
        self.remember(path.as_path().to_owned(), fd);
        Ok(())
    }

    /// Sets the permission bits of a file or directory to `mode & 0o7777`. A symlink is refused
    /// (its own mode means nothing on Linux, and its target is never followed), as are devices,
    /// fifos and sockets, which are never opened. Setting the owner clears setuid and setgid:
    /// call [`HostFs::set_owner`] first.
    pub fn set_mode(&mut self, path: &HostPath, mode: u32) -> Result<(), FsError> {
        let parent = self.parent(path)?;
        let err = |source| set_mode_error(path, mode, source);
        let name = file_name(path);
        let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(err)?;
        let flags = match kind_of(st.st_mode) {
            Kind::File => OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Kind::Directory => OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Kind::Symlink => return Err(FsError::IsSymlink { path: path.clone() }),
            Kind::Other => return Err(FsError::SpecialFile { path: path.clone() }),
        };
        // O_NOFOLLOW again: the entry may have been swapped for a symlink since the fstatat.
        let fd = open_beneath(
            parent,
            Path::new(name),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => FsError::IsSymlink { path: path.clone() },
            e => err(e),
        })?;
        fchmod(&fd, mode_bits(mode)).map_err(err)
    }

    /// Sets the owner of `path` itself (of a symlink, the link's own owner).
    pub fn set_owner(&mut self, path: &HostPath, uid: u32, gid: u32) -> Result<(), FsError> {
        let parent = self.parent(path)?;
        fchownat(
            parent,
            file_name(path),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|source| set_owner_error(path, uid, gid, source))
    }

    /// Atomically makes `path` a symlink to `target`: a temporary symlink renamed over it. A
    /// directory or mount point at `path` is refused. The directory is not fsynced.
    pub fn symlink(&mut self, path: &HostPath, target: &Path) -> Result<(), FsError> {
        let parent = self.parent(path)?;
        let name = file_name(path);
        check_replaceable(parent, name, path)?;
        let (temp, ()) =
            create_temp(path, |temp| symlinkat(target, parent, temp)).map_err(|e| match e {
                FsError::CreateTemp { path, source } => FsError::Symlink { path, source },
                e => e,
            })?;
        let result = rename_into_place(parent, &temp, name, path);
        if result.is_err() {
            let _ = unlinkat(parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    /// Removes a file, symlink (never its target) or empty directory: `Ok(true)` when `path`
    /// is gone (also when it was missing), `Ok(false)` for a directory that is not empty,
    /// which is left in place.
    pub fn remove(&mut self, path: &HostPath) -> Result<bool, FsError> {
        let parent = match self.parent(path) {
            Err(FsError::ParentMissing { .. }) => return Ok(true),
            other => other?,
        };
        let name = file_name(path);
        let err = |source| FsError::Remove {
            path: path.clone(),
            source,
        };
        match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(true),
            Err(Errno::EISDIR) => {}
            Err(e) => return Err(err(e)),
        }
        match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {
                self.dirs.retain(|dir, _| !dir.starts_with(path.as_path()));
                Ok(true)
            }
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// fsyncs a directory (a `&HostPath`, or `None` for the host root), making the renames and
    /// removals in it durable. Call it once per directory after a batch of changes in it.
    pub fn sync_dir<'a>(&mut self, dir: impl Into<Option<&'a HostPath>>) -> Result<(), FsError> {
        let dir = dir.into();
        let fd = self.dir_to_sync(dir)?;
        fsync(fd).map_err(sync_error(dir))
    }

    /// Makes the renames and removals in `dirs` durable (`None`: the host root). On a
    /// filesystem where a deployment touched few directories each is fsynced; where it touched
    /// more, one `syncfs` flushes them together: it writes back every dirty inode and
    /// directory entry of that filesystem and waits for them, as an fsync of each directory
    /// would, at the cost of one journal commit instead of one per directory (measured on
    /// ext4: 100 directories, 15 ms against 1.2 ms). Either way every rename before the call
    /// is on the disk once it returns.
    pub fn sync_dirs<'a>(
        &mut self,
        dirs: impl IntoIterator<Item = Option<&'a HostPath>>,
    ) -> Result<(), FsError> {
        const FEW: usize = 4;
        let mut by_fs: Vec<(u64, Vec<Option<&HostPath>>)> = Vec::new();
        for dir in dirs {
            let fd = self.dir_to_sync(dir)?;
            let dev = fstat(fd).map_err(sync_error(dir))?.st_dev;
            match by_fs.iter_mut().find(|(d, _)| *d == dev) {
                Some((_, list)) => list.push(dir),
                None => by_fs.push((dev, vec![dir])),
            }
        }
        for (_, list) in by_fs {
            if list.len() <= FEW {
                for dir in list {
                    self.sync_dir(dir)?;
                }
                continue;
            }
            let fd = self.dir_to_sync(list[0])?;
            nix::unistd::syncfs(fd).map_err(sync_error(list[0]))?;
        }
        Ok(())
    }

    /// The open directory `dir` (`None`: the host root), to be synced.
    fn dir_to_sync(&mut self, dir: Option<&HostPath>) -> Result<BorrowedFd<'_>, FsError> {
        match dir {
            None => Ok(self.root.as_fd()),
            Some(d) => self
                .dir(d.as_path())
                .map_err(|e| dir_error(d, e, sync_error(dir))),
        }
    }

    /// Whether the filesystem that holds (or would hold) `path` is mounted read-only: the one
    /// of its nearest existing directory. A preflight check before any change.
    pub fn read_only(&mut self, path: &HostPath) -> Result<bool, FsError> {
        Ok(self.filesystem(path)?.read_only)
    }

    /// The filesystem that holds (or would hold) `path`: the one of its nearest existing
    /// directory.
    pub fn filesystem(&mut self, path: &HostPath) -> Result<Filesystem, FsError> {
        let err = |source| FsError::StatFs {
            path: path.clone(),
            source,
        };
        let mut dir = path.as_path();
        loop {
            // Ends at the root, which is always open.
            dir = dir.parent().unwrap_or(Path::new("/"));
            match self.dir(dir) {
                Ok(_) => break,
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(dir_error(path, e, err)),
            }
        }
        let fd = self.dir(dir).map_err(err)?;
        let vfs = fstatvfs(fd).map_err(err)?;
        let st = fstat(fd).map_err(err)?;
        // The field types of `struct statvfs` differ between targets.
        #[allow(clippy::useless_conversion)]
        let available =
            u64::from(vfs.blocks_available()).saturating_mul(u64::from(vfs.fragment_size()));
        #[allow(clippy::useless_conversion)]
        let dev = u64::from(st.st_dev);
        Ok(Filesystem {
            dev,
            available,
            read_only: vfs.flags().contains(FsFlags::ST_RDONLY),
        })
    }

    /// Removes the entries named `.outpost-tmp.*` directly in `dir` (a `&HostPath`, or `None`
    /// for the host root), left by an interrupted apply; returns how many were removed.
    /// Directories are skipped.
    pub fn remove_temp_files<'a>(
        &mut self,
        dir: impl Into<Option<&'a HostPath>>,
    ) -> Result<usize, FsError> {
        let dir = dir.into();
        let err = |source| FsError::RemoveTemp {
            dir: dir.cloned(),
            source,
        };
        let fd = match dir {
            None => self.root.as_fd(),
            Some(d) => self.dir(d.as_path()).map_err(|e| dir_error(d, e, err))?,
        };
        let mut removed = 0;
        for (name, kind) in entries(fd).map_err(err)? {
            if kind == Kind::Directory || !name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            match unlinkat(fd, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => removed += 1,
                Err(Errno::ENOENT | Errno::EISDIR) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(removed)
    }

    /// The open directory holding `path`.
    fn parent(&mut self, path: &HostPath) -> Result<BorrowedFd<'_>, FsError> {
        let dir = path.as_path().parent().unwrap_or(Path::new("/"));
        self.dir(dir).map_err(|e| match e {
            Errno::ENOENT => FsError::ParentMissing { path: path.clone() },
            Errno::ENOTDIR => FsError::ParentNotDirectory { path: path.clone() },
            e => dir_error(path, e, |source| FsError::OpenParent {
                path: path.clone(),
                source,
            }),
        })
    }

    /// The open directory at host path `dir` (`/`: the root), from the cache or resolved
    /// beneath the root and cached.
    fn dir(&mut self, dir: &Path) -> Result<BorrowedFd<'_>, Errno> {
        let Ok(relative) = dir.strip_prefix("/") else {
            return Err(Errno::EINVAL);
        };
        if relative.as_os_str().is_empty() {
            return Ok(self.root.as_fd());
        }
        if !self.dirs.contains_key(dir) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
            let fd = open_beneath(self.root.as_fd(), relative, flags, Mode::empty())?;
            self.remember(dir.to_owned(), fd);
        }
        // Present: found or just inserted.
        Ok(self.dirs[dir].as_fd())
    }

    fn remember(&mut self, dir: PathBuf, fd: OwnedFd) {
        if self.dirs.len() >= MAX_CACHED_DIRS
            && !self.dirs.contains_key(&dir)
            && let Some(evict) = self.dirs.keys().next().cloned()
        {
            self.dirs.remove(&evict);
        }
        self.dirs.insert(dir, fd);
    }
}

/// The extended attributes of an open file, by name.
fn read_xattrs(fd: &OwnedFd) -> Result<Vec<Xattr>, Errno> {
    let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
    let mut names = vec![0u8; 4096];
    let len = loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(len) => break len,
            Err(rustix::io::Errno::RANGE) if names.len() < 1 << 20 => {
                names.resize(names.len() * 4, 0);
            }
            // A filesystem without extended attributes has none to keep.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(errno(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let n = loop {
            match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if value.len() < 1 << 20 => {
                    value.resize(value.len() * 4, 0);
                }
                Err(e) => return Err(errno(e)),
            }
        };
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

/// `openat2` beneath `dir`, never following a symlink, close-on-exec.
fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    // EAGAIN: a concurrent rename made the kernel unsure the walk stayed beneath; it asks
    // for a retry.
    let mut attempts = 0;
    loop {
        match openat2(dir, path, how) {
            Err(Errno::EAGAIN) if attempts < 8 => attempts += 1,
            result => return result,
        }
    }
}

/// A failure to sync `dir` (`None`: the host root).
fn sync_error(dir: Option<&HostPath>) -> impl Fn(Errno) -> FsError + '_ {
    move |source| FsError::SyncDir {
        dir: dir.cloned(),
        source,
    }
}

/// Maps a failure to open a directory on the way to `path`.
fn dir_error(path: &HostPath, errno: Errno, other: impl FnOnce(Errno) -> FsError) -> FsError {
    match errno {
        // RESOLVE_NO_SYMLINKS met a symlink; EXDEV would be an escape from the root.
        Errno::ELOOP | Errno::EXDEV => FsError::SymlinkInPath { path: path.clone() },
        e => other(e),
    }
}

fn file_name(path: &HostPath) -> &OsStr {
    path.as_path()
        .file_name()
        .expect("a HostPath is normalised and not /, so it ends in a name")
}

fn mode_bits(mode: u32) -> Mode {
    Mode::from_bits_truncate(mode & 0o7777)
}

fn set_mode_error(path: &HostPath, mode: u32, source: Errno) -> FsError {
    FsError::SetMode {
        path: path.clone(),
        mode,
        source,
    }
}

fn set_owner_error(path: &HostPath, uid: u32, gid: u32, source: Errno) -> FsError {
    FsError::SetOwner {
        path: path.clone(),
        uid,
        gid,
        source,
    }
}

/// The entries of the open directory `dir`, sorted, read through a fresh open file
/// description so the cached fd's offset is never moved.
fn entries(dir: BorrowedFd<'_>) -> nix::Result<Vec<(OsString, Kind)>> {
    let fresh = open_beneath(
        dir,
        Path::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    let mut listing = Dir::from_fd(fresh)?;
    let mut out = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let kind = match entry.file_type() {
            Some(Type::File) => Kind::File,
            Some(Type::Directory) => Kind::Directory,
            Some(Type::Symlink) => Kind::Symlink,
            Some(_) => Kind::Other,
            // DT_UNKNOWN: some filesystems do not fill d_type.
            None => kind_of(fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?.st_mode),
        };
        out.push((name.to_owned(), kind));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests;
