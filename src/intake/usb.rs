//! `outpost usb DEVICE`: a stick is the whole interface. The device is mounted read-only,
//! `nosuid,nodev,noexec`, in a private directory under `usb.mount_dir`, its bundles imported
//! like `import` does (each is staged whole before it is judged, so a stick pulled mid-import
//! leaves nothing half-imported), then, with `usb.report`, the filesystem is remounted
//! read-write only to write this host's report, synced, and unmounted. The device is unmounted
//! whatever happens.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{IntakeError, Report};
use crate::config::Config;
use crate::trust::TrustPolicy;

#[derive(Debug, thiserror::Error)]
pub enum UsbError {
    #[error("cannot use {path}")]
    Device {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a block device; give the stick's device, e.g. /dev/sdb1")]
    NotABlockDevice { path: PathBuf },
    #[error(
        "{path} is already mounted at {mount}; unmount it first, or run `outpost import {mount} --report`"
    )]
    Mounted { path: PathBuf, mount: String },
    #[error(
        "{path} holds no filesystem outpost can mount (tried {tried}); is it the stick's partition?"
    )]
    NoFilesystem { path: PathBuf, tried: String },
    #[error("cannot prepare the mount point in {path}")]
    MountPoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remount {path} read-write to write the report")]
    Remount { path: PathBuf, source: nix::Error },
    #[error(transparent)]
    Intake(#[from] IntakeError),
}

/// What a plug of a stick did.
#[derive(Debug)]
pub struct Plugged {
    pub reports: Vec<Report>,
    /// Where the report went, or why it was not written.
    pub report: Option<Result<PathBuf, String>>,
}

/// Mounts `device`, imports its bundles, writes the report, unmounts.
pub fn usb(config: &Config, policy: &TrustPolicy, device: &Path) -> Result<Plugged, UsbError> {
    let device_err = |source| UsbError::Device {
        path: device.to_owned(),
        source,
    };
    let meta = std::fs::metadata(device).map_err(device_err)?;
    if !meta.file_type().is_block_device() {
        return Err(UsbError::NotABlockDevice {
            path: device.to_owned(),
        });
    }
    if let Some(mount) = mounted_at(meta.rdev()).map_err(device_err)? {
        return Err(UsbError::Mounted {
            path: device.to_owned(),
            mount,
        });
    }
    let base = &config.usb.mount_dir;
    let point_err = |source| UsbError::MountPoint {
        path: base.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .map_err(point_err)?;
    let point = tempfile::Builder::new()
        .prefix("usb.")
        .tempdir_in(base)
        .map_err(point_err)?;
    let mounted = Mounted::new(device, point.path())?;
    tracing::info!(device = %device.display(), at = %point.path().display(), "stick mounted read-only");
    let files = super::collect(std::slice::from_ref(&mounted.path))?;
    let reports = if files.is_empty() {
        Vec::new()
    } else {
        super::import(config, policy, &files)?
    };
    let report = config.usb.report.then(|| mounted.write_report(config));
    drop(mounted);
    Ok(Plugged { reports, report })
}

/// A mounted stick, unmounted on drop.
struct Mounted {
    path: PathBuf,
}

/// The flags every mount of a stick gets.
fn safe_flags() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

impl Mounted {
    /// Mounts `device` read-only at `path`, trying each block filesystem the kernel knows.
    fn new(device: &Path, path: &Path) -> Result<Self, UsbError> {
        let types = filesystems();
        for fstype in &types {
            let flags = safe_flags() | MsFlags::MS_RDONLY;
            if nix::mount::mount(
                Some(device),
                path,
                Some(fstype.as_str()),
                flags,
                None::<&str>,
            )
            .is_ok()
            {
                return Ok(Self {
                    path: path.to_owned(),
                });
            }
        }
        Err(UsbError::NoFilesystem {
            path: device.to_owned(),
            tried: types.join(", "),
        })
    }

    /// Remounts read-write just for the report, writes it, syncs the filesystem.
    fn write_report(&self, config: &Config) -> Result<PathBuf, String> {
        nix::mount::mount(
            None::<&str>,
            &self.path,
            None::<&str>,
            MsFlags::MS_REMOUNT | safe_flags(),
            None::<&str>,
        )
        .map_err(|source| {
            let e = UsbError::Remount {
                path: self.path.clone(),
                source,
            };
            format!("{:#}", anyhow::Error::from(e))
        })?;
        let written = crate::report::write(config, &self.path)
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        if let Ok(dir) = std::fs::File::open(&self.path) {
            let _ = nix::unistd::syncfs(&dir);
        }
        written
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::empty()) {
            tracing::warn!(at = %self.path.display(), error = %e, "stick busy; detaching it");
            let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
        }
    }
}

/// The block filesystems the kernel knows (`/proc/filesystems` without `nodev`), the common
/// stick formats first.
fn filesystems() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let mut types: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_owned())
        .filter(|t| !t.is_empty() && t != "fuseblk")
        .collect();
    let rank = |t: &String| {
        ["vfat", "exfat", "ext4", "ext3", "ext2"]
            .iter()
            .position(|c| c == t)
            .unwrap_or(usize::MAX)
    };
    types.sort_by_key(rank);
    types
}

/// Where the device `rdev` is mounted, if anywhere (`/proc/self/mountinfo`).
fn mounted_at(rdev: u64) -> std::io::Result<Option<String>> {
    let want = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let _root = fields.next()?;
        let point = fields.next()?;
        (dev == want).then(|| point.replace("\\040", " "))
    }))
}
