//! The test fleet: a temp dir with a real signing key (ssh-keygen), a real publisher repository
//! (git), real bundles and signatures, a config whose host root and state dir are local
//! directories, and the outpost binary run against it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub mod container;

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_outpost");

pub struct Fleet {
    pub dir: tempfile::TempDir,
    /// Unix seconds of the next commit; every commit is one hour later than the last.
    clock: std::cell::Cell<u64>,
}

/// What a finished `outpost` run printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn keygen(path: &Path) -> Result {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path))?;
    Ok(())
}

impl Fleet {
    /// A fleet with key `fleet` trusted for both namespaces and an empty publisher repository.
    pub fn new() -> Result<Self> {
        Self::new_in(&std::env::temp_dir())
    }

    /// [`Fleet::new`] in a fresh directory below `parent` (a directory a container sees).
    pub fn new_in(parent: &Path) -> Result<Self> {
        let fleet = Fleet {
            dir: tempfile::tempdir_in(parent)?,
            clock: std::cell::Cell::new(1_790_000_000),
        };
        keygen(&fleet.key("fleet"))?;
        fleet.write_allowed_signers(&[(
            "fleet@example.com",
            "fleet",
            "namespaces=\"git,outpost-bundle\"",
        )])?;
        fleet.write_config("")?;
        std::fs::create_dir(fleet.host())?;
        run(Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .arg(fleet.repo()))?;
        Ok(fleet)
    }

    /// Sets the committer time (Unix seconds) of the next commit.
    pub fn set_clock(&self, seconds: u64) {
        self.clock.set(seconds);
    }

    /// Writes a commit object by hand on top of `main` with the given committer line (what
    /// follows `committer `), signed by the fleet key like git signs, and points `main` at it.
    /// For commits that stock git will not write: dates past year 9999, unparsable lines.
    pub fn craft_commit(&self, committer: &str) -> Result<String> {
        let tree = run(self.git().args(["rev-parse", "main^{tree}"]))?;
        let parent = run(self.git().args(["rev-parse", "main"]))?;
        let payload = format!(
            "tree {tree}\nparent {parent}\nauthor Fleet <fleet@example.com> {} +0000\ncommitter {committer}\n\ncrafted\n",
            self.clock.get()
        );
        let file = self.path("crafted-commit");
        std::fs::write(&file, &payload)?;
        let sig_path = self.path("crafted-commit.sig");
        let _ = std::fs::remove_file(&sig_path);
        run(Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", "git", "-f"])
            .arg(self.key("fleet"))
            .arg(&file))?;
        let sig = std::fs::read_to_string(&sig_path)?;
        let gpgsig = sig.trim_end().replace('\n', "\n ");
        let (head, body) = payload.split_once("\n\n").ok_or("no message")?;
        let object = format!("{head}\ngpgsig {gpgsig}\n\n{body}");
        std::fs::write(&file, object)?;
        let oid = run(self
            .git()
            .args(["hash-object", "-t", "commit", "-w", "--literally"])
            .arg(&file))?;
        run(self.git().args(["update-ref", "refs/heads/main", &oid]))?;
        Ok(oid)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.key"))
    }
    pub fn state(&self) -> PathBuf {
        self.path("state")
    }
    pub fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// Writes config.toml: the base settings plus `extra` TOML appended verbatim.
    pub fn write_config(&self, extra: &str) -> Result {
        let text = format!(
            "[host]\nname = \"test-host\"\nlabels = {{ role = \"camera\" }}\nroot = \"host\"\n\n[state]\ndir = \"state\"\n\n[apply]\nset_owner = false\n\n[trust]\nallowed_signers = \"allowed_signers\"\n{extra}"
        );
        std::fs::write(self.config(), text)?;
        Ok(())
    }

    /// Writes allowed_signers from `(principal, key name, options)`.
    pub fn write_allowed_signers(&self, lines: &[(&str, &str, &str)]) -> Result {
        let mut text = String::from("# fleet signers\n");
        for (principal, key, options) in lines {
            let public = std::fs::read_to_string(self.key(key).with_extension("key.pub"))?;
            text.push_str(&format!("{principal} {options} {}\n", public.trim()));
        }
        std::fs::write(self.path("allowed_signers"), text)?;
        Ok(())
    }

    fn git(&self) -> Command {
        let mut cmd = Command::new("git");
        let date = format!("@{} +0000", self.clock.get());
        cmd.current_dir(self.repo())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Fleet")
            .env("GIT_AUTHOR_EMAIL", "fleet@example.com")
            .env("GIT_COMMITTER_NAME", "Fleet")
            .env("GIT_COMMITTER_EMAIL", "fleet@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        cmd
    }

    /// Commits `content` to `file`, signed by key `signer` (`None`: unsigned); returns the oid.
    pub fn commit_as(&self, file: &str, content: &str, signer: Option<&str>) -> Result<String> {
        let path = self.repo().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        run(self.git().args(["add", "-A"]))?;
        let mut cmd = self.git();
        if let Some(key) = signer {
            cmd.args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", self.key(key).display()));
            cmd.args(["commit", "-q", "-S", "-m"]);
        } else {
            cmd.args(["commit", "-q", "-m"]);
        }
        run(cmd.arg(format!("update {file}")))?;
        self.clock.set(self.clock.get() + 3600);
        run(self.git().args(["rev-parse", "HEAD"]))
    }

    /// A commit signed by the fleet key.
    pub fn commit(&self, file: &str, content: &str) -> Result<String> {
        self.commit_as(file, content, Some("fleet"))
    }

    pub fn git_run(&self, args: &[&str]) -> Result<String> {
        run(self.git().args(args))
    }

    /// `git bundle create <name> <revs...>` without a signature.
    pub fn bundle_unsigned(&self, name: &str, revs: &[&str]) -> Result<PathBuf> {
        let path = self.path(name);
        run(self
            .git()
            .args(["bundle", "create", "-q"])
            .arg(&path)
            .args(revs))?;
        Ok(path)
    }

    /// A bundle signed by the fleet key in the `outpost-bundle` namespace.
    pub fn bundle(&self, name: &str, revs: &[&str]) -> Result<PathBuf> {
        let path = self.bundle_unsigned(name, revs)?;
        self.sign(&path, "fleet", "outpost-bundle")?;
        Ok(path)
    }

    /// `ssh-keygen -Y sign`, replacing an existing `.sig`.
    pub fn sign(&self, file: &Path, key: &str, namespace: &str) -> Result {
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        let _ = std::fs::remove_file(&sig);
        run(Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(self.key(key))
            .arg(file))?;
        Ok(())
    }

    /// Moves `bundle` and its `.sig` into `dir` (created when missing), as a finished copy
    /// onto a stick would leave them; returns the bundle's new path.
    pub fn move_bundle(&self, bundle: &Path, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let name = bundle.file_name().ok_or("a bundle path has a file name")?;
        let moved = dir.join(name);
        std::fs::rename(bundle, &moved)?;
        std::fs::rename(
            format!("{}.sig", bundle.display()),
            format!("{}.sig", moved.display()),
        )?;
        Ok(moved)
    }

    /// Writes `bytes` as bundle `name` and signs it with the fleet key.
    pub fn signed_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.path(name);
        std::fs::write(&path, bytes)?;
        self.sign(&path, "fleet", "outpost-bundle")?;
        Ok(path)
    }

    /// Runs outpost with this fleet's config.
    pub fn outpost(&self, args: &[&str]) -> Result<Run> {
        Ok(self.command(args).output()?.into())
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("OUTPOST_CONFIG");
        // The test servers are on 127.0.0.1: no proxy of the environment running the tests.
        for var in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY"] {
            cmd.env_remove(var).env_remove(var.to_lowercase());
        }
        cmd
    }

    /// Runs outpost on paths.
    pub fn outpost_paths(&self, cmd: &str, paths: &[&Path]) -> Result<Run> {
        Ok(self.command(&[cmd]).args(paths).output()?.into())
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let run = self.outpost(&["status", "--json"])?;
        assert_eq!(run.code, 0, "status failed: {}", run.stderr);
        Ok(serde_json::from_str(&run.stdout)?)
    }

    /// The trusted commit per `status --json`.
    pub fn trusted(&self) -> Result<Option<String>> {
        Ok(self.status()?["trusted"]["commit"]
            .as_str()
            .map(str::to_owned))
    }

    /// Every file under `dir` with a digest of its content. SQLite's shared-memory index
    /// (`outpost.db-shm`) and an empty write-ahead log are left out: a read-only reader of a WAL
    /// database creates them as lock bookkeeping, they hold no state.
    pub fn snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, String>> {
        let mut out = BTreeMap::new();
        for (rel, path, meta) in walk(dir)? {
            if meta.is_dir() {
                out.insert(rel, "dir".into());
            } else if !is_sqlite_bookkeeping(&path, &meta) {
                out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&path)?)));
            }
        }
        Ok(out)
    }

    /// The object store's files: what a refused bundle must leave untouched.
    pub fn objects_snapshot(&self) -> Result<BTreeMap<PathBuf, String>> {
        Self::snapshot(&self.state().join("objects"))
    }
}

/// Everything below `dir` (nothing when it is missing), never following a symlink: each
/// entry's path relative to `dir`, its full path and its metadata.
pub fn walk(dir: &Path) -> Result<Vec<(PathBuf, PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path.strip_prefix(dir)?.to_owned(), path, meta));
        }
    }
    Ok(out)
}

fn is_sqlite_bookkeeping(path: &Path, meta: &std::fs::Metadata) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == "outpost.db-shm" || (name == "outpost.db-wal" && meta.len() == 0)
}

impl Fleet {
    /// The host root of the test host.
    pub fn host(&self) -> PathBuf {
        self.path("host")
    }

    /// A path under the host root, given as the host path (`/etc/x`).
    pub fn on_host(&self, host_path: &str) -> PathBuf {
        self.host().join(host_path.trim_start_matches('/'))
    }

    /// Writes `files` into the publisher repository, commits them signed, bundles the branch
    /// and imports it; returns the commit.
    pub fn publish(&self, files: &[(&str, &str)]) -> Result<String> {
        for (path, content) in files {
            let path = self.repo().join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, content)?;
        }
        self.publish_staged()
    }

    /// Commits whatever the repository holds now, signed, and imports a bundle of it.
    pub fn publish_staged(&self) -> Result<String> {
        let (commit, bundle) = self.commit_and_bundle()?;
        let imported = self.outpost_paths("import", &[&bundle])?;
        if imported.code != 0 {
            return Err(format!("import failed: {}{}", imported.stdout, imported.stderr).into());
        }
        Ok(commit)
    }

    /// Writes `files`, commits everything signed and writes a signed bundle of the branch;
    /// returns the commit and the bundle, not imported anywhere.
    pub fn write_commit_and_bundle(&self, files: &[(&str, &str)]) -> Result<(String, PathBuf)> {
        for (path, content) in files {
            let path = self.repo().join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, content)?;
        }
        self.commit_and_bundle()
    }

    /// Commits whatever the repository holds now, signed, and bundles the branch (signed).
    fn commit_and_bundle(&self) -> Result<(String, PathBuf)> {
        run(self.git().args(["add", "-A"]))?;
        let mut cmd = self.git();
        cmd.args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("user.signingkey={}", self.key("fleet").display()))
            .args(["commit", "-q", "-S", "--allow-empty", "-m", "publish"]);
        run(&mut cmd)?;
        self.clock.set(self.clock.get() + 3600);
        let commit = run(self.git().args(["rev-parse", "HEAD"]))?;
        let bundle = self.bundle(&format!("{}.bundle", &commit[..12]), &["main"])?;
        Ok((commit, bundle))
    }

    /// The deployed commit per `status --json`.
    pub fn deployed(&self) -> Result<Option<String>> {
        Ok(self.status()?["deployed"]["commit"]
            .as_str()
            .map(str::to_owned))
    }

    /// Everything under the host root: files with content digests, symlinks with targets.
    pub fn host_snapshot(&self) -> Result<BTreeMap<PathBuf, String>> {
        tree_snapshot(&self.host())
    }

    /// Every path under the host root with its size: for hosts holding files too large to
    /// hash in a test.
    pub fn host_snapshot_sizes(&self) -> Result<BTreeMap<PathBuf, u64>> {
        Ok(walk(&self.host())?
            .into_iter()
            .map(|(rel, _, meta)| (rel, meta.len()))
            .collect())
    }

    /// A copy of this fleet's host, state and config in a new directory `name`: for running
    /// the same step many times from the same start.
    pub fn copy(&self, name: &str) -> Result<Copy> {
        let dir = self.path(name);
        std::fs::create_dir(&dir)?;
        for part in ["host", "state", "config.toml", "allowed_signers"] {
            run(Command::new("cp").arg("-a").arg(self.path(part)).arg(&dir))?;
        }
        Ok(Copy { dir })
    }
}

/// A copy of a fleet's host, state and config (see [`Fleet::copy`]).
pub struct Copy {
    pub dir: PathBuf,
}

impl Copy {
    /// Runs outpost on this copy, aborting after `fault` steps when given.
    pub fn outpost(&self, args: &[&str], fault: Option<usize>) -> Result<Run> {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args)
            .env_remove("OUTPOST_CONFIG");
        if let Some(n) = fault {
            cmd.env("OUTPOST_FAULT_AFTER_STEPS", n.to_string());
        }
        Ok(cmd.output()?.into())
    }

    pub fn host_snapshot(&self) -> Result<BTreeMap<PathBuf, String>> {
        tree_snapshot(&self.dir.join("host"))
    }

    /// Copies it again into `name`, beside it.
    pub fn copy(&self, name: &str) -> Result<Copy> {
        let dir = self.dir.with_file_name(name);
        run(Command::new("cp").arg("-a").arg(&self.dir).arg(&dir))?;
        Ok(Copy { dir })
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Everything under `dir`: files with mode and content digest, directories with mode,
/// symlinks with targets.
pub fn tree_snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for (rel, path, meta) in walk(dir)? {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let seen = if meta.is_symlink() {
            format!("-> {}", std::fs::read_link(&path)?.display())
        } else if meta.is_dir() {
            format!("dir {mode:o}")
        } else {
            format!(
                "{mode:o} {}",
                hex::encode(Sha256::digest(std::fs::read(&path)?))
            )
        };
        out.insert(rel, seen);
    }
    Ok(out)
}

/// A process holding the state lock as outpost does (its pid written into the lock file),
/// until dropped.
pub struct LockHolder {
    child: std::process::Child,
    pub pid: String,
}

impl Fleet {
    /// Takes the state lock from another process and returns once it is held.
    pub fn hold_lock(&self) -> Result<LockHolder> {
        use std::process::Stdio;
        let lock = self.state().join("lock");
        let mut child = Command::new("flock")
            .arg(&lock)
            .args(["sh", "-c", "echo $$ > \"$0\"; echo locked; read _"])
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if line != "locked\n" {
            return Err(format!("the lock holder said {line:?}").into());
        }
        let pid = std::fs::read_to_string(&lock)?.trim().to_owned();
        Ok(LockHolder { child, pid })
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// `history --json`, parsed: deployments newest first.
    pub fn history(&self) -> Result<Vec<serde_json::Value>> {
        let run = self.outpost(&["history", "--json"])?;
        assert_eq!(run.code, 0, "history failed: {}", run.stderr);
        match serde_json::from_str(&run.stdout)? {
            serde_json::Value::Array(list) => Ok(list),
            other => Err(format!("history is not a list: {other}").into()),
        }
    }

    /// `(kind, result, commit)` of each deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<(String, String, String)>> {
        let field = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or_default().to_owned();
        let mut out: Vec<_> = self
            .history()?
            .iter()
            .map(|d| (field(d, "kind"), field(d, "result"), field(d, "commit")))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// Runs outpost with one more environment variable (the fault hook).
    pub fn outpost_env(&self, args: &[&str], key: &str, value: &str) -> Result<Run> {
        Ok(self.command(args).env(key, value).output()?.into())
    }

    /// Runs `args`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Result<Run> {
        let run = self.outpost(args)?;
        if run.code != 0 {
            return Err(format!(
                "outpost {args:?} exited {}: {}{}",
                run.code, run.stdout, run.stderr
            )
            .into());
        }
        Ok(run)
    }
}
