//! HostFs against real temp dirs: atomic writes, symlink escapes, mount points.

use std::error::Error;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::process::Command;

use super::write::temp_name;
use super::*;

type TestResult = Result<(), Box<dyn Error>>;

/// A host root `root/` with `root/etc`, and a sibling `outside/` nothing may touch.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    fs: HostFs,
}

fn fixture() -> Result<Fixture, Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(root.join("etc"))?;
    fs::create_dir(&outside)?;
    let fs = HostFs::open(&root)?;
    Ok(Fixture {
        _tmp: tmp,
        root,
        outside,
        fs,
    })
}

fn hp(raw: &str) -> HostPath {
    HostPath::parse(raw).expect("test paths are valid host paths")
}

fn names(dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    names.sort();
    Ok(names)
}

fn temp_files(dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    Ok(names(dir)?
        .into_iter()
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect())
}

#[test]
fn write_file_creates_and_replaces_with_mode_and_content() -> TestResult {
    let mut f = fixture()?;
    let path = hp("/etc/app.conf");
    let first = f.fs.write_file(&path, b"one\n", 0o640, None)?;
    let on_disk = f.root.join("etc/app.conf");
    assert_eq!(fs::read(&on_disk)?, b"one\n");
    let meta = fs::symlink_metadata(&on_disk)?;
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((first.kind, first.size, first.mode), (Kind::File, 4, 0o640));
    assert_eq!((first.ino, first.dev), (meta.ino(), meta.dev()));
    assert_eq!(f.fs.stat(&path)?, Some(first));

    let second = f.fs.write_file(&path, b"two, longer\n", 0o600, None)?;
    assert_eq!(fs::read(&on_disk)?, b"two, longer\n");
    assert_eq!(fs::symlink_metadata(&on_disk)?.mode() & 0o7777, 0o600);
    assert_ne!(
        second.ino, first.ino,
        "replaced by rename, not rewritten in place"
    );
    assert_eq!(f.fs.read(&path, 1024)?, b"two, longer\n");
    f.fs.sync_dir(path.parent().as_ref())?;
    assert_eq!(names(&f.root.join("etc"))?, ["app.conf"]);
    Ok(())
}

#[test]
fn write_file_sets_own_owner_and_keeps_setuid() -> TestResult {
    let mut f = fixture()?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let stat =
        f.fs.write_file(&hp("/etc/tool"), b"#!/bin/sh\n", 0o4755, Some((uid, gid)))?;
    assert_eq!((stat.uid, stat.gid, stat.mode), (uid, gid, 0o4755));
    let meta = fs::symlink_metadata(f.root.join("etc/tool"))?;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (uid, gid, 0o4755)
    );
    f.fs.set_owner(&hp("/etc/tool"), uid, gid)?;
    Ok(())
}

#[test]
fn write_file_and_symlink_refuse_a_directory() -> TestResult {
    let mut f = fixture()?;
    fs::create_dir(f.root.join("etc/conf.d"))?;
    let path = hp("/etc/conf.d");
    let err = f.fs.write_file(&path, b"x", 0o644, None);
    assert!(matches!(err, Err(FsError::IsDirectory { path: p }) if p == path));
    let err = f.fs.symlink(&path, Path::new("/x"));
    assert!(matches!(err, Err(FsError::IsDirectory { path: p }) if p == path));
    assert!(fs::symlink_metadata(f.root.join("etc/conf.d"))?.is_dir());
    assert_eq!(names(&f.root.join("etc"))?, ["conf.d"]);
    Ok(())
}

#[test]
fn symlinked_parent_to_outside_is_refused_everywhere() -> TestResult {
    let mut f = fixture()?;
    fs::write(f.outside.join("victim"), b"keep")?;
    fs::set_permissions(f.outside.join("victim"), fs::Permissions::from_mode(0o600))?;
    // An absolute and a relative symlink, at the first level and deeper.
    symlink(&f.outside, f.root.join("abs"))?;
    symlink("../../outside", f.root.join("etc/rel"))?;
    for dir in ["/abs", "/etc/rel"] {
        let victim = hp(&format!("{dir}/victim"));
        let new = hp(&format!("{dir}/new"));
        let deep = hp(&format!("{dir}/sub/new"));
        let refused = |r: Result<(), FsError>| match r {
            Err(FsError::SymlinkInPath { .. }) => true,
            other => panic!("{dir}: {other:?}"),
        };
        assert!(refused(f.fs.stat(&victim).map(drop)));
        assert!(refused(f.fs.stat(&deep).map(drop)));
        assert!(refused(f.fs.read(&victim, 100).map(drop)));
        assert!(refused(f.fs.write_file(&new, b"x", 0o644, None).map(drop)));
        assert!(refused(
            f.fs.write_file(&victim, b"x", 0o644, None).map(drop)
        ));
        assert!(refused(f.fs.create_dir(&new, 0o755, None)));
        assert!(refused(f.fs.symlink(&new, Path::new("/etc")).map(drop)));
        assert!(refused(f.fs.remove(&victim).map(drop)));
        assert!(refused(f.fs.set_mode(&victim, 0o777)));
        assert!(refused(f.fs.set_owner(&victim, 0, 0)));
        assert!(refused(f.fs.list(&hp(dir)).map(drop)));
        assert!(refused(f.fs.sync_dir(Some(&hp(dir)))));
        assert!(refused(f.fs.remove_temp_files(Some(&hp(dir))).map(drop)));
    }
    // A symlink that stays inside the root is not followed either.
    fs::create_dir(f.root.join("etc/real"))?;
    fs::write(f.root.join("etc/real/file"), b"")?;
    symlink("real", f.root.join("etc/inner"))?;
    let err = f.fs.stat(&hp("/etc/inner/file"));
    assert!(matches!(err, Err(FsError::SymlinkInPath { .. })), "{err:?}");
    assert_eq!(names(&f.outside)?, ["victim"]);
    assert_eq!(fs::read(f.outside.join("victim"))?, b"keep");
    assert_eq!(
        fs::metadata(f.outside.join("victim"))?.mode() & 0o7777,
        0o600
    );
    Ok(())
}

#[test]
fn a_symlink_at_the_destination_is_replaced_never_followed() -> TestResult {
    let mut f = fixture()?;
    let target = f.outside.join("target");
    fs::write(&target, b"outside")?;
    symlink(&target, f.root.join("etc/link"))?;
    let link = hp("/etc/link");
    assert_eq!(f.fs.stat(&link)?.map(|s| s.kind), Some(Kind::Symlink));
    assert!(matches!(
        f.fs.read(&link, 100),
        Err(FsError::IsSymlink { .. })
    ));
    assert_eq!(f.fs.read_link(&link)?, target);

    f.fs.write_file(&link, b"inside", 0o644, None)?;
    assert!(fs::symlink_metadata(f.root.join("etc/link"))?.is_file());
    assert_eq!(fs::read(f.root.join("etc/link"))?, b"inside");
    assert_eq!(fs::read(&target)?, b"outside");
    assert_eq!(names(&f.outside)?, ["target"]);
    Ok(())
}

#[test]
fn set_mode_never_follows_a_symlink() -> TestResult {
    let mut f = fixture()?;
    let target = f.outside.join("target");
    fs::write(&target, b"outside")?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600))?;
    symlink(&target, f.root.join("etc/link"))?;
    let err = f.fs.set_mode(&hp("/etc/link"), 0o777);
    assert!(matches!(err, Err(FsError::IsSymlink { .. })), "{err:?}");
    assert_eq!(fs::metadata(&target)?.mode() & 0o7777, 0o600);

    fs::write(f.root.join("etc/file"), b"")?;
    f.fs.set_mode(&hp("/etc/file"), 0o2751)?;
    assert_eq!(
        fs::metadata(f.root.join("etc/file"))?.mode() & 0o7777,
        0o2751
    );
    f.fs.set_mode(&hp("/etc"), 0o1777)?;
    assert_eq!(fs::metadata(f.root.join("etc"))?.mode() & 0o7777, 0o1777);
    let missing = f.fs.set_mode(&hp("/etc/missing"), 0o644);
    assert!(matches!(
        missing,
        Err(FsError::SetMode {
            source: Errno::ENOENT,
            ..
        })
    ));
    Ok(())
}

#[test]
fn set_mode_refuses_a_fifo_without_opening_it() -> TestResult {
    let mut f = fixture()?;
    nix::unistd::mkfifo(&f.root.join("etc/pipe"), Mode::S_IRUSR | Mode::S_IWUSR)?;
    let err = f.fs.set_mode(&hp("/etc/pipe"), 0o644);
    assert!(matches!(err, Err(FsError::SpecialFile { .. })), "{err:?}");
    let err = f.fs.read(&hp("/etc/pipe"), 10);
    assert!(
        matches!(err, Err(FsError::NotRegularFile { .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn create_dir_sets_the_exact_mode_and_is_repeatable() -> TestResult {
    let mut f = fixture()?;
    let dir = hp("/etc/app");
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    f.fs.create_dir(&dir, 0o777, Some((uid, gid)))?;
    let meta = fs::symlink_metadata(f.root.join("etc/app"))?;
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o777, "not masked by the umask");
    f.fs.create_dir(&dir, 0o2750, None)?;
    assert_eq!(
        fs::metadata(f.root.join("etc/app"))?.mode() & 0o7777,
        0o2750
    );
    f.fs.write_file(&hp("/etc/app/x"), b"x", 0o644, None)?;
    assert_eq!(fs::read(f.root.join("etc/app/x"))?, b"x");

    fs::write(f.root.join("etc/file"), b"")?;
    symlink("/tmp", f.root.join("etc/link"))?;
    for path in ["/etc/file", "/etc/link"] {
        let err = f.fs.create_dir(&hp(path), 0o755, None);
        assert!(matches!(err, Err(FsError::NotDirectory { .. })), "{err:?}");
    }
    let err = f.fs.create_dir(&hp("/etc/no/such"), 0o755, None);
    assert!(matches!(err, Err(FsError::ParentMissing { .. })), "{err:?}");
    Ok(())
}

#[test]
fn symlink_creates_and_replaces_atomically() -> TestResult {
    let mut f = fixture()?;
    let link = hp("/etc/current");
    f.fs.symlink(&link, Path::new("releases/1"))?;
    assert_eq!(f.fs.read_link(&link)?, Path::new("releases/1"));
    f.fs.symlink(&link, Path::new("releases/2"))?;
    assert_eq!(
        fs::read_link(f.root.join("etc/current"))?,
        Path::new("releases/2")
    );
    fs::write(f.root.join("etc/file"), b"")?;
    f.fs.symlink(&hp("/etc/file"), Path::new("/etc/current"))?;
    assert!(fs::symlink_metadata(f.root.join("etc/file"))?.is_symlink());
    assert_eq!(names(&f.root.join("etc"))?, ["current", "file"]);
    let err = f.fs.read_link(&hp("/etc/nothing"));
    assert!(matches!(
        err,
        Err(FsError::ReadLink {
            source: Errno::ENOENT,
            ..
        })
    ));
    Ok(())
}

#[test]
fn stat_reports_missing_paths_and_bad_parents() -> TestResult {
    let mut f = fixture()?;
    assert_eq!(f.fs.stat(&hp("/etc/missing"))?, None);
    assert_eq!(f.fs.stat(&hp("/etc/no/such/file"))?, None);
    fs::write(f.root.join("etc/file"), b"abc")?;
    let err = f.fs.stat(&hp("/etc/file/below"));
    assert!(
        matches!(err, Err(FsError::ParentNotDirectory { .. })),
        "{err:?}"
    );
    let dir = f.fs.stat(&hp("/etc"))?.map(|s| s.kind);
    assert_eq!(dir, Some(Kind::Directory));
    let file = f.fs.stat(&hp("/etc/file"))?.ok_or("file is there")?;
    let meta = fs::symlink_metadata(f.root.join("etc/file"))?;
    assert_eq!((file.size, file.ino), (3, meta.ino()));
    assert_eq!(
        (file.mtime_ns, file.ctime_ns),
        (
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
        )
    );
    Ok(())
}

#[test]
fn read_stops_at_max() -> TestResult {
    let mut f = fixture()?;
    fs::write(f.root.join("etc/big"), vec![7u8; 10_000])?;
    assert_eq!(f.fs.read(&hp("/etc/big"), 10_000)?.len(), 10_000);
    let err = f.fs.read(&hp("/etc/big"), 9_999);
    assert!(
        matches!(err, Err(FsError::TooLarge { max: 9_999, .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn remove_files_links_and_only_empty_directories() -> TestResult {
    let mut f = fixture()?;
    let target = f.outside.join("target");
    fs::write(&target, b"outside")?;
    fs::write(f.root.join("etc/file"), b"")?;
    symlink(&target, f.root.join("etc/link"))?;
    fs::create_dir_all(f.root.join("etc/full/sub"))?;
    fs::create_dir(f.root.join("etc/empty"))?;
    assert!(f.fs.remove(&hp("/etc/file"))?);
    assert!(f.fs.remove(&hp("/etc/link"))?);
    assert!(f.fs.remove(&hp("/etc/empty"))?);
    assert!(!f.fs.remove(&hp("/etc/full"))?);
    assert!(f.fs.remove(&hp("/etc/missing"))?);
    assert!(f.fs.remove(&hp("/etc/no/such"))?);
    assert_eq!(names(&f.root.join("etc"))?, ["full"]);
    assert_eq!(names(&f.root.join("etc/full"))?, ["sub"]);
    assert_eq!(fs::read(&target)?, b"outside");
    Ok(())
}

#[test]
fn a_removed_and_recreated_directory_is_not_served_from_the_cache() -> TestResult {
    let mut f = fixture()?;
    let dir = hp("/etc/app");
    f.fs.create_dir(&dir, 0o755, None)?;
    f.fs.create_dir(&hp("/etc/app/sub"), 0o755, None)?;
    f.fs.write_file(&hp("/etc/app/sub/a"), b"a", 0o644, None)?;
    assert!(f.fs.remove(&hp("/etc/app/sub/a"))?);
    assert!(f.fs.remove(&hp("/etc/app/sub"))?);
    assert!(f.fs.remove(&dir)?);
    assert!(f.fs.dirs.keys().all(|d| !d.starts_with("/etc/app")));
    f.fs.create_dir(&dir, 0o700, None)?;
    f.fs.write_file(&hp("/etc/app/b"), b"b", 0o644, None)?;
    assert_eq!(fs::read(f.root.join("etc/app/b"))?, b"b");
    let err = f.fs.write_file(&hp("/etc/app/sub/a"), b"a", 0o644, None);
    assert!(matches!(err, Err(FsError::ParentMissing { .. })), "{err:?}");
    Ok(())
}

#[test]
fn the_directory_cache_stays_bounded() -> TestResult {
    let mut f = fixture()?;
    for i in 0..MAX_CACHED_DIRS + 44 {
        let dir = hp(&format!("/etc/d{i}"));
        f.fs.create_dir(&dir, 0o755, None)?;
        f.fs.write_file(&hp(&format!("/etc/d{i}/f")), b"x", 0o644, None)?;
        assert!(f.fs.dirs.len() <= MAX_CACHED_DIRS);
    }
    for i in 0..MAX_CACHED_DIRS + 44 {
        let stat = f.fs.stat(&hp(&format!("/etc/d{i}/f")))?;
        assert_eq!(stat.map(|s| s.size), Some(1), "d{i}");
    }
    assert_eq!(f.fs.dirs.len(), MAX_CACHED_DIRS);
    Ok(())
}

#[test]
fn remove_temp_files_removes_only_temp_files() -> TestResult {
    let mut f = fixture()?;
    let etc = f.root.join("etc");
    fs::write(etc.join(".outpost-tmp.a.conf.0123456789abcdef"), b"")?;
    symlink("x", etc.join(".outpost-tmp.link.0000000000000000"))?;
    fs::create_dir(etc.join(".outpost-tmp.dir"))?;
    for keep in [".outpost-tmpx", ".outpost-tmp", "a.conf", "x.outpost-tmp.y"] {
        fs::write(etc.join(keep), b"")?;
    }
    assert_eq!(f.fs.remove_temp_files(&hp("/etc"))?, 2);
    assert_eq!(
        names(&etc)?,
        [
            ".outpost-tmp",
            ".outpost-tmp.dir",
            ".outpost-tmpx",
            "a.conf",
            "x.outpost-tmp.y"
        ]
    );
    fs::write(f.root.join(".outpost-tmp.top.1"), b"")?;
    assert_eq!(f.fs.remove_temp_files(None)?, 1);
    assert_eq!(names(&f.root)?, ["etc"]);
    Ok(())
}

#[test]
fn temp_names_are_unique_and_fit_name_max() {
    let long = OsString::from("n".repeat(NAME_MAX));
    let a = temp_name(&long);
    let b = temp_name(&long);
    assert_ne!(a, b);
    assert_eq!(a.len(), NAME_MAX);
    assert!(a.as_bytes().starts_with(b".outpost-tmp.nnn"));
    let short = temp_name(OsStr::new("a.conf"));
    assert_eq!(short.len(), TEMP_PREFIX.len() + "a.conf".len() + 17);
}

#[test]
fn list_is_sorted_and_does_not_follow_symlinks() -> TestResult {
    let mut f = fixture()?;
    let etc = f.root.join("etc");
    fs::write(etc.join("b.conf"), b"")?;
    fs::create_dir(etc.join("a.d"))?;
    symlink(&f.outside, etc.join("c"))?;
    fs::write(f.outside.join("hidden"), b"")?;
    nix::unistd::mkfifo(&etc.join("d"), Mode::S_IRUSR)?;
    let listed = f.fs.list(&hp("/etc"))?;
    let want = [
        ("a.d", Kind::Directory),
        ("b.conf", Kind::File),
        ("c", Kind::Symlink),
        ("d", Kind::Other),
    ]
    .map(|(n, k)| (OsString::from(n), k));
    assert_eq!(listed, want);
    assert_eq!(
        f.fs.list(&hp("/etc"))?,
        want,
        "a second listing starts over"
    );
    let err = f.fs.list(&hp("/etc/c"));
    assert!(matches!(err, Err(FsError::SymlinkInPath { .. })), "{err:?}");
    Ok(())
}

#[test]
fn read_only_is_false_on_a_writable_directory() -> TestResult {
    let mut f = fixture()?;
    assert!(!f.fs.read_only(&hp("/etc/x"))?);
    assert!(!f.fs.read_only(&hp("/etc/not/yet/there"))?);
    assert!(!f.fs.read_only(&hp("/top"))?);
    Ok(())
}

/// The kernel's answer for a mount point the environment already has, read-only: its
/// name is refused in its parent directory. Runs unprivileged.
#[test]
fn an_existing_mount_point_is_refused() -> TestResult {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let point = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|p| *p == "/proc")
        .ok_or("/proc is a mount point on Linux")?;
    let host = HostFs::open(Path::new("/"))?;
    let err = check_replaceable(host.root.as_fd(), OsStr::new(&point[1..]), &hp(point));
    assert!(matches!(err, Err(FsError::MountPoint { .. })), "{err:?}");
    Ok(())
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn bind(source: &Path, target: &Path) -> Result<Option<Mount>, Box<dyn Error>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let status = Command::new("mount")
        .arg("--bind")
        .arg(source)
        .arg(target)
        .status()?;
    Ok(status.success().then(|| Mount(target.to_owned())))
}

/// Bind mounts of a file, from the same filesystem (same st_dev) and from a tmpfs when one
/// is there: write_file and symlink refuse both and write nothing. Needs root.
#[test]
fn a_bind_mounted_file_is_refused() -> TestResult {
    let mut f = fixture()?;
    let source = f.outside.join("mounted");
    fs::write(&source, b"mounted")?;
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let mut sources = vec![source];
    if let Some(shm) = &shm {
        fs::write(shm.path().join("mounted"), b"mounted")?;
        sources.push(shm.path().join("mounted"));
    }
    for source in sources {
        let at = f.root.join("etc/bound.conf");
        fs::write(&at, b"")?;
        let Some(_mount) = bind(&source, &at)? else {
            eprintln!("not root or mount not permitted: only the unprivileged check ran");
            return Ok(());
        };
        let path = hp("/etc/bound.conf");
        // Refused before anything is written, not only by the kernel's EBUSY at rename.
        let parent = f.fs.parent(&path)?;
        let err = check_replaceable(parent, file_name(&path), &path);
        assert!(matches!(err, Err(FsError::MountPoint { .. })), "{err:?}");
        let err = f.fs.write_file(&path, b"new", 0o644, None);
        assert!(matches!(err, Err(FsError::MountPoint { .. })), "{err:?}");
        let err = f.fs.symlink(&path, Path::new("/x"));
        assert!(matches!(err, Err(FsError::MountPoint { .. })), "{err:?}");
        assert_eq!(fs::read(&source)?, b"mounted");
        assert_eq!(temp_files(&f.root.join("etc"))?, Vec::<String>::new());
    }
    Ok(())
}
