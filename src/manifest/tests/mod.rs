//! `load` against real commits made with the `git` CLI in a bare store laid out like
//! `state_dir/objects`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::repo::ObjectStore;

mod bad_input;

pub(super) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ALLOWED: [&str; 5] = ["/etc", "/opt", "/srv", "/usr/local", "/var/lib"];

/// A bare store at `state/objects` and a work tree the commits are made from.
pub(super) struct Fixture {
    dir: tempfile::TempDir,
    gitlinks: Vec<String>,
}

impl Fixture {
    fn new() -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("work"))?;
        let fixture = Self {
            dir,
            gitlinks: Vec::new(),
        };
        let store = fixture.dir.path().join("state/objects");
        let status = Command::new("git")
            .args(["init", "--quiet", "--bare"])
            .arg(&store)
            .status()?;
        assert!(status.success(), "git init failed");
        Ok(fixture)
    }

    fn with(files: &[(&str, &str)]) -> TestResult<Self> {
        let fixture = Self::new()?;
        for (path, text) in files {
            fixture.write(path, text)?;
        }
        Ok(fixture)
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn write(&self, path: &str, text: &str) -> TestResult {
        let path = self.work().join(path);
        std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
        std::fs::write(path, text)?;
        Ok(())
    }

    fn git(&self, args: &[&str]) -> TestResult<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.dir.path().join("state/objects"))
            .arg("--work-tree")
            .arg(self.work())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    fn commit(&self) -> TestResult<TrustedCommit> {
        self.git(&["add", "-A"])?;
        for link in &self.gitlinks {
            let info = format!("160000,{},{link}", "1".repeat(40));
            self.git(&["update-index", "--add", "--cacheinfo", &info])?;
        }
        self.git(&["commit", "--quiet", "--allow-empty", "-m", "state"])?;
        let oid = gix::ObjectId::from_hex(self.git(&["rev-parse", "HEAD"])?.as_bytes())?;
        Ok(TrustedCommit::vouched(oid))
    }

    fn load_as(&self, host: &Host) -> TestResult<Result<Manifest, ManifestError>> {
        let commit = self.commit()?;
        let store =
            ObjectStore::open_existing(&self.dir.path().join("state"))?.ok_or("no object store")?;
        let allowed: Vec<PathBuf> = ALLOWED.iter().map(PathBuf::from).collect();
        Ok(load(&store, &commit, host, &allowed))
    }

    fn load(&self) -> TestResult<Result<Manifest, ManifestError>> {
        self.load_as(&host("edge-7", &[("role", "camera"), ("site", "berlin")]))
    }

    /// The error message of a load that must fail.
    fn error(&self) -> TestResult<String> {
        match self.load()? {
            Ok(m) => Err(format!("loaded, but it must fail: {m:?}").into()),
            Err(e) => Ok(e.to_string()),
        }
    }
}

fn host(name: &str, labels: &[(&str, &str)]) -> Host {
    Host {
        root: PathBuf::from("/"),
        name: name.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn paths(manifest: &Manifest) -> Vec<String> {
    manifest
        .entries
        .iter()
        .map(|e| e.path.to_string())
        .collect()
}

#[test]
fn file_entry_takes_defaults_and_the_commit_blob() -> TestResult {
    let f = Fixture::with(&[
        (
            "outpost.toml",
            "[[file]]\npath = \"/etc/chrony/chrony.conf\"\nsource = \"files/chrony.conf\"\nrestart = [\"chrony.service\"]\n",
        ),
        ("files/chrony.conf", "server ntp.example.com\n"),
    ])?;
    let m = f.load()??;
    let blob = f.git(&["rev-parse", "HEAD:files/chrony.conf"])?;
    let [entry] = m.entries.as_slice() else {
        return Err(format!("one entry expected: {m:?}").into());
    };
    assert_eq!(entry.path.as_path(), Path::new("/etc/chrony/chrony.conf"));
    assert_eq!(entry.restart, ["chrony.service"]);
    let EntryKind::File {
        content,
        mode,
        owner,
        group,
    } = &entry.kind
    else {
        return Err(format!("a file expected: {entry:?}").into());
    };
    assert_eq!(content.oid.to_string(), blob);
    assert_eq!(content.size, Some(23));
    assert_eq!(*mode, 0o644);
    assert_eq!((owner.uid, group.gid), (0, 0));
    assert_eq!(
        entry.origin.to_string(),
        "outpost.toml: file #1 (/etc/chrony/chrony.conf)"
    );
    Ok(())
}

#[test]
fn includes_and_entries_follow_when() -> TestResult {
    let f = Fixture::with(&[
        (
            "outpost.toml",
            concat!(
                "[[include]]\npath = \"roles/camera.toml\"\nwhen = { labels = { role = \"camera\" } }\n",
                "[[include]]\npath = \"roles/kiosk.toml\"\nwhen = { labels = { role = \"kiosk\" } }\n",
                "[[directory]]\npath = \"/srv/edge\"\nwhen = { hosts = [\"edge-*\"] }\n",
                "[[directory]]\npath = \"/srv/core\"\nwhen = { hosts = [\"core-?\"] }\n",
                "[[absent]]\npath = \"/etc/berlin\"\nwhen = { hosts = [\"edge-*\"], labels = { site = \"berlin\" } }\n",
            ),
        ),
        (
            "roles/camera.toml",
            "[[symlink]]\npath = \"/etc/localtime\"\ntarget = \"/usr/share/zoneinfo/Europe/Berlin\"\n",
        ),
    ])?;
    // roles/kiosk.toml does not exist: an include whose `when` does not match is not read.
    let m = f.load()??;
    assert_eq!(paths(&m), ["/etc/berlin", "/etc/localtime", "/srv/edge"]);
    assert_eq!(m.entries[1].origin.file, "roles/camera.toml");

    let core = f.load_as(&host("core-1", &[("role", "camera")]))??;
    assert_eq!(paths(&core), ["/etc/localtime", "/srv/core"]);
    let kiosk = f.load_as(&host("edge-2", &[("role", "kiosk")]))?;
    let msg = kiosk.map(|_| ()).map_err(|e| e.to_string()).unwrap_err();
    assert!(
        msg.starts_with("roles/kiosk.toml does not exist in commit "),
        "{msg}"
    );
    assert!(msg.ends_with(" (included by outpost.toml)"), "{msg}");
    Ok(())
}

#[test]
fn tree_expands_to_files_and_directories() -> TestResult {
    let f = Fixture::with(&[
        (
            "outpost.toml",
            "[[tree]]\npath = \"/opt/app/static\"\nsource = \"files/static\"\nowner = \"root\"\n",
        ),
        ("files/static/index.html", "<p>hi</p>\n"),
        ("files/static/js/app.js", "go()\n"),
        ("files/static/bin/run", "#!/bin/sh\n"),
    ])?;
    let run = f.work().join("files/static/bin/run");
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let m = f.load()??;
    let EntryKind::Tree {
        files,
        dirs,
        dir_mode,
        ..
    } = &m.entries[0].kind
    else {
        return Err("a tree expected".into());
    };
    let got: Vec<(String, u32)> = files
        .iter()
        .map(|t| (t.path.display().to_string(), t.mode))
        .collect();
    assert_eq!(
        got,
        [
            ("bin/run".to_owned(), 0o755),
            ("index.html".to_owned(), 0o644),
            ("js/app.js".to_owned(), 0o644)
        ]
    );
    assert_eq!(dirs, &[PathBuf::from("bin"), PathBuf::from("js")]);
    assert_eq!(*dir_mode, 0o755);
    Ok(())
}

#[test]
fn entries_inside_a_tree_take_over_their_paths() -> TestResult {
    let f = Fixture::with(&[
        (
            "outpost.toml",
            concat!(
                "[[tree]]\npath = \"/opt/site/app\"\nsource = \"app\"\n",
                "[[file]]\npath = \"/opt/site/app/conf/app.conf\"\nsource = \"site/app.conf\"\n",
                "[[directory]]\npath = \"/opt/site/app/js\"\nmode = \"0700\"\n",
                "[[absent]]\npath = \"/opt/site/app/old\"\n",
                "[[directory]]\npath = \"/opt/site\"\n",
            ),
        ),
        ("app/conf/app.conf", "default\n"),
        ("app/js/a.js", "a\n"),
        ("app/old/x", "x\n"),
        ("app/old/deep/y", "y\n"),
        ("site/app.conf", "site\n"),
    ])?;
    let m = f.load()??;
    assert_eq!(
        paths(&m),
        [
            "/opt/site",
            "/opt/site/app",
            "/opt/site/app/conf/app.conf",
            "/opt/site/app/js",
            "/opt/site/app/old"
        ]
    );
    let EntryKind::Tree { files, dirs, .. } = &m.entries[1].kind else {
        return Err("a tree expected".into());
    };
    let files: Vec<String> = files.iter().map(|t| t.path.display().to_string()).collect();
    // The file entry wins for app.conf, the absent entry for old/ and all below it; the
    // directory entry only for js itself, so js/a.js stays the tree's.
    assert_eq!(files, ["js/a.js"]);
    assert_eq!(dirs, &[PathBuf::from("conf")]);
    Ok(())
}

#[test]
fn units_and_health_checks_are_parsed() -> TestResult {
    let f = Fixture::with(&[(
        "outpost.toml",
        concat!(
            "[[unit]]\nname = \"chrony.service\"\nenabled = true\nactive = true\n",
            "[[health]]\nname = \"camera\"\ncommand = [\"/usr/bin/true\"]\ntimeout = \"10s\"\n",
        ),
    )])?;
    let m = f.load()??;
    assert_eq!(m.units[0].name, "chrony.service");
    assert_eq!(m.units[0].active, Some(true));
    assert_eq!(m.health[0].timeout, Duration::from_secs(10));
    let msg = Fixture::with(&[(
        "outpost.toml",
        "[[health]]\nname = \"x\"\ncommand = [\"/bin/true\"]\ntimeout = \"soon\"\n",
    )])?
    .error()?;
    assert!(
        msg.starts_with("outpost.toml: health #1 (x): timeout \"soon\" is not a duration"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn commit_without_a_manifest_says_so() -> TestResult {
    let f = Fixture::with(&[("README", "no manifest\n")])?;
    let msg = f.error()?;
    assert!(
        msg.starts_with("outpost.toml does not exist in commit "),
        "{msg}"
    );
    assert!(!msg.contains("included by"), "{msg}");
    Ok(())
}
