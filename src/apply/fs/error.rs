//! What can go wrong under the host root, always naming the host path.

use std::path::PathBuf;

use nix::errno::Errno;

use crate::manifest::HostPath;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot open host root {root}; check host.root in the config")]
    OpenRoot { root: PathBuf, source: Errno },
    #[error("the kernel cannot resolve paths safely (openat2 needs Linux 5.6 or newer)")]
    Openat2Unsupported { source: Errno },
    #[error("{path} is below a symlink, which outpost never follows; make it a real directory")]
    SymlinkInPath { path: HostPath },
    #[error("a path component above {path} is not a directory")]
    ParentNotDirectory { path: HostPath },
    #[error("the directory holding {path} does not exist; declare it in the manifest")]
    ParentMissing { path: HostPath },
    #[error("cannot open a directory above {path}")]
    OpenParent { path: HostPath, source: Errno },
    #[error("cannot stat {path}")]
    Stat { path: HostPath, source: Errno },
    #[error("cannot read {path}")]
    Read { path: HostPath, source: Errno },
    #[error("{path} is not a regular file")]
    NotRegularFile { path: HostPath },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: HostPath, max: u64 },
    #[error("cannot read the extended attributes of {path}")]
    ReadXattrs { path: HostPath, source: Errno },
    #[error("cannot set extended attribute {name} on {path}")]
    SetXattr {
        path: HostPath,
        name: String,
        source: Errno,
    },
    #[error("cannot set the modification time of {path}")]
    SetTimes { path: HostPath, source: Errno },
    #[error("cannot read symlink {path}")]
    ReadLink { path: HostPath, source: Errno },
    #[error("cannot list directory {path}")]
    List { path: HostPath, source: Errno },
    #[error("{path} is a directory; remove it or change the manifest")]
    IsDirectory { path: HostPath },
    #[error("{path} is a mount point; unmount it or change the manifest")]
    MountPoint { path: HostPath },
    #[error("{path} is a symlink and outpost never follows one")]
    IsSymlink { path: HostPath },
    #[error("{path} is a device, fifo or socket; remove it or change the manifest")]
    SpecialFile { path: HostPath },
    #[error("cannot create a temporary file next to {path}")]
    CreateTemp { path: HostPath, source: Errno },
    #[error("cannot write {path}")]
    Write { path: HostPath, source: Errno },
    #[error("cannot flush {path} to disk")]
    SyncFile { path: HostPath, source: Errno },
    #[error("cannot move the new {path} into place")]
    Rename { path: HostPath, source: Errno },
    #[error("cannot set the owner of {path} to {uid}:{gid}")]
    SetOwner {
        path: HostPath,
        uid: u32,
        gid: u32,
        source: Errno,
    },
    #[error("cannot set the mode of {path} to {mode:04o}")]
    SetMode {
        path: HostPath,
        mode: u32,
        source: Errno,
    },
    #[error("cannot create directory {path}")]
    CreateDir { path: HostPath, source: Errno },
    #[error("{path} exists and is not a directory; remove it or change the manifest")]
    NotDirectory { path: HostPath },
    #[error("cannot create symlink {path}")]
    Symlink { path: HostPath, source: Errno },
    #[error("cannot remove {path}")]
    Remove { path: HostPath, source: Errno },
    #[error("cannot flush directory {} to disk", show_dir(.dir.as_ref()))]
    SyncDir {
        dir: Option<HostPath>,
        source: Errno,
    },
    #[error("cannot check whether the filesystem holding {path} is read-only")]
    StatFs { path: HostPath, source: Errno },
    #[error("cannot remove temporary files in {}", show_dir(.dir.as_ref()))]
    RemoveTemp {
        dir: Option<HostPath>,
        source: Errno,
    },
}

fn show_dir(dir: Option<&HostPath>) -> String {
    dir.map_or_else(|| "/".to_owned(), HostPath::to_string)
}
