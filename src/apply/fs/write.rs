//! The pieces of an atomic replace: refuse what may not be replaced, create a temp file
//! beside the destination, fill it, move it into place.

use super::*;

/// Refuses to replace a directory or a mount point at `name`; a missing entry is fine.
///
/// Mount points are found by the kernel (`RESOLVE_NO_XDEV` fails with EXDEV when the name is
/// one), not by comparing `st_dev`: on overlayfs a file's `st_dev` may differ from its
/// directory's, and a bind mount from the same filesystem has the same `st_dev`.
pub(super) fn check_replaceable(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &HostPath,
) -> Result<(), FsError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = match openat2(parent, Path::new(name), how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EXDEV) => return Err(FsError::MountPoint { path: path.clone() }),
        Err(source) => {
            return Err(FsError::Stat {
                path: path.clone(),
                source,
            });
        }
    };
    let st = fstat(&fd).map_err(|source| FsError::Stat {
        path: path.clone(),
        source,
    })?;
    if kind_of(st.st_mode) == Kind::Directory {
        return Err(FsError::IsDirectory { path: path.clone() });
    }
    Ok(())
}

/// `.outpost-tmp.<name>.<16 hex digits>`, the name cut so the whole fits in NAME_MAX.
pub(super) fn temp_name(name: &OsStr) -> OsString {
    // Each RandomState has fresh keys; the counter only keeps two calls apart in any case.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let random = RandomState::new().hash_one(CALLS.fetch_add(1, Ordering::Relaxed));
    let suffix = format!(".{random:016x}");
    let keep = name.len().min(NAME_MAX - TEMP_PREFIX.len() - suffix.len());
    // Exactly sized: a batch holds thousands of these until it is renamed into place.
    let mut temp = Vec::with_capacity(TEMP_PREFIX.len() + keep + suffix.len());
    temp.extend_from_slice(TEMP_PREFIX.as_bytes());
    temp.extend_from_slice(&name.as_bytes()[..keep]);
    temp.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(temp)
}

/// Creates a fresh temporary name next to `path` with `create`, retrying on a name clash.
pub(super) fn create_temp<T>(
    path: &HostPath,
    mut create: impl FnMut(&OsStr) -> nix::Result<T>,
) -> Result<(OsString, T), FsError> {
    let mut attempts = 0;
    loop {
        let temp = temp_name(file_name(path));
        match create(&temp) {
            Ok(made) => return Ok((temp, made)),
            Err(Errno::EEXIST) if attempts < 16 => attempts += 1,
            Err(source) => {
                return Err(FsError::CreateTemp {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
}

/// Creates a new private temporary file beside `path` in its directory `parent`.
pub(super) fn open_temp(
    parent: BorrowedFd<'_>,
    path: &HostPath,
) -> Result<(OsString, OwnedFd), FsError> {
    create_temp(path, |temp| {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        open_beneath(
            parent,
            Path::new(temp),
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
    })
}

/// Writes, chowns, chmods and sets the extras of the open temporary file, and fsyncs it when
/// `sync` (a batch is made durable together instead: [`HostFs::commit_staged`]).
pub(super) fn fill(
    fd: &OwnedFd,
    path: &HostPath,
    source: &mut dyn Read,
    mode: u32,
    owner: Option<(u32, u32)>,
    extras: &Extras,
    sync: bool,
) -> Result<(), FsError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FsError::Source {
                    path: path.clone(),
                    source,
                });
            }
        };
        write_all(fd, path, &buf[..n])?;
    }
    // Owner before mode: chown clears setuid and setgid.
    if let Some((uid, gid)) = owner {
        fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|source| set_owner_error(path, uid, gid, source))?;
    }
    fchmod(fd, mode_bits(mode)).map_err(|source| set_mode_error(path, mode, source))?;
    for (name, value) in &extras.xattrs {
        rustix::fs::fsetxattr(fd, name.as_slice(), value, rustix::fs::XattrFlags::empty())
            .map_err(|e| FsError::SetXattr {
                path: path.clone(),
                name: String::from_utf8_lossy(name).into_owned(),
                source: Errno::from_raw(e.raw_os_error()),
            })?;
    }
    if let Some(mtime) = extras.mtime_ns {
        let spec = |ns: i64| {
            nix::sys::time::TimeSpec::new(
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000),
            )
        };
        nix::sys::stat::futimens(fd, &nix::sys::time::TimeSpec::UTIME_OMIT, &spec(mtime)).map_err(
            |source| FsError::SetTimes {
                path: path.clone(),
                source,
            },
        )?;
    }
    if sync {
        fsync(fd).map_err(|source| FsError::SyncFile {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn write_all(fd: &OwnedFd, path: &HostPath, bytes: &[u8]) -> Result<(), FsError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match nix::unistd::write(fd, rest) {
            Ok(0) => {
                return Err(FsError::Write {
                    path: path.clone(),
                    source: Errno::EIO,
                });
            }
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(source) => {
                return Err(FsError::Write {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

pub(super) fn rename_into_place(
    parent: BorrowedFd<'_>,
    temp: &OsStr,
    name: &OsStr,
    path: &HostPath,
) -> Result<(), FsError> {
    renameat(parent, temp, parent, name).map_err(|source| match source {
        // Changed since the check: a directory, or a mount point the kernel will not replace.
        Errno::EISDIR => FsError::IsDirectory { path: path.clone() },
        Errno::EBUSY => FsError::MountPoint { path: path.clone() },
        source => FsError::Rename {
            path: path.clone(),
            source,
        },
    })
}
